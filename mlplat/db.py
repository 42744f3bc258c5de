"""The platform database (the ledger): SQLite in WAL mode, or PostgreSQL behind ``mlplat server``.

One writer path: every write runs inside :meth:`Database.transaction`, which takes the ledger's
write lock up front and waits for it, so concurrent writers queue instead of failing. On SQLite
that is ``BEGIN IMMEDIATE`` with a busy timeout (``synchronous=FULL``, because WAL + NORMAL can
lose committed transactions on power loss); on PostgreSQL, ``BEGIN`` and a transaction-scoped
advisory lock on one fixed key, so the services' read-then-write transactions (the audit chain's
append above all) serialize exactly as on SQLite.

:func:`open_database` picks the backend from a path or URL. Both offer the same methods
(``connect``, ``transaction``, ``applied``, ``pending``, ``migrate``, ``integrity_ok``), and a
PostgreSQL connection offers the sqlite3 surface the services use (``?`` placeholders, rows by
index and by name, ``lastrowid``, ``rowcount``, ``after_commit``), translating the few
SQLite-isms they write (``INSERT OR IGNORE``/``OR REPLACE``, ``sqlite_master``, ``PRAGMA
table_info``, ``ifnull``, scalar ``max``/``min``, ``group_concat``). Constraint violations raise
:class:`IntegrityViolation`, an ``sqlite3.IntegrityError``; a lost server connection raises the
driver's ``OperationalError``.

The schema has one Alembic history for both dialects (``mlplat/alembic``): its first revision is
the schema the SQL scripts ``migrations/0001``-``0007`` built (run verbatim on SQLite, where they
are still tracked in ``schema_migrations``), later revisions follow it. Migration names, as
:meth:`Database.applied` and :meth:`Database.pending` report them, are those script names and then
the revision ids.
"""
from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mlplat.errors import Conflict, MlplatError, StackError

BUSY_TIMEOUT_MS = 60_000
# The stack's secret sits in the stack's state directory, ``<state>/keys/platform.key`` (0600): beside
# the SQLite ledger, or named by ``key_dir`` for a ledger elsewhere (a PostgreSQL server). It seals model
# manifests and keys the audit chain.
KEY_FILE = Path("keys") / "platform.key"
LEDGER_FILE = "platform.db"  # the SQLite ledger's name in a stack's state directory
AUDIT_HEADS = "audit-heads"  # the signed head files of the other ledgers keyed from a state directory
# The SQL scripts the Alembic history starts from (its first revision builds exactly their schema).
BASELINE = ("0001_core", "0002_registry", "0003_serving", "0004_features", "0005_monitoring", "0006_ledger",
            "0007_capture_correlation")
BASELINE_REVISION = "0007_baseline"
# The key of the advisory lock every PostgreSQL ledger transaction holds ("mlplat" in ASCII).
LEDGER_LOCK = 0x6D6C706C6174
# Tables whose rows keep their insertion order (SQLite's rowid; a ``rowid`` column on PostgreSQL):
# readers break ties on it, and an export keeps it. Every other table is ordered by its primary key.
INSERTION_ORDERED = ("captures",)


def key_path(db_path: Path | str) -> Path:
    """Where the stack's secret key lives for the platform database at ``db_path``."""
    return Path(db_path).parent / KEY_FILE


class IntegrityViolation(sqlite3.IntegrityError):
    """A constraint of a PostgreSQL ledger refused a statement (unique, check, foreign key, not null,
    append-only). An ``sqlite3.IntegrityError``, so callers handle both ledgers alike; the message
    starts as SQLite's would (``UNIQUE constraint failed: ...``)."""


class Connection(sqlite3.Connection):
    """A connection that runs ``after_commit`` callbacks once its transaction has committed.

    The audit log uses it to rewrite its signed head file only for entries that really
    committed (a rolled-back append must not move the anchor). ``key_dir``: where the stack's key
    and the head file live when not beside the database file; ``head_file``: the head file's name
    there when it is not the stack's own ledger (see :func:`head_file_name`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.after_commit: list = []
        self.key_dir: Path | None = None
        self.head_file: Path | None = None

    def run_after_commit(self) -> None:
        callbacks, self.after_commit = self.after_commit, []
        for callback in callbacks:
            callback()


def migrations() -> list[tuple[str, str]]:
    """Every SQL script shipped in ``migrations/``, ``(name, sql)``, in name order (``NNNN_component.sql``)."""
    folder = resources.files("mlplat") / "migrations"
    found = [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8"))
             for p in folder.iterdir() if p.name.endswith(".sql")]
    return sorted(found)


def baseline_scripts() -> list[tuple[str, str]]:
    """The scripts of :data:`BASELINE`, ``(name, sql)``, in order."""
    folder = resources.files("mlplat") / "migrations"
    return [(name, (folder / f"{name}.sql").read_text(encoding="utf-8")) for name in BASELINE]


def revisions() -> list[str]:
    """The Alembic revisions after the baseline, in order (a revision's id is its file's name).

    Read from the folder, without importing Alembic: ``pending()`` must stay cheap."""
    folder = resources.files("mlplat") / "alembic" / "versions"
    names = sorted(p.name.removesuffix(".py") for p in folder.iterdir()
                   if p.name.endswith(".py") and not p.name.startswith("_"))
    return [n for n in names if n != BASELINE_REVISION]


def schema_names() -> list[str]:
    """Every migration name, in order: the baseline scripts, then the later revisions."""
    return [*BASELINE, *revisions()]


def _applied_names(scripts: set[str], stamped: str | None) -> list[str]:
    later = revisions()
    done = set(scripts)
    if stamped is not None:
        done |= set(BASELINE)
        if stamped in later:
            done |= set(later[: later.index(stamped) + 1])
        elif stamped != BASELINE_REVISION:  # written by a newer mlplat
            done |= set(later) | {stamped}
    return sorted(done)


def _pending_names(scripts: set[str], stamped: str | None) -> list[str]:
    later = revisions()
    if stamped is None:
        return [n for n in BASELINE if n not in scripts] + later
    if stamped == BASELINE_REVISION:
        return later
    if stamped in later:
        return later[later.index(stamped) + 1:]
    return []  # a newer mlplat wrote this ledger: nothing here can move it


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


def apply_baseline_sqlite(execute: Callable[[str], Any], fetch_names: Callable[[], set[str]]) -> list[str]:
    """The baseline revision on SQLite: every baseline script the ledger lacks, verbatim, each recorded
    in ``schema_migrations`` as before. A ledger the scripts built gets only what it is missing."""
    execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    done = fetch_names()
    ran = []
    for name, sql in baseline_scripts():
        if name in done:
            continue
        for statement in split_sql(sql):
            execute(statement)
        execute(f"INSERT INTO schema_migrations VALUES ('{name}', {time.time()!r})")
        ran.append(name)
    return ran


def _alembic_upgrade(connection: Any, revision: str) -> None:
    """Run the ledger's Alembic history up to ``revision`` on ``connection`` (an open SQLAlchemy
    connection inside the transaction the caller commits). Configured here: no alembic.ini."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    location = str(resources.files("mlplat") / "alembic")
    config.set_main_option("script_location", location.replace("%", "%%"))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _check_revision(revision: str) -> None:
    if revision != "head" and revision not in (BASELINE_REVISION, *revisions()):
        raise MlplatError(f"unknown ledger schema revision '{revision}'",
                          hint="it comes from a newer mlplat: install that version (or a newer one) here")


def open_database(target: Any, *, key_dir: Path | str | None = None) -> Database | PgDatabase:
    """The ledger at ``target``: a path or ``sqlite:///…`` URL (SQLite), or a ``postgresql://…``
    (also ``postgres://``, ``postgresql+psycopg://``) URL. An already open database is returned as is.

    ``key_dir``: the stack's state directory, where its key (``keys/platform.key``) and the audit
    chain's signed head file live; for SQLite the database file's folder by default."""
    if isinstance(target, Database | PgDatabase):
        return target
    if isinstance(target, os.PathLike):
        return Database(target, key_dir=key_dir)
    text = str(target).strip()
    scheme = text.split(":", 1)[0].lower() if "://" in text else ""
    if not scheme:
        return Database(text, key_dir=key_dir)
    if scheme == "sqlite":
        rest = text.split("://", 1)[1]
        if not rest.startswith("/") or rest == "/":
            raise StackError(f"'{text}' is not a SQLite database URL", where="database URL",
                             hint="write sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return Database(rest[1:], key_dir=key_dir)
    if scheme.split("+", 1)[0] in ("postgresql", "postgres"):
        return PgDatabase(text, key_dir=key_dir)
    raise StackError(f"unsupported database URL scheme '{scheme}' in {redact(text)}", where="database URL",
                     hint="use postgresql://user@host:5432/name, or sqlite:////path/to/platform.db")


def ledger_for(platform_db: Path | str, ctx: Any = None) -> Database | PgDatabase:
    """A stack's ledger: the database the server gave this process (``ctx.database_url``), keyed from
    the state directory that holds ``platform_db``; else SQLite at ``platform_db``."""
    url = getattr(ctx, "database_url", None)
    if url:
        return open_database(url, key_dir=Path(platform_db).parent)
    return Database(platform_db)


def ledger_target(target: Any) -> Any:
    """A ledger as a long-lived component keeps it: an open database as is (PostgreSQL's carries its
    URL and key directory), else the SQLite file's path. :func:`open_database` opens either."""
    return target if isinstance(target, Database | PgDatabase) else Path(target)


def head_file_name(identity: str) -> Path:
    """Where, in the state directory, the audit chain's signed head file of a ledger other than the
    stack's own SQLite one lives (``audit-head.json`` is that one's): one file per database, so two
    ledgers keyed from one state directory (the local one and a server's) never share an anchor."""
    import hashlib

    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", identity)[:80]
    return Path(AUDIT_HEADS) / f"{readable}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}.json"


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)


# --- SQLite ---------------------------------------------------------------------------------------


class Database:
    dialect = "sqlite"

    def __init__(self, path: Path | str, *, key_dir: Path | str | None = None):
        self.path = Path(path)
        self.key_dir = Path(key_dir) if key_dir is not None else None

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"

    def describe(self) -> str:
        return f"SQLite {self.path}"

    def connect(self) -> sqlite3.Connection:
        if not self.path.parent.exists():
            raise MlplatError(f"platform database folder {self.path.parent} does not exist",
                              hint="run `mlplat up` for this stack first")
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False, factory=Connection)
        conn.row_factory = sqlite3.Row
        conn.key_dir = self.key_dir
        if self.key_dir is not None and self.path.resolve() != (self.key_dir / LEDGER_FILE).resolve():
            conn.head_file = head_file_name(f"sqlite {self.path.resolve()}")
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

    @staticmethod
    def _versions(conn: sqlite3.Connection) -> tuple[set[str], str | None]:
        """The baseline scripts recorded in ``schema_migrations`` and the Alembic revision stamped."""
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name IN ('schema_migrations', 'alembic_version')")}
        scripts = ({r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
                   if "schema_migrations" in tables else set())
        stamped = None
        if "alembic_version" in tables:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            stamped = row[0] if row else None
        return scripts, stamped

    def _read_versions(self, conn: sqlite3.Connection | None = None) -> tuple[set[str], str | None] | None:
        if not self.path.exists():
            return None
        own = conn is None
        conn = conn or self.connect()
        try:
            return self._versions(conn)
        finally:
            if own:
                conn.close()

    def applied(self, conn: sqlite3.Connection | None = None) -> list[str]:
        versions = self._read_versions(conn)
        return [] if versions is None else _applied_names(*versions)

    def pending(self) -> list[str]:
        versions = self._read_versions()
        return schema_names() if versions is None else _pending_names(*versions)

    def revision(self) -> str | None:
        """The Alembic revision the ledger is at (None: not created, or built by the scripts alone)."""
        versions = self._read_versions()
        return None if versions is None else versions[1]

    def migrate(self, revision: str = "head") -> list[str]:
        """Upgrade the schema to ``revision`` (Alembic) in one ``BEGIN IMMEDIATE`` transaction, and
        return the migration names that ran. Idempotent; safe to race (the loser finds nothing to do).
        A ledger the SQL scripts built upgrades in place: its missing scripts run first."""
        _check_revision(revision)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if revision == "head" and self.path.exists() and not self.pending():
            return []
        from sqlalchemy import create_engine, event
        from sqlalchemy import exc as sa_exc
        from sqlalchemy.pool import NullPool

        engine = create_engine("sqlite://", creator=self.connect, poolclass=NullPool)
        # the connection is in autocommit mode (isolation_level=None): the transaction is ours
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        try:
            with engine.begin() as conn:  # what ran before is read under the lock: a racing loser ran nothing
                before = _applied_names(*self._versions(conn.connection.dbapi_connection))
                _alembic_upgrade(conn, revision)
        except sa_exc.OperationalError as exc:
            if "locked" in str(exc):
                raise Conflict(f"platform database is busy: {exc.orig}",
                               hint="another mlplat process holds the write lock; retry") from exc
            raise
        finally:
            engine.dispose()
        return [name for name in self.applied() if name not in before]

    def integrity_ok(self) -> bool:
        conn = self.connect()
        try:
            return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()


# --- PostgreSQL -----------------------------------------------------------------------------------


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` as SQLAlchemy's psycopg 3 URL."""
    scheme, sep, rest = url.strip().partition("://")
    if scheme.lower() in ("postgres", "postgresql", "postgresql+psycopg"):
        return f"postgresql+psycopg://{rest}"
    raise StackError(f"unsupported PostgreSQL driver '{scheme}' in {redact(url)}", where="database URL",
                     hint="use postgresql://… (mlplat talks to PostgreSQL through psycopg 3)")


class _Server:
    """What every ledger object on one PostgreSQL URL shares in this process: the connection pool
    and what the translation of SQLite statements needs to know of the schema."""

    def __init__(self, url: str):
        from sqlalchemy import create_engine, event

        self.engine = create_engine(
            url, pool_pre_ping=True, pool_size=8, max_overflow=32, pool_timeout=30, pool_recycle=1800,
            isolation_level="AUTOCOMMIT",
            # no server-side prepared statements: a migration by another process would invalidate their plans
            connect_args={"connect_timeout": 10, "application_name": "mlplat", "prepare_threshold": None})
        event.listen(self.engine, "connect", _on_connect)
        self.lock = threading.Lock()
        self.statements: dict[str, _Statement] = {}
        self.catalog: _Catalog | None = None

    def checkout(self) -> Any:
        """A pooled connection, pinged first (a stale one, e.g. after a server restart, is replaced)."""
        return self.engine.raw_connection()

    def catalog_for(self, table: str | None) -> _Catalog:
        catalog = self.catalog
        if catalog is None or (table is not None and table not in catalog.tables):
            fairy = self.checkout()
            try:
                catalog = _Catalog.read(fairy.driver_connection)
            finally:
                fairy.close()
            with self.lock:
                self.catalog, self.statements = catalog, {}
        return catalog

    def forget_schema(self) -> None:
        with self.lock:
            self.catalog, self.statements = None, {}


_servers: dict[str, _Server] = {}
_servers_lock = threading.Lock()


def _server(url: str) -> _Server:
    with _servers_lock:
        server = _servers.get(url)
        if server is None:
            server = _servers[url] = _Server(url)
        return server


def dispose_engines() -> None:
    """Close every pooled PostgreSQL connection of this process (tests; before a fork)."""
    with _servers_lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.engine.dispose()


def _forget_after_fork() -> None:
    # a child must not share its parent's sockets: it opens its own pool (the parent's stays usable)
    for server in list(_servers.values()):
        server.engine.dispose(close=False)
    _servers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Results typed as SQLite returns them: integers and floats for numeric (``SUM`` over integers
    is ``numeric`` in PostgreSQL), 0/1 for booleans."""
    from psycopg.adapt import Loader

    class NumberLoader(Loader):
        def load(self, data: Any) -> Any:
            text = bytes(data).decode()
            if text.lstrip("-").isdigit():
                return int(text)
            return float(text)

    class FlagLoader(Loader):
        def load(self, data: Any) -> Any:
            return 1 if bytes(data) == b"t" else 0

    dbapi_connection.adapters.register_loader("numeric", NumberLoader)
    dbapi_connection.adapters.register_loader("bool", FlagLoader)
    dbapi_connection.autocommit = True


@dataclass(frozen=True)
class _Catalog:
    tables: frozenset[str]
    with_id: frozenset[str]  # tables with an ``id`` column: an INSERT returns it as ``lastrowid``
    primary_keys: Mapping[str, tuple[str, ...]]

    @classmethod
    def read(cls, conn: Any) -> _Catalog:
        tables = {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')")}
        with_id = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND column_name = 'id'")}
        keys: dict[str, list[str]] = {}
        for table, column in conn.execute(
                "SELECT c.relname, a.attname FROM pg_catalog.pg_index i "
                "JOIN pg_catalog.pg_class c ON c.oid = i.indrelid "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indisprimary AND n.nspname = current_schema() "
                "ORDER BY c.relname, array_position(i.indkey::int2[], a.attnum)"):
            keys.setdefault(table, []).append(column)
        return cls(frozenset(tables), frozenset(with_id), {t: tuple(c) for t, c in keys.items()})


class Row:
    """A result row as ``sqlite3.Row`` offers it: by index, by (case-insensitive) name, ``keys()``,
    ``dict(row)``, iteration and slicing."""

    __slots__ = ("_keys", "_index", "_values")

    def __init__(self, keys: tuple[str, ...], index: Mapping[str, int], values: Sequence[Any]):
        self._keys, self._index, self._values = keys, index, tuple(values)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return self._values[self._index[key.lower()]]
            except KeyError:
                raise IndexError("No item with that key") from None
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._keys)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self._keys == other._keys and self._values == other._values
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._keys, self._values))

    def __repr__(self) -> str:
        return f"<Row {dict(zip(self._keys, self._values))!r}>"


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Any]:
    description = cursor.description
    if description is None:
        return tuple
    keys = tuple(column.name for column in description)
    index: dict[str, int] = {}
    for i, name in enumerate(keys):
        index.setdefault(name.lower(), i)
    return lambda values: Row(keys, index, values)


class Cursor:
    """The rows of one statement, fetched (the server connection went back to the pool already)."""

    arraysize = 1

    def __init__(self, rows: list[Any] | None = None, names: Sequence[str] | None = None, rowcount: int = -1,
                 lastrowid: Any = None):
        self._rows = rows or []
        self._at = 0
        self.description = tuple((n, None, None, None, None, None, None) for n in names) if names else None
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchone(self) -> Any:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchmany(self, size: int | None = None) -> list[Any]:
        size = self.arraysize if size is None else size
        out = self._rows[self._at:self._at + size]
        self._at += len(out)
        return out

    def fetchall(self) -> list[Any]:
        out = self._rows[self._at:]
        self._at = len(self._rows)
        return out

    def __iter__(self) -> Iterator[Any]:
        while self._at < len(self._rows):
            self._at += 1
            yield self._rows[self._at - 1]

    def close(self) -> None:
        self._rows, self._at = [], 0


@dataclass(frozen=True)
class _Statement:
    kind: str  # sql | begin | commit | rollback | table_info | rows (a constant answer)
    text: str = ""
    writes: bool = False
    returns_id: bool = False
    rows: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # kind "rows": (column names..., values...) pairs


_TOKEN = re.compile(r"""
    '(?:[^']|'')*'            # a string literal
  | "(?:[^"]|"")*"            # a quoted identifier
  | --[^\n]*                  # comments
  | /\*.*?\*/
  | ::                        # a PostgreSQL cast
  | :[A-Za-z_]\w*             # a named parameter
  | [A-Za-z_][\w$]*           # a word
  | \s+
  | .
""", re.S | re.X)
_BEGIN = re.compile(r"^\s*BEGIN(\s+(DEFERRED|IMMEDIATE|EXCLUSIVE))?(\s+TRANSACTION)?\s*;?\s*$", re.I)
_COMMIT = re.compile(r"^\s*(COMMIT|END)(\s+TRANSACTION)?\s*;?\s*$", re.I)
_ROLLBACK = re.compile(r"^\s*ROLLBACK(\s+TRANSACTION)?\s*;?\s*$", re.I)
_PRAGMA = re.compile(r"^\s*PRAGMA\s+(?:main\.)?(\w+)\s*(?:\(\s*['\"]?([\w.]+)['\"]?\s*\)|=\s*[^;]*)?\s*;?\s*$", re.I)
_SQLITE_MASTER = (
    "(SELECT CASE c.relkind WHEN 'i' THEN 'index' WHEN 'v' THEN 'view' ELSE 'table' END AS type, "
    "c.relname::text AS name, COALESCE(t.relname, c.relname)::text AS tbl_name, 0 AS rootpage, NULL::text AS sql "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_catalog.pg_index x ON x.indexrelid = c.oid LEFT JOIN pg_catalog.pg_class t ON t.oid = x.indrelid "
    "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'i'))")
# PRAGMA table_info(t): cid, name, type, notnull, dflt_value, pk (1-based position in the primary key)
_TABLE_INFO = (
    "SELECT a.attnum - 1 AS cid, a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type, "
    "CASE WHEN a.attnotnull THEN 1 ELSE 0 END AS notnull, pg_get_expr(d.adbin, d.adrelid) AS dflt_value, "
    "COALESCE(array_position(k.indkey::int2[], a.attnum) - array_lower(k.indkey::int2[], 1) + 1, 0) AS pk "
    "FROM pg_catalog.pg_attribute a "
    "LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
    "LEFT JOIN pg_catalog.pg_index k ON k.indrelid = a.attrelid AND k.indisprimary "
    "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> 'rowid' "
    "ORDER BY a.attnum")
_NOT_ALIASES = {"where", "order", "group", "limit", "union", "join", "left", "inner", "cross", "on", "having",
                "window", "except", "intersect", "natural", "full", "right", "offset", "as"}


def _matching(tokens: list[str], start: int) -> int:
    """Index of the ``)`` closing the ``(`` at ``tokens[start]``."""
    depth = 0
    for i in range(start, len(tokens)):
        if tokens[i] == "(":
            depth += 1
        elif tokens[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced parentheses")


def _split_args(tokens: list[str], open_at: int, close_at: int) -> list[list[str]]:
    args, current, depth = [], [], 0
    for token in tokens[open_at + 1:close_at]:
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        if token == "," and depth == 0:
            args.append(current)
            current = []
        else:
            current.append(token)
    args.append(current)
    return args


def _next_significant(tokens: list[str], start: int) -> int | None:
    for i in range(start, len(tokens)):
        if tokens[i].strip() and not tokens[i].startswith(("--", "/*")):
            return i
    return None


def _translate(sql: str, catalog_for: Callable[[str | None], _Catalog]) -> _Statement:
    """One SQLite statement as PostgreSQL runs it through psycopg (placeholders, SQLite-isms)."""
    if _BEGIN.match(sql):
        return _Statement("begin")
    if _COMMIT.match(sql):
        return _Statement("commit")
    if _ROLLBACK.match(sql):
        return _Statement("rollback")
    pragma = _PRAGMA.match(sql)
    if pragma:
        name, argument = pragma.group(1).lower(), pragma.group(2)
        if name == "table_info" and argument:
            return _Statement("table_info", _TABLE_INFO, rows=(("table", (argument.rsplit(".", 1)[-1],)),))
        if name in ("integrity_check", "quick_check"):
            return _Statement("rows", rows=((name, ("ok",)),))
        if name == "database_list":
            return _Statement("rows", rows=(("seq", (0,)), ("name", ("main",)), ("file", ("",))))
        return _Statement("rows")  # settings of SQLite's own (journal, busy timeout, foreign keys): nothing to do
    tokens = _TOKEN.findall(sql)
    words = [(i, t.lower()) for i, t in enumerate(tokens) if t[:1].isalpha() or t[:1] == "_"]
    first = words[0][1] if words else ""
    conflict = table = None
    columns: list[str] = []
    if first in ("insert", "replace"):
        at = 0
        while at < len(words) and words[at][1] != "into":
            at += 1
        prefix = {w for _, w in words[:at]}
        if "ignore" in prefix:
            conflict = "ignore"
        elif "replace" in prefix:
            conflict = "replace"
        if conflict:
            tokens[words[0][0]:words[at][0]] = ["INSERT "]
            tokens = _TOKEN.findall("".join(tokens))
            words = [(i, t.lower()) for i, t in enumerate(tokens) if t[:1].isalpha() or t[:1] == "_"]
            at = 1
        into = _next_significant(tokens, words[at][0] + 1) if at < len(words) else None
        if into is not None:
            table = tokens[into].strip('"').lower()
            paren = _next_significant(tokens, into + 1)
            if paren is not None and tokens[paren] == "(":
                close = _matching(tokens, paren)
                columns = [t.strip('"') for t in tokens[paren + 1:close] if t.strip() and t != ","]
    out: list[str] = []
    i = 0
    depth = 0
    returning_at = None
    while i < len(tokens):
        token = tokens[i]
        low = token.lower()
        if token == "?":
            out.append("%s")
        elif token.startswith(":") and token != "::" and len(token) > 1:
            out.append(f"%({token[1:]})s")
        elif "%" in token:  # psycopg reads % as a placeholder anywhere, inside quotes too
            out.append(token.replace("%", "%%"))
        elif low in ("sqlite_master", "sqlite_schema"):
            nxt = _next_significant(tokens, i + 1)
            aliased = nxt is not None and tokens[nxt][:1].isalpha() and tokens[nxt].lower() not in _NOT_ALIASES
            out.append(_SQLITE_MASTER + ("" if aliased or (nxt is not None and tokens[nxt].lower() == "as")
                                         else " AS sqlite_master"))
        elif low in ("ifnull", "max", "min", "group_concat") and (nxt := _next_significant(tokens, i + 1)) is not None \
                and tokens[nxt] == "(":
            close = _matching(tokens, nxt)
            args = _split_args(tokens, nxt, close)
            inner = [_translate_fragment(a) for a in args]
            if low == "ifnull":
                out.append(f"COALESCE({', '.join(inner)})")
            elif low in ("max", "min") and len(args) > 1:
                out.append(f"{'GREATEST' if low == 'max' else 'LEAST'}({', '.join(inner)})")
            elif low == "group_concat":
                separator = inner[1] if len(inner) > 1 else "','"
                out.append(f"string_agg(CAST({inner[0]} AS TEXT), {separator})")
            else:
                out.append(f"{token}({', '.join(inner)})")
            i = close + 1
            continue
        else:
            if token == "(":
                depth += 1
            elif token == ")":
                depth -= 1
            elif low == "returning" and depth == 0:
                returning_at = len(out)
            out.append(token)
        i += 1
    text = "".join(out).strip().rstrip(";").rstrip()
    returns_id = False
    if first in ("insert", "replace") and table is not None:
        clause = ""
        if conflict == "ignore":
            clause = " ON CONFLICT DO NOTHING"
        elif conflict == "replace":
            key = catalog_for(table).primary_keys.get(table, ())
            updates = [c for c in columns if c.lower() not in {k.lower() for k in key}]
            if not key or not columns:
                raise MlplatError(f"INSERT OR REPLACE INTO {table} needs the table's primary key and a column list "
                                  "on PostgreSQL", hint="write INSERT … ON CONFLICT (key) DO UPDATE SET …")
            clause = (f" ON CONFLICT ({', '.join(key)}) DO "
                      + (f"UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in updates)}" if updates else "NOTHING"))
        if returning_at is not None:
            head, tail = "".join(out[:returning_at]).rstrip(), "".join(out[returning_at:]).strip().rstrip(";")
            text = f"{head}{clause} {tail}"
        else:
            text += clause
            if table in catalog_for(table).with_id:
                text += " RETURNING id"
                returns_id = True
    return _Statement("sql", text, writes=first in ("insert", "replace", "update", "delete"), returns_id=returns_id)


def _translate_fragment(tokens: list[str]) -> str:
    """An expression inside a translated function call (placeholders, nested SQLite-isms)."""
    statement = _translate("SELECT " + "".join(tokens), lambda _table: _Catalog(frozenset(), frozenset(), {}))
    return statement.text.removeprefix("SELECT ").strip()


def _integrity_message(exc: Any) -> str:
    import psycopg.errors as pg

    diag = exc.diag
    detail = diag.message_primary or str(exc)
    if isinstance(exc, pg.UniqueViolation):
        return f"UNIQUE constraint failed: {diag.constraint_name} ({detail}; {diag.message_detail or ''})"
    if isinstance(exc, pg.CheckViolation):
        return f"CHECK constraint failed: {diag.constraint_name} ({detail})"
    if isinstance(exc, pg.ForeignKeyViolation):
        return f"FOREIGN KEY constraint failed ({detail}; {diag.message_detail or ''})"
    if isinstance(exc, pg.NotNullViolation):
        return f"NOT NULL constraint failed: {diag.table_name}.{diag.column_name}"
    return detail


def _adapt(params: Any) -> Any:
    """Parameters as SQLite takes them: booleans are the integers 0 and 1."""
    if params is None:
        return ()
    if isinstance(params, Mapping):
        return {k: int(v) if isinstance(v, bool) else v for k, v in params.items()}
    return tuple(int(v) if isinstance(v, bool) else v for v in params)


class PgConnection:
    """A ledger connection to PostgreSQL with the sqlite3 surface the services use.

    It is in autocommit mode, like the platform's SQLite connections (``isolation_level=None``):
    each statement outside a transaction commits by itself. It holds a pooled server connection only
    while a transaction is open or a statement runs, and the pool pings one before handing it out,
    so a connection kept across a server restart works again at its next statement. Inside a
    transaction a failed statement is undone alone (a savepoint), as SQLite undoes it, and the
    transaction stays usable. ``key_dir``: the state directory holding the stack's key.
    """

    def __init__(self, database: PgDatabase):
        self._database = database
        self._server = database.server
        self._held: Any = None  # the pooled connection of the open transaction
        self.after_commit: list = []
        self.key_dir = database.key_dir
        self.head_file = database.head_file
        self.closed = False

    @property
    def in_transaction(self) -> bool:
        return self._held is not None

    def _statement(self, sql: str) -> _Statement:
        statement = self._server.statements.get(sql)
        if statement is None:
            statement = _translate(sql, self._server.catalog_for)
            with self._server.lock:
                if len(self._server.statements) > 2000:
                    self._server.statements.clear()
                self._server.statements[sql] = statement
        return statement

    def execute(self, sql: str, params: Any = ()) -> Cursor:
        statement = self._statement(sql)
        if statement.kind == "begin":
            self.begin()
            return Cursor()
        if statement.kind == "commit":
            self.commit()
            return Cursor()
        if statement.kind == "rollback":
            self.rollback()
            return Cursor()
        if statement.kind == "rows":
            if not statement.rows:
                return Cursor()
            names = tuple(name for name, _ in statement.rows)
            index = {n: i for i, n in enumerate(names)}
            values = [value for _, value in statement.rows]
            rows = [Row(names, index, [column[i] for column in values]) for i in range(len(values[0]))]
            return Cursor(rows, names, len(rows))
        if statement.kind == "table_info":
            params = statement.rows[0][1]
        return self._run(statement, _adapt(params), many=False)

    def executemany(self, sql: str, seq_of_params: Iterable[Any]) -> Cursor:
        statement = self._statement(sql)
        if statement.kind != "sql":
            raise sqlite3.ProgrammingError(f"executemany cannot run {sql.split()[0]}")
        rows = [_adapt(p) for p in seq_of_params]
        if statement.returns_id:
            statement = _Statement("sql", statement.text.removesuffix(" RETURNING id"), writes=True)
        if not rows:
            return Cursor(rowcount=0)
        return self._run(statement, rows, many=True)

    def _run(self, statement: _Statement, args: Any, *, many: bool) -> Cursor:
        if self._held is not None:
            return self._on(self._held.driver_connection, statement, args, many=many, savepoint=statement.writes)
        fairy = self._server.checkout()
        try:
            return self._on(fairy.driver_connection, statement, args, many=many, savepoint=False)
        finally:
            self._release(fairy)

    @staticmethod
    def _on(conn: Any, statement: _Statement, args: Any, *, many: bool, savepoint: bool) -> Cursor:
        import psycopg

        cursor = conn.cursor(row_factory=_row_factory)
        try:
            if savepoint:
                cursor.execute("SAVEPOINT mlplat_statement")
            try:
                if many:
                    cursor.executemany(statement.text, args)
                else:
                    cursor.execute(statement.text, args)
                rows = cursor.fetchall() if cursor.description is not None else []
                rowcount = cursor.rowcount  # before RELEASE SAVEPOINT resets it
                names = [c.name for c in cursor.description] if cursor.description is not None else None
            except psycopg.Error as exc:
                if savepoint and not conn.broken:
                    cursor.execute("ROLLBACK TO SAVEPOINT mlplat_statement")
                if isinstance(exc, psycopg.IntegrityError):
                    raise IntegrityViolation(_integrity_message(exc)) from exc
                raise
            if savepoint:
                cursor.execute("RELEASE SAVEPOINT mlplat_statement")
            if statement.returns_id:
                return Cursor([], None, rowcount, rows[0][0] if rows else None)
            return Cursor(rows, names, rowcount)
        finally:
            cursor.close()

    @staticmethod
    def _release(fairy: Any) -> None:
        """Back to the pool, or out of it when the server connection broke."""
        conn = fairy.driver_connection
        if conn is None or conn.closed or conn.broken:
            fairy.invalidate()
        else:
            fairy.close()

    # --- transactions -------------------------------------------------------------------------

    def begin(self) -> None:
        """``BEGIN`` and the ledger's advisory lock (waits up to the busy timeout, then ``Conflict``)."""
        import psycopg
        import psycopg.errors as pg

        if self._held is not None:
            raise sqlite3.OperationalError("cannot start a transaction within a transaction")
        for attempt in (1, 2):
            fairy = self._server.checkout()
            try:
                fairy.driver_connection.execute(
                    f"BEGIN; SET LOCAL lock_timeout = '{BUSY_TIMEOUT_MS}ms'; SELECT pg_advisory_xact_lock({LEDGER_LOCK}); "
                    "SET LOCAL lock_timeout TO DEFAULT")
            except pg.LockNotAvailable as exc:
                self._abandon(fairy)
                raise Conflict(f"platform database is busy: {exc.diag.message_primary}",
                               hint="another mlplat process holds the write lock; retry") from exc
            except psycopg.OperationalError:
                broken = fairy.driver_connection.broken
                self._abandon(fairy)
                if broken and attempt == 1:  # died between the pool's ping and BEGIN: nothing ran, retry once
                    continue
                raise
            except BaseException:
                self._abandon(fairy)
                raise
            self._held = fairy
            return

    def _abandon(self, fairy: Any) -> None:
        conn = fairy.driver_connection
        try:
            if not (conn.closed or conn.broken):
                conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - the connection is discarded below either way
            fairy.invalidate()
            return
        self._release(fairy)

    def commit(self) -> None:
        fairy, self._held = self._held, None
        if fairy is None:
            return  # as sqlite3: nothing to commit
        try:
            fairy.driver_connection.execute("COMMIT")
        except BaseException:
            self._abandon(fairy)
            raise
        self._release(fairy)

    def rollback(self) -> None:
        fairy, self._held = self._held, None
        if fairy is not None:
            self._abandon(fairy)  # a connection lost mid-transaction rolled back on the server already

    def run_after_commit(self) -> None:
        callbacks, self.after_commit = self.after_commit, []
        for callback in callbacks:
            callback()

    def close(self) -> None:
        self.rollback()
        self.closed = True

    def __del__(self) -> None:  # a connection dropped inside a transaction must not keep the lock
        if getattr(self, "_held", None) is not None:
            try:
                self.rollback()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


class PgDatabase:
    """The ledger in a PostgreSQL database: the same methods as :class:`Database`."""

    dialect = "postgresql"

    def __init__(self, url: str, *, key_dir: Path | str | None = None):
        self.url = normalize_url(url)
        self.path = redact(url)  # what messages and per-database registries name it by
        self.key_dir = Path(key_dir) if key_dir is not None else None
        self.head_file = head_file_name(self.identity())

    def __repr__(self) -> str:
        return f"PgDatabase({self.path!r})"

    def identity(self) -> str:
        """The database, whoever connects to it: ``postgresql host:port/name``."""
        from sqlalchemy.engine import make_url

        parsed = make_url(self.url)
        return f"postgresql {parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"

    def describe(self) -> str:
        return f"PostgreSQL {redact(self.url.replace('+psycopg', ''))}"

    @property
    def server(self) -> _Server:
        return _server(self.url)

    def connect(self) -> PgConnection:
        return PgConnection(self)

    @contextmanager
    def transaction(self, conn: PgConnection | None = None) -> Iterator[PgConnection]:
        """``BEGIN`` + the ledger's advisory lock … ``COMMIT``; rolls back on any exception."""
        own = conn is None
        conn = conn or self.connect()
        try:
            conn.begin()
            try:
                yield conn
            except BaseException:
                conn.rollback()
                conn.after_commit.clear()
                raise
            conn.commit()
            conn.run_after_commit()
        finally:
            if own:
                conn.close()

    # --- schema -------------------------------------------------------------------------

    def _stamped(self) -> str | None:
        fairy = self.server.checkout()
        try:
            conn = fairy.driver_connection
            if conn.execute("SELECT to_regclass('alembic_version') IS NULL").fetchone()[0]:
                return None
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            return row[0] if row else None
        finally:
            PgConnection._release(fairy)

    def applied(self, conn: PgConnection | None = None) -> list[str]:
        return _applied_names(set(), self._stamped())

    def pending(self) -> list[str]:
        return _pending_names(set(), self._stamped())

    def revision(self) -> str | None:
        return self._stamped()

    def migrate(self, revision: str = "head") -> list[str]:
        """Upgrade the schema to ``revision`` (Alembic) in one transaction under the ledger's advisory
        lock, and return the migration names that ran. Idempotent; safe to race."""
        _check_revision(revision)
        if revision == "head" and not self.pending():
            return []
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        engine = create_engine(self.url, poolclass=NullPool, connect_args={"connect_timeout": 10})
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LEDGER_LOCK})")
                stamped = None  # read under the lock: a racing loser finds the history done and runs nothing
                if conn.exec_driver_sql("SELECT to_regclass('alembic_version') IS NOT NULL").scalar():
                    stamped = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
                before = _applied_names(set(), stamped)
                _alembic_upgrade(conn, revision)
        finally:
            engine.dispose()
            self.server.forget_schema()
        return [name for name in self.applied() if name not in before]

    def integrity_ok(self) -> bool:
        """The server answers (its own storage checks are the server's business)."""
        conn = self.connect()
        try:
            return conn.execute("SELECT 1").fetchone()[0] == 1
        finally:
            conn.close()

    def reset_sequences(self, conn: PgConnection) -> None:
        """Identity columns continue after the largest value present (rows imported with their ids)."""
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND is_identity = 'YES'").fetchall()
        for table, column in columns:
            conn.execute(f'SELECT setval(pg_get_serial_sequence(\'"{table}"\', \'{column}\'), '
                         f'COALESCE((SELECT max("{column}") FROM "{table}"), 0) + 1, false)')
