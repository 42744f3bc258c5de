"""`mlplat ui`: the tracking store's web UI (MLflow's, on MLflow stores), on loopback only."""
from __future__ import annotations

import os
import sys

import click

from mlplat.cli.options import pass_ctx, stack_option
from mlplat.netguard import require_loopback

# The provider registry and the contracts load the stack model (pydantic) on import: the command
# imports them when it runs, so `mlplat ui --help` stays light.


@click.command()
@stack_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@pass_ctx
def ui(ctx, stack: str, host: str, port: int) -> None:
    """Start the MLflow UI on STACK's tracking store (blocks until interrupted)."""
    from mlplat import providers
    from mlplat.contracts import Capability

    spec = ctx.stack(stack)
    require_loopback(host)
    tracker = providers.capability(spec, ctx, Capability.TRACKING)  # refuses a stack that is not provisioned
    args = tracker.ui_command(host=host, port=port)
    ctx.console.print(f"MLflow UI for stack {spec.name}: http://{host}:{port}")
    sys.stdout.flush()
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no GenAI job runner: the UI only reads
    os.execv(args[0], args)
