"""The azure provider: Azure Machine Learning (Pulumi program on pulumi-azure-native; runtime through azure-ai-ml).

Stacks validate with :class:`AzureProviderSpec` (no SDK needed); no capability is offered yet, so
each raises `CapabilityNotSupported` naming the provider and the capability.
"""
from __future__ import annotations

from mlplat.providers import ProviderBundle
from mlplat_providers.azure.settings import AzureProviderSpec

provider = ProviderBundle(
    settings_model=AzureProviderSpec,
    name="azure",
    description="Azure Machine Learning (Pulumi program on pulumi-azure-native; runtime through azure-ai-ml).",
    factories={},
    unavailable_hint="this provider's capabilities are not available in this version of mlplat; "
    "use a local stack (mlplat up --stack dev) meanwhile",
)
