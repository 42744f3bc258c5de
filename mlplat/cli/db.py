"""`mlplat db upgrade | export | import`: the ledger's database itself (schema, backups, moves).

These act on the database directly, as the process that owns the ledger (``mlplat server``'s
host, or an embedded stack's machine): which database is ``--database``, else
``$MLPLAT_DATABASE_URL``, else the stack's ``controlPlane.database``, else the SQLite ledger in
the stack's state directory. The stack's key stays in its state directory either way.
"""
from __future__ import annotations

import os
from pathlib import Path

import click

from mlplat.cli.options import emit_json, json_option, pass_ctx, stack_option
from mlplat.errors import MlplatError

database_option = click.option(
    "--database", "database", default=None, metavar="URL",
    help="postgresql://… or sqlite:///… (default: $MLPLAT_DATABASE_URL, then the stack's controlPlane.database, "
         "then SQLite in the stack's state directory).")


def open_ledger(ctx, stack: str, database: str | None):
    """The ledger database the options name, keyed from the stack's state directory."""
    from mlplat.db import LEDGER_FILE, open_database

    spec = ctx.stack(stack)
    target = database or os.environ.get("MLPLAT_DATABASE_URL") or spec.control_plane.database
    if not target:
        if not spec.state_dir.is_dir():
            raise MlplatError(f"stack '{spec.name}' has no state directory ({spec.state_dir})",
                              hint=f"run `mlplat up --stack {spec.name}` first, or name a database with --database")
        target = spec.state_dir / LEDGER_FILE
    return open_database(target, key_dir=spec.state_dir)


@click.group("db")
def db() -> None:
    """The ledger's database: upgrade its schema, export it to a file, import it into an empty one."""


@db.command("upgrade")
@stack_option
@database_option
@json_option
@pass_ctx
def upgrade(ctx, stack: str, database: str | None, as_json: bool) -> None:
    """Migrate the ledger's schema to this mlplat's newest revision (idempotent; safe beside a running server)."""
    ledger = open_ledger(ctx, stack, database)
    ran = ledger.migrate()
    revision = ledger.revision()
    if as_json:
        emit_json({"database": ledger.describe(), "applied": ran, "revision": revision})
    elif ran:
        ctx.console.print(f"{ledger.describe()}: applied {len(ran)} migration(s): {', '.join(ran)} "
                          f"(now at revision {revision})", highlight=False, markup=False)
    else:
        ctx.console.print(f"{ledger.describe()}: up to date (revision {revision})", highlight=False, markup=False)


@db.command("export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@stack_option
@database_option
@pass_ctx
def export(ctx, file: str, stack: str, database: str | None) -> None:
    """Write every ledger table (schema revision, rows with their ids, the audit chain) to FILE as one
    JSON document (`-`: standard output). The file holds the ledger's contents: keep it private."""
    import json
    import tempfile

    from mlplat.db_transfer import export_ledger

    ledger = open_ledger(ctx, stack, database)
    doc = export_ledger(ledger)
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=True) + "\n"
    rows = sum(len(t["rows"]) for t in doc["tables"])
    if file == "-":
        click.echo(text, nl=False)
        return
    target = Path(file)
    if not target.parent.is_dir():
        raise MlplatError(f"folder {target.parent} does not exist", where=file, hint="create it, or name another file")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:  # 0600 from mkstemp
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    ctx.err.print(f"exported {rows} rows in {len(doc['tables'])} tables from {ledger.describe()} "
                  f"(revision {doc['revision']}) to {target}", highlight=False, markup=False)


@db.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@stack_option
@database_option
@json_option
@pass_ctx
def import_(ctx, file: str, stack: str, database: str | None, as_json: bool) -> None:
    """Load FILE (from `mlplat db export`) into an empty ledger at the same schema revision (a new database
    is migrated to it first), in one transaction: ids and the audit chain arrive as they left. A ledger that
    holds rows is refused (exit 5) and nothing is written."""
    import json

    from mlplat.db_transfer import import_ledger

    try:
        text = click.get_text_stream("stdin").read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise MlplatError(f"cannot read the export: {exc.strerror}", where=file) from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise MlplatError(f"the export is not JSON: {exc}", where=file, hint="give a file `mlplat db export` wrote") from None
    ledger = open_ledger(ctx, stack, database)
    summary = import_ledger(ledger, doc, where=file)
    if as_json:
        emit_json(summary)
        return
    ctx.console.print(f"imported {summary['rows']} rows in {summary['tables']} tables into {summary['database']} "
                      f"(revision {summary['revision']})", highlight=False, markup=False)
    if summary["keyed_entries"] and not summary["key_found"]:
        ctx.err.print(f"warning: the stack's key is not in {ledger.key_dir} (keys/platform.key): the audit chain's "
                      f"{summary['keyed_entries']} keyed entries cannot be verified until it is restored there",
                      highlight=False, markup=False)
