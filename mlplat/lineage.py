"""What a run needs to be reproduced: code version, environment, dataset fingerprints, feature views."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from mlplat.errors import MlplatError

CHUNK = 1 << 20


@dataclass
class CodeVersion:
    in_git: bool
    commit: str | None = None
    branch: str | None = None
    dirty: bool = False
    diff_sha256: str | None = None
    repo_root: str | None = None
    diff: str = field(default="", repr=False)
    remote: str | None = None
    untracked_omitted: list[str] = field(default_factory=list)

    def tags(self) -> dict[str, str]:
        if not self.in_git:
            return {"mlplat.code.commit": "none (not a git repository)", "mlplat.code.in_git": "false"}
        out = {
            "mlplat.code.in_git": "true",
            "mlplat.code.commit": self.commit or "none (no commits yet)",
            "mlplat.code.branch": self.branch or "(detached)",
            "mlplat.code.dirty": str(self.dirty).lower(),
            "mlflow.source.git.commit": self.commit or "",
        }
        if self.diff_sha256:
            out["mlplat.code.diff_sha256"] = self.diff_sha256
        return out


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def _git_bytes(args: list[str], cwd: Path, ok: tuple[int, ...] = (0,)) -> bytes | None:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode in ok else None


# The platform's own folder in a project: every stack's state and the Pulumi backend live under it.
STATE_ROOT = ".mlplat"
# Untracked files up to this size travel in code.diff (so a reproduction has them); bigger ones are
# only hashed into the digest and listed, since a data file is checked by its own hash instead.
UNTRACKED_IN_DIFF_MAX = 1 << 20
# Python's bytecode cache is written by importing the code, and embeds the source's mtime: an
# untracked one would make every run, and every reproduction of it, differ from the last.
BYTECODE = (":(top,exclude,glob)**/__pycache__/**", ":(top,exclude,glob)**/*.py[co]")


def _exclusions(root: Path, exclude: list[Path] | tuple[Path, ...]) -> list[str]:
    """Git pathspecs (relative to the work-tree root) that leave ``exclude`` folders out."""
    out = []
    for folder in exclude:
        try:
            rel = Path(folder).resolve().relative_to(root.resolve())
        except ValueError:  # outside the repository: git never sees it
            continue
        if rel.parts:
            out.append(f":(top,exclude,literal){rel.as_posix()}")
    return out


def code_version(cwd: Path | None = None, *, exclude: list[Path] | tuple[Path, ...] = ()) -> CodeVersion:
    """The git commit, branch, dirty flag and a hash of uncommitted changes (tracked and untracked).

    Folders in ``exclude`` (the platform's own state) are left out of the dirty check and the diff.
    ``diff`` holds the tracked changes plus every untracked file up to ``UNTRACKED_IN_DIFF_MAX``
    as a new-file patch, so ``git apply`` on a checkout of ``commit`` rebuilds the work tree.
    ``diff_sha256`` covers the tracked diff and each untracked file's path and *content*.
    """
    cwd = cwd or Path.cwd()
    root = _git(["rev-parse", "--show-toplevel"], cwd)
    if root is None:
        return CodeVersion(in_git=False)
    root_path = Path(root.strip())
    commit = (_git(["rev-parse", "--verify", "-q", "HEAD"], root_path) or "").strip() or None
    branch = (_git(["rev-parse", "--abbrev-ref", "HEAD"], root_path) or "").strip() or None
    remote = (_git(["config", "--get", "remote.origin.url"], root_path) or "").strip() or None
    spec = ["--", ".", *_exclusions(root_path, exclude)]
    tracked = _git_bytes(["diff", "HEAD", "--binary", *spec] if commit else ["diff", "--binary", *spec], root_path)
    listed = _git_bytes(["ls-files", "--others", "--exclude-standard", "-z", *spec, *BYTECODE], root_path) or b""
    untracked = sorted(p for p in listed.decode("utf-8", "surrogateescape").split("\0") if p)
    diff = tracked or b""
    omitted: list[str] = []
    hasher = hashlib.sha256(diff)
    for rel in untracked:
        target = root_path / rel
        hasher.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        if target.is_symlink():
            hasher.update(os.readlink(target).encode("utf-8", "surrogateescape"))
        elif target.is_file():
            hasher.update(file_sha256(target).encode())
        hasher.update(b"\0")
        size = target.lstat().st_size if target.exists() or target.is_symlink() else 0
        if size > UNTRACKED_IN_DIFF_MAX:
            omitted.append(rel)
            continue
        # exit 1 means "files differ", which is the point: a patch creating the file
        patch = _git_bytes(["diff", "--no-index", "--binary", "--", "/dev/null", rel], root_path, ok=(0, 1))
        diff += patch or b""
    dirty = bool(diff) or bool(omitted)
    return CodeVersion(True, commit, None if branch == "HEAD" else branch, dirty,
                       hasher.hexdigest() if dirty else None, str(root_path),
                       diff.decode("utf-8", "surrogateescape"), remote=remote, untracked_omitted=omitted)


def relative_inside(path: Path, root: Path | None) -> str | None:
    """``path`` relative to ``root`` in POSIX form (``.`` for the root itself), or ``None`` when outside."""
    if root is None:
        return None
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix() or "."
    except (ValueError, OSError):
        return None


def state_ignore_hint(project_dir: Path, state_dir: Path) -> str | None:
    """Keep the platform's state out of git; return a hint when the user must do it.

    A state folder under the project's ``.mlplat/`` is made to ignore itself: ``.mlplat/.gitignore``
    holds ``*``, as pytest and ruff do with their caches, so no file of the user's changes and
    ``git add -A`` can never pick up a key or a database. A state folder configured elsewhere in a
    git work tree that git does not already ignore gets a hint naming the line to add.
    """
    project_dir, state_dir = Path(project_dir).resolve(), Path(state_dir).resolve()
    state_root = project_dir / STATE_ROOT
    if state_dir.is_relative_to(state_root):
        marker = state_root / ".gitignore"
        if not marker.exists():
            state_root.mkdir(parents=True, exist_ok=True)
            marker.write_text("# created by mlplat: the platform's state never belongs in git\n*\n")
        return None
    if _git(["rev-parse", "--show-toplevel"], project_dir) is None:
        return None
    try:
        rel = state_dir.relative_to(project_dir).as_posix()
    except ValueError:
        return None  # outside the project
    if _git(["check-ignore", "-q", rel], project_dir) is not None:
        return None  # exit 0: already ignored
    return (f"the state folder {rel}/ is not ignored by git: add the line '/{rel}/' to .gitignore "
            "so its keys and databases are never committed")


def _install_source(dist) -> dict[str, Any] | None:
    """Where a distribution was installed from when it was not an index (PEP 610 ``direct_url.json``)."""
    try:
        text = dist.read_text("direct_url.json")
    except OSError:
        return None
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    url = str(doc.get("url", ""))
    if "vcs_info" in doc:
        vcs = doc["vcs_info"]
        return {"kind": "vcs", "url": f"{vcs.get('vcs', 'git')}+{url}@{vcs.get('commit_id', '')}"}
    if "dir_info" in doc:
        from urllib.parse import unquote, urlparse

        return {"kind": "dir", "path": unquote(urlparse(url).path),
                "editable": bool(doc["dir_info"].get("editable"))}
    if url.startswith(("http://", "https://")):
        return {"kind": "archive", "url": url}
    return {"kind": "file", "url": url}


def environment() -> dict[str, Any]:
    """Python, OS, every installed distribution with its version, and (``sources``) where the ones
    that did not come from a package index were installed from (a folder, a VCS URL, an archive)."""
    packages: dict[str, str] = {}
    sources: dict[str, dict[str, Any]] = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            packages[name.lower()] = dist.version
            source = _install_source(dist)
            if source is not None:
                sources[name.lower()] = source
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "os": platform.platform(),
        "machine": platform.machine(),
        "packages": dict(sorted(packages.items())),
        "sources": dict(sorted(sources.items())),
    }


# Installers, not dependencies (``pip freeze`` leaves them out too): a fresh venv brings its own.
PACKAGING_TOOLS = frozenset({"pip", "setuptools", "wheel", "distribute"})


def requirements_lock(env: dict[str, Any]) -> str:
    """A pip requirements file pinning the run's environment.

    Index packages are pinned ``name==version``; VCS and URL installs as ``name @ url``. Packages
    installed from a local folder or file cannot be fetched elsewhere: they are listed as comments
    (``# local: name==version``) and installed by ``reproduce.sh`` from the checkout when they live in
    the run's repository.
    """
    sources = env.get("sources") or {}
    lines, local = [], []
    for name, version in env["packages"].items():
        if name in PACKAGING_TOOLS:
            continue
        source = sources.get(name)
        if source is None:
            lines.append(f"{name}=={version}\n")
        elif source["kind"] in ("vcs", "archive"):
            lines.append(f"{name} @ {source['url']}\n")
        else:
            local.append(f"# local: {name}=={version}\n")
    return "".join(lines + local)


def environment_hash(env: dict[str, Any]) -> str:
    text = env["python"] + "\n" + requirements_lock(env)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class DatasetFingerprint:
    name: str
    kind: str  # "file" | "dataframe" | "array"
    sha256: str
    rows: int | None
    schema: dict[str, str]
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def fingerprint(name: str, data: Any, base: Path | None = None) -> DatasetFingerprint:
    """Content hash, row count and schema of a file (Parquet, CSV, any) or an in-memory table."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_absolute() and base is not None and not path.exists():
            path = base / path
        if not path.is_file():
            raise MlplatError(f"dataset '{name}' not found at {data}", hint="pass an existing file path or a DataFrame")
        rows, schema = _file_shape(path)
        return DatasetFingerprint(name, "file", file_sha256(path), rows, schema, str(path.resolve()))
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.Series):
        data = data.to_frame()
    if isinstance(data, pd.DataFrame):
        hashed = pd.util.hash_pandas_object(data, index=True).to_numpy()
        hasher = hashlib.sha256(hashed.tobytes())
        hasher.update("|".join(f"{c}:{t}" for c, t in data.dtypes.astype(str).items()).encode())
        return DatasetFingerprint(name, "dataframe", hasher.hexdigest(), int(len(data)),
                                  {str(c): str(t) for c, t in data.dtypes.items()})
    if isinstance(data, np.ndarray):
        array = np.ascontiguousarray(data)
        hasher = hashlib.sha256(array.tobytes())
        hasher.update(f"{array.dtype}{array.shape}".encode())
        return DatasetFingerprint(name, "array", hasher.hexdigest(), int(array.shape[0]) if array.ndim else 1,
                                  {"dtype": str(array.dtype), "shape": str(array.shape)})
    raise MlplatError(
        f"dataset '{name}' has unsupported type {type(data).__name__}",
        hint="pass a file path, a pandas DataFrame/Series or a numpy array",
    )


def _file_shape(path: Path) -> tuple[int | None, dict[str, str]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path)
            return meta.metadata.num_rows, {f.name: str(f.type) for f in meta.schema_arrow}
        if suffix in (".csv", ".tsv"):
            import duckdb

            rel = duckdb.read_csv(str(path))
            return int(rel.count("*").fetchone()[0]), dict(zip(rel.columns, map(str, rel.types)))
    except Exception as exc:  # unreadable table: keep the hash, note the reason
        return None, {"error": f"could not read schema: {exc}"[:200]}
    return None, {}


def views_of_run(tags: Mapping[str, str]) -> list[str]:
    """The view versions a run trained on, from its ``mlplat.features.<view>`` tags (``["driver_stats@2"]``)."""
    out = []
    for key, value in sorted(tags.items()):
        if key.startswith("mlplat.features."):
            name = key[len("mlplat.features."):]
            out.extend(f"{name}@{v}" for v in str(value).split(",") if v.strip().isdigit())
    return out
