"""Training jobs (``mlplat train``): checked, packaged and submitted to the stack's provider.

Every check runs before anything is submitted, in this order, and a refusal writes nothing
(no job folder, no run): the command's script exists in the project; the instance type and
GPU count are within the stack's ``spend`` policy (:func:`check_spend`, the one place both the
local and the cloud backends' jobs are governed); each data channel's URI can be read (local
paths and ``file://`` here; ``s3://`` by the backend that reads it); the project packages at its
commit (:func:`mlplat.services.source.bundle_source`: uncommitted changes refused unless
``allow_dirty``). Then the provider's ``Capability.PIPELINES`` backend runs the job.

The job's script runs ``mlplat.start_run`` as usual; the environment tells it the job id, the
packaged commit and the run tags (instance type, its price, the stack's cost tags), see
:mod:`mlplat.training_env`. The cost of a job is its instance type's price × its duration
(:func:`training_price`), reported by ``mlplat cost report`` under the run's team and model.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import secrets
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from mlplat import lineage, providers, training_env
from mlplat.contracts import Capability
from mlplat.contracts.pipelines import JobStatus, PipelineBackend, TrainingJobSpec
from mlplat.errors import Denied, MlplatError, NotFound
from mlplat.services import source as source_service

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.stack import StackSpec

SPEND = "spend"
SPEND_WHERE = "mlplat:policy.policies.spend"
MAX_RUNTIME_SECONDS = 86_400
LOCAL_SCHEMES = ("", "file")
BACKEND_SCHEMES = ("s3", "gs", "az", "abfss", "azureml", "wasbs")  # read by the backend whose compute can reach them
NO_MODEL = "(no model registered)"  # the cost line of a job whose script registered no version
PYTHON = re.compile(r"python(?:\d+(?:\.\d+)?)?")


class SpendRefused(Denied):
    """The stack's spend policy does not allow the instance type or GPU count asked for."""


@dataclass(frozen=True)
class Submitted:
    status: JobStatus
    job: TrainingJobSpec
    warnings: list[str] = field(default_factory=list)


def backend(spec: StackSpec, ctx: Context) -> PipelineBackend:
    return providers.capability(spec, ctx, Capability.PIPELINES)


# --- governance -------------------------------------------------------------------------------


def spend_settings(spec: StackSpec) -> tuple[str, dict[str, Any]]:
    """The ``spend`` policy's enforcement level and settings in force for ``spec`` (defaults overlaid)."""
    from mlplat_policies import rules

    policy = rules.BY_NAME[SPEND]
    settings = spec.policy.as_settings()
    own = (settings.get("policies") or {}).get(SPEND)
    return rules.resolve_level(policy, settings.get("enforcementLevel"), own), rules.policy_config(policy, own)


def check_spend(spec: StackSpec, instance_type: str, gpus: int) -> list[str]:
    """Refuse (``SpendRefused``) an instance type outside the stack's ``spend`` policy
    (``allowedInstanceTypes`` glob patterns) or more GPUs than its ``maxGpuInstances``, naming the
    policy and the allowed values. Under an ``advisory`` policy the same findings are returned as
    warnings; a ``disabled`` one checks nothing. A GPU instance type counts as at least one GPU."""
    from mlplat_policies import rules

    level, config = spend_settings(spec)
    if level == rules.DISABLED:
        return []
    problems: list[tuple[str, str, str]] = []
    allowed = [str(p) for p in config.get("allowedInstanceTypes") or []]
    if allowed and not any(fnmatch.fnmatchcase(instance_type, pattern) for pattern in allowed):
        problems.append((f"instance type {instance_type} is not allowed by the stack's spend policy "
                         f"(allowedInstanceTypes: {', '.join(allowed)})", f"{SPEND_WHERE}.allowedInstanceTypes",
                         "pick an allowed --instance-type, or ask the platform team to extend allowedInstanceTypes"))
    cap = config.get("maxGpuInstances")
    wanted = max(int(gpus), 1 if rules.is_gpu(instance_type) else 0)
    if cap is not None and wanted > int(cap):
        problems.append((f"{wanted} GPU(s) asked for ({'--gpus ' + str(gpus) if gpus else instance_type}), more than "
                         f"the stack's spend policy allows (maxGpuInstances: {cap})", f"{SPEND_WHERE}.maxGpuInstances",
                         f"ask for at most {cap} GPU(s), or ask the platform team to raise maxGpuInstances"))
    if not problems:
        return []
    if level == rules.MANDATORY:
        message, where, hint = problems[0]
        if len(problems) > 1:
            message += "; and " + "; ".join(p[0] for p in problems[1:])
        raise SpendRefused(message, where=where, hint=hint, policy=SPEND, allowed_instance_types=allowed,
                           max_gpu_instances=cap)
    return [f"advisory spend policy: {p[0]}" for p in problems]


def training_price(spec: StackSpec, instance_type: str) -> float:
    """USD per hour of ``instance_type``: the stack's ``serving.priceTable`` entry, else
    ``serving.pricePerHour`` when it is the serving instance type, else 0 (unpriced)."""
    serving = spec.serving
    if instance_type in serving.price_table:
        return float(serving.price_table[instance_type])
    if instance_type == serving.instance_type:
        return float(serving.price_per_hour)
    return 0.0


def default_instance_type(spec: StackSpec, gpus: int) -> str:
    if spec.provider.kind == "local":
        return "local.gpu" if gpus else "local.cpu"
    return spec.serving.instance_type


# --- input checks -----------------------------------------------------------------------------


def parse_data(items: Sequence[str]) -> dict[str, str]:
    """``["train=data/train.parquet", ...]`` → ``{"train": "data/train.parquet"}``."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, uri = item.partition("=")
        name = name.strip()
        if not sep or not uri.strip():
            raise MlplatError(f"--data {item!r} is not NAME=URI", where="--data",
                              hint="e.g. --data train=data/train.parquet --data holdout=s3://bucket/holdout/")
        if not training_env.CHANNEL.fullmatch(name):
            raise MlplatError(f"data channel name {name!r} is not valid", where="--data",
                              hint="start with a letter; letters, digits and _ only (it becomes MLPLAT_DATA_<NAME>)")
        if name.upper() in {n.upper() for n in out}:
            raise MlplatError(f"data channel {name!r} is given twice", where="--data")
        out[name] = uri.strip()
    return out


def check_data(data: Mapping[str, str], base: Path) -> dict[str, str]:
    """Each channel's URI, local ones made absolute; ``NotFound`` for a local path that does not exist
    or cannot be read. URIs of object stores are left to the backend that reads them."""
    out: dict[str, str] = {}
    for name, uri in data.items():
        parts = urlsplit(uri)
        scheme = parts.scheme.lower() if len(parts.scheme) > 1 else ""  # "C:" is not a scheme
        if scheme in LOCAL_SCHEMES:
            path = Path(unquote(parts.path)) if scheme == "file" else Path(uri)
            path = path if path.is_absolute() else base / path
            if not path.exists():
                raise NotFound(f"data channel '{name}': {uri} does not exist (looked at {path})", where="--data",
                               hint="pass an existing file or folder (relative paths start where you run mlplat)")
            readable = os.access(path, os.R_OK) and (not path.is_dir() or os.access(path, os.X_OK))
            if not readable or (path.is_file() and not _opens(path)):
                raise NotFound(f"data channel '{name}': {path} cannot be read (permission denied)", where="--data",
                               hint="make it readable by the user who runs the job")
            out[name] = str(path.resolve())
        elif scheme in BACKEND_SCHEMES:
            out[name] = uri
        else:
            raise MlplatError(f"data channel '{name}': the scheme of {uri} is not supported", where="--data",
                              hint=f"use a local path, file:// or one of {', '.join(s + '://' for s in BACKEND_SCHEMES)}")
    return out


def _opens(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError:
        return False
    return True


def script_of(command: Sequence[str]) -> str | None:
    """The file the command runs: ``python [opts] SCRIPT ...`` → SCRIPT; ``./run.sh`` → itself; ``python -m
    pkg`` or a program on PATH → None."""
    if not command:
        return None
    if PYTHON.fullmatch(Path(command[0]).name):
        for arg in command[1:]:
            if arg in ("-m", "-c") or arg.startswith(("-m", "-c")) and len(arg) > 2 and not arg.startswith("--"):
                return None
            if not arg.startswith("-"):
                return arg
        return None
    return command[0] if "/" in command[0] else None


def check_command(command: Sequence[str], project: Path) -> str | None:
    """The script the command runs, relative to the project root where the job starts; ``NotFound``
    when it does not exist there."""
    if not command:
        raise MlplatError("no command to run", where="mlplat train",
                          hint="put the job's command after --: mlplat train --stack dev -- python train.py")
    script = script_of(command)
    if script is None:
        return None
    if Path(script).is_absolute():
        raise MlplatError(f"the script {script} is an absolute path", where="command",
                          hint="name it relative to the project root: the job runs the project at its commit")
    if not (project / script).is_file():
        raise NotFound(f"the script {script} does not exist in the project ({project / script})", where="command",
                       hint="paths in the command are relative to the project root, where the job starts")
    return script


# --- submission -------------------------------------------------------------------------------


def new_job_name(now: float) -> str:
    """``train-20261202-081500-a1b2c3``: sortable, unique, and a valid SageMaker training job name."""
    return f"train-{datetime.fromtimestamp(now, tz=UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def submit(spec: StackSpec, ctx: Context, command: Sequence[str], *, instance_type: str | None = None,
           gpus: int = 0, data: Mapping[str, str] | None = None, allow_dirty: bool = False,
           max_runtime_seconds: int = MAX_RUNTIME_SECONDS, spot: bool = False,
           cwd: Path | None = None) -> Submitted:
    """Check, package and submit a training job; returns its first status (PENDING or RUNNING)."""
    project = Path(spec.project_dir).resolve()
    command = list(command)
    script = check_command(command, project)
    if gpus < 0:
        raise MlplatError(f"--gpus {gpus} is negative", where="--gpus")
    if max_runtime_seconds <= 0:
        raise MlplatError("the max runtime must be positive", where="--max-runtime")
    instance_type = instance_type or default_instance_type(spec, gpus)
    warnings = check_spend(spec, instance_type, gpus)
    channels = check_data(dict(data or {}), (cwd or Path.cwd()).resolve())
    target = backend(spec, ctx)  # CapabilityNotSupported before anything is packaged

    price = training_price(spec, instance_type)
    name = new_job_name(ctx.clock())
    with tempfile.TemporaryDirectory(prefix="mlplat-source-") as tmp:
        bundle = source_service.bundle_source(project, allow_dirty=allow_dirty, dest_dir=tmp,
                                              exclude=(Path(spec.state_dir),))
        if script is not None and not _in_archive(bundle.archive, script):
            raise NotFound(f"the script {script} is not in the packaged project (git ignores it?)", where="command",
                           hint="commit it (check .gitignore): the job runs the project at its commit")
        code = lineage.code_version(project, exclude=(project / lineage.STATE_ROOT, Path(spec.state_dir)))
        code_doc = {"commit": bundle.commit, "branch": code.branch, "dirty": bundle.dirty,
                    "diff_sha256": hashlib.sha256(bundle.diff.encode("utf-8", "surrogateescape")).hexdigest()
                    if bundle.dirty and bundle.diff else None,
                    "repo_root": code.repo_root, "remote": code.remote}
        run_tags = {
            "mlplat.training.instance_type": instance_type,
            "mlplat.training.gpus": str(gpus),
            "mlplat.training.price_per_hour": repr(price),
            "mlplat.training.provider": spec.provider.kind,
            "mlplat.training.lock_sha256": bundle.lock_hash or "",
            **({"mlplat.training.spot": "true"} if spot else {}),
        }
        environment = {
            "MLPLAT_STACK": spec.name,
            training_env.JOB_ENV: name,
            training_env.CODE_ENV: json.dumps(code_doc, sort_keys=True),
            training_env.TAGS_ENV: json.dumps(run_tags, sort_keys=True),
            **({training_env.CONTROL_PLANE_ENV: spec.control_plane.url} if spec.control_plane.url else {}),
        }
        if spec.provider.kind == "local":  # the job's runs and versions land in this project's stack
            environment["MLPLAT_PROJECT_DIR"] = str(project)
        job = TrainingJobSpec(name=name, command=tuple(command), source=bundle, instance_type=instance_type,
                              gpus=gpus, data=channels, environment=environment,
                              max_runtime_seconds=max_runtime_seconds, spot=spot,
                              tags={**spec.tags.as_dict(), "team": spec.team, **run_tags})
        status = target.submit_training(job)
    return Submitted(status, job, warnings)


def _in_archive(archive: str, script: str) -> bool:
    wanted = Path(os.path.normpath(script)).as_posix()
    with tarfile.open(archive, "r:gz") as tar:
        return any(Path(os.path.normpath(n)).as_posix() == wanted for n in tar.getnames())


# --- status, logs, stop, list -----------------------------------------------------------------


def status(spec: StackSpec, ctx: Context, job_id: str) -> JobStatus:
    return backend(spec, ctx).training_status(job_id)


def logs(spec: StackSpec, ctx: Context, job_id: str, *, follow: bool = False) -> Iterator[str]:
    return backend(spec, ctx).training_logs(job_id, follow=follow)


def stop(spec: StackSpec, ctx: Context, job_id: str) -> JobStatus:
    return backend(spec, ctx).stop_training(job_id)


def jobs(spec: StackSpec, ctx: Context) -> list[JobStatus]:
    return backend(spec, ctx).training_jobs()


def cost_usd(job: JobStatus, now: float) -> float:
    """Price per hour × hours run so far (a running job counts until ``now``)."""
    if job.started is None or not job.price_per_hour:
        return 0.0
    return max(0.0, (job.ended if job.ended is not None else now) - job.started) / 3600 * job.price_per_hour


def cost_runs(spec: StackSpec, ctx: Context) -> list[Any]:
    """The stack's training jobs that ran, as cost lines' input (none where the provider cannot list them)."""
    from mlplat.errors import CapabilityNotSupported
    from mlplat.services.monitoring.cost import TrainingRun

    try:
        listed = jobs(spec, ctx)
    except CapabilityNotSupported:
        return []
    return [TrainingRun(job.job_id, spec.team, job.model or NO_MODEL, int(job.model_version or 0), spec.environment,
                        job.instance_type or default_instance_type(spec, 0),
                        job.price_per_hour if job.price_per_hour is not None
                        else training_price(spec, job.instance_type or ""), job.started, job.ended)
            for job in listed if job.started is not None]
