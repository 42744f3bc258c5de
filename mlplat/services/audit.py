"""The append-only, hash-chained audit log in the platform database.

Every governance decision (registration, gate result, promotion request, approval,
rejection, promotion, deployment, rollback, retraining) is one row: who, when,
what, why, the digest of the artifact or evidence it concerns, the previous row's
hash and its own hash. ``hash = sha256(canonical JSON of the row without hash)``;
the first row links to ``GENESIS``. ``audit_head`` holds the last (seq, hash),
written in the same transaction as the row, so a deleted tail is detected too.

Triggers refuse UPDATE and DELETE; :func:`verify` catches whoever drops them:
an edited row fails its own hash, a reordered or deleted row breaks the links or
the sequence, a truncated tail disagrees with the head.

Other services call :func:`append` inside their own transaction so the decision
and its audit row commit together (or not at all).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

GENESIS = "0" * 64

# The actions other services use; free text is allowed, these keep the log greppable.
ACTIONS = (
    "model.registered", "gate.passed", "gate.failed", "promotion.requested", "promotion.step",
    "promotion.succeeded", "promotion.failed", "promotion.abandoned", "approval.approved", "approval.rejected",
    "stage.changed", "deployment.created", "deployment.step", "deployment.rolled_back", "retraining.triggered",
)


def canonical(value: Any) -> str:
    """The one JSON form that is hashed: sorted keys, no whitespace, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _row_hash(row: Mapping[str, Any]) -> str:
    body = {k: row[k] for k in ("seq", "ts", "actor", "action", "model", "version", "environment", "reason",
                                "evidence", "digest", "prev_hash")}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


def append(
    conn: sqlite3.Connection,
    *,
    actor: str,
    action: str,
    model: str | None = None,
    version: int | None = None,
    environment: str | None = None,
    reason: str | None = None,
    evidence: Mapping[str, Any] | None = None,
    digest: str | None = None,
    ts: float | None = None,
) -> dict[str, Any]:
    """Append one entry and return it (with ``seq`` and ``hash``).

    Call it inside the caller's ``Database.transaction()`` so the entry commits with the
    decision it records. Outside a transaction it takes the write lock itself
    (``BEGIN IMMEDIATE``), so sequence numbers never race.
    """
    if not actor or not action:
        raise ValueError("audit entries need an actor and an action")
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN IMMEDIATE")
    try:
        evidence_text = canonical(dict(evidence or {}))
        head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
        row = {
            "seq": seq,
            "ts": round(float(ts if ts is not None else time.time()), 6),
            "actor": actor,
            "action": action,
            "model": model,
            "version": int(version) if version is not None else None,
            "environment": environment,
            "reason": reason,
            "evidence": evidence_text,
            "digest": digest or hashlib.sha256(evidence_text.encode("utf-8")).hexdigest(),
            "prev_hash": prev,
        }
        row["hash"] = _row_hash(row)
        conn.execute(
            "INSERT INTO audit_log (seq, ts, actor, action, model, version, environment, reason, evidence, digest, "
            "prev_hash, hash) VALUES (:seq, :ts, :actor, :action, :model, :version, :environment, :reason, :evidence, "
            ":digest, :prev_hash, :hash)", row)
        conn.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) "
                     "ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash", (seq, row["hash"]))
    except BaseException:
        if own:
            conn.execute("ROLLBACK")
        raise
    if own:
        conn.execute("COMMIT")
    return row


def entries(conn: sqlite3.Connection, *, model: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Entries in chain order (oldest first); ``limit`` keeps the newest ``limit``."""
    sql = "SELECT * FROM audit_log" + (" WHERE model = ?" if model else "") + " ORDER BY seq"
    rows = [dict(r) for r in conn.execute(sql, (model,) if model else ())]
    for row in rows:
        row["evidence"] = json.loads(row["evidence"])
    return rows[-limit:] if limit else rows


@dataclass
class Verification:
    ok: bool
    entries: int
    problems: list[str] = field(default_factory=list)
    head: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "problems": self.problems, "head": self.head}


def verify(conn: sqlite3.Connection) -> Verification:
    """Walk the chain; report every edited, reordered, inserted or deleted entry (read-only)."""
    rows = [dict(r) for r in conn.execute("SELECT * FROM audit_log ORDER BY seq")]
    problems: list[str] = []
    prev = GENESIS
    for index, row in enumerate(rows, start=1):
        if row["seq"] != index:
            problems.append(f"entry #{row['seq']}: expected #{index} here: entries are missing or renumbered")
        if row["prev_hash"] != prev:
            problems.append(f"entry #{row['seq']}: does not link to the entry before it "
                            f"(deleted, inserted or reordered entries)")
        if _row_hash(row) != row["hash"]:
            problems.append(f"entry #{row['seq']} ({row['action']} by {row['actor']}): content does not match its hash "
                            f"(the entry was edited)")
        prev = row["hash"]
    head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    if head is None and rows:
        problems.append("the chain head is missing")
    elif head is not None:
        if not rows:
            problems.append(f"the chain head names entry #{head[0]} but the log is empty (entries were deleted)")
        elif (head[0], head[1]) != (rows[-1]["seq"], rows[-1]["hash"]):
            problems.append(f"the chain head names entry #{head[0]} but the last entry is #{rows[-1]['seq']} "
                            f"(entries at the end were deleted or replaced)")
    return Verification(not problems, len(rows), problems, rows[-1]["hash"] if rows else None)


def format_problems(problems: Iterable[str], limit: int = 10) -> str:
    problems = list(problems)
    shown = problems[:limit]
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return "\n  - " + "\n  - ".join(shown) + more
