"""Run the mlplat gateway over a benchmark platform DB, models loaded from folders by version.

    python gateway_proc.py SPEC_JSON

The resolver maps versions to folders directly (the registry's manifest check runs once per
load, never per request, so it does not change the request path being measured).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from mlplat.serving.gateway import Gateway, GatewayConfig
from mlplat.serving.model_server import bind, run

spec = json.loads(sys.argv[1])
models = {int(k): Path(v) for k, v in spec["models"].items()}
config = GatewayConfig(environment="production", capture_sampling=spec.get("sampling", 1.0),
                       run_controller=spec.get("controller", True))
app = Gateway(Path(spec["db"]), config, lambda name, version: models[version])
app.start()
sock = bind("127.0.0.1", int(spec["port"]))
try:
    run(app, sock)
finally:
    app.stop()
