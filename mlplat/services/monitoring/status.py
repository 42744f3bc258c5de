"""Read-only views of monitoring state for `mlplat monitor status`, the dashboard and the HTTP API."""
from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

from mlplat.services.monitoring.windows import monitor_for

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.stack import StackSpec


def status(spec: StackSpec, ctx: Context, *, model: str | None = None, history: int = 5) -> dict[str, Any]:
    """Newest ``history`` windows per (model, version, kind), firing alerts, recent events and retraining."""
    db = monitor_for(spec, ctx).database()
    conn = db.connect()
    try:
        where, args = ("WHERE model=?", [model]) if model else ("", [])
        rows = conn.execute(
            f"SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY model, version, environment, kind "
            f"ORDER BY ts DESC, id DESC) AS rn FROM monitor_windows {where}) AS w WHERE rn<=? "
            f"ORDER BY model, version DESC, kind, ts DESC", (*args, history)).fetchall()
        windows = [_window(r) for r in rows]
        subject_filter = ("AND (subject LIKE ? OR subject LIKE 'team:%')", [f"{model}@%"]) if model else ("", [])
        firing = [dict(r) for r in conn.execute(
            f"SELECT * FROM alert_state WHERE firing=1 {subject_filter[0]} ORDER BY since", subject_filter[1])]
        for f in firing:  # what the alert said when it fired (the model version, what drifted and by how much)
            said = conn.execute("SELECT message FROM alert_events WHERE rule=? AND subject=? AND kind='fired' "
                                "ORDER BY id DESC LIMIT 1", (f["rule"], f["subject"])).fetchone()
            f["message"] = said[0] if said else None
        events = [dict(r) for r in conn.execute(
            f"SELECT * FROM alert_events WHERE 1=1 {subject_filter[0]} ORDER BY id DESC LIMIT 50", subject_filter[1])]
        undelivered = conn.execute("SELECT COUNT(*) FROM alert_outbox WHERE status IN ('pending', 'sending')").fetchone()[0]
        failed = conn.execute("SELECT COUNT(*) FROM alert_outbox WHERE status='failed'").fetchone()[0]
        triggers = [dict(r) for r in conn.execute(
            f"SELECT * FROM retrain_triggers {where} ORDER BY ts DESC LIMIT 20", args)]
    finally:
        conn.close()
    for t in triggers:
        t["reason"] = json.loads(t["reason"])
    return {"stack": spec.name, "model": model, "windows": windows,
            "alerts": {"firing": firing, "recent": events, "undelivered": undelivered, "failed_deliveries": failed},
            "retraining": triggers}


def series(spec: StackSpec, ctx: Context, *, model: str, kind: str, limit: int = 200) -> list[dict[str, Any]]:
    """Windows of one model and kind, oldest first (for plots over time)."""
    db = monitor_for(spec, ctx).database()
    conn = db.connect()
    try:
        rows = conn.execute("SELECT * FROM (SELECT * FROM monitor_windows WHERE model=? AND kind=? ORDER BY ts DESC, "
                            "id DESC LIMIT ?) AS w ORDER BY ts, id", (model, kind, limit)).fetchall()
    finally:
        conn.close()
    return [_window(r) for r in rows]


def _window(row: sqlite3.Row) -> dict[str, Any]:
    out = {k: row[k] for k in ("id", "pass_id", "ts", "model", "version", "environment", "kind", "verdict", "rows",
                               "first_ts", "last_ts", "breach")}
    out["metrics"] = json.loads(row["metrics"])
    out["details"] = json.loads(row["details"])
    return out
