"""Closed-loop load through the gateway (`mlplat serve`) across canary steps and a rollback: no request
fails. Eight concurrent writer processes (tracked runs, model registrations): no record is lost and
version numbers are unique."""
from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections import Counter

import pytest

from tests.chaos.support import (
    ENV,
    MODEL,
    Load,
    check_invariants,
    clone,
    db,
    env_for,
    feature_rows,
    mlplat,
    no_orphans,
    ok,
    start_gateway,
    stop_process,
    wait_until,
)

pytestmark = [pytest.mark.chaos]
WRITERS = 8


def test_no_failed_request_across_canary_steps_and_rollback(bases, tmp_path, report):
    base, _ = bases
    project = clone(base, tmp_path / "project")
    gateway, url = start_gateway(project, tmp_path / "port")
    try:
        with Load(url, feature_rows(project), clients=2) as load:
            wait_until(lambda: len(load.results) >= 20, 60, "traffic on v1")
            ok(mlplat(project, "deploy", MODEL, "2", "--strategy", "canary", "--steps", "10,50,100"), "canary deploy")
            rid = db(project).execute("SELECT max(id) FROM rollouts").fetchone()[0]  # it may have ended already
            state = lambda: db(project).execute("SELECT state FROM rollouts WHERE id=?", (rid,)).fetchone()[0]  # noqa: E731
            final = wait_until(lambda: state() if state() != "running" else None, 180, "the canary ending")
            assert final == "succeeded", final
            wait_until(lambda: load.results[-1][1] == "2", 30, "v2 serving all traffic")
            during_canary = len(load.results)
            ok(mlplat(project, "rollback", MODEL, "--reason", "chaos: rollback under load"), "rollback")
            wait_until(lambda: load.results[-1][1] == "1", 30, "v1 serving again")
            mark = len(load.results)
            wait_until(lambda: len(load.results) >= mark + 50, 60, "traffic after the rollback")
    finally:
        stop_process(gateway)
    served = Counter(version for status, version in load.results)
    steps = [r[0] for r in db(project).execute("SELECT event FROM rollout_events WHERE rollout_id=? ORDER BY id", (rid,))]
    report.extra["load through the gateway"] = {
        "requests": len(load.results), "failed": len(load.failed()), "by_version": dict(served),
        "during_canary": during_canary, "canary_events": steps}
    report.write()
    assert load.failed() == [], (load.failed()[:5], load.errors[:5])
    assert steps == ["deployed", "step", "step", "promoted", "rolled_back"] or steps[:4] == [
        "deployed", "step", "step", "promoted"], steps
    assert {"1", "2"} <= set(served)
    assert set(v for _, v in load.results[mark:]) == {"1"}  # after the rollback, v1 only
    assert no_orphans(project) == []
    check_invariants(project, production={MODEL: 1}, settled=True)


def test_eight_concurrent_writers_lose_nothing(bases, tmp_path, report):
    base, _ = bases
    project = clone(base, tmp_path / "project")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.chaos.writer", str(i), str(go)], cwd=project,
                              env=env_for(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(WRITERS)]
    go.write_text("go")
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    versions = sorted(int(re.search(r"VERSION (\d+)", out).group(1)) for out, _ in outputs)
    runs = {r for out, _ in outputs for r in re.findall(r"RUN (\w+)", out)}
    assert versions == list(range(1, WRITERS + 1)), versions  # unique, no gaps
    assert len(runs) == 2 * WRITERS

    conn = db(project)
    rows = conn.execute("SELECT version, run_id FROM model_versions WHERE model='concurrent' ORDER BY version").fetchall()
    assert [r["version"] for r in rows] == versions and {r["run_id"] for r in rows} <= runs
    audited = conn.execute("SELECT count(*) FROM audit_log WHERE model='concurrent' AND action='model.registered'"
                           ).fetchone()[0]
    assert audited == WRITERS
    tracking = sqlite3.connect(project / ".mlplat" / ENV / "mlflow.db")
    stored = {r[0] for r in tracking.execute(
        "SELECT r.run_uuid FROM runs r JOIN experiments e ON e.experiment_id=r.experiment_id WHERE e.name='writers' "
        "AND r.status='FINISHED'")}
    metrics = tracking.execute("SELECT count(*) FROM metrics m JOIN runs r ON r.run_uuid=m.run_uuid JOIN experiments e "
                               "ON e.experiment_id=r.experiment_id WHERE e.name='writers' AND m.key='writer'"
                               ).fetchone()[0]
    assert stored == runs and metrics == 2 * WRITERS
    report.extra["concurrent writers"] = {"writers": WRITERS, "runs": len(stored), "metrics": metrics,
                                          "versions": versions, "audited": audited, "lost": 2 * WRITERS - len(stored)}
    report.write()
    check_invariants(project, production={MODEL: 1}, settled=True)
