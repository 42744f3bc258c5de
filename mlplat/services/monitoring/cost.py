"""Cost attribution: instance-hours × price, busy time from captured latency, cost per prediction.

A deployment runs ``instances`` instances of ``instance_type`` from ``started`` to
``ended`` (or now). Its cost over a period is the overlap in hours × instances ×
price per hour (the deployment's own price, else the stack's price table, else
``serving.pricePerHour``). Busy time is the sum of captured request latencies;
utilisation = busy seconds / instance seconds. Cost per prediction = cost /
predictions served in the period. Lines roll up by team, model, version or
environment; the team's monthly budget is prorated to the period.
"""
from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlplat.contracts import Deployment, Usage
from mlplat.errors import MlplatError

DAYS_PER_MONTH = 365.25 / 12
GROUPS = ("team", "model", "version", "env")


class PeriodError(MlplatError):
    pass


@dataclass(frozen=True)
class Period:
    start: float
    end: float
    label: str

    @property
    def hours(self) -> float:
        return max(0.0, self.end - self.start) / 3600

    @property
    def days(self) -> float:
        return self.hours / 24


def parse_period(text: str, now: float | None = None) -> Period:
    """``7d``/``24h``/``30m`` (ending now), ``month`` (calendar month to date), ``2026-11``,
    ``2026-11-01..2026-11-15`` (dates in UTC, end inclusive)."""
    now = time.time() if now is None else now
    text = (text or "").strip()
    match = re.fullmatch(r"(\d+)([mhd])", text)
    if match:
        seconds = int(match.group(1)) * {"m": 60, "h": 3600, "d": 86400}[match.group(2)]
        if seconds <= 0:
            raise PeriodError(f"period '{text}' is empty", hint="use a positive length such as 7d")
        return Period(now - seconds, now, f"last {text}")
    if text == "month":
        day = datetime.fromtimestamp(now, tz=UTC)
        start = datetime(day.year, day.month, 1, tzinfo=UTC).timestamp()
        return Period(start, now, f"{day:%Y-%m} to date")
    match = re.fullmatch(r"(\d{4})-(\d{2})", text)
    if match:
        year, month = int(match.group(1)), int(match.group(2))
        if not 1 <= month <= 12:
            raise PeriodError(f"period '{text}' names month {month}", hint="months run from 01 to 12")
        start = datetime(year, month, 1, tzinfo=UTC).timestamp()
        end = start + calendar.monthrange(year, month)[1] * 86400
        return Period(start, min(end, now), text)
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})", text)
    if match:
        try:
            a = datetime.strptime(match.group(1), "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
            b = datetime.strptime(match.group(2), "%Y-%m-%d").replace(tzinfo=UTC).timestamp() + 86400
        except ValueError as exc:
            raise PeriodError(f"period '{text}': {exc}") from None
        if b <= a:
            raise PeriodError(f"period '{text}' ends before it starts", hint="write START..END with START ≤ END")
        return Period(a, b, text)
    raise PeriodError(f"cannot read period '{text}'",
                      hint="use 7d, 24h, month, 2026-11 or 2026-11-01..2026-11-15")


class _Rates:
    """Per-prediction cost and busy share of anything with cost, predictions and instance time.

    Training jobs count in the cost (and the budget), not in what serving a prediction costs."""

    cost_usd: float
    predictions: int
    busy_seconds: float
    instance_hours: float
    training_usd: float
    training_hours: float

    @property
    def cost_per_prediction(self) -> float | None:
        return (self.cost_usd - self.training_usd) / self.predictions if self.predictions else None

    @property
    def utilisation(self) -> float | None:
        serving = self.instance_hours - self.training_hours
        return self.busy_seconds / (serving * 3600) if serving > 1e-12 else None


@dataclass(frozen=True)
class TrainingRun:
    """A training job on ``instance_type`` from ``started`` to ``ended`` (``None``: still running),
    under the team and the model (and version) its run registered."""

    job_id: str
    team: str
    model: str
    version: int
    environment: str
    instance_type: str
    price_per_hour: float
    started: float
    ended: float | None = None


@dataclass
class CostLine(_Rates):
    team: str
    model: str
    version: int
    environment: str
    instance_type: str
    price_per_hour: float
    instance_hours: float = 0.0
    cost_usd: float = 0.0
    predictions: int = 0
    busy_seconds: float = 0.0
    kind: str = "serving"  # or "training": a training job's instance time
    training_usd: float = 0.0
    training_hours: float = 0.0


@dataclass
class CostGroup(_Rates):
    key: str
    cost_usd: float = 0.0
    instance_hours: float = 0.0
    predictions: int = 0
    busy_seconds: float = 0.0
    training_usd: float = 0.0
    training_hours: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "cost_usd": self.cost_usd, "instance_hours": self.instance_hours,
                "predictions": self.predictions, "busy_seconds": self.busy_seconds,
                "cost_per_prediction_usd": self.cost_per_prediction, "utilisation": self.utilisation,
                "training_usd": self.training_usd, "training_hours": self.training_hours}


@dataclass
class CostReport:
    period: Period
    by: str
    lines: list[CostLine]
    groups: list[CostGroup]
    budgets: dict[str, float] = field(default_factory=dict)  # team → monthly USD
    training: list[dict[str, Any]] = field(default_factory=list)  # one entry per training job in the period

    @property
    def total_usd(self) -> float:
        return sum(line.cost_usd for line in self.lines)

    @property
    def predictions(self) -> int:
        return sum(line.predictions for line in self.lines)

    def budget_for_period(self, team: str | None = None) -> float | None:
        teams = [team] if team else list(self.budgets)
        monthly = sum(self.budgets.get(t, 0.0) for t in teams)
        if not monthly:
            return None
        return monthly * self.period.days / DAYS_PER_MONTH

    def budget_share(self, team: str | None = None) -> float | None:
        budget = self.budget_for_period(team)
        if not budget:
            return None
        spent = sum(line.cost_usd for line in self.lines if team is None or line.team == team)
        return spent / budget

    def to_dict(self) -> dict[str, Any]:
        return {
            "period": {"start": self.period.start, "end": self.period.end, "label": self.period.label,
                       "days": self.period.days},
            "by": self.by,
            "total_usd": self.total_usd,
            "predictions": self.predictions,
            "cost_per_prediction_usd": self.total_usd / self.predictions if self.predictions else None,
            "budget": {t: {"monthly_usd": m, "period_usd": self.budget_for_period(t), "share": self.budget_share(t)}
                       for t, m in self.budgets.items()},
            "groups": [g.to_dict() for g in self.groups],
            "training": self.training,
        }


def attribute(
    deployments: Iterable[Deployment],
    usage: Iterable[Usage],
    period: Period,
    *,
    price_for: Callable[[str | None], float],
    default_instance_type: str,
    by: str = "model",
    budgets: dict[str, float] | None = None,
    training: Iterable[TrainingRun] = (),
) -> CostReport:
    """Cost lines per (team, model, version, environment) and their roll-up ``by`` one dimension.

    Each training job adds its overlap with the period × its price to a training line of its
    model (serving and training lines of a version stay apart; the groups sum both)."""
    if by not in GROUPS:
        raise MlplatError(f"cannot group cost by '{by}'", hint=f"use one of: {', '.join(GROUPS)}")
    lines: dict[tuple[str, str, int, str] | tuple[str, str, int, str, str], CostLine] = {}
    jobs: list[dict[str, Any]] = []
    for run in training:
        end = run.ended if run.ended is not None else period.end
        overlap = max(0.0, min(end, period.end) - max(run.started, period.start))
        if not (run.started < period.end and end >= period.start):
            continue
        tkey = (run.team, run.model, int(run.version), run.environment, "training")
        tline = lines.get(tkey)
        if tline is None:
            tline = lines[tkey] = CostLine(run.team, run.model, int(run.version), run.environment, run.instance_type,
                                           run.price_per_hour, kind="training")
        hours = overlap / 3600
        tline.instance_hours += hours
        tline.training_hours += hours
        tline.cost_usd += hours * run.price_per_hour
        tline.training_usd += hours * run.price_per_hour
        jobs.append({"job_id": run.job_id, "team": run.team, "model": run.model, "version": run.version,
                     "environment": run.environment, "instance_type": run.instance_type,
                     "price_per_hour": run.price_per_hour, "hours": hours, "cost_usd": hours * run.price_per_hour})
    for dep in deployments:
        end = dep.ended if dep.ended is not None else period.end
        overlap = max(0.0, min(end, period.end) - max(dep.started, period.start))
        instance_type = dep.instance_type or default_instance_type
        price = dep.price_per_hour if dep.price_per_hour is not None else price_for(instance_type)
        key = (dep.team, dep.model, int(dep.version), dep.environment)
        line = lines.get(key)
        if line is None:
            line = lines[key] = CostLine(dep.team, dep.model, int(dep.version), dep.environment, instance_type, price)
        hours = overlap / 3600 * max(0, dep.instances)
        line.instance_hours += hours
        line.cost_usd += hours * price
    for use in usage:
        key = (use.team, use.model, int(use.version), use.environment)
        line = lines.get(key)
        if line is None:  # served but no deployment record: traffic is counted, cost is unknown (zero)
            line = lines[key] = CostLine(use.team, use.model, int(use.version), use.environment, default_instance_type,
                                         price_for(default_instance_type))
        line.predictions += int(use.predictions)
        line.busy_seconds += float(use.busy_seconds)
    ordered = sorted(lines.values(), key=lambda line: (line.team, line.model, line.version, line.environment,
                                                       line.kind))
    return CostReport(period, by, ordered, _groups(ordered, by), dict(budgets or {}), jobs)


def report_rows(report: CostReport) -> list[dict[str, Any]]:
    """Rows for table/CSV output: one per group, with the budget columns when grouping by team."""
    rows = []
    for g in report.groups:
        row = {report.by: g.key, "cost_usd": round(g.cost_usd, 6), "instance_hours": round(g.instance_hours, 4),
               "predictions": g.predictions,
               "cost_per_prediction_usd": None if g.cost_per_prediction is None else round(g.cost_per_prediction, 8),
               "busy_seconds": round(g.busy_seconds, 3),
               "utilisation": None if g.utilisation is None else round(g.utilisation, 6),
               "training_usd": round(g.training_usd, 6), "training_hours": round(g.training_hours, 4)}
        if report.by == "team" and g.key in report.budgets:
            row["budget_period_usd"] = round(report.budget_for_period(g.key) or 0.0, 4)
            share = report.budget_share(g.key)
            row["budget_share"] = None if share is None else round(share, 6)
        rows.append(row)
    return rows


def metrics_for(report: CostReport, team: str) -> dict[str, float]:
    """``cost.*`` metrics of a team, for alert rules."""
    lines = [line for line in report.lines if line.team == team]
    spent = sum(line.cost_usd for line in lines)
    served = sum(line.predictions for line in lines)
    out = {"cost.usd": spent, "cost.predictions": float(served)}
    if report.period.days > 0:
        out["cost.daily_usd"] = spent / report.period.days
    if served:
        out["cost.per_prediction_usd"] = spent / served
    share = report.budget_share(team)
    if share is not None:
        out["cost.budget_share"] = share
    return out


def merge(reports: Sequence[CostReport], by: str) -> CostReport:
    """One report over several stacks (same period): lines side by side, budgets summed per team."""
    if not reports:
        raise MlplatError("no stacks to report on")
    budgets: dict[str, float] = {}
    for r in reports:
        for team, monthly in r.budgets.items():
            budgets[team] = budgets.get(team, 0.0) + monthly
    lines = sorted((line for r in reports for line in r.lines),
                   key=lambda line: (line.team, line.model, line.version, line.environment))
    return CostReport(reports[0].period, by, lines, _groups(lines, by), budgets,
                      [job for r in reports for job in r.training])


def _groups(lines: Iterable[CostLine], by: str) -> list[CostGroup]:
    groups: dict[str, CostGroup] = {}
    for line in lines:
        key = {"team": line.team, "model": line.model, "version": f"{line.model} v{line.version}",
               "env": line.environment}[by]
        group = groups.setdefault(key, CostGroup(key))
        group.cost_usd += line.cost_usd
        group.instance_hours += line.instance_hours
        group.predictions += line.predictions
        group.busy_seconds += line.busy_seconds
        group.training_usd += line.training_usd
        group.training_hours += line.training_hours
    return sorted(groups.values(), key=lambda g: (-g.cost_usd, g.key))


def month_trend(deployments: Iterable[Deployment], now: float, *, price_for: Callable[[str | None], float],
                default_instance_type: str) -> dict[str, Any]:
    """Serving cost per UTC day of the calendar month up to ``now``, and a month-end forecast.

    The forecast is the cost to date plus what the deployments still running at ``now`` cost
    until the month ends at their current size and price (ended deployments add nothing): the
    run rate of what is deployed, not an extrapolation of past days.
    """
    deps = list(deployments)
    day = datetime.fromtimestamp(now, tz=UTC)
    start = datetime(day.year, day.month, 1, tzinfo=UTC).timestamp()
    month_end = start + calendar.monthrange(day.year, day.month)[1] * 86400

    def cost(a: float, b: float) -> float:
        return attribute(deps, [], Period(a, b, ""), price_for=price_for,
                         default_instance_type=default_instance_type).total_usd

    days: list[dict[str, Any]] = []
    t = start
    while t < now:
        days.append({"day": datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d"), "start": t,
                     "cost_usd": cost(t, min(t + 86400, now))})
        t += 86400
    to_date = sum(float(d["cost_usd"]) for d in days)
    return {"month": f"{day:%Y-%m}", "month_start": start, "month_end": month_end, "days": days,
            "to_date_usd": to_date, "forecast_usd": to_date + cost(now, month_end)}


def ledger_deployments(db: Any, team: str, start: float, end: float, *,
                       instances: int | None = None) -> list[Deployment]:
    """The deployments the ledger (``db``) records serving at some time in ``[start, end)``, as ``team``'s;
    each row's instance count, or ``instances`` for every row when given."""
    conn = db.connect()
    try:
        rows = conn.execute(
            "SELECT model, version, environment, variant, started_at, ended_at, instance_type, instances, "
            "price_per_hour FROM deployments WHERE started_at < ? AND (ended_at IS NULL OR ended_at >= ?)",
            (end, start)).fetchall()
    finally:
        conn.close()
    return [Deployment(r["model"], int(r["version"]), r["environment"], float(r["started_at"]),
                       None if r["ended_at"] is None else float(r["ended_at"]), r["instance_type"],
                       int(r["instances"] or 1) if instances is None else instances, r["price_per_hour"], team,
                       r["variant"] or "")
            for r in rows]
