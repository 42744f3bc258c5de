"""Azure naming (endpoint names unique per region) and the service rules the Azure program is checked against."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlplat_providers.azure import naming
from mlplat_providers.azure import service_rules as sr

SUB = "00000000-0000-0000-0000-000000000000"


def test_endpoint_names_are_stable_short_and_distinct():
    a = naming.endpoint_name(SUB, "rg-nlp", "mlw-nlp", "bert-sentiment")
    assert a == naming.endpoint_name(SUB, "rg-nlp", "mlw-nlp", "bert-sentiment")
    assert a.startswith("bert-sentiment-") and len(a.rsplit("-", 1)[1]) == naming.HASH_LENGTH
    others = {naming.endpoint_name(SUB, "rg-other", "mlw-nlp", "bert-sentiment"),
              naming.endpoint_name(SUB, "rg-nlp", "mlw-fraud", "bert-sentiment"),
              naming.endpoint_name("11111111-1111-1111-1111-111111111111", "rg-nlp", "mlw-nlp", "bert-sentiment")}
    assert a not in others and len(others) == 3


@pytest.mark.parametrize("model", ["m", "x" * 80, "9lives", "Fraud_Model.v2", "--a--b--"])
def test_every_model_gets_an_endpoint_name_azure_accepts(model):
    name = naming.endpoint_name(SUB, "rg", "ws", model)
    assert sr.endpoint_problem(name) is None, name
    assert naming.ENDPOINT_NAME_RE.match(name)
    assert sr.endpoint_problem(naming.deployment_name(model, 12)) is None


@pytest.mark.parametrize("rule,good,bad", [
    (sr.storage_account_problem, "stnlpprod1a2b3c", "st-nlp-prod"),
    (sr.storage_account_problem, "abc", "ab"),
    (sr.key_vault_problem, "kv-nlp-prod", "kv--nlp"),
    (sr.key_vault_problem, "kv-nlp-prod", "1kv"),
    (sr.container_registry_problem, "acrnlpprod", "acr-nlp"),
    (sr.workspace_problem, "mlw-nlp_prod", "-mlw"),
    (sr.compute_problem, "cpu-cluster", "cpu-cluster-too-long"),
    (sr.endpoint_problem, "bert-1a2b3c4d", "b" * 33),
    (sr.endpoint_problem, "bert", "1bert"),
    (sr.blob_container_problem, "artifacts", "Artifacts"),
    (sr.blob_container_problem, "my-data", "my--data"),
    (sr.postgres_server_problem, "psql-nlp", "psql-nlp-"),
    (sr.container_app_problem, "ca-nlp-server", "ca--nlp"),
    (sr.resource_group_problem, "rg-nlp.ml(1)", "rg-nlp."),
    (sr.action_group_short_name_problem, "mlnlp", "x" * 13),
])
def test_name_rules(rule, good, bad):
    assert rule(good) is None
    problem = rule(bad)
    assert problem and repr(bad) in problem


def test_tag_limits():
    assert sr.tags_problem({"team": "nlp", "cost-center": "CC-1"}) is None
    assert "at most 50" in sr.tags_problem({f"k{i}": "v" for i in range(51)})
    assert "512" in sr.tags_problem({"k" * 513: "v"})
    assert "256" in sr.tags_problem({"owner": "v" * 257})
    assert "refuses in tag names" in sr.tags_problem({"a/b": "v"})


def test_alerts_only_on_published_metrics():
    assert sr.metric_problem(sr.ENDPOINT_NAMESPACE, "RequestLatency_P99") is None
    assert sr.metric_problem(sr.DEPLOYMENT_NAMESPACE, "CpuUtilizationPercentage") is None
    assert sr.metric_problem(sr.PLATFORM_NAMESPACE, "drift_share") is None
    assert "not published" in sr.metric_problem(sr.ENDPOINT_NAMESPACE, "ModelLatency")
    assert "neither" in sr.metric_problem("Microsoft.Compute/virtualMachines", "Percentage CPU")


@pytest.mark.parametrize("traffic,mirror,problem", [
    ({"blue": 100}, {}, None),
    ({"blue": 90, "green": 10}, {}, None),
    ({"blue": 100}, {"green": 50}, None),
    ({}, {}, None),
    ({"blue": 90}, {}, "sums to 90"),
    ({"blue": 100}, {"green": 51}, "at most 50"),
    ({"blue": 90, "green": 10}, {"green": 20}, "has live traffic"),
    ({"blue": 100, "gone": 0}, {}, "does not have"),
])
def test_traffic_and_mirror_rules(traffic, mirror, problem):
    found = sr.traffic_problem(traffic, mirror, {"blue", "green"})
    assert (found is None) if problem is None else (problem in found)


def test_broad_roles_are_refused():
    assert sr.role_problem(f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
                           "b24988ac-6180-42a0-ab88-20f7382dd24c") is not None  # Contributor
    assert sr.role_problem(sr.ROLE_IDS["AzureML Data Scientist"]) is None


def _record(type_, name, **inputs):
    return SimpleNamespace(type=f"azure-native:{type_}", name=name, inputs=inputs)


def test_program_problems_catch_a_wrong_program():
    wrong = [
        _record("storage:StorageAccount", "sa", accountName="St-Bad", allowBlobPublicAccess=True,
                minimumTlsVersion="TLS1_0", enableHttpsTrafficOnly=False),
        _record("containerregistry:Registry", "acr", registryName="acrok", adminUserEnabled=True),
        _record("monitor:MetricAlert", "alert", criteria={"allOf": [
            {"metricNamespace": sr.ENDPOINT_NAMESPACE, "metricName": "Accuracy"}]}),
        _record("machinelearningservices:OnlineEndpoint", "ep", endpointName="1-bad",
                properties={"traffic": {"a": 100}, "mirrorTraffic": {"b": 60}}),
        _record("authorization:RoleAssignment", "ra", roleDefinitionId="8e3af657-a8ff-443c-a75c-2fe8c4bcb635"),
        _record("keyvault:Vault", "kv", vaultName="kv", tags={"x" * 600: "v"}),
    ]
    text = "\n".join(sr.program_problems(wrong))
    for needle in ("storage account name 'St-Bad'", "public blob access", "TLS older", "plain HTTP", "admin user",
                   "'Accuracy' is not published", "online endpoint name '1-bad'", "at most 50 %", "Owner",
                   "key vault name 'kv'", "512"):
        assert needle in text, needle
