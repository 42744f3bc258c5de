"""Canary rollouts judged on live traffic through real HTTP: promote, roll back on errors, skew,
latency, an unloadable candidate, resume after a gateway restart, and bake time on the
controller's clock.

Requests carry routing keys, so which variant serves which request is fixed, not drawn; the
verdicts rest on request counts and on a clock the test moves, never on how much wall-clock
time went by."""
from __future__ import annotations

import json
import threading

import httpx
import pytest

from mlplat.api.ops import dashboard as dashboard_ops
from mlplat.services import rollout as ro
from mlplat.services.rollout import CanaryPolicy
from tests.integration.support_serving import GatewayHarness, row, save_sklearn, save_toy, warm
from tests.timing import ManualClock

pytestmark = pytest.mark.integration
URL = "/endpoints/scorer/invocations"
# A bake time no run of this file reaches: a step can end only on its verdict.
NEVER = 3600.0
TWIN = 8  # a second version made of version 1's model folder: same predictions, another version


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("canary-models")
    return {1: save_sklearn(tmp / "v1", seed=0), 2: save_sklearn(tmp / "v2", seed=1),
            3: save_toy(tmp / "skewed", mode="skewed"), 4: save_toy(tmp / "raise", mode="raise"),
            5: save_toy(tmp / "good", mode="good"), 6: save_toy(tmp / "slow", mode="good", delay=0.03)}


@pytest.fixture
def harness(tmp_path, models):
    h = GatewayHarness(tmp_path, dict(models))
    yield h
    h.stop()


def policy(min_requests: int = 30, bake: float = 0.0, steps=(50, 100), max_latency_ratio: float = 1.5) -> CanaryPolicy:
    return CanaryPolicy(tuple(steps), bake, max_error_rate=0.02, max_latency_ratio=max_latency_ratio,
                        max_prediction_shift=0.2, min_requests=min_requests)


# Tests of a good candidate's progression allow for scheduling noise on a loaded machine; the
# latency breach itself is tested with a candidate that is slower by a wide margin.
TOLERANT = 5.0
# A good candidate is judged on enough requests that the sampling noise of its predictions (0/1
# labels of other rows than the stable version's) stays far below the PSI limit of 0.2.
SETTLED = 100


def key(client: int, i: int) -> dict[str, str]:
    """The routing header of request ``i`` of ``client``: a fixed key, so a fixed variant at each step."""
    return {"x-routing-key": f"client-{client}-request-{i}"}


class Traffic:
    """Clients posting keyed rows until stopped; records (status, version) of every response."""

    def __init__(self, url: str, clients: int = 2):
        self.url = url
        self.results: list[tuple[int, str]] = []
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def _run(self, client: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as c:
            i = 0
            while not self.stop_event.is_set():
                r = c.post(URL, json=row(client * 10_000 + i), headers=key(client, i))
                self.results.append((r.status_code, r.headers.get("x-mlplat-version", "")))
                i += 1

    def __exit__(self, *exc):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=10)


def rollout_state(h: GatewayHarness, rid: int) -> str:
    return h.query("SELECT state FROM rollouts WHERE id=?", rid)[0]["state"]


def finished(h: GatewayHarness, rid: int):
    state = rollout_state(h, rid)
    return state if state != "running" else None


def serves_only(h: GatewayHarness, version: int) -> bool:
    """The gateway's own routing table (not just the database) sends everything to ``version``."""
    live = h.endpoint()
    return [(r["version"], r["weight"]) for r in live["routes"] if r["weight"]] == [(version, 100)]


def test_good_candidate_is_promoted_step_by_step(harness):
    harness.deploy(1)
    endpoint = harness.deploy(2, "canary", canary=policy(min_requests=SETTLED, max_latency_ratio=TOLERANT))
    harness.start(process=True)
    with Traffic(harness.url):
        assert harness.wait_for(lambda: finished(harness, endpoint.rollout_id), timeout=60) == "succeeded"
    events = harness.query("SELECT event, percent, actor FROM rollout_events WHERE rollout_id=? ORDER BY id",
                           endpoint.rollout_id)
    assert [(e["event"], e["percent"]) for e in events] == [("deployed", 50), ("step", 100), ("promoted", 100)]
    assert {e["actor"] for e in events[1:]} == {"mlplat-canary-controller"}
    final = harness.query("SELECT strategy, stable_version, previous_version FROM endpoints")[0]
    assert final == {"strategy": "direct", "stable_version": 2, "previous_version": 1}
    audit = [r["action"] for r in harness.query("SELECT action FROM audit_log ORDER BY seq")]
    assert audit[-2:] == ["deployment.step", "deployment.step"]
    # the gateway picked the promotion up: all traffic on v2 now
    harness.wait_for(lambda: serves_only(harness, 2))
    with httpx.Client(base_url=harness.url, timeout=10) as c:
        assert {c.post(URL, json=row(i), headers=key(9, i)).headers["x-mlplat-version"] for i in range(20)} == {"2"}

    # then rolled back by hand: every status answer reads the routing the gateway now serves (v1), not
    # the finished canary's "promoted after the last step", and none offers v2 as the rollback target
    harness.rollback(reason="bad feedback")
    harness.wait_for(lambda: serves_only(harness, 1))
    conn = harness.db.connect()
    try:
        status = ro.status(conn, "scorer", harness.environment)
        shown = ro.show(conn, "scorer", harness.environment)
        board_endpoints, board_rollouts = dashboard_ops._endpoints(conn), dashboard_ops._rollouts(conn)
    finally:
        conn.close()
    assert status["rollout"] is None
    assert status["previous_rollout"]["state"] == "succeeded"
    assert status["previous_rollout"]["overridden_by"]["event"] == "rolled_back"
    for answer in (status["verdict"], shown["verdict"], board_endpoints[0]["verdict"]):
        assert answer["serving"] == [{"version": 1, "percent": 100}]
        assert answer["latest_event"]["event"] == "rolled_back"
        assert "rolled back from v2" in answer["summary"] and "promoted" not in answer["summary"]
    assert status["events"][-1]["event"] == "rolled_back" and shown["events"][-1]["event"] == "rolled_back"
    assert shown["rollback_target"] is None and board_endpoints[0]["rollback_target"] is None
    assert [r["in_effect"] for r in board_rollouts] == [False]


@pytest.mark.parametrize("stable, candidate, reason, process", [
    (1, 4, "error rate", False),                         # the candidate raises
    (5, 3, "prediction distribution shifted", True),     # the candidate always says 1
    (5, 6, "p95 latency", True),                         # the candidate is 30 ms slower
])
def test_bad_candidate_is_rolled_back_automatically(harness, stable, candidate, reason, process):
    harness.deploy(stable)
    endpoint = harness.deploy(candidate, "canary", canary=policy(bake=NEVER))
    harness.start(process=process)
    with Traffic(harness.url) as traffic:
        assert harness.wait_for(lambda: finished(harness, endpoint.rollout_id), timeout=60) == "rolled_back"
    last = harness.query("SELECT event, actor, reason FROM rollout_events ORDER BY id DESC LIMIT 1")[0]
    assert last["event"] == "rolled_back" and last["actor"] == "mlplat-canary-controller"
    assert reason in last["reason"], last["reason"]
    failures = [(s, v) for s, v in traffic.results if s != 200]
    assert all(v == str(candidate) for s, v in failures)  # only the candidate ever failed
    final = harness.query("SELECT strategy, stable_version FROM endpoints")[0]
    assert final == {"strategy": "direct", "stable_version": stable}
    assert harness.query("SELECT action FROM audit_log ORDER BY seq DESC LIMIT 1")[0]["action"] == "deployment.rolled_back"
    # once the gateway routes by the rollback, every request - the keys the candidate served
    # included - is answered by the stable version
    harness.wait_for(lambda: serves_only(harness, stable))
    with httpx.Client(base_url=harness.url, timeout=10) as c:
        after = {(r.status_code, r.headers["x-mlplat-version"])
                 for r in (c.post(URL, json=row(i), headers=key(0, i)) for i in range(40))}
    assert after == {(200, str(stable))}


def test_unloadable_candidate_is_rolled_back(harness, tmp_path):
    harness.models[7] = tmp_path / "missing"
    harness.deploy(1)
    endpoint = harness.deploy(7, "canary", canary=policy(bake=NEVER))
    harness.start()
    with Traffic(harness.url):
        assert harness.wait_for(lambda: finished(harness, endpoint.rollout_id), timeout=60) == "rolled_back"


def test_gateway_restart_mid_canary_resumes_from_the_database(harness):
    harness.deploy(1)
    endpoint = harness.deploy(2, "canary", canary=policy(min_requests=SETTLED, steps=(25, 50, 100),
                                                         max_latency_ratio=TOLERANT))
    rid = endpoint.rollout_id
    harness.start(process=True)
    step = lambda: harness.query("SELECT step_index FROM rollouts WHERE id=?", rid)[0]["step_index"]  # noqa: E731
    # ten requests at a time, stopping as soon as the first step is taken: the second step then has
    # far too little traffic for a verdict, so the restart always lands mid-rollout at step 1
    with httpx.Client(base_url=harness.url, timeout=10) as c:
        sent = iter(range(100_000))

        def one_more() -> bool:
            for i in [next(sent) for _ in range(10)]:
                assert c.post(URL, json=row(i), headers=key(0, i)).status_code == 200
            return step() >= 1

        harness.wait_for(one_more, timeout=60, interval=0)
    harness.stop()
    assert rollout_state(harness, rid) == "running" and step() == 1

    harness.start(process=True)  # a new gateway process: routing and rollout come from the database
    live = harness.endpoint()
    assert live["rollout_id"] == rid and live["step_index"] == 1
    assert [(r["version"], r["weight"]) for r in live["routes"]] == [(2, 50), (1, 50)]
    with Traffic(harness.url):
        assert harness.wait_for(lambda: finished(harness, rid), timeout=60) == "succeeded"
    events = [e["event"] for e in harness.query("SELECT event FROM rollout_events WHERE rollout_id=? ORDER BY id", rid)]
    assert events == ["deployed", "step", "step", "promoted"]


def routed_keys(live, per_variant: int, start: int = 0) -> dict[str, list[int]]:
    """Request numbers whose routing keys the gateway's own router sends to each variant."""
    keys: dict[str, list[int]] = {route.variant: [] for route in live.routes}
    i = start
    while any(len(v) < per_variant for v in keys.values()):
        variant = live.pick(key(0, i)["x-routing-key"].encode()).variant
        if len(keys[variant]) < per_variant:
            keys[variant].append(i)
        i += 1
    return keys


def send_keyed(h: GatewayHarness, numbers: list[int], rows: list[int]) -> list[str]:
    """POST ``row(rows[k])`` with the routing key of ``numbers[k]``; the variant that answered each.

    Which row a request carries is independent of where its key routes it, so both variants can
    be sent the same rows: a version and its twin then predict the same distribution, and only
    what a test varies (latency, time) can decide the step."""
    with httpx.Client(base_url=h.url, timeout=10) as c:
        responses = [c.post(URL, json=row(r), headers=key(0, i)) for i, r in zip(numbers, rows, strict=True)]
    assert {r.status_code for r in responses} == {200}
    return [r.headers["x-mlplat-variant"] for r in responses]


def test_a_latency_stall_is_judged_again_on_fresh_traffic(harness):
    """A candidate that stalls on a few requests (a cold start, a GC pause) is held as suspect, not
    judged on one pass: the step is taken once fresh traffic shows the stall has passed."""
    from mlplat.serving import predictor

    stalls = {"left": 0}
    harness.models[TWIN] = harness.models[1]

    def loader(path, name, version):
        model = predictor.load(path, name=name, version=version)
        if version == TWIN:
            predict = model.predict

            def stalling(inputs):
                # the stall is the machine's, not the model's: the gateway times it, the model's
                # own predict time (which picks inline or thread-pool execution) does not see it
                if stalls["left"]:
                    stalls["left"] -= 1
                    threading.Event().wait(0.5)
                return predict(inputs)

            model.predict = stalling
        return model

    clock = ManualClock()
    harness.deploy(1)
    endpoint = harness.deploy(TWIN, "canary", canary=policy(min_requests=10, max_latency_ratio=TOLERANT),
                              now=clock())
    rid = endpoint.rollout_id
    harness.start(controller=False, clock=clock, loader=loader)
    gateway = harness.gateway
    live = gateway.table["scorer"]
    warm(live, json.dumps(row()).encode())
    stalls["left"] = 3  # three of the candidate's first requests stall
    first = routed_keys(live, 30)
    sent = send_keyed(harness, first["canary"] + first["stable"], rows=[*range(30), *range(30)])
    assert sent == ["canary"] * 30 + ["stable"] * 30 and stalls["left"] == 0
    assert gateway.control_once() == []  # suspect: one pass over stalled samples decides nothing
    assert rollout_state(harness, rid) == "running"
    fresh = routed_keys(live, 30, start=max(first["canary"] + first["stable"]) + 1)
    assert send_keyed(harness, fresh["canary"], rows=list(range(30))) == ["canary"] * 30
    assert gateway.control_once() == [(rid, "step")], harness.query("SELECT reason FROM rollout_events")


def test_a_step_bakes_on_the_controllers_clock(harness):
    """The bake time is read from the clock the gateway is given: enough traffic, no breach, and the
    step still waits until that clock has moved past the bake time - however much real time passed."""
    clock = ManualClock()
    harness.models[TWIN] = harness.models[1]
    harness.deploy(1)
    endpoint = harness.deploy(TWIN, "canary", canary=policy(min_requests=10, bake=300, steps=(50, 100),
                                                         max_latency_ratio=TOLERANT), now=clock())
    rid = endpoint.rollout_id
    harness.start(controller=False, clock=clock)
    gateway = harness.gateway
    live = gateway.table["scorer"]
    warm(live, json.dumps(row()).encode())
    keys = routed_keys(live, 30)
    sent = send_keyed(harness, keys["canary"] + keys["stable"], rows=[*range(30), *range(30)])
    assert sent == ["canary"] * 30 + ["stable"] * 30

    assert gateway.control_once() == []
    analysis = harness.query("SELECT last_analysis, analyzed_at FROM rollouts WHERE id=?", rid)[0]
    assert "baking: 0 of 300 s" in analysis["last_analysis"] and analysis["analyzed_at"] == clock()
    clock.advance(299)
    assert gateway.control_once() == []
    assert rollout_state(harness, rid) == "running"

    clock.advance(1)
    assert gateway.control_once() == [(rid, "step")]
    stepped = harness.query("SELECT step_index, step_started_at FROM rollouts WHERE id=?", rid)[0]
    assert stepped == {"step_index": 1, "step_started_at": clock()}  # the next step's bake starts now
    event = harness.query("SELECT event, ts FROM rollout_events WHERE rollout_id=? ORDER BY id DESC LIMIT 1", rid)[0]
    assert event == {"event": "step", "ts": clock()}
