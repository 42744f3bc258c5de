"""Build context and engine choice for container images (no engine needed)."""
from __future__ import annotations

import pytest

from mlplat.errors import MlplatError
from mlplat.services import packaging

ENV = {"mlflow": "3.1.0", "mlflow-skinny": "3.1.0", "scikit-learn": "1.5.0", "numpy": "2.0.1", "pandas": "2.2.2",
       "uvicorn": "0.30.0", "pyyaml": "6.0.1", "click": "8.1.7", "rich": "13.7.1", "cloudpickle": "3.0.0",
       "scipy": "1.13.0", "pip": "24.0", "setuptools": "70.0", "mlplat": "0.1.0", "torch": "2.3.0+cpu"}


def test_requirements_swap_mlflow_for_skinny_and_pin_the_server_packages():
    pins = packaging.requirements(["mlflow==3.1.0", "scikit-learn==1.5.0"], ENV)
    assert "mlflow==3.1.0" not in pins and "mlflow-skinny==3.1.0" in pins
    assert {"uvicorn==0.30.0", "numpy==2.0.1", "pandas==2.2.2", "scikit-learn==1.5.0"} <= set(pins)
    assert list(pins) == sorted(pins, key=lambda r: r.split("==")[0])
    # the whole run environment constrains transitive packages, except the platform, installers and local builds
    assert "scipy==1.13.0" in pins.constraints and "mlflow==3.1.0" in pins.constraints
    assert not any(c.split("==")[0] in ("mlplat", "pip", "setuptools", "torch") for c in pins.constraints)


def test_requirements_keep_mlflow_when_the_run_had_no_skinny():
    env = {k: v for k, v in ENV.items() if k != "mlflow-skinny"}
    assert "mlflow==3.1.0" in packaging.requirements(["mlflow==3.1.0"], env)


def _context(tmp_path, pins, name="scorer"):
    model = tmp_path / "model-src"
    model.mkdir(exist_ok=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    dest = tmp_path / "ctx" / name
    digest = packaging.write_context(dest, name=name, version=3, model_dir=model, requirements_pinned=pins,
                                     artifact_digest="a" * 64)
    return dest, digest


def test_context_holds_both_recipes_and_the_constraints(tmp_path):
    pins = packaging.requirements(["mlflow==3.1.0", "scikit-learn==1.5.0"], ENV)
    dest, digest = _context(tmp_path, pins)
    runtime = (dest / "Containerfile.runtime").read_text()
    assert "FROM ${BASE}" in runtime and packaging.base_image() in runtime
    assert "--no-index" in runtime and "-c /opt/mlplat/constraints.txt" in runtime
    model = (dest / "Containerfile").read_text()
    assert "COPY model /model" in model and 'ENTRYPOINT ["/bin/sh", "/srv/entrypoint.sh"]' in model
    assert "MODEL_NAME=scorer MODEL_VERSION=3" in model
    assert (dest / "constraints.txt").read_text().splitlines() == pins.constraints
    entry = (dest / "entrypoint.sh").read_text()
    assert "-m mlplat.serving.model_server --model-dir \"${MODEL_DIR:-/model}\"" in entry
    assert "--host 127.0.0.1" in entry
    assert (dest / "mlplat" / "serving" / "model_server.py").is_file()
    # same inputs: same digest, no rewrite
    assert _context(tmp_path, pins)[1] == digest


def test_runtime_image_tag_follows_the_pins_not_the_model(tmp_path):
    pins = packaging.requirements(["scikit-learn==1.5.0"], ENV)
    a, _ = _context(tmp_path, pins, "a")
    b, _ = _context(tmp_path, pins, "b")
    assert packaging.runtime_image(a) == packaging.runtime_image(b)  # shared by every model with these pins
    other = packaging.requirements(["scikit-learn==1.5.0"], {**ENV, "numpy": "2.0.2"})
    c, _ = _context(tmp_path, other, "c")
    assert packaging.runtime_image(c) != packaging.runtime_image(a)
    assert packaging.base_image().startswith("localhost/mlplat-base:bookworm-")


def test_engine_choice(monkeypatch):
    from mlplat_providers.local import delivery

    monkeypatch.setattr(delivery.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setenv("MLPLAT_CONTAINER_ENGINE", "none")
    assert delivery.container_engine() is None
    monkeypatch.setenv("MLPLAT_CONTAINER_ENGINE", "auto")
    assert delivery.container_engine() == "buildah"
    monkeypatch.setattr(delivery.shutil, "which", lambda tool: None if tool == "buildah" else f"/usr/bin/{tool}")
    assert delivery.container_engine() is None  # auto falls back to a local process
    monkeypatch.setenv("MLPLAT_CONTAINER_ENGINE", "podman")
    with pytest.raises(MlplatError, match="buildah not installed") as err:
        delivery.container_engine()
    assert "apt-get install" in err.value.hint
    monkeypatch.setenv("MLPLAT_CONTAINER_ENGINE", "docker")
    with pytest.raises(MlplatError, match="not an engine choice"):
        delivery.container_engine()


def test_podman_runs_on_the_platforms_own_vfs_storage(monkeypatch, tmp_path):
    from mlplat_providers.local import delivery

    monkeypatch.setenv("MLPLAT_CONTAINER_STORAGE", str(tmp_path / "containers"))
    cmd = delivery.podman_command("image", "exists", "x")
    assert cmd[:1] == ["podman"] and cmd[-3:] == ["image", "exists", "x"]
    assert cmd[cmd.index("--storage-driver") + 1] == "vfs"
    assert cmd[cmd.index("--root") + 1] == str(tmp_path / "containers" / "storage")
    env = delivery.engine_env()
    conf = (tmp_path / "containers" / "containers.conf").read_text()
    assert env["CONTAINERS_CONF"] == str(tmp_path / "containers" / "containers.conf")
    assert "default_ulimits = []" in conf and 'runtime = "runc"' in conf
