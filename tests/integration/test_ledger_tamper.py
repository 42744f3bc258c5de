"""The ledger notices tampering: governance comes from the last `mlplat up`, and decision rows
written into platform.db by hand (a stage, an approval, an endpoint's routes) are refused where
they are used and reported by `mlplat audit verify`.

One project per module: ``scorer`` (critical, one approval from risk-office or ds) version 1 in
staging, version 2 registered. Each test restores the stack file, the database and the audit head
file it changed.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from mlplat.errors import IntegrityError
from tests.conftest import run_cli, write_project
from tests.integration.support_registry import APPROVER, AUTHOR, cli_in, stack_text, train
from tests.integration.support_serving import GatewayHarness, row, save_sklearn
from tests.timing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("ledger-tamper")]
STATE = Path(".mlplat") / "dev"


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ledger") / "project"
    write_project(root, {"dev": stack_text([APPROVER, AUTHOR])})
    up = run_cli("up", "--stack", "dev", "--yes", cwd=root, env={"MLPLAT_PROJECT_DIR": str(root)})
    assert up.returncode == 0, up.stderr
    assert train(root) == 1 and train(root, seed=2) == 2
    promoted = cli_in(root, "models", "promote", "scorer", "1", "--to", "staging")
    assert promoted.returncode == 0, promoted.stderr
    return root


@contextmanager
def restored(project: Path):
    """Put the stack file, the platform database and the signed head file back as they were."""
    state = project / STATE
    stack = project / "stacks" / "Pulumi.dev.yaml"
    saved = project / "saved"
    saved.mkdir(exist_ok=True)
    text = stack.read_text()
    sqlite3.connect(state / "platform.db").backup(sqlite3.connect(saved / "platform.db"))
    shutil.copy(state / "audit-head.json", saved / "audit-head.json")
    try:
        yield
    finally:
        stack.write_text(text)
        sqlite3.connect(saved / "platform.db").backup(sqlite3.connect(state / "platform.db"))
        shutil.copy(saved / "audit-head.json", state / "audit-head.json")
    assert cli_in(project, "audit", "verify").returncode == 0


def raw(project: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(project / STATE / "platform.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def edit_stack(project: Path, old: str, new: str) -> None:
    path = project / "stacks" / "Pulumi.dev.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


# --- governance in force is the applied one ---------------------------------------------------


def test_lowering_the_risk_tier_in_the_file_without_up_changes_nothing(staged):
    with restored(staged):
        edit_stack(staged, "scorer: {riskTier: critical}", "scorer: {riskTier: low}")
        result = cli_in(staged, "models", "promote", "scorer", "1", "--to", "production")
        assert result.returncode == 6, result.stdout + result.stderr
        assert "needs 1 approval(s)" in result.stderr
        assert "models.scorer" in result.stderr and "has not been applied" in result.stderr
        assert "mlplat up --stack dev" in result.stderr
        shown = json.loads(cli_in(staged, "models", "show", "scorer", "1", "--json").stdout)
        assert shown["risk_tier"] == "critical" and shown["stage"] == "staging"
        assert raw(staged).execute("SELECT count(*) FROM model_stages WHERE stage='production'").fetchone()[0] == 0


def test_an_approver_removed_by_up_no_longer_counts(staged):
    with restored(staged):
        approved = cli_in(staged, "models", "approve", "scorer", "1", "--reason", "checked", user=APPROVER)
        assert approved.returncode == 0, approved.stderr
        edit_stack(staged, f"approvers: [{APPROVER}, {AUTHOR}]", f"approvers: [{AUTHOR}, other@example.com]")
        # before `up`, the removal is not in force: the approval still counts
        shown = json.loads(cli_in(staged, "models", "show", "scorer", "1", "--json").stdout)
        assert shown["approvals"]["state"] == "approved"
        listed = json.loads(cli_in(staged, "approvals", "list", "--json").stdout)
        assert listed["approvers"] == [APPROVER, AUTHOR]  # the applied list, not the edited file's
        applied = cli_in(staged, "up", "--stack", "dev", "--yes")
        assert applied.returncode == 0 and "Governance applied: approvers" in applied.stdout, applied.stdout
        result = cli_in(staged, "models", "promote", "scorer", "1", "--to", "production")
        assert result.returncode == 6 and "it has 0" in result.stderr, result.stderr
        decision = json.loads(cli_in(staged, "models", "show", "scorer", "1", "--json").stdout)["approvals"]
        assert decision["state"] == "pending" and decision["decisions"][0]["void"] == "no longer an approver"
        entries = json.loads(cli_in(staged, "audit", "log", "--json").stdout)
        assert [e["evidence"]["changed"] for e in entries if e["action"] == "governance.applied"][-1] == ["approvers"]


# --- decision rows written by hand -------------------------------------------------------------


def test_a_hand_set_stage_and_approval_are_refused_and_reported(staged):
    with restored(staged):
        conn = raw(staged)
        digest = conn.execute("SELECT artifact_digest FROM model_versions WHERE model='scorer' AND version=2").fetchone()[0]
        conn.execute("UPDATE model_stages SET stage='staging' WHERE model='scorer' AND version=2")
        conn.execute("INSERT INTO approvals (model, version, environment, approver, decision, reason, artifact_digest, "
                     "gate_digest, created_at) VALUES ('scorer', 2, 'dev', ?, 'approved', 'ok', ?, 'g', ?)",
                     (APPROVER, digest, time.time()))
        promoted = cli_in(staged, "models", "promote", "scorer", "2", "--to", "production")
        assert promoted.returncode == 8, promoted.stderr
        assert "model_stages row (scorer, version 2, 'dev') says 'staging'" in promoted.stderr
        deployed = cli_in(staged, "deploy", "scorer", "2", "--env", "dev")
        assert deployed.returncode == 8 and "stage set outside mlplat" in deployed.stderr, deployed.stderr
        verified = cli_in(staged, "audit", "verify")
        assert verified.returncode == 8
        assert "model_stages row (scorer, version 2, 'dev')" in verified.stderr
        assert f"approvals row #1 ({APPROVER} approved scorer version 2 in 'dev') has no audit entry" in verified.stderr
        assert conn.execute("SELECT count(*) FROM model_stages WHERE stage='production'").fetchone()[0] == 0


def test_a_hand_inserted_approval_for_a_staged_version_blocks_its_promotion(staged):
    from mlplat.services import approvals
    from tests.integration.support_registry import spec_ctx

    with restored(staged):
        conn = raw(staged)
        gate = conn.execute("SELECT digest, artifact_digest FROM gate_reports WHERE model='scorer' AND version=1 "
                            "AND passed=1 ORDER BY created_at DESC").fetchone()
        conn.execute("INSERT INTO approvals (model, version, environment, approver, decision, reason, artifact_digest, "
                     "gate_digest, created_at) VALUES ('scorer', 1, 'dev', ?, 'approved', 'looks fine', ?, ?, ?)",
                     (APPROVER, gate["artifact_digest"], gate["digest"], time.time()))
        spec, _ = spec_ctx(staged)
        st = approvals.status(conn, spec, "scorer", 1, "dev")
        assert st["approvals"] == 0 and st["decisions"][0]["void"] == "not in the audit log"
        promoted = cli_in(staged, "models", "promote", "scorer", "1", "--to", "production")
        assert promoted.returncode == 8 and "has no audit entry" in promoted.stderr, promoted.stderr
        assert conn.execute("SELECT count(*) FROM model_stages WHERE stage='production'").fetchone()[0] == 0


def test_governance_entries_forged_without_the_key_are_refused(staged):
    with restored(staged):
        conn = raw(staged)
        last = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        lax = {"riskTier": "low", "approvers": [AUTHOR], "requiredApprovals": 1, "models": {}}
        conn.execute("INSERT INTO audit_log (seq, ts, actor, action, environment, reason, evidence, digest, prev_hash, "
                     "hash, scheme, key_id) VALUES (?, ?, 'mallory', 'governance.applied', 'dev', 'x', ?, 'd', ?, ?, "
                     "'hmac-sha256', 'unknown')", (last["seq"] + 1, time.time(), json.dumps({"governance": lax}),
                                                   last["hash"], "f" * 64))
        result = cli_in(staged, "models", "promote", "scorer", "1", "--to", "production")
        assert result.returncode == 8, result.stderr
        assert "entry #8 (governance.applied by mallory): signed with key id unknown" in result.stderr
        shown = cli_in(staged, "models", "show", "scorer", "1")
        assert shown.returncode == 8 and "applied governance settings cannot be trusted" in shown.stderr


# --- routing edited by hand: the gateway and deploy refuse it -------------------------------------


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("routing-models")
    return {1: save_sklearn(tmp / "v1", seed=0), 2: save_sklearn(tmp / "v2", seed=1)}


def test_hand_edited_routes_are_not_served_and_are_reported(tmp_path, two_models):
    from mlplat.services import ledger

    harness = GatewayHarness(tmp_path, dict(two_models))
    fresh = None
    try:
        harness.deploy(1)
        harness.start(controller=False)
        url = "/endpoints/scorer/invocations"
        with httpx.Client(base_url=harness.url, timeout=10) as client:
            assert client.post(url, json=row()).headers["x-mlplat-version"] == "1"
            conn = raw_db(tmp_path)
            conn.execute("UPDATE endpoints SET routes=?, stable_version=2 WHERE model='scorer'",
                         (json.dumps([{"variant": "primary", "version": 2, "weight": 100}]),))
            conn.execute("UPDATE serving_revision SET revision = revision + 1")
            revision = conn.execute("SELECT revision FROM serving_revision").fetchone()[0]
            wait_until(lambda: harness.gateway.revision == revision, message="the gateway did not reload")
            assert "no audited deployment" not in harness.gateway.refused["scorer"]
            assert "last audited deployment" in harness.gateway.refused["scorer"]
            served = client.post(url, json=row())
            assert served.status_code == 200 and served.headers["x-mlplat-version"] == "1"  # the last verified routing
        problems = ledger.verify(conn).problems
        assert any("endpoints row (scorer, 'production') routes v2:100%" in p for p in problems), problems
        with pytest.raises(IntegrityError, match="routing set outside mlplat"):
            harness.deploy(2)
        with pytest.raises(IntegrityError, match="routing set outside mlplat"):
            harness.rollback(to=1)
        # a gateway that never served a verified routing for it does not serve it at all
        fresh = GatewayHarness(tmp_path, dict(two_models)).start(controller=False)
        refused = httpx.post(f"{fresh.url}{url}", json=row(), timeout=10)
        assert refused.status_code == 404 and "scorer" in fresh.gateway.refused
    finally:
        harness.stop()
        if fresh is not None:
            fresh.stop()


def test_audited_routing_changes_are_served(tmp_path, two_models):
    """The refusal above is about the hand edit: a deployment through the platform is picked up."""
    harness = GatewayHarness(tmp_path, dict(two_models))
    try:
        harness.deploy(1)
        harness.start(controller=False)
        harness.deploy(2)
        wait_until(lambda: harness.endpoint()["stable_version"] == 2, message="the new routing was not loaded")
        response = httpx.post(f"{harness.url}/endpoints/scorer/invocations", json=row(), timeout=10)
        assert response.headers["x-mlplat-version"] == "2" and harness.gateway.refused == {}
    finally:
        harness.stop()


def raw_db(folder: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(folder / "platform.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn
