"""The ``mlplat:provider`` settings of an AWS stack; imports neither Pulumi nor boto3."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlplat.contracts import ProviderSettings


class AwsProviderSpec(ProviderSettings):
    kind: Literal["aws"] = Field(description="Amazon SageMaker through pulumi-aws and boto3.")
    region: str = Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$", description="AWS region.", examples=["eu-west-1"])
    account_id: str | None = Field(None, pattern=r"^\d{12}$", description="12-digit AWS account id.")
