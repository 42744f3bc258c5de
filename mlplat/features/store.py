"""The feature store's provider-neutral half: definitions in the ledger, sources and the
point-in-time join in DuckDB.

A provider's backend subclasses :class:`LedgerFeatureStore` and adds its online store
(``_materialize_view``, ``online``, ``online_keys``); where its offline history lives
elsewhere than in the view's source (a cloud's offline store), it overrides
``_offline_sql`` with a relation of the same columns, and the same join reads it.

Point-in-time retrieval is two joins per view, both inside DuckDB:

1. an ASOF join of the entity rows with the offline relation's ``(keys, event time)`` finds, for
   each entity row, the latest event time ``<=`` the row's time; rows older than the TTL are dropped;
2. an equi-join on ``(keys, that event time)`` fetches the feature values; when several rows share
   it, the latest created timestamp wins, then the last file (``__mlplat_file``), then the last row
   in it (``__mlplat_row``).

Every entity row comes back (a LEFT JOIN on the row number), in the caller's order.
"""
from __future__ import annotations

import abc
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlplat.contracts import FeatureStoreBackend, ViewSelection
from mlplat.errors import MlplatError
from mlplat.features.definitions import (
    ACCEPTS,
    DTYPES,
    TIMESTAMP_TYPES,
    Definitions,
    FeatureView,
    digest_of,
)
from mlplat.features.errors import FeatureDataError, nearest
from mlplat.features.plan import FeaturePlan, make_plan, refuse_breaking

MIGRATION = "0004_features"
ROW = "__mlplat_row"
FILE = "__mlplat_file"


def q(name: str) -> str:
    """A quoted SQL identifier (names are validated identifiers already; quoting keeps keywords safe)."""
    return '"' + name.replace('"', '""') + '"'


def lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class LedgerFeatureStore(FeatureStoreBackend):
    """Registry, sources and offline retrieval over a stack's ledger ``db``; DataFrame snapshots under
    ``state_root``; relative source paths from the project directory."""

    def __init__(self, spec: Any, ctx: Any, db: Any, state_root: Path):
        self.spec = spec
        self.ctx = ctx
        self.db = db
        self.state_root = Path(state_root)
        self.project = Path(spec.project_dir or ".")
        self.snapshots = self.state_root / "features" / "snapshots"

    # --- sources ------------------------------------------------------------------------------

    def _duck(self) -> Any:
        import duckdb

        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")  # naive timestamps mean UTC; casts to TIMESTAMPTZ must agree
        return con

    def _resolve(self, path: str) -> str:
        p = Path(path)
        return str(p if p.is_absolute() else self.project / p)

    def _source_sql(self, document: Mapping[str, Any]) -> str:
        """A relation with every source column plus a file name and a row number (the last tie-break)."""
        source = document["source"]
        if source["kind"] in ("parquet", "snapshot"):
            path = self._resolve(source["path"]) if source["kind"] == "parquet" else str(self.state_root / source["path"])
            if not any(c in path for c in "*?["):  # one file: its row number is the whole order
                return (f"(SELECT * RENAME (file_row_number AS {ROW}), '' AS {FILE} "
                        f"FROM read_parquet({lit(path)}, file_row_number=true))")
            return (f"(SELECT * RENAME (file_row_number AS {ROW}) FROM read_parquet({lit(path)}, file_row_number=true, "
                    f"filename={lit(FILE)}))")
        if source["kind"] == "csv":
            path = self._resolve(source["path"])
            return f"(SELECT *, row_number() OVER () AS {ROW}, '' AS {FILE} FROM read_csv({lit(path)}, header=true))"
        raise MlplatError(f"unknown source kind {source['kind']!r} in the registry", where=f"feature view {document['name']}")

    def _describe(self, con: Any, view: FeatureView, relation: str) -> dict[str, str]:
        import duckdb

        where = f"feature view {view.ref}"
        try:
            rows = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
        except duckdb.IOException as exc:
            raise FeatureDataError(f"source cannot be read: {str(exc).splitlines()[0]}", where=where,
                                   hint="check the path (relative paths start at the project root) and the file format") from None
        except duckdb.Error as exc:
            raise FeatureDataError(f"source cannot be read: {str(exc).splitlines()[0]}", where=where) from None
        return {r[0]: str(r[1]) for r in rows}

    def check_source(self, view: FeatureView, con: Any = None, relation: str | None = None) -> None:
        """Every declared column exists in the source with a type the declaration accepts."""
        con = con or self._duck()
        if relation is None:
            relation = self._source_sql(view.to_dict())
        columns = self._describe(con, view, relation)
        where = f"feature view {view.ref} (source {view.source.path or 'DataFrame'})"
        available = [c for c in columns if c not in (ROW, FILE)]

        def need(column: str, role: str) -> str:
            if column not in columns:
                raise FeatureDataError(f"{role} column '{column}' is not in the source", where=where,
                                       hint=nearest(column, available) + f"source columns: {', '.join(available)}")
            return columns[column]

        for field_, role in ((view.timestamp_field, "event timestamp"), (view.created_timestamp_field, "created timestamp")):
            if field_ is None:
                continue
            kind = need(field_, role)
            if not kind.startswith(TIMESTAMP_TYPES):
                raise FeatureDataError(f"{role} column '{field_}' has type {kind}, not a timestamp", where=where,
                                       hint="store it as a timestamp (naive timestamps mean UTC); in pandas use "
                                            "pd.to_datetime(df[col], utc=True)")
        for entity in view.entities:
            kind = need(str(entity.join_key), f"join key of entity '{entity.name}'")
            if not kind.startswith(ACCEPTS[entity.dtype]):
                raise FeatureDataError(
                    f"join key '{entity.join_key}' has type {kind} in the source but entity '{entity.name}' is {entity.dtype}",
                    where=where, hint="declare Entity(dtype=...) to match the data, or convert the column")
        for feature in view.features:
            kind = need(feature.name, "feature")
            if not kind.startswith(ACCEPTS[feature.dtype]):
                raise FeatureDataError(f"feature '{feature.name}' is declared {feature.dtype} but the source has {kind}",
                                       where=where, hint="change the declared dtype or convert the column")

    # --- registry -----------------------------------------------------------------------------

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        conn = self.db.connect()
        try:
            return list(conn.execute(sql, args).fetchall())
        finally:
            conn.close()

    def registered_views(self) -> dict[tuple[str, int], dict[str, Any]]:
        return {(r["name"], r["version"]): json.loads(r["definition"])
                for r in self._read("SELECT name, version, definition FROM feature_views")}

    def registered_entities(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: json.loads(r["definition"]) for r in self._read("SELECT name, definition FROM feature_entities")}

    def _snapshot_document(self, view: FeatureView) -> tuple[dict[str, Any], Any]:
        """For a DataFrame source: the document naming its content-addressed snapshot, and the frame."""
        import pandas as pd

        frame: Any = view._dataframe
        hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        hasher = hashlib.sha256(hashed.tobytes())
        hasher.update("|".join(f"{c}:{t}" for c, t in frame.dtypes.astype(str).items()).encode())
        digest = hasher.hexdigest()
        document = view.to_dict()
        document["source"] = {"kind": "snapshot", "path": f"features/snapshots/{view.name}_v{view.version}_{digest[:16]}.parquet",
                              "digest": digest}
        return document, frame

    def plan(self, definitions: Definitions) -> FeaturePlan:
        documents: dict[tuple[str, int], dict[str, Any]] = {}
        con = self._duck()
        for view in definitions.views:
            if view.source.kind == "dataframe":
                document, frame = self._snapshot_document(view)
                documents[(view.name, view.version)] = document
                con.register("__mlplat_frame", frame)
                self.check_source(view, con, "(SELECT *, 0 AS __mlplat_row, '' AS __mlplat_file FROM __mlplat_frame)")
                con.unregister("__mlplat_frame")
            else:
                self.check_source(view, con)
        con.close()
        return make_plan(definitions, self.registered_views(), self.registered_entities(), self.production_users,
                         documents)

    def apply(self, definitions: Definitions, plan: FeaturePlan, *, user: str) -> FeaturePlan:
        documents = {(v.name, v.version): self._snapshot_document(v)[0] for v in definitions.views
                     if v.source.kind == "dataframe"}
        checked = make_plan(definitions, self.registered_views(), self.registered_entities(), self.production_users,
                            documents)
        refuse_breaking(checked)
        self._prepare_apply(definitions, checked)
        written: list[Path] = []
        try:
            for view in definitions.views:
                document = documents.get((view.name, view.version))
                if document is None:
                    continue
                target = self.state_root / document["source"]["path"]
                if not target.exists():  # content-addressed: an existing snapshot is this one
                    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    partial = target.with_suffix(".partial")
                    frame: Any = view._dataframe
                    frame.to_parquet(partial, index=False)
                    partial.replace(target)
                    written.append(target)
            now = time.time()
            by_view = {(v.name, v.version): v for v in definitions.views}
            with self.db.transaction() as conn:
                # the plan again, under the write lock: another apply may have landed since it was shown
                views = {(r["name"], r["version"]): json.loads(r["definition"])
                         for r in conn.execute("SELECT name, version, definition FROM feature_views")}
                entities = {r["name"]: json.loads(r["definition"])
                            for r in conn.execute("SELECT name, definition FROM feature_entities")}
                fresh = make_plan(definitions, views, entities, self.production_users, documents)
                refuse_breaking(fresh)
                for entity_change in fresh.entities:
                    if entity_change.action in ("create", "update"):
                        entity = next(e for e in definitions.entities if e.name == entity_change.name)
                        conn.execute(
                            "INSERT INTO feature_entities(name, definition, applied_at, applied_by) VALUES (?,?,?,?) "
                            "ON CONFLICT(name) DO UPDATE SET definition=excluded.definition, "
                            "applied_at=excluded.applied_at, applied_by=excluded.applied_by",
                            (entity.name, json.dumps(entity.to_dict(), sort_keys=True), now, user))
                for change in fresh.views:
                    if change.action not in ("create", "update"):
                        continue
                    key = (change.name, change.version)
                    document = documents.get(key) or by_view[key].to_dict()
                    text, digest = json.dumps(document, sort_keys=True), digest_of(document)
                    if change.action == "create":
                        conn.execute("INSERT INTO feature_views(name, version, definition, digest, revision, created_at, "
                                     "updated_at, applied_by) VALUES (?,?,?,?,1,?,?,?)",
                                     (*key, text, digest, now, now, user))
                        revision = 1
                    else:
                        revision = conn.execute("SELECT revision FROM feature_views WHERE name=? AND version=?",
                                                key).fetchone()[0] + 1
                        conn.execute("UPDATE feature_views SET definition=?, digest=?, revision=?, updated_at=?, "
                                     "applied_by=? WHERE name=? AND version=?", (text, digest, revision, now, user, *key))
                    conn.execute("INSERT INTO feature_view_history(name, version, revision, action, changes, definition, "
                                 "digest, applied_at, applied_by) VALUES (?,?,?,?,?,?,?,?,?)",
                                 (*key, revision, change.action, json.dumps(change.changes), text, digest, now, user))
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return fresh

    def _prepare_apply(self, definitions: Definitions, plan: FeaturePlan) -> None:
        """What the provider must have before the ledger registers ``plan`` (its cloud resources); runs after the
        breaking-change check, before anything is written to the ledger. Idempotent: an apply that fails after
        it runs it again."""

    def production_users(self, name: str, version: int) -> list[str]:
        """The one place that asks the model registry which production versions read a view version."""
        conn = self.db.connect()
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"model_versions", "model_stages", "feature_usage"} <= tables:
                return []
            rows = conn.execute(
                "SELECT DISTINCT mv.model, mv.version, ms.environment FROM model_stages ms "
                "JOIN model_versions mv ON mv.model = ms.model AND mv.version = ms.version "
                "JOIN feature_usage fu ON fu.run_id = mv.run_id "
                "WHERE ms.stage = 'production' AND fu.name = ? AND fu.version = ? ORDER BY 1, 2",
                (name, version)).fetchall()
        finally:
            conn.close()
        return [f"{r[0]} v{r[1]} (production in {r[2]})" for r in rows]

    def record_usage(self, run_id: str, views: Sequence[ViewSelection]) -> None:
        now = time.time()
        with self.db.transaction() as conn:
            for sel in views:
                conn.execute("INSERT OR IGNORE INTO feature_usage(run_id, name, version, digest, used_at) VALUES (?,?,?,?,?)",
                             (run_id, sel.name, sel.version, digest_of(sel.document), now))

    def usage(self, name: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT run_id, name, version, used_at FROM feature_usage"
        rows = self._read(sql + (" WHERE name=?" if name else "") + " ORDER BY used_at DESC", (name,) if name else ())
        return [{"run_id": r[0], "view": r[1], "version": r[2], "used_at": r[3]} for r in rows]

    # --- offline ------------------------------------------------------------------------------

    def _key_expr(self, document: Mapping[str, Any], alias: str = "") -> list[str]:
        prefix = f"{alias}." if alias else ""
        return [f"CAST({prefix}{q(e['join_key'])} AS {DTYPES[e['dtype']][0]})" for e in document["entities"]]

    def _value_expr(self, feature: Mapping[str, Any], alias: str) -> str:
        return f"CAST({alias}.{q(feature['name'])} AS {DTYPES[feature['dtype']][0]})"

    def historical(self, entities: Any, selections: Sequence[ViewSelection]) -> Any:
        import duckdb

        con = self._duck()
        con.register("__mlplat_entities", entities)
        ctes: list[str] = []
        joins: list[str] = []
        outputs: list[str] = []
        for i, sel in enumerate(selections):
            doc = sel.document
            src = self._offline_sql(doc)
            keys = sel.join_keys
            key_src = self._key_expr(doc)
            ts = f"epoch_us({q(doc['timestamp_field'])})"
            created = doc.get("created_timestamp_field")
            ttl = doc.get("ttl_seconds")
            key_cols = ", ".join(f"{expr} AS {q(k)}" for expr, k in zip(key_src, keys))
            on_keys = " AND ".join(f"e.{q(k)} = f.{q(k)}" for k in keys)
            ttl_filter = f"WHERE f.__t >= e.__t - {int(ttl) * 1_000_000}" if ttl else ""
            ctes.append(
                f"m{i} AS (SELECT e.__row, {', '.join(f'e.{q(k)}' for k in keys)}, f.__t AS __ft "
                f"FROM __mlplat_entities e ASOF JOIN (SELECT {key_cols}, {ts} AS __t FROM {src}) f "
                f"ON {on_keys} AND e.__t >= f.__t {ttl_filter})")
            by_name = {f["name"]: f for f in doc["features"]}
            values = ", ".join(f"{self._value_expr(by_name[name], 's')} AS {q(col)}"
                               for name, col in zip(sel.features, sel.columns))
            s_keys = self._key_expr(doc, "s")
            match = " AND ".join(f"{expr} = m.{q(k)}" for expr, k in zip(s_keys, keys))
            order = (f"epoch_us(s.{q(created)}) DESC NULLS LAST, " if created else "") + f"s.{FILE} DESC, s.{ROW} DESC"
            ctes.append(
                f"w{i} AS (SELECT m.__row, {values} FROM m{i} m JOIN {src} s ON {match} AND "
                f"epoch_us(s.{q(doc['timestamp_field'])}) = m.__ft "
                f"QUALIFY row_number() OVER (PARTITION BY m.__row ORDER BY {order}) = 1)")
            joins.append(f"LEFT JOIN w{i} ON w{i}.__row = e.__row")
            outputs.extend(f"w{i}.{q(col)}" for col in sel.columns)
        sql = (f"WITH {', '.join(ctes)} SELECT e.__row, {', '.join(outputs)} FROM __mlplat_entities e "
               f"{' '.join(joins)} ORDER BY e.__row")
        try:
            return con.sql(sql).to_arrow_table()
        except duckdb.ConversionException as exc:
            raise FeatureDataError(f"a source value does not convert to its declared type: {str(exc).splitlines()[0]}",
                                   hint="fix the declared dtype or the data; "
                                        "`mlplat features apply` checks column types") from None
        except duckdb.IOException as exc:
            raise FeatureDataError(f"a feature source cannot be read: {str(exc).splitlines()[0]}",
                                   hint="the file moved or was deleted since `mlplat features apply`") from None
        finally:
            con.close()

    def _latest_rows(self, doc: Mapping[str, Any], start_us: int, end_us: int) -> list[tuple[Any, ...]]:
        return self._rows(doc, start_us, end_us, latest_only=True)

    def _rows(self, doc: Mapping[str, Any], start_us: int, end_us: int, *, latest_only: bool) -> list[tuple[Any, ...]]:
        import duckdb

        keys = self._key_expr(doc, "s")
        ts = f"epoch_us(s.{q(doc['timestamp_field'])})"
        created = doc.get("created_timestamp_field")
        created_expr = f"epoch_us(s.{q(created)})" if created else "NULL::BIGINT"
        values = []
        for f in doc["features"]:
            expr = self._value_expr(f, "s")
            values.append(f"epoch_us({expr})" if f["dtype"] == "timestamp" else expr)
        order = f"{ts} DESC" + (f", {created_expr} DESC NULLS LAST" if created else "") + f", s.{FILE} DESC, s.{ROW} DESC"
        latest = f"row_number() OVER (PARTITION BY {', '.join(keys)} ORDER BY {order}) = 1"
        sql = (f"SELECT {', '.join(keys)}, {ts}, {created_expr}, {', '.join(values)}"
               + ("" if latest_only else f", {latest}") + f" FROM {self._source_sql(doc)} s "
               f"WHERE {ts} BETWEEN {int(start_us)} AND {int(end_us)} "
               + (f"QUALIFY {latest}" if latest_only
                  else f"ORDER BY {', '.join(keys)}, {ts}, " + (f"{created_expr} NULLS FIRST, " if created else "")
                  + f"s.{FILE}, s.{ROW}"))
        con = self._duck()
        try:
            return list(con.execute(sql).fetchall())
        except duckdb.Error as exc:
            raise FeatureDataError(f"reading the source of {doc['name']}@{doc['version']} failed: "
                                   f"{str(exc).splitlines()[0]}",
                                   hint="run `mlplat features apply` to re-check the source") from None
        finally:
            con.close()


    def materializations(self, name: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT name, version, start_us, end_us, rows, state, error, started_at, finished_at, started_by "
               "FROM feature_materializations")
        rows = self._read(sql + (" WHERE name=?" if name else "") + " ORDER BY id DESC", (name,) if name else ())
        return [dict(r) for r in rows]


    def offline_keys(self, name: str, version: int, limit: int, seed: int) -> list[dict[str, Any]]:
        doc = self.registered_views()[(name, version)]
        keys = [e["join_key"] for e in doc["entities"]]
        exprs = self._key_expr(doc)
        cols = ", ".join(f"{x} AS {q(k)}" for x, k in zip(exprs, keys))
        names = ", ".join(q(k) for k in keys)
        sql = (f"SELECT * FROM (SELECT DISTINCT {cols} FROM {self._source_sql(doc)}) "
               f"ORDER BY hash({names}, {int(seed)}), {names} LIMIT {int(limit)}")
        con = self._duck()
        try:
            return [dict(zip(keys, r)) for r in con.execute(sql).fetchall()]
        finally:
            con.close()


    # --- materialization (the online store is the provider's) -------------------------------

    def materialize(self, selections: Sequence[ViewSelection], start_us: int, end_us: int, *,
                    user: str) -> list[dict[str, Any]]:
        results = []
        for sel in selections:
            with self.db.transaction() as conn:
                run_id = conn.execute(
                    "INSERT INTO feature_materializations(name, version, start_us, end_us, state, started_at, started_by) "
                    "VALUES (?,?,?,?,'running',?,?)", (sel.name, sel.version, start_us, end_us, time.time(), user)).lastrowid
            try:
                rows = self._materialize_view(sel.document, start_us, end_us)
            except BaseException as exc:
                with self.db.transaction() as conn:
                    conn.execute("UPDATE feature_materializations SET state='failed', error=?, finished_at=? WHERE id=?",
                                 (f"{type(exc).__name__}: {exc}"[:2000], time.time(), run_id))
                raise
            with self.db.transaction() as conn:
                conn.execute("UPDATE feature_materializations SET state='succeeded', rows=?, finished_at=? WHERE id=?",
                             (rows, time.time(), run_id))
            results.append({"view": sel.name, "version": sel.version, "rows": rows})
        return results

    @abc.abstractmethod
    def _materialize_view(self, doc: Mapping[str, Any], start_us: int, end_us: int) -> int:
        """Write the view's rows with ``start <= event time <= end`` into the provider's stores (at least the
        latest per entity key online, never replacing a newer value); returns the number of entity keys written."""

    def _offline_sql(self, document: Mapping[str, Any]) -> str:
        """The relation point-in-time retrieval reads: the view's source, unless the provider keeps its own
        offline history (same columns: keys, timestamp fields and features by name, ``__mlplat_file``,
        ``__mlplat_row``)."""
        return self._source_sql(document)

    def rows_in_window(self, doc: Mapping[str, Any], start_us: int, end_us: int, *, latest_only: bool) -> list[tuple[Any, ...]]:
        """Source rows with ``start <= event time <= end`` as ``(keys..., event µs, created µs, features...)``
        (timestamps as µs): only the latest per entity key (ties: latest created timestamp, last file,
        last row), or every row in source order per key, each ending with whether it is that latest one."""
        return self._rows(doc, start_us, end_us, latest_only=latest_only)

