"""The governance and access settings in force: those recorded by the last ``mlplat up``, not the edited file.

``mlplat up`` (and ``mlplat server`` when it starts, for its own stack file) appends a
``governance.applied`` entry to the keyed audit chain holding the stack's ``mlplat:governance``
(risk tiers, approvers, required approvals) and the rules of its ``mlplat:access`` (the mode,
the roles and the feature grants: :func:`access_document`). Promotion, approval, deployment and
the server's role checks read them from the latest such entry, so editing the stack file (a
critical model made ``low``, an approver added, oneself made admin) changes nothing until it is
applied; while the file differs, commands say so on stderr, naming the keys.

A client of ``mlplat server`` applies its file with the ``governance.apply`` operation: the
server records it under the caller's authenticated principal, and only an admin may change
what is in force (:mod:`mlplat.identity.rbac`).

A ledger on which no ``up`` of this version recorded governance (an older stack, or one
provisioned without the CLI) uses the file, with the same warning; one whose entry predates
access settings uses the file's access settings.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlplat.errors import IntegrityError, StackError
from mlplat.services import audit
from mlplat.stack import Access, FeatureGrant, Governance

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.db import Database
    from mlplat.stack import StackSpec

ACTION = "governance.applied"


def document(governance: Governance) -> dict[str, Any]:
    """The canonical form recorded in the chain (stack-file key names)."""
    return governance.model_dump(mode="json", by_alias=True)


ACCESS_KEYS = ("mode", "roles", "featureGrants")


def access_document(access: Access) -> dict[str, Any]:
    """The rules of ``mlplat:access`` recorded in the chain (stack-file key names): the mode, roles and
    feature grants. The identity providers' settings stay with the server that uses them."""
    doc = access.model_dump(mode="json", by_alias=True)
    return {key: doc.get(key) for key in ACCESS_KEYS} | {"roles": {k: list(v) for k, v in sorted(access.roles.items())}}


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


def differing_access_keys(applied: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """Keys of ``mlplat:access`` that differ, named ``access.mode``, ``access.roles.<role>``, ``access.featureGrants``
    (every one of them when nothing was recorded)."""
    if applied is None:
        return [f"access.{key}" for key in ACCESS_KEYS]
    out = []
    for key in ACCESS_KEYS:
        if key == "roles":
            a, b = applied.get(key) or {}, current.get(key) or {}
            out += [f"access.roles.{r}" for r in sorted(set(a) | set(b)) if a.get(r) != b.get(r)]
        elif applied.get(key) != current.get(key):
            out.append(f"access.{key}")
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
            access = [k for k in self.differs if k.startswith("access.")]
            governance = [k for k in self.differs if not k.startswith("access.")]
            what = " and ".join(([f"mlplat:governance ({', '.join(governance)})"] if governance else []) +
                                ([f"mlplat:access ({', '.join(access)})"] if access else []))
            return (f"warning: {where} changes {what} but that change has not "
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
    evidence = json.loads(entry["evidence"])
    recorded = evidence["governance"]
    differs = differing_keys(recorded, current)
    if "access" in evidence:
        differs += differing_access_keys(evidence["access"], access_document(spec.access))
    return Effective(Governance.model_validate(recorded), applied=True, differs=differs, entry=int(entry["seq"]))


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


def record(conn: sqlite3.Connection, spec: StackSpec, actor: str, *, governance: Governance | None = None,
           access: dict[str, Any] | None = None, principal: Any = None,
           via: str = "`mlplat up`", method: str | None = None) -> list[str] | None:
    """Record governance and access settings as applied, inside the caller's transaction, if they changed.

    Default: ``spec``'s own (its file); ``governance.apply`` passes a client's (``access`` as
    :func:`access_document` writes it, validated by :func:`validate_access`). ``principal`` (a
    :class:`mlplat.identity.Principal`) is recorded beside ``actor``. Returns the keys that changed
    (all of them the first time), or None when already in force.
    """
    current = document(governance if governance is not None else spec.governance)
    current_access = access if access is not None else access_document(spec.access)
    entry = applied_entry(conn)
    evidence = json.loads(entry["evidence"]) if entry else {}
    before = evidence.get("governance") if entry else None
    before_access = evidence.get("access")
    if before == current and before_access == current_access:
        return None
    changed = differing_keys(before, current) if before is not None else sorted(current)
    changed += differing_access_keys(before_access, current_access)
    who = ({"principal": principal.name, "method": principal.method, "ids": list(principal.ids),
            "groups": list(principal.groups)} if principal is not None else {})
    how = principal.method if principal is not None else method  # how actor's identity was established
    if how is None:
        raise ValueError("recording governance needs the principal or the method that established the actor")
    audit.append(conn, actor=actor, method=how, action=ACTION, environment=spec.environment,
                 reason=f"governance of stack '{spec.name}' applied by {via}",
                 evidence={"stack": spec.name, "governance": current, "access": current_access, "changed": changed,
                           "previous_entry": entry["seq"] if entry else None, **({"applied_by": who} if who else {})})
    return changed


def validate_access(doc: dict[str, Any], spec: StackSpec) -> dict[str, Any]:
    """A client's access rules checked as the stack file's are, in :func:`access_document`'s form.

    The mode is the server's own (it decides how callers are authenticated, with settings only the
    server's stack file holds): a document naming another mode is refused."""
    unknown = sorted(set(doc) - set(ACCESS_KEYS))
    if unknown:
        raise StackError(f"mlplat:access keys {', '.join(unknown)} cannot be applied through the server",
                         where="mlplat:access", hint=f"send only {', '.join(ACCESS_KEYS)}; nothing was applied")
    checked = Access.model_validate({k: v for k, v in doc.items() if k != "mode" and v is not None})
    served = spec.access.mode.value if spec.access.mode is not None else None
    if doc.get("mode") != served:
        raise StackError(f"this server identifies callers with mode {served or '(none: os-user)'}, not "
                         f"{doc.get('mode') or '(none)'}", where="mlplat:access.mode",
                         hint="the mode is set by the stack file the server was started with; make the client's "
                              "mlplat:access.mode the same; nothing was applied")
    return access_document(checked.model_copy(update={"mode": spec.access.mode}))


@dataclass(frozen=True)
class AccessInForce:
    """The access rules in force on a ledger: ``applied`` False means none were recorded (the file's)."""

    mode: str | None
    roles: dict[str, tuple[str, ...]]
    feature_grants: tuple[FeatureGrant, ...]
    approvers: tuple[str, ...]  # governance.approvers in force: they also hold the approver role
    applied: bool
    entry: int | None = None

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "roles": {r: list(p) for r, p in self.roles.items()},
                "feature_grants": [{"views": list(g.views), "principals": list(g.principals)}
                                   for g in self.feature_grants],
                "approvers": list(self.approvers), "applied": self.applied}


def _in_force(doc: dict[str, Any], governance: Governance, *, applied: bool, entry: int | None) -> AccessInForce:
    return AccessInForce(mode=doc.get("mode"), roles={r: tuple(p) for r, p in (doc.get("roles") or {}).items()},
                         feature_grants=tuple(FeatureGrant.model_validate(g) for g in doc.get("featureGrants") or []),
                         approvers=tuple(governance.approvers), applied=applied, entry=entry)


def access_in_force(conn: sqlite3.Connection, spec: StackSpec) -> AccessInForce:
    """The access rules in force on this ledger for ``spec`` (read-only): the last applied entry's,
    else the file's (``applied`` False)."""
    entry = applied_entry(conn)
    if entry is None:
        return _in_force(access_document(spec.access), spec.governance, applied=False, entry=None)
    evidence = json.loads(entry["evidence"])
    governance = Governance.model_validate(evidence["governance"])
    if "access" not in evidence:  # recorded before access settings were: the file's
        return _in_force(access_document(spec.access), governance, applied=False, entry=int(entry["seq"]))
    return _in_force(evidence["access"], governance, applied=True, entry=int(entry["seq"]))


def access_document_in_force(conn: sqlite3.Connection, spec: StackSpec) -> dict[str, Any]:
    """The access rules in force as :func:`access_document` writes them (the file's if none were applied)."""
    entry = applied_entry(conn)
    evidence = json.loads(entry["evidence"]) if entry else {}
    return evidence.get("access") or access_document(spec.access)


class _HeadCache:
    """Access in force per ledger, valid while the ledger's newest audit entry is the one it was read at
    (any new entry, an applied change among them, moves the head): a request reads one row, not the chain.

    The server asks on every request, so it also keeps what that costs to reach: the stack's ledger
    (``Database``) per stack and database URL, and one read connection per ledger and worker thread (an
    autocommit SQLite connection sees each commit at its next statement; a PostgreSQL one holds a pooled
    connection only while a statement runs)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.items: dict[tuple[str, str], tuple[tuple[Any, ...], AccessInForce]] = {}
        self.databases: dict[tuple[str, str, str | None], Any] = {}
        self.lock = threading.Lock()  # the server's requests run in a thread pool
        self.local = threading.local()
        self.generation = 0  # bumped by clear(): connections of an earlier generation are dropped

    def database(self, spec: StackSpec, ctx: Context) -> Any:
        from mlplat.services import registry as reg

        key = (spec.name, spec.project_dir, getattr(ctx, "database_url", None))
        with self.lock:
            db = self.databases.get(key)
        if db is None:
            db = reg.registry_for(spec, ctx).database()
            with self.lock:
                if len(self.databases) >= self.size:
                    self.databases.pop(next(iter(self.databases)))
                self.databases[key] = db
        return db

    def connection(self, db: Any) -> Any:
        conns = self.local.__dict__
        if conns.get("generation") != self.generation:
            for conn in conns.get("open", {}).values():
                conn.close()
            conns["open"], conns["generation"] = {}, self.generation
        conn = conns["open"].get(db.describe())
        if conn is None:
            conn = conns["open"][db.describe()] = db.connect()
        return conn

    def get(self, spec: StackSpec, ctx: Context) -> AccessInForce:
        db = self.database(spec, ctx)
        conn = self.connection(db)
        try:
            row = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
            head = (int(row["seq"]), row["hash"]) if row else (0, None)
            key = (db.describe(), spec.name)
            with self.lock:
                hit = self.items.get(key)
            file_doc = (access_document(spec.access), document(spec.governance))
            if hit is not None and hit[0] == (head, file_doc):
                return hit[1]
            value = access_in_force(conn, spec)
        except BaseException:
            self.local.__dict__.get("open", {}).pop(db.describe(), None)
            conn.close()
            raise
        with self.lock:
            if key not in self.items and len(self.items) >= self.size:
                self.items.pop(next(iter(self.items)))
            self.items[key] = ((head, file_doc), value)
        return value

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.databases.clear()
            self.generation += 1


_ACCESS_CACHE = _HeadCache()


def access_in_force_for(spec: StackSpec, ctx: Context) -> AccessInForce:
    """:func:`access_in_force` on the stack's ledger, cached by its audit head."""
    return _ACCESS_CACHE.get(spec, ctx)


def reset_cache() -> None:
    """Forget cached access settings and ledgers (tests that rewrite or replace a ledger underneath)."""
    _ACCESS_CACHE.clear()


def record_applied(db: Database, spec: StackSpec, actor: str, method: str) -> list[str] | None:
    """What ``mlplat up`` calls once the stack is provisioned, on the stack's platform database
    (``mlplat.db.Database``): :func:`record` in its own transaction."""
    with db.transaction() as conn:
        return record(conn, spec, actor, method=method)
