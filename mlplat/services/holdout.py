"""The held-out set a version is evaluated on: which file (the version's own or the stack's
``gate.holdout``), and reading it with a clear refusal when it is missing, unreadable or lacks
the label or a feature column the model needs.

The gate scores on it; registration checks it early so a bad path fails at ``log_model``,
not at promotion time.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from mlplat.errors import CheckFailed
from mlplat.lineage import file_sha256

if TYPE_CHECKING:
    import pandas as pd

    from mlplat.stack import StackSpec


class HoldoutError(CheckFailed):
    """The held-out set is missing, unreadable or lacks the columns the model needs."""


def resolve_holdout(spec: StackSpec, row: Mapping[str, Any]) -> dict[str, str]:
    doc = row.get("holdout") or (spec.gate.holdout.model_dump() if spec.gate.holdout else None)
    if not doc:
        raise HoldoutError(f"no held-out set for {row['model']} version {row['version']}",
                           hint="name one at registration (run.log_model(..., holdout={'path': ..., 'label': ...})) "
                                "or in the stack (mlplat:gate: holdout: {path, label})")
    return {"path": doc["path"], "label": doc["label"]}


@overload
def load_holdout(doc: Mapping[str, str], project_dir: Path, *, columns_only: Literal[False] = False,
                 features: Iterable[str] | None = None) -> tuple[pd.DataFrame, str, Path]: ...
@overload
def load_holdout(doc: Mapping[str, str], project_dir: Path, *, columns_only: bool,
                 features: Iterable[str] | None = None) -> tuple[pd.DataFrame, str, Path] | None: ...


def load_holdout(doc: Mapping[str, str], project_dir: Path, *, columns_only: bool = False,
                 features: Iterable[str] | None = None) -> tuple[pd.DataFrame, str, Path] | None:
    """Read the held-out set (Parquet or CSV; path relative to the project). ``HoldoutError`` when the
    file is missing or unreadable, the label column is absent, or a feature the model needs is missing."""
    path = Path(doc["path"])
    if not path.is_absolute():
        path = project_dir / path
    if not path.is_file():
        raise HoldoutError(f"held-out file not found: {path}", where=doc["path"],
                           hint="fix the path (relative to the project root) in the stack's gate.holdout or at registration")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            columns = [f.name for f in pq.ParquetFile(path).schema_arrow]
        elif suffix in (".csv", ".tsv"):
            import pandas as pd

            columns = list(pd.read_csv(path, nrows=0, sep="\t" if suffix == ".tsv" else ",").columns)
        else:
            raise HoldoutError(f"held-out file {path.name} is neither Parquet nor CSV", where=str(path),
                               hint="use a .parquet or .csv file")
    except HoldoutError:
        raise
    except Exception as exc:
        raise HoldoutError(f"held-out file is unreadable: {exc}", where=str(path)) from None
    label = doc["label"]
    if label not in columns:
        raise HoldoutError(f"label column '{label}' is not in the held-out file (columns: {', '.join(columns[:20])})",
                           where=str(path), hint="fix gate.holdout.label or the file")
    missing = [f for f in (features or []) if f not in columns]
    if missing:
        raise HoldoutError(f"the held-out file lacks feature column(s) the model needs: {', '.join(missing[:10])}",
                           where=str(path), hint="evaluate on a file with the model's input columns")
    if columns_only:
        return None
    import pandas as pd

    frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    if len(frame) == 0:
        raise HoldoutError("the held-out file has no rows", where=str(path))
    return frame, file_sha256(path), path
