"""`mlplat deploy | serve | rollback | deployments | rollout` as a user types them, on registered models."""
from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.conftest import BIN
from tests.integration.support_registry import AUTHOR, cli_in, make_registered_project, spec_ctx, train
from tests.integration.support_serving import stop, wait_for_port_file

pytestmark = pytest.mark.integration
ROW = {"dataframe_records": [{f"x{i}": 0.1 * i for i in range(6)}]}


def start_gateway(project, tmp_path):
    port_file = tmp_path / f"port-{len(list(tmp_path.iterdir()))}"
    proc = subprocess.Popen([str(BIN / "mlplat"), "serve", "--port", "0", "--port-file", str(port_file)], cwd=project,
                            env={**__import__("os").environ, "MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": AUTHOR},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{wait_for_port_file(port_file, proc)}"


def test_deploy_serve_rollback_through_the_cli(tmp_path):
    project = make_registered_project(tmp_path / "project")
    assert cli_in(project, "models", "promote", "scorer", "1", "--to", "staging").returncode == 0
    assert train(project, seed=2) == 2  # registered, never gated

    refused = {
        "not gated": (cli_in(project, "deploy", "scorer", "2"), 6, "has not passed the evaluation gate"),
        "unknown version": (cli_in(project, "deploy", "scorer", "9"), 4, "9"),
        "canary without stable": (cli_in(project, "deploy", "scorer", "1", "--strategy", "canary"), 1,
                                  "no deployment"),
        "shadow over 50": (cli_in(project, "deploy", "scorer", "1", "--strategy", "shadow", "--percent", "60"), 2,
                           "60"),
        "weights without ab": (cli_in(project, "deploy", "scorer", "1", "--weights", "50,50"), 2, "--weights"),
        "nothing deployed": (cli_in(project, "rollback", "scorer"), 4, "no deployment of 'scorer'"),
        "open to the world": (cli_in(project, "serve", "--host", "0.0.0.0"), 6, "no authentication"),
    }
    for what, (result, code, fragment) in refused.items():
        assert result.returncode == code, (what, result.stdout, result.stderr)
        assert fragment in result.stderr, (what, result.stderr)
    assert json.loads(cli_in(project, "deployments", "list", "--json").stdout) == []

    deployed = cli_in(project, "deploy", "scorer", "1", "--json")
    assert deployed.returncode == 0, deployed.stderr
    assert json.loads(deployed.stdout)["routes"] == [{"variant": "primary", "version": 1, "weight": 100}]
    nothing_before = cli_in(project, "rollback", "scorer")
    assert nothing_before.returncode == 5 and "no earlier version" in nothing_before.stderr

    proc, url = start_gateway(project, tmp_path)
    try:
        with httpx.Client(base_url=url, timeout=10) as c:
            r = c.post("/endpoints/scorer/invocations", json=ROW)
            assert r.status_code == 200 and r.headers["x-mlplat-version"] == "1" and r.json()["predictions"] in ([0], [1])
            assert c.post("/endpoints/nope/invocations", json=ROW).json()["endpoints"] == ["scorer"]
            assert "mlplat_requests_total" in c.get("/metrics").text
    finally:
        stop(proc)

    listed = json.loads(cli_in(project, "deployments", "list", "--json").stdout)
    assert [(d["model"], d["environment"], d["stable_version"]) for d in listed] == [("scorer", "dev", 1)]
    shown = json.loads(cli_in(project, "deployments", "show", "scorer", "--json").stdout)
    assert shown["history"][0]["version"] == 1 and shown["events"][0]["event"] == "deployed"
    status = cli_in(project, "rollout", "status", "scorer")
    assert status.returncode == 0 and "direct deployment of version 1" in status.stdout

    # a model file changed after registration: the gateway refuses to load it, serves a clear 500
    from mlplat.services import registry

    spec, ctx = spec_ctx(project)
    folder = registry.verified_model_dir(spec, ctx, "scorer", 1)
    (folder / "MLmodel").write_text((folder / "MLmodel").read_text() + "\n# edited\n")
    proc, url = start_gateway(project, tmp_path)
    try:
        r = httpx.post(f"{url}/endpoints/scorer/invocations", json=ROW, timeout=10)
        assert r.status_code == 500 and r.json()["error_code"] == "MODEL_UNAVAILABLE"
        assert "IntegrityError" in r.json()["message"]
    finally:
        stop(proc)
