"""One canary controller at a time: two gateways over one ledger, each with its own database
connections and its own view of the traffic, judged on one ManualClock.

Only the controller holding the ledger lease ``rollout:<model>:<environment>`` judges and steps a
rollout; when it stops renewing, the lease expires and the other takes over; and a holder that was
paused past its lease cannot take a step the other already took (the step is a compare-and-set).
Every claim is checked on the ledger itself: the ``leases`` row and the ``rollout_events`` count.
"""
from __future__ import annotations

import json

import httpx
import pytest

from mlplat.services import leases
from mlplat.services import rollout as ro
from mlplat.services.rollout import CanaryPolicy
from mlplat.serving.controller import lease_name
from tests.integration.support_serving import GatewayHarness, row, save_sklearn, warm
from tests.pg import fresh_database, postgres  # noqa: F401 - the session's PostgreSQL server fixture
from tests.timing import ManualClock

pytestmark = pytest.mark.integration
URL = "/endpoints/scorer/invocations"
TWIN = 8  # version 1's model folder as a second version: same predictions, so a step passes on traffic alone
# Latency is not what these tests judge: a stall of the loaded machine must not hold a step back.
NO_LATENCY_LIMIT = 1e9
LEASE = "rollout:scorer:production"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_sklearn(tmp_path_factory.mktemp("lease-models") / "v1", seed=0)


class PgHarness(GatewayHarness):
    """The same harness over a PostgreSQL ledger (the audit key in ``tmp``, as a server keeps it in
    its state directory): what the gateways beside ``mlplat server --database postgresql://…`` open."""

    def __init__(self, tmp, models, url: str):
        from mlplat.db import open_database

        super().__init__(tmp, models)
        self.db = open_database(url, key_dir=tmp)
        self.db.migrate()
        self.db_path = self.db  # the gateway opens the ledger it is given


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def ledger(request, tmp_path):
    """A factory of harnesses over one ledger: SQLite in ``tmp_path``, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return lambda models: GatewayHarness(tmp_path, models)
    url = fresh_database(request.getfixturevalue("postgres"))
    return lambda models: PgHarness(tmp_path, models, url)


@pytest.fixture
def pair(ledger, model_dir):
    """Two gateways (controllers not running on their own) over one ledger, v1 stable and a canary
    of its twin at 50 % then 100 %, both judged on ``clock``."""
    clock = ManualClock()
    a = ledger({1: model_dir, TWIN: model_dir})
    b = ledger({1: model_dir, TWIN: model_dir})
    a.deploy(1)
    policy = CanaryPolicy((50, 100), 0.0, max_error_rate=0.02, max_latency_ratio=NO_LATENCY_LIMIT,
                          max_prediction_shift=0.2, min_requests=10)
    rid = a.deploy(TWIN, "canary", canary=policy, now=clock()).rollout_id
    try:
        a.start(controller=False, clock=clock)
        b.start(controller=False, clock=clock)
        yield a, b, clock, rid
    finally:
        a.stop()
        b.stop()


def serve_both_variants(h: GatewayHarness, step: int, per_variant: int = 20) -> None:
    """Enough traffic through ``h`` for a verdict on ``step``: ``per_variant`` requests to each variant
    its routing has (keys chosen by the gateway's own router; the same rows to both)."""
    h.wait_for(lambda: h.gateway.table["scorer"].step_index == step)
    live = h.gateway.table["scorer"]
    warm(live, json.dumps(row()).encode())
    keys: dict[str, list[str]] = {r.variant: [] for r in live.routes}
    i = 0
    while any(len(v) < per_variant for v in keys.values()):
        k = f"client-{step}-request-{i}"
        variant = live.pick(k.encode()).variant
        if len(keys[variant]) < per_variant:
            keys[variant].append(k)
        i += 1
    with httpx.Client(base_url=h.url, timeout=10) as c:
        for variant, ks in keys.items():
            answered = [c.post(URL, json=row(n), headers={"x-routing-key": k}) for n, k in enumerate(ks)]
            assert [(r.status_code, r.headers["x-mlplat-variant"]) for r in answered] == [(200, variant)] * len(ks)


def events(h: GatewayHarness, rid: int) -> list[tuple[str, int | None]]:
    return [(e["event"], e["step_index"]) for e in
            h.query("SELECT event, step_index FROM rollout_events WHERE rollout_id=? ORDER BY id", rid)]


def holder(h: GatewayHarness) -> str | None:
    rows = h.query("SELECT holder FROM leases WHERE name=?", LEASE)
    return rows[0]["holder"] if rows else None


def test_only_the_lease_holder_judges_and_steps(pair):
    a, b, clock, rid = pair
    ga, gb = a.gateway, b.gateway
    assert ga.controller.leases.holder != gb.controller.leases.holder
    assert ga.control_once() == []  # a takes the lease; no traffic yet, so it only waits
    assert holder(a) == ga.controller.leases.holder
    serve_both_variants(a, 0)
    serve_both_variants(b, 0)

    assert gb.control_once() == []  # b has seen enough to pass the step, but the lease is a's
    assert events(a, rid) == [("deployed", 0)]
    assert ga.control_once() == [(rid, "step")]
    assert events(a, rid) == [("deployed", 0), ("step", 1)]

    serve_both_variants(a, 1)
    serve_both_variants(b, 1)
    clock.advance(1)
    assert gb.control_once() == []
    assert events(a, rid) == [("deployed", 0), ("step", 1)]
    assert ga.control_once() == [(rid, "promoted")]
    assert gb.control_once() == []
    assert events(a, rid) == [("deployed", 0), ("step", 1), ("promoted", 1)]
    assert a.query("SELECT state FROM rollouts WHERE id=?", rid) == [{"state": "succeeded"}]
    assert holder(a) == ga.controller.leases.holder

    # the rollout ended: a's next pass gives its lease up, so the next rollout's is free at once
    assert ga.control_once() == []
    assert holder(a) is None


def test_an_expired_lease_hands_the_rollout_over(pair):
    a, b, clock, rid = pair
    ga, gb = a.gateway, b.gateway
    assert ga.control_once() == []  # a takes the lease; no traffic yet, so it only waits
    assert holder(a) == ga.controller.leases.holder
    serve_both_variants(b, 0)
    # a stops renewing (hung, or killed without a goodbye); until its lease expires b may not step
    assert gb.control_once() == []
    clock.advance(ga.controller.leases.ttl - 0.5)
    assert gb.control_once() == [] and events(b, rid) == [("deployed", 0)]
    clock.advance(1)
    assert gb.control_once() == [(rid, "step")]
    assert holder(b) == gb.controller.leases.holder
    # a wakes up: its lease is gone, so it judges nothing, even with traffic of its own for the new step
    serve_both_variants(a, 1)
    assert ga.control_once() == []
    assert events(a, rid) == [("deployed", 0), ("step", 1)]


def test_a_stopped_gateway_hands_its_rollouts_over_at_once(pair):
    a, b, _clock, rid = pair
    assert a.gateway.control_once() == []
    assert holder(a) == a.gateway.controller.leases.holder
    a.stop()  # a clean stop releases the lease: no waiting for it to expire
    assert holder(a) is None
    serve_both_variants(b, 0)
    assert b.gateway.control_once() == [(rid, "step")]


def test_a_paused_holder_never_takes_a_step_twice(pair):
    """a judged step 0 as passed and then paused past its lease; b took over and took that step.
    When a wakes and applies its verdict, the step is refused: it was taken at step 0, the rollout
    is at step 1 now."""
    a, b, clock, rid = pair
    ga, gb = a.gateway, b.gateway
    serve_both_variants(a, 0)
    serve_both_variants(b, 0)
    conn_a = a.db.connect()
    try:
        stale = ro.running_rollouts(conn_a, "production")
        assert ga.controller.leases.hold(a.db, conn_a, lease_name(stale[0]))
        decision, held = ga.controller.judge.decide(stale[0], clock())
        assert decision is not None and decision.action == "pass" and not held
        clock.advance(ga.controller.leases.ttl + 1)  # a is paused here
        assert gb.control_once() == [(rid, "step")]
        with a.db.transaction(conn_a):
            assert ro.advance(conn_a, rid, actor="stale", method="system", decision=decision, expect_step=0, now=clock()) is None
    finally:
        conn_a.close()
    assert events(a, rid) == [("deployed", 0), ("step", 1)]
    assert a.query("SELECT step_index FROM rollouts WHERE id=?", rid) == [{"step_index": 1}]


def test_a_ledger_without_the_leases_table_still_has_its_canaries_judged(tmp_path, model_dir, caplog):
    """A stack whose ledger was not migrated since leases shipped: its gateway's controller judges
    without a lease (and says to migrate), its steps still taken once."""
    h = GatewayHarness(tmp_path, {1: model_dir, TWIN: model_dir})
    with h.db.transaction() as conn:
        conn.execute("DROP TABLE leases")
    clock = ManualClock()
    h.deploy(1)
    rid = h.deploy(TWIN, "canary", canary=CanaryPolicy((50, 100), 0.0, max_error_rate=0.02,
                                                       max_latency_ratio=NO_LATENCY_LIMIT, max_prediction_shift=0.2,
                                                       min_requests=10), now=clock()).rollout_id
    try:
        h.start(controller=False, clock=clock)
        serve_both_variants(h, 0)
        with caplog.at_level("WARNING", logger="mlplat.gateway"):
            assert h.gateway.control_once() == [(rid, "step")]
        assert "no leases table" in caplog.text and "mlplat db upgrade" in caplog.text
    finally:
        h.stop()
    assert events(h, rid) == [("deployed", 0), ("step", 1)]


def test_lease_statements(ledger):
    """acquire / renew / release on the ledger's table: free, held, expired, another holder's."""
    h = ledger({})
    conn = h.db.connect()
    try:
        def acquire(who: str, now: float) -> bool:
            with h.db.transaction(conn):
                return leases.acquire(conn, "job", who, ttl=10, now=now)

        assert acquire("a", 100) and leases.current(conn, "job") == leases.LeaseState("job", "a", 110, 100)
        assert not acquire("b", 109)  # held until 110
        assert acquire("a", 105)  # renewing keeps when it was first acquired
        assert leases.current(conn, "job") == leases.LeaseState("job", "a", 115, 100)
        assert not acquire("b", 115)  # expires_at < now: not yet at the instant it expires
        assert acquire("b", 115.5) and leases.current(conn, "job") == leases.LeaseState("job", "b", 125.5, 115.5)
        with h.db.transaction(conn):
            assert not leases.renew(conn, "job", "a", ttl=10, now=116)  # a lost it
            assert not leases.release(conn, "job", "a")  # and cannot free b's
            assert leases.renew(conn, "job", "b", ttl=10, now=120)
        assert leases.current(conn, "job").expires_at == 130
        with h.db.transaction(conn):
            assert leases.release(conn, "job", "b")
        assert leases.current(conn, "job") is None
        assert acquire("a", 0)
    finally:
        conn.close()
    assert len(leases.holder_id().split(":")) == 3 and leases.holder_id() != leases.holder_id()
