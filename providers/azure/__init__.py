"""The azure provider: Azure Machine Learning (Pulumi program on pulumi-azure-native; runtime through azure-ai-ml).

Stacks validate with :class:`AzureProviderSpec` (no SDK needed). The provisioner runs the Pulumi program
(``components.py``) through the Automation API, or under mocks answering ARM ids for ``mlplat preview
--offline`` and ``mlplat policy check``; capabilities not listed below raise `CapabilityNotSupported`.
"""
from __future__ import annotations

from mlplat.contracts import Capability
from mlplat.providers import ProviderBundle
from mlplat_providers.azure.settings import AzureProviderSpec


def _provisioner(spec, ctx):
    from mlplat_providers.azure.provisioner import AzureProvisioner

    return AzureProvisioner(spec, ctx)


def _tracker(spec, ctx):
    from mlplat_providers.azure.runtime.tracking import AzureTracker

    return AzureTracker(spec)


def _registry(spec, ctx):
    from mlplat_providers.azure.runtime.registry import AzureModelRegistry

    return AzureModelRegistry(spec, ctx=ctx)


def _delivery(spec, ctx):
    from mlplat_providers.azure.runtime.delivery import AzureDeliveryPipeline

    return AzureDeliveryPipeline(spec, ctx)


def _serving(spec, ctx):
    from mlplat_providers.azure.runtime.serving import AzureServing

    return AzureServing(spec, ctx)


def _monitor(spec, ctx):
    from mlplat_providers.azure.runtime.monitoring import AzureMonitor

    return AzureMonitor(spec, ctx)


def _features(spec, ctx):
    from mlplat_providers.azure.runtime.features import AzureFeatureStore

    return AzureFeatureStore(spec, ctx)


def _pipelines(spec, ctx):
    from mlplat_providers.azure.runtime.pipelines import AzurePipelines

    return AzurePipelines(spec, ctx)


def _cost(spec, ctx):
    from mlplat_providers.azure.runtime.cost import AzureCost

    return AzureCost(spec, ctx)


provider = ProviderBundle(
    settings_model=AzureProviderSpec,
    name="azure",
    description="Azure Machine Learning (Pulumi program on pulumi-azure-native; runtime through azure-ai-ml).",
    factories={
        Capability.PROVISIONER: _provisioner,
        Capability.TRACKING: _tracker,
        Capability.REGISTRY: _registry,
        Capability.DELIVERY: _delivery,
        Capability.SERVING: _serving,
        Capability.MONITORING: _monitor,
        Capability.COST: _cost,
        Capability.PIPELINES: _pipelines,
        Capability.FEATURES: _features,
    },
    unavailable_hint="this provider's capabilities are not available in this version of mlplat; "
    "use a local stack (mlplat up --stack dev) meanwhile",
)
