"""Fake Azure ML registries (shared across workspaces): the registry resource and its model versions.

``add_registry(state, subscription, group, name, location)`` seeds a registry (the program's, or one the
platform team made). A model version is created with the ARM call azure-ai-ml's registry clients make
(``PUT .../registries/{registry}/models/{name}/versions/{version}``, body read into the SDK's
``ModelVersion``), completing through the long-running-operation protocol of ``arm.py``. The documented
rules are in :func:`share_rules`: the registry must exist, a version is immutable once created, and a
version shared from a workspace names an existing workspace asset
(``azureml://locations/<location>/workspaces/<workspace guid>/models/<name>/versions/<version>``).
"""
from __future__ import annotations

import json
import re
from typing import Any

from tests.contract.azure_fake import rules
from tests.contract.azure_fake.arm import (
    PROVIDER,
    ArmError,
    Call,
    Route,
    asset_not_found,
    bad_request,
    conflict,
    read_model,
    stage,
)

REG = ("/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.MachineLearningServices/"
       "registries/{registry}")
A_REG = f"{PROVIDER}/registries"
# A workspace asset a registry copies when it is shared (azure-ai-ml's ASSET_ID_FORMAT).
# https://learn.microsoft.com/azure/machine-learning/how-to-share-models-pipelines-across-workspaces-with-registries
_WORKSPACE_ASSET = re.compile(r"^azureml://locations/([^/]+)/workspaces/([^/]+)/models/([^/]+)/versions/([^/]+)$")


def add_registry(state: Any, subscription: str, group: str, name: str, location: str) -> dict[str, Any]:
    reg_id = f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{A_REG}/{name}"
    registry = {"id": reg_id, "name": name, "type": A_REG, "location": location, "tags": {},
                "properties": {"regionDetails": [{"location": location}], "discoveryUrl":
                               f"https://{location}.api.azureml.ms/registrymanagement/v1.0/registries/{name}/discovery"}}
    with state.lock:
        state.extra.setdefault("registries", {})[reg_id.lower()] = registry
    return registry


def versions(state: Any) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(registry name, model, version) → the registry's model version."""
    return {(k[0].rsplit("/", 1)[-1], k[1], k[2]): v for k, v in state.extra.get("registry_versions", {}).items()}


def _registry(call: Call) -> dict[str, Any]:
    p = call.params
    reg_id = f"/subscriptions/{p['subscription']}/resourceGroups/{p['group']}/providers/{A_REG}/{p['registry']}"
    found = call.state.extra.get("registries", {}).get(reg_id.lower())
    if found is None:
        raise ArmError(404, "ResourceNotFound", f"The Resource '{A_REG}/{p['registry']}' under resource group "
                                                f"'{p['group']}' was not found.")
    return found


def workspace_asset(state: Any, uri: str) -> dict[str, Any] | None:
    """The workspace model version ``uri`` names (by the workspace's guid), or None."""
    found = _WORKSPACE_ASSET.match(uri or "")
    if not found:
        return None
    location, guid, name, version = found.groups()
    for ws_id, workspace in state.workspaces.items():
        if workspace["properties"].get("workspaceId") == guid and workspace.get("location") == location:
            return state.versions.get((ws_id, name, version))
    return None


def share_rules(state: Any, existing: dict[str, Any] | None, props: dict[str, Any]) -> str | None:
    """A registry model version names where its files come from (a shared workspace asset that exists,
    or storage the client uploaded to); once created it is immutable (tags, description and stage aside).
    https://learn.microsoft.com/azure/machine-learning/how-to-share-models-pipelines-across-workspaces-with-registries"""
    uri = str(props.get("modelUri") or "")
    if not uri:
        return "ModelVersion.properties.modelUri is required."
    if uri.startswith("azureml://locations/") and workspace_asset(state, uri) is None:
        return f"Asset {uri} was not found: share an existing workspace model version."
    if existing is not None:
        return rules.model_version_update(existing["properties"], props)
    return None


def get_registry(call: Call) -> Any:
    return _registry(call)


def _key(call: Call) -> tuple[str, str, str]:
    return _registry(call)["id"].lower(), call.params["name"], call.params["version"]


def get_version(call: Call) -> Any:
    found = call.state.extra.get("registry_versions", {}).get(_key(call))
    if found is None:
        raise asset_not_found(call.params["name"], call.params["version"], registry=call.params["registry"])
    return found


def put_version(call: Call) -> Any:
    registry = _registry(call)
    key = _key(call)
    bad_request(rules.model_name(call.params["name"]))
    body = call.json
    read_model("ModelVersion", body)
    props = dict(body.get("properties") or {})
    bad_request(rules.tags(props.get("tags")))
    held = call.state.extra.setdefault("registry_versions", {})
    with call.state.lock:
        existing = held.get(key)
        refused = share_rules(call.state, existing, props)
        (conflict if existing is not None else bad_request)(refused)
        merged = {**(existing or {}).get("properties", {}), "modelType": "custom_model", **props,
                  "isAnonymous": False}
        target = {"id": f"{registry['id']}/models/{key[1]}/versions/{key[2]}", "name": key[2],
                  "type": f"{A_REG}/models/versions", "properties": {**merged, "provisioningState": "Succeeded"},
                  "systemData": call.state.system_data(existing)}
        shown, apply = stage(held, key, target, existing)
        op = call.state.begin(apply, location=registry["location"])
    status = (f"{call.base_url}/subscriptions/{call.params['subscription']}/providers/{PROVIDER}/locations/"
              f"{registry['location']}/mfeOperationsStatus/{op}?api-version=2023-04-01-preview")
    headers = {"Azure-AsyncOperation": status, "Location": status.replace("mfeOperationsStatus", "mfeOperationResults"),
               "Retry-After": "0"}
    return (200 if existing else 201), shown, headers


ROUTES: list[Route] = [
    ("GET", REG, f"{A_REG}/read", get_registry),
    ("GET", REG + "/models/{name}/versions/{version}", f"{A_REG}/models/versions/read", get_version),
    ("PUT", REG + "/models/{name}/versions/{version}", f"{A_REG}/models/versions/write", put_version),
]
