"""The ``mlplat`` command. Subcommands load lazily so ``mlplat --help`` stays fast.

Errors are mapped to exit codes in exactly one place, :func:`main`.
"""
from __future__ import annotations

import importlib
import json
import sys
import traceback

import click

from mlplat.context import Context
from mlplat.errors import ExitCode, MlplatError

# name → ("module:attribute", one-line help). Adding a command group = one line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("mlplat.cli.provision:up", "Provision a stack (prints a plan first, like terraform apply)."),
    "preview": ("mlplat.cli.provision:preview", "Show what `up` would change, without changing anything."),
    "destroy": ("mlplat.cli.provision:destroy", "Remove everything a stack's `up` created."),
    "status": ("mlplat.cli.provision:status", "Show what exists for a stack."),
    "init": ("mlplat.cli.init:init", "Start a new team: a valid stack file and a starter project, in one command."),
    "stack": ("mlplat.cli.stack:stack", "Validate stack files, list them, print their schema."),
    "providers": ("mlplat.cli.stack:providers_cmd", "List installed providers and their capabilities."),
    "runs": ("mlplat.cli.runs:runs", "List, show, compare and reproduce tracked runs."),
    "ui": ("mlplat.cli.ui:ui", "Open the MLflow UI on a stack's tracking store (127.0.0.1)."),
    "policy": ("mlplat.cli.policy:policy", "Check stacks against the policy pack, offline (text, JSON, JUnit, SARIF)."),
    "models": ("mlplat.cli.models:models",
               "Registered models: list, show, promote (gate, package, staging tests), approve, reject."),
    "approvals": ("mlplat.cli.approvals:approvals", "Production promotions waiting for an approver."),
    "audit": ("mlplat.cli.audit:audit", "The hash-chained audit log: show it, verify it, export a signed archive."),
    "features": ("mlplat.cli.features:features", "Feature store: apply definitions, list, materialize online, skew report."),
    "pipeline": ("mlplat.cli.pipeline:pipeline",
                 "Pipelines declared in Python (prepare, train, gate, register, staging): run, resume, list, schedule."),
    "monitor": ("mlplat.cli.monitor:monitor", "Drift, quality with delayed labels, alerts, retraining: run, status, labels."),
    "cost": ("mlplat.cli.cost:cost", "Cost per prediction and per team/model/env against the budget."),
    "adoption": ("mlplat.cli.platform:adoption",
                 "Production models served through the platform vs endpoints outside it, per team; trend, time to production."),
    "sla": ("mlplat.cli.platform:sla", "The platform's service levels against its objectives (exit 1 on a breach)."),
    "dashboard": ("mlplat.cli.dashboard:dashboard", "Serve the local dashboard on 127.0.0.1."),
    "serve": ("mlplat.cli.serving:serve", "Run the serving gateway for a stack's deployments (127.0.0.1)."),
    "deploy": ("mlplat.cli.serving:deploy", "Deploy a model version: direct, ab, canary (auto-rollback) or shadow."),
    "rollback": ("mlplat.cli.serving:rollback", "Return a deployment's traffic to its stable (warm) version."),
    "deployments": ("mlplat.cli.serving:deployments", "List and inspect deployments."),
    "rollout": ("mlplat.cli.serving:rollout", "Rollout status: current step, metrics per variant, decisions."),
    "keys": ("mlplat.cli.keys:keys", "API keys for the serving gateway: create, list, revoke, rotate."),
    "server": ("mlplat.cli.server:server", "Serve the stack's platform API: the shared ledger a whole team reaches."),
    "db": ("mlplat.cli.db:db", "The ledger's database: upgrade its schema, export it, import it (SQLite, PostgreSQL)."),
    "login": ("mlplat.cli.access:login", "Sign in to the stack's identity provider (OIDC device code); tokens cached 0600."),
    "logout": ("mlplat.cli.access:logout", "Forget the tokens `mlplat login` cached for a stack's identity provider."),
    "whoami": ("mlplat.cli.access:whoami", "Who the platform takes you for: principal, how established, groups, roles."),
    "access": ("mlplat.cli.access:access", "Roles and grants: `access list` shows who may do what."),
    "train": ("mlplat.cli.train:train", "Run a command as a tracked training job on the stack's compute; status, logs, stop."),
    "completion": ("mlplat.cli.completion:completion", "Print the shell completion script (bash, zsh, fish)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target[0].split(":")
        return getattr(importlib.import_module(module), attr)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:
            # click suggests from the commands it has loaded; the lazy table holds the rest
            raise click.exceptions.NoSuchCommand(exc.command_name, possibilities=self.list_commands(ctx),
                                                 ctx=ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1] if name in COMMANDS else (self.commands[name].get_short_help_str()))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(package_name="mlplat", prog_name="mlplat")
@click.pass_context
def cli(click_ctx: click.Context, verbose: bool) -> None:
    """mlplat: a self-service MLOps platform, declared per team in stacks/ and provisioned by a provider.

    \b
    Exit codes: 0 ok, 1 a check failed, 2 usage, 3 stack config, 4 not found,
    5 conflict/lock, 6 denied, 7 not supported, 8 integrity, 9 external failure,
    70 internal error, 130 aborted.
    """
    ctx = click_ctx.ensure_object(Context)
    ctx.verbose = ctx.verbose or verbose


def main(argv: list[str] | None = None) -> None:
    ctx = Context()
    args = list(sys.argv[1:] if argv is None else argv)
    ctx.verbose = "--verbose" in args or "-v" in args
    ctx.json = "--json" in args
    try:
        result = cli.main(args=args, prog_name="mlplat", standalone_mode=False, obj=ctx)
        code = int(result) if isinstance(result, int) else ExitCode.OK
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        ctx.err.print("aborted")
        code = ExitCode.ABORTED
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except KeyboardInterrupt:
        ctx.err.print("interrupted")
        code = ExitCode.ABORTED
    except MlplatError as exc:
        _report(ctx, exc)
        code = exc.exit_code
    except Exception as exc:  # a bug: say so plainly, never exit 0
        if ctx.verbose:
            traceback.print_exc()
        ctx.err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc}", markup=True, highlight=False)
        if not ctx.verbose:
            ctx.err.print("rerun with --verbose for the traceback, and report it")
        code = ExitCode.INTERNAL
    sys.exit(int(code))


def _report(ctx: Context, exc: MlplatError) -> None:
    if ctx.verbose:
        traceback.print_exc()
    if ctx.json:
        print(json.dumps(exc.to_dict(), indent=2), file=sys.stderr)
        return
    text = f"{exc.where}: {exc.message}" if exc.where else exc.message
    ctx.err.print(f"[bold red]error:[/] {escape(text)}", markup=True, highlight=False)
    if exc.hint:
        ctx.err.print(f"[yellow]hint:[/] {escape(exc.hint)}", markup=True, highlight=False)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)
