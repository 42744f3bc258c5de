"""Staging model servers run as child processes of the promoting process.

Shared by every provider whose staging endpoint runs on this machine (the local provider's process
path, the cloud providers' pre-deployment tests: :class:`LocalStaging`). A child gets SIGTERM when its parent dies
(``PR_SET_PDEATHSIG``), so a killed promotion never leaves a server behind; a rerun finds it gone.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlplat.contracts import Endpoint
from mlplat.errors import ExternalError

SERVER_MODULE = "mlplat.serving.model_server"
START_TIMEOUT_S = 120.0
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "last lines of the server log:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "no server log"


def wait_healthy(endpoint: Endpoint, alive: Callable[[], bool], logs: Path, timeout: float = START_TIMEOUT_S) -> None:
    """Poll ``/ping`` until it answers 200; fail if the server dies or the time runs out."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise ExternalError("the staging endpoint stopped while starting", where=str(logs), hint=tail(logs))
        try:
            if httpx.get(endpoint.url + "/ping", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise ExternalError(f"the staging endpoint at {endpoint.url} was not healthy within {timeout:.0f}s",
                        where=str(logs))


class ServerProcesses:
    """The promoting process's server children, by pid."""

    def __init__(self) -> None:
        self.children: dict[int, subprocess.Popen] = {}

    def spawn(self, cmd: Sequence[str], *, logs: Path, env: Mapping[str, str]) -> subprocess.Popen:
        with logs.open("ab") as log:
            proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=dict(env), preexec_fn=die_with_parent, close_fds=True)
        self.children[proc.pid] = proc
        return proc

    def start(self, model_dir: Path, *, name: str, version: int, max_body_bytes: int, logs: Path,
              tmp_dir: Path) -> Endpoint:
        """Run ``python -m mlplat.serving.model_server`` on a free loopback port; return once healthy."""
        port_file = Path(tempfile.mkdtemp(prefix="endpoint-", dir=tmp_dir)) / "port"
        env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true", "PYTHONUNBUFFERED": "1"}
        proc = self.spawn([sys.executable, "-m", SERVER_MODULE, "--model-dir", str(model_dir), "--name", name,
                           "--version", str(version), "--host", "127.0.0.1", "--port", "0",
                           "--port-file", str(port_file), "--max-body-bytes", str(max_body_bytes)],
                          logs=logs, env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_file.is_file():
            if proc.poll() is not None:
                raise ExternalError(f"the model server exited with code {proc.returncode} before serving",
                                    where=str(logs), hint=tail(logs))
            if time.monotonic() > deadline:
                self.kill(proc.pid)
                raise ExternalError(f"the model server did not start within {START_TIMEOUT_S:.0f}s", where=str(logs))
            time.sleep(0.05)
        port = int(port_file.read_text().strip())
        shutil.rmtree(port_file.parent, ignore_errors=True)
        endpoint = Endpoint(f"http://127.0.0.1:{port}", "process", str(proc.pid), port)
        wait_healthy(endpoint, lambda: proc.poll() is None, logs)
        return endpoint

    def alive(self, pid: int) -> bool:
        child = self.children.get(pid)
        if child is not None:
            return child.poll() is None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return SERVER_MODULE.encode() in cmdline  # not some other process that reused the pid

    def kill(self, pid: int) -> None:
        """SIGTERM, then SIGKILL after 10 s. Idempotent."""
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        child = self.children.pop(pid, None)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (child.poll() is not None) if child is not None else not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if child is not None:
            child.wait(5)


class LocalStaging:
    """A cloud delivery pipeline's staging endpoint: the cloud's staging endpoint is not reachable from
    here, so the same package's model server runs on this machine, a child of the promoting process
    (``procs``), its log beside the package and its temporary files under the stack's state."""

    spec: Any
    state: Any
    procs: ServerProcesses

    def start_endpoint(self, package: Any, name: str, version: int) -> Endpoint:
        logs = Path(package.context_dir).parent / f"{version}.endpoint.log"
        return self.procs.start(Path(package.context_dir) / "model", name=name, version=version,
                                max_body_bytes=self.spec.serving.max_body_bytes, logs=logs, tmp_dir=self.state.tmp)

    def endpoint_alive(self, endpoint: Endpoint) -> bool:
        return self.procs.alive(int(endpoint.handle))

    def stop_endpoint(self, endpoint: Endpoint) -> None:
        if self.endpoint_alive(endpoint):
            self.procs.kill(int(endpoint.handle))
