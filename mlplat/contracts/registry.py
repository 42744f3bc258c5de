"""``Capability.REGISTRY``: model versions and their files in the provider's registry."""
from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat.contracts.base import Contract

if TYPE_CHECKING:
    from mlplat.db import Database


@dataclass(frozen=True)
class StoredVersion:
    """A model version as the provider's registry knows it."""

    name: str
    version: int
    source: str  # where the artifact files live (a local path for the local provider)
    run_id: str


@dataclass(frozen=True)
class SharedVersion:
    """A model version as a registry shared across teams holds it after :meth:`ModelRegistry.share`."""

    name: str  # the platform's model name
    version: int  # the stack's version
    registry: str  # the shared registry
    shared_name: str  # the model's name there
    shared_version: str  # its version there
    asset_id: str  # the shared version's id in the provider's terms


class ModelRegistry(Contract):
    """Model versions and their files in the provider's registry (MLflow, SageMaker, Vertex, Azure ML).

    Governance state (stages, gate reports, approvals, audit) lives in the platform
    database returned by :meth:`database`; the provider's own aliases only mirror it and
    are never trusted (``mlplat.services.registry`` compares them).
    """

    @abc.abstractmethod
    def database(self) -> Database:
        """The stack's platform database, migrated."""

    @abc.abstractmethod
    def signing_key(self) -> bytes:
        """The stack's secret that seals manifests (HMAC-SHA256). Never logged."""

    @abc.abstractmethod
    def scratch_dir(self) -> Path:
        """A new private (0700) local directory on the same filesystem as the store, for
        building a version's files before :meth:`store_version` moves them in."""

    @abc.abstractmethod
    def store_version(self, name: str, run_id: str, local_dir: Path, *, tags: Mapping[str, str]) -> StoredVersion:
        """Move the files of ``local_dir`` into the store and create the next version of ``name``
        (the registered model is created if missing). Version numbers never repeat, also under
        concurrent callers. Blocking."""

    @abc.abstractmethod
    def local_dir(self, name: str, version: int, source: str) -> Path:
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

    def share(self, name: str, version: int, *, registry: str | None,
              evidence: Mapping[str, Any]) -> SharedVersion:
        """Copy ``version`` of ``name`` into a registry shared across teams (``registry``, else the stack's
        default), with its lineage; the caller (``mlplat.services.sharing``) has already checked that the
        platform's rules let the version leave the team (``evidence``: the deployability evidence).
        Idempotent: sharing a version already shared answers the shared version. Optional: the default
        raises ``CapabilityNotSupported``."""
        self._unsupported("sharing a model version to a shared registry",
                          hint="use a stack on a provider with shared registries (azure)")

    def record_approval(self, name: str, version: int, *, state: str, environment: str,
                        decisions: list[dict[str, Any]], artifact_digest: str, gate_digest: str | None) -> None:
        """Mirror the platform's approval state of a version into the provider's registry after a decision
        (SageMaker's ``ModelApprovalStatus``). Called after the decision committed; the platform database
        stays the source of truth. Default: the provider's registry has no approval state to mirror."""
        return None
