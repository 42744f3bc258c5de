"""The dashboard's one read: every figure the page shows, from the stack's ledger in one place."""
from __future__ import annotations

import json
import sqlite3
from typing import Any

from mlplat.api.operations import operation
from mlplat.errors import MlplatError


def _has(conn: sqlite3.Connection, table: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone() is not None


@operation("dashboard.snapshot", "GET", "/dashboard/snapshot")
def snapshot(spec: Any, ctx: Any) -> dict[str, Any]:
    """Everything the dashboard shows: models, endpoints, rollouts, drift, quality, cost, alerts, approvals, audit,
    the platform's SLA figures and its adoption share.

    Tables of other components (registry, serving) are read only when they exist, so the page
    works on a stack with monitoring alone."""
    from mlplat.services.monitoring.passes import monitor_for
    from mlplat.services.monitoring.status import series, status

    db = monitor_for(spec, ctx).database()
    out: dict[str, Any] = {"stack": spec.name, "team": spec.team, "environment": spec.environment,
                           "provider": spec.provider.kind, "now": ctx.clock()}
    conn = db.connect()
    try:
        out["models"] = _models(conn, spec)
        out["endpoints"] = _endpoints(conn)
        out["rollouts"] = _rollouts(conn)
        out["approvals"] = _approvals(conn, spec)
        out["audit"] = [dict(r) for r in conn.execute("SELECT seq, ts, actor, action, model, version, environment, "
                                                      "reason FROM audit_log ORDER BY seq DESC LIMIT 30")] \
            if _has(conn, "audit_log") else []
    finally:
        conn.close()
    mon = status(spec, ctx, history=1)
    out["alerts"] = mon["alerts"]
    out["retraining"] = mon["retraining"]
    drift_latest: dict[tuple[str, int, str], dict[str, Any]] = {}
    for w in mon["windows"]:
        if w["kind"] == "drift":
            drift_latest[(w["model"], w["version"], w["environment"])] = w
    out["drift"] = list(drift_latest.values())
    watched = sorted({w["model"] for w in mon["windows"]})
    out["quality"] = {m: series(spec, ctx, model=m, kind="quality", limit=50) for m in watched}
    out["drift_history"] = {m: series(spec, ctx, model=m, kind="drift", limit=50) for m in watched}
    out["cost"] = _cost(spec, ctx)
    out["sla"], out["adoption"] = _platform(spec, ctx)
    return out


def _platform(spec, ctx) -> tuple[dict[str, Any], dict[str, Any]]:
    """The SLA over the last 30 days and the stack's adoption share (each ``{"error": ...}`` when unreadable)."""
    from mlplat.api.ops import platform

    answers: list[dict[str, Any]] = []
    for read in (lambda: platform.sla_report(spec, ctx, period="30d"), lambda: platform.adoption_report(spec, ctx)):
        try:
            answers.append(read())
        except MlplatError as exc:
            answers.append({"error": exc.message})
    return answers[0], answers[1]


def _models(conn, spec) -> list[dict[str, Any]]:
    if not _has(conn, "model_versions"):
        return []
    from mlplat.services import registry

    return registry.list_models(conn, spec.environment)


def _endpoints(conn) -> list[dict[str, Any]]:
    if not _has(conn, "endpoints"):
        return []
    rows = []
    for r in conn.execute("SELECT * FROM endpoints ORDER BY model, environment"):
        item = dict(r)
        item["routes"] = json.loads(item["routes"] or "[]")
        item["shadow"] = json.loads(item["shadow"]) if item.get("shadow") else None
        if _has(conn, "rollout_events"):  # newest first: the page leads with what happened last
            from mlplat.services import rollout

            recent = rollout.events(conn, item["model"], item["environment"], limit=5)
            item["events"] = [{k: e[k] for k in ("ts", "actor", "event", "step_index", "percent", "reason")}
                              for e in reversed(recent)]
            # the verdict comes from the routing the gateway serves, never from a rollout row it overrode
            current = rollout.get_endpoint(conn, item["model"], item["environment"])
            if current is not None:
                item["verdict"] = rollout.verdict(current, recent)
                item["rollback_target"] = rollout.rollback_target(current)
        rows.append(item)
    return rows


def _rollouts(conn) -> list[dict[str, Any]]:
    if not _has(conn, "rollouts"):
        return []
    rows = []
    for r in conn.execute("SELECT * FROM rollouts ORDER BY (state='running') DESC, created_at DESC LIMIT 10"):
        item = dict(r)
        # in effect: running, or the endpoint's latest routing event is this rollout's (not a later rollback)
        last = conn.execute("SELECT rollout_id FROM rollout_events WHERE model=? AND environment=? ORDER BY id DESC "
                            "LIMIT 1", (item["model"], item["environment"])).fetchone() \
            if _has(conn, "rollout_events") else None
        item["in_effect"] = item["state"] == "running" or last is None or last[0] == item["id"]
        try:
            item["policy"] = json.loads(item["policy"])
        except (TypeError, ValueError):
            item["policy"] = {}
        rows.append(item)
    return rows


def _approvals(conn, spec) -> list[dict[str, Any]]:
    if not _has(conn, "approvals"):
        return []
    from mlplat.services import approvals

    return approvals.pending(conn, spec, spec.environment)


def _cost(spec, ctx) -> dict[str, Any]:
    from mlplat import providers
    from mlplat.contracts import Capability
    from mlplat.services.monitoring import cost as cost_mod

    try:
        source = providers.capability(spec, ctx, Capability.COST)
    except MlplatError as exc:
        return {"error": exc.message}
    period = cost_mod.parse_period("month", ctx.clock())
    deployments = source.deployments(period.start, period.end)
    usage = source.usage(period.start, period.end)
    budgets = {spec.team: spec.budget.monthly_usd} if spec.budget else {}
    kwargs = dict(price_for=spec.serving.price_for, default_instance_type=spec.serving.instance_type, budgets=budgets)
    by_team = cost_mod.attribute(deployments, usage, period, by="team", **kwargs)
    by_version = cost_mod.attribute(deployments, usage, period, by="version", **kwargs)
    return {"period": period.label, "days": period.days, "total_usd": by_team.total_usd,
            "predictions": by_team.predictions, "teams": cost_mod.report_rows(by_team),
            "versions": cost_mod.report_rows(by_version),
            "trend": cost_mod.month_trend(deployments, ctx.clock(), price_for=spec.serving.price_for,
                                          default_instance_type=spec.serving.instance_type),
            "budget": {t: {"monthly_usd": m, "period_usd": by_team.budget_for_period(t)} for t, m in budgets.items()}}
