"""The capabilities a provider may offer, and the contract (ABC) each one's implementation honours."""
from __future__ import annotations

from enum import Enum

from mlplat.contracts.base import Contract
from mlplat.contracts.cost import CostSource
from mlplat.contracts.delivery import DeliveryPipeline
from mlplat.contracts.features import FeatureStoreBackend
from mlplat.contracts.monitoring import Monitor
from mlplat.contracts.pipelines import PipelineBackend
from mlplat.contracts.provisioning import Provisioner
from mlplat.contracts.registry import ModelRegistry
from mlplat.contracts.serving import EndpointDeployer
from mlplat.contracts.tracking import ExperimentTracker


class Capability(str, Enum):
    PROVISIONER = "provisioner"
    TRACKING = "tracking"
    REGISTRY = "registry"
    DELIVERY = "delivery"
    SERVING = "serving"
    MONITORING = "monitoring"
    FEATURES = "features"
    COST = "cost"
    PIPELINES = "pipelines"


CONTRACTS: dict[Capability, type[Contract]] = {
    Capability.PROVISIONER: Provisioner,
    Capability.TRACKING: ExperimentTracker,
    Capability.REGISTRY: ModelRegistry,
    Capability.DELIVERY: DeliveryPipeline,
    Capability.SERVING: EndpointDeployer,
    Capability.MONITORING: Monitor,
    Capability.FEATURES: FeatureStoreBackend,
    Capability.COST: CostSource,
    Capability.PIPELINES: PipelineBackend,
}
"""Capability → the ABC its implementations subclass. ``ProviderBundle.get`` checks against it."""
