"""The delivery pipeline as a user drives it: CLI subprocesses, kills at every step, concurrent promotions.

Each test starts from its own freshly registered project and brings it, through the CLI, to the
state it needs, so any one of them runs alone, in any order (``-k``, ``--lf``, random order)."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.conftest import BIN
from tests.integration.support_registry import APPROVER, AUTHOR, cli_in, db, make_registered_project, train
from tests.timing import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("registry-promote-e2e")]


def _stage(project, version=1):
    row = db(project).execute("SELECT stage FROM model_stages WHERE model='scorer' AND version=?", (version,)).fetchone()
    return row[0] if row else "dev"


def _servers_of(project) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if b"mlplat.serving.model_server" in cmd and str(project).encode() in cmd:
                out.append(int(pid))
    return out


def _check_invariants(project):
    conn = db(project)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM model_stages WHERE model='scorer' AND stage='production'").fetchone()[0] <= 1
    assert conn.execute("SELECT count(*) FROM promotions WHERE state='running'").fetchone()[0] <= 1
    assert cli_in(project, "audit", "verify").returncode == 0


@pytest.fixture
def project(tmp_path):
    """A provisioned project with ``scorer`` version 1 registered (critical: four eyes for production)."""
    return make_registered_project(tmp_path / "project")


def staged(project, version: int) -> None:
    done = cli_in(project, "models", "promote", "scorer", str(version), "--to", "staging")
    assert done.returncode == 0, done.stderr
    assert _stage(project, version) == "staging"


def released(project, version: int) -> None:
    """staging, then approval by someone else, then production."""
    staged(project, version)
    approved = cli_in(project, "models", "approve", "scorer", str(version), "--reason", "validated", user=APPROVER)
    assert approved.returncode == 0, approved.stderr
    done = cli_in(project, "models", "promote", "scorer", str(version), "--to", "production")
    assert done.returncode == 0, done.stderr
    assert _stage(project, version) == "production"


def test_kill_at_every_step_then_rerun_resumes(project):
    """Each run is SIGKILLed one step further; each rerun resumes; nothing is ever half-promoted."""
    for fault in ("gate:end", "package:end", "endpoint:end", "integration:start", "stage:commit"):
        result = cli_in(project, "models", "promote", "scorer", "1", "--to", "staging",
                        env={"MLPLAT_FAULT_KILL": fault})
        assert result.returncode == -signal.SIGKILL, (fault, result.stdout, result.stderr)
        assert _stage(project) == "dev", fault  # the stage changes only in the last step's transaction
        # the parent-death signal reaches the orphaned server: it exits on its own
        wait_until(lambda: _servers_of(project) == [], timeout=30,
                   message=lambda fault=fault: f"staging server {_servers_of(project)} left running after kill at {fault}")
        _check_invariants(project)
        state = db(project).execute("SELECT state, steps FROM promotions ORDER BY id DESC").fetchone()
        assert state[0] == "running", fault
    final = cli_in(project, "models", "promote", "scorer", "1", "--to", "staging")
    assert final.returncode == 0, final.stderr
    assert "resuming promotion" in final.stdout and "done before the interruption" in final.stdout
    assert _stage(project) == "staging"
    conn = db(project)
    assert conn.execute("SELECT count(*) FROM promotions").fetchone()[0] == 1  # one promotion, resumed 5 times
    actions = [r[0] for r in conn.execute("SELECT action FROM audit_log WHERE model='scorer' ORDER BY seq")]
    assert actions.count("stage.changed") == 1 and actions.count("promotion.succeeded") == 1
    _check_invariants(project)
    again = cli_in(project, "models", "promote", "scorer", "1", "--to", "staging")
    assert again.returncode == 0 and "already" in again.stdout


def test_full_promote_path_through_the_cli(project):
    staged(project, 1)
    listing = cli_in(project, "models", "list", "--json")
    assert listing.returncode == 0 and '"stage": "staging"' in listing.stdout
    blocked = cli_in(project, "models", "promote", "scorer", "1", "--to", "production")
    assert blocked.returncode == 6 and "needs 1 approval" in blocked.stderr
    pending = cli_in(project, "approvals", "list", "--json")
    assert '"state": "pending"' in pending.stdout
    approved = cli_in(project, "models", "approve", "scorer", "1", "--reason", "validated on holdout", user=APPROVER)
    assert approved.returncode == 0, approved.stderr
    done = cli_in(project, "models", "promote", "scorer", "1", "--to", "production")
    assert done.returncode == 0, done.stderr
    assert "approved by risk-office@example.com" in done.stdout and "now production" in done.stdout
    assert _stage(project) == "production"
    show = cli_in(project, "models", "show", "scorer", "1")
    assert show.returncode == 0 and "production" in show.stdout and "approved by risk-office" in show.stdout
    log = cli_in(project, "audit", "log", "--model", "scorer", "--json")
    assert '"approval.approved"' in log.stdout and '"stage.changed"' in log.stdout
    _check_invariants(project)


def test_two_concurrent_promotions_one_wins(project):
    assert train(project, seed=2) == 2
    env = {**os.environ, "MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": AUTHOR}
    first = subprocess.Popen([str(BIN / "mlplat"), "models", "promote", "scorer", "2", "--to", "staging"], cwd=project,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    running = "SELECT 1 FROM promotions WHERE version=2 AND state='running'"
    wait_until(lambda: db(project).execute(running).fetchone(), timeout=60, message="the first promotion never started")
    second = cli_in(project, "models", "promote", "scorer", "2", "--to", "staging")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 5 and "another mlplat operation" in second.stderr, second.stderr
    assert _stage(project, 2) == "staging"
    _check_invariants(project)


def test_second_production_version_archives_the_first(project):
    released(project, 1)
    assert train(project, seed=2) == 2
    staged(project, 2)
    approved = cli_in(project, "models", "approve", "scorer", "2", "--reason", "better", user=APPROVER)
    assert approved.returncode == 0, approved.stderr
    done = cli_in(project, "models", "promote", "scorer", "2", "--to", "production")
    assert done.returncode == 0, done.stderr
    assert (_stage(project, 1), _stage(project, 2)) == ("archived", "production")
    _check_invariants(project)
