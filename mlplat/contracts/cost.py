"""``Capability.COST``: metered usage of a stack's serving, and what the cloud billed."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from mlplat.contracts.base import Contract


@dataclass(frozen=True)
class Deployment:
    """A version serving in an environment from ``started`` until ``ended`` (``None``: still serving)."""

    model: str
    version: int
    environment: str
    started: float
    ended: float | None = None
    instance_type: str | None = None
    instances: int = 1
    price_per_hour: float | None = None  # overrides the stack's price table
    team: str = ""
    variant: str = ""


@dataclass(frozen=True)
class Usage:
    """Predictions served and seconds spent serving them by one version in one environment."""

    model: str
    version: int
    environment: str
    predictions: int
    busy_seconds: float
    team: str = ""


class CostSource(Contract):
    """Metered usage of a stack's serving: deployments with instance types, and traffic."""

    @abc.abstractmethod
    def deployments(self, start: float, end: float) -> list[Deployment]:
        """Deployments alive at any time in ``[start, end)``."""

    @abc.abstractmethod
    def usage(self, start: float, end: float) -> list[Usage]:
        """Predictions served and busy seconds per (model, version, environment) in ``[start, end)``."""

    # --- optional operations ------------------------------------------------------------------

    def billed(self, start: float, end: float) -> dict[str, Any]:
        """What the cloud charged the stack's team for ``[start, end)``, to check the metered estimate
        against: ``{source, metric, period, by_team}`` with ``by_team`` mapping team → USD. Reads the
        cloud's billing API, which may charge per call.

        Optional: a provider with no bill to read (it meters usage itself) raises ``CapabilityNotSupported``."""
        self._unsupported("billed cost", hint="this provider meters usage itself and has no bill to read")
