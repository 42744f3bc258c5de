"""Run the mlplat gateway over a benchmark platform DB, models loaded from folders by version.

    python gateway_proc.py SPEC_JSON

SPEC keys: ``db``, ``models`` (version -> folder), ``port``, ``sampling`` (capture), ``controller``,
``batching`` (true/false: the gateway's micro-batching with its defaults), ``workers`` (N > 1: this
process supervises N workers sharing the port, as `mlplat serve --workers N` does, with the same
:class:`mlplat.serving.workers.Supervisor`; each worker is this script again with ``listen_fd``).

The resolver maps versions to folders directly (the registry's manifest check runs once per
load, never per request, so it does not change the request path being measured).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from mlplat.serving.batching import BatchPolicy
from mlplat.serving.gateway import Gateway, GatewayConfig
from mlplat.serving.model_server import bind, run
from mlplat.serving.workers import Supervisor, WorkerTagged, inherit

spec = json.loads(sys.argv[1])
workers = int(spec.get("workers", 1))
if workers > 1:
    sock = bind("127.0.0.1", int(spec["port"]))

    def command(fd: int, ready: Path) -> list[str]:
        return [sys.executable, __file__, json.dumps({**spec, "workers": 1, "listen_fd": fd, "port_file": str(ready)})]

    Supervisor(sock, command, workers).run()
    sys.exit(0)

models = {int(k): Path(v) for k, v in spec["models"].items()}
config = GatewayConfig(environment="production", capture_sampling=spec.get("sampling", 1.0),
                       run_controller=spec.get("controller", True),
                       batching=BatchPolicy(enabled=bool(spec.get("batching", True))))
app = Gateway(Path(spec["db"]), config, lambda name, version: models[version])
if "listen_fd" in spec:
    sock, served = inherit(int(spec["listen_fd"])), WorkerTagged(app)
else:
    sock, served = bind("127.0.0.1", int(spec["port"])), app
app.start()
try:
    run(served, sock, port_file=Path(spec["port_file"]) if spec.get("port_file") else None, shared="listen_fd" in spec)
finally:
    app.stop()
