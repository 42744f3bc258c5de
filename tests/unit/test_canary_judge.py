"""One canary judge for every provider: the same numbers through the gateway's metrics source and
through CloudWatch's (moto in this process) give the same decisions, re-check included; and the one
PSI that drift monitoring and canary analysis share."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pytest

from mlplat.db import Database
from mlplat.services import rollout as ro
from mlplat.services.monitoring import drift as d
from mlplat.serving.controller import GatewayCanaryMetrics
from mlplat.serving.metrics import RolloutStats
from mlplat.serving.routing import LiveEndpoint, ModelPool, Routing
from tests.contract import moto_support as ms

T0 = 1_767_225_600.0  # a minute boundary (2026-01-01T00:00:00Z): the rollout starts here
ENDPOINT = "mlplat-fraud-qa-scorer"
POLICY = ro.CanaryPolicy((10, 50, 100), 0.0, max_error_rate=0.05, max_latency_ratio=1.5,
                         max_prediction_shift=0.2, min_requests=20)
STABLE = (200, 0, 5.0)  # requests, errors, latency (ms) the stable version serves in the first minute
ROLLOUT = {"id": 1, "model": "scorer", "environment": "qa", "stable_version": 1, "candidate_version": 2,
           "policy": POLICY.to_json(), "step_index": 0, "step_started_at": T0, "created_at": T0}


@dataclass(frozen=True)
class Traffic:
    requests: int
    errors: int
    latency_ms: float


def look_time(i: int) -> float:
    """Look ``i`` judges half a minute into minute ``i``, after that minute's traffic."""
    return T0 + 30 + 60 * i


# --- the two providers' metrics sources, fed the same numbers ---------------------------------------


class GatewaySide:
    """The gateway's source: one latency sample per request, recorded as its request path records them."""

    def __init__(self, tmp_path):
        routing = Routing(tmp_path / "platform.db", "qa", ModelPool(lambda name, version: tmp_path))
        spec = ro.Endpoint("scorer", "qa", "canary", ro.canary_routes(1, 2, 10), None, 1, None, rollout_id=1)
        routing.table["scorer"] = LiveEndpoint(spec, [], None, 0.0, rollout_id=1, step_index=0)
        self.stats = routing.rollout_stats[1] = RolloutStats()
        self.source = GatewayCanaryMetrics(routing)

    def serve(self, variant: str, traffic: Traffic, minute: int) -> None:
        for i in range(traffic.requests):
            self.stats.record(variant, 0, traffic.latency_ms, i < traffic.errors, None)


class CloudWatchSide:
    """AWS's source: what SageMaker publishes per variant and minute, read back from CloudWatch."""

    def __init__(self):
        import boto3

        from mlplat_providers.aws.runtime.serving import CloudWatchCanaryMetrics
        from mlplat_providers.aws.runtime.session import call

        self.cloudwatch = boto3.client("cloudwatch", region_name=ms.REGION)
        clients = {"cloudwatch": self.cloudwatch}
        self.source = CloudWatchCanaryMetrics(lambda service, operation, **params: call(clients[service], operation,
                                                                                         **params),
                                              lambda model, environment: ENDPOINT,
                                              lambda endpoint: [f"{endpoint}-5xx"])

    def serve(self, variant: str, traffic: Traffic, minute: int) -> None:
        # SageMaker's variants have stable names: the stable version serves on primary, the candidate on canary
        name = "primary" if variant == "stable" else "canary"
        dims = [{"Name": "EndpointName", "Value": ENDPOINT}, {"Name": "VariantName", "Value": name}]
        at = dt.datetime.fromtimestamp(T0 + 60 * minute + 5, dt.UTC)
        self.cloudwatch.put_metric_data(Namespace="AWS/SageMaker", MetricData=[
            {"MetricName": "Invocations", "Dimensions": dims, "Value": float(traffic.requests), "Unit": "Count",
             "Timestamp": at},
            {"MetricName": "Invocation5XXErrors", "Dimensions": dims, "Value": float(traffic.errors), "Unit": "Count",
             "Timestamp": at},
            {"MetricName": "ModelLatency", "Dimensions": dims, "Value": traffic.latency_ms * 1000.0,
             "Unit": "Microseconds", "Timestamp": at}])


@pytest.fixture
def fake_aws(monkeypatch):
    from moto import mock_aws

    ms.use_fake_aws(monkeypatch)
    ms.install_sagemaker_gaps()  # CloudWatch's p95 over the published samples
    with mock_aws():
        yield


def run(side, looks: list[Traffic]) -> list[ro.Decision]:
    """The stable traffic, then per minute the candidate's traffic and one look by a fresh judge's pass."""
    judge = ro.CanaryJudge(side.source, actor="test")
    side.serve("stable", Traffic(*STABLE), 0)
    decisions = []
    for minute, traffic in enumerate(looks):
        side.serve("canary", traffic, minute)
        decision, _ = judge.decide(ROLLOUT, look_time(minute))
        decisions.append(decision)
    return decisions


OK, SLOW = Traffic(40, 0, 5.0), Traffic(40, 0, 50.0)
SCENARIOS = {
    "too little traffic": ([Traffic(5, 0, 5.0)], ["wait"]),
    "healthy": ([OK], ["pass"]),
    "errors roll back at once": ([Traffic(40, 9, 5.0)], ["rollback"]),
    "a stall that passes on fresh traffic": ([SLOW, OK], ["wait", "pass"]),
    "a stall confirmed on fresh traffic": ([SLOW, SLOW], ["wait", "rollback"]),
    "too little fresh traffic keeps waiting": ([SLOW, Traffic(3, 0, 50.0)], ["wait", "wait"]),
}


@pytest.mark.parametrize("looks, actions", SCENARIOS.values(), ids=list(SCENARIOS))
def test_the_same_numbers_get_the_same_decision_from_either_providers_metrics(tmp_path, fake_aws, looks, actions):
    gateway = run(GatewaySide(tmp_path), looks)
    cloudwatch = run(CloudWatchSide(), looks)
    assert [x.action for x in gateway] == actions
    for g, c in zip(gateway, cloudwatch):
        assert (c.action, c.reasons) == (g.action, g.reasons)
        assert {k: v for k, v in c.metrics.items() if k not in ("alarms", "source", "platform")} == g.metrics
        assert (c.metrics["source"], c.metrics["alarms"]) == ("cloudwatch", [])
    if len(actions) > 1:  # a stall: held on the first look, judged on the second minute's traffic only
        assert gateway[0].reasons[0].startswith("breach held until fresh traffic confirms it: p95 latency 50.00 ms")
        rechecked = actions[1] != "wait"
        assert ("rechecked" in gateway[1].metrics) == rechecked
        if rechecked:
            assert gateway[1].metrics["candidate"]["requests"] == 40


def test_a_rollback_alarm_rolls_back_at_once_without_a_recheck(fake_aws):
    side = CloudWatchSide()
    side.cloudwatch.put_metric_alarm(AlarmName=f"{ENDPOINT}-5xx", Namespace="AWS/SageMaker",
                                     MetricName="Invocation5XXErrors", Statistic="Sum", Period=60, EvaluationPeriods=1,
                                     Threshold=0, ComparisonOperator="GreaterThanThreshold")
    side.cloudwatch.set_alarm_state(AlarmName=f"{ENDPOINT}-5xx", StateValue="ALARM", StateReason="5xx above 0")
    [decision] = run(side, [SLOW])
    assert decision.action == "rollback"
    assert decision.reasons == (f"CloudWatch alarm {ENDPOINT}-5xx is in ALARM (5xx above 0)",)


def test_aws_holds_a_latency_breach_then_rolls_back_through_the_ledger(tmp_path, fake_aws):
    """Through the database: a held breach changes nothing (no event, no recorded analysis); confirmed on
    the next minute's traffic it rolls back to the stable version with the controller's audit entries,
    and the provider's hook applies the new routing inside that transaction."""
    db = Database(tmp_path / "platform.db")
    db.migrate()
    conn = db.connect()
    try:
        with db.transaction(conn):
            ro.deploy(conn, model="scorer", environment="qa", version=1, strategy="direct", actor="ds", method="os-user", now=T0 - 60)
        with db.transaction(conn):
            rid = ro.deploy(conn, model="scorer", environment="qa", version=2, strategy="canary", actor="ds", method="os-user",
                            canary=POLICY, now=T0).rollout_id
        side = CloudWatchSide()
        applied = []
        times = iter([look_time(0), look_time(1)])
        judge = ro.CanaryJudge(side.source, actor="aws-canary-controller", clock=lambda: next(times),
                               on_change=lambda endpoint: applied.append(endpoint.routes) or "applied")
        side.serve("stable", Traffic(*STABLE), 0)
        events = conn.execute("SELECT COUNT(*) FROM rollout_events").fetchone()[0]
        for minute in (0, 1):
            side.serve("canary", SLOW, minute)
            verdict = judge.judge(db, conn, ro.get_rollout(conn, rid))
            if minute == 0:
                assert verdict.acted is None and verdict.decision.action == "wait"
                assert conn.execute("SELECT COUNT(*) FROM rollout_events").fetchone()[0] == events
                assert ro.get_rollout(conn, rid)["last_analysis"] is None
        assert (verdict.acted, verdict.applied) == ("rollback", "applied")
        assert applied == [[ro.Route("primary", 1, 100)]]
        rollout = ro.get_rollout(conn, rid)
        assert rollout["state"] == "rolled_back" and rollout["reason"].startswith("canary breach: p95 latency 50.00 ms")
        event = conn.execute("SELECT event, actor, ts FROM rollout_events ORDER BY id DESC LIMIT 1").fetchone()
        assert dict(event) == {"event": "rolled_back", "actor": "aws-canary-controller", "ts": look_time(1)}
    finally:
        conn.close()


# --- one PSI --------------------------------------------------------------------------------------


def test_canary_prediction_shift_and_drift_share_one_psi():
    rng = np.random.default_rng(3)
    stable, candidate = rng.beta(2, 5, 400).tolist(), rng.beta(2, 4, 200).tolist()
    assert ro.psi is d.psi
    decision = ro.analyze(ro.VariantStats(400, 0, [1.0] * 400, stable), ro.VariantStats(200, 0, [1.0] * 200, candidate),
                          POLICY, elapsed=0)
    assert decision.metrics["prediction_psi"] == round(d.psi_sorted(np.sort(stable), np.sort(candidate)), 4)


def test_continuous_values_are_binned_on_the_references_deciles():
    rng = np.random.default_rng(4)
    reference, current = rng.normal(size=3000), rng.normal(0.3, 1, 1000)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, 11)[1:-1]))
    p = np.histogram(reference, np.r_[-np.inf, edges, np.inf])[0] / reference.size
    q = np.histogram(current, np.r_[-np.inf, edges, np.inf])[0] / current.size
    assert d.psi(reference.tolist(), current.tolist()) == pytest.approx(float(np.sum((p - q) * np.log(p / q))),
                                                                        rel=1e-9)


def test_few_distinct_values_are_compared_value_by_value():
    # a shift between two rare labels: deciles of the reference merge them into one bin and see nothing
    reference = [0.0] * 90 + [1.0] * 5 + [2.0] * 5
    current = [0.0] * 90 + [2.0] * 10
    p, q = np.array([0.90, 0.05, 0.05]), np.array([0.90, d.EPS, 0.10])
    expected = float(np.sum((p - q) * np.log(p / q)))
    assert d.psi(reference, current) == pytest.approx(expected) and expected > 0.2
    numbers = d.numerical_drift("labels", reference * 10, current * 10, d.Thresholds(min_rows=10,
                                                                                     min_reference_rows=10))
    assert numbers.psi == pytest.approx(expected)


def test_empty_or_missing_values_give_no_shift():
    assert d.psi([], [1.0, 2.0]) == 0.0 and d.psi([1.0], [float("nan")]) == 0.0
    assert d.psi([0.0, 1.0, float("nan")] * 10, [0.0, 1.0] * 10) == pytest.approx(0.0)
