"""The ``mlplat:provider`` settings of an AWS stack; imports neither Pulumi nor boto3."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from mlplat.contracts import ProviderSettings
from mlplat.contracts.settings import SETTINGS_CONFIG
from mlplat_providers.aws import service_rules as rules


class AwsControlPlaneSettings(BaseModel):
    """How the AWS program provisions the stack's control plane (RDS for PostgreSQL, ECS on Fargate)."""

    model_config = SETTINGS_CONFIG

    image: str | None = Field(
        None, description="Container image of the platform API server: it runs `mlplat server` and MLflow's "
        "tracking server, and holds the project (its stacks/). Default: the stack account's ECR repository "
        "`mlplat/server` (`<account>.dkr.ecr.<region>.amazonaws.com/mlplat/server:latest`), named like the "
        "pipelines' `mlplat/train` image.",
        examples=["123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlplat/server:1.4.0"])
    certificate_arn: str | None = Field(
        None, pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[A-Za-z0-9-]+$",
        description="ACM certificate for `hostname`: the load balancer then listens with HTTPS only. Unset: "
        "the control plane is internal HTTP (inside the VPC, unencrypted).")
    hostname: str | None = Field(
        None, max_length=253, pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
        description="DNS name the certificate covers, pointed (alias record) at the internal load balancer; the "
        "control plane's URL is https://<hostname>. Required with `certificateArn`.",
        examples=["mlplat.fraud.internal.example.com"])
    client_cidrs: tuple[str, ...] = Field(
        (), description="IPv4 networks allowed to reach the load balancer (VPN, peered networks). Default: the "
        "control plane's own VPC only.", examples=[["10.0.0.0/8"]])
    vpc_cidr: str = Field("10.42.0.0/16", description="IPv4 block of the control plane's VPC (/16 to /26): "
                          "two private subnets, one public subnet for the NAT gateway.")
    cpu: int = Field(1024, description="Fargate task CPU units (1024 = 1 vCPU), shared by the two containers.")
    memory: int = Field(2048, description="Fargate task memory in MiB; must be a size Fargate offers for `cpu`.")
    db_instance_class: str = Field("db.t4g.micro", pattern=rules.DB_INSTANCE_CLASS,
                                   description="RDS instance class of the ledger database.")
    postgres_version: str = Field("16", description="RDS for PostgreSQL engine version, MAJOR (minor versions "
                                  "upgraded by RDS) or MAJOR.MINOR.", examples=["16", "16.4"])
    backup_retention_days: int = Field(7, ge=1, le=35, description="Days RDS keeps automated backups (1-35).")

    @field_validator("client_cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        problems = [p for p in map(rules.cidr_problem, value) if p]
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc(cls, value: str) -> str:
        problem = rules.vpc_cidr_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("postgres_version")
    @classmethod
    def _postgres(cls, value: str) -> str:
        problem = rules.postgres_version_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AwsControlPlaneSettings:
        problem = rules.fargate_size_problem(self.cpu, self.memory)
        if problem:
            raise ValueError(problem)
        if self.certificate_arn and not self.hostname:
            raise ValueError("certificateArn needs hostname: the name the certificate covers is the control plane's URL")
        if self.hostname and not self.certificate_arn:
            raise ValueError("hostname needs certificateArn: the load balancer serves a hostname with HTTPS only")
        return self


class AwsModelMonitorSettings(BaseModel):
    """SageMaker Model Monitor data-quality schedules, beside the platform's own monitoring pass (opt-in)."""

    model_config = SETTINGS_CONFIG

    enabled: bool = Field(
        False, description="Run a Model Monitor data-quality schedule on each endpoint of the stack's environment. "
        "Off by default: Model Monitor is no longer open to new customers (only accounts that already use it can), "
        "and the platform's own pass already monitors every endpoint's captured traffic and publishes the metrics "
        "the drift alarm watches. When on, the runtime (not `mlplat up`: the endpoint exists only after the first "
        "deploy) starts a baselining job on the deployed version's reference sample, then creates the schedule "
        "with the baseline's constraints emitting CloudWatch metrics, and one alarm per feature on Model "
        "Monitor's feature_baseline_drift_<feature>.")
    drift_distance: float = Field(
        0.1, gt=0, le=1, description="The distribution distance (Model Monitor's comparison_threshold, not a PSI) "
        "above which a feature counts as drifted and its alarm fires.")
    instance_type: str = Field("ml.m5.large", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$",
                               description="Instance type of the baselining and monitoring jobs.")


class AwsProviderSpec(ProviderSettings):
    kind: Literal["aws"] = Field(description="Amazon SageMaker through pulumi-aws and boto3.")
    region: str = Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$", description="AWS region.", examples=["eu-west-1"])
    account_id: str | None = Field(None, pattern=r"^\d{12}$", description="12-digit AWS account id.")
    activate_cost_allocation_tags: bool = Field(
        False, description="Activate the cost tags (team, cost-center, environment, owner) as cost allocation tags "
        "for Cost Explorer and budgets. Off by default: activation is account-wide and, in an organization, only the "
        "management account may do it; a key can be activated only once Billing has seen it on a resource (up to 24 "
        "hours after the first `mlplat up`); and stacks of one account share the keys. Turn it on in one stack of "
        "the account once Cost Explorer lists the keys; `mlplat destroy` leaves them active.")
    instance_count: int = Field(
        1, ge=1, le=100, description="Instances per production variant of each SageMaker endpoint. SageMaker's own "
        "canary (when a variant changes version) is whole instances and at most half of them: with one instance it "
        "shifts all at once under the rollback alarms; the first of `mlplat:serving.canary.steps` must then be whole "
        "instances of a larger fleet.")
    model_monitor: AwsModelMonitorSettings = Field(
        default_factory=lambda: AwsModelMonitorSettings(),
        description="SageMaker Model Monitor schedules, opt-in for accounts that have Model Monitor.")
    control_plane: AwsControlPlaneSettings = Field(
        default_factory=lambda: AwsControlPlaneSettings(),
        description="How the program provisions the control plane (ledger database and platform API server).")

    def stack_problems(self, spec: Any) -> list[tuple[str, str]]:
        problems = []
        problem = rules.canary_schedule_problem(list(spec.serving.canary.steps), self.instance_count)
        if problem:
            problems.append(("serving.canary.steps", f"{problem} (mlplat:provider.instanceCount is "
                                                     f"{self.instance_count})"))
        if self.model_monitor.enabled:
            from mlplat_providers.aws.plan import MODEL_MONITOR_ACCOUNTS  # the analyzer image's account per region

            if self.region not in MODEL_MONITOR_ACCOUNTS:
                problems.append(("provider.modelMonitor.enabled", f"no Model Monitor analyzer image is known for "
                                 f"region {self.region} (known: {', '.join(sorted(MODEL_MONITOR_ACCOUNTS))}); "
                                 "turn modelMonitor off: the platform's own pass monitors every endpoint"))
        return problems
