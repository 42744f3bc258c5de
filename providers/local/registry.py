"""Model registry of the local provider: MLflow model versions on the stack's SQLite store.

Files live in the registering run's artifact folder (``registered/<name>/<id>``), moved
there by a rename from the stack's private tmp folder. Versions are created under a
per-model file lock, so concurrent registrations never race for a version number.
"""
from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from mlplat.contracts import ModelRegistry, StoredVersion
from mlplat.db import Database, ledger_for
from mlplat.errors import ExternalError, IntegrityError, MlplatError, NotFound
from mlplat.locking import stack_lock
from mlplat_providers.local.layout import StateLayout


def _path_of(uri: str) -> Path:
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    return Path(uri)


class LocalModelRegistry(ModelRegistry):
    def __init__(self, spec, ctx=None):
        self.spec = spec
        self.ctx = ctx
        self.layout = StateLayout(spec.state_dir)
        if not self.layout.exists():
            raise MlplatError(
                f"stack '{spec.name}' is not provisioned (no stores under {self.layout.root})",
                hint=f"run `mlplat up --stack {spec.name}` first",
            )
        self._db: Database | None = None

    @classmethod
    def for_stack(cls, spec, ctx=None) -> LocalModelRegistry:
        return cls(spec, ctx)

    # --- platform state -------------------------------------------------------------------

    def database(self) -> Database:
        if self._db is None:
            db = ledger_for(self.layout.platform_db, self.ctx)
            if db.pending():  # a stack provisioned before this migration shipped
                db.migrate()
            self._db = db
        return self._db

    def signing_key(self) -> bytes:
        path = self.layout.signing_key
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise IntegrityError(f"the stack's signing key is unreadable: {exc}", where=str(path),
                                 hint=f"run `mlplat up --stack {self.spec.name}` to create it") from None
        if len(key) < 32:
            raise IntegrityError("the stack's signing key is too short", where=str(path))
        return key

    def scratch_dir(self) -> Path:
        self.layout.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(tempfile.mkdtemp(prefix="model-", dir=self.layout.tmp))

    # --- MLflow -------------------------------------------------------------------------

    @cached_property
    def client(self):
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        return MlflowClient(tracking_uri=self.layout.tracking_uri, registry_uri=self.layout.tracking_uri)

    def _run(self, run_id: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            raise NotFound(f"run '{run_id}' not found in stack '{self.spec.name}'",
                           hint="`mlplat runs list` shows the runs of this stack") from exc

    def store_version(self, name: str, run_id: str, local_dir: Any, *, tags: Mapping[str, str]) -> StoredVersion:
        from mlflow.exceptions import MlflowException

        run = self._run(run_id)
        dest = _path_of(run.info.artifact_uri) / "registered" / name / uuid.uuid4().hex[:12]
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local_dir, dest)  # same filesystem: one rename, never a half-copied version
        lock = self.layout.root / "locks" / f"registry-{name}.lock"
        try:
            with stack_lock(lock, operation=f"register {name}", wait_seconds=120):
                try:
                    self.client.create_registered_model(name, tags={"mlplat.managed": "true"})
                except MlflowException as exc:
                    if "RESOURCE_ALREADY_EXISTS" not in str(getattr(exc, "error_code", "")) and \
                            "already exists" not in str(exc):
                        raise
                mv = self.client.create_model_version(name, source=str(dest), run_id=run_id, tags=dict(tags))
        except MlflowException as exc:
            raise ExternalError(f"MLflow refused to register '{name}': {exc}") from exc
        return StoredVersion(name, int(mv.version), str(dest), run_id)

    def local_dir(self, name: str, version: int, source: str) -> Path:
        path = _path_of(source)
        if not path.is_dir():
            raise IntegrityError(f"the files of {name} version {version} are missing", where=str(path),
                                 hint="the artifact store was changed outside mlplat; register the model again")
        return path

    def set_alias(self, name: str, alias: str, version: int | None) -> None:
        from mlflow.exceptions import MlflowException

        try:
            if version is None:
                try:
                    self.client.delete_registered_model_alias(name, alias)
                except MlflowException:
                    pass
            else:
                self.client.set_registered_model_alias(name, alias, str(version))
        except MlflowException as exc:
            raise ExternalError(f"could not set MLflow alias {name}@{alias}: {exc}") from exc

    def get_alias(self, name: str, alias: str) -> int | None:
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def run_environment(self, run_id: str) -> dict[str, Any]:
        folder = _path_of(self._run(run_id).info.artifact_uri) / "mlplat"
        try:
            return json.loads((folder / "environment.json").read_text())
        except (OSError, ValueError):
            return {}

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self._run(run_id).data.tags)
