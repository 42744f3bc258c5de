"""The serving gateway: every deployment of one environment behind one ASGI app.

Routes
  POST /endpoints/{name}/invocations    MLflow scoring format
  POST /v2/models/{name}/infer          Open Inference Protocol v2
  GET  /v2/health/live|ready, /v2/models/{name}[/ready], /ping, /health
  GET  /endpoints, /endpoints/{name}    what is deployed and how it routes
  GET  /metrics                         Prometheus text

How it stays live without restarts: a poller thread reads ``serving_revision`` from
the platform database every ``poll_interval``; when it moved, it loads any version
the new routing needs (old routing keeps serving meanwhile), then swaps one
reference. In-flight requests finish on the routing they started with, so a
rollback fails no request. Every version an endpoint may fall back to (its stable
and previous stable version) stays loaded: rollback is a routing change only.

A canary controller thread judges running rollouts on live per-variant statistics
and advances or rolls them back through :mod:`mlplat.services.rollout`, the same
path as ``mlplat rollback``. Its state is in the database, so a restarted gateway
resumes the rollout at its current step.

Shadow requests and data capture run off the request path (a one-thread pool with a
bounded backlog; a queue and a batching writer thread), so neither adds to the
caller's latency beyond enqueueing.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import queue
import random
import sqlite3
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mlplat.serving import asgi, jsonlimit
from mlplat.serving.predictor import LoadedModel
from mlplat.serving.protocol import (
    Inputs, RequestError, dumps, parse_scoring, parse_v2, to_list, v2_body, v2_outputs,
)
from mlplat.services import rollout as ro

log = logging.getLogger("mlplat.gateway")

Resolver = Callable[[str, int], Path]
Loader = Callable[[Path, str, int], LoadedModel]
# (model, version) -> a function adding online feature values to request rows, or None
Enricher = Callable[[str, int], "Callable[[list[dict]], list[dict]] | None"]
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTROLLER = "mlplat-canary-controller"
STATS_CAP = 20_000
SHADOW_BACKLOG = 64


# --- models ---------------------------------------------------------------------------------------


class LoadFailure:
    """A version that could not be loaded; requests routed to it get a 500 naming why."""

    def __init__(self, exc: BaseException):
        self.message = f"{type(exc).__name__}: {exc}"


class ModelPool:
    """Loaded versions by ``(model, version)``; loads on demand, drops what no endpoint needs."""

    def __init__(self, resolver: Resolver, loader: Loader | None = None):
        self.resolver = resolver
        self.loader = loader or _default_loader
        self.models: dict[tuple[str, int], LoadedModel | LoadFailure] = {}

    def ensure(self, name: str, version: int) -> LoadedModel | LoadFailure:
        key = (name, int(version))
        found = self.models.get(key)
        if found is None:
            started = time.perf_counter()
            try:
                found = self.loader(self.resolver(name, int(version)), name, int(version))
                log.info("loaded %s v%s in %.2fs", name, version, time.perf_counter() - started)
            except Exception as exc:  # one broken version must not take the gateway down
                log.warning("cannot load %s v%s: %s", name, version, exc)
                found = LoadFailure(exc)
            self.models[key] = found
        return found

    def retain(self, keys: set[tuple[str, int]]) -> None:
        for key in list(self.models):
            if key not in keys:
                del self.models[key]


def _default_loader(path: Path, name: str, version: int) -> LoadedModel:
    from mlplat.serving import predictor

    return predictor.load(path, name=name, version=version)


# --- routing --------------------------------------------------------------------------------------


@dataclass
class LiveRoute:
    variant: str
    version: int
    upper: float  # cumulative weight: buckets below it (and above the previous) go here
    model: LoadedModel | LoadFailure


@dataclass
class LiveEndpoint:
    spec: ro.Endpoint
    routes: list[LiveRoute]
    shadow: LiveRoute | None
    shadow_percent: float
    rollout_id: int | None
    step_index: int | None

    def pick(self, key: bytes | None) -> LiveRoute:
        """The route for one request. With a routing key (``x-routing-key``) the choice is a pure
        function of key and model: the same key always lands on the same variant, and as a canary
        grows its keys stay on it (its bucket range only widens). Without a key, a uniform draw."""
        if len(self.routes) == 1:
            return self.routes[0]
        if key:
            bucket = (zlib.crc32(key + b"|" + self.spec.model.encode()) % 10_000) / 100.0
        else:
            bucket = random.random() * 100.0
        for route in self.routes:
            if bucket < route.upper:
                return route
        return self.routes[-1]


# --- statistics -----------------------------------------------------------------------------------


class Metrics:
    """Prometheus counters and a latency histogram per model / version / variant."""

    def __init__(self, environment: str):
        self.environment = environment
        self.series: dict[tuple[str, int, str], list[Any]] = {}
        self.shadow: dict[tuple[str, int], list[int]] = {}  # requests, rows, disagreeing rows, errors, dropped

    def observe(self, model: str, version: int, variant: str, status: int, seconds: float) -> None:
        key = (model, version, variant)
        entry = self.series.get(key)
        if entry is None:
            entry = self.series[key] = [0, 0, 0, [0] * (len(BUCKETS_S) + 1), 0.0]
        entry[0] += 1
        if status >= 500:
            entry[1] += 1
        elif status >= 400:
            entry[2] += 1
        buckets = entry[3]
        for i, bound in enumerate(BUCKETS_S):
            if seconds <= bound:
                buckets[i] += 1
                break
        else:
            buckets[-1] += 1
        entry[4] += seconds

    def observe_shadow(self, model: str, version: int, rows: int, disagree: int, error: bool,
                       dropped: bool = False) -> None:
        entry = self.shadow.setdefault((model, version), [0, 0, 0, 0, 0])
        if dropped:
            entry[4] += 1
            return
        entry[0] += 1
        entry[1] += rows
        entry[2] += disagree
        entry[3] += int(error)

    def render(self) -> str:
        env = self.environment
        lines = [
            "# HELP mlplat_requests_total Scoring requests by model, version and variant.",
            "# TYPE mlplat_requests_total counter",
        ]
        series = sorted(self.series.items())
        label = lambda m, v, var: f'model="{m}",version="{v}",variant="{var}",environment="{env}"'  # noqa: E731
        for (m, v, var), e in series:
            lines.append(f"mlplat_requests_total{{{label(m, v, var)}}} {e[0]}")
        lines += ["# HELP mlplat_errors_total Requests that failed in the model or gateway (HTTP 5xx).",
                  "# TYPE mlplat_errors_total counter"]
        for (m, v, var), e in series:
            lines.append(f"mlplat_errors_total{{{label(m, v, var)}}} {e[1]}")
        lines += ["# HELP mlplat_client_errors_total Requests refused as invalid (HTTP 4xx).",
                  "# TYPE mlplat_client_errors_total counter"]
        for (m, v, var), e in series:
            lines.append(f"mlplat_client_errors_total{{{label(m, v, var)}}} {e[2]}")
        lines += ["# HELP mlplat_request_duration_seconds Time from request to response inside the gateway.",
                  "# TYPE mlplat_request_duration_seconds histogram"]
        for (m, v, var), e in series:
            running = 0
            for bound, count in zip(BUCKETS_S, e[3]):
                running += count
                lines.append(f'mlplat_request_duration_seconds_bucket{{{label(m, v, var)},le="{bound}"}} {running}')
            running += e[3][-1]
            lines.append(f'mlplat_request_duration_seconds_bucket{{{label(m, v, var)},le="+Inf"}} {running}')
            lines.append(f"mlplat_request_duration_seconds_sum{{{label(m, v, var)}}} {e[4]:.6f}")
            lines.append(f"mlplat_request_duration_seconds_count{{{label(m, v, var)}}} {e[0]}")
        if self.shadow:
            names = (("mlplat_shadow_requests_total", "Requests mirrored to a shadow version.", 0),
                     ("mlplat_shadow_rows_total", "Rows scored by a shadow version.", 1),
                     ("mlplat_shadow_disagreements_total", "Rows where shadow and primary predictions differ.", 2),
                     ("mlplat_shadow_errors_total", "Mirrored requests the shadow version failed.", 3),
                     ("mlplat_shadow_dropped_total", "Mirrored requests dropped because the shadow lagged.", 4))
            for metric, help_text, index in names:
                lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
                for (m, v), e in sorted(self.shadow.items()):
                    lines.append(f'{metric}{{model="{m}",version="{v}",environment="{env}"}} {e[index]}')
        return "\n".join(lines) + "\n"


class RolloutStats:
    """Live statistics of one canary rollout: stable over the whole rollout, candidate per step."""

    def __init__(self) -> None:
        self.stable = ro.VariantStats()
        self.candidate: dict[int, ro.VariantStats] = {}

    def record(self, variant: str, step: int | None, latency_ms: float, error: bool, predictions: Any) -> None:
        if variant == "stable":
            stats = self.stable
        elif variant == "canary" and step is not None:
            stats = self.candidate.get(step)
            if stats is None:
                stats = self.candidate[step] = ro.VariantStats()
        else:
            return
        stats.requests += 1
        stats.errors += int(error)
        stats.latencies_ms.append(latency_ms)
        if predictions is not None:
            array = np.asarray(predictions)
            if array.dtype.kind in "fiub":
                if array.ndim == 2 and array.shape[1]:
                    array = array[:, -1]
                stats.predictions.extend(array.reshape(-1)[:64].astype(float).tolist())
        for values in (stats.latencies_ms, stats.predictions):
            if len(values) > STATS_CAP:
                del values[: STATS_CAP // 2]


# --- capture --------------------------------------------------------------------------------------


class CaptureWriter:
    """Sampled request/response records, written in batches by a background thread."""

    def __init__(self, db_path: Path, sampling: float, *, batch: int = 256, interval: float = 0.2):
        self.db_path = db_path
        self.sampling = sampling
        self.batch = batch
        self.interval = interval
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.dropped = 0
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlplat-capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def sampled(self) -> bool:
        return self.sampling >= 1.0 or (self.sampling > 0 and random.random() < self.sampling)

    def put(self, item: tuple) -> None:
        if self.queue.qsize() > 50_000:  # the writer cannot keep up: shed load, never block requests
            self.dropped += 1
            return
        self.queue.put(item)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        from mlplat.db import Database

        db = Database(self.db_path)
        conn = db.connect()
        try:
            # a ledger not yet migrated (mlplat up not rerun) has no column for the caller's request id
            correlated = "client_request_id" in {r[1] for r in conn.execute("PRAGMA table_info(captures)")}
            columns = ("request_id, ts, model, version, variant, environment, inputs, outputs, latency_ms, status, "
                       "shadow" + (", client_request_id" if correlated else ""))
            sql = f"INSERT OR IGNORE INTO captures ({columns}) VALUES ({','.join('?' * (12 if correlated else 11))})"
            while True:
                stopping = self._stop.wait(self.interval)
                while True:
                    rows = self._drain()
                    if not rows:
                        break
                    if not correlated:
                        rows = [row[:11] for row in rows]
                    try:
                        with db.transaction(conn):
                            conn.executemany(sql, rows)
                        self.written += len(rows)
                    except Exception as exc:  # keep serving; the rows are lost, say so
                        log.warning("capture write failed (%d rows dropped): %s", len(rows), exc)
                        self.dropped += len(rows)
                if stopping:
                    return
        finally:
            conn.close()

    def _drain(self) -> list[tuple]:
        items = []
        while len(items) < self.batch:
            try:
                items.append(self.queue.get_nowait())
            except queue.Empty:
                break
        scores = _batch_scores(items)
        rows = []
        for index, item in enumerate(items):
            try:
                rows.append(_capture_row(*item[:11], scores=scores.get(index), client_id=item[12]))
            except Exception as exc:  # an odd payload must not stop the writer
                log.warning("cannot capture request %s: %s", item[0], exc)
        return rows


def _batch_scores(items: list[tuple]) -> dict[int, Any]:
    """Scores of every captured item that has a scorer: one call per model for the whole batch."""
    groups: dict[Any, list[int]] = {}
    for index, item in enumerate(items):
        scorer, inputs = item[11], item[6]
        if scorer is not None and inputs.array is not None and inputs.array.ndim == 2:
            groups.setdefault(scorer, []).append(index)
    out: dict[int, Any] = {}
    for scorer, indexes in groups.items():
        arrays = [items[i][6].array for i in indexes]
        try:
            if len({a.shape[1] for a in arrays}) != 1:
                raise ValueError("inputs of different widths")
            scores = scorer(np.vstack(arrays))
        except Exception as exc:  # monitoring loses the scores of this batch, never the captures
            log.warning("cannot score %d captured requests: %s", len(indexes), exc)
            continue
        start = 0
        for i, array in zip(indexes, arrays):
            out[i] = scores[start:start + len(array)]
            start += len(array)
    return out


def enrich_body(body: bytes, enrich: Callable[[list[dict]], list[dict]]) -> bytes:
    """Fill feature columns from the online store into ``dataframe_records`` / ``dataframe_split``
    rows that carry entity keys. Anything else passes through untouched (the parser judges it)."""
    try:
        payload = jsonlimit.loads(body)
    except ValueError:  # malformed, too deep, a repeated key: the parser refuses it with the reason
        return body
    if not isinstance(payload, dict):
        return body
    if isinstance(payload.get("dataframe_records"), list) and all(isinstance(r, dict) for r in payload["dataframe_records"]):
        rows = payload["dataframe_records"]
    elif isinstance(payload.get("dataframe_split"), dict):
        split = payload["dataframe_split"]
        columns, data = split.get("columns"), split.get("data")
        if not (isinstance(columns, list) and isinstance(data, list) and all(isinstance(r, list) for r in data)):
            return body
        rows = [dict(zip(columns, r)) for r in data]
    else:
        return body
    enriched = enrich(rows)
    # values the caller sent win over the store's
    merged = [{**e, **{k: v for k, v in r.items() if v is not None}} for r, e in zip(rows, enriched)]
    return json.dumps({"dataframe_records": merged}).encode()


def _enrich_request(body: bytes, enrich: Callable[[list[dict]], list[dict]]) -> bytes:
    """:func:`enrich_body`, with the entity keys a client got wrong refused as ``RequestError(422)``."""
    from mlplat.features.errors import FeatureDataError

    try:
        return enrich_body(body, enrich)
    except FeatureDataError as exc:
        raise RequestError(f"online features: {exc.message}", 422) from None
    except OverflowError as exc:  # an integer entity key beyond 64 bits cannot be looked up
        raise RequestError(f"online features: an entity key is out of range ({exc})", 422) from None


def _capture_row(request_id: str, ts: float, model: str, version: int, variant: str, environment: str,
                 inputs: Inputs, predictions: Any, latency_ms: float, status: int, shadow: bool,
                 scores: Any = None, client_id: str | None = None) -> tuple:
    records = inputs.records()
    payload = records[0] if inputs.rows == 1 and records and isinstance(records[0], dict) else records
    if predictions is None:
        outputs = None
    elif scores is not None:
        outputs = json.dumps({"predictions": to_list(predictions), "probabilities": to_list(scores)}, default=str)
    else:
        outputs = json.dumps(to_list(predictions), default=str)
    return (request_id, ts, model, int(version), variant, environment, json.dumps(payload, default=str), outputs,
            float(latency_ms), int(status), int(shadow), client_id)


# --- the app --------------------------------------------------------------------------------------


@dataclass
class GatewayConfig:
    environment: str
    max_body_bytes: int = 1_000_000
    body_timeout: float | None = asgi.BODY_TIMEOUT_S  # seconds a request body may take to arrive (then 408)
    capture_sampling: float = 1.0
    poll_interval: float = 0.2
    controller_interval: float = 0.25
    run_controller: bool = True
    instance_type: str | None = None
    price_per_hour: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Gateway:
    """Raw ASGI app. ``start()`` loads the routing and starts the background threads."""

    def __init__(self, db_path: Path, config: GatewayConfig, resolver: Resolver, loader: Loader | None = None,
                 enricher: Enricher | None = None, clock: Callable[[], float] = time.time):
        self.db_path = Path(db_path)
        self.config = config
        # the canary controller's time (bake time, step start, analysis stamps): injectable, so a
        # test can let a step bake without waiting for it
        self.clock = clock
        self._enricher = enricher
        self._enrichers: dict[tuple[str, int], Any] = {}
        self.pool = ModelPool(resolver, loader)
        self.metrics = Metrics(config.environment)
        self.capture = CaptureWriter(self.db_path, config.capture_sampling)
        self.table: dict[str, LiveEndpoint] = {}
        self.revision = -1
        self.rollout_stats: dict[int, RolloutStats] = {}
        self._suspect: dict[int, int] = {}  # rollout id -> candidate requests at the first unconfirmed breach
        self.shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlplat-shadow")
        self.shadow_pending = 0
        self._shadow_lock = threading.Lock()
        self._stop = threading.Event()
        self._reload_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.started = False

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self.started:
            return
        self.reload(force=True)
        self.capture.start()
        self._spawn(self._poll, "mlplat-poller")
        if self.config.run_controller:
            self._spawn(self._control, "mlplat-controller")
        self.started = True

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.capture.stop()
        self.shadow_pool.shutdown(wait=True, cancel_futures=True)
        self.started = False

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _connect(self) -> sqlite3.Connection:
        from mlplat.db import Database

        return Database(self.db_path).connect()

    # --- routing table --------------------------------------------------------------------

    def reload(self, force: bool = False) -> bool:
        """Re-read the routing if the revision moved; returns whether it changed.

        Only routing that an audited deployment produced is served: an ``endpoints`` row that differs
        from its last ``deployment.*`` audit entry (or any routing while the audit chain does not
        verify) is refused. The endpoint then keeps the last verified routing this gateway served;
        one that never had any is not served (requests get the 404 JSON for unknown endpoints).
        Refusals are logged and kept in ``self.refused`` (model -> reason).
        """
        from mlplat.services.ledger import Ledger

        with self._reload_lock:
            conn = self._connect()
            try:
                rev = ro.revision(conn)
                if rev == self.revision and not force:
                    return False
                endpoints = ro.list_endpoints(conn, self.config.environment)
                rollouts = {r["id"]: r for r in ro.running_rollouts(conn, self.config.environment)}
                ledger = Ledger(conn)
                chain = ledger.chain()
                refused: dict[str, str] = {}
                for ep in endpoints:
                    problem = (f"the audit log does not verify: {chain.problems[0]}" if not chain.ok else
                               ledger.endpoint_problem(ep.to_dict()))
                    if problem is None and ep.rollout_id in rollouts:
                        problem = ledger.rollout_problem(rollouts[ep.rollout_id])
                    if problem:
                        refused[ep.model] = problem
            finally:
                conn.close()
            table: dict[str, LiveEndpoint] = {}
            needed: set[tuple[str, int]] = set()
            for ep in endpoints:
                if ep.model in refused:
                    kept = self.table.get(ep.model)
                    if getattr(self, "refused", {}).get(ep.model) != refused[ep.model]:
                        log.error("refusing the routing of '%s': %s; %s", ep.model, refused[ep.model],
                                  "keeping the last verified routing" if kept else "not serving it")
                    if kept is not None:
                        table[ep.model] = kept
                        needed.update((ep.model, v) for v in kept.spec.versions())
                    continue
                for version in sorted(ep.versions()):
                    needed.add((ep.model, version))
                    self.pool.ensure(ep.model, version)  # loads before the swap: old routing serves meanwhile
                upper, routes = 0.0, []
                for r in ep.routes:
                    if r.weight <= 0:
                        continue
                    upper += r.weight
                    routes.append(LiveRoute(r.variant, r.version, upper, self.pool.models[(ep.model, r.version)]))
                shadow = None
                if ep.shadow:
                    v = int(ep.shadow["version"])
                    shadow = LiveRoute("shadow", v, 100.0, self.pool.models[(ep.model, v)])
                rollout = rollouts.get(ep.rollout_id) if ep.rollout_id else None
                table[ep.model] = LiveEndpoint(ep, routes, shadow, float(ep.shadow["percent"]) if ep.shadow else 0.0,
                                               ep.rollout_id if rollout else None,
                                               int(rollout["step_index"]) if rollout else None)
                if rollout and ep.rollout_id not in self.rollout_stats:
                    self.rollout_stats[ep.rollout_id] = RolloutStats()
            self.table = table  # one reference swap: requests in flight keep the table they started with
            self.refused = refused
            self.pool.retain(needed)
            for rid in list(self.rollout_stats):
                if rid not in rollouts:
                    del self.rollout_stats[rid]
            self.revision = rev
            return True

    def _poll(self) -> None:
        while not self._stop.wait(self.config.poll_interval):
            try:
                self.reload()
            except Exception as exc:  # a locked or briefly missing DB must not kill the poller
                log.warning("routing reload failed: %s", exc)

    # --- canary controller ----------------------------------------------------------------

    def _control(self) -> None:
        last_recorded: dict[int, float] = {}
        while not self._stop.wait(self.config.controller_interval):
            try:
                self.control_once(last_recorded)
            except Exception as exc:
                log.warning("canary controller pass failed: %s", exc)

    def control_once(self, last_recorded: dict[int, float] | None = None) -> list[tuple[int, str]]:
        """Judge every running rollout once; returns ``(rollout id, action)`` for those acted on."""
        from mlplat.db import Database

        last_recorded = {} if last_recorded is None else last_recorded
        db = Database(self.db_path)
        conn = db.connect()
        acted = []
        try:
            for rollout in ro.running_rollouts(conn, self.config.environment):
                rid, step = int(rollout["id"]), int(rollout["step_index"])
                stats = self.rollout_stats.get(rid)
                live = self.table.get(rollout["model"])
                if stats is None or live is None or live.rollout_id != rid or live.step_index != step:
                    continue  # routing not reloaded yet: judge only traffic the current step received
                policy = ro.CanaryPolicy.from_json(rollout["policy"])
                candidate = stats.candidate.get(step, ro.VariantStats())
                now = self.clock()
                decision = ro.analyze(stats.stable, candidate, policy, elapsed=now - float(rollout["step_started_at"]))
                decision.metrics.update({"step_index": step, "percent": policy.steps[step]})
                common = dict(instance_type=self.config.instance_type, price_per_hour=self.config.price_per_hour,
                              now=now)
                if decision.action == "rollback" and not _errors_breached(decision):
                    # latency and distribution breaches must be confirmed on fresh traffic: the samples
                    # after the first verdict must breach again, so one stall of a loaded machine (a GC
                    # pause, an fsync) does not roll back a good version
                    first = self._suspect.get(rid)
                    if first is None or first > len(candidate.latencies_ms):
                        self._suspect[rid] = len(candidate.latencies_ms)
                        continue
                    fresh = _tail(candidate, first)
                    if fresh.requests < max(5, policy.min_requests // 2):
                        continue
                    recheck = dataclasses.replace(policy, min_requests=fresh.requests)
                    decision = ro.analyze(stats.stable, fresh, recheck, elapsed=now - float(rollout["step_started_at"]))
                    decision.metrics.update({"step_index": step, "percent": policy.steps[step], "rechecked": True})
                    if decision.action != "rollback":  # the stall passed: judge the step on the fresh samples
                        self._suspect.pop(rid, None)
                elif decision.action != "rollback":
                    self._suspect.pop(rid, None)
                if decision.action == "rollback":
                    with db.transaction(conn):
                        done = ro.rollback(conn, model=rollout["model"], environment=rollout["environment"],
                                           actor=CONTROLLER, reason="canary breach: " + "; ".join(decision.reasons),
                                           metrics=decision.metrics, expect_rollout=rid, **common)
                    if done is not None:
                        acted.append((rid, "rollback"))
                elif decision.action == "pass":
                    with db.transaction(conn):
                        done = ro.advance(conn, rid, actor=CONTROLLER, decision=decision, expect_step=step, **common)
                    if done is not None:
                        acted.append((rid, "promoted" if done.rollout_id is None else "step"))
                elif now - last_recorded.get(rid, 0.0) >= 1.0:
                    with db.transaction(conn):
                        ro.record_analysis(conn, rid, decision, now)
                    last_recorded[rid] = now
        finally:
            conn.close()
        if acted:
            self.reload()
        return acted

    # --- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        await asgi.guarded(self._handle, scope, receive, send)

    async def _handle(self, scope: dict[str, Any], receive, send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await asgi.lifespan(receive, send, startup=self._startup_async, shutdown=self._shutdown_async)
            return
        if kind != "http":
            return
        path, method = scope["path"], scope["method"]
        if path.startswith("/endpoints/"):
            parts = path[len("/endpoints/"):].split("/")
            if len(parts) == 2 and parts[1] == "invocations":
                if method != "POST":
                    await asgi.send_error(send, RequestError("use POST for invocations", 405))
                    return
                await self._score(parts[0], scope, receive, send, v2=False)
                return
            if len(parts) == 1 and method == "GET":
                live = self.table.get(parts[0])
                if live is None:
                    await self._unknown(send, parts[0])
                    return
                await asgi.send_json(send, 200, self._describe(live))
                return
        elif path.startswith("/v2/models/"):
            parts = path[len("/v2/models/"):].split("/")
            name = parts[0]
            live = self.table.get(name)
            if live is None:
                await self._unknown(send, name, v2=True)
                return
            if parts[1:] == ["infer"] and method == "POST":
                await self._score(name, scope, receive, send, v2=True)
                return
            if not parts[1:] and method == "GET":
                await asgi.send_json(send, 200, self._v2_metadata(live))
                return
            if parts[1:] == ["ready"] and method == "GET":
                ready = all(isinstance(r.model, LoadedModel) for r in live.routes)
                await asgi.send_json(send, 200 if ready else 503, {"name": name, "ready": ready})
                return
        elif path == "/metrics" and method == "GET":
            await asgi.send(send, 200, self.metrics.render().encode(), asgi.TEXT)
            return
        elif path in ("/ping", "/health", "/v2/health/live"):
            await asgi.send_json(send, 200, {"status": "ok"} if not path.startswith("/v2") else {"live": True})
            return
        elif path == "/v2/health/ready":
            await asgi.send_json(send, 200, {"ready": True, "endpoints": len(self.table)})
            return
        elif path == "/v2" and method == "GET":
            from mlplat.serving.model_server import server_metadata

            await asgi.send_json(send, 200, server_metadata("mlplat-gateway"))
            return
        elif path == "/endpoints" and method == "GET":
            await asgi.send_json(send, 200, {"environment": self.config.environment,
                                             "endpoints": [self._describe(e) for e in self.table.values()]})
            return
        await asgi.send_error(send, RequestError(
            f"no route {method} {path}; try POST /endpoints/{{name}}/invocations, POST /v2/models/{{name}}/infer, "
            "GET /v2, GET /endpoints, GET /metrics", 404), v2=path == "/v2" or path.startswith("/v2/"))

    async def _startup_async(self) -> None:
        if not self.started:
            await asyncio.get_running_loop().run_in_executor(None, self.start)

    async def _shutdown_async(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    async def _unknown(self, send, name: str, *, v2: bool = False, request_id: str | None = None,
                       client_id: str | None = None) -> None:
        names = sorted(self.table)
        listing = ", ".join(names) if names else "none yet (mlplat deploy NAME VERSION)"
        exc = RequestError(f"no endpoint '{name}' in environment '{self.config.environment}'; endpoints: {listing}", 404)
        request_id = request_id or asgi.new_request_id()
        body = exc.body(request_id, v2=v2)
        body["endpoints"] = names
        await asgi.send_json(send, 404, body, request_id, client_id)

    def _enrich_for(self, name: str, version: int):
        if self._enricher is None:
            return None
        key = (name, int(version))
        if key not in self._enrichers:  # once per version: its training lineage does not change
            self._enrichers[key] = self._enricher(name, int(version))
        return self._enrichers[key]

    def _describe(self, live: LiveEndpoint) -> dict[str, Any]:
        out = live.spec.to_dict()
        out["loaded"] = {str(r.version): isinstance(r.model, LoadedModel) for r in live.routes}
        out["step_index"] = live.step_index
        out["invocations"] = f"/endpoints/{live.spec.model}/invocations"
        return out

    def _v2_metadata(self, live: LiveEndpoint) -> dict[str, Any]:
        model = next((r.model for r in live.routes if isinstance(r.model, LoadedModel)), None)
        return {"name": live.spec.model, "versions": [str(r.version) for r in live.routes],
                "platform": f"mlflow-{model.flavor}" if model else "unavailable",
                "inputs": model.signature.describe() if model else [],
                "outputs": [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]}

    async def _score(self, name: str, scope, receive, send, *, v2: bool) -> None:
        """Score one request. Its capture is keyed by a request id the gateway generates; the
        caller's own id (``x-request-id``, or a v2 request's ``id``) is kept beside it."""
        started = time.perf_counter()
        request_id, client_id = asgi.request_ids(scope)
        live = self.table.get(name)
        if live is None:
            await self._unknown(send, name, v2=v2, request_id=request_id, client_id=client_id)
            return
        route = live.pick(asgi.header(scope, b"x-routing-key"))
        model = route.model
        reply = _Reply(request_id, client_id, route.variant, route.version, v2)
        try:
            header_length = asgi.binary_header_length(scope) if v2 else None
            body = await asgi.read_body(scope, receive, self.config.max_body_bytes, timeout=self.config.body_timeout,
                                        binary=header_length is not None)
        except RequestError as exc:
            self._observe(live, route, exc.status, started, None)
            await self._send_error(send, exc, reply)
            return
        except ConnectionAbortedError:
            return
        if isinstance(model, LoadFailure):
            self._observe(live, route, 500, started, None)
            await self._send(send, 500, reply.error("MODEL_UNAVAILABLE", f"version {route.version} of '{name}' failed "
                                                                         f"to load: {model.message}"), reply)
            return
        enrich = self._enrich_for(name, route.version)
        try:
            if enrich is not None and not v2:
                body = await asyncio.get_running_loop().run_in_executor(None, _enrich_request, body, enrich)
            if v2:
                inputs = parse_v2(body, model.signature, header_length=header_length)
            else:
                inputs = parse_scoring(body, model.signature)
        except RequestError as exc:
            self._observe(live, route, exc.status, started, None)
            await self._send_error(send, exc, reply)
            return
        correlation = client_id or inputs.request_id
        try:
            predictions = await asgi.predict(model, inputs)
        except Exception as exc:  # the model's fault: 500 for this request only, counted against the variant
            latency = self._observe(live, route, 500, started, None)
            self._capture(request_id, live, route, inputs, None, latency, 500, False, correlation)
            await self._send(send, 500, reply.error("MODEL_ERROR", f"version {route.version} of '{name}' raised "
                                                                   f"{type(exc).__name__}: {exc}"), reply)
            return
        latency = self._observe(live, route, 200, started, predictions)
        if v2:
            out = {"model_name": name, "model_version": str(route.version), "id": inputs.request_id or request_id,
                   "outputs": v2_outputs(predictions)}
            payload, header_size = v2_body(out, inputs.meta.get("binary_outputs", False))
            await asgi.send(send, 200, payload, reply.headers(header_size))
        else:
            out = {"predictions": to_list(predictions), "request_id": request_id}
            if client_id:
                out["client_request_id"] = client_id
            await self._send(send, 200, out, reply)
        self._capture(request_id, live, route, inputs, predictions, latency, 200, False, correlation)
        if live.shadow is not None and random.random() * 100.0 < live.shadow_percent:
            self._mirror(request_id, live, inputs, predictions, correlation)

    async def _send(self, send, status: int, obj: Any, reply: "_Reply") -> None:
        await asgi.send(send, status, dumps(obj), reply.headers(None, status))

    async def _send_error(self, send, exc: RequestError, reply: "_Reply") -> None:
        await self._send(send, exc.status, exc.body(reply.request_id, v2=reply.v2), reply)

    def _observe(self, live: LiveEndpoint, route: LiveRoute, status: int, started: float, predictions: Any) -> float:
        seconds = time.perf_counter() - started
        self.metrics.observe(live.spec.model, route.version, route.variant, status, seconds)
        if live.rollout_id is not None and status not in range(400, 500):
            stats = self.rollout_stats.get(live.rollout_id)
            if stats is not None:
                stats.record(route.variant, live.step_index, seconds * 1000, status >= 500, predictions)
        return seconds * 1000

    def _capture(self, request_id: str, live: LiveEndpoint, route: LiveRoute, inputs: Inputs, predictions: Any,
                 latency_ms: float, status: int, shadow: bool, client_id: str | None = None) -> None:
        if self.capture.sampled():
            scorer = route.model.score_array if isinstance(route.model, LoadedModel) and predictions is not None else None
            self.capture.put((request_id, time.time(), live.spec.model, route.version, route.variant,
                              self.config.environment, inputs, predictions, latency_ms, status, shadow, scorer,
                              client_id))

    def _mirror(self, request_id: str, live: LiveEndpoint, inputs: Inputs, primary: Any,
                client_id: str | None = None) -> None:
        shadow = live.shadow
        assert shadow is not None
        with self._shadow_lock:
            if self.shadow_pending >= SHADOW_BACKLOG:
                self.metrics.observe_shadow(live.spec.model, shadow.version, 0, 0, False, dropped=True)
                return
            self.shadow_pending += 1
        self.shadow_pool.submit(self._run_shadow, request_id, live, shadow, inputs, primary, client_id)

    def _run_shadow(self, request_id: str, live: LiveEndpoint, shadow: LiveRoute, inputs: Inputs, primary: Any,
                    client_id: str | None = None) -> None:
        started = time.perf_counter()
        try:
            model = shadow.model
            if isinstance(model, LoadFailure):
                raise RuntimeError(model.message)
            # the shadow may have another signature: re-check the inputs against it
            predictions = model.predict(inputs)
            status, error = 200, False
        except Exception:
            predictions, status, error = None, 500, True
        finally:
            with self._shadow_lock:
                self.shadow_pending -= 1
        seconds = time.perf_counter() - started
        rows, disagree = inputs.rows, 0
        if predictions is not None:
            disagree = _disagreements(primary, predictions)
        self.metrics.observe(live.spec.model, shadow.version, "shadow", status, seconds)
        self.metrics.observe_shadow(live.spec.model, shadow.version, rows, disagree, error)
        self._capture(f"{request_id}:shadow", live, shadow, inputs, predictions, seconds * 1000, status, True,
                      client_id)


@dataclass(frozen=True)
class _Reply:
    """What every response to one scoring request carries: its ids and the variant that served it."""

    request_id: str
    client_id: str | None
    variant: str
    version: int
    v2: bool

    def headers(self, binary_header: int | None, status: int = 200) -> list[tuple[bytes, bytes]]:
        if binary_header is None:
            out = list(asgi.JSON)
        else:
            out = [(b"content-type", b"application/octet-stream"), (asgi.BINARY_HEADER, str(binary_header).encode())]
        out += asgi.id_headers(self.request_id, self.client_id)
        out += [(b"x-mlplat-variant", self.variant.encode()), (b"x-mlplat-version", str(self.version).encode())]
        if status == 408:  # the rest of the body may still come: this connection cannot carry another request
            out.append((b"connection", b"close"))
        return out

    def error(self, code: str, message: str) -> dict[str, Any]:
        body = {"error_code": code, "request_id": self.request_id, "message": message}
        return {"error": message, **body} if self.v2 else body


def _tail(stats: ro.VariantStats, start: int) -> ro.VariantStats:
    """The samples of ``stats`` from index ``start`` on (requests counted by latency samples)."""
    latencies = stats.latencies_ms[start:]
    ratio = len(latencies) / max(1, len(stats.latencies_ms))
    predictions = stats.predictions[int(len(stats.predictions) * (1 - ratio)):] if ratio else []
    return ro.VariantStats(requests=len(latencies), errors=0, latencies_ms=list(latencies), predictions=list(predictions))


def _errors_breached(decision: ro.Decision) -> bool:
    return any(reason.startswith("error rate") for reason in decision.reasons)


def _disagreements(a: Any, b: Any) -> int:
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        return int(x.shape[0]) if x.ndim else 1
    if x.dtype.kind in "fc" or y.dtype.kind in "fc":
        same = np.isclose(x.astype(float), y.astype(float), rtol=1e-6, atol=1e-9)
    else:
        same = x == y
    if same.ndim > 1:
        same = same.reshape(same.shape[0], -1).all(axis=1)
    return int(np.size(same) - np.count_nonzero(same))
