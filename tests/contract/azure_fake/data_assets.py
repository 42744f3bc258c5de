"""Fake Azure ML data assets (``{ws}/data/{name}/versions/{version}``): what azure-ai-ml registers for each
collection of a deployment's data collector (``<endpoint>-<deployment>-<collection>``, a ``uri_folder`` on
``azureml://datastores/workspaceblobstore/paths/modelDataCollector/<endpoint>/<deployment>/<collection>``).
Bodies are read into the REST model ``DataVersionBase`` (discriminator ``dataType``); a version is immutable
(a different body for an existing version answers 409, as Azure ML does)."""
from __future__ import annotations

from typing import Any

from tests.contract.azure_fake.arm import A_WS, WS, ArmError, Call, Route, asset_not_found, read_model

DATA_TYPES = {"uri_file", "uri_folder", "mltable"}


def _key(call: Call) -> tuple[str, str, str]:
    return call.ws_id.lower(), call.params["name"], call.params["version"]


def get_data_version(call: Call) -> Any:
    found = call.state.extra.get("data", {}).get(_key(call))
    if found is None:
        raise asset_not_found(call.params["name"], call.params["version"])
    return found


def put_data_version(call: Call) -> Any:
    body = call.json
    read_model("DataVersionBase", body)
    props = dict(body.get("properties") or {})
    if props.get("dataType") not in DATA_TYPES:
        raise ArmError(400, "UserError", f"DataVersionBase.properties.dataType must be one of {sorted(DATA_TYPES)}.")
    if not props.get("dataUri"):
        raise ArmError(400, "UserError", "DataVersionBase.properties.dataUri is required.")
    key = _key(call)
    with call.state.lock:
        store = call.state.extra.setdefault("data", {})
        existing = store.get(key)
        if existing is not None:
            if existing["properties"]["dataUri"] != props["dataUri"]:
                raise ArmError(409, "UserError", f"A data asset with name {key[1]} and version {key[2]} already "
                                                 "exists with a different path; versions are immutable.")
            return 200, existing
        made = {"id": f"{call.workspace['id']}/data/{key[1]}/versions/{key[2]}", "name": key[2],
                "type": f"{A_WS}/data/versions",
                "properties": {"tags": {}, "properties": {}, "isAnonymous": False, "isArchived": False, **props},
                "systemData": call.state.system_data()}
        store[key] = made
    return 201, made


ROUTES: list[Route] = [
    ("GET", WS + "/data/{name}/versions/{version}", f"{A_WS}/data/versions/read", get_data_version),
    ("PUT", WS + "/data/{name}/versions/{version}", f"{A_WS}/data/versions/write", put_data_version),
]
