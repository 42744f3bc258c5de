"""Rules Google Cloud enforces on what the gcp runtime sends: Cloud Monitoring time series, billing queries.

Each rule returns the reasons a request would be refused (empty when Google accepts it); the runtime checks
its requests before sending them and the tests' fakes refuse with the same functions. Stdlib only.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

# --- the platform's metrics (user-defined, under custom.googleapis.com/mlplat/) ----------------------------

# User-defined metric types start with custom.googleapis.com/.
# https://cloud.google.com/monitoring/custom-metrics/creating-metrics#custom_metric_names
PLATFORM_PREFIX = "custom.googleapis.com/mlplat/"
FEATURE_PSI = "drift/feature_psi"  # labels + feature
MAX_PSI = "drift/max_psi"  # the largest PSI over a window's features
DRIFT_SHARE = "drift/share"
PREDICTIONS = "predictions"
QUALITY_METRICS = {"quality.accuracy": "quality/accuracy", "quality.precision": "quality/precision",
                   "quality.recall": "quality/recall", "quality.f1": "quality/f1", "quality.roc_auc": "quality/roc_auc",
                   "quality.ece": "quality/calibration_error", "quality.rows": "quality/labelled_rows"}
COST_METRICS = {"cost.usd": "cost/usd", "cost.daily_usd": "cost/daily_usd", "cost.predictions": "cost/predictions",
                "cost.per_prediction_usd": "cost/per_prediction_usd", "cost.budget_share": "cost/budget_share"}
PLATFORM_METRIC_TYPES = frozenset(PLATFORM_PREFIX + n for n in (FEATURE_PSI, MAX_PSI, DRIFT_SHARE, PREDICTIONS,
                                                                *QUALITY_METRICS.values(), *COST_METRICS.values()))

# https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.timeSeries/create
MAX_SERIES_PER_REQUEST = 200
# https://cloud.google.com/monitoring/quotas#custom_metrics_quotas (user-defined metrics)
MAX_LABELS = 30
MAX_LABEL_KEY = 100
MAX_LABEL_VALUE = 1024
MAX_METRIC_TYPE = 200
# Points older than 25 hours or more than 5 minutes in the future are refused.
# https://cloud.google.com/monitoring/custom-metrics/creating-metrics#writing-ts
MAX_AGE_SECONDS = 25 * 3600
MAX_FUTURE_SECONDS = 300
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
METRIC_PATH = re.compile(r"^[A-Za-z0-9_/.\-]+$")


def label_value(text: str) -> str:
    """A metric label value Cloud Monitoring takes (at most 1,024 characters)."""
    return str(text)[:MAX_LABEL_VALUE]


def time_series_problems(series: Mapping[str, Any], *, now: float) -> list[str]:
    """Why Cloud Monitoring would refuse one time series of a ``CreateTimeSeries`` request."""
    problems: list[str] = []
    metric = series.get("metric") or {}
    kind = str(metric.get("type") or "")
    where = kind or "a time series"
    if not kind.startswith("custom.googleapis.com/") and not kind.startswith("workload.googleapis.com/"):
        problems.append(f"{where}: only user-defined metric types (custom.googleapis.com/...) may be written")
    elif len(kind) > MAX_METRIC_TYPE or not METRIC_PATH.match(kind.split("/", 1)[1]):
        problems.append(f"{where}: a metric type has at most {MAX_METRIC_TYPE} characters of letters, digits, "
                        "'_', '-', '.' and '/'")
    labels = metric.get("labels") or {}
    if len(labels) > MAX_LABELS:
        problems.append(f"{where}: {len(labels)} labels; a user-defined metric takes at most {MAX_LABELS}")
    for key, value in labels.items():
        if not LABEL_KEY.match(key) or len(key) > MAX_LABEL_KEY:
            problems.append(f"{where}: label key {key!r} must be lowercase letters, digits and '_', starting "
                            f"with a letter, at most {MAX_LABEL_KEY} characters")
        if len(str(value)) > MAX_LABEL_VALUE:
            problems.append(f"{where}: label {key}'s value has more than {MAX_LABEL_VALUE} characters")
    resource = series.get("resource") or {}
    if resource.get("type") == "global" and set(resource.get("labels") or {}) != {"project_id"}:
        problems.append(f"{where}: the monitored resource 'global' has exactly the label project_id")
    points = series.get("points") or []
    if len(points) != 1:
        problems.append(f"{where}: a time series in CreateTimeSeries has exactly one point ({len(points)} given)")
    value_type, metric_kind = series.get("value_type"), series.get("metric_kind")
    if metric_kind not in ("GAUGE", "CUMULATIVE", "DELTA"):
        problems.append(f"{where}: metric kind {metric_kind!r} is not GAUGE, CUMULATIVE or DELTA")
    for point in points:
        interval = point.get("interval") or {}
        end = interval.get("end_time")
        if end is None:
            problems.append(f"{where}: a point needs interval.end_time")
            continue
        if metric_kind == "GAUGE" and interval.get("start_time") not in (None, end):
            problems.append(f"{where}: a GAUGE point's start time, when given, equals its end time")
        if end < now - MAX_AGE_SECONDS:
            problems.append(f"{where}: the point is more than 25 hours old")
        if end > now + MAX_FUTURE_SECONDS:
            problems.append(f"{where}: the point is more than 5 minutes in the future")
        value = point.get("value") or {}
        wanted = {"DOUBLE": "double_value", "INT64": "int64_value", "BOOL": "bool_value"}.get(str(value_type))
        if wanted is None or set(value) != {wanted}:
            problems.append(f"{where}: value type {value_type} needs exactly {wanted or 'a known value'}")
        elif wanted == "double_value" and value[wanted] != value[wanted]:
            problems.append(f"{where}: NaN is not a value")
    return problems


def series_key(series: Mapping[str, Any]) -> tuple[Any, ...]:
    metric, resource = series.get("metric") or {}, series.get("resource") or {}
    return (metric.get("type"), tuple(sorted((metric.get("labels") or {}).items())), resource.get("type"),
            tuple(sorted((resource.get("labels") or {}).items())))


def create_time_series_problems(request: Mapping[str, Any], *, now: float) -> list[str]:
    """Why Cloud Monitoring would refuse a whole ``CreateTimeSeries`` request."""
    series = list(request.get("time_series") or [])
    problems = []
    if not re.match(r"^projects/[^/]+$", str(request.get("name") or "")):
        problems.append("name must be projects/<project>")
    if not 1 <= len(series) <= MAX_SERIES_PER_REQUEST:
        problems.append(f"{len(series)} time series; CreateTimeSeries takes 1 to {MAX_SERIES_PER_REQUEST}")
    keys = [series_key(s) for s in series]
    if len(set(keys)) != len(keys):
        # a series is written at most once every 5 seconds: twice in one request is refused
        problems.append("the same time series appears twice in one request")
    for s in series:
        problems += time_series_problems(s, now=now)
    return problems


def batches(series: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Requests of at most ``MAX_SERIES_PER_REQUEST`` series."""
    chunk: list[dict[str, Any]] = []
    for s in series:
        chunk.append(s)
        if len(chunk) == MAX_SERIES_PER_REQUEST:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def to_proto(series: Mapping[str, Any]) -> Any:
    """A ``monitoring_v3.TimeSeries`` of one series (proto-plus validates field names and types).

    ``metric_kind`` and ``value_type`` are left unset, as Cloud Monitoring allows when writing: the first write
    of a user-defined metric creates its descriptor as a GAUGE of the points' value type."""
    import datetime as dt

    from google.cloud import monitoring_v3

    def stamp(seconds: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(seconds, dt.UTC)

    points = [{"interval": {"end_time": stamp(p["interval"]["end_time"]),
                            **({"start_time": stamp(p["interval"]["start_time"])}
                               if p["interval"].get("start_time") is not None else {})},
               "value": p["value"]} for p in series["points"]]
    return monitoring_v3.TimeSeries(metric=series["metric"], resource=series["resource"], points=points)


# --- Cloud Billing export -------------------------------------------------------------------------------

# The standard usage cost export's table: gcp_billing_export_v1_<BILLING ACCOUNT ID, dashes as underscores>.
# https://cloud.google.com/billing/docs/how-to/export-data-bigquery-tables/standard-usage
def billing_table(project: str, dataset: str, billing_account: str) -> str:
    return f"{project}.{dataset}.gcp_billing_export_v1_{billing_account.replace('-', '_')}"
