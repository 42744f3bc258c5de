"""Operations on registered models: list, show, promote, approve, reject."""
from __future__ import annotations

from typing import Any

from mlplat.api.operations import operation


@operation("models.list", "GET", "/models")
def list_models(spec: Any, ctx: Any, *, environment: str | None = None) -> dict[str, Any]:
    """Every registered version with its stage and risk tier in ``environment``."""
    from mlplat.services import governance as governance_service
    from mlplat.services import registry as reg

    environment = environment or spec.environment
    conn = reg.registry_for(spec, ctx).database().connect()
    try:
        rows = reg.list_models(conn, environment)
        governance = governance_service.effective_for(spec, ctx, conn).governance
    finally:
        conn.close()
    for r in rows:
        r["risk_tier"] = governance.risk_tier_for(r["model"]).value
    return {"environment": environment, "versions": rows}
