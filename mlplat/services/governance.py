"""The governance settings in force: those recorded by the last ``mlplat up``, not the edited file.

``mlplat up`` appends a ``governance.applied`` entry to the keyed audit chain holding the
stack's ``mlplat:governance`` (risk tiers, approvers, required approvals). Promotion,
approval and deployment read the rules from the latest such entry, so editing the stack
file (a critical model made ``low``, an approver added or removed) changes nothing until it
is applied; while the file differs, commands say so on stderr, naming the keys.

A ledger on which no ``up`` of this version recorded governance (an older stack, or one
provisioned without the CLI) uses the file, with the same warning.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlplat.errors import IntegrityError
from mlplat.services import audit
from mlplat.stack import Governance

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.db import Database
    from mlplat.stack import StackSpec

ACTION = "governance.applied"


def document(governance: Governance) -> dict[str, Any]:
    """The canonical form recorded in the chain (stack-file key names)."""
    return governance.model_dump(mode="json", by_alias=True)


def differing_keys(applied: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Top-level keys that differ; per-model overrides are named ``models.<name>``."""
    out = []
    for key in sorted(set(applied) | set(current)):
        if key == "models":
            a, b = applied.get(key) or {}, current.get(key) or {}
            out += [f"models.{m}" for m in sorted(set(a) | set(b)) if a.get(m) != b.get(m)]
        elif applied.get(key) != current.get(key):
            out.append(key)
    return out


@dataclass
class Effective:
    """The governance in force and how it relates to the stack file."""

    governance: Governance
    applied: bool  # False: never recorded by `mlplat up` on this ledger; the file is used
    differs: list[str] = field(default_factory=list)  # keys where the file differs from what is applied
    entry: int | None = None  # the audit entry that recorded it

    def warning(self, spec: StackSpec) -> str | None:
        where = spec.path or f"stacks/Pulumi.{spec.name}.yaml"
        if not self.applied:
            return (f"warning: the governance settings of stack '{spec.name}' were never applied to its ledger; "
                    f"using {where} as it is. Run `mlplat up --stack {spec.name}` to apply them.")
        if self.differs:
            return (f"warning: {where} changes mlplat:governance ({', '.join(self.differs)}) but that change has not "
                    f"been applied; the settings of the last `mlplat up` are in force. Run "
                    f"`mlplat up --stack {spec.name}` to apply it.")
        return None


def applied_entry(conn: sqlite3.Connection, key: audit.AuditKey | None = None) -> dict[str, Any] | None:
    """The latest authentic ``governance.applied`` entry, or None. A forged one is refused."""
    row = conn.execute("SELECT * FROM audit_log WHERE action = ? ORDER BY seq DESC LIMIT 1", (ACTION,)).fetchone()
    if row is None:
        return None
    entry = dict(row)
    key = key if key is not None else audit.load_key(conn)
    problem = audit.entry_problem(entry, key, first_keyed=audit.first_keyed_seq(conn))
    if problem:
        raise IntegrityError(f"the applied governance settings cannot be trusted: {problem}",
                             hint="restore the platform database from a backup, then run `mlplat up`")
    return entry


def effective(conn: sqlite3.Connection, spec: StackSpec) -> Effective:
    """The governance in force on this ledger for ``spec`` (read-only)."""
    current = document(spec.governance)
    entry = applied_entry(conn)
    if entry is None:
        return Effective(spec.governance, applied=False)
    recorded = json.loads(entry["evidence"])["governance"]
    return Effective(Governance.model_validate(recorded), applied=True,
                     differs=differing_keys(recorded, current), entry=int(entry["seq"]))


def effective_for(spec: StackSpec, ctx: Context, conn: sqlite3.Connection) -> Effective:
    """:func:`effective`, and its warning on ``ctx.err`` (once per command)."""
    result = effective(conn, spec)
    message = result.warning(spec)
    if message:
        said = ctx.__dict__.setdefault("_governance_warnings", set())
        if message not in said:
            said.add(message)
            ctx.err.print(f"[yellow]{message}[/]", highlight=False, soft_wrap=True)
    return result


def record(conn: sqlite3.Connection, spec: StackSpec, actor: str) -> list[str] | None:
    """Record ``spec``'s governance as applied, inside the caller's transaction, if it changed.

    Returns the keys that changed (all of them the first time), or None when already in force.
    """
    current = document(spec.governance)
    entry = applied_entry(conn)
    before = json.loads(entry["evidence"])["governance"] if entry else None
    if before == current:
        return None
    changed = differing_keys(before, current) if before is not None else sorted(current)
    audit.append(conn, actor=actor, action=ACTION, environment=spec.environment,
                 reason=f"governance of stack '{spec.name}' applied by `mlplat up`",
                 evidence={"stack": spec.name, "governance": current, "changed": changed,
                           "previous_entry": entry["seq"] if entry else None})
    return changed


def record_applied(db: Database, spec: StackSpec, actor: str) -> list[str] | None:
    """What ``mlplat up`` calls once the stack is provisioned, on the stack's platform database
    (``mlplat.db.Database``): :func:`record` in its own transaction."""
    with db.transaction() as conn:
        return record(conn, spec, actor)
