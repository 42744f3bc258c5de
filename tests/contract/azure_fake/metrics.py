"""Fake Azure Monitor metrics of managed online endpoints (``GET {endpoint}/providers/Microsoft.Insights/metrics``).

Traffic is steered into the state with :func:`add_requests` (endpoint, deployment, hour, requests, mean
latency). The query is checked against the documented rules in :func:`metrics_rules` and answered as
azure-mgmt-monitor's ``Response`` model (read back into it before it leaves, so a wrong shape fails here).
"""
from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from tests.contract.azure_fake.arm import EP, ArmError, Call, Route

ACTION = "Microsoft.Insights/metrics/read"
# https://learn.microsoft.com/en-us/azure/azure-monitor/reference/supported-metrics/
#   microsoft-machinelearningservices-workspaces-onlineendpoints-metrics
ENDPOINT_METRICS = {"RequestsPerMinute": ("Count", {"Average", "Maximum", "Minimum", "Total"}),
                    "RequestLatency": ("Milliseconds", {"Average", "Maximum", "Minimum"})}
# the dimensions each of those metrics has (same page): latency splits by deployment only
METRIC_DIMENSIONS = {"RequestsPerMinute": ("deployment", "statusCode", "statusCodeClass", "modelStatusCode"),
                     "RequestLatency": ("deployment",)}
DIMENSIONS = {d for dims in METRIC_DIMENSIONS.values() for d in dims}


def add_requests(state: Any, endpoint: str, deployment: str, at: str, requests: int, latency_ms: float,
                 errors: int = 0, client_errors: int = 0) -> None:
    """``requests`` calls served by ``deployment`` of ``endpoint`` in the time grain starting at ``at`` (ISO):
    ``errors`` of them answered 500, ``client_errors`` 400, the rest 200."""
    if errors + client_errors > requests:
        raise ValueError("more failed requests than requests")
    with state.lock:
        state.extra.setdefault("metrics", []).append({"endpoint": endpoint.lower(), "deployment": deployment,
                                                      "at": _when(at), "requests": requests,
                                                      "latency": latency_ms, "errors": errors,
                                                      "client_errors": client_errors})


def delete_endpoint(state: Any, endpoint: str) -> None:
    """``endpoint`` no longer exists: its metrics answer 404 ``ResourceNotFound``."""
    with state.lock:
        state.extra.setdefault("metrics_gone", set()).add(endpoint.lower())


def queries(state: Any) -> list[dict[str, Any]]:
    """Every metrics query answered so far: metric names, aggregations and the dimensions filtered on."""
    return list(state.extra.get("metrics_queries", []))


def _when(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ArmError(400, "BadRequest", f"Invalid timespan: '{value}' is not an ISO 8601 time.") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_CLAUSE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s+eq\s+'([^']*)'\s*$", re.IGNORECASE)


def parse_filter(text: str) -> dict[str, set[str] | None]:
    """Azure Monitor's ``$filter``: ``dim eq 'value'`` clauses joined by ``and``; a parenthesised group of
    clauses joined by ``or`` on one dimension lists its values; ``'*'`` splits by the dimension (any
    value, answered as one series per value). Keywords are case-insensitive, dimension names are
    matched case-insensitively and answered as documented. Dimension → wanted values (``None``: any).
    https://learn.microsoft.com/rest/api/monitor/metrics/list ($filter)"""
    out: dict[str, set[str] | None] = {}
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE) if text.strip() else []:
        group = part.strip()
        if group.startswith("(") and group.endswith(")"):
            group = group[1:-1]
        names, values = set(), set()
        for clause in re.split(r"\s+or\s+", group, flags=re.IGNORECASE):
            found = _CLAUSE.match(clause)
            if not found:
                raise ArmError(400, "BadRequest",
                               f"Invalid $filter clause: {clause.strip()!r} (expected dimension eq 'value').")
            names.add(_dimension(found.group(1)))
            values.add(found.group(2))
        if len(names) != 1:
            raise ArmError(400, "BadRequest", f"Invalid $filter: 'or' joins clauses of one dimension, got "
                                              f"{', '.join(sorted(names))}.")
        name = names.pop()
        if name in out:
            raise ArmError(400, "BadRequest", f"Invalid $filter: dimension {name} is filtered twice.")
        out[name] = None if "*" in values else values
    return out


def _dimension(name: str) -> str:
    return next((d for d in DIMENSIONS if d.lower() == name.lower()), name)


def metrics_rules(names: list[str], aggregations: list[str], dimensions: str | list[str] | None) -> str | None:
    """The refusal for a query of endpoint metrics, or None: each metric must be one the resource type
    publishes, each aggregation one that metric supports, and each dimension filtered on one that every
    metric of the query has."""
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
        for name in names:
            if dimension not in METRIC_DIMENSIONS[name]:
                return (f"Metric '{name}' has no dimension '{dimension}'; its dimensions: "
                        f"{', '.join(METRIC_DIMENSIONS[name]) or 'none'}.")
    return None


def _answers(row: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(status code, class, count) of a row's requests."""
    ok = row["requests"] - row["errors"] - row["client_errors"]
    return [(code, f"{code[0]}xx", count) for code, count in
            (("200", ok), ("400", row["client_errors"]), ("500", row["errors"])) if count]


def metrics(call: Call) -> Any:
    from azure.mgmt.monitor import models

    names = [n for n in call.arg("metricnames").split(",") if n]
    aggregations = [a for a in call.arg("aggregation", "Average").split(",") if a]
    where = parse_filter(call.arg("$filter"))
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
    with call.state.lock:
        call.state.extra.setdefault("metrics_queries", []).append(
            {"metrics": names, "aggregations": aggregations, "dimensions": sorted(where)})

    def wanted(dimension: str, value: str) -> bool:
        values = where.get(dimension)
        return values is None or value in values

    rows = [r for r in call.state.extra.get("metrics", []) if r["endpoint"] == resource.lower()
            and start <= r["at"] < end and wanted("deployment", r["deployment"])]
    value = []
    for name in names:
        unit, _supported = ENDPOINT_METRICS[name]
        data = []
        for row in sorted(rows, key=lambda r: r["at"]):
            point: dict[str, Any] = {"timeStamp": row["at"].isoformat().replace("+00:00", "Z")}
            if name == "RequestsPerMinute":
                count = sum(n for code, klass, n in _answers(row) if wanted("statusCode", code)
                            and wanted("statusCodeClass", klass) and wanted("modelStatusCode", code))
                point.update({"total": float(count), "average": count / 60.0})
            else:
                point["average"] = float(row["latency"])
            data.append(point)
        series = {"metadatavalues": [{"name": {"value": d}, "value": ",".join(sorted(v))}
                                     for d, v in sorted(where.items()) if v],
                  "data": data}
        value.append({"id": f"{resource}/providers/Microsoft.Insights/metrics/{name}", "type": "Microsoft.Insights/metrics",
                      "name": {"value": name, "localizedValue": name}, "unit": unit, "timeseries": [series]})
    body = {"cost": 0, "timespan": call.arg("timespan"), "interval": call.arg("interval", "PT1H"),
            "namespace": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
            "resourceregion": call.workspace.get("location", ""), "value": value}
    models.Response.deserialize(body)  # the answer is the service's own shape
    return body


ROUTES: list[Route] = [("GET", EP + "/providers/Microsoft.Insights/metrics", ACTION, metrics)]
