"""Health samples: the durable record of what a gateway or control-plane server saw, interval by interval.

A :class:`HealthRecorder` lives in a serving process (``mlplat serve``'s gateway, ``mlplat server``).
Requests are counted in memory (:meth:`HealthRecorder.observe`: outcome, and the time the process
itself added to the request); every ``interval`` seconds, and once more when the process stops
cleanly, :meth:`HealthRecorder.flush` appends one ``health_samples`` row: the window it covers,
whether the readiness check passed at its end, the requests and 5xx answers, the overhead
histogram, and ``stopped`` on the last row of a clean stop. A process that dies without that last
row is seen as down from its last row until the next process of the same component starts
(:mod:`mlplat.services.sla`).

Writing never disturbs serving: a failed write is logged and its counts carried into the next
window; a ledger whose schema predates the table (``mlplat up`` not rerun) is left alone.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("mlplat.health")

GATEWAY, CONTROL_PLANE = "gateway", "control-plane"
COMPONENTS = (GATEWAY, CONTROL_PLANE)
DEFAULT_INTERVAL_S = 30.0
# Upper bounds (ms) of the overhead histogram's buckets; one more bucket counts everything above the last.
OVERHEAD_BUCKETS_MS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
TABLE = "health_samples"


def has_table(conn: Any) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone() is not None


def empty_histogram() -> list[int]:
    return [0] * (len(OVERHEAD_BUCKETS_MS) + 1)


def bucket_of(ms: float) -> int:
    """The histogram bucket of ``ms``: the first bound at or above it (the last bucket: above every bound)."""
    return bisect_left(OVERHEAD_BUCKETS_MS, ms)


def quantile_upper_bound(histogram: Sequence[int], q: float) -> float | None:
    """The upper bound (ms) of the bucket that holds the ``q`` quantile: the quantile is at most this.

    None for an empty histogram; ``inf`` when the quantile lies above the last bound."""
    total = sum(histogram)
    if total <= 0:
        return None
    rank = q * total
    running = 0
    for index, count in enumerate(histogram):
        running += count
        if running >= rank and count:
            return OVERHEAD_BUCKETS_MS[index] if index < len(OVERHEAD_BUCKETS_MS) else float("inf")
    return float("inf")


@dataclass
class _Window:
    requests: int = 0
    errors: int = 0
    overhead: list[int] = field(default_factory=empty_histogram)


class HealthRecorder:
    """Counts one process's requests and appends a ``health_samples`` row every ``interval`` seconds.

    ``ready``: the process's readiness check, called at the end of each window (True: it could serve).
    ``clock``: the time stamped on the rows (injectable: tests move it instead of waiting)."""

    def __init__(self, db_path: Path | str | Any, *, component: str, environment: str,
                 ready: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.time,
                 interval: float = DEFAULT_INTERVAL_S, instance: str | None = None):
        if component not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}")
        self.db_path = db_path
        self.component = component
        self.environment = environment
        self.ready = ready
        self.clock = clock
        self.interval = interval
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}:{int(time.time() * 1000)}"
        self._lock = threading.Lock()
        self._window = _Window()
        self._started_at: float | None = None
        self._window_start: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._disabled = False

    def observe(self, status: int, overhead_ms: float | None = None) -> None:
        """One answered request: its HTTP status, and the milliseconds this process added to it (None: not
        measured)."""
        with self._lock:
            window = self._window
            window.requests += 1
            if status >= 500:
                window.errors += 1
            if overhead_ms is not None:
                window.overhead[bucket_of(max(0.0, overhead_ms))] += 1

    def begin(self) -> None:
        """Mark the process's start (the first window opens now)."""
        now = self.clock()
        self._started_at = now
        self._window_start = now

    def flush(self, *, stopped: bool = False) -> bool:
        """Append the current window as a row and open the next; returns whether a row was written."""
        if self._disabled:
            return False
        if self._started_at is None:
            self.begin()
        assert self._started_at is not None and self._window_start is not None
        end = self.clock()
        try:
            ready = bool(self.ready())
        except Exception as exc:  # a readiness check that fails says "not ready"
            log.warning("readiness check failed: %s", exc)
            ready = False
        with self._lock:
            window, self._window = self._window, _Window()
        row = (self.component, self.environment, self.instance, self._started_at, self._window_start, end,
               int(ready), window.requests, window.errors, json.dumps(window.overhead), int(stopped))
        try:
            self._write(row)
        except Exception as exc:  # serving goes on; the counts go into the next window
            log.warning("could not record a health sample: %s", exc)
            with self._lock:
                merged = self._window
                merged.requests += window.requests
                merged.errors += window.errors
                merged.overhead = [a + b for a, b in zip(merged.overhead, window.overhead)]
            return False
        self._window_start = end
        return True

    def _write(self, row: tuple[Any, ...]) -> None:
        from mlplat.db import open_database

        # a path or URL of the ledger, or an open Database (the control plane's own)
        db: Any = self.db_path if hasattr(self.db_path, "transaction") else open_database(self.db_path)
        conn = db.connect()
        try:
            if not has_table(conn):
                self._disabled = True
                log.warning("the ledger has no %s table (run `mlplat up` to upgrade it): health is not recorded",
                            TABLE)
                return
            with db.transaction(conn):
                conn.execute(f"INSERT INTO {TABLE} (component, environment, instance, started_at, window_start, "
                             "window_end, ready, requests, errors, overhead, stopped) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                             row)
        finally:
            conn.close()

    # --- the background writer -------------------------------------------------------------

    def start(self) -> None:
        """Write a first row now (the process is up) and then one every ``interval`` in a thread."""
        self.begin()
        self.flush()
        self._thread = threading.Thread(target=self._run, name=f"mlplat-health-{self.component}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def stop(self) -> None:
        """Stop the thread and write the last window, marked as a clean stop (once: later calls do nothing)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush(stopped=True)


# --- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    component: str
    environment: str
    instance: str
    started_at: float
    window_start: float
    window_end: float
    ready: bool
    requests: int
    errors: int
    overhead: tuple[int, ...]
    stopped: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Sample:
        histogram = json.loads(row["overhead"] or "[]")
        return cls(component=row["component"], environment=row["environment"], instance=row["instance"],
                   started_at=float(row["started_at"]), window_start=float(row["window_start"]),
                   window_end=float(row["window_end"]), ready=bool(row["ready"]), requests=int(row["requests"]),
                   errors=int(row["errors"]), overhead=tuple(int(c) for c in histogram), stopped=bool(row["stopped"]))


def samples(conn: Any, component: str, start: float, end: float,
            environments: Iterable[str] | None = None) -> list[Sample]:
    """The component's samples whose window overlaps ``[start, end]``, plus each instance's last sample before
    ``start`` (a process that died before the period may have been down into it), in time order."""
    if not has_table(conn):
        return []
    rows = [dict(r) for r in conn.execute(
        f"SELECT * FROM {TABLE} WHERE component = ? AND window_end >= ? AND window_start <= ? "
        "ORDER BY window_end, id", (component, start, end))]
    before = [dict(r) for r in conn.execute(
        f"SELECT * FROM {TABLE} WHERE id IN (SELECT max(id) FROM {TABLE} WHERE component = ? AND window_end < ? "
        "GROUP BY instance) ORDER BY window_end, id", (component, start))]
    wanted = set(environments) if environments is not None else None
    out = [Sample.from_row(r) for r in before + rows]
    return [s for s in out if wanted is None or s.environment in wanted]
