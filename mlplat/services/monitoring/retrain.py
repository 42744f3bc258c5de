"""Debounced retraining: k breaching windows out of the last n start one retraining.

A trigger is a row in ``retrain_triggers`` advanced step by step, so a killed
pass resumes where it stopped:

``pending`` → the window's data is written to ``<state>/monitoring/retrain/<id>/window.parquet``
→ ``training``: the stack's ``monitoring.retrain.command`` runs in the project
directory with ``MLPLAT_STACK``, ``MLPLAT_RETRAIN_DATA`` (that file),
``MLPLAT_RETRAIN_MODEL`` and ``MLPLAT_RETRAIN_TRIGGER`` set (or, where a pipeline retrains the
model, that pipeline runs with them in its steps' environment: :func:`mlplat.services.pipelines.for_model`);
the command trains
inside ``mlplat.start_run`` (a tracked run) and registers a new version with
``run.log_model`` → ``registered``: the new version is promoted to staging by the
promotion service (the evaluation gate and the rest of ``mlplat models promote --to
staging``, with the same audit entries) → ``staged``. Production is never requested here: it
needs the normal promotion and, for critical models, approvals.

Windows after the last trigger of a model count towards the next one, so one
long breach starts one retraining, not one per pass. Every trigger and outcome
is in the audit log.
"""
from __future__ import annotations

import json
import os
import shlex
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat.errors import MlplatError
from mlplat.identity import SYSTEM
from mlplat.services import audit, promotion
from mlplat.services import pipelines as pipelines_service
from mlplat.services.monitoring.windows import labels_for, monitor_for, window_frame

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.db import Database
    from mlplat.stack import StackSpec

ACTOR = "mlplat-monitor"
TAIL = 2000


def _audit(conn: sqlite3.Connection, spec: StackSpec, action: str, model: str, version: int | None, reason: str,
           evidence: dict[str, Any]) -> None:
    audit.append(conn, actor=ACTOR, method=SYSTEM, action=action, model=model, version=version, environment=spec.environment,
                 reason=reason, evidence=evidence)


def maybe_trigger(spec: StackSpec, ctx: Context, db: Database, model: str, environment: str, version: int, *,
                  now: float) -> str | None:
    """Record a trigger when k of the last n judged drift windows since the last trigger breach."""
    rule = spec.monitoring.retrain
    with db.transaction() as conn:
        last = conn.execute("SELECT MAX(ts) FROM retrain_triggers WHERE model=? AND environment=?",
                            (model, environment)).fetchone()[0]
        busy = conn.execute("SELECT id FROM retrain_triggers WHERE model=? AND environment=? AND status IN "
                            "('pending', 'training', 'registered')", (model, environment)).fetchone()
        if busy is not None:
            return None
        if rule is None:  # callers check monitoring.retrain first; the attribute access below would fail the same way
            raise AttributeError("the stack has no monitoring.retrain rule")
        rows = conn.execute(
            "SELECT pass_id, ts, version, breach, verdict FROM monitor_windows WHERE model=? AND environment=? "
            "AND kind='drift' AND verdict NOT IN ('insufficient data', 'insufficient reference', 'no reference') AND ts>? "
            "ORDER BY ts DESC, id DESC LIMIT ?",
            (model, environment, last if last is not None else -1.0, rule.evaluation_windows)).fetchall()
        breaching = [r for r in rows if r["breach"]]
        if len(breaching) < rule.violation_windows:
            return None
        trigger = uuid.uuid4().hex[:16]
        reason = {"k": rule.violation_windows, "n": rule.evaluation_windows, "judged": len(rows),
                  "breaching": [{"pass": r["pass_id"], "ts": r["ts"], "version": r["version"]} for r in breaching]}
        conn.execute("INSERT INTO retrain_triggers(id, ts, model, environment, from_version, reason, status, updated_at) "
                     "VALUES (?,?,?,?,?,?,'pending',?)", (trigger, now, model, environment, version, json.dumps(reason), now))
        _audit(conn, spec, "retraining.triggered", model, version,
               f"{len(breaching)} of the last {len(rows)} monitoring windows breached "
               f"(k={rule.violation_windows}, n={rule.evaluation_windows})", reason | {"trigger": trigger})
    return trigger


def _set(db: Database, trigger: str, ts: float, **fields: Any) -> None:
    assignments = ", ".join(f"{k}=?" for k in fields)
    with db.transaction() as conn:
        conn.execute(f"UPDATE retrain_triggers SET {assignments}, updated_at=? WHERE id=?",
                     (*fields.values(), ts, trigger))


def execute(spec: StackSpec, ctx: Context, trigger: str) -> dict[str, Any]:
    """Advance a trigger to ``staged`` (or ``failed``); resumes from the recorded step."""
    monitor = monitor_for(spec, ctx)
    db = monitor.database()
    conn = db.connect()
    try:
        row = conn.execute("SELECT * FROM retrain_triggers WHERE id=?", (trigger,)).fetchone()
    finally:
        conn.close()
    if row is None:
        raise MlplatError(f"retraining trigger {trigger} not found")
    model, status = row["model"], row["status"]
    folder = Path(spec.state_dir) / "monitoring" / "retrain" / trigger
    data_path = folder / "window.parquet"

    if status == "pending":
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        captures = [c for c in monitor.captures(model, row["from_version"], limit=spec.monitoring.window.size) if c.ok]
        frame, ids = window_frame(captures, use_score=True)
        labels = labels_for(monitor, ids)
        frame["__request_id__"] = ids
        frame["__label__"] = [labels.get(i) for i in ids]
        frame.to_parquet(data_path, index=False)
        _set(db, trigger, ctx.clock(), status="training", data_path=str(data_path))
        status = "training"

    if status == "training":
        started = row["ts"]
        if spec.monitoring.retrain is None:  # triggers exist only for stacks with a retrain rule
            raise AttributeError("the stack has no monitoring.retrain rule")
        variables = {"MLPLAT_RETRAIN_DATA": str(data_path), "MLPLAT_RETRAIN_MODEL": model,
                     "MLPLAT_RETRAIN_TRIGGER": trigger}
        try:
            declared = pipelines_service.for_model(spec, ctx, model)
        except MlplatError as exc:
            return _fail(spec, db, ctx, trigger, model, f"the retraining pipeline cannot be loaded: {exc}")
        if declared is not None:
            return _after_pipeline(spec, ctx, db, trigger, model, dict(row), declared, variables)
        command = spec.monitoring.retrain.command
        if not command:
            return _fail(spec, db, ctx, trigger, model,
                         f"no pipeline retrains '{model}' (none names it as its model) and monitoring.retrain has no "
                         "command; set monitoring.retrain.pipeline or monitoring.retrain.command")
        env = {**os.environ, "MLPLAT_STACK": spec.name, "MLPLAT_PROJECT_DIR": str(spec.project_dir), **variables}
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            return _fail(spec, db, ctx, trigger, model, f"monitoring.retrain.command cannot be parsed: {exc}")
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the platform's own interpreter, where mlplat is installed
        try:
            result = subprocess.run(argv, cwd=spec.project_dir, env=env, capture_output=True, text=True,
                                    timeout=4 * 3600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return _fail(spec, db, ctx, trigger, model, f"retrain command failed to run: {exc}")
        if result.returncode != 0:
            return _fail(spec, db, ctx, trigger, model,
                         f"retrain command exited {result.returncode}: {(result.stderr or result.stdout)[-TAIL:]}")
        found = _newest_version(db, model, since=started)
        if found is None:
            return _fail(spec, db, ctx, trigger, model,
                         f"the retrain command registered no new version of '{model}'; it must train inside "
                         f"mlplat.start_run and call run.log_model(model, name='{model}')")
        version, run_id = found
        _set(db, trigger, ctx.clock(), status="registered", new_version=version, run_id=run_id)
        status = "registered"
        row = dict(row) | {"new_version": version, "run_id": run_id}

    return _finish(spec, ctx, db, trigger, model, dict(row), status)


def _after_pipeline(spec: StackSpec, ctx: Context, db: Database, trigger: str, model: str, row: dict[str, Any],
                    pipeline: Any, variables: dict[str, str]) -> dict[str, Any]:
    """Run the model's pipeline with the window's data in its steps' environment; its register step
    names the new version, which then goes to staging as a command's version does."""
    try:
        # as the retrain command does, the work tree runs as it is (a bundle records its diff)
        outcome = pipelines_service.run(spec, ctx, pipeline, environment=variables, allow_dirty=True)
    except MlplatError as exc:
        return _fail(spec, db, ctx, trigger, model, f"retraining pipeline '{pipeline.name}' did not start: {exc}")
    if outcome.state != "SUCCEEDED":
        return _fail(spec, db, ctx, trigger, model,
                     f"retraining pipeline '{pipeline.name}' run {outcome.run_id} {outcome.state}: {outcome.message}")
    found = pipelines_service.registered_by(outcome) or _newest_version(db, model, since=row["ts"])
    if found is None:
        return _fail(spec, db, ctx, trigger, model,
                     f"retraining pipeline '{pipeline.name}' run {outcome.run_id} registered no version of '{model}'")
    version, run_id = found
    _set(db, trigger, ctx.clock(), status="registered", new_version=version, run_id=run_id)
    return _finish(spec, ctx, db, trigger, model, row | {"new_version": version, "run_id": run_id,
                                                         "pipeline": pipeline.name, "pipeline_run": outcome.run_id},
                   "registered")


def _finish(spec: StackSpec, ctx: Context, db: Database, trigger: str, model: str, row: dict[str, Any],
            status: str) -> dict[str, Any]:
    if status == "registered":
        version = row["new_version"]
        refused = _promote_to_staging(spec, ctx, model, version)
        if refused is not None:
            return _fail(spec, db, ctx, trigger, model, f"version {version} did not pass to staging: {refused}"[:TAIL],
                         version=version)
        _set(db, trigger, ctx.clock(), status="staged")
        with db.transaction() as conn:
            _audit(conn, spec, "retraining.staged", model, version,
                   f"retrained version {version} passed the gate to staging (production needs the normal promotion)",
                   {"trigger": trigger, "run_id": row["run_id"],
                    **{k: row[k] for k in ("pipeline", "pipeline_run") if row.get(k)}})
        status = "staged"
    conn = db.connect()
    try:
        final = dict(conn.execute("SELECT * FROM retrain_triggers WHERE id=?", (trigger,)).fetchone())
    finally:
        conn.close()
    return final


def _fail(spec: StackSpec, db: Database, ctx: Context, trigger: str, model: str, error: str,
          version: int | None = None) -> dict[str, Any]:
    _set(db, trigger, ctx.clock(), status="failed", error=error[-4000:])
    with db.transaction() as conn:
        _audit(conn, spec, "retraining.failed", model, version, error[:500], {"trigger": trigger})
    conn = db.connect()
    try:
        return dict(conn.execute("SELECT * FROM retrain_triggers WHERE id=?", (trigger,)).fetchone())
    finally:
        conn.close()


def _newest_version(db: Database, model: str, since: float) -> tuple[int, str] | None:
    conn = db.connect()
    try:
        row = conn.execute("SELECT version, run_id FROM model_versions WHERE model=? AND created_at>=? "
                           "ORDER BY version DESC LIMIT 1", (model, since)).fetchone()
        return (int(row[0]), row[1]) if row else None
    finally:
        conn.close()


def _promote_to_staging(spec: StackSpec, ctx: Context, model: str, version: int) -> str | None:
    """Promote through the promotion service, as ``mlplat models promote --to staging`` does, so the
    gate, the staging checks and their audit entries are the normal ones. ``None`` when the version
    is in staging, else why it is not (the refusal's message and hint)."""
    try:
        promotion.promote(spec, ctx, model, version, "staging")
    except MlplatError as exc:
        return exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
    return None
