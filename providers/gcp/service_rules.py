"""Rules Google Cloud enforces on requests and Pulumi's mocks do not: names, ids, metric types.

Each rule returns the reason a value would be refused, or ``None`` when Google Cloud accepts it, so
a stack is refused when it is planned (or validated) with the reason instead of by the cloud at
``mlplat up``. ``program_problems`` applies the rules to the resources a program registered, which
tests run over the GCP program under mocks. Stdlib only: the settings model uses the patterns without
any Google library installed.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from mlplat_providers.gcp.runtime_rules import PLATFORM_METRIC_TYPES, PLATFORM_PREFIX

# --- settings patterns ---------------------------------------------------------------------------

# Billing account ids are three groups of six upper-case hexadecimal characters.
# https://cloud.google.com/billing/docs/how-to/find-billing-account-id
BILLING_ACCOUNT = r"^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$"
# A Cloud KMS key's resource name. https://cloud.google.com/kms/docs/resource-hierarchy#keys
KMS_KEY = (r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/locations/[a-z0-9-]+/keyRings/[A-Za-z0-9_-]{1,63}"
           r"/cryptoKeys/[A-Za-z0-9_-]{1,63}$")
# Compute Engine machine types: <family>-<kind>-<vCPUs>, or custom-<cpus>-<MiB>.
# https://cloud.google.com/compute/docs/machine-resource
MACHINE_TYPE = (r"^([a-z][a-z0-9]*-(standard|highmem|highcpu|ultramem|megamem|micro|small|medium)(-\d+)?(-lssd)?"
                r"|(e2|n1|n2|n2d)?-?custom-\d+-\d+)$")
MACHINE_TYPE_RE = re.compile(MACHINE_TYPE)
# Cloud SQL tiers: db-custom-<vCPUs>-<MiB>, db-f1-micro, db-g1-small, db-perf-optimized-N-<n>.
# https://cloud.google.com/sql/docs/postgres/instance-settings
CLOUD_SQL_TIER = r"^db-(custom-\d+-\d+|f1-micro|g1-small|perf-optimized-N-\d+)$"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")


def _id_problem(value: str, what: str, pattern: str, limit: int, rule: str) -> str | None:
    if not 1 <= len(value) <= limit:
        return f"{what} {value!r} has {len(value)} characters; Google Cloud allows 1 to {limit}"
    if not re.fullmatch(pattern, value):
        return f"{what} {value!r} is refused: {rule}"
    return None


# --- Cloud Storage ---------------------------------------------------------------------------------

# Bucket names: 3-63 characters of lowercase letters, digits, '-', '_' and '.'; starting and ending with
# a letter or digit; not starting with "goog" and not containing "google" or close misspellings.
# https://cloud.google.com/storage/docs/buckets#naming
def bucket_name_problem(name: str) -> str | None:
    if not 3 <= len(name) <= 63:
        return f"bucket name {name!r} has {len(name)} characters; Cloud Storage allows 3 to 63 (without dots)"
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*[a-z0-9]", name):
        return (f"bucket name {name!r} may hold only lowercase letters, digits, '-', '_' and '.', starting and "
                "ending with a letter or digit")
    if name.startswith("goog") or re.search(r"g[o0]{2}gle", name):
        return f"bucket name {name!r} starts with 'goog' or contains 'google', which Cloud Storage reserves"
    return None


# --- IAM -----------------------------------------------------------------------------------------

# Service account ids (the part before '@'): 6-30 characters, lowercase letters, digits and hyphens,
# starting with a letter and not ending with a hyphen.
# https://cloud.google.com/iam/docs/service-accounts-create
def service_account_id_problem(account_id: str) -> str | None:
    if not 6 <= len(account_id) <= 30:
        return f"service account id {account_id!r} has {len(account_id)} characters; IAM allows 6 to 30"
    if not re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]", account_id):
        return (f"service account id {account_id!r} is refused: lowercase letters, digits and hyphens, starting "
                "with a letter, not ending with a hyphen")
    return None


# Predefined roles the program grants; basic roles (owner, editor, viewer) are never granted to the
# platform's accounts: they span every service of the project.
# https://cloud.google.com/iam/docs/roles-overview#basic
BASIC_ROLES = ("roles/owner", "roles/editor", "roles/viewer")


def role_problem(role: str) -> str | None:
    if role in BASIC_ROLES:
        return f"{role} is a basic role spanning every service of the project; grant a predefined role instead"
    if not re.fullmatch(r"roles/[a-zA-Z]+\.[a-zA-Z.]+", role):
        return f"{role!r} is not a predefined role name (roles/<service>.<role>)"
    return None


# --- Artifact Registry, Cloud SQL, Cloud Run, BigQuery ---------------------------------------------

# Repository ids: lowercase letters, digits and hyphens, starting with a letter, ending with a letter or
# digit, at most 63 characters. https://cloud.google.com/artifact-registry/docs/repositories/create-repos
def repository_id_problem(repo: str) -> str | None:
    return _id_problem(repo, "Artifact Registry repository id", r"[a-z]([a-z0-9-]*[a-z0-9])?", 63,
                       "lowercase letters, digits and hyphens, starting with a letter, ending with a letter or digit")


# Instance ids: lowercase letters, digits and hyphens, starting with a letter; "project-id:instance-id"
# is at most 98 characters. https://cloud.google.com/sql/docs/postgres/create-instance
def sql_instance_problem(instance: str, project: str) -> str | None:
    problem = _id_problem(instance, "Cloud SQL instance id", r"[a-z][a-z0-9-]*[a-z0-9]", 98,
                          "lowercase letters, digits and hyphens, starting with a letter")
    if problem is None and len(f"{project}:{instance}") > 98:
        return f"Cloud SQL instance id {instance!r} with project {project!r} exceeds 98 characters"
    return problem


# Service names: at most 49 characters, lowercase letters, digits and hyphens, starting with a letter,
# not ending with a hyphen. https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.services
def cloud_run_name_problem(name: str) -> str | None:
    return _id_problem(name, "Cloud Run service name", r"[a-z]([a-z0-9-]*[a-z0-9])?", 49,
                       "lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen")


# Dataset ids: letters, digits and underscores, at most 1,024 characters.
# https://cloud.google.com/bigquery/docs/datasets#dataset-naming
def dataset_id_problem(dataset: str) -> str | None:
    return _id_problem(dataset, "BigQuery dataset id", r"[A-Za-z0-9_]+", 1024, "letters, digits and underscores only")


# Table ids: letters, digits, underscores (and Unicode L, M, N, Pc, Pd, Zs), at most 1,024 characters.
# https://cloud.google.com/bigquery/docs/tables#table_naming
def table_id_problem(table: str) -> str | None:
    return _id_problem(table, "BigQuery table id", r"[A-Za-z0-9_-]+", 1024, "letters, digits, '_' and '-'")


# --- Vertex AI Feature Store -------------------------------------------------------------------------

# Online stores, feature groups, feature views and features: lowercase letters, digits and underscores,
# not starting with a digit; up to 60 characters (features: 128).
# https://cloud.google.com/vertex-ai/docs/featurestore/latest/create-onlinestore
# https://cloud.google.com/vertex-ai/docs/featurestore/latest/create-featuregroup
def feature_resource_problem(name: str, what: str = "feature online store id", limit: int = 60) -> str | None:
    return _id_problem(name, what, r"[a-z_][a-z0-9_]*", limit,
                       "lowercase letters, digits and underscores, not starting with a digit")


# --- Cloud Monitoring ------------------------------------------------------------------------------

# Metrics Vertex AI publishes for online prediction, on the monitored resource aiplatform.googleapis.com/
# Endpoint (resource labels endpoint_id, location; metric label deployed_model_id).
# https://cloud.google.com/monitoring/api/metrics_gcp_a_b#gcp-aiplatform
VERTEX_ENDPOINT_RESOURCE = "aiplatform.googleapis.com/Endpoint"
VERTEX_ONLINE_METRICS = frozenset({
    "aiplatform.googleapis.com/prediction/online/prediction_count",
    "aiplatform.googleapis.com/prediction/online/prediction_latencies",
    "aiplatform.googleapis.com/prediction/online/error_count",
    "aiplatform.googleapis.com/prediction/online/response_count",
    "aiplatform.googleapis.com/prediction/online/replicas",
    "aiplatform.googleapis.com/prediction/online/target_replicas",
    "aiplatform.googleapis.com/prediction/online/cpu/utilization",
    "aiplatform.googleapis.com/prediction/online/memory/bytes_used",
    "aiplatform.googleapis.com/prediction/online/network/received_bytes_count",
    "aiplatform.googleapis.com/prediction/online/network/sent_bytes_count",
    "aiplatform.googleapis.com/prediction/online/accelerator/duty_cycle",
    "aiplatform.googleapis.com/prediction/online/accelerator/memory/bytes_used",
})
# Metrics the platform's own monitoring pass writes (CreateTimeSeries) from the BigQuery request log:
# user-defined metrics under custom.googleapis.com/mlplat/ on the monitored resource `global`, with the
# metric labels team, environment, model and endpoint_id; the runtime's rules module names them.
# https://cloud.google.com/monitoring/custom-metrics/creating-metrics#custom_metric_names
PLATFORM_METRIC_PREFIX = PLATFORM_PREFIX
PLATFORM_METRICS = PLATFORM_METRIC_TYPES


def metric_type_problem(metric_type: str) -> str | None:
    """Why an alert on ``metric_type`` would never fire: a metric nobody publishes."""
    if metric_type in VERTEX_ONLINE_METRICS or metric_type in PLATFORM_METRICS:
        return None
    if metric_type.startswith("aiplatform.googleapis.com/"):
        return f"metric {metric_type!r} is not one Vertex AI publishes for online prediction"
    return (f"metric {metric_type!r} is published neither by Vertex AI (aiplatform.googleapis.com/prediction/"
            f"online/...) nor by the platform's monitoring pass ({PLATFORM_METRIC_PREFIX}...)")


_METRIC_IN_FILTER = re.compile(r'metric\.type\s*=\s*"([^"]+)"')


def filter_metric_types(filter_text: str) -> list[str]:
    return _METRIC_IN_FILTER.findall(filter_text or "")


# --- the program's resources -------------------------------------------------------------------------


def _labels_problem(labels: Any) -> str | None:
    from mlplat_providers.gcp.labels import label_problem

    if not isinstance(labels, Mapping):
        return None
    if len(labels) > 64:
        return f"{len(labels)} labels; Google Cloud allows 64 per resource"
    for key, value in labels.items():
        problem = label_problem(str(key), str(value))
        if problem:
            return problem
    return None


def resource_problems(type_: str, props: Mapping[str, Any], *, project: str = "") -> list[str]:
    """Why Google Cloud would refuse the resource ``type_`` with the input properties ``props``."""
    out: list[str] = []

    def add(problem: str | None) -> None:
        if problem:
            out.append(problem)

    # a resource with user_labels (alert policies, notification channels) keeps its configuration in labels
    add(_labels_problem(props.get("userLabels") if "userLabels" in props else props.get("labels")))
    if type_ == "gcp:storage/bucket:Bucket":
        add(bucket_name_problem(str(props.get("name", ""))))
    elif type_ == "gcp:serviceaccount/account:Account":
        add(service_account_id_problem(str(props.get("accountId", ""))))
    elif type_ in ("gcp:projects/iAMMember:IAMMember", "gcp:storage/bucketIAMMember:BucketIAMMember",
                   "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
                   "gcp:serviceaccount/iAMMember:IAMMember"):
        add(role_problem(str(props.get("role", ""))))
    elif type_ == "gcp:artifactregistry/repository:Repository":
        add(repository_id_problem(str(props.get("repositoryId", ""))))
    elif type_ == "gcp:sql/databaseInstance:DatabaseInstance":
        add(sql_instance_problem(str(props.get("name", "")), project))
    elif type_ == "gcp:cloudrunv2/service:Service":
        add(cloud_run_name_problem(str(props.get("name", ""))))
    elif type_ == "gcp:bigquery/dataset:Dataset":
        add(dataset_id_problem(str(props.get("datasetId", ""))))
    elif type_ == "gcp:bigquery/table:Table":
        add(table_id_problem(str(props.get("tableId", ""))))
    elif type_ == "gcp:vertex/aiFeatureOnlineStore:AiFeatureOnlineStore":
        add(feature_resource_problem(str(props.get("name", ""))))
    elif type_ == "gcp:vertex/aiFeatureGroup:AiFeatureGroup":
        add(feature_resource_problem(str(props.get("name", "")), "feature group id"))
    elif type_ == "gcp:vertex/aiFeatureGroupFeature:AiFeatureGroupFeature":
        add(feature_resource_problem(str(props.get("name", "")), "feature id", 128))
    elif type_ == "gcp:vertex/aiFeatureOnlineStoreFeatureview:AiFeatureOnlineStoreFeatureview":
        add(feature_resource_problem(str(props.get("name", "")), "feature view id"))
    elif type_ == "gcp:monitoring/alertPolicy:AlertPolicy":
        conditions = props.get("conditions") or []
        if not conditions:
            out.append("an alert policy needs at least one condition")
        for condition in conditions:
            threshold = (condition or {}).get("conditionThreshold") or {}
            types = filter_metric_types(str(threshold.get("filter", "")))
            if not types:
                out.append(f"condition {condition.get('displayName')!r} names no metric.type in its filter")
            for metric_type in types:
                add(metric_type_problem(metric_type))
    elif type_ == "gcp:vertex/aiEndpoint:AiEndpoint":
        logging = props.get("predictRequestResponseLoggingConfig") or {}
        if logging.get("enabled") and not str((logging.get("bigqueryDestination") or {}).get("outputUri", "")
                                               ).startswith("bq://"):
            out.append("request-response logging needs a bigqueryDestination.outputUri of the form bq://project.dataset.table")
        rate = logging.get("samplingRate")
        if rate is not None and not 0 < float(rate) <= 1:
            out.append(f"request-response logging samplingRate {rate} is outside (0, 1]")
    return out


def program_problems(resources: Iterable[Any], *, project: str = "") -> list[str]:
    """Every problem of the recorded resources (objects with ``type``, ``name`` and ``inputs``)."""
    return [f"{r.type} '{r.name}': {problem}" for r in resources
            for problem in resource_problems(r.type, r.inputs, project=project)]
