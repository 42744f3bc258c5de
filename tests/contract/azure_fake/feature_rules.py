"""The Azure ML managed feature store's documented rules, as the fake ARM enforces them.

Each function answers ``None`` when the request is acceptable, else the message Azure answers (400
``BadRequest`` unless stated); each cites the documentation page it encodes.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

# Asset names (feature sets, entities): letters, digits, '-', '_' and '.', starting with a letter or digit,
# at most 255 characters.
# https://learn.microsoft.com/azure/machine-learning/reference-yaml-featureset (name) and
# https://learn.microsoft.com/azure/machine-learning/reference-yaml-feature-entity (name)
_ASSET_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9\-_.]{0,254}$")
# Asset versions: letters, digits, '-', '_' and '.', at most 30 characters.
# https://learn.microsoft.com/azure/machine-learning/concept-azure-machine-learning-v2#versioning (asset versions)
_VERSION = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9\-_.]{0,29}$")
# Feature and index column types of the feature set spec and entity.
# https://learn.microsoft.com/azure/machine-learning/reference-yaml-featureset-spec (features.type)
DATA_TYPES = frozenset({"String", "Integer", "Long", "Float", "Double", "Binary", "Datetime", "Boolean"})
# Materialization targets. https://learn.microsoft.com/azure/machine-learning/reference-yaml-featureset
# (materialization_settings.offline_enabled / online_enabled)
STORE_TYPES = frozenset({"None", "Online", "Offline", "OnlineAndOffline"})
# A feature set names its entities as azureml:<entity>:<version>.
# https://learn.microsoft.com/azure/machine-learning/reference-yaml-featureset (entities)
_ENTITY_REF = re.compile(r"^azureml:(?P<name>[^:]+):(?P<version>[^:]+)$")


def asset_name(name: str, what: str) -> str | None:
    """https://learn.microsoft.com/azure/machine-learning/reference-yaml-featureset (name)"""
    if not _ASSET_NAME.fullmatch(name or ""):
        return (f"Invalid {what} name '{name}': use letters, digits, '-', '_' and '.', starting with a letter or "
                "digit, at most 255 characters.")
    return None


def asset_version(version: str) -> str | None:
    """https://learn.microsoft.com/azure/machine-learning/concept-azure-machine-learning-v2#versioning"""
    if not _VERSION.fullmatch(version or ""):
        return f"Invalid version '{version}': use letters, digits, '-', '_' and '.', at most 30 characters."
    return None


def index_columns(columns: Sequence[Mapping[str, Any]] | None) -> str | None:
    """An entity needs at least one index column, each named once and typed with a feature data type.
    https://learn.microsoft.com/azure/machine-learning/reference-yaml-feature-entity (index_columns)"""
    columns = list(columns or [])
    if not columns:
        return "A feature store entity needs at least one index column."
    names = [c.get("columnName") for c in columns]
    for column in columns:
        if not column.get("columnName"):
            return "Every index column needs a columnName."
        if column.get("dataType") not in DATA_TYPES:
            return (f"Index column '{column.get('columnName')}' has data type {column.get('dataType')!r}; use one of "
                    f"{', '.join(sorted(DATA_TYPES))}.")
    if len(set(names)) != len(names):
        return "Index column names must be unique."
    return None


def featureset_version(props: Mapping[str, Any], entities: Mapping[str, Sequence[str]]) -> str | None:
    """A feature set version names existing entity versions, a specification path and known store types.
    https://learn.microsoft.com/azure/machine-learning/reference-yaml-featureset"""
    refs = list(props.get("entities") or [])
    if not refs:
        return "A feature set version needs at least one entity (azureml:<entity>:<version>)."
    for ref in refs:
        found = _ENTITY_REF.fullmatch(str(ref))
        if not found:
            return f"Entity reference '{ref}' must look like azureml:<entity>:<version>."
        if found.group("version") not in entities.get(found.group("name"), ()):
            return f"Entity '{found.group('name')}' version {found.group('version')} does not exist in this feature store."
    if not (props.get("specification") or {}).get("path"):
        return "A feature set version needs specification.path (the folder holding FeaturesetSpec.yaml)."
    store = (props.get("materializationSettings") or {}).get("storeType")
    if store is not None and store not in STORE_TYPES:
        return f"materializationSettings.storeType must be one of {', '.join(sorted(STORE_TYPES))}, got {store!r}."
    return None


# Versions of assets are immutable: only description, tags, stage and the archive flag change.
# https://learn.microsoft.com/azure/machine-learning/concept-azure-machine-learning-v2#versioning
MUTABLE = frozenset({"description", "tags", "stage", "isArchived"})


def version_update(existing: Mapping[str, Any], incoming: Mapping[str, Any]) -> str | None:
    """https://learn.microsoft.com/azure/machine-learning/concept-azure-machine-learning-v2#versioning"""
    for key in sorted(set(existing) | set(incoming)):
        if key in MUTABLE or key in ("provisioningState", "isAnonymous") or key not in incoming:
            continue
        if existing.get(key) != incoming.get(key):
            return (f"Property '{key}' of an existing version is immutable: only description, tags, stage and "
                    "isArchived can change; create a new version instead.")
    return None
