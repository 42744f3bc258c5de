"""Names of the Azure resources the program and the runtime share; imports neither Pulumi nor the Azure SDKs.

Online endpoint names must be unique within an Azure region (across subscriptions), 3-32 characters, begin
with a letter and contain only letters, digits and hyphens, not ending with a hyphen
(https://learn.microsoft.com/azure/machine-learning/how-to-manage-quotas#azure-machine-learning-online-endpoints-and-batch-endpoints).
The platform therefore names a model's endpoint ``<model slug>-<short stable hash>``: the hash is derived from
the subscription, resource group, workspace and model, so the same stack always reaches the same endpoint
and two teams never collide.
"""
from __future__ import annotations

import hashlib
import re

# Names the Pulumi program creates and the runtime uses (tests/pulumi pins that each one the runtime
# names exists in the program): the platform's blob container in the workspace's storage account (model
# archives, build contexts, job code, feature-set specs; the feature store shares the account), the data
# containers behind the workspace's datastores, the serving environment every online deployment runs in,
# and the training cluster.
PLATFORM_CONTAINER = "mlplat"
DATA_CONTAINERS = ("artifacts", "data", "monitoring")
SERVING_ENVIRONMENT = "mlplat-serving"
COMPUTE_NAME = "cpu-cluster"
# Containers Azure Machine Learning itself creates in the workspace's storage account (the runtime may read
# them; the program does not declare them): the artifact store's ``azureml`` and the default blob store's
# ``azureml-blobstore-<workspace guid>``.
# https://learn.microsoft.com/azure/machine-learning/concept-data#default-datastores
WORKSPACE_SYSTEM_CONTAINERS = ("azureml", "azureml-blobstore-")

ENDPOINT_NAME_MIN = 3
ENDPOINT_NAME_MAX = 32
HASH_LENGTH = 8
ENDPOINT_NAME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$")


def slug(text: str, limit: int) -> str:
    """Lowercase letters, digits and hyphens, at most ``limit`` characters, no leading/trailing hyphen."""
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    clean = re.sub(r"-{2,}", "-", clean).strip("-")
    return clean[:limit].rstrip("-")


def short_hash(*parts: str, length: int = HASH_LENGTH) -> str:
    """A stable lowercase hex digest of ``parts`` (order matters; case of the parts does not)."""
    return hashlib.sha256("/".join(p.lower() for p in parts).encode()).hexdigest()[:length]


def endpoint_name(subscription_id: str, resource_group: str, workspace: str, model: str) -> str:
    """The online endpoint of ``model`` in the workspace: ``<model>-<8 hex>``, 3-32 characters, starting
    with a letter (a model name starting with a digit gets an ``m`` in front)."""
    stem = slug(model, ENDPOINT_NAME_MAX - HASH_LENGTH - 1) or "m"
    if not stem[0].isalpha():
        stem = slug(f"m{stem}", ENDPOINT_NAME_MAX - HASH_LENGTH - 1)
    return f"{stem}-{short_hash(subscription_id, resource_group, workspace, model)}"


def deployment_name(model: str, version: str | int) -> str:
    """The online deployment of one model version: 3-32 characters, letters, digits and hyphens, starting
    with a letter (https://learn.microsoft.com/azure/machine-learning/reference-yaml-deployment-managed-online)."""
    tail = slug(f"v{version}", 12) or "v"
    stem = slug(model, ENDPOINT_NAME_MAX - len(tail) - 1) or "m"
    if not stem[0].isalpha():
        stem = slug(f"m{stem}", ENDPOINT_NAME_MAX - len(tail) - 1)
    return f"{stem}-{tail}"


def workspace_name(team: str, environment: str) -> str:
    """The default workspace name of a team stack (2-33 characters, alphanumerics, hyphens, underscores)."""
    return slug(f"mlw-{team}-{environment}", 33)
