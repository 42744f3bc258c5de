"""The Azure program under Pulumi's mocks answering ARM ids and Azure's invokes: the recorded graph, component
by component, the service rules over it, the policy pack, and the bad inputs the program names."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import re

import pytest

from mlplat.errors import StackError
from mlplat.pulumi_support import run_offline
from mlplat.stack import load_stack
from mlplat_policies import rules
from mlplat_policies.taggable_azure import TAGGABLE_AZURE
from mlplat_providers.azure import naming
from mlplat_providers.azure import plan as ap
from mlplat_providers.azure import service_rules as sr
from mlplat_providers.azure.offline import OFFLINE_TENANT, AzureOfflineCloud
from tests.conftest import REPO, run_cli, write_project

pytestmark = pytest.mark.pulumi

STACK_TEXT = (REPO / "stacks" / "Pulumi.nlp-prod.yaml").read_text()
SUB = "00000000-0000-0000-0000-000000000000"
RG_ID = f"/subscriptions/{SUB}/resourceGroups/rg-nlp-ml"


def run_program(spec):
    from mlplat_providers.azure.components import program

    provider = spec.provider
    return run_offline(lambda: program(spec), project="mlplat", stack=spec.name, region=provider.location,
                       cloud=AzureOfflineCloud(provider.subscription_id, provider.resource_group, provider.location))


@pytest.fixture(scope="module")
def nlp():
    return load_stack("nlp-prod", REPO)


@pytest.fixture(scope="module")
def records(nlp):
    return run_program(nlp)


def of(records, type_):
    return [r for r in records if r.type == f"azure-native:{type_}"]


def one(records, type_):
    found = of(records, type_)
    assert len(found) == 1, (type_, len(found))
    return found[0]


def stack_variant(tmp_path, name: str, old: str, new: str):
    assert old in STACK_TEXT
    return write_project(tmp_path / name, {name: STACK_TEXT.replace(old, new)})


def takes_tags(type_: str) -> bool:
    """Whether pulumi-azure-native's class for ``type_`` takes ``tags`` (independent of the policy's table)."""
    _, module_name, cls = type_.split(":")
    params = inspect.signature(getattr(importlib.import_module(f"pulumi_azure_native.{module_name}"), cls)
                               ._internal_init).parameters
    return "tags" in params


def test_every_taggable_resource_carries_the_cost_tags_and_the_managed_marker(nlp, records):
    expected = {**nlp.tags.as_dict(), "mlplat-managed": "true"}
    cloud = [r for r in records if r.custom]
    assert len(cloud) > 35
    for r in cloud:
        assert takes_tags(r.type) == (r.type in TAGGABLE_AZURE), r.type
        if r.type in TAGGABLE_AZURE:
            assert expected.items() <= (r.inputs.get("tags") or {}).items(), r.name
            assert sr.tags_problem(r.inputs["tags"]) is None


def test_components_use_mlplat_azure_tokens_and_parent_every_child(records):
    components = [r for r in records if not r.custom]
    assert {r.type for r in components} == {f"mlplat:azure:{t}" for t in (
        "TeamPlatform", "Foundation", "Workspace", "FeatureStore", "Access", "ControlPlane", "Serving", "Monitoring",
        "Cost")}
    urns = {r.urn for r in components}
    assert all(r.parent in urns for r in records if r.custom)


def test_the_program_passes_the_service_rules_and_uses_v3_shapes(records):
    assert sr.program_problems(records) == []

    def snake(value, path=""):
        if isinstance(value, dict):
            return [f"{path}.{k}" for k in value if "_" in k and not path.endswith(("tags", "Identities"))] + [
                s for k, v in value.items() for s in snake(v, f"{path}.{k}")]
        return [s for v in value for s in snake(v, path)] if isinstance(value, list) else []

    for r in records:  # every input reached the engine in the provider's camelCase
        assert snake(r.inputs) == [], (r.type, snake(r.inputs))
    # v3 nests these resources' settings under `properties`
    for type_ in ("keyvault:Vault", "machinelearningservices:OnlineEndpoint", "machinelearningservices:Compute"):
        assert isinstance(of(records, type_)[0].inputs.get("properties"), dict), type_


def test_service_rules_fail_a_wrong_program(records):
    def edit(r, **inputs):
        return dataclasses.replace(r, inputs={**r.inputs, **inputs})

    wrong = []
    for r in records:
        if r.type == "azure-native:storage:StorageAccount":
            r = edit(r, allowBlobPublicAccess=True)
        elif r.type == "azure-native:monitor:MetricAlert":
            r = edit(r, criteria={"allOf": [{"metricNamespace": sr.ENDPOINT_NAMESPACE, "metricName": "Accuracy"}]})
        elif r.type == "azure-native:machinelearningservices:OnlineEndpoint":
            r = edit(r, endpointName="x" * 40)
        wrong.append(r)
    text = "\n".join(sr.program_problems(wrong))
    assert "public blob access" in text and "'Accuracy' is not published" in text and "Azure allows 3 to 32" in text


def test_mocks_answer_arm_ids_and_the_client_config(records):
    workspace = next(r for r in of(records, "machinelearningservices:Workspace") if r.inputs["kind"] == "Default")
    ws_id = f"{RG_ID}/providers/Microsoft.MachineLearningServices/workspaces/mlw-nlp-production"
    assert workspace.outputs["id"] == ws_id
    endpoint = one(records, "machinelearningservices:OnlineEndpoint")
    assert endpoint.outputs["id"] == f"{ws_id}/onlineEndpoints/{endpoint.inputs['endpointName']}"
    identity = one(records, "managedidentity:UserAssignedIdentity")
    assert re.fullmatch(r"[0-9a-f-]{36}", identity.outputs["principalId"])
    # the tenant comes from azure-native:authorization:getClientConfig
    assert one(records, "keyvault:Vault").inputs["properties"]["tenantId"] == OFFLINE_TENANT
    assert one(records, "dbforpostgresql:Administrator").inputs["objectId"] == identity.outputs["principalId"]
    for r in of(records, "authorization:RoleAssignment"):
        assert r.outputs["id"].startswith(r.inputs["scope"] + "/providers/Microsoft.Authorization/roleAssignments/")


def test_foundation_is_private_encrypted_and_without_admin_users(records):
    storage = one(records, "storage:StorageAccount").inputs
    assert (storage["allowBlobPublicAccess"], storage["minimumTlsVersion"], storage["enableHttpsTrafficOnly"],
            storage["allowSharedKeyAccess"]) == (False, "TLS1_2", True, False)
    assert storage["encryption"]["services"]["blob"]["enabled"] is True
    assert {c.inputs["publicAccess"] for c in of(records, "storage:BlobContainer")} == {"None"}
    vault = one(records, "keyvault:Vault").inputs["properties"]
    assert vault["enableRbacAuthorization"] is True and vault["enablePurgeProtection"] is True
    assert one(records, "containerregistry:Registry").inputs["adminUserEnabled"] is False
    insights = one(records, "applicationinsights:Component").inputs
    assert insights["workspaceResourceId"] == one(records, "operationalinsights:Workspace").outputs["id"]


def test_identity_gets_narrow_built_in_roles_each_on_one_resource(records):
    assignments = of(records, "authorization:RoleAssignment")
    granted = {(r.inputs["roleDefinitionId"].rsplit("/", 1)[1], r.inputs["scope"]) for r in assignments}
    assert len(granted) == len(ap.IDENTITY_ROLES)
    assert all(guid not in sr.BROAD_ROLE_IDS for guid, _ in granted)
    assert all(r.inputs["principalType"] == "ServicePrincipal" for r in assignments)
    assert not any(scope.rstrip("/") == f"/subscriptions/{SUB}" for _, scope in granted)  # never subscription-wide


def test_workspace_compute_datastores_and_feature_store(records):
    workspaces = {r.inputs["kind"]: r.inputs for r in of(records, "machinelearningservices:Workspace")}
    assert set(workspaces) == {"Default", "FeatureStore"}
    assert workspaces["Default"]["systemDatastoresAuthMode"] == "identity"
    compute = one(records, "machinelearningservices:Compute").inputs["properties"]
    assert compute["computeType"] == "AmlCompute" and compute["properties"]["scaleSettings"]["minNodeCount"] == 0
    stores = of(records, "machinelearningservices:Datastore")
    assert {s.inputs["properties"]["credentials"]["credentialsType"] for s in stores} == {"None"}
    assert one(records, "machinelearningservices:FeaturestoreEntityContainerEntity").inputs["workspaceName"] == \
        "fs-nlp-production"
    assert one(records, "machinelearningservices:FeaturesetContainerEntity").inputs["name"] == "nlp-features"


def test_endpoint_has_a_stable_short_hash_name_and_leaves_traffic_to_the_runtime(nlp, records):
    endpoint = one(records, "machinelearningservices:OnlineEndpoint")
    assert endpoint.inputs["endpointName"] == naming.endpoint_name(SUB, "rg-nlp-ml", "mlw-nlp-production", "nlp-model")
    assert sorted(endpoint.ignore_changes) == ["properties.mirrorTraffic", "properties.traffic"]
    assert endpoint.inputs["properties"]["authMode"] == "AADToken"
    declared = next(r for r in records if r.type == "mlplat:azure:Serving").inputs["endpoints"][0]
    assert declared["shadowPercent"] == 20 and declared["canarySteps"] == [1, 10, 50, 100]


def test_control_plane_has_no_password_and_runs_only_the_server(records):
    server = one(records, "dbforpostgresql:Server").inputs
    assert server["authConfig"] == {"activeDirectoryAuth": "Enabled", "passwordAuth": "Disabled",
                                    "tenantId": OFFLINE_TENANT}
    assert "administratorLoginPassword" not in server and "administratorLogin" not in server
    app = one(records, "app:ContainerApp").inputs
    (container,) = app["template"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["command"][:2] == ["mlplat", "server"]
    assert env["MLPLAT_DATABASE_URL"].startswith("postgresql://id-nlp-production@psql-nlp-production-")
    assert env["MLFLOW_TRACKING_URI"].startswith("azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/")
    assert app["configuration"]["ingress"]["external"] is False


def test_alerts_watch_only_published_metrics_and_notify_the_action_group(records):
    group = one(records, "monitor:ActionGroup")
    assert [e["emailAddress"] for e in group.inputs["emailReceivers"]] == ["nlp-leads@example.com"]
    alerts = of(records, "monitor:MetricAlert")
    assert {c["metricName"] for a in alerts for c in a.inputs["criteria"]["allOf"]} == {
        "RequestLatency_P99", "RequestsPerMinute", "drift_share"}
    for alert in alerts:
        assert alert.inputs["actions"] == [{"actionGroupId": group.outputs["id"]}]
        for c in alert.inputs["criteria"]["allOf"]:
            assert sr.metric_problem(c["metricNamespace"], c["metricName"]) is None
    targets = {d.inputs["resourceUri"].rsplit("/", 2)[-2] for d in of(records, "monitor:DiagnosticSetting")}
    assert targets == {"workspaces", "onlineEndpoints"}
    assert one(records, "portal:Dashboard").inputs["properties"]["lenses"][0]["parts"]


def test_budget_is_filtered_on_the_team_tag_and_tags_are_inherited(records):
    budget = one(records, "consumption:Budget")
    assert budget.inputs["filter"] == {"tags": {"name": "team", "operator": "In", "values": ["nlp"]}}
    assert budget.inputs["amount"] == 8000 and budget.inputs["scope"] == f"/subscriptions/{SUB}"
    assert {n["threshold"] for n in budget.inputs["notifications"].values()} == {80.0, 100.0}
    assert one(records, "costmanagement:TagInheritanceSetting").inputs["kind"] == "taginheritance"


def test_policy_pack_passes_the_program_and_fails_a_wrong_one(records):
    graph = [rules.Resource(r.type, r.name, r.inputs, r.urn, r.parent) for r in records]
    assert [f.message for f in rules.evaluate(graph) if f.level == "mandatory"] == []
    wrong = [dataclasses.replace(g, props={**g.props, "allowBlobPublicAccess": True, "tags": {}})
             if g.type == "azure-native:storage:StorageAccount" else g
             for g in graph if g.type != "azure-native:consumption:Budget"]
    findings = {(f.policy, f.message) for f in rules.evaluate(wrong) if f.level == "mandatory"}
    assert ("spend", "the stack defines no budget") in findings
    assert any(p == "storage" and "public blob access" in m for p, m in findings)
    assert any(p == "required-cost-tags" and m.startswith("azure-native:storage:StorageAccount") for p, m in findings)


def test_preview_offline_prints_the_tree():
    result = run_cli("preview", "--stack", "nlp-prod", "--offline", cwd=REPO)
    assert result.returncode == 0, result.stderr
    for text in ("mlplat:azure:TeamPlatform", "azure-native:machinelearningservices:OnlineEndpoint",
                 "owned by the runtime", "azure-native:consumption:Budget", "Nothing was created"):
        assert text in result.stdout, text


def test_up_without_the_pulumi_cli_says_how_to_install_it():
    result = run_cli("up", "--stack", "nlp-prod", "--yes", cwd=REPO, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 7, result.stderr
    assert "the pulumi CLI is not installed" in result.stderr and "get.pulumi.com" in result.stderr


@pytest.mark.parametrize("key,line", [
    ("subscriptionId", "    subscriptionId: 00000000-0000-0000-0000-000000000000\n"),
    ("resourceGroup", "    resourceGroup: rg-nlp-ml\n"),
    ("location", "    location: westeurope\n"),
])
def test_a_missing_setting_is_named(tmp_path, key, line):
    root = stack_variant(tmp_path, "missing", line, "")
    with pytest.raises(StackError) as info:
        load_stack("missing", root)
    assert f"mlplat:provider.{key}: missing required key" in str(info.value)


@pytest.mark.parametrize("field,label", [("subscription_id", "subscriptionId"), ("resource_group", "resourceGroup"),
                                         ("location", "location")])
def test_plan_names_a_missing_setting_even_when_built_by_hand(nlp, field, label):
    provider = nlp.provider.model_construct(**{**nlp.provider.__dict__, field: ""})
    with pytest.raises(StackError, match=rf"no mlplat:provider.{label}; the Azure program needs it"):
        ap.stack_plan(nlp.model_copy(update={"provider": provider}))


def test_tags_azure_refuses_are_named(tmp_path):
    root = stack_variant(tmp_path, "badtag", "owner: nlp-leads@example.com", f"owner: {'x' * 300}")
    with pytest.raises(StackError) as info:
        load_stack("badtag", root)
    assert "mlplat:tags" in str(info.value) and "at most 256" in str(info.value)


# --- the runtime finds what the program made ---------------------------------------------------------

def _runtime_constants(suffix: str) -> dict[str, str]:
    """Module-level string constants named ``*<suffix>`` of every runtime module: the names it assumes."""
    import pkgutil

    import mlplat_providers.azure.runtime as runtime

    found = {}
    for info in pkgutil.iter_modules(runtime.__path__):
        module = importlib.import_module(f"{runtime.__name__}.{info.name}")
        for key, value in vars(module).items():
            if key.endswith(suffix) and isinstance(value, str):
                found[f"{info.name}.{key}"] = value
    return found


def test_every_blob_container_the_runtime_uses_is_the_programs_or_azure_mls(records):
    declared = {r.inputs["containerName"] for r in of(records, "storage:BlobContainer")}
    assert naming.PLATFORM_CONTAINER in declared and set(naming.DATA_CONTAINERS) <= declared
    used = _runtime_constants("CONTAINER")
    assert {"registry.CONTAINER", "delivery.CONTAINER"} <= set(used)
    for where, name in used.items():
        assert name in declared or name.startswith(naming.WORKSPACE_SYSTEM_CONTAINERS), (where, name)
    # datastores stand on the data containers, each of which the program declares
    stores = {s.inputs["properties"]["containerName"] for s in of(records, "machinelearningservices:Datastore")}
    assert stores == set(naming.DATA_CONTAINERS)


def test_the_serving_environment_the_runtime_deploys_with_is_the_programs(records):
    from mlplat_providers.azure.runtime import serving

    version = one(records, "machinelearningservices:EnvironmentVersion")
    container = one(records, "machinelearningservices:EnvironmentContainer")
    assert version.inputs["name"] == container.inputs["name"] == serving.SERVING_ENVIRONMENT == naming.SERVING_ENVIRONMENT
    props = version.inputs["properties"]
    assert props["image"].startswith(f"{one(records, 'containerregistry:Registry').inputs['registryName'].lower()}"
                                     ".azurecr.io/")
    assert props["inferenceConfig"]["scoringRoute"] == {"path": "/invocations", "port": ap.SERVING_PORT}
    assert props["tags"]["mlplat-managed"] == "true"
    assert version.inputs["workspaceName"] == "mlw-nlp-production"


def test_workspace_compute_endpoints_and_feature_store_names_match_the_runtime(nlp, records):
    from mlplat_providers.azure.runtime.session import AzureSession

    session = AzureSession(nlp)
    plan = ap.stack_plan(nlp)
    workspaces = {r.inputs["kind"]: r.inputs["workspaceName"] for r in of(records, "machinelearningservices:Workspace")}
    assert workspaces == {"Default": session.workspace, "FeatureStore": plan.feature_store}
    assert one(records, "machinelearningservices:Compute").inputs["computeName"] == plan.compute == naming.COMPUTE_NAME
    endpoints = {r.inputs["endpointName"] for r in of(records, "machinelearningservices:OnlineEndpoint")}
    assert endpoints == {session.endpoint_name(m.model) for m in plan.models}
    # the runtime reads the storage account and the container registry from the workspace the program links
    workspace = next(r for r in of(records, "machinelearningservices:Workspace") if r.inputs["kind"] == "Default")
    assert workspace.inputs["storageAccount"].endswith(f"/storageAccounts/{plan.storage_account}")
    assert workspace.inputs["containerRegistry"].endswith(f"/registries/{plan.container_registry}")


def test_the_feature_store_has_an_online_store_on_redis_with_entra_id_only(nlp, records):
    plan = ap.stack_plan(nlp)
    cache = one(records, "redis:Redis").inputs
    assert cache["name"] == plan.online_store and sr._name_problem(
        plan.online_store, "Redis cache", 1, 63, r"[a-z0-9](?:-?[a-z0-9])*", "") is None
    assert (cache["enableNonSslPort"], cache["minimumTlsVersion"], cache["disableAccessKeyAuthentication"]) == (
        False, "1.2", True)
    assert cache["redisConfiguration"] == {"aadEnabled": "true"} and cache["sku"]["name"] == "Standard"
    access = one(records, "redis:AccessPolicyAssignment").inputs
    assert access["accessPolicyName"] == "Data Contributor" and access["cacheName"] == plan.online_store
    connection = one(records, "machinelearningservices:WorkspaceConnection").inputs
    assert (connection["connectionName"], connection["workspaceName"]) == (ap.ONLINE_STORE_CONNECTION, plan.feature_store)
    assert connection["properties"]["category"] == "Redis" and connection["properties"]["authType"] == "ManagedIdentity"
    assert "/Redis/" in connection["properties"]["target"]  # the cache's ARM id
