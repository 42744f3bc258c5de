"""Drift statistics and verdicts: injected drift is found, undrifted data is left alone."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlplat.services.monitoring import drift as d

TH = d.Thresholds()


def frames(seed: int, n_ref: int = 2000, n_cur: int = 500, shift: float = 0.0, new_category: float = 0.0):
    rng = np.random.default_rng(seed)
    probs = [0.4, 0.3, 0.2, 0.1]

    def make(n: int, mean: float, extra: float):
        cats = rng.choice(list("abcd"), n, p=probs).astype(object)
        if extra:
            cats[rng.random(n) < extra] = "zz"
        return pd.DataFrame({
            "income": rng.normal(50 + mean * 10, 10, n),
            "age": rng.normal(40, 12, n),
            "score": rng.exponential(1.0, n),
            "region": cats,
            d.PREDICTION: rng.beta(2, 5, n),
        })

    return make(n_ref, 0.0, 0.0), make(n_cur, shift, new_category)


def test_shifted_mean_is_detected_on_that_feature_only():
    ref, cur = frames(1, shift=1.0)
    report = d.detect(ref, cur, TH)
    by = {f.feature: f for f in report.features}
    assert by["income"].drifted and by["income"].psi > 0.2 and by["income"].ks_p_value < 1e-10
    assert not by["age"].drifted and not by["score"].drifted and not by["region"].drifted
    assert report.drifted_features == ["income"]
    assert report.share == pytest.approx(0.25)
    assert report.verdict == d.OK  # one feature of four is below the 0.5 share, and predictions did not move


def test_new_category_is_detected_and_named():
    ref, cur = frames(2, new_category=0.2)
    report = d.detect(ref, cur, TH)
    region = next(f for f in report.features if f.feature == "region")
    assert region.drifted
    assert region.new_categories == ["zz"]
    assert region.chi2_p_value < 1e-6 and region.js_distance > 0.1


def test_prediction_drift_alone_makes_the_window_drift():
    ref, cur = frames(3)
    cur[d.PREDICTION] = np.random.default_rng(3).beta(5, 2, len(cur))
    report = d.detect(ref, cur, TH)
    assert report.prediction.drifted
    assert report.drifted_features == []
    assert report.verdict == d.DRIFT
    assert report.metrics()["drift.detected"] == 1.0


def test_share_of_drifted_features_makes_the_window_drift():
    ref, cur = frames(4, shift=1.0, new_category=0.3)
    cur["age"] = cur["age"] + 15
    report = d.detect(ref, cur, TH)
    assert set(report.drifted_features) == {"income", "region", "age"}
    assert report.verdict == d.DRIFT


def test_too_few_rows_is_insufficient_data_not_an_alarm():
    ref, cur = frames(5, n_cur=40, shift=3.0)
    report = d.detect(ref, cur, TH)
    assert report.verdict == d.INSUFFICIENT
    assert all(f.verdict == d.INSUFFICIENT for f in report.features)
    assert report.metrics() == {}


def test_empty_window_is_insufficient():
    ref, _ = frames(6)
    assert d.detect(ref, {}, TH).verdict == d.INSUFFICIENT


def test_false_alarm_rate_at_default_thresholds_over_many_seeds():
    seeds = 150
    window_alarms = feature_alarms = 0
    for seed in range(seeds):
        ref, cur = frames(100 + seed, n_cur=TH.min_rows if seed % 2 else 500)
        report = d.detect(ref, cur, TH)
        window_alarms += report.verdict == d.DRIFT
        feature_alarms += len(report.drifted_features) + (report.prediction.drifted if report.prediction else 0)
    assert window_alarms / seeds <= 0.05
    assert feature_alarms / (seeds * 5) <= 0.05


@pytest.mark.parametrize("n1,n2", [(20_000, 15_000), (50_000, 50_000)])
def test_large_sample_ks_agrees_with_scipy(n1, n2):
    rng = np.random.default_rng(n1)
    a = np.sort(rng.normal(0, 1, n1))
    b = np.sort(np.round(rng.normal(0.02, 1, n2), 2))  # ties on purpose
    statistic, p = d.ks_2samp_sorted(a, b)
    expected = stats.ks_2samp(a, b, method="asymp")
    assert statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=0.05, abs=1e-6)


def test_small_sample_ks_is_scipys_exact_test():
    rng = np.random.default_rng(9)
    a, b = np.sort(rng.normal(size=300)), np.sort(rng.normal(0.3, 1, 200))
    expected = stats.ks_2samp(a, b)
    assert d.ks_2samp_sorted(a, b) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue))


def test_psi_matches_the_textbook_formula():
    ref = np.sort(np.random.default_rng(1).normal(size=10_000))
    cur = np.sort(np.random.default_rng(2).normal(0.5, 1, 5_000))
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)[1:-1]))
    p = np.histogram(ref, np.r_[-np.inf, edges, np.inf])[0] / ref.size
    q = np.histogram(cur, np.r_[-np.inf, edges, np.inf])[0] / cur.size
    assert d.psi_sorted(ref, cur) == pytest.approx(float(np.sum((p - q) * np.log(p / q))), rel=1e-6)


def test_missing_and_non_numeric_values_are_counted_not_fatal():
    rng = np.random.default_rng(11)
    ref = {"x": rng.normal(size=1000)}
    cur = {"x": np.array([*rng.normal(size=300).tolist(), None, "n/a", float("nan")], dtype=object)}
    report = d.detect(ref, cur, TH)
    x = report.features[0]
    assert x.n_current == 300 and x.missing_share == pytest.approx(3 / 303)
    assert x.verdict == d.OK


def test_report_serialises_without_infinities():
    ref, cur = frames(12, shift=2.0)
    doc = d.detect(ref, cur, TH).to_dict()
    import json

    json.dumps(doc, allow_nan=False)
    assert doc["features"][0]["feature"] == "income"


def test_a_tiny_reference_is_insufficient_reference_never_a_verdict():
    # Five reference rows (an input example) against a clearly shifted window: deciles of five
    # rows make PSI noise, so the window is not judged at all rather than called "ok".
    ref, cur = frames(13, n_ref=5, n_cur=500, shift=3.0)
    report = d.detect(ref, cur, TH)
    assert report.verdict == d.INSUFFICIENT_REFERENCE and report.reference_rows == 5
    assert all(f.verdict == d.INSUFFICIENT_REFERENCE and f.psi is None for f in report.features)
    assert report.prediction.verdict == d.INSUFFICIENT_REFERENCE
    assert report.metrics() == {}  # nothing for alert rules: neither an alarm nor an all-clear
    assert report.to_dict()["verdict"] == "insufficient reference"


def test_the_minimum_reference_size_is_a_setting():
    ref, cur = frames(14, n_ref=150, n_cur=500, shift=3.0)
    judged = d.detect(ref, cur, TH)  # 150 rows clear the default of 100
    assert judged.verdict == d.OK and judged.drifted_features == ["income"]
    strict = d.Thresholds(min_reference_rows=200)
    assert d.detect(ref, cur, strict).verdict == d.INSUFFICIENT_REFERENCE


def test_the_reference_verdict_comes_before_a_short_window():
    ref, cur = frames(15, n_ref=5, n_cur=10)
    assert d.detect(ref, cur, TH).verdict == d.INSUFFICIENT_REFERENCE


def test_min_reference_rows_is_read_from_the_stack_monitoring_settings():
    from pydantic import ValidationError

    from mlplat.stack import Monitoring

    monitoring = Monitoring.model_validate({"drift": {"minReferenceRows": 500}})
    assert d.Thresholds.from_spec(monitoring).min_reference_rows == 500
    assert d.Thresholds.from_spec(Monitoring()).min_reference_rows == 100
    with pytest.raises(ValidationError, match="minReferenceRows"):
        Monitoring.model_validate({"drift": {"minReferenceRows": 1}})
