"""`mlplat approvals list`."""
from __future__ import annotations

import click

from mlplat.cli.options import emit_json, json_option, pass_ctx, stack_option


@click.group()
def approvals() -> None:
    """Production promotions of critical models waiting for an approver."""


@approvals.command("list")
@stack_option
@click.option("--env", "environment", default=None, help="Environment (default: the stack's).")
@click.option("--all", "show_all", is_flag=True, help="Include decided and production versions.")
@json_option
@pass_ctx
def list_(ctx, stack: str, environment: str | None, show_all: bool, as_json: bool) -> None:
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
    from rich.table import Table

    table = Table("model", "version", "stage", "author", "state", "approvals", "gate report",
                  title=f"approvals in '{environment}' (approvers: {', '.join(approvers)})")
    for i in items:
        table.add_row(i["model"], str(i["version"]), i["stage"], i["author"], i["state"],
                      f"{i['approvals']}/{i['required']}", (i["gate_digest"] or "-")[:12])
    ctx.console.print(table)
