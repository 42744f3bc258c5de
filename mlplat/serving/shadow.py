"""Shadow traffic: a share of an endpoint's requests mirrored to its shadow version, off the
request path (one worker thread, a bounded backlog: a lagging shadow drops mirrored requests
and counts them, it never slows the caller). Responses are discarded; agreement with the
primary's predictions is counted and both sides are captured for offline comparison."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mlplat.serving.metrics import Metrics
from mlplat.serving.protocol import Inputs
from mlplat.serving.routing import LiveEndpoint, LiveRoute, LoadFailure

SHADOW_BACKLOG = 64
# (request id, endpoint, route, inputs, predictions, latency ms, status, shadow, client request id)
Capturer = Callable[..., None]


class ShadowMirror:
    """Mirrors requests to shadow versions; ``stop()`` drops the backlog and waits for the one running."""

    def __init__(self, metrics: Metrics, capture: Capturer, backlog: int = SHADOW_BACKLOG):
        self.metrics = metrics
        self.capture = capture
        self.backlog = backlog
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlplat-shadow")
        self.pending = 0
        self._lock = threading.Lock()

    def mirror(self, request_id: str, live: LiveEndpoint, inputs: Inputs, primary: Any,
               client_id: str | None = None) -> None:
        """Queue ``inputs`` for ``live``'s shadow version (``primary``: what the caller was answered)."""
        shadow = live.shadow
        assert shadow is not None
        with self._lock:
            if self.pending >= self.backlog:
                self.metrics.observe_shadow(live.spec.model, shadow.version, 0, 0, False, dropped=True)
                return
            self.pending += 1
        self.pool.submit(self._run, request_id, live, shadow, inputs, primary, client_id)

    def stop(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, request_id: str, live: LiveEndpoint, shadow: LiveRoute, inputs: Inputs, primary: Any,
             client_id: str | None = None) -> None:
        started = time.perf_counter()
        try:
            model = shadow.model
            if isinstance(model, LoadFailure):
                raise RuntimeError(model.message)
            # the shadow may have another signature: re-check the inputs against it
            predictions = model.predict(inputs)
            status, error = 200, False
        except Exception:
            predictions, status, error = None, 500, True
        finally:
            with self._lock:
                self.pending -= 1
        seconds = time.perf_counter() - started
        rows, disagree = inputs.rows, 0
        if predictions is not None:
            disagree = disagreements(primary, predictions)
        self.metrics.observe(live.spec.model, shadow.version, "shadow", status, seconds)
        self.metrics.observe_shadow(live.spec.model, shadow.version, rows, disagree, error)
        self.capture(f"{request_id}:shadow", live, shadow, inputs, predictions, seconds * 1000, status, True,
                     client_id)


def disagreements(a: Any, b: Any) -> int:
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        return int(x.shape[0]) if x.ndim else 1
    if x.dtype.kind in "fc" or y.dtype.kind in "fc":
        same = np.isclose(x.astype(float), y.astype(float), rtol=1e-6, atol=1e-9)
    else:
        same = x == y
    if same.ndim > 1:
        same = same.reshape(same.shape[0], -1).all(axis=1)
    return int(np.size(same) - np.count_nonzero(same))
