"""Adaptive micro-batching: concurrent requests for one model version predicted in one model call.

Shaped like Triton's dynamic batcher with no fixed queue delay, not like a timed window: a batch
is formed from the requests already waiting when the model is free, so a lone request is
predicted at once and never waits for company. Under concurrency, requests that arrive while a
batch is being predicted queue up and become the next batch.

One :class:`Batcher` per loaded version. The first request to find it idle leads: it yields to
the event loop so requests that are ready to run at the same moment can join (and keeps yielding
only while the queue still grows, at most ``max_latency_ms`` after the oldest request queued and
until ``max_batch_size`` rows), then predicts the queue's head as one batch, inline when the
model is fast and in a worker thread when it is not (as single requests are, see
:func:`mlplat.serving.asgi.predict`). When its own request is answered, it hands the lead to the
oldest request still queued. Calls of one version are therefore serial: batching replaces
parallel calls, it never adds to them.

A batch only joins requests of the same shape (columns, dtype, per-column value types) so the
model sees the values it would have seen one by one. The batch's predictions are split back by
row counts; when the batched call raises, or returns something that cannot be split by rows,
every request of the batch is predicted alone, so a row that makes the model raise fails only
its own request.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlplat.serving import asgi
from mlplat.serving.predictor import LoadedModel
from mlplat.serving.protocol import Inputs

log = logging.getLogger("mlplat.gateway")

@dataclass(frozen=True)
class BatchPolicy:
    """``mlplat:serving.batching`` resolved for one model."""

    enabled: bool = True
    max_batch_size: int = 64  # rows per model call
    max_latency_ms: float = 2.0  # longest a queued request waits for others to join while they still arrive


class Unsplittable(ValueError):
    """The model's output for a batch has no row per input row."""


class _Item:
    __slots__ = ("inputs", "key", "queued", "waker", "done", "value", "error")

    def __init__(self, inputs: Inputs, key: Any, queued: float, waker: asyncio.Future[None]):
        self.inputs = inputs
        self.key = key
        self.queued = queued
        self.waker = waker  # resolved when the item is answered, or when it is handed the lead
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def answer(self, value: Any = None, error: BaseException | None = None) -> None:
        self.done, self.value, self.error = True, value, error
        if not self.waker.done():
            self.waker.set_result(None)

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


Observer = Callable[[int, int, bool], None]  # (requests, rows, fell back to one call per request)


class Batcher:
    """Batches the predictions of one loaded version (see the module docstring).

    ``clock`` (seconds) bounds the gathering by ``max_latency_ms``; ``observe`` is told of every
    model call made for more than one request."""

    def __init__(self, model: LoadedModel, policy: BatchPolicy, *, clock: Callable[[], float] = time.perf_counter,
                 observe: Observer | None = None):
        self.model = model
        self.policy = policy
        self.clock = clock
        self.observe = observe
        self.splittable = True  # False once the model answered a batch with something not split by rows
        self._queue: deque[_Item] = deque()
        self._busy = False

    async def predict(self, inputs: Inputs) -> Any:
        """The model's predictions for ``inputs`` alone (raises what predicting them alone raises)."""
        if not self.splittable:
            return await asgi.predict(self.model, inputs)
        item = _Item(inputs, batch_key(inputs), self.clock(), asyncio.get_running_loop().create_future())
        self._queue.append(item)
        if self._busy:
            try:
                await item.waker
            except BaseException:  # cancelled while queued: leave the queue, and pass on a lead just handed
                if not item.done:
                    led = item.waker.done() and not item.waker.cancelled()
                    self._discard(item)
                    if led:
                        self._hand_over()
                raise
            if item.done:
                return item.result()
            # handed the lead: what queued while the model was busy is the next batch, no gathering
        else:
            self._busy = True
            try:
                await self._gather()
            except BaseException:
                self._discard(item)
                self._hand_over()
                raise
        try:
            while not item.done:
                batch = self._take()
                try:
                    await self._run(batch)
                except BaseException:  # cancelled mid-batch: the others of the batch still get an answer
                    for other in batch:
                        if not other.done:
                            other.answer(error=RuntimeError("the batch this request was part of was interrupted"))
                    raise
        finally:
            self._hand_over()
        return item.result()

    def _discard(self, item: _Item) -> None:
        try:
            self._queue.remove(item)
        except ValueError:
            pass

    async def _gather(self) -> None:
        """Yield to the event loop while requests keep joining: tasks that are ready to run now
        (their bodies arrived in the same instant) enqueue before the batch is cut."""
        limit = self.policy.max_latency_ms / 1000.0
        seen = 0
        while (len(self._queue) != seen and self._rows() < self.policy.max_batch_size
               and self.clock() - self._queue[0].queued < limit):
            seen = len(self._queue)
            await asyncio.sleep(0)

    def _rows(self) -> int:
        return sum(item.inputs.rows for item in self._queue)

    def _hand_over(self) -> None:
        while self._queue:
            head = self._queue[0]
            if not head.waker.done():  # its task waits: it leads the next batch
                head.waker.set_result(None)
                return
            self._queue.popleft()  # a cancelled request: nobody waits for its answer
        self._busy = False

    def _take(self) -> list[_Item]:
        """The queue's head and the requests behind it that fit with it (same shape, row limit)."""
        first = self._queue.popleft()
        batch, rows = [first], first.inputs.rows
        if first.key is None:
            return batch
        while self._queue:
            nxt = self._queue[0]
            if nxt.key != first.key or rows + nxt.inputs.rows > self.policy.max_batch_size:
                break
            batch.append(self._queue.popleft())
            rows += nxt.inputs.rows
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        if len(batch) == 1:
            await _alone(self.model, batch[0])
            return
        sizes = [item.inputs.rows for item in batch]
        parts: list[Any] | None = None
        try:
            out = await asgi.predict(self.model, merge([item.inputs for item in batch]))
            parts = split(out, sizes)
        except Unsplittable as exc:
            self.splittable = False  # every batch would fail the same way: predict this version per request
            log.warning("%s v%s answers a batch without one prediction per row (%s); predicting it one request "
                        "at a time from now on", self.model.name, self.model.version, exc)
        except Exception as exc:  # a bad row, maybe: find out whose by predicting each request alone
            log.info("a batch of %d requests for %s v%s failed (%s: %s); predicting them one by one", len(batch),
                     self.model.name, self.model.version, type(exc).__name__, exc)
        if self.observe is not None:
            self.observe(len(batch), sum(sizes), parts is None)
        if parts is None:
            for item in batch:
                await _alone(self.model, item)
            return
        for item, part in zip(batch, parts):
            item.answer(part)


async def _alone(model: LoadedModel, item: _Item) -> None:
    try:
        item.answer(await asgi.predict(model, item.inputs))
    except Exception as exc:  # answered to this request only
        item.answer(error=exc)


def batch_key(inputs: Inputs) -> Any:
    """What two requests must share to be predicted in one call (``None``: never batched)."""
    if inputs.array is not None:
        array = inputs.array
        if array.ndim < 1 or inputs.frame is not None:
            return None
        return "array", inputs.columns, array.dtype.str, array.shape[1:]
    if inputs.frame is not None:
        # pandas infers a column's dtype from all of its values: join only frames whose columns hold
        # the same kinds of values, so the joined frame has the dtypes each request would have had
        return "frame", tuple(inputs.frame), tuple(frozenset(map(type, values)) for values in inputs.frame.values())
    return None


def merge(parts: Sequence[Inputs]) -> Inputs:
    """One :class:`Inputs` holding the rows of ``parts`` in order (all of one :func:`batch_key`)."""
    first = parts[0]
    rows = sum(p.rows for p in parts)
    if first.array is not None:
        arrays = [p.array for p in parts]
        return Inputs(rows=rows, columns=first.columns, array=np.concatenate(arrays))  # type: ignore[arg-type]
    assert first.frame is not None
    frame: dict[str, list[Any]] = {name: [] for name in first.frame}
    for p in parts:
        assert p.frame is not None
        for name, values in p.frame.items():
            frame[name].extend(values)
    return Inputs(rows=rows, columns=first.columns, frame=frame)


def split(predictions: Any, sizes: Sequence[int]) -> list[Any]:
    """``predictions`` of a batch cut back into one part per request (``sizes``: rows of each)."""
    total = sum(sizes)
    bounds = np.cumsum([0, *sizes]).tolist()
    if isinstance(predictions, np.ndarray):
        if predictions.ndim == 0 or predictions.shape[0] != total:
            raise Unsplittable(f"an array of shape {list(predictions.shape)} for {total} rows")
        return [predictions[a:b] for a, b in zip(bounds, bounds[1:])]
    if hasattr(predictions, "iloc") and hasattr(predictions, "reset_index"):  # a DataFrame or Series
        if len(predictions) != total:
            raise Unsplittable(f"{len(predictions)} rows of output for {total} rows")
        return [predictions.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds, bounds[1:])]
    if isinstance(predictions, (list, tuple)):
        if len(predictions) != total:
            raise Unsplittable(f"{len(predictions)} values for {total} rows")
        return [list(predictions[a:b]) for a, b in zip(bounds, bounds[1:])]
    raise Unsplittable(f"a {type(predictions).__name__}")
