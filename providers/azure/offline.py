"""How Azure answers the program under Pulumi's mocks (``mlplat preview --offline``, ``mlplat policy check``,
tests/pulumi): ARM resource ids (``/subscriptions/S/resourceGroups/RG/providers/Microsoft.X/type/name``,
children below their parents), the outputs Azure computes (principal and client ids, login servers, host
names) and the invoke functions the program calls (``authorization:getClientConfig``). Deterministic:
GUIDs are derived from names, so two runs record the same graph."""
from __future__ import annotations

import uuid
from typing import Any

from mlplat.pulumi_support import OfflineCloud

OFFLINE_TENANT = "11111111-1111-1111-1111-111111111111"
OFFLINE_OBJECT = "22222222-2222-2222-2222-222222222222"

# pulumi-azure-native type token → (ARM provider namespace, resource type path, input naming the resource)
ARM_TYPES: dict[str, tuple[str, str, str]] = {
    "azure-native:managedidentity:UserAssignedIdentity": ("Microsoft.ManagedIdentity", "userAssignedIdentities",
                                                          "resourceName"),
    "azure-native:storage:StorageAccount": ("Microsoft.Storage", "storageAccounts", "accountName"),
    "azure-native:keyvault:Vault": ("Microsoft.KeyVault", "vaults", "vaultName"),
    "azure-native:operationalinsights:Workspace": ("Microsoft.OperationalInsights", "workspaces", "workspaceName"),
    "azure-native:applicationinsights:Component": ("Microsoft.Insights", "components", "resourceName"),
    "azure-native:containerregistry:Registry": ("Microsoft.ContainerRegistry", "registries", "registryName"),
    "azure-native:machinelearningservices:Workspace": ("Microsoft.MachineLearningServices", "workspaces",
                                                       "workspaceName"),
    "azure-native:machinelearningservices:Registry": ("Microsoft.MachineLearningServices", "registries",
                                                      "registryName"),
    "azure-native:dbforpostgresql:Server": ("Microsoft.DBforPostgreSQL", "flexibleServers", "serverName"),
    "azure-native:app:ManagedEnvironment": ("Microsoft.App", "managedEnvironments", "environmentName"),
    "azure-native:app:ContainerApp": ("Microsoft.App", "containerApps", "containerAppName"),
    "azure-native:monitor:ActionGroup": ("Microsoft.Insights", "actionGroups", "actionGroupName"),
    "azure-native:monitor:MetricAlert": ("Microsoft.Insights", "metricAlerts", "ruleName"),
    "azure-native:portal:Dashboard": ("Microsoft.Portal", "dashboards", "dashboardName"),
}
# children of a workspace: (type path, input naming it)
WORKSPACE_CHILDREN: dict[str, tuple[str, str]] = {
    "azure-native:machinelearningservices:Compute": ("computes", "computeName"),
    "azure-native:machinelearningservices:Datastore": ("datastores", "name"),
    "azure-native:machinelearningservices:EnvironmentContainer": ("environments", "name"),
    "azure-native:machinelearningservices:OnlineEndpoint": ("onlineEndpoints", "endpointName"),
    "azure-native:machinelearningservices:FeaturesetContainerEntity": ("featuresets", "name"),
    "azure-native:machinelearningservices:FeaturestoreEntityContainerEntity": ("featurestoreEntities", "name"),
}


def _guid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


class AzureOfflineCloud(OfflineCloud):
    def __init__(self, subscription_id: str, resource_group: str, location: str, tenant_id: str | None = None):
        self.subscription_id, self.resource_group, self.location = subscription_id, resource_group, location
        self.tenant_id = tenant_id or OFFLINE_TENANT

    def _rg(self, inputs: dict[str, Any]) -> str:
        rg = inputs.get("resourceGroupName") or self.resource_group
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{rg}"

    def resource(self, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rg = self._rg(inputs)
        out: dict[str, Any] = {}
        given: Any = None
        if typ == "azure-native:resources:ResourceGroup":
            given = inputs.get("resourceGroupName") or name
            ident = f"/subscriptions/{self.subscription_id}/resourceGroups/{given}"
        elif typ in ARM_TYPES:
            namespace, path, key = ARM_TYPES[typ]
            given = inputs.get(key) or inputs.get(f"{key}_") or name
            ident = f"{rg}/providers/{namespace}/{path}/{given}"
        elif typ in WORKSPACE_CHILDREN:
            path, key = WORKSPACE_CHILDREN[typ]
            given = inputs.get(key) or name
            ident = (f"{rg}/providers/Microsoft.MachineLearningServices/workspaces/{inputs.get('workspaceName')}"
                     f"/{path}/{given}")
        elif typ == "azure-native:machinelearningservices:EnvironmentVersion":
            given = inputs.get("version") or name
            ident = (f"{rg}/providers/Microsoft.MachineLearningServices/workspaces/{inputs.get('workspaceName')}"
                     f"/environments/{inputs.get('name')}/versions/{given}")
        elif typ == "azure-native:storage:BlobContainer":
            given = inputs.get("containerName") or name
            ident = (f"{rg}/providers/Microsoft.Storage/storageAccounts/{inputs.get('accountName')}"
                     f"/blobServices/default/containers/{given}")
        elif typ == "azure-native:dbforpostgresql:Database":
            given = inputs.get("databaseName") or name
            ident = f"{rg}/providers/Microsoft.DBforPostgreSQL/flexibleServers/{inputs.get('serverName')}/databases/{given}"
        elif typ == "azure-native:dbforpostgresql:Administrator":
            given = inputs.get("objectId") or name
            ident = (f"{rg}/providers/Microsoft.DBforPostgreSQL/flexibleServers/{inputs.get('serverName')}"
                     f"/administrators/{given}")
        elif typ == "azure-native:authorization:RoleAssignment":
            given = inputs.get("roleAssignmentName") or _guid(name)
            ident = f"{inputs.get('scope')}/providers/Microsoft.Authorization/roleAssignments/{given}"
        elif typ == "azure-native:monitor:DiagnosticSetting":
            given = inputs.get("name") or name
            ident = f"{inputs.get('resourceUri')}/providers/Microsoft.Insights/diagnosticSettings/{given}"
        elif typ == "azure-native:consumption:Budget":
            given = inputs.get("budgetName") or name
            ident = f"{inputs.get('scope')}/providers/Microsoft.Consumption/budgets/{given}"
        elif typ == "azure-native:costmanagement:TagInheritanceSetting":
            given = "taginheritance"
            ident = f"/{str(inputs.get('scope')).lstrip('/')}/providers/Microsoft.CostManagement/settings/taginheritance"
        else:
            given = name
            ident = f"{rg}/providers/mlplat.offline/{typ.split(':')[-1]}/{name}"
        if typ == "azure-native:managedidentity:UserAssignedIdentity":
            out.update(principalId=_guid("principal", ident), clientId=_guid("client", ident), tenantId=self.tenant_id)
        elif typ == "azure-native:containerregistry:Registry":
            out["loginServer"] = f"{str(given).lower()}.azurecr.io"
        elif typ == "azure-native:dbforpostgresql:Server":
            out["fullyQualifiedDomainName"] = f"{given}.postgres.database.azure.com"
        elif typ == "azure-native:app:ContainerApp":
            out["latestRevisionFqdn"] = f"{given}--0000001.{_guid(self.location)[:8]}.{self.location}.azurecontainerapps.io"
        elif typ == "azure-native:operationalinsights:Workspace":
            out["customerId"] = _guid("customer", ident)
        elif typ == "azure-native:applicationinsights:Component":
            out["connectionString"] = f"InstrumentationKey={_guid('ikey', ident)}"
        elif typ == "azure-native:machinelearningservices:Workspace":
            out["workspaceId"] = _guid("workspace", ident)
            out["mlFlowTrackingUri"] = f"azureml://{self.location}.api.azureml.ms/mlflow/v1.0{ident}"
        outputs = {**inputs, "id": ident, "name": str(given), "azureApiVersion": "offline", **out}
        identity = inputs.get("identity")
        if isinstance(identity, dict) and isinstance(identity.get("userAssignedIdentities"), list):
            # a list of ids on input; Azure answers a map of id → the identity's principal and client ids
            outputs["identity"] = {**identity, "userAssignedIdentities": {
                str(i): {"principalId": _guid("principal", str(i)), "clientId": _guid("client", str(i))}
                for i in identity["userAssignedIdentities"]}}
        return ident, outputs

    def call(self, token: str, args: dict[str, Any]) -> dict[str, Any] | None:
        if token == "azure-native:authorization:getClientConfig":
            return {"clientId": _guid("offline-client"), "objectId": OFFLINE_OBJECT,
                    "subscriptionId": self.subscription_id, "tenantId": self.tenant_id}
        return {}
