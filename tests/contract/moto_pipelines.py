"""What the AWS pipelines tests need from moto, and what moto lacks.

moto 5 runs training jobs and pipeline executions to completion at once, and has no
``StopTrainingJob``, ``ListPipelineExecutionSteps`` or ``RetryPipelineExecution``. Here an execution
starts as SageMaker starts one (Executing, its first step Starting) until a test moves it on.
:func:`install_pipeline_gaps` adds the three to moto's SageMaker responses, doing what SageMaker
documents: stopping an in-progress job moves it to Stopping then Stopped (a finished job is refused
with a ValidationException), the steps of an execution are the definition's (each Succeeded unless a
test says otherwise), and retrying a failed execution puts it back to Executing (anything else is
refused). :func:`set_training_job` and :func:`set_execution` play SageMaker's side of a run. The
request shapes are validated against botocore's model by the tests' ``provide-client-params`` hooks.
"""
from __future__ import annotations

import json
from typing import Any

from tests.contract.moto_support import ACCOUNT, REGION

_installed = False
# execution ARN -> [(step name, status, failure reason)] a test set; otherwise every step Succeeded
STEPS: dict[str, list[tuple[str, str, str]]] = {}


def backend():
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION]


def _execution(arn: str):
    from moto.sagemaker.utils import get_pipeline_execution_from_arn

    return get_pipeline_execution_from_arn(backend().pipelines, arn)


def _definition_steps(definition: str) -> list[str]:
    out: list[str] = []
    pending = list(json.loads(definition).get("Steps") or [])
    while pending:
        step = pending.pop(0)
        if step.get("Type") == "Fail":
            continue
        out.append(step["Name"])
        if step.get("Type") == "Condition":
            pending = list(step["Arguments"].get("IfSteps") or []) + pending
    return out


def install_pipeline_gaps() -> None:
    global _installed
    if _installed:
        return
    from moto.core.responses import ActionResult
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.responses import SageMakerResponse

    def stop_training_job(self):
        name = self._get_param("TrainingJobName")
        job = self.sagemaker_backend.training_jobs.get(name)
        if job is None:
            raise ValidationError(message=f"Could not find training job '{name}'.")
        if job.training_job_status != "InProgress":
            raise ValidationError(message=f"The request was rejected because the training job is in status "
                                          f"{job.training_job_status}.")
        job.training_job_status, job.secondary_status = "Stopped", "Stopped"
        return ActionResult({})

    def list_pipeline_execution_steps(self):
        arn = self._get_param("PipelineExecutionArn")
        execution = _execution(arn)
        steps = STEPS.get(arn) or [(n, "Succeeded", "") for n in
                                   _definition_steps(execution.pipeline_definition_for_execution)]
        return ActionResult({"PipelineExecutionSteps": [
            {"StepName": name, "StepStatus": status, "StartTime": execution.start_time, "AttemptCount": 1,
             **({"FailureReason": reason} if reason else {})} for name, status, reason in steps]})

    def retry_pipeline_execution(self):
        arn = self._get_param("PipelineExecutionArn")
        execution = _execution(arn)
        if execution.pipeline_execution_status != "Failed":
            raise ValidationError(message=f"Pipeline execution {arn} is {execution.pipeline_execution_status}; "
                                          "only a failed execution can be retried.")
        execution.pipeline_execution_status = "Executing"
        STEPS[arn] = [(n, "Succeeded" if s == "Succeeded" else "Executing", "") for n, s, _ in STEPS.get(arn, [])]
        return ActionResult({"PipelineExecutionArn": arn})

    original_start = SageMakerResponse.start_pipeline_execution

    def start_pipeline_execution(self):
        # SageMaker starts an execution Executing, its first steps Starting; moto marks it Succeeded at once
        result = original_start(self)
        body = getattr(result, "result", None) or {}
        arn = body.get("PipelineExecutionArn") if isinstance(body, dict) else None
        if arn:
            execution = _execution(arn)
            execution.pipeline_execution_status = "Executing"
            first = _definition_steps(execution.pipeline_definition_for_execution)[:1]
            STEPS[arn] = [(name, "Starting", "") for name in first]
        return result

    SageMakerResponse.start_pipeline_execution = start_pipeline_execution
    SageMakerResponse.stop_training_job = stop_training_job
    SageMakerResponse.list_pipeline_execution_steps = list_pipeline_execution_steps
    SageMakerResponse.retry_pipeline_execution = retry_pipeline_execution
    _installed = True


def set_training_job(name: str, status: str, secondary: str, failure: str | None = None) -> None:
    job = backend().training_jobs[name]
    job.training_job_status, job.secondary_status = status, secondary
    if failure is not None:
        job.failure_reason = failure


def set_execution(arn: str, status: str, steps: list[tuple[str, str, str]] | None = None,
                  failure: str | None = None) -> None:
    execution = _execution(arn)
    execution.pipeline_execution_status = status
    if failure is not None:
        execution.pipeline_execution_failure_reason = failure
    if steps is not None:
        STEPS[arn] = steps
    elif status == "Succeeded":
        STEPS.pop(arn, None)  # every step of the definition Succeeded


def sagemaker_log(job: str, lines: list[str]) -> None:
    """What a training job's container prints, as SageMaker puts it in CloudWatch Logs."""
    import time

    import boto3

    logs = boto3.client("logs", region_name=REGION)
    try:
        logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    stream = f"{job}/algo-1-1700000000"
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream)
    now = int(time.time() * 1000)  # CloudWatch refuses events older than 14 days
    logs.put_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream, logEvents=[
        {"timestamp": now + i, "message": line} for i, line in enumerate(lines)])


def validating(session: Any, problems: list[str], sent: list[tuple[str, dict]]) -> None:
    """Check every request the session's clients send against botocore's model, as they are sent."""
    from botocore.validate import ParamValidator

    def check(params, model, **_):
        report = ParamValidator().validate(params, model.input_shape)
        if report.has_errors():
            problems.append(f"{model.name}: {report.generate_report()}")
        sent.append((model.name, params))

    for service in ("sagemaker", "s3", "logs", "scheduler"):
        session.client(service).meta.events.register(f"provide-client-params.{service}.*", check)
