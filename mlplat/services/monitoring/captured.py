"""Reading captured traffic that a cloud keeps in its own logs (SageMaker data capture, Vertex AI's
request-response logging, Azure ML's data collector): the parts of the ``Monitor`` contract that are the
same on every cloud once the log has been read into ``Capture`` records, oldest first (:class:`LogMonitor`)."""
from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import Any

from mlplat.contracts.monitoring import Capture, Monitor
from mlplat.db import Database

CHUNK = 500  # ids per IN (...) query, below SQLite's variable limit


def deployed(captures: Iterable[Capture]) -> list[tuple[str, int, str]]:
    """``(model, version, environment)`` of every version with captured traffic, most recent first."""
    last: dict[tuple[str, int, str], float] = {}
    for c in captures:
        key = (c.model, c.version, c.environment)
        last[key] = max(last.get(key, c.ts), c.ts)
    return [key for key, _ in sorted(last.items(), key=lambda kv: -kv[1])]


def select(database: Callable[[], Database], captures: Iterable[Capture], model: str, version: int, *,
           limit: int | None = None, since: float | None = None, until: float | None = None,
           labelled_only: bool = False) -> list[Capture]:
    """The newest ``limit`` captures of a version in ``[since, until)`` (oldest first); with
    ``labelled_only``, those whose request or one of its batch rows has a label in the ledger
    (``database()``, opened only then)."""
    found = [c for c in captures if c.model == model and c.version == int(version)
             and (since is None or c.ts >= since) and (until is None or c.ts < until)]
    if labelled_only:
        labelled = labelled_ids(database(), {row_id for c in found for row_id, *_ in c.rows()} | {c.request_id for c in found})
        found = [c for c in found if c.request_id in labelled or any(r in labelled for r, *_ in c.rows())]
    return found[-limit:] if limit is not None else found


def labelled_ids(db: Database, ids: set[str]) -> set[str]:
    """Which of ``ids`` have a label in the ledger."""
    ordered = sorted(ids)
    out: set[str] = set()
    conn = db.connect()
    try:
        for start in range(0, len(ordered), CHUNK):
            chunk = ordered[start:start + CHUNK]
            marks = ",".join("?" * len(chunk))
            out.update(r[0] for r in conn.execute(
                f"SELECT request_id FROM monitor_labels WHERE request_id IN ({marks})", chunk))
    finally:
        conn.close()
    return out


def known_request_ids(captures: Iterable[Capture], ids: list[str]) -> set[str]:
    """Which of ``ids`` (request ids or ``<request id>#<row>`` batch row ids) were captured."""
    logged = {c.request_id for c in captures}
    return {i for i in ids if i.split("#", 1)[0] in logged}


def resolve_request_ids(known: set[str], ids: list[str], callers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Each of ``ids`` to the captured request ids it names: a captured id (in ``known``) names itself;
    otherwise a caller's own id names every capture that carries it (``callers``: ``(caller id, captured
    request id)`` pairs, non-shadow captures only), batch row suffixes (``#<row>``) kept. Ids naming none
    are left out."""
    out = {i: [i] for i in known}
    by_caller: dict[str, list[str]] = {}
    for caller, request_id in callers:
        by_caller.setdefault(caller, []).append(request_id)
    for i in ids:
        base, sep, row = i.partition("#")
        if i not in out and base in by_caller:
            out[i] = [logged + sep + row for logged in by_caller[base]]
    return out


def ledger_deployments(db: Database, columns: str = "model, environment, version, variant") -> list[Any]:
    """``columns`` of every deployment row of the ledger, oldest first."""
    conn = db.connect()
    try:
        return list(conn.execute(f"SELECT {columns} FROM deployments ORDER BY started_at, id").fetchall())
    finally:
        conn.close()


class LogMonitor(Monitor):
    """A cloud's monitor whose captures come from the cloud's own log: :meth:`logged` reads them
    (oldest first, only versions the ledger deployed); the contract's reading methods follow from it."""

    @abc.abstractmethod
    def logged(self) -> list[Capture]:
        """Every capture of the cloud's log whose version the ledger names, oldest first."""

    def deployed(self) -> list[tuple[str, int, str]]:
        return deployed(self.logged())

    def captures(self, model: str, version: int, *, limit: int | None = None, since: float | None = None,
                 until: float | None = None, labelled_only: bool = False) -> list[Capture]:
        return select(self.database, self.logged(), model, version, limit=limit, since=since, until=until,
                      labelled_only=labelled_only)

    def known_request_ids(self, ids: list[str]) -> set[str]:
        return known_request_ids(self.logged(), ids)
