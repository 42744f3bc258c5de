"""Invariants the platform database enforces by itself, tried with raw SQL past every service.

Each case writes what the services never would (a second production version, a stage for an
unknown version, an unknown state...) through a connection opened like the platform opens it
(``Database.connect``: foreign keys on) and expects SQLite to refuse it. A last test reads the
schema: every unique index, trigger and CHECK constraint the migrations create has a case here,
so a new invariant cannot ship untested.
"""
from __future__ import annotations

import re
import sqlite3

import pytest

from mlplat.db import Database

pytestmark = pytest.mark.integration

NOW = 1_700_000_000.0
VERSION = ("INSERT INTO model_versions (model, version, run_id, author, framework, source, manifest, artifact_digest, "
           "seal, lineage, created_at) VALUES ('m', {v}, 'run', 'a@example.com', 'sklearn', '-', '{{}}', 'd', 's', "
           "'{{}}', 0)")
STAGE = ("INSERT INTO model_stages (model, version, environment, stage, updated_at, updated_by) "
         "VALUES ('m', {v}, 'dev', '{stage}', 0, 'a@example.com')")
APPROVAL = ("INSERT INTO approvals (model, version, environment, approver, decision, reason, artifact_digest, "
            "gate_digest, created_at) VALUES ('m', 1, 'dev', 'r@example.com', '{decision}', '{reason}', 'd', 'g', 0)")
PROMOTION = ("INSERT INTO promotions (model, version, environment, target, state, requested_by, created_at, updated_at) "
             "VALUES ('m', 1, 'dev', '{target}', '{state}', 'a@example.com', 0, 0)")
ENDPOINT = ("INSERT INTO endpoints (model, environment, strategy, routes, stable_version, created_at, updated_at, "
            "updated_by) VALUES ('m', 'dev', '{strategy}', '[]', 1, 0, 0, 'a@example.com')")
ROLLOUT = ("INSERT INTO rollouts (model, environment, stable_version, candidate_version, policy, step_started_at, "
           "state, created_at, created_by) VALUES ('m', 'dev', 1, 2, '{{}}', 0, '{state}', 0, 'a@example.com')")
CAPTURE = ("INSERT INTO captures (request_id, ts, model, version, variant, environment, inputs, latency_ms, status, "
           "shadow) VALUES ('{rid}', 0, 'm', 1, 'primary', 'dev', '{{}}', 1, 200, {shadow})")
VIEW = ("INSERT INTO feature_views (name, version, definition, digest, created_at, updated_at, applied_by) "
        "VALUES ('v', {v}, '{{}}', 'd', 0, 0, 'a@example.com')")
HISTORY = ("INSERT INTO feature_view_history (name, version, revision, action, changes, definition, digest, "
           "applied_at, applied_by) VALUES ('v', 1, 1, '{action}', '[]', '{{}}', 'd', 0, 'a@example.com')")
MATERIALIZATION = ("INSERT INTO feature_materializations (name, version, start_us, end_us, state, started_at, "
                   "started_by) VALUES ('v', 1, 0, 1, '{state}', 0, 'a@example.com')")
USAGE = "INSERT INTO feature_usage (run_id, name, version, digest, used_at) VALUES ('run', 'v', 1, 'd', 0)"
WINDOW = ("INSERT INTO monitor_windows (pass_id, ts, model, version, environment, kind, verdict, rows, breach, "
          "metrics, details) VALUES ('p', 0, 'm', 1, 'dev', '{kind}', 'ok', 0, {breach}, '{{}}', '{{}}')")
ALERT_STATE = ("INSERT INTO alert_state (rule, subject, firing, since, last_seen, severity) "
               "VALUES ('r', 's', {firing}, 0, 0, 'warning')")
ALERT_EVENT = ("INSERT INTO alert_events (ts, rule, subject, kind, severity, metric, threshold, message) "
               "VALUES (0, 'r', 's', '{kind}', 'warning', 'psi', 0.2, 'm')")
OUTBOX = ("INSERT INTO alert_outbox (event_id, url, payload, timeout_s, max_attempts, backoff_s, next_attempt, status) "
          "VALUES ({event}, 'http://127.0.0.1:9/', '{{}}', 1, 1, 1, 0, '{status}')")
RETRAIN = ("INSERT INTO retrain_triggers (id, ts, model, environment, from_version, reason, status, updated_at) "
           "VALUES ('{id}', 0, 'm', 'dev', 1, '{{}}', '{status}', 0)")
API_KEY = ("INSERT INTO api_keys (id, model, environment, secret_hash, created_by, created_at, expires_at) "
           "VALUES ('0123456789ab', 'm', 'dev', '{digest}', 'a@example.com', 100, {expires})")

# name -> (statements that set up valid state, the statement that breaks the invariant, error text)
CASES: dict[str, tuple[list[str], str, str]] = {
    # the registry
    "one production version per model and environment (insert)": (
        [VERSION.format(v=1), VERSION.format(v=2), STAGE.format(v=1, stage="production")],
        STAGE.format(v=2, stage="production"), "UNIQUE"),
    "one production version per model and environment (update)": (
        [VERSION.format(v=1), VERSION.format(v=2), STAGE.format(v=1, stage="production"),
         STAGE.format(v=2, stage="staging")],
        "UPDATE model_stages SET stage='production' WHERE version=2", "UNIQUE"),
    "version numbers never repeat": ([VERSION.format(v=1)], VERSION.format(v=1), "UNIQUE"),
    "a stage is one of dev, staging, production, archived": (
        [VERSION.format(v=1)], STAGE.format(v=1, stage="prod"), "CHECK"),
    "a stage belongs to a registered version": ([], STAGE.format(v=7, stage="staging"), "FOREIGN KEY"),
    "one stage row per version and environment": (
        [VERSION.format(v=1), STAGE.format(v=1, stage="dev")], STAGE.format(v=1, stage="staging"), "UNIQUE"),
    "a gate report is passed or not": (
        [VERSION.format(v=1)],
        "INSERT INTO gate_reports (digest, model, version, environment, artifact_digest, passed, report, created_at, "
        "created_by) VALUES ('g', 'm', 1, 'dev', 'd', 2, '{}', 0, 'a@example.com')", "CHECK"),
    "a gate report belongs to a registered version": (
        [], "INSERT INTO gate_reports (digest, model, version, environment, artifact_digest, passed, report, "
            "created_at, created_by) VALUES ('g', 'm', 9, 'dev', 'd', 1, '{}', 0, 'a@example.com')", "FOREIGN KEY"),
    "an approval decision is approved or rejected": (
        [VERSION.format(v=1)], APPROVAL.format(decision="maybe", reason="r"), "CHECK"),
    "an approval needs a reason that is not blank": (
        [VERSION.format(v=1)], APPROVAL.format(decision="approved", reason="   "), "CHECK"),
    "one decision per approver and binding": (
        [VERSION.format(v=1), APPROVAL.format(decision="approved", reason="r")],
        APPROVAL.format(decision="rejected", reason="second thoughts"), "UNIQUE"),
    "an approval belongs to a registered version": (
        [], APPROVAL.format(decision="approved", reason="r"), "FOREIGN KEY"),
    "a promotion targets staging or production": (
        [VERSION.format(v=1)], PROMOTION.format(target="dev", state="running"), "CHECK"),
    "a promotion state is known": (
        [VERSION.format(v=1)], PROMOTION.format(target="staging", state="paused"), "CHECK"),
    "one unfinished promotion per model and environment": (
        [VERSION.format(v=1), PROMOTION.format(target="staging", state="running")],
        PROMOTION.format(target="production", state="running"), "UNIQUE"),
    "a promotion belongs to a registered version": (
        [], PROMOTION.format(target="staging", state="running"), "FOREIGN KEY"),
    # the audit log
    "audit entries are never updated": (
        ["INSERT INTO audit_log (seq, ts, actor, action, evidence, digest, prev_hash, hash) "
         "VALUES (1, 0, 'a', 'x', '{}', 'd', 'p', 'h')"],
        "UPDATE audit_log SET actor='b' WHERE seq=1", "append-only"),
    "audit entries are never deleted": (
        ["INSERT INTO audit_log (seq, ts, actor, action, evidence, digest, prev_hash, hash) "
         "VALUES (1, 0, 'a', 'x', '{}', 'd', 'p', 'h')"],
        "DELETE FROM audit_log WHERE seq=1", "append-only"),
    "audit hashes are unique": (
        ["INSERT INTO audit_log (seq, ts, actor, action, evidence, digest, prev_hash, hash) "
         "VALUES (1, 0, 'a', 'x', '{}', 'd', 'p', 'h')"],
        "INSERT INTO audit_log (seq, ts, actor, action, evidence, digest, prev_hash, hash) "
        "VALUES (2, 0, 'a', 'x', '{}', 'd', 'h', 'h')", "UNIQUE"),
    "the audit head is one row": ([], "INSERT INTO audit_head (id, seq, hash) VALUES (2, 1, 'h')", "CHECK"),
    "an audit entry's identity method is one the platform knows": (
        [], "INSERT INTO audit_log (seq, ts, actor, action, evidence, digest, prev_hash, hash, auth_method) "
            "VALUES (1, 0, 'a', 'x', '{}', 'd', 'p', 'h', 'typed-in')", "CHECK"),
    # serving
    "an endpoint strategy is known": ([], ENDPOINT.format(strategy="blue-green"), "CHECK"),
    "one endpoint per model and environment": (
        [ENDPOINT.format(strategy="direct")], ENDPOINT.format(strategy="ab"), "UNIQUE"),
    "a rollout state is known": ([], ROLLOUT.format(state="paused"), "CHECK"),
    "the serving revision is one row": ([], "INSERT INTO serving_revision (id, revision) VALUES (2, 0)", "CHECK"),
    "a capture's request id is unique": (
        [CAPTURE.format(rid="r1", shadow=0)], CAPTURE.format(rid="r1", shadow=0), "UNIQUE"),
    "a capture is shadow or not": ([], CAPTURE.format(rid="r2", shadow=2), "CHECK"),
    # features
    "a feature view version starts at 1": ([], VIEW.format(v=0), "CHECK"),
    "a feature view version is never re-created": ([VIEW.format(v=1)], VIEW.format(v=1), "UNIQUE"),
    "a view history action is create or update": ([], HISTORY.format(action="delete"), "CHECK"),
    "a materialization state is known": ([], MATERIALIZATION.format(state="paused"), "CHECK"),
    "a run's use of a view version is recorded once": ([USAGE], USAGE, "UNIQUE"),
    # monitoring
    "a monitor window kind is drift or quality": ([], WINDOW.format(kind="cost", breach=0), "CHECK"),
    "a monitor window breach is a flag": ([], WINDOW.format(kind="drift", breach=3), "CHECK"),
    "an alert state firing is a flag": ([], ALERT_STATE.format(firing=2), "CHECK"),
    "one alert state per rule and subject": ([ALERT_STATE.format(firing=0)], ALERT_STATE.format(firing=1), "UNIQUE"),
    "an alert event is fired or resolved": ([], ALERT_EVENT.format(kind="snoozed"), "CHECK"),
    "an outbox delivery belongs to an alert event": ([], OUTBOX.format(event=99, status="pending"), "FOREIGN KEY"),
    "an outbox status is known": ([ALERT_EVENT.format(kind="fired")], OUTBOX.format(event=1, status="lost"), "CHECK"),
    "a retraining trigger status is known": ([], RETRAIN.format(id="t1", status="queued"), "CHECK"),
    "a retraining trigger id is unique": (
        [RETRAIN.format(id="t1", status="pending")], RETRAIN.format(id="t1", status="failed"), "UNIQUE"),
    # serving keys
    "an API key expires after it was created": ([], API_KEY.format(digest="0" * 64, expires=99), "CHECK"),
    "an API key id is unique": (
        [API_KEY.format(digest="0" * 64, expires="NULL")], API_KEY.format(digest="1" * 64, expires=200), "UNIQUE"),
}

# What each case covers in the schema, for the completeness check below.
COVERED_INDEXES = {"one_production_per_model_env", "one_running_promotion"}
COVERED_TRIGGERS = {"audit_log_no_update", "audit_log_no_delete"}
COVERED_CHECKS = {
    "model_stages": {"stage"}, "gate_reports": {"passed"}, "approvals": {"decision", "reason"},
    "promotions": {"target", "state"}, "audit_log": {"auth_method"}, "audit_head": {"id"}, "endpoints": {"strategy"}, "rollouts": {"state"},
    "serving_revision": {"id"}, "captures": {"shadow"}, "feature_views": {"version"},
    "feature_view_history": {"action"}, "feature_materializations": {"state"}, "monitor_windows": {"kind", "breach"},
    "alert_state": {"firing"}, "alert_events": {"kind"}, "alert_outbox": {"status"}, "retrain_triggers": {"status"},
    "api_keys": {"expires_at"},
}
# Further columns a CHECK names beyond its first (PostgreSQL's catalog lists every one; the cases above cover them).
CHECKED_WITH = {"api_keys": {"created_at"}}


@pytest.fixture
def conn(tmp_path):
    db = Database(tmp_path / "platform.db")
    db.migrate()
    connection = db.connect()  # as the platform opens it: foreign keys on
    yield connection
    connection.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_database_refuses(conn, case):
    setup, violation, message = CASES[case]
    for statement in setup:
        conn.execute(statement)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    before = {t: conn.execute(f"SELECT count(*), total(rowid) FROM {t}").fetchone() for t in tables}
    with pytest.raises(sqlite3.IntegrityError, match=message):
        conn.execute(violation)
    after = {t: conn.execute(f"SELECT count(*), total(rowid) FROM {t}").fetchone() for t in tables}
    assert after == before  # the refused statement changed nothing


def test_a_hand_made_second_production_version_fails_even_inside_a_transaction(conn):
    """The service layer's checks are bypassed entirely; the partial unique index alone holds."""
    conn.execute(VERSION.format(v=1))
    conn.execute(VERSION.format(v=2))
    conn.execute(STAGE.format(v=1, stage="production"))
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        conn.execute("INSERT INTO model_stages (model, version, environment, stage, updated_at, updated_by) "
                     "VALUES ('m', 2, 'dev', 'production', 0, 'mallory')")
    conn.execute("ROLLBACK")
    # another environment may have its own production version
    conn.execute("INSERT INTO model_stages (model, version, environment, stage, updated_at, updated_by) "
                 "VALUES ('m', 2, 'production', 'production', 0, 'a@example.com')")
    rows = conn.execute("SELECT environment, version FROM model_stages WHERE stage='production' ORDER BY 1").fetchall()
    assert [tuple(r) for r in rows] == [("dev", 1), ("production", 2)]


def test_every_invariant_in_the_schema_has_a_case(conn):
    schema = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    unique_indexes = {r["name"] for r in schema if r["type"] == "index" and r["sql"].upper().startswith("CREATE UNIQUE")}
    triggers = {r["name"] for r in schema if r["type"] == "trigger"}
    checks = {}
    for r in schema:
        if r["type"] == "table":
            columns = set(re.findall(r"CHECK\s*\(\s*(?:length\(trim\()?(\w+)", r["sql"]))
            if columns:
                checks[r["name"]] = columns
    assert unique_indexes == COVERED_INDEXES, "a unique index without a test case"
    assert triggers == COVERED_TRIGGERS, "a trigger without a test case"
    assert checks == COVERED_CHECKS, "a CHECK constraint without a test case"
