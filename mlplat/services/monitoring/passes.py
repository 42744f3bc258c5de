"""One monitoring pass over a stack: windows → drift and quality → alerts → retraining.

For every model version with captured traffic the pass takes the newest
``window.size`` successful captures, compares them with the version's reference
sample (drift), joins the newest labelled predictions (quality), computes the
team's cost this month, records one window row per version and kind, advances the
alert state (de-duplicated) and, where the stack configures it, starts debounced
retraining. Webhooks are sent off the caller's thread.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat import providers
from mlplat.context import Context
from mlplat.contracts import Capability, Capture
from mlplat.errors import MlplatError, NotFound
from mlplat.services import registry
from mlplat.services.monitoring import alerts as alerts_mod
from mlplat.services.monitoring import cost as cost_mod
from mlplat.services.monitoring import drift as drift_mod
from mlplat.services.monitoring import quality as quality_mod
from mlplat.services.monitoring import retrain as retrain_mod
from mlplat.services.monitoring.windows import labels_for, monitor_for, window_frame

if TYPE_CHECKING:
    import pandas as pd

    from mlplat.contracts import Monitor
    from mlplat.stack import StackSpec

QUALITY_BREACH = "breach"


@dataclass
class VersionWindow:
    model: str
    version: int
    environment: str
    drift: dict[str, Any] | None
    quality: dict[str, Any] | None
    metrics: dict[str, float]
    breach: bool


@dataclass
class PassReport:
    pass_id: str
    ts: float
    stack: str
    windows: list[VersionWindow] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    cost: dict[str, float] = field(default_factory=dict)
    retraining: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    published: dict[str, Any] = field(default_factory=dict)  # what the provider put in its metric store

    def to_dict(self) -> dict[str, Any]:
        return {"pass_id": self.pass_id, "ts": self.ts, "stack": self.stack,
                "windows": [w.__dict__ for w in self.windows], "events": self.events, "cost": self.cost,
                "retraining": self.retraining, "notes": self.notes, "published": self.published}


def reference_frame(spec: StackSpec, ctx: Context, model: str, version: int) -> pd.DataFrame | None:
    """The version's ``reference.parquet`` from its verified artifacts, or ``None``."""
    try:
        folder = registry.verified_model_dir(spec, ctx, model, version)
    except NotFound:
        return None
    path = Path(folder) / "reference.parquet"
    if not path.is_file():
        return None
    import pandas as pd

    return pd.read_parquet(path)


def _align_predictions(reference: pd.DataFrame | None, recent: list[Capture]
                       ) -> tuple[pd.DataFrame | None, bool, bool]:
    """Make the reference's ``__prediction__`` comparable with what the server answered.

    Returns ``(reference, use_score, as_classes)``. Registration stores P(positive) for
    binary classifiers; a server that answers classes is compared on class shares
    (the reference thresholded at 0.5). Classes are compared as categories; scores and
    regression outputs as numbers.
    """
    if reference is None or drift_mod.PREDICTION not in reference.columns:
        return reference, True, False
    values = reference[drift_mod.PREDICTION].dropna()
    continuous = values.dtype.kind == "f" and bool(((values % 1) != 0).any())
    rows = [(label, score) for c in recent for _i, _f, label, score in c.rows()]
    if continuous and any(score is not None for _l, score in rows):
        return reference, True, False
    labels = {label for label, _s in rows if label is not None}
    if continuous and not (labels <= {0, 1} and values.between(0, 1).all()):
        return reference, False, False  # regression: outputs against outputs
    reference = reference.copy()
    column = reference[drift_mod.PREDICTION]
    if continuous:
        column = (column >= 0.5).astype(int)
    reference[drift_mod.PREDICTION] = column.map(lambda v: None if v is None else drift_mod._category_key(v))
    return reference, False, True


def judge_version(spec: StackSpec, ctx: Context, monitor: Monitor, model: str, version: int, environment: str,
                  th: drift_mod.Thresholds, rules: list[alerts_mod.Rule]) -> VersionWindow:
    size = spec.monitoring.window.size
    reference = reference_frame(spec, ctx, model, version)
    recent = [c for c in monitor.captures(model, version, limit=size) if c.ok]
    reference, use_score, as_classes = _align_predictions(reference, recent)
    metrics: dict[str, float] = {}

    drift_doc: dict[str, Any] | None
    if reference is None:
        drift_doc = {"verdict": "no reference", "rows": len(recent), "first_ts": _ts(recent, 0),
                     "last_ts": _ts(recent, -1),
                     "note": "the version has no reference sample (registered without training data?)"}
    else:
        frame, _ = window_frame(recent, use_score=use_score)
        if as_classes and drift_mod.PREDICTION in frame.columns:
            frame[drift_mod.PREDICTION] = frame[drift_mod.PREDICTION].map(
                lambda v: None if v is None else drift_mod._category_key(v))
        report = drift_mod.detect(reference, frame if len(frame.columns) else {}, th,
                                  features=[c for c in reference.columns if c != drift_mod.PREDICTION])
        drift_doc = report.to_dict() | {"first_ts": _ts(recent, 0), "last_ts": _ts(recent, -1)}
        if report.verdict == drift_mod.INSUFFICIENT_REFERENCE:
            drift_doc["note"] = (f"the reference sample has {report.reference_rows} rows, fewer than "
                                 f"monitoring.drift.minReferenceRows ({th.min_reference_rows}): drift is not judged; "
                                 "register a version with a larger train dataset or reference_data=")
        metrics.update(report.metrics())

    labelled = [c for c in monitor.captures(model, version, limit=size, labelled_only=True) if c.ok]
    quality_doc = _quality(monitor, labelled, th.min_rows)
    metrics.update(quality_doc.get("metrics", {}))

    retrain_rules = [r for r in rules if r.retrain]
    if retrain_rules:
        breach = any(r.metric in metrics and r.breached(metrics[r.metric]) for r in retrain_rules)
    else:
        breach = drift_doc.get("verdict") == drift_mod.DRIFT
    quality_rules = [r for r in rules if r.metric.startswith("quality.")]
    if quality_doc["verdict"] == drift_mod.OK and any(
            r.metric in metrics and r.breached(metrics[r.metric]) for r in quality_rules):
        quality_doc["verdict"] = QUALITY_BREACH
    return VersionWindow(model, version, environment, drift_doc, quality_doc, metrics, breach)


def _ts(captures: list[Capture], index: int) -> float | None:
    return captures[index].ts if captures else None


def _quality(monitor: Monitor, labelled: list[Capture], min_rows: int) -> dict[str, Any]:
    row_ids: list[str] = []
    predicted: list[Any] = []
    scores: list[float | None] = []
    for capture in labelled:
        for row_id, _features, label, row_score in capture.rows():
            row_ids.append(row_id)
            predicted.append(label)
            scores.append(row_score)
    labels = labels_for(monitor, row_ids)
    truth: list[Any] = []
    pred: list[Any] = []
    score: list[float | None] = []
    for row_id, p, s in zip(row_ids, predicted, scores):
        if row_id in labels and p is not None:
            truth.append(labels[row_id])
            pred.append(p)
            score.append(s)
    doc: dict[str, Any] = {"rows": len(truth), "first_ts": _ts(labelled, 0), "last_ts": _ts(labelled, -1)}
    if len(truth) < min_rows:
        return doc | {"verdict": drift_mod.INSUFFICIENT, "metrics": {}}
    metrics = quality_mod.quality_metrics(truth, pred, score)
    if "quality.ece" in metrics:
        pairs = [(t, s) for t, s in zip(truth, score) if s is not None]
        doc["calibration"] = quality_mod.calibration_bins([t for t, _ in pairs], [s for _, s in pairs])
    return doc | {"verdict": drift_mod.OK, "metrics": metrics}


def cost_metrics(spec: StackSpec, ctx: Context, now: float) -> dict[str, float]:
    source = providers.capability(spec, ctx, Capability.COST)
    period = cost_mod.parse_period("month", now)
    report = cost_mod.attribute(source.deployments(period.start, period.end), source.usage(period.start, period.end),
                                period, price_for=spec.serving.price_for,
                                default_instance_type=spec.serving.instance_type,
                                budgets={spec.team: spec.budget.monthly_usd} if spec.budget else {})
    return cost_mod.metrics_for(report, spec.team)


def run_pass(spec: StackSpec, ctx: Context, *, deliver: str = "background", retrain: str = "run",
             now: float | None = None) -> PassReport:
    """One monitoring pass (see the module doc). ``deliver``: background | sync | none;
    ``retrain``: run (carry out triggered retraining now) | defer (record the trigger only) | off."""
    if deliver not in ("background", "sync", "none") or retrain not in ("run", "defer", "off"):
        raise MlplatError(f"run_pass: bad deliver={deliver!r} or retrain={retrain!r}")
    now = ctx.clock() if now is None else now
    monitor = monitor_for(spec, ctx)
    db = monitor.database()
    th = drift_mod.Thresholds.from_spec(spec.monitoring)
    rules = alerts_mod.rules_for(spec)
    report = PassReport(uuid.uuid4().hex[:16], now, spec.name)
    for model, version, environment in monitor.deployed():
        report.windows.append(judge_version(spec, ctx, monitor, model, version, environment, th, rules))
    try:
        report.cost = cost_metrics(spec, ctx, now)
    except MlplatError as exc:  # a provider without cost data still gets drift and quality
        report.notes.append(f"cost skipped: {exc.message}")

    subjects: dict[str, dict[str, float]] = {}
    about: dict[str, alerts_mod.About] = {}
    newest: dict[tuple[str, str], VersionWindow] = {}
    for w in report.windows:  # alerts watch the version that served most recently per model and environment
        newest.setdefault((w.model, w.environment), w)
    for (model, environment), w in newest.items():
        subjects[f"{model}@{environment}"] = w.metrics
        about[f"{model}@{environment}"] = alerts_mod.About(f"{model} v{w.version} in {environment}", w.drift)
    if report.cost:
        subjects[f"team:{spec.team}"] = report.cost
        about[f"team:{spec.team}"] = alerts_mod.About(f"team {spec.team} (stack {spec.name})")

    with db.transaction() as conn:
        for w in report.windows:
            for kind, doc in (("drift", w.drift), ("quality", w.quality)):
                if doc is None:
                    continue
                kind_metrics = {k: v for k, v in w.metrics.items() if k.startswith(kind + ".")}
                conn.execute(
                    "INSERT INTO monitor_windows(pass_id, ts, model, version, environment, kind, verdict, rows, first_ts, "
                    "last_ts, breach, metrics, details) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (report.pass_id, now, w.model, w.version, w.environment, kind, doc.get("verdict", "?"),
                     int(doc.get("rows") or 0), doc.get("first_ts"), doc.get("last_ts"),
                     int(w.breach and kind == "drift"), json.dumps(kind_metrics), json.dumps(doc, default=str)))
        events = alerts_mod.evaluate(conn, rules, subjects, now=now, about=about)
        alerts_mod.dispatch(conn, spec, ctx, events, now=now)
    report.events = [e.payload() for e in events]
    try:  # the pass is recorded: a metric store that refuses it costs the alarms this pass, not the ledger
        published = monitor.publish(report.to_dict())
    except MlplatError as exc:
        report.notes.append(f"publishing skipped: {exc.message}")
    else:
        if published:
            report.published = published
            report.notes += [f"not published: {reason}" for reason in published.get("skipped") or []]

    if deliver == "sync":
        alerts_mod.deliver_due(db, deadline=time.time() + 60)
    elif deliver == "background":
        alerts_mod.deliver_in_background(db)

    if retrain != "off" and spec.monitoring.retrain is not None:
        for (model, environment), w in newest.items():
            trigger = retrain_mod.maybe_trigger(spec, ctx, db, model, environment, w.version, now=now)
            if trigger is None:
                continue
            outcome = retrain_mod.execute(spec, ctx, trigger) if retrain == "run" else {"id": trigger, "status": "pending"}
            report.retraining.append(outcome)
    return report


def ingest_labels(spec: StackSpec, ctx: Context, batch: quality_mod.LabelBatch, *, source: str,
                  batch_id: str | None = None) -> quality_mod.JoinResult:
    """Store a validated label batch; ids that were never captured are counted, not stored.

    A label may name the platform's request id or the caller's own (``x-request-id``, a v2
    request's ``id``); it is stored under the platform id of every capture it names.

    With ``batch_id`` the call is idempotent: a batch received again under the same id writes
    nothing and returns the answer of its first delivery (the same id with other labels is a
    ``Conflict``)."""
    monitor = monitor_for(spec, ctx)
    db = monitor.database()
    digest = quality_mod.batch_digest(batch)
    resolved = monitor.resolve_request_ids(list(batch.labels))
    labels: dict[str, Any] = {}
    for given, label in batch.labels.items():
        for request_id in resolved.get(given, [given]):
            labels[request_id] = label
    known = {request_id for ids in resolved.values() for request_id in ids}
    batch = replace(batch, labels=labels)
    with db.transaction() as conn:
        if batch_id is not None:
            replayed = quality_mod.replayed_batch(conn, batch_id, digest)
            if replayed is not None:
                return replayed
        result = quality_mod.store_labels(conn, batch, known_ids=known, source=source, now=ctx.clock())
        if batch_id is not None:
            quality_mod.record_batch(conn, batch_id, digest, result, source=source, now=ctx.clock())
        return result


def log_labels(labels: dict[str, Any] | list[tuple[str, Any]], *, stack: str | None = None, ctx: Context | None = None
               ) -> quality_mod.JoinResult:
    """SDK: ``mlplat.monitoring.log_labels({"req-1": 1, "req-2": 0}, stack="dev")``."""
    ctx = ctx or Context()
    spec = ctx.stack(stack or os.environ.get("MLPLAT_STACK", "dev"))
    pairs = list(labels.items()) if isinstance(labels, dict) else list(labels)
    batch = quality_mod.parse_records(pairs, source="sdk")
    return ingest_labels(spec, ctx, batch, source="sdk")
