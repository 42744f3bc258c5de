"""``Capability.PIPELINES``: training jobs and step pipelines on a provider's compute.

A *training job* runs one command (``python train.py ...``) from the project packaged at its
git commit, with the run's requirements lock, on the provider's compute, and is tracked as a
run. A *pipeline* is an ordered graph of steps declared in Python (``mlplat.pipelines``); the
provider-neutral form handed to a backend is :class:`PipelineDefinition`. Steps pass outputs
by name (``"<step>.<output>"``); a step's cache key covers its code and its inputs.

The local provider runs jobs and steps as subprocesses; a cloud provider maps them onto its
training jobs and pipeline service (SageMaker training jobs and Pipelines, Vertex CustomJob and
Pipelines, Azure ML command jobs and pipelines).
"""
from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from mlplat.contracts.base import Contract

JobState = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"]
TERMINAL_STATES: frozenset[str] = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
StepKind = Literal["command", "evaluate", "register", "promote"]


@dataclass(frozen=True)
class SourceBundle:
    """The project packaged at a commit: an archive of the tracked files, plus the diff when dirty."""

    archive: str  # path of a .tar.gz of the tree at ``commit`` (plus the diff applied when ``dirty``)
    commit: str
    dirty: bool = False
    diff: str | None = None  # ``git diff HEAD`` recorded when built with --allow-dirty
    requirements_lock: str | None = None  # path of the lock the job's environment is built from
    lock_hash: str | None = None  # sha256 of that lock: environments are cached under it


@dataclass(frozen=True)
class TrainingJobSpec:
    """What ``mlplat train`` submits."""

    name: str  # unique per stack: the job id the provider uses (and the run's name)
    command: tuple[str, ...]  # e.g. ("python", "train.py", "--epochs", "3"), run from the bundle's root
    source: SourceBundle
    instance_type: str | None = None
    gpus: int = 0
    data: dict[str, str] = field(default_factory=dict)  # channel name -> URI, exposed as MLPLAT_DATA_<NAME>
    environment: dict[str, str] = field(default_factory=dict)  # extra variables (the stack, control plane, run tags)
    max_runtime_seconds: int = 86_400
    spot: bool = False
    tags: dict[str, str] = field(default_factory=dict)  # the stack's cost tags plus model/team


@dataclass(frozen=True)
class JobStatus:
    """A training job as the provider reports it."""

    job_id: str
    state: JobState
    started: float | None = None
    ended: float | None = None
    instance_type: str | None = None
    message: str = ""  # why it failed or stopped
    run_id: str | None = None  # the tracked run the job created
    model_version: int | None = None  # the version registered when the script called run.log_model
    model: str | None = None  # the registered model of ``model_version``
    price_per_hour: float | None = None  # the instance type's price when submitted (cost lines read it)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class StepDefinition:
    """One step of a pipeline, provider-neutral."""

    name: str
    kind: StepKind = "command"
    command: tuple[str, ...] = ()  # for "command" steps; platform steps run mlplat's own commands
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> "<step>.<output>" or a data URI
    outputs: tuple[str, ...] = ()  # names of the files/directories the step writes
    depends_on: tuple[str, ...] = ()  # explicit ordering beyond the data edges
    retries: int = 0
    cache: bool = True
    instance_type: str | None = None
    params: dict[str, str] = field(default_factory=dict)  # platform steps: model, target stage, ...


@dataclass(frozen=True)
class PipelineDefinition:
    """A pipeline as a backend receives it: validated (names unique, references resolve, no cycle)."""

    name: str
    steps: tuple[StepDefinition, ...]
    model: str | None = None  # the registered model the pipeline produces (retraining looks it up by this)
    schedule: str | None = None  # a 5-field cron expression, UTC
    source: SourceBundle | None = None
    environment: dict[str, str] = field(default_factory=dict)  # variables of every command step (e.g. retraining's data)


@dataclass(frozen=True)
class StepRun:
    name: str
    state: JobState | Literal["SKIPPED", "CACHED"]
    attempts: int = 0
    started: float | None = None
    ended: float | None = None
    message: str = ""
    outputs: dict[str, str] = field(default_factory=dict)  # output name -> URI


@dataclass(frozen=True)
class PipelineRunStatus:
    run_id: str
    pipeline: str
    state: JobState
    steps: tuple[StepRun, ...] = ()
    started: float | None = None
    ended: float | None = None
    message: str = ""  # names the failing step when FAILED


@dataclass(frozen=True)
class ScheduleInfo:
    pipeline: str
    cron: str
    target: str  # where the schedule lives: a local schedule file, an EventBridge Scheduler ARN, ...
    next_run: float | None = None


class PipelineBackend(Contract):
    """Training jobs and pipelines on a provider's compute."""

    # --- training jobs ------------------------------------------------------------------------

    @abc.abstractmethod
    def submit_training(self, job: TrainingJobSpec) -> JobStatus:
        """Start ``job``; returns at once with its first status (PENDING or RUNNING)."""

    @abc.abstractmethod
    def training_status(self, job_id: str) -> JobStatus:
        """The job's current status; ``NotFound`` for an unknown id."""

    @abc.abstractmethod
    def training_logs(self, job_id: str, *, follow: bool = False) -> Iterator[str]:
        """The job's log lines so far (``follow``: until it ends)."""

    @abc.abstractmethod
    def stop_training(self, job_id: str) -> JobStatus:
        """Stop a running job (no-op on a finished one); returns its status."""

    def training_jobs(self) -> list[JobStatus]:
        """Every training job of the stack, newest first. Optional (``mlplat train list`` and the
        training lines of ``mlplat cost report`` read it)."""
        self._unsupported("listing training jobs")

    # --- pipelines ----------------------------------------------------------------------------

    @abc.abstractmethod
    def run_pipeline(self, pipeline: PipelineDefinition, *, resume: str | None = None) -> PipelineRunStatus:
        """Run ``pipeline`` (``resume``: the run id whose completed steps are kept)."""

    @abc.abstractmethod
    def pipeline_status(self, run_id: str) -> PipelineRunStatus:
        """A pipeline run's status with each step's; ``NotFound`` for an unknown id."""

    @abc.abstractmethod
    def pipeline_runs(self, pipeline: str | None = None) -> list[PipelineRunStatus]:
        """Runs, newest first (of one pipeline when named)."""

    # --- optional operations ------------------------------------------------------------------

    def schedule_pipeline(self, pipeline: PipelineDefinition, cron: str) -> ScheduleInfo:
        """Run ``pipeline`` on ``cron`` (UTC). Optional."""
        self._unsupported("pipeline schedules")

    def compile_pipeline(self, pipeline: PipelineDefinition) -> dict[str, Any]:
        """The provider's own definition of ``pipeline`` (e.g. a SageMaker Pipeline definition JSON). Optional."""
        self._unsupported("pipeline compilation", hint="this provider runs pipelines itself")
