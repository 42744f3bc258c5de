"""The staging endpoint as a real OCI image: built with buildah from a Debian base made by
debootstrap, run with podman, tested, stopped and removed.

The first run on a machine builds the base image (debootstrap, about a minute) and the runtime
image (a venv with the model server's pinned requirements); both are cached in the platform's
container storage, so later runs only build the thin model image.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.conftest import require_tools
from tests.integration.support_registry import cli_in, db, make_registered_project, spec_ctx

pytestmark = [pytest.mark.container, pytest.mark.xdist_group("container-image")]


@pytest.fixture(autouse=True, scope="module")
def engines():
    """buildah and podman: skipped without them on a developer's machine, a failure under CI=true."""
    return require_tools("buildah", "podman", purpose="the container image tests",
                         install="apt-get install podman buildah runc debootstrap catatonit")

ENGINE = {"MLPLAT_CONTAINER_ENGINE": "podman", "COLUMNS": "250"}


def _delivery():
    from mlplat_providers.local import delivery

    return delivery


def _podman(*args: str) -> subprocess.CompletedProcess:
    d = _delivery()
    return subprocess.run(d.podman_command(*args), capture_output=True, text=True, env=d.engine_env(), timeout=120)


def _containers_of(project) -> list[str]:
    state = project / ".mlplat" / "dev"
    out = _podman("ps", "-a", "--filter", f"label=org.mlplat.state={state}", "--format", "{{.Names}}")
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def _wait_no_containers(project, seconds: float = 60) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := _containers_of(project)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = make_registered_project(tmp_path_factory.mktemp("container") / "project")
    yield project
    # never leave containers or this project's model images behind
    for name in _containers_of(project):
        _podman("rm", "-f", "-t", "0", name)
    images = _podman("images", "--filter", f"label=org.mlplat.state={project / '.mlplat' / 'dev'}",
                     "--format", "{{.Repository}}:{{.Tag}}")
    for ref in images.stdout.split():
        _podman("rmi", "-f", ref)


def _promotion(project) -> dict:
    row = db(project).execute("SELECT state, steps FROM promotions ORDER BY id DESC").fetchone()
    return {"state": row[0], "steps": json.loads(row[1])}


def test_promotion_to_staging_builds_runs_and_removes_a_container(project):
    """Killed right after the container started: the container goes with the promoting process;
    the rerun resumes, reuses the image, tests a fresh container and leaves none behind."""
    killed = cli_in(project, "models", "promote", "scorer", "1", "--to", "staging", timeout=1200,
                    env={**ENGINE, "MLPLAT_FAULT_KILL": "endpoint:end"})
    assert killed.returncode == -9, (killed.stdout, killed.stderr)
    first = _promotion(project)
    assert first["state"] == "running"
    package = first["steps"]["package"]["detail"]
    assert package["engine"] == "buildah" and package["image"].startswith("localhost/mlplat/scorer:1-")
    assert first["steps"]["endpoint"]["detail"]["kind"] == "container"
    assert _wait_no_containers(project) == [], "the staging container outlived the killed promotion"

    done = cli_in(project, "models", "promote", "scorer", "1", "--to", "staging", timeout=900, env=ENGINE)
    assert done.returncode == 0, (done.stdout, done.stderr)
    text = " ".join(done.stdout.split())
    assert "resuming promotion" in text
    assert f"container image {package['image']}" in text, text  # the output says a container was used
    assert "no container engine" not in text
    final = _promotion(project)
    assert final["state"] == "succeeded"
    assert final["steps"]["package"]["detail"]["image"] == package["image"]  # built once
    tests = {t["test"]: t for t in final["steps"]["integration"]["detail"]["tests"]}
    assert set(tests) == {"health", "predictions", "malformed payload", "latency"}
    assert all(t["passed"] for t in tests.values()), tests
    assert "matches in-process predictions" in tests["predictions"]["detail"]
    assert db(project).execute("SELECT stage FROM model_stages WHERE model='scorer' AND version=1").fetchone()[0] \
        == "staging"

    assert _podman("image", "exists", package["image"]).returncode == 0
    from mlplat.services import packaging

    assert _podman("image", "exists", packaging.base_image()).returncode == 0
    context = project / ".mlplat" / "dev" / "packages" / "scorer" / "1"
    assert _podman("image", "exists", packaging.runtime_image(context)).returncode == 0
    assert _wait_no_containers(project, 10) == [], "the staging container was not removed"
    inspect = json.loads(_podman("image", "inspect", package["image"]).stdout)[0]
    assert inspect["Config"]["Entrypoint"] == ["/bin/sh", "/srv/entrypoint.sh"]
    assert "MODEL_DIR=/model" in inspect["Config"]["Env"]


def test_the_image_serves_the_predictions_of_the_registered_model(project, monkeypatch):
    """Run the promoted image directly: same predictions as the model loaded in this process,
    malformed input refused with 4xx, the model files inside equal the sealed ones."""
    import httpx
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd

    from mlplat.contracts import Package
    from mlplat.services import registry as reg

    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(project))
    monkeypatch.setenv("MLPLAT_CONTAINER_ENGINE", "podman")
    detail = _promotion(project)["steps"]["package"]["detail"]
    spec, ctx = spec_ctx(project)
    pipeline = _delivery().LocalDeliveryPipeline(spec, ctx)
    endpoint = pipeline.start_endpoint(Package(detail["context_dir"], detail["digest"], detail["image"], "buildah"),
                                       "scorer", 1)
    try:
        assert endpoint.kind == "container" and pipeline.endpoint_alive(endpoint)
        holdout = pd.read_parquet(project / "data" / "holdout.parquet").drop(columns=["label"]).head(50)
        reg.allow_sealed_loading()
        local = mlflow.pyfunc.load_model(str(project / ".mlplat" / "dev" / "packages" / "scorer" / "1" / "model"))
        expected = np.asarray(local.predict(holdout))
        payload = {"dataframe_split": {"columns": list(holdout.columns), "data": holdout.values.tolist()}}
        with httpx.Client(base_url=endpoint.url, timeout=30) as client:
            response = client.post("/invocations", json=payload)
            assert response.status_code == 200, response.text
            assert np.array_equal(np.asarray(response.json()["predictions"]), expected)
            v2 = client.post("/v2/models/scorer/infer", json={"inputs": [
                {"name": c, "datatype": "FP64", "shape": [len(holdout)], "data": holdout[c].tolist()}
                for c in holdout.columns]})
            assert v2.status_code == 200, v2.text
            assert np.array_equal(np.asarray(v2.json()["outputs"][0]["data"]), expected)
            assert client.post("/invocations", content=b"{not json").status_code == 400
            wrong = client.post("/invocations", json={"dataframe_split": {"columns": ["nope"], "data": [[1.0]]}})
            assert 400 <= wrong.status_code < 500
        sums = _podman("exec", endpoint.handle, "sha256sum", "/model/model.skops")
        assert sums.returncode == 0, sums.stderr
        local_sum = subprocess.run(["sha256sum", str(project / ".mlplat" / "dev" / "packages" / "scorer" / "1"
                                                     / "model" / "model.skops")], capture_output=True, text=True)
        assert sums.stdout.split()[0] == local_sum.stdout.split()[0]
    finally:
        pipeline.stop_endpoint(endpoint)
    assert not pipeline.endpoint_alive(endpoint)
    assert _wait_no_containers(project, 10) == []
