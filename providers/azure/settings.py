"""The ``mlplat:provider`` settings of an Azure stack; imports neither Pulumi nor the Azure SDKs."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlplat.contracts import ProviderSettings


class AzureProviderSpec(ProviderSettings):
    kind: Literal["azure"] = Field(description="Azure Machine Learning through pulumi-azure-native and azure-ai-ml.")
    subscription_id: str = Field(
        pattern=r"^[0-9a-fA-F-]{36}$", description="Azure subscription id (a GUID).",
        examples=["00000000-0000-0000-0000-000000000000"],
    )
    resource_group: str = Field(min_length=1, max_length=90, description="Resource group of the workspace.")
    location: str = Field(pattern=r"^[a-z0-9]+$", description="Azure location.", examples=["westeurope"])
