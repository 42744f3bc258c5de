"""Production monitoring: drift, quality with delayed labels, calibration, cost, alerts, retraining.

``run_pass(spec, ctx)`` is the one entry point a scheduler calls (``mlplat monitor
run`` and the serving gateway's loop). Submodules import their heavy dependencies
inside functions.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.services.monitoring.passes import PassReport
    from mlplat.services.monitoring.quality import JoinResult
    from mlplat.stack import StackSpec


def run_pass(spec: StackSpec, ctx: Context, **kwargs: Any) -> PassReport:
    """One monitoring pass; see :func:`mlplat.services.monitoring.passes.run_pass`."""
    from mlplat.services.monitoring.passes import run_pass as _run_pass

    return _run_pass(spec, ctx, **kwargs)


def log_labels(labels: dict[str, Any] | list[tuple[str, Any]], *, stack: str | None = None,
               ctx: Context | None = None) -> JoinResult:
    """Join ground truth to captured predictions by request id (SDK)."""
    from mlplat.services.monitoring.passes import log_labels as _log_labels

    return _log_labels(labels, stack=stack, ctx=ctx)


__all__ = ["run_pass", "log_labels"]
