"""The container build context of a model version (provider-neutral).

    <context>/Containerfile      the image recipe (base image built from Debian packages)
    <context>/requirements.txt   model + server requirements, pinned from the run's environment
    <context>/model/             the MLflow model, verified against the sealed manifest
    <context>/mlplat/            the platform package (the model server lives in it)
    <context>/entrypoint.sh      starts `python -m mlplat.serving.model_server`
    <context>/context.json       what went in, with the sha256 of every file

The context is written to a temporary folder and renamed into place, so a crash never
leaves a half-written context; the same inputs give the same digest (no rebuild).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from mlplat.services.audit import canonical
from mlplat.services.manifest import file_sha256

BASE_IMAGE = "localhost/mlplat-base:bookworm"
# What the model server imports besides the model's own requirements.
SERVER_PACKAGES = ("mlflow", "uvicorn", "starlette", "pyyaml", "pydantic", "click", "rich", "numpy", "pandas",
                   "pyarrow")

CONTAINERFILE = """\
# Built by `mlplat models promote`; the base image comes from Debian packages (debootstrap).
ARG BASE={base}
FROM ${{BASE}}
WORKDIR /srv
COPY requirements.txt /srv/requirements.txt
RUN python3 -m venv /srv/venv && /srv/venv/bin/pip install --no-cache-dir -r /srv/requirements.txt
COPY mlplat /srv/mlplat
COPY model /srv/model
COPY entrypoint.sh /srv/entrypoint.sh
# The model files were verified against the manifest sealed at registration before they were copied in.
ENV PYTHONPATH=/srv MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true MODEL_NAME={name} MODEL_VERSION={version} PORT=8080
EXPOSE 8080
ENTRYPOINT ["/bin/sh", "/srv/entrypoint.sh"]
"""

ENTRYPOINT = """\
#!/bin/sh
# The single-model server: MLflow scoring protocol at /invocations, Open Inference Protocol v2 at /v2.
set -eu
PYTHON=${PYTHON:-/srv/venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" -m mlplat.serving.model_server --model-dir "${MODEL_DIR:-/srv/model}" --name "$MODEL_NAME" \\
    --version "$MODEL_VERSION" --host 127.0.0.1 --port "${PORT:-8080}" ${PORT_FILE:+--port-file "$PORT_FILE"}
"""


def requirements(model_requirements: Sequence[str], environment_packages: dict[str, str]) -> list[str]:
    """The model's pins plus the server's packages pinned to the run's versions (sorted, de-duplicated)."""
    pins = {r.split("==")[0].lower(): r for r in model_requirements}
    for name in SERVER_PACKAGES:
        if name not in pins and name in environment_packages:
            pins[name] = f"{name}=={environment_packages[name]}"
    return [pins[k] for k in sorted(pins)]


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
                  artifact_digest: str, base_image: str = BASE_IMAGE) -> str:
    """Write the build context at ``dest`` (replacing an incomplete one); return its digest.
    If ``dest`` already holds a complete context for the same artifact, keep it (idempotent)."""
    marker = dest / "context.json"
    if marker.is_file():
        try:
            doc = json.loads(marker.read_text())
            if doc.get("artifact_digest") == artifact_digest and doc.get("digest") == context_digest(dest):
                return doc["digest"]
        except ValueError:
            pass
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    try:
        (tmp / "Containerfile").write_text(CONTAINERFILE.format(base=base_image, name=name, version=version))
        (tmp / "entrypoint.sh").write_text(ENTRYPOINT)
        (tmp / "entrypoint.sh").chmod(0o755)
        (tmp / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements_pinned))
        shutil.copytree(model_dir, tmp / "model")
        _copy_package(tmp / "mlplat")
        digest = context_digest(tmp)
        (tmp / "context.json").write_text(json.dumps(
            {"model": name, "version": version, "artifact_digest": artifact_digest, "digest": digest,
             "base_image": base_image, "requirements": list(requirements_pinned)}, indent=2, sort_keys=True))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return digest
