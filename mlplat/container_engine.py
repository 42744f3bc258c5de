"""The platform's podman/buildah set-up: its own container storage and settings.

podman and buildah run with ``--storage-driver vfs`` (works without overlay mounts and inside
other containers) on a storage of the platform's own, so it never clashes with a user's podman
set-up: ``MLPLAT_CONTAINER_STORAGE`` or ``/var/lib/mlplat/containers`` (root) /
``~/.local/share/mlplat/containers``; run state under ``/run/mlplat/containers``.
``podman_command()`` gives the exact command line, e.g. for ``podman image ls``.

Shared by every part that runs containers on this machine: the local provider's packaging and
staging endpoints, and the bring-your-own-container model versions (:mod:`mlplat.services.container_models`).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

STORAGE_ENV = "MLPLAT_CONTAINER_STORAGE"
CONTAINERS_CONF = """\
# podman/buildah settings for mlplat's own container storage
[containers]
default_ulimits = []
init_path = "{init}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
"""


def storage_dir() -> Path:
    if os.environ.get(STORAGE_ENV):
        return Path(os.environ[STORAGE_ENV]).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/mlplat/containers")
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "mlplat" / "containers"


def run_dir() -> Path:
    if os.environ.get(STORAGE_ENV):
        return Path(os.environ[STORAGE_ENV]).expanduser() / "run"
    if os.geteuid() == 0:
        return Path("/run/mlplat/containers")
    return Path(os.environ.get("XDG_RUNTIME_DIR") or storage_dir()) / "mlplat-containers"


def global_flags() -> list[str]:
    return ["--root", str(storage_dir() / "storage"), "--runroot", str(run_dir()), "--storage-driver", "vfs"]


def podman_command(*args: str) -> list[str]:
    """``podman`` with the platform's storage flags, e.g. ``podman_command("image", "exists", ref)``."""
    return ["podman", *global_flags(), *args]


def buildah_command(*args: str) -> list[str]:
    return ["buildah", *global_flags(), *args]


def engine_env() -> dict[str, str]:
    """The environment for podman/buildah: our containers.conf (no default ulimits, runc, cgroupfs)."""
    conf = storage_dir() / "containers.conf"
    init = shutil.which("catatonit") or "/usr/libexec/podman/catatonit"
    text = CONTAINERS_CONF.format(init=init)
    if not conf.is_file() or conf.read_text() != text:
        conf.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = conf.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(conf)
    run_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}
