"""`mlplat audit log | verify`."""
from __future__ import annotations

import time

import click

from mlplat.cli.options import emit_json, json_option, pass_ctx, stack_option
from mlplat.errors import IntegrityError


@click.group()
def audit() -> None:
    """The keyed, hash-chained audit log: who did what, when, why, with which evidence."""


@audit.command("log")
@stack_option
@click.option("--model", default=None, help="Only entries about this model.")
@click.option("--limit", "-n", type=click.IntRange(1, 1_000_000), default=50, show_default=True,
              help="Newest entries to show.")
@json_option
@pass_ctx
def log(ctx, stack: str, model: str | None, limit: int, as_json: bool) -> None:
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
    from rich.table import Table

    table = Table("#", "when", "who", "what", "model", "version", "env", "why", "digest")
    for r in rows:
        table.add_row(str(r["seq"]), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["ts"])), r["actor"],
                      r["action"], r["model"] or "-", str(r["version"] or "-"), r["environment"] or "-",
                      (r["reason"] or "")[:80], r["digest"][:12])
    ctx.console.print(table)


@audit.command("verify")
@stack_option
@json_option
@pass_ctx
def verify(ctx, stack: str, as_json: bool) -> None:
    """Check the keyed hash chain, its signed head file and every decision row (stages, approvals,
    routing) against it; exit 8 if anything was edited, forged, reordered, deleted or set by hand."""
    from mlplat.api.plane import plane_for
    from mlplat.services import audit as audit_service

    spec = ctx.stack(stack)
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
