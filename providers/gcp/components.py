"""The GCP team platform as Pulumi components: one ``ComponentResource`` per platform component.

Every component has a ``mlplat:gcp:<Thing>`` token, children with ``parent=self`` and names derived from
the component's name, and ends with ``register_outputs``. Decisions live in :mod:`mlplat_providers.gcp.plan`;
this module only declares resources. Every labelable child carries the stack's cost tags as GCP labels
(``plan.labels``, normalised by :mod:`mlplat_providers.gcp.labels`), which tests/pulumi pins.
"""
from __future__ import annotations

from typing import Any

import pulumi
import pulumi_gcp as gcp

from mlplat_providers.gcp import plan as p

SERVER_PORT = 8770
TRACKING_PORT = 8771
POSTGRES_PORT = 5432
PROXY_IMAGE = "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.1"


def _child(parent: pulumi.Resource, **extra: Any) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, **extra)


class ProjectServices(pulumi.ComponentResource):
    """The Google APIs the stack uses, enabled and left enabled on destroy (other workloads may use them)."""

    def __init__(self, name: str, plan: p.StackPlan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:gcp:ProjectServices", name, None, opts)
        self.services = [gcp.projects.Service(f"{name}-{api.split('.')[0]}", project=plan.project, service=api,
                                              disable_on_destroy=False, disable_dependent_services=False,
                                              opts=_child(self)) for api in p.SERVICES]
        self.register_outputs({"services": list(p.SERVICES)})


class Identity(pulumi.ComponentResource):
    """Service accounts: the platform's (runtime, Vertex jobs, endpoints) and the control plane server's,
    each with the predefined roles it needs on the project (never basic roles); the server may act as the
    platform account (to start jobs that run as it) and as no other."""

    def __init__(self, name: str, plan: p.StackPlan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:gcp:Identity", name, None, opts)
        team, env = plan.spec.team, plan.spec.environment
        self.platform = gcp.serviceaccount.Account(
            f"{name}-platform", account_id=plan.platform_account, project=plan.project,
            display_name=f"mlplat platform {team}/{env}", description=plan.describe(f"mlplat runtime of {team}/{env}"),
            opts=_child(self))
        self.server = gcp.serviceaccount.Account(
            f"{name}-server", account_id=plan.server_account, project=plan.project,
            display_name=f"mlplat control plane {team}/{env}",
            description=plan.describe(f"mlplat control plane server of {team}/{env}"), opts=_child(self))
        for account, roles, who in ((self.platform, p.PLATFORM_ROLES, "platform"), (self.server, p.SERVER_ROLES, "server")):
            for role in roles:
                gcp.projects.IAMMember(f"{name}-{who}-{role.split('/')[1].replace('.', '-')}", project=plan.project,
                                       role=role, member=account.email.apply(lambda e: f"serviceAccount:{e}"),
                                       opts=_child(self))
        # the server starts Vertex jobs that run as the platform account: it may act as that one account only
        gcp.serviceaccount.IAMMember(f"{name}-server-acts-as-platform", service_account_id=self.platform.name,
                                     role="roles/iam.serviceAccountUser",
                                     member=self.server.email.apply(lambda e: f"serviceAccount:{e}"), opts=_child(self))
        self.register_outputs({"platform": self.platform.email, "server": self.server.email})


class Storage(pulumi.ComponentResource):
    """The artifact bucket: uniform bucket-level access, public access prevented, versioned, CMEK when set;
    the platform account may read and write objects of it, nothing more."""

    def __init__(self, name: str, plan: p.StackPlan, platform_email: pulumi.Input[str],
                 server_email: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:gcp:Storage", name, None, opts)
        self.bucket = gcp.storage.Bucket(
            f"{name}-artifacts", name=plan.bucket, project=plan.project, location=plan.region.upper(),
            uniform_bucket_level_access=True, public_access_prevention="enforced", versioning={"enabled": True},
            encryption={"default_kms_key_name": plan.cmek} if plan.cmek else None, force_destroy=False,
            labels=plan.labels, opts=_child(self))
        for who, email in (("platform", platform_email), ("server", server_email)):  # MLflow's artifacts: the server
            gcp.storage.BucketIAMMember(f"{name}-artifacts-{who}", bucket=self.bucket.name,
                                        role="roles/storage.objectAdmin",
                                        member=pulumi.Output.from_input(email).apply(lambda e: f"serviceAccount:{e}"),
                                        opts=_child(self))
        self.register_outputs({"bucket": self.bucket.name})


class Artifacts(pulumi.ComponentResource):
    """Artifact Registry: a Docker repository (serving and training images) and a KFP repository (the
    compiled Vertex pipeline templates)."""

    def __init__(self, name: str, plan: p.StackPlan, platform_email: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:gcp:Artifacts", name, None, opts)
        member = pulumi.Output.from_input(platform_email).apply(lambda e: f"serviceAccount:{e}")
        self.docker = gcp.artifactregistry.Repository(
            f"{name}-docker", repository_id=plan.docker_repository, project=plan.project, location=plan.region,
            format="DOCKER", description=plan.describe(f"mlplat images of {plan.spec.team}/{plan.spec.environment}"),
            kms_key_name=plan.cmek, labels=plan.labels, opts=_child(self))
        self.kfp = gcp.artifactregistry.Repository(
            f"{name}-kfp", repository_id=plan.kfp_repository, project=plan.project, location=plan.region, format="KFP",
            description=plan.describe(f"mlplat pipeline templates of {plan.spec.team}/{plan.spec.environment}"),
            kms_key_name=plan.cmek, labels=plan.labels, opts=_child(self))
        for key, repo in (("docker", self.docker), ("kfp", self.kfp)):
            gcp.artifactregistry.RepositoryIamMember(f"{name}-{key}-platform", project=plan.project,
                                                     location=plan.region, repository=repo.name,
                                                     role="roles/artifactregistry.writer", member=member,
                                                     opts=_child(self))
        self.docker_url = pulumi.Output.concat(plan.region, "-docker.pkg.dev/", plan.project, "/", self.docker.repository_id)
        self.register_outputs({"docker": self.docker_url, "kfp": self.kfp.repository_id})


class Tracking(pulumi.ComponentResource):
    """Vertex AI Experiments' metadata store (the region's ``default`` store) and the team's Tensorboard."""

    def __init__(self, name: str, plan: p.StackPlan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:gcp:Tracking", name, None, opts)
        encryption = {"kms_key_name": plan.cmek} if plan.cmek else None
        self.metadata_store = gcp.vertex.AiMetadataStore(
            f"{name}-metadata", name="default", project=plan.project, region=plan.region,
            description=plan.describe(f"mlplat experiments of {plan.spec.team}"), encryption_spec=encryption,
            opts=_child(self))
        self.tensorboard = gcp.vertex.AiTensorboard(
            f"{name}-tensorboard", display_name=f"{plan.prefix}-tensorboard", project=plan.project, region=plan.region,
            description=plan.describe(f"mlplat training curves of {plan.spec.team}/{plan.spec.environment}"),
            encryption_spec=encryption, labels=plan.labels, opts=_child(self))
        self.register_outputs({"metadata_store": self.metadata_store.id, "tensorboard": self.tensorboard.id})


class ControlPlane(pulumi.ComponentResource):
    """The ledger on Cloud SQL for PostgreSQL and the platform API on Cloud Run, MLflow beside it.

    No password exists anywhere: the server's service account signs in with IAM database authentication
    through the Cloud SQL Auth Proxy (a sidecar with ``--auto-iam-authn``), the instance accepts only
    encrypted connections and has no authorized networks. Two services (Cloud Run routes to one container
    per service): ``mlplat server`` and MLflow's tracking server, both as the server account."""

    def __init__(self, name: str, plan: p.StackPlan, server_email: pulumi.Input[str], docker_url: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:gcp:ControlPlane", name, None, opts)
        cp = plan.spec.provider.control_plane
        self.instance = gcp.sql.DatabaseInstance(
            f"{name}-ledger", name=plan.sql_instance, project=plan.project, region=plan.region,
            database_version=cp.database_version, deletion_protection=plan.is_production,
            encryption_key_name=plan.cmek, settings={
                "tier": cp.database_tier, "user_labels": plan.labels,
                "availability_type": "REGIONAL" if plan.is_production else "ZONAL",
                "deletion_protection_enabled": plan.is_production,
                "database_flags": [{"name": "cloudsql.iam_authentication", "value": "on"}],
                "ip_configuration": {"ipv4_enabled": True, "ssl_mode": "ENCRYPTED_ONLY", "authorized_networks": []},
                "backup_configuration": {"enabled": True, "point_in_time_recovery_enabled": True,
                                         "backup_retention_settings": {"retained_backups": cp.backup_retention_days}}},
            opts=_child(self))
        for db in ("mlplat", "mlflow"):
            gcp.sql.Database(f"{name}-{db}", name=db, instance=self.instance.name, project=plan.project, opts=_child(self))
        # IAM database users are named by the account's e-mail without ".gserviceaccount.com"
        # https://cloud.google.com/sql/docs/postgres/add-manage-iam-users
        user = pulumi.Output.from_input(server_email).apply(lambda e: e.removesuffix(".gserviceaccount.com"))
        gcp.sql.User(f"{name}-server-user", name=user, instance=self.instance.name, project=plan.project,
                     type="CLOUD_IAM_SERVICE_ACCOUNT", opts=_child(self))
        image = cp.image or pulumi.Output.concat(docker_url, "/server:latest")

        def service(key: str, port: int, command: list[str], database: str) -> gcp.cloudrunv2.Service:
            url = user.apply(lambda u: f"postgresql://{u}@127.0.0.1:{POSTGRES_PORT}/{database}")
            return gcp.cloudrunv2.Service(
                f"{name}-{key}", name=p.slug(f"{plan.prefix}-{key}", 49), project=plan.project,
                location=plan.region, ingress=f"INGRESS_TRAFFIC_{cp.ingress.upper().replace('-', '_')}"
                if cp.ingress != "all" else "INGRESS_TRAFFIC_ALL", deletion_protection=plan.is_production,
                description=plan.describe(f"mlplat {key} of {plan.spec.team}/{plan.spec.environment}"),
                labels=plan.labels, template={
                    "service_account": server_email, "labels": plan.labels,
                    "containers": [
                        {"name": key, "image": image, "commands": command, "ports": {"container_port": port},
                         "envs": [{"name": "MLPLAT_DATABASE_URL", "value": url},
                                  {"name": "MLPLAT_STACK", "value": plan.spec.name}],
                         "resources": {"limits": {"cpu": cp.cpu, "memory": cp.memory}}, "depends_ons": ["cloud-sql-proxy"]},
                        {"name": "cloud-sql-proxy", "image": PROXY_IMAGE,
                         "args": self.instance.connection_name.apply(
                             lambda c: ["--auto-iam-authn", "--structured-logs", f"--port={POSTGRES_PORT}", c]),
                         "startup_probe": {"tcp_socket": {"port": POSTGRES_PORT}}}]},
                opts=_child(self))

        self.server = service("server", SERVER_PORT, ["mlplat", "server", "--stack", plan.spec.name, "--host", "0.0.0.0",
                                                      "--port", str(SERVER_PORT)], "mlplat")
        self.tracking = service("tracking", TRACKING_PORT, [
            "mlflow", "server", "--host", "0.0.0.0", "--port", str(TRACKING_PORT), "--backend-store-uri",
            f"postgresql+psycopg://127.0.0.1:{POSTGRES_PORT}/mlflow", "--artifacts-destination",
            f"gs://{plan.bucket}/control-plane/mlflow", "--serve-artifacts"], "mlflow")
        self.url = self.server.uri
        self.tracking_url = self.tracking.uri
        self.register_outputs({"url": self.url, "tracking_url": self.tracking_url})


class Serving(pulumi.ComponentResource):
    """Per model: a Vertex AI endpoint logging requests and responses to BigQuery (the data-capture
    equivalent: the dataset and one table per endpoint are created here).

    Traffic belongs to the runtime: it deploys models and moves ``trafficSplit`` by deployed-model id on
    every deploy, canary step and rollback, so the program ignores changes to it (a later ``mlplat up``
    leaves the runtime's split alone)."""

    def __init__(self, name: str, plan: p.StackPlan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:gcp:Serving", name, {"endpoints": [{
            "endpointId": m.endpoint_id, "displayName": m.endpoint_display_name, "model": m.model,
            "riskTier": m.risk_tier.value, "machineType": plan.machine_type,
            "canarySteps": list(plan.spec.serving.canary.steps), "shadowPercent": 0,
            "requestLog": p.request_log_uri(plan, m), "labels": plan.labels} for m in plan.models]}, opts)
        encryption = {"kms_key_name": plan.cmek} if plan.cmek else None
        self.dataset = gcp.bigquery.Dataset(
            f"{name}-requests", dataset_id=plan.request_dataset, project=plan.project, location=plan.region,
            description=plan.describe(f"request-response log of {plan.spec.team}/{plan.spec.environment}'s endpoints"),
            default_encryption_configuration=encryption, delete_contents_on_destroy=False, labels=plan.labels,
            opts=_child(self))
        self.endpoints: dict[str, gcp.vertex.AiEndpoint] = {}
        sampling = max(plan.spec.serving.capture_sampling, 0.001)
        import json

        for model in plan.models:
            table = gcp.bigquery.Table(
                f"{name}-{model.model}-requests", dataset_id=self.dataset.dataset_id, table_id=model.request_table,
                project=plan.project, schema=json.dumps(p.REQUEST_LOG_SCHEMA),
                time_partitioning={"type": "DAY", "field": "logging_time"}, deletion_protection=plan.is_production,
                description=plan.describe(f"requests to {model.endpoint_display_name}"), labels=plan.labels,
                opts=_child(self))
            self.endpoints[model.model] = gcp.vertex.AiEndpoint(
                f"{name}-{model.model}", name=model.endpoint_id, display_name=model.endpoint_display_name,
                project=plan.project, location=plan.region, region=plan.region,
                description=plan.describe(f"{model.model} ({model.risk_tier.value} risk), team {plan.spec.team}"),
                encryption_spec=encryption, labels={**plan.labels, "model": p.slug(model.model)},
                predict_request_response_logging_config={
                    "enabled": True, "sampling_rate": sampling,
                    "bigquery_destination": {"output_uri": p.request_log_uri(plan, model)}},
                opts=_child(self, depends_on=[table], ignore_changes=["trafficSplit"]))
        self.register_outputs({"endpoints": {m: e.id for m, e in self.endpoints.items()},
                               "request_dataset": self.dataset.dataset_id})


class Monitoring(pulumi.ComponentResource):
    """Notification channels (the owner and notification e-mails, the stack's webhooks), an alert policy per
    endpoint on metrics Vertex publishes and the platform's pass publishes, and the team's dashboard."""

    def __init__(self, name: str, plan: p.StackPlan, endpoints: dict[str, pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:gcp:Monitoring", name, None, opts)
        self.channels: list[gcp.monitoring.NotificationChannel] = []
        for i, email in enumerate(p.notification_emails(plan)):
            self.channels.append(gcp.monitoring.NotificationChannel(
                f"{name}-email-{i}", display_name=f"mlplat {plan.spec.team} {email}", type="email",
                labels={"email_address": email}, user_labels=plan.labels, project=plan.project, opts=_child(self)))
        for i, channel in enumerate(plan.spec.monitoring.channels):
            if channel.kind == "webhook" and channel.url:
                self.channels.append(gcp.monitoring.NotificationChannel(
                    f"{name}-webhook-{i}", display_name=f"mlplat {plan.spec.team} webhook {i}", type="webhook_tokenauth",
                    labels={"url": channel.url}, user_labels=plan.labels, project=plan.project, opts=_child(self)))
        channel_ids = [c.id for c in self.channels]
        self.policies = []
        for model in plan.models:
            depends = [endpoints[model.model]] if model.model in endpoints else []
            self.policies.append(gcp.monitoring.AlertPolicy(
                f"{name}-{model.model}", display_name=f"{model.endpoint_display_name} health", combiner="OR",
                project=plan.project, notification_channels=channel_ids, user_labels=plan.labels,
                severity="CRITICAL" if plan.is_production else "WARNING",
                documentation={"content": f"Endpoint {model.endpoint_display_name} ({model.endpoint_id}) of team "
                               f"{plan.spec.team}: `mlplat rollback {model.model} --env {plan.spec.environment}` "
                               "returns traffic to the previous version.", "mime_type": "text/markdown"},
                conditions=[{"display_name": c.display_name, "condition_threshold": {
                    "filter": p.condition_filter(plan, model, c), "comparison": "COMPARISON_GT",
                    "threshold_value": c.threshold, "duration": "120s",
                    "aggregations": [{"alignment_period": "60s", "per_series_aligner": c.aligner,
                                      **({"cross_series_reducer": c.reducer} if c.reducer else {})}]}}
                    for c in p.alert_conditions(plan.spec)],
                opts=_child(self, depends_on=depends)))
        self.dashboard = gcp.monitoring.Dashboard(f"{name}-dashboard", dashboard_json=p.dashboard_json(plan),
                                                  project=plan.project, opts=_child(self))
        self.register_outputs({"channels": channel_ids, "dashboard": self.dashboard.id})


class FeatureStore(pulumi.ComponentResource):
    """Vertex AI Feature Store: an online store (optimized serving), the team's entity feature group over a
    BigQuery table with its feature, and a feature view syncing it to the online store."""

    def __init__(self, name: str, plan: p.StackPlan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:gcp:FeatureStore", name, None, opts)
        import json

        team, env = plan.spec.team, plan.spec.environment
        self.dataset = gcp.bigquery.Dataset(
            f"{name}-dataset", dataset_id=plan.feature_dataset, project=plan.project, location=plan.region,
            description=plan.describe(f"offline features of {team}/{env}"), delete_contents_on_destroy=False,
            default_encryption_configuration={"kms_key_name": plan.cmek} if plan.cmek else None,
            labels=plan.labels, opts=_child(self))
        table = gcp.bigquery.Table(
            f"{name}-entities", dataset_id=self.dataset.dataset_id, table_id="entities", project=plan.project,
            deletion_protection=plan.is_production, labels=plan.labels,
            schema=json.dumps([{"name": "entity_id", "type": "STRING", "mode": "REQUIRED"},
                               {"name": "feature_timestamp", "type": "TIMESTAMP", "mode": "REQUIRED"},
                               {"name": "first_seen", "type": "TIMESTAMP", "mode": "NULLABLE"}]),
            opts=_child(self))
        self.online_store = gcp.vertex.AiFeatureOnlineStore(
            f"{name}-online", name=plan.online_store, project=plan.project, region=plan.region, optimized={},
            force_destroy=False, labels=plan.labels, opts=_child(self))
        group_name = p.underscored(f"{team}_{env}_entities")
        self.group = gcp.vertex.AiFeatureGroup(
            f"{name}-entities-group", name=group_name, project=plan.project, region=plan.region,
            description=plan.describe(f"entities of {team}/{env}"), labels=plan.labels,
            big_query={"big_query_source": {"input_uri": pulumi.Output.concat(
                "bq://", plan.project, ".", self.dataset.dataset_id, ".", table.table_id)},
                "entity_id_columns": ["entity_id"]}, opts=_child(self))
        self.feature = gcp.vertex.AiFeatureGroupFeature(
            f"{name}-entities-first-seen", name="first_seen", feature_group=self.group.name, project=plan.project,
            region=plan.region, description="when the entity first appeared", labels=plan.labels, opts=_child(self))
        self.view = gcp.vertex.AiFeatureOnlineStoreFeatureview(
            f"{name}-entities-view", name=group_name, feature_online_store=self.online_store.name, project=plan.project,
            region=plan.region, labels=plan.labels, sync_config={"cron": "0 * * * *"},
            feature_registry_source={"feature_groups": [{"feature_group_id": self.group.name,
                                                          "feature_ids": [self.feature.name]}]},
            opts=_child(self))
        self.register_outputs({"online_store": self.online_store.name, "feature_group": self.group.name,
                               "dataset": self.dataset.dataset_id})


class Cost(pulumi.ComponentResource):
    """The team's monthly budget on the billing account, filtered on the project and the team's label.

    The billing export to BigQuery (what `mlplat cost report` reads on GCP) cannot be enabled by API: it is
    a one-off step in the console's Billing > Billing export, documented in the README."""

    def __init__(self, name: str, plan: p.StackPlan, channel_ids: list[pulumi.Output[str]],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:gcp:Cost", name, None, opts)
        budget = p.budget_plan(plan)
        self.budget = None
        if budget is not None:
            project = gcp.organizations.get_project_output(project_id=plan.project, opts=pulumi.InvokeOptions(parent=self))
            self.budget = gcp.billing.Budget(
                f"{name}-budget", billing_account=plan.billing_account,
                display_name=p.slug(f"{plan.prefix}-budget", 60),
                budget_filter={"projects": [project.number.apply(lambda n: f"projects/{n}")],
                               "labels": budget["labels"], "calendar_period": "MONTH"},
                amount={"specified_amount": {"currency_code": "USD", "units": budget["units"]}},
                threshold_rules=[{"threshold_percent": t} for t in budget["thresholds"]],
                all_updates_rule={"monitoring_notification_channels": channel_ids,
                                  "disable_default_iam_recipients": False},
                opts=_child(self))
        self.register_outputs({"budget": self.budget.id if self.budget is not None else None})


class TeamPlatform(pulumi.ComponentResource):
    """The whole team stack on GCP."""

    def __init__(self, name: str, plan: p.StackPlan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:gcp:TeamPlatform", name, None, opts)
        self.services = ProjectServices(f"{name}-services", plan, _child(self))
        after = _child(self, depends_on=self.services.services)
        self.identity = Identity(f"{name}-identity", plan, after)
        self.storage = Storage(f"{name}-storage", plan, self.identity.platform.email, self.identity.server.email, after)
        self.artifacts = Artifacts(f"{name}-artifacts", plan, self.identity.platform.email, after)
        self.tracking = Tracking(f"{name}-tracking", plan, after)
        self.control_plane = ControlPlane(f"{name}-control-plane", plan, self.identity.server.email,
                                          self.artifacts.docker_url, after)
        self.serving = Serving(f"{name}-serving", plan, after)
        self.monitoring = Monitoring(f"{name}-monitoring", plan, dict(self.serving.endpoints), after)
        self.features = FeatureStore(f"{name}-features", plan, after)
        self.cost = Cost(f"{name}-cost", plan, [c.id for c in self.monitoring.channels], after)
        self.register_outputs({})


def program(spec) -> None:
    """The Pulumi program of a GCP stack: the team platform plus stack outputs."""
    from mlplat_providers.gcp import labels as gl

    plan = p.stack_plan(spec)
    platform = TeamPlatform(plan.prefix, plan)
    pulumi.export("bucket", platform.storage.bucket.name)
    pulumi.export("platformServiceAccount", platform.identity.platform.email)
    pulumi.export("endpoints", {m.model: m.endpoint_id for m in plan.models})
    pulumi.export("requestLog", {m.model: p.request_log_uri(plan, m) for m in plan.models})
    pulumi.export("tensorboard", platform.tracking.tensorboard.id)
    pulumi.export("dockerRepository", platform.artifacts.docker_url)
    pulumi.export("controlPlaneUrl", platform.control_plane.url)
    pulumi.export("trackingUrl", platform.control_plane.tracking_url)
    # the cost tags the labels could not hold verbatim (an e-mail owner, upper case), kept as written
    pulumi.export("costTags", {"labels": plan.labels, "originals": gl.originals(spec.tags.as_dict())})
