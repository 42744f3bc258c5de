"""Operations on identity and access: who the caller is, the roles in force, and applying settings.

``access.whoami`` and ``access.roles`` answer anyone the server authenticated, even a caller with
no role (so a refused user can see why). ``governance.apply`` records a client's governance and
access settings as the ones in force, under the caller's authenticated principal; changing them
needs the ``admin`` role (see :mod:`mlplat.identity.rbac`).
"""
from __future__ import annotations

from typing import Any

from mlplat.api.operations import operation
from mlplat.errors import IntegrityError, MlplatError


def _principal(ctx: Any) -> Any:
    """The verified caller on the server; embedded, the user this command runs as."""
    from mlplat.identity import Principal

    return ctx.principal if ctx.principal is not None else Principal(ctx.user, ctx.method)


def _in_force(spec: Any, ctx: Any) -> Any:
    """The access settings in force; embedded on a stack not provisioned yet, the file's (not applied)."""
    from mlplat.services import governance

    try:
        return governance.access_in_force_for(spec, ctx)
    except IntegrityError:
        raise
    except MlplatError:
        if ctx.principal is not None:  # the server's ledger must answer
            raise
        return governance.AccessInForce(
            mode=spec.access.mode.value if spec.access.mode is not None else None,
            roles={r: tuple(p) for r, p in spec.access.roles.items()}, feature_grants=tuple(spec.access.feature_grants),
            approvers=tuple(spec.governance.approvers), applied=False)


@operation("access.whoami", "GET", "/access/whoami")
def whoami(spec: Any, ctx: Any) -> dict[str, Any]:
    """The caller: principal, how it was established, its groups and ids, and its roles in this stack."""
    from mlplat.identity import rbac

    principal = _principal(ctx)
    access = _in_force(spec, ctx)
    return {"principal": principal.name, "method": principal.method, "groups": list(principal.groups),
            "ids": list(principal.ids), "roles": rbac.roles_of(principal, access),
            "feature_views": sorted(rbac.granted_views(principal, access)),
            "team": spec.team, "environment": spec.environment, "stack": spec.name}


@operation("access.roles", "GET", "/access/roles")
def roles(spec: Any, ctx: Any) -> dict[str, Any]:
    """The access settings in force: the mode, role → principal patterns, feature grants, and whether
    they were applied (false: the stack file's, never recorded on this ledger)."""
    doc = _in_force(spec, ctx).describe()
    return {"mode": doc["mode"], "roles": doc["roles"], "feature_grants": doc["feature_grants"],
            "approvers": doc["approvers"], "applied": doc["applied"]}


@operation("governance.apply", "POST", "/governance")
def apply(spec: Any, ctx: Any, *, governance: dict[str, Any], access: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record ``governance`` (``mlplat:governance``) and ``access`` (the mode, roles and feature grants of
    ``mlplat:access``) as the settings in force, under the caller, if they change anything.

    ``access`` omitted keeps the access settings in force. Validated as the stack file is; the mode
    must be the server's own. Returns the keys that changed (empty when already in force)."""
    from pydantic import ValidationError

    from mlplat.errors import StackError
    from mlplat.services import governance as governance_service
    from mlplat.services import registry as reg
    from mlplat.stack import Governance

    try:
        wanted = Governance.model_validate(governance)
    except ValidationError as exc:
        raise StackError(f"invalid mlplat:governance: {_problems(exc)}", where="mlplat:governance",
                         hint="fix the stack file; nothing was applied") from None
    try:
        wanted_access = governance_service.validate_access(dict(access), spec) if access is not None else None
    except ValidationError as exc:
        raise StackError(f"invalid mlplat:access: {_problems(exc)}", where="mlplat:access",
                         hint="fix the stack file; nothing was applied") from None
    principal = _principal(ctx)
    db = reg.registry_for(spec, ctx).database()
    with db.transaction() as conn:
        if wanted_access is None:  # keep the access rules in force
            wanted_access = governance_service.access_document_in_force(conn, spec)
        changed = governance_service.record(conn, spec, ctx.user, governance=wanted, access=wanted_access,
                                            principal=principal, via=f"{principal.name} ({principal.method})")
    return {"stack": spec.name, "changed": changed or [], "applied_by": principal.name, "method": principal.method}


def _problems(exc: Any) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors(include_url=False))
