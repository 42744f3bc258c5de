"""Python environments for training jobs and pipeline steps on this machine, cached by lock hash.

An environment is built from a requirements lock (the project's committed ``requirements.lock``,
else the running environment's pinned list: :func:`mlplat.services.source.bundle_source`
decides) and kept under ``<state>/training/envs/<sha256 of the lock>/``: a virtualenv that
layers on the running interpreter's packages (a ``.pth`` adds its site folders, as
``--system-site-packages`` would for a system Python), into which only the pinned requirements
that interpreter lacks are installed. So a lock the running interpreter satisfies builds an
environment without installing anything (and without the network). Training jobs and pipeline
steps with the same lock share one environment; a changed lock gets a new one. A build is
serialised by a file lock and marked ready (``ready.json``) only when complete, so a crash
mid-build leaves nothing a later job would trust.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlplat.errors import MlplatError

READY = "ready.json"

_CHECK = r"""
import json, sys
from importlib import metadata
missing = []
for raw in open(sys.argv[1], encoding="utf-8"):
    line = raw.split("#", 1)[0].strip()
    if not line:
        continue
    if " @ " in line:
        name, version = line.split(" @ ", 1)[0].strip(), None
    elif "==" in line:
        name, version = (part.strip() for part in line.split("==", 1))
    else:
        missing.append(line)
        continue
    try:
        found = metadata.version(name)
    except metadata.PackageNotFoundError:
        missing.append(line)
        continue
    if version is not None and found != version:
        missing.append(line)
print(json.dumps(missing))
"""


def envs_root(state_dir: Path | str) -> Path:
    """Where a stack's environments are cached (one folder per lock hash)."""
    return Path(state_dir) / "training" / "envs"


def parent_site_dirs() -> list[str]:
    """The running interpreter's package folders (its venv's, when it runs in one)."""
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    return list(dict.fromkeys(d for d in dirs if Path(d).is_dir()))


def _ready(env_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((env_dir / READY).read_text(encoding="utf-8"))
    return {**doc, "dir": str(env_dir), "reused": True}


def _mark_ready(env_dir: Path, doc: dict[str, Any]) -> None:
    partial = env_dir / f".{READY}.{os.getpid()}.partial"
    with partial.open("w", encoding="utf-8") as handle:
        json.dump(doc, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, env_dir / READY)


def ensure_environment(envs_root: Path, lock: Path, lock_hash: str,
                       say: Callable[[str], None] = print) -> tuple[Path, dict[str, Any]]:
    """The python of the environment for ``lock`` (built now, or reused) and its description
    (``dir``, ``installed``: the pins it had to install, ``reused``, ``created``, ``base``).

    Raises :class:`MlplatError` when pip cannot install a missing pin (the environment is then
    not marked ready), ``OSError``/``subprocess.SubprocessError`` when the virtualenv cannot be made."""
    env_dir = envs_root / lock_hash
    python = env_dir / "bin" / "python"
    if (env_dir / READY).is_file():
        return python, _ready(env_dir)
    envs_root.mkdir(parents=True, exist_ok=True)
    fd = os.open(envs_root / f".{lock_hash}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if (env_dir / READY).is_file():  # another job built it while we waited
            return python, _ready(env_dir)
        shutil.rmtree(env_dir, ignore_errors=True)  # a build that crashed part-way
        say(f"mlplat: building the environment for lock {lock_hash[:12]} in {env_dir}")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True,
                       capture_output=True, timeout=600)
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True, timeout=120).stdout.strip()
        # ``import`` lines of a .pth run at start-up: addsitedir also reads the parent's own .pth
        # files (editable installs), which a plain path line would not.
        (Path(purelib) / "_mlplat_parent.pth").write_text(
            "".join(f"import site; site.addsitedir({d!r})\n" for d in parent_site_dirs()))
        check = subprocess.run([str(python), "-c", _CHECK, str(lock)], check=True, capture_output=True,
                               text=True, timeout=300)
        missing = json.loads(check.stdout)
        if missing:
            say(f"mlplat: installing {len(missing)} pinned requirement(s) the base environment lacks: "
                + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
            result = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                                     "--no-input", *missing], capture_output=True, text=True, timeout=3600)
            if result.returncode != 0:
                raise MlplatError("the environment could not be built: pip install failed:\n"
                                  + (result.stderr or result.stdout)[-2000:])
        ready = {"lock_hash": lock_hash, "installed": missing, "base": sys.executable, "created": time.time()}
        _mark_ready(env_dir, ready)
        return python, {**ready, "dir": str(env_dir), "reused": False}
    finally:
        os.close(fd)
