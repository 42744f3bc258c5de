"""`mlplat up | preview | destroy | status`."""
from __future__ import annotations

import sys

import click

from mlplat.cli.options import emit_json, json_option, lock_wait_option, pass_ctx, stack_option, yes_option
from mlplat.contracts import Capability, Plan
from mlplat.errors import Aborted, ExitCode

SYMBOLS = {"create": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red"), "unchanged": ("=", "dim")}


def _provisioner(ctx, stack: str, lock_wait: float = 0.0):
    from mlplat import providers

    spec = ctx.stack(stack)
    provisioner = providers.capability(spec, ctx, Capability.PROVISIONER)
    if lock_wait:  # not waiting is every provisioner's default; asking one that cannot wait is refused
        provisioner.set_lock_wait(lock_wait)
    return spec, provisioner


def print_plan(ctx, spec, plan: Plan, *, verb: str = "Plan") -> None:
    console = ctx.console
    console.print(f"[bold]{verb} for stack {spec.name}[/] "
                  f"(provider {spec.provider.kind}, team {spec.team}, env {spec.environment})")
    width = max((len(c.resource) for c in plan.changes), default=10)
    for change in plan.changes:
        symbol, colour = SYMBOLS.get(change.action, ("?", "white"))
        detail = f"  {change.detail}" if change.detail else ""
        console.print(f"  [{colour}]{symbol} {change.action:<9}[/] {change.resource:<{width}}  {change.name}[dim]{detail}[/]",
                      highlight=False, soft_wrap=True)
    counts = plan.counts()
    console.print(
        f"{verb}: {counts.get('create', 0)} to create, {counts.get('update', 0)} to update, "
        f"{counts.get('delete', 0)} to delete, {counts.get('unchanged', 0)} unchanged."
    )


def _confirm(ctx, question: str, yes: bool) -> None:
    if yes or ctx.assume_yes:
        return
    if not sys.stdin.isatty():
        raise Aborted("confirmation needed but stdin is not a terminal", hint="pass --yes to proceed without a prompt")
    if not click.confirm(question, default=False):
        raise Aborted("nothing was changed")


def _apply_governance(ctx, spec, as_json: bool) -> None:
    """Record the stack file's governance as the one in force (promotion, approval and deployment read it)."""
    from mlplat.services import governance
    from mlplat.services import registry as reg

    changed = governance.record_applied(reg.registry_for(spec, ctx).database(), spec, ctx.user)
    if changed and not as_json:
        ctx.console.print(f"Governance applied: {', '.join(changed)} (recorded in the audit log).", highlight=False)


@click.command()
@stack_option
@yes_option
@lock_wait_option
@json_option
@pass_ctx
def up(ctx, stack: str, yes: bool, lock_wait: float, as_json: bool) -> None:
    """Provision STACK: print the plan, confirm, apply. Idempotent."""
    spec, provisioner = _provisioner(ctx, stack, lock_wait)
    plan = provisioner.plan()
    if not as_json:
        print_plan(ctx, spec, plan)
    if not plan.has_changes:
        _apply_governance(ctx, spec, as_json)  # a ledger from before governance was recorded gets it now
        if as_json:
            emit_json({"stack": spec.name, "changes": [], "applied": False})
        else:
            ctx.console.print("[green]No changes.[/] The stack is up to date.")
        return
    _confirm(ctx, "Apply these changes?", yes or as_json)
    applied = provisioner.apply(plan)
    _apply_governance(ctx, spec, as_json)
    if as_json:
        emit_json({"stack": spec.name, "applied": True,
                   "changes": [c.__dict__ for c in applied.changes if c.action != "unchanged"]})
    else:
        counts = applied.counts()
        ctx.console.print(f"[green]Applied.[/] {counts.get('create', 0)} created, {counts.get('update', 0)} updated. "
                          f"State: {spec.state_dir if spec.provider.kind == 'local' else spec.provider.kind}")


@click.command()
@stack_option
@click.option("--offline", is_flag=True,
              help="Run the stack's program under Pulumi's mocks and print its resource tree (no CLI, no credentials).")
@json_option
@pass_ctx
def preview(ctx, stack: str, offline: bool, as_json: bool) -> None:
    """Show what `up` would change. Changes nothing."""
    spec, provisioner = _provisioner(ctx, stack)
    if offline:
        from mlplat.cli.resource_tree import print_tree

        resources = provisioner.planned_resources()
        if as_json:
            emit_json({"stack": spec.name, "offline": True, "resources": resources})
        else:
            print_tree(ctx, spec, resources)
        return
    plan = provisioner.plan()
    if as_json:
        emit_json({"stack": spec.name, "changes": [c.__dict__ for c in plan.changes]})
    else:
        print_plan(ctx, spec, plan, verb="Preview")


@click.command()
@stack_option
@yes_option
@lock_wait_option
@pass_ctx
def destroy(ctx, stack: str, yes: bool, lock_wait: float) -> None:
    """Remove what STACK's `up` created (asks first); files the platform did not create are kept."""
    spec, provisioner = _provisioner(ctx, stack, lock_wait)
    plan = provisioner.plan_destroy()
    if not plan.changes:
        ctx.console.print(f"Nothing to destroy for stack {spec.name}.")
        return
    print_plan(ctx, spec, plan, verb="Destroy plan")
    _confirm(ctx, f"Destroy stack {spec.name}? Runs, models and audit records of this stack are deleted.", yes)
    done = provisioner.destroy()
    ctx.console.print(f"[red]Destroyed[/] stack {spec.name}.")
    for change in done.changes:
        if change.action == "unchanged" and change.detail:
            ctx.console.print(f"Kept {change.name}: {change.detail}", markup=False, highlight=False, soft_wrap=True)


@click.command()
@stack_option
@json_option
@pass_ctx
def status(ctx, stack: str, as_json: bool) -> int:
    """Show which of STACK's resources exist."""
    spec, provisioner = _provisioner(ctx, stack)
    rows = provisioner.status()
    if as_json:
        emit_json({"stack": spec.name, "resources": [r.__dict__ for r in rows]})
    else:
        from rich.table import Table

        table = Table("resource", "name", "exists", "detail", title=f"stack {spec.name} ({spec.provider.kind})")
        for r in rows:
            table.add_row(r.resource, r.name, "[green]yes[/]" if r.exists else "[red]no[/]", r.detail)
        ctx.console.print(table)
    if not all(r.exists for r in rows):
        if not as_json:
            ctx.console.print(f"[yellow]Some resources are missing:[/] run `mlplat up --stack {spec.name}`.")
        return ExitCode.FAILED
    return ExitCode.OK
