"""The append-only, keyed, hash-chained audit log in the platform database.

Every governance decision (registration, gate result, promotion request, approval,
rejection, promotion, deployment, rollback, retraining, the governance applied by
``mlplat up``) is one row: who, when, what, why, the digest of the artifact or
evidence it concerns, the previous row's hash and its own hash.

Hash schemes, named per entry (``scheme``, ``key_id``):

* ``hmac-sha256`` (current): ``hash = HMAC-SHA256(k, canonical JSON of the row without hash)``
  where ``k`` is derived from the stack's secret (``keys/platform.key`` in the stack's state
  directory, beside a SQLite ledger, 0600; the same secret that seals model manifests). Without the key nobody can
  recompute a chain, so an edited, inserted or reordered entry cannot be re-hashed into place.
* ``sha256`` (entries written by earlier versions, ``scheme`` NULL): plain SHA-256 of the same
  JSON without ``scheme``/``key_id``. They still verify as such; the first keyed entry links to
  the last of them, so they cannot be rewritten either once one keyed entry exists. A legacy
  entry *after* a keyed one is a forgery.

The first row links to ``GENESIS``. ``audit_head`` holds the last (seq, hash), written in the
same transaction as the row; a head file beside the database (``audit-head.json``, signed with
the key) is rewritten after each commit, so cutting the tail and moving the in-database head
with it is detected too. The head file may lag the database by a crash window (entries after
it are still keyed), never lead it.

Triggers refuse UPDATE and DELETE; :func:`verify` catches whoever drops them.
Other services call :func:`append` inside their own transaction so the decision
and its audit row commit together (or not at all).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplat.errors import IntegrityError
from mlplat.identity import METHODS

GENESIS = "0" * 64
SCHEME_LEGACY = "sha256"
SCHEME_KEYED = "hmac-sha256"
HEAD_FILE = "audit-head.json"
_KEY_CONTEXT = b"mlplat audit chain v1"  # domain separation from the manifest seals made with the same secret
_FIELDS = ("seq", "ts", "actor", "action", "model", "version", "environment", "reason", "evidence", "digest",
           "prev_hash")

# The actions other services use; free text is allowed, these keep the log greppable.
ACTIONS = (
    "model.registered", "gate.passed", "gate.failed", "promotion.requested", "promotion.step",
    "promotion.succeeded", "promotion.failed", "promotion.abandoned", "approval.approved", "approval.rejected",
    "stage.changed", "deployment.created", "deployment.step", "deployment.rolled_back", "retraining.triggered",
    "governance.applied",
)


def canonical(value: Any) -> str:
    """The one JSON form that is hashed: sorted keys, no whitespace, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _body(row: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed fields of an entry. ``auth_method`` is one of them when the entry has one: entries
    written before it existed hash as they always did, and adding, changing or removing it on any
    entry changes the hash."""
    body = {k: row[k] for k in _FIELDS}
    if row.get("auth_method") is not None:
        body["auth_method"] = row["auth_method"]
    return body


def _row_hash(row: Mapping[str, Any]) -> str:
    """The legacy (unkeyed) hash of an entry: sha256 of its canonical JSON."""
    return hashlib.sha256(canonical(_body(row)).encode("utf-8")).hexdigest()


def _row_mac(key: AuditKey, row: Mapping[str, Any]) -> str:
    body = {**_body(row), "scheme": SCHEME_KEYED, "key_id": key.key_id}
    return hmac.new(key.secret, canonical(body).encode("utf-8"), hashlib.sha256).hexdigest()


# --- the key ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditKey:
    """The audit chain's key, derived from the stack's secret, and its public id."""

    secret: bytes = field(repr=False)
    key_id: str


def derive_key(stack_secret: bytes) -> AuditKey:
    secret = hmac.new(stack_secret, _KEY_CONTEXT, hashlib.sha256).digest()
    return AuditKey(secret, hashlib.sha256(secret).hexdigest()[:16])


def database_file(conn: sqlite3.Connection) -> Path | None:
    """The file of the connection's main database (None in memory, or on a database server)."""
    if not isinstance(conn, sqlite3.Connection):
        return None
    for row in conn.execute("PRAGMA database_list"):
        if row[1] == "main":
            return Path(row[2]) if row[2] else None
    return None


def state_dir(conn: sqlite3.Connection) -> Path | None:
    """Where the stack's key (``keys/platform.key``) and the signed head file live: the state directory
    the connection names (``key_dir``: a PostgreSQL ledger's, set by ``mlplat.db``), else the folder
    of its database file (None in memory)."""
    named = getattr(conn, "key_dir", None)
    if named is not None:
        return Path(named)
    db_file = database_file(conn)
    return db_file.parent if db_file else None


def _create_secret(path: Path) -> None:
    """Write a new 0600 secret at ``path`` unless another process did first (link is atomic and exclusive)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def _has_keyed(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM audit_log WHERE scheme IS NOT NULL LIMIT 1").fetchone() is not None


def load_key(conn: sqlite3.Connection, *, create: bool = False) -> AuditKey | None:
    """The audit key of the stack whose platform database ``conn`` has open.

    ``create``: make the stack's secret if it does not exist yet and the chain holds no keyed
    entry (a missing key under keyed entries is tampering, never silently replaced).
    """
    from mlplat.db import KEY_FILE

    folder = state_dir(conn)
    if folder is None:
        return None
    path = folder / KEY_FILE
    try:
        raw = path.read_bytes().strip()
    except FileNotFoundError:
        if not create:
            return None
        if _has_keyed(conn):
            raise IntegrityError("the stack's secret key is missing but the audit log holds entries signed with it",
                                 where=str(path), hint="restore the key file from a backup; do not create a new one") from None
        _create_secret(path)
        raw = path.read_bytes().strip()
    except OSError as exc:
        raise IntegrityError(f"the stack's secret key is unreadable: {exc}", where=str(path)) from None
    if len(raw) < 32:
        raise IntegrityError("the stack's secret key is too short", where=str(path))
    return derive_key(raw)


# --- the head file ------------------------------------------------------------------------------


def head_path(conn: sqlite3.Connection) -> Path | None:
    """The signed head file: ``audit-head.json`` beside the stack's SQLite ledger; a ledger elsewhere (a
    PostgreSQL server's) names its own (``head_file``, set by ``mlplat.db``) in the same state directory."""
    folder = state_dir(conn)
    return folder / (getattr(conn, "head_file", None) or HEAD_FILE) if folder else None


def _head_mac(key: AuditKey, seq: int, digest: str) -> str:
    body = canonical({"kind": "mlplat audit head", "seq": seq, "hash": digest, "key_id": key.key_id})
    return hmac.new(key.secret, body.encode("utf-8"), hashlib.sha256).hexdigest()


def read_head_file(conn: sqlite3.Connection) -> dict[str, Any] | None:
    path = head_path(conn)
    if path is None or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {"seq": int(doc["seq"]), "hash": str(doc["hash"]), "key_id": str(doc["key_id"]), "mac": str(doc["mac"])}
    except (ValueError, KeyError, TypeError, OSError):
        return {"seq": -1, "hash": "", "key_id": "", "mac": "", "unreadable": True}


def write_head_file(conn: sqlite3.Connection, key: AuditKey, head: tuple[int, str] | None = None) -> None:
    """Anchor the committed head (or ``head``) outside the database (only ever forwards)."""
    path = head_path(conn)
    if path is None:
        return
    if head is None:
        head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    if head is None:
        return
    current = read_head_file(conn)
    if current is not None and not current.get("unreadable") and current["seq"] >= head[0] \
            and current["key_id"] == key.key_id:
        return
    doc = {"seq": int(head[0]), "hash": head[1], "key_id": key.key_id, "mac": _head_mac(key, int(head[0]), head[1])}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".audit-head-")
    with os.fdopen(fd, "w") as handle:
        json.dump(doc, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def append(
    conn: sqlite3.Connection,
    *,
    actor: str,
    method: str,
    action: str,
    model: str | None = None,
    version: int | None = None,
    environment: str | None = None,
    reason: str | None = None,
    evidence: Mapping[str, Any] | None = None,
    digest: str | None = None,
    ts: float | None = None,
    key: AuditKey | None = None,
) -> dict[str, Any]:
    """Append one keyed entry and return it (with ``seq`` and ``hash``).

    ``method`` is how ``actor``'s identity was established (a method of :mod:`mlplat.identity`:
    ``ctx.method`` for a caller, ``system`` for the platform acting on its own); the keyed hash
    covers it.

    Call it inside the caller's ``Database.transaction()`` so the entry commits with the
    decision it records (the signed head file follows after the commit). Outside a
    transaction it takes the write lock itself (``BEGIN IMMEDIATE``), so sequence numbers
    never race. ``key`` defaults to the stack's, found beside the database (created on the
    first append of a fresh ledger).
    """
    if not actor or not action:
        raise ValueError("audit entries need an actor and an action")
    if method not in METHODS:
        raise ValueError(f"unknown identity method {method!r} for an audit entry (one of {', '.join(METHODS)})")
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN IMMEDIATE")
    try:
        key = key or load_key(conn, create=True)
        if key is None:
            raise IntegrityError("the audit log of an in-memory database needs an explicit key",
                                 hint="pass key=audit.derive_key(secret)")
        evidence_text = canonical(dict(evidence or {}))
        head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
        if read_head_file(conn) is None:
            # The first keyed entry: anchor the head it extends *before* it commits. The head file
            # is written after each commit, so a kill between this entry's COMMIT and that write
            # leaves a file one entry behind (accepted) rather than none (read as a deleted anchor).
            write_head_file(conn, key, (seq - 1, prev))
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
            "auth_method": method,
        }
        row["scheme"], row["key_id"] = SCHEME_KEYED, key.key_id
        row["hash"] = _row_mac(key, row)
        conn.execute(
            "INSERT INTO audit_log (seq, ts, actor, action, model, version, environment, reason, evidence, digest, "
            "prev_hash, hash, scheme, key_id, auth_method) VALUES (:seq, :ts, :actor, :action, :model, :version, "
            ":environment, :reason, :evidence, :digest, :prev_hash, :hash, :scheme, :key_id, :auth_method)", row)
        conn.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) "
                     "ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash", (seq, row["hash"]))
    except BaseException:
        if own:
            conn.execute("ROLLBACK")
        raise
    if own:
        conn.execute("COMMIT")
        write_head_file(conn, key)
    else:
        pending = getattr(conn, "after_commit", None)
        if pending is not None and not any(getattr(cb, "audit_head", False) for cb in pending):
            anchor_key: AuditKey = key  # bound now: the callback runs after the commit

            def anchor(conn: sqlite3.Connection = conn, key: AuditKey = anchor_key) -> None:
                write_head_file(conn, key)

            anchor.audit_head = True  # type: ignore[attr-defined]
            pending.append(anchor)
    return row


def entries(conn: sqlite3.Connection, *, model: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Entries in chain order (oldest first); ``limit`` keeps the newest ``limit`` (only those are read)."""
    where = " WHERE model = ?" if model else ""
    args: tuple[Any, ...] = (model,) if model else ()
    if limit:
        sql = f"SELECT * FROM (SELECT * FROM audit_log{where} ORDER BY seq DESC LIMIT ?) AS newest ORDER BY seq"
        args += (int(limit),)
    else:
        sql = f"SELECT * FROM audit_log{where} ORDER BY seq"
    rows = [dict(r) for r in conn.execute(sql, args)]
    for row in rows:
        row["evidence"] = json.loads(row["evidence"])
    return rows


@dataclass
class Verification:
    ok: bool
    entries: int
    problems: list[str] = field(default_factory=list)
    head: str | None = None
    schemes: dict[str, int] = field(default_factory=dict)  # scheme -> entries hashed with it
    key_id: str | None = None  # of the key the keyed entries verified with
    head_file: str = "absent"  # "ok" | "absent" | "behind" (crash window) | a problem was reported
    rows: int = 0  # decision rows checked against the chain (see mlplat.services.ledger)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "problems": self.problems, "head": self.head,
                "schemes": self.schemes, "key_id": self.key_id, "head_file": self.head_file,
                "decision_rows": self.rows}

    def describe_schemes(self) -> str:
        parts = []
        if self.schemes.get(SCHEME_KEYED):
            parts.append(f"{self.schemes[SCHEME_KEYED]} keyed ({SCHEME_KEYED}, key id {self.key_id})")
        if self.schemes.get(SCHEME_LEGACY):
            parts.append(f"{self.schemes[SCHEME_LEGACY]} legacy ({SCHEME_LEGACY}, unkeyed, written before "
                         f"the chain was keyed)")
        return ", ".join(parts) or "no entries"


def entry_problem(row: Mapping[str, Any], key: AuditKey | None, *, first_keyed: int | None) -> str | None:
    """Why one entry is not authentic (its own hash/MAC only), or None."""
    what = f"entry #{row['seq']} ({row['action']} by {row['actor']})"
    if row.get("scheme") is None:
        if _row_hash(row) != row["hash"]:
            return f"{what}: content does not match its hash (the entry was edited)"
        if first_keyed is not None and row["seq"] > first_keyed:
            return (f"{what}: uses the unkeyed legacy scheme after keyed entries (entry #{first_keyed} on): "
                    f"it was forged or rewritten")
        return None
    if row["scheme"] != SCHEME_KEYED:
        return f"{what}: unknown hash scheme {row['scheme']!r}"
    if key is None:
        return f"{what}: signed with key id {row['key_id']} but the stack's key is missing"
    if row["key_id"] != key.key_id:
        return f"{what}: signed with key id {row['key_id']}, not the stack's key {key.key_id} (the key was replaced)"
    if not hmac.compare_digest(_row_mac(key, row), row["hash"]):
        return f"{what}: content does not match its keyed hash (the entry was edited or forged)"
    return None


def first_keyed_seq(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT min(seq) FROM audit_log WHERE scheme IS NOT NULL").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def verify(conn: sqlite3.Connection, key: AuditKey | None = None) -> Verification:
    """Walk the chain; report every edited, forged, reordered, inserted or deleted entry, and a tail
    cut below the signed head file (read-only). Each entry is checked with its own scheme."""
    key = key or load_key(conn)
    # Read while others may append: the signed head file first (it is written after each commit, so it
    # never names an entry the reads below cannot see), then the in-database head, then the entries.
    # An entry committed between those reads comes with its own head update, so entries beyond the head
    # that a second read of the head covers are a concurrent append (checked next time), not a forgery.
    anchor = read_head_file(conn)
    head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    rows = [dict(r) for r in conn.execute("SELECT * FROM audit_log ORDER BY seq")]
    if head is not None and rows and rows[-1]["seq"] > head[0]:
        later = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        if later is not None and later[0] >= rows[-1]["seq"]:
            rows = [r for r in rows if r["seq"] <= head[0]]
    problems: list[str] = []
    schemes: dict[str, int] = {}
    for row in rows:
        scheme = row.get("scheme") or SCHEME_LEGACY
        schemes[scheme] = schemes.get(scheme, 0) + 1
    first_keyed = _walk(rows, key, first_seq=1, prev_hash=GENESIS, problems=problems)
    if head is None and rows:
        problems.append("the chain head is missing")
    elif head is not None:
        if not rows:
            problems.append(f"the chain head names entry #{head[0]} but the log is empty (entries were deleted)")
        elif (head[0], head[1]) != (rows[-1]["seq"], rows[-1]["hash"]):
            problems.append(f"the chain head names entry #{head[0]} but the last entry is #{rows[-1]['seq']} "
                            f"(entries at the end were deleted or replaced)")
    head_state = _check_head_file(anchor, key, rows, first_keyed, problems)
    return Verification(not problems, len(rows), problems, rows[-1]["hash"] if rows else None, schemes,
                        key.key_id if key and first_keyed is not None else None, head_state)


def _walk(rows: list[dict[str, Any]], key: AuditKey | None, *, first_seq: Any, prev_hash: Any,
          problems: list[str]) -> int | None:
    """Check that ``rows`` number on from ``first_seq``, each links to the one before (the first to
    ``prev_hash``) and carries its own valid hash; append what is wrong to ``problems``. Returns the
    first keyed entry's number (entries before it may be legacy)."""
    first_keyed = next((r["seq"] for r in rows if r.get("scheme") is not None), None)
    prev, expected = prev_hash, first_seq
    for row in rows:
        if row["seq"] != expected:
            problems.append(f"entry #{row['seq']}: expected #{expected} here: entries are missing or renumbered")
        if row["prev_hash"] != prev:
            problems.append(f"entry #{row['seq']}: does not link to the entry before it "
                            f"(deleted, inserted or reordered entries)")
        problem = entry_problem(row, key, first_keyed=first_keyed)
        if problem:
            problems.append(problem)
        prev, expected = row["hash"], int(row["seq"]) + 1
    return first_keyed


def _check_head_file(anchor: dict[str, Any] | None, key: AuditKey | None, rows: list[dict[str, Any]],
                     first_keyed: int | None, problems: list[str]) -> str:
    name = HEAD_FILE
    if anchor is None:
        if first_keyed is not None:
            problems.append(f"the signed head file {name} beside the database is missing (it anchors the end of "
                            f"the keyed chain; deleting it hides a cut tail)")
            return "missing"
        return "absent"
    if anchor.get("unreadable"):
        problems.append(f"the signed head file {name} is unreadable or malformed")
        return "malformed"
    if key is None:
        problems.append(f"the head file {name} cannot be checked: the stack's key is missing")
        return "unchecked"
    if anchor["key_id"] != key.key_id or not hmac.compare_digest(_head_mac(key, anchor["seq"], anchor["hash"]),
                                                                   anchor["mac"]):
        problems.append(f"the head file {name} is not signed with the stack's key (it was forged or replaced)")
        return "forged"
    last = rows[-1]["seq"] if rows else 0
    if anchor["seq"] == 0 and anchor["hash"] == GENESIS:
        return "ok" if last == 0 else "behind"  # anchored before the first entry committed
    by_seq = {r["seq"]: r for r in rows}
    named = by_seq.get(anchor["seq"])
    if named is None:
        problems.append(f"the signed head file names entry #{anchor['seq']} but the log ends at #{last} "
                        f"(entries at the end were cut, and the in-database head moved with them)")
        return "truncated"
    if named["hash"] != anchor["hash"]:
        problems.append(f"entry #{anchor['seq']} differs from the one the signed head file names "
                        f"(the tail was rewritten)")
        return "rewritten"
    return "ok" if anchor["seq"] == last else "behind"


def format_problems(problems: Iterable[str], limit: int = 10) -> str:
    problems = list(problems)
    shown = problems[:limit]
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return "\n  - " + "\n  - ".join(shown) + more


# --- signed archives ----------------------------------------------------------------------------
#
# An archive is a gzip'd tar of two files, made to be kept on write-once storage (S3 Object Lock in
# compliance mode; see the README) and checked offline, with the stack's key, long after the ledger
# moved on:
#
# * ``entries.jsonl``: the entries ``since+1`` … head, one canonical JSON object a line, exactly as
#   stored (the evidence as its hashed text), so each keeps its own keyed hash;
# * ``manifest.json``: the stack, the range, the count, the hash the first entry links to, the head,
#   the SHA-256 of ``entries.jsonl``, the key id, and an HMAC-SHA256 signature of all of it with the
#   audit key (the body names its kind, so it cannot pass for an entry or a head file).
#
# The signature binds the manifest; the manifest binds the entries file by its digest; each entry is
# keyed and linked to the one before, from ``prev_hash`` on. An archive that starts at #1 links to GENESIS.
#
# Write-once storage: S3 Object Lock in compliance mode, where no user (the root user included) can
# delete the object or shorten its retention (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock.html);
# the EU AI Act keeps the logs of high-risk systems at least six months (Regulation (EU) 2024/1689, Art. 19, 26(6)).

ARCHIVE_KIND = "mlplat audit archive"
ARCHIVE_FORMAT = 1
ARCHIVE_MANIFEST = "manifest.json"
ARCHIVE_ENTRIES = "entries.jsonl"
_ARCHIVE_COLUMNS = (*_FIELDS, "hash", "scheme", "key_id", "auth_method")


def _archive_mac(key: AuditKey, manifest: Mapping[str, Any]) -> str:
    body = canonical({k: v for k, v in manifest.items() if k != "signature"})
    return hmac.new(key.secret, body.encode("utf-8"), hashlib.sha256).hexdigest()


def export_archive(conn: sqlite3.Connection, *, stack: str, since: int = 0, key: AuditKey | None = None,
                   now: float | None = None) -> tuple[bytes, dict[str, Any]]:
    """The entries after ``since`` as a signed archive (``.tar.gz`` bytes) and its manifest.

    Read-only. Refuses a chain that does not verify (an archive signs what it holds: it must never
    launder a forged entry), a log without entries after ``since``, and a ledger without its key."""
    from mlplat.errors import NotFound

    key = key or load_key(conn)
    if key is None:
        raise IntegrityError("the stack's audit key is missing: an archive cannot be signed",
                             hint="run the export where the ledger's state directory (keys/platform.key) is")
    checked = verify(conn, key)
    if not checked.ok:
        raise IntegrityError(f"the audit log does not verify, so it is not archived ({len(checked.problems)} "
                             f"problem(s)):" + format_problems(checked.problems),
                             hint="run `mlplat audit verify` and investigate before archiving")
    since = int(since)
    if since < 0:
        raise ValueError(f"since must be 0 or an entry number, not {since}")
    last = conn.execute("SELECT max(seq) FROM audit_log").fetchone()[0]
    if last is None:
        raise NotFound("the audit log is empty: there is nothing to archive")
    if since >= int(last):
        raise NotFound(f"the audit log ends at entry #{last}: there is nothing after #{since} to archive",
                       where="since", hint=f"pass --since below {last} (the last archive's last entry)")
    prev = GENESIS
    if since:
        prev = conn.execute("SELECT hash FROM audit_log WHERE seq = ?", (since,)).fetchone()[0]
    listed = ", ".join(_ARCHIVE_COLUMNS)
    rows = [dict(r) for r in conn.execute(f"SELECT {listed} FROM audit_log WHERE seq > ? ORDER BY seq", (since,))]
    lines = "".join(canonical(r) + "\n" for r in rows).encode("utf-8")
    created = round(float(now if now is not None else time.time()), 6)
    manifest: dict[str, Any] = {
        "kind": ARCHIVE_KIND, "format": ARCHIVE_FORMAT, "stack": stack,
        "first_seq": rows[0]["seq"], "last_seq": rows[-1]["seq"], "count": len(rows),
        "prev_hash": prev, "head": rows[-1]["hash"],
        "entries_file": ARCHIVE_ENTRIES, "entries_sha256": hashlib.sha256(lines).hexdigest(),
        "created_at": created, "key_id": key.key_id, "signature_alg": "hmac-sha256",
    }
    manifest["signature"] = _archive_mac(key, manifest)
    return _pack({ARCHIVE_MANIFEST: (json.dumps(manifest, sort_keys=True, indent=1) + "\n").encode("utf-8"),
                  ARCHIVE_ENTRIES: lines}, mtime=int(created)), manifest


def _pack(files: Mapping[str, bytes], *, mtime: int) -> bytes:
    """A gzip'd tar of ``files`` whose bytes depend only on their names, contents and ``mtime``."""
    import gzip
    import io
    import tarfile

    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=mtime) as zipped:
        with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), mtime, 0o444
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class ArchiveVerification:
    ok: bool
    problems: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    entries: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, "entries": self.entries, "manifest": self.manifest}


def _unpack(data: bytes) -> tuple[dict[str, bytes] | None, str | None]:
    """The archive's two files, or why it is not an archive (nothing is extracted to disk)."""
    import io
    import tarfile

    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = tar.getmembers()
            names = sorted(m.name for m in members)
            if names != sorted((ARCHIVE_MANIFEST, ARCHIVE_ENTRIES)) or not all(m.isfile() for m in members):
                return None, (f"it holds {', '.join(names) or 'nothing'}, not exactly the files {ARCHIVE_MANIFEST} "
                              f"and {ARCHIVE_ENTRIES}")
            files = {}
            for member in members:
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file
                files[member.name] = handle.read()
            return files, None
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        return None, f"it is not a gzip'd tar ({exc})"


def verify_archive(data: bytes, key: AuditKey | None) -> ArchiveVerification:
    """Check an archive offline: its manifest's signature with ``key``, the entries file against the
    manifest's digest, range and count, and every entry's keyed hash and link. Lists every problem."""
    files, why = _unpack(data)
    if files is None:
        return ArchiveVerification(False, [f"not an mlplat audit archive: {why}"])
    try:
        manifest = json.loads(files[ARCHIVE_MANIFEST])
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        return ArchiveVerification(False, [f"{ARCHIVE_MANIFEST} is not a JSON object ({exc})"])
    problems: list[str] = []
    if manifest.get("kind") != ARCHIVE_KIND or manifest.get("format") != ARCHIVE_FORMAT:
        problems.append(f"{ARCHIVE_MANIFEST} is not an mlplat audit archive manifest of format {ARCHIVE_FORMAT} "
                        f"(kind {manifest.get('kind')!r}, format {manifest.get('format')!r})")
        return ArchiveVerification(False, problems, manifest)
    if key is None:
        problems.append("the manifest's signature cannot be checked: no key (pass the stack's key)")
    elif manifest.get("key_id") != key.key_id:
        problems.append(f"the archive is signed with key id {manifest.get('key_id')}, not the stack's key {key.key_id} "
                        f"(another stack's archive, or the key was replaced)")
    elif not hmac.compare_digest(_archive_mac(key, manifest), str(manifest.get("signature", ""))):
        problems.append("the manifest's signature does not match its content (the manifest was edited, or signed "
                        "without the stack's key)")
    lines_data = files[ARCHIVE_ENTRIES]
    if hashlib.sha256(lines_data).hexdigest() != manifest.get("entries_sha256"):
        problems.append(f"{ARCHIVE_ENTRIES} is not the file the manifest names (its SHA-256 differs: entries were "
                        f"edited, added or removed)")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines_data.decode("utf-8", errors="replace").splitlines(), start=1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or any(c not in row for c in _ARCHIVE_COLUMNS):
                raise ValueError("not an audit entry")
        except ValueError as exc:
            problems.append(f"{ARCHIVE_ENTRIES} line {number} is not an audit entry ({exc})")
            continue
        rows.append(row)
    if len(rows) != manifest.get("count"):
        problems.append(f"the archive holds {len(rows)} entries, the manifest says {manifest.get('count')}")
    if rows and (rows[0]["seq"], rows[-1]["seq"]) != (manifest.get("first_seq"), manifest.get("last_seq")):
        problems.append(f"the entries run #{rows[0]['seq']}..#{rows[-1]['seq']}, the manifest says "
                        f"#{manifest.get('first_seq')}..#{manifest.get('last_seq')}")
    if manifest.get("first_seq") == 1 and manifest.get("prev_hash") != GENESIS:
        problems.append("the archive starts at entry #1 but does not link to the start of the chain")
    _walk(rows, key, first_seq=manifest.get("first_seq"), prev_hash=manifest.get("prev_hash"), problems=problems)
    if rows and rows[-1]["hash"] != manifest.get("head"):
        problems.append(f"the last entry (#{rows[-1]['seq']}) is not the head the manifest names")
    return ArchiveVerification(not problems, problems, manifest, len(rows))
