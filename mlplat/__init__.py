"""mlplat: a self-service MLOps platform.

    import mlplat
    with mlplat.start_run(experiment="churn", datasets={"train": df}) as run:
        ...
        run.log_model(model, name="churn")

Attributes are imported lazily so ``import mlplat`` (and the CLI) start fast.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_SDK = {"start_run", "active_run", "log_metric", "log_param", "log_model", "log_labels", "Run"}


def __getattr__(name: str) -> Any:
    if name in _SDK:
        from mlplat import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'mlplat' has no attribute {name!r}")


__all__ = sorted(_SDK)
