"""``Capability.PIPELINES`` on GCP: Vertex AI CustomJob for ``mlplat train``, Vertex AI Pipelines for ``mlplat pipeline``.

* **Training job** = ``CreateCustomJob``: one worker pool on the stack's machine type running the platform's
  runtime image through its entry (:mod:`.job_entry`), which unpacks the project from the source archive
  (uploaded once to ``gs://<bucket>/source/<commit>/<sha256>.tar.gz``) and runs the command after ``--``.
  Data URIs (``gs://`` only) arrive as ``MLPLAT_DATA_<NAME>``; the job carries the stack's labels (and
  ``mlplat-job``: the job's name, which is its id here, since Vertex numbers custom jobs itself); spot runs
  use ``Scheduling.strategy = SPOT``. Status = ``GetCustomJob``; stop = ``CancelCustomJob``; the list is
  ``ListCustomJobs`` filtered on the stack's labels. Logs live in Cloud Logging, which this runtime does
  not read: ``training_logs`` says where to find them.
* **Pipeline** = the KFP v2 IR :mod:`..pipeline_compiler` builds (checked by ``spec_problems`` and
  ``command_problems`` before anything is sent), submitted as a ``PipelineJob`` with the source archive's
  URI as the ``source_uri`` parameter. ``resume`` submits the run's spec and parameters again: tasks run
  with caching on, so the completed ones are reused (Vertex reports them ``SKIPPED``, here ``CACHED``).
  Status = ``GetPipelineJob`` with its task details.
* **Schedule** = a Vertex AI ``Schedule`` whose ``createPipelineJobRequest`` is that job, on ``TZ=UTC <cron>``,
  one run at a time; scheduling a pipeline again updates its schedule.

Every call goes through the session (quota retries, permissions named).
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlplat.contracts.pipelines import (
    JobStatus,
    PipelineBackend,
    PipelineDefinition,
    PipelineRunStatus,
    ScheduleInfo,
    SourceBundle,
    StepRun,
    TrainingJobSpec,
)
from mlplat.errors import NotFound
from mlplat.pipelines import commands
from mlplat_providers.gcp import pipeline_compiler as pc

JOB_LABEL = "mlplat-job"
PIPELINE_LABEL = "mlplat-pipeline"
# JobState / PipelineState / PipelineTaskDetail.State as the contract's states.
# https://cloud.google.com/vertex-ai/docs/reference/rest/v1/JobState
_JOB_STATE = {"JOB_STATE_QUEUED": "PENDING", "JOB_STATE_PENDING": "PENDING", "JOB_STATE_RUNNING": "RUNNING",
              "JOB_STATE_SUCCEEDED": "SUCCEEDED", "JOB_STATE_FAILED": "FAILED", "JOB_STATE_CANCELLING": "RUNNING",
              "JOB_STATE_CANCELLED": "STOPPED", "JOB_STATE_PAUSED": "PENDING", "JOB_STATE_EXPIRED": "FAILED",
              "JOB_STATE_UPDATING": "RUNNING", "JOB_STATE_PARTIALLY_SUCCEEDED": "FAILED"}
_PIPELINE_STATE = {"PIPELINE_STATE_QUEUED": "PENDING", "PIPELINE_STATE_PENDING": "PENDING",
                   "PIPELINE_STATE_RUNNING": "RUNNING", "PIPELINE_STATE_SUCCEEDED": "SUCCEEDED",
                   "PIPELINE_STATE_FAILED": "FAILED", "PIPELINE_STATE_CANCELLING": "RUNNING",
                   "PIPELINE_STATE_CANCELLED": "STOPPED", "PIPELINE_STATE_PAUSED": "PENDING"}
_TASK_STATE = {"PENDING": "PENDING", "RUNNING": "RUNNING", "SUCCEEDED": "SUCCEEDED", "CANCEL_PENDING": "RUNNING",
               "CANCELLING": "RUNNING", "CANCELLED": "STOPPED", "FAILED": "FAILED", "SKIPPED": "CACHED",
               "NOT_TRIGGERED": "SKIPPED"}


def env_name(name: str) -> str:
    return "MLPLAT_DATA_" + re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")


def _seconds(stamp: Any) -> float | None:
    return stamp.timestamp() if stamp else None


def _state(value: Any, table: dict[str, str]) -> str:
    return table.get(getattr(value, "name", str(value)), "PENDING")


class GcpPipelines(PipelineBackend):
    def __init__(self, spec: Any, ctx: Any, session: Any = None):
        self.spec = spec
        self.ctx = ctx
        if session is None:
            from mlplat_providers.gcp.runtime.session import GcpSession

            session = GcpSession(spec)
        self.gcp = session

    # --- shared ---------------------------------------------------------------------------------------

    @property
    def jobs(self) -> Any:
        return self.gcp.vertex("job")

    @property
    def pipelines(self) -> Any:
        return self.gcp.vertex("pipeline")

    def image(self) -> str:
        import os

        plan = self.gcp.plan
        return os.environ.get("MLPLAT_GCP_TRAINING_IMAGE") or \
            f"{plan.region}-docker.pkg.dev/{plan.project}/{plan.docker_repository}/train:latest"

    def control_plane_url(self) -> str:
        return commands.control_plane_url(self.spec, "a Vertex AI job")

    def job_environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """What every job and pipeline task sees: the stack, its control plane, and ``extra``."""
        out = {"MLPLAT_STACK": self.spec.name, "MLPLAT_CONTROL_PLANE_URL": self.control_plane_url()}
        if self.spec.control_plane.tracking:
            out["MLFLOW_TRACKING_URI"] = str(self.spec.control_plane.tracking)
        return {**out, **(extra or {})}

    def labels(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        from mlplat_providers.gcp.labels import normalise_key, normalise_value

        out = dict(self.gcp.labels)
        for key, value in (extra or {}).items():
            out.setdefault(normalise_key(key), normalise_value(value, key=key))
        return out

    def upload_source(self, source: SourceBundle) -> str:
        """The archive's ``gs://`` URI, uploading it once per content digest."""
        data = Path(source.archive).read_bytes()
        key = f"source/{source.commit}/{hashlib.sha256(data).hexdigest()}.tar.gz"
        bucket = self.gcp.plan.bucket
        blob = self.gcp.storage().bucket(bucket).blob(key)
        try:
            self.gcp.call(blob.reload, method="storage.objects.get", not_found=True, what=f"gs://{bucket}/{key}")
        except NotFound:
            self.gcp.call(blob.upload_from_string, data, content_type="application/gzip",
                          method="storage.objects.create", what=f"uploading the project to gs://{bucket}/{key}")
        return f"gs://{bucket}/{key}"

    # --- training jobs --------------------------------------------------------------------------------

    def submit_training(self, job: TrainingJobSpec) -> JobStatus:
        from google.cloud import aiplatform_v1 as v1

        base = self.job_environment()  # refused before anything is sent when the stack has no control plane
        bad = sorted(f"{k}={v}" for k, v in job.data.items() if not str(v).startswith("gs://"))
        if bad:
            raise pc.PipelineError(f"training data must be in Cloud Storage (gs://...): {', '.join(bad)}",
                                   hint="copy the data to the stack's bucket and pass its gs:// URI")
        source_uri = self.upload_source(job.source)
        env = {**base, **job.environment, **{env_name(k): v for k, v in job.data.items()},
               "MLPLAT_TRAINING_JOB": job.name}
        machine = job.instance_type or self.gcp.plan.machine_type
        spec = v1.CustomJobSpec(
            worker_pool_specs=[v1.WorkerPoolSpec(
                machine_spec=v1.MachineSpec(machine_type=machine), replica_count=1,
                container_spec=v1.ContainerSpec(image_uri=self.image(), command=list(pc.ENTRY),
                                                args=["--source", source_uri, "--", *job.command],
                                                env=[v1.EnvVar(name=k, value=v) for k, v in sorted(env.items())]))],
            scheduling=v1.Scheduling(timeout=f"{int(job.max_runtime_seconds)}s",
                                     strategy=v1.Scheduling.Strategy.SPOT if job.spot else None),
            base_output_directory=v1.GcsDestination(output_uri_prefix=f"gs://{self.gcp.plan.bucket}/jobs/{job.name}"))
        custom = v1.CustomJob(display_name=job.name[:128], job_spec=spec,
                              labels={**self.labels(job.tags), JOB_LABEL: pc.kfp_name(job.name)})
        made = self.gcp.call(self.jobs.create_custom_job, parent=self.gcp.location, custom_job=custom,
                             method="create_custom_job", what=f"submitting training job {job.name}")
        return self._job_status(made, job.name)

    def _job_status(self, job: Any, name: str) -> JobStatus:
        spec = job.job_spec.worker_pool_specs[0] if job.job_spec.worker_pool_specs else None
        return JobStatus(job_id=name, state=_state(job.state, _JOB_STATE),  # type: ignore[arg-type]
                         started=_seconds(job.start_time), ended=_seconds(job.end_time),
                         instance_type=spec.machine_spec.machine_type if spec else None,
                         message=job.error.message if job.error else "")

    def _find_job(self, job_id: str) -> Any:
        found = [j for j in self._custom_jobs() if j.display_name == job_id]
        if not found:
            raise NotFound(f"training job {job_id!r} does not exist on this stack",
                           hint="list the stack's jobs with `mlplat train list`")
        return found[0]

    def _custom_jobs(self) -> list[Any]:
        pager = self.gcp.call(self.jobs.list_custom_jobs, request={
            "parent": self.gcp.location, "filter": f'labels.mlplat-managed="true" AND labels.team="{self.gcp.plan.team_label}"'},
            method="list_custom_jobs", what="listing the stack's training jobs")
        return sorted(pager, key=lambda j: j.create_time.timestamp() if j.create_time else 0.0, reverse=True)

    def training_status(self, job_id: str) -> JobStatus:
        return self._job_status(self._find_job(job_id), job_id)

    def training_logs(self, job_id: str, *, follow: bool = False) -> Iterator[str]:
        job = self._find_job(job_id)
        self._unsupported("training logs", hint="Vertex AI writes them to Cloud Logging: open "
                          f"resource.type=\"ml_job\" resource.labels.job_id=\"{job.name.rsplit('/', 1)[-1]}\" "
                          "in the Logs Explorer")

    def stop_training(self, job_id: str) -> JobStatus:
        job = self._find_job(job_id)
        if _state(job.state, _JOB_STATE) in ("PENDING", "RUNNING"):
            self.gcp.call(self.jobs.cancel_custom_job, name=job.name, method="cancel_custom_job",
                          what=f"stopping training job {job_id}")
            job = self._find_job(job_id)
        return self._job_status(job, job_id)

    def training_jobs(self) -> list[JobStatus]:
        return [self._job_status(j, j.display_name) for j in self._custom_jobs()]

    # --- pipelines ------------------------------------------------------------------------------------

    def compile_pipeline(self, pipeline: PipelineDefinition) -> dict[str, Any]:
        pipeline = dataclasses.replace(pipeline, environment=self.job_environment(dict(pipeline.environment)))
        spec: dict[str, Any] = pc.compile_spec(pipeline, pc.CompileTarget(image=self.image(), stack=self.spec.name,
                                                          machine_type=self.gcp.plan.machine_type))
        problems = pc.spec_problems(spec) + pc.command_problems(spec)
        if problems:
            raise pc.PipelineError(f"pipeline {pipeline.name!r} does not compile to a pipeline Vertex AI runs: "
                                   + "; ".join(problems), hint="fix the steps named above")
        return spec

    def run_pipeline(self, pipeline: PipelineDefinition, *, resume: str | None = None) -> PipelineRunStatus:
        from google.cloud import aiplatform_v1 as v1

        spec = self.compile_pipeline(pipeline)
        if resume:
            previous = self._get_run(resume)
            values = dict(previous.runtime_config.parameter_values)
        else:
            if pipeline.source is None:
                raise pc.PipelineError(f"pipeline {pipeline.name!r} has no source bundle to run",
                                       hint="run it with `mlplat pipeline run`, which packages the project")
            values = pc.parameter_values(spec, self.upload_source(pipeline.source), None)
        run_id = f"{pc.kfp_name(pipeline.name)[:100]}-{uuid.uuid4().hex[:8]}"
        job = v1.PipelineJob(display_name=pipeline.name[:128], pipeline_spec=spec,
                             labels={**self.labels(), PIPELINE_LABEL: pc.kfp_name(pipeline.name)},
                             runtime_config=v1.PipelineJob.RuntimeConfig(
                                 gcs_output_directory=f"gs://{self.gcp.plan.bucket}/pipelines/{run_id}",
                                 parameter_values=values))
        made = self.gcp.call(self.pipelines.create_pipeline_job, parent=self.gcp.location, pipeline_job=job,
                             pipeline_job_id=run_id, method="create_pipeline_job",
                             what=f"starting pipeline {pipeline.name}")
        return self._run_status(made, pipeline.name)

    def schedule_pipeline(self, pipeline: PipelineDefinition, cron: str) -> ScheduleInfo:
        """A Vertex AI ``Schedule`` (``TZ=UTC <cron>``, one run at a time) creating this pipeline's job with the
        code as it is now; an existing schedule of the pipeline is updated in place."""
        from google.cloud import aiplatform_v1 as v1

        if pipeline.source is None:  # a schedule runs the code it was scheduled with, packaged at its commit
            from mlplat.services.pipelines import with_source

            pipeline = with_source(self.spec, pipeline, allow_dirty=False)
        if pipeline.source is None:
            raise pc.PipelineError(f"pipeline {pipeline.name!r} has no source bundle to schedule",
                                   hint="keep the project in git: a schedule runs it at its commit")
        spec = self.compile_pipeline(pipeline)
        values = pc.parameter_values(spec, self.upload_source(pipeline.source), None)
        job = v1.PipelineJob(display_name=pipeline.name[:128], pipeline_spec=spec,
                             labels={**self.labels(), PIPELINE_LABEL: pc.kfp_name(pipeline.name)},
                             runtime_config=v1.PipelineJob.RuntimeConfig(
                                 gcs_output_directory=f"gs://{self.gcp.plan.bucket}/pipelines/scheduled",
                                 parameter_values=values))
        display = f"mlplat-{pc.kfp_name(pipeline.name)}"[:128]
        schedule = v1.Schedule(display_name=display, cron=f"TZ=UTC {cron}", max_concurrent_run_count=1,
                               create_pipeline_job_request=v1.CreatePipelineJobRequest(
                                   parent=self.gcp.location, pipeline_job=job))
        client = self.gcp.vertex("schedule")
        existing = [s for s in self.gcp.call(client.list_schedules, request={
            "parent": self.gcp.location, "filter": f'display_name="{display}"'}, method="list_schedules",
            what="listing the stack's schedules") if s.display_name == display]
        if existing:
            schedule.name = existing[0].name
            made = self.gcp.call(client.update_schedule, schedule=schedule,
                                 update_mask={"paths": ["cron", "create_pipeline_job_request", "max_concurrent_run_count"]},
                                 method="update_schedule", what=f"rescheduling pipeline {pipeline.name}")
        else:
            made = self.gcp.call(client.create_schedule, parent=self.gcp.location, schedule=schedule,
                                 method="create_schedule", what=f"scheduling pipeline {pipeline.name}")
        return ScheduleInfo(pipeline=pipeline.name, cron=cron, target=made.name,
                            next_run=_seconds(made.next_run_time))

    def _get_run(self, run_id: str) -> Any:
        try:
            return self.gcp.call(self.pipelines.get_pipeline_job, name=f"{self.gcp.location}/pipelineJobs/{run_id}",
                                 method="get_pipeline_job", not_found=True, what=f"pipeline run {run_id}")
        except NotFound:
            raise NotFound(f"pipeline run {run_id!r} does not exist on this stack",
                           hint="list the runs with `mlplat pipeline runs`") from None

    def _run_status(self, job: Any, pipeline: str) -> PipelineRunStatus:
        steps = []
        for task in job.job_detail.task_details if job.job_detail else []:
            if task.task_name in ("", pc.kfp_name(job.display_name)) or not task.task_name:
                continue
            steps.append(StepRun(name=task.task_name, state=_state(task.state, _TASK_STATE),  # type: ignore[arg-type]
                                 attempts=max(1, len(task.pipeline_task_status)) if task.start_time else 0,
                                 started=_seconds(task.start_time), ended=_seconds(task.end_time),
                                 message=task.error.message if task.error else ""))
        state = _state(job.state, _PIPELINE_STATE)
        failed = [s.name for s in steps if s.state == "FAILED"]
        message = job.error.message if job.error else ""
        if state == "FAILED" and failed:
            message = f"step {failed[0]} failed" + (f": {message}" if message else "")
        return PipelineRunStatus(run_id=job.name.rsplit("/", 1)[-1], pipeline=pipeline,
                                 state=state, steps=tuple(steps),  # type: ignore[arg-type]
                                 started=_seconds(job.start_time), ended=_seconds(job.end_time), message=message)

    def pipeline_status(self, run_id: str) -> PipelineRunStatus:
        job = self._get_run(run_id)
        return self._run_status(job, job.display_name)

    def pipeline_runs(self, pipeline: str | None = None) -> list[PipelineRunStatus]:
        query = f'labels.mlplat-managed="true" AND labels.team="{self.gcp.plan.team_label}"'
        if pipeline:
            query += f' AND labels.{PIPELINE_LABEL}="{pc.kfp_name(pipeline)}"'
        pager = self.gcp.call(self.pipelines.list_pipeline_jobs, request={"parent": self.gcp.location, "filter": query},
                              method="list_pipeline_jobs", what="listing the stack's pipeline runs")
        jobs = sorted(pager, key=lambda j: j.create_time.timestamp() if j.create_time else 0.0, reverse=True)
        return [self._run_status(j, j.display_name) for j in jobs]
