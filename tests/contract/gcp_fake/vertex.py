"""A fake of Vertex AI's REST API (v1) and of GCS's JSON API, as a Starlette app.

State lives in one :class:`VertexState` (models and their versions with aliases, endpoints with
deployed models and traffic split, long-running operations, GCS objects). Requests are parsed into
``google.cloud.aiplatform_v1``'s proto-plus request types: an unknown field or a wrong type is refused
with 400 ``INVALID_ARGUMENT`` as Vertex refuses it, in a ``google.rpc.Status`` JSON body; the documented
rules live in ``rules.py``. Mutations answer a long-running operation that is done on the first
``operations.get``, the polling protocol the SDK follows.

Tests steer the fake through the state: ``deny("aiplatform.endpoints.deploy")`` makes the calls needing
that IAM permission answer 403 ``PERMISSION_DENIED`` naming it; ``exhaust("aiplatform.endpoints.deploy",
times=2)`` makes the next two answer 429 ``RESOURCE_EXHAUSTED``.

Route table: ``ROUTES`` below, plus the ``ROUTES`` list of every ``vertex_*.py`` module of this
package (other Vertex resources: jobs, pipelines, feature stores), mounted by :func:`create_app`. A
route is ``(HTTP method, path template, handler)``; templates name path segments ``{like_this}``
(``[^/:]+``, or ``{like_this=**}`` for the rest of the path); a handler takes a :class:`Call` and
returns a JSON-able dict (200) or ``(status, dict)``, and raises :class:`ApiError` to refuse.
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
from typing import Any

from tests.contract.fake_server import Server as FakeServer
from tests.contract.gcp_fake import rules

Handler = Callable[["Call"], Any]
Route = tuple[str, str, Handler]
LOC = "/v1/projects/{project}/locations/{location}"

_HTTP = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
         "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "UNIMPLEMENTED": 501, "ABORTED": 409}


class ApiError(Exception):
    """A refusal, answered as ``{"error": {"code", "message", "status", "details"}}`` (google.rpc.Status)."""

    def __init__(self, status: str, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.http = _HTTP.get(status, 500)
        self.message = message
        self.details = details or []

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.http, "message": self.message, "status": self.status,
                          "details": self.details}}


def invalid(message: str | None) -> None:
    if message:
        raise ApiError("INVALID_ARGUMENT", message)


@dataclass
class Call:
    """One request as a handler sees it: path parameters, query, the JSON body, the fake's state."""

    state: VertexState
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, list[str]]
    raw: bytes
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        if not self.raw:
            return {}
        try:
            return json.loads(self.raw)
        except ValueError:
            raise ApiError("INVALID_ARGUMENT", "Invalid JSON payload received.") from None

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    def parse(self, message_type: Any, body: Any | None = None) -> Any:
        """The body as ``message_type`` (a proto-plus class): unknown fields and wrong types are refused."""
        from google.protobuf import json_format

        payload = self.json if body is None else body
        try:
            return message_type.from_json(json.dumps(payload), ignore_unknown_fields=False)
        except (json_format.ParseError, TypeError, ValueError) as exc:
            raise ApiError("INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}") from None

    @property
    def parent(self) -> str:
        return f"projects/{self.params['project']}/locations/{self.params['location']}"

    def require(self, permission: str, resource: str) -> None:
        self.state.check(permission, resource)


def to_json(message: Any) -> dict[str, Any]:
    return json.loads(type(message).to_json(message, use_integers_for_enums=False,
                                            always_print_fields_with_no_presence=False))


@dataclass
class VertexState:
    """Everything the fake holds; tests read and steer it directly (one instance per server)."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → {"versions": {id: Model}, ...}
    endpoints: dict[str, Any] = field(default_factory=dict)  # name → aiplatform_v1.Endpoint
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[tuple[str, str], tuple[bytes, dict[str, Any]]] = field(default_factory=dict)
    buckets: set[str] = field(default_factory=set)  # made by the Pulumi program; tests add them
    denied: set[str] = field(default_factory=set)
    exhausted: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # state of mounted modules, by their name
    ids: Any = field(default_factory=lambda: itertools.count(1000))
    clock: Callable[[], float] = field(default=time.time)

    def reset(self) -> None:
        with self.lock:
            for store in (self.models, self.endpoints, self.operations, self.objects, self.exhausted, self.extra,
                          self.buckets):
                store.clear()
            self.denied.clear()
            self.requests.clear()

    def new_id(self) -> str:
        return str(next(self.ids))

    def deny(self, *permissions: str) -> None:
        self.denied.update(permissions)

    def allow(self, *permissions: str) -> None:
        self.denied.difference_update(permissions)

    def exhaust(self, permission: str, times: int = 1) -> None:
        self.exhausted[permission] = self.exhausted.get(permission, 0) + times

    def check(self, permission: str, resource: str) -> None:
        # https://cloud.google.com/vertex-ai/docs/general/access-control: each method needs one permission
        if permission in self.denied:
            raise ApiError("PERMISSION_DENIED",
                           f"Permission '{permission}' denied on resource '//aiplatform.googleapis.com/{resource}' "
                           "(or it may not exist).",
                           [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED",
                             "domain": "aiplatform.googleapis.com",
                             "metadata": {"permission": permission, "resource": resource}}])
        if self.exhausted.get(permission):
            self.exhausted[permission] -= 1
            raise ApiError("RESOURCE_EXHAUSTED",
                           f"Quota exceeded for aiplatform.googleapis.com/{permission.split('.')[-1]}_requests "
                           f"with base model: {resource}. Please submit a quota increase request.")

    def timestamp(self) -> str:
        import datetime as dt

        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def operation(self, resource: str, response: Any | None = None, response_type: str = "") -> dict[str, Any]:
        """A long-running operation over ``resource``, done when first polled, answering ``response``."""
        name = f"{resource}/operations/{self.new_id()}"
        body: dict[str, Any] = {"@type": f"type.googleapis.com/google.cloud.aiplatform.v1.{response_type}"}
        if response is not None:
            body.update(to_json(response) if not isinstance(response, dict) else response)
        self.operations[name] = {"name": name, "done": True,
                                 "response": body if response_type else {"@type": "type.googleapis.com/google."
                                                                                   "protobuf.Empty"}}
        return {"name": name, "done": False}

    # --- lookups --------------------------------------------------------------------------------

    def model_entry(self, name: str) -> dict[str, Any]:
        base = name.split("@", 1)[0]
        entry = self.models.get(base)
        if entry is None:
            raise ApiError("NOT_FOUND", f"The Model does not exist: {base}")
        return entry

    def model_version(self, name: str) -> Any:
        """``models/M`` (the default version), ``models/M@3`` or ``models/M@alias``."""
        entry = self.model_entry(name)
        base, _, ref = name.partition("@")
        ref = ref or rules.DEFAULT_ALIAS
        if ref in entry["versions"]:
            return entry["versions"][ref]
        for model in entry["versions"].values():
            if ref in model.version_aliases:
                return model
        raise ApiError("NOT_FOUND", f"The Model version does not exist: {base}@{ref}")

    def endpoint(self, name: str) -> Any:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise ApiError("NOT_FOUND", f"The Endpoint does not exist: {name}")
        return endpoint


# --- operations ---------------------------------------------------------------------------------------


def get_operation(call: Call) -> Any:
    name = call.params["name"]
    op = call.state.operations.get(name)
    if op is None:
        raise ApiError("NOT_FOUND", f"Operation {name} does not exist")
    return op


# --- models (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.models) ------


def _v1() -> Any:
    from google.cloud import aiplatform_v1

    return aiplatform_v1


def _model_name(call: Call) -> str:
    return f"{call.parent}/models/{call.params['model']}"


def _owners(entry: dict[str, Any]) -> dict[str, str]:
    return {alias: vid for vid, model in entry["versions"].items() for alias in model.version_aliases}


def _deployed_on(state: VertexState, model: str, version_id: str | None = None) -> list[str]:
    out = []
    for endpoint in state.endpoints.values():
        for deployed in endpoint.deployed_models:
            base, _, vid = deployed.model.partition("@")
            if base == model and (version_id is None or deployed.model_version_id == version_id):
                out.append(endpoint.name)
    return out


def upload_model(call: Call) -> Any:
    v1 = _v1()
    request = call.parse(v1.UploadModelRequest)
    call.require("aiplatform.models.upload", call.parent)
    model = request.model
    invalid(None if model.display_name else "Field model.displayName is required")
    invalid(None if model.container_spec.image_uri else
            "Field model.containerSpec.imageUri is required for a model without a supported prebuilt container")
    invalid(rules.labels_error(dict(model.labels)))
    for alias in model.version_aliases:
        invalid(rules.alias_error(alias))
    state, now = call.state, call.state.timestamp()
    if request.parent_model:
        if not request.parent_model.startswith(call.parent + "/models/"):
            raise ApiError("INVALID_ARGUMENT", f"parentModel {request.parent_model} is not in {call.parent}")
        entry = state.model_entry(request.parent_model)
        name = request.parent_model
        version_id = str(max(int(v) for v in entry["versions"]) + 1)
        owners = _owners(entry)
        invalid(rules.merge_aliases_error(list(model.version_aliases), version_id, owners))
        if rules.DEFAULT_ALIAS in model.version_aliases:
            for other in entry["versions"].values():
                if rules.DEFAULT_ALIAS in other.version_aliases:
                    other.version_aliases.remove(rules.DEFAULT_ALIAS)
        aliases = list(dict.fromkeys(model.version_aliases))
    else:
        model_id = request.model_id or state.new_id()
        invalid(rules.model_id_error(model_id))
        name = f"{call.parent}/models/{model_id}"
        if name in state.models:
            raise ApiError("ALREADY_EXISTS", f"Model {name} already exists")
        entry = state.models[name] = {"versions": {}}
        version_id = "1"
        aliases = list(dict.fromkeys([rules.DEFAULT_ALIAS, *model.version_aliases]))
    stored = v1.Model(model)
    stored.name = name
    stored.version_id = version_id
    stored.version_aliases = aliases
    stored.create_time = entry["versions"]["1"].create_time if version_id != "1" else now
    stored.version_create_time = now
    stored.update_time = now
    stored.version_update_time = now
    entry["versions"][version_id] = stored
    response = v1.UploadModelResponse(model=name, model_version_id=version_id)
    return state.operation(name, response, "UploadModelResponse")


def get_model(call: Call) -> Any:
    name = _model_name(call)
    call.require("aiplatform.models.get", name)
    return to_json(call.state.model_version(name))


def list_models(call: Call) -> Any:
    call.require("aiplatform.models.list", call.parent)
    wanted = _label_filter(call.arg("filter"))
    out = []
    for name in sorted(call.state.models):
        if name.startswith(call.parent + "/"):
            model = call.state.model_version(name)
            if all(model.labels.get(k) == v for k, v in wanted.items()):
                out.append(to_json(model))
    return {"models": out}


def _label_filter(text: str) -> dict[str, str]:
    """``labels.k=v AND labels.k2="v2"``: the filter subset the runtime sends."""
    out = {}
    for part in re.split(r"\s+AND\s+", text.strip()) if text.strip() else []:
        match = re.fullmatch(r'\s*labels\.([a-z][a-z0-9_-]*)\s*=\s*"?([a-z0-9_-]*)"?\s*', part)
        if not match:
            raise ApiError("INVALID_ARGUMENT", f"Unsupported filter: {part!r}")
        out[match.group(1)] = match.group(2)
    return out


def list_versions(call: Call) -> Any:
    name = _model_name(call)
    call.require("aiplatform.models.list", name)
    entry = call.state.model_entry(name)
    return {"models": [to_json(m) for _v, m in sorted(entry["versions"].items(), key=lambda kv: int(kv[0]))]}


def merge_version_aliases(call: Call) -> Any:
    v1 = _v1()
    name = _model_name(call)
    request = call.parse(v1.MergeVersionAliasesRequest)
    call.require("aiplatform.models.update", name)
    if "@" not in name:
        raise ApiError("INVALID_ARGUMENT", "The name must include a version id (models/{model}@{version_id})")
    model = call.state.model_version(name)
    entry = call.state.model_entry(name)
    if not request.version_aliases:
        raise ApiError("INVALID_ARGUMENT", "Field versionAliases is required")
    invalid(rules.merge_aliases_error(list(request.version_aliases), model.version_id, _owners(entry)))
    for item in request.version_aliases:
        if item.startswith("-"):
            if item[1:] in model.version_aliases:
                model.version_aliases.remove(item[1:])
            continue
        if item == rules.DEFAULT_ALIAS:
            for other in entry["versions"].values():
                if rules.DEFAULT_ALIAS in other.version_aliases:
                    other.version_aliases.remove(rules.DEFAULT_ALIAS)
        if item not in model.version_aliases:
            model.version_aliases.append(item)
    model.version_update_time = call.state.timestamp()
    return to_json(model)


def update_model(call: Call) -> Any:
    v1 = _v1()
    name = _model_name(call)
    patch = call.parse(v1.Model)
    call.require("aiplatform.models.update", name)
    model = call.state.model_version(name)
    mask = [m for m in call.arg("updateMask").split(",") if m]
    if not mask:
        raise ApiError("INVALID_ARGUMENT", "Field updateMask is required")
    for path in mask:
        if path == "labels":
            invalid(rules.labels_error(dict(patch.labels)))
            model.labels = dict(patch.labels)
        elif path in ("description", "display_name", "displayName"):
            setattr(model, "display_name" if path != "description" else "description",
                    getattr(patch, "display_name" if path != "description" else "description"))
        elif path in ("version_description", "versionDescription"):
            model.version_description = patch.version_description
        else:
            raise ApiError("INVALID_ARGUMENT", f"Field {path} of a Model cannot be updated")
    model.update_time = call.state.timestamp()
    return to_json(model)


def delete_model(call: Call) -> Any:
    name = _model_name(call)
    call.require("aiplatform.models.delete", name)
    call.state.model_entry(name)
    if "@" in name:
        raise ApiError("INVALID_ARGUMENT", "Use deleteVersion to delete one version of a model")
    problem = rules.delete_model_error(name, _deployed_on(call.state, name))
    if problem:
        raise ApiError("FAILED_PRECONDITION", problem)
    del call.state.models[name]
    return call.state.operation(name)


def delete_version(call: Call) -> Any:
    name = _model_name(call)
    call.require("aiplatform.models.delete", name)
    model = call.state.model_version(name)
    if "@" not in name:
        raise ApiError("INVALID_ARGUMENT", "The name must include a version id (models/{model}@{version_id})")
    if rules.DEFAULT_ALIAS in model.version_aliases:
        raise ApiError("FAILED_PRECONDITION", "The default version of a model cannot be deleted; move the 'default' "
                                              "alias first")
    base = name.split("@", 1)[0]
    problem = rules.delete_model_error(name, _deployed_on(call.state, base, model.version_id))
    if problem:
        raise ApiError("FAILED_PRECONDITION", problem)
    del call.state.model_entry(name)["versions"][model.version_id]
    return call.state.operation(base)


# --- endpoints (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.endpoints) --


def _endpoint_name(call: Call) -> str:
    return f"{call.parent}/endpoints/{call.params['endpoint']}"


def create_endpoint(call: Call) -> Any:
    v1 = _v1()
    endpoint = call.parse(v1.Endpoint)
    call.require("aiplatform.endpoints.create", call.parent)
    invalid(None if endpoint.display_name else "Field endpoint.displayName is required")
    invalid(rules.labels_error(dict(endpoint.labels)))
    if endpoint.deployed_models or endpoint.traffic_split:
        raise ApiError("INVALID_ARGUMENT", "deployedModels and trafficSplit are set by deployModel, not on create")
    endpoint_id = call.arg("endpointId") or call.state.new_id()
    invalid(rules.endpoint_id_error(endpoint_id))
    name = f"{call.parent}/endpoints/{endpoint_id}"
    if name in call.state.endpoints:
        raise ApiError("ALREADY_EXISTS", f"Endpoint {name} already exists")
    endpoint.name = name
    endpoint.create_time = endpoint.update_time = call.state.timestamp()
    call.state.endpoints[name] = endpoint
    return call.state.operation(name, endpoint, "Endpoint")


def get_endpoint(call: Call) -> Any:
    name = _endpoint_name(call)
    call.require("aiplatform.endpoints.get", name)
    return to_json(call.state.endpoint(name))


def list_endpoints(call: Call) -> Any:
    call.require("aiplatform.endpoints.list", call.parent)
    wanted = _label_filter(call.arg("filter"))
    return {"endpoints": [to_json(e) for n, e in sorted(call.state.endpoints.items())
                          if n.startswith(call.parent + "/") and all(e.labels.get(k) == v for k, v in wanted.items())]}


def update_endpoint(call: Call) -> Any:
    v1 = _v1()
    name = _endpoint_name(call)
    patch = call.parse(v1.Endpoint)
    call.require("aiplatform.endpoints.update", name)
    endpoint = call.state.endpoint(name)
    mask = [m for m in call.arg("updateMask").split(",") if m]
    if not mask:
        raise ApiError("INVALID_ARGUMENT", "Field updateMask is required")
    for path in mask:
        if path in ("traffic_split", "trafficSplit"):
            split = dict(patch.traffic_split)
            invalid(rules.traffic_split_error(split, [d.id for d in endpoint.deployed_models]))
            endpoint.traffic_split = split
        elif path == "labels":
            invalid(rules.labels_error(dict(patch.labels)))
            endpoint.labels = dict(patch.labels)
        elif path in ("display_name", "displayName", "description"):
            field_name = "description" if path == "description" else "display_name"
            setattr(endpoint, field_name, getattr(patch, field_name))
        else:
            raise ApiError("INVALID_ARGUMENT", f"Field {path} of an Endpoint cannot be updated")
    endpoint.update_time = call.state.timestamp()
    return to_json(endpoint)


def delete_endpoint(call: Call) -> Any:
    name = _endpoint_name(call)
    call.require("aiplatform.endpoints.delete", name)
    endpoint = call.state.endpoint(name)
    if endpoint.deployed_models:
        raise ApiError("FAILED_PRECONDITION", f"Endpoint {name} has deployed models; undeploy them first")
    del call.state.endpoints[name]
    return call.state.operation(name)


def deploy_model(call: Call) -> Any:
    v1 = _v1()
    name = _endpoint_name(call)
    request = call.parse(v1.DeployModelRequest)
    call.require("aiplatform.endpoints.deploy", name)
    endpoint = call.state.endpoint(name)
    deployed = request.deployed_model
    if not deployed.model:
        raise ApiError("INVALID_ARGUMENT", "Field deployedModel.model is required")
    model = call.state.model_version(deployed.model)
    if deployed.dedicated_resources:
        res = deployed.dedicated_resources
        invalid(rules.dedicated_resources_error(res.machine_spec.machine_type, res.min_replica_count,
                                                res.max_replica_count))
    elif not deployed.automatic_resources:
        raise ApiError("INVALID_ARGUMENT", "Model requires dedicatedResources (machineSpec, minReplicaCount)")
    split = dict(request.traffic_split)
    invalid(rules.traffic_split_error(split, [d.id for d in endpoint.deployed_models], deploying=True))
    deployed.id = deployed.id or call.state.new_id()
    deployed.model = f"{deployed.model.split('@', 1)[0]}"
    deployed.model_version_id = model.version_id
    deployed.create_time = call.state.timestamp()
    endpoint.deployed_models.append(deployed)
    if split:
        endpoint.traffic_split = {(deployed.id if k == "0" else k): v for k, v in split.items()}
    model.deployed_models.append(v1.DeployedModelRef(endpoint=name, deployed_model_id=deployed.id))
    return call.state.operation(name, v1.DeployModelResponse(deployed_model=deployed), "DeployModelResponse")


def undeploy_model(call: Call) -> Any:
    v1 = _v1()
    name = _endpoint_name(call)
    request = call.parse(v1.UndeployModelRequest)
    call.require("aiplatform.endpoints.undeploy", name)
    endpoint = call.state.endpoint(name)
    target = next((d for d in endpoint.deployed_models if d.id == request.deployed_model_id), None)
    if target is None:
        raise ApiError("NOT_FOUND", f"DeployedModel {request.deployed_model_id} is not deployed on {name}")
    remaining = [d.id for d in endpoint.deployed_models if d.id != target.id]
    split = dict(request.traffic_split) if request.traffic_split else dict(endpoint.traffic_split)
    invalid(rules.undeploy_error(target.id, split, len(remaining)))
    split.pop(target.id, None)
    invalid(rules.traffic_split_error(split, remaining))
    endpoint.deployed_models = [d for d in endpoint.deployed_models if d.id != target.id]
    endpoint.traffic_split = split if remaining else {}
    try:
        model = call.state.model_version(f"{target.model}@{target.model_version_id}")
        model.deployed_models = [r for r in model.deployed_models
                                 if not (r.endpoint == name and r.deployed_model_id == target.id)]
    except ApiError:
        pass
    return call.state.operation(name, v1.UndeployModelResponse(), "UndeployModelResponse")


# --- GCS JSON API (the artifacts Vertex serves from) -------------------------------------------------


def gcs_upload(call: Call) -> Any:
    # https://cloud.google.com/storage/docs/json_api/v1/objects/insert (uploadType=media or multipart)
    bucket = call.params["bucket"]
    _bucket(call.state, bucket)
    kind = call.arg("uploadType")
    if kind == "media":
        name, data, metadata = call.arg("name"), call.raw, {}
    elif kind == "multipart":
        ctype = call.headers.get("content-type", "")
        boundary = ctype.split("boundary=", 1)[1].strip('"') if "boundary=" in ctype else ""
        parts = [p for p in call.raw.split(b"--" + boundary.encode()) if p.strip() not in (b"", b"--")]
        if len(parts) < 2:
            raise ApiError("INVALID_ARGUMENT", "Multipart upload needs metadata and media parts")

        def body(part: bytes) -> bytes:
            return part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]

        metadata = json.loads(body(parts[0]))
        name, data = metadata.get("name") or call.arg("name"), body(parts[1])
    else:
        raise ApiError("INVALID_ARGUMENT", f"Unsupported uploadType '{kind}' (media or multipart)")
    if not name:
        raise ApiError("INVALID_ARGUMENT", "Required parameter: name")
    generation = call.state.new_id()
    record = {"kind": "storage#object", "bucket": bucket, "name": name, "size": str(len(data)),
              "generation": generation, "metadata": metadata.get("metadata") or {},
              "contentType": metadata.get("contentType") or "application/octet-stream"}
    call.state.objects[(bucket, name)] = (data, record)
    return record


def _bucket(state: VertexState, bucket: str) -> None:
    if bucket not in state.buckets:
        raise ApiError("NOT_FOUND", "The specified bucket does not exist.")


def gcs_get(call: Call) -> Any:
    key = (call.params["bucket"], call.params["object"])
    if key not in call.state.objects:
        raise ApiError("NOT_FOUND", f"No such object: {key[0]}/{key[1]}")
    data, record = call.state.objects[key]
    if call.arg("alt") == "media":
        return RawBody(data)
    return record


def gcs_list(call: Call) -> Any:
    bucket, prefix = call.params["bucket"], call.arg("prefix")
    items = [rec for (b, n), (_d, rec) in sorted(call.state.objects.items()) if b == bucket and n.startswith(prefix)]
    return {"kind": "storage#objects", "items": items}


@dataclass
class RawBody:
    data: bytes
    content_type: str = "application/octet-stream"


ROUTES: list[Route] = [
    ("POST", LOC + "/models:upload", upload_model),
    ("GET", LOC + "/models", list_models),
    ("GET", LOC + "/models/{model}", get_model),
    ("GET", LOC + "/models/{model}:listVersions", list_versions),
    ("POST", LOC + "/models/{model}:mergeVersionAliases", merge_version_aliases),
    ("PATCH", LOC + "/models/{model}", update_model),
    ("DELETE", LOC + "/models/{model}", delete_model),
    ("DELETE", LOC + "/models/{model}:deleteVersion", delete_version),
    ("POST", LOC + "/endpoints", create_endpoint),
    ("GET", LOC + "/endpoints", list_endpoints),
    ("GET", LOC + "/endpoints/{endpoint}", get_endpoint),
    ("PATCH", LOC + "/endpoints/{endpoint}", update_endpoint),
    ("DELETE", LOC + "/endpoints/{endpoint}", delete_endpoint),
    ("POST", LOC + "/endpoints/{endpoint}:deployModel", deploy_model),
    ("POST", LOC + "/endpoints/{endpoint}:undeployModel", undeploy_model),
    # the SDK's REST operations client polls through /ui/ or /v1/ depending on the resource
    ("GET", "/v1/{name=**}/operations/{op}", lambda call: get_operation(
        _with(call, name=f"{call.params['name']}/operations/{call.params['op']}"))),
    ("GET", "/ui/{name=**}/operations/{op}", lambda call: get_operation(
        _with(call, name=f"{call.params['name']}/operations/{call.params['op']}"))),
    ("POST", "/upload/storage/v1/b/{bucket}/o", gcs_upload),
    ("GET", "/storage/v1/b/{bucket}/o/{object}", gcs_get),
    ("GET", "/download/storage/v1/b/{bucket}/o/{object}", gcs_get),
    ("GET", "/storage/v1/b/{bucket}/o", gcs_list),
]


def _with(call: Call, **params: str) -> Call:
    call.params.update(params)
    return call


# --- the app ------------------------------------------------------------------------------------------


def compile_template(template: str) -> re.Pattern[str]:
    out, pos = "", 0
    for match in re.finditer(r"\{(\w+)(=\*\*)?\}", template):
        out += re.escape(template[pos:match.start()])
        out += f"(?P<{match.group(1)}>.+?)" if match.group(2) else f"(?P<{match.group(1)}>[^/:]+)"
        pos = match.end()
    return re.compile("^" + out + re.escape(template[pos:]) + "$")


def mounted_routes() -> list[Route]:
    """This module's routes and those of every ``vertex_*`` module of the package (its ``ROUTES``)."""
    import tests.contract.gcp_fake as package

    routes = list(ROUTES)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("vertex_"):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            routes.extend(getattr(module, "ROUTES", []))
    return routes


def create_app(state: VertexState, routes: list[Route] | None = None) -> Any:
    from starlette.responses import JSONResponse, Response

    table = [(method, compile_template(t), handler) for method, t, handler in (routes or mounted_routes())]
    # specific templates first: a literal ":verb" must not be taken by a "{name=**}" route
    table.sort(key=lambda r: ("=**" in r[1].pattern or ".+?" in r[1].pattern, -len(r[1].pattern)))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?", 1)[0]
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode(), keep_blank_values=True)
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method = scope["method"]
        response: Response
        try:
            for verb, pattern, handler in table:
                match = pattern.match(path)
                if verb == method and match:
                    params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
                    call = Call(state, method, path, params, query, raw, headers)
                    with state.lock:
                        state.requests.append((method, path))
                        result = handler(call)
                    break
            else:
                raise ApiError("NOT_FOUND" if method in ("GET", "DELETE") else "UNIMPLEMENTED",
                               f"The fake Vertex AI API has no route for {method} {path}")
            status, body = result if isinstance(result, tuple) else (200, result)
            if isinstance(body, RawBody):
                response = Response(body.data, status_code=status, media_type=body.content_type)
            else:
                response = JSONResponse(body, status_code=status)
        except ApiError as exc:
            response = JSONResponse(exc.body(), status_code=exc.http)
        await response(scope, receive, send)

    return app


class Server(FakeServer):
    """Uvicorn serving an ASGI app on 127.0.0.1 (a free port) in a daemon thread."""

    thread_name = "fake-gcp-http"
    what = "the fake server"
