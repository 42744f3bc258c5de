"""Manifests: the sha256 of every file of a model version, sealed with the stack's key.

``digest`` (sha256 of the canonical manifest) names the artifact in gate reports,
approvals and the audit log; ``seal`` (HMAC-SHA256 of the same bytes with the
stack's secret) proves the manifest itself was written by the platform. A version's
files are checked against both before every promotion and every load: a changed,
missing or added file is refused, naming the file.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Any

from mlplat.errors import IntegrityError
from mlplat.lineage import file_sha256
from mlplat.services.audit import canonical


def _files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath) / name
            if full.is_symlink():
                raise IntegrityError("model artifacts may not contain symbolic links", where=str(full))
            out.append(full.relative_to(root).as_posix())
    return sorted(out)


def build(root: Path, **meta: Any) -> dict[str, Any]:
    """The manifest of every file under ``root`` plus ``meta`` (model name, run id...)."""
    return {"files": {rel: file_sha256(root / rel) for rel in _files(root)}, **meta}


def digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(manifest).encode("utf-8")).hexdigest()


def seal(manifest: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, canonical(manifest).encode("utf-8"), hashlib.sha256).hexdigest()


def verify(root: Path, manifest: dict[str, Any], sealed: str, key: bytes, *, what: str) -> None:
    """Raise ``IntegrityError`` naming the first problem: a forged manifest, or a changed, missing or extra file."""
    check_seal(manifest, sealed, key, what=what)
    verify_files(root, manifest, what=what)


def check_seal(manifest: dict[str, Any], sealed: str, key: bytes, *, what: str) -> None:
    """``IntegrityError`` unless ``sealed`` is the seal of ``manifest`` under ``key``."""
    if not hmac.compare_digest(seal(manifest, key), sealed):
        raise IntegrityError(f"the manifest of {what} does not match its seal: it was altered in the platform database",
                             hint="restore the platform database from a backup; do not serve this version")


def verify_files(root: Path, manifest: dict[str, Any], *, what: str) -> None:
    """The file half of :func:`verify`, for a manifest whose seal was checked where the key is
    (a client of ``mlplat server`` gets the manifest from the server, which holds the key)."""
    expected: dict[str, str] = manifest["files"]
    present = set(_files(root))
    for rel, sha in sorted(expected.items()):
        path = root / rel
        if rel not in present:
            raise IntegrityError(f"file '{rel}' of {what} is missing", where=str(path),
                                 hint="the artifact store was changed after registration; register a new version")
        if file_sha256(path) != sha:
            raise IntegrityError(f"file '{rel}' of {what} was modified after registration (sha256 differs from the "
                                 f"sealed manifest)", where=str(path),
                                 hint="refusing to load it; register a new version from a tracked run")
    extra = sorted(present - set(expected))
    if extra:
        raise IntegrityError(f"file '{extra[0]}' of {what} was added after registration", where=str(root / extra[0]),
                             hint="refusing to load it; register a new version from a tracked run")
