"""Monitoring passes on the stack's schedule, on a daemon thread beside the serving gateway.

``MonitorLoop(spec, ctx).start()`` runs :func:`run_pass` every ``monitoring.schedule``
(first pass after one interval); ``stop()`` ends it. A pass never runs on a
request thread: webhooks are sent by their own sender thread and retraining runs
inside this loop's thread, so neither blocks serving. A failed pass is logged and
the next one runs on time.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from mlplat.stack import duration_seconds

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.stack import StackSpec

log = logging.getLogger("mlplat.monitoring")


class MonitorLoop:
    def __init__(self, spec: StackSpec, ctx: Context, *, interval: float | None = None, retrain: str = "run") -> None:
        self.spec = spec
        self.ctx = ctx
        self.interval = float(interval if interval is not None else duration_seconds(spec.monitoring.schedule))
        self.retrain = retrain
        self.passes = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlplat-monitor", daemon=True)

    def start(self) -> MonitorLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        from mlplat.errors import MlplatError
        from mlplat.services.monitoring.passes import run_pass

        while not self._stop.wait(self.interval):
            try:
                run_pass(self.spec, self.ctx, deliver="background", retrain=self.retrain)
                self.passes += 1
                self.last_error = None
            except MlplatError as exc:
                self.last_error = str(exc)
                log.warning("monitoring pass failed: %s", exc)
            except Exception as exc:  # noqa: BLE001 - the gateway must keep serving; the next pass retries
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("monitoring pass crashed")
