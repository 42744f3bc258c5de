"""Delivery on the aws provider: the build context in the stack's bucket, staging tests on 127.0.0.1.

``package`` writes the same build context as every provider (``mlplat.services.packaging``:
Containerfile, the sealed model files, pinned requirements, the serving entrypoint) and
uploads it to ``s3://<bucket>/packages/<model>/`` once per digest, where the team's image
build (CodeBuild / the SageMaker pipeline) picks it up. The promotion's staging endpoint
runs that context's entrypoint (``python -m mlplat.serving.model_server``) as a loopback
process, so the integration tests exercise the exact files SageMaker will serve without
needing a reachable staging endpoint.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Sequence

from mlplat.components import DeliveryPipeline, Endpoint, Package
from mlplat.errors import ExternalError, NotFound
from mlplat.services import packaging
from mlplat_providers.aws.runtime.session import AwsSession
from mlplat_providers.aws.runtime.state import AwsState

SERVER_MODULE = "mlplat.serving.model_server"
START_TIMEOUT_S = 120.0


def _die_with_parent() -> None:  # child, between fork and exec: SIGTERM when the promoting process dies
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


class AwsDeliveryPipeline(DeliveryPipeline):
    def __init__(self, spec, ctx, session: AwsSession | None = None):
        self.spec = spec
        self.ctx = ctx
        self.aws = session or AwsSession(spec)
        self.state = AwsState(spec.state_dir).ensure()
        self._children: dict[int, subprocess.Popen] = {}

    def package(self, name: str, version: int, model_dir, requirements: Sequence[str], *,
                artifact_digest: str) -> Package:
        dest = self.state.root / "packages" / name / str(version)
        digest = packaging.write_context(dest, name=name, version=version, model_dir=Path(model_dir),
                                         requirements_pinned=requirements, artifact_digest=artifact_digest)
        key = f"packages/{name}/{version}-{digest[:16]}.tar.gz"
        try:
            self.aws.call("s3", "head_object", Bucket=self.aws.bucket, Key=key, not_found=("404", "Not Found", "NoSuchKey"))
        except NotFound:
            work = Path(tempfile.mkdtemp(prefix="context-", dir=self.state.tmp))
            try:
                archive = work / "context.tar.gz"
                with tarfile.open(archive, "w:gz") as tar:
                    tar.add(dest, arcname=".")
                with archive.open("rb") as body:
                    self.aws.call("s3", "put_object", Bucket=self.aws.bucket, Key=key, Body=body,
                                  Metadata={"mlplat-digest": digest, "mlplat-artifact-digest": artifact_digest},
                                  what=f"uploading the build context of {name} version {version}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return Package(str(dest), digest, image=f"s3://{self.aws.bucket}/{key}", engine="s3")

    def start_endpoint(self, package: Package, name: str, version: int) -> Endpoint:
        logs = Path(package.context_dir).parent / f"{version}.endpoint.log"
        port_dir = Path(tempfile.mkdtemp(prefix="endpoint-", dir=self.state.tmp))
        port_file = port_dir / "port"
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
                raise ExternalError(f"the staging model server exited with code {proc.returncode}", where=str(logs))
            if time.monotonic() > deadline:
                self.stop_endpoint(Endpoint("", "process", str(proc.pid), 0))
                raise ExternalError("the staging model server did not start in time", where=str(logs))
            time.sleep(0.05)
        port = int(port_file.read_text().strip())
        shutil.rmtree(port_dir, ignore_errors=True)
        endpoint = Endpoint(f"http://127.0.0.1:{port}", "process", str(proc.pid), port)
        self._wait_healthy(endpoint, proc, logs)
        return endpoint

    def _wait_healthy(self, endpoint: Endpoint, proc: subprocess.Popen, logs: Path) -> None:
        import httpx

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ExternalError("the staging model server stopped while starting", where=str(logs))
            try:
                if httpx.get(endpoint.url + "/ping", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise ExternalError(f"the staging model server at {endpoint.url} was not healthy in time", where=str(logs))

    def endpoint_alive(self, endpoint: Endpoint) -> bool:
        pid = int(endpoint.handle)
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        try:
            return SERVER_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    def stop_endpoint(self, endpoint: Endpoint) -> None:
        pid = int(endpoint.handle)
        if not self.endpoint_alive(endpoint):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        child = self._children.pop(pid, None)
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
