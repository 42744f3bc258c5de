"""The platform API as a table of operations: one definition, two transports.

An operation is a plain function ``fn(spec, ctx, *, param: T = default, ...) -> JSON`` in
``mlplat/api/ops/``, registered with :func:`operation` under a name (``models.list``), an
HTTP method and a path under ``/api/v1``. From the keyword parameters' annotations the table
builds one pydantic model per operation, so a request is validated the same way whoever
sends it:

* **embedded** (:class:`mlplat.api.plane.EmbeddedPlane`): the CLI or SDK process validates
  the parameters and calls the function against its own ledger;
* **server** (:class:`mlplat.api.plane.RemotePlane` → ``mlplat server``): the client sends
  them as JSON, the server validates them against the same model and calls the same function
  against its ledger.

Results are JSON documents in both modes (embedded results make the same JSON round trip),
so a command renders the same thing whichever way it ran. Messages a service prints on
``ctx.err`` while it works come back beside the result and the client prints them.
"""
from __future__ import annotations

import importlib
import inspect
import json
import math
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic_core import PydanticCustomError

from mlplat.errors import ExitCode, MlplatError
from mlplat.stack import SLUG

API_VERSION = 1
API_PREFIX = f"/api/v{API_VERSION}"
Method = Literal["GET", "POST"]

_PATH_PARAM = re.compile(r"{([a-z_]+)}")
# what the ledger's INTEGER/BIGINT columns hold (SQLite and PostgreSQL alike)
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1

# An environment an operation acts in: a slug, like the stack's own environment (it becomes part of
# MLflow aliases, endpoint names and paths).
Environment = Annotated[str, Field(pattern=SLUG, description="environment name (lowercase slug), e.g. dev, production")]


class Params(BaseModel):
    """Base of every operation's parameter model: unknown fields are refused, by name; so is any
    value, however deeply nested, that the ledger cannot store (see :func:`_storable`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable_values(cls, value: Any) -> Any:
        _storable(value, "")
        return value


def _storable(value: Any, where: str) -> None:
    """Refuses (naming where, inside a nested value) what the ledger's databases cannot store:
    an integer beyond 64 bits, a string with a NUL character (PostgreSQL's text refuses it) or
    with a lone surrogate (no UTF-8 encoding)."""
    problem = None
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            problem = f"{value} is outside the 64-bit integer range the platform stores"
    elif isinstance(value, str):
        if "\x00" in value:
            problem = "a NUL character (\\u0000) is not allowed in text"
        else:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                problem = "the text is not valid Unicode (it holds a lone surrogate escape)"
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key, f"{where}.(key)" if where else "(key)")
            _storable(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _storable(item, f"{where}[{i}]")
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _storable(getattr(value, name), f"{where}.{name}" if where else name)
    if problem:
        # the text travels in the context: a key named "{x}" must not be read as a template field
        raise PydanticCustomError("unstorable", "{problem}", {"problem": f"{where}: {problem}" if where else problem})


@dataclass(frozen=True)
class Operation:
    name: str
    method: Method
    path: str  # under API_PREFIX, e.g. /models/{name}/versions/{version}
    summary: str
    handler: Callable[..., Any]
    params: type[Params]
    writes: bool

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    def url_path(self, values: dict[str, Any]) -> str:
        from urllib.parse import quote

        for name in self.path_params:
            if "/" in str(values[name]):
                raise InvalidRequest(f"{name} must not contain '/': {values[name]!r}", where=name,
                                     hint="names of models, deployments and views are slugs")
        return API_PREFIX + _PATH_PARAM.sub(lambda m: quote(str(values[m.group(1)]), safe=""), self.path)

    def validate(self, raw: dict[str, Any]) -> Params:
        """Parameters as the operation's model; ``InvalidRequest`` naming each bad field otherwise."""
        try:
            return self.params.model_validate(raw)
        except ValidationError as exc:
            raise InvalidRequest.from_validation(self.name, exc) from None

    def invoke(self, spec: Any, ctx: Any, params: Params) -> Any:
        return to_json(self.handler(spec, ctx, **{k: getattr(params, k) for k in type(params).model_fields}))


class InvalidRequest(MlplatError):
    """A request whose parameters do not fit the operation (HTTP 422, exit 2)."""

    exit_code = ExitCode.USAGE

    @classmethod
    def from_validation(cls, operation: str, exc: ValidationError) -> InvalidRequest:
        fields = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(p) for p in error["loc"]) or "(body)"
            fields.append({"field": where, "problem": error["msg"]})
        text = "; ".join(f"{f['field']}: {f['problem']}" for f in fields)
        return cls(f"invalid request to {operation}: {text}", where=fields[0]["field"] if fields else None,
                   hint="see /api/v1/openapi.json for the operation's parameters", fields=fields)


OPERATIONS: dict[str, Operation] = {}


def operation(name: str, method: Method, path: str, *, writes: bool | None = None,
              summary: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(spec, ctx, *, ...)`` as the operation ``name`` at ``method`` ``path``."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in OPERATIONS:
            raise RuntimeError(f"operation {name} is defined twice")
        params = list(inspect.signature(fn).parameters.values())
        if len(params) < 2 or any(p.kind is not p.KEYWORD_ONLY for p in params[2:]):
            raise TypeError(f"{fn.__qualname__}: an operation takes (spec, ctx, *, params...)")
        fields: dict[str, Any] = {}
        for p in params[2:]:
            annotation = p.annotation
            if isinstance(annotation, str):
                annotation = eval(annotation, fn.__globals__)  # noqa: S307 - the module's own annotation
            fields[p.name] = (annotation, ... if p.default is p.empty else p.default)
        model_name = "".join(part.capitalize() for part in re.split(r"[._-]", name)) + "Params"
        model = create_model(model_name, __base__=Params, **fields)
        for param in _PATH_PARAM.findall(path):
            if param not in fields:
                raise TypeError(f"{fn.__qualname__}: path parameter {{{param}}} is not a parameter")
        doc = inspect.getdoc(fn) or ""
        OPERATIONS[name] = Operation(name=name, method=method, path=path, summary=summary or doc.split("\n")[0],
                                     handler=fn, params=model, writes=(method != "GET") if writes is None else writes)
        return fn

    return register


_loaded = False


def load() -> dict[str, Operation]:
    """Import every module of :mod:`mlplat.api.ops` so the table is complete (once per process: every
    call of an operation looks it up here)."""
    global _loaded
    if not _loaded:
        from mlplat.api import ops

        for module in pkgutil.iter_modules(ops.__path__):
            importlib.import_module(f"{ops.__name__}.{module.name}")
        _loaded = True
    return OPERATIONS


def get(name: str) -> Operation:
    table = load()
    if name not in table:
        raise KeyError(f"no operation {name!r}")
    return table[name]


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def to_json(value: Any) -> Any:
    """``value`` as a JSON document (what a client decodes): tuples become lists, paths and
    datetimes strings, NaN and infinities ``null``."""
    return _finite(json.loads(json.dumps(value, default=_default)))


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every operation (served at ``/api/v1/openapi.json``)."""
    from mlplat import __version__

    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object", "required": ["error", "message", "exit_code"],
            "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                           "where": {"type": ["string", "null"]}, "hint": {"type": ["string", "null"]},
                           "exit_code": {"type": "integer"}, "details": {"type": "object"}},
        },
    }
    for op in sorted(load().values(), key=lambda o: o.name):
        schema = op.params.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas[name] = definition
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        parameters = [{"name": p, "in": "path", "required": True, "schema": properties.get(p, {})}
                      for p in op.path_params]
        entry: dict[str, Any] = {
            "operationId": op.name, "summary": op.summary, "tags": [op.name.split(".")[0]],
            "responses": {
                "200": {"description": "the operation's result, with messages printed while it ran",
                        "content": {"application/json": {"schema": {
                            "type": "object", "properties": {"result": {}, "messages": {
                                "type": "array", "items": {"type": "string"}}}}}}},
                "4XX": {"description": "bad request, not found, conflict, denied",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "503": {"description": "the database is unavailable; retry",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        }
        rest = {k: v for k, v in properties.items() if k not in op.path_params}
        if op.method == "GET":
            parameters += [{"name": k, "in": "query", "required": k in required, "schema": v} for k, v in rest.items()]
        else:
            schemas[op.params.__name__] = {"type": "object", "properties": rest, "additionalProperties": False,
                                           "required": sorted(required - set(op.path_params))}
            entry["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{op.params.__name__}"}}}}
        if parameters:
            entry["parameters"] = parameters
        paths.setdefault(API_PREFIX + op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "mlplat platform API", "version": f"{API_VERSION} (mlplat {__version__})"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
