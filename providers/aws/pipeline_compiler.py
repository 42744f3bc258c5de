"""A provider-neutral ``PipelineDefinition`` as a SageMaker Pipeline definition (JSON schema 2020-12-01).

Pure functions (no boto3, no Pulumi): the runtime (``mlplat pipeline run`` on an AWS stack) and the
Pulumi program (each model's default training and deploy pipelines) build their definitions here, and
``service_rules.pipeline_definition_problems`` plus :func:`command_problems` check every one.

How steps map:

* a ``command`` step whose only output is ``model`` is a **Training** step (its ``model`` output is the
  job's ``ModelArtifacts.S3ModelArtifacts``, the tarball of ``/opt/ml/model``); any other ``command`` step
  is a **Processing** step with one ``ProcessingOutputConfig`` output per declared output;
* ``evaluate`` is a Processing step running the platform's gate (``mlplat models evaluate``) and
  writing ``evaluation.json`` into its ``evaluation`` output, declared as the step's
  property file; a **Condition** step reads ``passed`` from it with ``Std:JsonGet``: every step downstream
  of the evaluation runs in its ``IfSteps``, and ``ElseSteps`` is a **Fail** step naming the model;
* ``register`` reads the version's registry record (``mlplat models show``): versions are registered by
  the training script (``run.log_model``), as model packages with lineage, so the step fails when the
  version is not registered instead of registering a second, untracked package;
* ``promote`` runs ``mlplat models promote MODEL VERSION --to <stage>`` (``params["target"]``, staging by default).

Every job runs the platform's runtime image through its entry, :mod:`mlplat_providers.aws.runtime.job_entry`
(the entry contract is written there): the project at the run's commit arrives as the ``code`` input (the
pipeline parameter ``SourceUri``), data inputs from S3 URIs or from upstream outputs (``{"Get": ...}``
references), and ``{version}`` in a command is the pipeline parameter ``ModelVersion`` (a number,
``latest`` or ``approved``, resolved by the entry). Parameters are declared only when a step reads them.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mlplat.contracts.pipelines import PipelineDefinition, StepDefinition
from mlplat.errors import ExitCode, MlplatError
from mlplat.pipelines import commands

ENTRY = ("python", "-m", "mlplat_providers.aws.runtime.job_entry")
CODE = "code"  # the input/channel holding the project's archive
PROCESSING = "/opt/ml/processing"
EVALUATION_OUTPUT, EVALUATION_FILE, GATE_PATH = "evaluation", "evaluation.json", "passed"
VERSION_TOKEN = commands.VERSION_TOKEN
SOURCE_PARAMETER, VERSION_PARAMETER = "SourceUri", "ModelVersion"
DEFAULT_INSTANCE = "ml.m5.xlarge"
PLATFORM_INSTANCE = "ml.t3.medium"  # platform steps call the control plane: no compute of their own
# https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-retry-policy.html
JOB_FAULTS = ["SageMaker.JOB_INTERNAL_ERROR", "SageMaker.CAPACITY_ERROR", "SageMaker.RESOURCE_LIMIT"]
STEP_FAULTS = ["Step.SERVICE_FAULT", "Step.THROTTLING"]
# https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-caching.html
CACHE = {"Enabled": True, "ExpireAfter": "P30D"}


class PipelineError(MlplatError):
    """A pipeline the AWS provider cannot express as it is declared (bad input: nothing is submitted)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class CompileTarget:
    """Where a compiled pipeline runs: the stack's names, role, image and bucket."""

    stack: str  # the stack's name: platform steps run ``--stack <stack>``
    bucket: str
    role_arn: str
    image: str  # the platform's runtime image (``mlplat/train``)
    source_uri: str  # S3 URI of the project's archive (the SourceUri parameter's default)
    environment: dict[str, str] = field(default_factory=dict)  # every job's (stack, control plane, tracking)
    tags: dict[str, str] = field(default_factory=dict)
    instance_type: str = DEFAULT_INSTANCE
    max_runtime_seconds: int = 86_400
    prefix: str = "pipelines"  # outputs land under s3://<bucket>/<prefix>/<pipeline>/<execution id>/<step>/<output>


def _get(path: str) -> dict[str, str]:
    return {"Get": path}


def _is_training(step: StepDefinition) -> bool:
    return step.kind == "command" and tuple(step.outputs) == ("model",)


def _step_names(pipeline: PipelineDefinition) -> dict[str, StepDefinition]:
    return {s.name: s for s in pipeline.steps}


def _upstream(step: StepDefinition, steps: dict[str, StepDefinition]) -> set[str]:
    """Names of the steps ``step`` depends on, directly (data edges and ``depends_on``)."""
    out = set(step.depends_on)
    for value in step.inputs.values():
        ref = _reference(value, steps)
        if ref is not None:
            out.add(ref[0])
    return out


def _reference(value: str, steps: dict[str, StepDefinition]) -> tuple[str, str] | None:
    """``(step, output)`` when ``value`` names another step's output, else ``None`` (a data URI)."""
    head, dot, tail = value.partition(".")
    if dot and "://" not in value and head in steps:
        return head, tail
    return None


def _output_ref(step: StepDefinition, output: str) -> dict[str, str]:
    if _is_training(step):
        return _get(f"Steps.{step.name}.ModelArtifacts.S3ModelArtifacts")
    return _get(f"Steps.{step.name}.ProcessingOutputConfig.Outputs['{output}'].S3Output.S3Uri")


def _input_uri(name: str, value: str, step: StepDefinition, steps: dict[str, StepDefinition]) -> Any:
    ref = _reference(value, steps)
    if ref is not None:
        source, output = ref
        if output not in steps[source].outputs:
            raise PipelineError(f"pipeline step {step.name!r}: input {name!r} reads {value!r}, but step {source!r} "
                             f"declares no output {output!r}",
                             hint=f"use one of {', '.join(steps[source].outputs) or '(none)'}")
        return _output_ref(steps[source], output)
    if not value.startswith("s3://"):
        raise PipelineError(f"pipeline step {step.name!r}: input {name!r} is {value!r}; on AWS a step reads data from "
                         "S3 (s3://bucket/key) or from another step's output (<step>.<output>)",
                         hint="upload the data to the stack's bucket and name its s3:// URI")
    return value


def _outputs_uri(target: CompileTarget, pipeline: str, step: str, output: str) -> dict[str, Any]:
    return {"Std:Join": {"On": "/", "Values": [f"s3://{target.bucket}/{target.prefix}/{pipeline}",
                                                _get("Execution.PipelineExecutionId"), step, output]}}


def _argv(command: Iterable[str]) -> list[Any]:
    """The command with ``{version}`` turned into the ModelVersion parameter."""
    return [_get(f"Parameters.{VERSION_PARAMETER}") if part == VERSION_TOKEN else part for part in command]


def platform_command(step: StepDefinition, model: str | None, stack: str) -> tuple[str, ...]:
    """The mlplat command a platform step (evaluate, register, promote) runs; a command step's own command."""
    return commands.platform_command(step, model, stack, error=PipelineError)


def _retry(step: StepDefinition) -> list[dict[str, Any]]:
    if step.retries <= 0:
        return []
    return [{"ExceptionType": JOB_FAULTS, "IntervalSeconds": 30, "BackoffRate": 2.0, "MaxAttempts": step.retries},
            {"ExceptionType": STEP_FAULTS, "IntervalSeconds": 10, "BackoffRate": 2.0, "MaxAttempts": step.retries}]


def _processing(step: StepDefinition, argv: list[Any], target: CompileTarget, pipeline: str,
                steps: dict[str, StepDefinition], *, report: bool = False,
                environment: dict[str, str] | None = None) -> dict[str, Any]:
    environment = environment or {}
    inputs = [{"InputName": CODE, "AppManaged": False, "S3Input": {
        "S3Uri": _get(f"Parameters.{SOURCE_PARAMETER}"), "LocalPath": f"{PROCESSING}/input/{CODE}",
        "S3DataType": "S3Prefix", "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}}]
    for name, value in sorted(step.inputs.items()):
        inputs.append({"InputName": name, "AppManaged": False, "S3Input": {
            "S3Uri": _input_uri(name, value, step, steps), "LocalPath": f"{PROCESSING}/input/{name}",
            "S3DataType": "S3Prefix", "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}})
    outputs = list(step.outputs) + ([EVALUATION_OUTPUT] if report and EVALUATION_OUTPUT not in step.outputs else [])
    platform = step.kind != "command"
    entry_args: list[Any] = [part for name in outputs for part in ("--output", name)]
    if report:
        entry_args += ["--report", f"{PROCESSING}/output/{EVALUATION_OUTPUT}/{EVALUATION_FILE}"]
    args: dict[str, Any] = {
        "ProcessingResources": {"ClusterConfig": {
            "InstanceType": step.instance_type or (PLATFORM_INSTANCE if platform else target.instance_type),
            "InstanceCount": 1, "VolumeSizeInGB": 30}},
        "AppSpecification": {"ImageUri": target.image, "ContainerEntrypoint": list(ENTRY),
                             "ContainerArguments": [*entry_args, "--", *argv]},
        "RoleArn": target.role_arn,
        "Environment": {**(environment if not platform else {}), **target.environment},
        "StoppingCondition": {"MaxRuntimeInSeconds": target.max_runtime_seconds},
        "ProcessingInputs": inputs,
        # the platform role creates jobs only with the team's tags, and cost is attributed by them
        "Tags": [{"Key": k, "Value": v} for k, v in target.tags.items()],
    }
    if outputs:
        args["ProcessingOutputConfig"] = {"Outputs": [{
            "OutputName": name, "AppManaged": False, "S3Output": {
                "S3Uri": _outputs_uri(target, pipeline, step.name, name), "LocalPath": f"{PROCESSING}/output/{name}",
                "S3UploadMode": "EndOfJob"}} for name in outputs]}
    out: dict[str, Any] = {"Name": step.name, "Type": "Processing", "Arguments": args}
    if report:
        out["PropertyFiles"] = [{"PropertyFileName": gate_file(step.name), "OutputName": EVALUATION_OUTPUT,
                                 "FilePath": EVALUATION_FILE}]
    return out


def gate_file(step: str) -> str:
    return f"{step}-report"


def _training(step: StepDefinition, target: CompileTarget, pipeline: str,
              steps: dict[str, StepDefinition], environment: dict[str, str]) -> dict[str, Any]:
    if VERSION_TOKEN in step.command:
        raise PipelineError(f"pipeline step {step.name!r} trains a model and cannot read {VERSION_TOKEN}",
                         hint="only steps after the training step act on the version it registers")
    channels = [{"ChannelName": CODE, "InputMode": "File", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": _get(f"Parameters.{SOURCE_PARAMETER}"),
        "S3DataDistributionType": "FullyReplicated"}}}]
    for name, value in sorted(step.inputs.items()):
        channels.append({"ChannelName": name, "InputMode": "File", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": _input_uri(name, value, step, steps),
            "S3DataDistributionType": "FullyReplicated"}}})
    return {"Name": step.name, "Type": "Training", "Arguments": {
        "AlgorithmSpecification": {"TrainingImage": target.image, "TrainingInputMode": "File"},
        "HyperParameters": command_hyperparameters(step.command),
        "RoleArn": target.role_arn,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": f"s3://{target.bucket}/{target.prefix}/{pipeline}/{step.name}"},
        "ResourceConfig": {"InstanceType": step.instance_type or target.instance_type, "InstanceCount": 1,
                           "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": target.max_runtime_seconds},
        "Environment": {**environment, **target.environment},
        "Tags": [{"Key": k, "Value": v} for k, v in target.tags.items()],
    }}


def command_hyperparameters(command: Iterable[str]) -> dict[str, str]:
    """How a training job carries its command to the entry: one JSON-encoded argv hyperparameter."""
    return {"mlplat_command": json.dumps(list(command))}


def _order(pipeline: PipelineDefinition) -> list[StepDefinition]:
    steps = _step_names(pipeline)
    done: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in visiting:
            raise PipelineError(f"pipeline {pipeline.name!r} has a cycle: {' -> '.join((*path, name))}")
        if name not in steps:
            raise PipelineError(f"pipeline {pipeline.name!r}: step {path[-1]!r} depends on unknown step {name!r}",
                             hint=f"steps are {', '.join(steps)}")
        visiting.add(name)
        for dep in sorted(_upstream(steps[name], steps)):
            visit(dep, (*path, name))
        visiting.discard(name)
        done.append(name)

    for step in pipeline.steps:
        visit(step.name, ())
    return [steps[n] for n in done]


def pipeline_name(prefix: str, pipeline: str) -> str:
    """The SageMaker name of a stack's pipeline (``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}``)."""
    clean = re.sub(r"[^A-Za-z0-9-]+", "-", f"{prefix}-{pipeline}").strip("-")
    return re.sub(r"-{2,}", "-", clean)[:256].rstrip("-")


def compile_definition(pipeline: PipelineDefinition, target: CompileTarget) -> dict[str, Any]:
    """``pipeline`` as a SageMaker pipeline definition (a dict; ``json.dumps`` it for CreatePipeline)."""
    steps = _step_names(pipeline)
    if len(steps) != len(pipeline.steps):
        raise PipelineError(f"pipeline {pipeline.name!r} names a step twice")
    ordered = _order(pipeline)
    gates = [s for s in ordered if s.kind == "evaluate"]
    if len(gates) > 1:
        raise PipelineError(f"pipeline {pipeline.name!r} has {len(gates)} evaluate steps; a SageMaker pipeline here "
                         "gates once", hint="keep one evaluate step")
    behind_gate: set[str] = set()
    if gates:
        for step in ordered:  # in dependency order: a step downstream of the gate runs in its IfSteps
            if step.name != gates[0].name and _upstream(step, steps) & (behind_gate | {gates[0].name}):
                behind_gate.add(step.name)
    compiled: dict[str, dict[str, Any]] = {}
    for step in ordered:
        environment = dict(getattr(pipeline, "environment", None) or {})  # every command step's variables
        if _is_training(step):
            body = _training(step, target, pipeline.name, steps, environment)
        else:
            argv = _argv(platform_command(step, pipeline.model, target.stack))
            body = _processing(step, argv, target, pipeline.name, steps, report=step.kind == "evaluate",
                               environment=environment)
        depends = sorted(_upstream(step, steps) - ({gates[0].name} if gates and step.name in behind_gate else set()))
        if depends:
            body["DependsOn"] = depends
        if step.cache and step.kind == "command":
            body["CacheConfig"] = dict(CACHE)
        retry = _retry(step)
        if retry:
            body["RetryPolicies"] = retry
        compiled[step.name] = body
    top = [compiled[s.name] for s in ordered if s.name not in behind_gate]
    if gates:
        gate = gates[0]
        # a branch step's dependencies on the gate are the condition itself (SageMaker runs IfSteps after it)
        condition = {"Name": f"{gate.name}-passed", "Type": "Condition", "DependsOn": [gate.name], "Arguments": {
            "Conditions": [{"Type": "Equals", "LeftValue": {"Std:JsonGet": {
                "PropertyFile": _get(f"Steps.{gate.name}.PropertyFiles.{gate_file(gate.name)}"), "Path": GATE_PATH}},
                "RightValue": True}],
            "IfSteps": [compiled[s.name] for s in ordered if s.name in behind_gate],
            "ElseSteps": [{"Name": f"{gate.name}-refused", "Type": "Fail", "Arguments": {
                "ErrorMessage": f"the gate refused {pipeline.model or 'the model'}: see the {gate.name} step's "
                                f"{EVALUATION_FILE} and `mlplat models show`"}}]}}
        top.append(condition)
    reads = json.dumps(top)
    parameters = [{"Name": SOURCE_PARAMETER, "Type": "String", "DefaultValue": target.source_uri}]
    if f"Parameters.{VERSION_PARAMETER}" in reads:
        parameters.append({"Name": VERSION_PARAMETER, "Type": "String", "DefaultValue": "latest"})
    return {"Version": "2020-12-01", "Metadata": {"mlplat": {"stack": target.stack, "pipeline": pipeline.name,
                                                             "model": pipeline.model}},
            "Parameters": parameters, "Steps": top}


# --- what each step runs must exist ----------------------------------------------------------------


def step_commands(definition: dict[str, Any]) -> dict[str, list[str]]:
    """Step name → the command its job runs (``{"Get": ...}`` values shown as ``<Parameters.X>``)."""
    from mlplat_providers.aws.service_rules import _all_steps

    out = {}
    for step in _all_steps(list(definition.get("Steps") or [])):
        args = step.get("Arguments") or {}
        if step.get("Type") == "Processing":
            app = args.get("AppSpecification") or {}
            argv = list(app.get("ContainerArguments") or [])
            if list(app.get("ContainerEntrypoint") or []) == list(ENTRY):  # the entry runs what follows "--"
                argv = argv[argv.index("--") + 1:] if "--" in argv else []
            else:  # any other entrypoint is itself the command
                argv = [*(app.get("ContainerEntrypoint") or []), *argv]
        elif step.get("Type") == "Training":
            argv = json.loads((args.get("HyperParameters") or {}).get("mlplat_command", "[]"))
        else:
            continue
        out[step["Name"]] = [f"<{a['Get']}>" if isinstance(a, dict) and "Get" in a else str(a) for a in argv]
    return out


def mlplat_command_problem(argv: list[str]) -> str | None:
    """Why ``mlplat <argv[1:]>`` is not a command of this mlplat (unknown command, option or argument), or
    ``None``. Placeholders (``<Parameters.X>``) stand for a version number. Nothing runs: click parses only."""
    return commands.mlplat_command_problem(argv, _is_placeholder)


def _is_placeholder(arg: str) -> bool:
    return arg.startswith("<Parameters.")


def command_problems(definition: dict[str, Any]) -> list[str]:
    """Every step that runs an mlplat command this mlplat does not have."""
    return commands.command_problems(step_commands(definition), label="step", is_placeholder=_is_placeholder)


# --- schedules ---------------------------------------------------------------------------------------

_DOW_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


def _dow(field: str, cron: str) -> str:
    """A 5-field cron's day-of-week (0-7, Sunday 0 or 7) in EventBridge's numbering (1-7, Sunday 1)."""
    def one(token: str) -> str:
        if token.upper() in _DOW_NAMES:
            return token.upper()
        if not token.isdigit() or int(token) > 7:
            raise PipelineError(f"schedule {cron!r}: day of week {token!r} is not 0-7 or SUN-SAT")
        return str(int(token) % 7 + 1)

    parts = []
    for item in field.split(","):
        if "/" in item:
            raise PipelineError(f"schedule {cron!r}: a step in the day of week ({item!r}) has no EventBridge form",
                                hint="list the days instead, e.g. 1,3,5")
        lo, dash, hi = item.partition("-")
        if not dash:
            parts.append(one(lo))
        elif hi == "7" and lo.isdigit():  # up to Sunday, which EventBridge numbers 1: wrap around
            parts.append("1-7" if lo == "0" else f"{one(lo)}-7,1")
        else:
            parts.append(f"{one(lo)}-{one(hi)}")
    return ",".join(parts)


def eventbridge_cron(cron: str) -> str:
    """A 5-field cron expression (minute hour day-of-month month day-of-week, UTC) as EventBridge Scheduler's
    6-field ``cron(...)``: a year field, '?' in whichever day field is unrestricted, days of week renumbered.
    Raises ``PipelineError`` for what EventBridge cannot express (both day fields restricted)."""
    fields = cron.split()
    if len(fields) != 5:
        raise PipelineError(f"schedule {cron!r} has {len(fields)} fields; a cron expression has 5 "
                         "(minute hour day-of-month month day-of-week)", hint="e.g. '0 3 * * 1' for Mondays at 03:00 UTC")
    # EventBridge writes increments from a start ('0/15'), not from '*'
    minute, hour, dom, month, dow = (re.sub(r"^\*/", start, f) for f, start in zip(
        fields, ("0/", "0/", "1/", "1/", "*/"), strict=True))
    if dom != "*" and dow != "*":
        raise PipelineError(f"schedule {cron!r} restricts both the day of month and the day of week; EventBridge "
                         "Scheduler takes one of them", hint="keep one of the two day fields '*'")
    if dow == "*":
        return f"cron({minute} {hour} {dom} {month} ? *)"
    return f"cron({minute} {hour} ? {month} {_dow(dow, cron)} *)"
