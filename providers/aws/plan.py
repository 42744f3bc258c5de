"""Planning logic of the AWS program, as pure functions of the stack (no Pulumi, no boto3).

The components in ``components.py`` only turn these values into resources, so every
decision (names, traffic routing, the pipeline definition, alarms, the dashboard)
is unit-tested without running a program.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlplat.errors import StackError
from mlplat.stack import RiskTier, StackSpec, duration_seconds
from mlplat_providers.aws.account_rules import ALERT_PUBLISHERS

if TYPE_CHECKING:
    from mlplat.contracts.pipelines import PipelineDefinition

# Model Monitor analyzer images (account per region; the image name is the same everywhere).
MODEL_MONITOR_ACCOUNTS = {
    "us-east-1": "156813124566", "us-east-2": "777275614652", "us-west-1": "890145073186",
    "us-west-2": "159807026194", "eu-west-1": "468650794304", "eu-west-2": "749857270468",
    "eu-west-3": "680080141114", "eu-central-1": "048819808253", "eu-north-1": "895015795356",
    "ap-southeast-1": "245545462676", "ap-southeast-2": "563025443158", "ap-northeast-1": "574779866223",
    "ca-central-1": "536280801234",
}
TRAINING_INSTANCE = "ml.m5.xlarge"
MONITORING_INSTANCE = "ml.m5.large"
DEPLOY_INSTANCE = "ml.t3.medium"
APPROVED, PENDING = "Approved", "PendingManualApproval"
PACKAGE_EVENT = "SageMaker Model Package State Change"


def slug(text: str, limit: int = 63) -> str:
    """A SageMaker/S3-safe name: lowercase letters, digits and hyphens, at most ``limit`` characters."""
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return clean[:limit].rstrip("-")


@dataclass(frozen=True)
class ModelPlan:
    """One model of the stack: its registry group, pipelines and endpoint."""

    model: str
    risk_tier: RiskTier
    group: str
    pipeline: str
    deploy_pipeline: str
    endpoint: str

    @property
    def approval_status(self) -> str:
        """How the pipeline registers versions: critical models wait for a person."""
        return PENDING if self.risk_tier == RiskTier.critical else APPROVED


@dataclass(frozen=True)
class StackPlan:
    spec: StackSpec
    region: str
    prefix: str
    bucket: str
    tracking_server: str
    models: list[ModelPlan] = field(default_factory=list)

    @property
    def tags(self) -> dict[str, str]:
        return self.spec.tags.as_dict()

    @property
    def is_production(self) -> bool:
        return self.spec.environment in ("production", "prod")


def stack_plan(spec: StackSpec) -> StackPlan:
    """Names and per-model plans of an AWS stack. Raises ``StackError`` for a stack that is not on AWS."""
    if spec.provider.kind != "aws":
        raise StackError(f"stack '{spec.name}' uses the {spec.provider.kind} provider, not aws", where=spec.path or None,
                         hint="set mlplat:provider.kind to aws, or use the stack with its own provider")
    region = spec.provider.region
    prefix = slug(f"mlplat-{spec.team}-{spec.environment}", 40)
    account = spec.provider.account_id
    bucket = slug(f"{prefix}-artifacts-{account}" if account else f"{prefix}-artifacts-{region}")
    names = list(spec.governance.models) or [f"{spec.team}-model"]
    models = []
    for model in names:
        base = slug(f"{prefix}-{model}", 55)
        models.append(ModelPlan(
            model=model,
            risk_tier=spec.risk_tier_for(model),
            group=slug(f"{spec.team}-{model}"),
            pipeline=slug(f"{base}-train"),
            deploy_pipeline=slug(f"{base}-deploy"),
            endpoint=base,
        ))
    return StackPlan(spec=spec, region=region, prefix=prefix, bucket=bucket,
                     tracking_server=slug(f"{prefix}-mlflow", 32), models=models)


# --- serving ------------------------------------------------------------------------


# One owner per field: the program creates no endpoint, endpoint configuration or SageMaker model (on an
# empty registry there is nothing to serve, and a versioned package deploys only once Approved). The
# runtime creates and changes them on every deploy; the program owns what outlives deploys: the rollback
# alarms, the dashboard and the capture location, all named here for both.
#
# Variants have stable names, whatever version they serve: the stable version is ``primary``, a canary or
# A/B candidate ``canary``, a mirrored version ``shadow``. So the alarms and the dashboard always watch
# variants that exist, and a change that keeps the names (a new version on ``primary``) runs as a
# SageMaker blue/green deployment with the stack's traffic routing and rollback alarms.
PRIMARY, CANARY, SHADOW = "primary", "canary", "shadow"
GUARDED_VARIANTS = (PRIMARY, CANARY)
TERMINATION_WAIT = 300  # seconds the old fleet stays after a blue/green deployment, for a quick rollback
CAPTURE_JSON = ("application/json",)


def instance_count(spec: StackSpec) -> int:
    """Instances per production variant (``mlplat:provider.instanceCount``, default 1)."""
    return int(getattr(spec.provider, "instance_count", 1) or 1)


def traffic_routing(steps: list[int], bake_seconds: float, fleet: int = 1) -> dict[str, Any]:
    """SageMaker's blue/green traffic routing (``TrafficRoutingConfig``, request shape) for a change of the
    version a variant serves, derived from the stack's canary schedule and the variant's ``fleet``.

    SageMaker's canary is whole instances and at most half the variant's instances, and it waits at most
    3600 s between shifts (``service_rules``). A fleet of one has no canary: ALL_AT_ONCE, baked for the
    wait interval under the rollback alarms. A larger fleet's canary is the schedule's first step, in
    instances (``mlplat stack validate`` refuses a first step that is not whole instances or above half).
    Longer schedules are the platform's own: it steps variant weights through every step of
    ``serving.canary.steps`` (``UpdateEndpointWeightsAndCapacities``) for as long as each step bakes.
    """
    wait = int(min(max(bake_seconds, 0), 3600))
    if fleet <= 1 or steps[0] >= 100:
        return {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": wait}
    instances = max(1, min(fleet // 2, round(steps[0] * fleet / 100)))
    return {"Type": "CANARY", "WaitIntervalInSeconds": wait,
            "CanarySize": {"Type": "INSTANCE_COUNT", "Value": instances}}


def deployment_config(spec: StackSpec, rollback_alarms: list[str]) -> dict[str, Any]:
    """The ``DeploymentConfig`` the runtime sends with every ``UpdateEndpoint`` that keeps the variant names:
    blue/green with the stack's routing, rolled back by SageMaker when a rollback alarm fires."""
    canary = spec.serving.canary
    routing = traffic_routing(list(canary.steps), canary.bake_seconds, instance_count(spec))
    shifts = 2 if routing["Type"] == "CANARY" else 1
    timeout = min(28_800, max(600, shifts * routing["WaitIntervalInSeconds"] + TERMINATION_WAIT + 1800))
    config: dict[str, Any] = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing,
                                                        "TerminationWaitInSeconds": TERMINATION_WAIT,
                                                        "MaximumExecutionTimeoutInSeconds": timeout}}
    if rollback_alarms:  # SageMaker takes 1 to 10; an endpoint outside the stack's environment has none
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in rollback_alarms]}
    return config


def capture_uri(bucket: str, model: str, environment: str) -> str:
    """Where an endpoint's captured requests go (SageMaker appends <endpoint>/<variant>/yyyy/mm/dd/hh/);
    the one prefix the runtime configures and monitoring reads."""
    return f"s3://{bucket}/data-capture/{model}/{environment}"


def capture_config(spec: StackSpec, bucket: str, model: str, environment: str) -> dict[str, Any] | None:
    """The ``DataCaptureConfig`` of an endpoint configuration (request shape): inputs and outputs, JSON
    kept as JSON (without a content-type header SageMaker base64-encodes payloads). ``None`` when the
    stack samples nothing."""
    sampling = capture_percent(spec)
    if sampling <= 0:
        return None
    return {"EnableCapture": True, "InitialSamplingPercentage": sampling,
            "DestinationS3Uri": capture_uri(bucket, model, environment),
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": list(CAPTURE_JSON)}}


def capture_percent(spec: StackSpec) -> int:
    return int(round(spec.serving.capture_sampling * 100))


def serving_declaration(plan: StackPlan, model: ModelPlan) -> dict[str, Any]:
    """What the runtime will run for ``model`` in the stack's environment, declared by the program as the
    ``mlplat:aws:Serving`` component's inputs so the policy pack judges it before any endpoint exists: the
    endpoint's name, variants, rollout (the platform's canary schedule, rolled back on the alarms), shadow
    share, data capture, and that production serves Approved model packages only."""
    spec = plan.spec
    canary = spec.serving.canary
    return {
        "endpointName": model.endpoint, "model": model.model, "environment": spec.environment,
        "tags": {**plan.tags, "risk-tier": model.risk_tier.value},
        "instanceType": spec.serving.instance_type, "instanceCount": instance_count(spec),
        "variants": [PRIMARY, CANARY], "shadowVariant": SHADOW, "shadowPercent": spec.serving.shadow.percent,
        "canarySteps": list(canary.steps), "bakeSeconds": canary.bake_seconds,
        "rollbackAlarms": [name for name, _variant, _alarm in rollback_alarms(spec, model.endpoint)],
        "dataCapture": {"enableCapture": capture_percent(spec) > 0,
                        "initialSamplingPercentage": capture_percent(spec),
                        "destinationS3Uri": capture_uri(plan.bucket, model.model, spec.environment),
                        "captureContentTypeHeader": {"jsonContentTypes": list(CAPTURE_JSON)}},
        "approvedPackagesOnly": True,
        # the platform's monitoring pass reads the captures on this schedule (`mlplat serve` runs it, or
        # `mlplat monitor run` from any scheduler) and publishes the metrics the drift alarm watches
        "monitorSchedule": spec.monitoring.schedule,
    }


@dataclass(frozen=True)
class AlarmPlan:
    suffix: str
    metric: str
    namespace: str
    threshold: float
    statistic: str | None = None
    extended_statistic: str | None = None
    rollback: bool = True
    description: str = ""


def alarm_plans(spec: StackSpec) -> list[AlarmPlan]:
    """Alarms per endpoint. Rollback alarms guard deployments (errors, latency); drift only alerts."""
    latency_us = spec.serving.latency_budget_ms * 1000.0  # ModelLatency is in microseconds
    return [
        AlarmPlan("5xx", "Invocation5XXErrors", "AWS/SageMaker", 0, statistic="Sum",
                  description="The endpoint returns server errors."),
        AlarmPlan("latency-p95", "ModelLatency", "AWS/SageMaker", latency_us, extended_statistic="p95",
                  description=f"p95 model latency above {spec.serving.latency_budget_ms:g} ms."),
        AlarmPlan("drift", DRIFT_ALARM_METRIC, PLATFORM_NAMESPACE, spec.monitoring.drift.psi, statistic="Maximum",
                  rollback=False, description=f"The platform's monitoring pass finds a feature of the stable version "
                  f"drifted (PSI above {spec.monitoring.drift.psi:g}) from its training reference."),
    ]


def platform_alarm_period(spec: StackSpec) -> int:
    """The period of an alarm on a platform metric: one monitoring pass (``monitoring.schedule``) in whole
    minutes, so each period holds the datapoint of one pass (CloudWatch alarm periods are multiples of 60 s
    up to a day)."""
    return int(min(86_400, max(60, -(-duration_seconds(spec.monitoring.schedule) // 60) * 60)))


def alarm_dimensions(spec: StackSpec, model: ModelPlan, alarm: AlarmPlan) -> dict[str, str]:
    """The dimensions an endpoint-wide (non-rollback) alarm watches: the platform's own metrics of the model's
    stable variant in the stack's environment, exactly as the monitoring pass publishes them; SageMaker's
    own metrics per endpoint otherwise."""
    if alarm.namespace == PLATFORM_NAMESPACE:
        return platform_dimensions(model.model, spec.environment, PRIMARY)
    return {"EndpointName": model.endpoint}


def alarm_name(model: ModelPlan, alarm: AlarmPlan) -> str:
    return slug(f"{model.endpoint}-{alarm.suffix}", 255)


def variant_alarm_name(endpoint: str, variant: str, alarm: AlarmPlan) -> str:
    """A rollback alarm watches one variant: SageMaker publishes its metrics per ``VariantName``."""
    return slug(f"{endpoint}-{variant}-{alarm.suffix}", 255)


def rollback_alarms(spec: StackSpec, endpoint: str) -> list[tuple[str, str, AlarmPlan]]:
    """(alarm name, variant, plan) of every rollback alarm of ``endpoint``: errors and latency of each
    guarded variant. The program creates them; the runtime sends them as the auto-rollback alarms and the
    canary judge reads their state."""
    return [(variant_alarm_name(endpoint, v, a), v, a) for v in GUARDED_VARIANTS for a in alarm_plans(spec)
            if a.rollback]


# --- monitoring -----------------------------------------------------------------------

# The platform's own CloudWatch metrics. Every monitoring pass on an AWS stack publishes, per model version
# it judged, under the SageMaker variant that served it (``runtime/monitoring.py``): PSI per feature, the
# largest PSI and the share of drifted features, the quality metrics once labels arrive, the captured
# predictions; and the team's cost this month. The drift alarm, the dashboard and the canary judge read these
# names, so what the program watches is what the pass publishes (service_rules.alarm_metric_problems).
PLATFORM_NAMESPACE = "mlplat/Models"
FEATURE_DRIFT_METRIC = "FeatureDriftPSI"  # dimensions Model, Environment, Variant, Feature
DRIFT_ALARM_METRIC = "FeatureDriftMaxPSI"  # the largest PSI over the features; Model, Environment, Variant
DRIFT_SHARE_METRIC = "DriftedFeatureShare"
PREDICTIONS_METRIC = "Predictions"
QUALITY_METRICS = {"quality.accuracy": "Accuracy", "quality.precision": "Precision", "quality.recall": "Recall",
                   "quality.f1": "F1", "quality.roc_auc": "RocAuc", "quality.ece": "CalibrationError",
                   "quality.rows": "LabelledRows"}
COST_METRICS = {"cost.usd": "CostUSD", "cost.daily_usd": "DailyCostUSD", "cost.predictions": "BilledPredictions",
                "cost.per_prediction_usd": "CostPerPredictionUSD", "cost.budget_share": "BudgetShare"}
PLATFORM_METRICS = frozenset({FEATURE_DRIFT_METRIC, DRIFT_ALARM_METRIC, DRIFT_SHARE_METRIC, PREDICTIONS_METRIC,
                              *QUALITY_METRICS.values(), *COST_METRICS.values()})


def platform_dimensions(model: str, environment: str, variant: str, feature: str | None = None) -> dict[str, str]:
    """The dimensions of a platform metric of one model's variant (and feature) in one environment."""
    dims = {"Model": model, "Environment": environment, "Variant": variant}
    if feature is not None:
        dims["Feature"] = feature
    return dims


def team_dimensions(team: str, environment: str) -> dict[str, str]:
    """The dimensions of the team's cost metrics."""
    return {"Team": team, "Environment": environment}


def publishers(spec: StackSpec) -> list[Any]:
    """What publishes the metrics the stack's alarms may watch (``service_rules.Publisher``): the platform's
    monitoring pass (per model variant, per feature, per team) and SageMaker (per endpoint variant the runtime
    creates)."""
    from mlplat_providers.aws.service_rules import (
        SAGEMAKER_ENDPOINT_METRICS,
        SAGEMAKER_NAMESPACE,
        Publisher,
    )

    variants = frozenset({PRIMARY, CANARY, SHADOW})
    per_variant = frozenset(PLATFORM_METRICS - {FEATURE_DRIFT_METRIC, *COST_METRICS.values()})
    return [
        Publisher("the platform's monitoring pass", PLATFORM_NAMESPACE, per_variant,
                  frozenset(platform_dimensions("m", "e", "v")), {"Variant": variants}),
        Publisher("the platform's monitoring pass", PLATFORM_NAMESPACE, frozenset({FEATURE_DRIFT_METRIC}),
                  frozenset(platform_dimensions("m", "e", "v", "f")), {"Variant": variants}),
        Publisher("the platform's monitoring pass", PLATFORM_NAMESPACE, frozenset(COST_METRICS.values()),
                  frozenset(team_dimensions("t", "e")), {"Team": frozenset({spec.team})}),
        Publisher("SageMaker", SAGEMAKER_NAMESPACE, SAGEMAKER_ENDPOINT_METRICS,
                  frozenset({"EndpointName", "VariantName"}), {"VariantName": variants}),
    ]


def platform_metric(name: str, model: str, environment: str, variant: str, stat: str) -> list[Any]:
    """A dashboard widget's line for a platform metric of one variant."""
    line: list[Any] = [PLATFORM_NAMESPACE, name]
    for key, value in platform_dimensions(model, environment, variant).items():
        line += [key, value]
    return [*line, {"stat": stat}]


def monitor_image(region: str) -> str:
    account = MODEL_MONITOR_ACCOUNTS.get(region)
    if account is None:
        raise StackError(f"no Model Monitor image is known for region {region}",
                         hint=f"use one of {', '.join(sorted(MODEL_MONITOR_ACCOUNTS))}")
    return f"{account}.dkr.ecr.{region}.amazonaws.com/sagemaker-model-monitor-analyzer"


def monitoring_cron(schedule: str) -> str:
    """Model Monitor runs hourly at most often; shorter schedules round up to hourly, a day or more is daily."""
    seconds = duration_seconds(schedule)
    if seconds >= 86_400:
        return "cron(0 0 ? * * *)"
    return "cron(0 * ? * * *)"


def dashboard_body(plan: StackPlan) -> str:
    """The team's CloudWatch dashboard: per endpoint invocations, latency, errors per variant, drift; cost."""
    widgets: list[dict[str, Any]] = [{
        "type": "text", "x": 0, "y": 0, "width": 24, "height": 2,
        "properties": {"markdown": f"# mlplat {plan.spec.team} / {plan.spec.environment}\nEndpoints: "
                       + ", ".join(m.endpoint for m in plan.models)},
    }]
    y = 2
    for model in plan.models:
        def metric(name: str, variant: str, stat: str = "Sum", endpoint: str = model.endpoint) -> list[Any]:
            return ["AWS/SageMaker", name, "EndpointName", endpoint, "VariantName", variant, {"stat": stat}]

        panels = [
            ("Invocations", [metric("Invocations", v) for v in (*GUARDED_VARIANTS, SHADOW)]),
            ("Latency p95 (us)", [metric("ModelLatency", v, "p95") for v in (*GUARDED_VARIANTS, SHADOW)]),
            ("Errors per variant", [metric(m, v) for v in (*GUARDED_VARIANTS, SHADOW)
                                    for m in ("Invocation4XXErrors", "Invocation5XXErrors")]),
            ("Drift (max PSI)", [platform_metric(DRIFT_ALARM_METRIC, model.model, plan.spec.environment, v, "Maximum")
                                 for v in (*GUARDED_VARIANTS, SHADOW)]),
        ]
        for i, (title, metrics) in enumerate(panels):
            widgets.append({"type": "metric", "x": 6 * i, "y": y, "width": 6, "height": 6, "properties": {
                "title": f"{model.endpoint}: {title}", "region": plan.region, "metrics": metrics,
                "period": 300, "view": "timeSeries"}})
        y += 6
    widgets.append({"type": "metric", "x": 0, "y": y, "width": 24, "height": 6, "properties": {
        "title": f"Estimated charges (team {plan.spec.team})", "region": "us-east-1",
        "metrics": [["AWS/Billing", "EstimatedCharges", "Currency", "USD", {"stat": "Maximum"}]],
        "period": 21600, "view": "timeSeries"}})
    return json.dumps({"widgets": widgets}, sort_keys=True)


# --- pipelines ---------------------------------------------------------------------------


def training_image(region: str, account: str) -> str:
    return f"{account}.dkr.ecr.{region}.amazonaws.com/mlplat/train:latest"


def scheduler_role_name(plan: StackPlan) -> str:
    """The role EventBridge Scheduler assumes to start the stack's pipelines on their schedules."""
    return slug(f"{plan.prefix}-scheduler", 64)


# One owner per pipeline: the program owns each model's default training pipeline (train -> the gate ->
# register -> staging) and its deploy pipeline (production promotion -> canary deploy, started when a
# version is Approved); the runtime owns the pipelines `mlplat pipeline run` declares, and refuses these
# names. Both are compiled by the same compiler (pipeline_compiler) and checked by the same rules, so every
# property file has its output, every condition reads what the gate's report holds, every step runs a
# command that exists, and every parameter is read. The program's pipelines read the project from
# SourceUri, by default the archive of the last clean commit the runtime uploaded (source/current.tar.gz).
def current_source_uri(plan: StackPlan) -> str:
    return f"s3://{plan.bucket}/source/current.tar.gz"


def default_training_pipeline(plan: StackPlan, model: ModelPlan) -> PipelineDefinition:
    """The model's default training pipeline: the stack's retraining command (``python train.py`` when the
    stack names none), the gate, register, staging."""
    import shlex

    from mlplat.contracts.pipelines import PipelineDefinition, StepDefinition

    retrain = plan.spec.monitoring.retrain
    command = tuple(shlex.split(retrain.command if retrain is not None and retrain.command else "python train.py"))
    return PipelineDefinition(name=f"{model.model}-train", model=model.model, steps=(
        StepDefinition("train", command=command, outputs=("model",), retries=2, cache=False),
        StepDefinition("evaluate", kind="evaluate", depends_on=("train",)),
        StepDefinition("register", kind="register", depends_on=("evaluate",)),
        StepDefinition("promote", kind="promote", depends_on=("register",), params={"target": "staging"}),
    ))


def default_deploy_pipeline(plan: StackPlan, model: ModelPlan) -> PipelineDefinition:
    """The model's deploy pipeline: promote the version to production (approvals checked by the platform),
    then roll it out with the stack's canary."""
    from mlplat.contracts.pipelines import PipelineDefinition, StepDefinition

    spec = plan.spec
    return PipelineDefinition(name=f"{model.model}-deploy", model=model.model, steps=(
        StepDefinition("promote", kind="promote", params={"target": "production"}),
        StepDefinition("deploy", command=("mlplat", "deploy", model.model, "{version}", "--stack", spec.name,
                                          "--env", spec.environment, "--strategy", "canary"),
                       depends_on=("promote",), cache=False, instance_type=DEPLOY_INSTANCE),
    ))


def _compile(plan: StackPlan, pipeline: PipelineDefinition, *, role_arn: str, account: str, environment: dict[str, str]) -> str:
    from mlplat_providers.aws import pipeline_compiler as pc

    target = pc.CompileTarget(stack=plan.spec.name, bucket=plan.bucket, role_arn=role_arn,
                              image=training_image(plan.region, account), source_uri=current_source_uri(plan),
                              environment=environment, tags=plan.tags, instance_type=TRAINING_INSTANCE)
    return json.dumps(pc.compile_definition(pipeline, target), sort_keys=True)


def job_environment(plan: StackPlan, *, tracking_arn: str, control_plane_url: str | None) -> dict[str, str]:
    """What every job of the stack's pipelines sees: the stack, its tracking server, its control plane."""
    env = {"MLFLOW_TRACKING_URI": tracking_arn, "MLPLAT_STACK": plan.spec.name, "MLPLAT_TEAM": plan.spec.team}
    url = control_plane_url or plan.spec.control_plane.url
    if url:
        env["MLPLAT_CONTROL_PLANE_URL"] = url
    return env


def pipeline_definition(plan: StackPlan, model: ModelPlan, *, tracking_arn: str, role_arn: str, account: str,
                        control_plane_url: str | None = None) -> str:
    """The model's default training pipeline as a SageMaker pipeline definition (JSON)."""
    return _compile(plan, default_training_pipeline(plan, model), role_arn=role_arn, account=account,
                    environment=job_environment(plan, tracking_arn=tracking_arn, control_plane_url=control_plane_url))


def deploy_pipeline_definition(plan: StackPlan, model: ModelPlan, *, role_arn: str, account: str,
                               tracking_arn: str = "", control_plane_url: str | None = None) -> str:
    """The pipeline the approval event starts (ModelVersion=approved: the newest Approved version)."""
    return _compile(plan, default_deploy_pipeline(plan, model), role_arn=role_arn, account=account,
                    environment=job_environment(plan, tracking_arn=tracking_arn, control_plane_url=control_plane_url))


def approval_event_pattern(group: str) -> str:
    """EventBridge pattern: a version of ``group`` became Approved."""
    return json.dumps({"source": ["aws.sagemaker"], "detail-type": [PACKAGE_EVENT],
                       "detail": {"ModelPackageGroupName": [group], "ModelApprovalStatus": ["Approved"]}},
                      sort_keys=True)


# --- IAM ---------------------------------------------------------------------------------


def assume_role_policy(*services: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": list(services)}, "Action": "sts:AssumeRole"}]})


# SageMaker creates that carry the stack's tags. IAM sees no resource tags on a create call (the
# resource does not exist yet), so these are allowed on the tags the request sends (aws:RequestTag)
# and on which tag keys it may send (aws:TagKeys); tags sent with a create may be authorized as
# sagemaker:AddTags too, under the same conditions.
# https://docs.aws.amazon.com/IAM/latest/UserGuide/access_tags.html#access_tags_control-requests
# https://docs.aws.amazon.com/sagemaker/latest/dg/security_iam_id-based-policy-examples.html
SAGEMAKER_TAGGED_CREATES = (
    "sagemaker:CreateModel", "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint",
    "sagemaker:CreateModelPackageGroup", "sagemaker:CreateTrainingJob", "sagemaker:CreateProcessingJob",
    "sagemaker:CreatePipeline", "sagemaker:CreateFeatureGroup", "sagemaker:CreateMonitoringSchedule",
    "sagemaker:CreateDataQualityJobDefinition", "sagemaker:CreateModelQualityJobDefinition", "sagemaker:AddTags",
)
# Everything else the platform does to its own SageMaker resources, allowed on their team tag.
SAGEMAKER_ON_TEAM_RESOURCES = (
    "sagemaker:Describe*", "sagemaker:Update*", "sagemaker:Delete*", "sagemaker:InvokeEndpoint*",
    "sagemaker:StartPipelineExecution", "sagemaker:StopPipelineExecution", "sagemaker:RetryPipelineExecution",
    "sagemaker:SendPipelineExecutionStep*", "sagemaker:StartMonitoringSchedule", "sagemaker:StopMonitoringSchedule",
    "sagemaker:PutRecord", "sagemaker:GetRecord", "sagemaker:BatchGetRecord", "sagemaker:DeleteRecord",
    "sagemaker:ListTags", "sagemaker:GetModelPackageGroupPolicy",
)
# Versions in a model package group carry no tags of their own: they are scoped by the group's name
# (<team>-<model>) in their ARN instead.
SAGEMAKER_MODEL_PACKAGES = ("sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage",
                            "sagemaker:UpdateModelPackage", "sagemaker:BatchDescribeModelPackage",
                            "sagemaker:ListTags")
# List and search calls name no resource: IAM cannot scope them by resource or tag.
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html
SAGEMAKER_LISTS = ("sagemaker:List*", "sagemaker:Search")
# The offline store of a feature group: SageMaker writes Parquet under the store's S3 prefix and
# keeps the group's Glue table in step (AmazonSageMakerFeatureStoreAccess, scoped to this stack).
# https://docs.aws.amazon.com/sagemaker/latest/dg/security-iam-awsmanpol-feature-store.html
FEATURE_STORE_GLUE = ("glue:GetDatabase", "glue:GetTable", "glue:GetTables", "glue:CreateTable", "glue:UpdateTable",
                      "glue:GetPartitions", "glue:BatchCreatePartition")
# Jobs, endpoints and pipelines log to /aws/sagemaker/* and create their log groups on first use.
# https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html
LOG_ACTIONS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams")


def feature_database(plan: StackPlan) -> str:
    """The Glue database of the stack's offline feature store (Glue names take underscores, not hyphens)."""
    return slug(f"{plan.prefix}-features").replace("-", "_")


def platform_role_arn(plan: StackPlan, account: str | None = None) -> str:
    """The platform role's ARN (any account when the stack names none)."""
    account = account or getattr(plan.spec.provider, "account_id", None) or "*"
    return f"arn:aws:iam::{account}:role/{slug(f'{plan.prefix}-platform', 64)}"


def platform_role_policy(plan: StackPlan, account: str | None = None) -> str:
    """What the platform role may do: its bucket, SageMaker on the team's resources (created with the team's
    tags), passing itself to SageMaker, the offline feature store, logs, metrics and images.

    Every rule of :mod:`mlplat_providers.aws.account_rules` holds for the document (tests/unit pins it)."""
    account = account or getattr(plan.spec.provider, "account_id", None) or "*"
    region, team, bucket = plan.region, plan.spec.team, plan.bucket
    sm = f"arn:aws:sagemaker:{region}:{account}"
    database = feature_database(plan)
    tag_keys = sorted({*plan.tags, "risk-tier"})
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "ArtifactBucket", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "s3:GetBucketLocation",
                    # uploads carry object tags (team, model): PutObject with tags needs s3:PutObjectTagging
                    # https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html
                    "s3:PutObjectTagging", "s3:GetObjectTagging"],
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]},
        {"Sid": "SageMakerCreateWithTeamTags", "Effect": "Allow", "Action": list(SAGEMAKER_TAGGED_CREATES),
         "Resource": f"{sm}:*",
         "Condition": {"StringEquals": {"aws:RequestTag/team": team},
                       "ForAllValues:StringEquals": {"aws:TagKeys": tag_keys}}},
        {"Sid": "SageMakerOnTeamResources", "Effect": "Allow", "Action": list(SAGEMAKER_ON_TEAM_RESOURCES),
         "Resource": f"{sm}:*", "Condition": {"StringEquals": {"aws:ResourceTag/team": team}}},
        {"Sid": "SageMakerTeamModelPackages", "Effect": "Allow", "Action": list(SAGEMAKER_MODEL_PACKAGES),
         "Resource": [f"{sm}:model-package/{team}-*", f"{sm}:model-package-group/{team}-*"]},
        # the registry's aliases are tags on the team's groups (mlplat:alias:<name>), moved by the runtime
        {"Sid": "AliasTagsOnTeamGroups", "Effect": "Allow", "Action": ["sagemaker:AddTags", "sagemaker:DeleteTags"],
         "Resource": f"{sm}:model-package-group/{team}-*",
         "Condition": {"ForAllValues:StringLike": {"aws:TagKeys": ["mlplat:alias:*"]}}},
        {"Sid": "SageMakerListAndSearch", "Effect": "Allow", "Action": list(SAGEMAKER_LISTS), "Resource": "*"},
        {"Sid": "TrackingServer", "Effect": "Allow",
         "Action": ["sagemaker-mlflow:*", "sagemaker:CreatePresignedMlflowTrackingServerUrl"],
         "Resource": f"{sm}:mlflow-tracking-server/{plan.tracking_server}"},
        {"Sid": "PassPlatformRoleToSageMaker", "Effect": "Allow", "Action": "iam:PassRole",
         "Resource": platform_role_arn(plan, account),
         "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}},
        {"Sid": "OfflineFeatureStoreCatalog", "Effect": "Allow", "Action": list(FEATURE_STORE_GLUE),
         "Resource": [f"arn:aws:glue:{region}:{account}:catalog", f"arn:aws:glue:{region}:{account}:database/{database}",
                      f"arn:aws:glue:{region}:{account}:table/{database}/*"]},
        {"Sid": "OfflineFeatureStoreObjects", "Effect": "Allow",
         "Action": ["s3:GetBucketAcl", "s3:PutObjectAcl"],
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/features/*"]},
        {"Sid": "SageMakerLogs", "Effect": "Allow", "Action": list(LOG_ACTIONS),
         "Resource": f"arn:aws:logs:{region}:{account}:log-group:/aws/sagemaker/*"},
        {"Sid": "MetricsAlarmsImagesBills", "Effect": "Allow",
         "Action": ["cloudwatch:PutMetricData", "cloudwatch:GetMetricData", "cloudwatch:GetMetricStatistics",
                    # the opt-in Model Monitor schedule's per-feature alarms (runtime/model_monitor.py)
                    "cloudwatch:DescribeAlarms", "cloudwatch:PutMetricAlarm", "ecr:GetAuthorizationToken",
                    "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability", "ce:GetCostAndUsage"],
         "Resource": "*"},
    ]}, sort_keys=True)


def group_policy(group_arn: str, account: str) -> str:
    """Model package group policy: principals of the owning account may read and register; nobody else."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "OwningAccountOnly", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
        "Action": ["sagemaker:DescribeModelPackage", "sagemaker:ListModelPackages",
                   "sagemaker:DescribeModelPackageGroup", "sagemaker:CreateModelPackage"],
        "Resource": [group_arn, group_arn.replace(":model-package-group/", ":model-package/") + "/*"]}]},
        sort_keys=True)


# --- alerts ------------------------------------------------------------------------------------

# CloudWatch alarms and AWS Budgets publish to the alert topic. The topic is encrypted with a customer
# managed key: the AWS managed alias/aws/sns key's policy cannot let those services use it, so their
# notifications would never arrive (account_rules.topic_publisher_problems says why, with sources).
def alert_topic_name(plan: StackPlan) -> str:
    return slug(f"{plan.prefix}-alerts", 256)


def alert_key_policy(account: str) -> str:
    """The alert topic's KMS key policy: the account administers the key (IAM policies decide who else may);
    the publishing services may decrypt and generate data keys, which SNS does on their behalf."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "AccountAdministersKey", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "AlarmAndBudgetPublishers", "Effect": "Allow", "Principal": {"Service": list(ALERT_PUBLISHERS)},
         "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*"},
    ]}, sort_keys=True)


def alert_topic_policy(topic_arn: str, account: str, region: str) -> str:
    """Who may publish to the alert topic: this account's CloudWatch alarms and budgets, nobody else's.
    https://docs.aws.amazon.com/cost-management/latest/userguide/budgets-sns-policy.html"""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "CloudWatchAlarms", "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
         "Action": "SNS:Publish", "Resource": topic_arn,
         "Condition": {"StringEquals": {"aws:SourceAccount": account},
                       "ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:{region}:{account}:alarm:*"}}},
        {"Sid": "Budgets", "Effect": "Allow", "Principal": {"Service": "budgets.amazonaws.com"},
         "Action": "SNS:Publish", "Resource": topic_arn,
         "Condition": {"StringEquals": {"aws:SourceAccount": account},
                       "ArnLike": {"aws:SourceArn": f"arn:aws:budgets::{account}:*"}}},
    ]}, sort_keys=True)


# --- features and cost --------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureGroupPlan:
    name: str
    record_id: str
    event_time: str
    features: dict[str, str]  # name → Integral | Fractional | String


def feature_groups(spec: StackSpec) -> list[FeatureGroupPlan]:
    """Feature groups declared under ``features.groups`` (name → {recordId, eventTime, features}); without
    a declaration, one entity group for the team so the store, catalog and roles exist from the start."""
    features = spec.features
    declared = features.get("groups") if isinstance(features, dict) else getattr(features, "groups", None)
    out = []
    for name, group in (declared or {}).items():
        group = group if isinstance(group, dict) else group.model_dump(by_alias=True)
        out.append(FeatureGroupPlan(slug(f"{spec.team}-{name}"), group.get("recordId", "entity_id"),
                                    group.get("eventTime", "event_time"),
                                    dict(group.get("features") or {})))
    if not out:
        out.append(FeatureGroupPlan(slug(f"{spec.team}-{spec.environment}-entities"), "entity_id", "event_time", {}))
    return out


def feature_definitions(group: FeatureGroupPlan) -> list[dict[str, str]]:
    fields = {group.record_id: "String", group.event_time: "String", **group.features}
    return [{"feature_name": name, "feature_type": kind} for name, kind in fields.items()]


# Cost allocation tags are activated for the whole account (by the organization's management account),
# only once Billing has seen the keys (up to 24 hours after first use), and two stacks activating the
# same keys would fight over them: the program activates them only when the stack opts in
# (mlplat:provider.activateCostAllocationTags), and never deactivates them on destroy.
# https://docs.aws.amazon.com/awsaccountbilling/latest/aboutv2/activating-tags.html
COST_ALLOCATION_TAGS = ("team", "cost-center", "environment", "owner")


def cost_allocation_tags(spec: StackSpec) -> list[str]:
    """The tag keys the program activates for Cost Explorer: none unless the stack opts in."""
    return list(COST_ALLOCATION_TAGS) if getattr(spec.provider, "activate_cost_allocation_tags", False) else []


def budget_plan(spec: StackSpec) -> dict[str, Any] | None:
    if spec.budget is None:
        return None
    return {
        "limit": f"{spec.budget.monthly_usd:.2f}",
        "tag_filter": f"user:team${spec.team}",
        "thresholds": [round(share * 100, 2) for share in spec.budget.alert_at],
    }
