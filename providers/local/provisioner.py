"""`mlplat up` for the local provider: a plan of resources, applied idempotently under a lock.

Each resource is recorded in the platform database only after it was created, so a
crash mid-`up` leaves the resource planned as "create" and the rerun finishes it.

The state directory is the platform's only if an ownership marker in it says so: `up`
creates the directory together with the marker (or adopts an empty directory inside the
project), never a non-empty directory it did not create; `destroy` removes the entries the
marker lists and keeps everything else.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from mlplat import lineage
from mlplat.contracts import Plan, PlannedChange, Provisioner, ResourceStatus
from mlplat.db import ledger_for
from mlplat.errors import ExternalError, IntegrityError, StackError
from mlplat.locking import stack_lock
from mlplat_providers.local.layout import MARKER, MARKER_KIND, PLATFORM_ENTRIES, StateLayout

T_STATE = "mlplat:local:StateDirectory"
T_DB = "mlplat:local:PlatformDatabase"
T_TRACKING = "mlplat:local:TrackingStore"
T_ARTIFACTS = "mlplat:local:ArtifactStore"
T_KEY = "mlplat:local:SigningKey"
T_CONFIG = "mlplat:local:StackConfig"


def config_document(spec) -> dict:
    """The parts of the stack the running platform reads; a change shows as an update."""
    return spec.model_dump(mode="json", by_alias=True, exclude={"provider"})


def _digest(document: dict) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


class LocalProvisioner(Provisioner):
    def __init__(self, spec, ctx, *, lock_wait: float = 0.0):
        self.spec = spec
        self.ctx = ctx
        self.layout = StateLayout(spec.state_dir)
        self.db = ledger_for(self.layout.platform_db, ctx)
        self._lock_wait = lock_wait

    def set_lock_wait(self, seconds: float) -> None:
        self._lock_wait = seconds

    # --- ownership of the state directory -------------------------------------------------

    def _configured_absolute(self) -> bool:
        configured = self.spec.provider.configured_state_dir()
        return bool(configured) and Path(configured).is_absolute()

    def _fix_hint(self) -> str:
        return (f"point mlplat:provider.stateDir of stack '{self.spec.name}' at a new directory "
                f"(default .mlplat/{self.spec.name}); nothing was changed")

    def _read_marker(self) -> dict | None:
        path = self.layout.marker
        if path.is_symlink() or not path.exists():
            return None  # `up` writes a regular file; a link is not its marker
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise IntegrityError(f"the ownership marker is unreadable: {exc}", where=str(path),
                                 hint="restore it from a backup; nothing was changed") from exc
        entries = doc.get("entries") if isinstance(doc, dict) else None
        if not (isinstance(doc, dict) and doc.get("kind") == MARKER_KIND and isinstance(doc.get("stack"), str)
                and isinstance(doc.get("createdRoot"), bool) and isinstance(entries, list)
                and all(isinstance(e, str) and _plain_name(e) for e in entries)):
            raise IntegrityError("the ownership marker is not one `mlplat up` wrote", where=str(path),
                                 hint="restore it from a backup; nothing was changed")
        return doc

    def _legacy_record(self) -> bool:
        """A state directory from before ownership markers: its platform database records that `up` made it."""
        db = self.layout.platform_db
        if db.is_symlink() or not db.is_file():
            return False
        try:  # read-only: a database the platform may not own is never written
            conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT 1 FROM stack_resources WHERE resource=? AND name=?",
                                   (T_STATE, str(self.layout.root))).fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            return False
        return row is not None

    def _inspect(self) -> tuple[str, dict | None]:
        """What the state directory is: ``absent``, ``owned`` (marker of this stack), ``legacy``,
        ``empty`` or ``foreign`` (non-empty, not the platform's), with the marker if any."""
        root = self.layout.root
        if not os.path.lexists(root):
            return "absent", None
        if root.is_symlink() or not root.is_dir():
            raise StackError(f"the state directory {root} exists and is not a directory", hint=self._fix_hint())
        marker = self._read_marker()
        if marker is not None:
            if marker["stack"] != self.spec.name:
                raise StackError(f"the state directory {root} belongs to stack '{marker['stack']}'",
                                 hint="give every stack its own mlplat:provider.stateDir; nothing was changed")
            return "owned", marker
        if self._legacy_record():
            return "legacy", None
        return ("foreign" if any(root.iterdir()) else "empty"), None

    def _ownership(self) -> tuple[str, dict | None]:
        """How `up` may use the state directory: ``create``, ``owned``, ``legacy`` or ``adopt`` (empty,
        inside the project). A directory `up` must not use raises :class:`StackError`."""
        state, marker = self._inspect()
        root = self.layout.root
        if state == "absent":
            return "create", None
        if state == "foreign":
            raise StackError(
                f"the state directory {root} is not empty and was not created by `mlplat up` (it has no {MARKER})",
                hint=self._fix_hint())
        if state == "empty":
            if self._configured_absolute():
                raise StackError(f"the state directory {root} already exists and was not created by `mlplat up`",
                                 hint="an absolute stateDir must name a directory that does not exist yet; "
                                      "`mlplat up` creates it")
            return "adopt", None
        return state, marker

    def _write_marker(self, path: Path, *, created_root: bool, previous: dict | None) -> None:
        document = {
            "kind": MARKER_KIND, "version": 1, "stack": self.spec.name, "createdRoot": created_root,
            "entries": sorted(set(previous["entries"] if previous else ()) | set(PLATFORM_ENTRIES)),
            "about": "Written by `mlplat up`. `mlplat destroy` removes the entries listed here (and this "
                     "directory if createdRoot is true and nothing else is left in it); it keeps everything else.",
        }
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def _claim(self) -> None:
        """Make the state directory the platform's (under the stack lock)."""
        ownership, marker = self._ownership()
        root = self.layout.root
        if ownership == "create":
            # The directory appears with its marker in one rename, so a crash never leaves an unmarked one.
            root.parent.mkdir(parents=True, exist_ok=True)
            prefix = f".{root.name}.new-"
            for stale in root.parent.glob(f"{prefix}*"):  # left by a crash before the rename
                only_marker = {p.name for p in stale.iterdir()} <= {MARKER, f"{MARKER}.tmp"} if stale.is_dir() else False
                if only_marker and not stale.is_symlink():
                    shutil.rmtree(stale)
            staging = Path(tempfile.mkdtemp(prefix=prefix, dir=root.parent))
            try:
                self._write_marker(staging / MARKER, created_root=True, previous=None)
                os.rename(staging, root)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            return
        if ownership == "owned":
            if set(PLATFORM_ENTRIES) <= set(marker["entries"]):
                return
            created_root = marker["createdRoot"]
        else:  # an adopted empty directory stays when destroyed; a legacy one was made by an earlier `up`
            created_root = ownership == "legacy"
        self._write_marker(self.layout.marker, created_root=created_root, previous=marker)

    # --- reading ------------------------------------------------------------------------

    def _recorded(self) -> dict[tuple[str, str], str]:
        if not self.layout.platform_db.is_file() or "0001_core" not in self.db.applied():
            return {}
        conn = self.db.connect()
        try:
            return {(r["resource"], r["name"]): r["config"] for r in conn.execute("SELECT * FROM stack_resources")}
        finally:
            conn.close()

    def plan(self) -> Plan:
        ownership, marker = self._ownership()
        layout = self.layout
        recorded = self._recorded() if ownership in ("owned", "legacy") else {}
        plan = Plan(self.spec.name)

        def simple(kind: str, name: str, detail: str) -> None:
            done = (kind, name) in recorded
            plan.changes.append(PlannedChange(kind, name, "unchanged" if done else "create", "" if done else detail))

        if ownership == "adopt":
            plan.changes.append(PlannedChange(T_STATE, str(layout.root), "create",
                                              "adopt this empty directory: ownership marker, mode 0700"))
        elif ownership == "legacy":
            plan.changes.append(PlannedChange(T_STATE, str(layout.root), "update", "write the ownership marker"))
        elif ownership == "owned" and not set(PLATFORM_ENTRIES) <= set(marker["entries"]):
            plan.changes.append(PlannedChange(T_STATE, str(layout.root), "update", "ownership marker: new entries"))
        else:
            simple(T_STATE, str(layout.root), "private directory (0700) with an ownership marker")
        pending = self.db.pending() if ownership in ("owned", "legacy") and layout.platform_db.is_file() else None
        if pending is None or (T_DB, "platform.db") not in recorded:
            plan.changes.append(PlannedChange(T_DB, "platform.db", "create", "SQLite (WAL), schema migrations"))
        elif pending:
            plan.changes.append(PlannedChange(T_DB, "platform.db", "update", "migrations: " + ", ".join(pending)))
        else:
            plan.changes.append(PlannedChange(T_DB, "platform.db", "unchanged"))
        simple(T_TRACKING, "mlflow.db", f"MLflow tracking + registry store ({layout.tracking_uri})")
        simple(T_ARTIFACTS, "artifacts", f"artifact root {layout.artifacts}")
        simple(T_KEY, "platform.key", "key that seals model manifests (0600)")
        document = config_document(self.spec)
        before = recorded.get((T_CONFIG, self.spec.name))
        if before is None:
            plan.changes.append(PlannedChange(T_CONFIG, self.spec.name, "create",
                                              f"team {self.spec.team}, env {self.spec.environment}"))
        elif json.loads(before)["digest"] != _digest(document):
            old = json.loads(before)["document"]
            changed = sorted(k for k in set(old) | set(document) if old.get(k) != document.get(k))
            plan.changes.append(PlannedChange(T_CONFIG, self.spec.name, "update", "changed: " + ", ".join(changed)))
        else:
            plan.changes.append(PlannedChange(T_CONFIG, self.spec.name, "unchanged"))
        return plan

    def planned_resources(self) -> list[dict]:
        """The stack as the policy pack sees it (property names are documented in policies/rules.py)."""
        spec, tags = self.spec, self.spec.tags.as_dict()
        # Stores live in the 0700 state directory; encryption at rest is the host's disk encryption.
        store = {"tags": tags, "private": True, "encryption": "host-filesystem"}
        governance = spec.governance
        monitoring, serving = spec.monitoring, spec.serving
        resources = [
            {"type": T_STATE, "name": str(self.layout.root), "props": {**store, "mode": "0700"}},
            {"type": T_DB, "name": "platform.db", "props": {**store, "journal": "wal"}},
            {"type": T_TRACKING, "name": "mlflow.db", "props": {**store, "uri": self.layout.tracking_uri}},
            {"type": T_ARTIFACTS, "name": "artifacts", "props": {**store, "public": False}},
            {"type": "mlplat:local:TrainingRunner", "name": "sdk", "props": {
                "tags": tags, "trackingUri": self.layout.tracking_uri, "requireTrackedRuns": True}},
            {"type": "mlplat:local:ModelRegistry", "name": "registry", "props": {
                "tags": tags, "riskTier": governance.risk_tier.value, "manualApproval": True,
                "approvers": list(governance.approvers), "requiredApprovals": governance.required_approvals,
                "models": {m: g.risk_tier.value for m, g in governance.models.items()}}},
            {"type": "mlplat:local:Gateway", "name": f"gateway:{serving.port}", "props": {
                "tags": tags, "environment": spec.environment, "instanceType": serving.instance_type,
                "instanceCount": 1, "captureSampling": serving.capture_sampling,
                "canarySteps": list(serving.canary.steps), "autoRollback": True,
                "shadowPercent": serving.shadow.percent, "monitorSchedule": monitoring.schedule,
                "alarms": ["canary-error-rate", "canary-latency", "drift", *(a.name for a in monitoring.alerts)],
                "alertChannels": [c.kind for c in monitoring.channels]}},
        ]
        if spec.budget is not None:
            resources.append({"type": "mlplat:local:Budget", "name": "budget", "props": {
                "tags": tags, "monthlyUsd": spec.budget.monthly_usd, "alertAt": list(spec.budget.alert_at)}})
        return resources

    # --- writing -------------------------------------------------------------------------

    def apply(self, plan: Plan) -> Plan:
        with stack_lock(self.layout.lock, operation=f"up {self.spec.name}", wait_seconds=self._lock_wait):
            fresh = self.plan()  # the world may have moved while we waited
            layout = self.layout
            if fresh.has_changes:
                self._claim()
                os.chmod(layout.root, 0o700)
                # keep the state (keys, databases) out of the user's git; a hint when mlplat cannot
                hint = lineage.state_ignore_hint(Path(self.spec.project_dir or "."), layout.root)
                if hint:
                    self.ctx.err.print(f"hint: {hint}", highlight=False, markup=False)
                layout.tmp.mkdir(exist_ok=True, mode=0o700)
                self.db.migrate()  # idempotent; the resource records below live in it
            for change in fresh.changes:
                if change.action == "unchanged" or change.resource in (T_STATE, T_DB):
                    if change.action == "unchanged":
                        continue
                elif change.resource == T_TRACKING:
                    self._create_tracking_store()
                elif change.resource == T_ARTIFACTS:
                    layout.artifacts.mkdir(parents=True, exist_ok=True, mode=0o700)
                elif change.resource == T_KEY:
                    self._create_key()
                elif change.resource == T_CONFIG:
                    document = config_document(self.spec)
                    self._record(T_CONFIG, self.spec.name, {"digest": _digest(document), "document": document})
                    continue
                self._record(change.resource, change.name, {})
            return fresh

    def _record(self, resource: str, name: str, config: dict) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO stack_resources(resource, name, config, applied_at) VALUES (?,?,?,?) "
                "ON CONFLICT(resource, name) DO UPDATE SET config=excluded.config, applied_at=excluded.applied_at",
                (resource, name, json.dumps(config, sort_keys=True), time.time()),
            )

    def _create_tracking_store(self) -> None:
        layout = self.layout
        layout.artifacts.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = layout.mlflow_db.with_suffix(".db.partial")
        partial.unlink(missing_ok=True)
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported
        try:
            from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            # Build under a temporary name, then rename: a crash never leaves a half-migrated store.
            SqlAlchemyStore(f"sqlite:///{partial}", str(layout.artifacts))
            RegistryStore(f"sqlite:///{partial}")
        except Exception as exc:  # MLflow raises many types here; surface one clear error
            partial.unlink(missing_ok=True)
            raise ExternalError(f"could not create the MLflow store: {exc}", where=str(layout.mlflow_db)) from exc
        os.replace(partial, layout.mlflow_db)

    def _create_key(self) -> None:
        self.layout.keys.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.layout.signing_key
        if path.exists():
            return
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def _destroyable(self) -> tuple[list[str], bool] | None:
        """The entries `destroy` may remove and whether it may remove the directory itself; None: nothing
        of this stack is there. A non-empty directory without the platform's marker raises."""
        state, marker = self._inspect()
        if state in ("absent", "empty"):
            return None
        if state == "foreign":
            raise StackError(
                f"the state directory {self.layout.root} was not created by `mlplat up` (it has no {MARKER}); "
                "destroy deletes nothing there", hint=self._fix_hint())
        if state == "legacy":
            return list(PLATFORM_ENTRIES), True
        return list(marker["entries"]), marker["createdRoot"]

    def _kept(self, entries: list[str]) -> list[str]:
        """Entries of the state directory that `destroy` leaves: everything the marker does not list
        (and links, which the platform never creates)."""
        ours = {*entries, MARKER, f"{MARKER}.tmp"}
        return sorted(p.name for p in self.layout.root.iterdir() if p.name not in ours or p.is_symlink())

    def plan_destroy(self) -> Plan:
        plan = Plan(self.spec.name)
        destroyable = self._destroyable()
        if destroyable is None:
            return plan
        entries, created_root = destroyable
        for resource, name in self._recorded():
            if resource != T_STATE:
                plan.changes.append(PlannedChange(resource, name, "delete"))
        kept = self._kept(entries)
        root = str(self.layout.root)
        if kept:
            shown = ", ".join(kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
            plan.changes.append(PlannedChange(T_STATE, root, "unchanged",
                                              f"holds entries mlplat did not create, left in place: {shown}"))
        elif not created_root:
            plan.changes.append(PlannedChange(T_STATE, root, "unchanged",
                                              "existed before `mlplat up`, left in place (emptied)"))
        else:
            plan.changes.append(PlannedChange(T_STATE, root, "delete"))
        return plan

    def destroy(self) -> Plan:
        """Remove what the ownership marker lists; keep every other entry, and the directory if any is left."""
        with stack_lock(self.layout.lock, operation=f"destroy {self.spec.name}", wait_seconds=self._lock_wait):
            plan = self.plan_destroy()
            destroyable = self._destroyable()
            if destroyable is None:
                return plan
            entries, created_root = destroyable
            root = self.layout.root
            # Stores first, the marker last: a crash part-way leaves the marker, and the rerun finishes.
            for name in (*entries, f"{MARKER}.tmp"):
                path = root / name
                if path.is_symlink():
                    continue
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            if self._kept(entries):
                if not self.layout.marker.exists():  # a legacy directory: mark it so a later `up` may use it
                    self._write_marker(self.layout.marker, created_root=created_root, previous=None)
                return plan
            self.layout.marker.unlink(missing_ok=True)
            if created_root:
                root.rmdir()
            return plan

    def status(self) -> list[ResourceStatus]:
        try:
            owned = self._inspect()[0] in ("owned", "legacy")
        except (StackError, IntegrityError):
            owned = False
        recorded = self._recorded() if owned else {}  # never open a database in a directory that is not ours
        layout = self.layout
        out = []
        for resource, name, path in (
            (T_STATE, str(layout.root), layout.root),
            (T_DB, "platform.db", layout.platform_db),
            (T_TRACKING, "mlflow.db", layout.mlflow_db),
            (T_ARTIFACTS, "artifacts", layout.artifacts),
            (T_KEY, "platform.key", layout.signing_key),
        ):
            exists = (resource, name) in recorded and path.exists()
            detail = ""
            if exists and path.is_file():
                detail = f"{path.stat().st_size / 1024:.0f} KiB"
            out.append(ResourceStatus(resource, name, exists, detail))
        config = recorded.get((T_CONFIG, self.spec.name))
        out.append(ResourceStatus(T_CONFIG, self.spec.name, config is not None,
                                  "in sync" if config and json.loads(config)["digest"] == _digest(config_document(self.spec))
                                  else ("stack file changed since last up" if config else "")))
        return out



def _plain_name(name: str) -> bool:
    """One path component inside the state directory: no separators, not '.' or '..'."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name
