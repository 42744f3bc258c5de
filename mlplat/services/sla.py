"""The platform's service levels, measured from its own records against the stack's objectives.

``mlplat sla`` (operation ``sla.report``) reads one stack's ledger over a period ending at the
context's clock and measures (docs/SLA.md defines each figure):

* **availability** of the serving gateway and of the control plane (``mlplat server``), from the
  health samples they write (:mod:`mlplat.services.health`): the share of time covered by ready
  samples out of ready, not-ready and *down* time, down being the time from the last sample of a
  process that stopped without recording a clean stop until the next process of the same component
  started (or the period's end); and the share of their requests answered without a 5xx;
* the **gateway's overhead** at p99: the time the gateway adds to a request beyond the model's own
  predict call, as the upper bound of the histogram bucket holding the 99th percentile;
* **promotion to serving** (p95, nearest rank): from a version's audited promotion to production
  until the version first takes traffic in that environment (the ``deployments`` intervals); a
  promotion not serving yet counts with its time so far;
* **rollback time** (the longest): from when a rollback was asked for (the command starting, or the
  canary controller confirming a breach) until the ledger switched the routing;
* **support response**: stated, not measured (the platform keeps no support tickets).

A figure with no data is not a breach. :func:`report` returns a :class:`SlaReport`; ``breached``
tells the command to exit 1.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mlplat.services import health

Interval = tuple[float, float]

MET, BREACHED, NO_DATA, NOT_MEASURED = "met", "breached", "no data", "not measured"


# --- intervals -----------------------------------------------------------------------------------


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """The intervals merged: sorted, non-overlapping, empty ones dropped."""
    out: list[Interval] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def subtract(intervals: Sequence[Interval], minus: Sequence[Interval]) -> list[Interval]:
    """``intervals`` (merged) without any time in ``minus`` (merged)."""
    out: list[Interval] = []
    for a, b in intervals:
        pieces = [(a, b)]
        for c, d in minus:
            pieces = [p for x, y in pieces for p in ((x, min(y, c)), (max(x, d), y)) if p[1] > p[0]]
        out.extend(pieces)
    return out


def clip(intervals: Iterable[Interval], start: float, end: float) -> list[Interval]:
    return [(max(a, start), min(b, end)) for a, b in intervals if min(b, end) > max(a, start)]


def length(intervals: Iterable[Interval]) -> float:
    return sum(b - a for a, b in intervals)


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile by nearest rank (the smallest value with at least ``q`` of them at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# --- availability from health samples ------------------------------------------------------------


@dataclass(frozen=True)
class Availability:
    environment: str
    up_s: float
    not_ready_s: float
    down_s: float
    requests: int
    errors: int
    instances: int
    crashes: int

    @property
    def time_share(self) -> float | None:
        total = self.up_s + self.not_ready_s + self.down_s
        return self.up_s / total if total > 0 else None

    @property
    def request_share(self) -> float | None:
        return 1 - self.errors / self.requests if self.requests else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"time_share": self.time_share, "request_share": self.request_share}


def availability(samples: Sequence[health.Sample], start: float, end: float) -> Availability | None:
    """Up, not-ready and down time of one component in one environment over ``[start, end]`` (see the module).

    Several processes at once (gateway workers) count once: time any of them was ready is up time."""
    if not samples:
        return None
    environment = samples[0].environment
    by_instance: dict[str, list[health.Sample]] = {}
    for s in samples:
        by_instance.setdefault(s.instance, []).append(s)
    starts = sorted({s.started_at for s in samples})
    ready: list[Interval] = [(s.window_start, s.window_end) for s in samples if s.ready]
    not_ready: list[Interval] = [(s.window_start, s.window_end) for s in samples if not s.ready]
    down: list[Interval] = []
    crashes = 0
    for rows in by_instance.values():
        last = max(rows, key=lambda s: (s.window_end, s.stopped))  # a stop row closes at its last window's end
        if last.stopped:
            continue
        # the process's interval, from its full windows (its first, written at start, and a stop's are short)
        widths = sorted(s.window_end - s.window_start for s in rows
                        if s.window_start > s.started_at and not s.stopped and s.window_end > s.window_start)
        interval = widths[len(widths) // 2] if widths else health.DEFAULT_INTERVAL_S
        if end - last.window_end <= 2 * interval + 1:  # still running: its current window is not written yet
            (ready if last.ready else not_ready).append((last.window_end, end))
            continue
        crashes += 1
        following = [t for t in starts if t > last.window_end]
        down.append((last.window_end, following[0] if following else end))
    up = union(clip(ready, start, end))
    nr = subtract(union(clip(not_ready, start, end)), up)
    dn = subtract(subtract(union(clip(down, start, end)), up), nr)
    counted = [s for s in samples if start <= s.window_end <= end]
    return Availability(environment=environment, up_s=length(up), not_ready_s=length(nr), down_s=length(dn),
                        requests=sum(s.requests for s in counted), errors=sum(s.errors for s in counted),
                        instances=len(by_instance), crashes=crashes)


def overhead_histogram(samples: Iterable[health.Sample]) -> list[int]:
    total = health.empty_histogram()
    for s in samples:
        for i, count in enumerate(s.overhead[:len(total)]):
            total[i] += count
    return total


# --- promotion to serving, rollbacks --------------------------------------------------------------


@dataclass(frozen=True)
class Promotion:
    model: str
    version: int
    environment: str
    promoted_at: float
    serving_at: float | None  # None: not serving yet
    seconds: float  # until serving, or until the period's end


@dataclass(frozen=True)
class Rollback:
    model: str
    environment: str
    to_version: int | None
    requested_at: float
    done_at: float
    seconds: float
    actor: str
    reason: str


def _tables(conn: Any) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def promotions(conn: Any, start: float, end: float) -> list[Promotion]:
    """Production promotions audited in ``[start, end]`` and when each version first served after it."""
    tables = _tables(conn)
    if "audit_log" not in tables:
        return []
    out = []
    for row in conn.execute("SELECT ts, model, version, environment, evidence FROM audit_log WHERE action = ? "
                            "AND ts >= ? AND ts <= ? ORDER BY seq", ("stage.changed", start, end)).fetchall():
        evidence = json.loads(row["evidence"] or "{}")
        if evidence.get("stage") != "production" or row["version"] is None:
            continue
        promoted = float(row["ts"])
        serving = _serving_from(conn, row["model"], row["environment"], int(row["version"]), promoted) \
            if "deployments" in tables else None
        seconds = (serving if serving is not None else end) - promoted
        out.append(Promotion(model=row["model"], version=int(row["version"]), environment=row["environment"],
                             promoted_at=promoted, serving_at=serving, seconds=max(0.0, seconds)))
    return out


def _serving_from(conn: Any, model: str, environment: str, version: int, since: float) -> float | None:
    """The first moment at or after ``since`` when ``version`` takes traffic (None: it has not since)."""
    rows = conn.execute("SELECT started_at, ended_at FROM deployments WHERE model = ? AND environment = ? AND "
                        "version = ? ORDER BY started_at", (model, environment, version)).fetchall()
    for started, ended in ((float(r[0]), r[1]) for r in rows):
        if started <= since and (ended is None or float(ended) > since):
            return since  # already serving (e.g. a canary from staging) when promoted
        if started >= since:
            return started
    return None


def rollbacks(conn: Any, start: float, end: float) -> list[Rollback]:
    """Rollbacks recorded in ``[start, end]``, each from its request to the switch."""
    if "rollout_events" not in _tables(conn):
        return []
    out = []
    for row in conn.execute("SELECT ts, model, environment, actor, reason, metrics FROM rollout_events WHERE "
                            "event = 'rolled_back' AND ts >= ? AND ts <= ? ORDER BY ts, id", (start, end)).fetchall():
        detail = json.loads(row["metrics"] or "{}")
        done = float(row["ts"])
        # rollbacks recorded before the request time was: the switch itself is one transaction
        requested = float(detail.get("requested_at", done))
        out.append(Rollback(model=row["model"], environment=row["environment"], to_version=detail.get("to_version"),
                            requested_at=requested, done_at=done, seconds=max(0.0, done - requested),
                            actor=row["actor"], reason=row["reason"]))
    return out


# --- the report ------------------------------------------------------------------------------------


@dataclass
class Figure:
    key: str
    name: str
    objective: float
    unit: str  # share | ms | minutes | seconds | hours
    better: str  # higher | lower
    value: float | None
    status: str
    detail: str
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _judge(value: float | None, objective: float, better: str) -> str:
    if value is None:
        return NO_DATA
    ok = value >= objective if better == "higher" else value <= objective
    return MET if ok else BREACHED


@dataclass
class SlaReport:
    stack: str
    team: str
    environment: str
    start: float
    end: float
    label: str
    control_plane: str  # embedded | server
    figures: list[Figure] = field(default_factory=list)
    availability: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    promotions: list[Promotion] = field(default_factory=list)
    rollbacks: list[Rollback] = field(default_factory=list)

    @property
    def breached(self) -> bool:
        return any(f.status == BREACHED for f in self.figures)

    def figure(self, key: str) -> Figure:
        return next(f for f in self.figures if f.key == key)

    def to_dict(self) -> dict[str, Any]:
        return {"stack": self.stack, "team": self.team, "environment": self.environment,
                "period": {"start": self.start, "end": self.end, "label": self.label,
                           "days": round((self.end - self.start) / 86400, 4)},
                "control_plane": self.control_plane, "breached": self.breached,
                "figures": [f.to_dict() for f in self.figures], "availability": self.availability,
                "promotions": [asdict(p) for p in self.promotions], "rollbacks": [asdict(r) for r in self.rollbacks]}


def _availability_figures(key: str, name: str, objective: float, found: list[Availability],
                          absent: str) -> list[Figure]:
    if not found:
        return [Figure(f"{key}_availability", f"{name} availability", objective, "share", "higher", None, NO_DATA,
                       absent),
                Figure(f"{key}_request_success", f"{name} requests without 5xx", objective, "share", "higher", None,
                       NO_DATA, absent)]
    timed = [a for a in found if a.time_share is not None]
    worst = min(timed, key=lambda a: a.time_share or 0.0) if timed else None
    requests = sum(a.requests for a in found)
    errors = sum(a.errors for a in found)
    share = 1 - errors / requests if requests else None
    time_value = worst.time_share if worst is not None else None
    time_detail = (f"worst environment '{worst.environment}': up {_hours(worst.up_s)}, not ready "
                   f"{_hours(worst.not_ready_s)}, down {_hours(worst.down_s)} ({worst.crashes} unclean stop(s), "
                   f"{worst.instances} process(es))") if worst is not None else "no time covered by health samples"
    return [Figure(f"{key}_availability", f"{name} availability", objective, "share", "higher", time_value,
                   _judge(time_value, objective, "higher"), time_detail, sum(a.instances for a in found)),
            Figure(f"{key}_request_success", f"{name} requests without 5xx", objective, "share", "higher", share,
                   _judge(share, objective, "higher"),
                   f"{errors} of {requests} request(s) answered 5xx" if requests else "no requests in the period",
                   requests)]


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


def report(conn: Any, spec: Any, *, start: float, end: float, label: str, control_plane: str) -> SlaReport:
    """Every figure of docs/SLA.md for ``spec``'s ledger over ``[start, end]`` against ``spec.sla``."""
    objectives = spec.sla
    out = SlaReport(stack=spec.name, team=spec.team, environment=spec.environment, start=start, end=end, label=label,
                    control_plane=control_plane)
    for component, key, name, objective in (
            (health.GATEWAY, "gateway", "gateway", objectives.gateway_availability),
            (health.CONTROL_PLANE, "control_plane", "control plane", objectives.control_plane_availability)):
        samples = health.samples(conn, component, start, end)
        by_env: dict[str, list[health.Sample]] = {}
        for s in samples:
            by_env.setdefault(s.environment, []).append(s)
        found = [a for a in (availability(rows, start, end) for rows in by_env.values()) if a is not None]
        out.availability[component] = [a.to_dict() for a in found]
        if component == health.CONTROL_PLANE and not found and control_plane == "embedded":
            absent = "embedded control plane: every command opens the ledger itself, there is no server to be down"
            figures = _availability_figures(key, name, objective, [], absent)
            for f in figures:
                f.status = NOT_MEASURED
        else:
            figures = _availability_figures(key, name, objective, found,
                                            f"no {name} ran in the period (no health samples)")
        out.figures += figures
        if component == health.GATEWAY:
            histogram = overhead_histogram(s for s in samples if start <= s.window_end <= end)
            p99 = health.quantile_upper_bound(histogram, 0.99)
            value = None if p99 is None else p99
            counted = sum(histogram)
            out.figures.append(Figure(
                "gateway_overhead_p99_ms", "gateway overhead p99", objectives.gateway_overhead_p99_ms, "ms", "lower",
                value, _judge(value, objectives.gateway_overhead_p99_ms, "lower"),
                f"at most {value:g} ms for 99 % of {counted} request(s) (histogram bucket bound)"
                if value is not None and math.isfinite(value) else
                (f"above {health.OVERHEAD_BUCKETS_MS[-1]:g} ms for 1 % of {counted} request(s)" if value is not None
                 else "no requests in the period"), counted))
    out.promotions = promotions(conn, start, end)
    minutes = [p.seconds / 60 for p in out.promotions]
    p95 = nearest_rank(minutes, 0.95)
    waiting = sum(1 for p in out.promotions if p.serving_at is None)
    out.figures.append(Figure(
        "promotion_to_serving_minutes", "promotion to serving p95", objectives.promotion_to_serving_minutes, "minutes",
        "lower", p95, _judge(p95, objectives.promotion_to_serving_minutes, "lower"),
        (f"{len(minutes)} production promotion(s), {waiting} not serving yet (counted until now)" if minutes
         else "no production promotion in the period"), len(minutes)))
    out.rollbacks = rollbacks(conn, start, end)
    seconds = [r.seconds for r in out.rollbacks]
    longest = max(seconds) if seconds else None
    out.figures.append(Figure(
        "rollback_seconds", "rollback time (longest)", objectives.rollback_seconds, "seconds", "lower", longest,
        _judge(longest, objectives.rollback_seconds, "lower"),
        f"{len(seconds)} rollback(s)" if seconds else "no rollback in the period", len(seconds)))
    out.figures.append(Figure(
        "support_response_hours", "support response", objectives.support_response_hours, "hours", "lower", None,
        NOT_MEASURED, "the platform keeps no support tickets: measured by the platform team's helpdesk (docs/SLA.md)"))
    return out
