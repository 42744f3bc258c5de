"""The feature store of the azure provider: the Azure Machine Learning managed feature store (a workspace of
kind ``FeatureStore``), its offline store in the feature store's storage account and its online store on
Azure Cache for Redis.

Definitions, materializations and usage live in the stack's ledger (:mod:`mlplat.features.store`, as for
every provider). A view version ``v`` of view ``name`` is:

* one **feature-store entity** version per view entity (``featurestoreEntities/<entity>/versions/<n>``,
  the join key as its index column typed by the view's dtype); a changed index column makes the entity's
  next version;
* a **feature set** version (``featuresets/<name>/versions/<azure version>``) naming those entities
  (``azureml:<entity>:<n>``), its materialization settings (online and offline) and its specification: a
  ``FeaturesetSpec.yaml`` (source: the materialized Parquet of the offline store, the timestamp column,
  the features with their types, the index columns) uploaded under ``featuresets/<name>/<azure version>/``
  in the feature store's storage account. Feature-set versions are immutable, so the view version's first
  spec is Azure version ``<v>`` and a later one (a non-breaking update: an added feature) the next
  ``<v>.<k>``; a feature whose type changes is refused before anything is written (declare a new view
  version). Each carries the stack's cost tags, ``mlplat-managed: "true"``, ``mlplat-view`` and
  ``mlplat-view-version``; the features and the spec digest are in its immutable ``properties``.

``materialize`` writes every row of the window as one Parquet file of the offline store
(``offline/<name>/<v>/<start>-<end>.parquet``, the same file for the same window) and the latest row per
entity key into the online store, never over a newer one. The online store is Azure Cache for Redis, the
store the managed feature store materializes to: the runtime speaks the Redis protocol with redis-py to the
cache the feature store's online-store connection names (``featureStoreSettings.onlineStoreConnectionName``,
else the program's ``mlplat-online-store``; Entra ID token auth on port 6380), or to ``MLPLAT_AZURE_REDIS_URL``
when set (the tests' Redis server on 127.0.0.1). Each entity key
is one hash ``mlplat:<feature store>:<view>:<v>:<keys as JSON>`` with a field per feature (JSON values,
timestamps as µs) plus the event and created times; reads pipeline at most :data:`ONLINE_BATCH` keys per
round trip, as Azure Cache for Redis recommends small pipelined requests over large ones. Point-in-time
training sets read the view's source through the same DuckDB join as every provider (the offline store
holds the same rows). The runtime owns entity and feature-set versions; the program owns the feature-store
workspace and its containers.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from mlplat.contracts import ViewSelection
from mlplat.errors import NotFound, StackError
from mlplat.features.definitions import Definitions
from mlplat.features.errors import FeatureDataError, refuse_invalid_views, refuse_unchangeable
from mlplat.features.plan import FeaturePlan
from mlplat.features.store import LedgerFeatureStore
from mlplat_providers.azure.naming import PLATFORM_CONTAINER

REDIS_ENV = "MLPLAT_AZURE_REDIS_URL"
REDIS_SCOPE = "https://redis.azure.com/.default"
CONTAINER = PLATFORM_CONTAINER  # the program creates it in the (shared) storage account
SPEC_FILE = "FeaturesetSpec.yaml"
# Azure Cache for Redis: prefer pipelined small requests; a large request or response delays every later
# one on the connection (https://learn.microsoft.com/azure/azure-cache-for-redis/cache-best-practices-development)
ONLINE_BATCH = 100
A_FS = "Microsoft.MachineLearningServices/workspaces"
VIEW_TAG, VERSION_TAG = "mlplat-view", "mlplat-view-version"
# REST FeatureDataType of the view dtypes: String, Integer, Long, Float, Double, Binary, Datetime, Boolean
# (https://learn.microsoft.com/azure/machine-learning/reference-yaml-featureset-spec, features.type)
DATA_TYPE = {"int32": "Integer", "int64": "Long", "float32": "Float", "float64": "Double", "string": "String",
             "bool": "Boolean", "timestamp": "Datetime"}
# Asset names (entities, feature sets): letters, digits, '-', '_' and '.', starting with a letter or digit, at
# most 255 characters (https://learn.microsoft.com/azure/machine-learning/reference-yaml-featureset, name)
_ASSET_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9\-_.]{0,254}$")


def asset_name_problem(name: str, what: str) -> str | None:
    if not _ASSET_NAME.fullmatch(name or ""):
        return (f"{what} {name!r} is not an Azure ML asset name (letters, digits, '-', '_' and '.', starting with a "
                "letter or digit, at most 255 characters)")
    return None


def layout_problems(doc: Mapping[str, Any]) -> list[str]:
    """Why the managed feature store would refuse a view document's entities and feature set."""
    problems = [p for p in (asset_name_problem(doc["name"], "feature set name"),
                            *(asset_name_problem(e["name"], "entity name") for e in doc["entities"])) if p]
    for item in [*doc["entities"], *doc["features"]]:
        if item["dtype"] not in DATA_TYPE:
            problems.append(f"dtype {item['dtype']!r} of {item.get('name')!r} has no feature-store data type")
    keys = {e["join_key"] for e in doc["entities"]}
    for feature in doc["features"]:
        if feature["name"] in keys:
            problems.append(f"feature {feature['name']!r} is also an index column; the feature store keeps them apart")
    return problems


def azure_version(view_version: int, revision: int) -> str:
    """The feature-set version of a view version's ``revision``-th spec (1: ``"<v>"``, then ``"<v>.<k>"``)."""
    return str(int(view_version)) if revision <= 1 else f"{int(view_version)}.{revision - 1}"


def spec_document(doc: Mapping[str, Any], source_path: str) -> dict[str, Any]:
    """The ``FeaturesetSpec.yaml`` of a view document, reading the offline store's Parquet at ``source_path``."""
    return {
        "$schema": "http://azureml/sdk-2-0/FeatureSetSpec.json",
        "source": {"type": "parquet", "path": f"{source_path.rstrip('/')}/*.parquet",
                   "timestamp_column": {"name": doc["timestamp_field"]}},
        "features": [{"name": f["name"], "type": DATA_TYPE[f["dtype"]].lower()} for f in doc["features"]],
        "index_columns": [{"name": e["join_key"], "type": DATA_TYPE[e["dtype"]].lower()} for e in doc["entities"]],
        **({"temporal_join_lookback": {"days": 0, "hours": 0, "minutes": 0, "seconds": int(doc["ttl_seconds"])}}
           if doc.get("ttl_seconds") else {}),
    }


def spec_digest(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def redis_host(connection_target: str) -> str:
    """The host of the Azure Cache for Redis a connection's target (its ARM resource id, or a host) names."""
    target = connection_target.strip().rstrip("/")
    if target.lower().startswith("/subscriptions/"):
        return f"{target.rsplit('/', 1)[-1]}.redis.cache.windows.net"
    return target.split("://", 1)[-1].split(":", 1)[0]


def token_object_id(token: str) -> str:
    """The ``oid`` claim of an Entra ID access token: the user name Azure Cache for Redis expects with it
    (https://learn.microsoft.com/azure/azure-cache-for-redis/cache-azure-active-directory-for-authentication)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["oid"])
    except (IndexError, ValueError, KeyError) as exc:
        raise StackError(f"the Entra ID token for Azure Cache for Redis names no object id ({exc})",
                         hint="sign in as a user, managed identity or service principal") from None


def encode(value: Any, dtype: str) -> str:
    """A source value (timestamps as µs) as the JSON text the online store keeps; ``null`` for null/NaN."""
    if value is None or (isinstance(value, float) and value != value):
        return "null"
    if dtype in ("int32", "int64", "timestamp"):
        return json.dumps(int(value))
    if dtype in ("float32", "float64"):
        return json.dumps(float(value))
    if dtype == "bool":
        return json.dumps(bool(value))
    return json.dumps(str(value))


def decode(text: str | None, dtype: str) -> Any:
    value = json.loads(text) if text is not None else None
    if value is None:
        return None
    if dtype == "timestamp":
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(value))
    return value


def chunks(items: Sequence[Any], size: int = ONLINE_BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class AzureFeatureStore(LedgerFeatureStore):
    def __init__(self, spec: Any, ctx: Any, session: Any = None, *, redis: Any = None):
        if session is None:
            from mlplat_providers.azure.runtime.session import AzureSession

            session = AzureSession(spec)
        self.azure = session
        from mlplat_providers.azure.runtime.state import AzureState

        reading = bool(getattr(ctx, "reading", False))  # a read never creates a stack's state
        state = AzureState(spec.state_dir, getattr(ctx, "database_url", None)).ensure(create=not reading)
        super().__init__(spec, ctx, state.database(create=not reading), state.root)
        self._redis = redis
        self._fs_workspace: Any = None

    # --- names ------------------------------------------------------------------------------------------

    @property
    def feature_store(self) -> str:
        from mlplat_providers.azure.plan import stack_plan

        return str(stack_plan(self.spec).feature_store)

    def _rest(self) -> Any:
        return self.azure.ml_services()

    def _workspace(self) -> Any:
        """The feature-store workspace (read once); a clear error when the program has not made it."""
        if self._fs_workspace is None:
            try:
                self._fs_workspace = self.azure.call(
                    self._rest().workspaces.get, self.azure.resource_group, self.feature_store, not_found=True,
                    action=f"{A_FS}/read", what=f"feature store {self.feature_store}")
            except NotFound:
                raise FeatureDataError(f"the stack's feature store {self.feature_store} does not exist",
                                       hint=f"run `mlplat up --stack {self.spec.name}`: the program creates it") from None
        return self._fs_workspace

    def _container(self) -> Any:
        """The blob container of the feature store's storage account the specs and the offline store live in."""
        props = self._workspace().get("properties") or {}
        account = str(props.get("storageAccount") or "").rstrip("/").rsplit("/", 1)[-1]
        if not account:
            raise StackError(f"feature store {self.feature_store} has no storage account",
                             hint=f"run `mlplat up --stack {self.spec.name}`")
        return self.azure.blob_service(account).get_container_client(CONTAINER)

    def _offline_path(self, doc: Mapping[str, Any]) -> str:
        return f"offline/{doc['name']}/{int(doc['version'])}"

    def _key_prefix(self, doc: Mapping[str, Any]) -> str:
        return f"mlplat:{self.feature_store}:{doc['name']}:{int(doc['version'])}:"

    # --- definitions ------------------------------------------------------------------------------------

    def _refuse_invalid(self, definitions: Definitions) -> None:
        refuse_invalid_views(
            definitions, layout_problems, "the Azure ML feature store",
            hint="use letters, digits, '-', '_' and '.' in view and entity names, keep features apart from "
                     "join keys, and use a supported dtype; nothing was created")

    def plan(self, definitions: Definitions) -> FeaturePlan:
        self._refuse_invalid(definitions)
        return super().plan(definitions)

    def _versions(self, operations: Any, name: str, what: str) -> list[Any]:
        try:
            return list(self.azure.call(lambda: list(operations.list(self.azure.resource_group, self.feature_store,
                                                                     name)),
                                        not_found=True, what=what))
        except NotFound:
            return []

    def _feature_set_versions(self, doc: Mapping[str, Any]) -> list[Any]:
        """The feature-set versions of a view version, oldest spec first."""
        found = [v for v in self._versions(self._rest().featureset_versions, doc["name"],
                                           f"versions of feature set {doc['name']}")
                 if ((v.get("properties") or {}).get("tags") or {}).get(VERSION_TAG) == str(int(doc["version"]))]
        return sorted(found, key=lambda v: [int(p) for p in str(v["name"]).split(".")])

    def _current(self, doc: Mapping[str, Any]) -> Any | None:
        versions = self._feature_set_versions(doc)
        return versions[-1] if versions else None

    def _prepare_apply(self, definitions: Definitions, plan: FeaturePlan) -> None:
        """Every declared view version's entities and current feature-set version exist: created when missing,
        a changed spec as the next feature-set version. Every view is checked before anything is written."""
        self._refuse_invalid(definitions)
        container = self._container()
        actions: list[tuple[dict[str, Any], int]] = []
        problems = []
        for view in definitions.views:
            doc = view.to_dict()
            spec = spec_document(doc, f"{container.url}/{self._offline_path(doc)}")
            versions = self._feature_set_versions(doc)
            if versions:
                props = versions[-1]["properties"].get("properties") or {}
                if props.get("mlplat.spec_digest") == spec_digest(spec):
                    continue
                have = json.loads(props.get("mlplat.features") or "{}")
                retyped = [f"{f['name']} ({have[f['name']]} → {f['dtype']})" for f in doc["features"]
                           if f["name"] in have and have[f["name"]] != f["dtype"]]
                if retyped:
                    problems.append(f"{view.ref}: feature set {doc['name']} version {versions[-1]['name']} has "
                                    f"{', '.join(retyped)}; the Azure ML feature store cannot change a feature's type")
            actions.append((doc, len(versions) + 1))
        refuse_unchangeable(problems, definitions.path or "feature definitions", "an existing feature set")
        for doc, revision in actions:
            entities = [self._ensure_entity(e) for e in doc["entities"]]
            self._create_feature_set_version(container, doc, azure_version(doc["version"], revision), entities)

    def _ensure_entity(self, entity: Mapping[str, Any]) -> str:
        """``azureml:<entity>:<n>``: the entity version indexing the join key with its type (the next one when
        the key or its type changed)."""
        from azure.ai.ml._restclient.arm_ml_service import models

        operations = self._rest().featurestore_entity_versions
        index = [{"columnName": entity["join_key"], "dataType": DATA_TYPE[entity["dtype"]]}]
        versions = self._versions(operations, entity["name"], f"versions of entity {entity['name']}")
        for version in versions:
            columns = [{"columnName": c.get("columnName"), "dataType": c.get("dataType")}
                       for c in (version["properties"].get("indexColumns") or [])]
            if columns == index:
                return f"azureml:{entity['name']}:{version['name']}"
        number = str(max([int(v["name"]) for v in versions if str(v["name"]).isdigit()] + [0]) + 1)
        body = models.FeaturestoreEntityVersion({"properties": {
            "description": f"mlplat entity {entity['name']} (join key {entity['join_key']})",
            "tags": self.azure.tags, "indexColumns": index}})
        what = f"creating entity {entity['name']} version {number}"
        self.azure.run(operations.begin_create_or_update, self.azure.resource_group, self.feature_store,
                       entity["name"], number, body, what=what, action=f"{A_FS}/featurestoreEntities/versions/write")
        return f"azureml:{entity['name']}:{number}"

    def _create_feature_set_version(self, container: Any, doc: Mapping[str, Any], version: str,
                                    entities: list[str]) -> None:
        import yaml
        from azure.ai.ml._restclient.arm_ml_service import models

        spec = spec_document(doc, f"{container.url}/{self._offline_path(doc)}")
        folder = f"featuresets/{doc['name']}/{version}"
        blob = container.get_blob_client(f"{folder}/{SPEC_FILE}")
        self.azure.call(blob.upload_blob, yaml.safe_dump(spec, sort_keys=False).encode(), overwrite=True,
                        what=f"uploading the spec of feature set {doc['name']} version {version}")
        body = models.FeaturesetVersion({"properties": {
            "description": f"mlplat feature view {doc['name']}@{doc['version']}",
            "tags": {**self.azure.tags, VIEW_TAG: str(doc["name"]), VERSION_TAG: str(int(doc["version"]))},
            "properties": {"mlplat.stack": str(self.spec.name), "mlplat.spec_digest": spec_digest(spec),
                           "mlplat.features": json.dumps({f["name"]: f["dtype"] for f in doc["features"]},
                                                         sort_keys=True)},
            "entities": entities,
            "specification": {"path": f"{container.url}/{folder}"},
            "materializationSettings": {"storeType": "OnlineAndOffline",
                                        "resource": {"instanceType": "standard_e8s_v3"}},
            "stage": "Development"}})
        self.azure.run(self._rest().featureset_versions.begin_create_or_update, self.azure.resource_group,
                       self.feature_store, doc["name"], version, body,
                       what=f"creating feature set {doc['name']} version {version}",
                       action=f"{A_FS}/featuresets/versions/write")

    # --- materialization --------------------------------------------------------------------------------

    def _materialize_view(self, doc: Mapping[str, Any], start_us: int, end_us: int) -> int:
        if self._current(doc) is None:
            raise FeatureDataError(f"{doc['name']}@{doc['version']} has no feature set in the Azure ML feature store "
                                   f"{self.feature_store}",
                                   hint="run `mlplat features apply`: it creates the view's feature set version")
        rows = self.rows_in_window(doc, start_us, end_us, latest_only=False)
        self._write_offline(doc, rows, start_us, end_us)
        latest = [r for r in rows if r[-1]]
        self._write_online(doc, latest)
        return len(latest)

    def _write_offline(self, doc: Mapping[str, Any], rows: Sequence[tuple[Any, ...]], start_us: int,
                       end_us: int) -> None:
        import pandas as pd

        keys = [e["join_key"] for e in doc["entities"]]
        n, created = len(keys), doc.get("created_timestamp_field")
        frame = pd.DataFrame({k: [r[i] for r in rows] for i, k in enumerate(keys)})
        frame[doc["timestamp_field"]] = pd.to_datetime([r[n] for r in rows], unit="us", utc=True)
        if created:
            frame[created] = pd.to_datetime([r[n + 1] for r in rows], unit="us", utc=True)
        for i, feature in enumerate(doc["features"]):
            values = [r[n + 2 + i] for r in rows]
            frame[feature["name"]] = (pd.to_datetime(values, unit="us", utc=True) if feature["dtype"] == "timestamp"
                                      else values)
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        name = f"{self._offline_path(doc)}/{int(start_us)}-{int(end_us)}.parquet"
        blob = self._container().get_blob_client(name)
        self.azure.call(blob.upload_blob, buffer.getvalue(), overwrite=True,
                        what=f"writing {doc['name']}@{doc['version']} to the offline store")

    def redis(self) -> Any:
        """A redis-py client on the online store (``MLPLAT_AZURE_REDIS_URL``, else the feature store's
        online-store connection with an Entra ID token)."""
        if self._redis is None:
            import redis

            url = os.environ.get(REDIS_ENV)
            if url:
                self._redis = redis.Redis.from_url(url, decode_responses=True)
            else:
                from mlplat_providers.azure.plan import ONLINE_STORE_CONNECTION

                props = self._workspace().get("properties") or {}
                name = (props.get("featureStoreSettings") or {}).get("onlineStoreConnectionName") \
                    or ONLINE_STORE_CONNECTION
                try:
                    connection = self.azure.call(self._rest().workspace_connections.get, self.azure.resource_group,
                                                 self.feature_store, name, not_found=True, what=f"connection {name}")
                except NotFound:
                    raise StackError(f"feature store {self.feature_store} has no online store connection {name!r}",
                                     hint=f"run `mlplat up --stack {self.spec.name}`: the program creates the Azure "
                                          "Cache for Redis and the connection") from None
                token = self.azure.credential().get_token(REDIS_SCOPE).token
                self._redis = redis.Redis(host=redis_host(str(connection["properties"].get("target") or "")),
                                          port=6380, ssl=True, username=token_object_id(token), password=token,
                                          decode_responses=True)
        return self._redis

    def _redis_call(self, function: Any, what: str) -> Any:
        import redis

        try:
            return function()
        except redis.RedisError as exc:
            from mlplat_providers.azure.runtime.session import AzureUnavailable

            raise AzureUnavailable(f"{what}: the online store (Azure Cache for Redis) failed: {exc}",
                                   hint="check the cache is running and reachable, then retry") from None

    def _entity_key(self, doc: Mapping[str, Any], values: Sequence[Any]) -> str:
        return self._key_prefix(doc) + json.dumps([v if isinstance(v, int | str) else str(v) for v in values],
                                                  separators=(",", ":"))

    def _write_online(self, doc: Mapping[str, Any], latest: Sequence[tuple[Any, ...]]) -> None:
        """Each row as its entity's hash unless the hash holds a newer event (or, at the same event time, a
        later created time): one pipelined read and one pipelined write per batch, not one transaction, so two
        materializations of the same view version at the same moment may interleave."""
        n = len(doc["entities"])
        client = self.redis()
        for chunk in chunks(list(latest)):
            keys = [self._entity_key(doc, r[:n]) for r in chunk]

            def stored(keys: Sequence[str] = keys) -> Any:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.hmget(key, ["__t", "__c"])
                return pipe.execute()

            current = self._redis_call(stored, f"reading {doc['name']}@{doc['version']} online")
            pipe = client.pipeline(transaction=False)
            for key, row, (t, c) in zip(keys, chunk, current):
                mine = (int(row[n]), int(row[n + 1]) if row[n + 1] is not None else -1)
                if t is not None and (int(t), int(c) if c not in (None, "") else -1) > mine:
                    continue
                mapping = {"__t": str(mine[0]), "__c": str(mine[1]) if mine[1] >= 0 else ""}
                for feature, value in zip(doc["features"], row[n + 2:-1]):
                    mapping[feature["name"]] = encode(value, feature["dtype"])
                pipe.hset(key, mapping=mapping)
            self._redis_call(pipe.execute, f"writing {doc['name']}@{doc['version']} online")

    # --- online reads -----------------------------------------------------------------------------------

    def online(self, selections: Sequence[ViewSelection], keys: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in keys]
        client = self.redis()
        for sel in selections:
            doc = sel.document
            dtypes = {f["name"]: f["dtype"] for f in doc["features"]}
            ids = [self._entity_key(doc, [row[k] for k in sel.join_keys]) for row in keys]
            unique = list(dict.fromkeys(ids))
            found: dict[str, list[Any]] = {}
            for chunk in chunks(unique):
                def read(chunk: Sequence[str] = chunk, features: Sequence[str] = sel.features) -> Any:
                    pipe = client.pipeline(transaction=False)
                    for key in chunk:
                        pipe.hmget(key, list(features))
                    return pipe.execute()

                found.update(zip(chunk, self._redis_call(read, f"reading {sel.name}@{sel.version} online")))
            for i, key in enumerate(ids):
                values = found.get(key) or [None] * len(sel.features)
                for feature, column, text in zip(sel.features, sel.columns, values):
                    out[i][column] = decode(text, dtypes[feature])
        return out

    def online_keys(self, name: str, version: int, limit: int, seed: int) -> list[dict[str, Any]]:
        """A reproducible sample of the entity keys the online store holds (SCAN of the view version's keys,
        never KEYS), in a seeded order."""
        doc = self.registered_views()[(name, version)]
        names = [e["join_key"] for e in doc["entities"]]
        prefix = self._key_prefix(doc)
        client = self.redis()
        held = self._redis_call(lambda: list(client.scan_iter(match=prefix.replace("[", "\\[") + "*", count=1000)),
                                f"listing {name}@{version} online")

        def rank(key: str) -> str:
            return hashlib.sha256(f"{seed}|{key}".encode()).hexdigest()

        return [dict(zip(names, json.loads(key[len(prefix):]))) for key in sorted(held, key=rank)[:int(limit)]]
