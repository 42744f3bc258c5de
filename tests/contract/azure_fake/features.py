"""Routes of the fake ARM for the Azure ML managed feature store: feature-store entities and feature sets
(containers and versions) of a workspace of kind ``FeatureStore``.

Bodies are read into azure-ai-ml's REST models (``FeaturestoreEntityVersion``, ``FeaturesetVersion``,
``FeaturesetContainer``, ``FeaturestoreEntityContainer``); the documented rules are in ``feature_rules.py``.
Creating a version creates its container when missing (as the service does), answers ``Creating`` and
completes through the long-running-operation protocol of ``arm.py``; a version is immutable but for its
description, tags, stage and archive flag. State: ``state.extra["features"]``.
"""
from __future__ import annotations

import json
from typing import Any

from tests.contract.azure_fake import feature_rules as rules
from tests.contract.azure_fake.arm import (
    A_WS,
    WS,
    ArmError,
    Call,
    Route,
    asset_container,
    asset_not_found,
    bad_request,
    read_model,
)

KINDS = {"featuresets": ("FeaturesetContainer", "FeaturesetVersion", "feature set"),
         "featurestoreEntities": ("FeaturestoreEntityContainer", "FeaturestoreEntityVersion", "entity")}


def store(call: Call) -> dict[str, dict[Any, dict[str, Any]]]:
    with call.state.lock:
        return call.state.extra.setdefault("features", {"containers": {}, "versions": {}})  # type: ignore[no-any-return]


def _kind(call: Call) -> str:
    kind = next(k for k in KINDS if f"/{k.lower()}/" in call.path.lower())
    if call.workspace.get("kind") != "FeatureStore":
        bad_request(f"Workspace '{call.params['workspace']}' is not a feature store (kind FeatureStore); "
                    f"{kind} live in feature stores.", code="UserError")
    bad_request(rules.asset_name(call.params["name"], KINDS[kind][2]))
    return kind


def _container_key(call: Call, kind: str) -> tuple[str, str, str]:
    return call.ws_id.lower(), kind, call.params["name"]


def _container_body(call: Call, kind: str, props: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
    return asset_container(call, kind, call.params["name"], props, existing)


def get_container(call: Call) -> Any:
    kind = _kind(call)
    found = store(call)["containers"].get(_container_key(call, kind))
    if found is None:
        raise asset_not_found(call.params["name"], kind=KINDS[kind][2])
    return found


def put_container(call: Call) -> Any:
    kind = _kind(call)
    body = call.json
    read_model(KINDS[kind][0], body)
    props = dict(body.get("properties") or {})
    bad_request(rules_tags(props.get("tags")))
    key = _container_key(call, kind)
    with call.state.lock:
        existing = store(call)["containers"].get(key)
        store(call)["containers"][key] = _container_body(call, kind, props, existing)
        return (200 if existing else 201), store(call)["containers"][key]


def rules_tags(tags: Any) -> str | None:
    from tests.contract.azure_fake import rules as arm_rules

    return arm_rules.tags(tags)


def _versions(call: Call, kind: str) -> list[dict[str, Any]]:
    ws, _, name = _container_key(call, kind)
    return [v for (w, k, n, _), v in store(call)["versions"].items() if (w, k, n) == (ws, kind, name)]


def list_versions(call: Call) -> Any:
    kind = _kind(call)
    items = sorted(_versions(call, kind), key=lambda v: v["systemData"]["createdAt"] + v["name"])
    return {"value": items}


def get_version(call: Call) -> Any:
    kind = _kind(call)
    found = store(call)["versions"].get((*_container_key(call, kind), call.params["version"]))
    if found is None:
        raise asset_not_found(call.params["name"], call.params["version"], kind=KINDS[kind][2])
    return found


def _entity_versions(call: Call) -> dict[str, list[str]]:
    ws = call.ws_id.lower()
    out: dict[str, list[str]] = {}
    for (w, k, n, v), body in store(call)["versions"].items():
        if w == ws and k == "featurestoreEntities" and body["properties"].get("provisioningState") == "Succeeded":
            out.setdefault(n, []).append(v)
    return out


def put_version(call: Call) -> Any:
    kind = _kind(call)
    version = call.params["version"]
    bad_request(rules.asset_version(version))
    body = call.json
    read_model(KINDS[kind][1], body)
    props = dict(body.get("properties") or {})
    bad_request(rules_tags(props.get("tags")))
    if kind == "featurestoreEntities":
        bad_request(rules.index_columns(props.get("indexColumns")))
    else:
        bad_request(rules.featureset_version(props, _entity_versions(call)))
    container = _container_key(call, kind)
    key = (*container, version)
    resource_id = f"{call.workspace['id']}/{kind}/{call.params['name']}/versions/{version}"
    with call.state.lock:
        existing = store(call)["versions"].get(key)
        if existing is not None:
            bad_request(rules.version_update(existing["properties"], props))
            merged = {**existing["properties"], **{k: v for k, v in props.items() if k in rules.MUTABLE}}
            existing = {**existing, "properties": merged, "systemData": call.state.system_data(existing)}
            store(call)["versions"][key] = existing
            return 200, existing
        target = {"id": resource_id, "name": version, "type": f"{A_WS}/{kind}/versions",
                  "properties": {"isAnonymous": False, "isArchived": False, **props, "tags": props.get("tags") or {},
                                 "properties": props.get("properties") or {}, "provisioningState": "Succeeded"},
                  "systemData": call.state.system_data()}
        shown = json.loads(json.dumps(target))
        shown["properties"]["provisioningState"] = "Creating"
        store(call)["versions"][key] = shown
        if container not in store(call)["containers"]:
            store(call)["containers"][container] = _container_body(call, kind, {"tags": props.get("tags")}, None)

        def apply() -> None:
            store(call)["versions"][key] = target
            holder = store(call)["containers"][container]["properties"]
            holder["latestVersion"] = version

        headers = call.lro(resource_id, apply)
    return 201, shown, headers


def _routes(kind: str) -> list[Route]:
    base, action = WS + f"/{kind}/{{name}}", f"{A_WS}/{kind}"
    return [("GET", base, f"{action}/read", get_container),
            ("PUT", base, f"{action}/write", put_container),
            ("GET", base + "/versions", f"{action}/versions/read", list_versions),
            ("GET", base + "/versions/{version}", f"{action}/versions/read", get_version),
            ("PUT", base + "/versions/{version}", f"{action}/versions/write", put_version)]


def get_connection(call: Call) -> Any:
    """A workspace connection the test seeded in ``state.extra["connections"]`` (the program makes them)."""
    found = call.state.extra.get("connections", {}).get((call.ws_id.lower(), call.params["name"]))
    if found is None:
        raise ArmError(404, "UserError", f"Connection {call.params['name']} can't be found in this workspace")
    return {"id": f"{call.workspace['id']}/connections/{call.params['name']}", "name": call.params["name"],
            "type": f"{A_WS}/connections", "properties": found}


ROUTES: list[Route] = [*_routes("featuresets"), *_routes("featurestoreEntities"),
                       ("GET", WS + "/connections/{name}", f"{A_WS}/connections/read", get_connection)]
