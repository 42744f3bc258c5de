"""`mlplat approvals list`."""
from __future__ import annotations

import click

from mlplat.cli.options import emit_json, json_option, pass_ctx, stack_option, wide_option


@click.group()
def approvals() -> None:
    """Production promotions of critical models waiting for an approver."""


@approvals.command("list")
@stack_option
@click.option("--env", "environment", default=None, help="Environment (default: the stack's).")
@click.option("--all", "show_all", is_flag=True, help="Include decided and production versions.")
@wide_option
@json_option
@pass_ctx
def list_(ctx, stack: str, environment: str | None, show_all: bool, wide: bool, as_json: bool) -> None:
    """Versions waiting for approval (approve with `mlplat models approve NAME VERSION --reason ...`)."""
    from mlplat.api.plane import plane_for

    spec = ctx.stack(stack)
    doc = plane_for(spec, ctx).call("approvals.list", environment=environment, include_decided=show_all)
    environment, approvers, items = doc["environment"], doc["approvers"], doc["items"]
    if as_json:
        emit_json({"environment": environment, "approvers": approvers, "items": items})
        return
    if not items:
        ctx.console.print("Nothing waiting for approval." + ("" if show_all else " (--all shows decided ones)"))
        return
    from mlplat.formatting import Column, print_table

    columns = (Column("model"), Column("version"), Column("stage"), Column("state"), Column("approvals", 1),
               Column("author", 2), Column("gate report", 3))
    rows = [[i["model"], str(i["version"]), i["stage"], i["state"], f"{i['approvals']}/{i['required']}", i["author"],
             (i["gate_digest"] or "-") if wide else (i["gate_digest"] or "-")[:12]] for i in items]
    print_table(ctx.console, columns, rows, wide=wide,
                title=f"approvals in '{environment}' (approvers: {', '.join(approvers)})")
