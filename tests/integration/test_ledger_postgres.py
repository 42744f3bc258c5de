"""The ledger on a real PostgreSQL server (tests/pg.py), and SQLite ledgers moving onto the Alembic history.

Schema: the history reaches its head on PostgreSQL and on a ledger the old SQL scripts built (every
row kept); migrations race safely. Invariants: every case of test_db_invariants.py is refused by
PostgreSQL too, and its schema has no invariant without a case. The services' SQL: every literal
statement they run is parsed by PostgreSQL, and the service tests of the rollout rules, alert rules
and audit chain run unchanged against it. Concurrency: 16 writer processes, nothing lost, the chain
verifies. Moves: sqlite → postgres → sqlite with ``mlplat db export/import`` keeps ids and the chain.
Restarts: a transaction after a server restart succeeds on the same ledger object and connection.
"""
from __future__ import annotations

import ast
import inspect
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mlplat.db import (
    BASELINE,
    Database,
    IntegrityViolation,
    PgDatabase,
    baseline_scripts,
    open_database,
    revisions,
    schema_names,
    split_sql,
)
from mlplat.services import audit
from mlplat.services import ledger as ledger_service
from tests.conftest import REPO
from tests.integration import test_db_invariants as invariants
from tests.integration.test_audit_identity import entries_as_written_before_methods
from tests.pg import fresh_database
from tests.unit import test_monitoring_alerts as alert_tests
from tests.unit import test_registry_audit as audit_tests
from tests.unit import test_serving_rollout as rollout_tests

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

EVENT = ("INSERT INTO rollout_events (rollout_id, model, environment, ts, actor, event, step_index, percent, reason, "
         "metrics) VALUES (?,?,?,?,?,?,?,?,?,?)")


@pytest.fixture
def url(postgres):
    return fresh_database(postgres)


@pytest.fixture
def state(tmp_path):
    """A stack's state directory: where a PostgreSQL ledger's key and head file live."""
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def pg(url, state):
    db = open_database(url, key_dir=state)
    db.migrate()
    return db


def catalog(url, sql, *args):
    """Rows of a query on the server's catalog, straight through the driver."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def counts(conn, tables):
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


# --- the schema ------------------------------------------------------------------------------------


def test_the_history_reaches_its_head_once_and_names_what_it_ran(url, state):
    db = open_database(url.replace("postgresql://", "postgres://"), key_dir=state)
    assert isinstance(db, PgDatabase) and db.applied() == [] and db.pending() == schema_names()
    assert db.migrate() == schema_names()
    assert db.pending() == [] and db.applied() == schema_names() and db.revision() == revisions()[-1]
    assert db.migrate() == []  # idempotent
    tables = {r[0] for r in catalog(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    fresh = Database(state / "fresh.db")
    fresh.migrate()
    sqlite_tables = {r[0] for r in fresh.connect().execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == sqlite_tables - {"schema_migrations", "sqlite_sequence"}
    # 8-byte floats for every REAL (timestamps, the chain's hashed values), bytewise text, identity ids
    types = catalog(url, "SELECT table_name, column_name, data_type, collation_name, is_identity "
                         "FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'alembic_version'")
    assert not [r for r in types if r[2] == "real"]
    assert {r[2] for r in types if r[1] in ("ts", "created_at", "expires_at", "latency_ms")} == {"double precision"}
    assert {r[3] for r in types if r[2] == "text"} == {"C"}
    identity = {(r[0], r[1]) for r in types if r[4] == "YES"}
    autoincrement = {(t, "id") for t, in fresh.connect().execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND sql LIKE '%AUTOINCREMENT%'")}
    assert identity == autoincrement | {("captures", "rowid")}
    leases = {(r[1], r[2]) for r in types if r[0] == "leases"}
    assert leases == {("name", "text"), ("holder", "text"), ("expires_at", "double precision"),
                      ("acquired_at", "double precision")}


def test_processes_that_migrate_at_once_leave_one_history(url, state):
    code = ("import sys; from mlplat.db import open_database; "
            "print(len(open_database(sys.argv[1]).migrate()))")
    runs = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(4)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, [err for _, err in outputs]
    assert sorted(int(out) for out, _ in outputs) == [0, 0, 0, len(schema_names())]
    assert open_database(url).pending() == []
    assert catalog(url, "SELECT count(*) FROM alembic_version") == [(1,)]


def _legacy_ledger(path: Path, scripts: int) -> Database:
    """A ledger built as mlplat built them before the Alembic history: the first ``scripts`` SQL
    scripts, each in its transaction, recorded in schema_migrations."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for name, sql in baseline_scripts()[:scripts]:
        conn.execute("BEGIN IMMEDIATE")
        for statement in split_sql(sql):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, 1.0))
        conn.execute("COMMIT")
    conn.close()
    return Database(path)


def _dump(db: Database) -> dict:
    conn = db.connect()
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT IN "
                                            "('schema_migrations', 'alembic_version') ORDER BY name")]
        return {t: [dict(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY rowid")] for t in names}
    finally:
        conn.close()


@pytest.mark.parametrize("scripts", [len(BASELINE), 5])
def test_a_ledger_the_sql_scripts_built_upgrades_in_place_keeping_every_row(tmp_path, scripts):
    db = _legacy_ledger(tmp_path / "platform.db", scripts)
    assert db.revision() is None and db.applied() == list(BASELINE[:scripts])
    conn = db.connect()
    with db.transaction(conn):
        conn.execute(invariants.VERSION.format(v=1))
        conn.execute(invariants.STAGE.format(v=1, stage="production"))
        conn.execute(invariants.ROLLOUT.format(state="running"))
        conn.execute(EVENT, (1, "m", "dev", 1.5, "ctl", "step", 1, 10, "fine", "{}"))
        for rid in ("r2", "r1", "r3"):
            conn.execute(invariants.CAPTURE.format(rid=rid, shadow=0))
    conn.close()
    if scripts == len(BASELINE):
        conn = db.connect()
        entries_as_written_before_methods(conn, 3)  # keyed, without the method column of a later revision
        conn.close()
    else:  # before 0006 the chain was unkeyed
        audit_tests._legacy_chain(db, 3)
    before = _dump(db)

    ran = db.migrate()

    assert ran == [*BASELINE[scripts:], *revisions()]
    assert db.pending() == [] and db.revision() == revisions()[-1] and db.migrate() == []
    after = _dump(db)
    for table, rows in before.items():  # every row, as it was (columns added since are new)
        assert [{k: row[k] for k in old} for row, old in zip(after[table], rows)] == rows, table
        assert len(after[table]) == len(rows), table
    conn = db.connect()
    assert audit.verify(conn).ok
    assert [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")] == list(BASELINE)
    fresh = Database(tmp_path / "fresh.db")
    fresh.migrate()
    schema = "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
    upgraded = conn.execute(schema).fetchall()
    assert [tuple(r) for r in upgraded] == [tuple(r) for r in fresh.connect().execute(schema)]


# --- invariants ------------------------------------------------------------------------------------


@pytest.fixture
def pg_conn(pg):
    conn = pg.connect()
    yield conn
    conn.close()


@pytest.mark.parametrize("case", sorted(invariants.CASES))
def test_postgres_refuses_what_sqlite_refuses(pg_conn, case):
    setup, violation, message = invariants.CASES[case]
    for statement in setup:
        pg_conn.execute(statement)
    tables = [r[0] for r in pg_conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    before = counts(pg_conn, tables)
    with pytest.raises(sqlite3.IntegrityError, match=message) as refused:
        pg_conn.execute(violation)
    assert isinstance(refused.value, IntegrityViolation)
    assert counts(pg_conn, tables) == before


def test_a_second_production_version_fails_inside_a_transaction_and_the_transaction_goes_on(pg, pg_conn):
    pg_conn.execute(invariants.VERSION.format(v=1))
    pg_conn.execute(invariants.VERSION.format(v=2))
    pg_conn.execute(invariants.STAGE.format(v=1, stage="production"))
    with pg.transaction(pg_conn):
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            pg_conn.execute(invariants.STAGE.format(v=2, stage="production"))
        # as on SQLite, the refused statement alone is undone: the transaction continues
        pg_conn.execute(invariants.STAGE.format(v=2, stage="staging"))
    rows = pg_conn.execute("SELECT version, stage FROM model_stages ORDER BY version").fetchall()
    assert [tuple(r) for r in rows] == [(1, "production"), (2, "staging")]


def test_the_audit_log_cannot_be_truncated_either(pg_conn):
    pg_conn.execute(invariants.CASES["audit entries are never deleted"][0][0])
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        pg_conn.execute("TRUNCATE audit_log")
    assert pg_conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 1


def test_every_invariant_of_the_postgres_schema_has_a_case(pg, url):
    unique = {r[0] for r in catalog(
        url, "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
             "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND i.indisunique "
             "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)")}
    triggers = {r[0] for r in catalog(url, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
    checks: dict[str, set[str]] = {}
    for table, column in catalog(
            url, "SELECT t.relname, a.attname FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid "
                 "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(k.conkey) WHERE k.contype = 'c'"):
        checks.setdefault(table, set()).add(column)
    assert unique == invariants.COVERED_INDEXES, "a unique index without a test case"
    assert triggers == invariants.COVERED_TRIGGERS | {"audit_log_no_truncate"}, "a trigger without a test case"
    expected = {table: columns | invariants.CHECKED_WITH.get(table, set())
                for table, columns in invariants.COVERED_CHECKS.items()}
    assert checks == expected, "a CHECK constraint without a test case"


# --- the services' SQL -----------------------------------------------------------------------------

SERVICE_SQL = sorted({*REPO.glob("mlplat/services/**/*.py"), *REPO.glob("mlplat/serving/*.py"),
                      *REPO.glob("mlplat/api/ops/*.py"), REPO / "mlplat/dashboard/data.py",
                      *REPO.glob("providers/local/*.py"), *REPO.glob("providers/aws/runtime/*.py")})


def literal_statements():
    """Every statement the ledger's users pass as a literal to ``execute``/``executemany`` (DuckDB's
    connections, named ``con``, excluded)."""
    found = []
    for path in SERVICE_SQL:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("execute", "executemany") and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                    and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "con")):
                found.append((f"{path.relative_to(REPO)}:{node.lineno}", node.args[0].value))
    return found


def numbered_parameters(text: str) -> str:
    """psycopg's ``%s``/``%(name)s`` as the server's ``$1, $2…`` (for PREPARE)."""
    numbers = iter(range(1, 10_000))
    return re.sub(r"%s|%\(\w+\)s", lambda _m: f"${next(numbers)}", text).replace("%%", "%")


def test_postgres_parses_every_literal_statement_of_the_services(pg_conn, url):
    """Each statement, as the ledger connection translates it, is prepared (parsed, names and types
    resolved against the schema) by the server, without running it."""
    import psycopg

    statements = literal_statements()
    assert len(statements) > 100
    problems = []
    with psycopg.connect(url, autocommit=True) as raw:
        for where, sql in statements:
            translated = pg_conn._statement(sql)
            if translated.kind not in ("sql", "table_info"):
                continue
            text = numbered_parameters(translated.text)
            try:
                raw.execute(f"PREPARE statement AS {text}")
                raw.execute("DEALLOCATE statement")
            except psycopg.Error as exc:
                problems.append(f"{where}: {str(exc).splitlines()[0]}: {sql}")
    assert not problems, "\n".join(problems)


def reused(module, fixture: str, skip: tuple[str, ...] = ()):
    """The tests of ``module`` that take the ledger fixture ``fixture`` (and perhaps ``tmp_path``)."""
    out = []
    for name, test in vars(module).items():
        if name.startswith("test_") and callable(test) and name not in skip:
            params = set(inspect.signature(test).parameters)
            if fixture in params and params <= {fixture, "tmp_path"}:
                out.append(pytest.param(test, id=name))
    return out


def call(test, tmp_path, **fixtures):
    params = inspect.signature(test).parameters
    return test(**{k: v for k, v in {**fixtures, "tmp_path": tmp_path}.items() if k in params})


@pytest.mark.parametrize("test", reused(rollout_tests, "conn"))
def test_the_rollout_rules_on_postgres(test, pg, tmp_path):
    conn = pg.connect()
    try:
        call(test, tmp_path, conn=(pg, conn))
    finally:
        conn.close()


@pytest.mark.parametrize("test", reused(alert_tests, "db"))
def test_the_alert_rules_on_postgres(test, pg, tmp_path):
    call(test, tmp_path, db=pg)


@pytest.mark.parametrize("test", reused(audit_tests, "conn", skip=(
    "test_a_rolled_back_append_does_not_move_the_head_file",)))  # it opens a SQLite ledger itself
def test_the_audit_chain_on_postgres(test, url, tmp_path, monkeypatch):
    db = open_database(url, key_dir=tmp_path)
    db.migrate()
    conn = db.connect()
    for i in range(5):
        with db.transaction(conn):
            audit.append(conn, method="os-user", actor=f"user{i}@example.com", action="approval.approved", model="m", version=i + 1,
                         environment="dev", reason=f"reason {i}", evidence={"i": i})
    # tampering as a superuser would: past the append-only triggers
    monkeypatch.setattr(audit_tests, "_untrigger", lambda c: c.execute("ALTER TABLE audit_log DISABLE TRIGGER USER"))
    # the tests find the head file at tmp_path / audit.HEAD_FILE: this ledger's own, in the state directory
    assert (tmp_path / db.head_file).is_file() and not (tmp_path / audit.HEAD_FILE).exists()
    monkeypatch.setattr(audit, "HEAD_FILE", str(db.head_file))
    try:
        call(test, tmp_path, conn=conn)
    finally:
        conn.close()


def test_a_rolled_back_append_moves_neither_the_chain_nor_its_head_file(pg, state):
    conn = pg.connect()
    with pg.transaction(conn):
        audit.append(conn, method="os-user", actor="a@example.com", action="approval.approved", model="m", reason="first")
    head_file = state / pg.head_file
    before = head_file.read_text()
    with pytest.raises(RuntimeError):
        with pg.transaction(conn):
            audit.append(conn, method="os-user", actor="x@example.com", action="approval.approved", model="m", reason="r")
            raise RuntimeError("the decision failed after its audit entry")
    assert head_file.read_text() == before and audit.verify(conn).ok and audit.verify(conn).entries == 1
    assert not conn.in_transaction and conn.after_commit == []
    entry = audit.append(conn, method="os-user", actor="x@example.com", action="approval.approved", model="m", reason="own lock")
    assert entry["seq"] == 2 and json.loads(head_file.read_text())["seq"] == 2
    assert (state / "keys" / "platform.key").is_file()


# --- the connection ----------------------------------------------------------------------------------


def test_the_connection_speaks_the_services_sqlite(pg, pg_conn):
    c = pg_conn
    cur = c.execute(EVENT, (None, "m", "dev", 1.25, "a", "step", None, 10, "50% of 'traffic'", "{}"))
    assert (cur.lastrowid, cur.rowcount) == (1, 1)
    row = c.execute("SELECT * FROM rollout_events WHERE reason LIKE '50%' AND model = :model", {"model": "m"}).fetchone()
    assert (row[0], row["id"], row["ID"], row["reason"], dict(row)["ts"]) == (1, 1, 1, "50% of 'traffic'", 1.25)
    assert row.keys()[:3] == ["id", "rollout_id", "model"] and list(row)[:3] == [1, None, "m"] and len(row) == 11
    c.executemany(EVENT, [(None, "m", "dev", float(i), "a", "step", i, i, "r", "{}") for i in range(3)])
    assert c.execute("SELECT count(*), sum(percent), avg(percent), max(ts) FROM rollout_events").fetchone()[:] == \
        (4, 13, 3.25, 2.0)
    # SQLite-isms the services write
    c.execute("INSERT OR IGNORE INTO serving_revision (id, revision) VALUES (1, 7)")
    assert c.execute("SELECT revision FROM serving_revision").fetchall()[0][0] == 0
    c.execute("INSERT INTO meta (key, value) VALUES ('k', 'v1')")
    assert c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('k', 'v2')").lastrowid is None
    assert c.execute("SELECT ifnull(NULL, value), max(1, ?), min(3, 4) FROM meta", (2,)).fetchone()[:] == ("v2", 2, 3)
    assert c.execute("SELECT group_concat(key), max(value) FROM meta").fetchone()[:] == ("k", "v2")
    assert c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", ("captures",)).fetchone() is not None
    assert c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", ("nothing",)).fetchone() is None
    info = c.execute("PRAGMA table_info(audit_head)").fetchall()
    assert [(r[1], r[5]) for r in info] == [("id", 1), ("seq", 0), ("hash", 0)]
    assert c.execute("PRAGMA foreign_keys=ON").fetchall() == [] and pg.integrity_ok()
    # booleans in and out as SQLite has them
    c.execute(invariants.CAPTURE.replace("{shadow}", "?").format(rid="b1"), (True,))
    assert c.execute("SELECT shadow, shadow = 1 FROM captures").fetchone()[:] == (1, 1)
    # text sorts bytewise, whatever the database's collation
    for rid in ("B", "a", "abc#1", "abc$"):
        c.execute(invariants.CAPTURE.format(rid=rid, shadow=0))
    ordered = [r[0] for r in c.execute("SELECT request_id FROM captures ORDER BY request_id")]
    assert ordered == sorted(ordered, key=lambda s: s.encode()) and ordered[0] == "B"


def test_transactions_serialize_and_run_after_commit_callbacks_once(pg):
    conn, other = pg.connect(), pg.connect()
    ran = []
    with pg.transaction(conn):
        conn.after_commit.append(lambda: ran.append("committed"))
        conn.execute(EVENT, (None, "m", "dev", 1.0, "a", "step", None, None, "r", "{}"))
        with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
            conn.execute("BEGIN IMMEDIATE")
        # another connection reads the committed state only (and does not wait for the lock to read)
        assert other.execute("SELECT count(*) FROM rollout_events").fetchone()[0] == 0
        assert ran == []
    assert ran == ["committed"] and other.execute("SELECT count(*) FROM rollout_events").fetchone()[0] == 1
    with pytest.raises(KeyError), pg.transaction(conn):
        conn.after_commit.append(lambda: ran.append("rolled back"))
        conn.execute(EVENT, (None, "m", "dev", 2.0, "a", "step", None, None, "r", "{}"))
        raise KeyError("boom")
    assert ran == ["committed"] and conn.after_commit == []
    assert conn.execute("SELECT count(*) FROM rollout_events").fetchone()[0] == 1


# --- many writers --------------------------------------------------------------------------------

WRITER = r"""
import sys
from mlplat.db import open_database
from mlplat.services import audit

url, key_dir, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
db = open_database(url, key_dir=key_dir)
conn = db.connect()
conn.execute("SELECT 1")
sys.stdin.read(1)  # everyone ready: go
for n in range(count):
    held = n % 2 == 0  # half on the process's own connection, half on a fresh one per transaction
    with db.transaction(conn if held else None) as tx:
        audit.append(tx, method="os-user", actor=f"writer{worker}@example.com", action="test.write", evidence={"worker": worker, "n": n})
        tx.execute("INSERT INTO rollout_events (rollout_id, model, environment, ts, actor, event, step_index, percent, "
                   "reason, metrics) VALUES (?,?,?,?,?,?,?,?,?,?)",
                   (None, f"m{worker}", "dev", float(n), f"writer{worker}", "step", n, worker, "concurrent", "{}"))
    conn.execute("INSERT INTO monitor_labels (request_id, label, received_at, source) VALUES (?,?,?,?)",
                 (f"w{worker}-{n}", "1", float(n), "autocommit"))
conn.close()
print("done")
"""


def test_sixteen_writer_processes_lose_nothing_and_the_chain_verifies(pg, url, state):
    writers, count = 16, 12
    conn = pg.connect()
    audit.append(conn, method="os-user", actor="setup@example.com", action="test.start", reason="creates the stack's key")
    runs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(state), str(w), str(count)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
            for w in range(writers)]
    for run in runs:
        run.stdin.write("g")
        run.stdin.flush()
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0] * writers, [err[-2000:] for _, err in outputs if err]
    assert all(out.strip() == "done" for out, _ in outputs)
    total = writers * count
    assert conn.execute("SELECT count(*) FROM rollout_events").fetchone()[0] == total
    assert conn.execute("SELECT count(*) FROM monitor_labels").fetchone()[0] == total
    done = {(r[0], r[1]) for r in conn.execute("SELECT percent, step_index FROM rollout_events")}
    assert done == {(w, n) for w in range(writers) for n in range(count)}
    entries = audit.entries(conn)
    assert [e["seq"] for e in entries] == list(range(1, total + 2))
    assert {(e["evidence"]["worker"], e["evidence"]["n"]) for e in entries[1:]} == done
    result = audit.verify(conn)
    assert result.ok and result.entries == total + 1 and result.head_file == "ok", result.problems
    assert json.loads((state / pg.head_file).read_text())["seq"] == total + 1


# --- a server restart ------------------------------------------------------------------------------


def test_a_transaction_after_a_server_restart_succeeds_on_the_same_connection(postgres, pg):
    kept = pg.connect()
    with pg.transaction(kept):
        audit.append(kept, method="os-user", actor="a@example.com", action="test.before", reason="before the restart")
        kept.execute(EVENT, (None, "m", "dev", 1.0, "a", "step", 0, 0, "before", "{}"))
    spare = [pg.server.checkout() for _ in range(3)]  # several pooled connections go stale
    for fairy in spare:
        fairy.close()

    postgres.restart()

    with pg.transaction(kept):  # the pool's ping finds the stale connection and replaces it
        audit.append(kept, method="os-user", actor="a@example.com", action="test.after", reason="after the restart")
        kept.execute(EVENT, (None, "m", "dev", 2.0, "a", "step", 1, 0, "after", "{}"))
    with pg.transaction() as fresh:
        fresh.execute(EVENT, (None, "m", "dev", 3.0, "a", "step", 2, 0, "after, own connection", "{}"))
    assert [r[0] for r in kept.execute("SELECT reason FROM rollout_events ORDER BY id")] == [
        "before", "after", "after, own connection"]
    result = ledger_service.verify(kept)
    assert result.ok and result.entries == 2, result.problems


# --- moving a ledger --------------------------------------------------------------------------------


def _tables(path: Path) -> list:
    return json.loads(path.read_text())["tables"]


def test_sqlite_to_postgres_to_sqlite_keeps_ids_and_the_audit_chain(up_project, cli, postgres, tmp_path):
    state = up_project / ".mlplat" / "dev"
    local = Database(state / "platform.db")
    conn = local.connect()
    with local.transaction(conn):
        for i in range(3):
            audit.append(conn, method="os-user", actor="ds@example.com", action="test.moved", model="m", version=i, reason=f"entry {i}",
                         evidence={"i": i, "text": "naïve ✓ 100%"})
        for rid in ("z", "a", "m"):  # equal timestamps: insertion order breaks the tie, and survives the move
            conn.execute(invariants.CAPTURE.format(rid=rid, shadow=0))
        for i in range(4):
            conn.execute(EVENT, (None, "m", "dev", 1700000000.123456 + i, "ctl", "step", i, 10 * i, "r", "{}"))
        conn.execute("DELETE FROM rollout_events WHERE id = 2")  # a gap in the ids: kept as is
    conn.close()
    url = fresh_database(postgres)
    exported, back, again = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"

    assert cli("db", "export", str(exported), "--stack", "dev").returncode == 0
    upgraded = cli("db", "upgrade", "--stack", "dev", "--database", url)
    assert upgraded.returncode == 0 and f"applied {len(schema_names())} migration(s)" in upgraded.stdout, upgraded.stderr
    assert "up to date" in cli("db", "upgrade", "--stack", "dev").stdout
    unknown = cli("db", "upgrade", "--stack", "dev", "--database", "mysql://user:secret@db/ledger")
    assert unknown.returncode == 3 and "unsupported database URL scheme 'mysql'" in unknown.stderr
    assert "secret" not in unknown.stderr
    moved = cli("db", "import", str(exported), "--stack", "dev", "--database", url)
    assert moved.returncode == 0, moved.stderr
    pg = open_database(url, key_dir=state)
    pg_conn = pg.connect()
    result = ledger_service.verify(pg_conn)
    assert result.ok and result.entries >= 4, result.problems
    assert [r[0] for r in pg_conn.execute("SELECT id FROM rollout_events ORDER BY id")] == [1, 3, 4]
    assert cli("db", "export", str(back), "--stack", "dev", env={"MLPLAT_DATABASE_URL": url}).returncode == 0
    assert json.loads(back.read_text())["source"] == "postgresql"
    assert _tables(back) == _tables(exported)
    captures = [t for t in _tables(back) if t["name"] == "captures"][0]["rows"]
    assert [r[0] for r in captures] == ["z", "a", "m"]

    refused = cli("db", "import", str(exported), "--stack", "dev", "--database", url)
    assert refused.returncode == 5 and "not empty" in refused.stderr
    assert pg_conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == result.entries
    # new rows continue after the imported ids
    assert pg_conn.execute(EVENT, (None, "m", "dev", 9.0, "ctl", "step", 9, 0, "new", "{}")).lastrowid == 5

    aside = tmp_path / "old-ledger"
    aside.mkdir()
    for path in state.glob("platform.db*"):
        path.rename(aside / path.name)
    restored = cli("db", "import", str(back), "--stack", "dev")
    assert restored.returncode == 0, restored.stderr
    verified = cli("audit", "verify", "--stack", "dev")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert cli("db", "export", str(again), "--stack", "dev").returncode == 0
    assert _tables(again) == _tables(exported)


def test_an_import_into_a_ledger_with_rows_writes_nothing(pg, state, tmp_path):
    from mlplat.db_transfer import export_ledger, import_ledger
    from mlplat.errors import Conflict, MlplatError

    conn = pg.connect()
    audit.append(conn, method="os-user", actor="a@example.com", action="test.first", reason="r")
    doc = export_ledger(pg)
    other = open_database(f"sqlite:///{tmp_path / 'other.db'}", key_dir=state)
    other.migrate()
    other_conn = other.connect()
    other_conn.execute(EVENT, (None, "m", "dev", 1.0, "a", "step", 0, 0, "already here", "{}"))
    with pytest.raises(Conflict, match="not empty: rollout_events"):
        import_ledger(other, doc)
    assert other_conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 0
    with pytest.raises(MlplatError, match="not a ledger export"):
        import_ledger(open_database(tmp_path / "third.db", key_dir=state), {"format": "something else"})
    broken = {**doc, "tables": [{"name": "audit_log", "columns": ["seq"], "rows": [[1, 2]]}]}
    with pytest.raises(MlplatError, match="does not have its 1 columns"):
        import_ledger(open_database(tmp_path / "third.db", key_dir=state), broken)
    assert not (tmp_path / "third.db").exists()  # refused before anything was created


# --- a stack's processes on the server's ledger -----------------------------------------------------


def test_a_stacks_services_use_the_ledger_the_process_was_given(up_project, postgres):
    """A process given ``database_url`` (the server, its platform processes) reads and writes the PostgreSQL
    ledger through the providers, migrated on first use; the stack's SQLite ledger stays untouched."""
    import numpy as np

    from mlplat.context import Context
    from mlplat.errors import NotFound
    from mlplat.services import governance
    from mlplat.services import registry as reg
    from mlplat.services.monitoring import passes, quality, status
    from mlplat.services.monitoring.windows import monitor_for
    from mlplat.serving.capture import CaptureWriter
    from mlplat.serving.protocol import Inputs

    url = fresh_database(postgres)
    ctx = Context(project_dir=up_project, database_url=url, _user="ds@example.com", ledger_owner=True)
    spec = ctx.stack("dev")
    local = Database(spec.state_dir / "platform.db")
    local_before = _dump(local)
    db = reg.registry_for(spec, ctx).database()
    assert isinstance(db, PgDatabase) and db.pending() == [] and db.key_dir == spec.state_dir

    assert governance.record_applied(db, spec, ctx.user, ctx.method)  # an audit entry keyed with the stack's key
    conn = db.connect()
    assert audit.verify(conn).ok and audit.load_key(conn).key_id == audit.load_key(local.connect()).key_id
    with pytest.raises(NotFound, match="is not registered"):
        reg.version_row(conn, "m", 1)
    conn.execute(invariants.VERSION.format(v=1))
    conn.execute(invariants.VERSION.format(v=3))
    with pytest.raises(NotFound) as missing:
        reg.version_row(conn, "m", 2)
    assert missing.value.hint == "known versions: 1,3"
    assert [(m["model"], m["version"], m["stage"]) for m in reg.list_models(conn, "dev")] == [("m", 1, "dev"),
                                                                                               ("m", 3, "dev")]

    # the gateway's capture writer, then the monitor reading what it wrote
    writer = CaptureWriter(db, 1.0, interval=0.01)
    writer.start()
    for i, rid in enumerate(["r-z", "r-a", "r-m", "r-b"]):
        writer.put((rid, 1000.0 + (i // 2), "m", 1, "primary", "dev",
                    Inputs(rows=1, columns=("x",), array=np.array([[float(i)]])), [i % 2], 2.5, 200, False, None,
                    f"client-{i}"))
    writer.stop()
    assert writer.written == 4 and writer.dropped == 0
    monitor = monitor_for(spec, ctx)
    captured = monitor.captures("m", 1)
    assert [c.request_id for c in captured] == ["r-z", "r-a", "r-m", "r-b"]  # equal times: insertion order
    assert monitor.known_request_ids(["r-a#0", "nope"]) == {"r-a#0"}
    assert monitor.resolve_request_ids(["client-2"]) == {"client-2": ["r-m"]}
    assert monitor.deployed() == [("m", 1, "dev")]
    assert [(u.predictions, u.busy_seconds) for u in monitor.usage(0, 2000)] == [(4, 0.01)]
    joined = passes.ingest_labels(spec, ctx, quality.LabelBatch({"client-0": 1, "r-b": 0, "ghost": 1}, rows=3),
                                  source="test")
    assert (joined.stored, joined.unknown, joined.unknown_ids) == (2, 1, ["ghost"])
    assert status.status(spec, ctx)["windows"] == []
    assert _dump(local) == local_before
    assert audit.verify(local.connect()).ok  # each ledger keeps its own signed head file in the state directory
    assert (spec.state_dir / audit.HEAD_FILE).is_file() and (spec.state_dir / db.head_file).is_file()


def test_a_server_on_postgres_is_ready_and_serves_the_ledger(up_project, postgres):
    import httpx

    from tests.server_support import running_server

    url = fresh_database(postgres)
    with running_server(up_project, "dev", database_url=url) as server:
        ready = httpx.get(f"{server.url}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        version = httpx.get(f"{server.url}/api/v1/version", timeout=30).json()
        assert version["database"] == "postgresql"
    assert open_database(url).pending() == []  # the server migrated it
