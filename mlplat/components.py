"""Capability contracts. A provider is a named bundle of implementations of these.

Each contract is a small ABC. Public methods state their semantics (blocking?
idempotent? which keys are always returned); providers implement them and pass
the same contract suite (tests/contract).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.stack import StackSpec


class Capability(str, Enum):
    PROVISIONER = "provisioner"
    TRACKING = "tracking"
    REGISTRY = "registry"
    DELIVERY = "delivery"
    SERVING = "serving"
    MONITORING = "monitoring"
    FEATURES = "features"
    COST = "cost"


# --- provisioning ------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedChange:
    """One line of a plan: what happens to one resource."""

    resource: str  # e.g. "mlplat:local:TrackingStore"
    name: str
    action: str  # "create" | "update" | "unchanged" | "delete"
    detail: str = ""


@dataclass
class Plan:
    stack: str
    changes: list[PlannedChange] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for change in self.changes:
            out[change.action] = out.get(change.action, 0) + 1
        return out


@dataclass(frozen=True)
class ResourceStatus:
    resource: str
    name: str
    exists: bool
    detail: str = ""


class Provisioner(abc.ABC):
    """Creates, inspects and removes a stack's platform."""

    @abc.abstractmethod
    def plan(self) -> Plan:
        """What ``apply`` would do. Read-only; never creates anything."""

    @abc.abstractmethod
    def apply(self, plan: Plan) -> Plan:
        """Carry out ``plan``. Idempotent: applying an unchanged stack changes nothing.
        Holds the stack lock for its duration; raises ``Conflict`` if another apply holds it."""

    @abc.abstractmethod
    def plan_destroy(self) -> Plan:
        """What ``destroy`` would delete. Read-only."""

    @abc.abstractmethod
    def destroy(self) -> Plan:
        """Remove everything ``apply`` created. Holds the stack lock."""

    @abc.abstractmethod
    def status(self) -> list[ResourceStatus]:
        """What exists now, resource by resource."""

    def planned_resources(self) -> list[dict[str, Any]]:
        """The resources this stack declares, as ``{type, name, props}`` dicts, for the policy pack."""
        return []


# --- experiment tracking ----------------------------------------------------------------


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


class ExperimentTracker(abc.ABC):
    """Experiments, runs, parameters, metrics, tags and artifacts."""

    @abc.abstractmethod
    def start_run(self, experiment: str, *, name: str | None, tags: Mapping[str, str]) -> str:
        """Create a RUNNING run in ``experiment`` (created if missing) and return its id."""

    @abc.abstractmethod
    def log_batch(
        self,
        run_id: str,
        *,
        params: Mapping[str, str] = (),
        metrics: Sequence[MetricPoint] = (),
        tags: Mapping[str, str] = (),
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

    @abc.abstractmethod
    def metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        """Every logged point of one metric, in step order."""

    @abc.abstractmethod
    def download_artifacts(self, run_id: str, path: str, dst: str) -> str:
        """Fetch an artifact file or folder to ``dst``; return the local path."""

    def activate(self, run_id: str) -> Any:  # pragma: no cover - provider specific
        """Make ``run_id`` the framework-level active run so autologging lands in it.
        Returns a handle passed back to :meth:`deactivate`."""
        return None

    def deactivate(self, handle: Any, status: str) -> None:  # pragma: no cover
        return None


# --- later capabilities --------------------------------------------------------------
# Registry, delivery, serving, monitoring, features and cost contracts are defined
# next to their services as those land (mlplat/services/*); providers register
# factories for them under the Capability names above.

