"""The AWS program's planning functions, without Pulumi."""
from __future__ import annotations

import json

import pytest

from mlplat.errors import StackError
from mlplat.stack import load_stack
from mlplat_policies import rules
from mlplat_providers.aws import plan as p
from tests.conftest import REPO


@pytest.fixture(scope="module")
def fraud():
    return load_stack("fraud-prod", REPO)


@pytest.mark.parametrize("steps, bake, fleet, expected", [
    # one instance has no canary (half of it is not an instance): all at once, baked under the alarms
    ([1, 10, 50, 100], 300, 1, {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300}),
    ([25, 50, 100], 60, 4, {"Type": "CANARY", "WaitIntervalInSeconds": 60,
                            "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1}}),
    ([50, 100], 7200, 2, {"Type": "CANARY", "WaitIntervalInSeconds": 3600,  # SageMaker waits at most 3600 s
                          "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1}}),
    ([100], 10, 4, {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 10}),
])
def test_traffic_routing(steps, bake, fleet, expected):
    from mlplat_providers.aws.service_rules import blue_green_problem

    assert p.traffic_routing(steps, bake, fleet) == expected
    assert blue_green_problem({"TrafficRoutingConfiguration": expected}, fleet=fleet) is None


def test_stack_plan_names_and_tiers(fraud):
    plan = p.stack_plan(fraud)
    assert [m.model for m in plan.models] == ["card-scorer", "merchant-tagger"]
    tiers = {m.model: m.approval_status for m in plan.models}
    assert tiers == {"card-scorer": "PendingManualApproval", "merchant-tagger": "Approved"}
    names = [plan.bucket, plan.tracking_server, *(m.endpoint for m in plan.models)]
    assert all(len(n) <= 63 and n == p.slug(n) for n in names)


def test_stack_plan_refuses_a_local_stack():
    with pytest.raises(StackError, match="uses the local provider, not aws"):
        p.stack_plan(load_stack("dev", REPO))


def test_declared_shadow_mirrors_the_configured_share(fraud):
    plan = p.stack_plan(fraud)
    graph = [rules.Resource("mlplat:aws:Serving", "s", {"endpoints": [p.serving_declaration(plan, plan.models[0])]})]
    config = rules._of(graph, rules.T_ENDPOINT_CONFIG)[0]
    assert rules.shadow_percent(config.props) == pytest.approx(fraud.serving.shadow.percent)


def test_pipeline_definition_is_tracked_gated_and_promotes_through_the_platform(fraud):
    plan = p.stack_plan(fraud)
    critical = plan.models[0]
    definition = json.loads(p.pipeline_definition(plan, critical, tracking_arn="arn:server", role_arn="arn:role",
                                                  account="123456789012"))
    train, evaluate, gate = definition["Steps"]
    assert train["Type"] == "Training" and train["Arguments"]["Environment"]["MLFLOW_TRACKING_URI"] == "arn:server"
    assert evaluate["DependsOn"] == ["train"] and gate["Type"] == "Condition"
    # the gate's verdict is read from the report the evaluation step writes into its declared output
    assert evaluate["PropertyFiles"][0]["OutputName"] in {
        o["OutputName"] for o in evaluate["Arguments"]["ProcessingOutputConfig"]["Outputs"]}
    assert [s["Name"] for s in gate["Arguments"]["IfSteps"]] == ["register", "promote"]
    assert gate["Arguments"]["ElseSteps"][0]["Type"] == "Fail"


def test_dashboard_names_every_endpoint(fraud):
    plan = p.stack_plan(fraud)
    body = p.dashboard_body(plan)
    for model in plan.models:
        assert model.endpoint in body
    titles = [w["properties"].get("title", "") for w in json.loads(body)["widgets"]]
    for panel in ("Invocations", "Latency", "Errors per variant", "Drift", "Estimated charges"):
        assert any(panel in t for t in titles)


def test_approval_event_pattern_matches_only_approved_versions():
    pattern = json.loads(p.approval_event_pattern("g"))
    assert pattern["detail"] == {"ModelPackageGroupName": ["g"], "ModelApprovalStatus": ["Approved"]}


@pytest.mark.parametrize("schedule, cron", [("5m", "cron(0 * ? * * *)"), ("1h", "cron(0 * ? * * *)"),
                                            ("1d", "cron(0 0 ? * * *)")])
def test_monitoring_cron(schedule, cron):
    assert p.monitoring_cron(schedule) == cron


def test_unknown_region_for_model_monitor_is_a_clear_error():
    with pytest.raises(StackError, match="no Model Monitor image is known for region sa-east-1"):
        p.monitor_image("sa-east-1")


def test_budget_plan(fraud):
    assert p.budget_plan(fraud) == {"limit": "5000.00", "tag_filter": "user:team$fraud", "thresholds": [80.0, 100.0]}
