"""Rules Azure enforces on requests and Pulumi's mocks do not: names, tags, metrics, mirror traffic.

Each rule returns the reason a value would be refused, or ``None`` when Azure accepts it, so a stack is
refused when it is planned (or validated) with the reason instead of by Azure Resource Manager at
``mlplat up``. ``program_problems`` applies the rules to the resources a program registered (tests run
it over the Azure program under mocks, and over wrong programs). Stdlib only.

Naming rules: https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules
Tag limits: https://learn.microsoft.com/azure/azure-resource-manager/management/tag-resources#limitations
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from mlplat_providers.azure.naming import ENDPOINT_NAME_MAX, ENDPOINT_NAME_MIN

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# VM sizes of managed online deployments and compute clusters: Standard_<family><vCPUs>... e.g. Standard_DS3_v2.
# https://learn.microsoft.com/azure/machine-learning/reference-managed-online-endpoints-vm-sku-list
VM_SIZE = r"^Standard_[A-Z][A-Za-z0-9_]*$"
VM_SIZE_RE = re.compile(VM_SIZE)


def _name_problem(value: str, what: str, low: int, high: int, pattern: str, rule: str) -> str | None:
    if not low <= len(value) <= high:
        return f"{what} name {value!r} has {len(value)} characters; Azure allows {low} to {high}"
    if not re.fullmatch(pattern, value):
        return f"{what} name {value!r} is refused: {rule}"
    return None


def resource_group_problem(name: str) -> str | None:
    """1-90 characters: letters, digits, underscores, hyphens, periods and parentheses, not ending with a period."""
    return _name_problem(name, "resource group", 1, 90, r"[\w\-.()]*[\w\-()]",
                         "letters, digits, '_', '-', '.', '(' and ')', not ending with '.'")


def storage_account_problem(name: str) -> str | None:
    """3-24 lowercase letters and digits, globally unique."""
    return _name_problem(name, "storage account", 3, 24, r"[a-z0-9]+", "lowercase letters and digits only")


def blob_container_problem(name: str) -> str | None:
    """3-63 lowercase letters, digits and hyphens; starts with a letter or digit; no consecutive hyphens."""
    problem = _name_problem(name, "blob container", 3, 63, r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?",
                            "lowercase letters, digits and hyphens, starting and ending with a letter or digit")
    if problem is None and "--" in name:
        return f"blob container name {name!r} is refused: no consecutive hyphens"
    return problem


def key_vault_problem(name: str) -> str | None:
    """3-24 alphanumerics and hyphens, starting with a letter, ending with a letter or digit, no '--'."""
    problem = _name_problem(name, "key vault", 3, 24, r"[a-zA-Z][a-zA-Z0-9-]*[a-zA-Z0-9]",
                            "letters, digits and hyphens, starting with a letter, ending with a letter or digit")
    if problem is None and "--" in name:
        return f"key vault name {name!r} is refused: no consecutive hyphens"
    return problem


def container_registry_problem(name: str) -> str | None:
    """5-50 alphanumerics, globally unique."""
    return _name_problem(name, "container registry", 5, 50, r"[a-zA-Z0-9]+", "letters and digits only")


def workspace_problem(name: str) -> str | None:
    """Azure ML workspaces and registries: 3-33 alphanumerics, hyphens and underscores, starting with a
    letter or digit. https://learn.microsoft.com/azure/machine-learning/how-to-manage-workspace"""
    return _name_problem(name, "workspace", 3, 33, r"[a-zA-Z0-9][a-zA-Z0-9_-]*",
                         "letters, digits, '-' and '_', starting with a letter or digit")


def compute_problem(name: str) -> str | None:
    """Compute clusters: 2-16 letters, digits and hyphens, starting with a letter, not ending with a hyphen.
    https://learn.microsoft.com/azure/machine-learning/how-to-create-attach-compute-cluster"""
    return _name_problem(name, "compute", 2, 16, r"[a-zA-Z][a-zA-Z0-9-]*[a-zA-Z0-9]",
                         "letters, digits and hyphens, starting with a letter, not ending with a hyphen")


def endpoint_problem(name: str) -> str | None:
    """Online endpoints: 3-32 characters, starting with a letter, letters, digits and hyphens, unique per region.
    https://learn.microsoft.com/azure/machine-learning/how-to-manage-quotas#azure-machine-learning-online-endpoints-and-batch-endpoints"""
    return _name_problem(name, "online endpoint", ENDPOINT_NAME_MIN, ENDPOINT_NAME_MAX,
                         r"[a-zA-Z][a-zA-Z0-9-]*[a-zA-Z0-9]",
                         "letters, digits and hyphens, starting with a letter, not ending with a hyphen")


def postgres_server_problem(name: str) -> str | None:
    """Flexible servers: 3-63 lowercase letters, digits and hyphens, not starting or ending with a hyphen."""
    return _name_problem(name, "PostgreSQL server", 3, 63, r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?",
                         "lowercase letters, digits and hyphens, not starting or ending with a hyphen")


def container_app_problem(name: str) -> str | None:
    """Container apps: 2-32 lowercase letters, digits and hyphens, starting with a letter, ending with a
    letter or digit, no '--'."""
    problem = _name_problem(name, "container app", 2, 32, r"[a-z][a-z0-9-]*[a-z0-9]",
                            "lowercase letters, digits and hyphens, starting with a letter")
    if problem is None and "--" in name:
        return f"container app name {name!r} is refused: no consecutive hyphens"
    return problem


def action_group_short_name_problem(name: str) -> str | None:
    """An action group's short name (in SMS and e-mails): at most 12 characters."""
    return _name_problem(name, "action group short", 1, 12, r".+", "1 to 12 characters")


# --- tags ----------------------------------------------------------------------------------------

MAX_TAGS = 50
MAX_TAG_NAME = 512
MAX_TAG_VALUE = 256
# Tag names may not contain these characters (ARM refuses them).
FORBIDDEN_TAG_CHARS = set("<>%&\\?/")


def tags_problem(tags: Mapping[str, Any]) -> str | None:
    """At most 50 tags, names of at most 512 characters without ``<>%&\\?/``, values of at most 256."""
    if len(tags) > MAX_TAGS:
        return f"{len(tags)} tags; Azure allows at most {MAX_TAGS} per resource"
    for key, value in tags.items():
        if not key or len(key) > MAX_TAG_NAME:
            return f"tag name {key[:40]!r}... has {len(key)} characters; Azure allows 1 to {MAX_TAG_NAME}"
        bad = sorted(FORBIDDEN_TAG_CHARS & set(key))
        if bad:
            return f"tag name {key!r} contains {''.join(bad)!r}, which Azure refuses in tag names"
        if len(str(value)) > MAX_TAG_VALUE:
            return f"tag {key!r} has a value of {len(str(value))} characters; Azure allows at most {MAX_TAG_VALUE}"
    return None


# --- metrics ---------------------------------------------------------------------------------------

# Platform metrics Azure Monitor publishes for online endpoints and deployments: metric alerts may watch
# only these (an alert on any other name is refused by ARM or never fires).
# https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-onlineendpoints-metrics
ENDPOINT_NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
ENDPOINT_METRICS = frozenset({
    "ConnectionsActive", "DataCollectionErrorsPerMinute", "DataCollectionEventsPerMinute", "NetworkBytes",
    "NewConnectionsPerSecond", "RequestLatency", "RequestLatency_P50", "RequestLatency_P90", "RequestLatency_P95",
    "RequestLatency_P99", "RequestsPerMinute"})
# https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-onlineendpoints-deployments-metrics
DEPLOYMENT_NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments"
DEPLOYMENT_METRICS = frozenset({
    "CpuMemoryUtilizationPercentage", "CpuUtilizationPercentage", "DataCollectionErrorsPerMinute",
    "DataCollectionEventsPerMinute", "DeploymentCapacity", "DiskUtilization", "GpuEnergyJoules",
    "GpuMemoryUtilizationPercentage", "GpuUtilizationPercentage", "RequestLatency_P50", "RequestLatency_P90",
    "RequestLatency_P95", "RequestLatency_P99", "RequestsPerMinute"})
# The platform's monitoring pass publishes its own results as Azure Monitor custom metrics on the
# workspace resource, in the custom namespace "mlplat" with dimensions team and model.
# https://learn.microsoft.com/azure/azure-monitor/essentials/metrics-custom-overview
WORKSPACE_NAMESPACE = "Microsoft.MachineLearningServices/workspaces"
PLATFORM_NAMESPACE = "mlplat"
# (the runtime's monitoring module publishes exactly these: tests pin it)
PLATFORM_DIMENSIONS = ("team", "model")
PLATFORM_METRICS = frozenset({"drift_share", "max_psi", "feature_psi", "prediction_drift", "predictions", "accuracy",
                              "precision", "recall"})
PUBLISHED = {ENDPOINT_NAMESPACE: ENDPOINT_METRICS, DEPLOYMENT_NAMESPACE: DEPLOYMENT_METRICS,
             PLATFORM_NAMESPACE: PLATFORM_METRICS}


def metric_problem(namespace: str, metric: str) -> str | None:
    """Whether ``metric`` in ``namespace`` is published (by Azure ML or by the platform's pass)."""
    known = PUBLISHED.get(namespace)
    if known is None:
        return f"metric namespace {namespace!r} is neither an online endpoint's, a deployment's nor the platform's"
    if metric not in known:
        return f"metric {metric!r} is not published in {namespace!r}; an alert on it never fires"
    return None


# Dimensions of the online endpoint metrics (same page): the request count splits by deployment and by
# the answer's status code, its class (``2xx``, ``4xx``, ``5xx``) and the model's own status code; the
# latencies split by deployment only. A query filtering or splitting on any other dimension is refused.
# https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-onlineendpoints-metrics
ENDPOINT_METRIC_DIMENSIONS: dict[str, frozenset[str]] = {
    "RequestsPerMinute": frozenset({"deployment", "statusCode", "statusCodeClass", "modelStatusCode"}),
    **{m: frozenset({"deployment"}) for m in ("RequestLatency", "RequestLatency_P50", "RequestLatency_P90",
                                              "RequestLatency_P95", "RequestLatency_P99")},
    "DataCollectionErrorsPerMinute": frozenset({"deployment", "reason", "type"}),
    "DataCollectionEventsPerMinute": frozenset({"deployment", "type"}),
    **{m: frozenset() for m in ("ConnectionsActive", "NetworkBytes", "NewConnectionsPerSecond")},
}
STATUS_CODE_CLASSES = frozenset({"1xx", "2xx", "3xx", "4xx", "5xx"})


def metric_query_problem(metrics: Iterable[str], dimensions: Iterable[str]) -> str | None:
    """A query of an online endpoint's metrics names only published metrics, and filters or splits only on
    dimensions every one of them has (Azure Monitor answers 400 otherwise).
    https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-onlineendpoints-metrics"""
    names = list(metrics)
    if not names:
        return "a metrics query names at least one metric"
    for name in names:
        if name not in ENDPOINT_METRIC_DIMENSIONS:
            return f"metric {name!r} is not published for online endpoints ({ENDPOINT_NAMESPACE})"
    for dimension in dimensions:
        lacking = [n for n in names if dimension not in ENDPOINT_METRIC_DIMENSIONS[n]]
        if lacking:
            return (f"dimension {dimension!r} is not a dimension of {', '.join(lacking)}; "
                    f"query those metrics without it")
    return None


# --- traffic ---------------------------------------------------------------------------------------

MAX_MIRROR_PERCENT = 50


def traffic_problem(traffic: Mapping[str, int], mirror: Mapping[str, int], deployments: Iterable[str]) -> str | None:
    """An online endpoint's traffic sums to 100 (or 0) over existing deployments; mirror traffic is at most
    50 % in total and never goes to a deployment that has live traffic.
    https://learn.microsoft.com/azure/machine-learning/how-to-safely-rollout-online-endpoints#test-the-deployment-with-mirrored-traffic"""
    known = set(deployments)
    unknown = sorted((set(traffic) | set(mirror)) - known)
    if unknown:
        return f"traffic names deployment(s) {', '.join(unknown)} the endpoint does not have"
    total = sum(int(v) for v in traffic.values())
    if traffic and total not in (0, 100):
        return f"traffic sums to {total} %; it must sum to 100 over the endpoint's deployments"
    mirrored = sum(int(v) for v in mirror.values())
    if mirrored > MAX_MIRROR_PERCENT:
        return f"mirror traffic totals {mirrored} %; Azure allows at most {MAX_MIRROR_PERCENT} %"
    live = sorted(d for d, v in mirror.items() if int(v) and int(traffic.get(d, 0)))
    if live:
        return f"mirror traffic goes to {', '.join(live)}, which has live traffic; mirror only to a deployment at 0 %"
    return None


# --- roles -----------------------------------------------------------------------------------------

# Built-in role definition ids the program assigns (least privilege, never Owner/Contributor).
# https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
ROLE_IDS = {
    "AzureML Data Scientist": "f6c7c914-8db3-469d-8ca1-694a8f32e121",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "AcrPush": "8311e382-0749-4cb8-b61a-304f252e45ec",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Monitoring Reader": "43d0d8ad-25c7-4714-9337-8ba259a9fe05",
    "Cost Management Reader": "72fafb9e-0641-4937-9268-a91bfd8191a3",
}
BROAD_ROLE_IDS = {"8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner", "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
                  "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator"}


def role_problem(role_definition_id: str) -> str | None:
    guid = str(role_definition_id).rsplit("/", 1)[-1].lower()
    if guid in BROAD_ROLE_IDS:
        return f"role {BROAD_ROLE_IDS[guid]} spans every resource type; grant a narrower built-in role"
    return None


# --- over a recorded program ---------------------------------------------------------------------

_NAME_RULES = {
    "azure-native:resources:ResourceGroup": ("resourceGroupName", resource_group_problem),
    "azure-native:storage:StorageAccount": ("accountName", storage_account_problem),
    "azure-native:storage:BlobContainer": ("containerName", blob_container_problem),
    "azure-native:keyvault:Vault": ("vaultName", key_vault_problem),
    "azure-native:containerregistry:Registry": ("registryName", container_registry_problem),
    "azure-native:machinelearningservices:Workspace": ("workspaceName", workspace_problem),
    "azure-native:machinelearningservices:Registry": ("registryName", workspace_problem),
    "azure-native:machinelearningservices:Compute": ("computeName", compute_problem),
    "azure-native:machinelearningservices:OnlineEndpoint": ("endpointName", endpoint_problem),
    "azure-native:dbforpostgresql:Server": ("serverName", postgres_server_problem),
    "azure-native:app:ContainerApp": ("containerAppName", container_app_problem),
    "azure-native:monitor:ActionGroup": ("groupShortName", action_group_short_name_problem),
}


def _criteria_metrics(criteria: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(str(c.get("metricNamespace") or ""), str(c.get("metricName") or ""))
            for c in (criteria or {}).get("allOf") or []]


def program_problems(records: Iterable[Any]) -> list[str]:
    """Every rule over the resources of a recorded program (``type``, ``name``, ``inputs``)."""
    problems: list[str] = []
    for r in records:
        inputs = r.inputs
        rule = _NAME_RULES.get(r.type)
        if rule is not None and isinstance(inputs.get(rule[0]), str):
            if (p := rule[1](inputs[rule[0]])) is not None:
                problems.append(f"{r.name}: {p}")
        if isinstance(inputs.get("tags"), Mapping) and (p := tags_problem(inputs["tags"])) is not None:
            problems.append(f"{r.name}: {p}")
        if r.type == "azure-native:monitor:MetricAlert":
            for namespace, metric in _criteria_metrics(inputs.get("criteria") or {}):
                if (p := metric_problem(namespace, metric)) is not None:
                    problems.append(f"{r.name}: {p}")
        if r.type == "azure-native:authorization:RoleAssignment" and \
                (p := role_problem(str(inputs.get("roleDefinitionId") or ""))) is not None:
            problems.append(f"{r.name}: {p}")
        if r.type == "azure-native:machinelearningservices:OnlineEndpoint":
            props = inputs.get("properties") or {}
            traffic, mirror = dict(props.get("traffic") or {}), dict(props.get("mirrorTraffic") or {})
            if (p := traffic_problem(traffic, mirror, set(traffic) | set(mirror))) is not None:
                problems.append(f"{r.name}: {p}")
        if r.type == "azure-native:storage:StorageAccount":
            if inputs.get("allowBlobPublicAccess") is not False:
                problems.append(f"{r.name}: storage account allows public blob access")
            if inputs.get("minimumTlsVersion") != "TLS1_2":
                problems.append(f"{r.name}: storage account accepts TLS older than 1.2")
            if inputs.get("enableHttpsTrafficOnly") is not True:
                problems.append(f"{r.name}: storage account accepts plain HTTP")
        if r.type == "azure-native:containerregistry:Registry" and inputs.get("adminUserEnabled") is not False:
            problems.append(f"{r.name}: container registry has its admin user enabled")
    return problems
