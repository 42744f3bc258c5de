"""Operations on production monitoring: a monitoring pass, its status, ground-truth labels."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from mlplat.api.operations import operation

MAX_LABELS_PER_REQUEST = 5_000


def _class_label(value: Any) -> Any:
    """A class: an integer (a whole float or a boolean counts as one) or a class name; nothing else."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int | str):
        return value
    raise ValueError(f"a label is a class, an integer or a class name, not {value!r}")


class LabelRow(BaseModel):
    """One ground-truth label: the request id it belongs to and the class (an integer or a class name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: Annotated[str, Field(min_length=1, max_length=512)]
    label: Annotated[int | str, BeforeValidator(_class_label)]


@operation("monitoring.run", "POST", "/monitoring/passes")
def run_pass(spec: Any, ctx: Any, *, retrain: bool = True) -> dict[str, Any]:
    """One monitoring pass: judge the newest window of every served version, alert, retrain if due.

    Runs where the operation runs (the server in server mode): webhooks are delivered before it
    answers, and with ``retrain`` a due retraining is carried out there too; without it the
    trigger is only recorded."""
    from mlplat.services.monitoring.passes import run_pass as run

    return run(spec, ctx, deliver="sync", retrain="run" if retrain else "defer").to_dict()


@operation("monitoring.status", "GET", "/monitoring/status")
def status(spec: Any, ctx: Any, *, model: str | None = None,
           history: Annotated[int, Field(ge=1, le=1000)] = 5) -> dict[str, Any]:
    """Newest windows per model version, firing alerts and retraining of the stack's models (or of ``model``)."""
    from mlplat.services.monitoring.status import status as monitoring_status

    if model is not None:
        _require_model(spec, ctx, model)
    return monitoring_status(spec, ctx, model=model, history=history)


def _require_model(spec: Any, ctx: Any, model: str) -> None:
    from mlplat.services import known
    from mlplat.services.monitoring.passes import monitor_for

    conn = monitor_for(spec, ctx).database().connect()
    try:
        known.require_model(conn, model)
    finally:
        conn.close()


@operation("monitoring.labels", "POST", "/monitoring/labels")
def ingest_labels(spec: Any, ctx: Any, *,
                  labels: Annotated[list[LabelRow], Field(max_length=MAX_LABELS_PER_REQUEST)],
                  source: Annotated[str, Field(min_length=1, max_length=1000)] = "api",
                  batch_id: Annotated[str | None, Field(min_length=1, max_length=128)] = None) -> dict[str, Any]:
    """Join ground truth to captured predictions by request id (at most 5,000 labels per request).

    ``labels`` are validated as a whole (one error naming the row) before anything is written;
    ids never captured are counted, not stored. A label names the platform's request id or the
    caller's own. With ``batch_id`` the request is idempotent: sent again under the same id it
    writes nothing and answers what the first delivery answered (``replayed: true``); the same
    id with other labels is refused (409)."""
    from mlplat.services.monitoring import quality
    from mlplat.services.monitoring.passes import ingest_labels as ingest

    batch = quality.parse_records([(row.request_id, row.label) for row in labels], source=source)
    return ingest(spec, ctx, batch, source=source, batch_id=batch_id).to_dict() | {"batch_id": batch_id}
