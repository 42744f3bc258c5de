"""The Azure canary judged on the server errors Azure Monitor reports for the candidate's deployment: the
controller rolls back, Azure's traffic returns to the stable deployment, the ledger agrees; and the runtime
asks Azure Monitor only for metrics and dimensions online endpoints publish."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlplat_providers.azure import service_rules as sr
from tests.contract.azure_fake import metrics as fake_metrics
from tests.contract.azure_fake.arm import ArmError
from tests.contract.azure_fake.fixtures import azure_fake, azure_server  # noqa: F401  (fixtures)
from tests.contract.azure_support import azure_session, azure_stack_text, feed_deployment, team_stack
from tests.contract.lifecycle import context

# --- the rule: queries name published metrics and their own dimensions ---------------------------


def test_metric_query_rule():
    assert sr.metric_query_problem(["RequestsPerMinute"], ["deployment", "statusCodeClass"]) is None
    assert sr.metric_query_problem(["RequestsPerMinute", "RequestLatency"], ["deployment"]) is None
    assert "not a dimension of RequestLatency" in sr.metric_query_problem(["RequestLatency"], ["statusCodeClass"])
    assert "not published" in sr.metric_query_problem(["Invocations"], [])
    assert "not published" in sr.metric_query_problem(["CpuUtilizationPercentage"], [])  # a deployment's metric
    assert "at least one" in sr.metric_query_problem([], [])


def test_the_canary_queries_only_what_online_endpoints_publish():
    from mlplat_providers.azure.runtime.serving import CANARY_QUERIES

    for names, _aggregations, dimensions in CANARY_QUERIES:
        assert sr.metric_query_problem(names, dimensions) is None, (names, dimensions)
        assert all(sr.metric_problem(sr.ENDPOINT_NAMESPACE, n) is None for n in names)
    # the fake's table and the program's agree on what the runtime uses
    for names, _aggregations, dimensions in CANARY_QUERIES:
        assert fake_metrics.metrics_rules(list(names), [], list(dimensions)) is None


def test_fake_filter_and_per_metric_dimensions():
    assert fake_metrics.parse_filter("deployment eq 'a-v1' AND (statusCodeClass eq '4xx' or StatusCodeClass eq "
                                     "'5xx')") == {"deployment": {"a-v1"}, "statusCodeClass": {"4xx", "5xx"}}
    assert fake_metrics.parse_filter("deployment eq '*'") == {"deployment": None}
    assert fake_metrics.parse_filter("") == {}
    for bad, match in (("deployment eq 'a' or statusCode eq '500'", "one dimension"),
                       ("deployment eq 'a' and deployment eq 'b'", "filtered twice"),
                       ("deployment ne 'a'", "Invalid")):
        with pytest.raises(ArmError, match=match):
            fake_metrics.parse_filter(bad)
    assert "no dimension 'statusCodeClass'" in fake_metrics.metrics_rules(["RequestLatency"], ["Average"],
                                                                          ["statusCodeClass"])


# --- the controller on 5xx -----------------------------------------------------------------------

@pytest.fixture
def stack(tmp_path, monkeypatch, azure_fake):  # noqa: F811
    # the gate and approvals are the lifecycle suite's subject: here every version may serve
    monkeypatch.setattr("mlplat.services.deployability.assert_deployable", lambda *a, **k: {})
    return team_stack(tmp_path, monkeypatch, azure_fake)


def _serving(stack):
    from azure.ai.ml.entities import Model

    from mlplat_providers.azure.runtime.serving import AzureServing

    serving = AzureServing(stack.spec, stack.ctx, azure_session(stack.spec))
    for version in (1, 2):
        serving.azure.call(serving.registry.models.create_or_update, Model(
            name=serving.registry.model_name("scorer"), version=str(version), tags=serving.azure.tags,
            path=f"https://acct.blob.core.windows.net/mlplat/models/scorer/{version}/model.tar.gz"))
    return serving


def test_server_errors_on_the_canary_roll_back_and_restore_the_traffic(stack):
    serving = _serving(stack)
    serving.deploy("scorer", 1, environment="production", strategy="direct")
    started = serving.deploy("scorer", 2, environment="production", strategy="canary")
    assert started["azure"]["traffic"] == {"scorer-v1": 90, "scorer-v2": 10}
    before = stack.fake.arm.calls[:]

    feed_deployment(stack.fake, serving, "scorer", "production", 1, requests=180)
    feed_deployment(stack.fake, serving, "scorer", "production", 2, requests=20, errors=6)
    result = serving.step("scorer", environment="production")

    assert result["action"] == "rollback"
    assert any("error" in reason for reason in result["reasons"])
    assert result["azure"]["traffic"] == {"scorer-v1": 100} and result["azure"]["deleted"] == [2]
    described = serving.describe("scorer", "production")
    assert described["weights"] == {"1": 100} and described["mirror_traffic"] == {}
    assert sorted(k[2] for k in stack.fake.arm.deployments) == ["scorer-v1"]
    # the ledger agrees with Azure: version 1 takes all the traffic, no rollout runs
    shown = serving.show("scorer", environment="production")
    assert [(r["version"], r["weight"]) for r in shown["routes"] if r["weight"]] == [(1, 100)]
    assert shown["rollout_id"] is None
    # every question asked of Azure Monitor names published metrics and their own dimensions
    asked = fake_metrics.queries(stack.fake.arm)
    assert {tuple(q["dimensions"]) for q in asked} == {("deployment",), ("deployment", "statusCodeClass")}
    for query in asked:
        assert sr.metric_query_problem(query["metrics"], query["dimensions"]) is None, query
    assert len(stack.fake.arm.calls) > len(before)


def test_client_errors_alone_do_not_roll_back(stack):
    serving = _serving(stack)
    serving.deploy("scorer", 1, environment="production", strategy="direct")
    serving.deploy("scorer", 2, environment="production", strategy="canary")
    endpoint_id, deployments = serving._deployment_ids("scorer", "production")
    from datetime import UTC, datetime

    when = datetime.now(UTC).replace(microsecond=0).isoformat()
    fake_metrics.add_requests(stack.fake.arm, endpoint_id, deployments[1], when, 180, 5.0)
    fake_metrics.add_requests(stack.fake.arm, endpoint_id, deployments[2], when, 20, 5.0, client_errors=6)
    result = serving.step("scorer", environment="production")
    assert result["action"] != "rollback", result["reasons"]
    assert serving.describe("scorer", "production")["weights"] != {"1": 100}


def test_a_refused_rollback_leaves_ledger_and_traffic_as_they_were(stack):
    from mlplat_providers.azure.runtime.session import AzurePermissionDenied

    serving = _serving(stack)
    serving.deploy("scorer", 1, environment="production", strategy="direct")
    serving.deploy("scorer", 2, environment="production", strategy="canary")
    feed_deployment(stack.fake, serving, "scorer", "production", 1, requests=180)
    feed_deployment(stack.fake, serving, "scorer", "production", 2, requests=20, errors=6)
    stack.fake.arm.deny("Microsoft.MachineLearningServices/workspaces/onlineEndpoints/write")
    with pytest.raises(AzurePermissionDenied, match="onlineEndpoints/write"):
        serving.step("scorer", environment="production")
    assert serving.describe("scorer", "production")["weights"] == {"1": 90, "2": 10}
    assert serving.show("scorer", environment="production")["rollout_id"] is not None


def test_the_program_and_the_policy_pack_know_the_metrics_azure_ml_and_the_platform_publish():
    from mlplat_policies import rules as policy_rules

    # what Azure ML publishes, and what the platform's monitoring pass publishes
    for namespace in (sr.ENDPOINT_NAMESPACE, sr.DEPLOYMENT_NAMESPACE, sr.PLATFORM_NAMESPACE):
        assert set(policy_rules.Z_PUBLISHED_METRICS[namespace]) == set(sr.PUBLISHED[namespace]), namespace
    # the documented name (the GPU memory metric carries its unit, as its CPU twin does)
    assert sr.metric_problem(sr.DEPLOYMENT_NAMESPACE, "GpuMemoryUtilizationPercentage") is None
    assert sr.metric_problem(sr.DEPLOYMENT_NAMESPACE, "GpuMemoryUtilization") is not None
    # every metric the endpoint table names has its dimensions written down
    assert set(sr.ENDPOINT_METRIC_DIMENSIONS) == set(sr.ENDPOINT_METRICS)
