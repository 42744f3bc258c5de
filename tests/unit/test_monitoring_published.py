"""The values a finished pass gives a cloud's metric store, per window."""
from __future__ import annotations

from mlplat.services.monitoring.published import window_values


def test_judged_windows_give_their_drift_and_unjudged_ones_only_their_metrics():
    report = {"windows": [
        {"model": "scorer", "version": 2, "environment": "production", "metrics": {"quality.accuracy": 0.8, "n": "x"},
         "drift": {"verdict": "drift", "share": 0.5, "rows": 40, "features": [
             {"feature": "x1", "psi": 0.9}, {"feature": "x2", "psi": None}, {"feature": "__prediction__", "psi": 0.3}]}},
        {"model": "tagger", "version": 1, "environment": "staging", "metrics": {},
         "drift": {"verdict": "insufficient reference", "share": 0.0, "features": [{"feature": "x1", "psi": 0.1}]}},
    ]}
    judged, unjudged = window_values(report)
    assert (judged.feature_psi, judged.prediction_psi, judged.max_psi) == ({"x1": 0.9}, 0.3, 0.9)
    assert (judged.drift_share, judged.rows, judged.metrics) == (0.5, 40, {"quality.accuracy": 0.8})
    assert (unjudged.feature_psi, unjudged.max_psi, unjudged.drift_share, unjudged.rows) == ({}, None, None, None)
    assert list(window_values({"windows": None})) == []
