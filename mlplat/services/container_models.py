"""Bring-your-own container: any OCI image that answers the MLflow scoring protocol or the Open
Inference Protocol, registered as a model version.

A version of this kind is a model folder whose ``MLmodel`` has one flavor, ``container``: the image
reference the user gave, the image id and digest podman resolved at registration (lineage), the
protocol it speaks (``mlflow``: ``POST /invocations``, ready on ``GET /ping``; ``v2``:
``POST /v2/models/<model>/infer``, ready on ``GET /v2/health/ready``) and the port it listens on
(``None``: the port given to it in ``$PORT``). The folder is sealed like every version's, so the image
that runs is always the one registered: containers are started from the recorded image id.

Containers run in the platform's container storage (:mod:`mlplat.container_engine`), on the host's
network (``podman run --network host``) on a free loopback port, attached to the process that needs
them (``podman run --rm`` as a child that ends with its parent), so a killed process leaves none
behind. Only containers started here are ever stopped or removed, by the name given to them here.
Used by the evaluation gate (score the held-out set, then stop), the staging endpoint of a promotion,
and the gateway's container backend (:mod:`mlplat.serving.container_backend`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat.container_engine import engine_env, podman_command
from mlplat.errors import ExternalError, MlplatError, NotFound, ToolMissing

if TYPE_CHECKING:
    import httpx
    import pandas as pd
    from numpy.typing import NDArray

FLAVOR = "container"
PROTOCOLS = ("mlflow", "v2")
READY_PATHS = {"mlflow": "/ping", "v2": "/v2/health/ready"}
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
BATCH_ROWS = 500
LOG_LINES = 20
MANAGED_LABEL = "org.mlplat.container-model"  # every container started here carries it (what it serves)


@dataclass(frozen=True)
class ContainerImage:
    """An image registered as a model version (``log_model`` takes it like a model object)."""

    reference: str
    image_id: str
    digest: str
    protocol: str = "mlflow"
    port: int | None = None
    model_name: str | None = None  # the model name in /v2 routes (default: the registered name)

    def conf(self) -> dict[str, Any]:
        return {"image": self.reference, "image_id": self.image_id, "digest": self.digest,
                "protocol": self.protocol, "port": self.port, "model_name": self.model_name}

    def lineage(self) -> dict[str, Any]:
        return {"reference": self.reference, "image_id": self.image_id, "digest": self.digest,
                "protocol": self.protocol, "port": self.port}


def _podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if shutil.which("podman") is None:
        raise ToolMissing("podman is not installed: container model versions run with podman",
                          hint="apt-get install podman runc catatonit")
    return subprocess.run(podman_command(*args), capture_output=True, text=True, env=engine_env(), timeout=timeout,
                          stdin=subprocess.DEVNULL)


def check_options(protocol: str, port: int | None) -> None:
    if protocol not in PROTOCOLS:
        raise MlplatError(f"unknown protocol {protocol!r}", where="--protocol",
                          hint="mlflow (POST /invocations) or v2 (POST /v2/models/<model>/infer)")
    if port is not None and not 1 <= int(port) <= 65535:
        raise MlplatError(f"port {port} is not a TCP port", where="--port", hint="1-65535, or leave it out to "
                          "give the container a free port in $PORT")


def inspect_image(reference: str, *, protocol: str = "mlflow", port: int | None = None,
                  model_name: str | None = None) -> ContainerImage:
    """The image ``reference`` as podman resolves it in the platform's container storage: its id and
    digest. ``NotFound`` (naming the image, and how to pull or list images there) when it is not there."""
    check_options(protocol, port)
    if not reference or reference != reference.strip() or any(c.isspace() for c in reference):
        raise MlplatError(f"invalid image reference {reference!r}", where="--image",
                          hint="e.g. localhost/my-model:1 or registry.example.com/team/model@sha256:...")
    done = _podman("image", "inspect", "--format", "json", reference)
    if done.returncode != 0:
        raise NotFound(f"container image '{reference}' is not in the platform's container storage",
                       where="--image",
                       hint=f"pull it with `{' '.join(podman_command('pull', reference))}` (or build it with the "
                            f"same storage flags); `{' '.join(podman_command('images'))}` lists the images there")
    doc = json.loads(done.stdout or "[]")[0]
    repo_digests = [d for d in doc.get("RepoDigests") or [] if "@" in d]
    digest = str(doc.get("Digest") or (repo_digests[0].split("@", 1)[1] if repo_digests else ""))
    return ContainerImage(reference=reference, image_id=str(doc["Id"]), digest=digest, protocol=protocol,
                          port=int(port) if port is not None else None, model_name=model_name)


def write_model_dir(image: ContainerImage, path: Path, *, signature: Any = None) -> None:
    """The version's model folder: an ``MLmodel`` whose one flavor is ``container``."""
    from mlflow.models import Model

    path.mkdir(parents=True, exist_ok=True)
    model = Model()
    model.add_flavor(FLAVOR, **image.conf())
    if signature is not None:
        model.signature = signature
    model.save(str(path / "MLmodel"))


def image_of(model_dir: Path | str) -> ContainerImage:
    """The image a container version's (verified) model folder names."""
    import yaml

    doc = yaml.safe_load((Path(model_dir) / "MLmodel").read_text()) or {}
    conf = (doc.get("flavors") or {}).get(FLAVOR)
    if not isinstance(conf, dict) or not conf.get("image_id"):
        raise MlplatError("the model folder is not a container model version", where=str(model_dir))
    return ContainerImage(reference=str(conf["image"]), image_id=str(conf["image_id"]), digest=str(conf.get("digest")),
                          protocol=str(conf.get("protocol") or "mlflow"),
                          port=int(conf["port"]) if conf.get("port") else None, model_name=conf.get("model_name"))


# --- running ------------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    from mlplat.serving.staging import die_with_parent

    die_with_parent()


@dataclass
class RunningContainer:
    """A container started by :func:`start`: its name (the handle to stop it by), URL and log."""

    name: str
    url: str
    port: int
    image: ContainerImage
    log: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def last_lines(self, lines: int = LOG_LINES) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return "\n".join(text) or "(the container wrote nothing)"

    def stop(self) -> None:
        """Remove the container (this one, by its name) and reap the attached ``podman run``. Idempotent."""
        subprocess.run(podman_command("rm", "-f", "-t", "3", self.name), capture_output=True, env=engine_env(),
                       timeout=STOP_TIMEOUT_S + 30)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        try:
            self.log.unlink()
        except OSError:
            pass


def start(image: ContainerImage, *, what: str, timeout: float = READY_TIMEOUT_S,
          log_dir: Path | None = None) -> RunningContainer:
    """Run ``image`` (by its registered id) on a free loopback port and return once its protocol's
    readiness route answers 200. ``ExternalError`` naming the image, with the last lines of its log,
    when it exits or is not ready within ``timeout`` seconds (the container is removed then)."""
    if _podman("image", "exists", image.image_id).returncode != 0:
        raise NotFound(f"the image registered for {what} ({image.reference}, id {image.image_id[:12]}) is no longer "
                       "in the platform's container storage",
                       hint=f"pull or build it again there (`{' '.join(podman_command('pull', image.reference))}`); "
                            "a different image needs a new version (mlplat models register-image)")
    port = image.port or free_port()
    name = f"mlplat-model-{uuid.uuid4().hex[:12]}"
    init = ["--init"] if shutil.which("catatonit") else []
    cmd = podman_command("run", "--rm", *init, "--name", name, "--network", "host",
                         "--label", f"{MANAGED_LABEL}={what}", "-e", f"PORT={port}", "-e", "PYTHONUNBUFFERED=1",
                         image.image_id)
    handle, log_path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=log_dir)
    os.close(handle)
    with open(log_path, "ab") as log:
        # attached, as this process's child: if this process dies, podman gets SIGTERM and stops the container
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=engine_env(), preexec_fn=_die_with_parent, close_fds=True)
    running = RunningContainer(name, f"http://127.0.0.1:{port}", port, image, Path(log_path), proc)
    try:
        _wait_ready(running, what, timeout)
    except BaseException:
        running.stop()
        raise
    return running


def _wait_ready(running: RunningContainer, what: str, timeout: float) -> None:
    import httpx

    path = READY_PATHS[running.image.protocol]
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not running.alive():
            raise ExternalError(f"the container of {what} ({running.image.reference}) exited with code "
                                f"{running.proc.returncode} before it was ready",
                                hint="last lines of its log:\n" + running.last_lines())
        try:
            answer = httpx.get(running.url + path, timeout=2)
            if answer.status_code == 200:
                return
            last = f"HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    port = running.image.port
    raise ExternalError(
        f"the container of {what} ({running.image.reference}) did not answer GET {path} with 200 on port "
        f"{running.port} within {timeout:.0f}s (last: {last}); it was removed",
        hint=("it must listen on 127.0.0.1:$PORT (or on the --port it was registered with) and answer "
              f"{path}" + ("" if port is None else f"; registered with --port {port}")) +
             "\nlast lines of its log:\n" + running.last_lines())


@contextmanager
def running(image: ContainerImage, *, what: str, timeout: float = READY_TIMEOUT_S) -> Iterator[RunningContainer]:
    """A started container for the ``with`` block, removed after it (also on errors)."""
    container = start(image, what=what, timeout=timeout)
    try:
        yield container
    finally:
        container.stop()


# --- speaking to it -----------------------------------------------------------------------------------


class ProtocolError(ExternalError):
    """The container answered, but not as its protocol says."""


def _frame_body(X: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": {"columns": [str(c) for c in X.columns], "data": json.loads(X.to_json(orient="values"))}}


def _v2_body(X: pd.DataFrame) -> dict[str, Any]:
    inputs = []
    for column in X.columns:
        values = json.loads(X[column].to_json(orient="values"))
        numeric = X[column].dtype.kind in "biuf"
        inputs.append({"name": str(column), "shape": [len(X)], "datatype": "FP64" if numeric else "BYTES",
                       "data": values})
    return {"inputs": inputs}


def invoke(client: httpx.Client, image: ContainerImage, X: pd.DataFrame, *, model: str, what: str) -> NDArray[Any]:
    """The container's predictions for the rows of ``X``, one per row (or one row of scores per row), in
    its protocol. ``ProtocolError`` when it answers otherwise (a status other than 200, no
    ``predictions``/``outputs``, a count of rows that is not ``len(X)``)."""
    import numpy as np

    if image.protocol == "v2":
        route = f"/v2/models/{image.model_name or model}/infer"
        response = client.post(route, json=_v2_body(X))
    else:
        route = "/invocations"
        response = client.post(route, json=_frame_body(X))
    other = "v2" if image.protocol == "mlflow" else "mlflow"
    hint = (f"{what} was registered with --protocol {image.protocol}; if the image speaks the other protocol, "
            f"register it again with --protocol {other}")
    if response.status_code != 200:
        raise ProtocolError(f"the container of {what} answered POST {route} with HTTP {response.status_code}: "
                            f"{response.text[:300]}", hint=hint)
    try:
        doc = response.json()
    except ValueError:
        raise ProtocolError(f"the container of {what} answered POST {route} with a body that is not JSON: "
                            f"{response.text[:200]!r}", hint=hint) from None
    if image.protocol == "v2":
        outputs = doc.get("outputs") if isinstance(doc, dict) else None
        if not outputs or not isinstance(outputs, list) or "data" not in outputs[0]:
            raise ProtocolError(f"the container of {what} answered POST {route} without 'outputs' (the Open "
                                f"Inference Protocol's response): {str(doc)[:200]}", hint=hint)
        first = outputs[0]
        out = np.asarray(first["data"])
        shape = first.get("shape")
        if isinstance(shape, list) and shape and all(isinstance(s, int) for s in shape) and \
                int(np.prod(shape)) == out.size:
            out = out.reshape(shape)
    else:
        predictions = doc.get("predictions") if isinstance(doc, dict) else doc
        if predictions is None or not isinstance(predictions, list):
            raise ProtocolError(f"the container of {what} answered POST {route} without 'predictions' (the MLflow "
                                f"scoring protocol's response): {str(doc)[:200]}", hint=hint)
        out = np.asarray(predictions)
    if out.ndim == 0 or len(out) != len(X):
        raise ProtocolError(f"the container of {what} answered {out.size} value(s) in shape {list(out.shape)} for "
                            f"{len(X)} row(s)", hint="it must answer one prediction (or one row of class scores) "
                                                     "per row")
    return out


def score(model_dir: Path | str, X: pd.DataFrame, *, what: str, model: str | None = None) -> NDArray[Any]:
    """Start the version's container, score ``X`` in batches through its protocol, stop it."""
    import httpx
    import numpy as np

    image = image_of(model_dir)
    with running(image, what=what) as container, httpx.Client(base_url=container.url, timeout=60) as client:
        parts = [invoke(client, image, X.iloc[i:i + BATCH_ROWS], model=model or "model", what=what)
                 for i in range(0, len(X), BATCH_ROWS)]
    return np.concatenate(parts) if parts else np.asarray([])
