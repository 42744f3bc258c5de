"""``Capability.PIPELINES`` on AWS: SageMaker training jobs, SageMaker Pipelines, EventBridge Scheduler.

* **Training job** = ``CreateTrainingJob`` on the platform's runtime image (``mlplat/train`` in the stack
  account's ECR, or ``MLPLAT_AWS_TRAINING_IMAGE``), whose entry (:mod:`.job_entry`, which writes the
  contract down) unpacks the project from the ``code`` channel and runs the command from the
  ``mlplat_command`` hyperparameter. The code is the :class:`SourceBundle` archive uploaded once to
  ``s3://<bucket>/source/<commit>/<sha256>.tar.gz``; each data URI is an input channel (S3 only, checked
  readable before anything is submitted); spot training sets ``MaxWaitTimeInSeconds`` at or above the
  runtime and checkpoints to S3. The job runs as the platform role, carries the stack's cost tags, and
  reaches the ledger through the stack's control plane (``MLPLAT_CONTROL_PLANE_URL``).
  Status = ``DescribeTrainingJob``; logs = CloudWatch Logs ``/aws/sagemaker/TrainingJobs``, streams
  ``<job>/algo-1-...``; stop = ``StopTrainingJob``.
* **Pipeline** = the definition :mod:`..pipeline_compiler` builds, ``CreatePipeline``/``UpdatePipeline``
  (the runtime owns the pipelines it runs; the program owns each model's default training and deploy
  pipelines, and the runtime refuses those names), then ``StartPipelineExecution`` with the code's S3 URI
  as ``SourceUri``. ``resume`` is ``RetryPipelineExecution`` (SageMaker reruns from the failed steps).
  Status = ``DescribePipelineExecution`` + ``ListPipelineExecutionSteps``.
* **Schedule** = an EventBridge Scheduler schedule (``cron(...)``, UTC) whose universal target calls
  SageMaker's ``StartPipelineExecution`` as the stack's scheduler role.

Every request is checked against SageMaker's documented rules (``service_rules``) before it is sent.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
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
from mlplat_providers.aws import pipeline_compiler as pc
from mlplat_providers.aws import service_rules as rules
from mlplat_providers.aws.plan import StackPlan
from mlplat_providers.aws.runtime.session import AwsSession

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
CURRENT_SOURCE = "source/current.tar.gz"  # plan.current_source_uri
VOLUME_GB = 30
NOT_FOUND = ("Could not find", "does not exist", "not found", "ResourceNotFound")
UNIVERSAL_START = "arn:aws:scheduler:::aws-sdk:sagemaker:startPipelineExecution"

# DescribeTrainingJob's status (and secondary status) as the contract's states.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeTrainingJob.html
_PENDING_SECONDARY = {"Starting", "Pending", "LaunchingMLInstances", "PreparingTrainingStack", "Downloading",
                      "DownloadingTrainingImage", "Restarting"}
_OVERRUN = {"MaxRuntimeExceeded": "the job ran longer than its max runtime",
            "MaxWaitTimeExceeded": "spot capacity did not arrive within the max wait time"}
# DescribePipelineExecution / ListPipelineExecutionSteps.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribePipelineExecution.html
_EXECUTION_STATE = {"Executing": "RUNNING", "Stopping": "RUNNING", "Stopped": "STOPPED", "Failed": "FAILED",
                    "Succeeded": "SUCCEEDED", "CompletedWithFailures": "FAILED"}
_STEP_STATE = {"Starting": "PENDING", "Executing": "RUNNING", "Stopping": "RUNNING", "Stopped": "STOPPED",
               "Failed": "FAILED", "Succeeded": "SUCCEEDED"}


def job_state(described: dict[str, Any]) -> tuple[str, str]:
    """``(state, message)`` of a DescribeTrainingJob answer."""
    status, secondary = described.get("TrainingJobStatus"), described.get("SecondaryStatus", "")
    reason = described.get("FailureReason") or ""
    if status == "InProgress":
        return ("PENDING" if secondary in _PENDING_SECONDARY else "RUNNING"), ""
    if status == "Stopping":
        return "RUNNING", "stopping"
    if status == "Completed":
        return "SUCCEEDED", ""
    if status == "Stopped":
        if secondary in _OVERRUN:
            return "FAILED", _OVERRUN[secondary]
        return "STOPPED", reason or "stopped"
    return "FAILED", reason or f"SageMaker reports {status}"


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def _json_dict(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def source_key(source: SourceBundle) -> str:
    """Where a project archive lives in the stack's bucket: keyed by commit, and by content (a dirty tree's
    archive differs from the clean commit's)."""
    digest = hashlib.sha256(Path(source.archive).read_bytes()).hexdigest()
    return f"source/{source.commit}/{digest[:16]}{'-dirty' if source.dirty else ''}.tar.gz"


def job_tags(plan: StackPlan, extra: dict[str, str]) -> dict[str, str]:
    """The tags a job is created with: the stack's cost tags, and of the job's own only those whose keys the
    platform role may send. Its create permission is conditioned on aws:TagKeys (plan.platform_role_policy):
    a request carrying another key is denied, so the run's other tags travel in its environment instead."""
    allowed = {*plan.tags, "risk-tier"}
    return {**{k: v for k, v in extra.items() if k in allowed}, **plan.tags}


def env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", name.upper())


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class AwsPipelines(PipelineBackend):
    """Training jobs and pipelines of one AWS stack."""

    def __init__(self, spec: Any, ctx: Any, session: AwsSession | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec = spec
        self.ctx = ctx
        self.aws = session or AwsSession(spec)
        self.sleep = sleep

    # --- names and settings ---------------------------------------------------------------------

    @property
    def plan(self) -> StackPlan:
        return self.aws.plan

    def image(self) -> str:
        from mlplat_providers.aws.plan import training_image

        return os.environ.get("MLPLAT_AWS_TRAINING_IMAGE") or training_image(self.aws.region, self.aws.account)

    def tracking_uri(self) -> str:
        return self.spec.control_plane.tracking or (
            f"arn:aws:sagemaker:{self.aws.region}:{self.aws.account}:mlflow-tracking-server/{self.plan.tracking_server}")

    def control_plane_url(self) -> str:
        return commands.control_plane_url(self.spec, "a SageMaker job")

    def job_environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"MLPLAT_STACK": self.spec.name, "MLPLAT_CONTROL_PLANE_URL": self.control_plane_url(),
                "MLFLOW_TRACKING_URI": self.tracking_uri(), **(extra or {})}

    def scheduler_role_arn(self) -> str:
        from mlplat_providers.aws.plan import scheduler_role_name

        return f"arn:aws:iam::{self.aws.account}:role/{scheduler_role_name(self.plan)}"

    def sagemaker_name(self, pipeline: str) -> str:
        name: str = pc.pipeline_name(self.plan.prefix, pipeline)
        return name

    # --- code ----------------------------------------------------------------------------------

    def upload_source(self, source: SourceBundle) -> str:
        """The archive's S3 URI, uploading it once (content-keyed under its commit). A clean commit's archive
        also becomes ``source/current.tar.gz``, the code the program's pipelines run by default."""
        key = source_key(source)
        try:
            self.aws.call("s3", "head_object", Bucket=self.aws.bucket, Key=key, not_found=("404", "Not Found"))
        except NotFound:
            with open(source.archive, "rb") as body:
                self.aws.call("s3", "put_object", Bucket=self.aws.bucket, Key=key, Body=body,
                              Metadata={"mlplat-commit": source.commit, "mlplat-dirty": str(source.dirty).lower()},
                              what=f"uploading the project at {source.commit[:12]}")
        if not source.dirty:
            self.aws.call("s3", "copy_object", Bucket=self.aws.bucket, Key=CURRENT_SOURCE,
                          CopySource=f"{self.aws.bucket}/{key}", what="pointing the pipelines at the code")
        return f"s3://{self.aws.bucket}/{key}"

    def check_data(self, data: dict[str, str]) -> None:
        """Every data URI is an S3 location with something in it (read before anything is submitted)."""
        for name, uri in data.items():
            if not uri.startswith("s3://"):
                raise pc.PipelineError(f"data channel {name!r} is {uri!r}; a SageMaker job reads its data from S3",
                                       hint="upload it (aws s3 cp) and pass --data name=s3://bucket/key")
            bucket, key = split_s3(uri)
            found = self.aws.call("s3", "list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1,
                                  not_found=("NoSuchBucket",), what=f"reading data channel {name}")
            if not found.get("KeyCount"):
                raise pc.PipelineError(f"data channel {name!r}: nothing can be read at {uri}",
                                       hint="check the URI, and that the platform role may read it")

    # --- training jobs -------------------------------------------------------------------------

    def training_request(self, job: TrainingJobSpec, source_uri: str) -> dict[str, Any]:
        """The ``CreateTrainingJob`` request of ``job`` (pure, once the code is in S3)."""
        channels = [{"ChannelName": pc.CODE, "InputMode": "File", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": source_uri, "S3DataDistributionType": "FullyReplicated"}}}]
        channels += [{"ChannelName": name, "InputMode": "File", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}
            for name, uri in sorted(job.data.items())]
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": int(job.max_runtime_seconds)}
        request: dict[str, Any] = {
            "TrainingJobName": job.name,
            "AlgorithmSpecification": {"TrainingImage": self.image(), "TrainingInputMode": "File"},
            "HyperParameters": pc.command_hyperparameters(job.command),
            "RoleArn": self.aws.role_arn,
            "InputDataConfig": channels,
            "OutputDataConfig": {"S3OutputPath": f"s3://{self.aws.bucket}/training/{job.name}"},
            "ResourceConfig": {"InstanceType": job.instance_type or pc.DEFAULT_INSTANCE, "InstanceCount": 1,
                               "VolumeSizeInGB": VOLUME_GB},
            "StoppingCondition": stopping,
            "Environment": self.job_environment({"MLPLAT_RUN_NAME": job.name, "MLPLAT_COMMIT": job.source.commit,
                                                 **{f"MLPLAT_DATA_URI_{env_name(name)}": uri
                                                    for name, uri in job.data.items()},
                                                 **job.environment}),
            "Tags": [{"Key": k, "Value": v} for k, v in job_tags(self.plan, job.tags).items()],
        }
        if job.spot:
            # spot capacity may take a while: wait up to the runtime again (at most a day) on top of it
            stopping["MaxWaitTimeInSeconds"] = int(job.max_runtime_seconds) + min(int(job.max_runtime_seconds), 86_400)
            request["EnableManagedSpotTraining"] = True
            request["CheckpointConfig"] = {"S3Uri": f"s3://{self.aws.bucket}/training/{job.name}/checkpoints"}
        return request

    def _check_job(self, job: TrainingJobSpec) -> None:
        problem = rules.training_job_name_problem(job.name)
        if problem:
            raise pc.PipelineError(problem, hint="name the job with letters, digits and hyphens")
        if not job.command:
            raise pc.PipelineError("the training job has no command", hint="mlplat train -- python train.py")
        if job.gpus and not job.instance_type:
            raise pc.PipelineError(f"{job.gpus} GPU(s) asked for without an instance type: on SageMaker the "
                                   "instance type decides the GPUs", hint="pass --instance-type, e.g. ml.g5.xlarge")

    def submit_training(self, job: TrainingJobSpec) -> JobStatus:
        self._check_job(job)
        self.check_data(job.data)
        request = self.training_request(job, f"s3://{self.aws.bucket}/{source_key(job.source)}")
        problems = rules.training_job_problems(request)
        if problems:
            raise pc.PipelineError(f"SageMaker would refuse training job {job.name}: " + "; ".join(problems))
        self.upload_source(job.source)
        self.aws.call("sagemaker", "create_training_job", what=f"starting training job {job.name}", **request)
        return JobStatus(job.name, "PENDING", instance_type=request["ResourceConfig"]["InstanceType"])

    def _describe_job(self, job_id: str) -> dict[str, Any]:
        described: dict[str, Any] = self.aws.call("sagemaker", "describe_training_job", TrainingJobName=job_id,
                                                  not_found=NOT_FOUND, what=f"training job {job_id}")
        return described

    def training_status(self, job_id: str) -> JobStatus:
        described = self._describe_job(job_id)
        state, message = job_state(described)
        return JobStatus(job_id, state, started=_ts(described.get("TrainingStartTime")),  # type: ignore[arg-type]
                         ended=_ts(described.get("TrainingEndTime")), message=message,
                         instance_type=(described.get("ResourceConfig") or {}).get("InstanceType"))

    def _log_lines(self, job_id: str, tokens: dict[str, str | None]) -> Iterator[str]:
        try:
            streams = self.aws.call("logs", "describe_log_streams", logGroupName=LOG_GROUP,
                                    logStreamNamePrefix=f"{job_id}/", not_found=("ResourceNotFoundException",),
                                    what=f"logs of training job {job_id}")["logStreams"]
        except NotFound:
            return  # the job has not logged yet: SageMaker creates the group on first output
        for stream in sorted(s["logStreamName"] for s in streams):
            while True:
                params: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
                if tokens.get(stream):
                    params["nextToken"] = tokens[stream]
                page = self.aws.call("logs", "get_log_events", **params)
                for event in page.get("events", []):
                    yield event["message"]
                if page.get("nextForwardToken") in (None, tokens.get(stream)):
                    break
                tokens[stream] = page["nextForwardToken"]

    def training_logs(self, job_id: str, *, follow: bool = False) -> Iterator[str]:
        self._describe_job(job_id)  # NotFound for an unknown job, before any log call
        tokens: dict[str, str | None] = {}
        while True:
            done = not follow or self.training_status(job_id).done
            yield from self._log_lines(job_id, tokens)
            if done:
                return
            self.sleep(5)

    def training_jobs(self) -> list[JobStatus]:
        """The stack's training jobs, newest first: SageMaker Search over training jobs carrying the stack's
        team and environment tags (every job the platform creates carries them)."""
        tags = self.plan.tags
        found: list[JobStatus] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {
                "Resource": "TrainingJob", "SortBy": "CreationTime", "SortOrder": "Descending", "MaxResults": 100,
                "SearchExpression": {"Operator": "And", "Filters": [
                    {"Name": f"Tags.{key}", "Operator": "Equals", "Value": tags[key]}
                    for key in ("team", "environment") if key in tags]}}
            if token:
                params["NextToken"] = token
            page = self.aws.call("sagemaker", "search", what="listing the stack's training jobs", **params)
            for result in page.get("Results", []):
                job = result.get("TrainingJob") or {}
                state, message = job_state(job)
                run_tags = _json_dict((job.get("Environment") or {}).get("MLPLAT_RUN_TAGS"))
                price = run_tags.get("mlplat.training.price_per_hour")
                found.append(JobStatus(job["TrainingJobName"], state,  # type: ignore[arg-type]
                                       started=_ts(job.get("TrainingStartTime") or job.get("CreationTime")),
                                       ended=_ts(job.get("TrainingEndTime")), message=message,
                                       instance_type=(job.get("ResourceConfig") or {}).get("InstanceType"),
                                       price_per_hour=float(price) if isinstance(price, (int, float, str)) and
                                       str(price).strip() else None))
            token = page.get("NextToken")
            if not token:
                return found

    def stop_training(self, job_id: str) -> JobStatus:
        status = self.training_status(job_id)
        if status.done:
            return status
        self.aws.call("sagemaker", "stop_training_job", TrainingJobName=job_id, what=f"stopping {job_id}")
        return self.training_status(job_id)

    # --- pipelines -----------------------------------------------------------------------------

    def _target(self, source_uri: str) -> pc.CompileTarget:
        return pc.CompileTarget(stack=self.spec.name, bucket=self.aws.bucket, role_arn=self.aws.role_arn,
                                image=self.image(), source_uri=source_uri, environment=self.job_environment(),
                                tags=self.plan.tags)

    def compile_pipeline(self, pipeline: PipelineDefinition) -> dict[str, Any]:
        source_uri = (f"s3://{self.aws.bucket}/{source_key(pipeline.source)}" if pipeline.source else
                      f"s3://{self.aws.bucket}/source/{pipeline.name}/current.tar.gz")
        definition: dict[str, Any] = pc.compile_definition(pipeline, self._target(source_uri))
        problems = rules.pipeline_definition_problems(definition) + pc.command_problems(definition)
        if problems:
            raise pc.PipelineError(f"pipeline {pipeline.name!r} cannot run on SageMaker: " + "; ".join(problems))
        return definition

    def _owned_by_program(self, name: str) -> bool:
        return name in {n for m in self.plan.models for n in (m.pipeline, m.deploy_pipeline)}

    def _put_pipeline(self, pipeline: PipelineDefinition) -> tuple[str, str, str]:
        """Create or update the SageMaker pipeline; ``(name, arn, source uri)``."""
        if pipeline.source is None:
            raise pc.PipelineError(f"pipeline {pipeline.name!r} has no source bundle: SageMaker runs the project "
                                   "from its archive at a commit, in S3",
                                   hint="keep the project in git and run it with `mlplat pipeline run`")
        name = self.sagemaker_name(pipeline.name)
        if self._owned_by_program(name):
            raise pc.PipelineError(f"pipeline {pipeline.name!r} would be SageMaker pipeline {name}, which the "
                                   "stack's program owns (the model's default pipeline)",
                                   hint="give the pipeline another name")
        definition = self.compile_pipeline(pipeline)
        body = json.dumps(definition, sort_keys=True)
        for data in pipeline.steps:
            self.check_data({k: v for k, v in data.inputs.items() if "://" in v})
        source_uri = self.upload_source(pipeline.source)
        try:
            arn = self.aws.call("sagemaker", "describe_pipeline", PipelineName=name, not_found=NOT_FOUND)["PipelineArn"]
            self.aws.call("sagemaker", "update_pipeline", PipelineName=name, PipelineDefinition=body,
                          RoleArn=self.aws.role_arn, what=f"updating pipeline {name}")
        except NotFound:
            arn = self.aws.call("sagemaker", "create_pipeline", PipelineName=name, PipelineDisplayName=name,
                                PipelineDefinition=body, RoleArn=self.aws.role_arn,
                                # the same pipeline and definition: a retried request creates it once
                                ClientRequestToken=hashlib.sha256(f"{name}\n{body}".encode()).hexdigest()[:64],
                                PipelineDescription=f"mlplat pipeline {pipeline.name} of stack {self.spec.name}",
                                Tags=[{"Key": k, "Value": v} for k, v in self.plan.tags.items()],
                                what=f"creating pipeline {name}")["PipelineArn"]
        return name, arn, source_uri

    def run_pipeline(self, pipeline: PipelineDefinition, *, resume: str | None = None) -> PipelineRunStatus:
        if resume:
            self.pipeline_status(resume)  # NotFound for an unknown run
            self.aws.call("sagemaker", "retry_pipeline_execution", PipelineExecutionArn=resume,
                          ClientRequestToken=uuid.uuid4().hex, what=f"resuming pipeline run {resume}")
            return self.pipeline_status(resume)
        name, _arn, source_uri = self._put_pipeline(pipeline)
        started = self.aws.call("sagemaker", "start_pipeline_execution", PipelineName=name,
                                PipelineExecutionDisplayName=name[:82],
                                PipelineParameters=[{"Name": pc.SOURCE_PARAMETER, "Value": source_uri}],
                                ClientRequestToken=uuid.uuid4().hex, what=f"starting pipeline {name}")
        return self.pipeline_status(started["PipelineExecutionArn"])

    def _platform_name(self, sagemaker_name: str) -> str:
        return sagemaker_name.removeprefix(f"{self.plan.prefix}-")

    def pipeline_status(self, run_id: str) -> PipelineRunStatus:
        described = self.aws.call("sagemaker", "describe_pipeline_execution", PipelineExecutionArn=run_id,
                                  not_found=NOT_FOUND, what=f"pipeline run {run_id}")
        steps: list[StepRun] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"PipelineExecutionArn": run_id, "SortOrder": "Ascending"}
            if token:
                params["NextToken"] = token
            page = self.aws.call("sagemaker", "list_pipeline_execution_steps", **params)
            for step in page.get("PipelineExecutionSteps", []):
                cached = bool((step.get("CacheHitResult") or {}).get("SourcePipelineExecutionArn"))
                steps.append(StepRun(step["StepName"], "CACHED" if cached else  # type: ignore[arg-type]
                                     _STEP_STATE.get(step.get("StepStatus", ""), "PENDING"),
                                     attempts=int(step.get("AttemptCount") or 1), started=_ts(step.get("StartTime")),
                                     ended=_ts(step.get("EndTime")), message=step.get("FailureReason") or ""))
            token = page.get("NextToken")
            if not token:
                break
        state = _EXECUTION_STATE.get(described.get("PipelineExecutionStatus", ""), "PENDING")
        failed = [s for s in steps if s.state == "FAILED"]
        message = described.get("FailureReason") or ""
        if failed:
            message = f"step {failed[0].name} failed" + (f": {failed[0].message}" if failed[0].message else "")
        pipeline = run_id.split(":pipeline/", 1)[-1].split("/execution/", 1)[0]
        return PipelineRunStatus(run_id, self._platform_name(pipeline), state, tuple(steps),  # type: ignore[arg-type]
                                 started=_ts(described.get("CreationTime")),
                                 ended=_ts(described.get("LastModifiedTime")) if state in ("SUCCEEDED", "FAILED",
                                                                                           "STOPPED") else None,
                                 message=message)

    def pipeline_runs(self, pipeline: str | None = None) -> list[PipelineRunStatus]:
        if pipeline is not None:
            names = [self.sagemaker_name(pipeline)]
        else:
            found = self.aws.call("sagemaker", "list_pipelines", PipelineNamePrefix=f"{self.plan.prefix}-")
            names = [p["PipelineName"] for p in found.get("PipelineSummaries", [])]
        runs = []
        for name in names:
            try:
                listed = self.aws.call("sagemaker", "list_pipeline_executions", PipelineName=name, not_found=NOT_FOUND)
            except NotFound:
                if pipeline is not None:
                    raise NotFound(f"no pipeline {pipeline!r} has run on stack {self.spec.name}",
                                   hint="run it first: mlplat pipeline run") from None
                continue
            for summary in listed.get("PipelineExecutionSummaries", []):
                runs.append(PipelineRunStatus(
                    summary["PipelineExecutionArn"], self._platform_name(name),
                    _EXECUTION_STATE.get(summary.get("PipelineExecutionStatus", ""), "PENDING"),  # type: ignore[arg-type]
                    started=_ts(summary.get("StartTime"))))
        return sorted(runs, key=lambda r: r.started or 0, reverse=True)

    # --- schedules -----------------------------------------------------------------------------

    def schedule_request(self, name: str, cron: str, source_uri: str) -> dict[str, Any]:
        """The EventBridge Scheduler ``CreateSchedule`` request that starts pipeline ``name`` on ``cron``."""
        expression = pc.eventbridge_cron(cron)
        problem = rules.schedule_expression_problem(expression)
        if problem:
            raise pc.PipelineError(problem)
        # the universal target sends the API request as written: SageMaker needs a ClientRequestToken, and
        # the execution id of the schedule's invocation is unique per run
        # https://docs.aws.amazon.com/scheduler/latest/UserGuide/managing-targets-universal.html
        # https://docs.aws.amazon.com/scheduler/latest/UserGuide/managing-schedule-context-attributes.html
        payload = {"PipelineName": name, "ClientRequestToken": "<aws.scheduler.execution-id>",
                   "PipelineParameters": [{"Name": pc.SOURCE_PARAMETER, "Value": source_uri}]}
        return {"Name": name[:64].rstrip("-"), "ScheduleExpression": expression, "ScheduleExpressionTimezone": "UTC",
                "FlexibleTimeWindow": {"Mode": "OFF"}, "State": "ENABLED",
                "Description": f"mlplat: runs pipeline {name} ({cron} UTC)",
                "Target": {"Arn": UNIVERSAL_START, "RoleArn": self.scheduler_role_arn(),
                           "Input": json.dumps(payload, sort_keys=True)}}

    def packaged(self, pipeline: PipelineDefinition) -> PipelineDefinition:
        """``pipeline`` with the project packaged at its commit (a schedule runs the code it was scheduled
        with; uncommitted changes are refused, naming them)."""
        import tempfile
        from dataclasses import replace

        from mlplat.services.source import bundle_source

        if pipeline.source is not None:
            return pipeline
        state = Path(self.spec.state_dir)
        dest = Path(tempfile.mkdtemp(prefix="schedule-source-", dir=state if state.is_dir() else None))
        return replace(pipeline, source=bundle_source(self.spec.project_dir, allow_dirty=False, dest_dir=dest,
                                                      exclude=[state]))

    def schedule_pipeline(self, pipeline: PipelineDefinition, cron: str) -> ScheduleInfo:
        pc.eventbridge_cron(cron)  # a bad cron is refused before anything is created
        name, _arn, source_uri = self._put_pipeline(self.packaged(pipeline))
        request = self.schedule_request(name, cron, source_uri)
        try:
            arn = self.aws.call("scheduler", "create_schedule", what=f"scheduling pipeline {name}",
                                not_found=("ConflictException",), **request)["ScheduleArn"]
        except NotFound:  # it exists: the new cron and code replace the old
            arn = self.aws.call("scheduler", "update_schedule", what=f"rescheduling pipeline {name}",
                                **request)["ScheduleArn"]
        return ScheduleInfo(pipeline.name, cron, arn)
