"""The mlplat policies as pure functions over a resource graph.

Each policy is a validator ``validate(subject, config, report_violation)`` in the
shape of Pulumi CrossGuard: resource policies get one :class:`Resource`, stack
policies the list of every resource of the stack. ``report_violation(message,
urn)`` is called once per finding. The same functions run

* inside Pulumi's policy runtime (``pulumi preview --policy-pack policies``,
  through ``policies/__main__.py``), and
* inside ``mlplat policy check``, over the graph recorded by running the stack's
  program under Pulumi's mocks, or the planned resources of a local stack.

This module imports nothing outside the standard library (and nothing of
mlplat): the policy runtime loads it as a plain script.

Facts the policies read
-----------------------
Cloud resources are read through their Pulumi input properties (camelCase, as
the engine sees them). Local stacks describe themselves with ``mlplat:local:*``
resources whose properties are documented next to the validators below.
A value the engine does not know yet (a preview of a new resource) is absent
from the properties; validators skip what they cannot know rather than guess.
"""
from __future__ import annotations

import difflib
import fnmatch
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

try:
    from .taggable_aws import TAGGABLE_AWS
    from .taggable_azure import TAGGABLE_AZURE
    from .taggable_gcp import LABELABLE_GCP
except ImportError:  # loaded as a script by the Pulumi policy runtime
    from taggable_aws import TAGGABLE_AWS  # type: ignore[no-redef]
    from taggable_azure import TAGGABLE_AZURE  # type: ignore[no-redef]
    from taggable_gcp import LABELABLE_GCP  # type: ignore[no-redef]

ADVISORY, MANDATORY, DISABLED = "advisory", "mandatory", "disabled"
LEVELS = (ADVISORY, MANDATORY, DISABLED)
PACK_NAME = "mlplat"

ReportViolation = Callable[..., None]


@dataclass(frozen=True)
class Resource:
    """One resource of a stack, provider-neutral: a Pulumi type token, a logical name, input properties."""

    type: str
    name: str
    props: Mapping[str, Any] = field(default_factory=dict)
    urn: str = ""
    parent: str | None = None

    @property
    def label(self) -> str:
        return f"{self.type} '{self.name}'"


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    remediation: str
    kind: str  # "resource" | "stack"
    validate: Callable[..., None]
    config_schema: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    default_level: str = MANDATORY

    def defaults(self) -> dict[str, Any]:
        return {key: _copy(spec["default"]) for key, spec in self.config_schema.items() if "default" in spec}


@dataclass(frozen=True)
class Finding:
    """A violation, with the enforcement level it was evaluated at."""

    policy: str
    level: str
    message: str
    remediation: str
    resource_type: str = ""
    resource_name: str = ""
    urn: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


# --- reading resources ------------------------------------------------------------

LOCAL_PREFIX = "mlplat:local:"

T_BUCKET = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
T_SSE = ("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
         "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2")
T_PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
T_TRACKING = "aws:sagemaker/mlflowTrackingServer:MlflowTrackingServer"
T_PIPELINE = "aws:sagemaker/pipeline:Pipeline"
T_TRAINING_JOB = "aws:sagemaker/trainingJob:TrainingJob"
T_GROUP = "aws:sagemaker/modelPackageGroup:ModelPackageGroup"
T_MODEL = "aws:sagemaker/model:Model"
T_ENDPOINT_CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
T_ENDPOINT = "aws:sagemaker/endpoint:Endpoint"
T_SERVING_DECLARATION = "mlplat:aws:Serving"  # a component declaring the endpoints the AWS runtime creates
T_DQ_JOB = "aws:sagemaker/dataQualityJobDefinition:DataQualityJobDefinition"
T_SCHEDULE = "aws:sagemaker/monitoringSchedule:MonitoringSchedule"
T_ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
T_EVENT_RULE = "aws:cloudwatch/eventRule:EventRule"
T_TOPIC = "aws:sns/topic:Topic"
T_BUDGET = "aws:budgets/budget:Budget"
T_CLOUDCONTROL = "aws:cloudcontrol/resource:Resource"
T_DB_INSTANCE = "aws:rds/instance:Instance"
T_DB_CLUSTER = "aws:rds/cluster:Cluster"

# GCP (pulumi-gcp): labels instead of tags, read through the generated LABELABLE_GCP table.
G_BUCKET = "gcp:storage/bucket:Bucket"
G_BUCKET_IAM = ("gcp:storage/bucketIAMMember:BucketIAMMember", "gcp:storage/bucketIAMBinding:BucketIAMBinding")
G_ENDPOINT = "gcp:vertex/aiEndpoint:AiEndpoint"
G_SERVING_DECLARATION = "mlplat:gcp:Serving"  # a component declaring how the GCP runtime rolls out
G_ALERT_POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
G_BUDGET = "gcp:billing/budget:Budget"
G_SQL_INSTANCE = "gcp:sql/databaseInstance:DatabaseInstance"
G_SQL_USER = "gcp:sql/user:User"
# Labels held below the top level: Cloud SQL's are settings.userLabels.
G_NESTED_LABELS = {G_SQL_INSTANCE: ("settings", "userLabels")}
# Metrics an alert policy may watch: those Vertex AI publishes for online prediction, and those the
# platform's monitoring pass writes; an alert on any other metric never fires.
# https://cloud.google.com/monitoring/api/metrics_gcp_a_b#gcp-aiplatform
G_PUBLISHED_METRIC_PREFIXES = ("aiplatform.googleapis.com/prediction/online/", "custom.googleapis.com/mlplat/")
G_PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
G_GPU_FAMILIES = ("a2", "a3", "g2", "a4")

# Azure (pulumi-azure-native v3): top-level ARM tags, taggable types from the generated TAGGABLE_AZURE table.
Z_STORAGE = "azure-native:storage:StorageAccount"
Z_CONTAINER = "azure-native:storage:BlobContainer"
Z_ENDPOINT = "azure-native:machinelearningservices:OnlineEndpoint"
Z_SERVING_DECLARATION = "mlplat:azure:Serving"  # a component declaring how the Azure runtime rolls out
Z_ALERT = "azure-native:monitor:MetricAlert"
Z_DIAGNOSTIC = "azure-native:monitor:DiagnosticSetting"
Z_BUDGET = "azure-native:consumption:Budget"
Z_COMPUTE = "azure-native:machinelearningservices:Compute"
Z_POSTGRES = "azure-native:dbforpostgresql:Server"
Z_POSTGRES_FIREWALL = "azure-native:dbforpostgresql:FirewallRule"
# Metrics a metric alert may watch: those Azure Monitor publishes for online endpoints and deployments,
# and those the platform's monitoring pass writes (Azure Monitor custom metrics, namespace "mlplat").
# https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-onlineendpoints-metrics
# https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-onlineendpoints-deployments-metrics
Z_PUBLISHED_METRICS: dict[str, frozenset[str]] = {
    "Microsoft.MachineLearningServices/workspaces/onlineEndpoints": frozenset({
        "ConnectionsActive", "DataCollectionErrorsPerMinute", "DataCollectionEventsPerMinute", "NetworkBytes",
        "NewConnectionsPerSecond", "RequestLatency", "RequestLatency_P50", "RequestLatency_P90",
        "RequestLatency_P95", "RequestLatency_P99", "RequestsPerMinute"}),
    "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments": frozenset({
        "CpuMemoryUtilizationPercentage", "CpuUtilizationPercentage", "DataCollectionErrorsPerMinute",
        "DataCollectionEventsPerMinute", "DeploymentCapacity", "DiskUtilization", "GpuEnergyJoules",
        "GpuMemoryUtilizationPercentage", "GpuUtilizationPercentage", "RequestLatency_P50", "RequestLatency_P90",
        "RequestLatency_P95", "RequestLatency_P99", "RequestsPerMinute"}),
    "mlplat": frozenset({"drift_share", "max_psi", "feature_psi", "prediction_drift", "predictions", "accuracy",
                         "precision", "recall"}),
}
Z_PUBLIC_CONTAINER_ACCESS = ("Blob", "Container")
# Azure N-series VM sizes carry GPUs (NC, ND, NG, NV families).
# https://learn.microsoft.com/azure/virtual-machines/sizes/overview#gpu-accelerated
Z_GPU_PREFIXES = ("Standard_NC", "Standard_ND", "Standard_NG", "Standard_NV")

L_TRACKING = LOCAL_PREFIX + "TrackingStore"
L_TRAINING = LOCAL_PREFIX + "TrainingRunner"
L_REGISTRY = LOCAL_PREFIX + "ModelRegistry"
L_GATEWAY = LOCAL_PREFIX + "Gateway"
L_BUDGET = LOCAL_PREFIX + "Budget"

GPU_FAMILIES = ("p2", "p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "g4dn", "g5", "g6", "g6e", "gr6", "g4ad", "g5g")


def _json(value: Any) -> Any:
    """Parse a JSON document given as a string; pass other values through."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def cloudcontrol_state(resource: Resource) -> dict[str, Any]:
    """The desired state of a Cloud Control resource (a JSON string in its props)."""
    state = _json(resource.props.get("desiredState"))
    return state if isinstance(state, dict) else {}


def is_taggable(resource: Resource) -> bool:
    """Whether the resource carries cost tags (AWS tags, GCP labels, Azure tags) or describes a local resource."""
    if resource.type.startswith(LOCAL_PREFIX):
        return True
    if resource.type in TAGGABLE_AWS:
        return True
    if resource.type == T_CLOUDCONTROL:
        return True
    if resource.type.startswith("gcp:"):
        return resource.type in LABELABLE_GCP or resource.type in G_NESTED_LABELS
    if resource.type.startswith("google-native:"):
        return "labels" in resource.props
    if resource.type.startswith("azure-native:"):
        return resource.type in TAGGABLE_AZURE
    if resource.type.startswith("azure:"):
        return "tags" in resource.props
    return False


def tags_of(resource: Resource) -> dict[str, str]:
    """Cost tags of a resource, whatever the cloud calls them."""
    if resource.type == T_CLOUDCONTROL:
        raw = cloudcontrol_state(resource).get("Tags") or []
        if isinstance(raw, dict):
            return {str(k): str(v) for k, v in raw.items()}
        return {str(t.get("Key")): str(t.get("Value")) for t in raw if isinstance(t, dict)}
    if resource.type in G_NESTED_LABELS:
        outer, inner = G_NESTED_LABELS[resource.type]
        value = (resource.props.get(outer) or {}).get(inner) or {}
    elif resource.type.startswith("gcp:"):
        value = resource.props.get(LABELABLE_GCP.get(resource.type, "labels")) or {}
    else:
        key = "labels" if resource.type.startswith("google-native:") else "tags"
        value = resource.props.get(key) or {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def _of(resources: Iterable[Resource], *types: str) -> list[Resource]:
    resources = list(resources)
    found = [r for r in resources if r.type in types]
    if T_ENDPOINT in types or T_ENDPOINT_CONFIG in types:
        found += [r for r in _declared_endpoints(resources) if r.type in types]
    return found


def _declared_routing(steps: Sequence[int]) -> dict[str, Any]:
    """The platform's canary schedule in SageMaker's traffic-routing vocabulary: the share of traffic the
    first step (CANARY) or every equal step (LINEAR) moves."""
    deltas = [b - a for a, b in zip([0, *steps], steps)]
    if list(steps) == [100]:
        return {"type": "ALL_AT_ONCE"}
    if len(set(deltas)) == 1 and 10 <= deltas[0] <= 50:
        return {"type": "LINEAR", "linearStepSize": {"type": "CAPACITY_PERCENT", "value": deltas[0]}}
    return {"type": "CANARY", "canarySize": {"type": "CAPACITY_PERCENT", "value": steps[0]}}


def _declared_endpoints(resources: Sequence[Resource]) -> list[Resource]:
    """Endpoints a component declares rather than creates (the AWS runtime creates them on the first deploy
    and steps their traffic itself): an endpoint and its configuration as the policies read them, reported
    against the declaring component."""
    out: list[Resource] = []
    for component in resources:
        if component.type != T_SERVING_DECLARATION:
            continue
        for declared in component.props.get("endpoints") or []:
            name, tags = declared.get("endpointName"), declared.get("tags") or {}
            config = f"{name}-declared"
            count = int(declared.get("instanceCount") or 1)
            variant = {"instanceType": declared.get("instanceType"), "initialInstanceCount": count}
            out.append(Resource(T_ENDPOINT, str(name), {
                "name": name, "endpointConfigName": config, "tags": tags, "deploymentConfig": {
                    "autoRollbackConfiguration": {"alarms": [{"alarmName": a}
                                                             for a in declared.get("rollbackAlarms") or []]},
                    "blueGreenUpdatePolicy": {
                        "trafficRoutingConfiguration": _declared_routing(declared.get("canarySteps") or [100])}}},
                component.urn, component.parent))
            out.append(Resource(T_ENDPOINT_CONFIG, config, {
                "name": config, "tags": tags, "dataCaptureConfig": declared.get("dataCapture") or {},
                "productionVariants": [{**variant, "variantName": "primary", "initialVariantWeight": 100.0}],
                "shadowProductionVariants": [{**variant, "variantName": "shadow",
                                              "initialVariantWeight": float(declared.get("shadowPercent") or 0)}]},
                component.urn, component.parent))
    return out


def _is_production(resource: Resource, config: Mapping[str, Any]) -> bool:
    environments = config.get("productionEnvironments") or ["production"]
    env = tags_of(resource).get("environment") or resource.props.get("environment")
    return env in environments


def _phys(resource: Resource, key: str = "name") -> str:
    """The physical name of a resource (an input when known, else the logical name)."""
    value = resource.props.get(key)
    return value if isinstance(value, str) and value else resource.name


def _endpoint_config_of(endpoint: Resource, resources: Sequence[Resource]) -> Resource | None:
    wanted = endpoint.props.get("endpointConfigName")
    for config in _of(resources, T_ENDPOINT_CONFIG):
        if wanted in (_phys(config), config.name):
            return config
    return None


# --- 1. required cost tags ----------------------------------------------------------


def validate_cost_tags(resource: Resource, config: Mapping[str, Any], report: ReportViolation) -> None:
    """Every taggable resource carries the required cost tags with non-empty values."""
    if not is_taggable(resource):
        return
    required = config.get("requiredTags") or []
    tags = tags_of(resource)
    missing = [t for t in required if not str(tags.get(t, "")).strip()]
    if missing:
        report(f"{resource.label} lacks cost tag(s) {', '.join(missing)}", resource.urn or None)


# --- 2. tracking required -------------------------------------------------------------


def pipeline_steps(pipeline: Resource) -> list[dict[str, Any]] | None:
    """Every step of a SageMaker pipeline definition, including those nested in condition steps."""
    definition = _json(pipeline.props.get("pipelineDefinition"))
    if not isinstance(definition, dict):
        return None  # not known (preview) or kept in S3: nothing to judge
    out: list[dict[str, Any]] = []
    pending = list(definition.get("Steps") or [])
    while pending:
        step = pending.pop(0)
        if not isinstance(step, dict):
            continue
        out.append(step)
        args = step.get("Arguments") or {}
        pending += list(args.get("IfSteps") or []) + list(args.get("ElseSteps") or [])
    return out


def _training_steps(pipeline: Resource) -> list[dict[str, Any]] | None:
    steps = pipeline_steps(pipeline)
    return None if steps is None else [s for s in steps if s.get("Type") == "Training"]


def validate_tracking(resources: Sequence[Resource], config: Mapping[str, Any], report: ReportViolation) -> None:
    """Every training pipeline and job reports to the team's tracking server.

    AWS: each ``Training`` step of a SageMaker pipeline definition (and each
    training job) sets ``MLFLOW_TRACKING_URI`` to a tracking server of the stack.
    Local: each ``TrainingRunner`` has ``trackingUri`` equal to a ``TrackingStore``'s ``uri``.
    """
    servers = _of(resources, T_TRACKING)
    server_names = [_phys(s, "trackingServerName") for s in servers]

    def wired(uri: Any) -> bool:
        return isinstance(uri, str) and any(uri == n or uri.endswith(f"/{n}") for n in server_names)

    for pipeline in _of(resources, T_PIPELINE):
        steps = _training_steps(pipeline)
        if steps is None:
            continue
        if not servers:
            report(f"{pipeline.label} trains models but the stack has no tracking server", pipeline.urn or None)
            continue
        for step in steps:
            env = (step.get("Arguments") or {}).get("Environment") or {}
            if not wired(env.get("MLFLOW_TRACKING_URI")):
                report(f"{pipeline.label}: training step '{step.get('Name')}' is not wired to the team's tracking "
                       f"server (MLFLOW_TRACKING_URI={env.get('MLFLOW_TRACKING_URI')!r})", pipeline.urn or None)
    for job in _of(resources, T_TRAINING_JOB):
        env = job.props.get("environment") or {}
        if not wired(env.get("MLFLOW_TRACKING_URI")):
            report(f"{job.label} is not wired to the team's tracking server", job.urn or None)

    stores = {r.props.get("uri") for r in _of(resources, L_TRACKING)}
    for runner in _of(resources, L_TRAINING):
        uri = runner.props.get("trackingUri")
        if uri not in stores or not uri:
            report(f"{runner.label} writes runs to {uri!r}, not to the stack's tracking store", runner.urn or None)
        if runner.props.get("requireTrackedRuns") is False:
            report(f"{runner.label} lets models be registered outside a tracked run", runner.urn or None)


# --- 3. approval required -------------------------------------------------------------


def _needs_approval(tier: Any, config: Mapping[str, Any]) -> bool:
    return config.get("approvalFor", "critical") == "all" or tier == "critical"


def _register_steps(resources: Sequence[Resource]) -> list[dict[str, Any]]:
    steps = []
    for pipeline in _of(resources, T_PIPELINE):
        steps += [s for s in pipeline_steps(pipeline) or [] if s.get("Type") == "RegisterModel"]
    return steps


def _approval_rule_for(group: str, resources: Sequence[Resource]) -> bool:
    for rule in _of(resources, T_EVENT_RULE):
        pattern = _json(rule.props.get("eventPattern"))
        if not isinstance(pattern, dict):
            continue
        detail = pattern.get("detail") or {}
        if "SageMaker Model Package State Change" not in (pattern.get("detail-type") or []):
            continue
        if group in (detail.get("ModelPackageGroupName") or []) and detail.get("ModelApprovalStatus") == ["Approved"]:
            return True
    return False


def validate_approval(resources: Sequence[Resource], config: Mapping[str, Any], report: ReportViolation) -> None:
    """Critical models need a manual approval; production endpoints serve only registered, approved versions.

    AWS: a model package group tagged ``risk-tier: critical`` is registered with
    ``PendingManualApproval`` by every pipeline, and deployment is triggered only by
    an EventBridge rule matching ``ModelApprovalStatus: [Approved]`` for that group.
    Every production endpoint's model refers to a model package of the registry
    (never a raw image or model artifact, which would bypass approval).
    Local: the ``ModelRegistry`` marks which models need approval (``models``,
    ``manualApproval``) and how many distinct approvers exist.
    """
    steps = _register_steps(resources)
    for group in _of(resources, T_GROUP):
        name = _phys(group, "modelPackageGroupName")
        if not _needs_approval(tags_of(group).get("risk-tier"), config):
            continue
        for step in steps:
            args = step.get("Arguments") or {}
            if args.get("ModelPackageGroupName") == name and args.get("ModelApprovalStatus") != "PendingManualApproval":
                report(f"{group.label}: pipeline step '{step.get('Name')}' registers versions as "
                       f"{args.get('ModelApprovalStatus')!r}; this model needs a manual approval", group.urn or None)
        if not _approval_rule_for(name, resources):
            report(f"{group.label}: no EventBridge rule deploys only approved versions of this group",
                   group.urn or None)
    models = {(_phys(m), m.name): m for m in _of(resources, T_MODEL)}
    for endpoint in _of(resources, T_ENDPOINT):
        if not _is_production(endpoint, config):
            continue
        endpoint_config = _endpoint_config_of(endpoint, resources)
        if endpoint_config is None:
            continue
        variants = list(endpoint_config.props.get("productionVariants") or []) + list(
            endpoint_config.props.get("shadowProductionVariants") or [])
        for variant in variants:
            model = next((m for (phys, logical), m in models.items() if variant.get("modelName") in (phys, logical)), None)
            if model is None:
                continue
            containers = [model.props.get("primaryContainer") or {}] + list(model.props.get("containers") or [])
            containers = [c for c in containers if c]
            if not containers or any(not c.get("modelPackageName") for c in containers):
                report(f"{endpoint.label}: variant '{variant.get('variantName')}' serves {model.label} from a raw "
                       "image or artifact instead of an approved model package", endpoint.urn or None)
    for registry in _of(resources, L_REGISTRY):
        approvers = set(registry.props.get("approvers") or [])
        required = int(registry.props.get("requiredApprovals") or 0)
        models = dict(registry.props.get("models") or {})
        if registry.props.get("riskTier"):
            models["(models without an override)"] = registry.props["riskTier"]
        for model, tier in models.items():
            if not _needs_approval(tier, config):
                continue
            if not registry.props.get("manualApproval", True) or tier != "critical":
                report(f"{registry.label}: model '{model}' is promoted without a manual approval "
                       f"(risk tier {tier})", registry.urn or None)
            elif required < 1 or len(approvers) < required:
                report(f"{registry.label}: model '{model}' needs {required} approval(s) but "
                       f"{len(approvers)} approver(s) are listed", registry.urn or None)


# --- 4. monitoring required -----------------------------------------------------------


def _monitored_endpoints(resources: Sequence[Resource]) -> set[str]:
    """Endpoints read by a job definition that a monitoring schedule runs, or declared with the platform's own
    monitoring schedule (the AWS runtime's endpoints, monitored by the platform's pass over their capture)."""
    reads: dict[str, str] = {}
    for job in _of(resources, T_DQ_JOB):
        endpoint = ((job.props.get("dataQualityJobInput") or {}).get("endpointInput") or {}).get("endpointName")
        reads[_phys(job)] = endpoint
    for job in _of(resources, T_CLOUDCONTROL):
        if job.props.get("typeName") in ("AWS::SageMaker::ModelQualityJobDefinition",
                                         "AWS::SageMaker::DataQualityJobDefinition",
                                         "AWS::SageMaker::ModelBiasJobDefinition"):
            state = cloudcontrol_state(job)
            job_input = next((v for k, v in state.items() if k.endswith("JobInput")), {}) or {}
            reads[state.get("JobDefinitionName", job.name)] = (job_input.get("EndpointInput") or {}).get("EndpointName")
    monitored = set()
    for schedule in _of(resources, T_SCHEDULE):
        cfg = schedule.props.get("monitoringScheduleConfig") or {}
        if not (cfg.get("scheduleConfig") or {}).get("scheduleExpression"):
            continue
        endpoint = reads.get(cfg.get("monitoringJobDefinitionName"))
        if endpoint:
            monitored.add(endpoint)
    for component in _of(resources, T_SERVING_DECLARATION):  # endpoints the platform's own pass monitors
        monitored.update(str(d.get("endpointName")) for d in component.props.get("endpoints") or []
                         if d.get("monitorSchedule"))
    return monitored


def validate_monitoring(resources: Sequence[Resource], config: Mapping[str, Any], report: ReportViolation) -> None:
    """Every production endpoint captures traffic, is monitored on a schedule, has alarms and an alert route.

    AWS: data capture enabled with a sampling percentage above zero; a monitoring
    schedule runs a job definition that reads the endpoint; CloudWatch alarms on the
    endpoint with alarm actions (the alert route, an SNS topic).
    Local: the ``Gateway`` has ``captureSampling`` > 0, a ``monitorSchedule``,
    ``alarms`` (rule names) and ``alertChannels``.
    """
    monitored = _monitored_endpoints(resources)
    alarms = _of(resources, T_ALARM)
    for endpoint in _of(resources, T_ENDPOINT):
        if not _is_production(endpoint, config):
            continue
        name = _phys(endpoint)
        endpoint_config = _endpoint_config_of(endpoint, resources)
        capture = (endpoint_config.props.get("dataCaptureConfig") if endpoint_config else None) or {}
        if not capture or capture.get("enableCapture") is False or not capture.get("initialSamplingPercentage"):
            report(f"{endpoint.label} does not capture traffic (dataCaptureConfig off or 0 %)", endpoint.urn or None)
        if name not in monitored:
            report(f"{endpoint.label} has no monitoring schedule", endpoint.urn or None)
        own = [a for a in alarms if (a.props.get("dimensions") or {}).get("EndpointName") == name]
        if not own:
            report(f"{endpoint.label} has no CloudWatch alarms", endpoint.urn or None)
        elif not any(a.props.get("alarmActions") for a in own):
            report(f"{endpoint.label}: its alarms notify nobody (no alarm actions)", endpoint.urn or None)
    _validate_gcp_monitoring(resources, config, report)
    _validate_azure_monitoring(resources, config, report)
    for gateway in _of(resources, L_GATEWAY):
        if not _is_production(gateway, config):
            continue
        props = gateway.props
        if not props.get("captureSampling"):
            report(f"{gateway.label} does not capture traffic (captureSampling is 0)", gateway.urn or None)
        if not props.get("monitorSchedule"):
            report(f"{gateway.label} has no monitoring schedule", gateway.urn or None)
        if not props.get("alarms"):
            report(f"{gateway.label} has no alarms", gateway.urn or None)
        if not props.get("alertChannels"):
            report(f"{gateway.label}: alerts go nowhere (no alert channels)", gateway.urn or None)


def _alert_metric_types(policy: Resource) -> list[str]:
    out = []
    for condition in policy.props.get("conditions") or []:
        text = str(((condition or {}).get("conditionThreshold") or {}).get("filter") or "")
        out += [part.split('"')[1] for part in text.split("metric.type")[1:] if '"' in part]
    return out


def _validate_gcp_monitoring(resources: Sequence[Resource], config: Mapping[str, Any],
                             report: ReportViolation) -> None:
    """GCP: every production Vertex endpoint logs requests and responses to BigQuery (the platform's pass
    monitors that log) and has an alert policy naming its endpoint id that notifies a channel; every alert
    policy watches metrics that are published (Vertex's online prediction metrics or the platform's)."""
    policies = _of(resources, G_ALERT_POLICY)
    for policy in policies:
        for metric in _alert_metric_types(policy):
            if not metric.startswith(G_PUBLISHED_METRIC_PREFIXES):
                report(f"{policy.label} watches {metric}, which neither Vertex AI nor the platform publishes: "
                       "it never fires", policy.urn or None)
    for endpoint in _of(resources, G_ENDPOINT):
        if not _is_production(endpoint, config):
            continue
        logging = endpoint.props.get("predictRequestResponseLoggingConfig") or {}
        if not logging.get("enabled") or not float(logging.get("samplingRate") or 0):
            report(f"{endpoint.label} does not log requests and responses to BigQuery", endpoint.urn or None)
        endpoint_id = str(endpoint.props.get("name") or "")
        own = [p for p in policies if any(f'endpoint_id="{endpoint_id}"' in str(
            ((c or {}).get("conditionThreshold") or {}).get("filter") or "") for c in p.props.get("conditions") or [])]
        if not own:
            report(f"{endpoint.label} has no alert policy", endpoint.urn or None)
        elif not any(p.props.get("notificationChannels") for p in own):
            report(f"{endpoint.label}: its alert policies notify nobody (no notification channels)",
                   endpoint.urn or None)


def _azure_alert_metrics(alert: Resource) -> list[tuple[str, str]]:
    criteria = alert.props.get("criteria") or {}
    return [(str(c.get("metricNamespace") or ""), str(c.get("metricName") or ""))
            for c in criteria.get("allOf") or [] if isinstance(c, Mapping)]


def _validate_azure_monitoring(resources: Sequence[Resource], config: Mapping[str, Any],
                               report: ReportViolation) -> None:
    """Azure: every metric alert watches a published metric (an online endpoint's or deployment's, or the
    platform's custom metrics); every production online endpoint has a metric alert scoped to it that
    notifies an action group, and a diagnostic setting sending its traffic logs to Log Analytics (what the
    platform's pass and an investigation read)."""
    alerts = _of(resources, Z_ALERT)
    for alert in alerts:
        for namespace, metric in _azure_alert_metrics(alert):
            if metric not in Z_PUBLISHED_METRICS.get(namespace, frozenset()):
                report(f"{alert.label} watches {namespace}:{metric}, which neither Azure Monitor nor the platform "
                       "publishes: it never fires", alert.urn or None)
    diagnostics = _of(resources, Z_DIAGNOSTIC)
    for endpoint in _of(resources, Z_ENDPOINT):
        if not _is_production(endpoint, config):
            continue
        suffix = f"/onlineEndpoints/{_phys(endpoint, 'endpointName')}"
        own = [a for a in alerts if any(str(scope).endswith(suffix) for scope in a.props.get("scopes") or [])]
        if not own:
            report(f"{endpoint.label} has no metric alert", endpoint.urn or None)
        elif not any(a.props.get("actions") for a in own):
            report(f"{endpoint.label}: its metric alerts notify nobody (no action group)", endpoint.urn or None)
        if not any(str(d.props.get("resourceUri") or "").endswith(suffix) and
                   (d.props.get("workspaceId") or d.props.get("storageAccountId")) for d in diagnostics):
            report(f"{endpoint.label} sends its traffic logs nowhere (no diagnostic setting)", endpoint.urn or None)


# --- 5. safe rollout --------------------------------------------------------------------


def shadow_percent(endpoint_config: Mapping[str, Any]) -> float:
    """Share of production traffic mirrored to the shadow variant: shadow weight / production weights."""
    shadows = endpoint_config.get("shadowProductionVariants") or []
    if not shadows:
        return 0.0
    production = sum(float(v.get("initialVariantWeight", 1.0)) for v in endpoint_config.get("productionVariants") or [])
    shadow = sum(float(v.get("initialVariantWeight", 1.0)) for v in shadows)
    return 100.0 * shadow / production if production else 100.0


def validate_safe_rollout(resources: Sequence[Resource], config: Mapping[str, Any], report: ReportViolation) -> None:
    """Production endpoints roll out gradually, roll back on alarms, and mirror at most a bounded share.

    AWS: ``deploymentConfig`` has a blue/green policy of type CANARY or LINEAR whose
    first step is at most ``maxFirstCanaryStep`` % and auto-rollback alarms that exist
    in the stack; the shadow variant mirrors at most ``maxShadowPercent`` %.
    Local: the ``Gateway``'s ``canarySteps``, ``autoRollback`` and ``shadowPercent``.
    """
    limit = float(config.get("maxFirstCanaryStep", 10))
    max_shadow = float(config.get("maxShadowPercent", 50))
    alarm_names = {_phys(a) for a in _of(resources, T_ALARM)}
    for endpoint in _of(resources, T_ENDPOINT):
        if not _is_production(endpoint, config):
            continue
        deployment = endpoint.props.get("deploymentConfig") or {}
        alarms = [a.get("alarmName") for a in (deployment.get("autoRollbackConfiguration") or {}).get("alarms") or []]
        if not alarms:
            report(f"{endpoint.label} has no auto-rollback alarms", endpoint.urn or None)
        for missing in sorted(a for a in alarms if a not in alarm_names):
            report(f"{endpoint.label}: rollback alarm '{missing}' is not defined in the stack", endpoint.urn or None)
        routing = (deployment.get("blueGreenUpdatePolicy") or {}).get("trafficRoutingConfiguration") or {}
        kind = routing.get("type")
        if kind not in ("CANARY", "LINEAR"):
            report(f"{endpoint.label} shifts traffic all at once ({kind or 'no blue/green policy'}); "
                   "use a canary or linear rollout", endpoint.urn or None)
        else:
            size = routing.get("canarySize" if kind == "CANARY" else "linearStepSize") or {}
            if size.get("type") == "CAPACITY_PERCENT" and float(size.get("value", 0)) > limit:
                report(f"{endpoint.label}: the first {kind.lower()} step is {size.get('value')} %, above the "
                       f"stack's limit of {limit:g} %", endpoint.urn or None)
        endpoint_config = _endpoint_config_of(endpoint, resources)
        if endpoint_config is not None:
            mirrored = shadow_percent(endpoint_config.props)
            if mirrored > max_shadow:
                report(f"{endpoint.label} mirrors {mirrored:g} % of traffic to its shadow variant "
                       f"(limit {max_shadow:g} %)", endpoint.urn or None)
    for component in _of(resources, G_SERVING_DECLARATION):  # GCP: the runtime steps trafficSplit itself
        for declared in component.props.get("endpoints") or []:
            if (declared.get("labels") or {}).get("environment") not in (
                    config.get("productionEnvironments") or ["production"]):
                continue
            steps = declared.get("canarySteps") or []
            what = f"{component.label}: endpoint {declared.get('displayName')}"
            if len(steps) < 2:
                report(f"{what} shifts traffic all at once (canary steps {steps})", component.urn or None)
            elif float(steps[0]) > limit:
                report(f"{what}: the first canary step is {steps[0]} %, above the stack's limit of {limit:g} %",
                       component.urn or None)
            if float(declared.get("shadowPercent") or 0) > max_shadow:
                report(f"{what} mirrors {declared.get('shadowPercent')} % of traffic (limit {max_shadow:g} %)",
                       component.urn or None)
    _validate_azure_rollout(resources, config, report, limit, max_shadow)
    for gateway in _of(resources, L_GATEWAY):
        if not _is_production(gateway, config):
            continue
        props = gateway.props
        steps = props.get("canarySteps") or []
        if not props.get("autoRollback"):
            report(f"{gateway.label} does not roll back automatically on a breach", gateway.urn or None)
        if not steps or len(steps) < 2:
            report(f"{gateway.label} shifts traffic all at once (canary steps {steps})", gateway.urn or None)
        elif float(steps[0]) > limit:
            report(f"{gateway.label}: the first canary step is {steps[0]} %, above the stack's limit of {limit:g} %",
                   gateway.urn or None)
        if float(props.get("shadowPercent") or 0) > max_shadow:
            report(f"{gateway.label} mirrors {props.get('shadowPercent')} % of traffic to its shadow "
                   f"(limit {max_shadow:g} %)", gateway.urn or None)


def _validate_azure_rollout(resources: Sequence[Resource], config: Mapping[str, Any], report: ReportViolation,
                            limit: float, max_shadow: float) -> None:
    """Azure: the runtime steps an online endpoint's ``traffic`` and ``mirrorTraffic`` itself, as the
    ``mlplat:azure:Serving`` component declares (canary steps, shadow share); Azure mirrors at most 50 % in
    total, and never to a deployment with live traffic.
    https://learn.microsoft.com/azure/machine-learning/how-to-safely-rollout-online-endpoints"""
    production = config.get("productionEnvironments") or ["production"]
    for component in _of(resources, Z_SERVING_DECLARATION):
        for declared in component.props.get("endpoints") or []:
            if (declared.get("tags") or {}).get("environment") not in production:
                continue
            steps = declared.get("canarySteps") or []
            what = f"{component.label}: endpoint {declared.get('endpointName')}"
            if len(steps) < 2:
                report(f"{what} shifts traffic all at once (canary steps {steps})", component.urn or None)
            elif float(steps[0]) > limit:
                report(f"{what}: the first canary step is {steps[0]} %, above the stack's limit of {limit:g} %",
                       component.urn or None)
            if float(declared.get("shadowPercent") or 0) > min(max_shadow, 50.0):
                report(f"{what} mirrors {declared.get('shadowPercent')} % of traffic (limit {min(max_shadow, 50.0):g} %)",
                       component.urn or None)
    for endpoint in _of(resources, Z_ENDPOINT):
        props = endpoint.props.get("properties") or {}
        traffic = {str(k): float(v or 0) for k, v in (props.get("traffic") or {}).items()}
        mirror = {str(k): float(v or 0) for k, v in (props.get("mirrorTraffic") or {}).items()}
        if sum(mirror.values()) > min(max_shadow, 50.0):
            report(f"{endpoint.label} mirrors {sum(mirror.values()):g} % of traffic (limit {min(max_shadow, 50.0):g} %)",
                   endpoint.urn or None)
        live = sorted(d for d, v in mirror.items() if v and traffic.get(d))
        if live:
            report(f"{endpoint.label} mirrors traffic to {', '.join(live)}, which serves live traffic",
                   endpoint.urn or None)


# --- 6. storage ---------------------------------------------------------------------------

PUBLIC_ACLS = ("public-read", "public-read-write", "authenticated-read")
PAB_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def _bucket_keys(bucket: Resource) -> set[str]:
    return {bucket.name, _phys(bucket, "bucket"), f"{bucket.name}_id"} | ({bucket.urn} if bucket.urn else set())


def validate_storage(resources: Sequence[Resource], config: Mapping[str, Any], report: ReportViolation) -> None:
    """Storage is encrypted at rest and never public.

    AWS: every bucket has a server-side encryption configuration (``aws:kms`` when
    ``requireKms``) and a public access block with all four flags on, and no
    public ACL. Local: stores are ``private`` and name their ``encryption``;
    ``host-filesystem`` counts only while ``allowHostFilesystemEncryption`` is on.
    """
    sse = _of(resources, *T_SSE)
    pabs = _of(resources, T_PAB)
    require_kms = bool(config.get("requireKms", False))
    for bucket in _of(resources, *T_BUCKET):
        keys = _bucket_keys(bucket)
        inline = (bucket.props.get("serverSideEncryptionConfiguration") or {}).get("rule")
        rules = [r for s in sse if s.props.get("bucket") in keys for r in (s.props.get("rules") or [])]
        if inline:
            rules.append(inline)
        algorithms = [((r.get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm")) for r in rules]
        if not any(algorithms):
            report(f"{bucket.label} is not encrypted at rest (no server-side encryption configuration)",
                   bucket.urn or None)
        elif require_kms and not any(a in ("aws:kms", "aws:kms:dsse") for a in algorithms):
            report(f"{bucket.label} is encrypted with {algorithms[0]}, but this stack requires KMS keys",
                   bucket.urn or None)
        if bucket.props.get("acl") in PUBLIC_ACLS:
            report(f"{bucket.label} has the public ACL {bucket.props.get('acl')!r}", bucket.urn or None)
        blocks = [p for p in pabs if p.props.get("bucket") in keys]
        if not blocks:
            report(f"{bucket.label} has no public access block", bucket.urn or None)
        elif not any(all(p.props.get(flag) is True for flag in PAB_FLAGS) for p in blocks):
            off = [f for f in PAB_FLAGS if not all(p.props.get(f) is True for p in blocks)]
            report(f"{bucket.label}: public access block leaves {', '.join(off)} off", bucket.urn or None)
    # GCP: Cloud Storage encrypts every object at rest (Google-managed keys unless a CMEK is set); a bucket
    # is private when uniform bucket-level access is on (no object ACLs), public access prevention is
    # enforced and no IAM member is allUsers/allAuthenticatedUsers.
    # https://cloud.google.com/storage/docs/public-access-prevention
    members = _of(resources, *G_BUCKET_IAM)
    for bucket in _of(resources, G_BUCKET):
        props = bucket.props
        if props.get("uniformBucketLevelAccess") is not True:
            report(f"{bucket.label} does not use uniform bucket-level access (object ACLs can make objects public)",
                   bucket.urn or None)
        if props.get("publicAccessPrevention") != "enforced":
            report(f"{bucket.label} does not enforce public access prevention", bucket.urn or None)
        if require_kms and not (props.get("encryption") or {}).get("defaultKmsKeyName"):
            report(f"{bucket.label} is encrypted with Google-managed keys, but this stack requires a customer-managed "
                   "key (encryption.defaultKmsKeyName)", bucket.urn or None)
        names = {bucket.name, _phys(bucket)}
        for member in members:
            granted = [member.props.get("member")] + list(member.props.get("members") or [])
            if member.props.get("bucket") in names and any(m in G_PUBLIC_MEMBERS for m in granted):
                report(f"{bucket.label} is public: {member.label} grants {member.props.get('role')} to "
                       f"{', '.join(m for m in granted if m in G_PUBLIC_MEMBERS)}", bucket.urn or None)
    _validate_azure_storage(resources, require_kms, report)
    allow_host = bool(config.get("allowHostFilesystemEncryption", True))
    for store in resources:
        if not store.type.startswith(LOCAL_PREFIX) or "encryption" not in store.props:
            continue
        if store.props.get("private") is not True:
            report(f"{store.label} is readable by other users of this machine", store.urn or None)
        encryption = store.props.get("encryption")
        if not encryption or (encryption == "host-filesystem" and not allow_host):
            report(f"{store.label} relies on {encryption or 'no'} encryption at rest, which this stack does not "
                   "accept", store.urn or None)


def _validate_azure_storage(resources: Sequence[Resource], require_kms: bool, report: ReportViolation) -> None:
    """Azure: Storage encrypts every account at rest (Microsoft-managed keys unless a Key Vault key is set);
    an account is private when public blob access is disallowed and no container grants anonymous access,
    and only HTTPS with TLS 1.2 or later reaches it.
    https://learn.microsoft.com/azure/storage/blobs/anonymous-read-access-prevent
    https://learn.microsoft.com/azure/storage/common/transport-layer-security-configure-minimum-version"""
    for account in _of(resources, Z_STORAGE):
        props = account.props
        if props.get("allowBlobPublicAccess") is not False:
            report(f"{account.label} allows public blob access (allowBlobPublicAccess is not false)",
                   account.urn or None)
        if props.get("enableHttpsTrafficOnly") is False:
            report(f"{account.label} accepts plain HTTP (enableHttpsTrafficOnly is false)", account.urn or None)
        if props.get("minimumTlsVersion") in ("TLS1_0", "TLS1_1"):
            report(f"{account.label} accepts {props.get('minimumTlsVersion')}; require TLS1_2", account.urn or None)
        services = (props.get("encryption") or {}).get("services") or {}
        if (services.get("blob") or {}).get("enabled") is False:
            report(f"{account.label} turns blob encryption off", account.urn or None)
        if require_kms and (props.get("encryption") or {}).get("keySource") != "Microsoft.Keyvault":
            report(f"{account.label} is encrypted with Microsoft-managed keys, but this stack requires a "
                   "customer-managed key (encryption.keySource Microsoft.Keyvault)", account.urn or None)
    for container in _of(resources, Z_CONTAINER):
        if container.props.get("publicAccess") in Z_PUBLIC_CONTAINER_ACCESS:
            report(f"{container.label} grants anonymous {container.props.get('publicAccess')} access",
                   container.urn or None)


# --- 7. spend ------------------------------------------------------------------------------


def is_gpu(instance_type: str) -> bool:
    parts = instance_type.split(".")
    family = parts[1] if len(parts) > 2 and parts[0] == "ml" else parts[0]
    if instance_type.startswith("Standard_"):  # an Azure VM size
        return instance_type.startswith(Z_GPU_PREFIXES)
    if "-" in instance_type and "." not in instance_type:  # a Compute Engine machine type (GCP)
        return instance_type.split("-")[0] in G_GPU_FAMILIES
    return family in GPU_FAMILIES or family.startswith(("p4", "p5", "g5", "g6"))


def instances_of(resources: Sequence[Resource]) -> list[tuple[Resource, str, int]]:
    """(resource, instance type, count) for everything in the stack that runs on instances."""
    out: list[tuple[Resource, str, int]] = []
    for config in _of(resources, T_ENDPOINT_CONFIG):
        for variant in list(config.props.get("productionVariants") or []) + list(
                config.props.get("shadowProductionVariants") or []):
            if variant.get("instanceType"):
                out.append((config, variant["instanceType"], int(variant.get("initialInstanceCount") or 1)))
    for job in _of(resources, T_DQ_JOB):
        cluster = (job.props.get("jobResources") or {}).get("clusterConfig") or {}
        if cluster.get("instanceType"):
            out.append((job, cluster["instanceType"], int(cluster.get("instanceCount") or 1)))
    for job in _of(resources, T_CLOUDCONTROL):
        cluster = (cloudcontrol_state(job).get("JobResources") or {}).get("ClusterConfig") or {}
        if cluster.get("InstanceType"):
            out.append((job, cluster["InstanceType"], int(cluster.get("InstanceCount") or 1)))
    for pipeline in _of(resources, T_PIPELINE):
        for step in _training_steps(pipeline) or []:
            rc = (step.get("Arguments") or {}).get("ResourceConfig") or {}
            if rc.get("InstanceType"):
                out.append((pipeline, rc["InstanceType"], int(rc.get("InstanceCount") or 1)))
    for component in _of(resources, G_SERVING_DECLARATION):
        for declared in component.props.get("endpoints") or []:
            if declared.get("machineType"):
                out.append((component, str(declared["machineType"]), 1))
    for component in _of(resources, Z_SERVING_DECLARATION):
        for declared in component.props.get("endpoints") or []:
            if declared.get("vmSize"):
                out.append((component, str(declared["vmSize"]), 1))
    for compute in _of(resources, Z_COMPUTE):
        inner = (compute.props.get("properties") or {}).get("properties") or {}
        if inner.get("vmSize"):
            nodes = int((inner.get("scaleSettings") or {}).get("maxNodeCount") or 1)
            out.append((compute, str(inner["vmSize"]), nodes))
    for gateway in _of(resources, L_GATEWAY):
        if gateway.props.get("instanceType"):
            out.append((gateway, gateway.props["instanceType"], int(gateway.props.get("instanceCount") or 1)))
    return out


def validate_spend(resources: Sequence[Resource], config: Mapping[str, Any], report: ReportViolation) -> None:
    """Instance types come from the allow-list, GPU instances are capped per team, and a budget exists.

    AWS: endpoint variants, monitoring jobs and pipeline training steps; a
    ``aws:budgets/budget:Budget`` filtered on the team's cost tag. Local: the
    ``Gateway``'s ``instanceType`` and a ``Budget`` resource.
    """
    allowed = config.get("allowedInstanceTypes") or []
    gpus = 0
    for resource, instance_type, count in instances_of(resources):
        if allowed and not any(fnmatch.fnmatchcase(instance_type, pattern) for pattern in allowed):
            report(f"{resource.label} uses instance type {instance_type}, which is not in the allow-list "
                   f"({', '.join(allowed)})", resource.urn or None)
        if is_gpu(instance_type):
            gpus += count
    cap = config.get("maxGpuInstances")
    if cap is not None and gpus > int(cap):
        report(f"the stack runs {gpus} GPU instance(s); the team's cap is {cap}", None)
    if config.get("requireBudget", True):
        budgets = _of(resources, T_BUDGET, L_BUDGET, G_BUDGET, Z_BUDGET)
        if not budgets:
            report("the stack defines no budget", None)
        for budget in budgets:
            if budget.type == T_BUDGET and not budget.props.get("notifications"):
                report(f"{budget.label} notifies nobody when spend crosses it", budget.urn or None)
            if budget.type == G_BUDGET:
                rule = budget.props.get("allUpdatesRule") or {}
                if not (rule.get("monitoringNotificationChannels") or rule.get("pubsubTopic")) and \
                        rule.get("disableDefaultIamRecipients") is True:
                    report(f"{budget.label} notifies nobody when spend crosses it", budget.urn or None)
                if not ((budget.props.get("budgetFilter") or {}).get("labels") or {}).get("team"):
                    report(f"{budget.label} is not filtered on the team's label: it counts the whole billing "
                           "account's spend", budget.urn or None)
            if budget.type == Z_BUDGET:
                notifications = budget.props.get("notifications") or {}
                if not any((n or {}).get("contactEmails") or (n or {}).get("contactGroups")
                           for n in notifications.values()):
                    report(f"{budget.label} notifies nobody when spend crosses it", budget.urn or None)
                tag = (budget.props.get("filter") or {}).get("tags") or {}
                if tag.get("name") != "team" or not tag.get("values"):
                    report(f"{budget.label} is not filtered on the team's label: it counts the whole billing "
                           "account's spend", budget.urn or None)


# --- 8. databases ---------------------------------------------------------------------------

# Properties through which an RDS instance or cluster inherits its data and credentials from another
# database (a read replica, a snapshot or point-in-time restore, a global cluster's secondary).
_INHERITS = ("replicateSourceDb", "snapshotIdentifier", "restoreToPointInTime", "replicationSourceIdentifier",
             "globalClusterIdentifier", "s3Import")
_LITERAL_PASSWORDS = ("password", "passwordWo", "masterPassword", "masterPasswordWo")


def validate_database(resource: Resource, config: Mapping[str, Any], report: ReportViolation) -> None:
    """A database (an RDS instance or cluster, such as the control plane's ledger) is encrypted at rest,
    never publicly accessible, and its master password is kept by RDS in Secrets Manager.

    Reads ``storageEncrypted``, ``publiclyAccessible``, ``manageMasterUserPassword`` and the literal
    password properties of ``aws:rds/instance:Instance`` and ``aws:rds/cluster:Cluster``.
    """
    if resource.type in (G_SQL_INSTANCE, G_SQL_USER):
        _validate_cloud_sql(resource, config, report)
        return
    if resource.type in (Z_POSTGRES, Z_POSTGRES_FIREWALL):
        _validate_azure_postgres(resource, config, report)
        return
    if resource.type not in (T_DB_INSTANCE, T_DB_CLUSTER):
        return
    props = resource.props
    inherits = any(props.get(key) for key in _INHERITS)
    # Encryption at rest is chosen when the database is created and uses a KMS key (kmsKeyId, else the
    # account's aws/rds key); left unset, a new database is NOT encrypted.
    # https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/Overview.Encryption.html
    encrypted = props.get("storageEncrypted")
    if encrypted is False or (encrypted is None and not inherits):
        report(f"{resource.label} is not encrypted at rest (storageEncrypted is {'off' if encrypted is False else 'unset'})",
               resource.urn or None)
    # A publicly accessible instance gets a public DNS name resolving to a public address; the control
    # plane's database is reached only from inside its VPC.
    # https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_VPC.WorkingWithRDSInstanceinaVPC.html#USER_VPC.Hiding
    if props.get("publiclyAccessible") is True:
        report(f"{resource.label} is publicly accessible", resource.urn or None)
    # With manageMasterUserPassword RDS generates the master password and keeps (and rotates) it in
    # Secrets Manager; a password given to the resource is a literal in the program, its config or state.
    # https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-secrets-manager.html
    if not config.get("requireManagedPassword", True):
        return
    literal = [key for key in _LITERAL_PASSWORDS if props.get(key)]
    if literal:
        report(f"{resource.label} is given its master password in {', '.join(literal)}; let RDS manage it in "
               "Secrets Manager (manageMasterUserPassword: true)", resource.urn or None)
    elif props.get("manageMasterUserPassword") is not True and not inherits:
        report(f"{resource.label} does not keep its master password in Secrets Manager "
               "(manageMasterUserPassword is not set)", resource.urn or None)


def _validate_cloud_sql(resource: Resource, config: Mapping[str, Any], report: ReportViolation) -> None:
    """GCP: Cloud SQL encrypts every instance at rest. An instance is not open to the internet (no
    authorized network 0.0.0.0/0), accepts only encrypted connections, and no password is a literal in
    the program (the control plane signs in with IAM database authentication).
    https://cloud.google.com/sql/docs/postgres/configure-ssl-instance
    https://cloud.google.com/sql/docs/postgres/iam-authentication"""
    props = resource.props
    if resource.type == G_SQL_USER:
        if config.get("requireManagedPassword", True) and (props.get("password") or props.get("passwordWo")):
            report(f"{resource.label} is given a literal password; use IAM database authentication "
                   "(type CLOUD_IAM_SERVICE_ACCOUNT)", resource.urn or None)
        return
    ip = (props.get("settings") or {}).get("ipConfiguration") or {}
    open_to = [n.get("value") for n in ip.get("authorizedNetworks") or [] if str(n.get("value")).endswith("/0")]
    if open_to:
        report(f"{resource.label} is publicly accessible (authorized network {', '.join(open_to)})",
               resource.urn or None)
    if ip.get("sslMode") not in ("ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED") and ip.get("requireSsl") is not True:
        report(f"{resource.label} accepts unencrypted connections (ipConfiguration.sslMode)", resource.urn or None)
    if config.get("requireManagedPassword", True) and (props.get("rootPassword") or props.get("rootPasswordWo")):
        report(f"{resource.label} is given a literal root password", resource.urn or None)


def _validate_azure_postgres(resource: Resource, config: Mapping[str, Any], report: ReportViolation) -> None:
    """Azure: a PostgreSQL flexible server is encrypted at rest and accepts only TLS connections by default;
    it is not open to the internet (no firewall rule from 0.0.0.0 to 255.255.255.255), and no password is a
    literal in the program (the control plane signs in with Microsoft Entra authentication).
    https://learn.microsoft.com/azure/postgresql/flexible-server/concepts-azure-ad-authentication"""
    props = resource.props
    if resource.type == Z_POSTGRES_FIREWALL:
        if props.get("startIpAddress") == "0.0.0.0" and props.get("endIpAddress") == "255.255.255.255":
            report(f"{resource.label} opens the server to the whole internet", resource.urn or None)
        return
    if not config.get("requireManagedPassword", True):
        return
    if props.get("administratorLoginPassword"):
        report(f"{resource.label} is given a literal administrator password; use Microsoft Entra authentication "
               "(authConfig.passwordAuth Disabled)", resource.urn or None)
    elif (props.get("authConfig") or {}).get("passwordAuth") != "Disabled":
        report(f"{resource.label} accepts password authentication (authConfig.passwordAuth is not Disabled)",
               resource.urn or None)


# --- 9. access ------------------------------------------------------------------------------

# The stack file's mlplat:access as the policy pack reads it: one resource per stack, added to the
# graph by `mlplat policy check` (and to every `up` of a cloud stack) from the stack file. Props:
# ``provider`` (local | aws | gcp | azure), ``mode`` (the access mode, or None when unset),
# ``roles`` (role → principal patterns).
T_ACCESS = "mlplat:stack:Access"
CLOUD_PROVIDERS = ("aws", "gcp", "azure")
AUTHENTICATED_MODES = ("oidc", "aws-iam", "google", "entra")


def validate_access(resources: Sequence[Resource], config: Mapping[str, Any], report: ReportViolation) -> None:
    """A stack on a cloud provider authenticates every caller and names its admins.

    On aws, gcp or azure the access mode is one where the server verifies a credential (oidc, aws-iam,
    google, entra): ``os-user`` and ``trusted-local`` let a caller name themselves, which is only
    acceptable on one machine (the local provider). With ``requireAdmin``, at least one principal
    pattern holds the admin role, and not ``*`` (every authenticated caller).
    """
    for access in _of(resources, T_ACCESS):
        provider = str(access.props.get("provider") or "")
        if provider not in CLOUD_PROVIDERS:
            continue
        mode = access.props.get("mode")
        if mode not in AUTHENTICATED_MODES:
            named = f"mode {mode!r}" if mode else "no mode (embedded, the OS user)"
            report(f"stack on {provider} declares {named} under mlplat:access; a cloud stack must authenticate "
                   f"its callers with one of {', '.join(AUTHENTICATED_MODES)}", access.urn or None)
        if not config.get("requireAdmin", True):
            continue
        admins = [str(p).strip() for p in ((access.props.get("roles") or {}).get("admin") or []) if str(p).strip()]
        if not admins:
            report(f"stack on {provider} names no admin under mlplat:access.roles.admin; someone must be able to "
                   f"apply governance and roles", access.urn or None)
        elif "*" in admins:
            report(f"stack on {provider} makes every authenticated caller an admin (mlplat:access.roles.admin "
                   f"lists '*'); name the admins (an IdP group, a principal, an IAM role ARN)", access.urn or None)


# --- the catalog ------------------------------------------------------------------------

_STRINGS = {"type": "array", "items": {"type": "string"}}

POLICIES: tuple[Policy, ...] = (
    Policy(
        name="required-cost-tags",
        description="Every taggable resource carries the cost tags team, cost-center, environment and owner.",
        remediation="Set the tags under mlplat:tags in the stack file; resources created outside mlplat's "
                    "components must pass the stack's tags explicitly.",
        kind="resource",
        validate=validate_cost_tags,
        config_schema={"requiredTags": {**_STRINGS, "default": ["team", "cost-center", "environment", "owner"],
                                        "description": "Tag keys every taggable resource must carry."}},
    ),
    Policy(
        name="tracking-required",
        description="Every training pipeline and job reports to the team's tracking server.",
        remediation="Train through the stack's pipeline (or mlplat.start_run locally); set MLFLOW_TRACKING_URI of "
                    "every training step to the stack's tracking server.",
        kind="stack",
        validate=validate_tracking,
    ),
    Policy(
        name="approval-required",
        description="Critical models need a manual approval before deployment; production endpoints serve only "
                    "approved registry versions.",
        remediation="Register critical models as PendingManualApproval, deploy only on the approval event, and "
                    "point production endpoints at model packages; list enough approvers under mlplat:governance.",
        kind="stack",
        validate=validate_approval,
        config_schema={"approvalFor": {"type": "string", "enum": ["critical", "all"], "default": "critical",
                                       "description": "Which models need a manual approval."}},
    ),
    Policy(
        name="monitoring-required",
        description="Every production endpoint has data capture, a monitoring schedule, alarms and an alert route.",
        remediation="Keep serving.captureSampling above 0 and monitoring.channels non-empty; mlplat's serving and "
                    "monitoring components create the schedule, alarms and topic.",
        kind="stack",
        validate=validate_monitoring,
        config_schema={"productionEnvironments": {**_STRINGS, "default": ["production"],
                                                  "description": "Environment tag values that count as production."}},
    ),
    Policy(
        name="safe-rollout",
        description="Production endpoints roll out in steps, roll back on alarms, and mirror a bounded share.",
        remediation="Start serving.canary.steps at or below the limit, keep serving.shadow.percent at or below "
                    "the limit, and keep the rollback alarms of the serving component.",
        kind="stack",
        validate=validate_safe_rollout,
        config_schema={
            "maxFirstCanaryStep": {"type": "number", "default": 10, "minimum": 0, "maximum": 100,
                                   "description": "Largest first canary step, in percent."},
            "maxShadowPercent": {"type": "number", "default": 50, "minimum": 0, "maximum": 50,
                                 "description": "Largest share of traffic mirrored to a shadow, in percent."},
            "productionEnvironments": {**_STRINGS, "default": ["production"],
                                       "description": "Environment tag values that count as production."},
        },
    ),
    Policy(
        name="storage",
        description="Storage is encrypted at rest and never public.",
        remediation="Use mlplat's tracking component (encrypted, versioned, public access blocked); never attach "
                    "public ACLs or policies to platform buckets.",
        kind="stack",
        validate=validate_storage,
        config_schema={
            "requireKms": {"type": "boolean", "default": False,
                           "description": "Require KMS (aws:kms) rather than S3-managed keys."},
            "allowHostFilesystemEncryption": {"type": "boolean", "default": True,
                                              "description": "Accept the host's disk encryption for local stacks."},
        },
    ),
    Policy(
        name="spend",
        description="Instance types come from an allow-list, GPU instances are capped per team, and a budget exists.",
        remediation="Pick an allowed serving.instanceType (or extend allowedInstanceTypes with the platform team), "
                    "stay under maxGpuInstances, and set mlplat:budget.",
        kind="stack",
        validate=validate_spend,
        config_schema={
            "allowedInstanceTypes": {**_STRINGS, "default": [
                "ml.t3.*", "ml.m5.*", "ml.m6i.*", "ml.m7i.*", "ml.c5.*", "ml.c6i.*", "ml.c7i.*", "ml.r5.*",
                "ml.g4dn.*", "ml.g5.*", "local.*", "n1-standard-*", "n2-standard-*", "e2-standard-*",
                "n1-highmem-*", "g2-standard-*", "Standard_DS*_v2", "Standard_D*s_v3", "Standard_D*s_v5",
                "Standard_E*s_v3", "Standard_F*s_v2", "Standard_NC*"],
                "description": "Glob patterns of allowed instance types."},
            "maxGpuInstances": {"type": "integer", "default": 4, "minimum": 0,
                                "description": "GPU instances the team may run at once."},
            "requireBudget": {"type": "boolean", "default": True, "description": "Require a budget resource."},
        },
    ),
    Policy(
        name="database",
        description="Databases (the control plane's ledger) are encrypted at rest, not publicly accessible, and "
                    "keep their master password in Secrets Manager.",
        remediation="Use mlplat's control plane component (storageEncrypted, publiclyAccessible: false, "
                    "manageMasterUserPassword: true); never pass a database password to the program.",
        kind="resource",
        validate=validate_database,
        config_schema={"requireManagedPassword": {
            "type": "boolean", "default": True,
            "description": "Require the master password managed by RDS in Secrets Manager (no literal password)."}},
    ),
    Policy(
        name="access",
        description="Stacks on a cloud provider authenticate every caller (oidc, aws-iam, google or entra) and name "
                    "at least one admin; trusted-local and os-user are for the local provider only.",
        remediation="Set mlplat:access.mode to oidc (with access.oidc: issuer, audience), aws-iam, google or entra, "
                    "and list the admins under mlplat:access.roles.admin (an IdP group, a principal, an IAM role ARN).",
        kind="stack",
        validate=validate_access,
        config_schema={"requireAdmin": {"type": "boolean", "default": True,
                                        "description": "Require at least one named admin (not '*')."}},
    ),
)
BY_NAME: dict[str, Policy] = {p.name: p for p in POLICIES}
NAMES = tuple(BY_NAME)


# --- configuration -------------------------------------------------------------------------


def _type_ok(value: Any, spec: Mapping[str, Any]) -> bool:
    kind = spec.get("type")
    if kind == "array":
        item = spec.get("items", {}).get("type")
        return isinstance(value, list) and all(_type_ok(v, {"type": item}) for v in value)
    if kind == "string":
        return isinstance(value, str) and ("enum" not in spec or value in spec["enum"])
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        return True
    return ok and spec.get("minimum", value) <= value <= spec.get("maximum", value)


def _expected(spec: Mapping[str, Any]) -> str:
    if "enum" in spec:
        return "one of " + ", ".join(spec["enum"])
    if spec.get("type") == "array":
        return f"a list of {spec.get('items', {}).get('type', 'value')}s"
    bounds = ""
    if "minimum" in spec or "maximum" in spec:
        bounds = f" between {spec.get('minimum', '-inf')} and {spec.get('maximum', 'inf')}"
    return f"a {spec.get('type')}{bounds}"


def config_errors(policies: Mapping[str, Any]) -> list[str]:
    """Problems in a per-policy configuration mapping (name → level or {enforcementLevel, settings...})."""
    errors = []
    for name, value in policies.items():
        policy = BY_NAME.get(name)
        if policy is None:
            near = difflib.get_close_matches(str(name), NAMES, n=1)
            errors.append(f"unknown policy '{name}'" + (f"; did you mean '{near[0]}'?" if near else "")
                          + f" known policies: {', '.join(NAMES)}")
            continue
        if isinstance(value, str):
            if value not in LEVELS:
                errors.append(f"policy '{name}': enforcement level '{value}' is not one of {', '.join(LEVELS)}")
            continue
        if not isinstance(value, Mapping):
            errors.append(f"policy '{name}': expected an enforcement level or a mapping, got {value!r}")
            continue
        for key, setting in value.items():
            if key == "enforcementLevel":
                if setting not in LEVELS:
                    errors.append(f"policy '{name}': enforcementLevel '{setting}' is not one of {', '.join(LEVELS)}")
                continue
            spec = policy.config_schema.get(key)
            if spec is None:
                allowed = ["enforcementLevel", *policy.config_schema]
                near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
                errors.append(f"policy '{name}': unknown setting '{key}'" + (f"; did you mean '{near[0]}'?" if near
                              else "") + f" allowed: {', '.join(allowed)}")
            elif not _type_ok(setting, spec):
                errors.append(f"policy '{name}': {key} must be {_expected(spec)}, got {setting!r}")
    return errors


def resolve_level(policy: Policy, pack_level: str | None, policy_setting: Any) -> str:
    """Enforcement level of ``policy``: the policy's own setting, else the pack level, else the policy default."""
    if isinstance(policy_setting, str):
        return policy_setting
    if isinstance(policy_setting, Mapping) and policy_setting.get("enforcementLevel"):
        return str(policy_setting["enforcementLevel"])
    return pack_level or policy.default_level


def policy_config(policy: Policy, policy_setting: Any) -> dict[str, Any]:
    """The policy's settings: its schema defaults overlaid with the stack's."""
    config = policy.defaults()
    if isinstance(policy_setting, Mapping):
        config.update({k: _copy(v) for k, v in policy_setting.items() if k != "enforcementLevel"})
    return config


def evaluate(resources: Sequence[Resource], settings: Mapping[str, Any] | None = None) -> list[Finding]:
    """Run every enabled policy over a stack's resources.

    ``settings`` is the stack's policy configuration: ``{"enforcementLevel": level,
    "policies": {name: level | {"enforcementLevel": level, setting: value}}}``.
    Raises ``ValueError`` listing every problem when the configuration is invalid.
    """
    settings = settings or {}
    per_policy = settings.get("policies") or {}
    errors = config_errors(per_policy)
    pack_level = settings.get("enforcementLevel")
    if pack_level is not None and pack_level not in LEVELS:
        errors.insert(0, f"enforcementLevel '{pack_level}' is not one of {', '.join(LEVELS)}")
    if errors:
        raise ValueError("; ".join(errors))
    by_urn = {r.urn: r for r in resources if r.urn}
    findings: list[Finding] = []
    for policy in POLICIES:
        level = resolve_level(policy, pack_level, per_policy.get(policy.name))
        if level == DISABLED:
            continue
        config = policy_config(policy, per_policy.get(policy.name))

        def report(message: str, urn: str | None = None, *, _policy: Policy = policy, _level: str = level,
                   _subject: Resource | None = None) -> None:
            target = by_urn.get(urn or "") or _subject
            findings.append(Finding(_policy.name, _level, message, _policy.remediation,
                                    target.type if target else "", target.name if target else "", urn or ""))

        if policy.kind == "resource":
            for resource in resources:
                policy.validate(resource, config,
                                lambda message, urn=None, _r=resource, _p=policy, _l=level: report(
                                    message, urn, _policy=_p, _level=_l, _subject=_r))
        else:
            policy.validate(list(resources), config, report)
    return findings


def crossguard_config(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stack's policy settings as a ``pulumi preview --policy-pack-config`` document."""
    settings = settings or {}
    out: dict[str, Any] = {}
    if settings.get("enforcementLevel"):
        out["all"] = settings["enforcementLevel"]
    for name, value in (settings.get("policies") or {}).items():
        out[name] = {"enforcementLevel": value} if isinstance(value, str) else dict(value)
    return out
