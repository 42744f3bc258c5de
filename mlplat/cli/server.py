"""`mlplat server`: the stack's platform API, the one process that opens its ledger."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlplat.cli.options import pass_ctx, stack_option
from mlplat.errors import ExternalError, PortInUse

if TYPE_CHECKING:
    from mlplat.identity import Authenticator

# MLflow's server also starts a job runner with a pool of consumer processes for its GenAI jobs; the
# platform runs none, so the tracking server beside it starts without them (a dozen fewer processes).
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@click.command("server")
@stack_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Beyond loopback (e.g. 0.0.0.0) only when the stack authenticates callers "
                   "(mlplat:access.mode oidc, aws-iam, google or entra).")
@click.option("--port", type=click.IntRange(0, 65535), default=8770, show_default=True)
@click.option("--database", "database", default=None, metavar="URL",
              help="postgresql://… or sqlite:///… (default: $MLPLAT_DATABASE_URL, then the stack's "
                   "controlPlane.database, then SQLite in the stack's state directory).")
@click.option("--tracking-port", type=click.IntRange(1, 65535), default=None,
              help="Also run MLflow's tracking server on this port (single node), runs and artifacts "
                   "under the stack's state directory.")
@pass_ctx
def server(ctx, stack: str, host: str, port: int, database: str | None, tracking_port: int | None) -> None:
    """Serve the stack's platform API (/api/v1, OpenAPI at /api/v1/openapi.json, /healthz, /readyz, /metrics).

    Every caller is authenticated as the stack's mlplat:access.mode says (an OIDC, Google or Entra
    token, or a signed AWS request); a trusted-local stack's server believes the names its callers
    send and listens on loopback only.
    """
    spec = ctx.stack(stack)
    authenticator = checked_authenticator(spec, host)
    ctx.ledger_owner = True
    ctx.database_url = database or os.environ.get("MLPLAT_DATABASE_URL") or spec.control_plane.database
    run(ctx, spec, host=host, port=port, tracking_port=tracking_port, authenticator=authenticator)


MODES_HINT = "set mlplat:access.mode to oidc, aws-iam, google or entra (or trusted-local for a single-machine server)"


def checked_authenticator(spec: Any, host: str) -> Authenticator | None:
    """The stack's authenticator, its identity provider checked (``StackError`` naming the setting
    otherwise); None for a trusted-local server, which may then bind loopback only."""
    from mlplat.errors import StackError
    from mlplat.identity import TRUSTED_LOCAL
    from mlplat.identity.verifiers import authenticator_for
    from mlplat.netguard import require_loopback

    mode = spec.access.mode.value if spec.access.mode is not None else None
    if not spec.access.authenticated and mode != TRUSTED_LOCAL:
        raise StackError(f"mlplat server cannot tell who calls it: the stack's access mode is "
                         f"{mode or 'unset'} (the OS user of a command on this machine), and a server cannot know a "
                         "remote caller's OS user", where="mlplat:access.mode", hint=MODES_HINT)
    require_loopback(host, authenticated=spec.access.authenticated, how=MODES_HINT.split(" (")[0])
    authenticator = authenticator_for(spec)
    if authenticator is not None:
        authenticator.check()  # the issuer answers with its keys, or the server does not start
    return authenticator


def ledger_database(spec, ctx):
    """The server's ledger database, migrated to the current schema."""
    from mlplat.services import registry as reg

    return reg.registry_for(spec, ctx).database()


# Operations import MLflow lazily, in whichever request first needs it. Two requests doing that at once,
# in two threads, can deadlock inside MLflow's circular imports, and Python breaks the deadlock by handing
# one of them a half-initialized module (ImportError). The server imports it once, before it serves.
PRELOAD = ("mlflow", "mlflow.pyfunc")


def preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # not installed: no operation of this stack can need it
            pass


def run(ctx, spec, *, host: str, port: int, tracking_port: int | None, authenticator=None) -> None:
    import socket

    import uvicorn

    from mlplat.api.server import create_app

    preload()
    db = ledger_database(spec, ctx)
    ran = db.migrate()
    if ran:
        ctx.err.print(f"mlplat server: applied {len(ran)} migration(s) to the ledger: {', '.join(ran)}",
                      highlight=False, markup=False)
    from mlplat.services import governance

    changed = governance.record_applied(db, spec, ctx.user, ctx.method)  # the stack file's governance is the one in force
    if changed:
        ctx.err.print(f"mlplat server: governance applied: {', '.join(changed)} (recorded in the audit log)",
                      highlight=False, markup=False)

    def ready() -> None:
        pending = ledger_database(spec, ctx).pending()
        if pending:
            raise RuntimeError(f"the ledger schema is behind ({', '.join(pending)}): run `mlplat db upgrade`")

    tracking = start_tracking(spec, tracking_port) if tracking_port else None
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Connections accepted on a socket handed to uvicorn keep Nagle's algorithm, which holds the body of a
    # response until the client acknowledges its headers (a delayed ACK: 40 ms per request on a kept-alive
    # connection). Accepted connections inherit the listening socket's TCP_NODELAY.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from None
        raise ExternalError(f"cannot listen on {host}:{port}: {exc.strerror}",
                            hint="choose another --port, or stop the process holding it") from None
    bound = sock.getsockname()[1]
    from mlplat.services import health

    def answers() -> bool:
        ready()
        return True

    # the durable record `mlplat sla` reads: API requests, 5xx and readiness per interval, and a clean stop
    recorder = health.HealthRecorder(db, component=health.CONTROL_PLANE, environment=spec.environment, ready=answers,
                                     clock=ctx.clock)
    app = create_app(spec, project_dir=Path(spec.project_dir), database_url=ctx.database_url, clock=ctx.clock,
                     ready=ready, migrated=True, authenticator=authenticator, health=recorder)
    dialect = (ctx.database_url or "sqlite").split(":", 1)[0]
    ctx.console.print(f"mlplat server for stack '{spec.name}' on http://{host}:{bound} "
                      f"(ledger: {dialect}{', tracking: http://127.0.0.1:' + str(tracking_port) if tracking else ''})",
                      highlight=False, markup=False)
    if authenticator is not None:
        ctx.console.print(f"callers authenticated by {authenticator.method} (mlplat:access); requests without valid "
                          "credentials are refused with 401", highlight=False, markup=False)
    else:
        ctx.console.print("trusted-local: callers name themselves (Mlplat-User), so it listens on loopback only; "
                          "reach it through an SSH tunnel, or set mlplat:access.mode to oidc, aws-iam, google or "
                          "entra", highlight=False, markup=False)
    sys.stdout.flush()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30)

    # uvicorn stops on SIGTERM, restores the handler it found and raises the signal again, so no
    # `finally` would run: the handler it restores records the clean stop and stops the tracking server first.
    def stop_then_exit(signum, _frame) -> None:
        recorder.stop()
        if tracking is not None:
            stop_tracking(tracking)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, stop_then_exit)
    recorder.start()
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        recorder.stop()
        if tracking is not None:
            stop_tracking(tracking)


def stop_tracking(process: subprocess.Popen) -> None:
    """Stop MLflow's tracking server and every process it started (its workers and job runners share
    its process group): SIGTERM, then SIGKILL for whatever is left after a grace period."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def start_tracking(spec, port: int) -> subprocess.Popen:
    """MLflow's tracking server beside the platform API: runs in SQLite, artifacts served over HTTP."""
    root = spec.state_dir / "tracking-server"
    root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts", "--workers", "1"]
    log = open(root / "server.log", "ab")  # noqa: SIM115 - handed to the child
    env = {**os.environ, **MLFLOW_SERVER_ENV}
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
