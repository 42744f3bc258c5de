"""Monitoring and cost data of a local stack: the gateway's captures and deployments in the platform DB."""
from __future__ import annotations

import json
import sqlite3
from typing import Any

from mlplat.contracts import Capture, CostSource, Deployment, Monitor, Usage
from mlplat.db import Database, ledger_for
from mlplat.errors import MlplatError, NotProvisioned
from mlplat_providers.local.layout import StateLayout

MIGRATION = "0005_monitoring"
CHUNK = 500  # ids per IN (...) query, below SQLite's variable limit


class LocalMonitor(Monitor, CostSource):
    def __init__(self, spec, ctx):
        self.spec = spec
        self.ctx = ctx
        self.layout = StateLayout(spec.state_dir)
        self._db = ledger_for(self.layout.platform_db, ctx)

    def database(self) -> Database:
        if not self.layout.platform_db.is_file():
            raise NotProvisioned(self.spec.name, str(self.layout.platform_db))
        if MIGRATION not in self._db.applied():
            raise MlplatError(f"stack '{self.spec.name}' lacks the monitoring tables",
                              hint=f"run `mlplat up --stack {self.spec.name}` to apply migration {MIGRATION}")
        return self._db

    # --- captures ---------------------------------------------------------------------------

    def _has(self, conn: sqlite3.Connection, table: str) -> bool:
        return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone() is not None

    def _columns(self, conn: sqlite3.Connection, table: str) -> set[str]:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}

    def deployed(self) -> list[tuple[str, int, str]]:
        conn = self.database().connect()
        try:
            if not self._has(conn, "captures"):
                return []
            rows = conn.execute("SELECT model, version, environment, MAX(ts) AS last FROM captures "
                                "GROUP BY model, version, environment ORDER BY last DESC").fetchall()
            return [(r["model"], int(r["version"]), r["environment"]) for r in rows]
        finally:
            conn.close()

    def captures(self, model: str, version: int, *, limit: int | None = None, since: float | None = None,
                 until: float | None = None, labelled_only: bool = False) -> list[Capture]:
        conn = self.database().connect()
        try:
            if not self._has(conn, "captures"):
                return []
            where, args = ["c.model=?", "c.version=?"], [model, int(version)]
            if since is not None:
                where.append("c.ts>=?")
                args.append(since)
            if until is not None:
                where.append("c.ts<?")
                args.append(until)
            if labelled_only:
                where.append("(EXISTS (SELECT 1 FROM monitor_labels l WHERE l.request_id=c.request_id) OR "
                             "EXISTS (SELECT 1 FROM monitor_labels l WHERE l.request_id>=c.request_id||'#' "
                             "AND l.request_id<c.request_id||'$'))")
            sql = f"SELECT c.* FROM captures c WHERE {' AND '.join(where)} ORDER BY c.ts DESC, c.rowid DESC"
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            rows = conn.execute(sql, args).fetchall()
        finally:
            conn.close()
        return [_capture(r) for r in reversed(rows)]

    def known_request_ids(self, ids: list[str]) -> set[str]:
        conn = self.database().connect()
        try:
            if not self._has(conn, "captures"):
                return set()
            bases = {i.split("#", 1)[0] for i in ids}
            found: set[str] = set()
            base_list = sorted(bases)
            for start in range(0, len(base_list), CHUNK):
                chunk = base_list[start:start + CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(r[0] for r in conn.execute(f"SELECT request_id FROM captures WHERE request_id IN ({marks})",
                                                        chunk))
            return {i for i in ids if i.split("#", 1)[0] in found}
        finally:
            conn.close()

    def resolve_request_ids(self, ids: list[str]) -> dict[str, list[str]]:
        """Platform ids name themselves; a caller's ``x-request-id`` (kept in ``client_request_id``)
        names every non-shadow capture that carries it. A platform id wins over an equal caller id."""
        known = self.known_request_ids(ids)
        out = {i: [i] for i in known}
        rest = sorted({i.split("#", 1)[0] for i in ids if i not in known})
        if not rest:
            return out
        conn = self.database().connect()
        try:
            if "client_request_id" not in self._columns(conn, "captures"):
                return out
            by_client: dict[str, list[str]] = {}
            for start in range(0, len(rest), CHUNK):
                chunk = rest[start:start + CHUNK]
                marks = ",".join("?" * len(chunk))
                for r in conn.execute(f"SELECT client_request_id, request_id FROM captures WHERE shadow=0 AND "
                                      f"client_request_id IN ({marks}) ORDER BY ts", chunk):
                    by_client.setdefault(r[0], []).append(r[1])
        finally:
            conn.close()
        for i in ids:
            base, sep, row = i.partition("#")
            if i not in out and base in by_client:
                out[i] = [request_id + sep + row for request_id in by_client[base]]
        return out

    # --- cost ---------------------------------------------------------------------------------

    def deployments(self, start: float, end: float) -> list[Deployment]:
        """The gateway's deployment records; a version with captured traffic but no record counts as
        deployed from its first to its last captured request in the period."""
        conn = self.database().connect()
        try:
            recorded = (self._recorded_deployments(conn, start, end) if self._has(conn, "deployments") else None) or []
            if not self._has(conn, "captures"):
                return recorded
            known = {(d.model, d.version, d.environment) for d in recorded}
            rows = conn.execute("SELECT model, version, environment, MIN(ts) AS first, MAX(ts) AS last FROM captures "
                                "WHERE ts<? GROUP BY model, version, environment HAVING MAX(ts)>=?", (end, start)).fetchall()
            return recorded + [Deployment(r["model"], int(r["version"]), r["environment"], float(r["first"]),
                                          float(r["last"]), team=self.spec.team)
                               for r in rows if (r["model"], int(r["version"]), r["environment"]) not in known]
        finally:
            conn.close()

    def _recorded_deployments(self, conn: sqlite3.Connection, start: float, end: float) -> list[Deployment] | None:
        cols = self._columns(conn, "deployments")
        started = next((c for c in ("started_at", "created_at", "started", "ts") if c in cols), None)
        if not {"model", "version"} <= cols or started is None:
            return None  # a shape this reader does not know: fall back to captured traffic
        ended = next((c for c in ("ended_at", "stopped_at", "retired_at", "ended") if c in cols), None)
        select = ["model", "version", f"{started} AS started",
                  f"{ended} AS ended" if ended else "NULL AS ended",
                  "environment" if "environment" in cols else "NULL AS environment",
                  "instance_type" if "instance_type" in cols else "NULL AS instance_type",
                  "instances" if "instances" in cols else "1 AS instances",
                  "price_per_hour" if "price_per_hour" in cols else "NULL AS price_per_hour",
                  "variant" if "variant" in cols else "'' AS variant"]
        where = f"{started}<?" + (f" AND ({ended} IS NULL OR {ended}>=?)" if ended else "")
        args: list[Any] = [end] + ([start] if ended else [])
        rows = conn.execute(f"SELECT {', '.join(select)} FROM deployments WHERE {where}", args).fetchall()
        return [Deployment(r["model"], int(r["version"]), r["environment"] or self.spec.environment,
                           float(r["started"]), None if r["ended"] is None else float(r["ended"]),
                           r["instance_type"], int(r["instances"] or 1), r["price_per_hour"], self.spec.team,
                           r["variant"] or "") for r in rows]

    def usage(self, start: float, end: float) -> list[Usage]:
        conn = self.database().connect()
        try:
            if not self._has(conn, "captures"):
                return []
            rows = conn.execute(
                "SELECT model, version, environment, COUNT(*) AS n, COALESCE(SUM(latency_ms), 0) AS busy FROM captures "
                "WHERE ts>=? AND ts<? AND COALESCE(shadow, 0)=0 GROUP BY model, version, environment",
                (start, end)).fetchall()
            shadow = conn.execute(
                "SELECT model, version, environment, COALESCE(SUM(latency_ms), 0) AS busy FROM captures "
                "WHERE ts>=? AND ts<? AND COALESCE(shadow, 0)=1 GROUP BY model, version, environment",
                (start, end)).fetchall()
        finally:
            conn.close()
        # shadow traffic costs busy time but serves no prediction to anyone
        out = [Usage(r["model"], int(r["version"]), r["environment"], int(r["n"]), float(r["busy"]) / 1000,
                     self.spec.team) for r in rows]
        out += [Usage(r["model"], int(r["version"]), r["environment"], 0, float(r["busy"]) / 1000, self.spec.team)
                for r in shadow]
        return out


def _capture(row: sqlite3.Row) -> Capture:
    def decode(text: Any) -> Any:
        if text is None:
            return None
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            return text

    keys = row.keys()
    return Capture(
        request_id=str(row["request_id"]), ts=float(row["ts"]), model=row["model"], version=int(row["version"]),
        variant=(row["variant"] if "variant" in keys else "") or "",
        environment=(row["environment"] if "environment" in keys else "") or "",
        inputs=decode(row["inputs"]), outputs=decode(row["outputs"]),
        latency_ms=float(row["latency_ms"] or 0.0) if "latency_ms" in keys else 0.0,
        status=int(row["status"]) if "status" in keys and row["status"] is not None else 200,
        shadow=bool(row["shadow"]) if "shadow" in keys and row["shadow"] is not None else False,
    )
