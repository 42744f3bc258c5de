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
    denied: set[str] = field(default_factory=set)
    exhausted: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # state of mounted modules, by their name
    ids: Any = field(default_factory=lambda: itertools.count(1000))
    clock: Callable[[], float] = field(default=time.time)

    def reset(self) -> None:
        with self.lock:
            for store in (self.models, self.endpoints, self.operations, self.objects, self.exhausted, self.extra):
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


# --- GCS JSON API (the artifacts Vertex serves from) -------------------------------------------------


def gcs_upload(call: Call) -> Any:
    # https://cloud.google.com/storage/docs/json_api/v1/objects/insert (uploadType=media or multipart)
    bucket = call.params["bucket"]
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
    ("GET", "/v1/{name=**}/operations/{op}", lambda call: get_operation(
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


class Server:
    """Uvicorn serving an ASGI app on 127.0.0.1 (a free port) in a daemon thread."""

    def __init__(self, app: Any):
        import uvicorn

        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                     access_log=False)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="fake-gcp-http", daemon=True)
        self.port = 0

    def start(self, timeout: float = 30.0) -> Server:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not (self.server.started and self.server.servers):
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the fake server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
