"""The aws provider: Amazon SageMaker (Pulumi program on pulumi-aws; runtime through boto3).

Stacks validate with :class:`AwsProviderSpec` (no SDK needed). The capabilities below import
Pulumi and boto3 when built; a capability not offered here raises `CapabilityNotSupported` naming the
provider and the capability. Monitoring is the platform's own pass over the endpoints' data capture in
S3, published as CloudWatch metrics (``runtime/monitoring.py``). The feature store is one SageMaker Feature
Group per feature view version (``runtime/features.py``).
"""
from __future__ import annotations

from mlplat.contracts import Capability
from mlplat.providers import ProviderBundle
from mlplat_providers.aws.settings import AwsProviderSpec


def _provisioner(spec, ctx):
    from mlplat_providers.aws.provisioner import AwsProvisioner

    return AwsProvisioner(spec, ctx)


def _tracker(spec, ctx):
    from mlplat_providers.aws.runtime.tracking import AwsTracker

    return AwsTracker(spec)


def _registry(spec, ctx):
    from mlplat_providers.aws.runtime.registry import AwsModelRegistry

    return AwsModelRegistry(spec, ctx=ctx)


def _delivery(spec, ctx):
    from mlplat_providers.aws.runtime.delivery import AwsDeliveryPipeline

    return AwsDeliveryPipeline(spec, ctx)


def _serving(spec, ctx):
    from mlplat_providers.aws.runtime.serving import AwsServing

    return AwsServing(spec, ctx)


def _monitoring(spec, ctx):
    from mlplat_providers.aws.runtime.monitoring import AwsMonitor

    return AwsMonitor(spec, ctx)


def _features(spec, ctx):
    from mlplat_providers.aws.runtime.features import AwsFeatureStore

    return AwsFeatureStore(spec, ctx)


def _cost(spec, ctx):
    from mlplat_providers.aws.runtime.cost import AwsCost

    return AwsCost(spec, ctx)


def _pipelines(spec, ctx):
    from mlplat_providers.aws.runtime.pipelines import AwsPipelines

    return AwsPipelines(spec, ctx)


provider = ProviderBundle(
    settings_model=AwsProviderSpec,
    name="aws",
    description="Amazon SageMaker (Pulumi program on pulumi-aws; runtime through boto3).",
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
