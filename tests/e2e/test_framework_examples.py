"""Every framework example, as a user runs it: train and register (the example's script), promote to
staging (gate on the held-out set, package, staging endpoint, integration tests), deploy, and a
prediction served by the gateway equal to the example's own in-process prediction.

One provisioned project and one gateway serve every example (the gateway picks up each deployment
by hot reload); each test brings its own model through the CLI in subprocesses."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import BIN, REPO, run_cli, write_project
from tests.integration.support_serving import stop, wait_for_port_file
from tests.timing import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("framework-examples")]

USER = "ds@example.com"
# float32 networks and float64 trees give the same numbers in the gateway as in the script, up to
# float32's rounding when values travel as JSON
RTOL, ATOL = 1e-5, 1e-6


def _env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLAT_") or k == "MLPLAT_CONTAINER_ENGINE"}
    return env | {"MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": USER}


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """A provisioned project holding the examples, and one gateway on a free port serving its dev environment."""
    project = write_project(tmp_path_factory.mktemp("frameworks") / "project")
    for example in ("xgboost_tabular", "pytorch_digits"):
        shutil.copytree(REPO / "examples" / example, project / "examples" / example,
                        ignore=shutil.ignore_patterns("data", "__pycache__"))
    up = run_cli("up", "--stack", "dev", "--yes", cwd=project, env=_env(project))
    assert up.returncode == 0, up.stderr
    port_file = project / "gateway.port"
    gateway = subprocess.Popen([str(BIN / "mlplat"), "serve", "--port", "0", "--port-file", str(port_file),
                                "--no-monitor"], cwd=project, env=_env(project), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        port = wait_for_port_file(port_file, gateway, timeout=120)
        yield project, f"http://127.0.0.1:{port}"
    finally:
        stop(gateway)


def _example(project: Path, script: str, name: str) -> dict:
    out = project / f"{name}.predictions.json"
    done = subprocess.run([sys.executable, f"examples/{script}/train.py", "--register", name, "--predictions-out",
                           str(out)], cwd=project, env=_env(project), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"registered {name} version 1" in done.stdout
    return json.loads(out.read_text())


def _promote_and_deploy(project: Path, name: str) -> None:
    promoted = run_cli("models", "promote", name, "1", "--to", "staging", cwd=project, env=_env(project), timeout=600)
    assert promoted.returncode == 0, promoted.stdout[-2000:] + promoted.stderr[-2000:]
    assert "predictions ok" in promoted.stdout, promoted.stdout
    deployed = run_cli("deploy", name, "1", cwd=project, env=_env(project))
    assert deployed.returncode == 0, deployed.stderr


def _served(url: str, name: str, expected: dict) -> np.ndarray:
    with httpx.Client(base_url=url, timeout=30) as client:
        def loaded():
            r = client.get(f"/endpoints/{name}")
            return r.status_code == 200 and all(r.json()["loaded"].values())

        wait_until(loaded, timeout=120, message=f"the gateway never loaded {name}")
        body = {"dataframe_split": {"columns": expected["columns"], "data": expected["rows"]}}
        response = client.post(f"/endpoints/{name}/invocations", json=body)
        assert response.status_code == 200, response.text
        assert response.headers["x-mlplat-version"] == "1"
        v2 = client.post(f"/v2/models/{name}/infer", json={"inputs": [
            {"name": col, "shape": [len(expected["rows"])], "datatype": "FP64",
             "data": [row[i] for row in expected["rows"]]} for i, col in enumerate(expected["columns"])]})
        assert v2.status_code == 200, v2.text
    served = np.asarray(response.json()["predictions"], dtype=float)
    v2_data = np.asarray(v2.json()["outputs"][0]["data"], dtype=float).reshape(served.shape)
    np.testing.assert_allclose(v2_data, served, rtol=RTOL, atol=ATOL)
    return served


def test_xgboost_example_is_served_as_trained(platform):
    project, url = platform
    expected = _example(project, "xgboost_tabular", "churn-xgb")
    _promote_and_deploy(project, "churn-xgb")
    shown = json.loads(run_cli("models", "show", "churn-xgb", "1", "--json", cwd=project, env=_env(project)).stdout)
    assert shown["framework"] == "xgboost" and shown["lineage"]["storage"] == {"format": "ubj", "safe": True}
    served = _served(url, "churn-xgb", expected)
    np.testing.assert_allclose(served, np.asarray(expected["predictions"], dtype=float), rtol=RTOL, atol=ATOL)


def test_pytorch_example_is_gated_and_served_as_trained(platform):
    project, url = platform
    expected = _example(project, "pytorch_digits", "digits-mlp")
    _promote_and_deploy(project, "digits-mlp")
    shown = json.loads(run_cli("models", "show", "digits-mlp", "1", "--json", cwd=project, env=_env(project)).stdout)
    assert shown["framework"] == "pytorch"
    # a torch.save file is a pickle: recorded as unsafe, so it is only ever loaded by the scoring
    # child and the model servers
    assert shown["lineage"]["storage"]["format"] == "torch" and shown["lineage"]["storage"]["safe"] is False
    gate = shown["gate_reports"][-1]["report"]
    assert gate["passed"] and gate["task"] == "classification" and gate["metrics"]["accuracy"] > 0.9
    served = _served(url, "digits-mlp", expected)
    assert served.shape == (len(expected["rows"]), 10)
    np.testing.assert_allclose(served, np.asarray(expected["predictions"], dtype=float), rtol=RTOL, atol=ATOL)
