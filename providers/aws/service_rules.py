"""Rules AWS enforces on requests and Pulumi's mocks do not: names, versions, sizes.

Each rule returns the reason a value would be refused, or ``None`` when AWS accepts it, so the
stack is refused at validation (or planning) time with the reason, instead of at ``mlplat up`` by
the cloud. Stdlib only: the settings model calls these without any cloud SDK installed.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# --- RDS -------------------------------------------------------------------------------------

# DB instance identifiers: 1-63 letters, digits or hyphens; the first a letter; no trailing hyphen
# and no two consecutive hyphens. Final snapshot identifiers follow the same rules up to 255.
# https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBInstance.html (DBInstanceIdentifier)
# https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DeleteDBInstance.html (FinalDBSnapshotIdentifier)
_RDS_CHARS = re.compile(r"^[A-Za-z0-9-]+$")


def rds_identifier_problem(name: str, *, limit: int = 63, what: str = "RDS DB instance identifier") -> str | None:
    """Why RDS would refuse ``name`` as an identifier, or ``None``."""
    if not 1 <= len(name) <= limit:
        return f"{what} {name!r} has {len(name)} characters; RDS allows 1 to {limit}"
    if not _RDS_CHARS.match(name):
        return f"{what} {name!r} may hold only letters, digits and hyphens"
    if not name[0].isalpha():
        return f"{what} {name!r} must start with a letter"
    if "--" in name:
        return f"{what} {name!r} contains two consecutive hyphens"
    if name.endswith("-"):
        return f"{what} {name!r} ends with a hyphen"
    return None


# RDS for PostgreSQL engine versions: since PostgreSQL 10 a version is MAJOR.MINOR ("16.4"); a major
# version alone ("16") lets RDS pick the default minor version and upgrade minors automatically.
# Versions before 10 had three parts (9.6.22) and are no longer offered by RDS.
# https://docs.aws.amazon.com/AmazonRDS/latest/PostgreSQLReleaseNotes/postgresql-versions.html
_PG_VERSION = re.compile(r"^(\d{2})(?:\.(\d{1,2}))?$")
PG_OLDEST_MAJOR = 11


def postgres_version_problem(version: str) -> str | None:
    """Why ``version`` is not an RDS for PostgreSQL engine version (``16`` or ``16.4``), or ``None``."""
    match = _PG_VERSION.match(version)
    if match is None:
        return (f"PostgreSQL engine version {version!r} is not MAJOR or MAJOR.MINOR (e.g. '16' or '16.4'); "
                "RDS for PostgreSQL names versions that way since PostgreSQL 10")
    if int(match.group(1)) < PG_OLDEST_MAJOR:
        return f"PostgreSQL {match.group(1)} is older than any major version RDS offers (>= {PG_OLDEST_MAJOR})"
    return None


# DB instance classes are db.<family>.<size>, e.g. db.t4g.micro, db.m7g.large, db.r6i.2xlarge.
# https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/Concepts.DBInstanceClass.html
DB_INSTANCE_CLASS = r"^db\.[a-z][a-z0-9-]*\.[a-z0-9]+$"


# --- ECS on Fargate ------------------------------------------------------------------------------

# Task-level CPU units → the memory sizes (MiB) Fargate accepts with them (Linux; 8 and 16 vCPU need
# platform version 1.4.0 or later).
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size
FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}


def fargate_size_problem(cpu: int, memory: int) -> str | None:
    """Why Fargate would refuse a task of ``cpu`` units and ``memory`` MiB, or ``None``."""
    allowed = FARGATE_SIZES.get(cpu)
    if allowed is None:
        return f"Fargate task CPU {cpu} is not one of {', '.join(map(str, FARGATE_SIZES))} (CPU units; 1024 = 1 vCPU)"
    if memory not in allowed:
        step = allowed[1] - allowed[0]
        return (f"Fargate does not run {cpu} CPU units with {memory} MiB: choose {allowed[0]}-{allowed[-1]} MiB "
                f"in steps of {step}" if len(allowed) > 3 else
                f"Fargate does not run {cpu} CPU units with {memory} MiB: choose one of {', '.join(map(str, allowed))}")
    return None


# --- Elastic Load Balancing ----------------------------------------------------------------------

# Load balancer and target group names: at most 32 letters, digits or hyphens, not beginning or ending
# with a hyphen; a load balancer's name must not begin with "internal-".
# https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_CreateLoadBalancer.html
# https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_CreateTargetGroup.html
_ELB_CHARS = re.compile(r"^[A-Za-z0-9-]+$")


def elb_name_problem(name: str, *, what: str = "load balancer name") -> str | None:
    """Why Elastic Load Balancing would refuse ``name`` for a load balancer or target group, or ``None``."""
    if not 1 <= len(name) <= 32:
        return f"{what} {name!r} has {len(name)} characters; Elastic Load Balancing allows 1 to 32"
    if not _ELB_CHARS.match(name):
        return f"{what} {name!r} may hold only letters, digits and hyphens"
    if name.startswith("-") or name.endswith("-"):
        return f"{what} {name!r} begins or ends with a hyphen"
    if what == "load balancer name" and name.startswith("internal-"):
        return f"{what} {name!r} begins with 'internal-', which AWS reserves for internal load balancers' DNS names"
    return None


# --- VPC -----------------------------------------------------------------------------------------

# A VPC's IPv4 block is between /16 and /28; the program splits it in four subnets (two private, one
# public for the NAT gateway, one spare), each at least /28, so the block is /16 to /26.
# https://docs.aws.amazon.com/vpc/latest/userguide/vpc-cidr-blocks.html
VPC_PREFIX_RANGE = (16, 26)


def vpc_cidr_problem(cidr: str) -> str | None:
    """Why ``cidr`` cannot be the control plane's VPC block, or ``None``."""
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        return f"VPC CIDR {cidr!r} is not an IPv4 network ({exc})"
    if network.version != 4:
        return f"VPC CIDR {cidr!r} is not IPv4"
    low, high = VPC_PREFIX_RANGE
    if not low <= network.prefixlen <= high:
        return f"VPC CIDR {cidr!r} is /{network.prefixlen}; the control plane's VPC needs /{low} to /{high}"
    return None


def cidr_problem(cidr: str) -> str | None:
    """Why ``cidr`` is not an IPv4 network in CIDR notation, or ``None``."""
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        return f"{cidr!r} is not a network in CIDR notation ({exc})"
    return None if network.version == 4 else f"{cidr!r} is not IPv4"


# --- SageMaker endpoints: deployment guardrails, data capture ------------------------------------

# TrafficRoutingConfig: WaitIntervalInSeconds 0-3600; CanarySize at most 50 % of the variant's instance
# count; LinearStepSize 10-50 % of it. CapacitySize: INSTANCE_COUNT or CAPACITY_PERCENT, a whole number >= 1.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TrafficRoutingConfig.html
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CapacitySize.html
MAX_WAIT_INTERVAL = 3600
# BlueGreenUpdatePolicy: MaximumExecutionTimeoutInSeconds 600-28800 and larger than the waits it covers;
# TerminationWaitInSeconds 0-3600.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_BlueGreenUpdatePolicy.html
MIN_EXECUTION_TIMEOUT, MAX_EXECUTION_TIMEOUT = 600, 28_800
MAX_TERMINATION_WAIT = 3600
# AutoRollbackConfig: 1 to 10 CloudWatch alarms.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_AutoRollbackConfig.html
MAX_ROLLBACK_ALARMS = 10


def canary_instances(first_step: int, fleet: int) -> float:
    """The share of a ``fleet`` of instances that a first canary step of ``first_step`` % is, in instances."""
    return first_step * fleet / 100.0


def canary_schedule_problem(steps: list[int], fleet: int) -> str | None:
    """Why SageMaker cannot run the first step of ``steps`` as the canary of a blue/green deployment of a
    variant of ``fleet`` instances, or ``None``.

    A fleet of one instance has no canary (half of it is not a whole instance): SageMaker shifts it all at
    once, after the bake, watched by the rollback alarms. A larger fleet's canary is the first step's share
    of it, which must be whole instances and at most half the fleet. Later steps are the platform's own
    (``UpdateEndpointWeightsAndCapacities`` between variants), which SageMaker does not limit.
    """
    if fleet < 1:
        return f"an endpoint variant needs at least one instance, got {fleet}"
    if fleet == 1 or not steps or steps[0] >= 100:
        return None
    instances = canary_instances(steps[0], fleet)
    if instances != int(instances):
        return (f"the first canary step, {steps[0]} % of {fleet} instances, is {instances:g} instances; SageMaker's "
                f"CanarySize is whole instances (choose a first step that is a multiple of {100 / fleet:g} %, "
                f"or another instanceCount)")
    if instances > fleet / 2:
        return (f"the first canary step, {steps[0]} % of {fleet} instances, is {int(instances)} instances; "
                f"SageMaker's CanarySize is at most half the variant's instances ({fleet // 2})")
    return None


def blue_green_problem(policy: dict[str, Any], *, fleet: int) -> str | None:
    """Why SageMaker would refuse ``policy`` (a ``BlueGreenUpdatePolicy`` request shape) for a variant of
    ``fleet`` instances, or ``None``."""
    routing = policy.get("TrafficRoutingConfiguration") or {}
    kind = routing.get("Type")
    wait = routing.get("WaitIntervalInSeconds")
    if kind not in ("ALL_AT_ONCE", "CANARY", "LINEAR"):
        return f"TrafficRoutingConfiguration.Type {kind!r} is not ALL_AT_ONCE, CANARY or LINEAR"
    if not isinstance(wait, int) or not 0 <= wait <= MAX_WAIT_INTERVAL:
        return f"WaitIntervalInSeconds {wait!r} is outside 0-{MAX_WAIT_INTERVAL}"
    if kind in ("CANARY", "LINEAR"):
        size = routing.get("CanarySize" if kind == "CANARY" else "LinearStepSize") or {}
        value, unit = size.get("Value"), size.get("Type")
        if not isinstance(value, int) or value < 1 or unit not in ("INSTANCE_COUNT", "CAPACITY_PERCENT"):
            return f"the {kind} size {size!r} is not a whole INSTANCE_COUNT or CAPACITY_PERCENT of at least 1"
        instances = value if unit == "INSTANCE_COUNT" else canary_instances(value, fleet)
        if kind == "CANARY" and (instances != int(instances) or instances > fleet / 2):
            return (f"CanarySize {value} {unit} of a {fleet}-instance variant is {instances:g} instances; it must be "
                    "whole instances and at most half the variant's instances")
        if kind == "LINEAR" and not (0.1 * fleet <= instances <= 0.5 * fleet and instances == int(instances)):
            return (f"LinearStepSize {value} {unit} of a {fleet}-instance variant is {instances:g} instances; it "
                    "must be whole instances and 10-50 % of the variant's instances")
    steps = {"ALL_AT_ONCE": 1, "CANARY": 2}.get(kind, 0)
    if kind == "LINEAR":
        size = routing["LinearStepSize"]
        steps = -(-(fleet if size["Type"] == "INSTANCE_COUNT" else 100) // size["Value"])
    termination = policy.get("TerminationWaitInSeconds", 0)
    if not isinstance(termination, int) or not 0 <= termination <= MAX_TERMINATION_WAIT:
        return f"TerminationWaitInSeconds {termination!r} is outside 0-{MAX_TERMINATION_WAIT}"
    timeout = policy.get("MaximumExecutionTimeoutInSeconds")
    if timeout is not None:
        if not isinstance(timeout, int) or not MIN_EXECUTION_TIMEOUT <= timeout <= MAX_EXECUTION_TIMEOUT:
            return f"MaximumExecutionTimeoutInSeconds {timeout!r} is outside {MIN_EXECUTION_TIMEOUT}-{MAX_EXECUTION_TIMEOUT}"
        if timeout <= termination + steps * wait:
            return (f"MaximumExecutionTimeoutInSeconds {timeout} does not exceed the waits it covers "
                    f"({steps} x {wait} s + {termination} s)")
    return None


# Deployment guardrails (blue/green with a traffic routing policy and rollback alarms) need the new endpoint
# configuration to carry the same variant names as the old one; and UpdateEndpoint drops the endpoint's
# deployment configuration unless the request sends one or sets RetainDeploymentConfig.
# https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html
def update_endpoint_problem(request: dict[str, Any], *, old_variants: set[str], new_variants: set[str],
                            fleet: int) -> str | None:
    """Why an ``UpdateEndpoint`` request from a configuration with ``old_variants`` to one with ``new_variants``
    would be refused, or would silently drop the endpoint's guardrails; ``None`` when it is sound."""
    deployment = request.get("DeploymentConfig")
    if deployment is not None and old_variants != new_variants:
        return (f"UpdateEndpoint sends a DeploymentConfig, but the variants change ({sorted(old_variants)} -> "
                f"{sorted(new_variants)}); deployment guardrails need the same variant names in both configurations")
    if old_variants == new_variants and deployment is None and not request.get("RetainDeploymentConfig"):
        return ("UpdateEndpoint between configurations with the same variants sends no DeploymentConfig and does not "
                "set RetainDeploymentConfig: the blue/green policy and the rollback alarms would be dropped")
    if deployment is not None:
        rollback = deployment.get("AutoRollbackConfiguration")
        alarms = (rollback or {}).get("Alarms") or []
        if rollback is not None and not 1 <= len(alarms) <= MAX_ROLLBACK_ALARMS:
            return f"AutoRollbackConfiguration has {len(alarms)} alarms; SageMaker takes 1 to {MAX_ROLLBACK_ALARMS}"
        policy = deployment.get("BlueGreenUpdatePolicy")
        if policy is not None:
            return blue_green_problem(policy, fleet=fleet)
    return None


# Data capture: without CaptureContentTypeHeader SageMaker base64-encodes the captured payloads.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CaptureContentTypeHeader.html
def data_capture_problem(config: dict[str, Any]) -> str | None:
    """Why a ``DataCaptureConfig`` request shape would not give monitoring readable JSON, or ``None``."""
    if not config.get("EnableCapture", True):
        return None
    if not (config.get("CaptureContentTypeHeader") or {}).get("JsonContentTypes"):
        return "DataCaptureConfig has no CaptureContentTypeHeader.JsonContentTypes: SageMaker would base64-encode payloads"
    modes = {o.get("CaptureMode") for o in config.get("CaptureOptions") or []}
    if modes != {"Input", "Output"}:
        return f"DataCaptureConfig captures {sorted(m for m in modes if m)}; monitoring needs Input and Output"
    return None


# A versioned model package is deployable (CreateModel with ModelPackageName) only once Approved.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateModelPackage.html (ModelApprovalStatus)
def package_deploy_problem(status: str) -> str | None:
    """Why SageMaker would refuse to build a model from a versioned package in ``status``, or ``None``."""
    if status != "Approved":
        return f"the model package is {status}; SageMaker deploys a versioned package only once it is Approved"
    return None


# --- CloudWatch: publishing metrics --------------------------------------------------------------

# PutMetricData: a request names one namespace and at most 1,000 metric data; its body is at most 1 MB. A
# namespace is 1-255 characters, ASCII without control characters, and should not begin with "AWS/" (AWS's
# own services publish there). A datum has a metric name of 1-255 characters, at most 30 dimensions, one
# Value (or at most 150 Values with as many Counts) in [-2^360, 2^360] and never NaN or an infinity, a
# StorageResolution of 1 or 60, and a timestamp from two weeks before to two hours after the request.
# A dimension's name is 1-255 ASCII characters, not beginning with a colon; its value 1-1024 ASCII
# characters; both hold at least one non-whitespace character and no control characters.
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricData.html
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_MetricDatum.html
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_Dimension.html
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/publishingMetrics.html
MAX_METRIC_DATA = 1000
MAX_REQUEST_BYTES = 1_000_000
MAX_DIMENSIONS = 30
MAX_VALUES = 150
MAX_NAME = 255
MAX_DIMENSION_VALUE = 1024
MAX_METRIC_VALUE = 2.0 ** 360
MAX_PAST_SECONDS = 14 * 86_400
MAX_FUTURE_SECONDS = 2 * 3_600
STORAGE_RESOLUTIONS = (1, 60)
RESERVED_NAMESPACE = "AWS/"


def _ascii_text_problem(text: Any, what: str, limit: int) -> str | None:
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        size = len(text) if isinstance(text, str) else "no"
        return f"{what} {text!r} has {size} characters; CloudWatch takes 1 to {limit}"
    if not text.isascii():
        return f"{what} {text!r} holds non-ASCII characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return f"{what} {text!r} holds control characters"
    if not text.strip():
        return f"{what} {text!r} has no non-whitespace character"
    return None


def namespace_problem(namespace: Any) -> str | None:
    """Why CloudWatch would refuse (or reserve) ``namespace`` for custom metrics, or ``None``."""
    problem = _ascii_text_problem(namespace, "namespace", MAX_NAME)
    if problem:
        return problem
    if str(namespace).startswith(RESERVED_NAMESPACE):
        return f"namespace {namespace!r} begins with {RESERVED_NAMESPACE!r}, which AWS's own services use"
    return None


def dimension_problem(dimension: Any) -> str | None:
    """Why CloudWatch would refuse a ``{"Name", "Value"}`` dimension, or ``None``."""
    if not isinstance(dimension, dict) or set(dimension) != {"Name", "Value"}:
        return f"dimension {dimension!r} is not {{'Name': ..., 'Value': ...}}"
    problem = _ascii_text_problem(dimension["Name"], "dimension name", MAX_NAME) or \
        _ascii_text_problem(dimension["Value"], f"value of dimension {dimension['Name']}", MAX_DIMENSION_VALUE)
    if problem:
        return problem
    if dimension["Name"].startswith(":"):
        return f"dimension name {dimension['Name']!r} begins with a colon"
    return None


def _value_problem(value: Any, what: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{what} {value!r} is not a number"
    if value != value or value in (float("inf"), float("-inf")):
        return f"{what} is {value}; CloudWatch takes no NaN or infinity"
    if abs(value) > MAX_METRIC_VALUE:
        return f"{what} {value:g} is outside -2^360 to 2^360"
    return None


def metric_datum_problems(datum: Any, *, now: float) -> list[str]:
    """Why CloudWatch would refuse one ``MetricDatum`` sent at ``now`` (epoch seconds); [] when it accepts it."""
    if not isinstance(datum, dict):
        return [f"metric datum {datum!r} is not a mapping"]
    name = datum.get("MetricName")
    problems = [p for p in [_ascii_text_problem(name, "metric name", MAX_NAME)] if p]
    where = f"metric {name!r}"
    dimensions = datum.get("Dimensions") or []
    if len(dimensions) > MAX_DIMENSIONS:
        problems.append(f"{where} has {len(dimensions)} dimensions; CloudWatch takes at most {MAX_DIMENSIONS}")
    problems += [f"{where}: {p}" for p in map(dimension_problem, dimensions) if p]
    names = [str(d.get("Name")) for d in dimensions if isinstance(d, dict)]
    if len(names) != len(set(names)):
        problems.append(f"{where} names a dimension twice ({sorted(names)})")
    shapes = [k for k in ("Value", "Values", "StatisticValues") if k in datum]
    if len(shapes) != 1:
        problems.append(f"{where} needs exactly one of Value, Values or StatisticValues (has {shapes or 'none'})")
    if "Value" in datum:
        problems += [f"{where}: {p}" for p in [_value_problem(datum["Value"], "Value")] if p]
    if "Values" in datum:
        values, counts = list(datum["Values"]), datum.get("Counts")
        if not 1 <= len(values) <= MAX_VALUES:
            problems.append(f"{where} has {len(values)} Values; CloudWatch takes 1 to {MAX_VALUES}")
        if counts is not None and len(counts) != len(values):
            problems.append(f"{where} has {len(counts)} Counts for {len(values)} Values")
        problems += [f"{where}: {p}" for p in (_value_problem(v, "a value") for v in values) if p]
    if "StorageResolution" in datum and datum["StorageResolution"] not in STORAGE_RESOLUTIONS:
        problems.append(f"{where}: StorageResolution {datum['StorageResolution']!r} is not 1 or 60")
    stamp = datum.get("Timestamp")
    if stamp is not None:
        ts = stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)
        if ts < now - MAX_PAST_SECONDS or ts > now + MAX_FUTURE_SECONDS:
            problems.append(f"{where}: its timestamp is more than two weeks before or two hours after the request")
    return problems


def put_metric_data_problems(request: Any, *, now: float) -> list[str]:
    """Why CloudWatch would refuse one ``PutMetricData`` request sent at ``now``; [] when it accepts it."""
    import json

    problems = [p for p in [namespace_problem(request.get("Namespace"))] if p]
    data = list(request.get("MetricData") or [])
    if not 1 <= len(data) <= MAX_METRIC_DATA:
        problems.append(f"PutMetricData carries {len(data)} metric data; CloudWatch takes 1 to {MAX_METRIC_DATA}")
    for datum in data:
        problems += metric_datum_problems(datum, now=now)
    size = len(json.dumps(request, default=str).encode())
    if size > MAX_REQUEST_BYTES:
        problems.append(f"PutMetricData request of about {size} bytes exceeds CloudWatch's 1 MB")
    return problems


# --- CloudWatch: what an alarm may watch -----------------------------------------------------------

# An alarm on a metric nobody publishes stays INSUFFICIENT_DATA (or, treating missing data as not
# breaching, OK) forever: CloudWatch accepts any namespace, name and dimensions. A metric is the exact
# namespace, name and set of dimensions it was published with.
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch_concepts.html#Dimension
# SageMaker publishes the invocation metrics of a real-time endpoint in AWS/SageMaker per EndpointName and
# VariantName (the variant names the runtime creates).
# https://docs.aws.amazon.com/sagemaker/latest/dg/monitoring-cloudwatch.html
SAGEMAKER_NAMESPACE = "AWS/SageMaker"
SAGEMAKER_ENDPOINT_METRICS = frozenset({
    "Invocations", "Invocation4XXErrors", "Invocation5XXErrors", "InvocationModelErrors", "InvocationsPerInstance",
    "ModelLatency", "OverheadLatency", "ModelSetupTime", "ConcurrentRequestsPerModel",
})
# Model Monitor (data quality) publishes feature_baseline_drift_<feature> (a distance, not a PSI) and other
# per-feature metrics in /aws/sagemaker/Endpoints/data-metric with the dimensions EndpointName and
# ScheduleName, and only when the schedule's baseline constraints set emit_metrics to Enabled.
# https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-interpreting-cloudwatch.html
MODEL_MONITOR_NAMESPACE = "/aws/sagemaker/Endpoints/data-metric"
MODEL_MONITOR_DRIFT_PREFIX = "feature_baseline_drift_"


@dataclass(frozen=True)
class Publisher:
    """Metrics something publishes: a namespace, metric names (a name ending in ``*`` is a prefix), the one
    set of dimension names they carry, and the values a dimension takes where they are known."""

    who: str
    namespace: str
    metrics: frozenset[str]
    dimensions: frozenset[str]
    values: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def publishes(self, namespace: str, metric: str, dimensions: Mapping[str, str]) -> bool:
        if namespace != self.namespace or set(dimensions) != set(self.dimensions):
            return False
        if not any(metric == m or (m.endswith("*") and metric.startswith(m[:-1]) and len(metric) > len(m) - 1)
                   for m in self.metrics):
            return False
        return all(dimensions[k] in allowed for k, allowed in self.values.items())


def alarm_metric_problem(namespace: str, metric: str, dimensions: Mapping[str, str],
                         publishers: Sequence[Publisher]) -> str | None:
    """Why an alarm on ``namespace``/``metric`` with ``dimensions`` would never see data (no publisher sends
    that exact metric), or ``None``."""
    if any(p.publishes(namespace, metric, dimensions) for p in publishers):
        return None
    near = [p.who for p in publishers if p.namespace == namespace]
    return (f"the alarm watches {namespace}/{metric} {dict(sorted(dimensions.items()))}, which nothing publishes"
            + (f" ({', '.join(near)} publish{'es' if len(near) == 1 else ''} other names or dimensions there)"
               if near else ""))


# --- SageMaker training jobs ---------------------------------------------------------------------

# CreateTrainingJob: TrainingJobName 1-63 characters matching ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}; at most
# 100 HyperParameters, keys up to 256 and values up to 2500 characters; at most 100 Environment variables,
# keys up to 512 characters matching [a-zA-Z_][a-zA-Z0-9_]* and values up to 512; at most 20 input
# channels named [A-Za-z0-9.\-_]{1,64}; at most 50 tags. EnableManagedSpotTraining needs
# StoppingCondition.MaxWaitTimeInSeconds, at least MaxRuntimeInSeconds. MaxRuntimeInSeconds defaults to
# 86400 and may be at most 28 days (2419200 s).
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTrainingJob.html
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StoppingCondition.html
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_Channel.html
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
MAX_HYPERPARAMETERS, MAX_HYPERPARAMETER_KEY, MAX_HYPERPARAMETER_VALUE = 100, 256, 2500
MAX_ENVIRONMENT, MAX_ENVIRONMENT_KEY, MAX_ENVIRONMENT_VALUE = 100, 512, 512
ENVIRONMENT_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_CHANNELS = 20
CHANNEL_NAME = re.compile(r"^[A-Za-z0-9.\-_]{1,64}$")
MAX_TAGS = 50
MAX_RUNTIME_SECONDS = 28 * 86_400


def training_job_name_problem(name: str) -> str | None:
    """Why SageMaker would refuse ``name`` as a training (or processing) job name, or ``None``."""
    if not JOB_NAME.match(name):
        return (f"job name {name!r} is not 1-63 letters, digits and hyphens starting and ending with a letter "
                "or digit (SageMaker's ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62})")
    return None


def hyperparameters_problem(hyperparameters: dict[str, str]) -> str | None:
    """Why SageMaker would refuse a training job's ``HyperParameters``, or ``None``."""
    if len(hyperparameters) > MAX_HYPERPARAMETERS:
        return f"{len(hyperparameters)} hyperparameters; SageMaker takes at most {MAX_HYPERPARAMETERS}"
    for key, value in hyperparameters.items():
        if not isinstance(value, str):
            return f"hyperparameter {key!r} is a {type(value).__name__}; SageMaker takes strings only"
        if len(key) > MAX_HYPERPARAMETER_KEY:
            return f"hyperparameter name {key[:40]!r}... has {len(key)} characters; at most {MAX_HYPERPARAMETER_KEY}"
        if len(value) > MAX_HYPERPARAMETER_VALUE:
            return (f"hyperparameter {key!r} has {len(value)} characters; SageMaker takes at most "
                    f"{MAX_HYPERPARAMETER_VALUE}")
    return None


def environment_problem(environment: dict[str, str]) -> str | None:
    """Why SageMaker would refuse a job's ``Environment`` map, or ``None``."""
    if len(environment) > MAX_ENVIRONMENT:
        return f"{len(environment)} environment variables; SageMaker takes at most {MAX_ENVIRONMENT}"
    for key, value in environment.items():
        if len(key) > MAX_ENVIRONMENT_KEY or not ENVIRONMENT_KEY.match(key):
            return (f"environment variable name {key[:40]!r} is not [a-zA-Z_][a-zA-Z0-9_]* of at most "
                    f"{MAX_ENVIRONMENT_KEY} characters")
        if not isinstance(value, str) or len(value) > MAX_ENVIRONMENT_VALUE:
            return (f"environment variable {key} has a value of {len(str(value))} characters; SageMaker takes "
                    f"strings of at most {MAX_ENVIRONMENT_VALUE}")
    return None


def stopping_condition_problem(condition: dict[str, Any], *, spot: bool) -> str | None:
    """Why SageMaker would refuse a training job's ``StoppingCondition`` (with managed spot or not), or ``None``."""
    runtime = condition.get("MaxRuntimeInSeconds")
    wait = condition.get("MaxWaitTimeInSeconds")
    if runtime is not None and (not isinstance(runtime, int) or not 1 <= runtime <= MAX_RUNTIME_SECONDS):
        return f"MaxRuntimeInSeconds {runtime!r} is outside 1-{MAX_RUNTIME_SECONDS} (28 days)"
    if spot and wait is None:
        return "managed spot training needs StoppingCondition.MaxWaitTimeInSeconds"
    if wait is not None:
        if not spot:
            return "MaxWaitTimeInSeconds applies to managed spot training only"
        if not isinstance(wait, int) or wait < (runtime or 86_400):
            return (f"MaxWaitTimeInSeconds {wait!r} is less than MaxRuntimeInSeconds {runtime or 86_400}: SageMaker "
                    "requires the wait for spot capacity to cover the run")
    return None


def training_job_problems(request: dict[str, Any]) -> list[str]:
    """Every reason SageMaker would refuse a ``CreateTrainingJob`` request that botocore's model accepts."""
    problems = [training_job_name_problem(request.get("TrainingJobName", "")),
                hyperparameters_problem(request.get("HyperParameters") or {}),
                environment_problem(request.get("Environment") or {}),
                stopping_condition_problem(request.get("StoppingCondition") or {},
                                           spot=bool(request.get("EnableManagedSpotTraining")))]
    channels = request.get("InputDataConfig") or []
    if len(channels) > MAX_CHANNELS:
        problems.append(f"{len(channels)} input channels; SageMaker takes at most {MAX_CHANNELS}")
    names = [c.get("ChannelName", "") for c in channels]
    problems += [f"channel name {n!r} is not 1-64 of [A-Za-z0-9.-_]" for n in names if not CHANNEL_NAME.match(n)]
    if len(set(names)) != len(names):
        problems.append(f"input channel names repeat: {sorted(n for n in names if names.count(n) > 1)}")
    if len(request.get("Tags") or []) > MAX_TAGS:
        problems.append(f"{len(request['Tags'])} tags; SageMaker takes at most {MAX_TAGS}")
    return [p for p in problems if p]


# --- SageMaker Pipelines: the pipeline definition JSON ---------------------------------------------

# A pipeline definition (schema version 2020-12-01) holds Parameters and Steps. Step names are unique in
# the pipeline (condition branches included) and at most 64 characters; DependsOn names existing steps;
# a property reference {"Get": "Steps.<step>.<path>"} names an existing step and a property it has (a
# processing step's ProcessingOutputConfig.Outputs['<name>'] only for an output it declares; a training
# step's ModelArtifacts.S3ModelArtifacts); {"Get": "Parameters.<name>"} names a declared parameter, and a
# declared parameter no step reads is a mistake. Std:JsonGet reads a property file through
# {"Get": "Steps.<step>.PropertyFiles.<name>"}: the file is declared in that step's PropertyFiles, and its
# OutputName is one of the step's ProcessingOutputConfig outputs. Step names are letters, digits, '-' and '_'.
# https://docs.aws.amazon.com/sagemaker/latest/dg/build-and-manage-steps.html
# https://docs.aws.amazon.com/sagemaker/latest/dg/build-and-manage-propertyfile.html
# https://aws-sagemaker-mlops.github.io/sagemaker-model-building-pipeline-definition-JSON-schema/
MAX_STEP_NAME = 64
STEP_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PIPELINE_VERSION = "2020-12-01"
PARAMETER_TYPES = ("String", "Integer", "Float", "Boolean")
_STEP_REF = re.compile(r"^Steps\.([^.\[]+)\.(.+)$")
_OUTPUT_REF = re.compile(r"^ProcessingOutputConfig\.Outputs\['([^']+)'\]\.S3Output\.S3Uri$")
_TRAINING_PROPERTIES = ("ModelArtifacts.S3ModelArtifacts", "TrainingJobName", "TrainingJobArn")
_PROCESSING_PROPERTIES = ("ProcessingJobName", "ProcessingJobArn")


def _all_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for step in steps:
        out.append(step)
        if step.get("Type") == "Condition":
            args = step.get("Arguments") or {}
            out += _all_steps(list(args.get("IfSteps") or []) + list(args.get("ElseSteps") or []))
    return out


def _walk(value: Any, where: str):
    """(where, node) of every dict in ``value`` (depth first)."""
    if isinstance(value, dict):
        yield where, value
        for key, item in value.items():
            yield from _walk(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{where}[{i}]")


def _outputs(step: dict[str, Any]) -> set[str]:
    config = (step.get("Arguments") or {}).get("ProcessingOutputConfig") or {}
    return {o.get("OutputName") for o in config.get("Outputs") or []}


def _property_problem(get: str, steps: dict[str, dict[str, Any]]) -> str | None:
    match = _STEP_REF.match(get)
    if match is None:
        return f"reference {get!r} is neither Steps.<step>.<property> nor Parameters.<name>"
    name, prop = match.groups()
    step = steps.get(name)
    if step is None:
        return f"reference {get!r} names no step of the pipeline"
    kind = step.get("Type")
    if prop.startswith("PropertyFiles."):
        files = {f.get("PropertyFileName") for f in step.get("PropertyFiles") or []}
        if prop.split(".", 1)[1] not in files:
            return f"reference {get!r}: step {name} declares no property file {prop.split('.', 1)[1]!r}"
        return None
    if kind == "Processing":
        out = _OUTPUT_REF.match(prop)
        if out is not None:
            return None if out.group(1) in _outputs(step) else \
                f"reference {get!r}: processing step {name} has no output {out.group(1)!r}"
        if prop in _PROCESSING_PROPERTIES:
            return None
    if kind == "Training" and prop in _TRAINING_PROPERTIES:
        return None
    return f"reference {get!r}: a {kind} step has no property {prop!r}"


def pipeline_definition_problems(definition: dict[str, Any]) -> list[str]:
    """Every reason SageMaker would refuse ``definition`` (a parsed pipeline definition), or could not run it as
    written: references to steps, outputs, property files and parameters that do not exist, names too long or
    repeated, parameters declared and never read."""
    problems: list[str] = []
    if definition.get("Version") != PIPELINE_VERSION:
        problems.append(f"Version is {definition.get('Version')!r}, not {PIPELINE_VERSION!r}")
    everything = _all_steps(list(definition.get("Steps") or []))
    names = [s.get("Name", "") for s in everything]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"step name {name!r} is used more than once")
    problems += [f"step name {n!r} is not 1-{MAX_STEP_NAME} letters, digits, '-' or '_' ({len(n)} characters)"
                 for n in names if not STEP_NAME.match(n)]
    steps = {s.get("Name", ""): s for s in everything}
    declared = {p.get("Name"): p for p in definition.get("Parameters") or []}
    problems += [f"parameter {n!r} has type {p.get('Type')!r}, not one of {', '.join(PARAMETER_TYPES)}"
                 for n, p in declared.items() if p.get("Type") not in PARAMETER_TYPES]
    read: set[str] = set()
    for step in everything:
        label = f"step {step.get('Name')}"
        for dep in step.get("DependsOn") or []:
            if dep not in steps:
                problems.append(f"{label}: DependsOn names no step {dep!r}")
            if dep == step.get("Name"):
                problems.append(f"{label} depends on itself")
        for file in step.get("PropertyFiles") or []:
            if step.get("Type") != "Processing" or file.get("OutputName") not in _outputs(step):
                problems.append(f"{label}: property file {file.get('PropertyFileName')!r} is read from output "
                                f"{file.get('OutputName')!r}, which the step's ProcessingOutputConfig does not declare")
        for where, node in _walk(step.get("Arguments") or {}, label):
            if "Get" in node and isinstance(node["Get"], str):
                get = node["Get"]
                if get.startswith("Parameters."):
                    read.add(get.split(".", 1)[1])
                    if get.split(".", 1)[1] not in declared:
                        problems.append(f"{where}: parameter {get.split('.', 1)[1]!r} is not declared")
                elif get.startswith("Execution."):
                    continue
                elif not where.endswith(".PropertyFile"):
                    problem = _property_problem(get, steps)
                    if problem:
                        problems.append(f"{where}: {problem}")
            if "Std:JsonGet" in node:
                json_get = node["Std:JsonGet"] or {}
                file_ref = (json_get.get("PropertyFile") or {}).get("Get", "")
                match = re.match(r"^Steps\.([^.]+)\.PropertyFiles\.(.+)$", str(file_ref))
                if match is None:
                    problems.append(f"{where}: Std:JsonGet's PropertyFile {file_ref!r} is not "
                                    "Steps.<step>.PropertyFiles.<name>")
                else:
                    problem = _property_problem(file_ref, steps)
                    if problem:
                        problems.append(f"{where}: {problem}")
                if not json_get.get("Path"):
                    problems.append(f"{where}: Std:JsonGet has no Path")
    problems += [f"parameter {n!r} is declared but no step reads it" for n in sorted(set(declared) - read)]
    return problems


# --- EventBridge Scheduler --------------------------------------------------------------------------

# Cron expressions have six fields: minutes hours day-of-month month day-of-week year, and one of
# day-of-month and day-of-week must be '?'. Day-of-week counts 1-7 from Sunday (or SUN-SAT).
# https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html#cron-based
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?,/\-#L]+$")


def schedule_expression_problem(expression: str) -> str | None:
    """Why EventBridge Scheduler would refuse ``expression`` as a cron schedule, or ``None``."""
    match = re.match(r"^cron\((.*)\)$", expression)
    if match is None:
        return f"schedule {expression!r} is not cron(...)"
    fields = match.group(1).split()
    if len(fields) != 6:
        return f"cron expression {expression!r} has {len(fields)} fields; EventBridge Scheduler takes 6"
    if not all(_CRON_FIELD.match(f) for f in fields):
        return f"cron expression {expression!r} has a field with characters EventBridge does not accept"
    day_of_month, day_of_week = fields[2], fields[4]
    if (day_of_month == "?") == (day_of_week == "?"):
        return f"cron expression {expression!r}: exactly one of day-of-month and day-of-week must be '?'"
    return None


# --- SageMaker Feature Store ------------------------------------------------------------------------

# Feature group and feature names: 1-64 characters, letters and digits, single runs of '-'/'_' inside
# (not first, not last). Three names are the offline store's own columns. A group holds at most 2,500
# feature definitions, each Integral, Fractional or String; the event time feature is Fractional (Unix
# seconds) or String (ISO 8601).
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateFeatureGroup.html
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_FeatureDefinition.html
FEATURE_STORE_NAME = re.compile(r"[a-zA-Z0-9]([-_]*[a-zA-Z0-9]){0,63}")
FEATURE_STORE_NAME_MAX = 64
RESERVED_FEATURE_NAMES = frozenset({"is_deleted", "write_time", "api_invocation_time"})
MAX_FEATURE_DEFINITIONS = 2500
FEATURE_TYPES = ("Integral", "Fractional", "String")
EVENT_TIME_TYPES = ("Fractional", "String")
# BatchGetRecord: at most 100 record identifiers per feature group entry (and 100 entries) per request.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_feature_store_BatchGetRecord.html
BATCH_GET_MAX_IDENTIFIERS = 100

# A view's dtypes as feature types. Booleans are Integral 0/1 and timestamps Fractional Unix seconds
# (with six decimals: a double holds today's epoch to a fraction of a microsecond, so microseconds
# come back exactly); the platform converts back by the view's declared dtype.
FEATURE_TYPE_OF_DTYPE = {"int32": "Integral", "int64": "Integral", "bool": "Integral", "float32": "Fractional",
                         "float64": "Fractional", "string": "String", "timestamp": "Fractional"}


def feature_store_name_problem(name: Any, *, what: str = "feature name") -> str | None:
    """Why SageMaker would refuse ``name`` as a feature group or feature name, or ``None``."""
    if not isinstance(name, str) or not name:
        return f"{what} {name!r} is empty"
    if len(name) > FEATURE_STORE_NAME_MAX:
        return f"{what} {name!r} has {len(name)} characters; SageMaker Feature Store allows at most 64"
    if not FEATURE_STORE_NAME.fullmatch(name):
        return (f"{what} {name!r} must start and end with a letter or digit, with only single runs of '-' or '_' "
                "in between (SageMaker Feature Store's name pattern)")
    if what == "feature name" and name.lower() in RESERVED_FEATURE_NAMES:
        return f"{what} {name!r} is reserved by SageMaker Feature Store (an offline store column)"
    return None


def feature_type_of(dtype: str) -> str | None:
    """The SageMaker feature type of a platform dtype, or ``None`` when there is none."""
    return FEATURE_TYPE_OF_DTYPE.get(dtype)


def feature_group_name(prefix: str, view: str, version: int) -> str:
    """The feature group of a view version: ``<stack prefix>-<view>-v<version>``, shortened with a digest of the
    full name when it would pass 64 characters, so two views never share a group."""
    import hashlib

    full = f"{prefix}-{view}-v{version}"
    if len(full) <= FEATURE_STORE_NAME_MAX:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    tail = f"-{digest}-v{version}"
    head = full[:FEATURE_STORE_NAME_MAX - len(tail)].rstrip("-_")
    return head + tail


def create_feature_group_problems(request: dict[str, Any]) -> list[str]:
    """What SageMaker would refuse in a CreateFeatureGroup request (beyond its service model's shape)."""
    problems: list[str] = []
    name = request.get("FeatureGroupName")
    problem = feature_store_name_problem(name, what="feature group name")
    if problem:
        problems.append(problem)
    definitions = list(request.get("FeatureDefinitions") or [])
    if not 1 <= len(definitions) <= MAX_FEATURE_DEFINITIONS:
        problems.append(f"feature group {name!r} has {len(definitions)} feature definitions; "
                        f"SageMaker allows 1 to {MAX_FEATURE_DEFINITIONS}")
    types: dict[str, str] = {}
    for definition in definitions:
        feature = definition.get("FeatureName")
        problem = feature_store_name_problem(feature)
        if problem:
            problems.append(problem)
        if definition.get("FeatureType") not in FEATURE_TYPES:
            problems.append(f"feature {feature!r} has type {definition.get('FeatureType')!r}; "
                            f"SageMaker takes {', '.join(FEATURE_TYPES)}")
        if feature in types:
            problems.append(f"feature {feature!r} is defined twice")
        types[str(feature)] = str(definition.get("FeatureType"))
    for role, key in (("record identifier", "RecordIdentifierFeatureName"), ("event time", "EventTimeFeatureName")):
        if request.get(key) not in types:
            problems.append(f"the {role} feature {request.get(key)!r} is not among the feature definitions")
    event_type = types.get(str(request.get("EventTimeFeatureName")))
    if event_type is not None and event_type not in EVENT_TIME_TYPES:
        problems.append(f"the event time feature is {event_type}; SageMaker takes Fractional (Unix seconds) or "
                        "String (ISO 8601)")
    offline = request.get("OfflineStoreConfig")
    if offline is not None:
        uri = str((offline.get("S3StorageConfig") or {}).get("S3Uri", ""))
        if not uri.startswith("s3://"):
            problems.append(f"the offline store's S3Uri {uri!r} is not an s3:// location")
    return problems


def batch_get_record_problems(request: dict[str, Any]) -> list[str]:
    """What SageMaker would refuse in a BatchGetRecord request: more than 100 entries or identifiers."""
    problems: list[str] = []
    identifiers = list(request.get("Identifiers") or [])
    if not 1 <= len(identifiers) <= BATCH_GET_MAX_IDENTIFIERS:
        problems.append(f"BatchGetRecord names {len(identifiers)} feature group entries; it takes 1 to "
                        f"{BATCH_GET_MAX_IDENTIFIERS}")
    for entry in identifiers:
        ids = list(entry.get("RecordIdentifiersValueAsString") or [])
        if not 1 <= len(ids) <= BATCH_GET_MAX_IDENTIFIERS:
            problems.append(f"BatchGetRecord asks {entry.get('FeatureGroupName')!r} for {len(ids)} records; it "
                            f"takes 1 to {BATCH_GET_MAX_IDENTIFIERS} identifiers per request")
    return problems


def put_record_problems(request: dict[str, Any], definitions: dict[str, str], *, record_identifier: str,
                        event_time: str) -> list[str]:
    """What SageMaker would refuse in a PutRecord request to a group of ``definitions`` (name -> type): unknown
    features, a missing record identifier or event time, values that are not of their feature's type.
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_feature_store_PutRecord.html"""
    problems: list[str] = []
    seen: set[str] = set()
    for value in request.get("Record") or []:
        feature, text = value.get("FeatureName"), value.get("ValueAsString")
        kind = definitions.get(feature)
        if kind is None:
            problems.append(f"feature {feature!r} is not defined in the feature group")
            continue
        seen.add(feature)
        if kind == "Integral" and not re.fullmatch(r"-?\d+", str(text)):
            problems.append(f"feature {feature!r} is Integral but the value is {text!r}")
        elif kind == "Fractional":
            try:
                float(str(text))
            except ValueError:
                problems.append(f"feature {feature!r} is Fractional but the value is {text!r}")
    for role, feature in (("record identifier", record_identifier), ("event time", event_time)):
        if feature not in seen:
            problems.append(f"the record has no {role} ({feature!r})")
    return problems
