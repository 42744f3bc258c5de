"""Micro-batching (mlplat.serving.batching) on the event loop, with fake models that record their calls.

Arrival patterns are event-loop ticks, not wall time: requests started in the same tick are
ready together, a request started ``k`` yields later arrives while earlier ones are queued or
being predicted. The batcher's clock is frozen, so its gathering bound never cuts a batch
short here; nothing below measures time.
"""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlplat.serving.asgi import INLINE_BUDGET_MS
from mlplat.serving.batching import Batcher, BatchPolicy, batch_key, merge, split
from mlplat.serving.predictor import LoadedModel
from mlplat.serving.protocol import Inputs, Signature
from mlplat.stack import Serving

POISON = -7.5  # a row holding this value makes the fake model raise (no request holds it otherwise)
COLUMNS = ("a", "b")


def frozen() -> float:
    return 0.0


class Recorder:
    """A fake estimator: ``a + 10 b`` per row, raising on a poisoned row; remembers each call's rows."""

    def __init__(self, slow: bool = False, gate: threading.Event | None = None, output: str = "array"):
        self.calls: list[int] = []
        self.gate = gate
        self.output = output
        self.model = LoadedModel("m", 1, Path("."), Signature(), "sklearn", self.predict, batchable=True)
        if slow:  # predicted in a worker thread, as a slow model is
            self.model.ewma_ms = INLINE_BUDGET_MS * 10

    def predict(self, inputs: Inputs) -> Any:
        self.calls.append(inputs.rows)
        if self.gate is not None:
            assert self.gate.wait(30), "the test never released the model"
        array = inputs.array if inputs.array is not None else np.array([inputs.frame[c] for c in COLUMNS]).T
        if (array == POISON).any():
            raise ValueError("poisoned row")
        out = array[:, 0] + 10 * array[:, 1]
        if self.output == "series":
            return pd.Series(out)
        if self.output == "frame":
            return pd.DataFrame({"score": out, "twice": 2 * out})
        if self.output == "scalar":
            return float(out.sum())
        return out


def request(i: int, rows: int = 1, poison: bool = False) -> Inputs:
    array = np.array([[float(i), float(r)] for r in range(rows)])
    if poison:
        array[-1, 0] = POISON
    return Inputs(rows=rows, columns=COLUMNS, array=array)


def expected(inputs: Inputs) -> np.ndarray:
    assert inputs.array is not None
    return inputs.array[:, 0] + 10 * inputs.array[:, 1]


async def arrive(batcher: Batcher, inputs: Inputs, delay: int) -> Any:
    for _ in range(delay):  # arrive ``delay`` event-loop ticks after the burst started
        await asyncio.sleep(0)
    return await batcher.predict(inputs)


def run_burst(batcher: Batcher, requests: list[Inputs], delays: list[int]) -> list[Any]:
    async def main() -> list[Any]:
        return await asyncio.gather(*(arrive(batcher, r, d) for r, d in zip(requests, delays)),
                                    return_exceptions=True)
    return asyncio.run(main())


# --- properties -------------------------------------------------------------------------------

bursts = st.lists(st.tuples(st.integers(1, 5), st.integers(0, 4), st.booleans()), min_size=1, max_size=24)


@settings(max_examples=150, deadline=None, database=None, derandomize=True)
@given(burst=bursts, max_rows=st.integers(1, 20), slow=st.booleans())
def test_a_burst_answers_each_request_as_if_alone(burst, max_rows, slow):
    """Any sizes, arrival ticks and batch limit: every request gets exactly its own predictions, a
    poisoned request fails alone, no model call passes the row limit unless one request does."""
    recorder = Recorder(slow=slow)
    batcher = Batcher(recorder.model, BatchPolicy(True, max_rows, 2.0), clock=frozen)
    requests = [request(i, rows, poison) for i, (rows, _, poison) in enumerate(burst)]
    results = run_burst(batcher, requests, [delay for _, delay, _ in burst])
    for (rows, _, poison), inputs, result in zip(burst, requests, results):
        if poison:
            assert isinstance(result, ValueError) and "poisoned" in str(result)
        else:
            assert isinstance(result, np.ndarray) and result.shape == (rows,)
            np.testing.assert_array_equal(result, expected(inputs))
    biggest = max(rows for rows, _, _ in burst)
    assert all(rows <= max(max_rows, biggest) for rows in recorder.calls)
    clean_rows = sum(rows for rows, _, poison in burst if not poison)
    assert sum(recorder.calls) >= clean_rows  # each clean row predicted at least once
    assert not batcher._busy and not batcher._queue  # idle again: the next request leads at once


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(sizes=st.lists(st.integers(1, 4), min_size=1, max_size=20), output=st.sampled_from(["array", "series", "frame"]))
def test_a_burst_in_one_tick_is_one_model_call(sizes, output):
    recorder = Recorder(output=output)
    batcher = Batcher(recorder.model, BatchPolicy(True, 1000, 2.0), clock=frozen)
    requests = [request(i, rows) for i, rows in enumerate(sizes)]
    results = run_burst(batcher, requests, [0] * len(sizes))
    assert recorder.calls == [sum(sizes)]
    for inputs, result in zip(requests, results):
        if output == "frame":
            assert list(result.columns) == ["score", "twice"] and list(result.index) == list(range(inputs.rows))
            np.testing.assert_array_equal(result["score"].to_numpy(), expected(inputs))
        else:
            np.testing.assert_array_equal(np.asarray(result), expected(inputs))


def test_a_lone_request_is_predicted_at_once_alone():
    recorder = Recorder()
    batcher = Batcher(recorder.model, BatchPolicy(), clock=frozen)
    for i in range(3):
        run_burst(batcher, [request(i, 2)], [0])
    assert recorder.calls == [2, 2, 2]


def test_requests_queued_while_the_model_is_busy_are_the_next_batch():
    gate = threading.Event()
    recorder = Recorder(slow=True, gate=gate)
    batcher = Batcher(recorder.model, BatchPolicy(True, 64, 2.0), clock=frozen)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(batcher.predict(request(0)))
        while not recorder.calls:  # the first request alone is being predicted (in a thread)
            await asyncio.sleep(0.001)
        later = [asyncio.ensure_future(batcher.predict(request(i))) for i in range(1, 5)]
        while len(batcher._queue) < 4:
            await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(first, *later)

    results = asyncio.run(main())
    assert recorder.calls == [1, 4]
    assert [float(r[0]) for r in results] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_max_latency_zero_joins_only_what_is_queued():
    recorder = Recorder()
    batcher = Batcher(recorder.model, BatchPolicy(True, 64, 0.0), clock=frozen)
    run_burst(batcher, [request(i) for i in range(5)], [0] * 5)
    # no yield before predicting, and a fast model runs inline: nothing can queue meanwhile
    assert recorder.calls == [1, 1, 1, 1, 1]
    recorder = Recorder(slow=True)
    batcher = Batcher(recorder.model, BatchPolicy(True, 64, 0.0), clock=frozen)
    run_burst(batcher, [request(i) for i in range(5)], [0] * 5)
    # a slow model runs in a thread: the four that queued while it predicted the first are one batch
    assert recorder.calls == [1, 4]


def test_requests_of_different_shapes_are_not_joined():
    recorder = Recorder()
    batcher = Batcher(recorder.model, BatchPolicy(), clock=frozen)
    ints = Inputs(rows=1, columns=COLUMNS, array=np.array([[1, 2]], dtype=np.int64))
    other = Inputs(rows=1, columns=("b", "a"), array=np.array([[1.0, 2.0]]))
    results = run_burst(batcher, [request(0), ints, request(1), other, request(2)], [0] * 5)
    assert recorder.calls == [1, 1, 1, 1, 1]  # FIFO: each shape change starts a new batch
    assert [float(r[0]) for r in results] == [0.0, 21.0, 1.0, 21.0, 2.0]


def test_frames_join_only_with_the_same_value_types():
    a = Inputs(rows=1, columns=COLUMNS, frame={"a": [1], "b": ["x"]})
    b = Inputs(rows=2, columns=COLUMNS, frame={"a": [2, 3], "b": ["y", "z"]})
    c = Inputs(rows=1, columns=COLUMNS, frame={"a": [1.5], "b": ["x"]})
    assert batch_key(a) == batch_key(b) != batch_key(c)
    joined = merge([a, b])
    assert joined.rows == 3 and joined.frame == {"a": [1, 2, 3], "b": ["x", "y", "z"]}


def test_output_without_a_row_per_input_row_stops_batching_for_the_version():
    recorder = Recorder(output="scalar")
    batcher = Batcher(recorder.model, BatchPolicy(), clock=frozen)
    results = run_burst(batcher, [request(i) for i in range(3)], [0] * 3)
    assert recorder.calls == [3, 1, 1, 1] and results == [0.0, 1.0, 2.0]
    assert not batcher.splittable
    run_burst(batcher, [request(i) for i in range(3)], [0] * 3)
    assert recorder.calls[4:] == [1, 1, 1]


def test_split_refuses_outputs_of_the_wrong_length():
    with pytest.raises(ValueError):
        split(np.zeros(3), [1, 1])
    with pytest.raises(ValueError):
        split({"a": 1}, [1])
    assert split([1, 2, 3], [2, 1]) == [[1, 2], [3]]


def test_a_cancelled_request_leaves_the_batcher_usable():
    gate = threading.Event()
    recorder = Recorder(slow=True, gate=gate)
    batcher = Batcher(recorder.model, BatchPolicy(), clock=frozen)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(batcher.predict(request(0)))
        while not recorder.calls:
            await asyncio.sleep(0.001)
        gone = asyncio.ensure_future(batcher.predict(request(1)))
        kept = asyncio.ensure_future(batcher.predict(request(2)))
        while len(batcher._queue) < 2:
            await asyncio.sleep(0)
        gone.cancel()
        gate.set()
        return await asyncio.gather(first, kept)

    first, kept = asyncio.run(main())
    assert float(first[0]) == 0.0 and float(kept[0]) == 2.0
    assert not batcher._busy and not batcher._queue


def test_observer_hears_of_batches_and_fallbacks():
    seen: list[tuple[int, int, bool]] = []
    recorder = Recorder()
    batcher = Batcher(recorder.model, BatchPolicy(), clock=frozen, observe=lambda *a: seen.append(a))
    run_burst(batcher, [request(0, 2), request(1, 1, poison=True), request(2, 3)], [0, 0, 0])
    assert seen == [(3, 6, True)]


# --- the stack's settings ---------------------------------------------------------------------


def test_serving_batching_defaults_and_per_model_override():
    serving = Serving.model_validate({"batching": {"maxBatchSize": 32},
                                      "models": {"fraud-scorer": {"batching": {"enabled": False}},
                                                 "ranker": {"batching": {"maxLatencyMs": 0}}}})
    assert (serving.batching.enabled, serving.batching.max_batch_size, serving.batching.max_latency_ms) == (True, 32, 2.0)
    assert serving.batching_for("fraud-scorer").enabled is False
    assert serving.batching_for("fraud-scorer").max_batch_size == 32
    assert serving.batching_for("ranker").max_latency_ms == 0 and serving.batching_for("ranker").enabled
    assert serving.batching_for("anything-else") == serving.batching
    assert Serving().batching.enabled and Serving().batching.max_batch_size == 64


@pytest.mark.parametrize("bad", [{"batching": {"maxBatchSize": 0}}, {"batching": {"maxLatencyMs": -1}},
                                 {"batching": {"maxBatchSzie": 8}}, {"models": {"bad name!": {}}},
                                 {"models": {"m": {"batching": {"enabled": "sometimes"}}}}])
def test_serving_batching_refuses_bad_settings(bad):
    with pytest.raises(ValueError):
        Serving.model_validate(bad)
