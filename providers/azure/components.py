"""The Azure team platform as Pulumi components (pulumi-azure-native v3: settings nest under ``properties``).

Every component has a ``mlplat:azure:<Thing>`` token, children with ``parent=self`` and names derived from
the component's name, and ends with ``register_outputs``. Decisions live in :mod:`mlplat_providers.azure.plan`;
this module only declares resources. Every taggable child carries the stack's cost tags plus
``mlplat-managed: "true"`` (``plan.tags``), which tests/pulumi pins. Modules of pulumi-azure-native are
imported one by one (the whole package takes seconds to import).
"""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pulumi
import pulumi_azure_native.app as app
import pulumi_azure_native.applicationinsights as appinsights
import pulumi_azure_native.authorization as authorization
import pulumi_azure_native.consumption as consumption
import pulumi_azure_native.containerregistry as acr
import pulumi_azure_native.costmanagement as costmanagement
import pulumi_azure_native.dbforpostgresql as postgres
import pulumi_azure_native.keyvault as keyvault
import pulumi_azure_native.machinelearningservices as mls
import pulumi_azure_native.managedidentity as managedidentity
import pulumi_azure_native.monitor as monitor
import pulumi_azure_native.operationalinsights as loganalytics
import pulumi_azure_native.portal as portal
import pulumi_azure_native.redis as redis
import pulumi_azure_native.resources as resources
import pulumi_azure_native.storage as storage

from mlplat_providers.azure import naming
from mlplat_providers.azure import plan as p

SERVER_PORT = 8770
POSTGRES_PORT = 5432
# the platform's container (the runtime's blobs) and those behind the workspace's datastores
CONTAINERS = (naming.PLATFORM_CONTAINER, *naming.DATA_CONTAINERS)
# Azure ML's MLflow tracking URI of a workspace (the workspace's own MLflow: no tracking server to run).
# https://learn.microsoft.com/azure/machine-learning/how-to-use-mlflow-configure-tracking
MLFLOW_URI = "azureml://{location}.api.azureml.ms/mlflow/v1.0{workspace_id}"


def _child(parent: pulumi.Resource, **extra: Any) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, **extra)


def _guid(*parts: str) -> str:
    """Role assignment names are GUIDs: a stable one per (stack, scope, role)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


class Foundation(pulumi.ComponentResource):
    """Resource group, user-assigned identity, storage account (encrypted, no public blob access, TLS 1.2,
    HTTPS only, no shared keys) and its containers, Key Vault (RBAC, purge protection), Log Analytics and
    Application Insights, and the container registry (no admin user)."""

    def __init__(self, name: str, plan: p.StackPlan, tenant_id: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:azure:Foundation", name, None, opts)
        rg, loc, tags = plan.resource_group, plan.location, plan.tags
        self.group = resources.ResourceGroup(f"{name}-rg", resource_group_name=rg, location=loc, tags=tags,
                                             opts=_child(self, retain_on_delete=True))
        after = _child(self, depends_on=[self.group])
        self.identity = managedidentity.UserAssignedIdentity(
            f"{name}-identity", resource_name_=plan.identity, resource_group_name=rg, location=loc, tags=tags,
            opts=after)
        self.storage = storage.StorageAccount(
            f"{name}-storage", account_name=plan.storage_account, resource_group_name=rg, location=loc,
            kind="StorageV2", sku={"name": "Standard_ZRS" if plan.is_production else "Standard_LRS"},
            allow_blob_public_access=False, minimum_tls_version="TLS1_2", enable_https_traffic_only=True,
            allow_shared_key_access=False, default_to_o_auth_authentication=True,
            encryption={"key_source": "Microsoft.Storage", "require_infrastructure_encryption": True,
                        "services": {"blob": {"enabled": True, "key_type": "Account"},
                                     "file": {"enabled": True, "key_type": "Account"}}},
            tags=tags, opts=after)
        self.containers = {c: storage.BlobContainer(
            f"{name}-{c}", container_name=c, account_name=self.storage.name, resource_group_name=rg,
            public_access="None", opts=_child(self)) for c in CONTAINERS}
        self.key_vault = keyvault.Vault(
            f"{name}-kv", vault_name=plan.key_vault, resource_group_name=rg, location=loc, tags=tags,
            properties={"tenant_id": tenant_id, "sku": {"family": "A", "name": "standard"},
                        "enable_rbac_authorization": True, "enable_purge_protection": True,
                        "enable_soft_delete": True, "soft_delete_retention_in_days": 90},
            opts=after)
        self.logs = loganalytics.Workspace(
            f"{name}-logs", workspace_name=plan.log_analytics, resource_group_name=rg, location=loc,
            sku={"name": "PerGB2018"}, retention_in_days=90 if plan.is_production else 30, tags=tags, opts=after)
        self.insights = appinsights.Component(
            f"{name}-insights", resource_name_=plan.app_insights, resource_group_name=rg, location=loc, kind="web",
            application_type="web", ingestion_mode="LogAnalytics", workspace_resource_id=self.logs.id, tags=tags,
            opts=after)
        self.registry = acr.Registry(
            f"{name}-acr", registry_name=plan.container_registry, resource_group_name=rg, location=loc,
            sku={"name": "Premium" if plan.is_production else "Standard"}, admin_user_enabled=False,
            anonymous_pull_enabled=False, tags=tags, opts=after)
        self.register_outputs({"identity": self.identity.id, "storage": self.storage.id,
                               "key_vault": self.key_vault.id, "registry": self.registry.login_server})


class Workspace(pulumi.ComponentResource):
    """The Azure ML workspace (its MLflow is the stack's tracking), an optional registry shared across teams,
    a compute cluster scaling to zero, and datastores on the stack's containers (identity-based access)."""

    def __init__(self, name: str, plan: p.StackPlan, base: Foundation, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:azure:Workspace", name, None, opts)
        rg, loc, tags = plan.resource_group, plan.location, plan.tags
        provider: Any = plan.spec.provider
        identity = {"type": "SystemAssigned,UserAssigned", "user_assigned_identities": [base.identity.id]}
        self.workspace = mls.Workspace(
            f"{name}-workspace", workspace_name=plan.workspace, resource_group_name=rg, location=loc, kind="Default",
            friendly_name=f"mlplat {plan.spec.team} {plan.spec.environment}",
            description=f"mlplat team platform of {plan.spec.team}/{plan.spec.environment}",
            identity=identity, primary_user_assigned_identity=base.identity.id,
            storage_account=base.storage.id, key_vault=base.key_vault.id, application_insights=base.insights.id,
            container_registry=base.registry.id, system_datastores_auth_mode="identity",
            sku={"name": "Basic", "tier": "Basic"}, tags=tags, opts=_child(self))
        self.registry: mls.Registry | None = None
        if plan.create_registry and plan.registry:
            self.registry = mls.Registry(
                f"{name}-registry", registry_name=plan.registry, resource_group_name=rg, location=loc,
                identity={"type": "SystemAssigned"}, region_details=[{
                    "location": loc,
                    "storage_account_details": [{"system_created_storage_account": {
                        "storage_account_type": "Standard_LRS", "storage_account_hns_enabled": False,
                        "allow_blob_public_access": False}}],
                    "acr_details": [{"system_created_acr_account": {"acr_account_sku": "Premium"}}]}],
                tags=tags, opts=_child(self, retain_on_delete=True))  # shared across teams: outlives the stack
        self.compute = mls.Compute(
            f"{name}-compute", compute_name=plan.compute, workspace_name=self.workspace.name, resource_group_name=rg,
            location=loc, identity={"type": "UserAssigned", "user_assigned_identities": [base.identity.id]},
            properties={"compute_type": "AmlCompute", "description": "mlplat training (scales to zero)",
                        "properties": {"vm_size": provider.compute_vm_size, "vm_priority": "Dedicated",
                                       "scale_settings": {"min_node_count": 0,
                                                          "max_node_count": provider.compute_max_nodes,
                                                          "node_idle_time_before_scale_down": "PT120S"},
                                       "remote_login_port_public_access": "Disabled"}},
            tags=tags, opts=_child(self))
        self.datastores = [mls.Datastore(
            f"{name}-ds-{c}", name=f"mlplat_{c}", workspace_name=self.workspace.name, resource_group_name=rg,
            properties={"datastore_type": "AzureBlob", "account_name": base.storage.name, "container_name": c,
                        "credentials": {"credentials_type": "None"},
                        "service_data_access_auth_identity": "WorkspaceUserAssignedIdentity",
                        "description": f"mlplat {c}", "tags": tags},
            opts=_child(self, depends_on=[base.containers[c]])) for c in naming.DATA_CONTAINERS]
        self.mlflow_uri = self.workspace.id.apply(lambda i: MLFLOW_URI.format(location=loc, workspace_id=i))
        self.register_outputs({"workspace": self.workspace.id, "mlflow": self.mlflow_uri})


class Access(pulumi.ComponentResource):
    """Role assignments of the user-assigned identity: built-in roles, each on one resource (least privilege;
    never Owner or Contributor)."""

    def __init__(self, name: str, plan: p.StackPlan, principal_id: pulumi.Input[str], scopes: dict[str, Any],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:azure:Access", name, None, opts)
        self.assignments = []
        for scope_key, role in p.IDENTITY_ROLES:
            key = f"{scope_key.replace('_', '-')}-{role.lower().replace(' ', '-')}"
            self.assignments.append(authorization.RoleAssignment(
                f"{name}-{key}", role_assignment_name=_guid(plan.prefix, plan.subscription_id, key),
                scope=scopes[scope_key], principal_id=principal_id, principal_type="ServicePrincipal",
                role_definition_id=p.role_definition_id(plan, role),
                description=f"mlplat {plan.spec.team}/{plan.spec.environment}: {role}", opts=_child(self)))
        self.register_outputs({"roles": [r for _, r in p.IDENTITY_ROLES]})


class ControlPlane(pulumi.ComponentResource):
    """The ledger on Azure Database for PostgreSQL flexible server and ``mlplat server`` on Container Apps.

    No password exists anywhere: the server accepts Microsoft Entra authentication only (password auth
    disabled), the user-assigned identity is its Entra administrator, and the container app signs in as
    that identity. Tracking is the workspace's MLflow, so only the platform API server runs here."""

    def __init__(self, name: str, plan: p.StackPlan, base: Foundation, tenant_id: pulumi.Input[str],
                 mlflow_uri: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:azure:ControlPlane", name, None, opts)
        rg, loc, tags = plan.resource_group, plan.location, plan.tags
        cp = plan.spec.provider.control_plane
        self.server = postgres.Server(
            f"{name}-ledger", server_name=plan.postgres_server, resource_group_name=rg, location=loc,
            version=cp.database_version, sku={"name": cp.database_sku, "tier": cp.database_tier},
            storage={"storage_size_gb": cp.storage_gb},
            backup={"backup_retention_days": cp.backup_retention_days,
                    "geo_redundant_backup": "Enabled" if plan.is_production else "Disabled"},
            auth_config={"active_directory_auth": "Enabled", "password_auth": "Disabled", "tenant_id": tenant_id},
            high_availability={"mode": "ZoneRedundant" if plan.is_production else "Disabled"},
            tags=tags, opts=_child(self, protect=plan.is_production))
        self.admin = postgres.Administrator(
            f"{name}-ledger-admin", server_name=self.server.name, resource_group_name=rg,
            object_id=base.identity.principal_id, principal_name=plan.identity, principal_type="ServicePrincipal",
            tenant_id=tenant_id, opts=_child(self))
        self.database = postgres.Database(f"{name}-mlplat", database_name="mlplat", server_name=self.server.name,
                                          resource_group_name=rg, charset="UTF8", opts=_child(self))
        self.environment = app.ManagedEnvironment(
            f"{name}-env", environment_name=plan.container_environment, resource_group_name=rg, location=loc,
            app_logs_configuration={"destination": "azure-monitor"}, tags=tags, opts=_child(self))
        image = cp.image or base.registry.login_server.apply(lambda s: f"{s}/server:latest")
        url = self.server.fully_qualified_domain_name.apply(
            lambda host: f"postgresql://{plan.identity}@{host}:{POSTGRES_PORT}/mlplat?sslmode=require")
        self.app = app.ContainerApp(
            f"{name}-server", container_app_name=plan.server_app, resource_group_name=rg, location=loc,
            managed_environment_id=self.environment.id,
            identity={"type": "UserAssigned", "user_assigned_identities": [base.identity.id]},
            configuration={"ingress": {"external": cp.external_ingress, "target_port": SERVER_PORT,
                                       "transport": "http", "allow_insecure": False},
                           "registries": [{"server": base.registry.login_server, "identity": base.identity.id}]},
            template={"containers": [{
                "name": "server", "image": image,
                "command": ["mlplat", "server", "--stack", plan.spec.name, "--host", "0.0.0.0",
                            "--port", str(SERVER_PORT)],
                "env": [{"name": "MLPLAT_DATABASE_URL", "value": url}, {"name": "MLPLAT_STACK", "value": plan.spec.name},
                        {"name": "MLFLOW_TRACKING_URI", "value": mlflow_uri},
                        {"name": "AZURE_CLIENT_ID", "value": base.identity.client_id}],
                "resources": {"cpu": cp.cpu, "memory": cp.memory}}],
                "scale": {"min_replicas": 1, "max_replicas": 3 if plan.is_production else 1}},
            tags=tags, opts=_child(self, depends_on=[self.admin, self.database]))
        self.url = self.app.latest_revision_fqdn.apply(lambda fqdn: f"https://{fqdn}" if fqdn else "")
        self.register_outputs({"url": self.url, "database": self.server.fully_qualified_domain_name})


class Serving(pulumi.ComponentResource):
    """Per model: a managed online endpoint named ``<model>-<short stable hash>`` (unique per region), with
    key or Microsoft Entra ID (``AADToken``) auth; and the serving environment (``mlplat-serving``) the
    runtime's deployments run in: the platform's model server image with its health and scoring routes.

    Deployments, ``traffic`` and ``mirrorTraffic`` belong to the runtime (one deployment per version; canary
    steps, A/B splits and shadow mirroring move them), so the program ignores changes to both: a later
    ``mlplat up`` leaves the runtime's split alone."""

    def __init__(self, name: str, plan: p.StackPlan, workspace: mls.Workspace, identity_id: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None):
        provider: Any = plan.spec.provider
        super().__init__("mlplat:azure:Serving", name, {"endpoints": [{
            "endpointName": m.endpoint_name, "model": m.model, "riskTier": m.risk_tier.value,
            "vmSize": plan.vm_size, "canarySteps": list(plan.spec.serving.canary.steps),
            "shadowPercent": plan.spec.serving.shadow.percent if plan.spec.serving.shadow else 0,
            "authMode": "AADToken" if provider.endpoint_auth == "aad_token" else "Key",
            "tags": {**plan.tags, "model": m.model}} for m in plan.models]}, opts)
        auth = "AADToken" if provider.endpoint_auth == "aad_token" else "Key"
        env_name = naming.SERVING_ENVIRONMENT
        self.environment = mls.EnvironmentContainer(
            f"{name}-environment", name=env_name, workspace_name=workspace.name,
            resource_group_name=plan.resource_group,
            properties={"description": "mlplat model server for online deployments", "tags": plan.tags},
            opts=_child(self))
        route = {k: {"path": v, "port": p.SERVING_PORT} for k, v in p.SERVING_ROUTES.items()}
        self.environment_version = mls.EnvironmentVersion(
            f"{name}-environment-v1", name=env_name, version="1", workspace_name=workspace.name,
            resource_group_name=plan.resource_group,
            properties={"image": p.SERVING_IMAGE.format(registry=plan.container_registry.lower()),
                        "os_type": "Linux", "description": "mlplat model server (python -m mlplat.serving.model_server)",
                        "inference_config": {"liveness_route": route["liveness"],
                                             "readiness_route": route["readiness"],
                                             "scoring_route": route["scoring"]},
                        "tags": plan.tags},
            opts=_child(self, depends_on=[self.environment]))
        self.endpoints: dict[str, mls.OnlineEndpoint] = {}
        for model in plan.models:
            self.endpoints[model.model] = mls.OnlineEndpoint(
                f"{name}-{model.model}", endpoint_name=model.endpoint_name, workspace_name=workspace.name,
                resource_group_name=plan.resource_group, location=plan.location, kind="Managed",
                identity={"type": "UserAssigned", "user_assigned_identities": [identity_id]},
                properties={"auth_mode": auth, "public_network_access": "Enabled",
                            "description": f"{model.model} ({model.risk_tier.value} risk), team {plan.spec.team}",
                            "traffic": {}, "mirror_traffic": {}},
                tags={**plan.tags, "model": model.model},
                opts=_child(self, ignore_changes=["properties.traffic", "properties.mirrorTraffic"]))
        self.register_outputs({"endpoints": {m: e.id for m, e in self.endpoints.items()},
                               "environment": self.environment_version.id})


class Monitoring(pulumi.ComponentResource):
    """An action group (the owner and notification e-mails), metric alerts per endpoint on metrics online
    endpoints publish and on the drift share the platform's pass publishes (Azure Monitor custom metrics,
    namespace ``mlplat``, on the workspace), diagnostic settings sending the workspace's and endpoints'
    logs and metrics to Log Analytics, and the team's Azure portal dashboard."""

    def __init__(self, name: str, plan: p.StackPlan, workspace: mls.Workspace, endpoints: dict[str, pulumi.Resource],
                 logs_id: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:azure:Monitoring", name, None, opts)
        rg, tags = plan.resource_group, plan.tags
        self.action_group = monitor.ActionGroup(
            f"{name}-actions", action_group_name=plan.action_group, group_short_name=plan.action_group_short_name,
            resource_group_name=rg, location="global", enabled=True,
            email_receivers=[{"name": f"email-{i}", "email_address": e, "use_common_alert_schema": True}
                             for i, e in enumerate(p.notification_emails(plan))], tags=tags, opts=_child(self))
        self.alerts = []
        for model in plan.models:
            for criterion in p.alert_criteria(plan.spec):
                platform_metric = criterion.namespace == p.rules.PLATFORM_NAMESPACE
                scope = workspace.id if platform_metric else endpoints[model.model].id  # type: ignore[attr-defined]
                self.alerts.append(monitor.MetricAlert(
                    f"{name}-{model.model}-{criterion.suffix}", rule_name=f"{model.endpoint_name}-{criterion.suffix}",
                    resource_group_name=rg, location="global", description=f"{model.model}: {criterion.description}",
                    severity=1 if model.risk_tier.value == "critical" else 2, enabled=True, scopes=[scope],
                    evaluation_frequency="PT1M", window_size="PT5M", auto_mitigate=True,
                    criteria=p.criteria_of(criterion, model, plan.spec.team),
                    actions=[{"action_group_id": self.action_group.id}], tags=tags, opts=_child(self)))
        targets: list[tuple[str, Any]] = [("workspace", workspace.id)]
        targets += [(m, e.id) for m, e in endpoints.items()]  # type: ignore[attr-defined]
        self.diagnostics = [monitor.DiagnosticSetting(
            f"{name}-diag-{key}", name="mlplat", resource_uri=target, workspace_id=logs_id,
            logs=[{"category_group": "allLogs", "enabled": True}],
            metrics=[{"category": "AllMetrics", "enabled": True}], opts=_child(self)) for key, target in targets]
        self.dashboard = portal.Dashboard(
            f"{name}-dashboard", dashboard_name=f"dash-{plan.prefix}", resource_group_name=rg, location=plan.location,
            properties={"lenses": [{"order": 0, "parts": list(p.dashboard_parts(plan).values())}]},
            tags={**tags, "hidden-title": f"mlplat {plan.spec.team} {plan.spec.environment}"}, opts=_child(self))
        self.register_outputs({"action_group": self.action_group.id, "dashboard": self.dashboard.id})


class FeatureStore(pulumi.ComponentResource):
    """A feature-store workspace (Azure ML workspace of kind ``FeatureStore``) with an entity and the team's
    feature-set container; the runtime registers entity and feature-set versions in it. Its online store is an
    Azure Cache for Redis (Microsoft Entra ID auth only, TLS 1.2, no plain port) that the identity reads and writes
    as Data Contributor, reached through the feature store's ``mlplat-online-store`` connection."""

    def __init__(self, name: str, plan: p.StackPlan, base: Foundation, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:azure:FeatureStore", name, None, opts)
        rg, tags = plan.resource_group, plan.tags
        self.workspace = mls.Workspace(
            f"{name}-workspace", workspace_name=plan.feature_store, resource_group_name=rg, location=plan.location,
            kind="FeatureStore", friendly_name=f"mlplat features {plan.spec.team} {plan.spec.environment}",
            identity={"type": "SystemAssigned,UserAssigned", "user_assigned_identities": [base.identity.id]},
            primary_user_assigned_identity=base.identity.id, storage_account=base.storage.id,
            key_vault=base.key_vault.id, application_insights=base.insights.id, container_registry=base.registry.id,
            system_datastores_auth_mode="identity",
            feature_store_settings={"compute_runtime": {"spark_runtime_version": "3.4"}},
            tags=tags, opts=_child(self))
        self.entity = mls.FeaturestoreEntityContainerEntity(
            f"{name}-entity", name=p.FEATURE_ENTITY, workspace_name=self.workspace.name, resource_group_name=rg,
            properties={"description": f"entity of {plan.spec.team}'s features", "tags": tags}, opts=_child(self))
        self.feature_set = mls.FeaturesetContainerEntity(
            f"{name}-features", name=f"{plan.spec.team}-features", workspace_name=self.workspace.name,
            resource_group_name=rg, properties={"description": f"feature sets of {plan.spec.team}", "tags": tags},
            opts=_child(self))
        self.online_store = redis.Redis(
            f"{name}-online", name=plan.online_store, resource_group_name=rg, location=plan.location,
            sku={"name": "Standard" if plan.is_production else "Basic", "family": "C", "capacity": 1},
            enable_non_ssl_port=False, minimum_tls_version="1.2", disable_access_key_authentication=True,
            redis_configuration={"aad_enabled": "true"}, tags=tags, opts=_child(self))
        self.online_access = redis.AccessPolicyAssignment(
            f"{name}-online-access", access_policy_assignment_name="mlplat-identity",
            access_policy_name="Data Contributor", cache_name=plan.online_store, resource_group_name=rg,
            object_id=base.identity.principal_id, object_id_alias=plan.identity,
            opts=_child(self, depends_on=[self.online_store]))
        self.online_connection = mls.WorkspaceConnection(
            f"{name}-online-connection", connection_name=p.ONLINE_STORE_CONNECTION, workspace_name=self.workspace.name,
            resource_group_name=rg, properties={
                "auth_type": "ManagedIdentity", "category": "Redis", "target": self.online_store.id,
                "credentials": {"client_id": base.identity.client_id, "resource_id": base.identity.id}},
            opts=_child(self))
        self.register_outputs({"feature_store": self.workspace.id, "online_store": self.online_store.id})


class Cost(pulumi.ComponentResource):
    """The stack's monthly budget on the subscription, filtered on the team tag, notifying the action group
    and the e-mails; and tag inheritance, so usage of child resources carries the resource group's and
    subscription's tags in cost data (kept on destroy: other workloads of the subscription rely on it)."""

    def __init__(self, name: str, plan: p.StackPlan, action_group_id: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:azure:Cost", name, None, opts)
        budget = p.budget_plan(plan)
        self.budget: consumption.Budget | None = None
        if budget is not None:
            start = dt.datetime.now(dt.UTC).strftime("%Y-%m-01T00:00:00Z")
            emails = p.notification_emails(plan)
            self.budget = consumption.Budget(
                f"{name}-budget", budget_name=f"budget-{plan.prefix}", scope=f"/subscriptions/{plan.subscription_id}",
                amount=budget["amount"], category="Cost", time_grain="Monthly", time_period={"start_date": start},
                filter={"tags": {"name": "team", "operator": "In", "values": [budget["team"]]}},
                notifications={f"actual-{int(t)}": {"enabled": True, "operator": "GreaterThanOrEqualTo",
                                                    "threshold": t, "threshold_type": "Actual",
                                                    "contact_emails": emails, "contact_groups": [action_group_id]}
                               for t in budget["thresholds"]},
                opts=_child(self, ignore_changes=["timePeriod"]))
        self.inheritance = costmanagement.TagInheritanceSetting(
            f"{name}-tag-inheritance", kind="taginheritance", type="taginheritance",
            scope=f"subscriptions/{plan.subscription_id}", properties={"prefer_container_tags": False},
            opts=_child(self, retain_on_delete=True))
        self.register_outputs({"budget": self.budget.id if self.budget is not None else None})


class TeamPlatform(pulumi.ComponentResource):
    """The whole team stack on Azure."""

    def __init__(self, name: str, plan: p.StackPlan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:azure:TeamPlatform", name, None, opts)
        provider: Any = plan.spec.provider
        tenant = provider.tenant_id or authorization.get_client_config_output().tenant_id
        self.base = Foundation(f"{name}-base", plan, tenant, _child(self))
        self.workspace = Workspace(f"{name}-ml", plan, self.base, _child(self))
        self.features = FeatureStore(f"{name}-features", plan, self.base, _child(self))
        self.access = Access(f"{name}-access", plan, self.base.identity.principal_id, {
            "workspace": self.workspace.workspace.id, "feature_store": self.features.workspace.id,
            "storage": self.base.storage.id, "registry": self.base.registry.id, "key_vault": self.base.key_vault.id,
            "resource_group": self.base.group.id}, _child(self))
        self.control_plane = ControlPlane(f"{name}-control-plane", plan, self.base, tenant, self.workspace.mlflow_uri,
                                          _child(self))
        self.serving = Serving(f"{name}-serving", plan, self.workspace.workspace, self.base.identity.id, _child(self))
        self.monitoring = Monitoring(f"{name}-monitoring", plan, self.workspace.workspace, dict(self.serving.endpoints),
                                     self.base.logs.id, _child(self))
        self.cost = Cost(f"{name}-cost", plan, self.monitoring.action_group.id, _child(self))
        self.register_outputs({})


def program(spec) -> None:
    """The Pulumi program of an Azure stack: the team platform plus stack outputs."""
    plan = p.stack_plan(spec)
    platform = TeamPlatform(plan.prefix, plan)
    pulumi.export("workspace", platform.workspace.workspace.name)
    pulumi.export("workspaceId", platform.workspace.workspace.id)
    pulumi.export("trackingUrl", platform.workspace.mlflow_uri)
    pulumi.export("featureStore", platform.features.workspace.name)
    pulumi.export("endpoints", {m.model: m.endpoint_name for m in plan.models})
    pulumi.export("identityClientId", platform.base.identity.client_id)
    pulumi.export("containerRegistry", platform.base.registry.login_server)
    pulumi.export("storageAccount", platform.base.storage.name)
    pulumi.export("controlPlaneUrl", platform.control_plane.url)
    pulumi.export("costTags", plan.tags)
