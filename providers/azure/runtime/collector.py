"""The data collector every deployment the runtime creates carries: Azure Machine Learning logs the
deployment's ``model_inputs`` and ``model_outputs`` as JSON Lines in the workspace blob store, under
``modelDataCollector/<endpoint>/<deployment>/<collection>/`` (read back by :mod:`.monitoring`).
https://learn.microsoft.com/azure/machine-learning/how-to-collect-production-data
"""
from __future__ import annotations

from typing import Any

PREFIX = "modelDataCollector"
INPUTS, OUTPUTS = "model_inputs", "model_outputs"


def data_collector() -> Any:
    """The ``data_collector`` of every deployment the runtime creates: inputs and outputs, every request."""
    import warnings

    from azure.ai.ml.entities import DataCollector, DeploymentCollection

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK marks the classes experimental
        import logging

        logger = logging.getLogger("azure.ai.ml._utils._experimental")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            return DataCollector(collections={INPUTS: DeploymentCollection(enabled="true"),
                                              OUTPUTS: DeploymentCollection(enabled="true")}, sampling_rate=1.0)
        finally:
            logger.setLevel(level)
