"""`mlplat audit log | verify | export`."""
from __future__ import annotations

from pathlib import Path

import click

from mlplat.cli.options import emit_json, json_option, pass_ctx, stack_option, wide_option
from mlplat.errors import Conflict, IntegrityError, NotFound, StackError


@click.group()
def audit() -> None:
    """The keyed, hash-chained audit log: who did what, when, why, with which evidence."""


@audit.command("log")
@stack_option
@click.option("--model", default=None, help="Only entries about this model.")
@click.option("--limit", "-n", type=click.IntRange(1, 1_000_000), default=50, show_default=True,
              help="Newest entries to show.")
@wide_option
@json_option
@pass_ctx
def log(ctx, stack: str, model: str | None, limit: int, wide: bool, as_json: bool) -> None:
    """Show the audit log, oldest of the newest LIMIT first."""
    from mlplat.api.plane import plane_for

    spec = ctx.stack(stack)
    rows = plane_for(spec, ctx).call("audit.log", model=model, limit=limit)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        ctx.console.print("The audit log is empty.")
        return
    from mlplat.formatting import Column, print_table, when

    columns = (Column("#", justify="right"), Column("when"), Column("who"), Column("what"), Column("model", 1),
               Column("version", 1), Column("env", 4), Column("why", 3, wrap=True), Column("identity", 2),
               Column("digest", 5))
    # entries written before identities were recorded have no method
    print_table(ctx.console, columns, [[str(r["seq"]), when(r["ts"]), r["actor"], r["action"], r["model"] or "-",
                                        str(r["version"] or "-"), r["environment"] or "-", r["reason"] or "",
                                        r.get("auth_method") or "-", r["digest"] if wide else r["digest"][:12]]
                                       for r in rows], wide=wide)


@audit.command("verify")
@stack_option
@click.option("--archive", "archive", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Check this archive (from `mlplat audit export`) offline instead of the ledger.")
@click.option("--key-file", "key_file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="With --archive: the stack's secret key (a copy of keys/platform.key from the state "
                   "directory); default: the stack's own, where its ledger is.")
@json_option
@pass_ctx
def verify(ctx, stack: str, archive: Path | None, key_file: Path | None, as_json: bool) -> None:
    """Check the keyed hash chain, its signed head file and every decision row (stages, approvals,
    routing) against it; exit 8 if anything was edited, forged, reordered, deleted or set by hand.
    With --archive, check an exported archive's signature, entries file and chain instead."""
    from mlplat.api.plane import plane_for
    from mlplat.services import audit as audit_service

    if key_file is not None and archive is None:
        raise click.UsageError("--key-file only goes with --archive")
    spec = ctx.stack(stack)
    if archive is not None:
        _verify_archive(ctx, spec, archive, key_file, as_json)
        return
    doc = plane_for(spec, ctx).call("audit.verify")
    result = audit_service.Verification(ok=doc["ok"], entries=doc["entries"], problems=doc["problems"], head=doc["head"],
                                        schemes=doc["schemes"], key_id=doc["key_id"], head_file=doc["head_file"],
                                        rows=doc["decision_rows"])
    if not result.ok:
        raise IntegrityError(f"the audit log was tampered with ({len(result.problems)} problem(s)):"
                             + audit_service.format_problems(result.problems),
                             hint="restore the platform database from a backup and investigate who had write access",
                             problems=result.problems, schemes=result.schemes)
    if as_json:
        emit_json(doc)
    else:
        ctx.console.print(f"[green]ok[/] audit log intact: {result.entries} entries, head {str(result.head)[:16]}; "
                          f"schemes: {result.describe_schemes()}; head file {result.head_file}; "
                          f"{result.rows} decision rows match their audited decisions", highlight=False)


def _stack_key(ctx, spec, key_file: Path | None):
    """The audit key to check an archive with: from ``key_file``, else from the stack's ledger here."""
    from mlplat.api.plane import EmbeddedPlane, plane_for
    from mlplat.services import audit as audit_service

    if key_file is not None:
        try:
            raw = key_file.read_bytes().strip()
        except OSError as exc:
            raise StackError(f"cannot read the key file: {exc.strerror or exc}", where=str(key_file)) from None
        if len(raw) < 32:
            raise StackError("this is not a stack's secret key (too short)", where=str(key_file),
                             hint="pass a copy of keys/platform.key from the stack's state directory")
        return audit_service.derive_key(raw)
    if not isinstance(plane_for(spec, ctx), EmbeddedPlane):
        raise StackError(f"stack '{spec.name}' keeps its ledger and its key on its mlplat server",
                         where="--key-file", hint="pass --key-file with a copy of the server's keys/platform.key, or "
                                                  "run this on the server's machine with --server-side")
    from mlplat.services import registry as reg

    key = reg.audit_key(spec, ctx)
    if key is None:
        raise IntegrityError(f"stack '{spec.name}' has no audit key here, so the archive cannot be checked",
                             hint="pass --key-file with a copy of the stack's keys/platform.key")
    return key


def _verify_archive(ctx, spec, archive: Path, key_file: Path | None, as_json: bool) -> None:
    from mlplat.services import audit as audit_service

    try:
        data = archive.read_bytes()
    except OSError as exc:
        raise NotFound(f"cannot read the archive: {exc.strerror or exc}", where=str(archive)) from None
    result = audit_service.verify_archive(data, _stack_key(ctx, spec, key_file))
    stack_named = result.manifest.get("stack")
    if result.ok and stack_named != spec.name:
        result.ok = False
        result.problems.append(f"the archive is of stack {stack_named!r}, not {spec.name!r}")
    if not result.ok:
        raise IntegrityError(f"the audit archive does not verify ({len(result.problems)} problem(s)):"
                             + audit_service.format_problems(result.problems), where=str(archive),
                             hint="keep the archive on write-once storage; compare it with the copy there",
                             problems=result.problems)
    if as_json:
        emit_json(result.to_dict())
        return
    m = result.manifest
    ctx.console.print(f"[green]ok[/] audit archive intact: stack {m['stack']}, entries #{m['first_seq']}..#{m['last_seq']} "
                      f"({m['count']}), head {m['head'][:16]}, signed with key id {m['key_id']}", highlight=False)


@audit.command("export")
@stack_option
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The archive file to write (.tar.gz); never overwritten.")
@click.option("--since", type=click.IntRange(min=0), default=0, show_default=True,
              help="Archive the entries after this one (the last entry of the previous archive).")
@json_option
@pass_ctx
def export(ctx, stack: str, out: Path, since: int, as_json: bool) -> None:
    """Write the entries after --since as a signed archive for write-once storage (S3 Object Lock):
    the entries as JSON Lines and a manifest (stack, range, count, head, SHA-256 of the entries, an
    HMAC signature with the stack's key and its key id). `mlplat audit verify --archive` checks it."""
    import base64
    import hashlib
    import os
    import tempfile

    from mlplat.api.plane import plane_for

    if out.exists():
        raise Conflict("the file exists; an archive is never overwritten", where=str(out),
                       hint="choose a new file name (e.g. one naming the entry range)")
    if not out.parent.is_dir():
        raise NotFound("the folder to write the archive in does not exist", where=str(out.parent))
    spec = ctx.stack(stack)
    doc = plane_for(spec, ctx).call("audit.export", since=since)
    data = base64.b64decode(doc["archive"])
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".audit-archive-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, out)  # exclusive: a file that appeared meanwhile is not replaced
        except FileExistsError:
            raise Conflict("the file exists; an archive is never overwritten", where=str(out)) from None
    finally:
        os.unlink(tmp)
    m = doc["manifest"]
    sha = hashlib.sha256(data).hexdigest()
    if as_json:
        emit_json({"file": str(out), "sha256": sha, "bytes": len(data), "manifest": m})
        return
    ctx.console.print(f"wrote {out}: entries #{m['first_seq']}..#{m['last_seq']} ({m['count']}) of stack "
                      f"{m['stack']}, head {m['head'][:16]}, signed with key id {m['key_id']}; sha256 {sha}",
                      highlight=False)
