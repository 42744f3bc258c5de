"""Planning logic of the Azure program, as pure functions of the stack (no Pulumi, no Azure SDK).

The components in ``components.py`` only turn these values into resources; names, tags, alert criteria,
role assignments and the dashboard are decided (and unit-tested) here. The runtime finds what the program
made through the same functions (``naming.endpoint_name``, ``StackPlan.workspace``, ``StackPlan.tags``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from mlplat.errors import StackError
from mlplat.stack import RiskTier, StackSpec
from mlplat_providers.azure import naming
from mlplat_providers.azure import service_rules as rules

DEFAULT_VM_SIZE = "Standard_DS3_v2"
MANAGED_TAG = "mlplat-managed"  # on everything the platform creates; nothing without it is changed or deleted
COMPUTE_NAME = naming.COMPUTE_NAME
# The serving environment's image: the platform's model server (``python -m mlplat.serving.model_server``)
# built into the stack's container registry by the team's image build; its routes are the server's own.
SERVING_IMAGE = "{registry}.azurecr.io/mlplat-serve:latest"
SERVING_PORT = 8080
SERVING_ROUTES = {"liveness": "/v2/health/live", "readiness": "/v2/health/ready", "scoring": "/invocations"}
FEATURE_ENTITY = "customer"
# The feature store's online store: an Azure Cache for Redis reached through this feature-store connection
ONLINE_STORE_CONNECTION = "mlplat-online-store"


def _alnum(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())[:limit]


@dataclass(frozen=True)
class ModelPlan:
    model: str
    risk_tier: RiskTier
    endpoint_name: str        # unique per region: <model>-<short stable hash>


@dataclass(frozen=True)
class StackPlan:
    spec: StackSpec
    subscription_id: str
    resource_group: str
    location: str
    prefix: str
    storage_account: str
    key_vault: str
    container_registry: str
    log_analytics: str
    app_insights: str
    identity: str
    workspace: str
    feature_store: str
    registry: str | None
    create_registry: bool
    compute: str
    postgres_server: str
    container_environment: str
    server_app: str
    action_group: str
    action_group_short_name: str
    vm_size: str
    models: list[ModelPlan] = field(default_factory=list)

    @property
    def tags(self) -> dict[str, str]:
        """The stack's cost tags plus the platform-managed marker (Azure tags keep the values as written)."""
        return {**self.spec.tags.as_dict(), MANAGED_TAG: "true"}

    @property
    def is_production(self) -> bool:
        return self.spec.environment in ("production", "prod")

    @property
    def rg_id(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"

    @property
    def online_store(self) -> str:
        """The feature store's Azure Cache for Redis: 1-63 lowercase letters, digits and single hyphens, unique in
        Azure (the host name ``<name>.redis.cache.windows.net``), so it ends with the storage account's hash."""
        return f"redis-{naming.slug(self.prefix, 48)}-{self.storage_account[-6:]}"

    def workspace_id(self, name: str | None = None) -> str:
        return f"{self.rg_id}/providers/Microsoft.MachineLearningServices/workspaces/{name or self.workspace}"

    def endpoint_id(self, model: ModelPlan) -> str:
        return f"{self.workspace_id()}/onlineEndpoints/{model.endpoint_name}"


def _missing(spec: StackSpec) -> None:
    provider = spec.provider
    for key, label in (("subscription_id", "subscriptionId"), ("resource_group", "resourceGroup"),
                       ("location", "location")):
        if not getattr(provider, key, None):
            raise StackError(f"stack '{spec.name}' has no mlplat:provider.{label}; the Azure program needs it",
                             where=spec.path or None, hint=f"set mlplat:provider.{label} in the stack file")


def stack_plan(spec: StackSpec) -> StackPlan:
    """Names and per-model plans of an Azure stack. Raises ``StackError`` for a stack not on Azure, a missing
    subscription, resource group or location, tags Azure refuses, or a name Azure would refuse."""
    if spec.provider.kind != "azure":
        raise StackError(f"stack '{spec.name}' uses the {spec.provider.kind} provider, not azure",
                         where=spec.path or None,
                         hint="set mlplat:provider.kind to azure, or use the stack with its own provider")
    _missing(spec)
    provider: Any = spec.provider  # an AzureProviderSpec (kind checked above)
    sub, rg, location = str(provider.subscription_id), str(provider.resource_group), str(provider.location)
    team, env = spec.team, spec.environment
    prefix = naming.slug(f"{team}-{env}", 40)
    digest = naming.short_hash(sub, rg, team, env, length=6)
    workspace = provider.workspace or naming.workspace_name(team, env)
    instance = spec.serving.instance_type
    vm_size = provider.vm_size or (instance if rules.VM_SIZE_RE.match(instance) else DEFAULT_VM_SIZE)
    models = [ModelPlan(model=m, risk_tier=spec.risk_tier_for(m),
                        endpoint_name=naming.endpoint_name(sub, rg, workspace, m))
              for m in (list(spec.governance.models) or [f"{team}-model"])]
    plan = StackPlan(
        spec=spec, subscription_id=sub, resource_group=rg, location=location, prefix=prefix,
        storage_account=f"st{_alnum(team + env, 16)}{digest}",
        key_vault=f"kv-{naming.slug(prefix, 14)}-{digest}",
        container_registry=f"acr{_alnum(team + env, 30)}{digest}",
        log_analytics=f"log-{prefix}", app_insights=f"appi-{prefix}", identity=f"id-{prefix}",
        workspace=workspace, feature_store=naming.slug(f"fs-{team}-{env}", 33),
        registry=provider.registry, create_registry=bool(provider.create_registry and provider.registry),
        compute=COMPUTE_NAME, postgres_server=naming.slug(f"psql-{prefix}-{digest}", 63),
        container_environment=naming.slug(f"cae-{prefix}", 60), server_app=naming.slug(f"ca-{prefix}-server", 32),
        action_group=f"ag-{prefix}", action_group_short_name=naming.slug(f"ml{team}", 12),
        vm_size=vm_size, models=models)
    problems = [p for p in (rules.tags_problem(plan.tags), rules.resource_group_problem(rg),
                            rules.storage_account_problem(plan.storage_account),
                            rules.key_vault_problem(plan.key_vault),
                            rules.container_registry_problem(plan.container_registry),
                            rules.workspace_problem(plan.workspace), rules.workspace_problem(plan.feature_store),
                            rules.compute_problem(plan.compute), rules.postgres_server_problem(plan.postgres_server),
                            rules.container_app_problem(plan.server_app),
                            rules.action_group_short_name_problem(plan.action_group_short_name),
                            *(rules.endpoint_problem(m.endpoint_name) for m in models)) if p]
    if problems:
        raise StackError(f"stack '{spec.name}' makes names or tags Azure refuses: {'; '.join(problems)}",
                         where=spec.path or None, hint="shorten mlplat:team or mlplat:environment, or fix the tags")
    return plan


# --- monitoring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertCriterion:
    suffix: str
    description: str
    namespace: str
    metric: str
    operator: str
    threshold: float
    aggregation: str
    dimensions: tuple[tuple[str, str], ...] = ()


def alert_criteria(spec: StackSpec) -> list[AlertCriterion]:
    """What the team's metric alerts watch: the p99 request latency online endpoints publish, their server
    errors (RequestsPerMinute with status code class 5xx), and the drift share the platform's pass
    publishes as an Azure Monitor custom metric (namespace ``mlplat``) on the workspace."""
    canary = spec.serving.canary
    return [
        AlertCriterion("latency", "p99 request latency (ms)", rules.ENDPOINT_NAMESPACE, "RequestLatency_P99",
                       "GreaterThan", float(spec.serving.latency_budget_ms), "Average"),
        AlertCriterion("errors", "server errors per minute", rules.ENDPOINT_NAMESPACE, "RequestsPerMinute",
                       "GreaterThan", float(max(1, round(canary.max_error_rate * 100))), "Total",
                       (("statusCodeClass", "5xx"),)),
        AlertCriterion("drift", "share of drifted features", rules.PLATFORM_NAMESPACE, "drift_share",
                       "GreaterThan", float(spec.monitoring.drift.share), "Maximum"),
    ]


def criteria_of(criterion: AlertCriterion, model: ModelPlan, team: str) -> dict[str, Any]:
    dims = list(criterion.dimensions)
    if criterion.namespace == rules.PLATFORM_NAMESPACE:
        dims += [("team", team), ("model", model.model)]
    # camelCase: pulumi-azure-native passes this union-typed input through without renaming keys
    return {"odataType": "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria", "allOf": [{
        "criterionType": "StaticThresholdCriterion", "name": criterion.suffix, "metricName": criterion.metric,
        "metricNamespace": criterion.namespace, "operator": criterion.operator, "threshold": criterion.threshold,
        "timeAggregation": criterion.aggregation,
        "dimensions": [{"name": k, "operator": "Include", "values": [v]} for k, v in dims]}]}


def notification_emails(plan: StackPlan) -> list[str]:
    owner = plan.spec.tags.owner
    emails = [owner] if rules.EMAIL.match(owner) else []
    return list(dict.fromkeys([*emails, *getattr(plan.spec.provider, "notification_emails", ())]))


def dashboard_parts(plan: StackPlan) -> dict[str, Any]:
    """The team's Azure portal dashboard: per endpoint, requests per minute and p99 latency."""
    parts: dict[str, Any] = {}
    for row, model in enumerate(plan.models):
        for col, metric in enumerate(("RequestsPerMinute", "RequestLatency_P99")):
            parts[str(len(parts))] = {
                "position": {"x": col * 6, "y": row * 4, "colSpan": 6, "rowSpan": 4},
                "metadata": {"type": "Extension/HubsExtension/PartType/MonitorChartPart", "inputs": [
                    {"name": "options", "value": json.dumps({"chart": {"title": f"{model.model}: {metric}", "metrics": [
                        {"resourceMetadata": {"id": plan.endpoint_id(model)}, "name": metric,
                         "namespace": rules.ENDPOINT_NAMESPACE.lower(), "aggregationType": 4}]}}, sort_keys=True)}]}}
    return parts


# --- cost ------------------------------------------------------------------------------------------


def budget_plan(plan: StackPlan) -> dict[str, Any] | None:
    """The stack's monthly budget on the subscription, filtered on the team tag."""
    budget = plan.spec.budget
    if budget is None:
        return None
    return {"amount": float(budget.monthly_usd), "team": plan.spec.tags.team,
            "thresholds": [round(float(share) * 100, 2) for share in budget.alert_at]}


# --- roles -----------------------------------------------------------------------------------------

# What the user-assigned identity (the runtime, jobs, endpoints, the control plane) is granted, and where:
# built-in roles scoped to one resource each, never Owner or Contributor.
IDENTITY_ROLES = (
    ("workspace", "AzureML Data Scientist"), ("feature_store", "AzureML Data Scientist"),
    ("storage", "Storage Blob Data Contributor"), ("registry", "AcrPush"),
    ("key_vault", "Key Vault Secrets User"), ("workspace", "Monitoring Metrics Publisher"),
    ("resource_group", "Monitoring Reader"), ("resource_group", "Cost Management Reader"))


def role_definition_id(plan: StackPlan, role: str) -> str:
    return (f"/subscriptions/{plan.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/"
            f"{rules.ROLE_IDS[role]}")
