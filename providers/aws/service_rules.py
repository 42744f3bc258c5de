"""Rules AWS enforces on requests and Pulumi's mocks do not: names, versions, sizes.

Each rule returns the reason a value would be refused, or ``None`` when AWS accepts it, so the
stack is refused at validation (or planning) time with the reason, instead of at ``mlplat up`` by
the cloud. Stdlib only: the settings model calls these without any cloud SDK installed.
"""
from __future__ import annotations

import ipaddress
import re
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
