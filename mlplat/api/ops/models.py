"""Operations on registered models: list, show, promote, approve, reject."""
from __future__ import annotations

import time
from typing import Any, Literal

from mlplat.api.operations import Environment, operation


@operation("models.list", "GET", "/models")
def list_models(spec: Any, ctx: Any, *, environment: Environment | None = None) -> dict[str, Any]:
    """Every registered version with its stage and risk tier in ``environment``."""
    from mlplat.services import governance as governance_service
    from mlplat.services import known
    from mlplat.services import registry as reg

    conn = reg.registry_for(spec, ctx).database().connect()
    try:
        if environment is not None:
            known.require_environment(conn, spec, environment)
        environment = environment or spec.environment
        rows = reg.list_models(conn, environment)
        governance = governance_service.effective_for(spec, ctx, conn).governance
    finally:
        conn.close()
    for r in rows:
        r["risk_tier"] = governance.risk_tier_for(r["model"]).value
    return {"environment": environment, "versions": rows}


@operation("models.show", "GET", "/models/{name}/versions/{version}")
def show_version(spec: Any, ctx: Any, *, name: str, version: int, environment: Environment | None = None) -> dict[str, Any]:
    """Stage, lineage, gate reports, approvals, promotions and deployments of one model version."""
    return _show(spec, ctx, name, version, environment)


@operation("models.show_latest", "GET", "/models/{name}")
def show_latest(spec: Any, ctx: Any, *, name: str, environment: Environment | None = None) -> dict[str, Any]:
    """What ``models.show`` returns, for the model's latest registered version."""
    return _show(spec, ctx, name, None, environment)


def _show(spec: Any, ctx: Any, name: str, version: int | None, environment: str | None) -> dict[str, Any]:
    from mlplat.services import approvals as approvals_service
    from mlplat.services import gate as gate_service
    from mlplat.services import governance as governance_service
    from mlplat.services import promotion
    from mlplat.services import registry as reg

    registry = reg.registry_for(spec, ctx)
    conn = registry.database().connect()
    environment = environment or spec.environment
    try:
        governance = governance_service.effective_for(spec, ctx, conn).governance
        if version is None:
            latest = conn.execute("SELECT max(version) FROM model_versions WHERE model=?", (name,)).fetchone()[0]
            version = latest if latest is not None else 1  # an unknown model: version_row says so, with a hint
        row = reg.version_row(conn, name, version)
        doc = {
            "model": name, "version": version, "environment": environment,
            "stage": reg.stage_of(conn, name, version, environment),
            "production_version": reg.production_version(conn, name, environment),
            "risk_tier": governance.risk_tier_for(name).value, "author": row["author"], "run_id": row["run_id"],
            "framework": row["framework"], "task": row["task"], "created_at": row["created_at"],
            "artifact_digest": row["artifact_digest"], "files": sorted(row["manifest"]["files"]),
            "source": row["source"], "lineage": row["lineage"],
            "gate_reports": [{k: r[k] for k in ("digest", "environment", "passed", "created_at", "created_by")}
                             | {"report": r["report"]} for r in gate_service.reports(conn, name, version)],
            "approvals": approvals_service.status(conn, spec, name, version, environment, governance),
            "promotions": promotion.history(conn, name, version),
            "deployments": [dict(r) for r in conn.execute(
                "SELECT * FROM deployments WHERE model=? AND version=? ORDER BY id", (name, int(version)))],
            "stages": [dict(r) for r in conn.execute(
                "SELECT environment, stage, updated_at, updated_by FROM model_stages WHERE model=? AND version=?",
                (name, version))],
        }
        drift = reg.alias_drift(registry, spec, conn, name, environment)
    finally:
        conn.close()
    doc["alias_warnings"] = drift
    return doc


@operation("models.promote", "POST", "/models/{name}/versions/{version}/promotions")
def promote(spec: Any, ctx: Any, *, name: str, version: int, target: Literal["staging", "production"],
            environment: Environment | None = None, progress: bool = True) -> dict[str, Any]:
    """Gate, approvals, package, staging endpoint, integration tests, then the stage change (resumes a killed run).

    Runs to the end before it answers. With ``progress`` each step is printed as it starts and
    ends (a line per step; the server returns them as the response's messages)."""
    from mlplat.services import promotion

    printer = _Progress(ctx.console) if progress else None
    try:
        return promotion.promote(spec, ctx, name, version, target, environment=environment,
                                 progress=printer.step if printer else None)
    finally:
        if printer:
            printer.stop()


class _Progress:
    """One line per finished or skipped step; a spinner on the running one when the console is a terminal."""

    def __init__(self, console: Any):
        self.console = console
        self.started: dict[str, float] = {}
        self.spinner: Any = None

    def stop(self) -> None:
        if self.spinner is not None:
            self.spinner.stop()
            self.spinner = None

    def step(self, step: str, status: str, detail: str) -> None:
        self.stop()
        if status == "running":
            self.started[step] = time.perf_counter()
            self.spinner = self.console.status(f"{step} ...")
            self.spinner.start()
        elif status == "done":
            now = time.perf_counter()
            took = now - self.started.get(step, now)
            self.console.print(f"  [green]ok[/]  {step:<12} {took:6.2f}s  {detail}", highlight=False)
        elif status == "skipped":
            self.console.print(f"  [dim]--  {step:<12}          {detail}[/]", highlight=False)
        else:
            self.console.print(f"  {detail}", highlight=False)


@operation("models.approve", "POST", "/models/{name}/versions/{version}/approvals")
def approve(spec: Any, ctx: Any, *, name: str, version: int, reason: str,
            environment: Environment | None = None) -> dict[str, Any]:
    """Approve the production promotion of a version as the caller (bound to its artifact and gate report)."""
    from mlplat.services import approvals as approvals_service

    return approvals_service.decide(spec, ctx, name, version, decision="approved", reason=reason,
                                    environment=environment)


@operation("models.share", "POST", "/models/{name}/versions/{version}/shares")
def share(spec: Any, ctx: Any, *, name: str, version: int, registry: str | None = None) -> dict[str, Any]:
    """Share the production version with other teams: a copy in the shared registry, lineage kept, audited."""
    from mlplat.services import sharing

    return sharing.share_version(spec, ctx, name, version, registry=registry)


@operation("models.reject", "POST", "/models/{name}/versions/{version}/rejections")
def reject(spec: Any, ctx: Any, *, name: str, version: int, reason: str,
           environment: Environment | None = None) -> dict[str, Any]:
    """Reject the production promotion of a version as the caller (final for its artifact and gate report)."""
    from mlplat.services import approvals as approvals_service

    return approvals_service.decide(spec, ctx, name, version, decision="rejected", reason=reason,
                                    environment=environment)
