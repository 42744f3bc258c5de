"""`mlplat policy check | list | config`: the policy pack, offline, for people and CI."""
from __future__ import annotations

from pathlib import Path

import click

from mlplat.cli.options import emit_json, json_option, pass_ctx
from mlplat.errors import ExitCode, StackError

FORMATS = ("text", "json", "junit", "sarif")


@click.group()
def policy() -> None:
    """Check stacks against the policy pack (policies/), with no cloud account and no Pulumi CLI."""


@policy.command()
@click.option("--stack", "-s", "stacks", multiple=True, help="Stack to check (repeatable). Default: $MLPLAT_STACK or dev.")
@click.option("--all", "all_stacks", is_flag=True, help="Check every stack in the project's stack directory.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True, help="Report format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report to this file instead of stdout (a text summary still goes to stderr).")
@click.option("--save-graph", type=click.Path(file_okay=False, path_type=Path),
              help="Also write each stack's recorded resource graph as <dir>/<stack>.json.")
@pass_ctx
def check(ctx, stacks: tuple[str, ...], all_stacks: bool, fmt: str, output: Path | None, save_graph: Path | None) -> int:
    """Run each stack's program under Pulumi's mocks and evaluate every policy on its resource graph.

    \b
    Exit codes: 0 no mandatory violation, 1 a mandatory violation or a stack whose
    program failed, 3 no such stack / no stacks.
    """
    import os

    from mlplat.services.policy_check import check as run_check
    from mlplat.services.policy_formats import render, render_text
    from mlplat.stack import list_stacks

    project = ctx.project()
    if all_stacks and stacks:
        raise click.UsageError("give either --all or --stack, not both")
    if all_stacks:
        names = list_stacks(project)
        if not names:
            raise StackError("no stack files in the project", where=str(project),
                             hint="create stacks/Pulumi.<stack>.yaml")
    else:
        names = list(stacks) or [os.environ.get("MLPLAT_STACK", "dev")]
        from mlplat.stack import stack_path

        for name in names:
            stack_path(name, project)  # an unknown stack name is a usage problem, not a policy verdict
    report = run_check(names, project, ctx, graph_dir=save_graph)
    text = render(report, fmt)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n", encoding="utf-8")
        ctx.err.print(render_text(report), highlight=False, soft_wrap=True)
        ctx.err.print(f"report ({fmt}) written to {output}")
    elif fmt == "text":
        ctx.console.print(text, highlight=False, soft_wrap=True)
    else:
        click.echo(text)
    return ExitCode.OK if report.ok else ExitCode.FAILED


@policy.command("list")
@json_option
@pass_ctx
def list_cmd(ctx, as_json: bool) -> None:
    """The policies of the pack, their default levels and settings."""
    from mlplat_policies import rules

    if as_json:
        emit_json([{"name": p.name, "kind": p.kind, "defaultLevel": p.default_level, "description": p.description,
                    "remediation": p.remediation, "settings": {k: dict(v) for k, v in p.config_schema.items()}}
                   for p in rules.POLICIES])
        return
    for p in rules.POLICIES:
        ctx.console.print(f"[bold]{p.name}[/] ({p.kind}, default {p.default_level})", highlight=False)
        ctx.console.print(f"  {p.description}", highlight=False)
        for key, spec in p.config_schema.items():
            ctx.console.print(f"  [cyan]{key}[/]: {spec.get('description', '')} (default {spec.get('default')!r})",
                              highlight=False, markup=True)


@policy.command("config")
@click.option("--stack", "-s", "stack", default=lambda: __import__("os").environ.get("MLPLAT_STACK", "dev"),
              help="Stack whose mlplat:policy settings to translate.")
@pass_ctx
def config_cmd(ctx, stack: str) -> None:
    """Print the stack's policy settings as a file for `pulumi preview --policy-pack policies --policy-pack-config`."""
    from mlplat_policies import rules

    spec = ctx.stack(stack)
    emit_json(rules.crossguard_config(spec.policy.as_settings()))
