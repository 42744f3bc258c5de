"""The ``mlplat:provider`` settings of a GCP stack; imports neither Pulumi nor the Google SDKs."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from mlplat.contracts import ProviderSettings
from mlplat.contracts.settings import SETTINGS_CONFIG
from mlplat_providers.gcp import service_rules as rules


class GcpControlPlaneSettings(BaseModel):
    """How the GCP program provisions the stack's control plane (Cloud SQL for PostgreSQL, Cloud Run)."""

    model_config = SETTINGS_CONFIG

    image: str | None = Field(
        None, description="Container image of the platform API server: it runs `mlplat server` and MLflow's "
        "tracking server beside it. Default: the stack's Artifact Registry Docker repository, image `server` "
        "(`<region>-docker.pkg.dev/<project>/<repository>/server:latest`).",
        examples=["europe-west4-docker.pkg.dev/acme-search-ml/mlplat-search-staging/server:1.4.0"])
    database_tier: str = Field("db-custom-1-3840", pattern=rules.CLOUD_SQL_TIER,
                               description="Cloud SQL machine tier of the ledger database.")
    database_version: str = Field("POSTGRES_16", pattern=r"^POSTGRES_(1[1-9]|[2-9]\d)$",
                                  description="Cloud SQL for PostgreSQL database version (POSTGRES_11 and later).")
    backup_retention_days: int = Field(7, ge=1, le=365, description="Automated backups Cloud SQL keeps (1-365).")
    cpu: str = Field("1", pattern=r"^(1|2|4|6|8)$", description="vCPUs of the Cloud Run service's instance.")
    memory: str = Field("2Gi", pattern=r"^\d+(Mi|Gi)$", description="Memory of the Cloud Run service's instance.")
    ingress: Literal["internal", "internal-and-cloud-load-balancing", "all"] = Field(
        "internal", description="Who may reach the Cloud Run service: `internal` (the project's VPC networks and "
        "Google services), behind a load balancer, or `all` (the server still authenticates every caller).")


class GcpModelMonitoringSettings(BaseModel):
    """Vertex AI Model Monitoring jobs on the stack's endpoints, beside the platform's own pass (opt-in)."""

    model_config = SETTINGS_CONFIG

    enabled: bool = Field(
        False, description="Keep one Vertex AI Model Monitoring job (ModelDeploymentMonitoringJob) on each endpoint "
        "of the stack, watching prediction drift of every deployed model. Off by default: the platform's own pass "
        "already judges each endpoint's request log with the platform's rules and publishes the metrics the drift "
        "alert policy watches; the job adds Vertex's own verdict (its distances, not PSI) and its cost. The runtime "
        "creates and updates the jobs after each monitoring pass (endpoints exist only after the first deploy).")
    drift_threshold: float = Field(
        0.3, gt=0, le=1, description="Vertex's default drift threshold for every feature (its distribution "
        "distance, not a PSI).")
    interval_hours: int = Field(1, ge=1, le=24, description="How often the job analyses the logged requests "
                                "(Vertex allows at least one hour).")


class GcpProviderSpec(ProviderSettings):
    kind: Literal["gcp"] = Field(description="Google Vertex AI through pulumi-gcp and google-cloud-aiplatform.")
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$", description="GCP project id.",
                         examples=["acme-ml-prod"])
    region: str = Field(pattern=r"^[a-z]+-[a-z]+\d$", description="GCP region.", examples=["europe-west4"])
    billing_account: str = Field(
        pattern=rules.BILLING_ACCOUNT, description="Cloud Billing account id the project is billed to "
        "(XXXXXX-XXXXXX-XXXXXX): the stack's budget is created on it, filtered on the team's label.",
        examples=["01A2B3-C4D5E6-F7A8B9"])
    cmek_key_name: str | None = Field(
        None, pattern=rules.KMS_KEY, description="Cloud KMS key encrypting the artifact bucket, Vertex AI "
        "resources and the request-log dataset (customer-managed). Unset: Google-managed encryption.",
        examples=["projects/acme-kms/locations/europe-west4/keyRings/ml/cryptoKeys/search"])
    machine_type: str | None = Field(
        None, pattern=rules.MACHINE_TYPE, description="Compute Engine machine type of the Vertex endpoints' "
        "deployed models. Default: mlplat:serving.instanceType when it is a GCP machine type, else n1-standard-4.")
    notification_emails: tuple[str, ...] = Field(
        (), description="E-mail addresses notified by the alert policies and the budget, besides the owner tag "
        "when it is an e-mail address.", examples=[["search-ml-oncall@example.com"]])
    model_monitoring: GcpModelMonitoringSettings = Field(
        default_factory=lambda: GcpModelMonitoringSettings(),
        description="Vertex AI Model Monitoring jobs on the stack's endpoints (opt-in).")
    control_plane: GcpControlPlaneSettings = Field(
        default_factory=lambda: GcpControlPlaneSettings(),
        description="How the program provisions the control plane (ledger database and platform API server).")

    @field_validator("notification_emails")
    @classmethod
    def _emails(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not rules.EMAIL.match(v)]
        if bad:
            raise ValueError(f"not e-mail addresses: {', '.join(bad)}")
        return value

    def stack_problems(self, spec: Any) -> list[tuple[str, str]]:
        from mlplat_providers.gcp.labels import LabelError, labels_from_tags

        problems = []
        try:
            labels_from_tags(spec.tags.as_dict())
        except LabelError as exc:
            problems.append((f"tags.{exc.key}", f"{exc.message}; {exc.hint}"))
        if self.machine_type is None and rules.MACHINE_TYPE_RE.match(spec.serving.instance_type) is None \
                and not spec.serving.instance_type.startswith(("ml.", "local.")):
            problems.append(("serving.instanceType", f"{spec.serving.instance_type!r} is not a Compute Engine machine "
                             "type (e.g. n1-standard-4); set it, or mlplat:provider.machineType"))
        return problems
