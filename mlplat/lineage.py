"""What a run needs to be reproduced: code version, environment, dataset fingerprints."""
from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
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


def code_version(cwd: Path | None = None) -> CodeVersion:
    """The git commit, branch, dirty flag and a hash of uncommitted changes (tracked and untracked)."""
    cwd = cwd or Path.cwd()
    root = _git(["rev-parse", "--show-toplevel"], cwd)
    if root is None:
        return CodeVersion(in_git=False)
    root_path = Path(root.strip())
    commit = (_git(["rev-parse", "HEAD"], root_path) or "").strip() or None
    branch = (_git(["rev-parse", "--abbrev-ref", "HEAD"], root_path) or "").strip() or None
    status = _git(["status", "--porcelain", "--untracked-files=normal"], root_path) or ""
    dirty = bool(status.strip())
    diff = ""
    digest = None
    if dirty:
        diff = (_git(["diff", "HEAD", "--binary"], root_path) if commit else _git(["diff", "--binary"], root_path)) or ""
        untracked = [line[3:] for line in status.splitlines() if line.startswith("??")]
        hasher = hashlib.sha256(diff.encode())
        for rel in sorted(untracked):
            hasher.update(rel.encode())
            target = root_path / rel
            if target.is_file():
                hasher.update(target.read_bytes())
        digest = hasher.hexdigest()
    return CodeVersion(True, commit, None if branch == "HEAD" else branch, dirty, digest, str(root_path), diff)


def environment() -> dict[str, Any]:
    """Python, OS and every installed distribution with its version."""
    packages = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            packages[name.lower()] = dist.version
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "os": platform.platform(),
        "machine": platform.machine(),
        "packages": dict(sorted(packages.items())),
    }


def requirements_lock(env: dict[str, Any]) -> str:
    skip = {"mlplat"}
    return "".join(f"{n}=={v}\n" for n, v in env["packages"].items() if n not in skip)


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
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(data, pd.Series):
        data = data.to_frame()
    if pd is not None and isinstance(data, pd.DataFrame):
        hashed = pd.util.hash_pandas_object(data, index=True).to_numpy()
        hasher = hashlib.sha256(hashed.tobytes())
        hasher.update("|".join(f"{c}:{t}" for c, t in data.dtypes.astype(str).items()).encode())
        return DatasetFingerprint(name, "dataframe", hasher.hexdigest(), int(len(data)),
                                  {str(c): str(t) for c, t in data.dtypes.items()})
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None and isinstance(data, np.ndarray):
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
