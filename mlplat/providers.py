"""Provider discovery: a short name → provider bundle table, filled from entry points.

Providers register in the ``mlplat.providers.v1`` entry-point group (the ``v1``
is the contract version: a breaking change to the contracts gets a new group).
A bundle names its stack settings model and one factory per capability it offers;
:meth:`ProviderBundle.get` hands out the capability's implementation, typed as the
capability's contract and checked against it.
"""
from __future__ import annotations

import difflib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal, overload

from mlplat.contracts import (
    CONTRACTS,
    Capability,
    Contract,
    CostSource,
    DeliveryPipeline,
    EndpointDeployer,
    ExperimentTracker,
    FeatureStoreBackend,
    ModelRegistry,
    Monitor,
    PipelineBackend,
    ProviderSettings,
    Provisioner,
)
from mlplat.errors import CapabilityNotSupported, MlplatError, StackError

ENTRY_POINT_GROUP = "mlplat.providers.v1"

# A stack's provider settings are validated with the model its provider declares, so the stack model
# (mlplat.stack) looks providers up here: this module sits below it and below the context, and names
# their types only in words. Everywhere here ``spec`` is a ``mlplat.stack.StackSpec`` and ``ctx`` a
# ``mlplat.context.Context``.
_Spec = Any
_Ctx = Any
Factory = Callable[[_Spec, _Ctx], Contract]


@dataclass
class ProviderBundle:
    """A named bundle of capability implementations.

    ``factories`` maps a :class:`Capability` to a callable ``(spec, ctx) -> impl`` whose result
    is an instance of the capability's contract (``mlplat.contracts.CONTRACTS``); a missing entry
    means the provider does not offer that capability. ``settings_model`` validates the stack's
    ``mlplat:provider`` mapping; its ``kind`` field is ``Literal[<name>]``, and its module imports
    no cloud SDK, so stacks validate where only mlplat is installed.
    """

    name: str
    description: str
    factories: dict[Capability, Factory] = field(default_factory=dict)
    unavailable_hint: str | None = None
    settings_model: type[ProviderSettings] = field(kw_only=True)

    def __post_init__(self) -> None:
        if not (isinstance(self.settings_model, type) and issubclass(self.settings_model, ProviderSettings)):
            raise MlplatError(f"provider '{self.name}': settings_model {self.settings_model!r} is not a "
                              "ProviderSettings subclass", hint="declare it as class X(mlplat.contracts.ProviderSettings)")
        kind = self.settings_model.model_fields["kind"].annotation
        if typing.get_origin(kind) is not Literal or typing.get_args(kind) != (self.name,):
            raise MlplatError(f"provider '{self.name}': {self.settings_model.__name__}.kind must be "
                              f"Literal['{self.name}'], not {kind!r}",
                              hint="a stack names its provider by kind; the settings model must accept exactly that")

    def supports(self, capability: Capability) -> bool:
        return capability in self.factories

    @overload
    def get(self, capability: Literal[Capability.PROVISIONER], spec: _Spec, ctx: _Ctx) -> Provisioner: ...
    @overload
    def get(self, capability: Literal[Capability.TRACKING], spec: _Spec, ctx: _Ctx) -> ExperimentTracker: ...
    @overload
    def get(self, capability: Literal[Capability.REGISTRY], spec: _Spec, ctx: _Ctx) -> ModelRegistry: ...
    @overload
    def get(self, capability: Literal[Capability.DELIVERY], spec: _Spec, ctx: _Ctx) -> DeliveryPipeline: ...
    @overload
    def get(self, capability: Literal[Capability.SERVING], spec: _Spec, ctx: _Ctx) -> EndpointDeployer: ...
    @overload
    def get(self, capability: Literal[Capability.MONITORING], spec: _Spec, ctx: _Ctx) -> Monitor: ...
    @overload
    def get(self, capability: Literal[Capability.FEATURES], spec: _Spec, ctx: _Ctx) -> FeatureStoreBackend: ...
    @overload
    def get(self, capability: Literal[Capability.COST], spec: _Spec, ctx: _Ctx) -> CostSource: ...
    @overload
    def get(self, capability: Literal[Capability.PIPELINES], spec: _Spec, ctx: _Ctx) -> PipelineBackend: ...
    @overload
    def get(self, capability: Capability, spec: _Spec, ctx: _Ctx) -> Contract: ...

    def get(self, capability: Capability, spec: _Spec, ctx: _Ctx) -> Contract:
        """The provider's implementation of ``capability`` for ``spec``: an instance of the capability's
        contract. ``CapabilityNotSupported`` if the provider does not offer it; ``MlplatError`` naming the
        provider and the capability if its factory returns anything else."""
        factory = self.factories.get(capability)
        if factory is None:
            raise CapabilityNotSupported(self.name, capability.value, hint=self.unavailable_hint)
        impl = factory(spec, ctx)
        contract = CONTRACTS[capability]
        if not isinstance(impl, contract):
            raise MlplatError(
                f"provider '{self.name}' returned {type(impl).__module__}.{type(impl).__qualname__} for capability "
                f"'{capability.value}', which is not a {contract.__module__}.{contract.__qualname__}",
                hint=f"the provider's factory for {capability.name} must return an implementation of "
                     f"{contract.__qualname__}; fix or reinstall the provider's package",
            )
        impl.provider_name = self.name
        return impl


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
        table: dict[str, ProviderBundle] = {}
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
            if bundle.name != entry.name:
                raise MlplatError(f"entry point '{entry.name}' ({entry.value}) holds the bundle of provider "
                                  f"'{bundle.name}'", hint="name the entry point after the bundle's name")
            table[entry.name] = bundle
        _registry = table
    return _registry


def names() -> list[str]:
    """Installed providers, sorted by name."""
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


def settings_models() -> dict[str, type[ProviderSettings]]:
    """Each installed provider's stack settings model, by provider name (sorted)."""
    table = _load()
    return {name: table[name].settings_model for name in sorted(table)}


@overload
def capability(spec: _Spec, ctx: _Ctx, cap: Literal[Capability.PROVISIONER]) -> Provisioner: ...
@overload
def capability(spec: _Spec, ctx: _Ctx, cap: Literal[Capability.TRACKING]) -> ExperimentTracker: ...
@overload
def capability(spec: _Spec, ctx: _Ctx, cap: Literal[Capability.REGISTRY]) -> ModelRegistry: ...
@overload
def capability(spec: _Spec, ctx: _Ctx, cap: Literal[Capability.DELIVERY]) -> DeliveryPipeline: ...
@overload
def capability(spec: _Spec, ctx: _Ctx, cap: Literal[Capability.SERVING]) -> EndpointDeployer: ...
@overload
def capability(spec: _Spec, ctx: _Ctx, cap: Literal[Capability.MONITORING]) -> Monitor: ...
@overload
def capability(spec: _Spec, ctx: _Ctx, cap: Literal[Capability.FEATURES]) -> FeatureStoreBackend: ...
@overload
def capability(spec: _Spec, ctx: _Ctx, cap: Literal[Capability.COST]) -> CostSource: ...
@overload
def capability(spec: _Spec, ctx: _Ctx, cap: Literal[Capability.PIPELINES]) -> PipelineBackend: ...
@overload
def capability(spec: _Spec, ctx: _Ctx, cap: Capability) -> Contract: ...


def capability(spec: _Spec, ctx: _Ctx, cap: Capability) -> Contract:
    """The stack's implementation of ``cap``, typed as its contract (raises ``CapabilityNotSupported``)."""
    return get(spec.provider.kind).get(cap, spec, ctx)
