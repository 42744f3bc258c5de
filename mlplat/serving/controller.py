"""The gateway's canary controller: the provider-neutral judge fed with the traffic it served.

A controller thread judges running rollouts on live per-variant statistics and advances or
rolls them back through :class:`mlplat.services.rollout.CanaryJudge`, the same judge, rules and
audit entries as every provider's, and the same rollback path as ``mlplat rollback``. Its state
is in the database, so a restarted gateway resumes the rollout at its current step.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlplat.contracts.canary import CanaryMetrics, CanaryWindow, VariantStats
from mlplat.db import ledger_target, open_database
from mlplat.services import rollout as ro
from mlplat.serving.routing import Routing

CONTROLLER = "mlplat-canary-controller"


class GatewayCanaryMetrics(CanaryMetrics):
    """What this gateway served of a rollout: the stable variant over the whole rollout (so the
    100 % step still has a baseline), the candidate per step, one latency sample per request.
    A window's ``mark`` is the number of candidate samples it held."""

    def __init__(self, routing: Routing):
        self.routing = routing

    def _current(self, rollout: Mapping[str, Any]) -> tuple[VariantStats, VariantStats] | None:
        rid, step = int(rollout["id"]), int(rollout["step_index"])
        stats = self.routing.rollout_stats.get(rid)
        live = self.routing.table.get(rollout["model"])
        if stats is None or live is None or live.rollout_id != rid or live.step_index != step:
            return None  # routing not reloaded yet: judge only traffic the current step received
        return stats.stable, stats.candidate.get(step, VariantStats())

    def window(self, rollout: Mapping[str, Any], now: float) -> CanaryWindow | None:
        current = self._current(rollout)
        if current is None:
            return None
        stable, candidate = current
        return CanaryWindow(stable, candidate, mark=len(candidate.latencies_ms))

    def since(self, rollout: Mapping[str, Any], mark: float, now: float) -> VariantStats | None:
        current = self._current(rollout)
        if current is None or mark > len(current[1].latencies_ms):
            return None  # the samples were capped away: the mark counts samples no longer kept
        return tail(current[1], int(mark))


def tail(stats: VariantStats, start: int) -> VariantStats:
    """The samples of ``stats`` from index ``start`` on (requests counted by latency samples)."""
    latencies = stats.latencies_ms[start:]
    ratio = len(latencies) / max(1, len(stats.latencies_ms))
    predictions = stats.predictions[int(len(stats.predictions) * (1 - ratio)):] if ratio else []
    return VariantStats(requests=len(latencies), errors=0, latencies_ms=list(latencies), predictions=list(predictions))


class CanaryController:
    """Judges every running rollout of one environment once per :meth:`control_once` call."""

    def __init__(self, db_path: Path, environment: str, routing: Routing, clock: Callable[[], float], *,
                 instance_type: str | None = None, price_per_hour: float | None = None):
        self.db_path = ledger_target(db_path)
        self.environment = environment
        # waits are recorded at most once a second per rollout: the controller passes several times a second
        self.judge = ro.CanaryJudge(GatewayCanaryMetrics(routing), actor=CONTROLLER, clock=clock, record_every=1.0,
                                    instance_type=instance_type, price_per_hour=price_per_hour)

    def control_once(self, last_recorded: dict[int, float] | None = None) -> list[tuple[int, str]]:
        """Judge every running rollout once; returns ``(rollout id, action)`` for those acted on."""
        last_recorded = {} if last_recorded is None else last_recorded
        db = open_database(self.db_path)
        conn = db.connect()
        acted = []
        try:
            for rollout in ro.running_rollouts(conn, self.environment):
                verdict = self.judge.judge(db, conn, rollout, last_recorded)
                if verdict.acted is not None:
                    acted.append((verdict.rollout_id, verdict.acted))
        finally:
            conn.close()
        return acted
