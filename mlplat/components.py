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



# --- model registry -------------------------------------------------------------------


@dataclass(frozen=True)
class StoredVersion:
    """A model version as the provider's registry knows it."""

    name: str
    version: int
    source: str  # where the artifact files live (a local path for the local provider)
    run_id: str


class ModelRegistry(abc.ABC):
    """Model versions and their files in the provider's registry (MLflow, SageMaker, Vertex, Azure ML).

    Governance state (stages, gate reports, approvals, audit) lives in the platform
    database returned by :meth:`database`; the provider's own aliases only mirror it and
    are never trusted (``mlplat.services.registry`` compares them).
    """

    @abc.abstractmethod
    def database(self):
        """The stack's platform database (``mlplat.db.Database``), migrated."""

    @abc.abstractmethod
    def signing_key(self) -> bytes:
        """The stack's secret that seals manifests (HMAC-SHA256). Never logged."""

    @abc.abstractmethod
    def scratch_dir(self) -> "Any":
        """A new private (0700) local directory on the same filesystem as the store, for
        building a version's files before :meth:`store_version` moves them in."""

    @abc.abstractmethod
    def store_version(self, name: str, run_id: str, local_dir: "Any", *, tags: Mapping[str, str]) -> StoredVersion:
        """Move the files of ``local_dir`` into the store and create the next version of ``name``
        (the registered model is created if missing). Version numbers never repeat, also under
        concurrent callers. Blocking."""

    @abc.abstractmethod
    def local_dir(self, name: str, version: int, source: str) -> "Any":
        """A local directory holding the version's files (the store itself for local, a cache for clouds).
        The files are NOT verified here: callers verify them against the sealed manifest."""

    @abc.abstractmethod
    def set_alias(self, name: str, alias: str, version: int | None) -> None:
        """Point ``alias`` at ``version`` (``None`` removes it). Idempotent. A mirror for the provider's UI."""

    @abc.abstractmethod
    def get_alias(self, name: str, alias: str) -> int | None:
        """The version ``alias`` points at in the provider's registry, or ``None``."""

    @abc.abstractmethod
    def run_environment(self, run_id: str) -> dict[str, Any]:
        """The environment recorded by the run (``mlplat/environment.json``): python and packages."""

    @abc.abstractmethod
    def run_tags(self, run_id: str) -> dict[str, str]:
        """The tags of the run (``NotFound`` for an unknown run)."""

    def record_approval(self, name: str, version: int, *, state: str, environment: str,
                        decisions: list[dict[str, Any]], artifact_digest: str, gate_digest: str | None) -> None:
        """Mirror the platform's approval state of a version into the provider's registry after a decision
        (SageMaker's ``ModelApprovalStatus``). Called after the decision committed; the platform database
        stays the source of truth. Default: the provider's registry has no approval state to mirror."""
        return None


# --- delivery ---------------------------------------------------------------------------


@dataclass
class Package:
    """A container build context (and the image built from it, when an engine exists)."""

    context_dir: str
    digest: str  # sha256 over the context's files
    image: str | None = None  # image reference when built
    engine: str | None = None  # "buildah" or None


@dataclass
class Endpoint:
    """A running staging endpoint."""

    url: str
    kind: str  # "process" | "container"
    handle: str  # pid or container id
    port: int


class DeliveryPipeline(abc.ABC):
    """Packages a verified model version and runs it as a staging endpoint."""

    @abc.abstractmethod
    def package(self, name: str, version: int, model_dir: "Any", requirements: Sequence[str], *,
                artifact_digest: str) -> Package:
        """Write the build context (Containerfile, model files, pinned requirements, entrypoint) and,
        where a container engine exists, build the image. Idempotent: same inputs, same digest, no rebuild."""

    @abc.abstractmethod
    def start_endpoint(self, package: Package, name: str, version: int) -> Endpoint:
        """Start the model server for ``package`` on a free loopback port and wait until it is healthy."""

    @abc.abstractmethod
    def endpoint_alive(self, endpoint: Endpoint) -> bool:
        """Whether ``endpoint`` still runs (e.g. after the promoting process was killed and rerun)."""

    @abc.abstractmethod
    def stop_endpoint(self, endpoint: Endpoint) -> None:
        """Stop it. Idempotent: stopping a stopped endpoint is fine."""
