"""Vertex AI fake routes for training jobs, pipelines, schedules and model monitoring jobs: ``customJobs``,
``pipelineJobs``, ``schedules``, ``modelDeploymentMonitoringJobs`` (mounted into the
Vertex fake's route table through ``ROUTES``).

Bodies are parsed into ``aiplatform_v1`` proto-plus types (unknown fields and wrong types refused), each
method checks the IAM permission Vertex AI requires, and the documented rules are enforced: a custom job
needs one worker pool with a machine type, a replica count and a container image or python package; a
pipeline job's id and the pipeline's name match ``[a-z0-9][a-z0-9-]{0,127}``, its ``pipelineSpec`` is a
valid KFP v2 IR (``pipeline_compiler.spec_problems``) and its runtime parameters are exactly ones the spec
declares, with every required one given. Jobs start queued; a test moves them on with :func:`advance`.
"""
from __future__ import annotations

import re
from typing import Any

from tests.contract.gcp_fake.vertex import LOC, ApiError, Call, Route, _label_filter, _v1, invalid, to_json

JOB_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")


def _store(call: Call, kind: str) -> dict[str, Any]:
    return call.state.extra.setdefault(kind, {})


def custom_job_problem(job: Any) -> str | None:
    """https://cloud.google.com/vertex-ai/docs/reference/rest/v1/CustomJobSpec"""
    if not job.display_name:
        return "Field customJob.displayName is required"
    pools = list(job.job_spec.worker_pool_specs)
    if not pools:
        return "customJob.jobSpec.workerPoolSpecs must have at least one entry"
    first = pools[0]
    if not first.machine_spec.machine_type:
        return "workerPoolSpecs[0].machineSpec.machineType is required"
    if first.replica_count != 1:
        return "workerPoolSpecs[0].replicaCount must be 1 (the chief)"
    if not first.container_spec.image_uri and not first.python_package_spec.executor_image_uri:
        return "workerPoolSpecs[0] needs containerSpec.imageUri or pythonPackageSpec"
    return None


def create_custom_job(call: Call) -> Any:
    v1 = _v1()
    job = call.parse(v1.CustomJob)
    call.require("aiplatform.customJobs.create", call.parent)
    invalid(custom_job_problem(job))
    name = f"{call.parent}/customJobs/{call.state.new_id()}"
    job.name = name
    job.state = v1.JobState.JOB_STATE_QUEUED
    job.create_time = job.update_time = call.state.timestamp()
    _store(call, "custom_jobs")[name] = job
    return to_json(job)


def get_custom_job(call: Call) -> Any:
    name = f"{call.parent}/customJobs/{call.params['job']}"
    call.require("aiplatform.customJobs.get", name)
    job = _store(call, "custom_jobs").get(name)
    if job is None:
        raise ApiError("NOT_FOUND", f"The CustomJob does not exist: {name}")
    return to_json(job)


def list_custom_jobs(call: Call) -> Any:
    call.require("aiplatform.customJobs.list", call.parent)
    wanted = _label_filter(call.arg("filter"))
    return {"customJobs": [to_json(j) for n, j in sorted(_store(call, "custom_jobs").items())
                           if n.startswith(call.parent + "/") and all(j.labels.get(k) == v for k, v in wanted.items())]}


def cancel_custom_job(call: Call) -> Any:
    v1 = _v1()
    name = f"{call.parent}/customJobs/{call.params['job']}"
    call.require("aiplatform.customJobs.cancel", name)
    job = _store(call, "custom_jobs").get(name)
    if job is None:
        raise ApiError("NOT_FOUND", f"The CustomJob does not exist: {name}")
    if job.state in (v1.JobState.JOB_STATE_QUEUED, v1.JobState.JOB_STATE_PENDING, v1.JobState.JOB_STATE_RUNNING):
        job.state = v1.JobState.JOB_STATE_CANCELLED
        job.end_time = call.state.timestamp()
    else:
        raise ApiError("FAILED_PRECONDITION", f"Cannot cancel the CustomJob {name}: it is already finished")
    return {}


def pipeline_job_problems(job: Any, job_id: str) -> list[str]:
    """https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.pipelineJobs"""
    from mlplat_providers.gcp import pipeline_compiler as pc

    problems = []
    if job_id and not JOB_ID.match(job_id):
        problems.append(f"pipelineJobId {job_id!r} must match {JOB_ID.pattern}")
    spec = dict(job.pipeline_spec) if job.pipeline_spec else {}
    if not spec:
        problems.append("pipelineJob.pipelineSpec is required (the fake runs no templateUri)")
        return problems
    problems += pc.spec_problems(_plain(spec))
    declared = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    values = dict(job.runtime_config.parameter_values)
    for name in sorted(set(values) - set(declared)):
        problems.append(f"runtimeConfig.parameterValues names {name!r}, which the pipeline does not declare")
    for name, definition in sorted(declared.items()):
        if name not in values and not definition.get("isOptional") and "defaultValue" not in definition:
            problems.append(f"runtimeConfig.parameterValues lacks the required parameter {name!r}")
    if not job.runtime_config.gcs_output_directory:
        problems.append("runtimeConfig.gcsOutputDirectory is required")
    return problems


def _plain(value: Any) -> Any:
    """proto-plus Struct views (MapComposite/RepeatedComposite) as dicts and lists."""
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "RepeatedComposite":
        return [_plain(v) for v in value]
    return value


def create_pipeline_job(call: Call) -> Any:
    v1 = _v1()
    job = call.parse(v1.PipelineJob)
    call.require("aiplatform.pipelineJobs.create", call.parent)
    job_id = call.arg("pipelineJobId") or f"pipeline-{call.state.new_id()}"
    problems = pipeline_job_problems(job, job_id)
    if problems:
        raise ApiError("INVALID_ARGUMENT", "; ".join(problems))
    name = f"{call.parent}/pipelineJobs/{job_id}"
    store = _store(call, "pipeline_jobs")
    if name in store:
        raise ApiError("ALREADY_EXISTS", f"PipelineJob {name} already exists")
    job.name = name
    job.state = v1.PipelineState.PIPELINE_STATE_QUEUED
    job.create_time = job.update_time = call.state.timestamp()
    store[name] = job
    return to_json(job)


def get_pipeline_job(call: Call) -> Any:
    name = f"{call.parent}/pipelineJobs/{call.params['job']}"
    call.require("aiplatform.pipelineJobs.get", name)
    job = _store(call, "pipeline_jobs").get(name)
    if job is None:
        raise ApiError("NOT_FOUND", f"The PipelineJob does not exist: {name}")
    return to_json(job)


def list_pipeline_jobs(call: Call) -> Any:
    call.require("aiplatform.pipelineJobs.list", call.parent)
    wanted = _label_filter(call.arg("filter"))
    return {"pipelineJobs": [to_json(j) for n, j in sorted(_store(call, "pipeline_jobs").items())
                             if n.startswith(call.parent + "/") and all(j.labels.get(k) == v for k, v in wanted.items())]}


def advance(state: Any, name: str, job_state: str, *, tasks: dict[str, str] | None = None, error: str = "") -> None:
    """Move a job on as Vertex would: ``job_state`` a JobState/PipelineState name's suffix (``RUNNING``,
    ``SUCCEEDED``, ``FAILED``); ``tasks``: a pipeline's task name → PipelineTaskDetail state name."""
    v1 = _v1()
    with state.lock:
        stamp = state.timestamp()
        if "/customJobs/" in name:
            job = state.extra["custom_jobs"][name]
            job.state = getattr(v1.JobState, f"JOB_STATE_{job_state}")
        else:
            job = state.extra["pipeline_jobs"][name]
            job.state = getattr(v1.PipelineState, f"PIPELINE_STATE_{job_state}")
            details = [v1.PipelineTaskDetail(task_name=t, state=getattr(v1.PipelineTaskDetail.State, s),
                                             start_time=stamp, **({"end_time": stamp} if s in ("SUCCEEDED", "FAILED",
                                                                                             "SKIPPED") else {}),
                                             **({"error": {"code": 13, "message": error}} if s == "FAILED" else {}))
                       for t, s in (tasks or {}).items()]
            job.job_detail = v1.PipelineJobDetail(task_details=details)
        if not job.start_time:
            job.start_time = stamp
        if job_state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            job.end_time = stamp
        if error:
            job.error = {"code": 13, "message": error}


def _schedule_checked(call: Call, schedule: Any) -> None:
    """https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.schedules"""
    invalid(None if schedule.display_name else "Field schedule.displayName is required")
    cron = schedule.cron
    fields = re.sub(r"^(TZ|CRON_TZ)=\S+\s+", "", cron).split()
    invalid(None if len(fields) == 5 else f"schedule.cron {cron!r} is not a 5-field cron expression (optionally "
            "prefixed with TZ=...)")
    request = schedule.create_pipeline_job_request
    invalid(None if request.parent == call.parent else "createPipelineJobRequest.parent must be the schedule's parent")
    problems = pipeline_job_problems(request.pipeline_job, "")
    if problems:
        raise ApiError("INVALID_ARGUMENT", "; ".join(problems))


def create_schedule(call: Call) -> Any:
    v1 = _v1()
    schedule = call.parse(v1.Schedule)
    call.require("aiplatform.schedules.create", call.parent)
    _schedule_checked(call, schedule)
    name = f"{call.parent}/schedules/{call.state.new_id()}"
    schedule.name = name
    schedule.state = v1.Schedule.State.ACTIVE
    schedule.create_time = schedule.update_time = call.state.timestamp()
    _store(call, "schedules")[name] = schedule
    return to_json(schedule)


def list_schedules(call: Call) -> Any:
    call.require("aiplatform.schedules.list", call.parent)
    text = call.arg("filter")
    match = re.fullmatch(r'\s*display_name\s*=\s*"([^"]*)"\s*', text) if text else None
    if text and not match:
        raise ApiError("INVALID_ARGUMENT", f"Unsupported filter: {text!r}")
    return {"schedules": [to_json(s) for n, s in sorted(_store(call, "schedules").items())
                          if n.startswith(call.parent + "/") and (not match or s.display_name == match.group(1))]}


def update_schedule(call: Call) -> Any:
    v1 = _v1()
    name = f"{call.parent}/schedules/{call.params['schedule']}"
    call.require("aiplatform.schedules.update", name)
    current = _store(call, "schedules").get(name)
    if current is None:
        raise ApiError("NOT_FOUND", f"The Schedule does not exist: {name}")
    patch = call.parse(v1.Schedule)
    mask = [p for p in call.arg("updateMask").split(",") if p]
    invalid(None if mask else "updateMask is required")
    merged = v1.Schedule(current)
    for path in mask:
        field = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), path)
        setattr(merged, field, getattr(patch, field))
    _schedule_checked(call, merged)
    merged.update_time = call.state.timestamp()
    _store(call, "schedules")[name] = merged
    return to_json(merged)


def monitoring_job_problems(call: Call, job: Any, *, name: str = "") -> list[str]:
    """https://cloud.google.com/vertex-ai/docs/model-monitoring/using-model-monitoring: one job per endpoint,
    objectives only for models deployed on it, an interval of at least an hour, a sample rate in (0, 1]."""
    problems = []
    endpoint = call.state.endpoints.get(job.endpoint)
    if endpoint is None:
        return [f"endpoint {job.endpoint!r} does not exist"]
    deployed = {d.id for d in endpoint.deployed_models}
    configs = list(job.model_deployment_monitoring_objective_configs)
    if not configs:
        problems.append("modelDeploymentMonitoringObjectiveConfigs must not be empty")
    for c in configs:
        if c.deployed_model_id not in deployed:
            problems.append(f"deployed model {c.deployed_model_id} is not deployed on {job.endpoint}")
    interval = job.model_deployment_monitoring_schedule_config.monitor_interval
    if interval is None or interval.total_seconds() < 3600:
        problems.append("modelDeploymentMonitoringScheduleConfig.monitorInterval must be at least 1 hour")
    rate = job.logging_sampling_strategy.random_sample_config.sample_rate
    if not 0 < rate <= 1:
        problems.append("loggingSamplingStrategy.randomSampleConfig.sampleRate must be in (0, 1]")
    others = [n for n, j in _store(call, "monitoring_jobs").items() if j.endpoint == job.endpoint and n != name]
    if others:
        problems.append(f"endpoint {job.endpoint} already has a model monitoring job ({others[0]})")
    return problems


def create_monitoring_job(call: Call) -> Any:
    v1 = _v1()
    job = call.parse(v1.ModelDeploymentMonitoringJob)
    call.require("aiplatform.modelDeploymentMonitoringJobs.create", call.parent)
    invalid(None if job.display_name else "Field modelDeploymentMonitoringJob.displayName is required")
    problems = monitoring_job_problems(call, job)
    if problems:
        raise ApiError("INVALID_ARGUMENT", "; ".join(problems))
    name = f"{call.parent}/modelDeploymentMonitoringJobs/{call.state.new_id()}"
    job.name = name
    job.state = v1.JobState.JOB_STATE_PENDING
    job.schedule_state = v1.ModelDeploymentMonitoringJob.MonitoringScheduleState.PENDING
    job.create_time = job.update_time = call.state.timestamp()
    _store(call, "monitoring_jobs")[name] = job
    return to_json(job)


def list_monitoring_jobs(call: Call) -> Any:
    call.require("aiplatform.modelDeploymentMonitoringJobs.list", call.parent)
    wanted = _label_filter(call.arg("filter"))
    return {"modelDeploymentMonitoringJobs": [
        to_json(j) for n, j in sorted(_store(call, "monitoring_jobs").items())
        if n.startswith(call.parent + "/") and all(j.labels.get(k) == v for k, v in wanted.items())]}


def update_monitoring_job(call: Call) -> Any:
    v1 = _v1()
    name = f"{call.parent}/modelDeploymentMonitoringJobs/{call.params['job']}"
    call.require("aiplatform.modelDeploymentMonitoringJobs.update", name)
    current = _store(call, "monitoring_jobs").get(name)
    if current is None:
        raise ApiError("NOT_FOUND", f"The ModelDeploymentMonitoringJob does not exist: {name}")
    patch = call.parse(v1.ModelDeploymentMonitoringJob)
    mask = [p for p in call.arg("updateMask").split(",") if p]
    invalid(None if mask else "updateMask is required")
    merged = v1.ModelDeploymentMonitoringJob(current)
    for path in mask:
        field = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), path)
        setattr(merged, field, getattr(patch, field))
    problems = monitoring_job_problems(call, merged, name=name)
    if problems:
        raise ApiError("INVALID_ARGUMENT", "; ".join(problems))
    merged.update_time = call.state.timestamp()
    _store(call, "monitoring_jobs")[name] = merged
    return call.state.operation(name, merged, "ModelDeploymentMonitoringJob")


ROUTES: list[Route] = [
    ("POST", LOC + "/modelDeploymentMonitoringJobs", create_monitoring_job),
    ("GET", LOC + "/modelDeploymentMonitoringJobs", list_monitoring_jobs),
    ("PATCH", LOC + "/modelDeploymentMonitoringJobs/{job}", update_monitoring_job),
    ("POST", LOC + "/schedules", create_schedule),
    ("GET", LOC + "/schedules", list_schedules),
    ("PATCH", LOC + "/schedules/{schedule}", update_schedule),
    ("POST", LOC + "/customJobs", create_custom_job),
    ("GET", LOC + "/customJobs", list_custom_jobs),
    ("GET", LOC + "/customJobs/{job}", get_custom_job),
    ("POST", LOC + "/customJobs/{job}:cancel", cancel_custom_job),
    ("POST", LOC + "/pipelineJobs", create_pipeline_job),
    ("GET", LOC + "/pipelineJobs", list_pipeline_jobs),
    ("GET", LOC + "/pipelineJobs/{job}", get_pipeline_job),
]
