"""Prediction quality once ground truth arrives: label parsing, the join, the metrics.

Labels arrive late, as a file or an API call of ``request_id → label``. They are
validated as a whole before anything is written (one clear error naming the row
and the value), then joined to captured predictions by request id. Unknown ids
are counted and reported, never fatal; duplicate ids in one upload keep the last
value and are counted; a later upload for the same id corrects the stored label.

Metrics per model version and window (scikit-learn): accuracy, precision,
recall, F1 (binary on the positive class, macro-averaged otherwise), ROC AUC,
Brier score and expected calibration error (the last three need a score).
"""
from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mlplat.errors import Conflict, MlplatError, NotFound

ECE_BINS = 10
MAX_LISTED = 20
LOOKUP_CHUNK = 500  # request ids per lookup statement (SQLite allows 32,766 parameters, PostgreSQL 65,535)


class LabelError(MlplatError):
    """A labels file or payload that cannot be used."""


# --- parsing ------------------------------------------------------------------------------


@dataclass
class LabelBatch:
    labels: dict[str, Any]  # request id → label (int, or str for named classes)
    rows: int
    missing_ids: int = 0  # rows without a request id
    duplicates: int = 0  # rows whose id appeared earlier in the same batch
    conflicting: list[str] = field(default_factory=list)  # duplicate ids with different labels


def normalise_label(value: Any, where: str) -> Any:
    """``1``, ``1.0``, ``True``, ``"1"`` → 1; class names stay strings; anything else is a ``LabelError``."""
    if isinstance(value, (bool, np.bool_)):
        return int(bool(value))
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise LabelError(f"label {value!r} is not a class", where=where,
                         hint="labels are classes: integers (0/1), booleans or class names, not scores")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise LabelError("empty label", where=where, hint="give every row a label, or drop the row")
        lowered = text.lower()
        if lowered in ("true", "false"):
            return int(lowered == "true")
        try:
            number = float(text)
        except ValueError:
            return text
        return normalise_label(number, where)
    raise LabelError(f"label {value!r} has unsupported type {type(value).__name__}", where=where,
                     hint="labels are classes: integers (0/1), booleans or class names")


def parse_records(records: Iterable[tuple[Any, Any]], *, source: str) -> LabelBatch:
    labels: dict[str, Any] = {}
    batch = LabelBatch(labels, 0)
    kinds: set[type] = set()
    for index, (raw_id, raw_label) in enumerate(records):
        batch.rows += 1
        where = f"{source}: row {index + 1}"
        if raw_id is None or (isinstance(raw_id, float) and math.isnan(raw_id)) or not str(raw_id).strip():
            batch.missing_ids += 1
            continue
        if raw_label is None or (isinstance(raw_label, float) and math.isnan(raw_label)):
            raise LabelError("missing label", where=f"{where} (request id {raw_id})",
                             hint="give every row a label, or drop the row")
        label = normalise_label(raw_label, f"{where} (request id {raw_id})")
        kinds.add(type(label))
        request_id = str(raw_id).strip()
        if request_id in labels:
            batch.duplicates += 1
            if labels[request_id] != label and request_id not in batch.conflicting:
                batch.conflicting.append(request_id)
        labels[request_id] = label
    if len(kinds) > 1:
        raise LabelError("labels mix numbers and class names", where=source,
                         hint="use one kind of label: all integers (0/1) or all class names")
    return batch


def read_label_file(path: Path, *, id_column: str = "request_id", label_column: str = "label") -> LabelBatch:
    """Read a CSV or Parquet labels file; raise ``LabelError`` naming the file and column on any problem."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise NotFound(f"labels file {path} not found", hint="pass an existing .csv or .parquet file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype={id_column: "string"},
                                keep_default_na=True)
        else:
            raise LabelError(f"unsupported labels file type '{suffix}'", where=str(path),
                             hint="use a .csv or .parquet file with request_id and label columns")
    except (ValueError, OSError) as exc:
        if isinstance(exc, MlplatError):
            raise
        raise LabelError(f"cannot read labels file: {exc}", where=str(path)) from exc
    for column in (id_column, label_column):
        if column not in frame.columns:
            raise LabelError(f"column '{column}' not found (columns: {', '.join(map(str, frame.columns))})",
                             where=str(path), hint="name the columns with --id-column / --label-column")
    ids = frame[id_column].astype("object").where(frame[id_column].notna(), None).tolist()
    values = frame[label_column].astype("object").where(frame[label_column].notna(), None).tolist()
    return parse_records(zip(ids, values), source=str(path))


# --- the join ------------------------------------------------------------------------------


@dataclass
class JoinResult:
    received: int
    stored: int
    updated: int
    unknown: int
    unknown_ids: list[str]
    missing_ids: int
    duplicates: int
    conflicting: list[str]
    replayed: bool = False  # answered from the record of a batch received before under the same id

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def store_labels(conn: sqlite3.Connection, batch: LabelBatch, *, known_ids: set[str], source: str, now: float) -> JoinResult:
    """Write the labels whose request id was captured (inside the caller's transaction): the labels
    already stored are read in a few statements, the new and changed ones written in one each."""
    unknown = [request_id for request_id in batch.labels if request_id not in known_ids]
    known = [request_id for request_id in batch.labels if request_id in known_ids]
    before: dict[str, str] = {}
    for start in range(0, len(known), LOOKUP_CHUNK):
        chunk = known[start:start + LOOKUP_CHUNK]
        before.update((r[0], r[1]) for r in conn.execute(
            f"SELECT request_id, label FROM monitor_labels WHERE request_id IN ({','.join('?' * len(chunk))})", chunk))
    new: list[tuple[str, str, float, str]] = []
    changed: list[tuple[str, float, str, str]] = []
    for request_id in known:
        encoded = json.dumps(batch.labels[request_id])
        if request_id not in before:
            new.append((request_id, encoded, now, source))
        elif before[request_id] != encoded:
            changed.append((encoded, now, source, request_id))
    if new:
        conn.executemany("INSERT INTO monitor_labels(request_id, label, received_at, source) VALUES (?,?,?,?)", new)
    if changed:
        conn.executemany("UPDATE monitor_labels SET label=?, received_at=?, source=? WHERE request_id=?", changed)
    return JoinResult(batch.rows, len(new), len(changed), len(unknown), sorted(unknown)[:MAX_LISTED], batch.missing_ids,
                      batch.duplicates, batch.conflicting[:MAX_LISTED])


def batch_digest(batch: LabelBatch) -> str:
    """What identifies a batch's content: its labels, in order."""
    text = json.dumps(sorted(batch.labels.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


BATCH_KEY = "monitoring.label_batch:"  # + batch id: the record of a received batch in the ledger's ``meta`` table


def replayed_batch(conn: sqlite3.Connection, batch_id: str, digest: str) -> JoinResult | None:
    """The answer given when batch ``batch_id`` first arrived, or ``None`` if it is new.
    The same id with other labels is a ``Conflict``: batch ids are never reused."""
    row = conn.execute("SELECT value FROM meta WHERE key=?", (BATCH_KEY + batch_id,)).fetchone()
    if row is None:
        return None
    record = json.loads(row[0])
    if record["digest"] != digest:
        raise Conflict(f"label batch '{batch_id}' was already received with other labels", where="batch_id",
                       hint="send new labels under a new batch id; a batch id names one batch only")
    return JoinResult(**record["result"] | {"replayed": True})


def record_batch(conn: sqlite3.Connection, batch_id: str, digest: str, result: JoinResult, *, source: str,
                 now: float) -> None:
    """Remember batch ``batch_id`` and its answer (inside the transaction that stored its labels)."""
    record = {"digest": digest, "source": source, "received_at": now, "result": result.to_dict()}
    conn.execute("INSERT INTO meta(key, value) VALUES (?,?)", (BATCH_KEY + batch_id, json.dumps(record)))


# --- metrics ------------------------------------------------------------------------------


def expected_calibration_error(y_true: ArrayLike, y_score: ArrayLike, bins: int = ECE_BINS) -> float:
    """Share-weighted gap between mean score and observed positive rate over equal-width score bins."""
    true_arr = np.asarray(y_true, dtype=float)
    score_arr = np.clip(np.asarray(y_score, dtype=float), 0.0, 1.0)
    index = np.minimum((score_arr * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    mean_score = np.bincount(index, weights=score_arr, minlength=bins)
    positives = np.bincount(index, weights=true_arr, minlength=bins)
    filled = counts > 0
    gaps = np.abs(positives[filled] / counts[filled] - mean_score[filled] / counts[filled])
    return float(np.sum(gaps * counts[filled]) / true_arr.size)


def quality_metrics(y_true: Sequence[Any], y_pred: Sequence[Any], y_score: Sequence[float | None] | None = None
                    ) -> dict[str, float]:
    """``quality.*`` metrics of one window; keys for metrics that cannot be computed are left out."""
    from sklearn import metrics as skm

    y_true = list(y_true)
    y_pred = list(y_pred)
    if not y_true:
        return {}
    if {type(v) for v in y_true} != {type(v) for v in y_pred}:
        # a model that answers class names judged against 0/1 labels (or the reverse) cannot be scored
        y_pred = [type(y_true[0])(v) if isinstance(v, (int, str)) else v for v in y_pred]
    classes = sorted(set(y_true) | set(y_pred), key=str)
    binary = len(classes) <= 2 and set(classes) <= {0, 1}
    out = {"quality.rows": float(len(y_true)), "quality.accuracy": float(skm.accuracy_score(y_true, y_pred))}
    average = "binary" if binary else "macro"
    kwargs = {"average": average, "zero_division": 0}
    if binary:
        kwargs["pos_label"] = 1
    out["quality.precision"] = float(skm.precision_score(y_true, y_pred, **kwargs))
    out["quality.recall"] = float(skm.recall_score(y_true, y_pred, **kwargs))
    out["quality.f1"] = float(skm.f1_score(y_true, y_pred, **kwargs))
    if binary and y_score is not None:
        pairs = [(t, s) for t, s in zip(y_true, y_score) if s is not None and math.isfinite(s)]
        if pairs:
            truth = np.array([t for t, _ in pairs], dtype=int)
            score = np.array([s for _, s in pairs], dtype=float)
            if len(set(truth.tolist())) == 2:
                out["quality.roc_auc"] = float(skm.roc_auc_score(truth, score))
            out["quality.brier"] = float(skm.brier_score_loss(truth, np.clip(score, 0, 1)))
            out["quality.ece"] = expected_calibration_error(truth, score)
            out["quality.mean_score"] = float(score.mean())
            out["quality.positive_rate"] = float(truth.mean())
    return out


def calibration_bins(y_true: ArrayLike, y_score: ArrayLike, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Reliability diagram data: per filled bin, mean score, observed rate and count."""
    true_arr = np.asarray(y_true, dtype=float)
    score_arr = np.clip(np.asarray(y_score, dtype=float), 0, 1)
    index = np.minimum((score_arr * bins).astype(int), bins - 1)
    out: list[dict[str, float]] = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            out.append({"bin": b, "mean_score": float(score_arr[mask].mean()), "observed": float(true_arr[mask].mean()),
                        "count": int(mask.sum())})
    return out
