"""The AWS stack's local state: the governance ledger, the sealing key and the MLflow store.

SageMaker holds packages and endpoints; the platform database (stages, gate reports,
approvals, rollouts, audit chain), the key that seals manifests and the tracking
store live under the stack's state directory (``.mlplat/<stack>`` by default) on the
machine that runs mlplat. They are created on first use (``mlplat up`` for AWS runs
the Pulumi program, which cannot create local files), under the stack lock.
"""
from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlplat.db import Database, PgDatabase, open_database
from mlplat.errors import IntegrityError
from mlplat.locking import stack_lock

_READY: set[Path] = set()  # state roots checked by this process


@dataclass(frozen=True)
class AwsState:
    root: Path
    database_url: str | None = None  # the server's ledger (PostgreSQL); None: SQLite under root

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
        return os.environ.get("MLPLAT_AWS_TRACKING_URI") or f"sqlite:///{self.mlflow_db}"

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

    def ensure(self) -> AwsState:
        """Create what is missing (idempotent); migrate the platform database."""
        if self.root in _READY and (self.database_url or self.platform_db.is_file()):
            return self
        if (self.database_url or self.platform_db.is_file()) and self.signing_key.is_file() \
                and not self._ledger().pending():
            return self
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with stack_lock(self.lock, operation="initialise the AWS stack's local state", wait_seconds=60):
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

    def database(self) -> Database | PgDatabase:
        return self.ensure()._ledger()

    def key(self) -> bytes:
        self.ensure()
        key = self.signing_key.read_bytes().strip()
        if len(key) < 32:
            raise IntegrityError("the stack's signing key is too short", where=str(self.signing_key))
        return key
