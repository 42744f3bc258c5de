"""Micro-batching in the gateway over real HTTP on 127.0.0.1: concurrent bursts answered as if each
request were alone (ids, variants, captures, errors), and one model call per request when a
model's batching is off. Models are wrapped by the test's loader to count and poison calls.

Whether a burst forms batches depends on scheduling; what is asserted holds either way, except
in the test that holds the model busy on purpose (released by the test, not by a timer)."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import threading

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlplat.serving import predictor
from mlplat.serving.batching import BatchPolicy
from mlplat.serving.protocol import parse_scoring
from tests.integration.support_serving import GatewayHarness, save_sklearn, save_toy

pytestmark = pytest.mark.integration
URL = "/endpoints/scorer/invocations"
POISON = -7.25  # a value of column a that makes the wrapped model raise


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batching-models")
    return {1: save_sklearn(tmp / "v1", seed=0), 2: save_toy(tmp / "skewed", mode="skewed")}


class Calls:
    """A loader whose models record ``(model, version, rows)`` per predict call and raise on a
    poisoned row; ``gate`` (when set) holds each call of the ``gated`` models until the test
    releases it. ``alone(...)`` predicts with the unwrapped model."""

    def __init__(self, slow: bool = False, gated: tuple[str, ...] = ("scorer",)):
        self.log: list[tuple[str, int, int]] = []
        self.gate: threading.Event | None = None
        self.slow = slow
        self.gated = gated
        self.inner: dict[tuple[str, int], predictor.LoadedModel] = {}

    def alone(self, version: int, body: dict, model: str = "scorer") -> list:
        """The predictions of one model call for ``body`` alone."""
        loaded = self.inner[(model, version)]
        return np.asarray(loaded.predict(parse_scoring(body, loaded.signature))).tolist()

    def __call__(self, path, name: str, version: int):
        model = predictor.load(path, name=name, version=version)
        self.inner[(name, version)] = model
        inner = model._predict

        def predict(inputs):
            self.log.append((name, version, inputs.rows))
            if self.gate is not None and name in self.gated:
                assert self.gate.wait(30), "the test never released the model"
            if inputs.array is not None and (inputs.array == POISON).any():
                raise ValueError("poisoned row")
            return inner(inputs)

        wrapped = dataclasses.replace(model, _predict=predict)
        if self.slow:  # predicted in a worker thread, so the event loop queues requests meanwhile
            wrapped.ewma_ms = 1000.0
        return wrapped


def rows_of(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [dict(zip("abc", map(float, rng.normal(size=3)))) for _ in range(n)]


def payload(kind: str, seed: int, n: int) -> dict | bytes:
    rows = rows_of(seed, n)
    if kind == "missing column":
        rows[-1].pop("c")
    elif kind == "poison":
        rows[-1]["a"] = POISON
    elif kind == "malformed":
        return b'{"dataframe_records": ['
    return {"dataframe_records": rows}


async def burst(url: str, bodies: list[dict | bytes], path: str = URL, ids: list[str | None] | None = None):
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 limits=httpx.Limits(max_connections=len(bodies))) as client:
        async def one(i: int, body):
            headers = {"content-type": "application/json"}
            if ids and ids[i]:
                headers["x-request-id"] = ids[i]
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            return await client.post(path, content=content, headers=headers)
        return await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))


@pytest.fixture
def harness(tmp_path, models):
    h = GatewayHarness(tmp_path, dict(models))
    yield h
    h.stop()


kinds = st.sampled_from(["ok", "ok", "ok", "missing column", "malformed", "poison"])


def test_bursts_answer_each_request_as_if_alone(harness):
    calls = Calls()
    harness.deploy(1)
    harness.start(controller=False, loader=calls)

    @settings(max_examples=12, deadline=None, database=None, derandomize=True)
    @given(shape=st.lists(st.tuples(kinds, st.integers(1, 4), st.booleans()), min_size=1, max_size=24))
    def check(shape):
        bodies = [payload(kind, seed, n) for seed, (kind, n, _) in enumerate(shape)]
        ids = [f"client-{i}" if given_id else None for i, (_, _, given_id) in enumerate(shape)]
        responses = asyncio.run(burst(harness.url, bodies, ids=ids))
        platform_ids = set()
        for (kind, n, _), body, client_id, r in zip(shape, bodies, ids, responses):
            out = r.json()
            assert r.headers["content-type"] == "application/json"
            assert out["request_id"] == r.headers["x-request-id"]
            platform_ids.add(out["request_id"])
            assert r.headers.get("x-client-request-id") == client_id
            if kind == "ok":
                assert r.status_code == 200, out
                assert len(out["predictions"]) == n and out["predictions"] == calls.alone(1, body)
                assert out.get("client_request_id") == client_id
                assert r.headers["x-mlplat-version"] == "1" and r.headers["x-mlplat-variant"] == "primary"
            elif kind == "poison":
                assert r.status_code == 500 and out["error_code"] == "MODEL_ERROR"
                assert "poisoned row" in out["message"]
            else:  # refused before predicting: never part of a batch
                assert r.status_code == (400 if kind == "malformed" else 422) and out["message"]
        assert len(platform_ids) == len(shape)

    check()


def test_variants_captures_and_metrics_stay_per_request(harness):
    harness.deploy(1)
    harness.deploy(2, "ab", weights="1=50,2=50")  # v2 always answers 1
    calls = Calls()
    harness.start(controller=False, loader=calls)
    bodies = [payload("ok", seed, 1 + seed % 3) for seed in range(40)]
    responses = asyncio.run(burst(harness.url, bodies))
    by_id = {}
    for body, r in zip(bodies, responses):
        assert r.status_code == 200
        version, variant = int(r.headers["x-mlplat-version"]), r.headers["x-mlplat-variant"]
        assert variant == f"v{version}"
        predictions = r.json()["predictions"]
        assert predictions == ([1] * len(body["dataframe_records"]) if version == 2 else calls.alone(1, body))
        by_id[r.json()["request_id"]] = (body, version, variant, predictions)
    assert {v for _, v, _, _ in by_id.values()} == {1, 2}

    captured = harness.wait_for(lambda: (lambda rows: rows if len(rows) == len(by_id) else None)(
        harness.query("SELECT * FROM captures WHERE shadow=0")))
    for capture in captured:
        body, version, variant, predictions = by_id[capture["request_id"]]
        records = body["dataframe_records"]
        assert json.loads(capture["inputs"]) == (records[0] if len(records) == 1 else records)
        outputs = json.loads(capture["outputs"])
        assert (outputs["predictions"] if isinstance(outputs, dict) else outputs) == predictions
        assert (capture["version"], capture["variant"], capture["status"]) == (version, variant, 200)
        assert capture["latency_ms"] > 0

    metrics = httpx.get(f"{harness.url}/metrics", timeout=10).text
    for version in (1, 2):
        served = sum(1 for _, v, _, _ in by_id.values() if v == version)
        labels = f'model="scorer",version="{version}",variant="v{version}",environment="production"'
        assert f"mlplat_requests_total{{{labels}}} {served}" in metrics


def test_requests_queued_while_the_model_is_busy_share_one_call(harness):
    calls = Calls(slow=True)
    harness.deploy(1)
    harness.start(controller=False, loader=calls)
    calls.gate = threading.Event()
    bodies = [payload("ok", seed, 1) for seed in range(6)]
    bodies[3] = payload("poison", 3, 1)
    first: list = []
    rest: list = []
    sender = threading.Thread(target=lambda: first.extend(asyncio.run(burst(harness.url, bodies[:1]))))
    sender.start()
    harness.wait_for(lambda: len(calls.log) == 1)  # the first request holds the model
    others = threading.Thread(target=lambda: rest.extend(asyncio.run(burst(harness.url, bodies[1:]))))
    others.start()
    harness.wait_for(lambda: (lambda b: b is not None and len(b._queue) == 5)(
        harness.gateway._batchers.get(("scorer", 1))))
    calls.gate.set()
    sender.join(30)
    others.join(30)
    results = first + rest
    # one call for the first, one for the five queued behind it; the poisoned row then fails it,
    # so each of the five is predicted alone and only the poisoned one fails
    assert [rows for _, _, rows in calls.log] == [1, 5, 1, 1, 1, 1, 1]
    statuses = [r.status_code for r in results]
    assert statuses == [200, 200, 200, 500, 200, 200]
    for body, r in zip(bodies, results):
        if r.status_code == 200:
            assert r.json()["predictions"] == calls.alone(1, body)
    metrics = httpx.get(f"{harness.url}/metrics", timeout=10).text
    labels = 'model="scorer",version="1",environment="production"'
    assert f"mlplat_batches_total{{{labels}}} 1" in metrics
    assert f"mlplat_batch_fallbacks_total{{{labels}}} 1" in metrics


def test_batching_off_for_a_model_calls_it_once_per_request(harness):
    calls = Calls(slow=True, gated=("other",))
    harness.deploy(1)
    harness.deploy(1, model="other")
    harness.start(controller=False, loader=calls,
                  options={"batching_models": {"scorer": BatchPolicy(enabled=False)}})
    bodies = [payload("ok", seed, 1) for seed in range(8)]
    scorer = asyncio.run(burst(harness.url, bodies))
    assert [rows for m, _, rows in calls.log] == [1] * 8  # a call per request, however they arrived
    assert ("scorer", 1) not in harness.gateway._batchers

    calls.gate = threading.Event()
    first: list = []
    rest: list = []
    path = "/endpoints/other/invocations"
    sender = threading.Thread(target=lambda: first.extend(asyncio.run(burst(harness.url, bodies[:1], path=path))))
    sender.start()
    # batching on for "other": the first request holds the model (sent alone, so that no other
    # request can arrive in the same instant and join its call) ...
    harness.wait_for(lambda: sum(1 for m, _, _ in calls.log if m == "other") == 1)
    others = threading.Thread(target=lambda: rest.extend(asyncio.run(burst(harness.url, bodies[1:], path=path))))
    others.start()
    # ... and the seven others queue behind it
    harness.wait_for(lambda: (lambda b: b is not None and len(b._queue) == 7)(
        harness.gateway._batchers.get(("other", 1))))
    calls.gate.set()
    sender.join(30)
    others.join(30)
    other = first + rest
    assert [rows for m, _, rows in calls.log if m == "other"] == [1, 7]
    expected = [calls.alone(1, b) for b in bodies]
    assert [r.json()["predictions"] for r in scorer] == expected
    assert [r.json()["predictions"] for r in other] == expected
