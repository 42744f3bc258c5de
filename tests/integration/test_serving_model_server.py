"""`python -m mlplat.serving.model_server`: one model over real HTTP on 127.0.0.1."""
from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.integration.support_serving import save_sklearn, save_toy, start_model_server, stop

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ms")
    model_dir = save_sklearn(tmp / "scorer")
    proc, url = start_model_server(model_dir, tmp, "--max-body-bytes", "2048")
    yield url
    stop(proc)


def test_scoring_v2_health_and_errors(server):
    with httpx.Client(base_url=server, timeout=10) as c:
        assert c.get("/ping").status_code == 200
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        meta = c.get("/v2/models/scorer").json()
        assert [i["name"] for i in meta["inputs"]] == ["a", "b", "c"]

        r = c.post("/invocations", json={"dataframe_split": {"columns": ["a", "b", "c"],
                                                              "data": [[2.0, 0.0, 0.0], [-2.0, 0.0, 0.0]]}})
        assert r.status_code == 200
        assert r.json()["predictions"] == [1, 0]
        assert r.headers["x-request-id"] == r.json()["request_id"]

        r = c.post("/v2/models/scorer/infer", json={"id": "req-7", "inputs": [
            {"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [2.0, 0.0, 0.0]}]})
        assert r.status_code == 200, r.text
        assert r.json()["id"] == "req-7" and r.json()["outputs"][0]["data"] == [1]

        bad = [
            (c.post("/invocations", content=b"{oops", headers={"content-type": "application/json"}), 400),
            (c.post("/invocations", json={"instances": [[1.0, 2.0]]}), 422),
            (c.post("/invocations", json={"dataframe_records": [{"a": "x", "b": 1, "c": 1}]}), 422),
            (c.post("/invocations", json={"instances": [[0.0, 0.0, 0.0]] * 200}), 413),
            (c.post("/invocations", content=b"a=1", headers={"content-type": "text/plain"}), 415),
            (c.get("/v2/models/other"), 404),
            (c.get("/nowhere"), 404),
        ]
        for response, status in bad:
            assert response.status_code == status, response.text
            assert response.json()["message"]


def test_a_model_that_raises_fails_only_that_request(tmp_path):
    proc, url = start_model_server(save_toy(tmp_path / "broken", mode="raise"), tmp_path)
    try:
        with httpx.Client(base_url=url, timeout=10) as c:
            r = c.post("/invocations", json={"dataframe_records": [{"a": 1.0, "b": 1.0, "c": 1.0}]})
            assert r.status_code == 500 and "candidate is broken" in r.json()["message"]
            assert c.get("/ping").status_code == 200  # still serving
            r = c.post("/invocations", json={"instances": [[1.0]]})
            assert r.status_code == 422
    finally:
        stop(proc)


def test_refuses_non_loopback_and_missing_model(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mlplat.serving.model_server", "--model-dir", str(tmp_path),
                          "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 6 and "no authentication" in out.stderr
    out = subprocess.run([sys.executable, "-m", "mlplat.serving.model_server", "--model-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "not an MLflow model directory" in out.stderr
