"""Feature store: Python definitions, point-in-time training sets, online serving, skew reports.

    from mlplat.features import Entity, Feature, FeatureView, FeatureStore

Attributes load lazily so importing the package costs nothing until used.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Entity": "mlplat.features.definitions",
    "Feature": "mlplat.features.definitions",
    "FeatureView": "mlplat.features.definitions",
    "FeatureRef": "mlplat.features.definitions",
    "Source": "mlplat.features.definitions",
    "FeatureStore": "mlplat.features.client",
    "SkewReport": "mlplat.features.client",
    "enrich": "mlplat.features.client",
    "views_of_run": "mlplat.lineage",
    "FeatureDataError": "mlplat.features.errors",
    "FeatureDefinitionError": "mlplat.features.errors",
    "UnknownFeature": "mlplat.features.errors",
    "BreakingChange": "mlplat.features.errors",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlplat.features' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
