"""Fake Azure ML monitoring schedules (``{ws}/schedules/{schedule}`` with action ``CreateMonitor``).

A PUT is read into azure-ai-ml's REST model ``Schedule`` (unknown fields and wrong shapes answer 400), checked
against the documented rules below, and completes through ARM's asynchronous protocol; monitor schedules are
kept in ``state.extra["monitor_schedules"]`` by (workspace id, name). They must target a deployment that
exists and use serverless Spark as Azure ML model monitoring documents it. Other schedules (job schedules)
are the ``jobs`` module's: this module's routes are mounted before its and hand them over.
"""
from __future__ import annotations

import json
from typing import Any

from tests.contract.azure_fake import rules
from tests.contract.azure_fake.arm import A_WS, WS, ArmError, Call, Route, bad_request, read_model, stage

# https://learn.microsoft.com/azure/machine-learning/how-to-monitor-model-performance (serverless Spark compute
# of monitoring jobs: these instance types, Spark runtime 3.3 or 3.4)
SPARK_INSTANCE_TYPES = {"standard_e4s_v3", "standard_e8s_v3", "standard_e16s_v3", "standard_e32s_v3",
                        "standard_e64s_v3"}
SPARK_RUNTIMES = {"3.3", "3.4"}
# https://learn.microsoft.com/rest/api/azureml/schedules/create-or-update (RecurrenceTrigger.frequency)
FREQUENCIES = {"Minute", "Hour", "Day", "Week", "Month"}


def monitor_problem(definition: dict[str, Any], deployments: set[str]) -> str | None:
    """Why Azure ML refuses a monitor definition (None: it accepts it): serverless Spark of a supported
    instance type and runtime, at least one signal, a target deployment that exists (``deployments``: lower-
    cased ARM ids of the workspace's online deployments)."""
    compute = definition.get("computeConfiguration") or {}
    if compute.get("computeType") != "ServerlessSpark":
        return "MonitorDefinition.computeConfiguration.computeType must be ServerlessSpark."
    if str(compute.get("instanceType", "")).lower() not in SPARK_INSTANCE_TYPES:
        return (f"Serverless Spark instance type {compute.get('instanceType')!r} is not supported; use one of "
                f"{', '.join(sorted(SPARK_INSTANCE_TYPES))}.")
    if str(compute.get("runtimeVersion")) not in SPARK_RUNTIMES:
        return f"Spark runtime {compute.get('runtimeVersion')!r} is not supported; use 3.3 or 3.4."
    if not definition.get("signals"):
        return "MonitorDefinition.signals must hold at least one signal."
    target = (definition.get("monitoringTarget") or {}).get("deploymentId")
    if target and str(target).lower() not in deployments:
        return f"The monitoring target deployment {target} does not exist."
    return None


def trigger_problem(trigger: dict[str, Any]) -> str | None:
    """A recurrence trigger's frequency and interval (a positive integer)."""
    if trigger.get("triggerType") == "Recurrence":
        if str(trigger.get("frequency", "")).capitalize() not in FREQUENCIES:  # case-insensitive, as the enum
            return f"RecurrenceTrigger.frequency must be one of {', '.join(sorted(FREQUENCIES))}."
        if not isinstance(trigger.get("interval"), int) or trigger["interval"] < 1:
            return "RecurrenceTrigger.interval must be a positive integer."
    return None


def _key(call: Call) -> tuple[str, str]:
    return call.ws_id.lower(), call.params["schedule"]


def _other(name: str) -> Any:
    """The jobs module's handler ``name`` for schedules that are not monitors (None when it has none)."""
    try:
        from tests.contract.azure_fake import jobs
    except ImportError:
        return None
    return getattr(jobs, name, None)


def get_schedule(call: Call) -> Any:
    found = call.state.extra.get("monitor_schedules", {}).get(_key(call))
    if found is None:
        other = _other("get_schedule")
        if other is not None:
            return other(call)
        raise ArmError(404, "UserError", f"Schedule '{call.params['schedule']}' was not found.")
    return found


def put_schedule(call: Call) -> Any:
    body = call.json
    action = ((body.get("properties") or {}).get("action") or {}) if isinstance(body, dict) else {}
    other = _other("put_schedule")
    if action.get("actionType") != "CreateMonitor" and other is not None:
        return other(call)
    read_model("Schedule", body)
    props = dict(body.get("properties") or {})
    bad_request(rules.tags(props.get("tags")))
    bad_request(trigger_problem(props.get("trigger") or {}))
    if action.get("actionType") == "CreateMonitor":
        with call.state.lock:
            deployments = {d["id"].lower() for d in call.state.deployments.values()}
        bad_request(monitor_problem(action.get("monitorDefinition") or {}, deployments))
    key = _key(call)
    url = f"{call.workspace['id']}/schedules/{key[1]}"
    with call.state.lock:
        store = call.state.extra.setdefault("monitor_schedules", {})
        existing = store.get(key)
        target = {"id": url, "name": key[1], "type": f"{A_WS}/schedules",
                  "properties": {**props, "isEnabled": props.get("isEnabled", True),
                                 "provisioningState": "Succeeded"},
                  "systemData": call.state.system_data(existing)}
        shown, apply = stage(store, key, target, existing)
        headers = call.lro(url, apply)
    return (200 if existing else 201), shown, headers


ROUTES: list[Route] = [
    ("GET", WS + "/schedules/{schedule}", f"{A_WS}/schedules/read", get_schedule),
    ("PUT", WS + "/schedules/{schedule}", f"{A_WS}/schedules/write", put_schedule),
]
