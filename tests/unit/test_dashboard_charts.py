"""What the dashboard computes before a browser sees it: time ticks, the month's cost trend and forecast, the
reference-vs-current histogram a drift verdict keeps, and the parts the page swaps live."""
from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np
import pytest

from mlplat.contracts import Deployment
from mlplat.dashboard import render, svg
from mlplat.services.monitoring import cost, drift


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_time_ticks_are_round_utc_times_inside_the_span_with_a_format_for_the_span():
    ticks, fmt = svg.time_ticks(ts("2026-12-02 06:07:00"), ts("2026-12-02 09:05:00"))
    assert [svg.utc(t, fmt) for t in ticks] == ["06:30", "07:00", "07:30", "08:00", "08:30", "09:00"]
    ticks, fmt = svg.time_ticks(ts("2026-12-01 00:00:00"), ts("2027-01-01 00:00:00"))
    assert fmt == "%Y-%m-%d" and svg.utc(ticks[0], fmt) == "2026-12-01" and len(ticks) <= 6
    ticks, fmt = svg.time_ticks(ts("2026-12-01 20:00:00"), ts("2026-12-02 10:00:00"))
    assert fmt == "%m-%d %H:%M" and all(ts("2026-12-01 20:00:00") <= t <= ts("2026-12-02 10:00:00") for t in ticks)


@pytest.mark.parametrize(("lo", "hi"), [(0, 23), (0, 1), (0.5, 0.93), (0, 0.0041), (3, 3)])
def test_value_ticks_are_round_and_cover_the_values(lo, hi):
    ticks = svg.nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 7
    steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1 and re.fullmatch(r"[125]", f"{steps.pop():.0e}"[0])


def test_a_time_chart_names_both_axes_and_labels_its_ticks():
    chart = svg.time_lines({"accuracy": [(ts("2026-12-02 06:00:00"), 0.91), (ts("2026-12-02 08:00:00"), 0.88)]},
                           title="quality", y_title="score (0–1)", x_title="window end (UTC)", y_min=0, y_max=1)
    assert re.findall(r'class="axis-title"[^>]*>([^<]+)<', chart) == ["window end (UTC)", "score (0–1)"]
    labels = re.findall(r'class="tick"[^>]*>([^<]+)<', chart)
    assert "06:00" in labels and "08:00" in labels and "0.5" in labels and "1" in labels
    assert 'class="placeholder"' in svg.time_lines({}, title="quality", y_title="score")


def test_the_month_trend_counts_each_day_and_forecasts_what_still_runs_to_the_month_end():
    now = ts("2026-12-03 12:00:00")
    deployments = [
        Deployment("m", 1, "dev", started=ts("2026-11-20 00:00:00"), price_per_hour=1.0),  # runs on: $1/h
        Deployment("m", 2, "dev", started=ts("2026-12-02 00:00:00"), ended=ts("2026-12-02 06:00:00"),
                   price_per_hour=2.0),  # ended: 6 h × $2, on the 2nd only
    ]
    trend = cost.month_trend(deployments, now, price_for=lambda _: 0.0, default_instance_type="x")
    assert [d["day"] for d in trend["days"]] == ["2026-12-01", "2026-12-02", "2026-12-03"]
    assert [round(d["cost_usd"], 6) for d in trend["days"]] == [24.0, 36.0, 12.0]
    assert trend["to_date_usd"] == pytest.approx(72.0)
    # the 28.5 days left in December at $1/h; the ended deployment adds nothing
    assert trend["forecast_usd"] == pytest.approx(72.0 + 28.5 * 24)
    assert trend["month_end"] == ts("2027-01-01 00:00:00") and trend["month"] == "2026-12"


def test_a_drift_verdict_keeps_reference_and_current_shares_over_the_same_bins():
    rng = np.random.default_rng(0)
    reference, current = np.sort(rng.normal(0, 1, 2000)), np.sort(rng.normal(3, 1, 2000))
    judged = drift.numerical_drift("income", reference, current, drift.Thresholds(), presorted=True)
    h = judged.to_dict()["histogram"]
    assert judged.verdict == "drift" and len(h["bins"]) == len(h["reference"]) == len(h["current"]) == 12
    assert sum(h["reference"]) == pytest.approx(1.0) and sum(h["current"]) == pytest.approx(1.0)
    assert h["reference"][0] > h["current"][0] and h["current"][-1] > h["reference"][-1]  # the shift shows
    categorical = drift.categorical_drift("city", ["a"] * 150 + ["b"] * 50, ["b"] * 150 + ["c"] * 50, drift.Thresholds())
    assert categorical.histogram == {"bins": ["b", "a", "c"], "reference": [0.25, 0.75, 0.0],
                                     "current": [0.75, 0.0, 0.25]}
    too_few = drift.numerical_drift("age", reference, current[:5], drift.Thresholds(), presorted=True)
    assert too_few.verdict == "insufficient data" and too_few.histogram is None


def test_quality_waits_for_labels_with_a_placeholder_and_splits_metrics_by_direction():
    waiting = render.quality_block("m", [{"verdict": "insufficient data", "metrics": {}}])
    assert "Waiting for labels" in waiting and "<svg" not in waiting
    window = {"verdict": "ok", "version": 1, "rows": 300, "ts": ts("2026-12-02 08:00:00"), "last_ts": None,
              "details": {}, "metrics": {"quality.accuracy": 0.9, "quality.f1": 0.8, "quality.brier": 0.1,
                                         "quality.ece": 0.05}}
    block = render.quality_block("m", [window])
    higher = block.split("aria-label=\"quality of m, higher is better\"")[1].split("</svg>")[0]
    lower = block.split("aria-label=\"errors of m, lower is better\"")[1].split("</svg>")[0]
    assert ">accuracy<" in higher and ">f1<" in higher and ">brier<" not in higher
    assert ">brier<" in lower and ">ece<" in lower and ">accuracy<" not in lower


def test_each_part_is_one_section_stamped_with_a_digest_of_its_html():
    stamped = render._stamped({"a": "<section id='a'><p>1</p></section>", "b": "<section id='b'><p>1</p></section>"})
    digests = {k: re.match(r"<section data-v='([0-9a-f]{16})' id='(\w)'>", v).groups() for k, v in stamped.items()}
    assert digests["a"][1] == "a" and digests["a"][0] != digests["b"][0]
    again = render._stamped({"a": "<section id='a'><p>1</p></section>"})
    assert again["a"] == stamped["a"]
    with pytest.raises(ValueError, match="must be one <section id='c'>"):
        render._stamped({"c": "<div id='c'></div>"})
