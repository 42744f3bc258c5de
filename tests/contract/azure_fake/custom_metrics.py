"""Fake Azure Monitor custom-metrics ingestion (``POST https://<region>.monitoring.azure.com/<resource id>/metrics``),
mounted on the fake ARM server (the runtime reaches it through ``MLPLAT_AZURE_METRICS_ENDPOINT`` or the ARM
override). The body is checked against the documented rules (the runtime's ``custom_metric_problems``, against
this fake's clock: ``state.extra["metrics_now"]`` when a test sets it, else the time of the request) and kept
in ``state.extra["custom_metrics"]`` as ``{resource, time, metric, namespace, dims, min, max, sum, count}``.
The API takes no ``api-version``; it needs the caller's bearer token (audience ``https://monitoring.azure.com/``)
and the action ``Microsoft.Insights/Metrics/Write`` on the resource (role Monitoring Metrics Publisher).
https://learn.microsoft.com/azure/azure-monitor/essentials/metrics-store-custom-rest-api
"""
from __future__ import annotations

import time
from typing import Any

from tests.contract.azure_fake.arm import WS, ArmError, Call, Route

ACTION = "Microsoft.Insights/Metrics/Write"


def ingest(call: Call) -> Any:
    from mlplat_providers.azure.runtime.monitoring import custom_metric_problems

    body = call.json
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "The custom metric body must be a JSON object.")
    now = call.state.extra.get("metrics_now") or time.time()
    problems = custom_metric_problems(body, now=float(now))
    if problems:
        raise ArmError(400, "BadRequest", "; ".join(problems))
    base = body["data"]["baseData"]
    resource = call.path.rsplit("/metrics", 1)[0]
    call.workspace  # noqa: B018 - a resource that does not exist answers 404
    with call.state.lock:
        for series in base["series"]:
            call.state.extra.setdefault("custom_metrics", []).append({
                "resource": resource, "time": body["time"], "metric": base["metric"], "namespace": base["namespace"],
                "dims": dict(zip(base.get("dimNames") or [], series.get("dimValues") or [])),
                **{k: series[k] for k in ("min", "max", "sum", "count")}})
    return 200, {}


ingest.data_plane = True  # type: ignore[attr-defined]  # no api-version on this API

ROUTES: list[Route] = [("POST", WS + "/metrics", ACTION, ingest)]
