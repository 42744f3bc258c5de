"""Rollout rules: weights, canary analysis, PSI, significance, and the state transitions in SQLite."""
from __future__ import annotations

import json

import pytest

from mlplat.db import Database
from mlplat.errors import Conflict, NotFound
from mlplat.services import rollout as ro

POLICY = ro.CanaryPolicy((10, 50, 100), 5.0, max_error_rate=0.05, max_latency_ratio=1.5,
                         max_prediction_shift=0.2, min_requests=20)


def stats(n: int, *, errors: int = 0, latency: float = 1.0, ones: float = 0.5) -> ro.VariantStats:
    k = int(n * ones)
    return ro.VariantStats(requests=n, errors=errors, latencies_ms=[latency] * n, predictions=[1.0] * k + [0.0] * (n - k))


def test_weights_forms_and_errors():
    assert ro.parse_weights("90,10", 3, 4) == [ro.Route("v3", 3, 90), ro.Route("v4", 4, 10)]
    assert ro.parse_weights("3=20,4=30,5=50", None, 4)[2] == ro.Route("v5", 5, 50)
    assert ro.parse_weights("v3=90, V4=10", None, 4) == [ro.Route("v3", 3, 90), ro.Route("v4", 4, 10)]  # as printed
    assert [r.weight for r in ro.parse_weights(None, 3, 4)] == [50, 50]
    for bad, fragment in (("90,20", "sum to 100"), ("3=50,3=50", "twice"), ("4=100", "at least two"),
                          ("x,y", "integers"), ("3=50,5=50", "include the deployed version 4"),
                          ("vv3=50,4=50", "integers")):
        with pytest.raises(ro.RolloutError, match=fragment):
            ro.parse_weights(bad, 3, 4)
    with pytest.raises(ro.RolloutError, match="two versions"):
        ro.parse_weights(None, None, 4)


def test_analysis_waits_passes_and_breaches():
    assert ro.analyze(stats(200), stats(5), POLICY, elapsed=10).action == "wait"  # too little traffic
    assert ro.analyze(stats(200), stats(50), POLICY, elapsed=1).action == "wait"  # still baking
    ok = ro.analyze(stats(200), stats(50), POLICY, elapsed=6)
    assert ok.action == "pass" and ok.metrics["candidate"]["requests"] == 50
    errors = ro.analyze(stats(200), stats(5, errors=2), POLICY, elapsed=0)
    assert errors.action == "rollback" and "error rate" in errors.reasons[0]  # no need to wait for 20
    slow = ro.analyze(stats(200, latency=2.0), stats(50, latency=9.0), POLICY, elapsed=0)
    assert slow.action == "rollback" and "p95 latency" in slow.reasons[0]
    tiny = ro.analyze(stats(200, latency=0.2), stats(50, latency=0.6), POLICY, elapsed=6)
    assert tiny.action == "pass"  # 3x but only 0.4 ms: under the absolute slack
    skew = ro.analyze(stats(200, ones=0.5), stats(50, ones=1.0), POLICY, elapsed=0)
    assert skew.action == "rollback" and "PSI" in skew.reasons[0]


def test_psi_and_significance():
    assert ro.psi([0, 1] * 50, [0, 1] * 50) == pytest.approx(0.0)
    assert ro.psi([0, 1] * 50, [1] * 100) > 2
    continuous = [i / 100 for i in range(100)]
    assert ro.psi(continuous, continuous) < 0.01
    assert ro.psi(continuous, [v + 0.5 for v in continuous]) > 1
    same = ro.two_proportion_test(80, 100, 80, 100)
    assert same["p_value"] == pytest.approx(1.0)
    differ = ro.two_proportion_test(90, 200, 140, 200)
    assert differ["p_value"] < 0.001
    assert ro.two_proportion_test(1, 0, 1, 1)["p_value"] is None


@pytest.fixture
def conn(tmp_path):
    db = Database(tmp_path / "platform.db")
    db.migrate()
    connection = db.connect()
    yield db, connection
    connection.close()


def tx(db, conn, fn, **kw):
    with db.transaction(conn):
        return fn(conn, **kw)


def test_deploy_canary_advance_promote_and_rollback_transitions(conn):
    db, c = conn
    common = dict(model="m", environment="prod", actor="ds@example.com", method="os-user")
    with pytest.raises(ro.RolloutError, match="no deployment"):
        tx(db, c, ro.deploy, version=2, strategy="canary", canary=POLICY, **common)
    assert c.execute("SELECT COUNT(*) FROM endpoints").fetchone()[0] == 0  # nothing written
    rev0 = ro.revision(c)
    first = tx(db, c, ro.deploy, version=1, strategy="direct", **common)
    assert first.routes == [ro.Route("primary", 1, 100)] and ro.revision(c) == rev0 + 1
    canary = tx(db, c, ro.deploy, version=2, strategy="canary", canary=POLICY, **common)
    assert canary.routes == [ro.Route("canary", 2, 10), ro.Route("stable", 1, 90)] and canary.rollout_id
    decision = ro.Decision("pass", ("fine",), {})
    with db.transaction(c):
        step = ro.advance(c, canary.rollout_id, actor="ctl", method="system", decision=decision, expect_step=0)
    assert step.routes[0] == ro.Route("canary", 2, 50)
    with db.transaction(c):  # a stale controller that still thinks it is at step 0 does nothing
        assert ro.advance(c, canary.rollout_id, actor="ctl", method="system", decision=decision, expect_step=0) is None
    with db.transaction(c):
        ro.advance(c, canary.rollout_id, actor="ctl", method="system", decision=decision)
        done = ro.advance(c, canary.rollout_id, actor="ctl", method="system", decision=decision)
    assert done.routes == [ro.Route("primary", 2, 100)] and done.stable_version == 2 and done.previous_version == 1
    assert ro.get_rollout(c, canary.rollout_id)["state"] == "succeeded"

    back = tx(db, c, ro.rollback, **common)
    # v1 served first: after rolling back from v2 there is nothing further back (never forward to v2)
    assert back.stable_version == 1 and back.previous_version is None and back.routes == [ro.Route("primary", 1, 100)]
    with pytest.raises(Conflict, match="already serves version 1"):
        tx(db, c, ro.rollback, to=1, **common)
    with pytest.raises(NotFound, match="no deployment of 'other'"):
        tx(db, c, ro.rollback, model="other", environment="prod", actor="x", method="os-user")

    events = [e["event"] for e in ro.events(c, "m", "prod")]
    assert events == ["deployed", "deployed", "step", "step", "promoted", "rolled_back"]
    actions = [r[0] for r in c.execute("SELECT action FROM audit_log ORDER BY seq")]
    assert actions == ["deployment.created", "deployment.created", "deployment.step", "deployment.step",
                       "deployment.step", "deployment.rolled_back"]
    history = ro.history(c, "m", "prod")
    assert [(h["version"], h["variant"], h["ended_at"] is None) for h in history][-1] == (1, "primary", True)
    assert sum(h["ended_at"] is None for h in history) == 1


def test_shadow_and_ab_then_rollback_returns_to_stable(conn):
    db, c = conn
    common = dict(model="m", environment="prod", actor="ds@example.com", method="os-user")
    tx(db, c, ro.deploy, version=1, strategy="direct", **common)
    with pytest.raises(ro.RolloutError, match="between 1 and 50"):
        tx(db, c, ro.deploy, version=2, strategy="shadow", shadow_percent=60, **common)
    shadow = tx(db, c, ro.deploy, version=2, strategy="shadow", shadow_percent=20, **common)
    assert shadow.routes == [ro.Route("primary", 1, 100)] and shadow.shadow == {"version": 2, "percent": 20}
    ab = tx(db, c, ro.deploy, version=3, strategy="ab", weights="80,20", **common)
    assert [(r.version, r.weight) for r in ab.routes] == [(1, 80), (3, 20)] and ab.shadow is None
    back = tx(db, c, ro.rollback, **common)
    assert back.routes == [ro.Route("primary", 1, 100)] and back.stable_version == 1
    detail = json.loads(c.execute("SELECT evidence FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()[0])
    assert detail["from_versions"] == [1, 3] and detail["to_version"] == 1


def test_status_and_show_follow_the_routing_after_a_promoted_canary_is_rolled_back(conn):
    db, c = conn
    common = dict(model="m", environment="prod", actor="ds@example.com", method="os-user")
    for version in (1, 2):
        tx(db, c, ro.deploy, version=version, strategy="direct", **common)
    canary = tx(db, c, ro.deploy, version=3, strategy="canary", canary=POLICY, **common)
    assert ro.show(c, "m", "prod")["rollback_target"] == 2  # a live candidate: back to the stable version
    running = ro.status(c, "m", "prod")
    assert running["rollout"]["state"] == "running" and running["verdict"]["summary"].startswith(
        "v3 10 %, v2 90 %; latest: deployed")
    decision = ro.Decision("pass", ("fine",), {})
    for _ in POLICY.steps:
        with db.transaction(c):
            ro.advance(c, canary.rollout_id, actor="ctl", method="system", decision=decision)
    promoted = ro.status(c, "m", "prod")
    assert promoted["rollout"]["state"] == "succeeded" and "canary promoted" in promoted["verdict"]["summary"]
    assert ro.show(c, "m", "prod")["rollback_target"] == 2

    tx(db, c, ro.rollback, reason="complaints", **common)
    status, shown = ro.status(c, "m", "prod"), ro.show(c, "m", "prod")
    assert status["rollout"] is None and status["previous_rollout"]["id"] == canary.rollout_id
    assert status["previous_rollout"]["overridden_by"]["event"] == "rolled_back"
    assert status["verdict"]["serving"] == [{"version": 2, "percent": 100}]
    assert status["verdict"]["summary"].startswith(
        "v2 100 %; latest: rolled back from v3 by ds@example.com (complaints)")
    assert status["events"][-1]["event"] == "rolled_back"
    # the rolled-back v3 is never the rollback target; v1 served before v2
    assert shown["rollback_target"] == 1 and shown["previous_version"] == 1
    again = tx(db, c, ro.rollback, **common)
    assert again.stable_version == 1 and again.previous_version is None
    assert ro.show(c, "m", "prod")["rollback_target"] is None


def test_canary_policy_checks():
    with pytest.raises(ro.RolloutError, match="last canary step must be 100"):
        ro.CanaryPolicy((1, 10), 1, 0.1, 1.5, 0.2, 5).check()
    with pytest.raises(ro.RolloutError, match="increasing"):
        ro.CanaryPolicy((10, 5, 100), 1, 0.1, 1.5, 0.2, 5).check()
    p = ro.CanaryPolicy((1, 100), 1, 0.1, 1.5, 0.2, 5)
    assert ro.CanaryPolicy.from_json(p.to_json()) == p


def test_transitions_are_stamped_with_the_callers_clock(conn):
    """Bake time is measured from ``step_started_at``: every transition takes the caller's ``now``
    (the controller's clock), so a step's bake runs on the same clock that later judges it."""
    db, c = conn
    common = dict(model="m", environment="prod", actor="ds@example.com", method="os-user")
    tx(db, c, ro.deploy, version=1, strategy="direct", now=1000.0, **common)
    canary = tx(db, c, ro.deploy, version=2, strategy="canary", canary=POLICY, now=2000.0, **common)
    assert ro.get_rollout(c, canary.rollout_id)["step_started_at"] == 2000.0
    waiting = ro.analyze(stats(200), stats(50), POLICY, elapsed=2004.0 - 2000.0)
    assert waiting.action == "wait" and "baking: 4 of 5 s" in waiting.reasons[0]
    with db.transaction(c):
        ro.record_analysis(c, canary.rollout_id, waiting, now=2004.0)
        ro.advance(c, canary.rollout_id, actor="ctl", method="system", decision=ro.Decision("pass", ("fine",), {}), now=2005.0)
    rollout = ro.get_rollout(c, canary.rollout_id)
    assert (rollout["analyzed_at"], rollout["step_index"], rollout["step_started_at"]) == (2004.0, 1, 2005.0)
    with db.transaction(c):
        ro.rollback(c, now=2010.0, **common)
    assert ro.get_rollout(c, canary.rollout_id)["finished_at"] == 2010.0
    assert [e["ts"] for e in ro.events(c, "m", "prod")] == [1000.0, 2000.0, 2005.0, 2010.0]
    assert ro.get_endpoint(c, "m", "prod").updated_at == 2010.0
