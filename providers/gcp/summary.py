"""One-line summaries of the GCP program's resources for `mlplat preview --offline` (what a reviewer checks)."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Summary = Callable[[dict[str, Any]], str]


def _endpoint(props: dict[str, Any]) -> str:
    log = props.get("predictRequestResponseLoggingConfig") or {}
    logging = (f"logs {log.get('samplingRate')} -> {(log.get('bigqueryDestination') or {}).get('outputUri')}"
               if log.get("enabled") else "REQUEST LOGGING OFF")
    return f"{props.get('displayName')} (id {props.get('name')}): {logging}; traffic owned by the runtime"


def _alert(props: dict[str, Any]) -> str:
    metrics = []
    for condition in props.get("conditions") or []:
        text = str((condition.get("conditionThreshold") or {}).get("filter", ""))
        metrics.append(text.split('"')[1].rsplit("/", 1)[-1] if '"' in text else "?")
    return f"{props.get('displayName')}: {', '.join(metrics)} -> {len(props.get('notificationChannels') or [])} channel(s)"


def _database(props: dict[str, Any]) -> str:
    settings = props.get("settings") or {}
    ip = settings.get("ipConfiguration") or {}
    flags = {f.get("name"): f.get("value") for f in settings.get("databaseFlags") or []}
    return (f"{props.get('name')}: {props.get('databaseVersion')} {settings.get('tier')}, ssl {ip.get('sslMode')}, "
            f"{len(ip.get('authorizedNetworks') or [])} authorized network(s), "
            f"{'IAM auth' if flags.get('cloudsql.iam_authentication') == 'on' else 'PASSWORD AUTH'}")


def _budget(props: dict[str, Any]) -> str:
    amount = (props.get("amount") or {}).get("specifiedAmount") or {}
    labels = (props.get("budgetFilter") or {}).get("labels") or {}
    return f"{props.get('displayName')}: {amount.get('units')} {amount.get('currencyCode')}/month on label {labels}"


SUMMARIES: dict[str, Summary] = {
    "gcp:projects/service:Service": lambda p: f"{p.get('service')}",
    "gcp:storage/bucket:Bucket": lambda p: (
        f"{p.get('name')}: uniform access {p.get('uniformBucketLevelAccess')}, public access "
        f"{p.get('publicAccessPrevention')}, versioning {(p.get('versioning') or {}).get('enabled')}, "
        f"{'CMEK' if (p.get('encryption') or {}).get('defaultKmsKeyName') else 'Google-managed keys'}"),
    "gcp:serviceaccount/account:Account": lambda p: f"{p.get('accountId')}",
    "gcp:projects/iAMMember:IAMMember": lambda p: f"{p.get('role')}",
    "gcp:artifactregistry/repository:Repository": lambda p: f"{p.get('repositoryId')} ({p.get('format')})",
    "gcp:vertex/aiTensorboard:AiTensorboard": lambda p: f"{p.get('displayName')}",
    "gcp:sql/databaseInstance:DatabaseInstance": _database,
    "gcp:cloudrunv2/service:Service": lambda p: f"{p.get('name')}: {p.get('ingress')}, "
    f"{len((p.get('template') or {}).get('containers') or [])} containers",
    "gcp:bigquery/dataset:Dataset": lambda p: f"{p.get('datasetId')}",
    "gcp:bigquery/table:Table": lambda p: f"{p.get('tableId')}: {len(json.loads(p.get('schema') or '[]'))} columns",
    "gcp:vertex/aiEndpoint:AiEndpoint": _endpoint,
    "gcp:monitoring/alertPolicy:AlertPolicy": _alert,
    "gcp:monitoring/notificationChannel:NotificationChannel": lambda p: f"{p.get('type')} {p.get('displayName')}",
    "gcp:monitoring/dashboard:Dashboard": lambda p: (
        f"{len((json.loads(p.get('dashboardJson') or '{}').get('mosaicLayout') or {}).get('tiles', []))} charts"),
    "gcp:vertex/aiFeatureOnlineStore:AiFeatureOnlineStore": lambda p: f"{p.get('name')} (optimized)",
    "gcp:vertex/aiFeatureGroup:AiFeatureGroup": lambda p: (
        f"{p.get('name')} over {((p.get('bigQuery') or {}).get('bigQuerySource') or {}).get('inputUri')}"),
    "gcp:billing/budget:Budget": _budget,
}


def summarize(resource_type: str, props: dict[str, Any]) -> str:
    fn = SUMMARIES.get(resource_type)
    if fn is None:
        return ""
    try:
        return fn(props)
    except (AttributeError, TypeError, ValueError, IndexError):  # an unknown value in preview: show nothing
        return ""
