"""The evaluation gate: metrics on the held-out set, absolute thresholds, and the champion.

Metrics come from scikit-learn. Classification: accuracy, precision, recall, F1,
ROC AUC, Brier score and expected calibration error (binary: positive-class
probability; multiclass: macro averages, one-vs-rest AUC, top-label ECE).
Regression: RMSE, MAE, R². Thresholds are minimums for higher-is-better metrics
and maximums for the others (``mlplat.stack.HIGHER_IS_BETTER``/``LOWER_IS_BETTER``).
The candidate may be worse than the current production version (the champion) by at
most ``gate.maxRegressionVsChampion`` on each threshold metric.

A report holds no timestamp, so evaluating the same artifact on the same held-out
bytes against the same champion gives the same digest: approvals bind to it.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat.errors import CheckFailed, MlplatError
from mlplat.services import audit, model_loading
from mlplat.services import registry as reg
from mlplat.services.holdout import HoldoutError, load_holdout, resolve_holdout
from mlplat.stack import HIGHER_IS_BETTER

if TYPE_CHECKING:
    import pandas as pd

    from mlplat.context import Context
    from mlplat.contracts import ModelRegistry
    from mlplat.stack import StackSpec

ECE_BINS = 10
PRIMARY = {"classification": "roc_auc", "regression": "rmse"}


def _round(value: float) -> float:
    return float(f"{value:.10g}")


# --- scoring ----------------------------------------------------------------------------------


def predict(model: Any, X: pd.DataFrame) -> tuple[Any, Any, Any]:
    """``(predictions, probabilities or None, classes or None)`` of an already loaded model."""
    return model_loading.predictions(model, X)


def infer_task(y: Any) -> str:
    import numpy as np
    import pandas as pd

    series = pd.Series(y)
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return "classification"
    values = series.dropna().to_numpy()
    if np.all(np.mod(values, 1) == 0) and series.nunique() <= 20:
        return "classification"
    return "regression"


def expected_calibration_error(y_true: Any, proba: Any, bins: int = ECE_BINS) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins."""
    import numpy as np

    proba = np.asarray(proba, dtype=float)
    if proba.ndim == 1:  # binary: positive-class probability against the positive label
        confidence, correct = proba, np.asarray(y_true, dtype=float)
    else:
        confidence, correct = proba.max(axis=1), (proba.argmax(axis=1) == np.asarray(y_true)).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def metrics_for(task: str, y_true: Any, y_pred: Any, proba: Any, classes: Any) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics as m

    if task == "regression":
        y_pred = np.asarray(y_pred, dtype=float)
        return {"rmse": float(np.sqrt(m.mean_squared_error(y_true, y_pred))),
                "mae": float(m.mean_absolute_error(y_true, y_pred)), "r2": float(m.r2_score(y_true, y_pred))}
    y_true = np.asarray(y_true)
    labels = np.unique(np.concatenate([y_true, np.asarray(y_pred)]))
    binary = len(labels) <= 2 and (classes is None or len(classes) == 2)
    out = {"accuracy": float(m.accuracy_score(y_true, y_pred))}
    if binary:
        positive = classes[1] if classes is not None else labels.max()
        kw = dict(pos_label=positive, zero_division=0)
        out.update(precision=float(m.precision_score(y_true, y_pred, **kw)),
                   recall=float(m.recall_score(y_true, y_pred, **kw)), f1=float(m.f1_score(y_true, y_pred, **kw)))
        if proba is not None:
            p = proba[:, 1] if proba.ndim == 2 else proba
            y_bin = (y_true == positive).astype(int)
            if len(np.unique(y_bin)) == 2:
                out["roc_auc"] = float(m.roc_auc_score(y_bin, p))
            out["brier"] = float(m.brier_score_loss(y_bin, p))
            out["ece"] = expected_calibration_error(y_bin, p)
    else:
        kw = dict(average="macro", zero_division=0)
        out.update(precision=float(m.precision_score(y_true, y_pred, **kw)),
                   recall=float(m.recall_score(y_true, y_pred, **kw)), f1=float(m.f1_score(y_true, y_pred, **kw)))
        if proba is not None and classes is not None:
            index = {c: i for i, c in enumerate(classes)}
            y_idx = np.array([index.get(v, -1) for v in y_true])
            if (y_idx >= 0).all():
                try:
                    out["roc_auc"] = float(m.roc_auc_score(y_idx, proba, multi_class="ovr", labels=list(range(len(classes)))))
                except ValueError:
                    pass
                out["ece"] = expected_calibration_error(y_idx, proba)
    return {k: _round(v) for k, v in out.items()}


def evaluate(model_dir: Path, frame: pd.DataFrame, label: str, features: list[str] | None, task: str | None, *,
             what: str = "the model") -> tuple[str, dict[str, Any]]:
    X = frame[features] if features else frame.drop(columns=[label])
    y = frame[label].to_numpy()
    # Safe formats (skops, XGBoost's own) score here; pickle formats only in a child process.
    try:
        y_pred, proba, classes = model_loading.score(model_dir, X, what=what)
    except model_loading.ScoringFailed as exc:
        if exc.stage != "predict":
            raise model_loading.ScoringFailed(f"{what} could not be loaded for scoring: {exc.message}"[:600],
                                              stage=exc.stage, where=exc.where, hint=exc.hint) from None
        raise HoldoutError(f"the model could not predict on the held-out set: {exc.message}"[:500],
                           hint="check that the held-out columns match the model's inputs") from None
    task = task or infer_task(y)
    return task, metrics_for(task, y, y_pred, proba, classes)


def model_features(row: Mapping[str, Any]) -> list[str] | None:
    signature = row.get("signature") or {}
    inputs = signature.get("inputs")
    if not inputs:
        return None
    try:
        cols = json.loads(inputs) if isinstance(inputs, str) else inputs
        names = [c.get("name") for c in cols]
        return names if names and all(names) else None
    except (ValueError, AttributeError, TypeError):
        return None


# --- the gate -------------------------------------------------------------------------------


def checks(task: str, metrics: Mapping[str, float], thresholds: Mapping[str, float],
           champion: Mapping[str, float] | None, max_regression: float) -> list[dict[str, Any]]:
    """One entry per check: ``{check, metric, value, limit, passed, margin}``; margin > 0 is slack, < 0 a miss."""
    out = []
    for metric, limit in sorted(thresholds.items()):
        value = metrics.get(metric)
        higher = metric in HIGHER_IS_BETTER
        if value is None:
            out.append({"check": f"{'min' if higher else 'max'} {metric}", "metric": metric, "value": None,
                        "limit": limit, "passed": False, "margin": None,
                        "detail": f"{metric} is not defined for this {task} model"})
            continue
        margin = (value - limit) if higher else (limit - value)
        out.append({"check": f"{'min' if higher else 'max'} {metric}", "metric": metric, "value": value, "limit": limit,
                    "passed": margin >= 0, "margin": _round(margin)})
    if champion is not None:
        compared = [m for m in thresholds if m in metrics and m in champion] or \
                   [m for m in (PRIMARY.get(task),) if m is not None and m in metrics and m in champion]
        for metric in sorted(compared):
            value, best = metrics[metric], champion[metric]
            higher = metric in HIGHER_IS_BETTER
            limit = best - max_regression if higher else best + max_regression
            margin = (value - limit) if higher else (limit - value)
            out.append({"check": f"vs champion {metric}", "metric": metric, "value": value, "limit": _round(limit),
                        "champion": best, "passed": margin >= -1e-12, "margin": _round(margin)})
    return out


def report_digest(report: Mapping[str, Any]) -> str:
    return hashlib.sha256(audit.canonical(report).encode("utf-8")).hexdigest()


def run_gate(spec: StackSpec, ctx: Context, name: str, version: int, environment: str, *,
             registry: ModelRegistry | None = None, record: bool = True) -> dict[str, Any]:
    """Evaluate ``name`` ``version``; store the report (and an audit entry); return it with its digest.
    Does not raise on a failing check: callers decide (``raise_if_failed``)."""
    registry = registry or reg.registry_for(spec, ctx)
    db = registry.database()
    conn = db.connect()
    try:
        row = reg.version_row(conn, name, version)
        champion_version = reg.production_version(conn, name, environment)
        champion_row = reg.version_row(conn, name, champion_version) \
            if champion_version is not None and champion_version != int(version) else None
    finally:
        conn.close()
    model_dir = reg.verify_row(registry, row)
    holdout = resolve_holdout(spec, row)
    features = model_features(row)
    frame, holdout_sha, path = load_holdout(holdout, Path(spec.project_dir), features=features)
    task, metrics = evaluate(model_dir, frame, holdout["label"], features, row.get("task"),
                             what=f"{name} version {version}")
    champion = None
    if champion_row is not None:
        champion_dir = reg.verify_row(registry, champion_row)
        _, champion_metrics = evaluate(champion_dir, frame, holdout["label"], model_features(champion_row), task,
                                       what=f"{name} version {champion_row['version']} (the champion)")
        champion = {"version": champion_row["version"], "artifact_digest": champion_row["artifact_digest"],
                    "metrics": champion_metrics}
    thresholds = dict(spec.gate.thresholds)
    results = checks(task, metrics, thresholds, champion["metrics"] if champion else None,
                     spec.gate.max_regression_vs_champion)
    report = {
        "model": name, "version": int(version), "environment": environment, "artifact_digest": row["artifact_digest"],
        "task": task, "holdout": {"path": holdout["path"], "label": holdout["label"], "sha256": holdout_sha,
                                  "rows": int(len(frame))},
        "metrics": metrics, "thresholds": thresholds,
        "max_regression_vs_champion": spec.gate.max_regression_vs_champion, "champion": champion,
        "checks": results, "passed": all(c["passed"] for c in results),
    }
    digest = report_digest(report)
    if record:
        with db.transaction() as conn:
            conn.execute(
                "INSERT INTO gate_reports (digest, model, version, environment, artifact_digest, passed, report, "
                "created_at, created_by) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(digest) DO UPDATE SET "
                "created_at = excluded.created_at, created_by = excluded.created_by",
                (digest, name, int(version), environment, row["artifact_digest"], int(report["passed"]),
                 audit.canonical(report), time.time(), ctx.user))
            audit.append(conn, actor=ctx.user, method=ctx.method,
                         action="gate.passed" if report["passed"] else "gate.failed", model=name,
                         version=version, environment=environment, digest=row["artifact_digest"],
                         reason=summary(report), evidence={"gate_digest": digest, "metrics": metrics,
                                                           "failed": [c["check"] for c in results if not c["passed"]]})
    return report | {"digest": digest}


def summary(report: Mapping[str, Any]) -> str:
    failed = [c for c in report["checks"] if not c["passed"]]
    if not failed:
        return f"passed {len(report['checks'])} check(s)"
    return "; ".join(describe(c) for c in failed)


def describe(check: Mapping[str, Any]) -> str:
    if check.get("value") is None:
        return f"{check['check']}: {check.get('detail', 'not computed')}"
    margin = check["margin"]
    if check["check"].startswith("vs champion"):
        return (f"{check['metric']} {check['value']:.4f} is worse than the champion's {check['champion']:.4f} by more "
                f"than allowed (limit {check['limit']:.4f}, missed by {abs(margin):.4f})")
    word = "below the minimum" if check["check"].startswith("min") else "above the maximum"
    return f"{check['metric']} {check['value']:.4f} is {word} {check['limit']:.4f} by {abs(margin):.4f}"


def raise_if_failed(report: Mapping[str, Any]) -> None:
    if report["passed"]:
        return
    failed = [c for c in report["checks"] if not c["passed"]]
    raise CheckFailed(
        f"{report['model']} version {report['version']} failed the evaluation gate: {summary(report)}",
        hint="train a better model, or change mlplat:gate in the stack if the thresholds are wrong",
        failed=[{k: c.get(k) for k in ("check", "value", "limit", "margin")} for c in failed],
        gate_digest=report.get("digest"),
    )


def latest_report(conn: sqlite3.Connection, name: str, version: int, environment: str,
                  artifact_digest: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT digest, passed, report, created_at, created_by FROM gate_reports WHERE model=? AND version=? AND "
        "environment=? AND artifact_digest=? ORDER BY created_at DESC LIMIT 1",
        (name, int(version), environment, artifact_digest)).fetchone()
    if row is None:
        return None
    return {"digest": row["digest"], "passed": bool(row["passed"]), "report": json.loads(row["report"]),
            "created_at": row["created_at"], "created_by": row["created_by"]}


def reports(conn: sqlite3.Connection, name: str, version: int) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM gate_reports WHERE model=? AND version=? ORDER BY created_at",
                        (name, int(version))).fetchall()
    return [dict(r) | {"report": json.loads(r["report"])} for r in rows]


__all__ = ["HoldoutError", "MlplatError", "latest_report", "load_holdout", "raise_if_failed", "resolve_holdout",
           "run_gate"]
