"""SIGKILL at seeded step boundaries of `mlplat up`, `features materialize` and `monitor run`; each kill
is followed by the rerun of the same command and the invariant checks."""
from __future__ import annotations

import random

import pytest

from tests.chaos.support import (
    ENV,
    KILLED,
    MODEL,
    SEED,
    Trial,
    census,
    chaos_stack,
    check_invariants,
    clone,
    db,
    mlplat,
    no_orphans,
    ok,
    pick,
)
from tests.conftest import write_project

pytestmark = [pytest.mark.chaos]

UP = ("up", "--stack", "dev", "--yes")
MATERIALIZE = ("features", "materialize", "--start", "2024-03-01", "--end", "2024-03-31")
MONITOR = ("monitor", "run", "--stack", "dev", "--no-retrain", "--json")


def _trial(command: str, args, start_project, trial: int, censuses, report, **checks) -> Trial:
    """Kill ``args`` in a fresh ``start_project()`` at a seeded point, rerun it, check the invariants."""
    if command not in censuses:
        project = start_project("census")
        censuses[command] = census(project, args, project.parent / "census.json")
    kill, name = pick(censuses[command], random.Random(f"{SEED}:{command}:{trial}"))
    project = start_project("trial")
    first = mlplat(project, *args, kill=kill)
    assert first.returncode == KILLED, (name, first.returncode, first.stdout[-1500:], first.stderr[-2000:])
    orphans = no_orphans(project)
    record = report.add(Trial(command, name, killed=True, orphans=len(orphans)))
    assert orphans == []
    check_invariants(project, **checks)
    rerun = mlplat(project, *args)
    record.rerun_exit = rerun.returncode
    assert rerun.returncode == 0, (name, rerun.stdout[-1500:], rerun.stderr[-2000:])
    check_invariants(project, settled=True, **checks)
    record.recovered = True
    report.write()
    return record


@pytest.mark.parametrize("trial", range(5))
def test_up_killed_then_rerun(trial, tmp_path, censuses, report):
    def fresh(kind: str):
        return write_project(tmp_path / kind / "project", {"dev": chaos_stack()})

    _trial("up", UP, fresh, trial, censuses, report)
    project = tmp_path / "trial" / "project"
    again = ok(mlplat(project, *UP))
    assert "No changes" in again.stdout or "unchanged" in again.stdout, again.stdout
    assert (project / ".mlplat" / ENV / "keys" / "platform.key").stat().st_mode & 0o077 == 0


def test_up_killed_before_its_first_audit_entry_is_anchored(tmp_path):
    """The first keyed entry is anchored before it commits, so a kill between its COMMIT and the
    head file's update leaves the file one entry behind (accepted), never missing."""
    project = write_project(tmp_path / "project", {"dev": chaos_stack()})
    assert mlplat(project, *UP, kill="anchored:governance.record_applied:1").returncode == KILLED
    ok(mlplat(project, *UP))
    check_invariants(project, settled=True)


@pytest.mark.parametrize("trial", range(10))
def test_materialize_killed_then_rerun(trial, bases, tmp_path, censuses, report):
    base, _ = bases
    _trial("features materialize", MATERIALIZE, lambda kind: clone(base, tmp_path / kind / "project"), trial,
           censuses, report, production={MODEL: 1})
    project = tmp_path / "trial" / "project"
    online = db(project, "online.db")
    tables = [r[0] for r in online.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'fv_%'")]
    counts = {t: online.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    # every entity once, whatever the killed run had written before
    assert counts == {"fv_customer_profile_v1": 300, "fv_driver_stats_v1": 200, "fv_driver_stats_v2": 200}, counts
    runs = db(project).execute("SELECT name, version, state FROM feature_materializations ORDER BY id").fetchall()
    latest = {(r["name"], r["version"]): r["state"] for r in runs}
    assert set(latest.values()) == {"succeeded"}, [dict(r) for r in runs]
    stale = [f"{r['name']}@{r['version']}" for r in runs if r["state"] == "running"]
    if stale:  # the killed run's own record: it never learns it died
        report.trials[-1].note = "left 'running' materialization record(s): " + ", ".join(stale)
        report.write()


@pytest.mark.parametrize("trial", range(9))
def test_monitor_run_killed_then_rerun(trial, bases, tmp_path, censuses, report):
    base, _ = bases
    _trial("monitor run", MONITOR, lambda kind: clone(base, tmp_path / kind / "project"), trial, censuses, report,
           production={MODEL: 1})
    project = tmp_path / "trial" / "project"
    conn = db(project)
    passes = conn.execute("SELECT pass_id, count(*) AS n FROM monitor_windows GROUP BY pass_id").fetchall()
    # a pass's windows are written in one transaction: all of a pass or none of it
    assert passes and {p["n"] for p in passes} == {2}, [dict(p) for p in passes]
