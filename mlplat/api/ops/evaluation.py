"""The evaluation gate on its own: what a pipeline's ``evaluate`` step runs."""
from __future__ import annotations

from typing import Any

from mlplat.api.operations import Environment, operation


@operation("models.evaluate", "POST", "/models/{name}/versions/{version}/evaluations")
def evaluate(spec: Any, ctx: Any, *, name: str, version: int, environment: Environment | None = None) -> dict[str, Any]:
    """Run the evaluation gate of ``models.promote`` (the stack's held-out set and thresholds, and
    "not worse than the champion") on a version; the report is stored and audited as the promotion's
    gate step stores it. A failing gate is a report with ``passed: false``, not an error."""
    from mlplat.services import gate

    return gate.run_gate(spec, ctx, name, version, environment or spec.environment)
