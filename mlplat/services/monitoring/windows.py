"""The rows a monitoring window is judged on, shared by the pass and by retraining.

A window is the newest successful captures of a model version; :func:`window_frame`
turns them into one feature row per predicted row with the prediction in
``__prediction__``, and :func:`labels_for` finds the ground truth joined to those rows
(by the platform's request id). A pass compares the frame with the version's reference
sample; retraining writes it, with its labels, as the data the new version trains on.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mlplat import providers
from mlplat.contracts import Capability, Capture
from mlplat.services.monitoring import drift as drift_mod

if TYPE_CHECKING:
    import pandas as pd

    from mlplat.context import Context
    from mlplat.contracts import Monitor
    from mlplat.stack import StackSpec

LABEL_CHUNK = 500  # request ids per query: below SQLite's bound-parameter limit


def monitor_for(spec: StackSpec, ctx: Context) -> Monitor:
    """The stack's monitoring capability (captures, labels, the platform database)."""
    return providers.capability(spec, ctx, Capability.MONITORING)


def window_frame(captures: list[Capture], *, use_score: bool) -> tuple[pd.DataFrame, list[str]]:
    """``(frame, row ids)``: feature rows of a window plus ``__prediction__`` (the score when
    ``use_score`` and the server returned one, else the predicted label), in capture order."""
    import pandas as pd

    records: list[dict[str, Any]] = []
    ids: list[str] = []
    for capture in captures:
        for row_id, features, label, score in capture.rows():
            record = dict(features)
            record[drift_mod.PREDICTION] = score if (use_score and score is not None) else label
            records.append(record)
            ids.append(row_id)
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    return frame, ids


def labels_for(monitor: Monitor, row_ids: list[str]) -> dict[str, Any]:
    """The stored label of each row id that has one (ids without a label are absent)."""
    if not row_ids:
        return {}
    conn = monitor.database().connect()
    try:
        out: dict[str, Any] = {}
        for start in range(0, len(row_ids), LABEL_CHUNK):
            chunk = row_ids[start:start + LABEL_CHUNK]
            marks = ",".join("?" * len(chunk))
            for r in conn.execute(f"SELECT request_id, label FROM monitor_labels WHERE request_id IN ({marks})", chunk):
                out[r[0]] = json.loads(r[1])
        return out
    finally:
        conn.close()
