"""A real `mlplat server` process for tests: started on a free loopback port, stopped after.

    with running_server(project, "dev") as server:
        env = server.client_env()          # MLPLAT_CONTROL_PLANE_URL=... for CLI subprocesses
        plane = server.plane(spec, ctx)    # a RemotePlane for in-process calls

The server runs in its own process group from ``project`` (its own state directory and
ledger); ``database_url`` points it at PostgreSQL (see ``tests/pg.py``) instead of SQLite.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.timing import wait_until

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    project: Path
    stack: str
    port: int
    process: subprocess.Popen
    log: Path
    database_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """Environment for a CLI subprocess that must reach this server."""
        return {"MLPLAT_CONTROL_PLANE_URL": self.url}

    def plane(self, spec, ctx):
        from mlplat.api.plane import RemotePlane

        return RemotePlane(self.url, stack=spec.name, user=ctx.user, err=ctx.err)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def ready(self) -> bool:
        import httpx

        if not self.alive():
            raise AssertionError(f"mlplat server exited with {self.process.returncode}:\n{self.output()}")
        try:
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def requests_served(server: ServerProcess, operation: str, status: int = 200) -> int:
    """How many requests for ``operation`` the server answered with ``status`` (from its /metrics)."""
    import re

    import httpx

    text = httpx.get(server.url + "/metrics", timeout=10).text
    found = re.search(rf'mlplat_api_requests_total{{operation="{re.escape(operation)}",status="{status}"}} (\d+)', text)
    return int(found.group(1)) if found else 0


def start_server(project: Path, stack: str, *, database_url: str | None = None, port: int | None = None,
                 args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> ServerProcess:
    port = port or free_port()
    log = project / f".server-{port}.log"
    command = [str(BIN / "mlplat"), "server", "--stack", stack, "--port", str(port), *args]
    if database_url:
        command += ["--database", database_url]
    full_env = {**os.environ, **(env or {})}
    full_env.pop("MLPLAT_CONTROL_PLANE_URL", None)
    process = subprocess.Popen(command, cwd=project, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=full_env,
                               start_new_session=True)
    server = ServerProcess(project=project, stack=stack, port=port, process=process, log=log,
                           database_url=database_url, extra_env=env or {})
    try:
        wait_until(server.ready, timeout=60, message=server.output)
    except BaseException:
        server.kill()
        raise
    return server


@contextmanager
def running_server(project: Path, stack: str, **kwargs) -> Iterator[ServerProcess]:
    server = start_server(project, stack, **kwargs)
    try:
        yield server
    finally:
        server.stop()


class HeaderAuthenticator:
    """A test authenticator for ``create_app(..., authenticator=...)``: the header ``header`` names one of
    ``principals`` (already verified, as a token would be); anything else is a 401. Authentication itself is
    tested against a real issuer elsewhere; this lets role tests choose the caller."""

    def __init__(self, principals: dict, header: str = "X-Test-Principal", method: str = "oidc"):
        self.principals, self.header, self.method = principals, header, method

    def authenticate(self, headers):
        from mlplat.errors import Unauthenticated

        name = headers.get(self.header)
        if name not in self.principals:
            raise Unauthenticated("no valid credentials", hint="run `mlplat login`")
        return self.principals[name]

    def check(self) -> None:
        return None
