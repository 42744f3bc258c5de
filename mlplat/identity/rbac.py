"""Roles, and what each lets a caller of ``mlplat server`` do: one permission table, deny by default.

Every platform operation needs one **action**:

* ``read``: list and show models, deployments, rollouts, approvals, audit, costs, monitoring, features;
* ``develop``: register versions, promote to staging, deploy or roll back outside production, define
  and materialize features, ingest labels, run monitoring passes;
* ``approve``: approve or reject a production promotion;
* ``operate``: promote to production, deploy or roll back in production, manage serving keys;
* ``admin``: apply governance and access settings, and anything the table does not name.

Roles grant actions: ``viewer`` {read}, ``developer`` {read, develop}, ``approver`` {read,
approve}, ``operator`` {read, develop, operate}, ``admin`` {all}. A stack maps roles to principal
patterns (``mlplat:access.roles``, matched by :func:`mlplat.identity.matches`); a caller named by
``mlplat:governance.approvers`` also holds ``approver``. The roles and approvers are those
*applied* to the ledger (:mod:`mlplat.services.governance`), never a client's copy of the file.

**Production.** An operation acts on production when its ``environment`` parameter (default: the
stack's environment) is ``prod`` or ``production``, or starts with ``prod-`` or ``production-``;
and a promotion does when its target stage is ``production`` (a promotion to staging is
development work, whatever the stack). Deploying or rolling back in production is ``operate``,
elsewhere ``develop``.

Rules beside the table:

* an operation missing from the table needs ``admin`` (a unit test lists any that ship unmapped);
* ``access.whoami`` and ``access.roles`` answer anyone the server authenticated, even with no role;
* ``governance.apply`` that changes nothing in force needs only ``read`` (every client's ``mlplat
  up`` sends its file); changing anything needs ``admin``;
* ``cost.report`` and ``adoption.report`` over every stack of the server's project (``all_stacks``)
  need ``admin``: the other stacks are other teams';
* feature grants (``mlplat:access.featureGrants``) let their principals run ``features.list`` (the
  list filtered to the granted views) and ``features.skew`` of a granted view, with no role;
* a server that does not authenticate callers (``trusted-local``: names typed in, one machine)
  and whose applied settings declare no role lets everyone do everything, as before roles
  existed; once roles are declared they are enforced in every mode, and an authenticating
  server with no role declared refuses everyone.

Embedded commands (no server) run on the machine owner's own ledger and are not checked here;
separation of duties (the author of a version never approves it) is checked by
:mod:`mlplat.services.approvals` in every mode.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mlplat.errors import Forbidden
from mlplat.identity import Principal, matches
from mlplat.stack import ROLES, Governance

if TYPE_CHECKING:
    from mlplat.services.governance import AccessInForce

READ, DEVELOP, APPROVE, OPERATE, ADMIN = "read", "develop", "approve", "operate", "admin"
ACTIONS = (READ, DEVELOP, APPROVE, OPERATE, ADMIN)
ANYONE = "anyone"  # any caller the server authenticated, with or without a role

ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({READ}),
    "developer": frozenset({READ, DEVELOP}),
    "approver": frozenset({READ, APPROVE}),
    "operator": frozenset({READ, DEVELOP, OPERATE}),
    "admin": frozenset(ACTIONS),
}
assert set(ROLE_ACTIONS) == set(ROLES), "every role of mlplat.stack.ROLES grants actions"

PRODUCTION_NAMES = ("prod", "production")
FEATURE_READS = ("features.list", "features.skew")


def is_production(environment: str | None) -> bool:
    """Whether an environment name is a production one (see the module's docstring)."""
    name = (environment or "").strip().lower()
    return name in PRODUCTION_NAMES or name.startswith(tuple(f"{p}-" for p in PRODUCTION_NAMES))


def _param(params: Any, name: str) -> Any:
    if isinstance(params, Mapping):
        return params.get(name)
    return getattr(params, name, None)


def _environment(spec: Any, params: Any) -> str:
    return str(_param(params, "environment") or spec.environment)


def _in_production(spec: Any, params: Any) -> str:
    return OPERATE if is_production(_environment(spec, params)) else DEVELOP


def _promotion(spec: Any, params: Any) -> str:
    return OPERATE if _param(params, "target") == "production" else DEVELOP


def _cost(spec: Any, params: Any) -> str:
    return ADMIN if _param(params, "all_stacks") else READ


Rule = str | Callable[[Any, Any], str]

# operation name → the action it needs, or a function of (spec, params) choosing it
PERMISSIONS: dict[str, Rule] = {
    # anyone authenticated
    "access.whoami": ANYONE,
    "access.roles": ANYONE,
    # reads
    "models.list": READ,
    "models.show": READ,
    "models.show_latest": READ,
    "models.sealed_version": READ,
    "approvals.list": READ,
    "audit.log": READ,
    "audit.verify": READ,
    "audit.export": READ,
    "cost.report": _cost,
    "adoption.report": _cost,  # over every stack: admin, like the cost report
    "sla.report": READ,
    "dashboard.snapshot": READ,
    "deployments.list": READ,
    "deployments.show": READ,
    "rollouts.status": READ,
    "monitoring.status": READ,
    "features.list": READ,
    "features.skew": READ,
    "keys.list": READ,
    # development
    "models.check_registration": DEVELOP,
    "models.register": DEVELOP,
    "models.promote": _promotion,
    "models.evaluate": DEVELOP,
    "pipelines.record": DEVELOP,
    "deployments.create": _in_production,
    "deployments.rollback": _in_production,
    "features.plan": DEVELOP,
    "features.apply": DEVELOP,
    "features.materialize": DEVELOP,
    "monitoring.labels": DEVELOP,
    "monitoring.run": DEVELOP,
    # four eyes
    "models.approve": APPROVE,
    "models.reject": APPROVE,
    # production operations
    "models.share": OPERATE,  # a production version leaves the team
    "keys.create": OPERATE,
    "keys.revoke": OPERATE,
    "keys.rotate": OPERATE,
    # administration
    "governance.apply": ADMIN,
}


def action_for(name: str, spec: Any, params: Any) -> str:
    """The action operation ``name`` needs with ``params`` on ``spec``: ``admin`` when it is not in the table."""
    rule = PERMISSIONS.get(name, ADMIN)
    return rule(spec, params) if callable(rule) else rule


def unmapped(names: Iterable[str]) -> list[str]:
    """The operations among ``names`` the table does not map (they are admin-only until it does)."""
    return sorted(n for n in names if n not in PERMISSIONS)


def roles_allowing(action: str) -> list[str]:
    return [role for role in ROLES if action in ROLE_ACTIONS[role]]


def roles_of(principal: Principal, access: AccessInForce) -> list[str]:
    """The roles ``principal`` holds under ``access`` (in :data:`ROLES` order); an applied
    ``governance.approvers`` entry naming it grants ``approver``."""
    held = {role for role, patterns in access.roles.items() if any(matches(p, principal) for p in patterns)}
    if any(matches(p, principal) for p in access.approvers):
        held.add("approver")
    return [role for role in ROLES if role in held]


def allows(roles: Iterable[str], action: str) -> bool:
    return action == ANYONE or any(action in ROLE_ACTIONS[r] for r in roles)


def open_to_all(principal: Principal, access: AccessInForce) -> bool:
    """A server that does not authenticate (names typed in) and declares no role: everyone may do everything."""
    return not principal.authenticated and not any(access.roles.values())


def granted_views(principal: Principal, access: AccessInForce) -> set[str]:
    """Feature views ``principal`` may read through ``mlplat:access.featureGrants``."""
    return {view for grant in access.feature_grants if any(matches(p, principal) for p in grant.principals)
            for view in grant.views}


def reads_all_features(principal: Principal | None, access: AccessInForce) -> bool:
    """True when ``principal`` sees every feature view (embedded, an open server, or the read action);
    otherwise it sees only :func:`granted_views`."""
    if principal is None or open_to_all(principal, access):
        return True
    return allows(roles_of(principal, access), READ)


def authorize(spec: Any, ctx: Any, principal: Principal | None, op: Any, params: Any) -> None:
    """Raise ``Forbidden`` (403) unless ``principal`` may run ``op`` with ``params`` on ``spec``'s ledger.

    The message names the operation, the roles that would allow it and those the caller holds.
    ``principal`` None (an embedded command) is never refused here."""
    if principal is None:
        return
    action = action_for(op.name, spec, params)
    if action == ANYONE:
        return
    from mlplat.services import governance

    access = governance.access_in_force_for(spec, ctx)
    if open_to_all(principal, access):
        return
    roles = roles_of(principal, access)
    if action == ADMIN and op.name == "governance.apply" and _changes_nothing(spec, ctx, params):
        action = READ
    if allows(roles, action):
        return
    if action == READ and op.name in FEATURE_READS:
        views = granted_views(principal, access)
        view = _param(params, "view")
        if views and (op.name == "features.list" or view in views):
            return
    raise denial(spec, principal, op.name, action, roles, params)


def denial(spec: Any, principal: Principal, name: str, action: str, roles: list[str], params: Any = None) -> Forbidden:
    needed = roles_allowing(action)
    detail = ""
    if name in ("deployments.create", "deployments.rollback"):
        detail = f" in environment '{_environment(spec, params)}'"
    elif name == "models.promote":
        detail = f" to {_param(params, 'target')}"
    elif name in ("cost.report", "adoption.report") and action == ADMIN:
        detail = " over every stack"
    elif name == "features.skew":
        detail = f" of view '{_param(params, 'view')}'"
    has = ", ".join(roles) if roles else "no role"
    return Forbidden(
        f"{principal.name} may not run {name}{detail} on stack '{spec.name}' (team {spec.team}): it needs the "
        f"{' or '.join(needed)} role ({action}); {principal.name} has {has}",
        where="mlplat:access.roles",
        hint=f"an admin of team {spec.team} can grant a role in the stack file's mlplat:access.roles and apply it "
             f"with `mlplat up --stack {spec.name}`; `mlplat whoami` shows your roles",
        operation=name, action=action, required_roles=needed, roles=roles, principal=principal.name)


def _changes_nothing(spec: Any, ctx: Any, params: Any) -> bool:
    """Whether a ``governance.apply`` request would record nothing (its documents are the ones in force).
    A malformed one is not judged here: it needs ``admin`` like any change, then the operation refuses it."""
    from mlplat.errors import MlplatError
    from mlplat.services import governance
    from mlplat.services import registry as reg

    try:
        wanted = governance.document(Governance.model_validate(_param(params, "governance") or {}))
        access = _param(params, "access")
        wanted_access = governance.validate_access(dict(access), spec) if access is not None else None
    except (MlplatError, ValueError):
        return False
    conn = reg.registry_for(spec, ctx).database().connect()
    try:
        entry = governance.applied_entry(conn)
    finally:
        conn.close()
    if entry is None:
        return False
    evidence = json.loads(entry["evidence"])
    return evidence.get("governance") == wanted and (wanted_access is None or evidence.get("access") == wanted_access)
