"""`mlplat ui`: the tracking store's web UI (MLflow's, on MLflow stores), on loopback only.

The UI runs as a child process with one worker (a local, single-user viewer). Its URL is printed
only once the UI answers, and it opens on the runs table of the stack's latest experiment.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click

from mlplat.cli.options import pass_ctx, stack_option
from mlplat.errors import ExternalError, NotFound
from mlplat.netguard import require_loopback

# The provider registry and the contracts load the stack model (pydantic) on import: the command
# imports them when it runs, so `mlplat ui --help` stays light.

STARTUP_SECONDS = 180.0  # MLflow's first start on a store migrates it; a loaded CI machine is slow


@click.command()
@stack_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=5000, show_default=True,
              help="Port (0 picks a free one).")
@click.option("--experiment", "-e", default=None,
              help="Open this experiment's runs (default: the experiment of the latest run).")
@pass_ctx
def ui(ctx: Any, stack: str, host: str, port: int, experiment: str | None) -> None:
    """Start the MLflow UI on STACK's tracking store (blocks until interrupted)."""
    from mlplat import providers
    from mlplat.contracts import Capability
    from mlplat.serving.model_server import bind

    spec = ctx.stack(stack)
    require_loopback(host)
    tracker = providers.capability(spec, ctx, Capability.TRACKING)  # refuses a stack that is not provisioned
    probe = bind(host, port)  # PortInUse (exit 9) before anything starts; port 0: the free port it found
    port = probe.getsockname()[1]
    probe.close()
    args = tracker.ui_command(host=host, port=port) + ["--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get(
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}  # no GenAI job runner: the UI only reads
    base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    # its own process group: stopping the UI stops MLflow's server process too, whatever state it is in
    child = subprocess.Popen(args, env=env, start_new_session=True)
    signal.signal(signal.SIGTERM, _interrupt)  # stopped like Ctrl-C: the UI goes with this command
    try:
        _wait_until_answering(child, base)
        url = f"{base}/#/experiments/{_experiment_id(child, base, experiment)}/runs"
        ctx.console.print(f"MLflow UI for stack {spec.name}: {url}  (Ctrl-C stops it)", highlight=False,
                          soft_wrap=True)
        ctx.console.file.flush()
        code = child.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        _stop(child)
    if code != 0:
        raise ExternalError(f"the MLflow UI stopped with exit code {code}", hint="its messages are above")


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _wait_until_answering(child: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise ExternalError(f"the MLflow UI exited with code {child.returncode} before it answered",
                                hint="its messages are above")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise ExternalError(f"the MLflow UI did not answer on {base} within {STARTUP_SECONDS:.0f} s",
                        hint="rerun; a first start on a large store can take longer")


def _api(base: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        doc: dict[str, Any] = json.loads(response.read() or b"{}")
        return doc


def _experiment_id(child: subprocess.Popen[bytes], base: str, name: str | None) -> str:
    """The experiment whose runs table the URL opens: ``name``, else the latest run's, else the first one."""
    try:
        if name is not None:
            try:
                return str(_api(base, "experiments/get-by-name?experiment_name="
                                + urllib.parse.quote(name))["experiment"]["experiment_id"])
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
            raise NotFound(f"experiment '{name}' not found in the stack's tracking store",
                           hint="`mlplat runs list` names the experiments of its runs")
        experiments = _api(base, "experiments/search", {"max_results": 1000}).get("experiments", [])
        ids = [e["experiment_id"] for e in experiments]
        if not ids:
            return "0"
        runs = _api(base, "runs/search", {"experiment_ids": ids, "max_results": 1,
                                          "order_by": ["attributes.start_time DESC"]}).get("runs", [])
        return str(runs[0]["info"]["experiment_id"]) if runs else str(ids[-1])
    except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
        raise ExternalError(f"the MLflow UI answered, but its API did not: {exc}") from exc


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Stop the UI's process group: SIGTERM, then SIGKILL after a grace period (the UI only reads, and
    MLflow's server lingers for seconds after its shutdown)."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 30.0)):
        if child.poll() is not None:
            break
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            break
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    try:  # what is left of the group once MLflow's own process is gone
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
