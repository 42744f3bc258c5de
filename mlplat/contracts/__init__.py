"""Capability contracts. A provider is a named bundle of implementations of these.

Each contract is a small ABC, one module per capability with the dataclasses it speaks.
Public methods state their semantics (blocking? idempotent? which keys are always
returned); an operation marked *optional* has a default that raises
``CapabilityNotSupported``, so callers call it and handle that error. Providers
implement the contracts and pass the same contract suite (tests/contract);
``providers/README.md`` walks through adding one.

``CONTRACTS`` maps each :class:`Capability` to its ABC. ``ProviderSettings`` is the base
of a provider's own ``mlplat:provider`` settings model.
"""
from __future__ import annotations

from mlplat.contracts.base import Contract
from mlplat.contracts.canary import CanaryMetrics, CanaryWindow, VariantStats
from mlplat.contracts.capabilities import CONTRACTS, Capability
from mlplat.contracts.cost import CostSource, Deployment, Usage
from mlplat.contracts.delivery import DeliveryPipeline, Endpoint, Package
from mlplat.contracts.features import FeatureStoreBackend, ViewSelection
from mlplat.contracts.inventory import ServedEndpoint
from mlplat.contracts.monitoring import Capture, Monitor, split_predictions
from mlplat.contracts.pipelines import (
    JobStatus,
    PipelineBackend,
    PipelineDefinition,
    PipelineRunStatus,
    ScheduleInfo,
    SourceBundle,
    StepDefinition,
    StepRun,
    TrainingJobSpec,
)
from mlplat.contracts.provisioning import Plan, PlannedChange, Provisioner, ResourceStatus
from mlplat.contracts.registry import ModelRegistry, SharedVersion, StoredVersion
from mlplat.contracts.serving import EndpointDeployer
from mlplat.contracts.settings import SETTINGS_CONFIG, ProviderSettings
from mlplat.contracts.tracking import ExperimentTracker, MetricPoint, RunRecord

__all__ = [
    "CONTRACTS",
    "SETTINGS_CONFIG",
    "CanaryMetrics",
    "CanaryWindow",
    "Capability",
    "Capture",
    "Contract",
    "CostSource",
    "DeliveryPipeline",
    "Deployment",
    "Endpoint",
    "EndpointDeployer",
    "ExperimentTracker",
    "FeatureStoreBackend",
    "JobStatus",
    "MetricPoint",
    "ModelRegistry",
    "Monitor",
    "Package",
    "PipelineBackend",
    "PipelineDefinition",
    "PipelineRunStatus",
    "Plan",
    "PlannedChange",
    "ProviderSettings",
    "Provisioner",
    "ResourceStatus",
    "RunRecord",
    "ScheduleInfo",
    "ServedEndpoint",
    "SourceBundle",
    "StepDefinition",
    "StepRun",
    "SharedVersion",
    "StoredVersion",
    "TrainingJobSpec",
    "Usage",
    "VariantStats",
    "ViewSelection",
    "split_predictions",
]
