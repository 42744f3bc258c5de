"""A fake of Azure Resource Manager and the Azure Machine Learning REST API, as a Starlette app.

State lives in one :class:`ArmState`: workspaces (read only, seeded by the fixtures), model containers
and versions, online endpoints with their traffic and mirror traffic, online deployments, keys,
long-running operations. Request bodies are read into azure-ai-ml's own REST models
(``azure.ai.ml._restclient.arm_ml_service.models``: ``ModelVersion``, ``OnlineEndpoint``,
``OnlineDeployment`` with its ``endpointComputeType`` discriminator): a field those models do not
know, or a body of the wrong shape, is refused with 400 ``BadRequest``; the documented rules live in
``rules.py``. Errors are ARM's ``{"error": {"code", "message"}}``.

Long-running operations follow ARM's asynchronous protocol, which azure-core's ``ARMPolling`` follows:
a PUT answers 201 (or 200) with the resource in ``provisioningState`` ``Creating``/``Updating`` and an
``Azure-AsyncOperation`` header; each GET of that URL answers ``{"status": "InProgress"}`` until the
operation's ``polls`` are used up, then applies the change and answers ``Succeeded`` (or ``Failed``
with an error); the client then GETs the resource, now ``Succeeded``. A DELETE answers 202 with
``Location`` and ``Azure-AsyncOperation``. Every answer sets ``Retry-After: 0`` so pollers never wait.

Tests steer the fake through the state: ``deny("Microsoft.MachineLearningServices/workspaces/
onlineEndpoints/write")`` makes the calls needing that action answer 403 ``AuthorizationFailed`` naming
it; ``throttle(action, times=2)`` makes the next two answer 429 ``TooManyRequests`` with
``Retry-After``; ``fail_deployment(name)`` makes that deployment's next creation end ``Failed``.

Route table: ``ROUTES`` below, plus the ``ROUTES`` list of every other module of this package that has
one (jobs, schedules, feature store, cost, metrics), mounted by :func:`create_app`. A route is
``(HTTP method, path template, action, handler)``; templates are ARM paths (matched case-insensitively,
as ARM matches them) naming segments ``{like_this}`` or the rest of a path ``{like_this=**}``; the
prefix ``{ws}`` stands for ``/subscriptions/{subscription}/resourceGroups/{group}/providers/
Microsoft.MachineLearningServices/workspaces/{workspace}``. ``action`` is the RBAC action checked
before the handler runs (``None``: none). A handler takes a :class:`Call` and returns a JSON-able dict
(200), ``(status, dict)`` or ``(status, dict, headers)``, and raises :class:`ArmError` to refuse.
"""
from __future__ import annotations

import importlib
import itertools
import json
import pkgutil
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.contract.azure_fake import rules
from tests.contract.fake_server import Server as FakeServer

Handler = Callable[["Call"], Any]
Route = tuple[str, str, "str | None", Handler]
WS = ("/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.MachineLearningServices/"
      "workspaces/{workspace}")
PROVIDER = "Microsoft.MachineLearningServices"
A_WS = f"{PROVIDER}/workspaces"
CALLER = "00000000-0000-0000-0000-0000000000aa"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class ArmError(Exception):
    """A refusal, answered as ARM's ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def asset_not_found(name: str, version: str | None = None, *, kind: str = "", registry: str | None = None
                    ) -> ArmError:
    """Azure ML's 404 for a missing asset (``kind`` e.g. "featureset"), its version, in a registry."""
    text = f"Could not find {kind + ' ' if kind else ''}asset with name {name}"
    text += f" and version {version}" if version else ""
    text += f" in registry {registry}" if registry else ""
    return ArmError(404, "UserError", text)


def bad_request(message: str | None, code: str = "BadRequest") -> None:
    if message:
        raise ArmError(400, code, message)


def conflict(message: str | None) -> None:
    if message:
        raise ArmError(409, "Conflict", message)


def _restclient_models() -> Any:
    from azure.ai.ml._restclient.arm_ml_service import models

    return models


def read_model(model_name: str, body: Any, where: str = "") -> Any:
    """``body`` read into azure-ai-ml's REST model ``model_name``; unknown fields, wrong shapes and
    read-only fields sent by the client are refused as ARM refuses them."""
    from azure.ai.ml._restclient.arm_ml_service._utils import model_base

    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", f"The request content for {model_name} must be a JSON object.")
    cls = getattr(_restclient_models(), model_name)
    try:
        value = model_base._deserialize(cls, body)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the client's
        raise ArmError(400, "InvalidRequestContent", f"The request content was invalid: {exc}") from None
    _check_fields(value, where or model_name)
    return value


def _check_fields(value: Any, where: str) -> None:
    from azure.ai.ml._restclient.arm_ml_service._utils import model_base

    if not isinstance(value, model_base.Model):
        return
    known = {f._rest_name: f for f in type(value)._attr_to_rest_field.values()}
    for key in list(value.keys()):
        rest = known.get(key)
        if rest is None:
            raise ArmError(400, "InvalidRequestContent",
                           f"The request content was invalid: could not find member '{key}' on {where}.")
        child = getattr(value, next(a for a, f in type(value)._attr_to_rest_field.items() if f._rest_name == key))
        if isinstance(child, model_base.Model):
            _check_fields(child, f"{where}.{key}")
        elif isinstance(child, list):
            for item in child:
                _check_fields(item, f"{where}.{key}[]")


@dataclass
class Call:
    """One request as a handler sees it: path parameters, query, the JSON body, the fake's state."""

    state: ArmState
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, list[str]]
    raw: bytes
    headers: dict[str, str]
    base_url: str

    @property
    def json(self) -> Any:
        if not self.raw:
            return {}
        try:
            return json.loads(self.raw)
        except ValueError:
            raise ArmError(400, "InvalidRequestContent", "The request content was not valid JSON.") from None

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def workspace(self) -> dict[str, Any]:
        return self.state.workspace(self.params["subscription"], self.params["group"], self.params["workspace"])

    @property
    def ws_id(self) -> str:
        return self.workspace["id"]

    def lro(self, resource_url: str, apply: Callable[[], None], *, polls: int = 1,
            failure: dict[str, Any] | None = None) -> dict[str, str]:
        """Start an operation applying ``apply`` when done; the headers pointing the client at it."""
        op = self.state.begin(apply, polls=polls, failure=failure, location=self.workspace.get("location", "x"))
        status = (f"{self.base_url}/subscriptions/{self.params['subscription']}/providers/{PROVIDER}/locations/"
                  f"{self.workspace.get('location', 'x')}/mfeOperationsStatus/{op}?api-version=2023-04-01-preview")
        return {"Azure-AsyncOperation": status, "Location": status.replace("mfeOperationsStatus",
                                                                            "mfeOperationResults"),
                "Retry-After": "0", "x-ms-resource-url": resource_url}


@dataclass
class ArmState:
    """Everything the fake holds; tests read and steer it directly (one instance per server)."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    workspaces: dict[str, dict[str, Any]] = field(default_factory=dict)  # lower-cased id → workspace
    models: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (ws id, name) → container
    versions: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    endpoints: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (ws id, name) → endpoint
    deployments: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)
    throttled: dict[str, int] = field(default_factory=dict)
    retry_after: int = 7
    failing: set[str] = field(default_factory=set)
    polls: int = 1
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request
    extra: dict[str, Any] = field(default_factory=dict)  # state of mounted route modules, by module
    blobs: dict[tuple[str, str, str], tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    environments: dict[str, str] = field(default_factory=lambda: {"mlplat-serving": "mlplat/serve:latest"})
    clock: Callable[[], datetime] = field(default=lambda: EPOCH)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        with self.lock:
            for name in ("models", "versions", "endpoints", "deployments", "operations", "throttled", "extra",
                         "blobs"):
                getattr(self, name).clear()
            self.denied.clear()
            self.failing.clear()
            self.calls.clear()
            self.polls = 1
            self.retry_after = 7
            self.clock = lambda: EPOCH

    # --- steering -------------------------------------------------------------------------------

    def add_workspace(self, subscription: str, group: str, name: str, location: str,
                      tags: dict[str, str] | None = None) -> dict[str, Any]:
        ws_id = f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{A_WS}/{name}"
        workspace = {"id": ws_id, "name": name, "type": A_WS, "location": location, "tags": dict(tags or {}),
                     "kind": "Default",
                     "properties": {"provisioningState": "Succeeded", "friendlyName": name,
                                    "mlFlowTrackingUri": f"azureml://{location}.api.azureml.ms/mlflow/v1.0{ws_id}",
                                    "discoveryUrl": f"https://{location}.api.azureml.ms/discovery",
                                    "workspaceId": f"{abs(hash(ws_id)) % 10**12:012d}-0000-0000-0000-000000000000",
                                    "publicNetworkAccess": "Enabled",
                                    "storageAccount": f"/subscriptions/{subscription}/resourceGroups/{group}/"
                                                      f"providers/Microsoft.Storage/storageAccounts/"
                                                      f"{storage_account(name)}"}}
        with self.lock:
            self.workspaces[ws_id.lower()] = workspace
        return workspace

    def deny(self, *actions: str) -> None:
        self.denied.update(actions)

    def allow(self, *actions: str) -> None:
        self.denied.difference_update(actions)

    def throttle(self, action: str, times: int = 1) -> None:
        self.throttled[action] = self.throttled.get(action, 0) + times

    def fail_deployment(self, name: str) -> None:
        self.failing.add(name)

    def check(self, action: str, scope: str) -> None:
        with self.lock:
            if action in self.denied:
                raise ArmError(403, "AuthorizationFailed",
                               f"The client '{CALLER}' with object id '{CALLER}' does not have authorization to "
                               f"perform action '{action}' over scope '{scope}' or the scope is invalid. If access "
                               "was recently granted, please refresh your credentials.")
            if self.throttled.get(action):
                self.throttled[action] -= 1
                raise ArmError(429, "TooManyRequests",
                               f"The request for '{action}' was throttled; retry after {self.retry_after} seconds.",
                               headers={"Retry-After": str(self.retry_after)})

    # --- lookups -------------------------------------------------------------------------------

    def workspace(self, subscription: str, group: str, name: str) -> dict[str, Any]:
        ws_id = f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{A_WS}/{name}"
        found = self.workspaces.get(ws_id.lower())
        if found is None:
            raise ArmError(404, "ResourceNotFound",
                           f"The Resource '{A_WS}/{name}' under resource group '{group}' was not found.")
        return found

    def timestamp(self) -> str:
        return self.clock().isoformat().replace("+00:00", "Z")

    def system_data(self, existing: dict[str, Any] | None = None) -> dict[str, Any]:
        now = self.timestamp()
        created = (existing or {}).get("systemData", {})
        return {"createdAt": created.get("createdAt", now), "createdBy": "mlplat", "createdByType": "User",
                "lastModifiedAt": now, "lastModifiedBy": "mlplat", "lastModifiedByType": "User"}

    # --- long-running operations ---------------------------------------------------------------

    def begin(self, apply: Callable[[], None], *, polls: int | None = None, failure: dict[str, Any] | None = None,
              location: str = "x") -> str:
        with self.lock:
            op = f"op-{next(self._ids):06d}"
            self.operations[op] = {"id": op, "status": "InProgress", "polls": self.polls if polls is None else polls,
                                   "apply": apply, "failure": failure, "startTime": self.timestamp()}
            return op

    def poll(self, op: str) -> dict[str, Any]:
        with self.lock:
            entry = self.operations.get(op)
            if entry is None:
                raise ArmError(404, "NotFound", f"Operation {op} was not found.")
            if entry["status"] == "InProgress":
                if entry["polls"] > 0:
                    entry["polls"] -= 1
                if entry["polls"] <= 0:
                    entry["apply"]()
                    entry["status"] = "Failed" if entry["failure"] else "Succeeded"
                    entry["endTime"] = self.timestamp()
            body = {"id": op, "name": op, "status": entry["status"], "startTime": entry["startTime"]}
            if entry.get("endTime"):
                body["endTime"] = entry["endTime"]
            if entry["status"] == "Failed":
                body["error"] = entry["failure"]
            return body


def storage_account(workspace: str) -> str:
    """The storage account the fake gives a workspace (3-24 lowercase letters and digits)."""
    return ("st" + re.sub(r"[^a-z0-9]", "", workspace.lower()))[:24]


def _ok(body: dict[str, Any], status: int = 200, **headers: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    return status, body, dict(headers)


def _tags(body: dict[str, Any], where: str) -> dict[str, str]:
    tags = body.get("tags") or {}
    bad_request(rules.tags(tags))
    return dict(tags)


def _page(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"value": items}


def stage(store: dict[Any, Any], key: Any, target: dict[str, Any], existing: dict[str, Any] | None
          ) -> tuple[dict[str, Any], Callable[[], None]]:
    """A PUT's resource while its long-running operation runs: a copy of ``target`` in ``provisioningState``
    ``Creating`` (``Updating`` over ``existing``), held in ``store`` under ``key`` and answered; the function
    returned puts ``target`` there when the operation completes (call under the state's lock)."""
    shown = json.loads(json.dumps(target))
    shown["properties"]["provisioningState"] = "Updating" if existing else "Creating"
    store[key] = shown

    def apply() -> None:
        store[key] = target

    return shown, apply


# --- operations and workspaces -----------------------------------------------------------------

def operation_status(call: Call) -> Any:
    return _ok(call.state.poll(call.params["op"]), **{"Retry-After": "0"})


def operation_result(call: Call) -> Any:
    body = call.state.poll(call.params["op"])
    if body["status"] == "InProgress":
        return 202, {}, {"Location": f"{call.base_url}{call.path}", "Retry-After": "0"}
    return 200, body


def get_workspace(call: Call) -> Any:
    return call.workspace


# --- models ------------------------------------------------------------------------------------

def _model_key(call: Call) -> tuple[str, str]:
    bad_request(rules.model_name(call.params["name"]))
    return call.ws_id.lower(), call.params["name"]


def _container_body(call: Call, key: tuple[str, str]) -> dict[str, Any]:
    container = call.state.models.get(key)
    if container is None:
        raise asset_not_found(key[1])
    return container


def get_model(call: Call) -> Any:
    return _container_body(call, _model_key(call))


def list_models(call: Call) -> Any:
    ws = call.ws_id.lower()
    return _page([c for (w, _), c in sorted(call.state.models.items()) if w == ws])


def put_model(call: Call) -> Any:
    key = _model_key(call)
    body = call.json
    read_model("ModelContainer", body)
    props = dict(body.get("properties") or {})
    bad_request(rules.tags(props.get("tags")))
    with call.state.lock:
        existing = call.state.models.get(key)
        body = asset_container(call, "models", key[1], props, existing)
        call.state.models[key] = body
    return (200 if existing else 201), body


def asset_container(call: Call, kind: str, name: str, props: dict[str, Any], existing: dict[str, Any] | None
                    ) -> dict[str, Any]:
    """The workspace's asset container ``kind/name`` (models, featuresets, ...) after a PUT of ``props``:
    what the PUT names replaces ``existing``'s, the version counters are kept."""
    old = (existing or {}).get("properties", {})
    merged = {"description": props.get("description", old.get("description")),
              "tags": props.get("tags", old.get("tags")) or {},
              "properties": props.get("properties", old.get("properties")) or {},
              "isArchived": bool(props.get("isArchived", old.get("isArchived", False))),
              "latestVersion": old.get("latestVersion"), "nextVersion": old.get("nextVersion", "1"),
              "provisioningState": "Succeeded"}
    return {"id": f"{call.workspace['id']}/{kind}/{name}", "name": name, "type": f"{A_WS}/{kind}",
            "properties": merged, "systemData": call.state.system_data(existing)}


def _version_key(call: Call) -> tuple[str, str, str]:
    ws, name = _model_key(call)
    return ws, name, call.params["version"]


def get_model_version(call: Call) -> Any:
    key = _version_key(call)
    found = call.state.versions.get(key)
    if found is None:
        raise asset_not_found(key[1], key[2])
    return found


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def list_model_versions(call: Call) -> Any:
    ws, name = _model_key(call)
    items = [v for (w, n, _), v in call.state.versions.items() if w == ws and n == name]
    wanted = call.arg("tags")
    if wanted:
        for pair in wanted.split(","):
            tag, _, value = pair.partition("=")
            items = [v for v in items if tag in v["properties"]["tags"] and
                     (not value or v["properties"]["tags"][tag] == value)]
    stage = call.arg("stage")
    if stage:
        items = [v for v in items if v["properties"].get("stage") == stage]
    items.sort(key=lambda v: _version_order(v["name"]), reverse=call.arg("$orderBy", "").lower().endswith("desc")
               or call.arg("$orderBy") == "")
    top = call.arg("$top")
    if top:
        items = items[:int(top)]
    return _page(items)


def put_model_version(call: Call) -> Any:
    ws, name, version = _version_key(call)
    body = call.json
    read_model("ModelVersion", body)
    props = dict(body.get("properties") or {})
    bad_request(rules.tags(props.get("tags")))
    if not props.get("modelUri"):
        bad_request("ModelVersion.properties.modelUri is required.")
    with call.state.lock:
        key = (ws, name, version)
        existing = call.state.versions.get(key)
        if existing is not None:
            conflict(rules.model_version_update(existing["properties"], props))
            merged = dict(existing["properties"])
            for field_name in rules.MUTABLE_VERSION_FIELDS:
                if field_name in props:
                    merged[field_name] = props[field_name]
            merged["tags"] = merged.get("tags") or {}
        else:
            merged = {"modelType": "custom_model", "properties": {}, "tags": {}, "flavors": {}, **props,
                      "isAnonymous": False, "provisioningState": "Succeeded"}
            merged["tags"] = merged.get("tags") or {}
            merged["properties"] = merged.get("properties") or {}
            merged.setdefault("stage", "Development")
            merged.setdefault("isArchived", False)
        body = {"id": f"{call.workspace['id']}/models/{name}/versions/{version}", "name": version,
                "type": f"{A_WS}/models/versions", "properties": merged,
                "systemData": call.state.system_data(existing)}
        call.state.versions[key] = body
        container = call.state.models.get((ws, name)) or asset_container(call, "models", name, {}, None)
        versions = sorted((v for (w, n, v) in call.state.versions if w == ws and n == name), key=_version_order)
        container["properties"]["latestVersion"] = versions[-1]
        numeric = [int(v) for v in versions if v.isdigit()]
        container["properties"]["nextVersion"] = str(max(numeric, default=0) + 1)
        call.state.models[(ws, name)] = container
    return (200 if existing else 201), body


def delete_model_version(call: Call) -> Any:
    key = _version_key(call)
    with call.state.lock:
        if call.state.versions.pop(key, None) is None:
            return 204, {}
    return 200, {}


# --- online endpoints --------------------------------------------------------------------------

def _endpoint_key(call: Call) -> tuple[str, str]:
    return call.ws_id.lower(), call.params["endpoint"]


def endpoint_of(call: Call) -> dict[str, Any]:
    found = call.state.endpoints.get(_endpoint_key(call))
    if found is None:
        raise ArmError(404, "UserError", f"No online endpoint '{call.params['endpoint']}' in this workspace.")
    return found


def _deployment_names(state: ArmState, key: tuple[str, str], *, succeeded: bool = False) -> set[str]:
    return {d for (w, e, d), dep in state.deployments.items() if (w, e) == key and
            (not succeeded or dep["properties"]["provisioningState"] == "Succeeded")}


def get_endpoint(call: Call) -> Any:
    return endpoint_of(call)


def list_endpoints(call: Call) -> Any:
    ws = call.ws_id.lower()
    return _page([e for (w, _), e in sorted(call.state.endpoints.items()) if w == ws])


def put_endpoint(call: Call) -> Any:
    name = call.params["endpoint"]
    bad_request(rules.endpoint_name(name))
    body = call.json
    value = read_model("OnlineEndpoint", body)
    if not value.get("location"):
        bad_request("OnlineEndpoint.location is required.")
    props = dict(body.get("properties") or {})
    if props.get("authMode") not in ("Key", "AMLToken", "AADToken"):
        bad_request(f"OnlineEndpoint.properties.authMode must be Key, AMLToken or AADToken, got "
                    f"{props.get('authMode')!r}.")
    tags = _tags(body, "OnlineEndpoint")
    key = _endpoint_key(call)
    with call.state.lock:
        existing = call.state.endpoints.get(key)
        if existing is None:
            for (_, other), other_body in call.state.endpoints.items():
                if other.lower() == name.lower() and other_body["location"] == value["location"]:
                    conflict(f"An online endpoint named '{name}' already exists in {value['location']}; endpoint "
                             "names are unique per region.")
        deployments = _deployment_names(call.state, key)
        traffic = dict(props.get("traffic") or {})
        mirror = dict(props.get("mirrorTraffic") or {})
        bad_request(rules.traffic(traffic, deployments))
        bad_request(rules.mirror_traffic(mirror, traffic, deployments))
        old = (existing or {}).get("properties", {})
        ep_id = f"{call.workspace['id']}/onlineEndpoints/{name}"
        region = value["location"]
        target = {"id": ep_id, "name": name, "type": f"{A_WS}/onlineEndpoints", "location": region,
                  "kind": body.get("kind"), "tags": tags, "identity": body.get("identity") or
                  {"type": "SystemAssigned", "principalId": CALLER, "tenantId": CALLER},
                  "properties": {"authMode": props["authMode"], "description": props.get("description"),
                                 "properties": props.get("properties") or {},
                                 "traffic": traffic, "mirrorTraffic": mirror,
                                 "publicNetworkAccess": props.get("publicNetworkAccess", "Enabled"),
                                 "scoringUri": f"https://{name}.{region}.inference.ml.azure.com/score",
                                 "swaggerUri": f"https://{name}.{region}.inference.ml.azure.com/swagger.json",
                                 "provisioningState": "Succeeded"},
                  "systemData": call.state.system_data(existing)}
        shown = json.loads(json.dumps(existing or target))
        shown["properties"]["provisioningState"] = "Updating" if existing else "Creating"
        if existing is None:
            call.state.endpoints[key] = shown
            call.state.extra.setdefault("keys", {})[key] = {"primaryKey": f"pk-{name}", "secondaryKey": f"sk-{name}"}

        def apply() -> None:
            call.state.endpoints[key] = target

        headers = call.lro(ep_id, apply)
        if old:
            call.state.endpoints[key] = shown
    return (200 if existing else 201), shown, headers


def delete_endpoint(call: Call) -> Any:
    key = _endpoint_key(call)
    endpoint = endpoint_of(call)

    def apply() -> None:
        call.state.endpoints.pop(key, None)
        for dep_key in [k for k in call.state.deployments if k[:2] == key]:
            call.state.deployments.pop(dep_key)

    headers = call.lro(endpoint["id"], apply)
    return 202, {}, headers


def list_keys(call: Call) -> Any:
    endpoint_of(call)
    return call.state.extra.get("keys", {}).get(_endpoint_key(call), {})


# --- online deployments ------------------------------------------------------------------------

def _deployment_key(call: Call) -> tuple[str, str, str]:
    return call.ws_id.lower(), call.params["endpoint"], call.params["deployment"]


def get_deployment(call: Call) -> Any:
    endpoint_of(call)
    found = call.state.deployments.get(_deployment_key(call))
    if found is None:
        raise ArmError(404, "UserError", f"No deployment '{call.params['deployment']}' on endpoint "
                                         f"'{call.params['endpoint']}'.")
    return found


def list_deployments(call: Call) -> Any:
    key = _endpoint_key(call)
    endpoint_of(call)
    return _page([d for k, d in sorted(call.state.deployments.items()) if k[:2] == key])


def put_deployment(call: Call) -> Any:
    name = call.params["deployment"]
    bad_request(rules.deployment_name(name))
    endpoint = endpoint_of(call)
    body = call.json
    value = read_model("OnlineDeployment", body)
    if not value.get("location"):
        bad_request("OnlineDeployment.location is required.")
    props = value.get("properties")
    if props is None:
        bad_request("OnlineDeployment.properties is required.")
    kind = props.get("endpointComputeType")
    if kind != "Managed":
        bad_request(f"OnlineDeployment.properties.endpointComputeType must be Managed for a managed online "
                    f"endpoint, got {kind!r}.")
    if not props.get("instanceType"):
        bad_request("ManagedOnlineDeployment.properties.instanceType is required.")
    model_ref = props.get("model")
    if model_ref:
        _model_exists(call, str(model_ref))
    tags = _tags(body, "OnlineDeployment")
    key = _deployment_key(call)
    dep_id = f"{endpoint['id']}/deployments/{name}"
    with call.state.lock:
        existing = call.state.deployments.get(key)
        raw_props = dict(body.get("properties") or {})
        target = {"id": dep_id, "name": name, "type": f"{A_WS}/onlineEndpoints/deployments",
                  "location": body["location"], "kind": body.get("kind"), "tags": tags,
                  "sku": body.get("sku") or {"name": "Default", "capacity": 1},
                  "properties": {"scaleSettings": {"scaleType": "Default"},
                                 "requestSettings": {"maxConcurrentRequestsPerInstance": 1,
                                                     "requestTimeout": "PT5S"},
                                 **raw_props, "provisioningState": "Succeeded"},
                  "systemData": call.state.system_data(existing)}
        failing = name in call.state.failing
        shown = json.loads(json.dumps(target))
        shown["properties"]["provisioningState"] = "Updating" if existing else "Creating"
        call.state.deployments[key] = shown
        failure = ({"code": "DeploymentFailed", "message": f"Deployment '{name}' failed: the container crashed at "
                                                          "start-up (exit code 1)."} if failing else None)

        def apply() -> None:
            if failing:
                call.state.failing.discard(name)
                failed = json.loads(json.dumps(shown))
                failed["properties"]["provisioningState"] = "Failed"
                call.state.deployments[key] = failed
            else:
                call.state.deployments[key] = target

        headers = call.lro(dep_id, apply, failure=failure)
    return (200 if existing else 201), shown, headers


def _model_exists(call: Call, ref: str) -> None:
    found = re.search(r"/models/([^/]+)/versions/([^/]+)$", ref, re.IGNORECASE)
    if not found:
        return  # registry references and other forms are not checked here
    key = (call.ws_id.lower(), found.group(1), found.group(2))
    if ref.lower().startswith(call.ws_id.lower()) and key not in call.state.versions:
        bad_request(f"Model '{found.group(1)}' version {found.group(2)} does not exist in this workspace.")


def delete_deployment(call: Call) -> Any:
    deployment = get_deployment(call)
    endpoint = endpoint_of(call)
    name = call.params["deployment"]
    bad_request(rules.deployment_delete(name, endpoint["properties"].get("traffic")))
    if (endpoint["properties"].get("mirrorTraffic") or {}).get(name):
        bad_request(f"Deployment '{name}' receives mirror traffic; set it to 0 before deleting it.")
    key = _deployment_key(call)

    def apply() -> None:
        call.state.deployments.pop(key, None)

    headers = call.lro(deployment["id"], apply)
    return 202, {}, headers


def get_logs(call: Call) -> Any:
    get_deployment(call)
    return {"content": f"deployment {call.params['deployment']} started\n"}


# --- Blob Storage (path-style account URLs, as Azurite serves them) -------------------------------

def _blob_key(call: Call) -> tuple[str, str, str]:
    account = call.params["account"]
    if account not in {storage_account(w["name"]) for w in call.state.workspaces.values()}:
        raise ArmError(404, "InvalidResourceType", f"The resource type could not be found for {call.path}.")
    return account, call.params["container"], urllib.parse.unquote(call.params["blob"])


def put_blob(call: Call) -> Any:
    key = _blob_key(call)
    if call.headers.get("x-ms-blob-type", "BlockBlob") != "BlockBlob":
        raise ArmError(400, "InvalidHeaderValue", "Only block blobs are supported here.")
    metadata = {k[len("x-ms-meta-"):]: v for k, v in call.headers.items() if k.startswith("x-ms-meta-")}
    with call.state.lock:
        call.state.blobs[key] = (call.raw, metadata)
    return 201, {}, {"ETag": f'"{len(call.state.blobs)}"', "Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT"}


def get_blob(call: Call) -> Any:
    found = call.state.blobs.get(_blob_key(call))
    if found is None:
        raise ArmError(404, "BlobNotFound", "The specified blob does not exist.",
                       headers={"x-ms-error-code": "BlobNotFound"})
    data, metadata = found
    headers = {"x-ms-blob-type": "BlockBlob", "ETag": '"1"', "Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT",
               **{f"x-ms-meta-{k}": v for k, v in metadata.items()}}
    wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", call.headers.get("x-ms-range") or call.headers.get("range") or "")
    if wanted and data:  # https://learn.microsoft.com/rest/api/storageservices/specifying-the-range-header-for-blob-service-operations
        start = int(wanted.group(1))
        end = min(int(wanted.group(2)) if wanted.group(2) else len(data) - 1, len(data) - 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return RawBody(data[start:end + 1], headers, 206)
    return RawBody(data, headers)


@dataclass
class RawBody:
    """A handler's raw (non-JSON) answer."""

    content: bytes
    headers: dict[str, str]
    status: int = 200


def default_containers(workspace: dict[str, Any]) -> set[str]:
    """The containers a workspace's storage account has from the start: the workspace blob store
    (``azureml-blobstore-<workspace id>``, the default datastore ``workspaceblobstore``) and the platform's own."""
    return {f"azureml-blobstore-{workspace['properties']['workspaceId']}", "azureml", "mlplat"}


def container_exists(state: ArmState, account: str, container: str) -> bool:
    """A container exists when it is one of its workspace's defaults, holds a blob, or was added with
    :func:`add_container`."""
    with state.lock:
        for workspace in state.workspaces.values():
            if storage_account(workspace["name"]) == account and container in default_containers(workspace):
                return True
        return ((account, container) in state.extra.get("containers", set())
                or any(k[:2] == (account, container) for k in state.blobs))


def add_container(state: ArmState, account: str, container: str) -> None:
    with state.lock:
        state.extra.setdefault("containers", set()).add((account, container))


def list_blobs(call: Call) -> Any:
    """List Blobs (``GET /{account}/{container}?restype=container&comp=list``): names under ``prefix`` in
    lexical order, at most ``maxresults`` (default and cap 5,000) per page, the next page named by an opaque
    ``NextMarker``; the answer is the Blob service's ``EnumerationResults`` XML.
    https://learn.microsoft.com/rest/api/storageservices/list-blobs"""
    from xml.sax.saxutils import escape

    if call.arg("restype") != "container" or call.arg("comp") != "list":
        raise ArmError(400, "InvalidQueryParameterValue",
                       "Value for one of the query parameters specified in the request URI is invalid "
                       "(expected restype=container&comp=list).", headers={"x-ms-error-code": "InvalidQueryParameterValue"})
    account, container = call.params["account"], call.params["container"]
    if account not in {storage_account(w["name"]) for w in call.state.workspaces.values()}:
        raise ArmError(404, "InvalidResourceType", f"The resource type could not be found for {call.path}.")
    if not container_exists(call.state, account, container):
        raise ArmError(404, "ContainerNotFound", "The specified container does not exist.",
                       headers={"x-ms-error-code": "ContainerNotFound"})
    prefix, marker = call.arg("prefix"), call.arg("marker")
    try:
        size = int(call.arg("maxresults", "5000"))
    except ValueError:
        size = 0
    if not 1 <= size <= 5000:
        raise ArmError(400, "OutOfRangeQueryParameterValue", "maxresults must be between 1 and 5000.",
                       headers={"x-ms-error-code": "OutOfRangeQueryParameterValue"})
    with call.state.lock:
        names = sorted(k[2] for k in call.state.blobs if k[:2] == (account, container) and k[2].startswith(prefix)
                       and (not marker or k[2] >= marker))
        found = {n: call.state.blobs[(account, container, n)] for n in names[:size]}
    items = []
    for name, (data, metadata) in found.items():
        meta = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in sorted(metadata.items()))
        items.append(f"<Blob><Name>{escape(name)}</Name><Properties>"
                     "<Creation-Time>Thu, 01 Jan 2026 00:00:00 GMT</Creation-Time>"
                     "<Last-Modified>Thu, 01 Jan 2026 00:00:00 GMT</Last-Modified><Etag>0x1</Etag>"
                     f"<Content-Length>{len(data)}</Content-Length>"
                     "<Content-Type>application/octet-stream</Content-Type><BlobType>BlockBlob</BlobType>"
                     "<AccessTier>Hot</AccessTier><LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState>"
                     f"</Properties><Metadata>{meta}</Metadata></Blob>")
    following = names[size] if len(names) > size else ""
    xml = ('<?xml version="1.0" encoding="utf-8"?>'
           f'<EnumerationResults ServiceEndpoint="{escape(call.base_url)}/{account}/" ContainerName="{escape(container)}">'
           f"<Prefix>{escape(prefix)}</Prefix><Marker>{escape(marker)}</Marker><MaxResults>{size}</MaxResults>"
           f"<Blobs>{''.join(items)}</Blobs><NextMarker>{escape(following)}</NextMarker></EnumerationResults>")
    return RawBody(xml.encode(), {"Content-Type": "application/xml", "x-ms-version": "2025-01-05"})


BLOB = "/{account}/{container}/{blob=**}"
BLOB_ROUTES: list[Route] = [("PUT", BLOB, None, put_blob), ("GET", BLOB, None, get_blob),
                            ("HEAD", BLOB, None, get_blob), ("GET", "/{account}/{container}", None, list_blobs)]

# --- environments (read: the serving environment the program registers) ------------------------

def _environment(call: Call, version: str) -> dict[str, Any]:
    name = call.params["name"]
    if name not in call.state.environments:
        raise asset_not_found(name)
    return {"id": f"{call.workspace['id']}/environments/{name}/versions/{version}", "name": version,
            "type": f"{A_WS}/environments/versions",
            "properties": {"image": call.state.environments[name], "osType": "Linux", "tags": {},
                           "properties": {}, "isAnonymous": False, "isArchived": False,
                           "provisioningState": "Succeeded"}}


def list_environment_versions(call: Call) -> Any:
    return _page([_environment(call, "1")])


def get_environment_version(call: Call) -> Any:
    if call.params["version"] != "1":
        raise asset_not_found(call.params["name"], call.params["version"])
    return _environment(call, "1")


EP = WS + "/onlineEndpoints/{endpoint}"
ROUTES: list[Route] = [
    ("GET", "/subscriptions/{subscription}/providers/" + PROVIDER + "/locations/{location}/mfeOperationsStatus/{op}",
     None, operation_status),
    ("GET", "/subscriptions/{subscription}/providers/" + PROVIDER + "/locations/{location}/mfeOperationResults/{op}",
     None, operation_result),
    ("GET", WS, f"{A_WS}/read", get_workspace),
    ("GET", WS + "/models", f"{A_WS}/models/read", list_models),
    ("GET", WS + "/models/{name}", f"{A_WS}/models/read", get_model),
    ("PUT", WS + "/models/{name}", f"{A_WS}/models/write", put_model),
    ("GET", WS + "/models/{name}/versions", f"{A_WS}/models/versions/read", list_model_versions),
    ("GET", WS + "/models/{name}/versions/{version}", f"{A_WS}/models/versions/read", get_model_version),
    ("PUT", WS + "/models/{name}/versions/{version}", f"{A_WS}/models/versions/write", put_model_version),
    ("DELETE", WS + "/models/{name}/versions/{version}", f"{A_WS}/models/versions/delete", delete_model_version),
    ("GET", WS + "/environments/{name}/versions", f"{A_WS}/environments/versions/read", list_environment_versions),
    ("GET", WS + "/environments/{name}/versions/{version}", f"{A_WS}/environments/versions/read",
     get_environment_version),
    ("GET", WS + "/onlineEndpoints", f"{A_WS}/onlineEndpoints/read", list_endpoints),
    ("GET", EP, f"{A_WS}/onlineEndpoints/read", get_endpoint),
    ("PUT", EP, f"{A_WS}/onlineEndpoints/write", put_endpoint),
    ("DELETE", EP, f"{A_WS}/onlineEndpoints/delete", delete_endpoint),
    ("POST", EP + "/listKeys", f"{A_WS}/onlineEndpoints/listKeys/action", list_keys),
    ("GET", EP + "/deployments", f"{A_WS}/onlineEndpoints/deployments/read", list_deployments),
    ("GET", EP + "/deployments/{deployment}", f"{A_WS}/onlineEndpoints/deployments/read", get_deployment),
    ("PUT", EP + "/deployments/{deployment}", f"{A_WS}/onlineEndpoints/deployments/write", put_deployment),
    ("DELETE", EP + "/deployments/{deployment}", f"{A_WS}/onlineEndpoints/deployments/delete", delete_deployment),
    ("POST", EP + "/deployments/{deployment}/getLogs", f"{A_WS}/onlineEndpoints/deployments/read", get_logs),
]


def compile_template(template: str) -> re.Pattern[str]:
    pattern = ""
    for part in re.split(r"(\{[a-z_]+(?:=\*\*)?\})", template):
        if part.startswith("{"):
            name = part.strip("{}").split("=")[0]
            pattern += f"(?P<{name}>.+)" if part.endswith("=**}") else f"(?P<{name}>[^/]+)"
        else:
            pattern += re.escape(part)
    return re.compile(f"^{pattern}/?$", re.IGNORECASE)


def mounted_routes() -> list[Route]:
    """``ROUTES`` and every other module of this package's ``ROUTES`` (imported here, not at import time)."""
    import tests.contract.azure_fake as package

    routes = list(ROUTES)
    tail = list(BLOB_ROUTES)  # last: its templates match any path
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name in ("arm", "fixtures", "rules") or info.name.startswith("test"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        routes.extend(getattr(module, "ROUTES", []))
    return routes + tail


def create_app(state: ArmState, routes: list[Route] | None = None) -> Any:
    """The Starlette app answering ``routes`` (default: every mounted route) over ``state``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route as StarletteRoute

    table = [(method, compile_template(template), action, handler)
             for method, template, action, handler in (routes if routes is not None else mounted_routes())]

    async def dispatch(request: Request) -> Response:
        path = request.url.path
        raw = await request.body()
        query = urllib.parse.parse_qs(request.url.query, keep_blank_values=True)
        allowed = False
        for method, pattern, action, handler in table:
            found = pattern.match(path)
            if not found:
                continue
            allowed = True
            if method != request.method:
                continue
            call = Call(state=state, method=request.method, path=path, params=found.groupdict(), query=query,
                        raw=raw, headers={k.lower(): v for k, v in request.headers.items()},
                        base_url=str(request.base_url).rstrip("/"))
            state.calls.append((request.method, path))
            blob = handler in (put_blob, get_blob, list_blobs)
            try:
                if not blob and not call.headers.get("authorization", "").startswith("Bearer "):
                    raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header "
                                                                "is missing.")
                if not blob and "api-version" not in query and not getattr(handler, "data_plane", False):
                    raise ArmError(400, "MissingApiVersionParameter",
                                   "The api-version query parameter (?api-version=) is required for all requests.")
                if action is not None:
                    scope = path.split("/providers/")[0] if "/resourceGroups/" in path else path
                    state.check(action, scope)
                result = handler(call)
            except ArmError as exc:
                headers = {"x-ms-failure-cause": "gateway", **exc.headers}
                return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
            if isinstance(result, RawBody):
                content = b"" if request.method == "HEAD" else result.content
                return Response(content, status_code=result.status, headers={**result.headers,
                                                                   "Content-Length": str(len(result.content))},
                                media_type=result.headers.get("Content-Type", "application/octet-stream"))
            status, body, headers = 200, result, {}
            if isinstance(result, tuple):
                status, body = result[0], result[1]
                headers = result[2] if len(result) > 2 else {}
            headers = {k: v for k, v in headers.items() if k != "x-ms-resource-url"}
            if status == 204:
                return Response(status_code=204, headers=headers)
            return JSONResponse(body, status_code=status, headers=headers)
        if allowed:
            return JSONResponse({"error": {"code": "MethodNotAllowed", "message": f"{request.method} {path}"}},
                                status_code=405)
        return JSONResponse({"error": {"code": "InvalidResourceType",
                                       "message": f"The resource type could not be found for {path}."}},
                            status_code=404)

    return Starlette(routes=[StarletteRoute("/{path:path}", dispatch,
                                            methods=["GET", "PUT", "POST", "PATCH", "DELETE", "HEAD"])])


class Server(FakeServer):
    """Uvicorn serving an ASGI app on 127.0.0.1 (a free port) in a daemon thread."""

    thread_name = "fake-arm-http"
    what = "the fake ARM server"


def later(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)
