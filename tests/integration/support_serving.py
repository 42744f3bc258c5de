"""Models and servers for the serving tests: real MLflow model folders, real HTTP on 127.0.0.1."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow.pyfunc
import numpy as np

from tests.timing import wait_until

REPO = Path(__file__).resolve().parents[2]
FEATURES = ["a", "b", "c"]


def training_frame(n: int = 200, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 3)), columns=FEATURES)
    return frame, (frame["a"] + 0.5 * frame["b"] > 0).astype(int)


def save_sklearn(path: Path, seed: int = 0) -> Path:
    """A logistic regression on three double columns, with a signature."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    X, y = training_frame(seed=seed)
    model = LogisticRegression().fit(X, y)
    # explicit requirements: inferring them imports the model in a subprocess (seconds per save)
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(X, model.predict(X)),
                              pip_requirements=["scikit-learn"])
    return path


class ToyModel(mlflow.pyfunc.PythonModel):
    """A pyfunc model whose behaviour a test chooses: good, raise, slow or skewed."""

    def __init__(self, mode: str = "good", delay: float = 0.0):
        self.mode = mode
        self.delay = delay

    def predict(self, context, model_input, params=None):
        if self.delay:
            time.sleep(self.delay)
        if self.mode == "raise":
            raise RuntimeError("candidate is broken")
        if self.mode == "skewed":
            return np.ones(len(model_input), dtype=np.int64)
        return (model_input["a"].to_numpy() + 0.5 * model_input["b"].to_numpy() > 0).astype(np.int64)


def save_toy(path: Path, mode: str = "good", delay: float = 0.0) -> Path:
    from mlflow.models import infer_signature

    X, y = training_frame()
    mlflow.pyfunc.save_model(str(path), python_model=ToyModel(mode, delay), signature=infer_signature(X, y.to_numpy()),
                             pip_requirements=["mlflow"])
    return path


def wait_for_port_file(path: Path, proc: subprocess.Popen, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return int(path.read_text())
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"server exited {proc.returncode}: {err[-3000:]}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start in time")


def env_with_repo() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def start_model_server(model_dir: Path, tmp: Path, *args: str) -> tuple[subprocess.Popen, str]:
    port_file = tmp / f"port-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-m", "mlplat.serving.model_server", "--model-dir", str(model_dir),
                             "--port", "0", "--port-file", str(port_file), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with_repo())
    port = wait_for_port_file(port_file, proc)
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def post(client: httpx.Client, url: str, payload, **kw) -> httpx.Response:
    return client.post(url, json=payload, **kw)


# --- a gateway over a throwaway platform database ---------------------------------------------


class GatewayHarness:
    """A platform DB in tmp, model folders by version, and a gateway on a free port in a thread."""

    def __init__(self, tmp: Path, models: dict[int, Path], *, environment: str = "production",
                 sampling: float = 1.0, max_body_bytes: int = 1_000_000, controller_interval: float = 0.1):
        from mlplat.db import Database

        self.tmp = tmp
        self.db_path = tmp / "platform.db"
        self.db = Database(self.db_path)
        self.db.migrate()
        self.models = models
        self.environment = environment
        self.sampling = sampling
        self.max_body_bytes = max_body_bytes
        self.controller_interval = controller_interval
        self.gateway = None
        self.server = None
        self.thread = None
        self.url = ""

    def resolve(self, name: str, version: int) -> Path:
        if version not in self.models:
            raise FileNotFoundError(f"no model folder for {name} v{version}")
        return self.models[version]

    def start(self, controller: bool = True, process: bool = False, clock=None, loader=None, options=None):
        """Serve in a thread of this process, or (``process=True``) in a child process of its own,
        as `mlplat serve` runs, so test clients cannot steal the gateway's CPU time. ``clock``
        (in-process only) is the canary controller's time, for tests that let a step bake;
        ``loader`` (in-process only) loads model folders in place of the predictor's; ``options``
        (in-process only) are more ``GatewayConfig`` fields (``batching_models``...)."""
        if process:
            assert clock is None and loader is None and options is None, \
                "a gateway process has its own clock, loader and settings"
            return self._start_process(controller)
        import threading

        import uvicorn

        from mlplat.serving.gateway import Gateway, GatewayConfig
        from mlplat.serving.model_server import bind

        config = GatewayConfig(environment=self.environment, max_body_bytes=self.max_body_bytes,
                               capture_sampling=self.sampling, poll_interval=0.1,
                               controller_interval=self.controller_interval, run_controller=controller,
                               **(options or {}))
        self.gateway = Gateway(self.db_path, config, self.resolve, loader, **({"clock": clock} if clock else {}))
        self.gateway.start()
        sock = bind("127.0.0.1", 0)
        self.server = uvicorn.Server(uvicorn.Config(self.gateway, log_level="warning", access_log=False,
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=20, interval=0.02, message="uvicorn did not start")
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    def _start_process(self, controller: bool):
        import json

        port_file = self.tmp / f"gateway-port-{time.monotonic_ns()}"
        spec = {"db": str(self.db_path), "environment": self.environment, "controller": controller,
                "models": {str(k): str(v) for k, v in self.models.items()}, "port_file": str(port_file),
                "sampling": self.sampling, "max_body_bytes": self.max_body_bytes,
                "controller_interval": self.controller_interval}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.integration.support_serving", json.dumps(spec)],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env_with_repo())
        self.url = f"http://127.0.0.1:{wait_for_port_file(port_file, self.proc)}"
        return self

    def endpoint(self, name: str = "scorer") -> dict:
        return httpx.get(f"{self.url}/endpoints/{name}", timeout=10).json()

    def stop(self) -> None:
        if getattr(self, "proc", None) is not None:
            stop(self.proc)
            self.proc = None
        if self.server is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)
            self.gateway.stop()
            self.server = None

    def deploy(self, version: int, strategy: str = "direct", model: str = "scorer", **kw):
        from mlplat.services import rollout as ro

        with self.db.transaction() as conn:
            return ro.deploy(conn, model=model, environment=self.environment, version=version, strategy=strategy,
                             actor="ds@example.com", method="trusted-local", **kw)

    def rollback(self, model: str = "scorer", **kw):
        from mlplat.services import rollout as ro

        with self.db.transaction() as conn:
            return ro.rollback(conn, model=model, environment=self.environment, actor="ds@example.com", method="trusted-local", **kw)

    def query(self, sql: str, *args):
        conn = self.db.connect()
        try:
            return [dict(r) for r in conn.execute(sql, args)]
        finally:
            conn.close()

    def wait_for(self, predicate, timeout: float = 15.0, interval: float = 0.05):
        return wait_until(predicate, timeout=timeout, interval=interval)


def warm(live, body: bytes, *, rounds: int = 200) -> None:
    """Run every routed version of a gateway endpoint (``gateway.table[name]``) until it is warm.

    The first predictions of a freshly loaded model are slow (lazy imports, first allocations);
    as live traffic they would be judged as the version's latency. Called outside the gateway,
    they count in no statistics, and the model's moving predict time settles to its warm value.
    """
    from mlplat.serving.asgi import INLINE_BUDGET_MS
    from mlplat.serving.predictor import LoadedModel
    from mlplat.serving.protocol import parse_scoring

    for route in live.routes:
        model = route.model
        if not isinstance(model, LoadedModel):
            continue
        inputs = parse_scoring(body, model.signature)
        for done in range(rounds):
            model.predict(inputs)
            if done >= 10 and model.ewma_ms < INLINE_BUDGET_MS:
                break


def row(i: int = 0) -> dict:
    rng = np.random.default_rng(i)
    a, b, c = rng.normal(size=3)
    return {"dataframe_records": [{"a": float(a), "b": float(b), "c": float(c)}]}


def _serve_from_spec(text: str) -> None:
    """Child-process gateway for the tests (``python -m tests.integration.support_serving SPEC``)."""
    import json

    from mlplat.serving.gateway import Gateway, GatewayConfig
    from mlplat.serving.model_server import bind, run

    spec = json.loads(text)
    models = {int(k): Path(v) for k, v in spec["models"].items()}

    def resolve(name: str, version: int) -> Path:
        if version not in models:
            raise FileNotFoundError(f"no model folder for {name} v{version}")
        return models[version]

    config = GatewayConfig(environment=spec["environment"], max_body_bytes=spec["max_body_bytes"],
                           capture_sampling=spec["sampling"], poll_interval=0.1,
                           controller_interval=spec["controller_interval"], run_controller=spec["controller"])
    app = Gateway(Path(spec["db"]), config, resolve)
    app.start()
    sock = bind("127.0.0.1", 0)
    try:
        run(app, sock, port_file=Path(spec["port_file"]))
    finally:
        app.stop()


if __name__ == "__main__":
    _serve_from_spec(sys.argv[1])
