"""`mlplat dashboard`: the local dashboard on 127.0.0.1."""
from __future__ import annotations

import click

from mlplat.cli.options import pass_ctx, stack_option


@click.command()
@stack_option
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port on 127.0.0.1 (0 picks a free one).")
@click.option("--refresh", type=click.IntRange(0, 3600), default=10, show_default=True,
              help="Seconds between page reloads in the browser (0: never).")
@pass_ctx
def dashboard(ctx, stack: str, port: int, refresh: int) -> None:
    """Models and stages, deployments and traffic, rollouts, drift, quality and calibration, cost and budget,
    alerts, pending approvals and the audit trail of one stack, on http://127.0.0.1:PORT (loopback only)."""
    import socket

    from mlplat.dashboard.app import LOOPBACK, serve
    from mlplat.services.monitoring.passes import monitor_for

    spec = ctx.stack(stack)
    monitor_for(spec, ctx).database()  # fail before binding when the stack is not provisioned
    if port == 0:
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
    ctx.err.print(f"dashboard of stack '{spec.name}' on http://{LOOPBACK}:{port}/  (Ctrl-C stops it)", highlight=False)
    serve(spec, ctx, port=port, refresh=refresh)
