"""Vertex AI's and Cloud Monitoring's documented rules, as the fakes enforce them.

Each function returns the reason a request is refused (``None``: accepted), so the fakes answer with
that text and the rules are tested on their own (tests/unit/test_gcp_rules_fake.py).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.models#Model
# (versionAliases) and .../models/mergeVersionAliases: "[a-z][a-zA-Z0-9-]{0,126}[a-z-0-9]", at most 128
# characters; "-alias" removes it; "a default version alias ... there must be exactly one".
ALIAS = re.compile(r"^[a-z][a-zA-Z0-9-]{0,126}[a-z0-9-]$")
DEFAULT_ALIAS = "default"


def alias_error(alias: str) -> str | None:
    if not ALIAS.match(alias):
        return (f"Version alias '{alias}' is invalid: it must match [a-z][a-zA-Z0-9-]{{0,126}}[a-z-0-9] "
                "(at most 128 characters, not a number)")
    return None


def merge_aliases_error(requested: Iterable[str], version_id: str, owners: Mapping[str, str]) -> str | None:
    """``owners``: alias → the version that holds it. An alias held by another version must be removed
    from it first (``default`` excepted: it moves), and ``default`` can never be removed."""
    for item in requested:
        alias = item[1:] if item.startswith("-") else item
        if (problem := alias_error(alias)) is not None:
            return problem
        if item == f"-{DEFAULT_ALIAS}":
            return "The default version alias cannot be removed; assign 'default' to another version instead"
        if not item.startswith("-") and alias != DEFAULT_ALIAS and owners.get(alias, version_id) != version_id:
            return (f"Version alias '{alias}' is already used by version {owners[alias]} of this model; "
                    f"remove it there first (-{alias})")
    return None


# https://cloud.google.com/resource-manager/docs/labels-overview#requirements
# and https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.endpoints (labels):
# at most 64 labels; keys and values at most 63 characters of lowercase letters, digits, "_" and "-"
# (international characters allowed); keys start with a lowercase letter and are not empty;
# keys prefixed "goog" are reserved (system labels "aiplatform.googleapis.com/" are Vertex's own).
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
MAX_LABELS = 64


def labels_error(labels: Mapping[str, str]) -> str | None:
    if len(labels) > MAX_LABELS:
        return f"At most {MAX_LABELS} labels are allowed, got {len(labels)}"
    for key, value in labels.items():
        if key.startswith("goog"):
            return f"Label key '{key}' is reserved (keys starting with 'goog')"
        if not LABEL_KEY.match(key):
            return (f"Label key '{key}' is invalid: 1-63 characters of lowercase letters, digits, '_' and '-', "
                    "starting with a lowercase letter")
        if not LABEL_VALUE.match(value):
            return f"Label value '{value}' of '{key}' is invalid: at most 63 lowercase letters, digits, '_' and '-'"
    return None


# https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.endpoints#Endpoint
# (trafficSplit): "A map from a DeployedModel's ID to the percentage of this Endpoint's traffic ... The
# traffic percentage values must add up to 100, or map must be empty if the Endpoint is to not accept any
# traffic at a moment." deployModel: "To refer to the ID of the just being deployed Model, a "0" should be
# used".
def traffic_split_error(split: Mapping[str, int], deployed_ids: Iterable[str], *, deploying: bool = False) -> str | None:
    known = set(deployed_ids) | ({"0"} if deploying else set())
    for key, value in split.items():
        if key not in known:
            return (f"Traffic split key '{key}' is not the id of a DeployedModel of this endpoint"
                    + (" (use '0' for the model being deployed)" if deploying else ""))
        if value < 0 or value > 100:
            return f"Traffic percentage of '{key}' must be between 0 and 100, got {value}"
    total = sum(split.values())
    if split and total != 100:
        return f"Traffic split percentages must add up to 100, got {total}"
    return None


# https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.endpoints/undeployModel:
# "A DeployedModel will be successfully undeployed only if it doesn't have any traffic assigned to it when
# this method executes, or if this field unassigns any traffic to it."
def undeploy_error(deployed_id: str, split: Mapping[str, int], remaining: int) -> str | None:
    if remaining and split.get(deployed_id, 0) > 0:
        return (f"DeployedModel {deployed_id} still receives {split[deployed_id]}% of the traffic; send a "
                "trafficSplit that assigns it none")
    return None


# https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.models/delete: "A model
# cannot be deleted if any Endpoint resource has a DeployedModel based on the model in its deployedModels
# field."
def delete_model_error(model: str, deployed_on: Iterable[str]) -> str | None:
    endpoints = sorted(set(deployed_on))
    if endpoints:
        return f"Model {model} is deployed on {', '.join(endpoints)}; undeploy it before deleting the model"
    return None


# https://cloud.google.com/vertex-ai/docs/reference/rest/v1/DedicatedResources: minReplicaCount >= 1,
# maxReplicaCount >= minReplicaCount; machineSpec.machineType required.
def dedicated_resources_error(machine_type: str, min_replicas: int, max_replicas: int) -> str | None:
    if not machine_type:
        return "dedicatedResources.machineSpec.machineType is required"
    if min_replicas < 1:
        return f"dedicatedResources.minReplicaCount must be at least 1, got {min_replicas}"
    if max_replicas and max_replicas < min_replicas:
        return f"dedicatedResources.maxReplicaCount ({max_replicas}) is less than minReplicaCount ({min_replicas})"
    return None


# Resource ids chosen by the caller: https://cloud.google.com/vertex-ai/docs/reference/rest/v1/
# projects.locations.models/upload (modelId: "up to 63 characters, valid characters are [a-z0-9_-]. The
# first character cannot be a number or hyphen") and .../endpoints/create (endpointId: "If the first character
# is a letter, this value may be up to 63 characters, and valid characters are [a-z0-9-]. The last character
# must be a letter or number. If the first character is a number, this value may be up to 9 characters ...
# with no leading zeros"; Terraform's google_vertex_ai_endpoint documents "at most 10 digits", but the API's
# limit is the one the service enforces).
MODEL_ID = re.compile(r"^[a-z_][a-z0-9_-]{0,62}$")
ENDPOINT_ID = re.compile(r"^([a-z]([a-z0-9-]{0,61}[a-z0-9])?|[1-9]\d{0,8})$")


def model_id_error(model_id: str) -> str | None:
    if not MODEL_ID.match(model_id):
        return f"modelId '{model_id}' is invalid: up to 63 of [a-z0-9_-], not starting with a number or hyphen"
    return None


def endpoint_id_error(endpoint_id: str) -> str | None:
    if not ENDPOINT_ID.match(endpoint_id):
        return (f"endpointId '{endpoint_id}' is invalid: digits with no leading zero (at most 9), or [a-z0-9-] of "
                "at most 63 characters starting with a letter and ending with a letter or digit")
    return None


# Cloud Monitoring, https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.timeSeries/create:
# "The maximum number of TimeSeries objects per Create request is 200"; each series "must contain exactly
# one point". https://cloud.google.com/monitoring/quotas#custom_metrics_quotas: a custom metric has at most
# 30 labels; label keys at most 100 characters, values at most 1024; one point per series per 5 seconds.
MAX_SERIES_PER_REQUEST = 200
MAX_METRIC_LABELS = 30
CUSTOM_PREFIXES = ("custom.googleapis.com/", "workload.googleapis.com/", "external.googleapis.com/")


def create_time_series_error(series: list[tuple[str, Mapping[str, str], int]]) -> str | None:
    """``series``: (metric type, metric labels, number of points) of each series in one request."""
    if len(series) > MAX_SERIES_PER_REQUEST:
        return f"Request contains {len(series)} time series; at most {MAX_SERIES_PER_REQUEST} are allowed"
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for metric_type, labels, points in series:
        if not metric_type.startswith(CUSTOM_PREFIXES):
            return (f"Metric type {metric_type} cannot be written: only custom.googleapis.com/, "
                    "workload.googleapis.com/ and external.googleapis.com/ metrics take points")
        if points != 1:
            return f"Time series of {metric_type} must contain exactly one point, got {points}"
        if len(labels) > MAX_METRIC_LABELS:
            return f"Metric {metric_type} has {len(labels)} labels; at most {MAX_METRIC_LABELS} are allowed"
        for key, value in labels.items():
            if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]{0,99}$", key):
                return f"Metric label key '{key}' is invalid: [a-zA-Z_][a-zA-Z0-9_]*, at most 100 characters"
            if len(value) > 1024:
                return f"Metric label '{key}' has a value longer than 1024 characters"
        identity = (metric_type, tuple(sorted(labels.items())))
        if identity in seen:
            return f"Field timeSeries had duplicate time series for {metric_type} {dict(labels)}: one point per " \
                   "time series per request"
        seen.add(identity)
    return None
