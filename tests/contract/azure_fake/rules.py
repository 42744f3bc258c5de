"""Azure Machine Learning's documented rules, as the fake ARM enforces them.

Each function answers ``None`` when the request is acceptable, else the message Azure answers (400
``BadRequest`` / 409 ``Conflict`` unless stated); each cites the documentation page it encodes.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Online endpoint and deployment names: 3-32 characters, begin with a letter, letters, digits and hyphens,
# not ending with a hyphen; endpoint names are unique within an Azure region.
# https://learn.microsoft.com/azure/machine-learning/how-to-manage-quotas#azure-machine-learning-online-endpoints-and-batch-endpoints
_ONLINE_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$")

# Model names: letters, digits, '-', '_' and '.', starting with a letter or digit, at most 255 characters.
# https://learn.microsoft.com/azure/machine-learning/reference-yaml-model
_MODEL_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9\-_.]{0,254}$")

# Tags: at most 50 per resource, names at most 512 characters, values at most 256.
# https://learn.microsoft.com/azure/azure-resource-manager/management/tag-resources#limitations
MAX_TAGS = 50
MAX_TAG_NAME = 512
MAX_TAG_VALUE = 256

# Mirrored (shadow) traffic: at most 50 % in total, only to deployments that take no live traffic.
# https://learn.microsoft.com/azure/machine-learning/how-to-safely-rollout-online-endpoints#test-the-deployment-with-mirrored-traffic
MAX_MIRROR_TOTAL = 50


def endpoint_name(name: str) -> str | None:
    """https://learn.microsoft.com/azure/machine-learning/how-to-manage-quotas#azure-machine-learning-online-endpoints-and-batch-endpoints"""
    if not _ONLINE_NAME.fullmatch(name or ""):
        return (f"Invalid endpoint name '{name}': endpoint names must be 3-32 characters, begin with a letter, "
                "contain only letters, digits and '-', and not end with '-'.")
    return None


def deployment_name(name: str) -> str | None:
    """https://learn.microsoft.com/azure/machine-learning/reference-yaml-deployment-managed-online (name)."""
    if not _ONLINE_NAME.fullmatch(name or ""):
        return (f"Invalid deployment name '{name}': deployment names must be 3-32 characters, begin with a letter, "
                "contain only letters, digits and '-', and not end with '-'.")
    return None


def model_name(name: str) -> str | None:
    """https://learn.microsoft.com/azure/machine-learning/reference-yaml-model (name)."""
    if not _MODEL_NAME.fullmatch(name or ""):
        return (f"Invalid model name '{name}': use letters, digits, '-', '_' and '.', starting with a letter or "
                "digit, at most 255 characters.")
    return None


def tags(values: Mapping[str, Any] | None) -> str | None:
    """https://learn.microsoft.com/azure/azure-resource-manager/management/tag-resources#limitations"""
    values = values or {}
    if len(values) > MAX_TAGS:
        return f"Too many tags: {len(values)} (at most {MAX_TAGS} per resource)."
    for key, value in values.items():
        if not isinstance(value, str):
            return f"Tag '{key}' must have a string value."
        if len(key) > MAX_TAG_NAME:
            return f"Tag name '{key[:40]}...' is longer than {MAX_TAG_NAME} characters."
        if len(value) > MAX_TAG_VALUE:
            return f"The value of tag '{key}' is longer than {MAX_TAG_VALUE} characters."
    return None


def traffic(split: Mapping[str, Any] | None, deployments: set[str]) -> str | None:
    """Live traffic: integer percentages of existing deployments, summing to 100 (or all 0, as on a new
    endpoint). https://learn.microsoft.com/azure/machine-learning/how-to-safely-rollout-online-endpoints"""
    split = split or {}
    for name, value in split.items():
        if name not in deployments:
            return f"Traffic names deployment '{name}', which does not exist on this endpoint."
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
            return f"Traffic of deployment '{name}' must be an integer from 0 to 100, got {value!r}."
    total = sum(split.values())
    if total not in (0, 100):
        return f"Traffic values must sum to 100 (or 0), got {total}."
    return None


def mirror_traffic(mirror: Mapping[str, Any] | None, live: Mapping[str, Any] | None,
                   deployments: set[str]) -> str | None:
    """https://learn.microsoft.com/azure/machine-learning/how-to-safely-rollout-online-endpoints#test-the-deployment-with-mirrored-traffic"""
    mirror, live = mirror or {}, live or {}
    for name, value in mirror.items():
        if name not in deployments:
            return f"Mirror traffic names deployment '{name}', which does not exist on this endpoint."
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
            return f"Mirror traffic of deployment '{name}' must be an integer from 0 to 100, got {value!r}."
        if value and live.get(name):
            return (f"Deployment '{name}' takes live traffic ({live[name]} %) and cannot also receive mirror "
                    "traffic.")
    total = sum(mirror.values())
    if total > MAX_MIRROR_TOTAL:
        return f"Mirror traffic must not exceed {MAX_MIRROR_TOTAL} % in total, got {total} %."
    return None


# Model versions are immutable once created: only description, tags, stage and the archive flag change.
# https://learn.microsoft.com/azure/machine-learning/how-to-manage-models#update-a-model
MUTABLE_VERSION_FIELDS = frozenset({"description", "tags", "stage", "isArchived"})


def model_version_update(existing: Mapping[str, Any], incoming: Mapping[str, Any]) -> str | None:
    """https://learn.microsoft.com/azure/machine-learning/how-to-manage-models#update-a-model"""
    for key in sorted(set(existing) | set(incoming)):
        if key in MUTABLE_VERSION_FIELDS or key in ("provisioningState", "isAnonymous"):
            continue
        if key not in incoming:
            continue  # left out: kept
        if existing.get(key) != incoming.get(key):
            return (f"Model version property '{key}' is immutable: only description, tags, stage and isArchived "
                    "can change; register a new version instead.")
    return None


def deployment_delete(name: str, live: Mapping[str, Any] | None) -> str | None:
    """A deployment taking live traffic cannot be deleted: set its traffic to 0 first.
    https://learn.microsoft.com/azure/machine-learning/how-to-safely-rollout-online-endpoints#remove-the-old-deployment"""
    if (live or {}).get(name):
        return f"Deployment '{name}' takes {live[name]} % of the live traffic; set it to 0 before deleting it."  # type: ignore[index]
    return None
