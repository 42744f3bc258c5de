"""Alert rules: fire once, stay quiet while the breach lasts, resolve once; channels."""
from __future__ import annotations

import json

import pytest

from mlplat.context import Context
from mlplat.db import Database
from mlplat.services.monitoring import alerts as a
from mlplat.stack import parse_stack
from tests.conftest import REPO

RULE = a.Rule("accuracy-low", "quality.accuracy", 0.8, "lt", "critical")


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "platform.db")
    database.migrate()
    return database


def step(db, metrics, now):
    with db.transaction() as conn:
        return a.evaluate(conn, [RULE], metrics, now=now)


def test_fires_once_while_breach_persists_and_resolves_once(db):
    kinds = []
    for now, value in enumerate([0.9, 0.7, 0.6, 0.65, 0.85, 0.9, 0.5]):
        kinds += [(now, e.kind) for e in step(db, {"m@prod": {"quality.accuracy": value}}, now)]
    assert kinds == [(1, "fired"), (4, "resolved"), (6, "fired")]
    conn = db.connect()
    rows = conn.execute("SELECT kind, value FROM alert_events ORDER BY id").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("fired", 0.7), ("resolved", 0.85), ("fired", 0.5)]
    state = conn.execute("SELECT firing, breaches FROM alert_state").fetchone()
    assert tuple(state) == (1, 1)


def test_missing_metric_neither_fires_nor_resolves(db):
    assert [e.kind for e in step(db, {"m@prod": {"quality.accuracy": 0.5}}, 1)] == ["fired"]
    assert step(db, {"m@prod": {}}, 2) == []  # insufficient data this window
    assert step(db, {"m@prod": {"drift.share": 0.1}}, 3) == []
    assert [e.kind for e in step(db, {"m@prod": {"quality.accuracy": 0.95}}, 4)] == ["resolved"]


def test_subjects_are_independent(db):
    events = step(db, {"a@prod": {"quality.accuracy": 0.5}, "b@prod": {"quality.accuracy": 0.99}}, 1)
    assert [(e.subject, e.kind) for e in events] == [("a@prod", "fired")]


def spec_with(tmp_path, monitoring: str, budget: str = ""):
    text = (REPO / "stacks" / "Pulumi.dev.yaml").read_text()
    text = text.split("  mlplat:monitoring:")[0] + monitoring + budget
    (tmp_path / "Pulumi.yaml").write_text((REPO / "Pulumi.yaml").read_text())
    return parse_stack(text, path=tmp_path / "stacks" / "Pulumi.dev.yaml", name="dev", project_dir=tmp_path)


def test_rules_for_adds_builtin_drift_and_budget_rules(tmp_path):
    spec = spec_with(tmp_path, "  mlplat:monitoring:\n    schedule: 5m\n", "  mlplat:budget: {monthlyUsd: 100, alertAt: [0.8, 1.0]}\n")
    names = {r.name: r for r in a.rules_for(spec)}
    assert set(names) == {"drift", "budget-80", "budget-100"}
    assert names["budget-100"].severity == "critical"
    spec2 = spec_with(tmp_path, "  mlplat:monitoring:\n    alerts:\n      - {name: psi, metric: drift.prediction_psi, threshold: 0.3}\n")
    assert [r.name for r in a.rules_for(spec2)] == ["psi"]


def test_log_and_console_channels(tmp_path, db):
    spec = spec_with(tmp_path, "  mlplat:monitoring:\n    channels:\n      - {kind: log, path: logs/alerts.jsonl}\n"
                               "      - {kind: console}\n")
    from io import StringIO

    from rich.console import Console

    err = StringIO()
    ctx = Context(project_dir=tmp_path, err=Console(file=err, width=200))
    events = step(db, {"m@dev": {"quality.accuracy": 0.1}}, 5)
    with db.transaction() as conn:
        a.dispatch(conn, spec, ctx, events, now=5)
    line = json.loads((tmp_path / "logs" / "alerts.jsonl").read_text().strip())
    assert line["event"] == "fired" and line["rule"] == "accuracy-low" and line["team"] == "ml-core"
    assert "alert fired" in err.getvalue() and "accuracy-low" in err.getvalue()
