"""Sharing a model version with other teams: a copy in a registry shared across teams, lineage kept.

Only what the platform would serve in production leaves the team: the version must pass the same checks as
a production deploy in the stack's environment (``deployability.assert_deployable``: sealed files, a passed
gate, the audited stage, valid approvals for critical models) and be the production version there. The
copy is the provider's (``ModelRegistry.share``; ``CapabilityNotSupported`` where there is no shared
registry); the decision is audited (``model.shared``) once the provider has the copy.
"""
from __future__ import annotations

from typing import Any

from mlplat.errors import Denied
from mlplat.services import audit, deployability
from mlplat.services import registry as reg


def share_version(spec: Any, ctx: Any, name: str, version: int, *, registry: str | None = None) -> dict[str, Any]:
    """Share ``version`` of ``name`` to ``registry`` (default: the stack's); refused unless it is the
    production version of the stack's environment with valid approvals. Returns the shared version."""
    environment = spec.environment
    evidence = deployability.assert_deployable(spec, ctx, name, int(version), environment)
    if evidence.get("stage") != "production":
        raise Denied(f"{name} version {version} is in stage '{evidence.get('stage')}' in '{environment}'; only the "
                     "production version is shared with other teams",
                     hint=f"promote it first: `mlplat models promote {name} {version} --to production`")
    target = reg.registry_for(spec, ctx)
    shared = target.share(name, int(version), registry=registry, evidence=evidence)
    db = target.database()
    with db.transaction() as conn:
        audit.append(conn, actor=ctx.user, method=ctx.method, action="model.shared", model=name, version=int(version),
                     environment=environment, reason=f"shared to registry {shared.registry}",
                     evidence={"registry": shared.registry, "shared_name": shared.shared_name,
                               "shared_version": shared.shared_version, "asset_id": shared.asset_id,
                               "artifact_digest": evidence.get("artifact_digest")},
                     digest=evidence.get("artifact_digest"))
    return {"model": name, "version": int(version), "environment": environment, "registry": shared.registry,
            "shared_name": shared.shared_name, "shared_version": shared.shared_version, "asset_id": shared.asset_id}
