"""Gate metrics and checks: thresholds by direction, champion regression, calibration."""
from __future__ import annotations

import numpy as np
import pytest

from mlplat.services import gate


def test_thresholds_use_min_for_higher_and_max_for_lower_is_better():
    metrics = {"roc_auc": 0.85, "brier": 0.2, "recall": 0.6}
    results = {c["check"]: c for c in gate.checks("classification", metrics, {"roc_auc": 0.8, "brier": 0.1,
                                                                              "recall": 0.7}, None, 0.0)}
    assert results["min roc_auc"]["passed"] and results["min roc_auc"]["margin"] == pytest.approx(0.05)
    assert not results["max brier"]["passed"] and results["max brier"]["margin"] == pytest.approx(-0.1)
    assert not results["min recall"]["passed"]
    text = gate.describe(results["min recall"])
    assert "recall 0.6000 is below the minimum 0.7000 by 0.1000" == text


def test_champion_regression_allows_the_margin_and_no_more():
    within = gate.checks("classification", {"roc_auc": 0.885}, {"roc_auc": 0.5}, {"roc_auc": 0.9}, 0.02)
    assert all(c["passed"] for c in within)
    beyond = gate.checks("classification", {"roc_auc": 0.87}, {"roc_auc": 0.5}, {"roc_auc": 0.9}, 0.02)
    failed = [c for c in beyond if not c["passed"]]
    assert [c["check"] for c in failed] == ["vs champion roc_auc"]
    assert failed[0]["margin"] == pytest.approx(-0.01)
    assert "worse than the champion" in gate.describe(failed[0])


def test_champion_comparison_falls_back_to_the_primary_metric():
    results = gate.checks("regression", {"rmse": 1.3, "mae": 1.0, "r2": 0.5}, {}, {"rmse": 1.0, "mae": 1, "r2": 0.5}, 0.1)
    assert [(c["check"], c["passed"]) for c in results] == [("vs champion rmse", False)]


def test_metric_undefined_for_the_task_fails_clearly():
    results = gate.checks("regression", {"rmse": 1.0}, {"roc_auc": 0.8}, None, 0.0)
    assert not results[0]["passed"] and "not defined" in gate.describe(results[0])


def test_classification_metrics_match_scikit_learn():
    from sklearn.metrics import brier_score_loss, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(y * 0.6 + rng.normal(0.2, 0.2, 500), 0, 1)
    proba = np.column_stack([1 - p, p])
    pred = (p > 0.5).astype(int)
    out = gate.metrics_for("classification", y, pred, proba, np.array([0, 1]))
    assert out["roc_auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-9)
    assert out["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-9)
    assert set(out) == {"accuracy", "precision", "recall", "f1", "roc_auc", "brier", "ece"}


def test_ece_is_zero_when_calibrated_and_large_when_not():
    y = np.array([0] * 50 + [1] * 50)
    assert gate.expected_calibration_error(y, np.full(100, 0.5)) == pytest.approx(0.0)
    assert gate.expected_calibration_error(y, np.where(y == 1, 0.0, 1.0)) == pytest.approx(1.0)


def test_regression_metrics_and_task_inference():
    out = gate.metrics_for("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]), None, None)
    assert out["mae"] == pytest.approx(2 / 3) and out["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert gate.infer_task(np.array([0, 1, 1])) == "classification"
    assert gate.infer_task(np.array([0.5, 1.7, 3.2])) == "regression"


def test_report_digest_is_stable_and_content_sensitive():
    report = {"metrics": {"roc_auc": 0.9}, "passed": True}
    assert gate.report_digest(report) == gate.report_digest(dict(report))
    assert gate.report_digest(report) != gate.report_digest({**report, "passed": False})
