"""A provider's own stack settings: the model of ``mlplat:provider`` in a stack file.

Each provider declares a subclass (its ``kind`` a ``Literal`` of the provider's name) in a
module that imports no cloud SDK, and names it as its bundle's ``settings_model``;
``StackSpec`` validates ``mlplat:provider`` with the model of the provider named by ``kind``,
and ``mlplat stack schema`` prints every installed provider's model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# The stack file's conventions: unknown keys refused, camelCase keys in YAML and snake_case in
# Python, values frozen once loaded. ``mlplat.stack`` uses the same for its own sections.
SETTINGS_CONFIG = ConfigDict(
    extra="forbid",
    alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
    populate_by_name=True,
    frozen=True,
)


class ProviderSettings(BaseModel):
    """Base of every provider's settings model. Fields need a description (the stack schema shows it)."""

    model_config = SETTINGS_CONFIG

    kind: str = Field(description="The provider: the name it is installed under (`mlplat providers`).")

    def configured_state_dir(self) -> str | None:
        """The ``stateDir`` the stack file sets, for a provider that lets a stack choose where its local
        stores live. ``StackSpec.state_dir`` resolves it (default ``.mlplat/<stack>``) and the loader
        checks it stays inside the project or is absolute. Default: the provider has no such setting."""
        return None

    def stack_problems(self, spec: Any) -> list[tuple[str, str]]:
        """What the provider cannot do with the rest of the validated stack ``spec`` (a ``StackSpec``), as
        (dotted key under ``mlplat:``, reason) pairs: a setting the cloud would refuse given another one,
        such as a canary schedule the configured fleet cannot run. Loading the stack (``mlplat stack
        validate`` and every command) refuses it with them, naming each key's line. Default: none."""
        return []

    def metering_store(self, state_dir: Path) -> Path | None:
        """The file in which the provider meters a stack's usage on this machine, given the stack's
        resolved state directory; ``mlplat cost report --all-stacks`` reports the stacks whose file exists,
        with no cloud call. Default: ``None``, the provider reads usage from its cloud."""
        return None
