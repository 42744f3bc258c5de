"""Moving a ledger between databases: every table, every row (ids included), as one JSON document.

An export names the schema revision and lists the ledger's tables in creation order (parents
before the tables that refer to them), each with its columns and its rows as arrays: rows in
insertion order where the ledger keeps one (:data:`mlplat.db.INSERTION_ORDERED`), else in primary
key order, so SQLite and PostgreSQL export the same ledger as the same document. The schema's own
bookkeeping (``alembic_version``, ``schema_migrations``, SQLite's ``sqlite_sequence``) is left out:
the target's migrations write their own.

An import loads such a document into an empty ledger at the same revision (a brand-new database
is first migrated to it), in one transaction: the audit chain arrives exactly as it left, so it
verifies with the stack's key, and the signed head file beside the key is anchored to it.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from mlplat.db import BASELINE_REVISION, INSERTION_ORDERED, Database, PgDatabase, revisions
from mlplat.errors import Conflict, MlplatError

FORMAT = "mlplat-ledger"
FORMAT_VERSION = 1
BOOKKEEPING = {"alembic_version", "schema_migrations", "sqlite_sequence"}
SEEDED = {"serving_revision": [[1, 0]]}  # rows the migrations write into an empty ledger


def tables(conn: Any, dialect: str) -> list[str]:
    """The ledger's tables in creation order."""
    if dialect == "sqlite":
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY rowid")]
    else:
        names = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') ORDER BY c.oid")]
    return [n for n in names if n not in BOOKKEEPING and not n.startswith("sqlite_")]


def columns(conn: Any, table: str) -> tuple[list[str], list[str]]:
    """The table's columns in order, and its primary key's columns in key order."""
    info = [tuple(r) for r in conn.execute(f'PRAGMA table_info("{table}")')]
    key = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
    return [r[1] for r in info], key


def _order(table: str, names: list[str], key: list[str], dialect: str) -> str:
    if table in INSERTION_ORDERED or (not key and dialect == "sqlite"):
        return "rowid"
    return ", ".join(f'"{k}"' for k in key or names)


def export_ledger(db: Database | PgDatabase, *, now: float | None = None) -> dict[str, Any]:
    """The whole ledger as one JSON-ready document (read in one transaction: a consistent snapshot)."""
    revision = db.revision()
    if revision is None:
        raise MlplatError(f"the ledger in {db.describe()} has no schema revision",
                          hint="run `mlplat db upgrade` for it first (an export names the revision it was taken at)")
    out: list[dict[str, Any]] = []
    with db.transaction() as conn:
        for table in tables(conn, db.dialect):
            names, key = columns(conn, table)
            listed = ", ".join(f'"{c}"' for c in names)
            rows = conn.execute(f'SELECT {listed} FROM "{table}" ORDER BY {_order(table, names, key, db.dialect)}').fetchall()
            out.append({"name": table, "columns": names, "rows": [list(r) for r in rows]})
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "revision": revision, "source": db.dialect,
            "exported_at": time.time() if now is None else now, "tables": out}


def _validate(doc: Any, where: str) -> list[dict[str, Any]]:
    def bad(problem: str) -> MlplatError:
        return MlplatError(f"not a ledger export: {problem}", where=where,
                           hint="give a file `mlplat db export` wrote")

    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise bad(f"its format is not '{FORMAT}'")
    if doc.get("format_version") != FORMAT_VERSION:
        raise MlplatError(f"ledger export format version {doc.get('format_version')!r} is not {FORMAT_VERSION}",
                          where=where, hint="import it with the mlplat version that exported it")
    if not isinstance(doc.get("revision"), str) or not isinstance(doc.get("tables"), list):
        raise bad("it lacks a revision or its tables")
    seen: set[str] = set()
    for item in doc["tables"]:
        if not (isinstance(item, Mapping) and isinstance(item.get("name"), str) and isinstance(item.get("columns"), list)
                and all(isinstance(c, str) for c in item["columns"]) and isinstance(item.get("rows"), list)):
            raise bad("a table entry is not {name, columns, rows}")
        if item["name"] in seen:
            raise bad(f"table {item['name']} is listed twice")
        seen.add(item["name"])
        width = len(item["columns"])
        for number, row in enumerate(item["rows"], start=1):
            if not isinstance(row, list) or len(row) != width:
                raise bad(f"row {number} of {item['name']} does not have its {width} columns")
            if any(isinstance(v, dict | list) for v in row):
                raise bad(f"row {number} of {item['name']} holds a value that is not a number, text or null")
    return list(doc["tables"])


def _occupied(conn: Any, names: list[str]) -> dict[str, int]:
    """Tables that hold rows (beyond the ones the migrations seed), with their row counts."""
    out = {}
    for table in names:
        count = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        if not count:
            continue
        if table in SEEDED:
            rows = [list(r) for r in conn.execute(f'SELECT * FROM "{table}"').fetchall()]
            if rows == SEEDED[table]:
                continue
        out[table] = int(count)
    return out


def import_ledger(db: Database | PgDatabase, doc: Any, *, where: str = "(export)") -> dict[str, Any]:
    """Load an export into ``db``, which must be empty and at the export's revision (a database with no
    ledger yet is migrated to it). One transaction: on any refusal nothing is written."""
    from mlplat.services import audit

    items = _validate(doc, where)
    revision = doc["revision"]
    if revision not in (BASELINE_REVISION, *revisions()):
        raise MlplatError(f"the export is at ledger schema revision '{revision}', unknown to this mlplat",
                          where=where, hint="import it with the mlplat version that exported it (or a newer one)")
    current = db.revision()
    if current is None and not db.applied():
        db.migrate(revision)
        current = db.revision()
    if current != revision:
        raise Conflict(f"the ledger in {db.describe()} is at schema revision '{current}', the export at '{revision}'",
                       where=where, hint="import into a new, empty database (it is migrated to the export's revision), "
                                         "or export again from a source at this revision (`mlplat db upgrade`)")
    counts: dict[str, int] = {}
    with db.transaction() as conn:
        here = tables(conn, db.dialect)
        unknown = [item["name"] for item in items if item["name"] not in here]
        if unknown:
            raise MlplatError(f"the export has tables this ledger does not: {', '.join(unknown)}", where=where,
                              hint="export and import with the same mlplat version")
        occupied = _occupied(conn, here)
        if occupied:
            listed = ", ".join(f"{t} ({n})" for t, n in sorted(occupied.items()))
            raise Conflict(f"the ledger in {db.describe()} is not empty: {listed}", where=where,
                           hint="import into a new, empty database; nothing was written")
        for item in items:
            table, names = item["name"], item["columns"]
            known, _ = columns(conn, table)
            extra = [c for c in names if c not in known]
            if extra:
                raise MlplatError(f"the export's {table} has columns this ledger does not: {', '.join(extra)}",
                                  where=where, hint="export and import with the same mlplat version")
            if table in SEEDED:
                conn.execute(f'DELETE FROM "{table}"')
            if item["rows"]:
                marks = ", ".join("?" * len(names))
                listed = ", ".join(f'"{c}"' for c in names)
                conn.executemany(f'INSERT INTO "{table}" ({listed}) VALUES ({marks})', item["rows"])
            counts[table] = len(item["rows"])
        if isinstance(db, PgDatabase):
            db.reset_sequences(conn)
        key = audit.load_key(conn)
        head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone() if "audit_head" in here else None
        if key is not None and head is not None:
            anchor_key = key
            conn.after_commit.append(lambda: audit.write_head_file(conn, anchor_key))
    return {"database": db.describe(), "revision": revision, "tables": len(items), "rows": sum(counts.values()),
            "counts": counts, "keyed_entries": _keyed_entries(items), "key_found": key is not None}


def _keyed_entries(items: list[dict[str, Any]]) -> int:
    """Audit entries of the export signed with the stack's key (they verify only where the key is)."""
    for item in items:
        if item["name"] == "audit_log" and "scheme" in item["columns"]:
            at = item["columns"].index("scheme")
            return sum(1 for row in item["rows"] if row[at] is not None)
    return 0
