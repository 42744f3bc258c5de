"""What an alert says: the model version and the features that drifted with their statistics, not the
rule's arithmetic (which stays in the event's metric, value and threshold)."""
from __future__ import annotations

import numpy as np
import pytest

from mlplat.db import Database
from mlplat.services.monitoring import alerts as a
from mlplat.services.monitoring import drift as d

FEATURES = ["income", "debt_ratio", "age", "utilization", "late_payments", "accounts", "inquiries", "tenure"]
DRIFT_RULE = a.Rule("drift", "drift.detected", 0.5, "gt", "warning")


def drift_doc(shift: dict[str, float], seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    reference = {f: rng.normal(0, 1, 600) for f in FEATURES}
    current = {f: rng.normal(shift.get(f, 0.0), 1, 300) for f in FEATURES}
    return d.detect(reference, current, d.Thresholds(share=0.3), prediction=None).to_dict()


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "platform.db")
    database.migrate()
    return database


def test_a_drift_alert_names_the_version_and_the_strongest_features_with_their_statistics(db):
    doc = drift_doc({"income": 1.5, "age": 0.6, "tenure": 1.0})
    about = {"credit-risk@production": a.About("credit-risk v2 in production", doc)}
    with db.transaction() as conn:
        [event] = a.evaluate(conn, [DRIFT_RULE], {"credit-risk@production": {"drift.detected": 1.0}}, now=1.0,
                             about=about)
    assert event.message.startswith("credit-risk v2 in production: 3 of 8 features drifted — income PSI ")
    # strongest first: income (1.5 sd), tenure (1.0 sd), age (0.6 sd); each with its KS p-value
    assert [part.split()[0] for part in event.message.split(" — ")[1].split("; ")] == ["income", "tenure", "age"]
    assert event.message.count("KS p<0.001") == 3
    assert event.message.endswith("(rule drift on drift.detected)")
    assert "= 1 > 0.5" not in event.message
    # the same words are what the ledger keeps (monitor status and the dashboard show them)
    stored = db.connect().execute("SELECT message FROM alert_events").fetchone()[0]
    assert stored == event.message


def test_a_resolved_drift_alert_says_so_with_the_current_picture(db):
    about = {"m@dev": a.About("m v3 in dev", drift_doc({"income": 1.5, "age": 1.5, "tenure": 1.5}))}
    with db.transaction() as conn:
        a.evaluate(conn, [DRIFT_RULE], {"m@dev": {"drift.detected": 1.0}}, now=1.0, about=about)
    about = {"m@dev": a.About("m v3 in dev", drift_doc({}))}
    with db.transaction() as conn:
        [event] = a.evaluate(conn, [DRIFT_RULE], {"m@dev": {"drift.detected": 0.0}}, now=2.0, about=about)
    assert event.kind == "resolved"
    assert event.message == "m v3 in dev: drift resolved, 0 of 8 features drifted (rule drift on drift.detected, resolved)"


def test_features_rank_by_effect_over_its_limit_more_are_counted_and_categorical_ones_use_js():
    doc = drift_doc({f: 1.0 for f in FEATURES[:5]})  # PSI well under 9 × its limit of 0.2
    doc["features"].append({"feature": "region", "kind": "categorical", "verdict": "drift", "js_distance": 0.9,
                            "chi2_p_value": 0.0})
    text = a.drift_summary(doc)
    assert text.startswith("6 of 9 features drifted — region JS 0.90, χ² p<0.001; ")
    assert text.endswith("; and 3 more")


def test_other_rules_read_as_words_about_the_subject():
    rule = a.Rule("accuracy-low", "quality.accuracy", 0.8, "lt", "critical")
    assert a.message(rule, "m@prod", 0.7123, "fired", a.About("m v2 in prod")) == \
        "m v2 in prod: accuracy 0.7123 below 0.8 (rule accuracy-low on quality.accuracy)"
    budget = a.Rule("budget-80", "cost.budget_share", 0.8, "gt", "warning")
    assert a.message(budget, "team:fraud", 0.85, "fired", a.About("team fraud (stack dev)")) == \
        "team fraud (stack dev): budget used 85% above 80% (rule budget-80 on cost.budget_share)"
    # no description: the subject's key stands in
    assert a.message(rule, "m@prod", 0.9, "resolved").startswith("m@prod: accuracy back to 0.9")
