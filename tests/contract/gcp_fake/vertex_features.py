"""Vertex AI Feature Store fake routes: online stores (made by the program: tests add them), feature groups over
BigQuery, features, feature views, ``SyncFeatureView`` and ``FetchFeatureValues`` (mounted into the Vertex
fake's route table through ``ROUTES``).

Bodies are parsed into ``aiplatform_v1`` types; the documented rules are enforced
(https://cloud.google.com/vertex-ai/docs/featurestore/latest/create-featuregroup,
.../create-feature, .../create-featureview): ids of lowercase letters, digits and underscores; a feature
group's BigQuery table exists, has the entity id columns and a ``feature_timestamp`` TIMESTAMP column; a
feature is a column of its group's table; a feature view names existing groups and features of an existing
online store. The BigQuery side is the fake BigQuery server's state, which a test hands to the Vertex fake as
``state.extra["bigquery"]``; a sync reads the latest row per entity from it.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

from tests.contract.gcp_fake.vertex import LOC, ApiError, Call, Route, _v1, invalid, to_json

ID = re.compile(r"^[a-z_][a-z0-9_]{0,59}$")
FEATURE_ID = re.compile(r"^[a-z_][a-z0-9_]{0,127}$")


def _store(call: Call, kind: str) -> dict[str, Any]:
    return call.state.extra.setdefault(kind, {})


def add_online_store(state: Any, project: str, location: str, store: str) -> None:
    """What the program creates (``AiFeatureOnlineStore``)."""
    v1 = _v1()
    name = f"projects/{project}/locations/{location}/featureOnlineStores/{store}"
    state.extra.setdefault("online_stores", {})[name] = v1.FeatureOnlineStore(name=name, bigtable={
        "auto_scaling": {"min_node_count": 1, "max_node_count": 1}})


def _bq_columns(call: Call, uri: str) -> dict[str, str]:
    fake = call.state.extra.get("bigquery")
    table = uri.removeprefix("bq://")
    if fake is None or table not in fake.tables:
        raise ApiError("INVALID_ARGUMENT", f"BigQuery source {uri} does not exist or is not readable")
    return {f["name"]: f["type"] for f in fake.tables[table]["schema"]["fields"]}


def get_online_store(call: Call) -> Any:
    name = f"{call.parent}/featureOnlineStores/{call.params['store']}"
    call.require("aiplatform.featureOnlineStores.get", name)
    found = _store(call, "online_stores").get(name)
    if found is None:
        raise ApiError("NOT_FOUND", f"The FeatureOnlineStore does not exist: {name}")
    return to_json(found)


def create_feature_group(call: Call) -> Any:
    v1 = _v1()
    group = call.parse(v1.FeatureGroup)
    call.require("aiplatform.featureGroups.create", call.parent)
    gid = call.arg("featureGroupId")
    invalid(None if ID.match(gid) else f"featureGroupId {gid!r} must match {ID.pattern}")
    source = group.big_query.big_query_source.input_uri
    invalid(None if source else "featureGroup.bigQuery.bigQuerySource.inputUri is required")
    columns = _bq_columns(call, source)
    missing = [c for c in group.big_query.entity_id_columns if c not in columns]
    invalid(f"entity id columns not in {source}: {', '.join(missing)}" if missing else None)
    invalid(None if columns.get("feature_timestamp") == "TIMESTAMP" else
            f"{source} has no feature_timestamp TIMESTAMP column")
    name = f"{call.parent}/featureGroups/{gid}"
    if name in _store(call, "feature_groups"):
        raise ApiError("ALREADY_EXISTS", f"FeatureGroup {name} already exists")
    group.name = name
    group.create_time = group.update_time = call.state.timestamp()
    _store(call, "feature_groups")[name] = group
    return call.state.operation(name, group, "FeatureGroup")


def _group(call: Call) -> Any:
    name = f"{call.parent}/featureGroups/{call.params['group']}"
    found = _store(call, "feature_groups").get(name)
    if found is None:
        raise ApiError("NOT_FOUND", f"The FeatureGroup does not exist: {name}")
    return found


def get_feature_group(call: Call) -> Any:
    call.require("aiplatform.featureGroups.get", call.path)
    return to_json(_group(call))


def create_feature(call: Call) -> Any:
    v1 = _v1()
    feature = call.parse(v1.Feature)
    group = _group(call)
    call.require("aiplatform.features.create", group.name)
    fid = call.arg("featureId")
    invalid(None if FEATURE_ID.match(fid) else f"featureId {fid!r} must match {FEATURE_ID.pattern}")
    column = feature.version_column_name or fid
    columns = _bq_columns(call, group.big_query.big_query_source.input_uri)
    invalid(None if column in columns else f"column {column!r} is not in the feature group's BigQuery source")
    name = f"{group.name}/features/{fid}"
    if name in _store(call, "features"):
        raise ApiError("ALREADY_EXISTS", f"Feature {name} already exists")
    feature.name = name
    _store(call, "features")[name] = feature
    return call.state.operation(name, feature, "Feature")


def list_features(call: Call) -> Any:
    group = _group(call)
    call.require("aiplatform.features.list", group.name)
    return {"features": [to_json(f) for n, f in sorted(_store(call, "features").items())
                         if n.startswith(group.name + "/features/")]}


def _view_name(call: Call) -> str:
    return f"{call.parent}/featureOnlineStores/{call.params['store']}/featureViews/{call.params['view']}"


def create_feature_view(call: Call) -> Any:
    v1 = _v1()
    view = call.parse(v1.FeatureView)
    store = f"{call.parent}/featureOnlineStores/{call.params['store']}"
    call.require("aiplatform.featureViews.create", store)
    if store not in _store(call, "online_stores"):
        raise ApiError("NOT_FOUND", f"The FeatureOnlineStore does not exist: {store}")
    vid = call.arg("featureViewId")
    invalid(None if ID.match(vid) else f"featureViewId {vid!r} must match {ID.pattern}")
    groups = list(view.feature_registry_source.feature_groups)
    invalid(None if groups or view.big_query_source.uri else "a feature view needs a source")
    for g in groups:
        gname = f"{call.parent}/featureGroups/{g.feature_group_id}"
        if gname not in _store(call, "feature_groups"):
            raise ApiError("INVALID_ARGUMENT", f"feature group {g.feature_group_id} does not exist")
        absent = [f for f in g.feature_ids if f"{gname}/features/{f}" not in _store(call, "features")]
        invalid(f"features not in {g.feature_group_id}: {', '.join(absent)}" if absent else None)
    name = f"{store}/featureViews/{vid}"
    if name in _store(call, "feature_views"):
        raise ApiError("ALREADY_EXISTS", f"FeatureView {name} already exists")
    view.name = name
    _store(call, "feature_views")[name] = view
    return call.state.operation(name, view, "FeatureView")


def get_feature_view(call: Call) -> Any:
    name = _view_name(call)
    call.require("aiplatform.featureViews.get", name)
    found = _store(call, "feature_views").get(name)
    if found is None:
        raise ApiError("NOT_FOUND", f"The FeatureView does not exist: {name}")
    return to_json(found)


def delete_feature_view(call: Call) -> Any:
    name = _view_name(call)
    call.require("aiplatform.featureViews.delete", name)
    if _store(call, "feature_views").pop(name, None) is None:
        raise ApiError("NOT_FOUND", f"The FeatureView does not exist: {name}")
    _store(call, "online").pop(name, None)
    return call.state.operation(name)


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"bool_value": v}
    if isinstance(v, int):
        return {"int64_value": v}
    if isinstance(v, float):
        return {"double_value": v}
    if isinstance(v, dt.datetime):
        return {"int64_value": round(v.timestamp() * 1_000_000)}
    return {"string_value": str(v)}


def sync_feature_view(call: Call) -> Any:
    name = _view_name(call)
    call.require("aiplatform.featureViews.sync", name)
    view = _store(call, "feature_views").get(name)
    if view is None:
        raise ApiError("NOT_FOUND", f"The FeatureView does not exist: {name}")
    fake = call.state.extra["bigquery"]
    online: dict[tuple[str, ...], dict[str, Any]] = {}
    for g in view.feature_registry_source.feature_groups:
        group = _store(call, "feature_groups")[f"{call.parent}/featureGroups/{g.feature_group_id}"]
        table = group.big_query.big_query_source.input_uri.removeprefix("bq://")
        keys = list(group.big_query.entity_id_columns)
        cols = ", ".join(f"`{c}`" for c in [*keys, *g.feature_ids])
        _schema, rows = fake.query(f"SELECT {cols} FROM `{table}` QUALIFY row_number() OVER (PARTITION BY "
                                   + ", ".join(f"`{k}`" for k in keys) + " ORDER BY feature_timestamp DESC) = 1")
        for row in rows:
            key = tuple(str(v) for v in row[:len(keys)])
            online.setdefault(key, {}).update({f: v for f, v in zip(g.feature_ids, row[len(keys):]) if v is not None})
    _store(call, "online")[name] = online
    sync = f"{name}/featureViewSyncs/{call.state.new_id()}"
    return {"featureViewSync": sync}


def fetch_feature_values(call: Call) -> Any:
    v1 = _v1()
    request = call.parse(v1.FetchFeatureValuesRequest)
    name = _view_name(call)
    call.require("aiplatform.featureViews.fetchFeatureValues", name)
    if name not in _store(call, "feature_views"):
        raise ApiError("NOT_FOUND", f"The FeatureView does not exist: {name}")
    key = (request.data_key.key,) if request.data_key.key else tuple(request.data_key.composite_key.parts)
    invalid(None if any(key) else "dataKey is required")
    values = _store(call, "online").get(name, {}).get(key)
    if values is None:
        raise ApiError("NOT_FOUND", f"The entity {list(key)} is not in feature view {name}")
    pairs = [{"name": f, "value": _value(v)} for f, v in values.items()]
    return to_json(v1.FetchFeatureValuesResponse(key_values={"features": pairs}))


STORE = LOC + "/featureOnlineStores/{store}"
ROUTES: list[Route] = [
    ("GET", STORE, get_online_store),
    ("POST", LOC + "/featureGroups", create_feature_group),
    ("GET", LOC + "/featureGroups/{group}", get_feature_group),
    ("POST", LOC + "/featureGroups/{group}/features", create_feature),
    ("GET", LOC + "/featureGroups/{group}/features", list_features),
    ("POST", STORE + "/featureViews", create_feature_view),
    ("GET", STORE + "/featureViews/{view}", get_feature_view),
    ("DELETE", STORE + "/featureViews/{view}", delete_feature_view),
    ("POST", STORE + "/featureViews/{view}:sync", sync_feature_view),
    ("POST", STORE + "/featureViews/{view}:fetchFeatureValues", fetch_feature_values),
]
