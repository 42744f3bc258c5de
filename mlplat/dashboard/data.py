"""Everything the dashboard shows, from the stack's control plane: the ledger in this process, or
``mlplat server`` when the stack names one. The stack page is one operation (``dashboard.snapshot``);
a model's page is the operations the CLI's ``models``, ``deployments`` and ``monitor`` commands call."""
from __future__ import annotations

from typing import Any

from mlplat.errors import MlplatError

LINEAGE_VERSIONS = 10  # newest versions whose lineage a model page lists


def snapshot(spec: Any, ctx: Any) -> dict[str, Any]:
    from mlplat.api.plane import plane_for

    plane = plane_for(spec, ctx)
    try:
        doc: dict[str, Any] = plane.call("dashboard.snapshot")
    finally:
        plane.close()
    return doc


def model(spec: Any, ctx: Any, name: str, *, tracking_ui: str | None = None) -> dict[str, Any] | None:
    """One model's page: versions and stages, lineage of its newest versions, its deployment in the stack's
    environment (``None`` with ``deployment_note`` when there is none) and its monitoring; ``None`` for a
    model with no registered version."""
    from mlplat.api.plane import plane_for

    plane = plane_for(spec, ctx)
    try:
        listed = plane.call("models.list")
        versions = sorted((v for v in listed["versions"] if v["model"] == name), key=lambda v: -int(v["version"]))
        if not versions:
            return None
        lineage = []
        for v in versions[:LINEAGE_VERSIONS]:
            shown = plane.call("models.show", name=name, version=int(v["version"]))
            lineage.append({"version": v["version"], "run_id": shown.get("run_id"), "lineage": shown.get("lineage")})
        deployment, note = None, None
        try:
            deployment = plane.call("deployments.show", model=name)
        except MlplatError as exc:  # not deployed here: the page says so
            note = exc.message
        monitoring = plane.call("monitoring.status", model=name, history=50)
    finally:
        plane.close()
    return {"model": name, "stack": spec.name, "team": spec.team, "environment": listed["environment"],
            "provider": spec.provider.kind, "now": ctx.clock(), "risk_tier": versions[0].get("risk_tier"),
            "versions": versions, "lineage": lineage, "deployment": deployment, "deployment_note": note,
            "monitoring": monitoring, "tracking_ui": tracking_ui}
