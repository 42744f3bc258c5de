"""Cost arithmetic, checked by hand on a small case, and period parsing."""
from __future__ import annotations

from datetime import UTC, datetime, timezone

import pytest

from mlplat.services.monitoring import cost as c

HOUR = 3600.0
T0 = datetime(2026, 11, 10, tzinfo=UTC).timestamp()


def prices(instance_type):
    return {"ml.m5.large": 0.115, "local.cpu": 0.05}.get(instance_type, 0.05)


def test_small_case_by_hand():
    period = c.Period(T0, T0 + 10 * HOUR, "ten hours")
    deployments = [
        # 2 instances x 3 h x $0.50 (own price) = $3.00
        c.Deployment("scorer", 1, "prod", T0 + 1 * HOUR, T0 + 4 * HOUR, "ml.m5.large", 2, 0.50, "fraud"),
        # 1 instance, started before the period, still running: 10 h x $0.115 = $1.15
        c.Deployment("scorer", 2, "prod", T0 - 5 * HOUR, None, "ml.m5.large", 1, None, "fraud"),
        # another team: 4 h x $0.05 = $0.20
        c.Deployment("tagger", 1, "prod", T0, T0 + 4 * HOUR, None, 1, None, "nlp"),
    ]
    usage = [
        c.Usage("scorer", 1, "prod", 1000, 50.0, "fraud"),  # 1000 predictions, 50 s busy
        c.Usage("scorer", 2, "prod", 4000, 360.0, "fraud"),
        c.Usage("tagger", 1, "prod", 0, 0.0, "nlp"),
    ]
    report = c.attribute(deployments, usage, period, price_for=prices, default_instance_type="local.cpu", by="version",
                         budgets={"fraud": 730.5})
    lines = {(line.model, line.version): line for line in report.lines}
    assert lines[("scorer", 1)].cost_usd == pytest.approx(3.00)
    assert lines[("scorer", 1)].instance_hours == pytest.approx(6.0)
    assert lines[("scorer", 1)].cost_per_prediction == pytest.approx(0.003)
    assert lines[("scorer", 1)].utilisation == pytest.approx(50 / (6 * 3600))
    assert lines[("scorer", 2)].cost_usd == pytest.approx(1.15)
    assert lines[("scorer", 2)].cost_per_prediction == pytest.approx(1.15 / 4000)
    assert lines[("tagger", 1)].cost_usd == pytest.approx(0.20)
    assert lines[("tagger", 1)].cost_per_prediction is None
    assert report.total_usd == pytest.approx(4.35)

    by_team = c.attribute(deployments, usage, period, price_for=prices, default_instance_type="local.cpu", by="team",
                          budgets={"fraud": 730.5})
    groups = {g.key: g for g in by_team.groups}
    assert groups["fraud"].cost_usd == pytest.approx(4.15)
    assert groups["fraud"].predictions == 5000
    assert groups["fraud"].cost_per_prediction == pytest.approx(4.15 / 5000)
    # $730.50 a month is $1.00 an hour (730.5 h in an average month), so 10 h of budget = $10
    assert by_team.budget_for_period("fraud") == pytest.approx(10.0)
    assert by_team.budget_share("fraud") == pytest.approx(0.415)
    rows = c.report_rows(by_team)
    assert rows[0]["team"] == "fraud" and rows[0]["budget_share"] == pytest.approx(0.415)
    assert c.metrics_for(by_team, "fraud")["cost.budget_share"] == pytest.approx(0.415)


def test_grouping_by_env_and_model():
    period = c.Period(0, 2 * HOUR, "p")
    deps = [c.Deployment("a", 1, "staging", 0, None, None, 1, 1.0, "t"),
            c.Deployment("a", 1, "prod", 0, None, None, 2, 1.0, "t")]
    by_env = {g.key: g.cost_usd for g in c.attribute(deps, [], period, price_for=prices, default_instance_type="x",
                                                     by="env").groups}
    assert by_env == {"prod": pytest.approx(4.0), "staging": pytest.approx(2.0)}
    by_model = c.attribute(deps, [], period, price_for=prices, default_instance_type="x", by="model")
    assert [(g.key, g.cost_usd) for g in by_model.groups] == [("a", pytest.approx(6.0))]
    with pytest.raises(Exception, match="cannot group cost by 'region'"):
        c.attribute(deps, [], period, price_for=prices, default_instance_type="x", by="region")


def test_merge_sums_budgets_across_stacks():
    period = c.Period(0, HOUR, "p")
    a = c.attribute([c.Deployment("m", 1, "dev", 0, None, None, 1, 2.0, "t1")], [], period, price_for=prices,
                    default_instance_type="x", by="team", budgets={"t1": 100})
    b = c.attribute([c.Deployment("n", 1, "prod", 0, None, None, 1, 1.0, "t1")], [], period, price_for=prices,
                    default_instance_type="x", by="team", budgets={"t1": 50})
    merged = c.merge([a, b], "team")
    assert merged.groups[0].cost_usd == pytest.approx(3.0) and merged.budgets == {"t1": 150}


@pytest.mark.parametrize("text,hours", [("7d", 168), ("24h", 24), ("90m", 1.5), ("2026-10", 31 * 24),
                                        ("2026-11-01..2026-11-02", 48)])
def test_periods(text, hours):
    now = datetime(2026, 12, 5, tzinfo=UTC).timestamp()
    assert c.parse_period(text, now).hours == pytest.approx(hours)


def test_month_to_date_and_bad_periods():
    now = datetime(2026, 11, 3, 12, tzinfo=UTC).timestamp()
    assert c.parse_period("month", now).hours == pytest.approx(2.5 * 24)
    for bad in ("week", "2026-13", "2026-11-05..2026-11-01", "0d"):
        with pytest.raises(c.PeriodError) as info:
            c.parse_period(bad, now)
        assert info.value.hint or "empty" in info.value.message
