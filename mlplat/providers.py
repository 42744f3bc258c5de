"""Provider discovery: a short name → provider bundle table, filled from entry points.

Providers register in the ``mlplat.providers.v1`` entry-point group (the ``v1``
is the contract version: a breaking change to the contracts gets a new group).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Callable

from mlplat.components import Capability
from mlplat.errors import CapabilityNotSupported, MlplatError, StackError

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.stack import StackSpec

ENTRY_POINT_GROUP = "mlplat.providers.v1"
Factory = Callable[["StackSpec", "Context"], Any]


@dataclass
class ProviderBundle:
    """A named bundle of capability implementations.

    ``factories`` maps a :class:`Capability` to a callable ``(spec, ctx) -> impl``;
    a missing entry means the provider does not offer that capability.
    """

    name: str
    description: str
    factories: dict[Capability, Factory] = field(default_factory=dict)
    unavailable_hint: str | None = None

    def supports(self, capability: Capability) -> bool:
        return capability in self.factories

    def get(self, capability: Capability, spec: "StackSpec", ctx: "Context") -> Any:
        factory = self.factories.get(capability)
        if factory is None:
            raise CapabilityNotSupported(self.name, capability.value, hint=self.unavailable_hint)
        return factory(spec, ctx)


_registry: dict[str, ProviderBundle] | None = None


def reset() -> None:
    """Forget discovered providers (tests register their own)."""
    global _registry
    _registry = None


def register(bundle: ProviderBundle) -> None:
    _load()[bundle.name] = bundle


def _load() -> dict[str, ProviderBundle]:
    global _registry
    if _registry is None:
        _registry = {}
        for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                bundle = entry.load()
            except ImportError as exc:
                raise MlplatError(
                    f"provider '{entry.name}' ({entry.value}) failed to import: {exc}",
                    hint="reinstall mlplat (pip install -e .) or the provider's package",
                ) from exc
            if not isinstance(bundle, ProviderBundle):
                raise MlplatError(f"entry point {entry.value} is not a ProviderBundle")
            _registry[entry.name] = bundle
    return _registry


def names() -> list[str]:
    return sorted(_load())


def get(name: str) -> ProviderBundle:
    table = _load()
    if name not in table:
        near = difflib.get_close_matches(name, list(table), n=1)
        raise StackError(
            f"unknown provider '{name}'",
            hint=(f"did you mean '{near[0]}'? " if near else "") + f"installed providers: {', '.join(sorted(table))}",
        )
    return table[name]


def capability(spec: "StackSpec", ctx: "Context", cap: Capability) -> Any:
    """The stack's implementation of ``cap`` (raises ``CapabilityNotSupported``)."""
    return get(spec.provider.kind).get(cap, spec, ctx)
