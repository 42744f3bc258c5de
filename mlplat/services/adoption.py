"""Adoption: how much of a company's production serving goes through the platform.

For each team and environment the report compares

* the **production models served through the platform**: from each stack's ledger, models with a
  production version and an endpoint in that environment; on a cloud, also every endpoint in the
  account and region carrying the platform's tags (a stack this report did not read still counts);
* the **endpoints running outside it**: from the provider's inventory (``EndpointDeployer.inventory``),
  endpoints without the platform's tags, attributed to a team and environment by their own
  ``team``/``environment`` tags (``(untagged)`` otherwise), with their owner from their tags;

and the **share** served through the platform. It adds a **trend** (the share at the end of each
week or month, from the production promotions in the audit log; endpoints outside the platform
count from their creation time, and those deleted before today are not seen), and per model the
**time to production** (its first tracked run's start until its first production promotion) with
the **manual interventions** it took (approvals waited on, rollbacks asked for by a person).

Everything here reads; nothing is written. :func:`build` takes what the caller read (ledger
connections, inventories) and returns an :class:`AdoptionReport`.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlplat.contracts.inventory import ServedEndpoint

UNTAGGED = "(untagged)"
OWNER_TAGS = ("owner", "Owner", "team-owner", "created-by", "CreatedBy", "contact", "team", "Team")
TEAM_TAGS = ("team", "Team")
ENVIRONMENT_TAGS = ("environment", "Environment", "env", "Env")
TRENDS = ("week", "month")
SYSTEM = "system"  # the auth method of decisions the platform took on its own (the canary controller)


@dataclass(frozen=True)
class LedgerView:
    """One stack's ledger as the report reads it: the spec, an open connection, and how to find when a
    tracked run started (None when the tracking store cannot say)."""

    spec: Any
    conn: Any
    run_started: Callable[[str], float | None]


@dataclass(frozen=True)
class Inventory:
    """What one provider location runs: ``endpoints`` None when it could not be inspected (``note`` says why)."""

    provider: str
    location: str
    endpoints: Sequence[ServedEndpoint] | None
    note: str | None = None


@dataclass
class Row:
    team: str
    environment: str
    production_models: list[str] = field(default_factory=list)
    platform_endpoints: list[str] = field(default_factory=list)
    unmanaged: list[dict[str, Any]] = field(default_factory=list)
    inspected: list[str] = field(default_factory=list)  # the provider locations looked at
    not_inspected: list[str] = field(default_factory=list)

    @property
    def managed(self) -> int:
        return len(set(self.production_models) | set(self.platform_endpoints))

    @property
    def share(self) -> float | None:
        total = self.managed + len(self.unmanaged)
        return self.managed / total if total else None

    def to_dict(self) -> dict[str, Any]:
        return {"team": self.team, "environment": self.environment, "managed": self.managed,
                "unmanaged": len(self.unmanaged), "share": self.share,
                "production_models": sorted(self.production_models),
                "platform_endpoints": sorted(self.platform_endpoints),
                "unmanaged_endpoints": sorted(self.unmanaged, key=lambda e: e["name"]),
                "owners": sorted({e["owner"] for e in self.unmanaged}),
                "inspected": sorted(set(self.inspected)), "not_inspected": sorted(set(self.not_inspected))}


@dataclass(frozen=True)
class TimeToProduction:
    stack: str
    team: str
    model: str
    first_run_at: float | None
    first_run_source: str  # tracking | registration
    first_production_at: float | None
    days: float | None
    approvals: int
    rollbacks_manual: int
    rollbacks_automatic: int

    @property
    def interventions(self) -> int:
        return self.approvals + self.rollbacks_manual

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"interventions": self.interventions}


@dataclass
class AdoptionReport:
    now: float
    trend_by: str
    rows: list[Row]
    trend: list[dict[str, Any]]
    models: list[TimeToProduction]
    inventories: list[Inventory]
    stacks: list[str]

    @property
    def managed(self) -> int:
        return sum(r.managed for r in self.rows)

    @property
    def unmanaged(self) -> int:
        return sum(len(r.unmanaged) for r in self.rows)

    @property
    def share(self) -> float | None:
        total = self.managed + self.unmanaged
        return self.managed / total if total else None

    def to_dict(self) -> dict[str, Any]:
        return {"now": self.now, "stacks": self.stacks, "managed": self.managed, "unmanaged": self.unmanaged,
                "share": self.share, "rows": [r.to_dict() for r in self.rows],
                "trend": {"by": self.trend_by, "points": self.trend},
                "models": [m.to_dict() for m in self.models],
                "inventories": [{"provider": i.provider, "location": i.location,
                                 "inspected": i.endpoints is not None,
                                 "endpoints": None if i.endpoints is None else len(i.endpoints),
                                 "note": i.note} for i in self.inventories]}


def owner_of(tags: Mapping[str, str]) -> str:
    """Who to ask about an endpoint, from its tags (the first owner-like tag), else ``unknown``."""
    for key in OWNER_TAGS:
        if tags.get(key):
            return str(tags[key])
    return "unknown (no owner tag)"


def _tag(tags: Mapping[str, str], keys: Sequence[str]) -> str:
    for key in keys:
        if tags.get(key):
            return str(tags[key])
    return UNTAGGED


def _tables(conn: Any) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def production_served(conn: Any) -> dict[str, list[str]]:
    """environment -> models with a production version and an endpoint there (from the ledger's rows)."""
    tables = _tables(conn)
    if not {"model_stages", "endpoints"} <= tables:
        return {}
    out: dict[str, list[str]] = {}
    for row in conn.execute("SELECT DISTINCT s.environment, s.model FROM model_stages s JOIN endpoints e ON "
                            "e.model = s.model AND e.environment = s.environment WHERE s.stage = 'production' "
                            "ORDER BY s.environment, s.model").fetchall():
        out.setdefault(row[0], []).append(row[1])
    return out


def _stage_entries(conn: Any) -> list[dict[str, Any]]:
    if "audit_log" not in _tables(conn):
        return []
    return [dict(r) for r in conn.execute(
        "SELECT seq, ts, model, version, environment, action, evidence FROM audit_log WHERE action IN "
        "('model.registered', 'stage.changed') ORDER BY seq").fetchall()]


def production_at(entries: Sequence[Mapping[str, Any]], times: Sequence[float]) -> list[set[tuple[str, str]]]:
    """For each time of ``times`` (ascending), the (model, environment) pairs with a production version then,
    replaying the audited stage decisions."""
    stages: dict[tuple[str, str, int], str] = {}
    out: list[set[tuple[str, str]]] = []
    index = 0
    for t in times:
        while index < len(entries) and float(entries[index]["ts"]) <= t:
            entry = entries[index]
            index += 1
            if entry["version"] is None:
                continue
            key = (entry["model"], entry["environment"], int(entry["version"]))
            if entry["action"] == "model.registered":
                stages[key] = "dev"
                continue
            evidence = json.loads(entry["evidence"] or "{}")
            if evidence.get("stage"):
                archived = evidence.get("archived")
                if archived is not None and int(archived) != key[2]:
                    stages[(key[0], key[1], int(archived))] = "archived"
                stages[key] = evidence["stage"]
        out.append({(m, e) for (m, e, _), stage in stages.items() if stage == "production"})
    return out


def bucket_ends(now: float, by: str, count: int) -> list[tuple[str, float]]:
    """The last ``count`` weeks (ISO, Monday 00:00 UTC) or calendar months, oldest first, as (label, end);
    the current one ends ``now``."""
    day = datetime.fromtimestamp(now, tz=UTC)
    out: list[tuple[str, float]] = []
    if by == "week":
        monday = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=day.weekday())
        for back in range(count - 1, -1, -1):
            start = monday - timedelta(weeks=back)
            end = min(now, (start + timedelta(weeks=1)).timestamp())
            iso = start.isocalendar()
            out.append((f"{iso.year}-W{iso.week:02d}", end))
        return out
    year, month = day.year, day.month
    months = []
    for _ in range(count):
        months.append((year, month))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    for year, month in reversed(months):
        following = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC).timestamp()
        out.append((f"{year}-{month:02d}", min(now, following)))
    return out


def _models(view: LedgerView) -> list[TimeToProduction]:
    conn, spec = view.conn, view.spec
    tables = _tables(conn)
    if "model_versions" not in tables:
        return []
    first_production: dict[str, float] = {}
    for entry in _stage_entries(conn):
        if entry["action"] != "stage.changed":
            continue
        if json.loads(entry["evidence"] or "{}").get("stage") == "production":
            first_production.setdefault(entry["model"], float(entry["ts"]))
    approvals: dict[str, int] = {}
    if "approvals" in tables:
        for row in conn.execute("SELECT model, count(*) FROM approvals GROUP BY model").fetchall():
            approvals[row[0]] = int(row[1])
    manual: dict[str, int] = {}
    automatic: dict[str, int] = {}
    if "audit_log" in tables:
        has_method = "auth_method" in {r[1] for r in conn.execute("PRAGMA table_info(audit_log)")}
        method = "auth_method" if has_method else "NULL"
        for row in conn.execute(f"SELECT model, {method} FROM audit_log WHERE action = 'deployment.rolled_back'"):
            into = automatic if row[1] == SYSTEM else manual
            into[row[0]] = into.get(row[0], 0) + 1
    out = []
    for model in [r[0] for r in conn.execute("SELECT DISTINCT model FROM model_versions ORDER BY model").fetchall()]:
        promoted = first_production.get(model)
        versions = conn.execute("SELECT run_id, created_at FROM model_versions WHERE model = ? ORDER BY version",
                                (model,)).fetchall()
        if promoted is not None:  # the runs behind the versions up to that promotion
            versions = [v for v in versions if float(v[1]) <= promoted] or versions[:1]
        starts = [(view.run_started(v[0]), float(v[1])) for v in versions]
        tracked = [s for s, _ in starts if s is not None]
        first, source = (min(tracked), "tracking") if tracked else (min(c for _, c in starts), "registration") \
            if starts else (None, "registration")
        days = (promoted - first) / 86400 if promoted is not None and first is not None else None
        out.append(TimeToProduction(stack=spec.name, team=spec.team, model=model, first_run_at=first,
                                    first_run_source=source, first_production_at=promoted,
                                    days=None if days is None else max(0.0, days), approvals=approvals.get(model, 0),
                                    rollbacks_manual=manual.get(model, 0), rollbacks_automatic=automatic.get(model, 0)))
    return out


def build(ledgers: Sequence[LedgerView], inventories: Sequence[Inventory], *, now: float, trend: str = "month",
          buckets: int = 6) -> AdoptionReport:
    """The adoption report over ``ledgers`` and ``inventories`` at ``now`` (see the module)."""
    if trend not in TRENDS:
        raise ValueError(f"trend must be one of {TRENDS}")
    rows: dict[tuple[str, str], Row] = {}

    def row(team: str, environment: str) -> Row:
        return rows.setdefault((team, environment), Row(team, environment))

    for view in ledgers:
        row(view.spec.team, view.spec.environment)  # the stack's own row, even with nothing in production
        for environment, served in production_served(view.conn).items():
            row(view.spec.team, environment).production_models.extend(served)
    unmanaged_all: list[dict[str, Any]] = []
    for inv in inventories:
        where = f"{inv.provider} {inv.location}"
        if inv.endpoints is None:
            for r in rows.values():
                r.not_inspected.append(f"{where}: {inv.note or 'not inspected'}")
            continue
        for key in rows:
            rows[key].inspected.append(where)
        for endpoint in inv.endpoints:
            team, environment = _tag(endpoint.tags, TEAM_TAGS), _tag(endpoint.tags, ENVIRONMENT_TAGS)
            target = row(team, environment)
            target.inspected.append(where)
            if endpoint.platform:
                target.platform_endpoints.append(endpoint.model or endpoint.name)
                continue
            item = {"name": endpoint.name, "owner": owner_of(endpoint.tags), "created_at": endpoint.created_at,
                    "location": endpoint.location or inv.location, "provider": inv.provider,
                    "status": endpoint.status}
            target.unmanaged.append(item)
            unmanaged_all.append(item)
    for r in rows.values():
        r.production_models = sorted(set(r.production_models))
        r.platform_endpoints = sorted(set(r.platform_endpoints))
    ends = bucket_ends(now, trend, buckets)
    managed_at: list[set[tuple[str, str, str]]] = [set() for _ in ends]
    for view in ledgers:
        for i, pairs in enumerate(production_at(_stage_entries(view.conn), [t for _, t in ends])):
            managed_at[i] |= {(view.spec.team, m, e) for m, e in pairs}
    points = []
    for (label, end), managed in zip(ends, managed_at, strict=True):
        outside = sum(1 for e in unmanaged_all if e["created_at"] is None or float(e["created_at"]) <= end)
        total = len(managed) + outside
        points.append({"period": label, "end": end, "managed": len(managed), "unmanaged": outside,
                       "share": len(managed) / total if total else None})
    models = [m for view in ledgers for m in _models(view)]
    return AdoptionReport(now=now, trend_by=trend, rows=sorted(rows.values(), key=lambda r: (r.team, r.environment)),
                          trend=points, models=models, inventories=list(inventories),
                          stacks=[v.spec.name for v in ledgers])
