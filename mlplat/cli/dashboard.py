"""`mlplat dashboard`: the local dashboard on 127.0.0.1."""
from __future__ import annotations

import click

from mlplat.cli.options import pass_ctx, stack_option


@click.command()
@stack_option
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port on 127.0.0.1 (0 picks a free one).")
@click.option("--refresh", type=click.IntRange(0, 3600), default=10, show_default=True,
              help="Seconds between the pages' live updates (sections refetched, never the whole page; 0: never).")
@pass_ctx
def dashboard(ctx, stack: str, port: int, refresh: int) -> None:
    """Models and stages, deployments and traffic, rollouts, drift, quality and calibration, cost and budget,
    alerts, pending approvals and the audit trail of one stack, on http://127.0.0.1:PORT (loopback only).

    \b
    It prints a login link carrying a token drawn for this start: open it to get a session (every page and
    API route needs one). The dashboard acts as you: it reaches the stack's control plane with your
    credentials, and its header names you."""
    from mlplat.dashboard.app import LOOPBACK, new_token, serve
    from mlplat.services.monitoring.passes import monitor_for

    spec = ctx.stack(stack)
    monitor_for(spec, ctx).database()  # fail before binding when the stack is not provisioned
    identity = _identity(spec, ctx)
    token = new_token()

    def announce(bound: int) -> None:  # only once it serves: a busy port gets one error and no URL
        ctx.err.print(f"dashboard of stack '{spec.name}' on http://{LOOPBACK}:{bound}/ as {identity['principal']} "
                      f"({identity['method']})  (Ctrl-C stops it)", highlight=False)
        ctx.err.print(f"log in: http://{LOOPBACK}:{bound}/login?token={token}", highlight=False, soft_wrap=True)
        ctx.err.file.flush()

    serve(spec, ctx, port=port, token=token, refresh=refresh, identity=identity, on_ready=announce)


def _identity(spec, ctx) -> dict:
    """Who the dashboard acts as: the principal the control plane sees for this user's credentials."""
    from mlplat.api.plane import plane_for

    plane = plane_for(spec, ctx)
    try:
        who = plane.call("access.whoami")
    except KeyError:  # a platform without the access operations: the embedded identity
        who = {"principal": ctx.user, "method": ctx.method}
    finally:
        plane.close()
    return {"principal": who["principal"], "method": who["method"]}
