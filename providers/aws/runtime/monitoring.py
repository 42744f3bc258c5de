"""Monitoring on the aws provider: the endpoints' data capture in S3, the ledger's monitoring state, and the
platform's own CloudWatch metrics.

SageMaker writes what an endpoint captured under the one prefix the runtime configures
(``plan.capture_uri``: ``data-capture/<model>/<environment>/``), appending
``<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl``; a line is one request::

    {"captureData": {"endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                                       "data": "{...}", "encoding": "JSON"},
                     "endpointOutput": {... "mode": "OUTPUT" ...}},
     "eventMetadata": {"eventId": "...", "inferenceId": "...", "inferenceTime": "2026-01-02T03:04:05Z"},
     "eventVersion": "0"}

:class:`AwsMonitor` reads those files into the provider-neutral :class:`~mlplat.contracts.Capture`:
the request id is SageMaker's ``eventId``; the caller's ``InferenceId`` (``InvokeEndpoint``'s
parameter) is kept beside it, so labels may name either, as labels name the gateway's request id or the
caller's ``x-request-id`` on the local provider. The version a capture belongs to is the one the
ledger's deployment rows say its variant served at its inference time (variants have stable names:
``primary`` the stable version, ``canary`` the candidate, ``shadow`` the mirror). Reference samples,
labels, windows, alerts and retraining live in the ledger, exactly as on the local provider; the
provider-neutral pass (``mlplat.services.monitoring.passes``) judges them.

After a pass, :meth:`AwsMonitor.publish` puts the platform's own metrics in CloudWatch
(``plan.PLATFORM_NAMESPACE``): per model, environment and variant the largest PSI, the share of
drifted features, the captured predictions and the quality metrics; PSI per feature; and the team's
cost. The drift alarm, the dashboard and the canary judge read these names (``plan``). Every request is
checked against CloudWatch's documented limits (``service_rules.put_metric_data_problems``) first.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from mlplat.contracts import Capture
from mlplat.db import Database
from mlplat.errors import ExternalError
from mlplat.services.monitoring import captured
from mlplat_providers.aws import plan as p
from mlplat_providers.aws.runtime.session import AwsSession
from mlplat_providers.aws.runtime.state import AwsState

CAPTURE_ROOT = "data-capture/"


@dataclass(frozen=True)
class CapturedRecord:
    """One line of a SageMaker capture file, with where it was found."""

    event_id: str
    inference_id: str | None
    ts: float
    model: str
    environment: str
    variant: str
    inputs: Any
    outputs: Any


def capture_location(key: str) -> tuple[str, str, str] | None:
    """``(model, environment, variant)`` of a capture file's S3 key, or ``None`` for another key.

    ``data-capture/<model>/<environment>/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl``."""
    if not key.startswith(CAPTURE_ROOT) or not key.endswith(".jsonl"):
        return None
    parts = key[len(CAPTURE_ROOT):].split("/")
    if len(parts) < 9:
        return None
    model, environment, variant = "/".join(parts[:-8]), parts[-8], parts[-6]
    return (model, environment, variant) if model else None


def _payload(part: Mapping[str, Any] | None) -> Any:
    """The captured body as JSON when it is JSON (``encoding`` JSON, or BASE64 of JSON), else its text."""
    if not part or part.get("data") is None:
        return None
    data, encoding = part["data"], str(part.get("encoding") or "").upper()
    if encoding == "BASE64":
        try:
            data = base64.b64decode(data).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


def parse_time(text: str) -> float:
    """Epoch seconds of SageMaker's ``inferenceTime`` (ISO 8601 in UTC, ``Z`` or an offset)."""
    stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def parse_capture_line(line: str, model: str, environment: str, variant: str) -> CapturedRecord | None:
    """One request of a capture file, or ``None`` for a line that is not a capture record."""
    try:
        doc = json.loads(line)
        meta = doc["eventMetadata"]
        data = doc.get("captureData") or {}
        return CapturedRecord(event_id=str(meta["eventId"]), inference_id=meta.get("inferenceId") or None,
                              ts=parse_time(str(meta["inferenceTime"])), model=model, environment=environment,
                              variant=variant, inputs=_payload(data.get("endpointInput")),
                              outputs=_payload(data.get("endpointOutput")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass(frozen=True)
class Served:
    """One deployment row of the ledger: ``version`` served on a SageMaker variant from ``start`` to ``end``."""

    version: int
    ledger_variant: str
    start: float
    end: float | None

    def covers(self, ts: float) -> bool:
        return self.start <= ts and (self.end is None or ts < self.end)


def version_at(rows: list[Served], variant: str, ts: float) -> int | None:
    """The version the SageMaker ``variant`` served at ``ts`` according to the ledger's deployment rows.

    ``shadow``: the ledger's shadow row; ``primary``: its ``primary``/``stable`` row, else (A/B arms) the
    arm serving longest; ``canary``: its ``canary`` row, else the newest other arm; ``v<N>`` (a further A/B
    arm): version N. ``None`` when no row covers ``ts``."""
    live = [r for r in rows if r.covers(ts)]
    if variant == p.SHADOW:
        shadows = [r for r in live if r.ledger_variant == p.SHADOW]
        return shadows[-1].version if shadows else None
    live = [r for r in live if r.ledger_variant != p.SHADOW]
    arm = re.fullmatch(r"v(\d+)", variant)
    if arm:
        return int(arm.group(1)) if any(r.version == int(arm.group(1)) for r in live) else None
    wanted = ("primary", "stable") if variant == p.PRIMARY else (p.CANARY,)
    named = [r for r in live if r.ledger_variant in wanted]
    if named:
        return named[-1].version
    arms = sorted((r for r in live if r.ledger_variant not in (p.PRIMARY, "stable", p.CANARY)),
                  key=lambda r: (r.start, r.version))
    if not arms or (variant == p.CANARY and len(arms) < 2):
        return None
    return arms[0].version if variant == p.PRIMARY else arms[-1].version


class AwsMonitor(captured.LogMonitor):
    """``Capability.MONITORING`` of an AWS stack (see the module doc)."""

    def __init__(self, spec: Any, ctx: Any, session: AwsSession | None = None):
        self.spec = spec
        self.ctx = ctx
        self.aws = session or AwsSession(spec)
        self.state = AwsState(spec.state_dir, getattr(ctx, "database_url", None))
        self._files: dict[str, tuple[str, list[CapturedRecord]]] = {}  # key -> (ETag, records); files never change

    def database(self) -> Database:
        # or PgDatabase, which speaks the same interface; a read finds the stack's state, never creates it
        return cast(Database, self.state.database(create=not getattr(self.ctx, "reading", False)))

    # --- captures ------------------------------------------------------------------------------

    def _records(self) -> list[CapturedRecord]:
        """Every captured request under the stack's capture prefix; a file is read once per monitor."""
        keys: dict[str, str] = {}
        token: str | None = None
        while True:
            page = self.aws.call("s3", "list_objects_v2", Bucket=self.aws.bucket, Prefix=CAPTURE_ROOT,
                                 what=f"listing captured requests in s3://{self.aws.bucket}/{CAPTURE_ROOT}",
                                 **({"ContinuationToken": token} if token else {}))
            for item in page.get("Contents") or []:
                keys[item["Key"]] = str(item.get("ETag") or "")
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            if not token:
                break
        out: list[CapturedRecord] = []
        for key in sorted(keys):
            where = capture_location(key)
            if where is None:
                continue
            cached = self._files.get(key)
            if cached is None or cached[0] != keys[key]:
                body = self.aws.call("s3", "get_object", Bucket=self.aws.bucket, Key=key,
                                     what=f"reading captured requests s3://{self.aws.bucket}/{key}")["Body"].read()
                records = [r for r in (parse_capture_line(line, *where)
                                       for line in body.decode("utf-8", errors="replace").splitlines() if line.strip())
                           if r is not None]
                cached = self._files[key] = (keys[key], records)
            out.extend(cached[1])
        return out

    def _served(self) -> dict[tuple[str, str], list[Served]]:
        rows = captured.ledger_deployments(self.database(), "model, environment, version, variant, started_at, ended_at")
        out: dict[tuple[str, str], list[Served]] = {}
        for r in rows:
            out.setdefault((r["model"], r["environment"]), []).append(
                Served(int(r["version"]), r["variant"], float(r["started_at"]),
                       None if r["ended_at"] is None else float(r["ended_at"])))
        return out

    def _all(self) -> list[tuple[CapturedRecord, Capture]]:
        """``(record, capture)`` of every captured request whose version the ledger names, oldest first."""
        served = self._served()
        out = []
        for record in self._records():
            version = version_at(served.get((record.model, record.environment), []), record.variant, record.ts)
            if version is None:
                continue  # traffic of a deploy the ledger does not know (another stack's, or before its first)
            out.append((record, Capture(request_id=record.event_id, ts=record.ts, model=record.model,
                                        version=version, variant=record.variant, environment=record.environment,
                                        inputs=record.inputs, outputs=record.outputs, latency_ms=0.0, status=200,
                                        shadow=record.variant == p.SHADOW)))
        out.sort(key=lambda rc: (rc[1].ts, rc[1].request_id))
        return out

    def logged(self) -> list[Capture]:
        return [c for _r, c in self._all()]

    def resolve_request_ids(self, ids: list[str]) -> dict[str, list[str]]:
        """SageMaker's event ids name themselves; a caller's ``InferenceId`` names every non-shadow capture
        that carries it (an event id wins over an equal inference id)."""
        return captured.resolve_request_ids(self.known_request_ids(ids), ids, (
            (record.inference_id, c.request_id) for record, c in self._all() if record.inference_id and not c.shadow))

    # --- the platform's metrics ----------------------------------------------------------------------

    def variant_of(self, model: str, version: int, environment: str) -> str:
        """The SageMaker variant that served ``version`` most recently (``primary`` when none did)."""
        newest = [c for _r, c in self._all() if (c.model, c.version, c.environment) == (model, int(version), environment)]
        return newest[-1].variant if newest else p.PRIMARY

    def metric_data(self, report: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The ``MetricData`` of a finished pass (``PassReport.to_dict()``), one timestamp: the pass's."""
        stamp = dt.datetime.fromtimestamp(float(report["ts"]), dt.UTC)
        data: list[dict[str, Any]] = []

        def put(name: str, value: float, dims: Mapping[str, str], unit: str = "None") -> None:
            data.append({"MetricName": name, "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                         "Timestamp": stamp, "Value": float(value), "Unit": unit})

        for w in report.get("windows") or []:
            variant = self.variant_of(w["model"], w["version"], w["environment"])
            dims = p.platform_dimensions(w["model"], w["environment"], variant)
            drift = w.get("drift") or {}
            if drift.get("verdict") not in (None, "no reference", "insufficient data", "insufficient reference"):
                scores = {f["feature"]: f["psi"] for f in drift.get("features") or []
                          if f.get("psi") is not None and f.get("feature") != "__prediction__"}
                for feature, psi in sorted(scores.items()):
                    put(p.FEATURE_DRIFT_METRIC, psi, p.platform_dimensions(w["model"], w["environment"], variant,
                                                                           feature))
                if scores:
                    put(p.DRIFT_ALARM_METRIC, max(scores.values()), dims)
                put(p.DRIFT_SHARE_METRIC, float(drift.get("share") or 0.0), dims)
                put(p.PREDICTIONS_METRIC, float(drift.get("rows") or 0), dims, "Count")
            for key, name in p.QUALITY_METRICS.items():
                if key in (w.get("metrics") or {}):
                    put(name, w["metrics"][key], dims, "Count" if key == "quality.rows" else "None")
        team = p.team_dimensions(self.spec.team, self.spec.environment)
        for key, name in p.COST_METRICS.items():
            if key in (report.get("cost") or {}):
                put(name, report["cost"][key], team)
        return data

    def requests(self, report: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """``(PutMetricData requests, skipped data)``: data CloudWatch would refuse (a feature name that is not
        ASCII, a value out of range) are left out with the reason; the rest go in batches it takes."""
        from mlplat_providers.aws.service_rules import MAX_METRIC_DATA, metric_datum_problems

        now = float(report["ts"])
        good, skipped = [], []
        for datum in self.metric_data(report):
            problems = metric_datum_problems(datum, now=now)
            if problems:
                skipped.append("; ".join(problems))
            else:
                good.append(datum)
        return ([{"Namespace": p.PLATFORM_NAMESPACE, "MetricData": good[i:i + MAX_METRIC_DATA]}
                 for i in range(0, len(good), MAX_METRIC_DATA)], skipped)

    def publish(self, report: Mapping[str, Any]) -> dict[str, Any]:
        """Put a finished pass's metrics in CloudWatch; returns what was sent and what was left out."""
        from mlplat_providers.aws.service_rules import put_metric_data_problems

        requests, skipped = self.requests(report)
        for request in requests:
            problems = put_metric_data_problems(request, now=float(report["ts"]))
            if problems:  # a bug here, not a user error: never send CloudWatch what it refuses
                raise ExternalError(f"refusing to publish monitoring metrics: {'; '.join(problems)}",
                                    hint="report this; the pass itself is recorded in the ledger")
            self.aws.call("cloudwatch", "put_metric_data", what="publishing the monitoring pass's metrics", **request)
        out = {"namespace": p.PLATFORM_NAMESPACE, "metrics": sum(len(r["MetricData"]) for r in requests),
               "requests": len(requests), "skipped": skipped}
        if self.spec.provider.model_monitor.enabled:  # opt-in: advance each endpoint's schedule one step
            from mlplat_providers.aws.runtime.serving import AwsServing

            serving = AwsServing(self.spec, self.ctx, self.aws)
            out["model_monitor"] = {d["model"]: serving.model_monitor(d["model"], self.spec.environment)
                                    for d in serving.list(self.spec.environment)}
        return out
