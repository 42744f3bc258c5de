"""Monitoring on the azure provider: the deployments' collected data, the ledger's monitoring state, and the
platform's own Azure Monitor custom metrics.

Each deployment the runtime creates has Azure Machine Learning's data collector on (``data_collector`` of the
``ManagedOnlineDeployment``: collections ``model_inputs`` and ``model_outputs``). The collector writes JSON
Lines to the workspace's blob store (the default datastore ``workspaceblobstore``: container
``azureml-blobstore-<workspace id>``) under the documented layout
(https://learn.microsoft.com/azure/machine-learning/how-to-collect-production-data)::

    modelDataCollector/<endpoint>/<deployment>/<collection>/<yyyy>/<MM>/<dd>/<HH>/<file>.jsonl

one line per logged request: ``{"specversion", "id", "source", "type", "datacontenttype", "time", "data",
"correlationid", "xrequestid", ...}``. :class:`AzureMonitor` lists and reads those blobs (only the ones not
read before, by name and size), joins each request's inputs to its outputs by ``correlationid`` (the
caller's ``x-request-id`` when it sent one), and assigns rows to versions by the deployment's name
(``<model>-v<version>``, the names the runtime gives; the ledger's deployments say which exist, so traffic of
a version since undeployed stays attributable). A capture's request id is ``<deployment>/<correlation id>``;
labels may name the caller's own id (the correlation id), which names every non-shadow capture carrying it.
Reference samples, labels, windows, alerts and retraining live in the ledger exactly as on the other
providers, and the provider-neutral pass (``mlplat.services.monitoring.passes``) judges them.

After a pass, :meth:`AzureMonitor.publish` sends the platform's metrics to Azure Monitor's custom-metrics
ingestion API (``POST https://<region>.monitoring.azure.com/<workspace id>/metrics``), namespace ``mlplat``,
dimensions ``team`` and ``model`` (and ``feature`` for per-feature PSI): ``drift_share`` is what the program's
metric alert on the workspace watches (``plan.alert_criteria``). Every body is checked first against the
documented rules (:func:`custom_metric_problems`).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from mlplat.contracts import Capture
from mlplat.db import Database
from mlplat.errors import ExternalError, NotFound, StackError
from mlplat.services.monitoring import captured, published
from mlplat_providers.azure import service_rules as sr
from mlplat_providers.azure.runtime.collector import INPUTS, OUTPUTS, PREFIX

NAMESPACE = sr.PLATFORM_NAMESPACE
PUBLISH_ACTION = "Microsoft.Insights/Metrics/Write"
BLOB_LIST = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
DRIFT_SHARE, MAX_PSI, FEATURE_PSI, PREDICTION_DRIFT = "drift_share", "max_psi", "feature_psi", "prediction_drift"
QUALITY = {"quality.accuracy": "accuracy", "quality.precision": "precision", "quality.recall": "recall"}
PREDICTIONS = "predictions"
_PATH = re.compile(rf"^{PREFIX}/(?P<endpoint>[^/]+)/(?P<deployment>[^/]+)/(?P<collection>[^/]+)/"
                   r"(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<h>\d{2})/[^/]+\.jsonl$")


# --- the collector's files ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Logged:
    """One line of a collection file."""

    endpoint: str
    deployment: str
    collection: str
    correlation_id: str
    ts: float
    data: Any


def parse_time(value: Any) -> float:
    text = str(value).replace("Z", "+00:00")
    stamp = dt.datetime.fromisoformat(text)
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)).timestamp()


def parse_line(path: Mapping[str, str], line: str) -> Logged | None:
    """One collected request, or ``None`` for a line without the fields every collected line has."""
    try:
        row = json.loads(line)
        corr = row.get("correlationid") or row.get("xrequestid") or row["id"]
        return Logged(path["endpoint"], path["deployment"], path["collection"], str(corr), parse_time(row["time"]),
                      row.get("data"))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def outputs_of(data: Any) -> Any:
    """A ``model_outputs`` payload in the shape the shared services read (``{"predictions": [...]}``): a
    DataFrame's records (one column, or a ``prediction``-like column) or a list of values; a dict as is."""
    if isinstance(data, list):
        values = []
        for item in data:
            if isinstance(item, dict):
                key = next((k for k in ("prediction", "predictions", "label", "score") if k in item), None)
                values.append(item[key] if key else next(iter(item.values()), None))
            else:
                values.append(item)
        return {"predictions": values}
    return data


def inputs_of(data: Any) -> Any:
    """A ``model_inputs`` payload: a DataFrame's records (a list of dicts) as is; a split frame as records."""
    if isinstance(data, dict) and "columns" in data and "data" in data:
        return [dict(zip(data["columns"], row)) for row in data["data"]]
    return data


def join(lines: list[Logged], versions: Mapping[tuple[str, str], tuple[str, int, str, str]]) -> list[Capture]:
    """Inputs joined to outputs by correlation id within a deployment; ``versions``: (endpoint, deployment) →
    (model, version, environment, variant). Inputs without outputs yet are kept (no prediction)."""
    outputs = {(x.endpoint, x.deployment, x.correlation_id): x for x in lines if x.collection == OUTPUTS}
    out = []
    for x in lines:
        if x.collection != INPUTS:
            continue
        found = versions.get((x.endpoint, x.deployment))
        if found is None:
            continue  # a deployment the platform did not make
        model, version, environment, variant = found
        answer = outputs.get((x.endpoint, x.deployment, x.correlation_id))
        out.append(Capture(request_id=f"{x.deployment}/{x.correlation_id}", ts=x.ts, model=model, version=version,
                           variant=variant, environment=environment, inputs=inputs_of(x.data),
                           outputs=outputs_of(answer.data) if answer else None, latency_ms=0.0, status=200,
                           shadow=variant == "shadow"))
    out.sort(key=lambda c: (c.ts, c.request_id))
    return out


# --- Azure Monitor custom metrics: the documented rules --------------------------------------------------

MAX_DIMENSIONS = 10
PAST, FUTURE = 20 * 60, 5 * 60
MAX_NAME = 256


def custom_metric_problems(body: Mapping[str, Any], *, now: float) -> list[str]:
    """Why Azure Monitor would refuse a custom-metrics body (empty: it accepts it). The documented rules
    (https://learn.microsoft.com/azure/azure-monitor/essentials/metrics-store-custom-rest-api and
    https://learn.microsoft.com/azure/azure-monitor/essentials/metrics-custom-overview): ``time`` is ISO 8601
    UTC, no more than 20 minutes in the past nor 5 minutes in the future; metric, namespace and dimension
    names are non-empty (at most 256 characters, no surrounding spaces); at most 10 dimensions per metric,
    distinct (names are case-insensitive); each series gives one value per dimension, and ``min <= max``,
    ``count >= 1``, finite numbers."""
    problems: list[str] = []
    try:
        when = parse_time(body["time"])
    except (KeyError, TypeError, ValueError):
        return ["time must be an ISO 8601 UTC timestamp"]
    if when < now - PAST:
        problems.append(f"time {body['time']} is more than 20 minutes in the past")
    if when > now + FUTURE:
        problems.append(f"time {body['time']} is more than 5 minutes in the future")
    base = ((body.get("data") or {}).get("baseData")) if isinstance(body.get("data"), dict) else None
    if not isinstance(base, dict):
        return problems + ["data.baseData is required"]
    for key in ("metric", "namespace"):
        problems += _name_problems(key, base.get(key))
    dims = base.get("dimNames") or []
    if len(dims) > MAX_DIMENSIONS:
        problems.append(f"{len(dims)} dimensions: at most {MAX_DIMENSIONS} per metric")
    for d in dims:
        problems += _name_problems("dimension name", d)
    if len({str(d).lower() for d in dims}) != len(dims):
        problems.append("dimension names must be distinct (they are case-insensitive)")
    series = base.get("series") or []
    if not series:
        problems.append("series must hold at least one value")
    for s in series:
        values = s.get("dimValues") or []
        if len(values) != len(dims):
            problems.append(f"series has {len(values)} dimension values for {len(dims)} dimension names")
        if any(not str(v) for v in values):
            problems.append("dimension values must not be empty")
        numbers = [s.get(k) for k in ("min", "max", "sum", "count")]
        if not all(isinstance(n, int | float) and math.isfinite(n) for n in numbers):
            problems.append("min, max, sum and count must be finite numbers")
            continue
        if s["min"] > s["max"]:
            problems.append("min must not exceed max")
        if s["count"] < 1:
            problems.append("count must be at least 1")
    return problems


def _name_problems(what: str, value: Any) -> list[str]:
    text = value if isinstance(value, str) else ""
    if not text:
        return [f"{what} must be a non-empty string"]
    if len(text) > MAX_NAME:
        return [f"{what} {text[:40]!r}... is longer than {MAX_NAME} characters"]
    if text != text.strip():
        return [f"{what} {text!r} must not start or end with spaces"]
    return []


def metric_body(metric: str, when: float, dims: Mapping[str, str], value: float) -> dict[str, Any]:
    """One custom-metrics body: one series holding one value."""
    stamp = dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"time": stamp, "data": {"baseData": {
        "metric": metric, "namespace": NAMESPACE, "dimNames": list(dims),
        "series": [{"dimValues": [str(v) for v in dims.values()], "min": value, "max": value, "sum": value,
                    "count": 1}]}}}


# --- the monitor ------------------------------------------------------------------------------------------

class AzureMonitor(captured.LogMonitor):
    """``Capability.MONITORING`` of an Azure stack (see the module doc)."""

    def __init__(self, spec: Any, ctx: Any, session: Any = None, *, clock: Callable[[], float] | None = None):
        self.spec = spec
        self.ctx = ctx
        if session is None:
            from mlplat_providers.azure.runtime.session import AzureSession

            session = AzureSession(spec)
        self.azure = session
        self._clock = clock
        self._files: dict[str, tuple[int, list[Logged]]] = {}  # blob name → (size, lines read)
        self._container: str | None = None

    def database(self) -> Database:
        from mlplat_providers.azure.runtime.state import AzureState

        state = AzureState(self.spec.state_dir, getattr(self.ctx, "database_url", None))
        return cast(Database, state.database(create=not getattr(self.ctx, "reading", False)))

    # --- names -------------------------------------------------------------------------------------

    def container(self) -> str:
        """The workspace blob store's container (``azureml-blobstore-<workspace id>``), where the collector
        writes; ``mlplat:provider.collectorContainer`` when the stack names another."""
        if self._container is None:
            named = getattr(self.spec.provider, "collector_container", None)
            if named:
                self._container = str(named)
            else:
                workspace = self.azure.call(self.azure.ml().workspaces.get, self.azure.workspace, not_found=True,
                                            action="Microsoft.MachineLearningServices/workspaces/read",
                                            what=f"workspace {self.azure.workspace}")
                guid = getattr(workspace, "_workspace_id", None)
                if not guid:
                    raise StackError(f"workspace {self.azure.workspace} has no workspace id",
                                     hint="run `mlplat up` for this stack")
                self._container = f"azureml-blobstore-{guid}"
        return self._container

    def versions(self) -> dict[tuple[str, str], tuple[str, int, str, str]]:
        """(endpoint, deployment) → (model, version, environment, variant) of every version the ledger deployed."""
        from mlplat_providers.azure.runtime.serving import AzureServing

        rows = captured.ledger_deployments(self.database())
        serving = AzureServing(self.spec, self.ctx, self.azure)
        out: dict[tuple[str, str], tuple[str, int, str, str]] = {}
        for r in rows:
            key = (serving.endpoint_name(r["model"], r["environment"]), serving.deployment_name(r["model"],
                                                                                                int(r["version"])))
            out[key] = (r["model"], int(r["version"]), r["environment"], r["variant"] or "primary")
        return out

    # --- reading ----------------------------------------------------------------------------------------

    def _read(self, endpoint: str) -> list[Logged]:
        """Every collected line of ``endpoint``'s deployments (files already read are not read again)."""
        from azure.core.exceptions import ResourceNotFoundError

        container = self.container()
        client = self.azure.blob_service().get_container_client(container)
        where = f"the data collector's files in container {container}"
        try:
            listed = self.azure.call(lambda: [(b.name, int(b.size or 0)) for b in client.list_blobs(
                name_starts_with=f"{PREFIX}/{endpoint}/")], action=BLOB_LIST, not_found=True, what=where)
        except NotFound:
            raise StackError(f"the workspace's blob store has no container {container!r}: the data collector "
                             "writes there, so the monitor cannot read collected traffic",
                             where=f"storage account {self.azure.storage_account()}",
                             hint="set mlplat:provider.collectorContainer to the container of the workspace's "
                                  "default datastore (workspaceblobstore), or run `mlplat up` for this stack") from None
        out: list[Logged] = []
        for name, size in listed:
            path = _PATH.match(name)
            if path is None:
                continue
            known = self._files.get(name)
            if known is None or known[0] != size:
                blob = client.get_blob_client(name)
                try:
                    data = self.azure.call(lambda b=blob: b.download_blob().readall(), action=BLOB_LIST,
                                           not_found=True, what=f"{container}/{name}")
                except (NotFound, ResourceNotFoundError):
                    continue
                text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)
                parsed = [p for p in (parse_line(path.groupdict(), line) for line in text.splitlines() if line.strip())
                          if p is not None]
                known = (size, parsed)
                self._files[name] = known
            out.extend(known[1])
        return out

    def logged(self) -> list[Capture]:
        versions = self.versions()
        lines: list[Logged] = []
        for endpoint in sorted({e for e, _d in versions}):
            lines.extend(self._read(endpoint))
        return join(lines, versions)

    # --- the Monitor contract ---------------------------------------------------------------------------

    def resolve_request_ids(self, ids: list[str]) -> dict[str, list[str]]:
        """A capture's id (``<deployment>/<correlation id>``) names itself; the caller's own id (the
        ``x-request-id`` it sent, the collector's correlation id) names every non-shadow capture carrying it."""
        found = self.logged()
        known = captured.known_request_ids(found, ids)
        callers = [(c.request_id.split("/", 1)[1], c.request_id) for c in found if not c.shadow]
        return captured.resolve_request_ids(known, ids, callers)

    # --- the platform's metrics ---------------------------------------------------------------------

    def bodies(self, report: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The custom-metrics bodies of a finished pass (``PassReport.to_dict()``), at the pass's time."""
        when = float(report["ts"])
        team = str(self.spec.team)
        out: list[dict[str, Any]] = []
        for w in published.window_values(report):
            dims = {"team": team, "model": w.model}
            for feature, psi in sorted(w.feature_psi.items()):
                out.append(metric_body(FEATURE_PSI, when, {**dims, "feature": feature}, psi))
            if w.max_psi is not None:
                out.append(metric_body(MAX_PSI, when, dims, w.max_psi))
            if w.prediction_psi is not None:
                out.append(metric_body(PREDICTION_DRIFT, when, dims, w.prediction_psi))
            if w.drift_share is not None:
                out.append(metric_body(DRIFT_SHARE, when, dims, w.drift_share))
                out.append(metric_body(PREDICTIONS, when, dims, float(w.rows or 0)))
            for key, name in QUALITY.items():
                if key in w.metrics:
                    out.append(metric_body(name, when, dims, w.metrics[key]))
        return out

    def publish(self, report: Mapping[str, Any]) -> dict[str, Any]:
        """Send a finished pass's metrics to Azure Monitor (on the workspace); returns what was sent and what
        was left out (a body the rules refuse is left out with the reason, never sent)."""
        from azure.core.exceptions import HttpResponseError, map_error
        from azure.core.rest import HttpRequest

        now = self._clock() if self._clock else time.time()  # Azure Monitor judges the time against its clock
        client = self.azure.metrics_client()
        url = f"{self.azure.metrics_endpoint}{self.azure.workspace_id}/metrics"
        sent, skipped = 0, []
        for body in self.bodies(report):
            problems = custom_metric_problems(body, now=now)
            if problems:
                skipped.append(f"{body['data']['baseData']['metric']}: {'; '.join(problems)}")
                continue

            def post(body: dict[str, Any] = body) -> None:
                response = client.send_request(HttpRequest("POST", url, json=body))
                if response.status_code >= 300:
                    map_error(response.status_code, response, {})
                    raise HttpResponseError(response=response)

            self.azure.call(post, action=PUBLISH_ACTION, what="publishing the monitoring pass's metrics to Azure "
                                                              "Monitor")
            sent += 1
        if not sent and skipped:
            raise ExternalError(f"no monitoring metric could be published: {skipped[0]}",
                                hint="the pass itself is recorded in the ledger")
        out: dict[str, Any] = {"namespace": NAMESPACE, "resource": self.azure.workspace_id, "metrics": sent,
                               "skipped": skipped}
        settings = getattr(self.spec.provider, "model_monitoring", None)
        if settings is not None and settings.enabled:  # opt-in: Azure ML's own schedules beside the pass
            from mlplat_providers.azure.runtime.model_monitoring import ensure_schedules

            out["model_monitoring"] = ensure_schedules(self.azure, self.spec, self.live_targets())
        return out

    def live_targets(self) -> list[tuple[str, str]]:
        """``(endpoint, deployment)`` of every platform deployment the stack's endpoints have now."""
        from mlplat_providers.azure.runtime.session import MANAGED_TAG

        versions = self.versions()
        ml = self.azure.ml()
        out = []
        for endpoint in sorted({e for e, _d in versions}):
            try:
                listed = self.azure.call(lambda e=endpoint: list(ml.online_deployments.list(e)), not_found=True,
                                         action="Microsoft.MachineLearningServices/workspaces/onlineEndpoints/"
                                                "deployments/read", what=f"the deployments of {endpoint}")
            except NotFound:
                continue  # the endpoint was deleted
            out += [(endpoint, d.name) for d in listed
                    if (endpoint, d.name) in versions and (d.tags or {}).get(MANAGED_TAG) == "true"]
        return out
