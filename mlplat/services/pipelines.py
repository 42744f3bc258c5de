"""Pipelines, provider-neutral: find the pipeline a user names, run it on the stack's provider, and
carry out the platform's own steps (the gate, the registered version, the promotion to staging).

A pipeline is named by its file (``examples/pipelines/credit_risk.py``) or, once it has been run
or scheduled on the stack, by its name. Where the project is a git repository, a run packages it
at its commit (:func:`mlplat.services.source.bundle_source`; uncommitted changes are refused
unless ``allow_dirty``, which records the diff) and every command step runs that code; outside
git the steps run the project's files, and their cache keys on those files' contents.

The platform steps go through the stack's control plane (the ledger in this process, or the
stack's ``mlplat server``), as ``mlplat models promote`` does.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat import pipelines as dsl
from mlplat import providers
from mlplat.contracts import Capability
from mlplat.contracts.pipelines import PipelineBackend, PipelineDefinition, PipelineRunStatus, StepDefinition
from mlplat.errors import CapabilityNotSupported, CheckFailed, MlplatError, NotFound

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.stack import StackSpec


def backend_for(spec: StackSpec, ctx: Context) -> PipelineBackend:
    return providers.capability(spec, ctx, Capability.PIPELINES)


def _as_file(spec: StackSpec, target: str) -> Path | None:
    for base in (Path.cwd(), Path(spec.project_dir)):
        candidate = Path(target) if Path(target).is_absolute() else base / target
        if candidate.is_file():
            return candidate
    return None


def resolve(spec: StackSpec, ctx: Context, target: str) -> PipelineDefinition:
    """The pipeline ``target`` names: a pipeline file, else a pipeline already run or scheduled on the stack."""
    file = _as_file(spec, target)
    if file is not None:
        return dsl.load(file)
    if target.endswith(".py") or "/" in target:
        return dsl.load(target)  # NotFound, naming the file
    backend = backend_for(spec, ctx)
    known = getattr(backend, "scheduled_definition", None)
    definition: PipelineDefinition | None = known(target) if known else None
    if definition is not None:
        return definition
    runs = backend.pipeline_runs(target)
    finder = getattr(backend, "run_definition", None)
    if runs and finder is not None:
        newest: PipelineDefinition = finder(runs[0].run_id)
        return newest
    raise NotFound(f"no pipeline file or known pipeline named '{target}' in stack '{spec.name}'",
                   hint="give the pipeline's file, e.g. `mlplat pipeline run examples/pipelines/credit_risk.py`")


def with_source(spec: StackSpec, pipeline: PipelineDefinition, *, allow_dirty: bool) -> PipelineDefinition:
    """``pipeline`` with the project packaged at its commit, when the project is in git."""
    from mlplat.services.source import SourceError, bundle_source

    project = Path(spec.project_dir)
    if not _in_git(project):
        return pipeline
    dest = Path(spec.state_dir) / "pipelines" / "sources" / uuid.uuid4().hex[:12]
    try:
        bundle = bundle_source(project, allow_dirty=allow_dirty, dest_dir=dest, exclude=[Path(spec.state_dir)])
    except SourceError as exc:
        exc.where = f"pipeline {pipeline.name}: {exc.where}" if exc.where else f"pipeline {pipeline.name}"
        raise
    return replace(pipeline, source=bundle)


def _in_git(project: Path) -> bool:
    import subprocess

    try:
        probe = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=project, capture_output=True,
                               check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def run(spec: StackSpec, ctx: Context, target: str | PipelineDefinition | None, *, resume: str | None = None,
        step: str | None = None, start: str | None = None, allow_dirty: bool = False,
        environment: dict[str, str] | None = None, progress: Any = None) -> PipelineRunStatus:
    """Run (or resume) a pipeline on the stack's provider to its end; the result says how it ended.
    ``target`` may be ``None`` with ``resume``: the run's own definition."""
    backend = backend_for(spec, ctx)
    if target is None:
        finder = getattr(backend, "run_definition", None)
        if resume is None or finder is None:
            raise MlplatError("name the pipeline to run (its file or name)",
                              hint="e.g. `mlplat pipeline run examples/pipelines/credit_risk.py`")
        target = finder(resume)
    pipeline = resolve(spec, ctx, target) if isinstance(target, str) else dsl.validate(target)
    if environment:
        pipeline = replace(pipeline, environment={**pipeline.environment, **environment})
    only = dsl.select(pipeline, step=step, start=start) if step or start else None
    if resume is not None:
        if only is not None:
            raise MlplatError("--resume continues a run with the steps it started with: --step/--from do not apply",
                              hint="drop --step/--from, or start a new run")
        status = backend.run_pipeline(pipeline, resume=resume, **_extra(backend, progress=progress))
    else:
        pipeline = with_source(spec, pipeline, allow_dirty=allow_dirty)
        extra = _extra(backend, progress=progress)
        if only is not None:
            if not _accepts(backend, "only"):
                raise CapabilityNotSupported(backend.provider_name or "this provider",
                                             "running selected pipeline steps (--step/--from)")
            extra["only"] = only
        status = backend.run_pipeline(pipeline, **extra)
    record(spec, ctx, status, pipeline.model)
    return status


def _accepts(backend: PipelineBackend, keyword: str) -> bool:
    """Whether the provider's ``run_pipeline`` takes ``keyword`` beyond the contract's (the local one
    takes ``only`` and ``progress``)."""
    import inspect

    return keyword in inspect.signature(backend.run_pipeline).parameters


def _extra(backend: PipelineBackend, *, progress: Any) -> dict[str, Any]:
    return {"progress": progress} if progress is not None and _accepts(backend, "progress") else {}


def schedule(spec: StackSpec, ctx: Context, target: str, cron: str) -> dict[str, Any]:
    pipeline = resolve(spec, ctx, target)
    from mlplat.pipelines import cron as cron_mod

    cron_mod.validate(cron)
    return asdict(backend_for(spec, ctx).schedule_pipeline(pipeline, cron))


def status_doc(status: PipelineRunStatus) -> dict[str, Any]:
    return asdict(status)


# --- the platform's steps -------------------------------------------------------------------------


def _trained_version(spec: StackSpec, ctx: Context, model: str, training: str,
                     records: dict[str, Any]) -> tuple[int, str]:
    """The version of ``model`` that the tracked run of step ``training`` registered (found by the
    run's working folder, the step's own, among the versions registered since the step started)."""
    from mlplat.api.plane import plane_for

    record = records.get(training) or {}
    meta = record.get("meta") or {}
    workdir, since = meta.get("workdir"), meta.get("wall_started", meta.get("started"))
    if record.get("state") not in ("SUCCEEDED", "CACHED") or not workdir:
        raise MlplatError(f"step '{training}' has not finished in this run ({record.get('state', 'unknown')}), so "
                          f"there is no version of '{model}' to act on")
    versions = plane_for(spec, ctx).call("models.list")["versions"]
    candidates = sorted((v for v in versions if v["model"] == model and (since is None or v["created_at"] >= since - 1)),
                        key=lambda v: v["version"], reverse=True)
    tracker = providers.capability(spec, ctx, Capability.TRACKING)
    for candidate in candidates:
        tags = tracker.get_run(candidate["run_id"]).tags
        if tags.get("mlplat.cwd") == workdir:
            return int(candidate["version"]), candidate["run_id"]
    raise MlplatError(f"step '{training}' registered no version of '{model}'",
                      hint=f"train inside mlplat.start_run and call run.log_model(model, name='{model}')")


def run_platform_step(spec: StackSpec, ctx: Context, pipeline: PipelineDefinition, step: StepDefinition,
                      records: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Carry out an ``evaluate``, ``register`` or ``promote`` step; its outputs' documents by name.
    Raises ``MlplatError`` (the step fails) when the gate fails or the version cannot be found."""
    from mlplat.api.plane import plane_for

    model = step.params["model"]
    plane = plane_for(spec, ctx)
    if step.kind == "evaluate":
        version, run_id = _trained_version(spec, ctx, model, step.params["training_step"], records)
        report = plane.call("models.evaluate", name=model, version=version)
        if not report["passed"]:
            failed = "; ".join(c["check"] for c in report["checks"] if not c["passed"])
            raise CheckFailed(f"{model} version {version} failed the evaluation gate ({failed})",
                              hint="train a better model, or change mlplat:gate in the stack if the thresholds are wrong")
        return {"report": report | {"run_id": run_id}}
    if step.kind == "register":
        version, run_id = _trained_version(spec, ctx, model, step.params["training_step"], records)
        sealed = plane.call("models.sealed_version", name=model, version=version)  # its manifest against its seal
        return {"version": {"model": model, "version": version, "run_id": run_id,
                            "artifact_digest": sealed.get("artifact_digest"), "pipeline": pipeline.name}}
    if step.kind == "promote":
        source = records.get(step.params["version_step"]) or {}
        path = (source.get("outputs") or {}).get("version")
        if not path or not (Path(path) / "version.json").is_file():
            raise MlplatError(f"step '{step.params['version_step']}' produced no version in this run "
                              f"({source.get('state', 'unknown')})")
        doc = json.loads((Path(path) / "version.json").read_text())
        result = plane.call("models.promote", name=model, version=int(doc["version"]), target=step.params["target"],
                            progress=False)
        return {"promotion": {"model": model, "version": int(doc["version"]), "target": step.params["target"],
                              "stage": result.get("stage", step.params["target"]) if isinstance(result, dict) else None,
                              "at": time.time()}}
    raise MlplatError(f"unknown platform step kind '{step.kind}'")


# --- retraining ------------------------------------------------------------------------------------


def for_model(spec: StackSpec, ctx: Context, model: str) -> PipelineDefinition | None:
    """The pipeline that retrains ``model``: the stack's ``monitoring.retrain.pipeline`` file, else a
    pipeline scheduled or run on the stack whose ``model`` is ``model``; ``None`` when there is none."""
    rule = spec.monitoring.retrain
    declared = getattr(rule, "pipeline", None) if rule is not None else None
    if declared:
        file = Path(declared) if Path(declared).is_absolute() else Path(spec.project_dir) / declared
        return dsl.load(file)
    try:
        backend = backend_for(spec, ctx)
    except CapabilityNotSupported:
        return None
    scheduled = getattr(backend, "scheduled_definition", None)
    for info in (getattr(backend, "schedules", lambda: [])()):
        definition: PipelineDefinition | None = scheduled(info.pipeline) if scheduled else None
        if definition is not None and definition.model == model:
            return definition
    finder = getattr(backend, "run_definition", None)
    if finder is None:
        return None
    for status in backend.pipeline_runs():
        ran: PipelineDefinition = finder(status.run_id)
        if ran.model == model:
            return ran
    return None


def registered_by(status: PipelineRunStatus) -> tuple[int, str] | None:
    """``(version, run_id)`` the run's register step recorded, if it has one that finished."""
    for step in status.steps:
        path = step.outputs.get("version")
        if step.state in ("SUCCEEDED", "CACHED") and path and (Path(path) / "version.json").is_file():
            doc = json.loads((Path(path) / "version.json").read_text())
            return int(doc["version"]), str(doc["run_id"])
    return None


# --- schedules -------------------------------------------------------------------------------------


def schedules(spec: StackSpec, ctx: Context) -> list[dict[str, Any]]:
    lister = getattr(backend_for(spec, ctx), "schedules", None)
    if lister is None:
        raise CapabilityNotSupported(spec.provider.kind, "listing pipeline schedules")
    return [asdict(s) for s in lister()]


def run_due(spec: StackSpec, ctx: Context, now: float, *, progress: Any = None) -> list[PipelineRunStatus]:
    """Run the scheduled pipelines due at ``now`` (a provider whose scheduler runs them itself,
    such as EventBridge Scheduler, has nothing to run here)."""
    backend = backend_for(spec, ctx)
    runner = getattr(backend, "run_due", None)
    if runner is None:
        raise CapabilityNotSupported(spec.provider.kind, "running due pipeline schedules",
                                     hint="this provider's own scheduler starts scheduled pipelines")
    results: list[PipelineRunStatus] = runner(now, progress=progress)
    scheduled = getattr(backend, "scheduled_definition", None)
    for status in results:
        definition = scheduled(status.pipeline) if scheduled else None
        record(spec, ctx, status, definition.model if definition is not None else None)
    return results


# --- the ledger ------------------------------------------------------------------------------------


def record_run(spec: StackSpec, ctx: Context, *, pipeline: str, run_id: str, state: str, model: str | None,
               message: str, steps: dict[str, str]) -> dict[str, Any]:
    """Append the audit entry of a finished pipeline run; returns it."""
    from mlplat.services import audit
    from mlplat.services import registry as reg

    db = reg.registry_for(spec, ctx).database()
    reason = f"pipeline {pipeline} run {run_id} {state.lower()}" + (f": {message.splitlines()[0]}" if message else "")
    with db.transaction() as conn:
        entry = audit.append(conn, actor=ctx.user, method=ctx.method, action=f"pipeline.{state.lower()}", model=model,
                             environment=spec.environment, reason=reason[:500],
                             evidence={"pipeline": pipeline, "run_id": run_id, "steps": steps})
    return {"seq": entry.get("seq"), "action": f"pipeline.{state.lower()}", "run_id": run_id}


def record(spec: StackSpec, ctx: Context, status: PipelineRunStatus, model: str | None) -> None:
    """Record a finished run through the stack's control plane (nothing for one still running)."""
    from mlplat.api.plane import plane_for

    if status.state not in ("SUCCEEDED", "FAILED", "STOPPED"):
        return
    plane_for(spec, ctx).call("pipelines.record", pipeline=status.pipeline, run_id=status.run_id, state=status.state,
                              model=model, message=status.message[:2000],
                              steps={s.name: s.state for s in status.steps})
