"""Delivery on the local provider: build contexts under the stack's state, images with buildah
when buildah and podman are installed, and the staging endpoint as a container or a local process.

Engine choice, ``MLPLAT_CONTAINER_ENGINE``:

* ``auto`` (default): a container when ``buildah`` and ``podman`` are both on PATH, else a local process;
* ``podman``: always a container (an error names what is missing);
* ``none``: always a local process.

Container storage: podman and buildah run with ``--storage-driver vfs`` (works without
overlay mounts and inside other containers) on a storage of the platform's own, so it never
clashes with a user's podman set-up: ``MLPLAT_CONTAINER_STORAGE`` or ``/var/lib/mlplat/containers``
(root) / ``~/.local/share/mlplat/containers``; run state under ``/run/mlplat/containers``. The
same folder keeps the debootstrap root file system (``base/<key>.tar``, so a wiped storage
re-imports it in seconds) and the wheels the runtime images install from (``wheels/``, filled
on the host by ``pip wheel`` with the host's index settings; the image build needs no network).
``podman_command()`` gives the exact command line, e.g. for ``podman image ls``.

A staging container runs attached to a ``podman run --rm --init`` child of the promoting
process: if that process dies, the parent-death signal reaches podman, which passes it on
to the container, which then stops and is removed. Every container carries the labels
``org.mlplat.state`` (the stack's state folder) and ``org.mlplat.owner`` (the promoting pid);
before starting one, containers of the same state whose owner is gone are removed. Model images
carry ``org.mlplat.state`` too: after a build, images of state folders that no longer exist go.

Without a container engine the same entrypoint (``python -m mlplat.serving.model_server``)
runs as a child process on a free loopback port; the parent-death signal ends it if the
promoting process is killed, and a rerun finds it gone and starts a fresh one.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mlplat.container_engine import (  # noqa: F401  (re-exported: the platform's podman set-up)
    CONTAINERS_CONF,
    STORAGE_ENV,
    buildah_command,
    engine_env,
    podman_command,
    storage_dir,
)
from mlplat.contracts import DeliveryPipeline, Endpoint, Package
from mlplat.errors import ExternalError, MlplatError
from mlplat.services import packaging
from mlplat.serving.staging import ServerProcesses, wait_healthy
from mlplat_providers.local.layout import StateLayout

CONTAINER_START_TIMEOUT_S = 600.0  # vfs copies the image's file system for every new container
ENGINE_ENV = "MLPLAT_CONTAINER_ENGINE"
STATE_LABEL = "org.mlplat.state"
OWNER_LABEL = "org.mlplat.owner"


def container_engine() -> str | None:
    """``buildah`` when images are built and run (see ``MLPLAT_CONTAINER_ENGINE``), else ``None``."""
    choice = os.environ.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    if choice in ("none", "process", "off"):
        return None
    found = bool(shutil.which("buildah") and shutil.which("podman"))
    if choice == "auto":
        return "buildah" if found else None
    if choice in ("podman", "buildah", "container"):
        if not found:
            missing = [t for t in ("buildah", "podman") if not shutil.which(t)]
            raise MlplatError(f"{ENGINE_ENV}={choice} but {' and '.join(missing)} not installed",
                              where=ENGINE_ENV, hint="apt-get install podman buildah runc debootstrap, or set "
                                                     f"{ENGINE_ENV}=auto to fall back to a local process")
        return "buildah"
    raise MlplatError(f"{ENGINE_ENV}={choice!r} is not an engine choice", where=ENGINE_ENV,
                      hint="use auto, podman or none")


def _run(cmd: Sequence[str], *, what: str, timeout: float = 1800, env: dict[str, str] | None = None,
         log: Path | None = None) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExternalError(f"{what} failed: {exc}") from exc
    if log is not None:
        with log.open("a") as handle:
            handle.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        raise ExternalError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}",
                            where=str(log) if log else None)
    return done.stdout.strip()


def _exists(kind: str, ref: str, env: dict[str, str]) -> bool:
    return subprocess.run(podman_command(kind, "exists", ref), capture_output=True, env=env).returncode == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalDeliveryPipeline(DeliveryPipeline):
    def __init__(self, spec, ctx):
        self.spec = spec
        self.ctx = ctx
        self.layout = StateLayout(spec.state_dir)
        self.procs = ServerProcesses()

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
        env = engine_env()
        image = f"localhost/mlplat/{name}:{version}-{digest[:12]}"
        if not _exists("image", image, env):
            log = dest.parent / f"{version}.build.log"
            runtime = self.ensure_runtime_image(dest, env, log)
            _run(buildah_command("bud", "--isolation", "chroot", "--network", "host", "--layers=false",
                                 "--build-arg", f"RUNTIME={runtime}", "--label", f"{STATE_LABEL}={self.layout.root}",
                                 "-t", image, "-f", str(dest / "Containerfile"), str(dest)),
                 what="buildah bud (model image)", env=env, log=log)
            self.prune_images(env)
        return Package(str(dest), digest, image=image, engine="buildah")

    def prune_images(self, env: dict[str, str] | None = None) -> list[str]:
        """Remove model images whose stack state folder no longer exists (deleted projects); return them.
        Base and runtime images carry no state label and stay cached."""
        env = env or engine_env()
        out = subprocess.run(podman_command("images", "--filter", f"label={STATE_LABEL}", "--format", "json"),
                             capture_output=True, text=True, env=env)
        if out.returncode != 0:
            return []
        gone = [row["Id"] for row in json.loads(out.stdout or "[]")
                if not Path(str((row.get("Labels") or {}).get(STATE_LABEL, ""))).is_dir()]
        if gone:
            subprocess.run(podman_command("rmi", "-f", *gone), capture_output=True, env=env)
        return gone

    # --- images ------------------------------------------------------------------------------

    def ensure_base_image(self, env: dict[str, str] | None = None, log: Path | None = None) -> str:
        """The base image from Debian packages (debootstrap), built once per recipe and cached twice:
        as an image in the storage and as the root file system's tar beside it."""
        env = env or engine_env()
        base = packaging.base_image()
        if _exists("image", base, env):
            return base
        from mlplat.locking import stack_lock

        folder = storage_dir() / "base"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with stack_lock(folder / "build.lock", operation="base image build", wait_seconds=1800):
            if _exists("image", base, env):
                return base
            tar = folder / f"{packaging.base_key()[:16]}.tar"
            if not tar.is_file():
                self._debootstrap(tar, log)
            _run(podman_command("import", "--message", "mlplat base: debootstrap " + packaging.BASE_SUITE,
                                str(tar), base), what="podman import (base image)", env=env, log=log)
        return base

    def _debootstrap(self, tar: Path, log: Path | None) -> None:
        if not shutil.which("debootstrap"):
            raise MlplatError("buildah and podman are installed but debootstrap is not; it builds the base image",
                              hint="apt-get install debootstrap, or set MLPLAT_CONTAINER_ENGINE=none to run the "
                                   "staging endpoint as a local process")
        with tempfile.TemporaryDirectory(prefix="rootfs-", dir=tar.parent) as tmp:
            rootfs = Path(tmp) / "rootfs"
            try:
                _run(["debootstrap", "--variant=minbase", f"--include={','.join(packaging.BASE_PACKAGES)}",
                      packaging.BASE_SUITE, str(rootfs), packaging.BASE_MIRROR], what="debootstrap", log=log)
            finally:  # a failed debootstrap can leave its /proc and /sys mounts behind
                for mount in ("proc", "sys"):
                    if os.path.ismount(rootfs / mount):
                        subprocess.run(["umount", "-l", str(rootfs / mount)], capture_output=True)
            partial = Path(tmp) / "rootfs.tar"
            _run(["tar", "-C", str(rootfs), "--numeric-owner",
                  *[f"--exclude={e}" for e in packaging.BASE_EXCLUDES], "-cf", str(partial), "."],
                 what="tar (base root file system)", log=log)
            os.replace(partial, tar)

    def ensure_runtime_image(self, context: Path, env: dict[str, str], log: Path | None = None) -> str:
        """Base + venv with the context's pinned requirements; shared by every context with the same pins."""
        runtime = packaging.runtime_image(context)
        if _exists("image", runtime, env):
            return runtime
        from mlplat.locking import stack_lock

        base = self.ensure_base_image(env, log)
        wheels = storage_dir() / "wheels"
        wheels.mkdir(parents=True, exist_ok=True, mode=0o700)
        with stack_lock(storage_dir() / "base" / "runtime.lock", operation="runtime image build", wait_seconds=1800):
            if _exists("image", runtime, env):
                return runtime
            # The host's pip (its index, certificates and caches) fetches or builds every wheel once.
            _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                  "--wheel-dir", str(wheels), "--find-links", str(wheels),
                  "-r", str(context / "requirements.txt"), "-c", str(context / "constraints.txt")],
                 what="pip wheel (the runtime image's requirements)", log=log)
            _run(buildah_command("bud", "--isolation", "chroot", "--network", "host", "--layers=false",
                                 "--build-arg", f"BASE={base}", "-v", f"{wheels}:/wheels:ro",
                                 "-t", runtime, "-f", str(context / "Containerfile.runtime"), str(context)),
                 what="buildah bud (runtime image)", env=env, log=log)
        return runtime

    # --- endpoints ---------------------------------------------------------------------------

    def start_endpoint(self, package: Package, name: str, version: int) -> Endpoint:
        logs = Path(package.context_dir).parent / f"{version}.endpoint.log"
        if package.image:
            return self._start_container(package, name, version, logs)
        return self.procs.start(Path(package.context_dir) / "model", name=name, version=version,
                                max_body_bytes=self.spec.serving.max_body_bytes, logs=logs, tmp_dir=self._tmp())

    def _start_container(self, package: Package, name: str, version: int, logs: Path) -> Endpoint:
        env = engine_env()
        self.sweep_containers(env)
        port = _free_port()
        cname = f"mlplat-{name}-{version}-{os.getpid()}-{port}"
        init = ["--init"] if shutil.which("catatonit") else []  # signals reach the server even while it loads
        cmd = podman_command("run", "--rm", *init, "--name", cname, "--network", "host",
                             "--label", f"{STATE_LABEL}={self.layout.root}", "--label", f"{OWNER_LABEL}={os.getpid()}",
                             "-e", f"PORT={port}", "-e", f"MAX_BODY_BYTES={self.spec.serving.max_body_bytes}",
                             "-e", "PYTHONUNBUFFERED=1", package.image)
        with logs.open("ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
        # Attached, as our child: if this process dies, podman gets SIGTERM and passes it to the container.
        proc = self.procs.spawn(cmd, logs=logs, env=env)
        endpoint = Endpoint(f"http://127.0.0.1:{port}", "container", cname, port)
        try:
            wait_healthy(endpoint, lambda: proc.poll() is None, logs, timeout=CONTAINER_START_TIMEOUT_S)
        except BaseException:
            self.stop_endpoint(endpoint)
            raise
        return endpoint

    def sweep_containers(self, env: dict[str, str] | None = None) -> list[str]:
        """Remove this state's containers whose promoting process is gone; return their names."""
        env = env or engine_env()
        out = subprocess.run(podman_command("ps", "-a", "--filter", f"label={STATE_LABEL}={self.layout.root}",
                                            "--format", "json"), capture_output=True, text=True, env=env)
        if out.returncode != 0:
            return []
        stale = []
        for row in json.loads(out.stdout or "[]"):
            owner = str((row.get("Labels") or {}).get(OWNER_LABEL, ""))
            if not owner.isdigit() or not _pid_alive(int(owner)):
                stale.extend(row.get("Names") or [row.get("Id")])
        if stale:
            subprocess.run(podman_command("rm", "-f", "-t", "3", *stale), capture_output=True, env=env)
        return stale

    def _tmp(self) -> Path:
        self.layout.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.layout.tmp

    def endpoint_alive(self, endpoint: Endpoint) -> bool:
        if endpoint.kind == "container":
            out = subprocess.run(podman_command("container", "inspect", "-f", "{{.State.Running}}", endpoint.handle),
                                 capture_output=True, text=True, env=engine_env())
            return out.returncode == 0 and out.stdout.strip() == "true"
        return self.procs.alive(int(endpoint.handle))

    def stop_endpoint(self, endpoint: Endpoint) -> None:
        if endpoint.kind == "container":
            subprocess.run(podman_command("rm", "-f", "-t", "5", endpoint.handle), capture_output=True,
                           env=engine_env())
            for pid, child in list(self.procs.children.items()):  # the attached `podman run` ends with it
                if child.args and endpoint.handle in child.args:
                    try:
                        child.wait(30)
                    except subprocess.TimeoutExpired:
                        child.kill()
                        child.wait(5)
                    self.procs.children.pop(pid, None)
            return
        if self.endpoint_alive(endpoint):
            self.procs.kill(int(endpoint.handle))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



