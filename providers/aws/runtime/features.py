"""The feature store of the aws provider: one SageMaker Feature Group per registered view version.

Definitions, materializations and usage live in the stack's ledger (:mod:`mlplat.features.store`, as
for every provider). A view version ``v`` of view ``name`` is the feature group
``<stack prefix>-<name>-v<v>`` (:func:`service_rules.feature_group_name`): its join keys, event time,
created time and features as feature definitions typed by the view's dtypes
(``service_rules.FEATURE_TYPE_OF_DTYPE``), the online store on, the offline store under
``s3://<stack bucket>/features`` with its table in the stack's Glue database, the stack's cost tags and the
platform role as the role SageMaker writes the offline store with. A view of several entities gets a
String record identifier ``mlplat_record_id`` (the keys as a JSON list); one entity's join key is the
record identifier itself. The runtime owns these groups: the program creates the Glue database and the
role, never a view's group.

``materialize`` reads the view's source as the local provider does and ingests every row of the window
with ``PutRecord`` (bounded concurrency): the latest row per entity into both stores, the others into
the offline store only, so the online store holds the latest value and the offline store the history.
Online reads are ``BatchGetRecord`` (at most 100 identifiers a request). Point-in-time training sets read
the offline store's Parquet files (the documented layout under ``ResolvedOutputS3Uri``, rows with
``is_deleted`` dropped) through the same DuckDB join as every provider. SageMaker writes the offline store
within 15 minutes of ``PutRecord``: a training set asked for sooner may not see the latest ingestion yet.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlplat.contracts import ViewSelection
from mlplat.errors import ExternalError, NotFound
from mlplat.features.definitions import DTYPES, Definitions
from mlplat.features.errors import FeatureDataError, FeatureDefinitionError, refuse_invalid_views, refuse_unchangeable
from mlplat.features.plan import FeaturePlan
from mlplat.features.store import FILE, ROW, LedgerFeatureStore, lit, q
from mlplat_providers.aws import service_rules as rules
from mlplat_providers.aws.runtime.session import AwsSession
from mlplat_providers.aws.runtime.state import AwsState

RECORD_KEY = "mlplat_record_id"  # the record identifier of a view with several entities
FEATURESTORE = "sagemaker-featurestore-runtime"
GROUP_MISSING = ("ResourceNotFound", "does not exist", "not found", "Could not find")
ONLINE, OFFLINE = "OnlineStore", "OfflineStore"


@dataclass
class Poller:
    """How to wait for a feature group to be created: ``sleep`` and ``clock`` are injected in tests."""

    interval_seconds: float = 5.0
    timeout_seconds: float = 900.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)


@dataclass(frozen=True)
class GroupLayout:
    """A view version as a feature group: names and types of its features, and which are which."""

    name: str
    record_identifier: str
    event_time: str
    types: dict[str, str]  # feature name -> Integral | Fractional | String, in definition order
    keys: tuple[str, ...]
    key_dtypes: tuple[str, ...]

    def definitions(self) -> list[dict[str, str]]:
        return [{"FeatureName": n, "FeatureType": t} for n, t in self.types.items()]

    def record_id(self, values: Sequence[Any]) -> str:
        if self.record_identifier == RECORD_KEY:
            return json.dumps(list(values), separators=(",", ":"))
        return str(values[0])


def layout_of(doc: Mapping[str, Any], prefix: str) -> GroupLayout:
    """The feature group of a registered view document (names as the view declares them)."""
    keys = tuple(e["join_key"] for e in doc["entities"])
    types: dict[str, str] = {}
    if len(keys) > 1:
        types[RECORD_KEY] = "String"
    for entity in doc["entities"]:
        types[entity["join_key"]] = str(rules.feature_type_of(entity["dtype"]))
    types[doc["timestamp_field"]] = "Fractional"  # Unix seconds: microseconds come back exactly
    if doc.get("created_timestamp_field"):
        types[doc["created_timestamp_field"]] = "Fractional"
    for feature in doc["features"]:
        types[feature["name"]] = str(rules.feature_type_of(feature["dtype"]))
    return GroupLayout(rules.feature_group_name(prefix, doc["name"], int(doc["version"])),
                       RECORD_KEY if len(keys) > 1 else keys[0], doc["timestamp_field"], types, keys,
                       tuple(e["dtype"] for e in doc["entities"]))


def layout_problems(doc: Mapping[str, Any], prefix: str) -> list[str]:
    """Why SageMaker would refuse the feature group of a view document (names, dtypes, size)."""
    problems = []
    for feature in [*doc["features"], *doc["entities"]]:
        if rules.feature_type_of(feature["dtype"]) is None:
            problems.append(f"dtype {feature['dtype']!r} of {feature.get('name') or feature['join_key']!r} has no "
                            f"SageMaker feature type (supported: {', '.join(rules.FEATURE_TYPE_OF_DTYPE)})")
    names = [e["join_key"] for e in doc["entities"]] + [doc["timestamp_field"]] \
        + ([doc["created_timestamp_field"]] if doc.get("created_timestamp_field") else []) \
        + [f["name"] for f in doc["features"]]
    if len(doc["entities"]) > 1 and RECORD_KEY in names:
        problems.append(f"{RECORD_KEY!r} is the record identifier of a view of several entities; rename that column")
    problems += [p for p in (rules.feature_store_name_problem(n) for n in names) if p]
    if not problems:
        layout = layout_of(doc, prefix)
        problems += rules.create_feature_group_problems({
            "FeatureGroupName": layout.name, "RecordIdentifierFeatureName": layout.record_identifier,
            "EventTimeFeatureName": layout.event_time, "FeatureDefinitions": layout.definitions(),
            "OfflineStoreConfig": {"S3StorageConfig": {"S3Uri": "s3://bucket/features"}}})
    return problems


def seconds(us: int) -> str:
    """Microseconds since the epoch as exact decimal Unix seconds (a Fractional event time)."""
    sign = "-" if us < 0 else ""
    whole, frac = divmod(abs(int(us)), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def to_text(value: Any, dtype: str) -> str | None:
    """A value as ``ValueAsString`` for its dtype's feature type; None (the feature is left out) for null/NaN."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if dtype == "bool":
        return "1" if value else "0"
    if dtype in ("int32", "int64"):
        return str(int(value))
    if dtype == "timestamp":
        return seconds(int(value))  # the source read gives timestamps as µs
    if dtype in ("float32", "float64"):
        return repr(float(value))
    return str(value)


def from_text(text: str | None, dtype: str) -> Any:
    if text is None:
        return None
    if dtype == "bool":
        return text not in ("0", "false", "False")
    if dtype in ("int32", "int64"):
        return int(text)
    if dtype in ("float32", "float64"):
        return float(text)
    if dtype == "timestamp":
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=round(float(text) * 1e6))
    return text


class AwsFeatureStore(LedgerFeatureStore):
    def __init__(self, spec: Any, ctx: Any, session: AwsSession | None = None, *, poller: Poller | None = None,
                 concurrency: int = 8):
        self.aws = session or AwsSession(spec)
        reading = bool(getattr(ctx, "reading", False))  # a read never creates a stack's state
        self.state = AwsState(spec.state_dir, getattr(ctx, "database_url", None)).ensure(create=not reading)
        super().__init__(spec, ctx, self.state.database(create=not reading), self.state.root)
        self.poller = poller or Poller()
        self.concurrency = max(1, int(concurrency))
        self._described: dict[str, dict[str, Any]] = {}
        self._recreated: set[tuple[str, int]] = set()  # groups the last apply created for registered views

    @property
    def prefix(self) -> str:
        return str(self.aws.plan.prefix)

    # --- definitions ----------------------------------------------------------------------------

    def _refuse_invalid(self, definitions: Definitions) -> None:
        refuse_invalid_views(
            definitions, lambda doc: layout_problems(doc, self.prefix), "SageMaker Feature Store",
            hint="rename the columns (letters and digits, '-' or '_' only inside, at most 64 characters, not "
                     "is_deleted/write_time/api_invocation_time) and use a supported dtype; nothing was created")

    def plan(self, definitions: Definitions) -> FeaturePlan:
        """The ledger's diff, plus the SageMaker side: a registered view whose group is gone (deleted outside
        mlplat) shows as an update, so that ``apply`` creates it again."""
        self._refuse_invalid(definitions)
        planned = super().plan(definitions)
        for change in planned.views:
            if change.action != "unchanged":
                continue
            view = definitions.view(change.name, change.version)
            name = layout_of(view.to_dict(), self.prefix).name if view is not None else None
            if name is not None and self._describe_group(name) is None:
                change.action = "update"
                change.changes = [f"feature group {name} is missing in SageMaker: apply creates it again"]
        return planned

    def apply(self, definitions: Definitions, plan: FeaturePlan, *, user: str) -> FeaturePlan:
        self._recreated = set()
        applied = super().apply(definitions, plan, user=user)
        for change in applied.views:
            view = definitions.view(change.name, change.version)
            if change.action == "unchanged" and view is not None and (view.name, view.version) in self._recreated:
                change.action = "update"
                change.changes = [f"feature group {layout_of(view.to_dict(), self.prefix).name} was missing in "
                                  "SageMaker: created again"]
        return applied

    def _prepare_apply(self, definitions: Definitions, plan: FeaturePlan) -> None:
        """Every declared view version's feature group exists and is Created: created, or given the features a
        non-breaking update added. All groups are checked before any is created or changed."""
        self._refuse_invalid(definitions)
        actions: list[tuple[str, GroupLayout, list[dict[str, str]]]] = []
        problems = []
        for view in definitions.views:
            layout = layout_of(view.to_dict(), self.prefix)
            current = self._describe_group(layout.name)
            if current is None:
                actions.append(("create", layout, layout.definitions()))
                self._recreated.add((view.name, view.version))
                continue
            have = {d["FeatureName"]: d["FeatureType"] for d in current.get("FeatureDefinitions", [])}
            if current.get("RecordIdentifierFeatureName") != layout.record_identifier or \
                    current.get("EventTimeFeatureName") != layout.event_time:
                problems.append(f"{view.ref}: feature group {layout.name} keeps record identifier "
                                f"{current.get('RecordIdentifierFeatureName')!r} and event time "
                                f"{current.get('EventTimeFeatureName')!r}; SageMaker cannot change them")
            retyped = [n for n, t in layout.types.items() if n in have and have[n] != t]
            if retyped:
                problems.append(f"{view.ref}: feature group {layout.name} has {', '.join(retyped)} as another type; "
                                "SageMaker cannot change a feature's type")
            added = [d for d in layout.definitions() if d["FeatureName"] not in have]
            if added:
                actions.append(("update", layout, added))
            elif current.get("FeatureGroupStatus") != "Created":
                actions.append(("wait", layout, []))
        refuse_unchangeable(problems, definitions.path or "feature definitions", "an existing feature group")
        for action, layout, definitions_ in actions:
            if action == "create":
                self._create_group(layout)
            elif action == "update":
                self.aws.call("sagemaker", "update_feature_group", FeatureGroupName=layout.name,
                              FeatureAdditions=definitions_, what=f"adding features to {layout.name}")
        for _, layout, _ in actions:
            self._wait_created(layout.name)

    def _create_group(self, layout: GroupLayout) -> None:
        from mlplat_providers.aws.plan import feature_database

        request = {
            "FeatureGroupName": layout.name,
            "RecordIdentifierFeatureName": layout.record_identifier,
            "EventTimeFeatureName": layout.event_time,
            "FeatureDefinitions": layout.definitions(),
            "OnlineStoreConfig": {"EnableOnlineStore": True},
            "OfflineStoreConfig": {
                "S3StorageConfig": {"S3Uri": f"s3://{self.aws.bucket}/features"},
                "DataCatalogConfig": {"Catalog": "AwsDataCatalog", "Database": feature_database(self.aws.plan),
                                      "TableName": layout.name.replace("-", "_").lower()},
                "DisableGlueTableCreation": False,
            },
            "RoleArn": self.aws.role_arn,
            "Description": f"mlplat feature view of stack {self.spec.name}",
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(self.aws.plan.tags.items())],
        }
        problems = rules.create_feature_group_problems(request)
        if problems:  # layout_problems checked the names already: a bug if this fires
            raise FeatureDefinitionError("; ".join(problems), where=layout.name)
        try:
            self.aws.call("sagemaker", "create_feature_group", what=f"creating feature group {layout.name}", **request)
        except ExternalError as exc:
            if exc.details.get("code") != "ResourceInUse":
                raise  # another apply created it meanwhile: the wait below adopts it

    def _describe_group(self, name: str) -> dict[str, Any] | None:
        try:
            found = self.aws.call("sagemaker", "describe_feature_group", FeatureGroupName=name, not_found=GROUP_MISSING,
                                  what=f"reading feature group {name}")
        except NotFound:
            return None
        if found.get("FeatureGroupStatus") == "Created":
            self._described[name] = found
        return dict(found)

    def _wait_created(self, name: str) -> dict[str, Any]:
        """DescribeFeatureGroup until the group is Created (creation is asynchronous: Creating -> Created)."""
        deadline = self.poller.clock() + self.poller.timeout_seconds
        while True:
            found = self._describe_group(name)
            status = (found or {}).get("FeatureGroupStatus")
            if status == "Created":
                return found or {}
            if found is None or status in ("CreateFailed", "Deleting", "DeleteFailed"):
                reason = (found or {}).get("FailureReason") or "the group is gone"
                raise ExternalError(f"feature group {name} is {status or 'missing'}: {reason}", where=name,
                                    hint="fix the cause (the platform role's S3 and Glue access, quotas), delete the "
                                         "failed group in the SageMaker console and run `mlplat features apply` again")
            if self.poller.clock() >= deadline:
                raise ExternalError(f"feature group {name} is still {status} after {self.poller.timeout_seconds:.0f} s",
                                    where=name, hint="run `mlplat features apply` again later: it waits for the group")
            self.poller.sleep(self.poller.interval_seconds)

    def _group(self, doc: Mapping[str, Any]) -> tuple[GroupLayout, dict[str, Any]]:
        layout = layout_of(doc, self.prefix)
        found = self._described.get(layout.name) or self._describe_group(layout.name)
        if found is None or found.get("FeatureGroupStatus") != "Created":
            raise FeatureDataError(f"{doc['name']}@{doc['version']} has no feature group in SageMaker ({layout.name})",
                                   hint="run `mlplat features apply`: it creates the view's feature group")
        return layout, found

    # --- ingestion ------------------------------------------------------------------------------

    def _materialize_view(self, doc: Mapping[str, Any], start_us: int, end_us: int) -> int:
        layout, _ = self._group(doc)
        rows = self.rows_in_window(doc, start_us, end_us, latest_only=False)
        dtypes = [f["dtype"] for f in doc["features"]]
        created = doc.get("created_timestamp_field")
        n = len(layout.keys)

        def request(row: tuple[Any, ...]) -> dict[str, Any]:
            keys = row[:n]
            # a null join key in the source fails its request (botocore refuses a null value), as the local
            # online store refuses one
            record: list[dict[str, str | None]] = []
            if layout.record_identifier == RECORD_KEY:
                record.append({"FeatureName": RECORD_KEY, "ValueAsString": layout.record_id(keys)})
            for key, value, dtype in zip(layout.keys, keys, layout.key_dtypes):
                record.append({"FeatureName": key, "ValueAsString": to_text(value, dtype)})
            record.append({"FeatureName": layout.event_time, "ValueAsString": seconds(row[n])})
            if created and row[n + 1] is not None:
                record.append({"FeatureName": created, "ValueAsString": seconds(row[n + 1])})
            for feature, value, dtype in zip(doc["features"], row[n + 2:-1], dtypes):
                text = to_text(value, dtype)
                if text is not None:
                    record.append({"FeatureName": feature["name"], "ValueAsString": text})
            params: dict[str, Any] = {"FeatureGroupName": layout.name, "Record": record}
            if not row[-1]:  # a historic row: the offline store only, so it never displaces the latest online
                params["TargetStores"] = [OFFLINE]
            return params

        self._put_all(request(row) for row in rows)
        return sum(1 for row in rows if row[-1])

    def _put_all(self, requests: Iterable[dict[str, Any]]) -> None:
        """PutRecord every request, at most ``concurrency`` in flight; the first failure stops the rest."""
        client = self.aws.client(FEATURESTORE)  # created before the threads share it

        def put(params: dict[str, Any]) -> None:
            from mlplat_providers.aws.runtime.session import call

            call(client, "put_record", retry=self.aws.retry, what=f"ingesting into {params['FeatureGroupName']}",
                 **params)

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mlplat-put-record") as pool:
            pending: set[Future[None]] = set()
            try:
                for params in requests:
                    if len(pending) >= 4 * self.concurrency:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()
                    pending.add(pool.submit(put, params))
                for future in pending:
                    future.result()
            except BaseException:
                for future in pending:
                    future.cancel()
                raise

    # --- online ---------------------------------------------------------------------------------

    def _batch_get(self, layout: GroupLayout, ids: Sequence[str], features: Sequence[str]) -> dict[str, dict[str, str]]:
        """Record id -> {feature: value} for the ids the online store holds (BatchGetRecord, 100 ids a request)."""
        found: dict[str, dict[str, str]] = {}
        step = rules.BATCH_GET_MAX_IDENTIFIERS
        for start in range(0, len(ids), step):
            wanted = list(ids[start:start + step])
            for _ in range(self.aws.retry.attempts):
                if not wanted:
                    break
                answer = self.aws.call(FEATURESTORE, "batch_get_record", what=f"reading {layout.name} online",
                                       Identifiers=[{"FeatureGroupName": layout.name,
                                                     "RecordIdentifiersValueAsString": wanted,
                                                     "FeatureNames": list(features)}])
                for record in answer.get("Records", []):
                    found[record["RecordIdentifierValueAsString"]] = {
                        v["FeatureName"]: v.get("ValueAsString", "") for v in record.get("Record", [])}
                errors = [e for e in answer.get("Errors", []) if e.get("ErrorCode") not in ("ResourceNotFound",)]
                if errors:
                    first = errors[0]
                    raise ExternalError(f"BatchGetRecord failed for {layout.name} record "
                                        f"{first.get('RecordIdentifierValueAsString')!r}: {first.get('ErrorCode')} "
                                        f"{first.get('ErrorMessage', '')}", where=layout.name)
                wanted = [i for u in answer.get("UnprocessedIdentifiers", [])
                          for i in u.get("RecordIdentifiersValueAsString", [])]
                if wanted:
                    self.aws.retry.sleep(self.aws.retry.delay(0))
            if wanted:
                raise ExternalError(f"BatchGetRecord left {len(wanted)} records of {layout.name} unprocessed",
                                    where=layout.name, hint="retry; SageMaker was throttling reads")
        return found

    def online(self, selections: Sequence[ViewSelection], keys: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in keys]
        for sel in selections:
            layout, _ = self._group(sel.document)
            dtypes = {f["name"]: f["dtype"] for f in sel.document["features"]}
            ids = [layout.record_id([row[k] for k in sel.join_keys]) for row in keys]
            found = self._batch_get(layout, list(dict.fromkeys(ids)), sel.features)
            for i, record_id in enumerate(ids):
                values = found.get(record_id, {})
                for feature, column in zip(sel.features, sel.columns):
                    out[i][column] = from_text(values.get(feature), dtypes[feature])
        return out

    def online_keys(self, name: str, version: int, limit: int, seed: int) -> list[dict[str, Any]]:
        """A reproducible sample of keys the online store holds: keys of the offline store (what was ingested),
        in a seeded order, kept when BatchGetRecord finds them."""
        doc = self.registered_views()[(name, version)]
        layout, _ = self._group(doc)
        keys = [e["join_key"] for e in doc["entities"]]
        names = ", ".join(q(k) for k in keys)
        con = self._duck()
        try:
            candidates = [dict(zip(keys, r)) for r in con.execute(
                f"SELECT * FROM (SELECT DISTINCT {', '.join(f'{x} AS {q(k)}' for x, k in zip(self._key_expr(doc), keys))} "
                f"FROM {self._offline_sql(doc)}) "
                f"ORDER BY hash({names}, {int(seed)}), {names}").fetchall()]
        finally:
            con.close()
        out: list[dict[str, Any]] = []
        step = rules.BATCH_GET_MAX_IDENTIFIERS
        for start in range(0, len(candidates), step):
            chunk = candidates[start:start + step]
            ids = [layout.record_id([c[k] for k in keys]) for c in chunk]
            held = self._batch_get(layout, ids, [layout.event_time])
            out += [c for c, i in zip(chunk, ids) if i in held]
            if len(out) >= limit:
                break
        return out[:limit]

    # --- offline --------------------------------------------------------------------------------

    def _offline_files(self, resolved: str) -> list[Path]:
        """The offline store's Parquet files, copied once into the state's cache (they are never rewritten)."""
        from mlplat_providers.aws.runtime.registry import split_s3

        bucket, prefix = split_s3(resolved.rstrip("/") + "/")
        files: list[Path] = []
        token: str | None = None
        while True:
            page = self.aws.call("s3", "list_objects_v2", Bucket=bucket, Prefix=prefix,
                                 what=f"listing the offline store {resolved}",
                                 **({"ContinuationToken": token} if token else {}))
            for item in page.get("Contents", []):
                key = item["Key"]
                if not key.endswith(".parquet"):
                    continue
                target = self.state.cache / "offline-store" / bucket / key
                if not target.is_file() or target.stat().st_size != item.get("Size"):
                    body = self.aws.call("s3", "get_object", Bucket=bucket, Key=key, what=f"reading s3://{bucket}/{key}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    partial = target.with_suffix(".partial")
                    partial.write_bytes(body["Body"].read())
                    partial.replace(target)
                files.append(target)
            if not page.get("IsTruncated"):
                return sorted(files)
            token = page.get("NextContinuationToken")

    def _offline_sql(self, document: Mapping[str, Any]) -> str:
        """The offline store as the relation the point-in-time join reads: each column by the view's name and
        type (Unix seconds back to timestamps), deleted records dropped, a feature no file has yet as nulls;
        ties at one event time go to the later ``api_invocation_time``."""
        layout, found = self._group(document)
        resolved = found["OfflineStoreConfig"]["S3StorageConfig"].get("ResolvedOutputS3Uri")
        if not resolved:
            raise ExternalError(f"feature group {layout.name} names no offline store location",
                                hint="the group was created without an offline store; declare a new view version")
        files = self._offline_files(resolved)
        stamp_columns = {document["timestamp_field"], document.get("created_timestamp_field")} | {
            f["name"] for f in document["features"] if f["dtype"] == "timestamp"}
        wanted: dict[str, str] = {}
        for entity in document["entities"]:
            wanted[entity["join_key"]] = DTYPES[entity["dtype"]][0]
        for column in stamp_columns - {None}:
            wanted[str(column)] = "TIMESTAMP"
        for feature in document["features"]:
            wanted.setdefault(feature["name"], DTYPES[feature["dtype"]][0])
        if not files:
            columns = ", ".join(f"NULL::{t} AS {q(c)}" for c, t in wanted.items())
            return f"(SELECT {columns}, ''::VARCHAR AS {FILE}, 0::BIGINT AS {ROW} WHERE false)"
        paths = "[" + ", ".join(lit(str(p)) for p in files) + "]"
        source = (f"read_parquet({paths}, filename=true, file_row_number=true, union_by_name=true, "
                  "hive_partitioning=false)")
        con = self._duck()
        try:
            present = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        finally:
            con.close()
        selected = []
        for column, kind in wanted.items():
            if column not in present:
                selected.append(f"NULL::{kind} AS {q(column)}")
            elif kind == "TIMESTAMP":
                selected.append(f"make_timestamp(CAST(round({q(column)} * 1000000) AS BIGINT)) AS {q(column)}")
            else:
                selected.append(q(column))
        return (f"(SELECT {', '.join(selected)}, strftime(api_invocation_time, '%Y%m%dT%H%M%S.%f') || filename "
                f"AS {FILE}, file_row_number AS {ROW} FROM {source} WHERE NOT coalesce(is_deleted, false))")
