"""The bill of an Azure stack: Cost Management's query grouped by the team tag, through the fake ARM."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.contract.azure_fake import cost as fake_cost
from tests.contract.azure_fake import metrics as fake_metrics
from tests.contract.azure_fake.fixtures import azure_fake, azure_server  # noqa: F401  (fixtures)
from tests.contract.azure_support import azure_session, azure_stack_text

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
END = dt.datetime(2026, 2, 1, tzinfo=dt.UTC).timestamp()


@pytest.fixture
def spec(tmp_path, azure_fake):  # noqa: F811
    from mlplat.stack import load_stack
    from tests.conftest import write_project

    project = write_project(tmp_path / "project", {"team": azure_stack_text()})
    return load_stack("team", project)


def _bill(spec, sleeps=None, attempts=4):
    from mlplat_providers.azure.runtime.cost import AzureBill

    return AzureBill(spec, azure_session(spec, sleeps, attempts))


# --- the query body and the fake's documented rules ------------------------------------------

def test_query_body_is_cost_managements_own_model():
    from azure.mgmt.costmanagement import models

    from mlplat_providers.azure.runtime.cost import query_body

    body = query_body(START, END, team="fraud")
    parsed = models.QueryDefinition.deserialize(body)
    assert parsed.dataset.grouping[0].type == "TagKey" and parsed.dataset.grouping[0].name == "team"
    assert parsed.dataset.filter.tags.values == ["fraud"]
    assert body["timePeriod"] == {"from": "2026-01-01T00:00:00Z", "to": "2026-01-31T23:59:59Z"}
    assert fake_cost.query_rules(body) is None


def test_query_rules():
    ok = {"timeframe": "Custom", "timePeriod": {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"},
          "dataset": {"grouping": [{"type": "TagKey", "name": "team"}]}}
    assert fake_cost.query_rules(ok) is None
    assert "required" in fake_cost.query_rules({**ok, "timePeriod": None})
    assert "before" in fake_cost.query_rules({**ok, "timePeriod": {"from": "2026-02-01", "to": "2026-01-01"}})
    assert "1 year" in fake_cost.query_rules({**ok, "timePeriod": {"from": "2024-01-01", "to": "2026-01-01"}})
    assert "at most 2" in fake_cost.query_rules({**ok, "dataset": {"grouping": [{"type": "TagKey", "name": "a"}] * 3}})
    assert "not supported" in fake_cost.query_rules({**ok, "dataset": {"grouping": [{"type": "Tag", "name": "a"}]}})


def test_retry_after_is_the_longest_header():
    from mlplat_providers.azure.runtime.cost import cost_retry_after

    class Answer:
        headers = {"Retry-After".lower(): "5", fake_cost.QPU_HEADER: "30"}

    class Throttled(Exception):
        response = Answer()

    assert cost_retry_after(Throttled()) == 30.0
    assert cost_retry_after(Exception()) is None


# --- through azure-mgmt-costmanagement and the fake ARM --------------------------------------

def test_billed_groups_by_team_tag(spec, azure_fake):  # noqa: F811
    fake_cost.add_charge(azure_fake.arm, "fraud", 12.5, "2026-01-03")
    fake_cost.add_charge(azure_fake.arm, "fraud", 7.25, "2026-01-20")
    fake_cost.add_charge(azure_fake.arm, "fraud", 100.0, "2026-02-02")  # outside the period
    fake_cost.add_charge(azure_fake.arm, "payments", 40.0, "2026-01-05")
    fake_cost.add_charge(azure_fake.arm, None, 3.0, "2026-01-05")

    bill = _bill(spec).billed(START, END)
    assert bill["source"] == "azure-cost-management" and bill["currency"] == "USD"
    assert bill["by_team"] == {"fraud": pytest.approx(19.75)}
    assert bill["period"] == {"Start": "2026-01-01", "End": "2026-02-01"}

    everyone = _bill(spec).billed(START, END, team_only=False)["by_team"]
    assert everyone == {"fraud": pytest.approx(19.75), "payments": 40.0, "(untagged)": 3.0}
    assert any(path.endswith("/resourceGroups/rg-fraud-production/providers/Microsoft.CostManagement/query")
               for _m, path in azure_fake.arm.calls)


def test_billed_nothing_charged_is_zero(spec, azure_fake):  # noqa: F811
    assert _bill(spec).billed(START, END)["by_team"] == {"fraud": 0.0}


def test_429_waits_the_longest_retry_after_then_succeeds(spec, azure_fake):  # noqa: F811
    fake_cost.add_charge(azure_fake.arm, "fraud", 1.0, "2026-01-03")
    fake_cost.throttle(azure_fake.arm, times=2, qpu_seconds=30, retry_after=5)
    sleeps: list[float] = []
    assert _bill(spec, sleeps).billed(START, END)["by_team"] == {"fraud": 1.0}
    assert sleeps == [30.0, 30.0]


def test_429_every_time_is_one_clear_error(spec, azure_fake):  # noqa: F811
    from mlplat_providers.azure.runtime.session import AzureUnavailable

    fake_cost.throttle(azure_fake.arm, times=10, qpu_seconds=2, retry_after=1)
    sleeps: list[float] = []
    with pytest.raises(AzureUnavailable) as raised:
        _bill(spec, sleeps, attempts=3).billed(START, END)
    assert "429 3 times" in raised.value.message and sleeps == [2.0, 2.0]


def test_denied_names_the_action(spec, azure_fake):  # noqa: F811
    from mlplat_providers.azure.runtime.session import AzurePermissionDenied

    azure_fake.arm.deny(fake_cost.ACTION)
    with pytest.raises(AzurePermissionDenied) as raised:
        _bill(spec).billed(START, END)
    assert fake_cost.ACTION in raised.value.message


def test_period_ending_before_it_starts_is_refused_before_any_call(spec, azure_fake):  # noqa: F811
    from mlplat.errors import ExternalError

    with pytest.raises(ExternalError, match="before it starts"):
        _bill(spec).billed(END, START)
    assert not azure_fake.arm.calls


# --- metered usage: the ledger's deployments, traffic from Azure Monitor ---------------------

def test_metrics_rules():
    assert fake_metrics.metrics_rules(["RequestsPerMinute", "RequestLatency"], ["Total", "Average"], "deployment") is None
    assert "Valid metrics" in fake_metrics.metrics_rules(["Invocations"], ["Total"], None)
    assert "not supported" in fake_metrics.metrics_rules(["RequestLatency"], ["Total"], None)
    assert "not valid" in fake_metrics.metrics_rules(["RequestsPerMinute"], ["Total"], "variant")
    assert fake_metrics.parse_filter("deployment eq 'a-v1' and statusCodeClass eq '5xx'") == {
        "deployment": {"a-v1"}, "statusCodeClass": {"5xx"}}
    with pytest.raises(Exception, match="Invalid"):
        fake_metrics.parse_filter("deployment = a-v1")


def _ledger(spec, rows):
    from types import SimpleNamespace

    from mlplat_providers.azure.runtime.cost import AzureCost

    cost = AzureCost(spec, SimpleNamespace(reading=False), azure_session(spec))
    conn = cost.state.database().connect()
    try:
        for row in rows:
            conn.execute("INSERT INTO deployments (model, environment, version, variant, started_at, ended_at, "
                         "instance_type, instances, price_per_hour) VALUES (?,?,?,?,?,?,?,?,?)", row)
        conn.commit()
    finally:
        conn.close()
    return cost


def test_usage_counts_each_served_version_from_azure_monitor(spec, azure_fake):  # noqa: F811
    jan = dt.datetime(2026, 1, 10, tzinfo=dt.UTC).timestamp()
    cost = _ledger(spec, [("credit-risk", "production", 1, "", START, jan, "Standard_DS3_v2", 2, 0.29),
                          ("credit-risk", "production", 2, "", jan, None, "Standard_DS3_v2", 2, 0.29)])
    session = cost.azure
    endpoint = f"{session.workspace_id}/onlineEndpoints/{session.endpoint_name('credit-risk')}"
    v1, v2 = session.deployment_name("credit-risk", 1), session.deployment_name("credit-risk", 2)
    fake_metrics.add_requests(azure_fake.arm, endpoint, v1, "2026-01-05T10:00:00Z", 120, 20.0)
    fake_metrics.add_requests(azure_fake.arm, endpoint, v1, "2026-01-12T10:00:00Z", 999, 20.0)  # v1 no longer served
    fake_metrics.add_requests(azure_fake.arm, endpoint, v2, "2026-01-15T10:00:00Z", 300, 10.0)
    fake_metrics.add_requests(azure_fake.arm, endpoint, v2, "2026-02-03T10:00:00Z", 50, 10.0)  # after the period

    deployments = cost.deployments(START, END)
    assert [(d.version, d.instances, d.ended is None) for d in deployments] == [(1, 2, False), (2, 2, True)]
    usage = {u.version: u for u in cost.usage(START, END)}
    assert usage[1].predictions == 120 and usage[1].busy_seconds == pytest.approx(2.4)
    assert usage[2].predictions == 300 and usage[2].busy_seconds == pytest.approx(3.0)
    assert all(u.team == "fraud" for u in usage.values())


def test_usage_of_a_deleted_endpoint_is_no_predictions(spec, azure_fake):  # noqa: F811
    cost = _ledger(spec, [("credit-risk", "production", 1, "", START, None, "Standard_DS3_v2", 1, 0.29)])
    endpoint = f"{cost.azure.workspace_id}/onlineEndpoints/{cost.azure.endpoint_name('credit-risk')}"
    fake_metrics.delete_endpoint(azure_fake.arm, endpoint)
    assert cost.usage(START, END) == [] and len(cost.deployments(START, END)) == 1


def test_usage_denied_names_the_action(spec, azure_fake):  # noqa: F811
    from mlplat_providers.azure.runtime.session import AzurePermissionDenied

    cost = _ledger(spec, [("credit-risk", "production", 1, "", START, None, "Standard_DS3_v2", 1, 0.29)])
    azure_fake.arm.deny("Microsoft.Insights/metrics/read")
    with pytest.raises(AzurePermissionDenied, match="Microsoft.Insights/metrics/read"):
        cost.usage(START, END)


def test_cost_report_billed_through_the_cli(spec, azure_fake):  # noqa: F811
    """``mlplat cost report --billed`` on an Azure stack: the metered rows and Cost Management's bill."""
    import json

    from tests.conftest import run_cli

    now = dt.datetime.now(dt.UTC)
    cost = _ledger(spec, [("credit-risk", "production", 1, "", now.timestamp() - 7200, None, "Standard_DS3_v2", 1,
                           0.29)])
    hour = (now - dt.timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    endpoint = f"{cost.azure.workspace_id}/onlineEndpoints/{cost.azure.endpoint_name('credit-risk')}"
    fake_metrics.add_requests(azure_fake.arm, endpoint, cost.azure.deployment_name("credit-risk", 1),
                              hour.isoformat(), 40, 12.0)
    fake_cost.add_charge(azure_fake.arm, "fraud", 2.5, now.strftime("%Y-%m-%d"))
    project = Path(spec.path).parent.parent
    result = run_cli("cost", "report", "--stack", "team", "--period", "24h", "--billed", "--json", cwd=project,
                     env={"MLPLAT_PROJECT_DIR": str(project), **azure_fake.env})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    [bill] = doc["billed"]
    assert bill["source"] == "azure-cost-management" and bill["by_team"] == {"fraud": 2.5}
    assert doc["rows"][0]["team"] == "fraud" and doc["total_usd"] > 0
