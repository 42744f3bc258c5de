"""Azure ML jobs, schedules and the assets they name, on the fake ARM (mounted through ``ROUTES``).

Routes: compute clusters (read; every workspace starts with the program's ``cpu-cluster``), code and
environment versions and components (create, read), jobs (create, get, list with ``jobType``/``tag``/
``listViewType`` and ``nextLink`` paging, cancel as a long-running operation), schedules (create or update,
get, list; disabling is an update with ``isEnabled: false``). Bodies are read into azure-ai-ml's REST
models (``JobBase`` with its ``CommandJob``/``PipelineJob`` discriminator, ``Schedule`` with
``JobScheduleAction`` and ``CronTrigger``/``RecurrenceTrigger``, ``CodeVersion``, ``EnvironmentVersion``,
``ComponentVersion``), and the documented rules are the small functions below, each citing its page.

Jobs do not run here: tests steer them with :func:`advance` (a job's status, a pipeline's child jobs per
step, the log a command job writes to the workspace's artifact store).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from tests.contract.azure_fake import rules as arm_rules
from tests.contract.azure_fake.arm import (
    A_WS,
    WS,
    ArmError,
    ArmState,
    Call,
    bad_request,
    read_model,
    stage,
    storage_account,
)

DEFAULT_COMPUTES = ("cpu-cluster",)
PAGE = 100
TERMINAL = frozenset({"Completed", "Failed", "Canceled"})

# --- documented rules -------------------------------------------------------------------------------

# Job names: unique in the workspace; letters, digits, '-' and '_', starting with a letter or digit.
# https://learn.microsoft.com/azure/machine-learning/reference-yaml-job-command (name)
_JOB_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}$")
# Experiment names: letters, digits, '_' and '-', starting with a letter or digit, at most 255 characters.
# https://learn.microsoft.com/python/api/azureml-core/azureml.core.experiment.experiment
_EXPERIMENT = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}$")
# Cron triggers: NCronTab's five fields (minute hour day month day-of-week), a Windows time zone id.
# https://learn.microsoft.com/azure/machine-learning/how-to-schedule-pipeline-job#cron-expression
_CRON_FIELD = re.compile(r"^(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*$")
TIME_ZONES = frozenset({"UTC", "Coordinated Universal Time", "GMT Standard Time", "W. Europe Standard Time",
                        "Pacific Standard Time", "Eastern Standard Time"})
# Job input types and the URI forms a job reads.
# https://learn.microsoft.com/azure/machine-learning/how-to-read-write-data-v2#paths
_URI = re.compile(r"^(azureml://|abfss://|wasbs://|https://)\S+$")


def job_name(name: str) -> str | None:
    """https://learn.microsoft.com/azure/machine-learning/reference-yaml-job-command (name)"""
    if not _JOB_NAME.fullmatch(name or ""):
        return (f"Invalid job name '{name}': use letters, digits, '-' and '_', starting with a letter or digit, "
                "at most 255 characters.")
    return None


def experiment_name(name: str | None) -> str | None:
    """https://learn.microsoft.com/python/api/azureml-core/azureml.core.experiment.experiment"""
    if name is not None and not _EXPERIMENT.fullmatch(name):
        return (f"Invalid experiment name '{name}': use letters, digits, '_' and '-', starting with a letter or "
                "digit, at most 255 characters.")
    return None


def cron_trigger(expression: str | None, time_zone: str | None) -> str | None:
    """https://learn.microsoft.com/azure/machine-learning/how-to-schedule-pipeline-job#cron-expression"""
    fields = str(expression or "").split()
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        return (f"Invalid cron expression '{expression}': a cron trigger takes five fields (minutes hours days "
                "months days-of-week) in NCronTab format.")
    if (time_zone or "UTC") not in TIME_ZONES:
        return f"Invalid time zone '{time_zone}': use a Windows time zone id, e.g. 'UTC'."
    return None


def job_input(name: str, value: Mapping[str, Any]) -> str | None:
    """https://learn.microsoft.com/azure/machine-learning/how-to-read-write-data-v2#paths"""
    kind = value.get("jobInputType") or value.get("job_input_type")
    if kind in ("uri_file", "uri_folder", "mltable", "custom_model", "mlflow_model") and \
            not _URI.fullmatch(str(value.get("uri") or "")):
        return f"Input '{name}': '{value.get('uri')}' is not a path Azure ML reads (azureml://, abfss://, https://)."
    return None


def cancel(status: str) -> str | None:
    """A finished job cannot be canceled. https://learn.microsoft.com/rest/api/azureml/jobs/cancel"""
    if status in TERMINAL:
        return f"The job has already finished ({status}) and cannot be canceled."
    return None


# --- state -------------------------------------------------------------------------------------------


def jobs_state(state: ArmState) -> dict[str, Any]:
    with state.lock:
        return state.extra.setdefault("jobs", {"computes": {}, "codes": {}, "environments": {}, "components": {},
                                               "jobs": {}, "schedules": {}})


def computes(state: ArmState, ws_id: str) -> set[str]:
    return jobs_state(state)["computes"].setdefault(ws_id.lower(), set(DEFAULT_COMPUTES))


def _resource(call: Call, kind: str, name: str, props: dict[str, Any], existing: dict[str, Any] | None
              ) -> dict[str, Any]:
    return {"id": f"{call.workspace['id']}/{kind}/{name}", "name": name.rsplit("/", 1)[-1],
            "type": f"{A_WS}/{kind.split('/')[0]}", "properties": props,
            "systemData": call.state.system_data(existing)}


def _ws(call: Call) -> str:
    return call.ws_id.lower()


def _not_found(what: str) -> ArmError:
    return ArmError(404, "UserError", f"Could not find {what}.")


# --- computes and assets -----------------------------------------------------------------------------


def get_compute(call: Call) -> Any:
    name = call.params["compute"]
    if name not in computes(call.state, call.ws_id):
        raise ArmError(404, "ResourceNotFound", f"Compute '{name}' was not found in the workspace.")
    return _resource(call, "computes", name, {"computeType": "AmlCompute", "provisioningState": "Succeeded",
                                              "properties": {"vmSize": "Standard_DS3_v2"}}, None)


def _asset_routes(kind: str, model: str) -> tuple[Any, Any]:
    def key(call: Call) -> tuple[str, str, str]:
        return _ws(call), call.params["name"], call.params["version"]

    def get(call: Call) -> Any:
        found = jobs_state(call.state)[kind].get(key(call))
        if found is None:
            raise _not_found(f"asset with name {call.params['name']} and version {call.params['version']}")
        return found

    def put(call: Call) -> Any:
        body = call.json
        read_model(model, body)
        props = dict(body.get("properties") or {})
        bad_request(arm_rules.tags(props.get("tags")))
        if kind == "components":
            spec = props.get("componentSpec") or {}
            if spec.get("name") != call.params["name"] or str(spec.get("version")) != call.params["version"]:
                bad_request("componentSpec.name and componentSpec.version must be the component's name and version.")
        if kind == "codes" and not str(props.get("codeUri") or "").startswith(("https://", "http://")):
            bad_request("CodeVersion.properties.codeUri must be the URL of the code's folder in blob storage.")
        store = jobs_state(call.state)[kind]
        with call.state.lock:
            existing = store.get(key(call))
            if existing is not None and kind in ("codes", "components") and \
                    {k: v for k, v in existing["properties"].items() if k != "provisioningState"} != props:
                # https://learn.microsoft.com/azure/machine-learning/concept-component (components are immutable)
                raise ArmError(409, "Conflict", f"Version {call.params['version']} of {call.params['name']} exists "
                                                "with other content; assets are immutable, register a new version.")
            made = _resource(call, f"{kind}/{call.params['name']}/versions", call.params["version"],
                             {**props, "provisioningState": "Succeeded"}, existing)
            store[key(call)] = made
        return (200 if existing else 201), made

    return get, put


get_code, put_code = _asset_routes("codes", "CodeVersion")
get_env, put_env = _asset_routes("environments", "EnvironmentVersion")
get_component, put_component = _asset_routes("components", "ComponentVersion")


def _exists(call: Call, kind: str, arm_id: str | None) -> bool:
    found = re.search(rf"/{kind}/([^/]+)/versions/([^/]+)$", str(arm_id or ""))
    if not found or not str(arm_id).lower().startswith(_ws(call)):
        return False
    if kind == "environments" and found.group(1) in call.state.environments and found.group(2) == "1":
        return True
    return (_ws(call), found.group(1), found.group(2)) in jobs_state(call.state)[kind]


def _compute_exists(call: Call, compute_id: str | None) -> bool:
    found = re.search(r"/computes/([^/]+)$", str(compute_id or ""))
    return bool(found) and str(compute_id).lower().startswith(_ws(call)) and \
        found.group(1) in computes(call.state, call.ws_id)  # type: ignore[union-attr]


# --- jobs ----------------------------------------------------------------------------------------------


def check_job(call: Call, props: Mapping[str, Any]) -> None:
    """What Azure ML refuses in a job definition (a job's body, or a schedule's job definition)."""
    bad_request(arm_rules.tags(props.get("tags")))
    bad_request(experiment_name(props.get("experimentName")))
    compute = props.get("computeId")
    if compute and not _compute_exists(call, compute):
        bad_request(f"Compute '{compute}' does not exist in the workspace.")
    if props.get("jobType") == "Command":
        if not str(props.get("command") or "").strip():
            bad_request("CommandJob.properties.command is required.")
        if not _exists(call, "environments", props.get("environmentId")):
            bad_request(f"Environment '{props.get('environmentId')}' does not exist in the workspace.")
        if props.get("codeId") and not _exists(call, "codes", props["codeId"]):
            bad_request(f"Code '{props.get('codeId')}' does not exist in the workspace.")
        if not compute and not (props.get("resources") or {}).get("instanceType"):
            bad_request("A job without a compute runs on serverless compute: resources.instanceType is required.")
        for name, value in (props.get("inputs") or {}).items():
            bad_request(job_input(name, value))
    elif props.get("jobType") == "Pipeline":
        from mlplat_providers.azure import pipeline_compiler as pc

        components = {}
        for node_name, node in (props.get("jobs") or {}).items():
            if not _exists(call, "components", node.get("componentId")):
                bad_request(f"Node '{node_name}': component '{node.get('componentId')}' does not exist.")
            found = re.search(r"/components/([^/]+)/versions/([^/]+)$", str(node.get("componentId")))
            components[found.group(1)] = jobs_state(call.state)["components"][  # type: ignore[union-attr]
                (_ws(call), found.group(1), found.group(2))]  # type: ignore[union-attr]
            for name, value in (node.get("inputs") or {}).items():
                bad_request(job_input(f"{node_name}.{name}", value))
        default = (props.get("settings") or {}).get("default_compute")
        if not compute and not default:
            bad_request("A pipeline job needs a compute: set computeId or settings.default_compute.")
        if default and not _compute_exists(call, default):
            bad_request(f"Compute '{default}' does not exist in the workspace.")
        problems = pc.pipeline_problems({"properties": props}, components)
        bad_request("; ".join(problems))
    else:
        bad_request(f"Job type {props.get('jobType')!r} is not supported here.")


def put_job(call: Call) -> Any:
    name = call.params["job"]
    bad_request(job_name(name))
    body = call.json
    read_model("JobBase", body)
    props = dict(body.get("properties") or {})
    check_job(call, props)
    store = jobs_state(call.state)["jobs"]
    with call.state.lock:
        if (_ws(call), name) in store:
            raise ArmError(409, "Conflict", f"A job named '{name}' already exists in the workspace; job names are "
                                            "unique.")
        made = _resource(call, "jobs", name, {**props, "status": "NotStarted"}, None)
        store[(_ws(call), name)] = made
    return 201, made


def _job(call: Call) -> dict[str, Any]:
    found = jobs_state(call.state)["jobs"].get((_ws(call), call.params["job"]))
    if found is None:
        raise ArmError(404, "UserError", f"Job '{call.params['job']}' was not found.")
    return found


def get_job(call: Call) -> Any:
    return _job(call)


def list_jobs(call: Call) -> Any:
    """``jobType``, ``tag`` (a key, or key=value), ``listViewType`` (ActiveOnly hides archived jobs), paged
    by ``$skipToken`` through ``nextLink``."""
    items = [j for (w, _), j in sorted(jobs_state(call.state)["jobs"].items()) if w == _ws(call)]
    if call.arg("jobType"):
        items = [j for j in items if j["properties"].get("jobType") == call.arg("jobType")]
    if call.arg("tag"):
        key, _, value = call.arg("tag").partition("=")
        items = [j for j in items if key in (j["properties"].get("tags") or {}) and
                 (not value or j["properties"]["tags"][key] == value)]
    if call.arg("listViewType", "ActiveOnly") == "ActiveOnly":
        items = [j for j in items if not j["properties"].get("isArchived")]
    start = int(call.arg("$skipToken") or 0)
    size = int(jobs_state(call.state).get("page", PAGE))
    page: dict[str, Any] = {"value": items[start:start + size]}
    if start + size < len(items):
        query = "&".join(f"{k}={v[0]}" for k, v in call.query.items() if k != "$skipToken")
        page["nextLink"] = f"{call.base_url}{call.path}?{query}&$skipToken={start + size}"
    return page


def cancel_job(call: Call) -> Any:
    job = _job(call)
    bad_request(cancel(job["properties"]["status"]))
    job["properties"]["status"] = "CancelRequested"

    def apply() -> None:
        job["properties"]["status"] = "Canceled"
        job["systemData"] = call.state.system_data(job)

    return 202, {}, call.lro(job["id"], apply)


def advance(state: ArmState, job: str, status: str, *, steps: Mapping[str, str] | None = None,
            reused: tuple[str, ...] = (), log: str | None = None) -> dict[str, Any]:
    """Move job ``job`` (any workspace) to ``status``; for a pipeline job, each step named in ``steps`` gets
    a child command job (tagged as its node is) in that status (``reused``: taken from the cache); ``log``
    becomes the job's ``user_logs/std_log.txt`` in the artifact store."""
    store = jobs_state(state)["jobs"]
    with state.lock:
        key = next(k for k in store if k[1] == job)
        found = store[key]
        found["properties"]["status"] = status
        found["systemData"] = state.system_data(found)
        for step, child_status in (steps or {}).items():
            node = next(n for n in found["properties"]["jobs"].values() if (n.get("tags") or {}).get("mlplat-step") == step)
            child_name = f"{job}-{node['name']}"
            child = store.get((key[0], child_name)) or {
                "id": f"{found['id'].rsplit('/', 1)[0]}/{child_name}", "name": child_name, "type": f"{A_WS}/jobs",
                "properties": {"jobType": "Command", "displayName": node["name"], "command": "(step)",
                               "tags": dict(node.get("tags") or {}), "properties": {}},
                "systemData": state.system_data()}
            child["properties"]["status"] = child_status
            if step in reused:
                child["properties"]["properties"]["azureml.isreused"] = "true"
            store[(key[0], child_name)] = child
        if log is not None:
            workspace = next(w for w in state.workspaces.values() if w["id"].lower() == key[0])
            state.blobs[(storage_account(workspace["name"]), "azureml",
                         f"ExperimentRun/dcid.{job}/user_logs/std_log.txt")] = (log.encode(), {})
        return found


# --- schedules -------------------------------------------------------------------------------------------


def put_schedule(call: Call) -> Any:
    name = call.params["schedule"]
    bad_request(job_name(name))
    body = call.json
    value = read_model("Schedule", body)
    props = dict(body.get("properties") or {})
    bad_request(arm_rules.tags(props.get("tags")))
    trigger = props.get("trigger") or {}
    if trigger.get("triggerType") == "Cron":
        bad_request(cron_trigger(trigger.get("expression"), trigger.get("timeZone")))
    action = props.get("action") or {}
    if action.get("actionType") != "CreateJob":
        bad_request(f"Schedule action {action.get('actionType')!r} is not supported here (CreateJob).")
    if value.properties.action.job_definition is None:
        bad_request("JobScheduleAction.jobDefinition is required.")
    check_job(call, action.get("jobDefinition") or {})
    store = jobs_state(call.state)["schedules"]
    with call.state.lock:
        existing = store.get((_ws(call), name))
        made = _resource(call, "schedules", name, {"isEnabled": True, **props, "provisioningState": "Succeeded"},
                         existing)
        shown, apply = stage(store, (_ws(call), name), made, existing)
        headers = call.lro(made["id"], apply)
    return (200 if existing else 201), shown, headers


def get_schedule(call: Call) -> Any:
    found = jobs_state(call.state)["schedules"].get((_ws(call), call.params["schedule"]))
    if found is None:
        raise ArmError(404, "UserError", f"Schedule '{call.params['schedule']}' was not found.")
    return found


def list_schedules(call: Call) -> Any:
    view = call.arg("listViewType", "EnabledOnly")
    items = [s for (w, _), s in sorted(jobs_state(call.state)["schedules"].items()) if w == _ws(call)]
    if view == "EnabledOnly":
        items = [s for s in items if s["properties"].get("isEnabled", True)]
    elif view == "DisabledOnly":
        items = [s for s in items if not s["properties"].get("isEnabled", True)]
    return {"value": items}


ASSET = "/{name}/versions/{version}"
ROUTES = [
    ("GET", WS + "/computes/{compute}", f"{A_WS}/computes/read", get_compute),
    ("GET", WS + "/codes" + ASSET, f"{A_WS}/codes/versions/read", get_code),
    ("PUT", WS + "/codes" + ASSET, f"{A_WS}/codes/versions/write", put_code),
    ("PUT", WS + "/environments" + ASSET, f"{A_WS}/environments/versions/write", put_env),
    ("GET", WS + "/components" + ASSET, f"{A_WS}/components/versions/read", get_component),
    ("PUT", WS + "/components" + ASSET, f"{A_WS}/components/versions/write", put_component),
    ("GET", WS + "/jobs", f"{A_WS}/jobs/read", list_jobs),
    ("GET", WS + "/jobs/{job}", f"{A_WS}/jobs/read", get_job),
    ("PUT", WS + "/jobs/{job}", f"{A_WS}/jobs/write", put_job),
    ("POST", WS + "/jobs/{job}/cancel", f"{A_WS}/jobs/cancel/action", cancel_job),
    ("GET", WS + "/schedules", f"{A_WS}/schedules/read", list_schedules),
    ("GET", WS + "/schedules/{schedule}", f"{A_WS}/schedules/read", get_schedule),
    ("PUT", WS + "/schedules/{schedule}", f"{A_WS}/schedules/write", put_schedule),
]
