"""Pipeline runs in the ledger: each finished run is an audit entry the whole team reads."""
from __future__ import annotations

from typing import Any, Literal

from mlplat.api.operations import operation


@operation("pipelines.record", "POST", "/pipelines/{pipeline}/runs")
def record_run(spec: Any, ctx: Any, *, pipeline: str, run_id: str, state: Literal["SUCCEEDED", "FAILED", "STOPPED"],
               model: str | None = None, message: str = "", steps: dict[str, str] | None = None) -> dict[str, Any]:
    """Record how a pipeline run ended (``pipeline.succeeded`` / ``pipeline.failed`` / ``pipeline.stopped``
    in the audit log, by the caller, with each step's state as evidence)."""
    from mlplat.services import pipelines

    return pipelines.record_run(spec, ctx, pipeline=pipeline, run_id=run_id, state=state, model=model,
                                message=message, steps=steps or {})
