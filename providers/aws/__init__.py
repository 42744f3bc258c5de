"""The aws provider: Amazon SageMaker (Pulumi program on pulumi-aws; runtime through boto3).

Its capabilities are registered here as they land; until then each raises
`CapabilityNotSupported` naming the provider and the capability.
"""
from __future__ import annotations

from mlplat.providers import ProviderBundle

provider = ProviderBundle(
    name="aws",
    description="Amazon SageMaker (Pulumi program on pulumi-aws; runtime through boto3).",
    factories={},
    unavailable_hint="this provider's capabilities are not available in this version of mlplat; "
    "use a local stack (mlplat up --stack dev) meanwhile",
)
