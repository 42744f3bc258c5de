"""Ground truth to the control plane: one batch of labels, sent in requests the operation accepts.

The CLI (`mlplat monitor labels FILE`), the SDK (:func:`mlplat.log_labels`) and the dashboard's
labels route all send through :func:`send_labels`: at most :data:`LABEL_BATCH` labels per
request, each request under its own batch id, so a request delivered twice is stored once.
"""
from __future__ import annotations

import uuid
from typing import Any

from mlplat.api.plane import ControlPlane
from mlplat.errors import MlplatError

LABEL_BATCH = 5_000  # labels per request (monitoring.labels refuses more)


def send_labels(plane: ControlPlane, batch: Any, *, source: str) -> dict[str, Any]:
    """Send ``batch`` (a parsed :class:`~mlplat.services.monitoring.quality.LabelBatch`); the counts of the whole batch."""
    from mlplat.services.monitoring.quality import MAX_LISTED

    items = [{"request_id": request_id, "label": label} for request_id, label in batch.labels.items()]
    chunks = [items[i:i + LABEL_BATCH] for i in range(0, len(items), LABEL_BATCH)] or [[]]
    upload = uuid.uuid4().hex
    stored = updated = unknown = 0
    unknown_ids: set[str] = set()
    for number, chunk in enumerate(chunks):
        try:
            answer = plane.call("monitoring.labels", labels=chunk, source=source, batch_id=f"{upload}-{number}")
        except MlplatError as exc:
            if number:
                exc.hint = (f"{number} of {len(chunks)} batches ({stored + updated} labels) were stored before this "
                            "one failed; sending them again is safe: labels are kept per request id"
                            + (f". {exc.hint}" if exc.hint else ""))
            raise
        stored, updated, unknown = stored + answer["stored"], updated + answer["updated"], unknown + answer["unknown"]
        unknown_ids.update(answer["unknown_ids"])
    return {"received": batch.rows, "stored": stored, "updated": updated, "unknown": unknown,
            "unknown_ids": sorted(unknown_ids)[:MAX_LISTED], "missing_ids": batch.missing_ids,
            "duplicates": batch.duplicates, "conflicting": batch.conflicting[:MAX_LISTED]}
