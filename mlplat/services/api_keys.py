"""Serving API keys: credentials a caller of the gateway presents, scoped to one model in one environment.

A key reads ``mlp_<key id>_<secret>``: the id (12 hex characters) names its row in the ledger's
``api_keys`` table, the secret is 32 random bytes (url-safe base64). Only the SHA-256 digest of the
secret is stored: a fast unsalted hash is enough for a 256-bit random secret (nobody can search
that space; the slow password hashes exist for low-entropy, human-chosen secrets), and it keeps
verification to a microsecond on the gateway's hot path. Digests are compared with
:func:`hmac.compare_digest`.

Creating, revoking and rotating a key each append an audit entry in the same transaction and bump
``serving_revision``, so every running gateway reloads its key table on its next routing poll: a
revocation takes effect without a restart. Rotation creates a new key of the same scope and leaves
the old one valid for a grace period (its ``expires_at`` moves to now + grace, never later than it
was), after which it stops.

Every function takes ``now``; callers pass ``ctx.clock()`` so tests move time instead of waiting.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlplat.errors import Conflict, ExitCode, Forbidden, MlplatError, NotFound, Unauthenticated
from mlplat.services import audit
from mlplat.services import rollout as ro

PREFIX = "mlp_"
KEY_ID = re.compile(r"^[0-9a-f]{12}$")
# the whole presented key: prefix, id, secret (43 url-safe base64 characters for 32 bytes)
KEY = re.compile(r"^mlp_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
COLUMNS = ("id, model, environment, description, created_by, created_at, expires_at, revoked_at, revoked_by, "
           "rotated_from")
CREATE_HINT = "create one with `mlplat keys create MODEL --env ENV` and send it as `Authorization: Bearer mlp_...`"


class InvalidKeyRequest(MlplatError):
    """A key operation with parameters that cannot work (a bad key id, expiry or grace period)."""

    exit_code = ExitCode.USAGE


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def parse(presented: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed key, else ``None``."""
    m = KEY.match(presented)
    return (m.group(1), m.group(2)) if m else None


def _public(row: Mapping[str, Any], now: float) -> dict[str, Any]:
    out = {k: row[k] for k in COLUMNS.split(", ")}
    out["state"] = state(out, now)
    return out


def state(row: Mapping[str, Any], now: float) -> str:
    if row["revoked_at"] is not None:
        return "revoked"
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return "expired"
    return "active"


def _insert(conn: Any, *, model: str, environment: str, description: str | None, actor: str, now: float,
            expires_at: float | None, rotated_from: str | None = None) -> tuple[str, str]:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    conn.execute(f"INSERT INTO api_keys ({COLUMNS}, secret_hash) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?)",
                 (key_id, model, environment, description, actor, now, expires_at, rotated_from, digest(secret)))
    return key_id, f"{PREFIX}{key_id}_{secret}"


def _require(conn: Any, key_id: str, model: str) -> Any:
    if not KEY_ID.match(key_id):
        # never echoed: a caller who passed the whole key must not see its secret in a log
        what = "an API key, not its id" if key_id.startswith(PREFIX) else "not a key id"
        raise InvalidKeyRequest(f"key_id is {what} (12 hex characters, as `mlplat keys list` shows)",
                                where="key_id", hint="pass the id, never the key itself")
    row = conn.execute(f"SELECT {COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    if row is None or row["model"] != model:
        raise NotFound(f"no API key {key_id} for model '{model}'", where="key_id",
                       hint=f"list the model's keys with `mlplat keys list {model}`")
    return row


def create(conn: Any, *, model: str, environment: str, actor: str, method: str, now: float,
           description: str | None = None, expires_in: float | None = None) -> dict[str, Any]:
    """A new key for ``model`` in ``environment``; the result's ``key`` is the only copy of the secret.
    Call inside ``Database.transaction()``."""
    if expires_in is not None and expires_in <= 0:
        raise InvalidKeyRequest(f"a key must expire in the future, not in {expires_in:g} s", where="expires_in",
                                hint="give a positive duration such as 30d, or none for a key without expiry")
    if not conn.execute("SELECT 1 FROM model_versions WHERE model = ? LIMIT 1", (model,)).fetchone():
        raise NotFound(f"no registered model '{model}'", where="model",
                       hint="keys are for registered models: check the name with `mlplat models list`")
    expires_at = None if expires_in is None else now + float(expires_in)
    key_id, key = _insert(conn, model=model, environment=environment, description=description, actor=actor,
                          now=now, expires_at=expires_at)
    audit.append(conn, actor=actor, method=method, action="key.created", model=model, environment=environment,
                 reason=description, evidence={"key_id": key_id, "expires_at": expires_at})
    ro.bump_revision(conn)
    row = conn.execute(f"SELECT {COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    return {**_public(row, now), "key": key}


def list_keys(conn: Any, *, now: float, model: str | None = None,
              environment: str | None = None) -> list[dict[str, Any]]:
    """Keys (never their secrets), oldest first, with their state (active, expired, revoked)."""
    where, args = [], []
    if model:
        where.append("model = ?")
        args.append(model)
    if environment:
        where.append("environment = ?")
        args.append(environment)
    sql = f"SELECT {COLUMNS} FROM api_keys" + (" WHERE " + " AND ".join(where) if where else "")
    return [_public(r, now) for r in conn.execute(sql + " ORDER BY created_at, id", args)]


def revoke(conn: Any, *, key_id: str, model: str, actor: str, method: str, now: float,
           reason: str | None = None) -> dict[str, Any]:
    """Revoke a key at once (revoking a revoked key changes nothing and says so in ``changed``)."""
    row = _require(conn, key_id, model)
    if row["revoked_at"] is not None:
        return {**_public(row, now), "changed": False}
    conn.execute("UPDATE api_keys SET revoked_at = ?, revoked_by = ? WHERE id = ?", (now, actor, key_id))
    audit.append(conn, actor=actor, method=method, action="key.revoked", model=model, environment=row["environment"],
                 reason=reason, evidence={"key_id": key_id})
    ro.bump_revision(conn)
    row = conn.execute(f"SELECT {COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    return {**_public(row, now), "changed": True}


def rotate(conn: Any, *, key_id: str, model: str, actor: str, method: str, now: float, grace: float,
           description: str | None = None) -> dict[str, Any]:
    """A new key with the old one's scope (and remaining lifetime); the old key stays valid ``grace``
    seconds more (0: it stops now). Returns the new key (``key``: its only copy) and the old one."""
    if grace < 0:
        raise InvalidKeyRequest(f"the grace period cannot be negative ({grace:g} s)", where="grace",
                                hint="give 0 to stop the old key at once, or a duration such as 1h")
    old = _require(conn, key_id, model)
    if state(old, now) != "active":
        raise Conflict(f"key {key_id} is {state(old, now)}: only an active key can be rotated",
                       where="key_id", hint=f"create a new one with `mlplat keys create {model} "
                                            f"--env {old['environment']}`")
    old_expiry = now + float(grace)
    if old["expires_at"] is not None:
        old_expiry = min(old_expiry, float(old["expires_at"]))
    new_id, key = _insert(conn, model=model, environment=old["environment"],
                          description=description if description is not None else old["description"], actor=actor,
                          now=now, expires_at=old["expires_at"], rotated_from=key_id)
    conn.execute("UPDATE api_keys SET expires_at = ? WHERE id = ?", (old_expiry, key_id))
    audit.append(conn, actor=actor, method=method, action="key.rotated", model=model, environment=old["environment"],
                 evidence={"key_id": new_id, "rotated_from": key_id, "old_expires_at": old_expiry})
    ro.bump_revision(conn)
    rows = {r["id"]: r for r in conn.execute(f"SELECT {COLUMNS} FROM api_keys WHERE id IN (?, ?)", (new_id, key_id))}
    return {**_public(rows[new_id], now), "key": key, "previous": _public(rows[key_id], now)}


# --- verification (the gateway) ---------------------------------------------------------------------


@dataclass(frozen=True)
class KeyEntry:
    model: str
    environment: str
    secret_hash: str
    expires_at: float | None
    revoked: bool


class KeyTable:
    """Every key, in memory, checked for one environment: the gateway reloads it when ``serving_revision`` moves,
    so checking a key costs one dictionary lookup and one SHA-256, never a ledger query."""

    def __init__(self, environment: str, entries: Mapping[str, KeyEntry] | None = None):
        self.environment = environment
        self.entries: dict[str, KeyEntry] = dict(entries or {})

    @classmethod
    def load(cls, conn: Any, environment: str) -> KeyTable:
        rows: Iterable[Any] = conn.execute(
            "SELECT id, model, environment, secret_hash, expires_at, revoked_at FROM api_keys")
        return cls(environment, {r["id"]: KeyEntry(r["model"], r["environment"], r["secret_hash"], r["expires_at"],
                                                   r["revoked_at"] is not None) for r in rows})

    def check(self, presented: str | None, model: str, now: float) -> str:
        """The key id when ``presented`` is a live key for ``model`` here; ``Unauthenticated`` (401) when it
        is missing, malformed, unknown, revoked or expired; ``Forbidden`` (403) when it belongs to another
        model or environment."""
        if not presented:
            raise Unauthenticated("this endpoint needs an API key", hint=CREATE_HINT)
        parsed = parse(presented)
        if parsed is None:
            raise Unauthenticated("the API key is malformed (expected mlp_<key id>_<secret>)", hint=CREATE_HINT)
        key_id, secret = parsed
        entry = self.entries.get(key_id)
        # an unknown id still costs a digest and a comparison, so timing does not tell ids apart
        expected = entry.secret_hash if entry is not None else "0" * 64
        if not hmac.compare_digest(digest(secret), expected) or entry is None:
            raise Unauthenticated(f"API key {key_id} is not a valid key", hint=CREATE_HINT)
        if entry.revoked:
            raise Unauthenticated(f"API key {key_id} has been revoked", hint=CREATE_HINT)
        if entry.expires_at is not None and entry.expires_at <= now:
            raise Unauthenticated(f"API key {key_id} has expired", hint=CREATE_HINT)
        if entry.model != model or entry.environment != self.environment:
            raise Forbidden(f"API key {key_id} is for model '{entry.model}' in environment '{entry.environment}', "
                            f"not '{model}' in '{self.environment}'",
                            hint=f"use a key created for '{model}': `mlplat keys create {model} --env "
                                 f"{self.environment}`")
        return key_id
