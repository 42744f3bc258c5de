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
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(X, model.predict(X)))
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
    mlflow.pyfunc.save_model(str(path), python_model=ToyModel(mode, delay), signature=infer_signature(X, y.to_numpy()))
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
