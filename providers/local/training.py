"""Training jobs on this machine: ``mlplat train`` runs the project's command as a subprocess."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mlplat.contracts.pipelines import JobStatus, TrainingJobSpec


class LocalTrainingJobs:
    """The training half of the local ``PipelineBackend`` (``providers/local/pipelines.py`` composes it)."""

    def __init__(self, spec: Any, ctx: Any) -> None:
        self.spec = spec
        self.ctx = ctx

    def submit_training(self, job: TrainingJobSpec) -> JobStatus:
        raise NotImplementedError

    def training_status(self, job_id: str) -> JobStatus:
        raise NotImplementedError

    def training_logs(self, job_id: str, *, follow: bool = False) -> Iterator[str]:
        raise NotImplementedError

    def stop_training(self, job_id: str) -> JobStatus:
        raise NotImplementedError
