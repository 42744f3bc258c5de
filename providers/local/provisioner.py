"""`mlplat up` for the local provider: a plan of resources, applied idempotently under a lock.

Each resource is recorded in the platform database only after it was created, so a
crash mid-`up` leaves the resource planned as "create" and the rerun finishes it.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from pathlib import Path

from mlplat import lineage
from mlplat.components import Plan, PlannedChange, Provisioner, ResourceStatus
from mlplat.db import Database
from mlplat.locking import stack_lock
from mlplat.errors import ExternalError
from mlplat_providers.local.layout import StateLayout

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
        self.db = Database(self.layout.platform_db)
        self.lock_wait = lock_wait

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
        layout, recorded = self.layout, self._recorded()
        plan = Plan(self.spec.name)

        def simple(kind: str, name: str, detail: str) -> None:
            done = (kind, name) in recorded
            plan.changes.append(PlannedChange(kind, name, "unchanged" if done else "create", "" if done else detail))

        simple(T_STATE, str(layout.root), "private directory (0700)")
        pending = self.db.pending() if layout.platform_db.is_file() else None
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
            plan.changes.append(PlannedChange(T_CONFIG, self.spec.name, "create", f"team {self.spec.team}, env {self.spec.environment}"))
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
        with stack_lock(self.layout.lock, operation=f"up {self.spec.name}", wait_seconds=self.lock_wait):
            fresh = self.plan()  # the world may have moved while we waited
            layout = self.layout
            if fresh.has_changes:
                layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
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

    def plan_destroy(self) -> Plan:
        plan = Plan(self.spec.name)
        if self.layout.root.exists():
            for resource, name in self._recorded():
                plan.changes.append(PlannedChange(resource, name, "delete"))
            if not plan.changes:
                plan.changes.append(PlannedChange(T_STATE, str(self.layout.root), "delete"))
        return plan

    def destroy(self) -> Plan:
        with stack_lock(self.layout.lock, operation=f"destroy {self.spec.name}", wait_seconds=self.lock_wait):
            plan = self.plan_destroy()
            if self.layout.root.exists():
                shutil.rmtree(self.layout.root)
            return plan

    def status(self) -> list[ResourceStatus]:
        recorded = self._recorded()
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

