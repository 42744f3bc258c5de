"""Planning logic of the GCP program, as pure functions of the stack (no Pulumi, no Google SDK).

The components in ``components.py`` only turn these values into resources; names, labels, alert
conditions and the dashboard are decided (and unit-tested) here. The runtime finds what the program
made through the same functions (``endpoint_id``, ``request_log_table``, ``labels``).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from mlplat.errors import StackError
from mlplat.stack import RiskTier, StackSpec
from mlplat_providers.gcp import labels as gl
from mlplat_providers.gcp import service_rules as rules

# Google APIs the stack uses; enabled by the program and left enabled on destroy (other workloads of the
# project may use them too: nothing the platform did not create is ever turned off).
SERVICES = ("aiplatform.googleapis.com", "storage.googleapis.com", "artifactregistry.googleapis.com",
            "sqladmin.googleapis.com", "run.googleapis.com", "bigquery.googleapis.com",
            "monitoring.googleapis.com", "billingbudgets.googleapis.com", "iam.googleapis.com",
            "cloudresourcemanager.googleapis.com")
DEFAULT_MACHINE_TYPE = "n1-standard-4"
MANAGED_LABEL = "mlplat-managed"  # on everything the platform creates; `mlplat adoption` reads it


def slug(text: str, limit: int = 63) -> str:
    """Lowercase letters, digits and hyphens, at most ``limit`` characters."""
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return clean[:limit].rstrip("-")


def underscored(text: str, limit: int = 60) -> str:
    """An id of lowercase letters, digits and underscores not starting with a digit (BigQuery, Feature Store)."""
    clean = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")
    if clean[:1].isdigit():
        clean = f"m_{clean}"
    return clean[:limit].rstrip("_")


@dataclass(frozen=True)
class ModelPlan:
    model: str
    risk_tier: RiskTier
    endpoint_id: str          # the Vertex endpoint's id: numeric, at most 9 digits, no leading zero
    endpoint_display_name: str
    request_table: str        # BigQuery table of the endpoint's request-response log


@dataclass(frozen=True)
class StackPlan:
    spec: StackSpec
    project: str
    region: str
    billing_account: str
    prefix: str
    bucket: str
    platform_account: str
    server_account: str
    docker_repository: str
    kfp_repository: str
    request_dataset: str
    feature_dataset: str
    online_store: str
    sql_instance: str
    server_service: str
    machine_type: str
    models: list[ModelPlan] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        """The stack's cost tags as GCP labels, plus the platform-managed marker."""
        return {**gl.labels_from_tags(self.spec.tags.as_dict()), MANAGED_LABEL: "true"}

    @property
    def team_label(self) -> str:
        return gl.normalise_value(self.spec.tags.team, key="team")

    @property
    def is_production(self) -> bool:
        return self.spec.environment in ("production", "prod")

    @property
    def cmek(self) -> str | None:
        key = getattr(self.spec.provider, "cmek_key_name", None)
        return str(key) if key else None

    def describe(self, text: str) -> str:
        return gl.describe(text, self.spec.tags.as_dict())


def endpoint_id(prefix: str, model: str) -> str:
    """A stable numeric endpoint id. Vertex's endpoints.create takes a numeric id of "up to 9 characters ... with
    no leading zeros" (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.endpoints/create),
    which is stricter than the 10 digits Terraform's google_vertex_ai_endpoint documents: 9 digits satisfy both."""
    digest = int(hashlib.sha256(f"{prefix}/{model}".encode()).hexdigest()[:12], 16)
    return str(100_000_000 + digest % 900_000_000)


def _missing(spec: StackSpec) -> None:
    provider = spec.provider
    for key, label in (("project", "project"), ("region", "region"), ("billing_account", "billingAccount")):
        if not getattr(provider, key, None):
            raise StackError(f"stack '{spec.name}' has no mlplat:provider.{label}; the GCP program needs it",
                             where=spec.path or None, hint=f"set mlplat:provider.{label} in the stack file")


def stack_plan(spec: StackSpec) -> StackPlan:
    """Names and per-model plans of a GCP stack. Raises ``StackError`` for a stack not on GCP, a missing
    project, region or billing account, a cost tag that cannot be a label, or a name GCP would refuse."""
    if spec.provider.kind != "gcp":
        raise StackError(f"stack '{spec.name}' uses the {spec.provider.kind} provider, not gcp", where=spec.path or None,
                         hint="set mlplat:provider.kind to gcp, or use the stack with its own provider")
    _missing(spec)
    provider: Any = spec.provider  # a GcpProviderSpec (kind checked above)
    project, region = str(provider.project), str(provider.region)
    prefix = slug(f"mlplat-{spec.team}-{spec.environment}", 40)
    short = slug(f"ml-{spec.team}-{spec.environment}", 21)
    instance = spec.serving.instance_type
    machine = provider.machine_type or (instance if rules.MACHINE_TYPE_RE.match(instance) else DEFAULT_MACHINE_TYPE)
    models = [ModelPlan(model=m, risk_tier=spec.risk_tier_for(m), endpoint_id=endpoint_id(prefix, m),
                        endpoint_display_name=slug(f"{prefix}-{m}", 128),
                        request_table=underscored(f"{m}_requests", 1024))
              for m in (list(spec.governance.models) or [f"{spec.team}-model"])]
    plan = StackPlan(
        spec=spec, project=project, region=region, billing_account=provider.billing_account, prefix=prefix,
        bucket=slug(f"{prefix}-artifacts-{project}"), platform_account=slug(f"{short}-platform", 30),
        server_account=slug(f"{short}-server", 30), docker_repository=prefix, kfp_repository=slug(f"{prefix}-kfp"),
        request_dataset=underscored(f"{prefix}_requests", 1024), feature_dataset=underscored(f"{prefix}_features", 1024),
        online_store=underscored(f"{spec.team}_{spec.environment}_online"), sql_instance=slug(f"{prefix}-ledger", 80),
        server_service=slug(f"{prefix}-server", 49), machine_type=machine, models=models)
    plan.labels  # noqa: B018 - raises LabelError (a StackError) for a tag that cannot be a label
    problems = [p for p in (rules.bucket_name_problem(plan.bucket),
                            rules.service_account_id_problem(plan.platform_account),
                            rules.service_account_id_problem(plan.server_account),
                            rules.repository_id_problem(plan.docker_repository),
                            rules.sql_instance_problem(plan.sql_instance, project),
                            rules.cloud_run_name_problem(plan.server_service),
                            rules.feature_resource_problem(plan.online_store)) if p]
    if problems:
        raise StackError(f"stack '{spec.name}' makes names GCP refuses: {'; '.join(problems)}", where=spec.path or None,
                         hint="shorten mlplat:team or mlplat:environment")
    return plan


# --- serving and the request log ------------------------------------------------------------------

# Request-response logging writes one row per request to a BigQuery table with this schema (the
# platform's monitoring pass reads it; the program creates the table so its labels and expiry are ours).
# https://cloud.google.com/vertex-ai/docs/predictions/online-prediction-logging#request-response-logging
REQUEST_LOG_SCHEMA = [
    {"name": "endpoint", "type": "STRING", "mode": "NULLABLE"},
    {"name": "deployed_model_id", "type": "STRING", "mode": "NULLABLE"},
    {"name": "logging_time", "type": "TIMESTAMP", "mode": "NULLABLE"},
    {"name": "request_id", "type": "NUMERIC", "mode": "NULLABLE"},
    {"name": "request_payload", "type": "STRING", "mode": "REPEATED"},
    {"name": "response_payload", "type": "STRING", "mode": "REPEATED"},
]


def request_log_uri(plan: StackPlan, model: ModelPlan) -> str:
    return f"bq://{plan.project}.{plan.request_dataset}.{model.request_table}"


# --- monitoring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertCondition:
    suffix: str
    display_name: str
    metric_type: str
    threshold: float
    aligner: str
    reducer: str | None = None
    resource_type: str = rules.VERTEX_ENDPOINT_RESOURCE


def alert_conditions(spec: StackSpec) -> list[AlertCondition]:
    """What the team's alert policies watch: Vertex's own per-endpoint errors and latency, and the drift
    share the platform's pass publishes (custom.googleapis.com/mlplat/...)."""
    canary = spec.serving.canary
    return [
        AlertCondition("errors", "prediction errors per minute", "aiplatform.googleapis.com/prediction/online/error_count",
                       float(max(1, round(canary.max_error_rate * 100))), "ALIGN_SUM", "REDUCE_SUM"),
        AlertCondition("latency", "p95 prediction latency (ms)",
                       "aiplatform.googleapis.com/prediction/online/prediction_latencies",
                       float(spec.serving.latency_budget_ms), "ALIGN_PERCENTILE_95"),
        AlertCondition("drift", "share of drifted features", rules.PLATFORM_METRIC_PREFIX + "drift/share",
                       float(spec.monitoring.drift.share), "ALIGN_MAX", resource_type="global"),
    ]


def condition_filter(plan: StackPlan, model: ModelPlan, condition: AlertCondition) -> str:
    if condition.resource_type == rules.VERTEX_ENDPOINT_RESOURCE:
        return (f'metric.type="{condition.metric_type}" AND resource.type="{condition.resource_type}" AND '
                f'resource.label.endpoint_id="{model.endpoint_id}"')
    return (f'metric.type="{condition.metric_type}" AND resource.type="global" AND '
            f'metric.label.team="{plan.team_label}" AND metric.label.model="{model.model}"')


def dashboard_json(plan: StackPlan) -> str:
    """The team's Cloud Monitoring dashboard: per endpoint, predictions, errors and p95 latency."""
    tiles, y = [], 0
    for model in plan.models:
        for x, (title, metric, aligner) in enumerate((
                ("predictions/s", "prediction_count", "ALIGN_RATE"), ("errors/s", "error_count", "ALIGN_RATE"),
                ("p95 latency (ms)", "prediction_latencies", "ALIGN_PERCENTILE_95"))):
            tiles.append({"xPos": x * 4, "yPos": y, "width": 4, "height": 4, "widget": {
                "title": f"{model.model}: {title}",
                "xyChart": {"dataSets": [{"timeSeriesQuery": {"timeSeriesFilter": {
                    "filter": (f'metric.type="aiplatform.googleapis.com/prediction/online/{metric}" AND '
                               f'resource.type="{rules.VERTEX_ENDPOINT_RESOURCE}" AND '
                               f'resource.label.endpoint_id="{model.endpoint_id}"'),
                    "aggregation": {"alignmentPeriod": "60s", "perSeriesAligner": aligner}}}, "plotType": "LINE"}]}}})
        y += 4
    return json.dumps({"displayName": f"mlplat {plan.spec.team} {plan.spec.environment}",
                       "mosaicLayout": {"columns": 12, "tiles": tiles}}, sort_keys=True)


def notification_emails(plan: StackPlan) -> list[str]:
    owner = plan.spec.tags.owner
    emails = [owner] if rules.EMAIL.match(owner) else []
    return list(dict.fromkeys([*emails, *getattr(plan.spec.provider, "notification_emails", ())]))


# --- cost ------------------------------------------------------------------------------------------


def budget_plan(plan: StackPlan) -> dict[str, Any] | None:
    """The stack's budget on its billing account, filtered on the project and the team's label."""
    budget = plan.spec.budget
    if budget is None:
        return None
    return {"units": str(int(round(budget.monthly_usd))), "labels": {"team": plan.team_label},
            "thresholds": [float(share) for share in budget.alert_at]}


# --- IAM -------------------------------------------------------------------------------------------

# What the platform account (the runtime, Vertex jobs and pipelines run as it) is granted on the project;
# predefined roles only, never basic roles. Buckets and repositories are granted on the resource.
PLATFORM_ROLES = ("roles/aiplatform.user", "roles/bigquery.jobUser", "roles/bigquery.dataViewer",
                  "roles/monitoring.metricWriter", "roles/monitoring.viewer", "roles/logging.logWriter")
# The Cloud Run server: the ledger through the Cloud SQL connector with IAM database authentication, and
# the platform's operations it runs for its callers (Vertex, BigQuery, metrics) like the runtime. It also
# writes MLflow's artifacts to the bucket and starts Vertex jobs running as the platform account (granted
# on those resources, not the project).
SERVER_ROLES = ("roles/cloudsql.client", "roles/cloudsql.instanceUser", *PLATFORM_ROLES)
