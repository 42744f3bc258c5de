"""The ``mlplat:provider`` settings of a GCP stack; imports neither Pulumi nor the Google SDKs."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlplat.contracts import ProviderSettings


class GcpProviderSpec(ProviderSettings):
    kind: Literal["gcp"] = Field(description="Google Vertex AI through pulumi-gcp and google-cloud-aiplatform.")
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$", description="GCP project id.",
                         examples=["acme-ml-prod"])
    region: str = Field(pattern=r"^[a-z]+-[a-z]+\d$", description="GCP region.", examples=["europe-west4"])
