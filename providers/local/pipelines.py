"""Pipelines on this machine: each step a subprocess, in order, cached, retried, resumable.

A run lives in ``<state>/pipelines/runs/<run id>/``: ``definition.json`` (what it runs),
``state.json`` (every step's state, rewritten atomically after each change, so a runner killed
with ``kill -9`` loses nothing: ``mlplat pipeline run --resume RUN`` keeps the steps that
finished and reruns the one that was running), and ``steps/<step>/`` with the step's working
folder (``work/``: the project's source bundle unpacked, when the pipeline has one), its log and
its outputs (``outputs/<name>/``, one folder per declared output).

A command step's environment: ``MLPLAT_INPUT_<NAME>`` (the path of each input: another step's
output folder or a data file of the project), ``MLPLAT_OUTPUT_<NAME>`` (a folder to fill),
``MLPLAT_STACK``, ``MLPLAT_PROJECT_DIR``, ``MLPLAT_PIPELINE``, ``MLPLAT_PIPELINE_RUN`` and
``MLPLAT_PIPELINE_STEP``. A command step runs with the python of the environment built from the
run's requirements lock (the source bundle's, else the project's committed ``requirements.lock``,
else the running environment's pinned list) and cached by the lock's hash under
``<state>/training/envs/<hash>/`` (:mod:`mlplat_providers.local.environments`, shared with training
jobs): its ``bin`` comes first on ``PATH`` and a leading ``python``/``python3`` is its interpreter.
The run keeps its lock (``requirements.lock`` in the run's folder), so a resumed run uses the same.

Cache: ``<state>/pipelines/cache/<pipeline>/<key>.json`` maps a step's key (its code: the
source bundle's commit and diff, or the content of the files its command names; its inputs'
content hashes; its command, parameters, the pipeline's environment variables and the hash of
the run's requirements lock) to the outputs a run produced, with their content hashes. A hit
whose outputs changed or vanished is a miss; a changed lock is a new key, so the steps run again.

Schedules: ``<state>/pipelines/schedules.json``; :meth:`LocalPipelines.run_due` runs the
pipelines whose cron fired since they last ran, at a time the caller gives.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlplat import pipelines as dsl
from mlplat.contracts.pipelines import (
    JobStatus,
    PipelineBackend,
    PipelineDefinition,
    PipelineRunStatus,
    ScheduleInfo,
    StepDefinition,
    StepRun,
    TrainingJobSpec,
)
from mlplat.errors import Conflict, MlplatError, NotFound, NotProvisioned
from mlplat.pipelines import cron as cron_mod
from mlplat_providers.local.layout import StateLayout

LOG_TAIL_LINES = 20
STEP_TIMEOUT = 24 * 3600
RUN_ID_ENV = "MLPLAT_PIPELINE_RUN"
# Tests set this to "<step>" to make the runner SIGKILL itself right after that step is recorded as
# finished (a crash between steps); the blocking-step test kills it from outside instead.
FAULT_ENV = "MLPLAT_PIPELINE_FAULT_KILL_AFTER"
LOCK = "requirements.lock"  # the run's requirements lock, in the run's folder

Progress = Callable[[str, str, str], None]  # (step, state, detail)


def write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` so that a reader sees the old file or the new one, never a part (fsync, rename, fsync)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def content_hash(path: Path) -> str:
    """sha256 over a file's bytes, or over a folder's relative paths and file contents (sorted)."""
    digest = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(item.relative_to(path).as_posix().encode("utf-8", "surrogateescape") + b"\0")
        digest.update(content_hash(item).encode() + b"\0")
    return digest.hexdigest()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _alive_runner_child(pid: int, run_id: str) -> bool:
    """Whether ``pid`` is still a step process of run ``run_id`` (checked in its environment, so a
    reused pid of another program is never touched)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{RUN_ID_ENV}={run_id}".encode() in environ.split(b"\0")


class LocalPipelines(PipelineBackend):
    """``Capability.PIPELINES`` on this machine. Training jobs are :class:`LocalTrainingJobs`'."""

    def __init__(self, spec: Any, ctx: Any):
        self.spec, self.ctx = spec, ctx
        self.layout = StateLayout(Path(spec.state_dir))
        self.root: Path = Path(spec.state_dir) / "pipelines"
        self._jobs: Any = None

    # --- training jobs ------------------------------------------------------------------------

    @property
    def jobs(self) -> Any:  # LocalTrainingJobs (its own module keeps the training half)
        if self._jobs is None:
            from mlplat_providers.local.training import LocalTrainingJobs

            self._jobs = LocalTrainingJobs(self.spec, self.ctx)
        return self._jobs

    def submit_training(self, job: TrainingJobSpec) -> JobStatus:
        status: JobStatus = self.jobs.submit_training(job)
        return status

    def training_status(self, job_id: str) -> JobStatus:
        status: JobStatus = self.jobs.training_status(job_id)
        return status

    def training_logs(self, job_id: str, *, follow: bool = False) -> Iterator[str]:
        lines: Iterator[str] = self.jobs.training_logs(job_id, follow=follow)
        return lines

    def stop_training(self, job_id: str) -> JobStatus:
        status: JobStatus = self.jobs.stop_training(job_id)
        return status

    def training_jobs(self) -> list[JobStatus]:
        lister = getattr(self.jobs, "training_jobs", None)
        if lister is None:
            self._unsupported("listing training jobs")
        jobs: list[JobStatus] = lister()
        return jobs

    # --- layout -------------------------------------------------------------------------------

    def _require_stack(self) -> None:
        if not self.layout.exists():
            raise NotProvisioned(self.spec.name, f"stores under {self.layout.root}")

    def _run_dir(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise NotFound(f"pipeline run {run_id!r} not found")
        return self.root / "runs" / run_id

    def _load(self, run_id: str) -> tuple[PipelineDefinition, dict[str, Any]]:
        folder = self._run_dir(run_id)
        try:
            state = json.loads((folder / "state.json").read_text())
            definition = dsl.from_dict(json.loads((folder / "definition.json").read_text()))
        except FileNotFoundError:
            raise NotFound(f"pipeline run '{run_id}' not found in stack '{self.spec.name}'",
                           hint=f"`mlplat pipeline list --stack {self.spec.name}` lists the runs") from None
        return definition, state

    @staticmethod
    def _status(state: dict[str, Any]) -> PipelineRunStatus:
        steps = tuple(StepRun(name=name, state=s["state"], attempts=s.get("attempts", 0), started=s.get("started"),
                              ended=s.get("ended"), message=s.get("message", ""), outputs=dict(s.get("outputs", {})))
                      for name, s in ((n, state["steps"][n]) for n in state["order"]))
        return PipelineRunStatus(run_id=state["run_id"], pipeline=state["pipeline"], state=state["state"], steps=steps,
                                 started=state.get("started"), ended=state.get("ended"), message=state.get("message", ""))

    @contextmanager
    def _hold(self, folder: Path, run_id: str) -> Iterator[None]:
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Conflict(f"pipeline run '{run_id}' is being run by another process",
                               hint="wait for it to finish; `mlplat pipeline status RUN` shows its progress") from None
            yield
        finally:
            os.close(fd)

    # --- pipelines ----------------------------------------------------------------------------

    def run_pipeline(self, pipeline: PipelineDefinition, *, resume: str | None = None,
                     only: Sequence[str] | None = None, progress: Progress | None = None) -> PipelineRunStatus:
        """Run ``pipeline`` to its end in this process; ``only``: the steps to carry out (the
        others come from the cache). ``resume``: continue run ``resume`` with the definition it
        started with (``pipeline`` must have its name)."""
        self._require_stack()
        say = progress or (lambda step, state, detail: None)
        if resume is not None:
            stored, state = self._load(resume)
            if stored.name != pipeline.name:
                raise Conflict(f"run '{resume}' is a run of pipeline '{stored.name}', not '{pipeline.name}'",
                               hint=f"resume it with `mlplat pipeline run {stored.name} --resume {resume}`")
            pipeline, folder = stored, self._run_dir(resume)
            if state["state"] == "SUCCEEDED":
                return self._status(state)
            only = state.get("only") or None
            if "environment" not in state:  # a run started before runs kept their lock
                if not (folder / LOCK).is_file():
                    (folder / LOCK).write_text(self._lock_text(pipeline), encoding="utf-8")
                state["environment"] = {"lock_hash": _sha256((folder / LOCK).read_text(encoding="utf-8"))}
        else:
            dsl.validate(pipeline)
            run_id = f"{pipeline.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(self.ctx.clock()))}-{uuid.uuid4().hex[:6]}"
            folder = self._run_dir(run_id)
            names = dsl.order(pipeline)
            self._check_data_inputs(pipeline)
            lock = self._lock_text(pipeline)
            folder.mkdir(parents=True, mode=0o700)
            write_json(folder / "definition.json", dsl.to_dict(pipeline))
            (folder / LOCK).write_text(lock, encoding="utf-8")
            state = {"run_id": run_id, "pipeline": pipeline.name, "model": pipeline.model, "state": "PENDING",
                     "started": None, "ended": None, "message": "", "order": names, "only": list(only or []),
                     "user": self.ctx.user, "steps": {n: {"state": "PENDING", "attempts": 0} for n in names},
                     "environment": {"lock_hash": _sha256(lock)}}
            write_json(folder / "state.json", state)
        run_id = state["run_id"]
        with self._hold(folder, run_id):
            return self._execute(pipeline, folder, state, set(only) if only else None, say)

    def _lock_text(self, pipeline: PipelineDefinition) -> str:
        """The requirements lock the run's command steps get their environment from."""
        from mlplat.services import source as source_service

        if pipeline.source is not None and pipeline.source.requirements_lock:
            return Path(pipeline.source.requirements_lock).read_text(encoding="utf-8")
        return source_service.project_lock(self.spec.project_dir)

    def _environment(self, folder: Path, state: dict[str, Any], say: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
        """The python of the run's environment (built from its lock, or reused from the cache)."""
        from mlplat_providers.local.environments import ensure_environment, envs_root

        lock_hash = state["environment"]["lock_hash"]
        python, info = ensure_environment(envs_root(self.spec.state_dir), folder / LOCK, lock_hash, say=say)
        state["environment"].update({k: info[k] for k in ("dir", "installed", "created", "base")})
        return python, info

    def _check_data_inputs(self, pipeline: PipelineDefinition) -> None:
        for step in pipeline.steps:
            for name, value in step.inputs.items():
                if dsl.parse_reference(value) is None:
                    self._data_path(step, name, value)

    def _data_path(self, step: StepDefinition, name: str, value: str) -> Path:
        where = f"pipeline step {step.name}, input {name}"
        if "://" in value and not value.startswith("file://"):
            raise MlplatError(f"the local provider reads data from files, not {value!r}", where=where,
                              hint="give a path in the project (data/raw.csv) or a file:// URI")
        raw = value[len("file://"):] if value.startswith("file://") else value
        path = Path(raw) if Path(raw).is_absolute() else Path(self.spec.project_dir) / raw
        if not path.exists():
            raise NotFound(f"data {value!r} cannot be read: {path} does not exist", where=where,
                           hint="create it first, or fix the path (relative to the project folder)")
        return path

    def _save(self, folder: Path, state: dict[str, Any]) -> None:
        write_json(folder / "state.json", state)

    def _execute(self, pipeline: PipelineDefinition, folder: Path, state: dict[str, Any], only: set[str] | None,
                 say: Progress) -> PipelineRunStatus:
        steps = {s.name: s for s in pipeline.steps}
        state.update(state="RUNNING", runner_pid=os.getpid(), message="")
        state["started"] = state.get("started") or self.ctx.clock()
        state["ended"] = None
        self._save(folder, state)
        for name in state["order"]:
            record = state["steps"][name]
            if record["state"] in ("SUCCEEDED", "CACHED"):
                say(name, "kept", "finished in an earlier attempt of this run")
                continue
            if record.get("pid") and _alive_runner_child(int(record["pid"]), state["run_id"]):
                try:  # the step process of a killed runner: its result is not recorded, so it runs again
                    os.killpg(int(record["pid"]), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            error = self._run_step(pipeline, steps[name], folder, state, selected=only is None or name in only,
                                   forced=only is not None and name in only, say=say)
            if error is not None:
                state.update(state="FAILED", ended=self.ctx.clock(), message=error)
                self._save(folder, state)
                say(name, "FAILED", error)
                return self._status(state)
            if os.environ.get(FAULT_ENV) == name:
                os.kill(os.getpid(), signal.SIGKILL)
        state.update(state="SUCCEEDED", ended=self.ctx.clock(), message="")
        self._save(folder, state)
        return self._status(state)

    # --- one step -----------------------------------------------------------------------------

    def _inputs(self, step: StepDefinition, state: dict[str, Any]) -> dict[str, Path]:
        paths: dict[str, Path] = {}
        for name, value in step.inputs.items():
            ref = dsl.parse_reference(value)
            if ref is None:
                paths[name] = self._data_path(step, name, value)
                continue
            producer, output = ref
            produced = state["steps"][producer].get("outputs", {}).get(output)
            if not produced or not Path(produced).exists():
                raise MlplatError(f"input '{name}' needs {value!r}, which step '{producer}' has not produced in this "
                                  f"run ({state['steps'][producer]['state']})", where=f"pipeline step {step.name}",
                                  hint="run the pipeline without --step/--from first, so that the cache holds it")
            paths[name] = Path(produced)
        return paths

    def _code(self, pipeline: PipelineDefinition, step: StepDefinition) -> dict[str, str]:
        if pipeline.source is not None:
            return {"commit": pipeline.source.commit,
                    "diff": hashlib.sha256((pipeline.source.diff or "").encode()).hexdigest()}
        project = Path(self.spec.project_dir)
        code: dict[str, str] = {}
        for arg in step.command:
            candidate = project / arg
            if not Path(arg).is_absolute() and candidate.is_file():
                code[arg] = content_hash(candidate)
        return code

    def _key(self, pipeline: PipelineDefinition, step: StepDefinition, inputs: dict[str, Path], lock_hash: str) -> str:
        doc = {"pipeline": pipeline.name, "step": step.name, "kind": step.kind, "command": list(step.command),
               "params": step.params, "outputs": list(step.outputs), "environment": pipeline.environment,
               "lock_hash": lock_hash,
               "code": self._code(pipeline, step), "inputs": {n: content_hash(p) for n, p in sorted(inputs.items())}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def _cache_file(self, pipeline: PipelineDefinition, key: str) -> Path:
        return self.root / "cache" / pipeline.name / f"{key}.json"

    def _cached(self, pipeline: PipelineDefinition, key: str) -> dict[str, Any] | None:
        try:
            entry: dict[str, Any] = json.loads(self._cache_file(pipeline, key).read_text())
        except (OSError, ValueError):
            return None
        for name, path in entry["outputs"].items():
            if not Path(path).exists() or content_hash(Path(path)) != entry["hashes"].get(name):
                return None
        return entry

    def _run_step(self, pipeline: PipelineDefinition, step: StepDefinition, folder: Path, state: dict[str, Any], *,
                  selected: bool, forced: bool, say: Progress) -> str | None:
        """Carry out (or take from the cache) one step; ``None`` when it finished, else why it failed.
        ``forced``: named by --step/--from, so it runs even when cached."""
        record = state["steps"][step.name]
        try:
            inputs = self._inputs(step, state)
        except MlplatError as exc:
            record.update(state="FAILED", message=exc.message)
            return f"step '{step.name}' cannot start: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else "")
        key = self._key(pipeline, step, inputs, state["environment"]["lock_hash"]) if step.kind == "command" else None
        hit = self._cached(pipeline, key) if key is not None and step.cache and not forced else None
        if hit is not None:
            record.update(state="CACHED", outputs=hit["outputs"], meta=hit.get("meta", {}), cache_key=key,
                          message=f"cached from run {hit.get('run_id')}", started=None, ended=None)
            self._save(folder, state)
            say(step.name, "CACHED", record["message"])
            return None
        if not selected:
            if step.kind != "command":
                record.update(state="SKIPPED", message="not selected (--step/--from)")
                self._save(folder, state)
                say(step.name, "SKIPPED", record["message"])
                return None
            record.update(state="FAILED", message="not selected and not cached")
            return (f"step '{step.name}' is outside the selected steps (--step/--from) and the cache holds no result "
                    "for its current code and inputs; run the whole pipeline first")
        step_dir = folder / "steps" / step.name
        log = step_dir / "log.txt"
        outputs = {name: step_dir / "outputs" / name for name in step.outputs}
        attempts = step.retries + 1
        failure = ""
        for attempt in range(1, attempts + 1):
            for out in outputs.values():  # each attempt starts from empty output folders
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
            record.update(state="RUNNING", attempts=attempt, started=self.ctx.clock(), ended=None, message="",
                          pid=None, cache_key=key)
            self._save(folder, state)
            say(step.name, "RUNNING", f"attempt {attempt} of {attempts}")
            if step.kind == "command":
                failure = self._run_command(pipeline, step, step_dir, inputs, outputs, log, state, folder, say)
            else:
                failure = self._run_platform(pipeline, step, outputs, log, state)
            if not failure:
                empty = [n for n, p in outputs.items() if not any(p.iterdir())]
                if empty and step.kind == "command":
                    failure = (f"wrote nothing to its output(s) {', '.join(empty)} "
                               f"($MLPLAT_OUTPUT_{dsl.env_name(empty[0])})")
            if not failure:
                break
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"\n[mlplat] attempt {attempt} of {attempts} failed: {failure.splitlines()[0]}\n")
        record.update(ended=self.ctx.clock(), pid=None)
        if failure:
            tail = _tail(log)
            record.update(state="FAILED", message=failure)
            self._save(folder, state)
            return (f"step '{step.name}' failed after {attempts} attempt(s): {failure}; log {log}"
                    + (f"\n--- last lines of its log ---\n{tail}" if tail else ""))
        record.update(state="SUCCEEDED", outputs={n: str(p) for n, p in outputs.items()}, message="")
        if key is not None and step.cache:
            write_json(self._ensure(self._cache_file(pipeline, key)), {
                "outputs": record["outputs"], "hashes": {n: content_hash(p) for n, p in outputs.items()},
                "meta": record.get("meta", {}), "run_id": state["run_id"], "step": step.name, "created": self.ctx.clock()})
        self._save(folder, state)
        say(step.name, "SUCCEEDED", f"{record['ended'] - record['started']:.1f}s" if record.get("started") else "")
        return None

    @staticmethod
    def _ensure(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _run_command(self, pipeline: PipelineDefinition, step: StepDefinition, step_dir: Path,
                     inputs: dict[str, Path], outputs: dict[str, Path], log: Path, state: dict[str, Any],
                     folder: Path, say: Progress) -> str:
        def tell(text: str) -> None:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"[mlplat] {text.removeprefix('mlplat: ')}\n")
            say(step.name, "ENV", text.removeprefix("mlplat: "))

        work = step_dir / "work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            python, env_info = self._environment(folder, state, tell)
        except (MlplatError, OSError, subprocess.SubprocessError) as exc:
            detail = exc.message if isinstance(exc, MlplatError) else f"{type(exc).__name__}: {exc}"
            return f"its environment (lock {state['environment']['lock_hash'][:12]}) could not be built: {detail}"
        project = Path(self.spec.project_dir)
        argv = list(step.command)
        if pipeline.source is not None:
            from mlplat.services.source import unpack

            unpack(pipeline.source.archive, work)
        else:  # no bundle: the files the command names are the project's
            argv = [str(project / a) if not Path(a).is_absolute() and (project / a).is_file() else a for a in argv]
        if argv[0] in ("python", "python3"):
            argv[0] = str(python)
        inherited = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        env = {**inherited, **pipeline.environment, "MLPLAT_STACK": str(self.spec.name),
               "MLPLAT_PROJECT_DIR": str(project), "MLPLAT_PIPELINE": pipeline.name, RUN_ID_ENV: state["run_id"],
               "MLPLAT_PIPELINE_STEP": step.name,
               **{f"MLPLAT_INPUT_{dsl.env_name(n)}": str(p) for n, p in inputs.items()},
               **{f"MLPLAT_OUTPUT_{dsl.env_name(n)}": str(p) for n, p in outputs.items()}}
        env.update(VIRTUAL_ENV=str(python.parent.parent), PATH=str(python.parent) + os.pathsep + env.get("PATH", ""))
        env.pop(FAULT_ENV, None)
        record = state["steps"][step.name]
        record["meta"] = {"workdir": str(work.resolve()), "started": record["started"], "wall_started": time.time(),
                          "python": str(python), "environment_reused": env_info["reused"]}
        try:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"[mlplat] {' '.join(argv)}  (in {work})\n")
                fh.flush()
                process = subprocess.Popen(argv, cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
                record["pid"] = process.pid
                self._save(folder, state)
                try:
                    code = process.wait(timeout=STEP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    return f"ran longer than {STEP_TIMEOUT} s and was stopped"
        except OSError as exc:
            return f"could not start {argv[0]!r}: {exc.strerror or exc}"
        return "" if code == 0 else f"exit status {code}"

    def _run_platform(self, pipeline: PipelineDefinition, step: StepDefinition, outputs: dict[str, Path], log: Path,
                      state: dict[str, Any]) -> str:
        from mlplat.services import pipelines as service

        try:
            docs = service.run_platform_step(self.spec, self.ctx, pipeline, step, state["steps"])
        except MlplatError as exc:
            message = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"[mlplat] {step.kind}: {message}\n")
            return message
        with open(log, "a", encoding="utf-8") as fh:
            for name, doc in docs.items():
                (outputs[name] / f"{name}.json").write_text(json.dumps(doc, indent=2, sort_keys=True, default=str))
                fh.write(f"[mlplat] {step.kind}: {name} = {json.dumps(doc, sort_keys=True, default=str)[:2000]}\n")
        state["steps"][step.name]["meta"] = {k: v for k, v in docs.get(step.outputs[0], {}).items()
                                             if isinstance(v, (str, int, float, bool))}
        return ""

    def pipeline_status(self, run_id: str) -> PipelineRunStatus:
        _, state = self._load(run_id)
        return self._status(state)

    def pipeline_runs(self, pipeline: str | None = None) -> list[PipelineRunStatus]:
        runs: list[dict[str, Any]] = []
        for path in (self.root / "runs").glob("*/state.json"):
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if pipeline is None or state["pipeline"] == pipeline:
                runs.append(state)
        runs.sort(key=lambda s: (s.get("started") or 0, s["run_id"]), reverse=True)
        return [self._status(s) for s in runs]

    def run_definition(self, run_id: str) -> PipelineDefinition:
        """The definition run ``run_id`` ran (or runs)."""
        return self._load(run_id)[0]

    # --- schedules ----------------------------------------------------------------------------

    @property
    def _schedules_file(self) -> Path:
        return self.root / "schedules.json"

    def _schedules(self) -> dict[str, Any]:
        try:
            schedules: dict[str, Any] = json.loads(self._schedules_file.read_text())
            return schedules
        except FileNotFoundError:
            return {}

    def schedule_pipeline(self, pipeline: PipelineDefinition, cron: str) -> ScheduleInfo:
        self._require_stack()
        cron_mod.validate(cron)
        pipeline = dsl.validate(replace(pipeline, schedule=cron))
        self._check_data_inputs(pipeline)
        now = self.ctx.clock()
        schedules = self._schedules()
        schedules[pipeline.name] = {"cron": cron, "definition": dsl.to_dict(pipeline), "since": now,
                                    "model": pipeline.model, "by": self.ctx.user, "runs": []}
        self._ensure(self._schedules_file)
        write_json(self._schedules_file, schedules)
        return ScheduleInfo(pipeline=pipeline.name, cron=cron, target=str(self._schedules_file),
                            next_run=cron_mod.parse(cron).next_after(now))

    def schedules(self) -> list[ScheduleInfo]:
        out = []
        for name, entry in sorted(self._schedules().items()):
            out.append(ScheduleInfo(pipeline=name, cron=entry["cron"], target=str(self._schedules_file),
                                    next_run=cron_mod.parse(entry["cron"]).next_after(entry["since"])))
        return out

    def scheduled_definition(self, name: str) -> PipelineDefinition | None:
        entry = self._schedules().get(name)
        return dsl.from_dict(entry["definition"]) if entry else None

    def run_due(self, now: float, progress: Progress | None = None) -> list[PipelineRunStatus]:
        """Run each scheduled pipeline whose cron fired in ``(last check, now]`` once (missed fire
        times coalesce into one run). The check is recorded before the run starts, so a runner
        killed meanwhile does not start it twice: resume that run instead."""
        self._require_stack()
        results = []
        for name, entry in sorted(self._schedules().items()):
            fire = cron_mod.parse(entry["cron"]).next_after(entry["since"])
            if fire > now:
                continue
            schedules = self._schedules()
            schedules[name]["since"] = now
            write_json(self._schedules_file, schedules)
            results.append(self.run_pipeline(dsl.from_dict(entry["definition"]), progress=progress))
        return results
