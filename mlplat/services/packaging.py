"""The container build context of a model version (provider-neutral).

    <context>/Containerfile.runtime  the runtime image: base + a venv with the pinned requirements
    <context>/Containerfile          the model image: runtime + model files + platform package + entrypoint
    <context>/requirements.txt       what the model server needs, pinned from the run's environment
    <context>/constraints.txt        every package of the run's environment, so transitive ones keep their versions
    <context>/model/                 the MLflow model, verified against the sealed manifest
    <context>/mlplat/                the platform package (the model server lives in it)
    <context>/entrypoint.sh          starts `python -m mlplat.serving.model_server --model-dir /model`
    <context>/context.json           what went in, with the sha256 of every file

Three images, each cached by its inputs:

* the base image ``localhost/mlplat-base:bookworm-<key>`` is a Debian root file system made with
  debootstrap from Debian packages (python3, python3-venv); the key covers the suite, the package
  list and the mirror;
* the runtime image ``localhost/mlplat-runtime:<key>`` adds ``/opt/venv`` with ``requirements.txt``
  installed from a wheel folder (``--no-index``) under ``constraints.txt``; the key covers the base
  and both files, so every version trained in the same environment shares it;
* the model image adds the model, the platform package and the entrypoint in one layer.

The context is written to a temporary folder and renamed into place, so a crash never
leaves a half-written context; the same inputs give the same digest (no rebuild).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import cast

from mlplat.lineage import file_sha256
from mlplat.services.audit import canonical

BASE_SUITE = "bookworm"
BASE_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Left out of the base image's root file system: package caches and the indexes apt downloaded.
BASE_EXCLUDES = ("./proc/*", "./sys/*", "./dev/*", "./run/*", "./tmp/*", "./var/cache/apt/archives/*.deb",
                 "./var/lib/apt/lists/*", "./usr/share/doc/*", "./usr/share/man/*", "./usr/share/locale/*")
BASE_RECIPE_VERSION = "1"  # bump when the way the base image is made changes
VENV = "/opt/venv"
MODEL_DIR = "/model"

# What the model server imports besides the model's own requirements (mlflow-skinny instead of mlflow:
# loading a pyfunc model needs neither the tracking server nor the UI).
SERVER_PACKAGES = ("mlflow-skinny", "uvicorn", "pyyaml", "click", "rich", "numpy", "pandas", "cloudpickle", "skops")
NOT_CONSTRAINED = {"mlplat", "pip", "setuptools", "wheel"}


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def base_key() -> str:
    """What the base image is made of; a change makes a new base image."""
    return _key(BASE_RECIPE_VERSION, BASE_SUITE, BASE_MIRROR, ",".join(BASE_PACKAGES), ",".join(BASE_EXCLUDES))


def base_image() -> str:
    return f"localhost/mlplat-base:{BASE_SUITE}-{base_key()[:12]}"


BASE_IMAGE = base_image()


def runtime_image(context: Path) -> str:
    """The runtime image of a build context, tagged by the base and the pinned requirements."""
    parts = [(context / f).read_text() for f in ("Containerfile.runtime", "requirements.txt", "constraints.txt")]
    return f"localhost/mlplat-runtime:{_key(base_image(), *parts)[:16]}"


CONTAINERFILE_RUNTIME = """\
# The runtime of the model server: the Debian base image (debootstrap) plus a venv with the pinned
# requirements. Build with the wheels mounted, no index needed:
#   buildah bud -v WHEELS:/wheels:ro -f Containerfile.runtime --build-arg BASE={base} -t RUNTIME .
ARG BASE={base}
FROM ${{BASE}}
COPY requirements.txt constraints.txt /opt/mlplat/
RUN python3 -m venv {venv} && {venv}/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \\
        --find-links /wheels -r /opt/mlplat/requirements.txt -c /opt/mlplat/constraints.txt
"""

CONTAINERFILE = """\
# The model image: the runtime image plus the model files, the platform package and the entrypoint.
#   buildah bud -f Containerfile --build-arg RUNTIME=RUNTIME -t IMAGE .
ARG RUNTIME=localhost/mlplat-runtime:latest
FROM ${{RUNTIME}}
COPY model {model_dir}
COPY mlplat /srv/mlplat
COPY entrypoint.sh /srv/entrypoint.sh
# The model files were verified against the manifest sealed at registration before they were copied in.
ENV PYTHONPATH=/srv PYTHON={venv}/bin/python MODEL_DIR={model_dir} MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true \\
    MODEL_NAME={name} MODEL_VERSION={version} PORT=8080
LABEL org.mlplat.model={name} org.mlplat.version={version}
EXPOSE 8080
ENTRYPOINT ["/bin/sh", "/srv/entrypoint.sh"]
"""

ENTRYPOINT = """\
#!/bin/sh
# The single-model server: MLflow scoring protocol at /invocations, Open Inference Protocol v2 at /v2.
set -eu
PYTHON=${PYTHON:-/opt/venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" -m mlplat.serving.model_server --model-dir "${MODEL_DIR:-/model}" --name "$MODEL_NAME" \\
    --version "$MODEL_VERSION" --host 127.0.0.1 --port "${PORT:-8080}" \\
    --max-body-bytes "${MAX_BODY_BYTES:-1000000}" ${PORT_FILE:+--port-file "$PORT_FILE"}
"""


class Pins(list[str]):
    """The pinned requirements (a list of ``name==version``) with the run's whole environment as
    ``constraints``: transitive packages are installed at the versions the model was trained with."""

    constraints: list[str]

    def __init__(self, pins: Iterable[str] = (), constraints: Iterable[str] = ()):
        super().__init__(pins)
        self.constraints = list(constraints)


def requirements(model_requirements: Sequence[str], environment_packages: dict[str, str]) -> Pins:
    """The model's pins plus the server's packages pinned to the run's versions (sorted, de-duplicated).
    ``mlflow`` becomes ``mlflow-skinny`` at the same version when the run had it (serving needs no UI)."""
    pins = {r.split("==")[0].strip().lower(): r.strip() for r in model_requirements if r.strip()}
    mlflow_pin = pins.get("mlflow")
    if mlflow_pin and "mlflow-skinny" in environment_packages:
        del pins["mlflow"]
        pins["mlflow-skinny"] = f"mlflow-skinny=={environment_packages['mlflow-skinny']}"
    for name in SERVER_PACKAGES:
        if name not in pins and name in environment_packages:
            pins[name] = f"{name}=={environment_packages[name]}"
    constraints = [f"{n}=={v}" for n, v in sorted(environment_packages.items())
                   if n not in NOT_CONSTRAINED and v and "+" not in v]
    return Pins((pins[k] for k in sorted(pins)), constraints)


def _copy_package(dest: Path) -> None:
    import mlplat

    source = Path(mlplat.__file__).parent
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def context_digest(folder: Path) -> str:
    files = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for fname in filenames:
            full = Path(dirpath) / fname
            rel = full.relative_to(folder).as_posix()
            if rel != "context.json":
                files[rel] = file_sha256(full)
    return hashlib.sha256(canonical(files).encode()).hexdigest()


def write_context(dest: Path, *, name: str, version: int, model_dir: Path, requirements_pinned: Sequence[str],
                  artifact_digest: str, base_image: str | None = None,
                  constraints: Sequence[str] | None = None) -> str:
    """Write the build context at ``dest`` (replacing an incomplete one); return its digest.
    If ``dest`` already holds a complete context for the same artifact, keep it (idempotent)."""
    base_image = base_image or BASE_IMAGE
    if constraints is None:
        constraints = getattr(requirements_pinned, "constraints", ())
    marker = dest / "context.json"
    if marker.is_file():
        try:
            doc = json.loads(marker.read_text())
            if doc.get("artifact_digest") == artifact_digest and doc.get("digest") == context_digest(dest):
                return cast(str, doc["digest"])
        except ValueError:
            pass
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    try:
        (tmp / "Containerfile.runtime").write_text(CONTAINERFILE_RUNTIME.format(base=base_image, venv=VENV))
        (tmp / "Containerfile").write_text(CONTAINERFILE.format(name=name, version=version, venv=VENV,
                                                                model_dir=MODEL_DIR))
        (tmp / "entrypoint.sh").write_text(ENTRYPOINT)
        (tmp / "entrypoint.sh").chmod(0o755)
        (tmp / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements_pinned))
        (tmp / "constraints.txt").write_text("".join(f"{c}\n" for c in constraints))
        shutil.copytree(model_dir, tmp / "model")
        _copy_package(tmp / "mlplat")
        digest = context_digest(tmp)
        (tmp / "context.json").write_text(json.dumps(
            {"model": name, "version": version, "artifact_digest": artifact_digest, "digest": digest,
             "base_image": base_image, "requirements": list(requirements_pinned),
             "constraints": len(constraints)}, indent=2, sort_keys=True))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return digest
