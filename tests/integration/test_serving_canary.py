"""Canary rollouts judged on live traffic through real HTTP: promote, roll back on errors, skew,
latency, an unloadable candidate, and resume after a gateway restart."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from mlplat.services.rollout import CanaryPolicy
from tests.integration.conftest_serving import GatewayHarness, row, save_sklearn, save_toy

pytestmark = pytest.mark.integration
URL = "/endpoints/scorer/invocations"


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


def policy(min_requests: int = 30, bake: float = 0.5, steps=(50, 100), max_latency_ratio: float = 1.5) -> CanaryPolicy:
    return CanaryPolicy(tuple(steps), bake, max_error_rate=0.02, max_latency_ratio=max_latency_ratio,
                        max_prediction_shift=0.2, min_requests=min_requests)


# Tests of a good candidate's progression allow for scheduling noise on a loaded machine; the
# latency breach itself is tested with a candidate that is slower by a wide margin.
TOLERANT = 5.0


class Traffic:
    """Clients posting rows until stopped; records (time, status, version)."""

    def __init__(self, url: str, clients: int = 2):
        self.url = url
        self.results: list[tuple[float, int, str]] = []
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i * 10_000,), daemon=True) for i in range(clients)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def _run(self, seed: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as c:
            i = seed
            while not self.stop_event.is_set():
                r = c.post(URL, json=row(i))
                self.results.append((time.monotonic(), r.status_code, r.headers.get("x-mlplat-version", "")))
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


def test_good_candidate_is_promoted_step_by_step(harness):
    harness.deploy(1)
    endpoint = harness.deploy(2, "canary", canary=policy(max_latency_ratio=TOLERANT))
    harness.start(process=True)
    with Traffic(harness.url):
        assert harness.wait_for(lambda: finished(harness, endpoint.rollout_id), timeout=30) == "succeeded"
    events = harness.query("SELECT event, percent, actor FROM rollout_events WHERE rollout_id=? ORDER BY id",
                           endpoint.rollout_id)
    assert [(e["event"], e["percent"]) for e in events] == [("deployed", 50), ("step", 100), ("promoted", 100)]
    assert {e["actor"] for e in events[1:]} == {"mlplat-canary-controller"}
    final = harness.query("SELECT strategy, stable_version, previous_version FROM endpoints")[0]
    assert final == {"strategy": "direct", "stable_version": 2, "previous_version": 1}
    audit = [r["action"] for r in harness.query("SELECT action FROM audit_log ORDER BY seq")]
    assert audit[-2:] == ["deployment.step", "deployment.step"]
    # the gateway picked the promotion up: all traffic on v2 now
    with httpx.Client(base_url=harness.url, timeout=10) as c:
        harness.wait_for(lambda: c.post(URL, json=row()).headers["x-mlplat-version"] == "2", timeout=3)
        assert {c.post(URL, json=row(i)).headers["x-mlplat-version"] for i in range(20)} == {"2"}


@pytest.mark.parametrize("stable, candidate, reason, process", [
    (1, 4, "error rate", False),                         # the candidate raises
    (5, 3, "prediction distribution shifted", True),     # the candidate always says 1
    (5, 6, "p95 latency", True),                         # the candidate is 30 ms slower
])
def test_bad_candidate_is_rolled_back_automatically(harness, stable, candidate, reason, process):
    harness.deploy(stable)
    endpoint = harness.deploy(candidate, "canary", canary=policy(bake=30))
    harness.start(process=process)
    with Traffic(harness.url) as traffic:
        assert harness.wait_for(lambda: finished(harness, endpoint.rollout_id), timeout=30) == "rolled_back"
        breach = time.monotonic()
        time.sleep(0.6)
    last = harness.query("SELECT event, actor, reason FROM rollout_events ORDER BY id DESC LIMIT 1")[0]
    assert last["event"] == "rolled_back" and last["actor"] == "mlplat-canary-controller"
    assert reason in last["reason"], last["reason"]
    after = [(s, v) for t, s, v in traffic.results if t > breach + 0.3]
    assert after and set(after) == {(200, str(stable))}
    failures = [(s, v) for t, s, v in traffic.results if s != 200]
    assert all(v == str(candidate) for s, v in failures)  # only the candidate ever failed
    final = harness.query("SELECT strategy, stable_version FROM endpoints")[0]
    assert final == {"strategy": "direct", "stable_version": stable}
    assert harness.query("SELECT action FROM audit_log ORDER BY seq DESC LIMIT 1")[0]["action"] == "deployment.rolled_back"


def test_unloadable_candidate_is_rolled_back(harness, tmp_path):
    harness.models[7] = tmp_path / "missing"
    harness.deploy(1)
    endpoint = harness.deploy(7, "canary", canary=policy(bake=30))
    harness.start()
    with Traffic(harness.url):
        assert harness.wait_for(lambda: finished(harness, endpoint.rollout_id), timeout=30) == "rolled_back"


def test_gateway_restart_mid_canary_resumes_from_the_database(harness):
    harness.deploy(1)
    endpoint = harness.deploy(2, "canary", canary=policy(min_requests=20, bake=0.5, steps=(10, 50, 100),
                                                                max_latency_ratio=TOLERANT))
    rid = endpoint.rollout_id
    harness.start(process=True)
    step = lambda: harness.query("SELECT step_index FROM rollouts WHERE id=?", rid)[0]["step_index"]  # noqa: E731
    with Traffic(harness.url):
        harness.wait_for(lambda: step() >= 1, timeout=30)
    harness.stop()
    reached = step()
    assert rollout_state(harness, rid) == "running" and reached in (1, 2)

    harness.start(process=True)  # a new gateway process: routing and rollout come from the database
    live = harness.endpoint()
    assert live["rollout_id"] == rid and live["step_index"] == reached
    with Traffic(harness.url):
        assert harness.wait_for(lambda: finished(harness, rid), timeout=30) == "succeeded"
    events = [e["event"] for e in harness.query("SELECT event FROM rollout_events WHERE rollout_id=? ORDER BY id", rid)]
    assert events == ["deployed", "step", "step", "promoted"]

