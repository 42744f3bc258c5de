"""The ``mlplat:provider`` settings of an Azure stack; imports neither Pulumi nor the Azure SDKs."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from mlplat.contracts import ProviderSettings
from mlplat.contracts.settings import SETTINGS_CONFIG
from mlplat_providers.azure import service_rules as rules


class AzureControlPlaneSettings(BaseModel):
    """How the Azure program provisions the stack's control plane (PostgreSQL flexible server, Container Apps)."""

    model_config = SETTINGS_CONFIG

    image: str | None = Field(
        None, description="Container image of the platform API server (`mlplat server`). Default: the stack's "
        "container registry, image `server` (`<registry>.azurecr.io/server:latest`).",
        examples=["acrnlpproduction.azurecr.io/server:1.4.0"])
    database_sku: str = Field("Standard_B1ms", pattern=r"^Standard_[A-Za-z0-9_]+$",
                              description="SKU of the PostgreSQL flexible server of the ledger.")
    database_tier: Literal["Burstable", "GeneralPurpose", "MemoryOptimized"] = Field(
        "Burstable", description="Tier of the PostgreSQL flexible server's SKU.")
    database_version: str = Field("16", pattern=r"^(1[1-9]|[2-9]\d)$",
                                  description="PostgreSQL major version (11 and later).")
    storage_gb: int = Field(32, ge=32, le=32768, description="Storage of the PostgreSQL flexible server in GiB.")
    backup_retention_days: int = Field(7, ge=7, le=35, description="Backups the flexible server keeps (7-35 days).")
    cpu: float = Field(1.0, gt=0, le=4, description="vCPUs of the server's container app.")
    memory: str = Field("2Gi", pattern=r"^\d+(\.\d+)?Gi$", description="Memory of the server's container app.")
    external_ingress: bool = Field(False, description="Whether the server is reachable from the internet "
                                   "(it still authenticates every caller); default: inside the environment only.")


class AzureModelMonitoringSettings(BaseModel):
    """Azure Machine Learning monitoring schedules on the stack's deployments, beside the platform's own pass
    (opt-in)."""

    model_config = SETTINGS_CONFIG

    enabled: bool = Field(
        False, description="Keep one Azure ML monitoring schedule (MonitorSchedule) per platform deployment, with "
        "data drift and prediction drift signals on the deployment's collected inputs and outputs (and model "
        "performance when `groundTruth` names a data asset). Off by default: the platform's own pass already "
        "judges the collected data and publishes the metric the drift alert watches; the schedules add Azure's own "
        "verdicts and the cost of their serverless Spark runs. Each monitoring pass creates or updates them.")
    interval_hours: int = Field(24, ge=1, le=720, description="Hours between two runs of each schedule.")
    spark_instance_type: str = Field("standard_e4s_v3", pattern=r"^[a-z0-9_]+$",
                                     description="Serverless Spark instance type of the monitoring runs.")
    spark_runtime: str = Field("3.4", pattern=r"^\d+\.\d+$", description="Serverless Spark runtime version.")
    ground_truth: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+$",
        description="`<data asset>:<version>` of ground truth (columns `correlationid` and the label) for the model "
        "performance signal; without it the schedules have no performance signal.",
        examples=["fraud-ground-truth:3"])
    label_column: str = Field("label", min_length=1, description="The ground-truth asset's label column.")


class AzureProviderSpec(ProviderSettings):
    kind: Literal["azure"] = Field(description="Azure Machine Learning through pulumi-azure-native and azure-ai-ml.")
    subscription_id: str = Field(
        pattern=r"^[0-9a-fA-F-]{36}$", description="Azure subscription id (a GUID).",
        examples=["00000000-0000-0000-0000-000000000000"],
    )
    resource_group: str = Field(min_length=1, max_length=90, description="Resource group of the workspace.")
    location: str = Field(pattern=r"^[a-z0-9]+$", description="Azure location.", examples=["westeurope"])
    workspace: str | None = Field(
        None, min_length=3, max_length=33, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$",
        description="Name of the Azure ML workspace. Default: mlw-<team>-<environment>.")
    registry: str | None = Field(
        None, min_length=3, max_length=33, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$",
        description="Azure ML registry shared across teams that `mlplat models share` publishes to. The "
        "program creates it when `createRegistry` is true; else it must exist. Unset: no sharing.")
    create_registry: bool = Field(False, description="Create the shared registry in this stack's resource group.")
    vm_size: str | None = Field(
        None, pattern=rules.VM_SIZE, description="VM size of the online deployments. Default: "
        "mlplat:serving.instanceType when it is an Azure VM size, else Standard_DS3_v2.")
    compute_vm_size: str = Field("Standard_DS3_v2", pattern=rules.VM_SIZE,
                                 description="VM size of the training compute cluster (it scales to zero).")
    compute_max_nodes: int = Field(4, ge=1, le=100, description="Most nodes of the training compute cluster.")
    endpoint_auth: Literal["key", "aad_token"] = Field(
        "aad_token", description="How callers authenticate to the online endpoints: `key` or Microsoft Entra "
        "ID tokens (`aad_token`).")
    tenant_id: str | None = Field(None, pattern=rules.GUID,
                                  description="Microsoft Entra tenant of the subscription. Default: the caller's.")
    notification_emails: tuple[str, ...] = Field(
        (), description="E-mail addresses notified by the action group and the budget, besides the owner tag "
        "when it is an e-mail address.", examples=[["nlp-ml-oncall@example.com"]])
    model_monitoring: AzureModelMonitoringSettings = Field(
        default_factory=lambda: AzureModelMonitoringSettings(),
        description="Azure ML monitoring schedules on the stack's deployments (opt-in).")
    collector_container: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
        description="Blob container the deployments' data collector writes to. Default: the container of the "
        "workspace's default datastore (`azureml-blobstore-<workspace id>`).")
    control_plane: AzureControlPlaneSettings = Field(
        default_factory=lambda: AzureControlPlaneSettings(),
        description="How the program provisions the control plane (ledger database and platform API server).")

    @field_validator("notification_emails")
    @classmethod
    def _emails(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not rules.EMAIL.match(v)]
        if bad:
            raise ValueError(f"not e-mail addresses: {', '.join(bad)}")
        return value

    def stack_problems(self, spec: Any) -> list[tuple[str, str]]:
        problems = []
        if (p := rules.tags_problem(spec.tags.as_dict())) is not None:
            problems.append(("tags", p))
        if (p := rules.resource_group_problem(self.resource_group)) is not None:
            problems.append(("provider.resourceGroup", p))
        if self.vm_size is None and rules.VM_SIZE_RE.match(spec.serving.instance_type) is None \
                and not spec.serving.instance_type.startswith(("ml.", "local.")):
            problems.append(("serving.instanceType", f"{spec.serving.instance_type!r} is not an Azure VM size "
                             "(e.g. Standard_DS3_v2); set it, or mlplat:provider.vmSize"))
        return problems
