"""Leases: one holder at a time for a named piece of work, with an expiry.

Any number of gateways (and servers) may run over one ledger; the work only one of them may do
at a time, such as judging and stepping a canary rollout, is guarded by a lease in the ledger's
``leases`` table (``name`` primary key, ``holder``, ``expires_at``, ``acquired_at``).

Taking, renewing and releasing a lease are each one conditional statement, atomic on SQLite and
on PostgreSQL alike: the upsert of :data:`ACQUIRE` writes the row only when it is free, expired or
already the caller's, and the caller then reads back who holds it. A holder that stops renewing
(a crashed or paused process) loses the lease once it expires, and another takes over.

A lease is a liveness device, not a proof: a holder paused past its expiry may still act once
it wakes. Whatever it then changes must also be a compare-and-set on the state it read (see
:func:`mlplat.services.rollout.advance`), so a stale holder's change is refused, never doubled.

Every function takes ``now`` (or a clock), so tests move time instead of waiting for it.
"""
from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# How long a lease lasts without renewal. A holder renews once half of it has passed.
DEFAULT_TTL_S = 10.0

# Insert the lease, or take it over when it has expired, or extend it when it is already ours;
# otherwise leave the row alone. ``acquired_at`` stays when the holder only renews.
ACQUIRE = (
    "INSERT INTO leases (name, holder, expires_at, acquired_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at, "
    "acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at ELSE excluded.acquired_at END "
    "WHERE leases.expires_at < ? OR leases.holder = ?"
)
RENEW = "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?"
RELEASE = "DELETE FROM leases WHERE name = ? AND holder = ?"


def holder_id() -> str:
    """This process's name as a lease holder: ``host:pid:random`` (the random part tells apart two
    holders in one process, and a restarted process that got the same pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class LeaseState:
    name: str
    holder: str
    expires_at: float
    acquired_at: float


def acquire(conn: Any, name: str, holder: str, *, ttl: float, now: float) -> bool:
    """Take ``name`` for ``holder`` until ``now + ttl``, or extend it when ``holder`` has it already.
    True when ``holder`` holds it afterwards. Call inside a transaction on ``conn``."""
    if ttl <= 0:
        raise ValueError(f"a lease must last a positive time, not {ttl}")
    conn.execute(ACQUIRE, (name, holder, now + ttl, now, now, holder))
    row = conn.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
    return row is not None and row[0] == holder


def renew(conn: Any, name: str, holder: str, *, ttl: float, now: float) -> bool:
    """Extend ``holder``'s lease on ``name`` to ``now + ttl``; False (and nothing written) when
    another holder has taken it over. A free lease is not taken: use :func:`acquire`."""
    return int(conn.execute(RENEW, (now + ttl, name, holder)).rowcount) == 1


def release(conn: Any, name: str, holder: str) -> bool:
    """Give ``name`` up if ``holder`` holds it (another holder's lease is left alone)."""
    return int(conn.execute(RELEASE, (name, holder)).rowcount) == 1


def current(conn: Any, name: str) -> LeaseState | None:
    """Who holds ``name`` (perhaps expired), or None when nobody does."""
    row = conn.execute("SELECT name, holder, expires_at, acquired_at FROM leases WHERE name = ?",
                       (name,)).fetchone()
    if row is None:
        return None
    return LeaseState(str(row[0]), str(row[1]), float(row[2]), float(row[3]))


class Leases:
    """The leases one holder keeps across passes of its work.

    :meth:`hold` takes or renews a lease and says whether the holder has it now. Between
    renewals it trusts the expiry it last wrote: no one else can take the lease before then,
    so a pass that is well within it writes nothing. ``db`` is the ledger's database
    (``db.transaction(conn)`` runs one transaction on ``conn``).
    """

    def __init__(self, holder: str | None = None, *, ttl: float = DEFAULT_TTL_S,
                 clock: Callable[[], float] = time.time):
        if ttl <= 0:
            raise ValueError(f"a lease must last a positive time, not {ttl}")
        self.holder = holder or holder_id()
        self.ttl = ttl
        self.clock = clock
        self._expires: dict[str, float] = {}  # lease name -> the expiry this holder last wrote

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._expires))

    def holds(self, name: str) -> bool:
        """Whether this holder has ``name`` by the expiry it last wrote (reads no database)."""
        expires = self._expires.get(name)
        return expires is not None and self.clock() < expires

    def hold(self, db: Any, conn: Any, name: str) -> bool:
        """Take or renew ``name``; True when this holder has it until at least half a TTL from now."""
        now = self.clock()
        expires = self._expires.get(name)
        if expires is not None and expires - now > self.ttl / 2:
            return True
        with db.transaction(conn):
            held = acquire(conn, name, self.holder, ttl=self.ttl, now=now)
        if held:
            self._expires[name] = now + self.ttl
        else:
            self._expires.pop(name, None)
        return held

    def release(self, db: Any, conn: Any, name: str) -> None:
        """Give ``name`` up now (another holder may take it at once)."""
        self._expires.pop(name, None)
        with db.transaction(conn):
            release(conn, name, self.holder)
