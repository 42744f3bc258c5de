"""The Azure stack's local state: the governance ledger, the sealing key and the MLflow store.

Azure Machine Learning holds models and endpoints; the platform database (stages, gate reports,
approvals, rollouts, audit chain), the key that seals manifests and the tracking
store live under the stack's state directory (``.mlplat/<stack>`` by default) on the
machine that runs mlplat (see ``mlplat.cloud_state``). ``MLPLAT_AZURE_TRACKING_URI``, when
set, points tracking at a server instead of the local MLflow store.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mlplat.cloud_state import CloudState


@dataclass(frozen=True)
class AzureState(CloudState):
    label: ClassVar[str] = "Azure"
    tracking_env: ClassVar[str] = "MLPLAT_AZURE_TRACKING_URI"
