"""The gateway over real HTTP on 127.0.0.1: routing, bad input, metrics, capture, A/B, shadow, rollback."""
from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

from tests.integration.support_serving import GatewayHarness, row, save_sklearn, save_toy

pytestmark = pytest.mark.integration
URL = "/endpoints/scorer/invocations"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    return {1: save_sklearn(tmp / "v1", seed=0), 2: save_sklearn(tmp / "v2", seed=1),
            3: save_toy(tmp / "skewed", mode="skewed"), 4: save_toy(tmp / "raise", mode="raise")}


@pytest.fixture
def harness(tmp_path, models):
    h = GatewayHarness(tmp_path, dict(models), max_body_bytes=4096)
    yield h
    h.stop()


def test_scoring_bad_input_404_metrics_and_capture(harness):
    harness.deploy(1)
    harness.start()
    with httpx.Client(base_url=harness.url, timeout=10) as c:
        r = c.post(URL, json={"dataframe_split": {"columns": ["a", "b", "c"], "data": [[3, 0, 0], [-3, 0, 0]]}})
        assert r.status_code == 200 and r.json()["predictions"] == [1, 0]
        rid = r.headers["x-request-id"]
        assert r.json()["request_id"] == rid and r.headers["x-mlplat-version"] == "1"
        v2 = c.post("/v2/models/scorer/infer", json={"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64",
                                                                  "data": [3, 0, 0]}]})
        assert v2.status_code == 200 and v2.json()["outputs"][0]["data"] == [1] and v2.json()["model_version"] == "1"
        assert c.get("/v2/models/scorer").json()["inputs"][0]["name"] == "a"
        assert c.get("/v2/health/ready").status_code == 200

        unknown = c.post("/endpoints/nope/invocations", json=row())
        assert unknown.status_code == 404 and unknown.json()["endpoints"] == ["scorer"]
        assert "scorer" in unknown.json()["message"]
        bad = {
            "malformed": c.post(URL, content=b'{"dataframe_records": [', headers={"content-type": "application/json"}),
            "wrong shape": c.post(URL, json={"instances": [[1.0, 2.0]]}),
            "wrong type": c.post(URL, json={"dataframe_records": [{"a": "x", "b": 1, "c": 1}]}),
            "missing column": c.post(URL, json={"dataframe_records": [{"a": 1, "b": 1}]}),
            "oversized": c.post(URL, json={"instances": [[0.5, 0.5, 0.5]] * 400}),
            "v2 wrong size": c.post("/v2/models/scorer/infer", json={"inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3]}]}),
        }
        statuses = {k: v.status_code for k, v in bad.items()}
        assert statuses == {"malformed": 400, "wrong shape": 422, "wrong type": 422, "missing column": 422,
                            "oversized": 413, "v2 wrong size": 422}
        assert all(v.json()["message"] for v in bad.values())

        metrics = c.get("/metrics").text
        labels = 'model="scorer",version="1",variant="primary",environment="production"'
        assert f"mlplat_requests_total{{{labels}}} 8" in metrics
        assert f"mlplat_client_errors_total{{{labels}}} 6" in metrics
        assert f"mlplat_errors_total{{{labels}}} 0" in metrics
        assert f'mlplat_request_duration_seconds_bucket{{{labels},le="+Inf"}} 8' in metrics

    rows = harness.wait_for(lambda: harness.query("SELECT * FROM captures WHERE request_id=?", rid))
    capture = rows[0]
    assert capture["model"] == "scorer" and capture["version"] == 1 and capture["variant"] == "primary"
    assert capture["environment"] == "production" and capture["status"] == 200 and capture["shadow"] == 0
    import json

    assert json.loads(capture["inputs"]) == [{"a": 3.0, "b": 0.0, "c": 0.0}, {"a": -3.0, "b": 0.0, "c": 0.0}]
    outputs = json.loads(capture["outputs"])  # a binary classifier: classes, and its scores for calibration
    assert outputs["predictions"] == [1, 0] and capture["latency_ms"] > 0
    assert outputs["probabilities"][0] > 0.5 > outputs["probabilities"][1]


def test_ab_split_proportions_and_sticky_routing(harness):
    harness.deploy(1)
    harness.deploy(2, "ab", weights="1=70,2=30")
    harness.start()
    counts = {1: 0, 2: 0}
    with httpx.Client(base_url=harness.url, timeout=10) as c:
        for i in range(600):
            r = c.post(URL, json=row(i))
            assert r.status_code == 200
            counts[int(r.headers["x-mlplat-version"])] += 1
        share = counts[2] / 600
        assert 0.24 <= share <= 0.36, counts  # 30 % ± 6 points (> 3 standard deviations)

        for key in ("user-1", "user-2", "user-42", "user-77"):
            seen = {c.post(URL, json=row(i), headers={"x-routing-key": key}).headers["x-mlplat-version"]
                    for i in range(15)}
            assert len(seen) == 1, (key, seen)
        keyed = {c.post(URL, json=row(0), headers={"x-routing-key": f"k{i}"}).headers["x-mlplat-version"]
                 for i in range(60)}
        assert keyed == {"1", "2"}  # keys spread over both variants
        metrics = c.get("/metrics").text
        assert 'variant="v1"' in metrics and 'variant="v2"' in metrics


def test_shadow_leaves_responses_unchanged_and_records_disagreement(harness):
    harness.deploy(1)
    harness.deploy(3, "shadow", shadow_percent=50)  # the shadow always says 1
    harness.start()
    with httpx.Client(base_url=harness.url, timeout=10) as c:
        payloads = [row(i) for i in range(120)]
        responses = [c.post(URL, json=p) for p in payloads]
    assert all(r.status_code == 200 and r.headers["x-mlplat-version"] == "1" for r in responses)
    from mlplat.serving.protocol import parse_scoring

    direct = harness.gateway.pool.models[("scorer", 1)]
    expected = [int(direct.predict(parse_scoring(p, direct.signature))[0]) for p in payloads]
    assert [r.json()["predictions"][0] for r in responses] == expected
    assert 0 in expected  # so a shadow leaking into responses would show

    stats = harness.gateway.metrics.shadow[("scorer", 3)]
    # mirrored requests finish off the request path: wait until every one is captured
    shadow_rows = harness.wait_for(lambda: (lambda rows: rows if len(rows) >= 30 and len(rows) == stats[0] else None)(
        harness.query("SELECT * FROM captures WHERE shadow=1")))
    assert all(r["version"] == 3 and r["variant"] == "shadow" and r["request_id"].endswith(":shadow")
               for r in shadow_rows)
    assert 30 <= len(shadow_rows) <= 90  # about half of 120 mirrored
    assert stats[0] == len(shadow_rows) and stats[2] > 0  # requests mirrored, disagreements seen


def test_rollback_under_concurrent_load_fails_no_request(harness):
    harness.deploy(1)
    harness.deploy(2)  # v1 is kept warm as the rollback target
    harness.start()
    assert ("scorer", 1) in harness.gateway.pool.models
    results: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        with httpx.Client(base_url=harness.url, timeout=10) as c:
            i = seed
            while not stop.is_set():
                try:
                    r = c.post(URL, json=row(i))
                    results.append((time.monotonic(), r.status_code, r.headers.get("x-mlplat-version", "")))
                except httpx.HTTPError as exc:
                    results.append((time.monotonic(), 0, type(exc).__name__))
                i += 1

    threads = [threading.Thread(target=client, args=(s * 1000,)) for s in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.8)
    issued = time.monotonic()
    endpoint = harness.rollback()
    assert endpoint.stable_version == 1 and endpoint.previous_version is None  # never back to the v2 rolled back from
    switched = harness.wait_for(lambda: next((t for t, s, v in results if t > issued and v == "1"), None), timeout=5)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    failed = [r for r in results if r[1] != 200]
    assert not failed, failed[:5]
    assert switched - issued < 1.0
    after = [v for t, s, v in results if t > switched + 0.05]
    assert after and set(after) == {"1"}
    events = harness.query("SELECT event, actor FROM rollout_events ORDER BY id")
    assert events[-1] == {"event": "rolled_back", "actor": "ds@example.com"}
    audit = harness.query("SELECT action, version FROM audit_log ORDER BY seq")
    assert audit[-1] == {"action": "deployment.rolled_back", "version": 1}


def test_a_version_that_fails_to_load_fails_only_its_requests(harness, tmp_path):
    harness.models[9] = tmp_path / "not-a-model"
    harness.deploy(1)
    harness.deploy(9, model="broken")
    harness.start()
    with httpx.Client(base_url=harness.url, timeout=10) as c:
        broken = c.post("/endpoints/broken/invocations", json=row())
        assert broken.status_code == 500 and "failed to load" in broken.json()["message"]
        assert c.post(URL, json=row()).status_code == 200
        assert c.get("/v2/models/broken/ready").status_code == 503
        assert 'mlplat_errors_total{model="broken",version="9"' in c.get("/metrics").text
