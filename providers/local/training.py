"""Training jobs on this machine: ``mlplat train`` runs the project's command as a subprocess.

A job lives in ``<state>/training/<job id>/``:

    job.json      the job's record (state, pids, times, exit code, environment, run, version),
                  replaced atomically on every change, so any process can read it at any time
    source/       the project at its commit (the bundle, unpacked): the command's working folder
    output.log    the command's output (and the supervisor's own lines, prefixed ``mlplat:``)
    events.jsonl  what the SDK reports from inside the job: the run it started, the versions registered
    code.diff     the uncommitted changes the job ran with (``--allow-dirty`` only)
    stop          written by ``stop``: the supervisor then records STOPPED rather than FAILED

``submit_training`` prepares the folder and starts a *supervisor* (``python -m
mlplat_providers.local.training JOB_DIR``) in its own session, and returns at once (PENDING). The
supervisor builds or reuses the environment, starts the command in its own process group, waits
for it (bounded by ``max_runtime_seconds``) and records how it ended. ``status``, ``logs`` and
``stop`` only read the folder and signal process groups, so they work from any process; a
supervisor that died without recording an end is reported FAILED.

The command runs with the python of the environment cached by the lock's sha256 under
``<state>/training/envs/<hash>/`` (:mod:`mlplat_providers.local.environments`, shared with
pipeline steps): two jobs with the same lock share one environment; a changed lock gets a new one.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlplat import training_env
from mlplat.contracts.pipelines import TERMINAL_STATES, JobStatus, TrainingJobSpec
from mlplat.errors import Conflict, MlplatError, NotFound, StackError
from mlplat.services import source as source_service
from mlplat_providers.local.environments import ensure_environment, envs_root
from mlplat_providers.local.layout import StateLayout

ROOT = "training"
ENVS = "envs"
RECORD = "job.json"
LOG = "output.log"
EVENTS = "events.jsonl"
STOP = "stop"
DIFF = "code.diff"
STOP_GRACE_SECONDS = 10.0
POLL_SECONDS = 0.2
JOB_ID = __import__("re").compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})")


# --- the job folder ----------------------------------------------------------------------------


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``path`` with ``doc`` atomically (a reader sees the old or the new document, never half)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with partial.open("w", encoding="utf-8") as handle:
        json.dump(doc, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def read_json(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def _alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists and is not a zombie (an exited child not yet reaped)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _events(job_dir: Path) -> tuple[str | None, str | None, int | None]:
    """(run id, model, version) the SDK reported from inside the job."""
    run_id = model = None
    version = None
    try:
        lines = (job_dir / EVENTS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None, None, None
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line being written
        if event.get("event") == "run" and run_id is None:
            run_id = event.get("run_id")
        elif event.get("event") == "model":
            run_id = run_id or event.get("run_id")
            model, version = event.get("model"), event.get("version")
    return run_id, model, int(version) if version is not None else None


class LocalTrainingJobs:
    """The training half of the local ``PipelineBackend`` (``providers/local/pipelines.py`` composes it)."""

    def __init__(self, spec: Any, ctx: Any) -> None:
        self.spec = spec
        self.ctx = ctx

    @property
    def root(self) -> Path:
        return Path(self.spec.state_dir) / ROOT

    def job_dir(self, job_id: str) -> Path:
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            raise NotFound(f"no training job '{job_id}' in stack '{self.spec.name}'",
                           hint="`mlplat train list` shows the stack's jobs")
        return self.root / job_id

    def _record(self, job_id: str) -> tuple[Path, dict[str, Any]]:
        job_dir = self.job_dir(job_id)
        try:
            return job_dir, read_json(job_dir / RECORD)
        except FileNotFoundError:
            raise NotFound(f"no training job '{job_id}' in stack '{self.spec.name}'",
                           hint="`mlplat train list` shows the stack's jobs") from None

    # --- the contract --------------------------------------------------------------------------

    def submit_training(self, job: TrainingJobSpec) -> JobStatus:
        """Prepare the job's folder from ``job.source`` and start its supervisor; returns PENDING at once.

        ``Conflict`` when a job of that name exists. The folder is assembled under a temporary
        name and renamed into place, so a job either exists whole or not at all."""
        final = self.job_dir(job.name)
        if not self.spec.control_plane.tracking and not StateLayout(Path(self.spec.state_dir)).exists():
            # the job's run would have nowhere to go: refuse before creating anything
            raise StackError(f"stack '{self.spec.name}' is not provisioned (no stores under {self.spec.state_dir})",
                             hint=f"run `mlplat up --stack {self.spec.name}` first")
        if final.exists():
            raise Conflict(f"a training job named '{job.name}' already exists in stack '{self.spec.name}'",
                           hint="submit it again: a new job gets a new name")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".new-{job.name}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            source_service.unpack(job.source.archive, staging / "source")
            lock = staging / source_service.LOCK
            if job.source.requirements_lock:
                shutil.copyfile(job.source.requirements_lock, lock)
            else:
                lock.write_text("", encoding="utf-8")
            environment = dict(job.environment)
            code = json.loads(environment.get(training_env.CODE_ENV) or "{}")
            if job.source.dirty and job.source.diff:
                (staging / DIFF).write_text(job.source.diff, encoding="utf-8", errors="surrogateescape")
                code["diff_file"] = str(final / DIFF)
            code.setdefault("commit", job.source.commit)
            code.setdefault("dirty", job.source.dirty)
            environment[training_env.CODE_ENV] = json.dumps(code, sort_keys=True)
            (staging / LOG).touch()
            (staging / EVENTS).touch()
            record = {
                "job_id": job.name, "stack": self.spec.name, "state": "PENDING", "created": self.ctx.clock(),
                "started": None, "ended": None, "message": "", "exit_code": None,
                "command": list(job.command), "instance_type": job.instance_type, "gpus": job.gpus,
                "data": dict(job.data), "tags": dict(job.tags), "env": environment,
                "max_runtime_seconds": job.max_runtime_seconds, "commit": job.source.commit,
                "dirty": job.source.dirty, "lock_hash": job.source.lock_hash,
                "price_per_hour": _float(job.tags.get("mlplat.training.price_per_hour")),
                "supervisor_pid": None, "pid": None, "pgid": None, "environment": None,
                "log": str(final / LOG), "user": self.ctx.user,
            }
            write_json(staging / RECORD, record)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log = (final / LOG).open("ab")
        try:
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "mlplat_providers.local.training", str(final)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                cwd=final, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        except OSError as exc:
            record.update(state="FAILED", ended=self.ctx.clock(), message=f"the supervisor did not start: {exc}")
            write_json(final / RECORD, record)
            return self._status(final, record)
        finally:
            log.close()
        # The supervisor rewrites the record from here on; it only adds its pid if it has not yet.
        _set_if_missing(final, "supervisor_pid", supervisor.pid)
        return self.training_status(job.name)

    def training_status(self, job_id: str) -> JobStatus:
        job_dir, record = self._record(job_id)
        return self._status(job_dir, record)

    def training_logs(self, job_id: str, *, follow: bool = False) -> Iterator[str]:
        """The output so far, line by line; with ``follow``, until the job has ended and all is read."""
        job_dir, _ = self._record(job_id)
        return self._follow(job_dir, job_id, follow)

    def _follow(self, job_dir: Path, job_id: str, follow: bool) -> Iterator[str]:
        with (job_dir / LOG).open("r", encoding="utf-8", errors="replace") as handle:
            pending = ""
            while True:
                chunk = handle.readline()
                if chunk:
                    pending += chunk
                    if pending.endswith("\n"):
                        yield pending.rstrip("\n")
                        pending = ""
                    continue
                if not follow:
                    break
                if self.training_status(job_id).done:
                    rest = handle.read()  # whatever the last writes added after the end was recorded
                    pending += rest
                    break
                time.sleep(POLL_SECONDS)
            yield from pending.splitlines()

    def stop_training(self, job_id: str) -> JobStatus:
        """Terminate the job's process group (SIGTERM, then SIGKILL after a grace period) and wait
        for the end to be recorded. A finished job is returned as it is."""
        job_dir, record = self._record(job_id)
        if record["state"] in TERMINAL_STATES:
            return self._status(job_dir, record)
        (job_dir / STOP).write_text(json.dumps({"by": self.ctx.user, "at": self.ctx.clock()}))
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        signalled: set[str] = set()
        while True:
            record = read_json(job_dir / RECORD)
            if record["state"] in TERMINAL_STATES:
                return self._status(job_dir, record)
            supervisor = int(record.get("supervisor_pid") or 0)
            if not _alive(supervisor):
                if record.get("pgid"):
                    _killpg(record["pgid"], signal.SIGKILL)
                record = update(job_dir, state="STOPPED", ended=record.get("ended") or self.ctx.clock(),
                                message=f"stopped by {self.ctx.user}")
                return self._status(job_dir, record)
            late = time.monotonic() >= deadline
            if record.get("pgid"):
                if "command" not in signalled or late:
                    _killpg(record["pgid"], signal.SIGKILL if late else signal.SIGTERM)
                    signalled.add("command")
            elif "supervisor" not in signalled:  # still preparing: the supervisor stops itself
                os.kill(supervisor, signal.SIGTERM)
                signalled.add("supervisor")
            if late:
                deadline = time.monotonic() + STOP_GRACE_SECONDS
            time.sleep(POLL_SECONDS)

    def training_jobs(self) -> list[JobStatus]:
        """Every job of the stack, newest first."""
        if not self.root.is_dir():
            return []
        out = []
        for job_dir in self.root.iterdir():
            if job_dir.name == ENVS or job_dir.name.startswith(".") or not (job_dir / RECORD).is_file():
                continue
            record = read_json(job_dir / RECORD)
            out.append((record.get("created") or 0.0, self._status(job_dir, record)))
        return [status for _, status in sorted(out, key=lambda item: item[0], reverse=True)]

    def record(self, job_id: str) -> dict[str, Any]:
        """The job's whole record (command, environment, pids, exit code): ``mlplat train status --json``."""
        job_dir, record = self._record(job_id)
        status = self._status(job_dir, record)
        return {**record, "state": status.state, "message": status.message, "run_id": status.run_id,
                "model": status.model, "model_version": status.model_version, "job_dir": str(job_dir)}

    def _status(self, job_dir: Path, record: dict[str, Any]) -> JobStatus:
        state, message = record["state"], record.get("message") or ""
        ended = record.get("ended")
        if state not in TERMINAL_STATES and record.get("supervisor_pid") and not _alive(record["supervisor_pid"]):
            state, message = "FAILED", "the job's supervisor ended without recording an outcome (killed?)"
        run_id, model, version = _events(job_dir)
        return JobStatus(job_id=record["job_id"], state=state, started=record.get("started"), ended=ended,
                         instance_type=record.get("instance_type"), message=message, run_id=run_id,
                         model_version=version, model=model, price_per_hour=record.get("price_per_hour"))


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _set_if_missing(job_dir: Path, key: str, value: Any) -> None:
    with _record_lock(job_dir):
        record = read_json(job_dir / RECORD)
        if record.get(key) is None:
            record[key] = value
            write_json(job_dir / RECORD, record)


class _record_lock:
    """Serialises read-modify-write of ``job.json`` between the submitter, the supervisor and ``stop``."""

    def __init__(self, job_dir: Path):
        self.path = job_dir / ".job.lock"
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def update(job_dir: Path, **changes: Any) -> dict[str, Any]:
    with _record_lock(job_dir):
        record = read_json(job_dir / RECORD)
        record.update(changes)
        write_json(job_dir / RECORD, record)
        return record


# --- the supervisor ----------------------------------------------------------------------------


class _Stopped(Exception):
    pass


def _on_term(_signum: int, _frame: Any) -> None:
    raise _Stopped


def supervise(job_dir: Path) -> int:
    """Run the job of ``job_dir`` to its end and record it. The supervisor's process body."""
    signal.signal(signal.SIGTERM, _on_term)
    update(job_dir, supervisor_pid=os.getpid())
    record = read_json(job_dir / RECORD)
    child: subprocess.Popen[bytes] | None = None

    def say(text: str) -> None:
        print(text, flush=True)

    def end(state: str, message: str, exit_code: int | None = None) -> int:
        run_id, model, version = _events(job_dir)  # kept in the record too, beside the events they came from
        update(job_dir, state=state, message=message, exit_code=exit_code, ended=time.time(), run_id=run_id,
               model=model, model_version=version)
        say(f"mlplat: job {record['job_id']} {state.lower()}" + (f": {message}" if message else ""))
        return 0 if state == "SUCCEEDED" else 1

    try:
        lock = job_dir / source_service.LOCK
        python, env_info = ensure_environment(envs_root(job_dir.parent.parent), lock, record.get("lock_hash") or "none",
                                              say)
        if env_info["reused"]:
            say(f"mlplat: reusing the environment for lock {str(record.get('lock_hash'))[:12]}")
        update(job_dir, environment=env_info)
        venv_bin = str(python.parent)
        spec_env = record.get("env") or {}
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        env.update(spec_env)
        env.update({training_env.data_variable(name): uri for name, uri in (record.get("data") or {}).items()})
        env.update({"VIRTUAL_ENV": str(python.parent.parent), "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
                    "PYTHONUNBUFFERED": "1", training_env.EVENTS_ENV: str(job_dir / EVENTS)})
        if (job_dir / STOP).exists():
            return end("STOPPED", "stopped before it started")
        command = list(record["command"])
        if command and command[0] in ("python", "python3"):
            command[0] = str(python)
        say(f"mlplat: running {' '.join(record['command'])} (instance type {record.get('instance_type')})")
        with (job_dir / LOG).open("ab") as log:
            child = subprocess.Popen(command, cwd=job_dir / "source", env=env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        update(job_dir, state="RUNNING", started=time.time(), pid=child.pid, pgid=child.pid)
        if (job_dir / STOP).exists():
            _killpg(child.pid, signal.SIGTERM)
        try:
            code = child.wait(timeout=float(record.get("max_runtime_seconds") or 86_400))
        except subprocess.TimeoutExpired:
            _killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _killpg(child.pid, signal.SIGKILL)
                child.wait()
            return end("FAILED", f"the job ran longer than its max runtime ({record.get('max_runtime_seconds')} s)")
        if (job_dir / STOP).exists():
            return end("STOPPED", "stopped on request", code)
        if code == 0:
            return end("SUCCEEDED", "", 0)
        return end("FAILED", f"the command exited with code {code}" + (" (killed by a signal)" if code < 0 else ""),
                   code)
    except _Stopped:
        if child is not None and child.poll() is None:
            _killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _killpg(child.pid, signal.SIGKILL)
        return end("STOPPED", "stopped on request")
    except (MlplatError, OSError, subprocess.SubprocessError) as exc:
        return end("FAILED", f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(supervise(Path(sys.argv[1])))
