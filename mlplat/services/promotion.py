"""The delivery pipeline: gate → approval → package → staging endpoint → integration tests → stage change.

A promotion is a row in ``promotions``; each step is recorded when it starts and when
it finishes, so a rerun of the same command after a kill skips finished steps and
resumes. Only the last step changes stages, in one transaction with its audit
entries: a kill before its COMMIT leaves nothing half-promoted; the database's
partial unique index forbids two production versions whatever happens.

Concurrency: a per-(model, environment) file lock held for the whole run (the kernel
releases it when the holder dies) plus a unique index on running promotions; the
loser gets ``Conflict``.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mlplat.contracts import Capability, Endpoint, ModelRegistry, Package
from mlplat.errors import CheckFailed, Conflict, Denied, MlplatError
from mlplat.services import approvals as approvals_service
from mlplat.services import audit, container_models
from mlplat.services import gate as gate_service
from mlplat.services import governance as governance_service
from mlplat.services import ledger as ledger_service
from mlplat.services import manifest as manifests
from mlplat.services import registry as reg

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.stack import StackSpec

STEPS = ("gate", "approval", "package", "endpoint", "integration", "stage")
TARGETS = ("staging", "production")
FAULT_ENV = "MLPLAT_FAULT_KILL"  # "<step>:<start|end|commit>": SIGKILL this process there (crash tests)
SAMPLE_ROWS = 50
LATENCY_REQUESTS = 40

Progress = Callable[[str, str, str], None]  # (step, status, detail)


def _fault(step: str, phase: str) -> None:
    if os.environ.get(FAULT_ENV) == f"{step}:{phase}":
        os.kill(os.getpid(), signal.SIGKILL)


class Promotion:
    def __init__(self, spec: StackSpec, ctx: Context, name: str, version: int, target: str,
                 environment: str | None = None, progress: Progress | None = None):
        from mlplat import providers

        if target not in TARGETS:
            raise MlplatError(f"unknown target stage '{target}'", hint="use --to staging or --to production")
        self.spec, self.ctx = spec, ctx
        self.name, self.version, self.target = name, int(version), target
        self.environment = environment or spec.environment
        self.registry = reg.registry_for(spec, ctx)
        self.delivery = providers.capability(spec, ctx, Capability.DELIVERY)
        self.db = self.registry.database()
        self.progress = progress or (lambda step, status, detail: None)
        self.id: int | None = None
        self.steps: dict[str, dict[str, Any]] = {}
        self.what = f"{name} version {self.version}"

    # --- persistence ---------------------------------------------------------------------------

    def _save(self, conn: sqlite3.Connection | None = None, **fields: Any) -> None:
        fields = {"steps": json.dumps(self.steps, sort_keys=True, default=str), "updated_at": time.time(), **fields}
        sets = ", ".join(f"{k} = ?" for k in fields)

        def write(c: sqlite3.Connection) -> None:
            c.execute(f"UPDATE promotions SET {sets} WHERE id = ?", (*fields.values(), self.id))

        if conn is not None:
            write(conn)
        else:
            with self.db.transaction() as c:
                write(c)

    def _mark(self, step: str, status: str, detail: Any = None) -> None:
        entry = self.steps.setdefault(step, {})
        entry["status"] = status
        entry["started" if status == "running" else "finished"] = time.time()
        if detail is not None:
            entry["detail"] = detail
        self._save(step=step)

    # --- entry point ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from mlplat.locking import stack_lock

        conn = self.db.connect()
        try:
            row = reg.version_row(conn, self.name, self.version)
            governance_service.effective_for(self.spec, self.ctx, conn)
        finally:
            conn.close()
        stage = self._stage()
        if stage == self.target or (self.target == "staging" and stage == "production"):
            return self._already(stage)
        lock = Path(self.spec.state_dir) / "locks" / f"promote-{self.name}-{self.environment}.lock"
        with ExitStack() as held:
            try:
                held.enter_context(stack_lock(lock, operation=f"promote {self.name} {self.version} --to {self.target}"))
            except Conflict as exc:  # refused before anything was written: say how to go on
                exc.hint = (f"rerun `mlplat models promote {self.name} {self.version} --to {self.target}` once it has "
                            "finished: if it promoted this version, the rerun reports it done")
                raise
            # read again under the lock: a promotion of this version that finished between the first
            # read and the lock must be found done here, not run a second time
            stage = self._stage()
            if stage == self.target or (self.target == "staging" and stage == "production"):
                return self._already(stage)
            self._open(row)
            try:
                return self._steps(row)
            except Exception as exc:  # recorded as failed, then re-raised unchanged for the CLI handler
                self._fail(exc)
                raise

    def _stage(self) -> str:
        """The version's stage, as an audited decision set it; ``Denied`` if production cannot start from it."""
        conn = self.db.connect()
        try:
            stage = ledger_service.Ledger(conn).stage(self.name, self.version, self.environment)
        finally:
            conn.close()
        if self.target == "production" and stage not in ("staging", "production"):
            raise Denied(f"{self.what} is in stage '{stage}'; production promotions start from staging",
                         hint=f"run `mlplat models promote {self.name} {self.version} --to staging` first")
        return stage

    def _already(self, stage: str) -> dict[str, Any]:
        # Idempotent rerun (e.g. after a kill right after the commit): re-mirror the alias, change nothing else.
        if stage == self.target:
            self.registry.set_alias(self.name, reg.alias_for(self.spec, self.environment, stage), self.version)
        self.progress("stage", "done", f"{self.what} is already in {stage} in '{self.environment}'")
        return {"model": self.name, "version": self.version, "environment": self.environment, "stage": stage,
                "changed": False}

    def _open(self, row: dict[str, Any]) -> None:
        """Resume this promotion if a killed run left it; abandon another unfinished one; else start."""
        with self.db.transaction() as conn:
            running = conn.execute("SELECT * FROM promotions WHERE model=? AND environment=? AND state='running'",
                                   (self.name, self.environment)).fetchone()
            if running is not None and (running["version"], running["target"]) == (self.version, self.target):
                self.id, self.steps = running["id"], json.loads(running["steps"])
                audit.append(conn, actor=self.ctx.user, method=self.ctx.method, action="promotion.step", model=self.name,
                             version=self.version, environment=self.environment,
                             reason=f"resumed promotion #{self.id} to {self.target}", digest=row["artifact_digest"],
                             evidence={"promotion": self.id, "steps": self.steps})
                resumed = True
            else:
                if running is not None:
                    conn.execute("UPDATE promotions SET state='abandoned', error=?, updated_at=? WHERE id=?",
                                 (f"interrupted; superseded by a promotion of version {self.version} to {self.target}",
                                  time.time(), running["id"]))
                    audit.append(conn, actor=self.ctx.user, method=self.ctx.method, action="promotion.abandoned", model=self.name,
                                 version=running["version"], environment=self.environment,
                                 reason=f"interrupted promotion #{running['id']} superseded",
                                 evidence={"promotion": running["id"], "steps": json.loads(running["steps"])})
                    self._stop_recorded(json.loads(running["steps"]))
                now = time.time()
                cur = conn.execute(
                    "INSERT INTO promotions (model, version, environment, target, state, steps, requested_by, created_at, "
                    "updated_at) VALUES (?,?,?,?,'running','{}',?,?,?)",
                    (self.name, self.version, self.environment, self.target, self.ctx.user, now, now))
                self.id = cur.lastrowid
                audit.append(conn, actor=self.ctx.user, method=self.ctx.method, action="promotion.requested", model=self.name,
                             version=self.version, environment=self.environment, reason=f"promote to {self.target}",
                             digest=row["artifact_digest"], evidence={"promotion": self.id, "target": self.target})
                resumed = False
        if resumed:
            done = [s for s in STEPS if self.steps.get(s, {}).get("status") == "done"]
            self.progress("resume", "info", f"resuming promotion #{self.id}" +
                          (f" after {', '.join(done)}" if done else ""))

    def _fail(self, exc: BaseException) -> None:
        if self.id is None:
            return
        message = getattr(exc, "message", None) or str(exc)
        step = next((s for s in STEPS if self.steps.get(s, {}).get("status") == "running"), None)
        if step:
            self.steps[step]["status"] = "failed"
            self.steps[step]["finished"] = time.time()
        self._stop_recorded(self.steps)
        with self.db.transaction() as conn:
            self._save(conn, state="failed", error=f"{type(exc).__name__}: {message}"[:2000])
            audit.append(conn, actor=self.ctx.user, method=self.ctx.method, action="promotion.failed", model=self.name,
                         version=self.version, environment=self.environment, reason=message[:1000],
                         evidence={"promotion": self.id, "step": step, "error": type(exc).__name__})

    def _stop_recorded(self, steps: dict[str, Any]) -> None:
        detail = (steps.get("endpoint") or {}).get("detail")
        if detail and "handle" in detail:
            try:
                self.delivery.stop_endpoint(Endpoint(**{k: detail[k] for k in ("url", "kind", "handle", "port")}))
            except Exception:  # best effort: a dead endpoint is the goal
                pass

    # --- the steps -------------------------------------------------------------------------------

    def _done(self, step: str) -> bool:
        return self.steps.get(step, {}).get("status") == "done"

    def _steps(self, row: dict[str, Any]) -> dict[str, Any]:
        digest = row["artifact_digest"]
        for step in STEPS:
            if self._done(step):
                self.progress(step, "skipped", "done before the interruption")
                continue
            if step == "approval" and self.target != "production":
                self.steps[step] = {"status": "done", "detail": "not needed for staging"}
                continue
            if step == "endpoint" and self._done("integration"):
                continue
            self.progress(step, "running", "")
            self._mark(step, "running")
            _fault(step, "start")
            detail = getattr(self, f"_step_{step}")(row, digest)
            _fault(step, "end")
            if step != "stage":
                self._mark(step, "done", detail)
            self.progress(step, "done", _short(step, detail))
        return {"model": self.name, "version": self.version, "environment": self.environment, "stage": self.target,
                "changed": True, "promotion": self.id, "steps": self.steps}

    def _step_gate(self, row: dict[str, Any], digest: str) -> dict[str, Any]:
        report = gate_service.run_gate(self.spec, self.ctx, self.name, self.version, self.environment,
                                       registry=self.registry)
        detail: dict[str, Any] = {"digest": report["digest"], "passed": report["passed"],
                                  "metrics": report["metrics"], "summary": gate_service.summary(report)}
        self.steps["gate"]["detail"] = detail
        gate_service.raise_if_failed(report)
        return detail

    def _step_approval(self, row: dict[str, Any], digest: str) -> dict[str, Any]:
        conn = self.db.connect()
        try:
            # rules of the last `mlplat up`, decisions re-checked against its approver list and the audit log
            st = approvals_service.status(conn, self.spec, self.name, self.version, self.environment)
        finally:
            conn.close()
        approvals_service.require_audited(st, f"promoting {self.what}")
        gate_digest = self.steps["gate"]["detail"]["digest"]
        if st["state"] == "not_required":
            return {"state": "not_required", "detail": f"{st['risk_tier']} risk: promoted without approval"}
        if st["binding"]["gate_digest"] != gate_digest:
            raise Denied(f"{self.what}: the approvals are bound to another gate report", hint="rerun the promotion")
        if st["state"] == "approved":
            return {"state": "approved", "approvers": [d["approver"] for d in st["decisions"] if d["valid"]]}
        if st["state"] == "rejected":
            who = next(d for d in st["decisions"] if d["valid"] and d["decision"] == "rejected")
            raise Denied(f"{self.what} was rejected by {who['approver']}: {who['reason']}",
                         hint="register and promote a new version")
        void = [d for d in st["decisions"] if not d["valid"]]
        raise Denied(
            f"{self.what} is critical and needs {st['required']} approval(s) from {', '.join(st['approvers'])}; "
            f"it has {st['approvals']}" + (f" ({len(void)} earlier decision(s) are void: the artifact or gate report "
                                           f"changed since)" if void else ""),
            hint=f"an approver (not {st['author']}) runs `mlplat models approve {self.name} {self.version} --reason ...`, "
                 f"then rerun this promotion")

    def _step_package(self, row: dict[str, Any], digest: str) -> dict[str, Any]:
        from mlplat.services import packaging

        model_dir = reg.verify_row(self.registry, row)
        if row["framework"] == "container":  # the registered image is the package: nothing to build
            image = container_models.image_of(model_dir)
            return {"context_dir": str(model_dir), "digest": image.digest or image.image_id, "image": image.reference,
                    "image_id": image.image_id, "engine": "podman"}
        env = self.registry.run_environment(row["run_id"])
        pins = packaging.requirements(row["lineage"].get("environment", {}).get("requirements", []),
                                      {k.lower(): v for k, v in (env.get("packages") or {}).items()})
        package = self.delivery.package(self.name, self.version, model_dir, pins, artifact_digest=digest)
        # The copy in the build context is what runs: check it against the sealed manifest too.
        manifests.verify(Path(package.context_dir) / "model", row["manifest"], row["seal"],
                         self.registry.signing_key(), what=f"the packaged copy of {self.what}")
        return {"context_dir": package.context_dir, "digest": package.digest, "image": package.image,
                "engine": package.engine}

    def _package(self) -> Package:
        d = self.steps["package"]["detail"]
        return Package(d["context_dir"], d["digest"], d.get("image"), d.get("engine"))

    def _endpoint(self) -> Endpoint | None:
        d = (self.steps.get("endpoint") or {}).get("detail")
        return Endpoint(d["url"], d["kind"], d["handle"], d["port"]) if d and "handle" in d else None

    def _step_endpoint(self, row: dict[str, Any], digest: str) -> dict[str, Any]:
        previous = self._endpoint()
        if previous is not None and self.delivery.endpoint_alive(previous):
            return previous.__dict__ | {"note": "reused the endpoint started before the interruption"}
        package = self._package()
        if row["framework"] == "container":
            # the image registered, by its id, started from the verified folder that names it; removed by name
            running = container_models.start(container_models.image_of(reg.verify_row(self.registry, row)),
                                             what=self.what)
            running.log.unlink(missing_ok=True)  # read only while it starts; it is stopped by name later
            started: dict[str, Any] = Endpoint(running.url, "container", running.name, running.port).__dict__ | {
                "note": f"container image {package.image} ({running.image.protocol} protocol)"}
            self.steps["endpoint"]["detail"] = started
            self._save()
            return started
        manifests.verify(Path(package.context_dir) / "model", row["manifest"], row["seal"],
                         self.registry.signing_key(), what=f"the packaged copy of {self.what}")
        endpoint = self.delivery.start_endpoint(package, self.name, self.version)
        note = ("container image " + package.image if package.image else
                "no container engine (buildah and podman not found): the model server runs as a local process")
        detail: dict[str, Any] = endpoint.__dict__ | {"note": note}
        self.steps["endpoint"]["detail"] = detail
        self._save()
        return detail

    def _step_integration(self, row: dict[str, Any], digest: str) -> dict[str, Any]:
        endpoint = self._endpoint()
        if endpoint is None or not self.delivery.endpoint_alive(endpoint):
            self._step_endpoint(row, digest)  # the endpoint died with the interrupted run: start it again
            endpoint = self._endpoint()
        if endpoint is None:  # _step_endpoint records the endpoint it started; endpoint.url would fail the same way
            raise AttributeError("no endpoint recorded for the integration tests")
        try:
            tests = container_integration_tests if row["framework"] == "container" else integration_tests
            results = tests(self.spec, row, endpoint.url, self.registry)
        finally:
            self.delivery.stop_endpoint(endpoint)
        failed = [t for t in results if not t["passed"]]
        if failed:
            self.steps["integration"]["detail"] = {"tests": results}
            raise CheckFailed(f"staging integration tests failed for {self.what}: " +
                              "; ".join(f"{t['test']}: {t['detail']}" for t in failed),
                              hint="see `mlplat models show` for the full results", tests=results)
        return {"tests": results, "endpoint_stopped": True}

    def _step_stage(self, row: dict[str, Any], digest: str) -> dict[str, Any]:
        now = time.time()
        with self.db.transaction() as conn:
            current = reg.version_row(conn, self.name, self.version)
            if current["artifact_digest"] != digest:
                raise Conflict(f"the artifact of {self.what} changed during the promotion",
                               hint="rerun the promotion from the start")
            previous = None
            ledger = ledger_service.Ledger(conn)
            ledger.stage(self.name, self.version, self.environment)  # refuses a hand-set stage or a broken chain
            if self.target == "production":
                st = approvals_service.status(conn, self.spec, self.name, self.version, self.environment)
                approvals_service.require_audited(st, f"promoting {self.what}")
                if st["state"] not in ("approved", "not_required"):
                    raise Denied(f"{self.what}: approvals are no longer valid ({st['state']})")
                previous = ledger.production_version(self.name, self.environment)
                if previous is not None and previous != self.version:
                    conn.execute("UPDATE model_stages SET stage='archived', updated_at=?, updated_by=? WHERE model=? "
                                 "AND version=? AND environment=?",
                                 (now, self.ctx.user, self.name, previous, self.environment))
            conn.execute(
                "INSERT INTO model_stages (model, version, environment, stage, updated_at, updated_by) VALUES "
                "(?,?,?,?,?,?) ON CONFLICT(model, version, environment) DO UPDATE SET stage=excluded.stage, "
                "updated_at=excluded.updated_at, updated_by=excluded.updated_by",
                (self.name, self.version, self.environment, self.target, now, self.ctx.user))
            detail = {"stage": self.target, "previous_production": previous}
            self.steps["stage"] = {"status": "done", "started": self.steps["stage"].get("started"), "finished": now,
                                   "detail": detail}
            self._save(conn, state="succeeded", step="stage")
            gate_digest = self.steps["gate"]["detail"]["digest"]
            audit.append(conn, actor=self.ctx.user, method=self.ctx.method, action="stage.changed", model=self.name,
                         version=self.version, environment=self.environment, reason=f"promoted to {self.target}", digest=digest,
                         evidence={"promotion": self.id, "gate_digest": gate_digest, "stage": self.target,
                                   "approval": self.steps.get("approval", {}).get("detail"),
                                   "archived": previous})
            audit.append(conn, actor=self.ctx.user, method=self.ctx.method, action="promotion.succeeded", model=self.name,
                         version=self.version, environment=self.environment, reason=f"promoted to {self.target}",
                         digest=digest, evidence={"promotion": self.id, "package": self.steps["package"]["detail"]})
            _fault("stage", "commit")  # inside the transaction: a kill here must leave nothing changed
        # The MLflow alias mirrors the committed state; a rerun re-mirrors it if we die here.
        self.registry.set_alias(self.name, reg.alias_for(self.spec, self.environment, self.target), self.version)
        return detail


def _short(step: str, detail: Any) -> str:
    if not isinstance(detail, dict):
        return ""
    if step == "gate":
        return cast(str, detail.get("summary", ""))
    if step == "approval":
        return cast(str, detail.get("detail")) or f"approved by {', '.join(detail.get('approvers', []))}"
    if step == "package":
        return cast(str, detail.get("image") or detail.get("context_dir", ""))
    if step == "endpoint":
        return f"{detail.get('url')} ({detail.get('note')})"
    if step == "integration":
        return ", ".join(f"{t['test']} ok" for t in detail.get("tests", []))
    if step == "stage":
        return f"now {detail.get('stage')}" + (f"; version {detail['previous_production']} archived"
                                               if detail.get("previous_production") else "")
    return ""


# --- integration tests against the staging endpoint -------------------------------------------------


def integration_tests(spec: StackSpec, row: dict[str, Any], url: str, registry: ModelRegistry) -> list[dict[str, Any]]:
    """Health, predictions equal to in-process predictions on held-out rows, a malformed payload
    rejected with 4xx, and the p95 latency of single-row requests within ``serving.latencyBudgetMs``."""
    import httpx
    import numpy as np

    results: list[dict[str, Any]] = []

    def record(test: str, passed: bool, detail: str, **extra: Any) -> None:
        results.append({"test": test, "passed": bool(passed), "detail": detail, **extra})

    with httpx.Client(base_url=url, timeout=30) as client:
        try:
            health = [client.get(p).status_code for p in ("/ping", "/v2/health/ready")]
            record("health", all(s == 200 for s in health), f"/ping and /v2/health/ready returned {health}")
        except httpx.HTTPError as exc:
            record("health", False, f"unreachable: {exc}")
            return results

        holdout = gate_service.resolve_holdout(spec, row)
        features = gate_service.model_features(row)
        frame, _, _ = gate_service.load_holdout(holdout, Path(spec.project_dir), features=features)
        X = (frame[features] if features else frame.drop(columns=[holdout["label"]])).head(SAMPLE_ROWS)
        from mlplat.services import model_loading

        # What the endpoint should answer, computed without deserializing a pickle in this process.
        local = np.asarray(model_loading.score(reg.verify_row(registry, row), X, serving=True,
                                               what=f"{row['model']} version {row['version']}").predictions)
        payload = {"dataframe_split": {"columns": [str(c) for c in X.columns],
                                       "data": json.loads(X.to_json(orient="values"))}}
        response = client.post("/invocations", json=payload)
        if response.status_code != 200:
            record("predictions", False, f"/invocations returned {response.status_code}: {response.text[:200]}")
        else:
            remote = np.asarray(response.json().get("predictions"))
            same = remote.shape == local.shape and (
                np.allclose(remote.astype(float), local.astype(float), rtol=1e-6, atol=1e-9)
                if np.issubdtype(local.dtype, np.number) else bool((remote == local).all()))
            record("predictions", same, f"{len(X)} held-out rows: endpoint {'matches' if same else 'differs from'} "
                                        f"in-process predictions", rows=len(X))

        bad = client.post("/invocations", content=b'{"dataframe_split": [1, 2', headers={"content-type": "application/json"})
        wrong = client.post("/invocations", json={"dataframe_split": {"columns": ["no_such_column"], "data": [[1]]}})
        statuses = [bad.status_code, wrong.status_code]
        record("malformed payload", all(400 <= s < 500 for s in statuses),
               f"truncated JSON -> {statuses[0]}, unknown column -> {statuses[1]} (want 4xx)")

        one = {"dataframe_split": {"columns": payload["dataframe_split"]["columns"],
                                   "data": payload["dataframe_split"]["data"][:1]}}
        client.post("/invocations", json=one)  # warm-up
        timings = []
        for _ in range(LATENCY_REQUESTS):
            start = time.perf_counter()
            client.post("/invocations", json=one)
            timings.append((time.perf_counter() - start) * 1000)
        p95 = float(np.percentile(timings, 95))
        budget = spec.serving.latency_budget_ms
        record("latency", p95 <= budget, f"p95 {p95:.1f} ms over {LATENCY_REQUESTS} requests (budget {budget:.0f} ms)",
               p95_ms=round(p95, 2))
    return results


def container_integration_tests(spec: StackSpec, row: dict[str, Any], url: str,
                                registry: ModelRegistry) -> list[dict[str, Any]]:
    """The staging tests of a version registered from an image, in the image's own protocol: its
    readiness route, one prediction per held-out row, a truncated JSON body refused with 4xx, and the
    p95 latency of single-row requests within ``serving.latencyBudgetMs``."""
    import httpx
    import numpy as np

    image = container_models.image_of(reg.verify_row(registry, row))
    what = f"{row['model']} version {row['version']}"
    results: list[dict[str, Any]] = []

    def record(test: str, passed: bool, detail: str, **extra: Any) -> None:
        results.append({"test": test, "passed": bool(passed), "detail": detail, **extra})

    ready = container_models.READY_PATHS[image.protocol]
    route = f"/v2/models/{image.model_name or row['model']}/infer" if image.protocol == "v2" else "/invocations"
    with httpx.Client(base_url=url, timeout=30) as client:
        try:
            status = client.get(ready).status_code
            record("health", status == 200, f"{ready} returned {status}")
        except httpx.HTTPError as exc:
            record("health", False, f"unreachable: {exc}")
            return results
        holdout = gate_service.resolve_holdout(spec, row)
        features = gate_service.model_features(row)
        frame, _, _ = gate_service.load_holdout(holdout, Path(spec.project_dir), features=features)
        X = (frame[features] if features else frame.drop(columns=[holdout["label"]])).head(SAMPLE_ROWS)
        try:
            out = container_models.invoke(client, image, X, model=row["model"], what=what)
            record("predictions", True, f"{len(X)} held-out rows: {len(out)} predictions", rows=len(X))
        except MlplatError as exc:
            record("predictions", False, exc.message)
        bad = client.post(route, content=b'{"inputs": [1, 2', headers={"content-type": "application/json"})
        record("malformed payload", 400 <= bad.status_code < 500, f"truncated JSON -> {bad.status_code} (want 4xx)")
        one = X.head(1)
        timings = []
        for _ in range(LATENCY_REQUESTS):
            start = time.perf_counter()
            try:
                container_models.invoke(client, image, one, model=row["model"], what=what)
            except MlplatError:
                pass  # counted by the predictions test
            timings.append((time.perf_counter() - start) * 1000)
        p95 = float(np.percentile(timings, 95))
        budget = spec.serving.latency_budget_ms
        record("latency", p95 <= budget, f"p95 {p95:.1f} ms over {LATENCY_REQUESTS} requests (budget {budget:.0f} ms)",
               p95_ms=round(p95, 2))
    return results


def promote(spec: StackSpec, ctx: Context, name: str, version: int, target: str, *,
            environment: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
    return Promotion(spec, ctx, name, version, target, environment, progress).run()


def history(conn: sqlite3.Connection, name: str, version: int | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM promotions WHERE model=?" + (" AND version=?" if version is not None else "") + " ORDER BY id"
    rows = conn.execute(sql, (name, int(version)) if version is not None else (name,)).fetchall()
    return [dict(r) | {"steps": json.loads(r["steps"])} for r in rows]
