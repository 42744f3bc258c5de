"""The feature store of the gcp provider: Vertex AI Feature Store (feature groups over BigQuery, feature views
in the stack's online store).

Definitions, materializations and usage live in the stack's ledger (:mod:`mlplat.features.store`, as for
every provider). A view version ``v`` of view ``name`` is:

* a BigQuery table ``<project>.<feature dataset>.<name>_v<v>`` (the program creates the dataset): the view's
  join keys, ``feature_timestamp`` (the event time, the column Vertex AI reads a feature group's time series
  from) and its features, typed by the view's dtypes;
* a **feature group** ``<name>_v<v>`` over that table (``bigQuery.bigQuerySource``, the join keys as
  ``entityIdColumns``) with one **feature** per view feature;
* a **feature view** ``<name>_v<v>`` in the stack's online store (``featureRegistrySource`` naming that group
  and its features), synced from BigQuery by the online store.

``materialize`` appends the view's rows of the window to the table (``insertAll``) and syncs the feature
view (``SyncFeatureView``): the online store then holds the latest row per entity over everything
materialized, so an older window never replaces a newer value. Online reads are ``FetchFeatureValues``
(one data key per entity; several join keys form a composite key in declaration order). Point-in-time
training sets read the view's source through the same DuckDB join as every provider (the BigQuery table
holds the same rows). The runtime owns these groups and views; the program owns the dataset and the store.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from mlplat.contracts import ViewSelection
from mlplat.errors import NotFound
from mlplat.features.definitions import Definitions
from mlplat.features.errors import FeatureDataError, refuse_invalid_views
from mlplat.features.store import LedgerFeatureStore

TIMESTAMP_COLUMN = "feature_timestamp"
# BigQuery column types of the view dtypes (https://cloud.google.com/bigquery/docs/schemas#standard_sql_data_types)
BQ_TYPE = {"int32": "INTEGER", "int64": "INTEGER", "float32": "FLOAT", "float64": "FLOAT", "string": "STRING",
           "bool": "BOOLEAN", "timestamp": "TIMESTAMP"}


def resource_id(name: str, version: int) -> str:
    """The id of a view version's feature group, feature view and table (lowercase, digits, underscores)."""
    from mlplat_providers.gcp.plan import underscored

    return str(underscored(f"{name}_v{int(version)}", 60))


def layout_problems(doc: Mapping[str, Any]) -> list[str]:
    """Why Vertex AI Feature Store would refuse a view document's resources (ids, feature names, dtypes)."""
    from mlplat_providers.gcp.service_rules import feature_resource_problem

    problems = []
    rid = resource_id(doc["name"], doc["version"])
    problem = feature_resource_problem(rid, "feature group id")
    if problem:
        problems.append(problem)
    keys = [e["join_key"] for e in doc["entities"]]
    for feature in doc["features"]:
        problem = feature_resource_problem(feature["name"], "feature id", 128)
        if problem:
            problems.append(problem)
        if feature["dtype"] not in BQ_TYPE:
            problems.append(f"dtype {feature['dtype']!r} of {feature['name']!r} has no BigQuery type")
    for name in [*keys, *(f["name"] for f in doc["features"])]:
        if name == TIMESTAMP_COLUMN:
            problems.append(f"{TIMESTAMP_COLUMN!r} is the column Vertex AI reads event times from; rename it")
    return problems


def bq_value(value: Any, dtype: str) -> Any:
    """A source value (timestamps as µs) as BigQuery's ``insertAll`` JSON takes it; None for null/NaN."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if dtype == "timestamp":
        return int(value) / 1e6
    if dtype in ("int32", "int64"):
        return int(value)
    if dtype in ("float32", "float64"):
        return float(value)
    if dtype == "bool":
        return bool(value)
    return str(value)


def from_feature_value(value: Any, dtype: str) -> Any:
    """A ``FeatureValue`` (proto-plus) as the view's dtype."""
    kind = type(value).pb(value).WhichOneof("value") if value is not None else None
    if kind is None:
        return None
    raw = getattr(value, kind)
    if dtype in ("int32", "int64"):
        return int(raw)
    if dtype in ("float32", "float64"):
        return float(raw)
    if dtype == "bool":
        return bool(raw)
    if dtype == "timestamp":
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(raw))
    return str(raw)


class GcpFeatureStore(LedgerFeatureStore):
    def __init__(self, spec: Any, ctx: Any, session: Any = None, *, db: Any = None, state_root: Any = None):
        if session is None:
            from mlplat_providers.gcp.runtime.session import GcpSession

            session = GcpSession(spec)
        self.gcp = session
        if db is None:
            from mlplat_providers.gcp.runtime.state import GcpState

            reading = bool(getattr(ctx, "reading", False))  # a read never creates a stack's state
            state = GcpState(spec.state_dir, getattr(ctx, "database_url", None)).ensure(create=not reading)
            db, state_root = state.database(create=not reading), state.root
        super().__init__(spec, ctx, db, state_root)

    # --- names ------------------------------------------------------------------------------------------

    @property
    def store_name(self) -> str:
        return f"{self.gcp.location}/featureOnlineStores/{self.gcp.plan.online_store}"

    def group_name(self, doc: Mapping[str, Any]) -> str:
        return f"{self.gcp.location}/featureGroups/{resource_id(doc['name'], doc['version'])}"

    def view_name(self, doc: Mapping[str, Any]) -> str:
        return f"{self.store_name}/featureViews/{resource_id(doc['name'], doc['version'])}"

    def table(self, doc: Mapping[str, Any]) -> str:
        plan = self.gcp.plan
        return f"{plan.project}.{plan.feature_dataset}.{resource_id(doc['name'], doc['version'])}"

    # --- definitions ------------------------------------------------------------------------------------

    def _refuse_invalid(self, definitions: Definitions) -> None:
        refuse_invalid_views(
            definitions, layout_problems, "Vertex AI Feature Store",
            hint="use lowercase letters, digits and underscores (not starting with a digit) for view and "
                     "feature names, and a supported dtype; nothing was created")

    def plan(self, definitions: Definitions) -> Any:
        self._refuse_invalid(definitions)
        return super().plan(definitions)

    def _get(self, client: Any, method: str, name: str) -> Any | None:
        try:
            return self.gcp.call(getattr(client, method), name=name, method=method, not_found=True, what=name)
        except NotFound:
            return None

    def _prepare_apply(self, definitions: Definitions, plan: Any) -> None:
        """Every declared view version's table, feature group, features and feature view exist (created when
        missing; a feature a non-breaking update added is created in the group and the view is recreated)."""
        self._refuse_invalid(definitions)
        if self._get(self.gcp.vertex("feature_online_store_admin"), "get_feature_online_store", self.store_name) is None:
            raise FeatureDataError(f"the stack's online store {self.store_name} does not exist",
                                   hint=f"run `mlplat up --stack {self.spec.name}`: the program creates it")
        for view in definitions.views:
            self._ensure(view.to_dict())

    def _ensure(self, doc: Mapping[str, Any]) -> None:
        from google.cloud import aiplatform_v1 as v1

        registry = self.gcp.vertex("feature_registry")
        admin = self.gcp.vertex("feature_online_store_admin")
        rid = resource_id(doc["name"], doc["version"])
        self._ensure_table(doc)
        keys = [e["join_key"] for e in doc["entities"]]
        if self._get(registry, "get_feature_group", self.group_name(doc)) is None:
            group = v1.FeatureGroup(
                big_query=v1.FeatureGroup.BigQuery(
                    big_query_source=v1.BigQuerySource(input_uri=f"bq://{self.table(doc)}"), entity_id_columns=keys),
                labels=self.gcp.labels, description=self.gcp.plan.describe(f"mlplat feature view {doc['name']}@"
                                                                           f"{doc['version']}"))
            self.gcp.wait(self.gcp.call(registry.create_feature_group, parent=self.gcp.location, feature_group=group,
                                        feature_group_id=rid, method="create_feature_group",
                                        what=f"creating feature group {rid}"), what=f"creating feature group {rid}")
        have = {f.name.rsplit("/", 1)[-1] for f in self.gcp.call(
            registry.list_features, parent=self.group_name(doc), method="list_features", what=f"features of {rid}")}
        added = [f for f in doc["features"] if f["name"] not in have]
        for feature in added:
            self.gcp.wait(self.gcp.call(registry.create_feature, parent=self.group_name(doc),
                                        feature=v1.Feature(labels=self.gcp.labels), feature_id=feature["name"],
                                        method="create_feature", what=f"creating feature {rid}.{feature['name']}"),
                          what=f"creating feature {rid}.{feature['name']}")
        existing = self._get(admin, "get_feature_view", self.view_name(doc))
        if existing is not None and added:
            self.gcp.wait(self.gcp.call(admin.delete_feature_view, name=self.view_name(doc), method="delete_feature_view",
                                        what=f"replacing feature view {rid}"), what=f"replacing feature view {rid}")
            existing = None
        if existing is None:
            view = v1.FeatureView(
                feature_registry_source=v1.FeatureView.FeatureRegistrySource(feature_groups=[
                    v1.FeatureView.FeatureRegistrySource.FeatureGroup(
                        feature_group_id=rid, feature_ids=[f["name"] for f in doc["features"]])]),
                labels=self.gcp.labels)
            self.gcp.wait(self.gcp.call(admin.create_feature_view, parent=self.store_name, feature_view=view,
                                        feature_view_id=rid, method="create_feature_view",
                                        what=f"creating feature view {rid}"), what=f"creating feature view {rid}")

    def _ensure_table(self, doc: Mapping[str, Any]) -> None:
        from google.cloud import bigquery

        fields = [bigquery.SchemaField(e["join_key"], BQ_TYPE[e["dtype"]], mode="REQUIRED") for e in doc["entities"]]
        fields.append(bigquery.SchemaField(TIMESTAMP_COLUMN, "TIMESTAMP", mode="REQUIRED"))
        fields += [bigquery.SchemaField(f["name"], BQ_TYPE[f["dtype"]]) for f in doc["features"]]
        client = self.gcp.bigquery()
        try:
            live = self.gcp.call(client.get_table, self.table(doc), method="bigquery.tables.get", not_found=True,
                                 what=self.table(doc))
        except NotFound:
            table = bigquery.Table(self.table(doc), schema=fields)
            table.labels = dict(self.gcp.labels)
            self.gcp.call(client.create_table, table, method="bigquery.tables.create",
                          what=f"creating the feature table {self.table(doc)}")
            return
        current = {f.name for f in live.schema}
        missing = [f for f in fields if f.name not in current]
        if missing:  # a non-breaking update added features: add their columns
            live.schema = [*live.schema, *missing]
            self.gcp.call(client.update_table, live, ["schema"], method="bigquery.tables.update",
                          what=f"adding columns to {self.table(doc)}")

    # --- ingestion ------------------------------------------------------------------------------------

    def _materialize_view(self, doc: Mapping[str, Any], start_us: int, end_us: int) -> int:
        admin = self.gcp.vertex("feature_online_store_admin")
        if self._get(admin, "get_feature_view", self.view_name(doc)) is None:
            raise FeatureDataError(f"{doc['name']}@{doc['version']} has no feature view in Vertex AI "
                                   f"({self.view_name(doc)})",
                                   hint="run `mlplat features apply`: it creates the view's feature group and view")
        rows = self.rows_in_window(doc, start_us, end_us, latest_only=False)
        keys = [e["join_key"] for e in doc["entities"]]
        key_dtypes = [e["dtype"] for e in doc["entities"]]
        n = len(keys)
        payload = []
        for row in rows:
            record = {k: bq_value(v, d) for k, v, d in zip(keys, row[:n], key_dtypes)}
            record[TIMESTAMP_COLUMN] = int(row[n]) / 1e6
            for feature, value in zip(doc["features"], row[n + 2:n + 2 + len(doc["features"])]):
                record[feature["name"]] = bq_value(value, feature["dtype"])
            digest = hashlib.sha256(json.dumps([record[k] for k in keys] + [row[n]], default=str).encode()).hexdigest()
            payload.append({"json": record, "insertId": digest[:32]})  # a retried window inserts no duplicates
        client = self.gcp.bigquery()
        for start in range(0, len(payload), 500):
            chunk = payload[start:start + 500]
            errors = self.gcp.call(client.insert_rows_json, self.table(doc), [r["json"] for r in chunk],
                                   row_ids=[r["insertId"] for r in chunk], method="bigquery.tabledata.insertAll",
                                   what=f"writing {doc['name']}@{doc['version']} to {self.table(doc)}")
            if errors:
                raise FeatureDataError(f"BigQuery refused rows of {doc['name']}@{doc['version']}: "
                                       f"{json.dumps(errors[:3])}", hint="check the source's values against the view")
        self.gcp.call(admin.sync_feature_view, feature_view=self.view_name(doc), method="sync_feature_view",
                      what=f"syncing feature view {resource_id(doc['name'], doc['version'])}")
        return len({tuple(r[:n]) for r in rows})

    # --- online -----------------------------------------------------------------------------------------

    def _data_key(self, sel: ViewSelection, row: Mapping[str, Any]) -> Any:
        from google.cloud import aiplatform_v1 as v1

        parts = [str(row[k]) for k in sel.join_keys]
        if len(parts) == 1:
            return v1.FeatureViewDataKey(key=parts[0])
        return v1.FeatureViewDataKey(composite_key=v1.FeatureViewDataKey.CompositeKey(parts=parts))

    def online(self, selections: Sequence[ViewSelection], keys: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        from google.cloud import aiplatform_v1 as v1

        client = self.gcp.vertex("feature_online_store")
        out: list[dict[str, Any]] = [{} for _ in keys]
        for sel in selections:
            dtypes = {f["name"]: f["dtype"] for f in sel.document["features"]}
            for i, row in enumerate(keys):
                try:
                    found = self.gcp.call(client.fetch_feature_values, request=v1.FetchFeatureValuesRequest(
                        feature_view=self.view_name(sel.document), data_key=self._data_key(sel, row),
                        data_format=v1.FeatureViewDataFormat.KEY_VALUE), method="fetch_feature_values",
                        not_found=True, what=f"reading {sel.name}@{sel.version} online")
                    values = {f.name: f.value for f in found.key_values.features}
                except NotFound:
                    values = {}  # an entity the online store does not hold
                for feature, column in zip(sel.features, sel.columns):
                    value = values.get(feature)
                    out[i][column] = from_feature_value(value, dtypes[feature]) if value is not None else None
        return out

    def online_keys(self, name: str, version: int, limit: int, seed: int) -> list[dict[str, Any]]:
        """A reproducible sample of keys the online store holds: the keys synced from the view's table."""
        from mlplat_providers.gcp.runtime import bq

        doc = self.registered_views()[(name, version)]
        keys = [e["join_key"] for e in doc["entities"]]
        try:
            rows = bq.query(self.gcp, "SELECT DISTINCT " + ", ".join(f"`{k}`" for k in keys)
                            + f" FROM `{self.table(doc)}`", [], what=f"keys of {name}@{version}", not_found=True)
        except NotFound:
            return []

        def rank(row: dict[str, Any]) -> str:
            return hashlib.sha256(json.dumps([seed, *[row[k] for k in keys]], default=str).encode()).hexdigest()

        return [{k: r[k] for k in keys} for r in sorted(rows, key=rank)[:int(limit)]]
