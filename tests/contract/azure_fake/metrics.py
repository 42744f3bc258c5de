"""Fake Azure Monitor metrics of managed online endpoints (``GET {endpoint}/providers/Microsoft.Insights/metrics``).

Traffic is steered into the state with :func:`add_requests` (endpoint, deployment, hour, requests, mean
latency). The query is checked against the documented rules in :func:`metrics_rules` and answered as
azure-mgmt-monitor's ``Response`` model (read back into it before it leaves, so a wrong shape fails here).
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.contract.azure_fake.arm import EP, ArmError, Call, Route

ACTION = "Microsoft.Insights/metrics/read"
# https://learn.microsoft.com/en-us/azure/azure-monitor/reference/supported-metrics/
#   microsoft-machinelearningservices-workspaces-onlineendpoints-metrics
ENDPOINT_METRICS = {"RequestsPerMinute": ("Count", {"Average", "Maximum", "Minimum", "Total"}),
                    "RequestLatency": ("Milliseconds", {"Average", "Maximum", "Minimum"})}
DIMENSIONS = {"deployment", "statusCode", "statusCodeClass", "modelStatusCode"}


def add_requests(state: Any, endpoint: str, deployment: str, at: str, requests: int, latency_ms: float,
                 errors: int = 0) -> None:
    """``requests`` calls (``errors`` of them answered 5xx) served by ``deployment`` of ``endpoint`` in the
    time grain starting at ``at`` (ISO)."""
    with state.lock:
        state.extra.setdefault("metrics", []).append({"endpoint": endpoint.lower(), "deployment": deployment,
                                                      "at": _when(at), "requests": requests,
                                                      "latency": latency_ms, "errors": errors})


def delete_endpoint(state: Any, endpoint: str) -> None:
    """``endpoint`` no longer exists: its metrics answer 404 ``ResourceNotFound``."""
    with state.lock:
        state.extra.setdefault("metrics_gone", set()).add(endpoint.lower())


def _when(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ArmError(400, "BadRequest", f"Invalid timespan: '{value}' is not an ISO 8601 time.") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_filter(text: str) -> dict[str, str]:
    """``$filter``'s ``dim eq 'value'`` clauses joined by ``and`` (the form the runtime sends), as a dict."""
    out: dict[str, str] = {}
    for clause in text.split(" and ") if text else []:
        left, eq, right = clause.partition(" eq ")
        if not eq or not right.strip().startswith("'") or not right.strip().endswith("'"):
            raise ArmError(400, "BadRequest", f"Invalid $filter clause: {clause!r} (expected dimension eq 'value').")
        out[left.strip()] = right.strip()[1:-1]
    return out


def metrics_rules(names: list[str], aggregations: list[str], dimensions: str | list[str] | None) -> str | None:
    """The refusal for a query of endpoint metrics, or None: each metric must be one the resource type
    publishes and each aggregation one that metric supports; a filter names a published dimension."""
    for name in names:
        if name not in ENDPOINT_METRICS:
            return (f"Failed to find metric configuration for provider: Microsoft.MachineLearningServices, "
                    f"resource Type: workspaces/onlineEndpoints, metric: {name}, Valid metrics: "
                    f"{', '.join(ENDPOINT_METRICS)}")
    for aggregation in aggregations:
        if not any(aggregation in ENDPOINT_METRICS[n][1] for n in names):
            return f"Aggregation '{aggregation}' is not supported by metrics {', '.join(names)}."
    for dimension in [dimensions] if isinstance(dimensions, str) else dimensions or []:
        if dimension not in DIMENSIONS:
            return f"Dimension '{dimension}' is not valid for this metric; valid: {', '.join(sorted(DIMENSIONS))}."
    return None


def metrics(call: Call) -> Any:
    from azure.mgmt.monitor import models

    names = [n for n in call.arg("metricnames").split(",") if n]
    aggregations = [a for a in call.arg("aggregation", "Average").split(",") if a]
    where = parse_filter(call.arg("$filter"))
    wanted = where.get("deployment")
    status_class = where.get("statusCodeClass")
    refused = metrics_rules(names, aggregations, list(where))
    if refused or not names:
        raise ArmError(400, "BadRequest", refused or "metricnames is required.")
    start_text, _, end_text = call.arg("timespan").partition("/")
    if not end_text:
        raise ArmError(400, "BadRequest", "timespan must be <start>/<end> in ISO 8601.")
    start, end = _when(start_text), _when(end_text)
    if end <= start:
        raise ArmError(400, "BadRequest", "timespan's end must be after its start.")
    resource = call.path.split("/providers/Microsoft.Insights/")[0]
    if resource.lower() in call.state.extra.get("metrics_gone", set()):
        raise ArmError(404, "ResourceNotFound", f"The Resource '{resource}' was not found.")
    rows = [r for r in call.state.extra.get("metrics", []) if r["endpoint"] == resource.lower()
            and start <= r["at"] < end and (wanted is None or r["deployment"] == wanted)]
    value = []
    for name in names:
        unit, _supported = ENDPOINT_METRICS[name]
        data = []
        for row in sorted(rows, key=lambda r: r["at"]):
            point: dict[str, Any] = {"timeStamp": row["at"].isoformat().replace("+00:00", "Z")}
            if name == "RequestsPerMinute":
                count = {None: row["requests"], "5xx": row["errors"]}.get(status_class, 0)
                point.update({"total": float(count), "average": count / 60.0})
            else:
                point["average"] = float(row["latency"])
            data.append(point)
        series = {"metadatavalues": [{"name": {"value": "deployment"}, "value": wanted}] if wanted else [],
                  "data": data}
        value.append({"id": f"{resource}/providers/Microsoft.Insights/metrics/{name}", "type": "Microsoft.Insights/metrics",
                      "name": {"value": name, "localizedValue": name}, "unit": unit, "timeseries": [series]})
    body = {"cost": 0, "timespan": call.arg("timespan"), "interval": call.arg("interval", "PT1H"),
            "namespace": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
            "resourceregion": call.workspace.get("location", ""), "value": value}
    models.Response.deserialize(body)  # the answer is the service's own shape
    return body


ROUTES: list[Route] = [("GET", EP + "/providers/Microsoft.Insights/metrics", ACTION, metrics)]
