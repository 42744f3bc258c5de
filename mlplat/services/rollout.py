"""Rollout rules: the one rollout spec (direct, ab, canary, shadow), canary analysis, rollback.

State lives in the platform database (migration ``0003_serving``): ``endpoints`` holds
what each (model, environment) routes now, ``rollouts`` the canary state machines,
``rollout_events`` every decision. Each transition is one transaction that also
appends to the audit log and bumps ``serving_revision``, which the running gateway
polls, so a change is live within a poll interval and a crash never half-applies it.

The analysis functions are pure: they take per-variant statistics and thresholds
and return a decision with its reasons. :class:`CanaryJudge` is the one canary
controller pass of every provider: it reads a provider's
:class:`~mlplat.contracts.canary.CanaryMetrics` source, judges, re-checks a latency or
prediction-shift breach on fresh traffic, and applies the decision through
:func:`advance` / :func:`rollback` / :func:`record_analysis`.
"""
from __future__ import annotations

import builtins
import dataclasses
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mlplat.contracts.canary import CanaryMetrics, VariantStats
from mlplat.db import Database
from mlplat.errors import Conflict, MlplatError, NotFound
from mlplat.identity import SYSTEM
from mlplat.services.monitoring.drift import psi  # the platform's one PSI (ro.psi)

STRATEGIES = ("direct", "ab", "canary", "shadow")
MAX_SHADOW_PERCENT = 50
# Sub-millisecond p95s are noise-dominated: a latency breach also needs the candidate to be
# this much slower in absolute terms, so 0.3 ms vs 0.2 ms is not "1.5x slower".
LATENCY_SLACK_MS = 2.0


class RolloutError(MlplatError):
    """A deploy or rollback request that cannot be applied as asked."""


# --- the spec -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    variant: str
    version: int
    weight: int


@dataclass(frozen=True)
class CanaryPolicy:
    steps: tuple[int, ...]
    bake_seconds: float
    max_error_rate: float
    max_latency_ratio: float
    max_prediction_shift: float
    min_requests: int

    @classmethod
    def from_stack(cls, canary: Any, *, steps: Sequence[int] | None = None, bake: float | None = None) -> CanaryPolicy:
        policy = cls(tuple(steps or canary.steps), float(canary.bake_seconds if bake is None else bake),
                     canary.max_error_rate, canary.max_latency_ratio, canary.max_prediction_shift, canary.min_requests)
        policy.check()
        return policy

    def check(self) -> None:
        steps = list(self.steps)
        if not steps or any(not 0 < s <= 100 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])):
            raise RolloutError(f"canary steps {steps} must be increasing percentages between 1 and 100",
                               hint="for example --steps 1,10,50,100")
        if steps[-1] != 100:
            raise RolloutError(f"the last canary step must be 100, got {steps[-1]}", hint="end --steps with 100")
        if self.bake_seconds < 0:
            raise RolloutError("--bake must be zero or more seconds")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CanaryPolicy:
        data = json.loads(text)
        data["steps"] = tuple(data["steps"])
        return cls(**data)


@dataclass
class Endpoint:
    model: str
    environment: str
    strategy: str
    routes: list[Route]
    shadow: dict[str, int] | None
    stable_version: int
    previous_version: int | None
    rollout_id: int | None = None
    updated_at: float = 0.0
    updated_by: str = ""

    @property
    def candidate_version(self) -> int | None:
        others = [r.version for r in self.routes if r.version != self.stable_version]
        if others:
            return others[0]
        return self.shadow["version"] if self.shadow else None

    def versions(self) -> set[int]:
        """Every version the gateway keeps loaded for this endpoint (warm rollback target included)."""
        out = {r.version for r in self.routes} | {self.stable_version}
        if self.shadow:
            out.add(self.shadow["version"])
        if self.previous_version is not None:
            out.add(self.previous_version)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "environment": self.environment, "strategy": self.strategy,
                "routes": [asdict(r) for r in self.routes], "shadow": self.shadow,
                "stable_version": self.stable_version, "previous_version": self.previous_version,
                "rollout_id": self.rollout_id, "updated_at": self.updated_at, "updated_by": self.updated_by}


def version_number(text: str) -> int:
    """A version as printed (``v3``) or as a number (``3``); ``ValueError`` otherwise."""
    text = text.strip()
    return int(text[1:] if text[:1] in ("v", "V") else text)


def parse_weights(text: str | None, stable: int | None, version: int) -> list[Route]:
    """``--weights``: ``"90,10"`` (stable, new) or ``"3=90,4=10"`` / ``"v3=90,v4=10"`` (version=weight);
    default 50/50."""
    if not text:
        if stable is None or stable == version:
            raise RolloutError("an A/B deployment needs two versions",
                               hint="deploy one with --strategy direct first, or give --weights 3=50,4=50")
        pairs = [(stable, 50), (version, 50)]
    else:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            if all("=" in p for p in parts):
                pairs = [(version_number(p.split("=")[0]), int(p.split("=")[1])) for p in parts]
            else:
                if len(parts) != 2 or stable is None:
                    raise RolloutError(f"--weights {text!r}: give two weights (current stable, new version) "
                                       "or version=weight pairs", hint="for example --weights 90,10 or --weights 3=90,4=10")
                pairs = [(stable, int(parts[0])), (version, int(parts[1]))]
        except ValueError:
            raise RolloutError(f"--weights {text!r} is not a list of integers",
                               hint="for example --weights 90,10 or --weights 3=90,4=10") from None
    versions = [v for v, _ in pairs]
    if len(set(versions)) != len(versions):
        raise RolloutError(f"--weights names a version twice: {text}")
    if version not in versions:
        raise RolloutError(f"--weights must include the deployed version {version}")
    if any(w < 0 for _, w in pairs) or sum(w for _, w in pairs) != 100:
        raise RolloutError(f"--weights must be non-negative and sum to 100, got {sum(w for _, w in pairs)}")
    if len(pairs) < 2:
        raise RolloutError("an A/B deployment needs at least two versions")
    return [Route(f"v{v}", v, w) for v, w in pairs]


def canary_routes(stable: int, candidate: int, percent: int) -> list[Route]:
    # candidate first: routing buckets below `percent` go to it, so sticky keys stay put as it grows
    return [Route("canary", candidate, percent), Route("stable", stable, 100 - percent)]


# --- statistics ---------------------------------------------------------------------------------


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def two_proportion_test(success_a: int, n_a: int, success_b: int, n_b: int) -> dict[str, float | None]:
    """Two-sided z-test that two rates differ: ``{"z", "p_value"}`` (None without data)."""
    if not n_a or not n_b:
        return {"z": None, "p_value": None}
    pooled = (success_a + success_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return {"z": 0.0, "p_value": 1.0}
    z = (success_a / n_a - success_b / n_b) / se
    return {"z": round(z, 4), "p_value": round(math.erfc(abs(z) / math.sqrt(2)), 6)}


# --- canary analysis ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    action: str  # "wait" | "pass" | "rollback"
    reasons: tuple[str, ...]
    metrics: dict[str, Any]


def analyze(stable: VariantStats, candidate: VariantStats, policy: CanaryPolicy, *, elapsed: float) -> Decision:
    """Judge the candidate of one canary step against the stable version.

    A breach rolls back as soon as the candidate has served ``min_requests`` (errors
    also earlier, once they alone exceed the budget for ``min_requests``); a step
    passes when the bake time is over, the candidate has served ``min_requests`` and
    nothing breached. Latency and prediction shift need stable traffic to compare with
    (the stable window spans the whole rollout, so the 100 % step still has a baseline).
    A latency breach also needs the candidate's p95 to be ``LATENCY_SLACK_MS`` slower.
    """
    metrics = {"stable": stable.summary(), "candidate": candidate.summary(), "elapsed_s": round(elapsed, 2)}
    reasons: list[str] = []
    enough = candidate.requests >= policy.min_requests
    # errors beyond what the whole min_requests window could tolerate: no need to wait
    error_budget = policy.max_error_rate * max(policy.min_requests, candidate.requests)
    if candidate.errors > error_budget or (enough and candidate.error_rate > policy.max_error_rate):
        reasons.append(f"error rate {candidate.error_rate:.1%} over {candidate.requests} requests exceeds "
                       f"{policy.max_error_rate:.1%}")
    if enough and stable.latencies_ms and candidate.latencies_ms:
        s95, c95 = stable.p95_ms or 0.0, candidate.p95_ms or 0.0
        ratio = c95 / max(s95, 0.05)
        metrics["latency_ratio"] = round(ratio, 3)
        if ratio > policy.max_latency_ratio and c95 - s95 > LATENCY_SLACK_MS:
            reasons.append(f"p95 latency {c95:.2f} ms is {ratio:.2f}x stable's {s95:.2f} ms "
                           f"(limit {policy.max_latency_ratio}x)")
    if enough and stable.predictions and candidate.predictions:
        shift = psi(stable.predictions, candidate.predictions)
        metrics["prediction_psi"] = round(shift, 4)
        if shift > policy.max_prediction_shift:
            reasons.append(f"prediction distribution shifted: PSI {shift:.3f} > {policy.max_prediction_shift}")
    if reasons:
        return Decision("rollback", tuple(reasons), metrics)
    if not enough:
        return Decision("wait", (f"candidate served {candidate.requests} of {policy.min_requests} requests "
                                 "needed for a verdict",), metrics)
    if elapsed < policy.bake_seconds:
        return Decision("wait", (f"baking: {elapsed:.0f} of {policy.bake_seconds:.0f} s",), metrics)
    return Decision("pass", ("error rate, latency and prediction shift within limits",), metrics)


def errors_breached(decision: Decision) -> bool:
    """Whether the error rate is among a rollback decision's reasons (acted on at once)."""
    return any(reason.startswith("error rate") for reason in decision.reasons)


@dataclass(frozen=True)
class Verdict:
    """One judgement of one running rollout.

    ``decision`` is what the judge concluded (``None``: the source had no view of the current
    step, nothing was decided). ``acted`` is ``"rollback"``, ``"step"`` or ``"promoted"`` when a
    change was applied, else ``None`` (waiting, a breach held for a re-check, or a change another
    controller made first). ``endpoint`` is the endpoint after that change and ``applied`` what the
    judge's ``on_change`` hook returned for it.
    """

    rollout_id: int
    decision: Decision | None
    acted: str | None = None
    endpoint: Endpoint | None = None
    applied: Any = None


class CanaryJudge:
    """The canary controller pass of every provider, fed by that provider's metrics source.

    Per running rollout: :func:`analyze` the candidate of the current step against the stable
    version; a provider's own alarm and an error-rate breach roll back at once. A latency or
    prediction-shift breach is held as suspect and judged again on fresh traffic only (what
    the candidate served after the first breaching look, at least ``max(5, min_requests // 2)``
    requests), so one stall of a loaded machine (a GC pause, an fsync, a cold start) does not
    roll back a good version; if the fresh traffic passes, the step is judged on it. A pass
    advances (or promotes after the last step); a wait is recorded for ``mlplat rollout
    status``, at most once per ``record_every`` seconds per rollout.

    Suspicions live in this object: a controller keeps one judge across its passes.
    ``on_change`` runs inside the transaction that changed the endpoint (a cloud provider applies
    the new routing there, so a failed cloud call leaves the ledger as it was).
    """

    def __init__(self, source: CanaryMetrics, *, actor: str, clock: Callable[[], float] = time.time,
                 record_every: float = 0.0, instance_type: str | None = None, price_per_hour: float | None = None,
                 on_change: Callable[[Endpoint], Any] | None = None):
        self.source = source
        self.actor = actor
        self.clock = clock
        self.record_every = record_every
        self.instance_type = instance_type
        self.price_per_hour = price_per_hour
        self.on_change = on_change
        self._suspect: dict[int, tuple[int, float]] = {}  # rollout id -> (step, mark of the first breaching look)

    def decide(self, rollout: Mapping[str, Any], now: float) -> tuple[Decision | None, bool]:
        """The decision for one running rollout at ``now``, and whether it is a breach held for a re-check
        (then a ``wait`` that is not recorded). Reads the source; changes no store."""
        rid, step = int(rollout["id"]), int(rollout["step_index"])
        window = self.source.window(rollout, now)
        if window is None:
            return None, False
        policy = CanaryPolicy.from_json(rollout["policy"])
        elapsed = now - float(rollout["step_started_at"])
        context = {"step_index": step, "percent": policy.steps[step], **window.metrics}
        decision = analyze(window.stable, window.candidate, policy, elapsed=elapsed)
        if window.alarms:
            decision = Decision("rollback", tuple(window.alarms), decision.metrics)
        decision.metrics.update(context)
        if decision.action != "rollback" or window.alarms or errors_breached(decision):
            if decision.action != "rollback":
                self._suspect.pop(rid, None)
            return decision, False
        held = Decision("wait", ("breach held until fresh traffic confirms it: " + "; ".join(decision.reasons),),
                        decision.metrics)
        suspect = self._suspect.get(rid)
        fresh = None
        if suspect is not None and suspect[0] == step:
            fresh = self.source.since(rollout, suspect[1], now)
        if fresh is None:
            self._suspect[rid] = (step, window.mark)
            return held, True
        if fresh.requests < max(5, policy.min_requests // 2):
            return held, True
        recheck = dataclasses.replace(policy, min_requests=fresh.requests)
        decision = analyze(window.stable, fresh, recheck, elapsed=elapsed)
        decision.metrics.update({**context, "rechecked": True})
        if decision.action != "rollback":  # the stall passed: the step is judged on the fresh samples
            self._suspect.pop(rid, None)
        return decision, False

    def judge(self, db: Database, conn: sqlite3.Connection, rollout: Mapping[str, Any],
              recorded: dict[int, float] | None = None) -> Verdict:
        """Decide for one running rollout and apply the decision, each change one transaction on ``conn``.
        ``recorded`` (rollout id -> when its last wait was recorded) is the caller's, kept across passes."""
        recorded = {} if recorded is None else recorded
        rid, step = int(rollout["id"]), int(rollout["step_index"])
        now = self.clock()
        decision, held = self.decide(rollout, now)
        if decision is None or held:
            return Verdict(rid, decision)
        if decision.action in ("rollback", "pass"):
            with db.transaction(conn):
                if decision.action == "rollback":
                    done = rollback(conn, model=rollout["model"], environment=rollout["environment"], actor=self.actor,
                                    method=SYSTEM,  # the controller acts on its own
                                    reason="canary breach: " + "; ".join(decision.reasons), metrics=decision.metrics,
                                    expect_rollout=rid, now=now, instance_type=self.instance_type,
                                    price_per_hour=self.price_per_hour)
                else:
                    done = advance(conn, rid, actor=self.actor, method=SYSTEM, decision=decision, expect_step=step, now=now,
                                   instance_type=self.instance_type, price_per_hour=self.price_per_hour)
                applied = self.on_change(done) if done is not None and self.on_change is not None else None
            if done is None:
                return Verdict(rid, decision)
            acted = "rollback" if decision.action == "rollback" else (
                "promoted" if done.rollout_id is None else "step")
            return Verdict(rid, decision, acted, done, applied)
        if now - recorded.get(rid, 0.0) >= self.record_every:
            with db.transaction(conn):
                record_analysis(conn, rid, decision, now)
            recorded[rid] = now
        return Verdict(rid, decision)


def judge_running(db: Database, judge: CanaryJudge, model: str, environment: str) -> Verdict:
    """Judge the running canary of ``model`` in ``environment`` once (a cloud's ``step``); ``Conflict``
    when none runs."""
    conn = db.connect()
    try:
        row = conn.execute("SELECT * FROM rollouts WHERE model=? AND environment=? AND state='running'",
                           (model, environment)).fetchone()
        rollout = dict(row) if row else None
        if rollout is None:
            raise Conflict(f"no canary rollout of '{model}' is running in '{environment}'",
                           hint=f"start one with `mlplat deploy {model} VERSION --env {environment} "
                                "--strategy canary`")
        return judge.judge(db, conn, rollout)
    finally:
        conn.close()


def step_report(verdict: Verdict, current: Mapping[str, Any], cloud: str) -> dict[str, Any]:
    """What a cloud's ``step`` answers for ``verdict``, given the endpoint as the ledger shows it now
    (``current``): the action taken, its reasons and metrics, the endpoint, and under the key ``cloud``
    what the cloud was told (``None`` while the judge had no view of the current step)."""
    decision = verdict.decision
    endpoint = {k: v for k, v in current.items() if k not in ("history", "events")}
    if decision is None:
        return {"action": "wait", "reasons": ["no view of the current step yet"], "metrics": {},
                "endpoint": endpoint, cloud: None}
    action = decision.action if decision.action != "pass" else (
        "promoted" if current.get("rollout_id") is None else "step")
    return {"action": action, "reasons": list(decision.reasons), "metrics": decision.metrics,
            "endpoint": endpoint, cloud: verdict.applied}



# --- checks of a deploy request (every serving provider's, before it applies one) -----------------


@dataclass
class CheckedDeploy:
    """A deploy request that passed the provider-neutral checks, ready to apply."""

    canary: CanaryPolicy | None
    shadow_percent: int | None
    evidence: dict[str, Any]  # slimmed: stage, digests, approval state
    versions: list[int]  # the version deployed first, then any other A/B variant named in the weights


def check_deploy(spec: Any, ctx: Any, name: str, version: int, *, environment: str, strategy: str, weights: str | None,
                 steps: Sequence[int] | None, bake_seconds: float | None, percent: int | None) -> CheckedDeploy:
    """Validate the rollout spec and that every version it names may serve in ``environment``
    (gate passed; approvals for production). Reads only; raises on the first refusal."""
    from mlplat.services import deployability

    if strategy not in STRATEGIES:
        raise RolloutError(f"unknown strategy '{strategy}'", hint="one of: " + ", ".join(STRATEGIES))
    canary = CanaryPolicy.from_stack(spec.serving.canary, steps=steps, bake=bake_seconds) \
        if strategy == "canary" else None
    if strategy == "shadow":
        if percent is None:
            percent = spec.serving.shadow.percent
        if not 1 <= int(percent) <= MAX_SHADOW_PERCENT:
            raise RolloutError(f"--percent {percent}: shadow traffic must be between 1 and {MAX_SHADOW_PERCENT} %",
                                  hint="mirror at most half of the traffic")
    evidence = deployability.assert_deployable(spec, ctx, name, int(version), environment)
    versions = [int(version)]
    if strategy == "ab" and weights and "=" in weights:
        named = set()
        for part in (p for p in weights.split(",") if "=" in p):
            try:
                named.add(version_number(part.split("=")[0]))
            except ValueError:
                continue  # not a version: parse_weights refuses the weights with the reason
        others = sorted(named - {int(version)})
        for other in others:
            deployability.assert_deployable(spec, ctx, name, other, environment)
        versions += others
    return CheckedDeploy(canary, percent, _slim(evidence), versions)


def _slim(evidence: dict[str, Any]) -> dict[str, Any]:
    keep = ("stage", "artifact_digest", "gate_digest")
    out = {k: evidence.get(k) for k in keep if k in evidence}
    approvals = evidence.get("approvals")
    if isinstance(approvals, dict):
        out["approvals"] = {k: approvals.get(k) for k in ("required", "state") if k in approvals}
    return out


class LedgerEndpoints:
    """Serving's changes and reads through the ledger: a deploy and a rollback (the ledger's change and the
    provider's ``_apply`` in one transaction: a refused call there leaves the ledger as it was), every
    endpoint, one endpoint. The local provider applies nothing (its gateway follows the ledger); a cloud's
    serving is a :class:`CloudEndpoints`."""

    db: Database
    ctx: Any
    spec: Any

    @property
    def _cost(self) -> dict[str, Any]:
        """The price fields the ledger's deploy and rollback record (the provider's)."""
        raise NotImplementedError

    def _apply(self, endpoint: Endpoint) -> dict[str, Any]:
        """What applying ``endpoint`` outside the ledger answered, merged into the change's result."""
        return {}

    def check_strategy(self, strategy: str) -> None:
        """Refuse a strategy the provider cannot serve (``CapabilityNotSupported``) before anything is read or
        written; every strategy is served unless a provider says otherwise."""

    def deploy(self, name: str, version: int, *, environment: str, strategy: str, weights: str | None = None,
               steps: Sequence[int] | None = None, bake_seconds: float | None = None,
               percent: int | None = None) -> dict[str, Any]:
        """The rollout checked (strategy, spec, deployability), recorded in the ledger and applied (``_apply``)
        in one transaction."""
        self.check_strategy(strategy)
        checked = check_deploy(self.spec, self.ctx, name, version, environment=environment, strategy=strategy,
                               weights=weights, steps=steps, bake_seconds=bake_seconds, percent=percent)
        with self.db.transaction() as conn:
            endpoint = deploy(conn, model=name, environment=environment, version=int(version), strategy=strategy,
                              actor=self.ctx.user, method=self.ctx.method, canary=checked.canary, weights=weights,
                              shadow_percent=checked.shadow_percent, evidence=checked.evidence, **self._cost)
            applied = self._apply(endpoint)
        return endpoint.to_dict() | applied

    def rollback(self, name: str, *, environment: str, to: int | None = None,
                 reason: str | None = None) -> dict[str, Any]:
        """The ledger's rollback and ``_apply`` in one transaction, timed."""
        if to is not None:
            from mlplat.services import deployability

            deployability.assert_deployable(self.spec, self.ctx, name, int(to), environment)
        started = time.time()
        with self.db.transaction() as conn:
            endpoint = rollback(conn, model=name, environment=environment, actor=self.ctx.user,
                                method=self.ctx.method, to=to, reason=reason or "manual rollback",
                                requested_at=started, **self._cost)
            assert endpoint is not None
            applied = self._apply(endpoint)
        out = endpoint.to_dict() | applied
        out["applied_in_s"] = round(time.time() - started, 4)
        return out

    def list(self, environment: str | None = None) -> builtins.list[dict[str, Any]]:
        conn = self.db.connect()
        try:
            return [e.to_dict() for e in list_endpoints(conn, environment)]
        finally:
            conn.close()

    def show(self, name: str, *, environment: str) -> dict[str, Any]:
        conn = self.db.connect()
        try:
            return dict(show(conn, name, environment))
        finally:
            conn.close()


class CloudEndpoints(LedgerEndpoints):
    """What a cloud's serving does through the ledger: :class:`LedgerEndpoints`' changes applied to the
    cloud (the provider's ``apply``, its answer under the key ``cloud_key``), a rollout's status with what
    the cloud reports (the provider's ``describe``), and one judgement of every running canary (the
    provider's ``step``)."""

    cloud_key: str  # "sagemaker", "vertex", "azure"
    describe: Callable[[str, str], Any]
    step: Callable[..., dict[str, Any]]
    apply: Callable[[Any], Any]

    def _apply(self, endpoint: Endpoint) -> dict[str, Any]:
        return {self.cloud_key: self.apply(endpoint)}

    def rollout_status(self, name: str, *, environment: str) -> dict[str, Any]:
        conn = self.db.connect()
        try:
            out = dict(status(conn, name, environment))
        finally:
            conn.close()
        out[self.cloud_key] = self.describe(name, environment)
        return out

    def step_running(self, environment: str) -> None:
        """Judge every running canary in ``environment`` once, printing each outcome."""
        conn = self.db.connect()
        try:
            running = [dict(r) for r in running_rollouts(conn, environment)]
        finally:
            conn.close()
        for rollout in running:
            result = self.step(rollout["model"], environment=environment)
            self.ctx.console.print(f"{rollout['model']}: {result['action']} ({'; '.join(result['reasons'])})",
                                   highlight=False)


# --- persistence -------------------------------------------------------------------------------


def bump_revision(conn: sqlite3.Connection) -> int:
    conn.execute("INSERT OR IGNORE INTO serving_revision (id, revision) VALUES (1, 0)")
    conn.execute("UPDATE serving_revision SET revision = revision + 1 WHERE id = 1")
    return int(conn.execute("SELECT revision FROM serving_revision WHERE id = 1").fetchone()[0])


def revision(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT revision FROM serving_revision WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def _endpoint(row: sqlite3.Row) -> Endpoint:
    return Endpoint(model=row["model"], environment=row["environment"], strategy=row["strategy"],
                    routes=[Route(**r) for r in json.loads(row["routes"])],
                    shadow=json.loads(row["shadow"]) if row["shadow"] else None,
                    stable_version=int(row["stable_version"]),
                    previous_version=None if row["previous_version"] is None else int(row["previous_version"]),
                    rollout_id=row["rollout_id"], updated_at=float(row["updated_at"]), updated_by=row["updated_by"])


def get_endpoint(conn: sqlite3.Connection, model: str, environment: str) -> Endpoint | None:
    row = conn.execute("SELECT * FROM endpoints WHERE model=? AND environment=?", (model, environment)).fetchone()
    return _endpoint(row) if row else None


def list_endpoints(conn: sqlite3.Connection, environment: str | None = None) -> list[Endpoint]:
    if environment is None:
        rows = conn.execute("SELECT * FROM endpoints ORDER BY environment, model").fetchall()
    else:
        rows = conn.execute("SELECT * FROM endpoints WHERE environment=? ORDER BY model", (environment,)).fetchall()
    return [_endpoint(r) for r in rows]


def require_endpoint(conn: sqlite3.Connection, model: str, environment: str) -> Endpoint:
    endpoint = get_endpoint(conn, model, environment)
    if endpoint is None:
        known = [f"{e.model} ({e.environment})" for e in list_endpoints(conn)]
        raise NotFound(f"no deployment of '{model}' in environment '{environment}'",
                       hint=("deployments: " + ", ".join(known)) if known else
                       f"deploy it first: mlplat deploy {model} VERSION --env {environment}")
    return endpoint


def get_rollout(conn: sqlite3.Connection, rollout_id: int) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM rollouts WHERE id=?", (rollout_id,)).fetchone()
    return dict(row) if row else None


def running_rollouts(conn: sqlite3.Connection, environment: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM rollouts WHERE state='running'" + (" AND environment=?" if environment else "")
    return [dict(r) for r in conn.execute(sql + " ORDER BY id", (environment,) if environment else ())]


def events(conn: sqlite3.Connection, model: str, environment: str, limit: int = 50) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM rollout_events WHERE model=? AND environment=? ORDER BY id DESC LIMIT ?",
                        (model, environment, limit)).fetchall()
    out = []
    for r in reversed(rows):
        item = dict(r)
        item["metrics"] = json.loads(item["metrics"])
        out.append(item)
    return out


def _audit(conn: sqlite3.Connection, *, actor: str, method: str, action: str, endpoint: Endpoint, version: int | None,
           reason: str, evidence: Mapping[str, Any]) -> None:
    """Audit a routing change with the full routing it leaves, which the gateway and later changes check
    the ``endpoints`` row against (:mod:`mlplat.services.ledger`)."""
    from mlplat.services import audit, ledger

    audit.append(conn, actor=actor, method=method, action=action, model=endpoint.model, version=version,
                 environment=endpoint.environment, reason=reason,
                 evidence={**dict(evidence), "endpoint": ledger.endpoint_state(endpoint.to_dict())})


def require_audited(conn: sqlite3.Connection, endpoint: Endpoint | None,
                    rollout: Mapping[str, Any] | None = None) -> None:
    """Refuse to build on routing that no audited deployment produced (a hand-edited ``endpoints`` row,
    or a running canary whose versions or policy were edited)."""
    if endpoint is None:
        return
    from mlplat.errors import IntegrityError
    from mlplat.services import ledger

    checker = ledger.Ledger(conn)
    checker.require_chain(f"change the routing of '{endpoint.model}' in '{endpoint.environment}'")
    problem = checker.endpoint_problem(endpoint.to_dict()) or (checker.rollout_problem(rollout) if rollout else None)
    if problem:
        raise IntegrityError(f"refusing to change routing set outside mlplat: {problem}", hint=ledger.FIX)


def _event(conn: sqlite3.Connection, endpoint: Endpoint, *, actor: str, event: str, reason: str, rollout_id: int | None = None,
           step_index: int | None = None, percent: int | None = None, metrics: Mapping[str, Any] | None = None,
           now: float) -> None:
    conn.execute("INSERT INTO rollout_events (rollout_id, model, environment, ts, actor, event, step_index, percent, "
                 "reason, metrics) VALUES (?,?,?,?,?,?,?,?,?,?)",
                 (rollout_id, endpoint.model, endpoint.environment, now, actor, event, step_index, percent, reason,
                  json.dumps(metrics or {}, default=str)))


def _save(conn: sqlite3.Connection, endpoint: Endpoint, *, now: float, instance_type: str | None, price: float | None) -> None:
    conn.execute(
        "INSERT INTO endpoints (model, environment, strategy, routes, shadow, stable_version, previous_version, "
        "rollout_id, created_at, updated_at, updated_by) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (model, environment) DO UPDATE SET strategy=excluded.strategy, routes=excluded.routes, "
        "shadow=excluded.shadow, stable_version=excluded.stable_version, previous_version=excluded.previous_version, "
        "rollout_id=excluded.rollout_id, updated_at=excluded.updated_at, updated_by=excluded.updated_by",
        (endpoint.model, endpoint.environment, endpoint.strategy, json.dumps([asdict(r) for r in endpoint.routes]),
         json.dumps(endpoint.shadow) if endpoint.shadow else None, endpoint.stable_version, endpoint.previous_version,
         endpoint.rollout_id, now, now, endpoint.updated_by))
    _sync_history(conn, endpoint, now=now, instance_type=instance_type, price=price)
    bump_revision(conn)


def _sync_history(conn: sqlite3.Connection, endpoint: Endpoint, *, now: float, instance_type: str | None,
                  price: float | None) -> None:
    """Open/close served-version intervals so cost follows what actually took traffic."""
    serving = {(r.version, r.variant) for r in endpoint.routes if r.weight > 0}
    if endpoint.shadow:
        serving.add((int(endpoint.shadow["version"]), "shadow"))
    open_rows = conn.execute("SELECT id, version, variant FROM deployments WHERE model=? AND environment=? "
                             "AND ended_at IS NULL", (endpoint.model, endpoint.environment)).fetchall()
    current = {(int(r["version"]), r["variant"]): r["id"] for r in open_rows}
    for key, row_id in current.items():
        if key not in serving:
            conn.execute("UPDATE deployments SET ended_at=? WHERE id=?", (now, row_id))
    for version, variant in serving - set(current):
        conn.execute("INSERT INTO deployments (model, environment, version, variant, started_at, instance_type, "
                     "price_per_hour) VALUES (?,?,?,?,?,?,?)",
                     (endpoint.model, endpoint.environment, version, variant, now, instance_type, price))


def _finish_running(conn: sqlite3.Connection, model: str, environment: str, *, state: str, reason: str,
                    now: float) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM rollouts WHERE model=? AND environment=? AND state='running'",
                       (model, environment)).fetchone()
    if row is None:
        return None
    cur = conn.execute("UPDATE rollouts SET state=?, finished_at=?, reason=? WHERE id=? AND state='running'",
                       (state, now, reason, row["id"]))
    return dict(row) if int(cur.rowcount) == 1 else None  # None: another transaction ended it first


def deploy(conn: sqlite3.Connection, *, model: str, environment: str, version: int, strategy: str, actor: str,
           method: str, canary: CanaryPolicy | None = None, weights: str | None = None, shadow_percent: int | None = None,
           evidence: Mapping[str, Any] | None = None, instance_type: str | None = None,
           price_per_hour: float | None = None, now: float | None = None) -> Endpoint:
    """Apply one rollout spec. Call inside ``Database.transaction()``; returns the new endpoint."""
    now = time.time() if now is None else now
    if strategy not in STRATEGIES:
        raise RolloutError(f"unknown strategy '{strategy}'", hint="one of: " + ", ".join(STRATEGIES))
    current = get_endpoint(conn, model, environment)
    require_audited(conn, current)
    stable = current.stable_version if current else None
    previous = current.previous_version if current else None
    what = f"{model} version {version}"
    if strategy in ("canary", "shadow") and stable is None:
        raise RolloutError(f"a {strategy} deployment compares {what} with a stable version, but '{model}' has no "
                           f"deployment in '{environment}' yet",
                           hint=f"deploy a first version with: mlplat deploy {model} {version} --env {environment} "
                                "--strategy direct")
    if strategy in ("canary", "shadow") and stable == version:
        raise RolloutError(f"{what} is already the stable version in '{environment}'",
                           hint="deploy a different version as the candidate")
    superseded = _finish_running(conn, model, environment, state="superseded",
                                 reason=f"superseded by a {strategy} deployment of version {version}", now=now)
    rollout_id = None
    shadow = None
    if strategy == "direct":
        routes = [Route("primary", version, 100)]
        new_stable = version
        new_previous = stable if stable is not None and stable != version else previous
    elif strategy == "ab":
        routes = parse_weights(weights, stable, version)
        new_stable = stable if stable is not None else routes[0].version
        new_previous = previous
    elif strategy == "canary":
        assert canary is not None and stable is not None
        canary.check()
        first = canary.steps[0]
        cur = conn.execute("INSERT INTO rollouts (model, environment, stable_version, candidate_version, policy, "
                           "step_index, step_started_at, state, created_at, created_by) VALUES (?,?,?,?,?,0,?,"
                           "'running',?,?)", (model, environment, stable, version, canary.to_json(), now, now, actor))
        if cur.lastrowid is None:  # set by every INSERT on a rowid table; int(None) would fail the same way
            raise TypeError("the rollout row has no id")
        rollout_id = int(cur.lastrowid)
        routes = canary_routes(stable, version, first) if first < 100 else [Route("canary", version, 100)]
        new_stable, new_previous = stable, previous
    else:  # shadow
        percent = 10 if shadow_percent is None else int(shadow_percent)
        if not 1 <= percent <= MAX_SHADOW_PERCENT:
            raise RolloutError(f"--percent {percent}: shadow traffic must be between 1 and {MAX_SHADOW_PERCENT} %",
                               hint="mirroring more than half the traffic doubles the load for little extra signal")
        assert stable is not None
        routes = [Route("primary", stable, 100)]
        shadow = {"version": version, "percent": percent}
        new_stable, new_previous = stable, previous
    endpoint = Endpoint(model, environment, strategy, routes, shadow, new_stable, new_previous, rollout_id,
                        now, actor)
    _save(conn, endpoint, now=now, instance_type=instance_type, price=price_per_hour)
    detail = {"strategy": strategy, "routes": [asdict(r) for r in routes], "shadow": shadow,
              "stable_version": new_stable, "rollout_id": rollout_id, **({"gate": dict(evidence)} if evidence else {})}
    if canary is not None and strategy == "canary":
        detail["policy"] = asdict(canary)
    if superseded:
        _event(conn, endpoint, actor=actor, event="superseded", rollout_id=superseded["id"],
               reason=f"superseded by a {strategy} deployment of version {version}", now=now)
    _event(conn, endpoint, actor=actor, event="deployed", rollout_id=rollout_id, step_index=0 if rollout_id else None,
           percent=routes[0].weight if strategy == "canary" else None,
           reason=f"{strategy} deployment of version {version}", metrics=detail, now=now)
    _audit(conn, actor=actor, method=method, action="deployment.created", endpoint=endpoint, version=version,
           reason=f"{strategy} deployment", evidence=detail)
    return endpoint


def advance(conn: sqlite3.Connection, rollout_id: int, *, actor: str, method: str, decision: Decision,
            expect_step: int | None = None, now: float | None = None, instance_type: str | None = None,
            price_per_hour: float | None = None
            ) -> Endpoint | None:
    """Move a running canary to its next step, or promote the candidate after the last one.

    Idempotent against a stale caller: a rollout that is no longer running (rolled back,
    superseded) is left alone and ``None`` returned.
    """
    now = time.time() if now is None else now
    rollout = get_rollout(conn, rollout_id)
    if rollout is None or rollout["state"] != "running":
        return None
    if expect_step is not None and int(rollout["step_index"]) != expect_step:
        return None  # another controller moved it already
    policy = CanaryPolicy.from_json(rollout["policy"])
    endpoint = require_endpoint(conn, rollout["model"], rollout["environment"])
    require_audited(conn, endpoint, rollout)
    stable, candidate = int(rollout["stable_version"]), int(rollout["candidate_version"])
    step = int(rollout["step_index"]) + 1
    if step >= len(policy.steps):
        endpoint.routes = [Route("primary", candidate, 100)]
        endpoint.strategy = "direct"
        endpoint.previous_version, endpoint.stable_version = stable, candidate
        endpoint.rollout_id = None
        endpoint.updated_by = actor
        if not _take_step(conn, rollout_id, step - 1, "UPDATE rollouts SET state='succeeded', finished_at=?, reason=?",
                          (now, "promoted after the last step")):
            return None
        _save(conn, endpoint, now=now, instance_type=instance_type, price=price_per_hour)
        _event(conn, endpoint, actor=actor, event="promoted", rollout_id=rollout_id, step_index=step - 1,
               percent=100, reason="; ".join(decision.reasons), metrics=decision.metrics, now=now)
        _audit(conn, actor=actor, method=method, action="deployment.step", endpoint=endpoint, version=candidate,
               reason=f"canary promoted: version {candidate} takes 100 % (stable was {stable})",
               evidence={"rollout_id": rollout_id, "metrics": decision.metrics})
        return endpoint
    percent = policy.steps[step]
    endpoint.routes = canary_routes(stable, candidate, percent) if percent < 100 else [Route("canary", candidate, 100)]
    endpoint.updated_by = actor
    if not _take_step(conn, rollout_id, step - 1, "UPDATE rollouts SET step_index=?, step_started_at=?", (step, now)):
        return None
    _save(conn, endpoint, now=now, instance_type=instance_type, price=price_per_hour)
    _event(conn, endpoint, actor=actor, event="step", rollout_id=rollout_id, step_index=step, percent=percent,
           reason="; ".join(decision.reasons), metrics=decision.metrics, now=now)
    _audit(conn, actor=actor, method=method, action="deployment.step", endpoint=endpoint, version=candidate,
           reason=f"canary step {step + 1}/{len(policy.steps)}: {percent} % to version {candidate}",
           evidence={"rollout_id": rollout_id, "metrics": decision.metrics})
    return endpoint


def _take_step(conn: sqlite3.Connection, rollout_id: int, from_step: int, update: str, args: tuple[Any, ...]) -> bool:
    """Apply ``update`` to the rollout only if it is still running at ``from_step``: the step is a
    compare-and-set, so two controllers that judged the same step (one of them holding a lease that
    had expired) take it once. The first write of the transaction: on False nothing was written."""
    cur = conn.execute(update + " WHERE id=? AND state='running' AND step_index=?", (*args, rollout_id, from_step))
    return int(cur.rowcount) == 1


def rollback(conn: sqlite3.Connection, *, model: str, environment: str, actor: str, method: str,
             to: int | None = None,
             reason: str = "manual rollback", metrics: Mapping[str, Any] | None = None,
             expect_rollout: int | None = None, now: float | None = None, instance_type: str | None = None,
             price_per_hour: float | None = None, requested_at: float | None = None) -> Endpoint | None:
    """Send 100 % of traffic to the stable version (or ``to``), ending any rollout.

    With a candidate live (canary, ab, shadow) the target is the stable version; with a
    single version it is the previous stable one. ``expect_rollout`` makes the canary
    controller's call a no-op (``None``) if that rollout already ended. ``requested_at``: when the
    rollback was asked for (default ``now``), recorded so ``mlplat sla`` can measure rollback time.
    """
    now = time.time() if now is None else now
    requested_at = now if requested_at is None else min(float(requested_at), now)
    endpoint = require_endpoint(conn, model, environment)
    require_audited(conn, endpoint)
    if expect_rollout is not None:
        rollout = get_rollout(conn, expect_rollout)
        if rollout is None or rollout["state"] != "running":
            return None
    serving = sorted({r.version for r in endpoint.routes if r.weight > 0})
    default = rollback_target(endpoint)
    if to is not None:
        target = int(to)
    elif default is not None:
        target = default
    else:
        raise Conflict(f"'{model}' in '{environment}' has only ever served version {endpoint.stable_version}: "
                       "there is no earlier version to roll back to",
                       hint="deploy another version, or name one with --to")
    if serving == [target] and endpoint.shadow is None and endpoint.rollout_id is None:
        raise Conflict(f"'{model}' in '{environment}' already serves version {target} only",
                       hint="`mlplat deployments show` lists the versions it served")
    from_versions = serving + ([endpoint.shadow["version"]] if endpoint.shadow else [])
    finished = _finish_running(conn, model, environment, state="rolled_back", reason=reason, now=now)
    if expect_rollout is not None and finished is None:
        return None  # ended meanwhile (another controller's verdict): nothing was written
    old_stable = endpoint.stable_version
    endpoint.routes = [Route("primary", target, 100)]
    endpoint.shadow = None
    endpoint.strategy = "direct"
    if target != old_stable:
        # The next rollback goes further back, never forward to a version just rolled back from.
        endpoint.previous_version = _served_before(conn, model, environment, target,
                                                   exclude={target, old_stable, *from_versions})
    endpoint.stable_version = target
    endpoint.rollout_id = None
    endpoint.updated_by = actor
    _save(conn, endpoint, now=now, instance_type=instance_type, price=price_per_hour)
    detail = {"from_versions": from_versions, "to_version": target, "metrics": dict(metrics or {}),
              "rollout_id": finished["id"] if finished else None, "requested_at": requested_at}
    _event(conn, endpoint, actor=actor, event="rolled_back", rollout_id=finished["id"] if finished else None,
           step_index=finished["step_index"] if finished else None, percent=0, reason=reason, metrics=detail, now=now)
    _audit(conn, actor=actor, method=method, action="deployment.rolled_back", endpoint=endpoint, version=target, reason=reason,
           evidence=detail)
    return endpoint


def rollback_target(endpoint: Endpoint) -> int | None:
    """The version :func:`rollback` moves traffic to when no ``to`` is named: the stable version while a
    candidate is live (canary, ab, shadow), else the version served before the stable one (None: none)."""
    serving = {r.version for r in endpoint.routes if r.weight > 0}
    has_candidate = endpoint.strategy in ("canary", "ab", "shadow") and (
        endpoint.shadow is not None or any(v != endpoint.stable_version for v in serving))
    return endpoint.stable_version if has_candidate else endpoint.previous_version


def _served_before(conn: sqlite3.Connection, model: str, environment: str, target: int, *,
                   exclude: set[int]) -> int | None:
    """The version that last took traffic before ``target`` last began to (the versions in ``exclude``
    left out), or None: the rollback target after a rollback to ``target`` is older than it, never a
    version rolled back from."""
    began = conn.execute("SELECT MAX(started_at) FROM deployments WHERE model=? AND environment=? AND version=? "
                         "AND variant != 'shadow'", (model, environment, target)).fetchone()[0]
    marks = ",".join("?" * len(exclude))
    before = "" if began is None else " AND ended_at <= ?"
    row = conn.execute(f"SELECT version FROM deployments WHERE model=? AND environment=? AND variant != 'shadow' "
                       f"AND version NOT IN ({marks}) AND ended_at IS NOT NULL{before} "
                       f"ORDER BY ended_at DESC, id DESC LIMIT 1",
                       (model, environment, *sorted(exclude), *(() if began is None else (began,)))).fetchone()
    return None if row is None else int(row[0])


def record_analysis(conn: sqlite3.Connection, rollout_id: int, decision: Decision, now: float | None = None) -> None:
    """Keep the controller's latest verdict for ``mlplat rollout status`` (no revision bump)."""
    conn.execute("UPDATE rollouts SET last_analysis=?, analyzed_at=? WHERE id=? AND state='running'",
                 (json.dumps({"action": decision.action, "reasons": list(decision.reasons),
                              "metrics": decision.metrics}, default=str), time.time() if now is None else now,
                  rollout_id))


def history(conn: sqlite3.Connection, model: str, environment: str) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT version, variant, started_at, ended_at FROM deployments WHERE model=? AND "
                        "environment=? ORDER BY started_at, id", (model, environment)).fetchall()
    return [dict(r) for r in rows]


def ab_readout(conn: sqlite3.Connection, model: str, environment: str, variants: Iterable[Route],
               since: float | None = None) -> dict[str, Any]:
    """Per-variant traffic, errors, latency and — where labels arrived — accuracy with a significance test."""
    out: dict[str, Any] = {}
    labelled: dict[str, tuple[int, int]] = {}
    has_labels = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='monitor_labels'").fetchone()
    for route in variants:
        args: list[Any] = [model, environment, route.version, route.variant]
        where = "model=? AND environment=? AND version=? AND variant=? AND shadow=0"
        if since is not None:
            where += " AND ts>=?"
            args.append(since)
        row = conn.execute(f"SELECT COUNT(*) AS n, SUM(CASE WHEN status>=500 THEN 1 ELSE 0 END) AS errors, "
                           f"AVG(latency_ms) AS mean_ms FROM captures WHERE {where}", args).fetchone()
        item = {"version": route.version, "weight": route.weight, "captured": int(row["n"] or 0),
                "errors": int(row["errors"] or 0), "mean_latency_ms": _round(row["mean_ms"])}
        if has_labels:
            pairs = conn.execute(f"SELECT c.outputs, l.label FROM captures c JOIN monitor_labels l "
                                 f"ON l.request_id=c.request_id WHERE {' AND '.join('c.' + p for p in where.split(' AND '))}",
                                 args).fetchall()
            correct = 0
            for outputs, label in pairs:
                try:
                    predicted = json.loads(outputs)
                    predicted = predicted[0] if isinstance(predicted, list) and predicted else predicted
                    correct += int(str(predicted) == str(json.loads(label)))
                except (TypeError, ValueError):
                    continue
            if pairs:
                item["labelled"] = len(pairs)
                item["accuracy"] = round(correct / len(pairs), 4)
                labelled[route.variant] = (correct, len(pairs))
        out[route.variant] = item
    readout: dict[str, Any] = {"variants": out}
    if len(labelled) >= 2:
        (va, (ca, na)), (vb, (cb, nb)) = list(labelled.items())[:2]
        test = two_proportion_test(ca, na, cb, nb)
        readout["significance"] = {"compared": [va, vb], "metric": "accuracy", **test,
                                   "significant_at_0.05": test["p_value"] is not None and test["p_value"] < 0.05}
    return readout


def verdict(endpoint: Endpoint, recent: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the endpoint serves now, read from its current routing (what the gateway serves), and the
    latest routing event (``recent`` oldest first, as :func:`events` returns them).

    ``{"serving": [{"version", "percent"}...], "shadow", "latest_event", "summary"}``: ``summary`` is one
    sentence that never contradicts the routing (a canary that was promoted and then rolled back reads
    as the rollback)."""
    serving = [{"version": r.version, "percent": r.weight} for r in endpoint.routes if r.weight > 0]
    latest = dict(recent[-1]) if recent else None
    split = ", ".join(f"v{s['version']} {s['percent']} %" for s in serving)
    summary = split
    if endpoint.shadow:
        summary += f"; v{endpoint.shadow['version']} shadows {endpoint.shadow['percent']} %"
    if latest is not None:
        detail = latest.get("metrics") or {}
        what = {"rolled_back": "rolled back" + (f" from {', '.join(f'v{v}' for v in detail['from_versions'])}"
                                                if detail.get("from_versions") else ""),
                "promoted": "canary promoted after its last step", "step": f"canary at {latest.get('percent')} %",
                "deployed": "deployed", "superseded": "rollout superseded"}.get(latest["event"], latest["event"])
        summary += f"; latest: {what} by {latest['actor']}" + (f" ({latest['reason']})" if latest.get("reason") else "")
    return {"serving": serving, "shadow": endpoint.shadow, "latest_event": latest, "summary": summary}


def show(conn: sqlite3.Connection, model: str, environment: str) -> dict[str, Any]:
    """One endpoint: its routing, the version a rollback would return to, served-version history,
    recent events and the :func:`verdict` drawn from the routing."""
    endpoint = require_endpoint(conn, model, environment)
    recent = events(conn, model, environment, limit=20)
    return {**endpoint.to_dict(), "rollback_target": rollback_target(endpoint),
            "history": history(conn, model, environment), "events": recent, "verdict": verdict(endpoint, recent)}


def status(conn: sqlite3.Connection, model: str, environment: str) -> dict[str, Any]:
    """The endpoint, its latest rollout (policy, current percent, last analysis), recent events and the
    :func:`verdict` drawn from the current routing.

    ``rollout`` is the latest rollout only while its outcome is what the endpoint serves (it runs, or
    no routing change followed its last decision); one that a later rollback or deployment overrode
    is ``previous_rollout``, with that change as ``overridden_by``."""
    endpoint = require_endpoint(conn, model, environment)
    recent = events(conn, model, environment)
    out: dict[str, Any] = {"endpoint": endpoint.to_dict(), "rollback_target": rollback_target(endpoint),
                           "rollout": None}
    row = conn.execute("SELECT * FROM rollouts WHERE model=? AND environment=? ORDER BY id DESC LIMIT 1",
                       (model, environment)).fetchone()
    if row is not None:
        rollout = dict(row)
        policy = CanaryPolicy.from_json(rollout["policy"])
        rollout["policy"] = {**policy.__dict__, "steps": list(policy.steps)}
        rollout["percent"] = policy.steps[rollout["step_index"]]
        rollout["last_analysis"] = json.loads(rollout["last_analysis"]) if rollout["last_analysis"] else None
        last = conn.execute("SELECT * FROM rollout_events WHERE model=? AND environment=? ORDER BY id DESC LIMIT 1",
                            (model, environment)).fetchone()
        if rollout["state"] == "running" or last is None or last["rollout_id"] == rollout["id"]:
            out["rollout"] = rollout
        else:
            rollout["overridden_by"] = {k: last[k] for k in ("ts", "actor", "event", "reason")}
            out["previous_rollout"] = rollout
    out["events"] = recent
    out["verdict"] = verdict(endpoint, recent)
    return out
