"""The aws provider: Amazon SageMaker (Pulumi program on pulumi-aws; runtime through boto3).

Its capabilities are registered here as they land; until then each raises
`CapabilityNotSupported` naming the provider and the capability.
"""
from __future__ import annotations

from mlplat.components import Capability
from mlplat.providers import ProviderBundle


def _provisioner(spec, ctx):
    from mlplat_providers.aws.provisioner import AwsProvisioner

    return AwsProvisioner(spec, ctx)


provider = ProviderBundle(
    name="aws",
    description="Amazon SageMaker (Pulumi program on pulumi-aws; runtime through boto3).",
    factories={
        Capability.PROVISIONER: _provisioner,
    },
    unavailable_hint="this provider's capabilities are not available in this version of mlplat; "
    "use a local stack (mlplat up --stack dev) meanwhile",
)
