"""Options shared by many commands, each defined once."""
from __future__ import annotations

import os

import click

from mlplat.cli.completion import complete_stacks
from mlplat.context import Context


def _default_stack() -> str:
    return os.environ.get("MLPLAT_STACK", "dev")


stack_option = click.option(
    "--stack", "-s", "stack", default=_default_stack, show_default="$MLPLAT_STACK or dev",
    help="Stack name (stacks/Pulumi.<stack>.yaml) or path to a stack file.", shell_complete=complete_stacks,
)


def _set_json(click_ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        click_ctx.ensure_object(Context).json = True
    return value


json_option = click.option("--json", "as_json", is_flag=True, callback=_set_json, expose_value=True,
                           help="Print machine-readable JSON.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
wide_option = click.option("--wide", "-w", is_flag=True,
                           help="Show every column, even where the table is wider than the terminal "
                                "(by default lower-priority columns are left out to fit $COLUMNS).")
env_option = click.option("--env", "environment", default=None,
                          help="Environment to act in (default: the stack's environment).")
lock_wait_option = click.option("--lock-wait", type=click.FloatRange(min=0), default=0.0, show_default=True,
                                help="Seconds to wait for another operation on the stack to finish.")



def _server_side(click_ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        click_ctx.ensure_object(Context).ledger_owner = True
    return value


server_side_option = click.option(
    "--server-side", is_flag=True, callback=_server_side, expose_value=False,
    help="This machine runs the stack's `mlplat server`: act on the platform here (its ledger is "
         "$MLPLAT_DATABASE_URL, else controlPlane.database, else SQLite), not as one of its clients.")

pass_ctx = click.make_pass_decorator(Context, ensure=True)


def emit_json(data) -> None:
    import json

    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def stack_plane(ctx, stack: str):
    """The stack and its control plane (the ledger in this process, or the stack's `mlplat server`)."""
    from mlplat.api.plane import plane_for

    spec = ctx.stack(stack)
    return spec, plane_for(spec, ctx)


class VersionType(click.ParamType):
    """A model version as users type it and as mlplat prints it: ``3`` or ``v3`` (a whole number from 1)."""

    name = "version"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            digits = text[1:] if text[:1] in ("v", "V") else text
            if not digits.isascii() or not digits.isdigit():
                self.fail(f"{value!r} is not a model version: give its number, e.g. 3 or v3", param, ctx)
            number = int(digits)
        if number < 1:
            self.fail(f"{value!r} is not a model version: versions start at 1 (v1)", param, ctx)
        return number


VERSION = VersionType()
