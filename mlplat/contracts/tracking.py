"""``Capability.TRACKING``: experiments, runs, parameters, metrics, tags and artifacts."""
from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mlplat.contracts.base import Contract

NO_VALUES: Mapping[str, str] = MappingProxyType({})


@dataclass
class RunRecord:
    """A tracked run, provider-neutral. ``metrics`` holds the latest value of each metric."""

    run_id: str
    experiment: str
    name: str
    status: str  # RUNNING | FINISHED | FAILED | KILLED
    user: str
    start_time: float | None
    end_time: float | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifact_uri: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class MetricPoint:
    key: str
    value: float
    step: int
    timestamp_ms: int


class ExperimentTracker(Contract):
    """Experiments, runs, parameters, metrics, tags and artifacts."""

    @abc.abstractmethod
    def start_run(self, experiment: str, *, name: str | None, tags: Mapping[str, str]) -> str:
        """Create a RUNNING run in ``experiment`` (created if missing) and return its id."""

    @abc.abstractmethod
    def log_batch(
        self,
        run_id: str,
        *,
        params: Mapping[str, str] = NO_VALUES,
        metrics: Sequence[MetricPoint] = (),
        tags: Mapping[str, str] = NO_VALUES,
    ) -> None:
        """Write many values in as few round trips as the backend allows. Blocking."""

    @abc.abstractmethod
    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        """Copy a file into the run's artifacts."""

    @abc.abstractmethod
    def end_run(self, run_id: str, status: str) -> None:
        """Mark the run FINISHED, FAILED or KILLED. Idempotent."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunRecord:
        """The run, or ``NotFound`` naming the id."""

    @abc.abstractmethod
    def list_runs(self, *, experiment: str | None = None, limit: int = 50) -> list[RunRecord]:
        """Most recent first."""

    # How many recent runs a prefix is looked up among (a full id is looked up directly).
    PREFIX_SCAN = 10_000

    def resolve_run(self, ref: str) -> RunRecord:
        """The run whose id is ``ref`` or starts with it, as git takes a commit's unique prefix:
        the one place a run id typed by a person is turned into a run. ``NotFound`` when nothing
        matches; :class:`~mlplat.errors.Ambiguous` (listing the candidates) when several do."""
        from mlplat.errors import Ambiguous, NotFound

        ref = ref.strip()
        if not ref:
            raise NotFound("no run id given", hint="`mlplat runs list` shows run ids")
        matches = [r for r in self.list_runs(limit=self.PREFIX_SCAN) if r.run_id.startswith(ref)]
        exact = [r for r in matches if r.run_id == ref]
        if exact:
            return exact[0]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            return self.get_run(ref)  # an id older than the scanned runs, or NotFound naming it
        shown = matches[:10]
        listing = "; ".join(f"{r.run_id} ({r.experiment}/{r.name})" for r in shown)
        more = f" and {len(matches) - len(shown)} more" if len(matches) > len(shown) else ""
        raise Ambiguous(f"run id prefix '{ref}' matches {len(matches)} runs: {listing}{more}",
                        hint="give more characters of the run id", candidates=[r.run_id for r in matches])

    @abc.abstractmethod
    def metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        """Every logged point of one metric, in step order."""

    @abc.abstractmethod
    def download_artifacts(self, run_id: str, path: str, dst: str) -> str:
        """Fetch an artifact file or folder to ``dst``; return the local path."""

    def activate(self, run_id: str) -> Any:  # pragma: no cover - provider specific
        """Make ``run_id`` the framework-level active run so autologging lands in it.
        Returns a handle passed back to :meth:`deactivate`. Default: the backend has no
        framework-level run, so autologging has nowhere to land and nothing is done."""
        return None

    def deactivate(self, handle: Any, status: str) -> None:  # pragma: no cover
        """End what :meth:`activate` started. Default: nothing was started."""
        return None

    def ui_command(self, *, host: str, port: int) -> list[str]:
        """Optional. The command line (argv) of a web UI over this tracking store, listening on
        ``host:port``; ``mlplat ui`` replaces its own process with it. Nothing is started here."""
        self._unsupported("tracking UI", hint="open the stack's tracking server in its cloud console")
