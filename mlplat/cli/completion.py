"""Shell completion: `mlplat completion bash|zsh|fish`, and what a TAB after a command offers.

Completing reads what exists and changes nothing: stack names come from ``stacks/``; model names,
versions and run ids from the stack's own ledger and tracking store, and only for a stack that was
provisioned on this machine and keeps its ledger here (a stack served by `mlplat server` completes
stack names only, so a TAB never waits on the network or on a login). Any failure completes nothing:
a TAB must never print an error into the user's command line.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_MLPLAT_COMPLETE"
RUNS_OFFERED = 200  # the newest runs whose ids a TAB offers


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    \b
    bash:  eval "$(mlplat completion bash)"          (in ~/.bashrc)
    zsh:   eval "$(mlplat completion zsh)"           (in ~/.zshrc)
    fish:  mlplat completion fish > ~/.config/fish/completions/mlplat.fish
    """
    from click.shell_completion import get_completion_class

    from mlplat.cli import cli

    cls = get_completion_class(shell)
    if cls is None:  # click ships all three; a Choice above keeps anything else out
        raise click.UsageError(f"no completion for {shell}")
    click.echo(cls(cli, {}, "mlplat", COMPLETE_VAR).source())


Complete = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def _quietly(produce: Callable[[click.Context, str], list[CompletionItem]]) -> Complete:
    """A ``shell_complete`` callback that completes nothing rather than fail."""

    def callback(click_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        try:
            return produce(click_ctx, incomplete)
        except Exception:  # noqa: BLE001 - a TAB must never print a traceback into a command line
            return []

    return callback


def _ctx(click_ctx: click.Context) -> Any:
    from mlplat.context import Context

    found = click_ctx.find_object(Context)
    return found if found is not None else Context()


def _stack_name(click_ctx: click.Context) -> str:
    """The stack the command line names so far (--stack before or after the cursor is parsed by click
    only when it comes first), else $MLPLAT_STACK, else dev."""
    node: click.Context | None = click_ctx
    while node is not None:
        value = node.params.get("stack")
        if isinstance(value, str) and value:
            return value
        node = node.parent
    return os.environ.get("MLPLAT_STACK", "dev")


def _local_spec(click_ctx: click.Context) -> tuple[Any, Any] | None:
    """(stack, context) when the stack's ledger lives on this machine and exists; else None."""
    ctx = _ctx(click_ctx)
    spec = ctx.stack(_stack_name(click_ctx))
    if os.environ.get("MLPLAT_CONTROL_PLANE_URL") or spec.control_plane.url:
        return None
    if not spec.state_dir.is_dir():  # never provisioned here: reading must not create it
        return None
    return spec, ctx


def _stacks(click_ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    from mlplat.stack import list_stacks

    return [CompletionItem(name) for name in list_stacks(_ctx(click_ctx).project()) if name.startswith(incomplete)]


def _versions_doc(click_ctx: click.Context) -> list[dict[str, Any]]:
    local = _local_spec(click_ctx)
    if local is None:
        return []
    from mlplat.api.plane import EmbeddedPlane

    spec, ctx = local
    rows: list[dict[str, Any]] = EmbeddedPlane(spec, ctx).call("models.list", environment=None)["versions"]
    return rows


def _models(click_ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    names = sorted({r["model"] for r in _versions_doc(click_ctx)})
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def _versions(click_ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    name = click_ctx.params.get("name")
    rows = [r for r in _versions_doc(click_ctx) if name is None or r["model"] == name]
    prefix = "v" if incomplete.startswith("v") else ""
    out: list[CompletionItem] = []
    for r in sorted(rows, key=lambda r: (r["model"], int(r["version"]))):
        text = f"{prefix}{r['version']}"
        if text.startswith(incomplete) and text not in {i.value for i in out}:
            out.append(CompletionItem(text, help=f"{r['model']} {r['stage']}"))
    return out


def _runs(click_ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    local = _local_spec(click_ctx)
    if local is None:
        return []
    from mlplat import providers
    from mlplat.contracts import Capability

    spec, ctx = local
    tracker = providers.capability(spec, ctx, Capability.TRACKING)
    return [CompletionItem(r.run_id, help=f"{r.experiment}/{r.name}")
            for r in tracker.list_runs(limit=RUNS_OFFERED) if r.run_id.startswith(incomplete)]


complete_stacks = _quietly(_stacks)
complete_models = _quietly(_models)
complete_versions = _quietly(_versions)
complete_runs = _quietly(_runs)
