"""Model registry of the local provider: MLflow model versions on the stack's SQLite store, or on
the stack's shared tracking server (``mlplat:controlPlane.tracking``).

Files live in the registering run's artifacts (``registered/<name>/<id>``). On the SQLite store
they are moved there by a rename from the stack's private tmp folder, and versions are created
under a per-model file lock, so concurrent registrations never race for a version number. On a
tracking server they are uploaded over HTTP (the server numbers versions in its own transaction),
and :meth:`LocalModelRegistry.local_dir` fetches a fresh copy on every call into a cache named
by the files' content, so a change in the store is seen by the next check of the sealed manifest.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from mlplat.contracts import ModelRegistry, StoredVersion
from mlplat.db import Database, ledger_for
from mlplat.errors import ExternalError, IntegrityError, MlplatError, NotFound, NotProvisioned
from mlplat.locking import stack_lock
from mlplat.mlflow_tracking import use_tracking_server
from mlplat_providers.local.layout import StateLayout

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def _path_of(uri: str) -> Path:
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    return Path(uri)


def _is_remote(source: str) -> bool:
    """A version's files behind a URI (``mlflow-artifacts:/…``, ``http://…``), not in a local folder."""
    return bool(_SCHEME.match(source)) and not source.startswith("file:")


def _tree_digest(root: Path) -> str:
    """sha256 over every file's relative path and content under ``root``."""
    from mlplat.lineage import file_sha256

    hasher = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            hasher.update(f"{full.relative_to(root).as_posix()}\0{file_sha256(full)}\n".encode())
    return hasher.hexdigest()


def _user_cache() -> Path:
    """A private folder for fetched files on a machine that keeps no state for the stack."""
    base = Path(tempfile.gettempdir()) / f"mlplat-{os.getuid()}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        info = base.lstat()
        if base.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(f"{base} is not a private folder of this user")
    except OSError:  # someone else's folder (or a link) at that name: use a fresh one
        base = Path(tempfile.mkdtemp(prefix="mlplat-"))
    return base / "models"


def _missing(exc: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "404" in str(exc)


class LocalModelRegistry(ModelRegistry):
    def __init__(self, spec, ctx=None):
        self.spec = spec
        self.ctx = ctx
        self.layout = StateLayout(spec.state_dir)
        # The stack's shared tracking server, if it names one: runs, versions and their files live there,
        # and a machine that only trains and registers (a client of `mlplat server`) keeps no state.
        self.server: str | None = spec.control_plane.tracking
        if not self.server:
            self._require_state()
        else:
            use_tracking_server(self.server)
        self._db: Database | None = None

    @property
    def tracking_uri(self) -> str:
        return self.server or self.layout.tracking_uri

    def _require_state(self) -> None:
        if self.layout.exists():
            return
        if self.server:
            raise MlplatError(
                f"stack '{self.spec.name}' keeps no ledger on this machine (no stores under {self.layout.root})",
                hint=f"its ledger lives where `mlplat server --stack {self.spec.name}` runs: name that server in "
                     "mlplat:controlPlane.url, or run the command there")
        raise NotProvisioned(self.spec.name, f"stores under {self.layout.root}")

    @classmethod
    def for_stack(cls, spec, ctx=None) -> LocalModelRegistry:
        return cls(spec, ctx)

    # --- platform state -------------------------------------------------------------------

    def database(self) -> Database:
        if self._db is None:
            self._require_state()
            db = ledger_for(self.layout.platform_db, self.ctx)
            # a stack provisioned before this migration shipped (mlplat server checked its ledger at start)
            if not getattr(self.ctx, "ledger_current", False) and db.pending():
                db.migrate()
            self._db = db
        return self._db

    def signing_key(self) -> bytes:
        self._require_state()
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
        if self.server:  # the files travel to the server over HTTP: any private folder will do
            return Path(tempfile.mkdtemp(prefix="mlplat-model-"))
        self.layout.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(tempfile.mkdtemp(prefix="model-", dir=self.layout.tmp))

    # --- MLflow -------------------------------------------------------------------------

    @cached_property
    def client(self):
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _run(self, run_id: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            if self.server and not _missing(exc):
                raise ExternalError(f"the tracking server at {self.server} did not answer for run '{run_id}': "
                                    f"{exc}"[:600], where="mlplat:controlPlane.tracking",
                                    hint="check that it runs and that the stack file names it") from None
            where = f"the tracking server at {self.server}" if self.server else f"stack '{self.spec.name}'"
            raise NotFound(f"run '{run_id}' not found in {where}",
                           hint="`mlplat runs list` shows the runs of this stack") from exc

    def _ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name, tags={"mlplat.managed": "true"})
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(getattr(exc, "error_code", "")) and \
                    "already exists" not in str(exc):
                raise

    def store_version(self, name: str, run_id: str, local_dir: Any, *, tags: Mapping[str, str]) -> StoredVersion:
        from mlflow.exceptions import MlflowException

        run = self._run(run_id)
        if self.server:
            return self._upload_version(name, run, Path(local_dir), tags)
        dest = _path_of(run.info.artifact_uri) / "registered" / name / uuid.uuid4().hex[:12]
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local_dir, dest)  # same filesystem: one rename, never a half-copied version
        lock = self.layout.root / "locks" / f"registry-{name}.lock"
        try:
            with stack_lock(lock, operation=f"register {name}", wait_seconds=120):
                self._ensure_model(name)
                mv = self.client.create_model_version(name, source=str(dest), run_id=run_id, tags=dict(tags))
        except MlflowException as exc:
            raise ExternalError(f"MLflow refused to register '{name}': {exc}") from exc
        return StoredVersion(name, int(mv.version), str(dest), run_id)

    def _upload_version(self, name: str, run: Any, local_dir: Path, tags: Mapping[str, str]) -> StoredVersion:
        from mlflow.exceptions import MlflowException

        path = f"registered/{name}/{uuid.uuid4().hex[:12]}"
        try:
            self.client.log_artifacts(run.info.run_id, str(local_dir), path)
            self._ensure_model(name)
            mv = self.client.create_model_version(name, source=f"{run.info.artifact_uri.rstrip('/')}/{path}",
                                                  run_id=run.info.run_id, tags=dict(tags))
        except MlflowException as exc:
            raise ExternalError(f"the tracking server at {self.server} refused to store '{name}': {exc}"[:600],
                                where="mlplat:controlPlane.tracking") from exc
        shutil.rmtree(local_dir, ignore_errors=True)  # stored: the server holds the files now
        return StoredVersion(name, int(mv.version), str(mv.source), run.info.run_id)

    def _cache_root(self) -> Path:
        return self.layout.cache / "models" if self.layout.exists() else _user_cache()

    def _fetch(self, name: str, version: int, source: str) -> Path:
        """A fresh copy of the files at ``source``, in a cache folder named by their content."""
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        root = self._cache_root() / re.sub(r"[^A-Za-z0-9._-]", "_", name) / str(int(version))
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
        try:
            try:
                got = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(staging),
                                                               tracking_uri=self.tracking_uri))
            except MlflowException as exc:
                if _missing(exc):
                    raise IntegrityError(f"the files of {name} version {version} are missing", where=source,
                                         hint="the artifact store was changed outside mlplat; register the model "
                                              "again") from None
                raise ExternalError(f"could not fetch the files of {name} version {version} from {self.tracking_uri}: "
                                    f"{exc}"[:600], where=source) from None
            if not got.is_dir():
                raise IntegrityError(f"the files of {name} version {version} are not a folder", where=source,
                                     hint="the artifact store was changed outside mlplat; register the model again")
            digest = _tree_digest(got)
            final = root / digest[:24]
            if final.is_dir():
                if _tree_digest(final) == digest:
                    return final
                shutil.rmtree(final)  # a cached copy changed on this machine: replace it with the fetched one
            try:
                os.rename(got, final)
            except OSError:
                if not final.is_dir():  # else another process put the same files there a moment ago
                    raise
            return final
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def local_dir(self, name: str, version: int, source: str) -> Path:
        if _is_remote(source):
            return self._fetch(name, version, source)
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
        run = self._run(run_id)
        if _is_remote(run.info.artifact_uri):
            from mlflow.exceptions import MlflowException

            with tempfile.TemporaryDirectory(prefix="mlplat-env-") as tmp:
                try:
                    path = self.client.download_artifacts(run_id, "mlplat/environment.json", tmp)
                    return json.loads(Path(path).read_text())
                except (MlflowException, OSError, ValueError):
                    return {}
        folder = _path_of(run.info.artifact_uri) / "mlplat"
        try:
            return json.loads((folder / "environment.json").read_text())
        except (OSError, ValueError):
            return {}

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self._run(run_id).data.tags)
