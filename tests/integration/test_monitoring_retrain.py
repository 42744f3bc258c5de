"""Debounced retraining end to end: drift → k of n windows → tracked run → new version in staging, not production."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import REPO, run_cli, write_project
from tests.integration.monitoring_support import FEATURES, insert_captures, load_model, shifted

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("monitoring-retrain")]

STACK = (REPO / "stacks" / "Pulumi.dev.yaml").read_text().split("  mlplat:monitoring:")[0] + """\
  mlplat:monitoring:
    window: {size: 300, minRows: 100}
    retrain: {command: "python retrain.py", violationWindows: 2, evaluationWindows: 3}
  mlplat:access: {mode: trusted-local}
"""


def test_k_of_n_breaching_windows_retrain_once_into_staging(tmp_path):
    root = write_project(tmp_path / "project", {"dev": STACK})
    shutil.copytree(REPO / "examples" / "sklearn_tabular", root / "ex", ignore=shutil.ignore_patterns("data"))
    shutil.copy(REPO / "tests" / "integration" / "monitoring_retrain_script.py", root / "retrain.py")
    env = {"MLPLAT_PROJECT_DIR": str(root), "MLPLAT_USER": "ds@example.com"}
    full_env = {**os.environ, **env}
    assert run_cli("up", "--stack", "dev", "--yes", cwd=root, env=env).returncode == 0
    trained = subprocess.run([sys.executable, "ex/train.py", "--stack", "dev", "--register", "scorer"], cwd=root,
                             env=full_env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    os.environ.update(env)
    try:
        model = load_model(root, "scorer", 1)
    finally:
        for key in env:
            os.environ.pop(key, None)
    db = root / ".mlplat" / "dev" / "platform.db"
    holdout = pd.read_parquet(root / "ex" / "data" / "holdout.parquet")

    def traffic(frame, prefix, start):
        X = frame[FEATURES]
        return insert_captures(db, model="scorer", version=1, frame=X, predictions=model.predict(X), start_ts=start,
                               prefix=prefix)

    def monitor_pass():
        result = run_cli("monitor", "run", "--stack", "dev", "--json", cwd=root, env=env, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout)

    now = time.time()
    traffic(holdout.sample(300, random_state=1), "calm", now - 3000)
    first = monitor_pass()  # window 1: no drift
    assert first["windows"][0]["drift"]["verdict"] == "ok" and first["retraining"] == []

    drifted = holdout.sample(300, random_state=2)
    for column in ("income", "debt_ratio", "age", "utilization", "accounts"):
        drifted = shifted(drifted, column, 2.0)
    ids = traffic(drifted, "shifted", now - 2000)
    labels = pd.DataFrame({"request_id": ids, "label": drifted["label"].tolist()})
    labels.to_csv(root / "labels.csv", index=False)
    assert run_cli("monitor", "labels", "--file", "labels.csv", "--stack", "dev", cwd=root, env=env).returncode == 0

    second = monitor_pass()  # window 2: drift, 1 of the last 3 breach (k=2): not yet
    assert second["windows"][0]["drift"]["verdict"] == "drift" and second["retraining"] == []

    third = monitor_pass()  # window 3: drift again, 2 of 3: retrain
    [outcome] = third["retraining"]
    assert outcome["status"] == "staged", outcome.get("error")
    assert outcome["new_version"] == 2 and outcome["run_id"]
    window = pd.read_parquet(outcome["data_path"])
    assert len(window) == 300 and window["__label__"].notna().sum() == 300

    fourth = monitor_pass()  # the breach goes on, but windows before the trigger no longer count
    assert fourth["retraining"] == []

    conn = sqlite3.connect(db)
    stages = dict(conn.execute("SELECT version, stage FROM model_stages WHERE model='scorer'").fetchall())
    assert stages.get(2) == "staging"
    assert "production" not in stages.values()
    run_id, = conn.execute("SELECT run_id FROM model_versions WHERE model='scorer' AND version=2").fetchone()
    assert run_id == outcome["run_id"]
    actions = [r[0] for r in conn.execute("SELECT action FROM audit_log WHERE model='scorer' ORDER BY seq")]
    assert "retraining.triggered" in actions and "retraining.staged" in actions
    assert actions.index("retraining.triggered") < actions.index("retraining.staged")
    triggered = json.loads(conn.execute("SELECT evidence FROM audit_log WHERE action='retraining.triggered'").fetchone()[0])
    assert triggered["k"] == 2 and triggered["n"] == 3 and len(triggered["breaching"]) == 2

    runs = run_cli("runs", "list", "--stack", "dev", "--json", cwd=root, env=env)
    tracked = {r["run_id"]: r for r in json.loads(runs.stdout)}
    assert tracked[run_id]["tags"]["mlplat.tracked"] == "true"
    assert tracked[run_id]["tags"]["mlplat.retrain.trigger"] == outcome["id"]
    assert tracked[run_id]["status"] == "FINISHED"
    assert audit_ok(root, env)


def audit_ok(root, env) -> bool:
    result = run_cli("audit", "verify", "--stack", "dev", cwd=root, env=env)
    return result.returncode == 0
