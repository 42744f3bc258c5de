"""The policy pack over Azure resources: the generated taggable-type table, and each policy passing an Azure
graph shaped like the program's and failing a wrong one."""
from __future__ import annotations

import pytest

from mlplat_policies import generate_tables, rules
from mlplat_policies.taggable_azure import TAGGABLE_AZURE

TAGS = {"team": "nlp", "cost-center": "CC-3310", "environment": "production", "owner": "nlp-leads@example.com",
        "mlplat-managed": "true"}
WS = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
      "Microsoft.MachineLearningServices/workspaces/mlw")
EP = f"{WS}/onlineEndpoints/bert-1a2b3c4d"
NS = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"


def res(type_, logical, **props):
    return rules.Resource(type_, logical, props, urn=f"urn:{logical}")


def run(policy: str, graph, **config) -> list[str]:
    found: list[str] = []
    chosen = rules.BY_NAME[policy]
    settings = {**chosen.defaults(), **config}
    if chosen.kind == "resource":
        for resource in graph:
            chosen.validate(resource, settings, lambda message, urn=None: found.append(message))
    else:
        chosen.validate(graph, settings, lambda message, urn=None: found.append(message))
    return found


def azure_graph(**over):
    """A production Azure stack as the program records it (the parts the policies read)."""
    graph = {
        "storage": res("azure-native:storage:StorageAccount", "storage", accountName="stnlp", tags=dict(TAGS),
                       allowBlobPublicAccess=False, enableHttpsTrafficOnly=True, minimumTlsVersion="TLS1_2",
                       encryption={"keySource": "Microsoft.Storage", "services": {"blob": {"enabled": True}}}),
        "container": res("azure-native:storage:BlobContainer", "container", containerName="artifacts",
                         publicAccess="None"),
        "endpoint": res("azure-native:machinelearningservices:OnlineEndpoint", "endpoint", endpointName="bert-1a2b3c4d",
                        tags=dict(TAGS), properties={"authMode": "AADToken", "traffic": {}, "mirrorTraffic": {}}),
        "serving": res("mlplat:azure:Serving", "serving", endpoints=[{
            "endpointName": "bert-1a2b3c4d", "vmSize": "Standard_DS3_v2", "canarySteps": [1, 10, 50, 100],
            "shadowPercent": 20, "tags": dict(TAGS)}]),
        "alert": res("azure-native:monitor:MetricAlert", "alert", tags=dict(TAGS), scopes=[EP],
                     actions=[{"actionGroupId": "ag"}],
                     criteria={"allOf": [{"metricNamespace": NS, "metricName": "RequestLatency_P99"}]}),
        "diagnostic": res("azure-native:monitor:DiagnosticSetting", "diag", resourceUri=EP, workspaceId="law"),
        "budget": res("azure-native:consumption:Budget", "budget", amount=8000,
                      filter={"tags": {"name": "team", "operator": "In", "values": ["nlp"]}},
                      notifications={"actual-80": {"contactEmails": ["nlp-leads@example.com"]}}),
        "postgres": res("azure-native:dbforpostgresql:Server", "ledger", tags=dict(TAGS),
                        authConfig={"activeDirectoryAuth": "Enabled", "passwordAuth": "Disabled"}),
    }
    graph.update(over)
    return [r for r in graph.values() if r is not None]


def test_taggable_azure_table_is_current():
    current = generate_tables.taggable_azure()
    added, removed = sorted(current - TAGGABLE_AZURE), sorted(TAGGABLE_AZURE - current)
    assert not added and not removed, (
        f"policies/taggable_azure.py is stale for the installed pulumi-azure-native: {added[:5]} gained tags, "
        f"{removed[:5]} lost them; run `python -m mlplat_policies.generate_tables`")
    for token in ("azure-native:machinelearningservices:Workspace", "azure-native:storage:StorageAccount",
                  "azure-native:machinelearningservices:OnlineEndpoint", "azure-native:monitor:MetricAlert"):
        assert token in TAGGABLE_AZURE
    for token in ("azure-native:storage:BlobContainer", "azure-native:consumption:Budget",
                  "azure-native:machinelearningservices:Datastore"):
        assert token not in TAGGABLE_AZURE  # they take no top-level ARM tags


def test_the_program_shaped_graph_passes_every_policy():
    graph = azure_graph()
    for policy in ("required-cost-tags", "monitoring-required", "safe-rollout", "storage", "spend", "database"):
        assert run(policy, graph) == [], policy


def test_cost_tags_are_required_on_taggable_azure_resources():
    graph = azure_graph(storage=res("azure-native:storage:StorageAccount", "storage", tags={"team": "nlp"},
                                    allowBlobPublicAccess=False))
    assert any("lacks cost tag(s)" in m and "StorageAccount" in m for m in run("required-cost-tags", graph))


@pytest.mark.parametrize("change,needle", [
    ({"allowBlobPublicAccess": True}, "allows public blob access"),
    ({"enableHttpsTrafficOnly": False}, "plain HTTP"),
    ({"minimumTlsVersion": "TLS1_0"}, "TLS1_0"),
    ({"encryption": {"services": {"blob": {"enabled": False}}}}, "blob encryption off"),
])
def test_storage_accounts_are_private_and_encrypted(change, needle):
    storage = azure_graph()[0]
    wrong = res(storage.type, "storage", **{**storage.props, **change})
    assert any(needle in m for m in run("storage", azure_graph(storage=wrong)))


def test_anonymous_containers_and_microsoft_keys_under_require_kms_fail():
    graph = azure_graph(container=res("azure-native:storage:BlobContainer", "c", publicAccess="Container"))
    assert any("anonymous Container access" in m for m in run("storage", graph))
    assert any("customer-managed key" in m for m in run("storage", azure_graph(), requireKms=True))


def test_alerts_only_on_published_metrics_and_endpoints_alerted_and_logged():
    bogus = res("azure-native:monitor:MetricAlert", "alert", tags=dict(TAGS), scopes=[EP], actions=[{"x": 1}],
                criteria={"allOf": [{"metricNamespace": NS, "metricName": "ModelAccuracy"}]})
    assert any("never fires" in m for m in run("monitoring-required", azure_graph(alert=bogus)))
    silent = res("azure-native:monitor:MetricAlert", "alert", tags=dict(TAGS), scopes=[EP], actions=[],
                 criteria={"allOf": [{"metricNamespace": NS, "metricName": "RequestsPerMinute"}]})
    assert any("notify nobody" in m for m in run("monitoring-required", azure_graph(alert=silent)))
    found = run("monitoring-required", azure_graph(alert=None, diagnostic=None))
    assert any("has no metric alert" in m for m in found) and any("traffic logs nowhere" in m for m in found)


def test_mirror_traffic_is_bounded_and_never_to_a_live_deployment():
    declared = res("mlplat:azure:Serving", "serving", endpoints=[{
        "endpointName": "e", "canarySteps": [100], "shadowPercent": 60, "tags": dict(TAGS)}])
    found = run("safe-rollout", azure_graph(serving=declared))
    assert any("all at once" in m for m in found) and any("mirrors 60 %" in m for m in found)
    endpoint = res("azure-native:machinelearningservices:OnlineEndpoint", "endpoint", tags=dict(TAGS),
                   properties={"traffic": {"blue": 90, "green": 10}, "mirrorTraffic": {"green": 55}})
    found = run("safe-rollout", azure_graph(endpoint=endpoint))
    assert any("mirrors 55 %" in m for m in found) and any("serves live traffic" in m for m in found)


def test_budget_gpu_cap_and_allow_list():
    assert run("spend", azure_graph(budget=None)) == ["the stack defines no budget"]
    untargeted = res("azure-native:consumption:Budget", "budget", notifications={}, filter={})
    found = run("spend", azure_graph(budget=untargeted))
    assert any("notifies nobody" in m for m in found) and any("team's" in m for m in found)
    gpu = res("azure-native:machinelearningservices:Compute", "compute", properties={"properties": {
        "vmSize": "Standard_NC6s_v3", "scaleSettings": {"minNodeCount": 0, "maxNodeCount": 8}}})
    assert any("GPU instance(s)" in m for m in run("spend", azure_graph(compute=gpu)))
    odd = res("azure-native:machinelearningservices:Compute", "compute", properties={"properties": {
        "vmSize": "Standard_M128s", "scaleSettings": {"maxNodeCount": 1}}})
    assert any("not in the allow-list" in m for m in run("spend", azure_graph(compute=odd)))


def test_postgres_without_password_auth_and_not_open_to_the_internet():
    password = res("azure-native:dbforpostgresql:Server", "ledger", tags=dict(TAGS),
                   administratorLoginPassword="hunter2")
    assert any("literal administrator password" in m for m in run("database", azure_graph(postgres=password)))
    enabled = res("azure-native:dbforpostgresql:Server", "ledger", tags=dict(TAGS),
                  authConfig={"passwordAuth": "Enabled"})
    assert any("accepts password authentication" in m for m in run("database", azure_graph(postgres=enabled)))
    rule = res("azure-native:dbforpostgresql:FirewallRule", "fw", startIpAddress="0.0.0.0",
               endIpAddress="255.255.255.255")
    assert any("whole internet" in m for m in run("database", azure_graph(fw=rule)))
