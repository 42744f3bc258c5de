"""Routing: the versions an environment serves, and how each request picks one.

Hot reload without restarts: :meth:`Routing.reload` reads ``serving_revision`` from the
platform database; when it moved, it loads any version the new routing needs (old routing
keeps serving meanwhile), then swaps one reference. In-flight requests finish on the
routing they started with, so a rollback fails no request. Every version an endpoint may
fall back to (its stable and previous stable version) stays loaded: rollback is a routing
change only.
"""
from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlplat.db import ledger_target, open_database
from mlplat.services import model_loading
from mlplat.services import rollout as ro
from mlplat.services.ledger import Ledger
from mlplat.serving import container_backend, predictor
from mlplat.serving.metrics import RolloutStats
from mlplat.serving.predictor import LoadedModel

log = logging.getLogger("mlplat.gateway")

Resolver = Callable[[str, int], Path]
Loader = Callable[[Path, str, int], LoadedModel]


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
                _close(self.models.pop(key))

    def close(self) -> None:
        """Release every loaded version (a container version's container is removed)."""
        for key in list(self.models):
            _close(self.models.pop(key))


def _close(model: LoadedModel | LoadFailure) -> None:
    close = getattr(model, "close", None)
    if close is not None:
        try:
            close()
        except Exception as exc:  # releasing one version must not stop the others' release
            log.warning("could not release %s: %s", getattr(model, "name", "a model"), exc)


def _default_loader(path: Path, name: str, version: int) -> LoadedModel:
    if model_loading.describe(path).flavor == "container":  # served by its own image: proxied over HTTP
        return container_backend.load(path, name=name, version=version)
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


# --- hot reload -----------------------------------------------------------------------------------


class Routing:
    """What the gateway of one environment serves now: ``table`` (model -> :class:`LiveEndpoint`),
    the routing it refused (``refused``: model -> reason), the revision it reflects, and the live
    statistics of each running canary rollout (``rollout_stats``: rollout id -> :class:`RolloutStats`)."""

    def __init__(self, db_path: Path, environment: str, pool: ModelPool):
        self.db_path = ledger_target(db_path)
        self.environment = environment
        self.pool = pool
        self.table: dict[str, LiveEndpoint] = {}
        self.refused: dict[str, str] = {}
        self.revision = -1
        self.rollout_stats: dict[int, RolloutStats] = {}
        self._lock = threading.Lock()

    def reload(self, force: bool = False) -> bool:
        """Re-read the routing if the revision moved; returns whether it changed.

        Only routing that an audited deployment produced is served: an ``endpoints`` row that differs
        from its last ``deployment.*`` audit entry (or any routing while the audit chain does not
        verify) is refused. The endpoint then keeps the last verified routing this gateway served;
        one that never had any is not served (requests get the 404 JSON for unknown endpoints).
        Refusals are logged and kept in ``self.refused`` (model -> reason).
        """
        with self._lock:
            conn = open_database(self.db_path).connect()
            try:
                rev = ro.revision(conn)
                if rev == self.revision and not force:
                    return False
                endpoints = ro.list_endpoints(conn, self.environment)
                rollouts = {r["id"]: r for r in ro.running_rollouts(conn, self.environment)}
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
                    if self.refused.get(ep.model) != refused[ep.model]:
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
