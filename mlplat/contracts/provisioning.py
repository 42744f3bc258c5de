"""``Capability.PROVISIONER``: create, inspect and remove a stack's platform."""
from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlplat.contracts.base import Contract


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


class Provisioner(Contract):
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

    # --- optional operations ------------------------------------------------------------------

    def set_lock_wait(self, seconds: float) -> None:
        """Let :meth:`apply` and :meth:`destroy` wait up to ``seconds`` for another operation that
        holds the stack's lock before they raise ``Conflict`` (by default they do not wait).

        Optional: a provider whose stacks are locked by something else (a Pulumi backend)
        raises ``CapabilityNotSupported``."""
        self._unsupported("waiting for the stack lock",
                          hint="drop --lock-wait: this provider's stacks are locked by their Pulumi backend")

    def program(self) -> Callable[[], None]:
        """The stack's Pulumi program: a callable that declares the stack's resources when Pulumi
        runs it (inline through the Automation API, under mocks, or as ``mlplat/pulumi_main.py``).
        Building it creates nothing.

        Optional: a provider that provisions without Pulumi raises ``CapabilityNotSupported``."""
        self._unsupported("Pulumi program")
