"""Where the local provider keeps a stack's stores, under the stack's state directory."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MARKER = ".mlplat-state.json"
MARKER_KIND = "mlplat-local-state"


def _sqlite(name: str) -> tuple[str, ...]:
    return (name, f"{name}-wal", f"{name}-shm", f"{name}-journal")


# The top-level entries of a state directory that the platform itself creates, at `up` or at run
# time. `up` copies this list into the ownership marker and `destroy` removes what the marker lists
# and nothing else, so a platform component that starts writing a new top-level entry adds it here.
PLATFORM_ENTRIES: tuple[str, ...] = (
    *_sqlite("platform.db"), *_sqlite("mlflow.db"), "mlflow.db.partial", *_sqlite("online.db"),
    "artifacts", "keys", "tmp", "locks", "monitoring", "features", "packages", "audit-head.json",
    "tracking-server", "cache", "audit-heads", "training", "pipelines",
)


@dataclass(frozen=True)
class StateLayout:
    root: Path

    @property
    def lock(self) -> Path:
        # beside the state dir, so it survives `destroy` and `up` can lock before creating it
        return self.root.parent / f".{self.root.name}.lock"

    @property
    def marker(self) -> Path:
        """The ownership marker `up` writes: proof that the platform created (or adopted empty) ``root``."""
        return self.root / MARKER

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

    @property
    def cache(self) -> Path:
        """Local copies of files kept elsewhere (a tracking server's model versions): safe to delete."""
        return self.root / "cache"

    def exists(self) -> bool:
        return self.platform_db.is_file() and self.mlflow_db.is_file()
