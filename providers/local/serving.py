"""Serving on the local provider: rollouts in the platform database, the gateway on 127.0.0.1.

Deployments belong to (model, environment). A gateway serves one environment: the
stack's own by default (``mlplat serve --env`` picks another). Versions load from
the registry only after their sealed manifest verifies.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat.contracts import EndpointDeployer, ServedEndpoint
from mlplat.contracts.canary import percentile
from mlplat.db import ledger_for
from mlplat.errors import NotProvisioned
from mlplat.services import rollout as ro
from mlplat_providers.local.layout import StateLayout

if TYPE_CHECKING:
    from mlplat.serving.batching import BatchPolicy
    from mlplat.stack import Batching


class LocalServing(ro.LedgerEndpoints, EndpointDeployer):
    serves_http = True  # the gateway on this machine: `mlplat serve --workers N` shares its port

    def __init__(self, spec, ctx):
        self.spec = spec
        self.ctx = ctx
        self.layout = StateLayout(spec.state_dir)
        if not self.layout.exists():
            raise NotProvisioned(spec.name, f"stores under {self.layout.root}")
        self.db = ledger_for(self.layout.platform_db, ctx)
        if "0003_serving" in self.db.pending():  # a stack provisioned before serving shipped
            self.db.migrate()

    @property
    def _cost(self) -> dict[str, Any]:
        serving = self.spec.serving
        return {"instance_type": serving.instance_type, "price_per_hour": serving.price_for()}

    # --- deploy, rollback, list and show are ro.LedgerEndpoints' (the gateway follows the ledger) ----

    def inventory(self) -> list[ServedEndpoint]:
        """Nothing serves models on this machine outside the platform's gateway: an empty list."""
        return []

    # --- reading -----------------------------------------------------------------------------

    def rollout_status(self, name: str, *, environment: str) -> dict[str, Any]:
        conn = self.db.connect()
        try:
            out = ro.status(conn, name, environment)
            endpoint = ro.require_endpoint(conn, name, environment)
            if endpoint.strategy == "ab":
                out["ab"] = ro.ab_readout(conn, name, environment, endpoint.routes)
            if endpoint.shadow:
                out["shadow"] = _shadow_readout(conn, name, environment, int(endpoint.shadow["version"]),
                                                endpoint.updated_at)
            return out
        finally:
            conn.close()

    # --- the gateway -------------------------------------------------------------------------

    def gateway(self, *, environment: str, controller: bool = True, poll_interval: float = 0.2):
        from mlplat.services import registry
        from mlplat.serving.gateway import Gateway, GatewayConfig

        serving = self.spec.serving
        config = GatewayConfig(environment=environment, max_body_bytes=serving.max_body_bytes,
                               body_timeout=serving.body_timeout_seconds,
                               capture_sampling=serving.capture_sampling, poll_interval=poll_interval,
                               run_controller=controller, api_keys=serving.auth.api_keys,
                               batching=_batch_policy(serving.batching),
                               batching_models={name: _batch_policy(serving.batching_for(name)) for name in serving.models},
                               **self._cost)
        if serving.auth.api_keys != "off" and "0009_api_keys" in self.db.pending():
            self.db.migrate()  # a stack provisioned before serving keys shipped
        spec, ctx = self.spec, self.ctx

        def resolve(name: str, version: int) -> Path:
            return registry.verified_model_dir(spec, ctx, name, version)

        db = self.db

        def enricher(name: str, version: int):
            """Serve a version from the feature view versions it was trained on."""
            conn = db.connect()
            try:
                row = conn.execute("SELECT lineage FROM model_versions WHERE model=? AND version=?",
                                   (name, version)).fetchone()
            finally:
                conn.close()
            views = (json.loads(row["lineage"] or "{}").get("features") or []) if row else []
            if not views:
                return None
            from mlplat.features import enrich

            return lambda rows: enrich(spec, ctx, views, rows)

        return Gateway(self.db, config, resolve, enricher=enricher)

    def serve(self, *, environment: str, host: str, port: int, port_file: str | None = None,
              controller: bool = True) -> None:
        from mlplat.netguard import require_loopback
        from mlplat.serving.model_server import bind

        require_loopback(host, authenticated=self.spec.serving.auth.api_keys == "required",
                         how="set mlplat:serving.auth.apiKeys: required in the stack")
        app = self.gateway(environment=environment, controller=controller)
        sock = bind(host, port)  # PortInUse (exit 9) before anything is loaded or announced

        def announce(bound: int) -> None:  # once uvicorn serves: the URL printed answers
            names = ", ".join(sorted(app.table)) or "none yet"
            self.ctx.console.print(f"gateway for stack {self.spec.name}, environment {environment}: "
                                   f"http://{host}:{bound}  (endpoints: {names})", highlight=False)
            self.ctx.console.file.flush()

        self._run(app, sock, port_file, announce)

    def serve_socket(self, listener, *, environment: str, port_file: str | None = None,
                     controller: bool = True) -> None:
        from mlplat.serving.workers import WorkerTagged

        app = self.gateway(environment=environment, controller=controller)
        self._run(app, listener, port_file, None, WorkerTagged(app))

    @staticmethod
    def _run(app, sock, port_file: str | None, announce, worker=None) -> None:
        from mlplat.serving.model_server import run

        app.start()  # load every deployed version before accepting traffic
        try:
            run(worker or app, sock, port_file=Path(port_file) if port_file else None, on_ready=announce,
                shared=worker is not None)
        finally:
            app.stop()


def _shadow_readout(conn, model: str, environment: str, version: int, since: float) -> dict[str, Any]:
    """Shadow vs primary on captured pairs: agreement and latency (sampled by capture)."""
    rows = conn.execute(
        "SELECT p.outputs AS primary_out, s.outputs AS shadow_out, p.latency_ms AS p_ms, s.latency_ms AS s_ms, "
        "s.status AS s_status FROM captures s JOIN captures p ON p.request_id || ':shadow' = s.request_id "
        "WHERE s.model=? AND s.environment=? AND s.version=? AND s.shadow=1 AND s.ts>=?",
        (model, environment, version, since)).fetchall()
    pairs = len(rows)
    errors = sum(1 for r in rows if r["s_status"] >= 500)
    agree = sum(1 for r in rows if r["s_status"] < 500 and r["primary_out"] == r["shadow_out"])
    p_lat = [r["p_ms"] for r in rows]
    s_lat = [r["s_ms"] for r in rows]
    return {"version": version, "compared": pairs, "errors": errors,
            "agreement": round(agree / (pairs - errors), 4) if pairs > errors else None,
            "primary_p95_ms": _r(percentile(p_lat, 95)), "shadow_p95_ms": _r(percentile(s_lat, 95))}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _batch_policy(batching: Batching) -> BatchPolicy:
    from mlplat.serving.batching import BatchPolicy

    return BatchPolicy(batching.enabled, batching.max_batch_size, batching.max_latency_ms)
