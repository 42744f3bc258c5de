"""The gateway's canary controller: the provider-neutral judge fed with the traffic it served.

A controller thread judges running rollouts on live per-variant statistics and advances or
rolls them back through :class:`mlplat.services.rollout.CanaryJudge`, the same judge, rules and
audit entries as every provider's, and the same rollback path as ``mlplat rollback``. Its state
is in the database, so a restarted gateway resumes the rollout at its current step.

Several gateways (one per host, or beside each of several servers) may serve one environment;
one controller at a time judges a rollout: the one holding the ledger lease
``rollout:<model>:<environment>`` (:mod:`mlplat.services.leases`). It judges on the traffic it
served itself. When it stops renewing (its gateway stopped, crashed or hung), another gateway's
controller takes the lease over once it expires. A step is also a compare-and-set on the
rollout's current step, so a holder that was paused past its lease cannot take a step twice.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlplat.contracts.canary import CanaryMetrics, CanaryWindow, VariantStats
from mlplat.db import Database, PgDatabase, ledger_target, open_database
from mlplat.services import rollout as ro
from mlplat.services.leases import DEFAULT_TTL_S, Leases
from mlplat.serving.routing import Routing

CONTROLLER = "mlplat-canary-controller"
log = logging.getLogger("mlplat.gateway")


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


def lease_name(rollout: Mapping[str, Any]) -> str:
    """The lease a controller holds while it judges ``rollout``: one per (model, environment)."""
    return f"rollout:{rollout['model']}:{rollout['environment']}"


class CanaryController:
    """Judges every running rollout of one environment it holds the lease of, once per
    :meth:`control_once` call. ``holder`` names it among the controllers (default: host:pid:random)."""

    def __init__(self, db_path: Path, environment: str, routing: Routing, clock: Callable[[], float], *,
                 instance_type: str | None = None, price_per_hour: float | None = None, holder: str | None = None,
                 lease_ttl: float = DEFAULT_TTL_S):
        self.db_path = ledger_target(db_path)
        self.environment = environment
        # waits are recorded at most once a second per rollout: the controller passes several times a second
        self.judge = ro.CanaryJudge(GatewayCanaryMetrics(routing), actor=CONTROLLER, clock=clock, record_every=1.0,
                                    instance_type=instance_type, price_per_hour=price_per_hour)
        self.leases = Leases(holder, ttl=lease_ttl, clock=clock)
        self._leased: bool | None = None  # whether the ledger has the leases table (None: not looked yet)

    def database(self) -> Database | PgDatabase:
        return open_database(self.db_path)

    def control_once(self, last_recorded: dict[int, float] | None = None) -> list[tuple[int, str]]:
        """Judge every running rollout whose lease this controller holds (or takes now) once;
        returns ``(rollout id, action)`` for those acted on."""
        last_recorded = {} if last_recorded is None else last_recorded
        db = self.database()
        conn = db.connect()
        acted = []
        try:
            running = ro.running_rollouts(conn, self.environment)
            leased = self._has_leases(conn) if running else bool(self._leased)
            for rollout in running:
                if leased and not self.leases.hold(db, conn, lease_name(rollout)):
                    continue  # another controller judges it
                verdict = self.judge.judge(db, conn, rollout, last_recorded)
                if verdict.acted is not None:
                    acted.append((verdict.rollout_id, verdict.acted))
            live = {lease_name(r) for r in running}
            for name in self.leases if leased else ():
                if name not in live:  # that rollout ended: let whoever runs the next one take it at once
                    self.leases.release(db, conn, name)
        finally:
            conn.close()
        return acted

    def _has_leases(self, conn: Any) -> bool:
        """Whether the ledger has its ``leases`` table. A ledger not yet migrated to it (``mlplat up``
        or ``mlplat db upgrade`` not rerun) is judged without a lease, as a single gateway did before
        leases: its steps stay compare-and-sets, so even two such gateways never take a step twice."""
        if self._leased:
            return True
        try:
            conn.execute("SELECT holder FROM leases WHERE name = ?", ("",)).fetchall()
            self._leased = True
        except Exception as exc:
            if self._leased is None:
                log.warning("the ledger has no leases table (%s): every gateway's canary controller judges its "
                            "rollouts; run `mlplat up` (or `mlplat db upgrade`) so one at a time does", exc)
            self._leased = False
        return self._leased

    def release(self) -> None:
        """Give up every lease this controller holds (a stopping gateway hands its rollouts over at once)."""
        names = list(self.leases)
        if not names:
            return
        db = self.database()
        conn = db.connect()
        try:
            for name in names:
                self.leases.release(db, conn, name)
        finally:
            conn.close()
