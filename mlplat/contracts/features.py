"""``Capability.FEATURES``: the feature store a provider implements.

The client (:mod:`mlplat.features.client`) validates user input, resolves feature
references and records lineage; a backend only stores and computes. Every method
that takes timestamps takes integer microseconds since the epoch, UTC.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlplat.contracts.base import Contract
from mlplat.features.definitions import Definitions
from mlplat.features.plan import FeaturePlan


@dataclass(frozen=True)
class ViewSelection:
    """Features of one registered view version to fetch, and the column names they come back under."""

    document: Mapping[str, Any]  # canonical registered definition (FeatureView.to_dict())
    features: tuple[str, ...]
    columns: tuple[str, ...]

    @property
    def name(self) -> str:
        return str(self.document["name"])

    @property
    def version(self) -> int:
        return int(self.document["version"])

    @property
    def join_keys(self) -> list[str]:
        return [e["join_key"] for e in self.document["entities"]]


class FeatureStoreBackend(Contract):
    """Registry of definitions, offline point-in-time retrieval, online store."""

    # --- registry -------------------------------------------------------------------------

    @abc.abstractmethod
    def registered_views(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Every registered ``(name, version)`` → canonical definition. Read-only."""

    @abc.abstractmethod
    def registered_entities(self) -> dict[str, dict[str, Any]]:
        """Every registered entity name → canonical definition. Read-only."""

    @abc.abstractmethod
    def plan(self, definitions: Definitions) -> FeaturePlan:
        """Validate every view's source against its declared schema and diff with the registry.
        Read-only: raises ``FeatureDataError``/``FeatureDefinitionError`` before anything is written."""

    @abc.abstractmethod
    def apply(self, definitions: Definitions, plan: FeaturePlan, *, user: str) -> FeaturePlan:
        """Register the plan's creates and updates in one transaction. Refuses (``BreakingChange``)
        a breaking update to a version a production model uses. Idempotent."""

    @abc.abstractmethod
    def production_users(self, name: str, version: int) -> list[str]:
        """Production model versions whose training run read this view version (empty if none, or
        if the registry is not there yet)."""

    @abc.abstractmethod
    def record_usage(self, run_id: str, views: Sequence[ViewSelection]) -> None:
        """Remember that tracked run ``run_id`` read these view versions. Idempotent."""

    @abc.abstractmethod
    def usage(self, name: str | None = None) -> list[dict[str, Any]]:
        """Runs that read views: ``{run_id, view, version, used_at}``, newest first."""

    # --- offline ---------------------------------------------------------------------------

    @abc.abstractmethod
    def historical(self, entities: Any, selections: Sequence[ViewSelection]) -> Any:
        """Point-in-time join. ``entities`` is a pyarrow Table with the join keys, ``__t`` (event
        time, µs UTC) and ``__row`` (0..n-1). Returns a pyarrow Table with ``__row`` and every
        selection's columns, one row per entity row in ``__row`` order, nulls where no value lies
        within the TTL."""

    # --- online ----------------------------------------------------------------------------

    @abc.abstractmethod
    def materialize(self, selections: Sequence[ViewSelection], start_us: int, end_us: int, *,
                    user: str) -> list[dict[str, Any]]:
        """Write, per entity key, the latest row with ``start <= event time <= end`` into the online
        store, never replacing a newer value. Returns ``{view, version, rows}`` per view. Idempotent."""

    @abc.abstractmethod
    def online(self, selections: Sequence[ViewSelection], keys: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """For each entity key mapping, ``{column: value}`` of every selection (None where absent)."""

    @abc.abstractmethod
    def materializations(self, name: str | None = None) -> list[dict[str, Any]]:
        """Recorded materializations, newest first."""

    @abc.abstractmethod
    def online_keys(self, name: str, version: int, limit: int, seed: int) -> list[dict[str, Any]]:
        """A reproducible random sample of entity keys present in the online store for a view version."""

    @abc.abstractmethod
    def offline_keys(self, name: str, version: int, limit: int, seed: int) -> list[dict[str, Any]]:
        """A reproducible random sample of distinct entity keys present in a view version's source."""
