"""The platform database: SQLite in WAL mode with named, versioned migrations.

One writer path: every write runs inside :meth:`Database.transaction`, which takes
SQLite's write lock up front (``BEGIN IMMEDIATE``) and waits on a busy timeout, so
concurrent processes queue instead of failing with "database is locked".
``synchronous=FULL`` because WAL + NORMAL can lose committed transactions on power loss.
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from mlplat.errors import Conflict, MlplatError

BUSY_TIMEOUT_MS = 60_000
# The stack's secret sits beside its platform database: ``<state>/keys/platform.key`` (0600), for
# every provider that keeps the ledger embedded. It seals model manifests and keys the audit chain.
KEY_FILE = Path("keys") / "platform.key"


def key_path(db_path: Path | str) -> Path:
    """Where the stack's secret key lives for the platform database at ``db_path``."""
    return Path(db_path).parent / KEY_FILE


class Connection(sqlite3.Connection):
    """A connection that runs ``after_commit`` callbacks once its transaction has committed.

    The audit log uses it to rewrite its signed head file only for entries that really
    committed (a rolled-back append must not move the anchor).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.after_commit: list = []

    def run_after_commit(self) -> None:
        callbacks, self.after_commit = self.after_commit, []
        for callback in callbacks:
            callback()


def migrations() -> list[tuple[str, str]]:
    """All shipped migrations, ``(name, sql)``, in name order (``NNNN_component.sql``)."""
    folder = resources.files("mlplat") / "migrations"
    found = [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8"))
             for p in folder.iterdir() if p.name.endswith(".sql")]
    return sorted(found)


def split_sql(script: str) -> list[str]:
    """Split a script into statements (``executescript`` would commit our transaction)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not buffer.strip().startswith("--"):
        statements.append(buffer.strip())
    return statements


class Database:
    def __init__(self, path: Path | str):
        self.path = Path(path)

    def connect(self) -> sqlite3.Connection:
        if not self.path.parent.exists():
            raise MlplatError(f"platform database folder {self.path.parent} does not exist",
                              hint="run `mlplat up` for this stack first")
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False, factory=Connection)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @contextmanager
    def transaction(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back on any exception."""
        own = conn is None
        conn = conn or self.connect()
        try:
            self._begin(conn)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                if isinstance(conn, Connection):
                    conn.after_commit.clear()
                raise
            conn.execute("COMMIT")
            if isinstance(conn, Connection):
                conn.run_after_commit()
        finally:
            if own:
                conn.close()

    @staticmethod
    def _begin(conn: sqlite3.Connection) -> None:
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:  # busy beyond the driver's own wait
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise Conflict(f"platform database is busy: {exc}",
                                   hint="another mlplat process holds the write lock; retry") from exc
                time.sleep(0.05)

    # --- schema -------------------------------------------------------------------------

    def applied(self, conn: sqlite3.Connection | None = None) -> list[str]:
        if not self.path.exists():
            return []
        own = conn is None
        conn = conn or self.connect()
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
            return [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
        finally:
            if own:
                conn.close()

    def pending(self) -> list[str]:
        done = set(self.applied())
        return [name for name, _ in migrations() if name not in done]

    def migrate(self) -> list[str]:
        """Apply pending migrations, each in its own transaction. Idempotent; safe to race."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ran = []
        conn = self.connect()
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
            for name, sql in migrations():
                with self.transaction(conn):
                    if conn.execute("SELECT 1 FROM schema_migrations WHERE name=?", (name,)).fetchone():
                        continue
                    for statement in split_sql(sql):
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, time.time()))
                    ran.append(name)
        finally:
            conn.close()
        return ran

    def integrity_ok(self) -> bool:
        conn = self.connect()
        try:
            return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
