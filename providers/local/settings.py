"""The ``mlplat:provider`` settings of a local stack (no dependency beyond mlplat's own)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from mlplat.contracts import ProviderSettings
from mlplat_providers.local.layout import StateLayout


class LocalProviderSpec(ProviderSettings):
    kind: Literal["local"] = Field(description="Runs the whole platform on this machine.")
    state_dir: str | None = Field(
        None,
        description="Where the stack's stores live: a path inside the project (relative to its root), or an "
        "absolute path to a directory that does not exist yet (`up` creates it). Default: .mlplat/<stack>.",
        examples=[".mlplat/dev"],
    )

    def configured_state_dir(self) -> str | None:
        return self.state_dir

    def metering_store(self, state_dir: Path) -> Path | None:
        return StateLayout(state_dir).platform_db
