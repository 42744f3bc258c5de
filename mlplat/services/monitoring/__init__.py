"""Production monitoring: drift, quality with delayed labels, calibration, cost, alerts, retraining.

``run_pass(spec, ctx)`` is the one entry point a scheduler calls (``mlplat monitor
run`` and the serving gateway's loop). Submodules import their heavy dependencies
inside functions.
"""
from __future__ import annotations

from typing import Any


def run_pass(spec, ctx, **kwargs: Any):
    """One monitoring pass; see :func:`mlplat.services.monitoring.passes.run_pass`."""
    from mlplat.services.monitoring.passes import run_pass as _run_pass

    return _run_pass(spec, ctx, **kwargs)


def log_labels(labels, *, stack: str | None = None, ctx=None):
    """Join ground truth to captured predictions by request id (SDK)."""
    from mlplat.services.monitoring.passes import log_labels as _log_labels

    return _log_labels(labels, stack=stack, ctx=ctx)


__all__ = ["run_pass", "log_labels"]
