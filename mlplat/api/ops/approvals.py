"""Operations on approvals: the production promotions waiting for an approver."""
from __future__ import annotations

from typing import Any

from mlplat.api.operations import Environment, operation


@operation("approvals.list", "GET", "/approvals")
def list_approvals(spec: Any, ctx: Any, *, environment: Environment | None = None,
                   include_decided: bool = False) -> dict[str, Any]:
    """Versions of critical models waiting for approval in ``environment`` (with ``include_decided``: decided ones too)."""
    from mlplat.services import approvals as approvals_service
    from mlplat.services import governance as governance_service
    from mlplat.services import registry as reg

    environment = environment or spec.environment
    conn = reg.registry_for(spec, ctx).database().connect()
    try:
        items = approvals_service.pending(conn, spec, environment, include_decided=include_decided)
        approvers = governance_service.effective(conn, spec).governance.approvers  # applied, not the edited file
    finally:
        conn.close()
    return {"environment": environment, "approvers": list(approvers), "items": items}
