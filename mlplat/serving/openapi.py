"""The serving gateway's routes as an OpenAPI 3.1 document (``GET /openapi.json`` on the gateway).

The generic routes are templated (``/endpoints/{name}/invocations``); every endpoint the gateway
serves with a column signature also gets its own concrete paths, whose request bodies are typed by
that signature and carry a valid example of each MLflow input format and of an Open Inference
Protocol v2 request. A client generator, or a fuzzer, then knows what this gateway accepts today.

References: MLflow's scoring protocol ("Deploy MLflow models", the four JSON input formats of
``/invocations``) and the Open Inference Protocol v2 REST API (KServe's "Open Inference Protocol",
health, metadata and inference; the binary tensor data extension).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlplat.serving.protocol import INT_RANGES, SCORING_KEYS, V2_DTYPES, Column, Signature

ERROR = "#/components/schemas/Error"
V2_ERROR = "#/components/schemas/V2Error"


def document(environment: str, endpoints: Mapping[str, Signature | None], *, api_keys: str = "off",
             version: str = "") -> dict[str, Any]:
    """The document for a gateway of ``environment`` serving ``endpoints`` (name -> the input
    signature of the version it serves, ``None`` while no version is loaded). ``api_keys``: the
    gateway's ``serving.auth.apiKeys`` mode (``off``, ``optional``, ``required``)."""
    security = _security(api_keys)
    paths: dict[str, Any] = {
        "/endpoints": {"get": _get("endpoints.list", "What is deployed in this environment and how it routes",
                                   {"type": "object", "required": ["environment", "endpoints"],
                                    "properties": {"environment": {"type": "string"},
                                                   "endpoints": {"type": "array", "items": {"type": "object"}}}})},
        "/endpoints/{name}": {"get": _get("endpoints.show", "One endpoint: its versions, weights and rollout",
                                          {"type": "object"}, params=[_name()], not_found=True)},
        "/endpoints/{name}/invocations": {"post": _invocations("endpoints.invoke", _scoring_body(None), security)},
        "/v2": {"get": _get("v2.server_metadata", "Open Inference Protocol server metadata",
                            {"type": "object", "required": ["name", "version", "extensions"],
                             "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                            "extensions": {"type": "array", "items": {"type": "string"}}}})},
        "/v2/health/live": {"get": _get("v2.live", "Open Inference Protocol liveness",
                                        {"type": "object", "properties": {"live": {"type": "boolean"}}})},
        "/v2/health/ready": {"get": _get("v2.ready", "Open Inference Protocol readiness",
                                         {"type": "object", "properties": {"ready": {"type": "boolean"}}})},
        "/v2/models/{name}": {"get": _get("v2.model_metadata", "Open Inference Protocol model metadata",
                                          {"type": "object", "required": ["name", "versions", "platform", "inputs"]},
                                          params=[_name()], not_found=True, v2=True)},
        "/v2/models/{name}/ready": {"get": _ready()},
        "/v2/models/{name}/infer": {"post": _infer("v2.infer", _v2_body(None), security)},
        "/ping": {"get": _get("ping", "Liveness (SageMaker's /ping)", {"type": "object"})},
        "/health": {"get": _get("health", "Liveness", {"type": "object"})},
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics of every endpoint",
                             "responses": {"200": {"description": "Prometheus text format 0.0.4",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": _get("openapi", "This document", {"type": "object"})},
    }
    for name, signature in sorted(endpoints.items()):
        if signature is None or not signature.columns or "/" in name or "{" in name:
            continue
        paths[f"/endpoints/{name}/invocations"] = {"post": _invocations(
            f"endpoints.invoke.{name}", _scoring_body(signature), security, examples=_scoring_examples(signature),
            summary=f"Score rows with the version(s) of '{name}' deployed here")}
        paths[f"/v2/models/{name}/infer"] = {"post": _infer(
            f"v2.infer.{name}", _v2_body(signature), security, examples={"columns": {"value": _v2_example(signature)}},
            summary=f"Open Inference Protocol inference on '{name}'")}
    components: dict[str, Any] = {"schemas": {
        "Error": {"type": "object", "required": ["error_code", "message"],
                  "properties": {"error_code": {"type": "string"}, "message": {"type": "string"},
                                 "request_id": {"type": "string"}, "hint": {"type": ["string", "null"]},
                                 "endpoints": {"type": "array", "items": {"type": "string"}}}},
        "V2Error": {"type": "object", "required": ["error"],
                    "properties": {"error": {"type": "string"}, "error_code": {"type": "string"},
                                   "message": {"type": "string"}, "request_id": {"type": "string"}}},
    }}
    if api_keys != "off":
        # RFC 6750 bearer tokens, or the same key in X-Api-Key (mlplat.serving.auth)
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"},
                                         "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}}
    return {"openapi": "3.1.0",
            "info": {"title": f"mlplat serving gateway ({environment})", "version": version or "1"},
            "paths": paths, "components": components}


# --- operations ---------------------------------------------------------------------------------


def _name() -> dict[str, Any]:
    return {"name": "name", "in": "path", "required": True, "description": "the model's endpoint name",
            "schema": {"type": "string"}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(v2: bool, description: str) -> dict[str, Any]:
    return {"description": description, "content": _json({"$ref": V2_ERROR if v2 else ERROR})}


def _get(op_id: str, summary: str, schema: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
         not_found: bool = False, v2: bool = False) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": summary, "content": _json(schema)}}
    if not_found:
        responses["404"] = _errors(v2, "no endpoint of that name in this environment (the body lists them)")
    out: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        out["parameters"] = params
    return out


def _ready() -> dict[str, Any]:
    ready = {"type": "object", "required": ["name", "ready"],
             "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}}
    return {"operationId": "v2.model_ready", "summary": "Whether every routed version of the model is loaded",
            "parameters": [_name()],
            "responses": {"200": {"description": "loaded", "content": _json(ready)},
                          "503": {"description": "a routed version is not loaded", "content": _json(ready)},
                          "404": _errors(True, "no endpoint of that name in this environment")}}


def _scoring_headers() -> list[dict[str, Any]]:
    return [{"name": "x-request-id", "in": "header", "required": False, "schema": {"type": "string"},
             "description": "the caller's own id, kept beside the gateway's (at most 128 of [A-Za-z0-9._-])"},
            {"name": "x-routing-key", "in": "header", "required": False, "schema": {"type": "string"},
             "description": "sticky routing: the same key reaches the same variant"}]


def _security(api_keys: str) -> list[dict[str, list[str]]] | None:
    if api_keys == "required":
        return [{"bearer": []}, {"apiKey": []}]
    if api_keys == "optional":
        return [{}, {"bearer": []}, {"apiKey": []}]
    return None


def _scoring_responses(v2: bool, ok: dict[str, Any]) -> dict[str, Any]:
    return {
        "200": ok,
        "4XX": _errors(v2, "refused: malformed JSON or shape (400), no such endpoint (404), body too slow (408) "
                           "or too large (413), not JSON (415), does not match the model's signature (422), "
                           "missing or invalid API key (401, 403)"),
        "500": _errors(v2, "the model raised on this input (MODEL_ERROR) or its version failed to load "
                           "(MODEL_UNAVAILABLE); counted against the version that served it"),
    }


def _invocations(op_id: str, body: dict[str, Any], security: list[dict[str, list[str]]] | None, *,
                 examples: dict[str, Any] | None = None,
                 summary: str = "Score rows (MLflow scoring protocol)") -> dict[str, Any]:
    content = _json(body)
    if examples:
        content["application/json"]["examples"] = examples
    ok = {"description": "one prediction per row", "content": _json({
        "type": "object", "required": ["predictions", "request_id"],
        "properties": {"predictions": {"type": "array"}, "request_id": {"type": "string"},
                       "client_request_id": {"type": "string"}}})}
    out: dict[str, Any] = {"operationId": op_id, "summary": summary,
                           "parameters": ([] if examples else [_name()]) + _scoring_headers(),
                           "requestBody": {"required": True, "content": content},
                           "responses": _scoring_responses(False, ok)}
    if security is not None:
        out["security"] = security
    return out


def _infer(op_id: str, body: dict[str, Any], security: list[dict[str, list[str]]] | None, *,
           examples: dict[str, Any] | None = None, summary: str = "Open Inference Protocol v2 inference") -> dict[str, Any]:
    content = _json(body)
    if examples:
        content["application/json"]["examples"] = examples
    ok = {"description": "the outputs, as v2 tensors", "content": _json({
        "type": "object", "required": ["model_name", "model_version", "outputs"],
        "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
                       "outputs": {"type": "array", "items": _v2_tensor(None)}}})}
    binary = {"name": "Inference-Header-Content-Length", "in": "header", "required": False,
              "schema": {"type": "integer"},
              "description": "binary tensor data extension: the length of the JSON part of the body"}
    out: dict[str, Any] = {"operationId": op_id, "summary": summary,
                           "parameters": ([] if examples else [_name()]) + [binary] + _scoring_headers(),
                           "requestBody": {"required": True, "content": content},
                           "responses": _scoring_responses(True, ok)}
    if security is not None:
        out["security"] = security
    return out


# --- request bodies -----------------------------------------------------------------------------


def _value(column: Column) -> dict[str, Any]:
    if column.type in ("double", "float"):
        schema: dict[str, Any] = {"type": "number"}
    elif column.type in INT_RANGES:
        low, high = INT_RANGES[column.type]
        schema = {"type": "integer", "minimum": low, "maximum": high}
    elif column.type == "boolean":
        schema = {"type": "boolean"}
    elif column.type == "datetime":
        schema = {"type": "string", "format": "date-time"}
    elif column.type in ("string", "binary"):
        schema = {"type": "string"}
    else:
        return {}
    if not column.required:
        schema["type"] = [schema["type"], "null"]
    return schema


def _record(signature: Signature | None) -> dict[str, Any]:
    if signature is None or not signature.columns:
        return {"type": "object"}
    return {"type": "object", "properties": {c.name: _value(c) for c in signature.columns},
            "required": [c.name for c in signature.columns if c.required], "additionalProperties": False}


def _row(signature: Signature | None) -> dict[str, Any]:
    if signature is None or not signature.columns:
        return {"type": "array"}
    width = len(signature.columns)
    return {"type": "array", "prefixItems": [_value(c) for c in signature.columns], "minItems": width,
            "maxItems": width}


def _scoring_body(signature: Signature | None) -> dict[str, Any]:
    """One of MLflow's four input formats (``params`` beside it is allowed)."""
    record, row = _record(signature), _row(signature)
    columns: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
    columnar: dict[str, Any] = {"type": "object"}
    if signature is not None and signature.columns:
        columns = {"const": list(signature.names)}
        columnar = {"type": "object", "properties": {c.name: {"type": "array", "items": _value(c), "minItems": 1}
                                                     for c in signature.columns},
                    "required": [c.name for c in signature.columns if c.required], "additionalProperties": False}
    formats = {
        "dataframe_split": {"type": "object", "required": ["data"],
                            "properties": {"columns": columns, "data": {"type": "array", "items": row, "minItems": 1}}},
        "dataframe_records": {"type": "array", "items": record, "minItems": 1},
        "instances": {"type": "array", "items": {"anyOf": [record, row]}, "minItems": 1},
        "inputs": {"anyOf": [columnar, {"type": "array", "items": {"anyOf": [record, row]}, "minItems": 1}]},
    }
    assert tuple(formats) == SCORING_KEYS
    return {"oneOf": [{"type": "object", "required": [key], "additionalProperties": False,
                       "properties": {key: schema, "params": {"type": "object"}}} for key, schema in formats.items()]}


def _v2_tensor(signature: Signature | None) -> dict[str, Any]:
    name: dict[str, Any] = {"type": "string", "minLength": 1}
    if signature is not None and signature.columns:
        name = {"enum": list(signature.names)}
    return {"type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": name, "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                           "datatype": {"enum": list(V2_DTYPES)}, "data": {"type": "array"},
                           "parameters": {"type": "object"}}}


def _v2_body(signature: Signature | None) -> dict[str, Any]:
    return {"type": "object", "required": ["inputs"],
            "properties": {"id": {"type": "string"}, "parameters": {"type": "object"},
                           "inputs": {"type": "array", "items": _v2_tensor(signature), "minItems": 1},
                           "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                               "name": {"type": "string"}, "parameters": {"type": "object"}}}}}}


# --- examples: one valid request per format, from the signature ---------------------------------


def _example_value(column: Column, row: int) -> Any:
    if column.type in ("double", "float"):
        return 0.5 * row - 0.25
    if column.type in INT_RANGES:
        return row
    if column.type == "boolean":
        return row % 2 == 0
    if column.type == "datetime":
        return "2026-01-01T00:00:00"
    return f"value-{row}"


def _scoring_examples(signature: Signature) -> dict[str, Any]:
    rows = [[_example_value(c, i) for c in signature.columns] for i in range(2)]
    records = [dict(zip(signature.names, values, strict=True)) for values in rows]
    return {
        "dataframe_split": {"value": {"dataframe_split": {"columns": list(signature.names), "data": rows}}},
        "dataframe_records": {"value": {"dataframe_records": records}},
        "instances": {"value": {"instances": records}},
        "inputs": {"value": {"inputs": {n: [r[i] for r in rows] for i, n in enumerate(signature.names)}}},
    }


def _v2_example(signature: Signature) -> dict[str, Any]:
    described = {d["name"]: d["datatype"] for d in signature.describe()}
    return {"inputs": [{"name": c.name, "shape": [2], "datatype": described[c.name],
                        "data": [_example_value(c, i) for i in range(2)]} for c in signature.columns]}
