"""The gcp provider: Google Vertex AI (Pulumi program on pulumi-gcp; runtime through google-cloud-aiplatform).

Stacks validate with :class:`GcpProviderSpec` (no SDK needed). The capabilities below import Pulumi and the
Google client libraries when built (``runtime/session.py`` builds every client). Registry: Vertex AI Model
Registry (versions, aliases; approvals mirrored as labels); serving: Vertex endpoints with the traffic split
owned by the runtime, canaries judged on Cloud Monitoring; shadow deployments raise `CapabilityNotSupported`
(Vertex has no traffic mirroring).
"""
from __future__ import annotations

from mlplat.contracts import Capability
from mlplat.providers import ProviderBundle
from mlplat_providers.gcp.settings import GcpProviderSpec


def _provisioner(spec, ctx):
    from mlplat_providers.gcp.provisioner import GcpProvisioner

    return GcpProvisioner(spec, ctx)


def _tracker(spec, ctx):
    from mlplat_providers.gcp.runtime.tracking import GcpTracker

    return GcpTracker(spec)


def _registry(spec, ctx):
    from mlplat_providers.gcp.runtime.registry import GcpModelRegistry

    return GcpModelRegistry(spec, ctx=ctx)


def _delivery(spec, ctx):
    from mlplat_providers.gcp.runtime.delivery import GcpDeliveryPipeline

    return GcpDeliveryPipeline(spec, ctx)


def _serving(spec, ctx):
    from mlplat_providers.gcp.runtime.serving import GcpServing

    return GcpServing(spec, ctx)


def _monitoring(spec, ctx):
    from mlplat_providers.gcp.runtime.monitoring import GcpMonitor

    return GcpMonitor(spec, ctx)


def _cost(spec, ctx):
    from mlplat_providers.gcp.runtime.cost import GcpCost

    return GcpCost(spec, ctx)


def _features(spec, ctx):
    from mlplat_providers.gcp.runtime.features import GcpFeatureStore

    return GcpFeatureStore(spec, ctx)


def _pipelines(spec, ctx):
    from mlplat_providers.gcp.runtime.pipelines import GcpPipelines

    return GcpPipelines(spec, ctx)


provider = ProviderBundle(
    settings_model=GcpProviderSpec,
    name="gcp",
    description="Google Vertex AI (Pulumi program on pulumi-gcp; runtime through google-cloud-aiplatform).",
    factories={
        Capability.PROVISIONER: _provisioner,
        Capability.TRACKING: _tracker,
        Capability.REGISTRY: _registry,
        Capability.DELIVERY: _delivery,
        Capability.SERVING: _serving,
        Capability.MONITORING: _monitoring,
        Capability.COST: _cost,
        Capability.FEATURES: _features,
        Capability.PIPELINES: _pipelines,
    },
    unavailable_hint="this provider's capabilities are not available in this version of mlplat; "
    "use a local stack (mlplat up --stack dev) meanwhile",
)
