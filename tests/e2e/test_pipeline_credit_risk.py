"""The credit-risk example pipeline on the local stack, end to end: prepare → train → gate → register →
staging; then monitoring's k-of-n retraining trigger runs that same pipeline (the model's declared
pipeline wins over monitoring.retrain.command), with the window's labelled rows in its training set."""
from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, run_cli, write_project
from tests.integration.monitoring_support import FEATURES, insert_captures

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("pipeline-credit-risk")]

# the repo's dev stack, with a retraining rule whose command would fail if it ran
STACK = (REPO / "stacks" / "Pulumi.dev.yaml").read_text().split("  mlplat:monitoring:")[0] + """\
  mlplat:monitoring:
    window: {size: 200, minRows: 50}
    retrain: {command: "python no_such_retrain_script.py", violationWindows: 2, evaluationWindows: 3}
  mlplat:access: {mode: trusted-local}
"""


def test_credit_risk_pipeline_reaches_staging_and_retraining_reruns_it(tmp_path, monkeypatch):
    root = write_project(tmp_path / "project", {"dev": STACK})
    shutil.copytree(REPO / "examples" / "pipelines", root / "examples" / "pipelines")
    env = {"MLPLAT_PROJECT_DIR": str(root), "MLPLAT_USER": "ds@example.com"}
    assert run_cli("up", "--stack", "dev", "--yes", cwd=root, env=env).returncode == 0

    result = run_cli("pipeline", "run", "examples/pipelines/credit_risk.py", "--stack", "dev", "--json", cwd=root,
                     env=env, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    first = json.loads(result.stdout)
    assert [(s["name"], s["state"]) for s in first["steps"]] == [
        ("prepare", "SUCCEEDED"), ("train", "SUCCEEDED"), ("evaluate", "SUCCEEDED"), ("register", "SUCCEEDED"),
        ("promote", "SUCCEEDED")]
    steps = {s["name"]: s for s in first["steps"]}
    registered = json.loads(Path(steps["register"]["outputs"]["version"], "version.json").read_text())
    assert registered["model"] == "credit-risk" and registered["version"] == 1
    report = json.loads(Path(steps["evaluate"]["outputs"]["report"], "report.json").read_text())
    assert report["passed"] and report["version"] == 1 and report["run_id"] == registered["run_id"]

    models = json.loads(run_cli("models", "list", "--stack", "dev", "--json", cwd=root, env=env).stdout)["versions"]
    assert [(m["model"], m["version"], m["stage"]) for m in models] == [("credit-risk", 1, "staging")]
    db = root / ".mlplat" / "dev" / "platform.db"
    conn = sqlite3.connect(db)
    try:
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_log WHERE model='credit-risk' ORDER BY seq")]
    finally:
        conn.close()
    assert "gate.passed" in actions and "stage.changed" in actions  # the gate and the promotion, audited

    # monitoring: k=2 of the last n=3 judged drift windows of version 1 breach → one retraining trigger
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(root))
    monkeypatch.setenv("MLPLAT_USER", "ds@example.com")
    monkeypatch.chdir(root)
    train = pd.read_parquet(Path(steps["prepare"]["outputs"]["dataset"], "train.parquet")).head(80)
    now = time.time()
    ids = insert_captures(db, model="credit-risk", version=1, frame=train[FEATURES], predictions=train["label"],
                          start_ts=now - 500, prefix="window")
    pd.DataFrame({"request_id": ids, "label": train["label"].tolist()}).to_csv(root / "labels.csv", index=False)
    assert run_cli("monitor", "labels", "--file", "labels.csv", "--stack", "dev", cwd=root, env=env).returncode == 0
    conn = sqlite3.connect(db)
    try:
        with conn:
            for i, breach in enumerate((1, 0, 1)):
                conn.execute("INSERT INTO monitor_windows(pass_id, ts, model, version, environment, kind, verdict, rows, "
                             "first_ts, last_ts, breach, metrics, details) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             (f"pass-{i}", now - 300 + i, "credit-risk", 1, "dev", "drift",
                              "drift" if breach else "ok", 80, now - 500, now - 400, breach, "{}", "{}"))
    finally:
        conn.close()

    from mlplat.context import Context
    from mlplat.services.monitoring import retrain
    from mlplat.services.monitoring.windows import monitor_for

    ctx = Context(project_dir=root)
    spec = ctx.stack("dev")
    trigger = retrain.maybe_trigger(spec, ctx, monitor_for(spec, ctx).database(), "credit-risk", "dev", 1, now=now)
    assert trigger is not None
    outcome = retrain.execute(spec, ctx, trigger)
    assert outcome["status"] == "staged", outcome.get("error")
    assert outcome["new_version"] == 2

    runs = json.loads(run_cli("pipeline", "list", "--stack", "dev", "--json", cwd=root, env=env).stdout)
    assert len(runs) == 2 and runs[1]["run_id"] == first["run_id"]
    rerun = {s["name"]: s["state"] for s in runs[0]["steps"]}
    # the retraining variables are part of every command step's cache key (any step may read them): all ran
    assert rerun == dict.fromkeys(["prepare", "train", "evaluate", "register", "promote"], "SUCCEEDED")
    train_log = (root / ".mlplat" / "dev" / "pipelines" / "runs" / runs[0]["run_id"] / "steps" / "train"
                 / "log.txt").read_text()
    assert "retraining with 80 labelled rows of the monitoring window" in train_log

    conn = sqlite3.connect(db)
    try:
        stages = dict(conn.execute("SELECT version, stage FROM model_stages WHERE model='credit-risk'").fetchall())
        staged = json.loads(conn.execute("SELECT evidence FROM audit_log WHERE action='retraining.staged'").fetchone()[0])
    finally:
        conn.close()
    assert stages[2] == "staging" and "production" not in stages.values()
    assert staged["pipeline"] == "credit-risk" and staged["pipeline_run"] == runs[0]["run_id"]
