"""`mlplat ui`: MLflow's UI over a stack's tracking store, on loopback only."""
from __future__ import annotations

import ipaddress
import os
import sys

import click

from mlplat.cli.options import pass_ctx, stack_option
from mlplat.errors import Denied, MlplatError


def require_loopback(host: str) -> None:
    """Refuse to bind a server without authentication beyond this machine."""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise Denied(f"refusing to bind to {host}: this server has no authentication",
                 hint="bind to 127.0.0.1 and reach it through an SSH tunnel or an authenticating proxy")


@click.command()
@stack_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@pass_ctx
def ui(ctx, stack: str, host: str, port: int) -> None:
    """Start the MLflow UI on STACK's tracking store (blocks until interrupted)."""
    spec = ctx.stack(stack)
    require_loopback(host)
    if spec.provider.kind != "local":
        raise MlplatError(f"stack '{spec.name}' runs on {spec.provider.kind}: open its tracking server in the cloud console")
    from mlplat_providers.local.layout import StateLayout  # the UI is a local-provider feature

    layout = StateLayout(spec.state_dir)
    if not layout.exists():
        raise MlplatError(f"stack '{spec.name}' is not provisioned", hint=f"run `mlplat up --stack {spec.name}` first")
    ctx.console.print(f"MLflow UI for stack {spec.name}: http://{host}:{port}")
    args = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", layout.tracking_uri,
            "--default-artifact-root", str(layout.artifacts), "--host", host, "--port", str(port)]
    sys.stdout.flush()
    os.execv(sys.executable, args)
