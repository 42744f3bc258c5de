"""`mlplat stack ...` and `mlplat providers`."""
from __future__ import annotations

import json

import click

from mlplat.cli.options import emit_json, json_option, pass_ctx, wide_option
from mlplat.errors import ExitCode, StackError


@click.group()
def stack() -> None:
    """Validate stack files, list them, print their schema."""


@stack.command("validate")
@click.option("--stack", "-s", "names", multiple=True, help="Stack to validate (repeatable).")
@click.option("--all", "all_", is_flag=True, help="Validate every stack in the project (the default).")
@json_option
@pass_ctx
def validate(ctx, names: tuple[str, ...], all_: bool, as_json: bool) -> int:
    """Validate stack files; exit 3 if any is invalid. Needs no cloud SDK."""
    from mlplat.stack import list_stacks, load_stack

    targets = list(names) if names and not all_ else list_stacks(ctx.project())
    if not targets:
        raise StackError("no stack files found", hint="create stacks/Pulumi.<stack>.yaml")
    results = []
    for name in targets:
        try:
            spec = load_stack(name, ctx.project())
            results.append({"stack": spec.name, "ok": True, "provider": spec.provider.kind,
                            "team": spec.team, "environment": spec.environment})
        except StackError as exc:
            if len(targets) == 1:
                raise
            results.append({"stack": name, "ok": False, "error": str(exc)})
    if as_json:
        emit_json(results)
    else:
        for r in results:
            if r["ok"]:
                ctx.console.print(f"[green]ok[/]    {r['stack']}  ({r['provider']}, team {r['team']}, env {r['environment']})")
            else:
                ctx.console.print(f"[red]error[/] {r['stack']}: ", end="")
                ctx.console.print(r["error"], markup=False)
    return ExitCode.OK if all(r["ok"] for r in results) else ExitCode.CONFIG


@stack.command("list")
@json_option
@pass_ctx
def list_(ctx, as_json: bool) -> None:
    """List the stacks of this project."""
    from mlplat.stack import list_stacks

    names = list_stacks(ctx.project())
    if as_json:
        emit_json(names)
    else:
        for name in names:
            click.echo(name)


@stack.command("schema")
def schema() -> None:
    """Print the JSON schema of the `mlplat:` settings of a stack file."""
    from mlplat.stack import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@click.command("providers")
@wide_option
@json_option
@pass_ctx
def providers_cmd(ctx, wide: bool, as_json: bool) -> None:
    """List installed providers and the capabilities each offers."""
    from mlplat import providers
    from mlplat.contracts import Capability

    rows = []
    for name in providers.names():
        bundle = providers.get(name)
        rows.append({"name": name, "description": bundle.description,
                     "capabilities": [c.value for c in Capability if bundle.supports(c)]})
    if as_json:
        emit_json(rows)
        return
    from mlplat.formatting import Column, print_table

    columns = (Column("provider"), Column("capabilities", 1, wrap=True), Column("description", 2, wrap=True))
    print_table(ctx.console, columns, [[str(row["name"]), ", ".join(row["capabilities"]) or "-", str(row["description"])]
                                       for row in rows], wide=wide)
