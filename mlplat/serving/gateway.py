"""The serving gateway: every deployment of one environment behind one ASGI app.

Routes
  POST /endpoints/{name}/invocations    MLflow scoring format
  POST /v2/models/{name}/infer          Open Inference Protocol v2
  GET  /v2/health/live|ready, /v2/models/{name}[/ready], /ping, /health
  GET  /endpoints, /endpoints/{name}    what is deployed and how it routes
  GET  /metrics                         Prometheus text
  GET  /openapi.json                    these routes (OpenAPI 3.1, :mod:`.openapi`)

With ``serving.auth.apiKeys: required`` the two scoring routes need an API key scoped to the model
and environment (:mod:`.auth`); a refused request gets 401/403 JSON and is neither scored nor captured.

:class:`Gateway` wires the parts and serves requests; each part has its own module:
routing and hot reload without restarts (:mod:`.routing`), the canary controller
(:mod:`.controller`), shadow traffic (:mod:`.shadow`), data capture (:mod:`.capture`),
online feature enrichment (:mod:`.enrichment`) and live statistics (:mod:`.metrics`).
A poller thread reloads the routing every ``poll_interval``; a controller thread judges
running canaries every ``controller_interval``. Shadow requests and data capture run off
the request path (a one-thread pool with a bounded backlog; a queue and a batching writer
thread), so neither adds to the caller's latency beyond enqueueing.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplat.db import ledger_target, open_database
from mlplat.services import health
from mlplat.serving import asgi
from mlplat.serving.auth import GatewayAuth, Refused
from mlplat.serving.batching import Batcher, BatchPolicy
from mlplat.serving.capture import CaptureWriter
from mlplat.serving.controller import CanaryController
from mlplat.serving.enrichment import enrich_request
from mlplat.serving.metrics import Metrics, RolloutStats
from mlplat.serving.model_server import server_metadata
from mlplat.serving.predictor import LoadedModel
from mlplat.serving.protocol import (
    Inputs,
    RequestError,
    dumps,
    parse_scoring,
    parse_v2,
    to_list,
    v2_body,
    v2_outputs,
)
from mlplat.serving.routing import (
    LiveEndpoint,
    LiveRoute,
    Loader,
    LoadFailure,
    ModelPool,
    Resolver,
    Routing,
)
from mlplat.serving.shadow import ShadowMirror

log = logging.getLogger("mlplat.gateway")

# (model, version) -> a function adding online feature values to request rows, or None
Enricher = Callable[[str, int], "Callable[[list[dict]], list[dict]] | None"]


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
    api_keys: str = "off"  # serving.auth.apiKeys: off | optional | required (see mlplat.serving.auth)
    health_interval: float = health.DEFAULT_INTERVAL_S  # seconds between the health samples written to the ledger
    # serving.batching, and the models whose serving.models.<name>.batching overrides it
    batching: BatchPolicy = field(default_factory=BatchPolicy)
    batching_models: dict[str, BatchPolicy] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Gateway:
    """Raw ASGI app. ``start()`` loads the routing and starts the background threads."""

    def __init__(self, db_path: Path, config: GatewayConfig, resolver: Resolver, loader: Loader | None = None,
                 enricher: Enricher | None = None, clock: Callable[[], float] = time.time):
        self.db_path = ledger_target(db_path)
        self.config = config
        # the canary controller's time (bake time, step start, analysis stamps): injectable, so a
        # test can let a step bake without waiting for it
        self.clock = clock
        self._enricher = enricher
        self._enrichers: dict[tuple[str, int], Any] = {}
        self._batchers: dict[tuple[str, int], Batcher] = {}
        self.pool = ModelPool(resolver, loader)
        self.metrics = Metrics(config.environment)
        self.capture = CaptureWriter(self.db_path, config.capture_sampling)
        self.routing = Routing(self.db_path, config.environment, self.pool)
        self.controller = CanaryController(self.db_path, config.environment, self.routing, lambda: self.clock(),
                                           instance_type=config.instance_type, price_per_hour=config.price_per_hour)
        self.shadow = ShadowMirror(self.metrics, self._capture)
        self.auth = GatewayAuth(config.api_keys, config.environment)
        # the durable record `mlplat sla` reads: requests, 5xx, overhead and readiness per interval
        self.health = health.HealthRecorder(self.db_path, component=health.GATEWAY, environment=config.environment,
                                            ready=self.ready, clock=lambda: self.clock(),
                                            interval=config.health_interval)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = False

    # what the gateway serves now, as its routing last reloaded it
    @property
    def table(self) -> dict[str, LiveEndpoint]:
        return self.routing.table

    @property
    def refused(self) -> dict[str, str]:
        return self.routing.refused

    @property
    def revision(self) -> int:
        return self.routing.revision

    @property
    def rollout_stats(self) -> dict[int, RolloutStats]:
        return self.routing.rollout_stats

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self.started:
            return
        self.reload(force=True)
        self.capture.start()
        self.health.start()
        self._spawn(self._poll, "mlplat-poller")
        if self.config.run_controller:
            self._spawn(self._control, "mlplat-controller")
        self.started = True

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        try:
            self.controller.release()  # hand this gateway's rollouts to another one's controller at once
        except Exception as exc:
            log.warning("could not release the canary controller's leases: %s", exc)
        self.capture.stop()
        self.shadow.stop()
        self.health.stop()
        self.pool.close()  # container versions' containers go with the gateway
        self.started = False

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def ready(self) -> bool:
        """Whether every version the routing names is loaded and can score (a failed load: not ready)."""
        return all(isinstance(r.model, LoadedModel) for live in self.table.values() for r in live.routes)

    # --- routing table --------------------------------------------------------------------

    def reload(self, force: bool = False) -> bool:
        """Re-read the routing if the revision moved; returns whether it changed
        (see :meth:`mlplat.serving.routing.Routing.reload`). Key changes bump the same revision, so
        the API keys reload with it, read after the routing: never older than the revision it records."""
        changed = self.routing.reload(force)
        if changed:  # a reference swap: the event loop may be reading the old dict
            self._batchers = {k: b for k, b in self._batchers.items() if self.pool.models.get(k) is b.model}
        if changed and self.auth.enabled:
            conn = open_database(self.db_path).connect()
            try:
                self.auth.reload(conn)
            finally:
                conn.close()
        return changed

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
        acted = self.controller.control_once(last_recorded)
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
            await asgi.send_json(send, 200, server_metadata("mlplat-gateway"))
            return
        elif path == "/endpoints" and method == "GET":
            await asgi.send_json(send, 200, {"environment": self.config.environment,
                                             "endpoints": [self._describe(e) for e in self.table.values()]})
            return
        elif path == "/openapi.json" and method == "GET":
            await asgi.send_json(send, 200, self.openapi())
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

    def openapi(self) -> dict[str, Any]:
        """This gateway's routes as an OpenAPI 3.1 document, typed by the signatures it serves now."""
        from mlplat import __version__
        from mlplat.serving import openapi

        signatures = {name: next((r.model.signature for r in live.routes if isinstance(r.model, LoadedModel)), None)
                      for name, live in self.table.items()}
        return openapi.document(self.config.environment, signatures,
                                api_keys=getattr(self.config, "api_keys", "off"), version=__version__)

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
        try:
            self.auth.check(scope, name, self.clock())
        except Refused as exc:  # before the body is read, and never captured
            headers = list(asgi.JSON) + asgi.id_headers(request_id, client_id) + exc.headers()
            await asgi.send(send, exc.status, dumps(exc.body(request_id, v2=v2)), headers)
            return
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
                body = await asyncio.get_running_loop().run_in_executor(None, enrich_request, body, enrich)
            if v2:
                inputs = parse_v2(body, model.signature, header_length=header_length)
            else:
                inputs = parse_scoring(body, model.signature)
        except RequestError as exc:
            self._observe(live, route, exc.status, started, None)
            await self._send_error(send, exc, reply)
            return
        correlation = client_id or inputs.request_id
        predict_started = time.perf_counter()
        try:
            predictions = await self._predict(name, route, model, inputs)
        except Exception as exc:  # the model's fault: 500 for this request only, counted against the variant
            latency = self._observe(live, route, 500, started, None, time.perf_counter() - predict_started)
            self._capture(request_id, live, route, inputs, None, latency, 500, False, correlation)
            await self._send(send, 500, reply.error("MODEL_ERROR", f"version {route.version} of '{name}' raised "
                                                                   f"{type(exc).__name__}: {exc}"), reply)
            return
        latency = self._observe(live, route, 200, started, predictions, time.perf_counter() - predict_started)
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
            self.shadow.mirror(request_id, live, inputs, predictions, correlation)

    async def _predict(self, name: str, route: LiveRoute, model: LoadedModel, inputs: Inputs) -> Any:
        """``inputs``' predictions, batched with concurrent requests for the same version when the
        model takes batches and batching is on for it (:mod:`.batching`)."""
        batcher = self._batchers.get((name, route.version))
        if batcher is None or batcher.model is not model:
            policy = self.config.batching_models.get(name, self.config.batching)
            if not (policy.enabled and model.batchable):
                return await asgi.predict(model, inputs)
            version = route.version

            def observe(requests: int, rows: int, fell_back: bool) -> None:
                self.metrics.observe_batch(name, version, requests, rows, fell_back)

            batcher = Batcher(model, policy, observe=observe)
            self._batchers = {**self._batchers, (name, version): batcher}
        return await batcher.predict(inputs)

    async def _send(self, send, status: int, obj: Any, reply: _Reply) -> None:
        await asgi.send(send, status, dumps(obj), reply.headers(None, status))

    async def _send_error(self, send, exc: RequestError, reply: _Reply) -> None:
        await self._send(send, exc.status, exc.body(reply.request_id, v2=reply.v2), reply)

    def _observe(self, live: LiveEndpoint, route: LiveRoute, status: int, started: float, predictions: Any,
                 model_seconds: float = 0.0) -> float:
        seconds = time.perf_counter() - started
        self.metrics.observe(live.spec.model, route.version, route.variant, status, seconds)
        # the gateway's own share of the request: everything but the model's predict call
        self.health.observe(status, (seconds - model_seconds) * 1000)
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
