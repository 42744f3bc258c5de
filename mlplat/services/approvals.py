"""Four-eyes approvals for production promotions of critical models.

An approval (or rejection) is a record bound to the version's artifact digest and
to the digest of the gate report that passed for it. If either changes (new files
sealed for the version, a new gate report: other held-out bytes, another champion),
earlier decisions no longer count. Rules, each a clear refusal with nothing written:
approving needs the ``approver`` role (or ``admin``) or a match in ``mlplat:governance.approvers``,
both as applied by the last ``mlplat up`` (not the edited stack file, see :mod:`governance`); the
version's author never approves or rejects it, whatever roles they hold (separation of duties:
the deciding principal's name and ids are compared with the author's, recorded at registration;
names compare case-insensitively, and two sessions of one IAM role count as one person); a
reason is required; every decision is final for its binding (one per approver, and nothing
after a rejection or once enough approvals are in).

Identity is the caller's principal: on ``mlplat server`` the one its credentials proved (a
``Mlplat-User`` header naming someone else is ignored there), embedded the OS user (or
``MLPLAT_USER`` on a ``trusted-local`` stack).

Decisions are re-checked whenever they are counted: one by someone who no longer holds the
approver role under the applied settings is void, and an approval row without its audit entry
(written into the database by hand) is never counted and makes production promotions refuse.
"""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from mlplat.errors import Conflict, Denied, IntegrityError, MlplatError
from mlplat.identity import Principal, rbac
from mlplat.services import audit
from mlplat.services import gate as gate_service
from mlplat.services import governance as governance_service
from mlplat.services import ledger as ledger_service
from mlplat.services import registry as reg
from mlplat.stack import Governance, RiskTier

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.services.governance import AccessInForce
    from mlplat.stack import StackSpec


def required(governance: Governance, name: str) -> int:
    """Approvals a production promotion of ``name`` needs under ``governance``: 0 for low-risk models."""
    return governance.required_approvals if governance.risk_tier_for(name) == RiskTier.critical else 0


def _names(principal: Principal) -> set[str]:
    return {n.lower() for n in (principal.name, *principal.ids) if n}


def author_of(conn: sqlite3.Connection, row: Any) -> Principal:
    """The principal that registered a version: its name, and the ids its registration recorded."""
    entry = conn.execute("SELECT evidence FROM audit_log WHERE action = 'model.registered' AND model = ? AND "
                         "version = ? ORDER BY seq LIMIT 1", (row["model"], int(row["version"]))).fetchone()
    evidence = json.loads(entry["evidence"] or "{}") if entry else {}
    return Principal(row["author"], "", ids=tuple(str(i) for i in evidence.get("author_ids") or ()))


def same_person(principal: Principal, author: Principal) -> bool:
    """Separation of duties: whether ``principal`` is (or shares a name or id with) the version's author."""
    return bool(_names(principal) & _names(author))


def caller(ctx: Context) -> Principal:
    """The principal deciding: the server's verified caller, or the embedded user."""
    return ctx.principal if getattr(ctx, "principal", None) is not None else Principal(ctx.user, ctx.method)


def _decider(conn: sqlite3.Connection, d: dict[str, Any]) -> Principal:
    """The principal behind a recorded decision, with the groups and ids its audit entry recorded."""
    for entry in conn.execute(
            "SELECT evidence FROM audit_log WHERE action = ? AND model = ? AND version = ? AND environment = ? AND "
            "actor = ? AND digest = ? ORDER BY seq", (f"approval.{d['decision']}", d["model"], int(d["version"]),
                                                      d["environment"], d["approver"], d["artifact_digest"])):
        evidence = json.loads(entry["evidence"] or "{}")
        if evidence.get("gate_digest") == d["gate_digest"] and isinstance(evidence.get("approver"), dict):
            who = evidence["approver"]
            return Principal(d["approver"], str(who.get("method") or ""), groups=tuple(who.get("groups") or ()),
                             ids=tuple(who.get("ids") or ()))
    return Principal(d["approver"], "")


def status(conn: sqlite3.Connection, spec: StackSpec, name: str, version: int, environment: str,
           governance: Governance | None = None, access: AccessInForce | None = None) -> dict[str, Any]:
    """Where the approval of ``name`` ``version`` stands for its current binding.

    ``state``: ``not_required`` (low risk) | ``no_gate`` (no passed gate report for the current
    artifact) | ``pending`` | ``approved`` | ``rejected``. Rules come from ``governance`` (default:
    the applied governance of the ledger) and ``access`` (the applied access settings: who holds the
    approver role). Decisions on older bindings, by someone no longer an approver, by the author, or
    without their audit entry (``unaudited``) are listed as void and never counted.
    """
    governance = governance or governance_service.effective(conn, spec).governance
    row = reg.version_row(conn, name, version)
    need = required(governance, name)
    report = gate_service.latest_report(conn, name, version, environment, row["artifact_digest"])
    binding = {"artifact_digest": row["artifact_digest"], "gate_digest": report["digest"] if report and report["passed"]
               else None}
    decisions = [dict(r) for r in conn.execute(
        "SELECT id, model, version, environment, approver, decision, reason, artifact_digest, gate_digest, created_at "
        "FROM approvals WHERE model=? AND version=? AND environment=? ORDER BY id", (name, int(version), environment))]
    ledger = ledger_service.Ledger(conn)
    access = dataclasses.replace(access or governance_service.access_in_force(conn, spec),
                                 approvers=tuple(governance.approvers))
    author = author_of(conn, row)
    unaudited = []
    for d in decisions:
        problem = ledger.approval_problem(d)
        d["audited"] = problem is None
        if problem:
            unaudited.append(problem)
        bound = d["artifact_digest"] == binding["artifact_digest"] and d["gate_digest"] == binding["gate_digest"]
        decider = _decider(conn, d) if bound and d["audited"] else None
        entitled = decider is not None and rbac.allows(rbac.roles_of(decider, access), rbac.APPROVE)
        own = decider is not None and same_person(decider, author)
        d["valid"] = bound and d["audited"] and entitled and not own
        if not d["valid"]:
            d["void"] = ("not in the audit log" if not d["audited"] else
                         "artifact or gate report changed since" if not bound else
                         "the version's author" if own else "no longer an approver")
    valid = [d for d in decisions if d["valid"]]
    approvals = [d for d in valid if d["decision"] == "approved"]
    if need == 0:
        state = "not_required"
    elif binding["gate_digest"] is None:
        state = "no_gate"
    elif any(d["decision"] == "rejected" for d in valid):
        state = "rejected"
    elif len(approvals) >= need:
        state = "approved"
    else:
        state = "pending"
    return {"risk_tier": governance.risk_tier_for(name).value, "required": need, "approvals": len(approvals),
            "state": state, "binding": binding, "decisions": decisions, "author": row["author"],
            "approvers": list(governance.approvers), "unaudited": unaudited}


def require_audited(st: dict[str, Any], what: str) -> None:
    """Refuse (``IntegrityError``) when approval rows were written outside mlplat."""
    if st.get("unaudited"):
        raise IntegrityError(f"refusing to decide on {what}: " + "; ".join(st["unaudited"]),
                             hint="restore the platform database from a backup; `mlplat audit verify` lists every "
                                  "row no audited decision produced")


def decide(spec: StackSpec, ctx: Context, name: str, version: int, *, decision: str, reason: str,
           environment: str | None = None) -> dict[str, Any]:
    """Record ``ctx.user``'s approval or rejection of ``name`` ``version``; return the new status."""
    if decision not in ("approved", "rejected"):
        raise MlplatError(f"unknown decision {decision!r}")
    reason = (reason or "").strip()
    if not reason:
        raise MlplatError("a reason is required", hint='pass --reason "validated on the Q3 holdout"')
    environment = environment or spec.environment
    principal = caller(ctx)
    user = principal.name
    registry = reg.registry_for(spec, ctx)
    db = registry.database()
    conn = db.connect()
    try:
        row = reg.version_row(conn, name, version)
        governance = governance_service.effective_for(spec, ctx, conn).governance
        access = dataclasses.replace(governance_service.access_in_force(conn, spec),
                                     approvers=tuple(governance.approvers))
        author = author_of(conn, row)
    finally:
        conn.close()
    what = f"{name} version {version}"
    roles = rbac.roles_of(principal, access)
    if same_person(principal, author):
        raise Denied(f"{user} registered {what} and cannot approve or reject it (four-eyes rule: the author of a "
                     "version never decides on it, whatever roles they hold)",
                     hint="ask another approver: " + (", ".join(a for a in governance.approvers
                                                                if a.lower() not in _names(author)) or "none listed"))
    if not rbac.allows(roles, rbac.APPROVE):
        raise Denied(f"{user} is not an approver of stack '{spec.name}' (roles: {', '.join(roles) or 'none'})",
                     hint="approvers: " + (", ".join(governance.approvers) or "none listed") +
                          " (mlplat:governance.approvers), or the approver role in mlplat:access.roles, as applied by "
                          f"the last `mlplat up`; you are {user} ({principal.method})")
    reg.verify_row(registry, row)  # a tampered artifact is never approved
    with db.transaction() as conn:  # decide on the state as it is under the write lock
        current = status(conn, spec, name, version, environment, governance, access)
        require_audited(current, what)
        stage = reg.stage_of(conn, name, version, environment)
        if stage == "archived":
            raise Conflict(f"{what} is archived in '{environment}'")
        if current["state"] == "not_required" and decision == "approved":
            raise Conflict(f"{name} is a low-risk model: production promotions need no approval",
                           hint=f"promote it: `mlplat models promote {name} {version} --to production`")
        if current["binding"]["gate_digest"] is None:
            raise Denied(f"{what} has no passed gate report for its current artifact; there is nothing to approve yet",
                         hint=f"run `mlplat models promote {name} {version} --to staging` first")
        mine = [d for d in current["decisions"] if d["valid"] and d["approver"] == user]
        if mine:
            raise Conflict(f"{user} already {mine[0]['decision']} {what} for this artifact and gate report; "
                           f"decisions are final")
        if current["state"] in ("approved", "rejected"):
            raise Conflict(f"{what} is already {current['state']} for this artifact and gate report; decisions are final",
                           hint="a new gate report or a new version starts a new approval")
        binding = current["binding"]
        conn.execute(
            "INSERT INTO approvals (model, version, environment, approver, decision, reason, artifact_digest, "
            "gate_digest, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (name, int(version), environment, user, decision, reason, binding["artifact_digest"],
             binding["gate_digest"], time.time()))
        audit.append(conn, actor=user, method=ctx.method, action=f"approval.{decision}", model=name, version=version,
                     environment=environment, reason=reason, digest=binding["artifact_digest"],
                     evidence={"gate_digest": binding["gate_digest"], "author": row["author"], "roles": roles,
                               "approver": {"method": principal.method, "ids": list(principal.ids),
                                            "groups": list(principal.groups)}})
        result = status(conn, spec, name, version, environment, governance, access)
    # the provider's registry mirrors the committed decision (e.g. SageMaker's ModelApprovalStatus)
    registry.record_approval(name, int(version), state=result["state"], environment=environment,
                             decisions=result["decisions"], artifact_digest=binding["artifact_digest"],
                             gate_digest=binding["gate_digest"])
    return result


def pending(conn: sqlite3.Connection, spec: StackSpec, environment: str, *,
            include_decided: bool = False) -> list[dict[str, Any]]:
    """Versions of critical models in staging (or with a passed gate) and where their approval stands."""
    governance = governance_service.effective(conn, spec).governance
    access = governance_service.access_in_force(conn, spec)
    out = []
    for item in reg.list_models(conn, environment):
        if required(governance, item["model"]) == 0 or item["stage"] in ("archived", "dev"):
            continue
        st = status(conn, spec, item["model"], item["version"], environment, governance, access)
        if include_decided or (st["state"] in ("pending", "no_gate") and item["stage"] == "staging"):
            out.append({"model": item["model"], "version": item["version"], "stage": item["stage"],
                        "author": item["author"], **{k: st[k] for k in ("state", "approvals", "required", "risk_tier")},
                        "gate_digest": st["binding"]["gate_digest"], "decisions": st["decisions"]})
    return out
