"""`mlplat up | preview | destroy | status`."""
from __future__ import annotations

import os
import sys
from typing import Any

import click

from mlplat.cli.options import (
    emit_json,
    json_option,
    lock_wait_option,
    pass_ctx,
    server_side_option,
    stack_option,
    yes_option,
)
from mlplat.contracts import Capability, Plan
from mlplat.errors import Aborted, Conflict, ExitCode, ExternalError, StackError

SYMBOLS = {"create": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red"), "unchanged": ("=", "dim")}


def _provisioner(ctx, stack: str, lock_wait: float = 0.0):
    from mlplat import providers

    spec = ctx.stack(stack)
    provisioner = providers.capability(spec, ctx, Capability.PROVISIONER)
    if lock_wait:  # not waiting is every provisioner's default; asking one that cannot wait is refused
        provisioner.set_lock_wait(lock_wait)
    return spec, provisioner


def _served_by(ctx, spec) -> str | None:
    """The URL of the `mlplat server` that holds STACK's platform for this process, or None (embedded,
    or ``--server-side``: this machine runs the server and its ledger)."""
    from mlplat.api.plane import RemotePlane, plane_for

    if ctx.ledger_owner and ctx.database_url is None:
        ctx.database_url = os.environ.get("MLPLAT_DATABASE_URL") or spec.control_plane.database
    plane = plane_for(spec, ctx)
    plane.close()
    return plane.url if isinstance(plane, RemotePlane) else None


def _answers(url: str, path: str) -> tuple[bool, str]:
    """``(True, detail)`` when GET ``url + path`` answers 200, else ``(False, why)``."""
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + path, timeout=httpx.Timeout(10.0, connect=5.0), trust_env=False)
    except httpx.HTTPError as exc:
        return False, f"unreachable: {exc}"
    if response.status_code != 200:
        try:
            reason = response.json().get("reason") or response.text[:200]
        except ValueError:
            reason = response.text[:200]
        return False, f"HTTP {response.status_code}: {reason}"
    return True, "ready" if path == "/readyz" else "answers"


def _served_stack(url: str) -> str | None:
    """The stack the platform API at ``url`` serves (``/api/v1/version``)."""
    import httpx

    from mlplat.api.operations import API_PREFIX

    try:
        doc = httpx.get(url.rstrip("/") + API_PREFIX + "/version", timeout=10.0, trust_env=False).json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ExternalError(f"{url} answered /readyz but not {API_PREFIX}/version: is it an `mlplat server`? ({exc})",
                            where="mlplat:controlPlane.url") from None
    return doc.get("stack") if isinstance(doc, dict) else None


def _remote_checks(spec, url: str) -> list[tuple[str, str, bool, str, str]]:
    """``(what, url, ok, detail, stack key)`` for the control plane and the tracking server of a client."""
    ok, detail = _answers(url, "/readyz")
    checks = [("control plane", url, ok, detail, "mlplat:controlPlane.url")]
    tracking = spec.control_plane.tracking
    if tracking:
        ok, detail = _answers(tracking, "/health")
        checks.append(("tracking server", tracking, ok, detail, "mlplat:controlPlane.tracking"))
    return checks


def _client_up(ctx, spec, url: str, as_json: bool) -> None:
    """`up` where the stack is served by `mlplat server`: check that it and the tracking server answer."""
    for what, where, ok, detail, key in _remote_checks(spec, url):
        if not ok:
            raise ExternalError(f"the {what} at {where} of stack '{spec.name}' does not answer ({detail})",
                                where=key, hint=f"start it with `mlplat server --stack {spec.name}"
                                + (" --tracking-port N`" if what == "tracking server" else "`")
                                + " where the platform lives, or fix the URL in the stack file; nothing was written")
    served = _served_stack(url)
    if served != spec.name:
        raise StackError(f"the control plane at {url} serves stack '{served}', not '{spec.name}'",
                         where="mlplat:controlPlane.url", hint="point controlPlane.url at the server of this stack")
    tracking = spec.control_plane.tracking
    changed = _apply_through_server(ctx, spec)
    if as_json:
        emit_json({"stack": spec.name, "mode": "server", "control_plane": url, "tracking": tracking,
                   "changes": [], "applied": False, "governance_changed": changed})
        return
    ctx.console.print(f"Stack {spec.name} is served by the control plane at {url} (ready)"
                      + (f", tracking at {tracking} (answers)." if tracking else "."), highlight=False, soft_wrap=True)
    if changed:
        ctx.console.print(f"Governance applied: {', '.join(changed)} (recorded in the server's audit log).",
                          highlight=False, markup=False, soft_wrap=True)
    if not tracking:
        ctx.err.print("warning: mlplat:controlPlane.tracking is not set: runs started on this machine have no shared "
                      "tracking server to go to", highlight=False, markup=False, soft_wrap=True)
    ctx.console.print(f"Nothing to provision on this machine: the platform lives where `mlplat server --stack "
                      f"{spec.name}` runs.", highlight=False, markup=False, soft_wrap=True)


def _apply_through_server(ctx: Any, spec: Any) -> list[str]:
    """Send the stack file's governance and access rules to the server (``governance.apply``): recorded under
    the caller's principal when they change something, which only an admin may do (403 otherwise, nothing
    changed). Returns the keys that changed."""
    from mlplat.api.plane import plane_for
    from mlplat.services import governance

    plane = plane_for(spec, ctx)
    try:
        result = plane.call("governance.apply", governance=governance.document(spec.governance),
                            access=governance.access_document(spec.access))
    finally:
        plane.close()
    return list(result.get("changed") or [])


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

    changed = governance.record_applied(reg.registry_for(spec, ctx).database(), spec, ctx.user, ctx.method)
    if changed and not as_json:
        ctx.console.print(f"Governance applied: {', '.join(changed)} (recorded in the audit log).", highlight=False)


@click.command()
@stack_option
@server_side_option
@yes_option
@lock_wait_option
@json_option
@pass_ctx
def up(ctx, stack: str, yes: bool, lock_wait: float, as_json: bool) -> None:
    """Provision STACK: print the plan, confirm, apply. Idempotent.

    A stack served by `mlplat server` (mlplat:controlPlane.url) is provisioned where the server runs:
    here, `up` only checks that the server and the tracking server answer."""
    url = _served_by(ctx, ctx.stack(stack))
    if url:
        _client_up(ctx, ctx.stack(stack), url, as_json)
        return
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
@server_side_option
@yes_option
@lock_wait_option
@pass_ctx
def destroy(ctx, stack: str, yes: bool, lock_wait: float) -> None:
    """Remove what STACK's `up` created (asks first); files the platform did not create are kept."""
    url = _served_by(ctx, ctx.stack(stack))
    if url:
        raise Conflict(f"stack '{stack}' is served by the control plane at {url}: its platform lives on that server",
                       where="mlplat:controlPlane.url",
                       hint=f"run `mlplat destroy --stack {stack}` on the machine where `mlplat server --stack {stack}` "
                            "runs; nothing was changed")
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
@server_side_option
@json_option
@pass_ctx
def status(ctx, stack: str, as_json: bool) -> int:
    """Show which of STACK's resources exist, and where its platform lives (embedded, or a server's URL)."""
    url = _served_by(ctx, ctx.stack(stack))
    if url:
        return _client_status(ctx, ctx.stack(stack), url, as_json)
    spec, provisioner = _provisioner(ctx, stack)
    rows = provisioner.status()
    if as_json:
        emit_json({"stack": spec.name, "mode": "embedded", "resources": [r.__dict__ for r in rows]})
    else:
        from rich.markup import escape

        from mlplat.formatting import Column, print_table

        print_table(ctx.console, (Column("resource"), Column("name"), Column("exists"), Column("detail", wrap=True)),
                    [[r.resource, escape(r.name), "[green]yes[/]" if r.exists else "[red]no[/]", escape(r.detail or "")]
                     for r in rows], title=f"stack {spec.name} ({spec.provider.kind}, embedded)")
    if not all(r.exists for r in rows):
        if not as_json:
            ctx.console.print(f"[yellow]Some resources are missing:[/] run `mlplat up --stack {spec.name}`.")
        return ExitCode.FAILED
    return ExitCode.OK


def _client_status(ctx, spec, url: str, as_json: bool) -> int:
    checks = _remote_checks(spec, url)
    if as_json:
        emit_json({"stack": spec.name, "mode": "server", "control_plane": url, "resources": [
            {"resource": what, "name": where, "exists": ok, "detail": detail} for what, where, ok, detail, _ in checks]})
    else:
        from rich.markup import escape

        from mlplat.formatting import Column, print_table

        print_table(ctx.console, (Column("resource"), Column("name"), Column("answers"), Column("detail", wrap=True)),
                    [[what, escape(where), "[green]yes[/]" if ok else "[red]no[/]", escape(detail or "")]
                     for what, where, ok, detail, _ in checks], title=f"stack {spec.name} (server: {url})")
    if not all(ok for _, _, ok, _, _ in checks):
        if not as_json:
            ctx.console.print(f"[yellow]Not every server answers:[/] start them with `mlplat server --stack {spec.name}`.")
        return ExitCode.FAILED
    return ExitCode.OK
