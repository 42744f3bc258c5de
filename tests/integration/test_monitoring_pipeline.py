"""Monitoring on a real local stack: a registered model, captured traffic, labels, drift, alerts, cost.

One provisioned project per module (provisioning and training are the slow part);
the tests run in order and build on the traffic the previous ones captured.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, run_cli, write_project
from tests.integration.monitoring_support import FEATURES, insert_captures, load_model, shifted

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("monitoring-pipeline")]

STACK = (REPO / "stacks" / "Pulumi.dev.yaml").read_text().split("  mlplat:monitoring:")[0] + """\
  mlplat:monitoring:
    schedule: 5m
    window: {size: 300, minRows: 100}
    drift: {psi: 0.2, ksPValue: 0.01}
    alerts:
      - {name: drift, metric: drift.detected, threshold: 0.5, severity: warning}
      - {name: accuracy-low, metric: quality.accuracy, threshold: 0.6, op: lt, severity: critical}
    channels:
      - {kind: console}
      - {kind: log, path: logs/alerts.jsonl}
  mlplat:budget: {monthlyUsd: 200}
  mlplat:access: {mode: trusted-local}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = write_project(tmp_path_factory.mktemp("monitoring") / "project", {"dev": STACK})
    shutil.copytree(REPO / "examples" / "sklearn_tabular", root / "ex", ignore=shutil.ignore_patterns("data"))
    environ = {"MLPLAT_PROJECT_DIR": str(root), "MLPLAT_USER": "ds@example.com"}
    assert run_cli("up", "--stack", "dev", "--yes", cwd=root, env=environ).returncode == 0
    trained = subprocess.run([str(Path(os.sys.executable)), "ex/train.py", "--stack", "dev", "--register", "credit-risk"],
                             cwd=root, env={**os.environ, **environ}, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    old = {k: os.environ.get(k) for k in environ}
    os.environ.update(environ)
    try:
        model = load_model(root, "credit-risk", 1)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    holdout = pd.read_parquet(root / "ex" / "data" / "holdout.parquet")
    return {"root": root, "env": environ, "model": model, "holdout": holdout,
            "db": root / ".mlplat" / "dev" / "platform.db"}


def cli(env, *args):
    return run_cli(*args, cwd=env["root"], env=env["env"])


def capture(env, frame: pd.DataFrame, prefix: str, start: float) -> list[str]:
    X = frame[FEATURES]
    return insert_captures(env["db"], model="credit-risk", version=1, frame=X, predictions=env["model"].predict(X),
                           start_ts=start, prefix=prefix)


def pass_json(env) -> dict:
    result = cli(env, "monitor", "run", "--stack", "dev", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_undrifted_traffic_is_ok_and_quality_waits_for_labels(env):
    base = time.time() - 3600
    env["ids"] = capture(env, env["holdout"].sample(400, random_state=1), "a", base)
    report = pass_json(env)
    [window] = report["windows"]
    assert window["drift"]["verdict"] == "ok" and window["drift"]["rows"] == 300
    assert window["drift"]["reference_rows"] > 1000  # the reference sample written at registration
    assert window["quality"]["verdict"] == "insufficient data"
    assert report["events"] == []


def test_labels_join_with_unknown_duplicate_and_missing_ids(env):
    holdout = env["holdout"].sample(400, random_state=1)
    ids = env["ids"]
    frame = pd.DataFrame({"request_id": ids[:250] + ["ghost-1", "ghost-2", ids[0], None],
                          "label": list(holdout["label"][:250]) + [1, 0, int(holdout["label"].iloc[0]), 1]})
    frame.to_csv(env["root"] / "labels.csv", index=False)
    result = cli(env, "monitor", "labels", "credit-risk", "--file", "labels.csv", "--stack", "dev", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["stored"], doc["unknown"], doc["duplicates"], doc["missing_ids"]) == (250, 2, 1, 1)
    assert doc["unknown_ids"] == ["ghost-1", "ghost-2"]


def test_wrong_label_types_are_refused_and_nothing_is_written(env):
    pd.DataFrame({"request_id": env["ids"][300:303], "label": [0.25, 1, 0]}).to_csv(env["root"] / "bad.csv", index=False)
    before = sqlite3.connect(env["db"]).execute("SELECT COUNT(*) FROM monitor_labels").fetchone()[0]
    result = cli(env, "monitor", "labels", "--file", "bad.csv", "--stack", "dev")
    assert result.returncode == 1
    assert "bad.csv: row 1" in result.stderr and "not a class" in result.stderr and "hint" in result.stderr
    assert sqlite3.connect(env["db"]).execute("SELECT COUNT(*) FROM monitor_labels").fetchone()[0] == before


def test_quality_per_version_once_labels_arrive(env):
    report = pass_json(env)
    quality = report["windows"][0]["quality"]
    assert quality["verdict"] == "ok" and quality["rows"] == 250
    metrics = report["windows"][0]["metrics"]
    assert 0.7 < metrics["quality.accuracy"] <= 1.0
    assert {"quality.precision", "quality.recall", "quality.f1"} <= set(metrics)


def test_drift_fires_one_alert_while_it_lasts_then_resolves(env):
    drifted = env["holdout"].sample(300, random_state=2)
    for column in ("income", "debt_ratio", "age", "utilization", "accounts"):
        drifted = shifted(drifted, column, 2.0)
    capture(env, drifted, "b", time.time() - 1800)
    first = pass_json(env)
    window = first["windows"][0]
    assert window["drift"]["verdict"] == "drift"
    assert {"income", "debt_ratio", "age", "utilization", "accounts"} <= set(window["drift"]["drifted_features"])
    assert [(e["rule"], e["event"]) for e in first["events"]] == [("drift", "fired")]
    # the message names the version and the strongest drifting features with their statistics
    said = first["events"][0]["message"]
    assert re.match(r"credit-risk v1 in dev: [5-8] of 8 features drifted — (\w+ PSI \d+\.\d\d, KS p[<=][\d.e-]+; ){2}"
                    r"\w+ PSI \d+\.\d\d, KS p[<=][\d.e-]+", said), said

    second = pass_json(env)  # same breach, next pass: no new message
    assert second["windows"][0]["drift"]["verdict"] == "drift" and second["events"] == []
    firing = cli(env, "monitor", "status", "credit-risk", "--stack", "dev")
    assert " ".join(said.split()) in " ".join(firing.stdout.split()) and "firing alerts: 1" in firing.stdout

    capture(env, env["holdout"].sample(300, random_state=3), "c", time.time() - 900)
    third = pass_json(env)
    assert third["windows"][0]["drift"]["verdict"] == "ok"
    assert [(e["rule"], e["event"]) for e in third["events"]] == [("drift", "resolved")]

    lines = [json.loads(line) for line in (env["root"] / "logs" / "alerts.jsonl").read_text().splitlines()]
    assert [(line["rule"], line["event"]) for line in lines] == [("drift", "fired"), ("drift", "resolved")]
    status = json.loads(cli(env, "monitor", "status", "credit-risk", "--stack", "dev", "--json").stdout)
    assert status["alerts"]["firing"] == []
    assert [e["kind"] for e in status["alerts"]["recent"]] == ["resolved", "fired"]


def test_too_few_rows_is_insufficient_data(env):
    # a second version with only 20 captured requests: judged, never flagged
    frame = shifted(env["holdout"].sample(20, random_state=4), "income", 5.0)
    X = frame[FEATURES]
    conn = sqlite3.connect(env["db"])
    with conn:
        for i, record in enumerate(X.to_dict(orient="records")):
            conn.execute("INSERT INTO captures (request_id, ts, model, version, variant, environment, inputs, outputs, "
                         "latency_ms, status, shadow) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                         (f"tiny-{i}", time.time(), "tiny-model", 1, "primary", "dev", json.dumps(record), "[1]", 3.0,
                          200, 0))
    report = pass_json(env)
    tiny = next(w for w in report["windows"] if w["model"] == "tiny-model")
    assert tiny["drift"]["verdict"] == "no reference"  # never registered: nothing to compare with
    assert tiny["quality"]["verdict"] == "insufficient data"
    assert not any(e["subject"].startswith("tiny-model") for e in report["events"])


def test_cost_report_matches_captured_traffic(env):
    result = cli(env, "cost", "report", "--stack", "dev", "--by", "version", "--period", "7d", "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    conn = sqlite3.connect(env["db"])
    first, last, n, busy = conn.execute("SELECT MIN(ts), MAX(ts), COUNT(*), SUM(latency_ms) FROM captures "
                                        "WHERE model='credit-risk'").fetchone()
    group = next(g for g in doc["groups"] if g["key"] == "credit-risk v1")
    assert group["predictions"] == n
    assert group["busy_seconds"] == pytest.approx(busy / 1000)
    assert group["cost_usd"] == pytest.approx((last - first) / 3600 * 0.05)  # local.cpu at pricePerHour 0.05
    assert group["cost_per_prediction_usd"] == pytest.approx(group["cost_usd"] / n)
    by_team = json.loads(cli(env, "cost", "report", "--stack", "dev", "--by", "team", "--json").stdout)
    assert by_team["budget"]["ml-core"]["monthly_usd"] == 200
    csv = cli(env, "cost", "report", "--stack", "dev", "--by", "team", "--format", "csv").stdout.splitlines()
    assert csv[0].startswith("team,cost_usd,") and "budget_share" in csv[0] and csv[1].startswith("ml-core,")
    bad = cli(env, "cost", "report", "--stack", "dev", "--period", "fortnight")
    assert bad.returncode == 1 and "cannot read period 'fortnight'" in bad.stderr


def test_labels_over_http_and_sdk(env):
    import mlplat
    from mlplat.context import Context

    result = mlplat.log_labels({env["ids"][260]: 1, "ghost-9": 0}, stack="dev", ctx=Context(project_dir=env["root"]))
    assert (result["stored"] + result["updated"], result["unknown"], result["unknown_ids"]) == (1, 1, ["ghost-9"])
