"""The feature store as a data scientist and the serving gateway use it.

    from mlplat.features import FeatureStore
    store = FeatureStore(stack="dev")
    training = store.get_historical_features(entity_df, ["driver_stats:rating", "driver_stats@2:trips_today"])
    store.get_online_features([{"driver_id": 7}], ["driver_stats:rating"])

References: ``view:feature`` reads the latest registered version of the view,
``view@N:feature`` pins version N, ``view@N:*`` (or ``view@N``) means every feature.

Timestamps: timezone-naive values are UTC; timezone-aware values are converted to
UTC. An entity DataFrame's timestamp column must be a datetime column (naive or
aware, not strings and not a mix of both).

Inside ``mlplat.start_run(...)``, ``get_historical_features`` records the view
versions it read as run tags ``mlplat.features.<view>=<version>``, in the artifact
``mlplat/features.json`` and in the platform database (so the registry can tell
which production models use a view version).
"""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplat import providers
from mlplat.context import Context
from mlplat.contracts import Capability, FeatureStoreBackend, ViewSelection
from mlplat.features.definitions import Definitions, FeatureRef, collect, digest_of, load_module
from mlplat.features.errors import FeatureDataError, UnknownFeature, nearest
from mlplat.features.plan import FeaturePlan
from mlplat.sdk import active_run

DEFAULT_TIMESTAMP_COLUMN = "event_timestamp"


def resolve(refs: Iterable[str], registered: Mapping[tuple[str, int], Mapping[str, Any]], *,
            full_feature_names: bool = False) -> list[ViewSelection]:
    """Feature references → one selection per view version, in first-mention order."""
    if isinstance(refs, str):
        refs = [refs]
    refs = list(refs)
    if not refs:
        raise UnknownFeature("no features requested", hint="pass references like ['driver_stats:rating']")
    latest: dict[str, int] = {}
    for name, version in registered:
        latest[name] = max(latest.get(name, 0), version)
    chosen: dict[tuple[str, int], list[str]] = {}
    for text in refs:
        ref = FeatureRef.parse(text)
        if ref.view not in latest:
            raise UnknownFeature(
                f"unknown feature view '{ref.view}' (in '{text}')",
                hint=nearest(ref.view, latest) + (f"registered views: {', '.join(sorted(latest))}" if latest
                                                  else "no views are registered: run `mlplat features apply`"))
        version = ref.version or latest[ref.view]
        doc = registered.get((ref.view, version))
        if doc is None:
            versions = sorted(v for n, v in registered if n == ref.view)
            raise UnknownFeature(f"feature view '{ref.view}' has no version {version} (in '{text}')",
                                 hint=f"registered versions: {', '.join(map(str, versions))}")
        names = [f["name"] for f in doc["features"]]
        wanted = names if ref.feature is None else [ref.feature]
        for feature in wanted:
            if feature not in names:
                raise UnknownFeature(f"feature view '{ref.view}' version {version} has no feature '{feature}'",
                                     where=text, hint=nearest(feature, names) + f"its features: {', '.join(names)}")
        bucket = chosen.setdefault((ref.view, version), [])
        bucket.extend(f for f in wanted if f not in bucket)
    selections = []
    for (name, version), features in chosen.items():
        doc = registered[(name, version)]
        columns = tuple(f"{name}__{f}" if full_feature_names else f for f in features)
        selections.append(ViewSelection(doc, tuple(features), columns))
    seen: dict[str, str] = {}
    for sel in selections:
        for column in sel.columns:
            if column in seen:
                raise FeatureDataError(f"feature column '{column}' comes from both {seen[column]} and {sel.name}@{sel.version}",
                                       hint="pass full_feature_names=True to name columns view__feature")
            seen[column] = f"{sel.name}@{sel.version}"
    return selections


def _key_dtypes(selections: Sequence[ViewSelection]) -> dict[str, str]:
    out: dict[str, str] = {}
    for sel in selections:
        for entity in sel.document["entities"]:
            key, dtype = entity["join_key"], entity["dtype"]
            if out.get(key, dtype) != dtype:
                raise FeatureDataError(f"join key '{key}' is {out[key]} in one view and {dtype} in {sel.name}@{sel.version}",
                                       hint="request these views in separate calls")
            out[key] = dtype
    return out


def to_utc_micros(values: Any, where: str) -> Any:
    """A pandas Series of datetimes → int64 microseconds since the epoch, UTC (naive = UTC)."""
    import numpy as np
    import pandas as pd
    from pandas.api import types as pdt

    if isinstance(values.dtype, pd.DatetimeTZDtype):
        naive = values.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pdt.is_datetime64_dtype(values.dtype):
        naive = values
    elif values.dtype == object and len(values) and all(isinstance(v, datetime) for v in values):
        zones = {v.tzinfo is not None and v.utcoffset() is not None for v in values}
        if len(zones) > 1:
            raise FeatureDataError(f"column '{where}' mixes timezone-naive and timezone-aware timestamps",
                                   where=where, hint="make them all aware (pd.to_datetime(col, utc=True)); "
                                                     "naive timestamps are read as UTC")
        naive = pd.to_datetime(values, utc=True).dt.tz_localize(None) if zones == {True} else pd.to_datetime(values)
    else:
        kind = pdt.infer_dtype(values, skipna=True)
        raise FeatureDataError(f"timestamp column '{where}' has type {kind}, not datetime", where=where,
                               hint="convert it with pd.to_datetime(df[col], utc=True); naive timestamps are read as UTC")
    if naive.isna().any():
        row = naive.index[naive.isna().to_numpy()][0]
        raise FeatureDataError(f"timestamp column '{where}' has a missing value (row {_plain(row)!r})", where=where,
                               hint="every entity row needs a timestamp")
    return naive.to_numpy(dtype="datetime64[us]").view(np.int64)


def entity_table(entity_df: Any, selections: Sequence[ViewSelection], timestamp_column: str) -> Any:
    """Validate the entity DataFrame and build the arrow table the backend joins (keys, __t, __row)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from pandas.api import types as pdt

    if not isinstance(entity_df, pd.DataFrame):
        raise FeatureDataError(f"entity_df must be a pandas DataFrame, got {type(entity_df).__name__}",
                               hint="pd.DataFrame({'driver_id': [...], 'event_timestamp': [...]})")
    columns = [str(c) for c in entity_df.columns]
    if timestamp_column not in entity_df.columns:
        raise FeatureDataError(f"entity rows have no timestamp column '{timestamp_column}'", where="entity_df",
                               hint=nearest(timestamp_column, columns) + f"columns: {', '.join(columns)}; "
                                    "pass timestamp_column='...' to use another column")
    arrays: dict[str, Any] = {}
    for key, dtype in _key_dtypes(selections).items():
        if key not in entity_df.columns:
            raise FeatureDataError(f"entity rows have no join key column '{key}'", where="entity_df",
                                   hint=nearest(key, columns) + f"columns: {', '.join(columns)}")
        col = entity_df[key]
        if col.isna().any():
            raise FeatureDataError(f"join key column '{key}' has missing values", where="entity_df",
                                   hint="drop or fill those rows; every entity row needs its keys")
        if dtype == "int64":
            if not pdt.is_integer_dtype(col.dtype) or pdt.is_bool_dtype(col.dtype):
                raise FeatureDataError(f"entity key type mismatch: '{key}' is {col.dtype} but the entity is int64",
                                       where="entity_df", hint=f"convert it: df['{key}'] = df['{key}'].astype('int64')")
            arrays[key] = pa.array(col.to_numpy(dtype=np.int64))
        else:
            if not (pdt.is_string_dtype(col.dtype) and pdt.infer_dtype(col, skipna=True) in ("string", "empty")):
                raise FeatureDataError(f"entity key type mismatch: '{key}' is {pdt.infer_dtype(col)} but the entity is string",
                                       where="entity_df", hint=f"convert it: df['{key}'] = df['{key}'].astype(str)")
            arrays[key] = pa.array(col.astype(object).to_numpy(), type=pa.string())
    arrays["__t"] = pa.array(to_utc_micros(entity_df[timestamp_column], timestamp_column))
    arrays["__row"] = pa.array(np.arange(len(entity_df), dtype=np.int64))
    return pa.table(arrays)


def _arrow_to_pandas(table: Any) -> Any:
    import pandas as pd
    import pyarrow as pa

    def mapper(kind):
        if pa.types.is_integer(kind):
            return pd.Int64Dtype() if kind.bit_width == 64 else pd.Int32Dtype()
        if pa.types.is_boolean(kind):
            return pd.BooleanDtype()
        return None

    return table.to_pandas(types_mapper=mapper)


def _parse_time(value: Any, where: str) -> int:
    """A datetime, pandas Timestamp or ISO-8601 string → µs since the epoch, UTC (naive = UTC)."""
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise FeatureDataError(f"{where} {value!r} is not a timestamp", where=where,
                               hint="use ISO 8601, e.g. 2024-05-01 or 2024-05-01T12:00:00+02:00 (naive = UTC)") from exc
    if stamp is pd.NaT:
        raise FeatureDataError(f"{where} is missing", where=where)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.value // 1000)


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat()


@dataclass
class SkewReport:
    view: str
    version: int
    at: str
    sampled: int
    compared: int
    mismatches: dict[str, int]
    examples: list[dict[str, Any]] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def mismatch_count(self) -> int:
        return sum(self.mismatches.values())

    @property
    def mismatch_rate(self) -> float:
        return self.mismatch_count / self.compared if self.compared else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"view": self.view, "version": self.version, "at": self.at, "sampled_entities": self.sampled,
                "compared_values": self.compared, "mismatches": self.mismatch_count,
                "mismatch_rate": self.mismatch_rate, "by_feature": self.mismatches, "by_kind": self.kinds,
                "examples": self.examples}


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _plain(value: Any) -> Any:
    """pandas/numpy scalars → Python values (NA → None)."""
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()
    if hasattr(value, "item"):
        return value.item()
    return value


class FeatureStore:
    """Client of a stack's feature store. ``stack`` defaults to ``$MLPLAT_STACK``, else ``dev``."""

    def __init__(self, stack: str | None = None, *, ctx: Context | None = None, spec: Any = None,
                 backend: FeatureStoreBackend | None = None):
        self.ctx = ctx or Context()
        self.spec = spec or self.ctx.stack(stack or os.environ.get("MLPLAT_STACK", "dev"))
        self.backend = backend or providers.capability(self.spec, self.ctx, Capability.FEATURES)
        self._registered: dict[tuple[str, int], dict[str, Any]] | None = None

    @property
    def settings(self):
        return self.spec.features

    # --- definitions ----------------------------------------------------------------------------

    def load_definitions(self, path: str | os.PathLike | None = None) -> Definitions:
        target = Path(path) if path else Path(self.settings.definitions)
        if not target.is_absolute():
            target = (Path(self.spec.project_dir or ".") / target) if path is None else target.resolve()
        return load_module(target)

    def plan(self, definitions: Definitions | Iterable[Any]) -> FeaturePlan:
        """Validate sources and diff with the registry. Writes nothing."""
        if not isinstance(definitions, Definitions):
            definitions = collect(definitions)
        return self.backend.plan(definitions)

    def apply(self, definitions: Definitions | Iterable[Any], *, plan: FeaturePlan | None = None) -> FeaturePlan:
        """Register definitions (validated and diffed first); refuses breaking changes to views in production use."""
        if not isinstance(definitions, Definitions):
            definitions = collect(definitions)
        plan = plan or self.backend.plan(definitions)
        applied = self.backend.apply(definitions, plan, user=self.ctx.user)
        self._registered = None
        return applied

    def registered(self, *, refresh: bool = False) -> dict[tuple[str, int], dict[str, Any]]:
        if self._registered is None or refresh:
            self._registered = self.backend.registered_views()
        return self._registered

    def select(self, features: Iterable[str], *, full_feature_names: bool = False) -> list[ViewSelection]:
        return resolve(features, self.registered(refresh=True), full_feature_names=full_feature_names)

    # --- offline --------------------------------------------------------------------------------

    def get_historical_features(self, entity_df: Any, features: Sequence[str], *, timestamp_column: str | None = None,
                                full_feature_names: bool = False) -> Any:
        """For each entity row, each feature's latest value with event time <= the row's timestamp and within
        the view's TTL (ties: latest created timestamp, then last source row). Returns a copy of ``entity_df``
        (same index and order, every row) with one column per feature; missing values are null."""
        import pandas as pd

        timestamp_column = timestamp_column or self.settings.timestamp_column
        selections = self.select(features, full_feature_names=full_feature_names)
        clash = [c for sel in selections for c in sel.columns if c in entity_df.columns] if isinstance(
            entity_df, pd.DataFrame) else []
        if clash:
            raise FeatureDataError(f"entity_df already has column(s) {', '.join(clash)}",
                                   hint="rename them, or pass full_feature_names=True")
        table = entity_table(entity_df, selections, timestamp_column)
        result = self.backend.historical(table, selections)
        values = _arrow_to_pandas(result.drop_columns(["__row"]))
        values.index = entity_df.index
        out = pd.concat([entity_df, values], axis=1)
        self._record_lineage(selections, entity_df, features, timestamp_column)
        return out

    def _record_lineage(self, selections: Sequence[ViewSelection], entity_df: Any, refs: Sequence[str],
                        timestamp_column: str) -> None:
        run = active_run()
        if run is None:
            return
        import pandas as pd

        hashed = pd.util.hash_pandas_object(entity_df, index=False).to_numpy()
        record = {
            "at": datetime.now(UTC).isoformat(),
            "stack": self.spec.name,
            "features": list(refs) if not isinstance(refs, str) else [refs],
            "timestamp_column": timestamp_column,
            "entity_rows": int(len(entity_df)),
            "entity_sha256": hashlib.sha256(hashed.tobytes()).hexdigest(),
            "views": [{"view": s.name, "version": s.version, "features": list(s.features),
                       "digest": digest_of(s.document),
                       "ttl_seconds": s.document.get("ttl_seconds"), "source": s.document["source"]}
                      for s in selections],
        }
        history = getattr(run, "_mlplat_feature_lineage", [])
        history.append(record)
        run._mlplat_feature_lineage = history
        versions: dict[str, set[int]] = {}
        for item in history:
            for v in item["views"]:
                versions.setdefault(v["view"], set()).add(v["version"])
        run.tracker.log_batch(run.run_id, tags={f"mlplat.features.{name}": ",".join(map(str, sorted(vs)))
                                                for name, vs in versions.items()})
        run.log_dict({"stack": self.spec.name, "retrievals": history}, "mlplat/features.json")
        self.backend.record_usage(run.run_id, selections)

    # --- online ---------------------------------------------------------------------------------

    def materialize(self, start: Any, end: Any, views: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Write the latest value per entity with ``start <= event time <= end`` into the online store for
        every registered version of ``views`` (default: all views)."""
        start_us, end_us = _parse_time(start, "start"), _parse_time(end, "end")
        if start_us > end_us:
            raise FeatureDataError(f"start {_iso(start_us)} is after end {_iso(end_us)}", where="materialize",
                                   hint="swap --start and --end")
        registered = self.registered(refresh=True)
        wanted: list[tuple[str, int]] = []
        for text in views or [n for n, _ in sorted(registered)]:
            ref = FeatureRef.parse(text)
            if ref.feature is not None:
                raise FeatureDataError(f"materialize takes views, not features: '{text}'", hint="pass 'view' or 'view@2'")
            versions = [ref.version] if ref.version else sorted(v for n, v in registered if n == ref.view) or [None]
            wanted.extend((ref.view, v) for v in versions if (ref.view, v) not in wanted)
        # one selection per version: each writes its own online table
        chosen = [resolve([f"{n}@{v}:*" if v else f"{n}:*"], registered)[0] for n, v in wanted]
        if not chosen:
            raise UnknownFeature("no feature views are registered", hint="run `mlplat features apply` first")
        return self.backend.materialize(chosen, start_us, end_us, user=self.ctx.user)

    def get_online_features(self, entity_rows: Sequence[Mapping[str, Any]], features: Sequence[str], *,
                            full_feature_names: bool = False) -> list[dict[str, Any]]:
        """Latest materialized values: one dict per entity row (its keys plus each feature, None if absent)."""
        selections = resolve(features, self.registered(), full_feature_names=full_feature_names)
        return self._online(selections, entity_rows)

    def _online(self, selections: Sequence[ViewSelection], entity_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        key_types = _key_dtypes(selections)
        rows = list(entity_rows)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise FeatureDataError(f"entity row {i} is {type(row).__name__}, not a mapping",
                                       hint="pass [{'driver_id': 7}, ...]")
            for key, dtype in key_types.items():
                if key not in row or row[key] is None:
                    raise FeatureDataError(f"entity row {i} has no value for join key '{key}'",
                                           hint=nearest(key, [str(k) for k in row]) + f"row keys: {', '.join(map(str, row))}")
                value = row[key]
                ok = isinstance(value, str) if dtype == "string" else (isinstance(value, int) and not isinstance(value, bool))
                if not ok and dtype == "int64" and hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu":
                    ok = True
                if not ok:
                    raise FeatureDataError(f"entity key type mismatch: '{key}' is {type(value).__name__} in row {i} "
                                           f"but the entity is {dtype}", hint="send the key with the entity's type")
        keys = [{k: (int(r[k]) if key_types[k] == "int64" else r[k]) for k in key_types} for r in rows]
        values = self.backend.online(selections, keys)
        return [{**dict(row), **vals} for row, vals in zip(rows, values)]

    # --- skew -----------------------------------------------------------------------------------

    def skew(self, view: str, *, sample: int = 200, seed: int = 0, at: Any = None) -> SkewReport:
        """Compare online values with the offline point-in-time values at the end of the last materialization
        (or ``at``) for a sample of entities from both stores."""
        import pandas as pd

        ref = FeatureRef.parse(view)
        registered = self.registered(refresh=True)
        sel = resolve([f"{ref.view}@{ref.version}:*" if ref.version else f"{ref.view}:*"], registered)[0]
        if at is None:
            done = [m for m in self.backend.materializations(sel.name)
                    if m["version"] == sel.version and m["state"] == "succeeded"]
            if not done:
                raise UnknownFeature(f"{sel.name}@{sel.version} was never materialized",
                                     hint="run `mlplat features materialize --start ... --end ...` first")
            at_us = max(m["end_us"] for m in done)
        else:
            at_us = _parse_time(at, "at")
        half = max(1, sample // 2)
        keys: list[dict[str, Any]] = []
        seen = set()
        for batch in (self.backend.online_keys(sel.name, sel.version, half, seed),
                      self.backend.offline_keys(sel.name, sel.version, sample, seed)):
            for k in batch:
                marker = tuple(k[j] for j in sel.join_keys)
                if marker not in seen and len(keys) < sample:
                    seen.add(marker)
                    keys.append(k)
        report = SkewReport(sel.name, sel.version, _iso(at_us), len(keys), 0, {f: 0 for f in sel.features})
        if not keys:
            return report
        frame = pd.DataFrame(keys)
        frame["__skew_ts"] = pd.Timestamp(at_us, unit="us", tz="UTC")
        table = entity_table(frame, [sel], "__skew_ts")
        offline = _arrow_to_pandas(self.backend.historical(table, [sel]).drop_columns(["__row"]))
        online = self.backend.online([sel], keys)
        for i, key in enumerate(keys):
            for feature, column in zip(sel.features, sel.columns):
                report.compared += 1
                off, on = _plain(offline[column].iloc[i]), online[i][column]
                if _same(off, on):
                    continue
                kind = "missing online" if on is None else "missing offline" if off is None else "different value"
                report.mismatches[feature] += 1
                report.kinds[kind] = report.kinds.get(kind, 0) + 1
                if len(report.examples) < 10:
                    report.examples.append({"key": key, "feature": feature, "offline": off, "online": on, "kind": kind})
        return report


# --- the serving gateway's entry point -----------------------------------------------------------

_stores: dict[tuple[str, str], FeatureStore] = {}


def enrich(spec: Any, ctx: Context, view_refs: Sequence[str], entity_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Add online feature values to request rows by entity key.

    ``view_refs`` are views (``"driver_stats@2"`` = every feature of version 2; ``"driver_stats"`` =
    the latest version) or single features (``"driver_stats@2:rating"``). Returns one dict per row:
    the row's own fields plus each feature (None where the store has no value). The client is cached
    per stack, so a request costs one SQLite lookup per view.
    """
    key = (str(spec.state_dir), spec.name)
    store = _stores.get(key)
    if store is None:
        store = _stores[key] = FeatureStore(spec=spec, ctx=ctx)
    refs = [r if ":" in r else f"{r}:*" for r in view_refs]
    try:
        selections = resolve(refs, store.registered())
    except UnknownFeature:  # registered after the client was cached
        selections = resolve(refs, store.registered(refresh=True))
    return store._online(selections, entity_rows)
