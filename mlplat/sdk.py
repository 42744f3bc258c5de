"""The data scientist's side: ``with mlplat.start_run(...) as run:``.

A run records, without being asked: parameters and metrics (framework autologging
on), each dataset's content hash / row count / schema, the code version (commit,
branch, dirty flag, hash and copy of the uncommitted diff), the environment
(Python, OS, every installed package), the user, team and cost tags, start/end,
and the outcome (FAILED with the exception if the block raises).

Metrics are buffered in memory and written in batches by a background thread, so
``log_metric`` in a training loop costs microseconds; the buffer is flushed at the
end of the run, on a crash, and at interpreter exit.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlplat import lineage, providers, training_env
from mlplat.api.plane import plane_for
from mlplat.context import Context
from mlplat.contracts import Capability, MetricPoint
from mlplat.errors import MlplatError, TrackingRequired
from mlplat.lineage import relative_inside
from mlplat.services import registry as registry_service

STACK_ENV = "MLPLAT_STACK"
# Checked with fullmatch (never `$`, which accepts a trailing newline): letters, digits, _ . / - and inner spaces.
EXPERIMENT_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_./ -]{0,248}[A-Za-z0-9_./-])?"
REPRODUCES_ENV = "MLPLAT_REPRODUCES"  # set by a reproduce bundle: the run being reproduced, kept as a tag
FLUSH_INTERVAL_S = 1.0
FLUSH_BATCH = 5000

_active: list[Run] = []
_lock = threading.Lock()


def active_run() -> Run | None:
    return _active[-1] if _active else None


def _require_run(action: str) -> Run:
    run = active_run()
    if run is None:
        raise TrackingRequired(
            f"cannot {action} outside a tracked run",
            hint='wrap training in `with mlplat.start_run(experiment="...", datasets={...}) as run:`; '
                 "untracked models cannot be logged or registered",
        )
    return run


def log_metric(key: str, value: float, step: int | None = None) -> None:
    _require_run("log a metric").log_metric(key, value, step)


def log_param(key: str, value: Any) -> None:
    _require_run("log a parameter").log_param(key, value)


def log_model(model: Any, name: str, **kwargs: Any) -> Any:
    return _require_run("log a model").log_model(model, name=name, **kwargs)


def log_labels(labels: Mapping[str, Any] | list[tuple[str, Any]], *, stack: str | None = None,
               ctx: Context | None = None) -> dict[str, Any]:
    """Ground truth for captured predictions, by request id: ``mlplat.log_labels({"req-1": 1}, stack="dev")``.

    Sent through the stack's control plane (this process's ledger, or ``mlplat server``) in
    idempotent batches; returns the counts (stored, updated, unknown ids, duplicates, ...)."""
    from mlplat.api.labels import send_labels
    from mlplat.services.monitoring import quality

    ctx = ctx or Context()
    spec = ctx.stack(stack or os.environ.get(STACK_ENV, "dev"))
    pairs = list(labels.items()) if isinstance(labels, Mapping) else list(labels)
    return send_labels(plane_for(spec, ctx), quality.parse_records(pairs, source="sdk"), source="sdk")


class _MetricBuffer:
    """Appends are O(1) under a lock; a daemon thread drains to the tracker in batches."""

    def __init__(self, write):
        self._write = write
        self._points: list[MetricPoint] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._steps: dict[str, int] = {}
        self._thread = threading.Thread(target=self._loop, name="mlplat-metrics", daemon=True)
        self._thread.start()

    def add(self, key: str, value: float, step: int | None) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            if step is None:
                step = self._steps.get(key, -1) + 1
            self._steps[key] = step
            self._points.append(MetricPoint(key, float(value), step, now))
            if len(self._points) >= FLUSH_BATCH:
                self._wake.set()

    def _drain(self) -> None:
        with self._lock:
            points, self._points = self._points, []
        if points:
            self._write(points)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            try:
                self._drain()
            except BaseException as exc:  # surfaced by close(); the loop keeps the points it could not write
                self._error = exc
                return

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._drain()
        if self._error is not None:
            raise MlplatError(f"metrics could not be written: {self._error}") from self._error


class Run:
    """A tracked run. Use as a context manager; ``run_id`` is the tracker's id."""

    def __init__(self, tracker, run_id: str, *, spec, experiment: str, lineage: dict[str, Any], ctx: Context,
                 datasets: Mapping[str, Any] | None = None):
        self.tracker = tracker
        self.run_id = run_id
        self.spec = spec
        self.experiment = experiment
        self.lineage = lineage
        self.ctx = ctx
        # The objects passed to start_run, kept so registration can sample an in-memory `train` frame.
        self.datasets: dict[str, Any] = dict(datasets or {})
        self._metrics = _MetricBuffer(lambda points: tracker.log_batch(run_id, metrics=points))
        self._handle = None
        self._ended = False

    # --- logging --------------------------------------------------------------------------

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self._metrics.add(key, value, step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self._metrics.add(key, value, step)

    def log_param(self, key: str, value: Any) -> None:
        self.tracker.log_batch(self.run_id, params={key: str(value)})

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.tracker.log_batch(self.run_id, params={k: str(v) for k, v in params.items()})

    def set_tag(self, key: str, value: Any) -> None:
        self.tracker.log_batch(self.run_id, tags={key: str(value)})

    def log_artifact(self, local_path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.tracker.log_artifact(self.run_id, str(local_path), artifact_path)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory(prefix="mlplat-") as tmp:
            target = Path(tmp) / Path(artifact_file).name
            target.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
            parent = str(Path(artifact_file).parent)
            self.log_artifact(target, None if parent == "." else parent)

    def log_model(self, model: Any, name: str, **kwargs: Any) -> Any:
        """Register ``model`` as a new version of ``name`` with this run's lineage.

        The files are saved here and stored in the stack's registry; the version is recorded through
        the stack's control plane (``models.register``: this process, or ``mlplat server``, which seals
        the manifest and names the caller as author). ``TrackingRequired`` once the run has ended:
        untracked models are never registered."""
        with _lock:
            active = not self._ended and self in _active
        if not active:
            raise TrackingRequired(f"cannot register a model outside an active tracked run (run {self.run_id} has ended)",
                                   hint='call run.log_model(...) inside `with mlplat.start_run(...) as run:`')
        version = registry_service.log_model(self, model, name=name, **kwargs)
        training_env.report("model", run_id=self.run_id, model=name, version=int(version))
        self._say_reference(name, version)
        return version

    def _say_reference(self, name: str, version: int) -> None:
        """Tell the user where the monitoring reference sample came from, and when it is too small to judge."""
        record = plane_for(self.spec, self.ctx).call("models.sealed_version", name=name, version=version)
        reference = (record.get("lineage") or {}).get("reference") or {}
        minimum = self.spec.monitoring.drift.min_reference_rows
        err = self.ctx.err
        if not reference.get("reference"):
            err.print(f"mlplat: {name} version {version} has no monitoring reference sample: "
                      f"{reference.get('reason', 'unknown reason')}", highlight=False, markup=False)
            return
        rows, source = reference["rows"], reference.get("source", "?")
        of = f" of {reference['source_rows']}" if reference.get("source_rows", rows) != rows else ""
        err.print(f"mlplat: {name} version {version}: monitoring reference sample of {rows}{of} rows from {source}",
                  highlight=False, markup=False)
        if rows < minimum:
            err.print(f"mlplat: warning: {rows} reference rows is below monitoring.drift.minReferenceRows ({minimum}); "
                      "drift will be reported as 'insufficient reference'. Pass a larger `train` dataset to "
                      "start_run or reference_data= to log_model.", highlight=False, markup=False)

    def flush(self) -> None:
        """Write buffered metrics now (blocking)."""
        self._metrics._drain()

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED", error=exc)
        else:
            self.end("FAILED", error=exc)

    def end(self, status: str = "FINISHED", error: BaseException | None = None) -> None:
        """Flush metrics, record the outcome, end the run. Idempotent."""
        if self._ended:
            return
        self._ended = True
        flush_error = None
        try:
            self._metrics.close()
        except MlplatError as exc:
            flush_error = exc
            status = "FAILED"
        tags = {"mlplat.status": status}
        if error is not None:
            tags["mlplat.error"] = f"{type(error).__name__}: {error}"[:5000]
        self.tracker.log_batch(self.run_id, tags=tags)
        if self._handle is not None:
            self.tracker.deactivate(self._handle, status)
        self.tracker.end_run(self.run_id, status)
        with _lock:
            if self in _active:
                _active.remove(self)
        if flush_error is not None and error is None:
            raise flush_error


def start_run(
    experiment: str,
    *,
    name: str | None = None,
    datasets: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    stack: str | None = None,
    autolog: bool = True,
    ctx: Context | None = None,
) -> Run:
    """Start a tracked run on ``stack`` (default: ``$MLPLAT_STACK``, else ``dev``).

    ``datasets`` maps a role ("train", "holdout"...) to a file path, DataFrame or
    array; each is fingerprinted before training starts.
    """
    if not isinstance(experiment, str) or not re.fullmatch(EXPERIMENT_NAME, experiment):
        raise MlplatError(f"invalid experiment name {experiment!r}",
                          hint="use letters, digits, '_', '.', '/', '-' and inner spaces, starting with a letter or "
                               'digit (max 250), e.g. start_run(experiment="churn-model", ...)')
    ctx = ctx or Context()
    spec = ctx.stack(stack or os.environ.get(STACK_ENV, "dev"))
    tracker = providers.capability(spec, ctx, Capability.TRACKING)

    project = Path(spec.project_dir)
    fingerprints = [lineage.fingerprint(role, data, base=project) for role, data in (datasets or {}).items()]
    # The platform's own state folders are not the user's code: they never make a run dirty.
    # In a training job the code is an archive of a commit: the job says which (git cannot).
    code = _job_code() or lineage.code_version(exclude=(project / lineage.STATE_ROOT, Path(spec.state_dir)))
    env = lineage.environment()
    command = shlex.join([sys.executable, *sys.argv]) if sys.argv and sys.argv[0] else sys.executable
    run_tags = {
        "mlplat.tracked": "true",
        "mlplat.stack": spec.name,
        "mlplat.team": spec.team,
        "mlplat.environment": spec.environment,
        "mlplat.user": ctx.user,
        "mlflow.user": ctx.user,
        "mlplat.command": command[:5000],
        "mlplat.cwd": os.getcwd(),
        "mlplat.env.python": env["python"],
        "mlplat.env.os": env["os"],
        "mlplat.env.hash": lineage.environment_hash(env),
        "mlflow.source.name": sys.argv[0] if sys.argv and sys.argv[0] else "<interactive>",
        **code.tags(),
        **{f"mlplat.tag.{k}": v for k, v in spec.tags.as_dict().items()},
        **{f"mlplat.data.{f.name}.sha256": f.sha256 for f in fingerprints},
        **{f"mlplat.data.{f.name}.rows": str(f.rows) for f in fingerprints},
        **({"mlplat.reproduces": os.environ[REPRODUCES_ENV]} if os.environ.get(REPRODUCES_ENV) else {}),
        **training_env.job_tags(),
        **dict(tags or {}),
    }
    run_id = tracker.start_run(experiment, name=name, tags=run_tags)
    training_env.report("run", run_id=run_id, experiment=experiment)
    lineage_doc = {
        "run_id": run_id,
        "stack": spec.name,
        "team": spec.team,
        "user": ctx.user,
        "command": command,
        "cwd": os.getcwd(),
        "invocation": _invocation(code, project),
        "code": {k: v for k, v in code.__dict__.items() if k != "diff"},
        "datasets": [f.to_dict() for f in fingerprints],
        "environment": {k: v for k, v in env.items() if k != "packages"} | {"hash": lineage.environment_hash(env)},
    }
    with tempfile.TemporaryDirectory(prefix="mlplat-run-") as tmp:
        folder = Path(tmp) / "mlplat"
        folder.mkdir(mode=0o700)
        (folder / "lineage.json").write_text(json.dumps(lineage_doc, indent=2, sort_keys=True))
        (folder / "environment.json").write_text(json.dumps(env, indent=2, sort_keys=True))
        (folder / "requirements.lock").write_text(lineage.requirements_lock(env))
        if code.dirty and code.diff:
            (folder / "code.diff").write_text(code.diff)
        tracker.log_artifact(run_id, str(folder), "mlplat")
    if params:
        tracker.log_batch(run_id, params={k: str(v) for k, v in params.items()})

    run = Run(tracker, run_id, spec=spec, experiment=experiment, lineage=lineage_doc, ctx=ctx, datasets=datasets)
    if autolog:
        run._handle = tracker.activate(run_id)
    with _lock:
        _active.append(run)
    return run


def _job_code() -> lineage.CodeVersion | None:
    """The packaged code version of the training job this process runs in (None outside a job)."""
    doc = training_env.job_code()
    if not doc.get("commit"):
        return None
    diff = ""
    if doc.get("diff_file"):
        try:
            diff = Path(doc["diff_file"]).read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            diff = ""
    return lineage.CodeVersion(True, str(doc["commit"]), doc.get("branch"), bool(doc.get("dirty")),
                               doc.get("diff_sha256"), doc.get("repo_root"), diff, remote=doc.get("remote"))


def _invocation(code, project: Path) -> dict[str, Any]:
    """How to rerun this process from a checkout: arguments and working folder relative to the
    repository (absolute paths inside it rewritten), and the project folder relative to it."""
    argv = getattr(sys, "orig_argv", [sys.executable, *sys.argv])[1:]
    cwd = Path.cwd()
    root = Path(code.repo_root) if code.in_git and code.repo_root else None
    rel_cwd = relative_inside(cwd, root)
    args = [os.path.relpath(arg, cwd) if rel_cwd is not None and Path(arg).is_absolute()
            and relative_inside(Path(arg), root) is not None else arg for arg in argv]
    return {"argv": args, "cwd": rel_cwd, "project": relative_inside(project, root),
            "interactive": not sys.argv or not sys.argv[0] or "ipykernel" in sys.modules}


@atexit.register
def _end_dangling_runs() -> None:
    # A script that never closed its run: keep its metrics, and say how it ended.
    for run in list(_active):
        crashed = getattr(sys, "last_value", None)
        run.end("FAILED" if crashed else "FINISHED", error=crashed)
