"""Monitoring on the gcp provider: the endpoints' BigQuery request-response log, the ledger's monitoring state,
and the platform's own Cloud Monitoring metrics.

Each endpoint the runtime creates logs its traffic to BigQuery (``predictRequestResponseLoggingConfig``, set
by the program); Vertex AI writes one row per request in the documented schema
(https://cloud.google.com/vertex-ai/docs/predictions/online-prediction-logging#request-response_logging)::

    endpoint STRING, deployed_model_id STRING, logging_time TIMESTAMP, request_id NUMERIC,
    request_payload STRING REPEATED, response_payload STRING REPEATED

:class:`GcpMonitor` reads those rows (``jobs.query``, only the rows since the last read of each table) into
the provider-neutral :class:`~mlplat.contracts.Capture`. A row names the *deployed model* that answered,
never a model version: the version is the one the endpoint's deployed model carries (``DeployedModel.model``
and ``model_version_id``, read from Vertex), and every pair the monitor has seen is kept under the stack's
state directory so the traffic of a version since undeployed stays attributable. The request id is
``<deployed model id>-<request id>`` (Vertex's request ids are per deployed model). Reference samples,
labels, windows, alerts and retraining live in the ledger exactly as on the local and AWS providers, and the
provider-neutral pass (``mlplat.services.monitoring.passes``) judges them.

After a pass, :meth:`GcpMonitor.publish` writes the platform's metrics with ``CreateTimeSeries`` under
``custom.googleapis.com/mlplat/`` on the monitored resource ``global`` (metric labels team, environment,
model, endpoint_id, and feature for per-feature PSI): the metrics the program's alert policies and dashboard
read (``service_rules.PLATFORM_METRICS``). Every request is checked first against Cloud Monitoring's
documented rules (``runtime_rules.create_time_series_problems``).

Vertex AI Model Monitoring jobs (``ModelDeploymentMonitoringJob``) are opt-in, like SageMaker Model Monitor
on AWS: with ``mlplat:provider.modelMonitoring.enabled`` each pass keeps one job per endpoint watching its
deployed models (:mod:`.model_monitoring`).
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from mlplat.contracts import Capture
from mlplat.db import Database
from mlplat.errors import ExternalError, NotFound
from mlplat.services.monitoring import captured
from mlplat_providers.gcp import runtime_rules as rr


@dataclass(frozen=True)
class LoggedRequest:
    """One row of an endpoint's request-response log."""

    endpoint_id: str
    deployed_model_id: str
    request_id: str
    ts: float
    inputs: Any
    outputs: Any


@dataclass(frozen=True)
class DeployedVersion:
    """What a deployed model of an endpoint serves."""

    model: str
    version: int
    environment: str
    variant: str = "primary"


def _json(parts: Any) -> Any:
    """A logged payload (a REPEATED STRING, one element per chunk) as JSON when it is JSON, else text."""
    if parts is None:
        return None
    text = "".join(str(p) for p in parts) if isinstance(parts, list) else str(parts)
    try:
        return json.loads(text)
    except ValueError:
        return text


def endpoint_id_of(resource: str) -> str:
    """``projects/p/locations/r/endpoints/123`` (or a bare id) → ``123``."""
    return str(resource).rstrip("/").rsplit("/", 1)[-1]


def parse_row(row: Mapping[str, Any]) -> LoggedRequest | None:
    """One logged request, or ``None`` for a row without the fields every logged request has."""
    try:
        stamp = row["logging_time"]
        ts = stamp.timestamp() if isinstance(stamp, dt.datetime) else float(stamp)
        rid = row["request_id"]
        rid = format(rid, "f") if hasattr(rid, "as_tuple") else str(rid)
        return LoggedRequest(endpoint_id=endpoint_id_of(row["endpoint"]), deployed_model_id=str(row["deployed_model_id"]),
                             request_id=f"{row['deployed_model_id']}-{rid.split('.', 1)[0]}", ts=ts,
                             inputs=_json(row.get("request_payload")), outputs=_json(row.get("response_payload")))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def log_query(table: str) -> str:
    """The query reading one log table after a time (a parameter): BigQuery standard SQL."""
    return ("SELECT endpoint, deployed_model_id, logging_time, request_id, request_payload, response_payload "
            f"FROM `{table}` WHERE logging_time > @after ORDER BY logging_time, request_id")


def table_of(output_uri: str) -> str:
    """``bq://project.dataset.table`` → ``project.dataset.table``."""
    return output_uri.removeprefix("bq://")


class GcpMonitor(captured.LogMonitor):
    """``Capability.MONITORING`` of a GCP stack (see the module doc)."""

    def __init__(self, spec: Any, ctx: Any, session: Any = None, *,
                 endpoints: Callable[[], list[dict[str, Any]]] | None = None):
        self.spec = spec
        self.ctx = ctx
        if session is None:
            from mlplat_providers.gcp.runtime.session import GcpSession

            session = GcpSession(spec)
        self.gcp = session
        self._endpoints = endpoints or self._vertex_endpoints
        self._rows: dict[str, list[LoggedRequest]] = {}  # table -> rows read so far (rows are never rewritten)

    # --- ledger -------------------------------------------------------------------------------------

    def database(self) -> Database:
        from mlplat_providers.gcp.runtime.state import GcpState

        state = GcpState(self.spec.state_dir, getattr(self.ctx, "database_url", None))
        return cast(Database, state.database(create=not getattr(self.ctx, "reading", False)))

    @property
    def _seen_path(self) -> Path:
        return Path(self.spec.state_dir) / "gcp" / "deployed-models.json"

    def _seen(self) -> dict[str, dict[str, Any]]:
        try:
            return cast(dict[str, dict[str, Any]], json.loads(self._seen_path.read_text()))
        except (OSError, ValueError):
            return {}

    # --- Vertex: endpoints, deployed models, log tables ---------------------------------------------

    def _vertex_endpoints(self) -> list[dict[str, Any]]:
        """The endpoints of every ``(model, environment)`` the ledger deployed, as ``{id, log_table, deployed}``:
        each deployed model's version (``GcpServing.deployed``: ``model_version_id``), the variant the ledger's
        open deployment row gives that version, and the log table the endpoint's logging config names (the
        program's table for the model when the endpoint has none yet)."""
        from mlplat_providers.gcp.plan import underscored
        from mlplat_providers.gcp.runtime.serving import GcpServing

        rows = captured.ledger_deployments(self.database())
        variants: dict[tuple[str, str], dict[int, str]] = {}
        for r in rows:
            variants.setdefault((r["model"], r["environment"]), {})[int(r["version"])] = r["variant"] or "primary"
        serving = GcpServing(self.spec, self.ctx, self.gcp)
        plan = self.gcp.plan
        out = []
        for (model, environment), by_version in variants.items():
            endpoint = serving.get_endpoint(model, environment)
            if endpoint is None:
                continue
            config = endpoint.predict_request_response_logging_config
            uri = config.bigquery_destination.output_uri if config and config.enabled else ""
            table = table_of(uri) if uri else f"{plan.project}.{plan.request_dataset}.{underscored(f'{model}_requests', 1024)}"
            deployed = {dmid: DeployedVersion(model, version, environment, by_version.get(version, "primary"))
                        for version, dmid in serving.deployed(endpoint, model).items()}
            out.append({"id": endpoint_id_of(endpoint.name), "log_table": table, "deployed": deployed})
        return out

    def _resolve(self) -> tuple[dict[tuple[str, str], DeployedVersion], list[str]]:
        """``(endpoint id, deployed model id) → DeployedVersion`` (today's and every one seen before), log tables."""
        seen = self._seen()
        tables: list[str] = []
        changed = False
        for endpoint in self._endpoints():
            if endpoint["log_table"] not in tables:
                tables.append(endpoint["log_table"])
            for dmid, dv in endpoint["deployed"].items():
                key = f"{endpoint['id']}/{dmid}"
                value = {"model": dv.model, "version": dv.version, "environment": dv.environment, "variant": dv.variant}
                if seen.get(key) != value:
                    seen[key], changed = value, True
        if changed and not getattr(self.ctx, "reading", False):
            self._seen_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._seen_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(seen, indent=1, sort_keys=True))
            tmp.replace(self._seen_path)
        mapping = {tuple(k.split("/", 1)): DeployedVersion(v["model"], int(v["version"]), v["environment"],
                                                            v.get("variant") or "primary")
                   for k, v in seen.items()}
        return cast(dict[tuple[str, str], DeployedVersion], mapping), tables

    def _read(self, table: str) -> list[LoggedRequest]:
        from google.cloud import bigquery

        from mlplat_providers.gcp.runtime import bq

        rows = self._rows.setdefault(table, [])
        # rows land in the log in time order within seconds; re-read the last second, then drop known ids
        after = dt.datetime.fromtimestamp(rows[-1].ts - 1.0 if rows else 0.0, dt.UTC)
        try:
            result = bq.query(self.gcp, log_query(table), [bigquery.ScalarQueryParameter("after", "TIMESTAMP", after)],
                              what=f"reading the request-response log {table}", not_found=True)
        except NotFound:
            return rows  # Vertex creates the table with the first logged request: nothing was logged yet
        known = {r.request_id for r in rows if r.ts >= after.timestamp()}
        for row in result:
            parsed = parse_row(row)
            if parsed is not None and parsed.request_id not in known:
                rows.append(parsed)
        return rows

    def logged(self) -> list[Capture]:
        mapping, tables = self._resolve()
        out = []
        for table in tables:
            for r in self._read(table):
                dv = mapping.get((r.endpoint_id, r.deployed_model_id))
                if dv is None:
                    continue  # a deployed model the platform did not deploy
                out.append(Capture(request_id=r.request_id, ts=r.ts, model=dv.model, version=dv.version,
                                   variant=dv.variant, environment=dv.environment, inputs=r.inputs, outputs=r.outputs,
                                   latency_ms=0.0, status=200, shadow=dv.variant == "shadow"))
        out.sort(key=lambda c: (c.ts, c.request_id))
        return out

    # --- the Monitor contract --------------------------------------------------------------------------

    def resolve_request_ids(self, ids: list[str]) -> dict[str, list[str]]:
        """The log's ids (``<deployed model id>-<request id>``) name themselves; Vertex AI logs no caller id, so a
        caller who labels by its own id sends it in the request as ``parameters.request_id`` (the predict
        request's free-form parameters, logged with the request), which names every non-shadow capture carrying
        it (a log id wins over an equal caller id)."""
        known = self.known_request_ids(ids)
        callers: list[tuple[str, str]] = []
        for c in self.logged():
            params = c.inputs.get("parameters") if isinstance(c.inputs, dict) else None
            caller = params.get("request_id") if isinstance(params, dict) else None
            if caller is not None and not c.shadow:
                callers.append((str(caller), c.request_id))
        return captured.resolve_request_ids(known, ids, callers)

    # --- the platform's metrics ----------------------------------------------------------------------

    def endpoint_of(self, model: str, version: int, environment: str) -> str:
        """The endpoint id that logged ``version``'s traffic most recently (empty when none did)."""
        mapping, _tables = self._resolve()
        ids = [endpoint for (endpoint, _dm), dv in mapping.items()
               if (dv.model, dv.version, dv.environment) == (model, int(version), environment)]
        return sorted(ids)[-1] if ids else ""

    def time_series(self, report: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The time series of a finished pass (``PassReport.to_dict()``), one point each at the pass's time."""
        from mlplat_providers.gcp.labels import normalise_value

        end = float(report["ts"])
        # the program's alert policies filter on metric.label.team (the team label) and metric.label.model (the
        # model's name as declared: metric label values are free text up to 1,024 characters)
        team, environment = str(self.gcp.plan.team_label), normalise_value(self.spec.environment)
        out: list[dict[str, Any]] = []

        def put(name: str, value: float, labels: Mapping[str, str], integer: bool = False) -> None:
            out.append({"metric": {"type": rr.PLATFORM_PREFIX + name,
                                   "labels": {"team": team, "environment": environment, **labels}},
                        "resource": {"type": "global", "labels": {"project_id": self.gcp.project}},
                        "metric_kind": "GAUGE", "value_type": "INT64" if integer else "DOUBLE",
                        "points": [{"interval": {"end_time": end},
                                    "value": {"int64_value": int(value)} if integer else {"double_value": float(value)}}]})

        for w in report.get("windows") or []:
            labels = {"model": rr.label_value(w["model"]),
                      "endpoint_id": self.endpoint_of(w["model"], w["version"], w["environment"]) or "none"}
            drift = w.get("drift") or {}
            if drift.get("verdict") not in (None, "no reference", "insufficient data", "insufficient reference"):
                scores = {f["feature"]: f["psi"] for f in drift.get("features") or []
                          if f.get("psi") is not None and f.get("feature") != "__prediction__"}
                for feature, psi in sorted(scores.items()):
                    put(rr.FEATURE_PSI, psi, {**labels, "feature": rr.label_value(feature)})
                if scores:
                    put(rr.MAX_PSI, max(scores.values()), labels)
                put(rr.DRIFT_SHARE, float(drift.get("share") or 0.0), labels)
                put(rr.PREDICTIONS, float(drift.get("rows") or 0), labels, integer=True)
            for key, name in rr.QUALITY_METRICS.items():
                if key in (w.get("metrics") or {}):
                    put(name, w["metrics"][key], labels, integer=key == "quality.rows")
        for key, name in rr.COST_METRICS.items():
            if key in (report.get("cost") or {}):
                put(name, report["cost"][key], {"model": "all", "endpoint_id": "all"})
        return out

    def requests(self, report: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """``(CreateTimeSeries requests, skipped)``: series Cloud Monitoring would refuse are left out with the
        reason; the rest go in requests of at most 200 series, no series twice in one request."""
        now = float(report["ts"])
        good, skipped = [], []
        for series in self.time_series(report):
            problems = rr.time_series_problems(series, now=now)
            if problems:
                skipped.append("; ".join(problems))
            else:
                good.append(series)
        return ([{"name": f"projects/{self.gcp.project}", "time_series": chunk}
                 for chunk in rr.batches(good)], skipped)

    def publish(self, report: Mapping[str, Any]) -> dict[str, Any]:
        """Write a finished pass's metrics to Cloud Monitoring; returns what was sent and what was left out."""
        from google.cloud import monitoring_v3

        requests, skipped = self.requests(report)
        client = self.gcp.monitoring()
        for request in requests:
            problems = rr.create_time_series_problems(request, now=float(report["ts"]))
            if problems:  # a bug here, not a user error: never send what Cloud Monitoring refuses
                raise ExternalError(f"refusing to publish monitoring metrics: {'; '.join(problems)}",
                                    hint="report this; the pass itself is recorded in the ledger")
            self.gcp.call(client.create_time_series, request=monitoring_v3.CreateTimeSeriesRequest(
                name=request["name"], time_series=[rr.to_proto(s) for s in request["time_series"]]),
                method="create_time_series", what="publishing the monitoring pass's metrics")
        out: dict[str, Any] = {"metric_prefix": rr.PLATFORM_PREFIX,
                               "metrics": sum(len(r["time_series"]) for r in requests),
                               "requests": len(requests), "skipped": skipped}
        settings = getattr(self.spec.provider, "model_monitoring", None)
        if settings is not None and settings.enabled:  # opt-in: Vertex's own jobs beside the pass
            from mlplat_providers.gcp.runtime.model_monitoring import ensure_jobs

            out["model_monitoring"] = ensure_jobs(self.gcp, self.spec, self._endpoints())
        return out
