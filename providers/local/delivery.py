"""Delivery on the local provider: build contexts under the stack's state, images with buildah
when buildah and podman are installed, and the staging endpoint as a container or a local process.

Without a container engine the same entrypoint (``python -m mlplat.serving.model_server``)
runs as a child process on a free loopback port; the parent-death signal ends it if the
promoting process is killed, and a rerun finds it gone and starts a fresh one.
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
from pathlib import Path
from typing import Sequence

from mlplat.components import DeliveryPipeline, Endpoint, Package
from mlplat.errors import ExternalError, MlplatError
from mlplat.services import packaging
from mlplat_providers.local.layout import StateLayout

SERVER_MODULE = "mlplat.serving.model_server"
START_TIMEOUT_S = 120.0
PR_SET_PDEATHSIG = 1


def container_engine() -> str | None:
    """``buildah`` when both buildah and podman are installed, else ``None`` (local process)."""
    return "buildah" if shutil.which("buildah") and shutil.which("podman") else None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _run(cmd: Sequence[str], *, what: str, timeout: float = 1800) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExternalError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        raise ExternalError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}")
    return done.stdout.strip()


class LocalDeliveryPipeline(DeliveryPipeline):
    def __init__(self, spec, ctx):
        self.spec = spec
        self.ctx = ctx
        self.layout = StateLayout(spec.state_dir)
        self._children: dict[int, subprocess.Popen] = {}

    @property
    def engine(self) -> str | None:
        return container_engine()

    # --- packaging -------------------------------------------------------------------------

    def context_dir(self, name: str, version: int) -> Path:
        return self.layout.root / "packages" / name / str(version)

    def package(self, name: str, version: int, model_dir, requirements: Sequence[str], *,
                artifact_digest: str) -> Package:
        dest = self.context_dir(name, version)
        digest = packaging.write_context(dest, name=name, version=version, model_dir=Path(model_dir),
                                         requirements_pinned=requirements, artifact_digest=artifact_digest)
        if self.engine is None:
            return Package(str(dest), digest)
        image = f"localhost/mlplat/{name}:{version}-{digest[:12]}"
        if subprocess.run(["podman", "image", "exists", image], capture_output=True).returncode != 0:
            self.ensure_base_image()
            _run(["buildah", "bud", "--storage-driver", "vfs", "--isolation", "chroot", "--network", "host",
                  "--layers", "-t", image, "-f", str(dest / "Containerfile"), str(dest)], what="buildah bud")
        return Package(str(dest), digest, image=image, engine="buildah")

    def ensure_base_image(self) -> None:
        """The base image from Debian packages (debootstrap), built once and cached by podman."""
        base = packaging.BASE_IMAGE
        if subprocess.run(["podman", "image", "exists", base], capture_output=True).returncode == 0:
            return
        if not shutil.which("debootstrap"):
            raise MlplatError("buildah and podman are installed but debootstrap is not; it builds the base image",
                              hint="apt-get install debootstrap, or remove buildah/podman to run the staging "
                                   "endpoint as a local process")
        with tempfile.TemporaryDirectory(prefix="mlplat-base-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            _run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm",
                  str(rootfs), "http://deb.debian.org/debian"], what="debootstrap")
            tar = Path(tmp) / "rootfs.tar"
            _run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], what="tar rootfs")
            _run(["podman", "import", str(tar), base], what="podman import")

    # --- endpoints ---------------------------------------------------------------------------

    def start_endpoint(self, package: Package, name: str, version: int) -> Endpoint:
        logs = Path(package.context_dir).parent / f"{version}.endpoint.log"
        port_file = Path(tempfile.mkdtemp(prefix="endpoint-", dir=self._tmp())) / "port"
        if package.image:
            port = _free_port()
            cid = _run(["podman", "run", "-d", "--rm", "--network", "host", "-e", f"PORT={port}", package.image],
                       what="podman run")
            endpoint = Endpoint(f"http://127.0.0.1:{port}", "container", cid, port)
            _wait_healthy(endpoint, lambda: self.endpoint_alive(endpoint), logs)
            return endpoint
        env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true", "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", SERVER_MODULE, "--model-dir", str(Path(package.context_dir) / "model"),
               "--name", name, "--version", str(version), "--host", "127.0.0.1", "--port", "0",
               "--port-file", str(port_file), "--max-body-bytes", str(self.spec.serving.max_body_bytes)]
        with logs.open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    preexec_fn=_die_with_parent, close_fds=True)
        self._children[proc.pid] = proc
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_file.is_file():
            if proc.poll() is not None:
                raise ExternalError(f"the model server exited with code {proc.returncode} before serving",
                                    where=str(logs), hint=_tail(logs))
            if time.monotonic() > deadline:
                self._kill(proc.pid)
                raise ExternalError(f"the model server did not start within {START_TIMEOUT_S:.0f}s", where=str(logs))
            time.sleep(0.05)
        port = int(port_file.read_text().strip())
        shutil.rmtree(port_file.parent, ignore_errors=True)
        endpoint = Endpoint(f"http://127.0.0.1:{port}", "process", str(proc.pid), port)
        _wait_healthy(endpoint, lambda: proc.poll() is None, logs)
        return endpoint

    def _tmp(self) -> Path:
        self.layout.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.layout.tmp

    def endpoint_alive(self, endpoint: Endpoint) -> bool:
        if endpoint.kind == "container":
            out = subprocess.run(["podman", "container", "inspect", "-f", "{{.State.Running}}", endpoint.handle],
                                 capture_output=True, text=True)
            return out.returncode == 0 and out.stdout.strip() == "true"
        pid = int(endpoint.handle)
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return SERVER_MODULE.encode() in cmdline  # not some other process that reused the pid

    def stop_endpoint(self, endpoint: Endpoint) -> None:
        if endpoint.kind == "container":
            subprocess.run(["podman", "stop", "-t", "5", endpoint.handle], capture_output=True)
            return
        if self.endpoint_alive(endpoint):
            self._kill(int(endpoint.handle))

    def _kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        child = self._children.pop(pid, None)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if child is not None:
                if child.poll() is not None:
                    return
            elif not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if child is not None:
            child.wait(5)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "last lines of the server log:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "no server log"


def _wait_healthy(endpoint: Endpoint, alive, logs: Path) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not alive():
            raise ExternalError("the staging endpoint stopped while starting", where=str(logs), hint=_tail(logs))
        try:
            if httpx.get(endpoint.url + "/ping", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise ExternalError(f"the staging endpoint at {endpoint.url} was not healthy within {START_TIMEOUT_S:.0f}s",
                        where=str(logs))
