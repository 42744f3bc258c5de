"""A cloud stack's local state: the governance ledger, the sealing key and the MLflow store.

The cloud holds the models and endpoints; the platform database (stages, gate reports, approvals,
rollouts, audit chain), the key that seals manifests and the tracking store live under the stack's
state directory (``.mlplat/<stack>`` by default) on the machine that runs mlplat. ``mlplat up``
creates them once the Pulumi program has run (the program itself cannot create local files), and
so does the first write (a tracked run, a registration, a deployment), under the stack lock. A read
never creates them: on a stack with no state here it raises ``NotProvisioned``.

Each cloud provider names its own subclass, setting the provider's label (used in messages) and the
environment variable that points its tracking at a server. :class:`StateFiles` is what a cloud model
registry keeps in that state: the ledger, the sealing key, scratch space and the cache of version files.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from mlplat.db import Database, PgDatabase, open_database
from mlplat.errors import IntegrityError, NotProvisioned
from mlplat.locking import stack_lock

_READY: set[Path] = set()  # state roots checked by this process


@dataclass(frozen=True)
class CloudState:
    root: Path
    database_url: str | None = None  # the server's ledger (PostgreSQL); None: SQLite under root

    # set by each provider's subclass:
    label: ClassVar[str]  # the provider's name in messages ("AWS", "GCP", "Azure")
    tracking_env: ClassVar[str]  # the environment variable that, when set, is the tracking URI

    @property
    def platform_db(self) -> Path:
        return self.root / "platform.db"

    @property
    def signing_key(self) -> Path:
        return self.root / "keys" / "platform.key"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        return os.environ.get(self.tracking_env) or f"sqlite:///{self.mlflow_db}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def lock(self) -> Path:
        return self.root.parent / f".{self.root.name}.lock"

    def exists(self) -> bool:
        """Whether this machine holds the stack's state (its ledger), so a read has something to read."""
        return bool(self.database_url) or self.platform_db.is_file()

    def ensure(self, *, create: bool = True) -> Self:
        """Create what is missing (idempotent); migrate the platform database. With ``create=False`` (a
        read) a stack with no state here raises ``NotProvisioned`` and nothing is created."""
        if not create and not self.exists():
            raise NotProvisioned(self.root.name, f"platform state under {self.root}",
                                 hint=f"run `mlplat up --stack {self.root.name}` first; a tracked run, a "
                                      "registration or a deployment also creates it")
        if self.root in _READY and (self.database_url or self.platform_db.is_file()):
            return self
        if (self.database_url or self.platform_db.is_file()) and self.signing_key.is_file() \
                and not self._ledger().pending():
            return self
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with stack_lock(self.lock, operation=f"initialise the {self.label} stack's local state",
                        wait_seconds=60):
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            for sub in (self.artifacts, self.cache, self.tmp, self.signing_key.parent):
                sub.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = self._ledger()
            if db.pending():
                db.migrate()
            if not self.signing_key.is_file():
                fd, tmp = tempfile.mkstemp(dir=self.signing_key.parent)
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(32))
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.signing_key)
        _READY.add(self.root)
        return self

    def _ledger(self) -> Database | PgDatabase:
        if self.database_url:
            return open_database(self.database_url, key_dir=self.root)
        return Database(self.platform_db)

    def database(self, *, create: bool = True) -> Database | PgDatabase:
        return self.ensure(create=create)._ledger()

    def key(self) -> bytes:
        self.ensure()
        key = self.signing_key.read_bytes().strip()
        if len(key) < 32:
            raise IntegrityError("the stack's signing key is too short", where=str(self.signing_key))
        return key


class StateFiles:
    """The platform-state side of a cloud model registry, on the stack's :class:`CloudState` (``state``):
    the ledger (opened once), the sealing key, scratch space, and the local cache of each version's files
    (``cache/<model>/<version>``), which serving and promotion read without a download."""

    state: CloudState
    _db: Any = None

    def database(self) -> Any:
        if self._db is None:
            self._db = self.state.database()
        return self._db

    def signing_key(self) -> bytes:
        return bytes(self.state.key())

    def scratch_dir(self) -> Path:
        self.state.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(tempfile.mkdtemp(prefix="model-", dir=self.state.tmp))

    def keep_files(self, name: str, version: int, local_dir: str | Path) -> None:
        """Move a just-registered version's files (``local_dir``) into the cache, unless they are there."""
        cached = self.state.cache / name / str(version)
        if not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(local_dir, cached)

    def cached_files(self, name: str, version: int, fetch: Callable[[Path], None]) -> Path:
        """The version's files from the cache; on a miss ``fetch(archive)`` downloads its ``model.tar.gz``
        to ``archive`` (in a private scratch directory), which is unpacked into the cache (data only;
        a concurrent process that cached it first wins)."""
        cached: Path = Path(self.state.cache) / name / str(int(version))
        if cached.is_dir():
            return cached
        work = Path(tempfile.mkdtemp(prefix="download-", dir=self.state.tmp))
        try:
            archive = work / "model.tar.gz"
            fetch(archive)
            target = work / "model"
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(target, filter="data")
            cached.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                os.replace(target, cached)
            except OSError:  # another process cached it meanwhile
                if not cached.is_dir():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return cached
