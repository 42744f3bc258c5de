"""Where the local provider keeps a stack's stores, under the stack's state directory."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateLayout:
    root: Path

    @property
    def lock(self) -> Path:
        # beside the state dir, so it survives `destroy` and `up` can lock before creating it
        return self.root.parent / f".{self.root.name}.lock"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def platform_db(self) -> Path:
        return self.root / "platform.db"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def signing_key(self) -> Path:
        return self.keys / "platform.key"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def exists(self) -> bool:
        return self.platform_db.is_file() and self.mlflow_db.is_file()
