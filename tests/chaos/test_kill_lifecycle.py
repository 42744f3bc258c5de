"""SIGKILL at seeded step boundaries of `models promote`, `deploy`, `rollback` and the gateway's canary
steps; each kill is followed by the rerun of the same command and the invariant checks.

Every trial starts from a clone of the shared trained project (scorer v1 in production and serving,
v2 in staging; for rollback and canary trials, v2 also deployed as a 50 % canary of v1).
"""
from __future__ import annotations

import random

import pytest

import mlplat.db as mlplat_db
from tests.chaos.support import (
    ENV,
    KILLED,
    MODEL,
    SEED,
    Load,
    Trial,
    census,
    check_invariants,
    clone,
    db,
    feature_rows,
    mlplat,
    no_orphans,
    pick,
    start_gateway,
    stop_process,
    wait_until,
)

pytestmark = [pytest.mark.chaos]

PROMOTE = ("models", "promote", MODEL, "2", "--to", "production")
DEPLOY = ("deploy", MODEL, "2", "--strategy", "canary")
ROLLBACK = ("rollback", MODEL, "--reason", "chaos trial")
# The canary controller's decisions inside `mlplat serve`: step 1 (50 % -> 100 %) and the promotion.
# ``anchored`` (between COMMIT and the audit head file's rewrite) exists where the ledger anchors its head.
CANARY_POINTS = [(kind, n) for kind in ("commit", "anchored", "committed") for n in (1, 2)
                 if kind != "anchored" or hasattr(getattr(mlplat_db, "Connection", None), "run_after_commit")]


def _points(censuses, command: str, base, args, tmp_path_factory):
    if command not in censuses:
        project = clone(base, tmp_path_factory.mktemp("census") / "project")
        censuses[command] = census(project, args, project.parent / "census.json")
        assert no_orphans(project) == []
    return censuses[command]


def _kill_rerun(command: str, args: tuple[str, ...], start, trial: int, tmp_path, censuses, tmp_path_factory,
                report, *, after_commit_rerun=None) -> Trial:
    points = _points(censuses, command, start, args, tmp_path_factory)
    kill, name = pick(points, random.Random(f"{SEED}:{command}:{trial}"))
    project = clone(start, tmp_path / "project")
    first = mlplat(project, *args, kill=kill)
    assert first.returncode == KILLED, (name, first.returncode, first.stdout[-1500:], first.stderr[-2000:])
    orphans = no_orphans(project)
    record = report.add(Trial(command, name, killed=True, orphans=len(orphans)))
    assert orphans == [], f"processes outlived the kill at {name}: {orphans}"
    check_invariants(project, production={MODEL: 1})
    rerun = mlplat(project, *args)
    record.rerun_exit = rerun.returncode
    if rerun.returncode != 0 and after_commit_rerun is not None:
        record.note = after_commit_rerun(name, rerun)
    else:
        assert rerun.returncode == 0, (name, rerun.stdout[-1500:], rerun.stderr[-2000:])
    assert no_orphans(project) == []
    check_invariants(project, production={MODEL: 1}, settled=True)
    record.recovered = True
    report.write()
    return record


@pytest.mark.parametrize("trial", range(6))
def test_promote_to_production_killed_then_rerun(trial, bases, tmp_path, censuses, tmp_path_factory, report):
    base, _ = bases
    _kill_rerun("models promote", PROMOTE, base, trial, tmp_path, censuses, tmp_path_factory, report)
    conn = db(tmp_path / "project")
    stages = dict(conn.execute("SELECT version, stage FROM model_stages WHERE model=? AND environment=?",
                               (MODEL, ENV)).fetchall())
    assert stages == {1: "archived", 2: "production"}
    assert conn.execute("SELECT count(*) FROM promotions WHERE version=2 AND target='production' AND "
                        "state='succeeded'").fetchone()[0] == 1


@pytest.mark.parametrize("trial", range(5))
def test_canary_deploy_killed_then_rerun(trial, bases, tmp_path, censuses, tmp_path_factory, report):
    base, _ = bases
    _kill_rerun("deploy", DEPLOY, base, trial, tmp_path, censuses, tmp_path_factory, report)
    conn = db(tmp_path / "project")
    endpoint = conn.execute("SELECT strategy, stable_version, routes FROM endpoints WHERE model=?", (MODEL,)).fetchone()
    assert (endpoint["strategy"], endpoint["stable_version"]) == ("canary", 1)
    assert conn.execute("SELECT count(*) FROM rollouts WHERE state='running'").fetchone()[0] == 1


def _rollback_already_done(name: str, rerun) -> str:
    # A rollback is one transaction; killed after its COMMIT (or while its audit head file is rewritten,
    # after the COMMIT too) it is done, and the rerun finds nothing left to roll back: Conflict, exit 5.
    after_commit = name.split()[0] in ("anchored", "committed") or name.startswith("replace audit.")
    assert after_commit, (name, rerun.stderr)
    assert rerun.returncode == 5 and "only ever served version 1" in rerun.stderr, rerun.stderr
    return "rerun: nothing left to roll back (exit 5)"


@pytest.mark.parametrize("trial", range(10))
def test_rollback_of_a_canary_killed_then_rerun(trial, bases, tmp_path, censuses, tmp_path_factory, report):
    _, canary = bases
    _kill_rerun("rollback", ROLLBACK, canary, trial, tmp_path, censuses, tmp_path_factory, report,
                after_commit_rerun=_rollback_already_done)
    conn = db(tmp_path / "project")
    endpoint = conn.execute("SELECT strategy, stable_version, routes, rollout_id FROM endpoints WHERE model=?",
                            (MODEL,)).fetchone()
    assert (endpoint["strategy"], endpoint["stable_version"], endpoint["rollout_id"]) == ("direct", 1, None)
    assert conn.execute("SELECT state FROM rollouts").fetchall()[-1][0] == "rolled_back"


@pytest.mark.parametrize("trial", range(5))
def test_gateway_killed_at_a_canary_step_then_restarted(trial, bases, tmp_path, report):
    """`mlplat serve` runs the canary controller: kill it as it takes a step, restart it, and the rollout
    continues from the database to its end."""
    _, canary = bases
    kind, n = random.Random(f"{SEED}:canary:{trial}").choice(CANARY_POINTS)
    name = f"{kind} canary judge/advance#{n}"
    project = clone(canary, tmp_path / "project")
    rows = feature_rows(project)
    rid = db(project).execute("SELECT id FROM rollouts WHERE state='running'").fetchone()[0]
    gateway, url = start_gateway(project, tmp_path / "port-1", kill=f"{kind}:~/advance:{n}")
    with Load(url, rows):
        wait_until(lambda: gateway.poll() is not None, 120, f"the gateway reaching {name}")
    gateway.communicate()
    assert gateway.returncode == KILLED, (name, gateway.returncode)
    orphans = no_orphans(project)
    record = report.add(Trial("canary step (serve)", name, killed=True, orphans=len(orphans)))
    assert orphans == []
    check_invariants(project, production={MODEL: 1})

    gateway, url = start_gateway(project, tmp_path / "port-2")
    try:
        state = lambda: db(project).execute("SELECT state FROM rollouts WHERE id=?", (rid,)).fetchone()[0]  # noqa: E731
        with Load(url, rows) as load:
            final = wait_until(lambda: state() if state() != "running" else None, 120, "the rollout ending")
            wait_until(lambda: load.results and load.results[-1][1] == ("2" if final == "succeeded" else "1"), 30,
                       "the gateway serving the outcome")
    finally:
        stop_process(gateway)
    record.rerun_exit = 0
    record.note = f"rollout {final}"
    assert final == "succeeded", final
    assert load.failed() == [], load.failed()[:5]
    assert no_orphans(project) == []
    check_invariants(project, production={MODEL: 1}, settled=True)
    endpoint = db(project).execute("SELECT strategy, stable_version FROM endpoints WHERE model=?", (MODEL,)).fetchone()
    assert tuple(endpoint) == ("direct", 2)
    record.recovered = True
    report.write()
