"""Deployments and rollouts through a real `mlplat server`, and the same commands embedded.

One project per module: ``scorer`` versions 1 and 2 registered and promoted to staging (so both
passed the gate) in embedded mode, then a real ``mlplat server`` started on the same project
serves that ledger. CLI subprocesses reach it through ``MLPLAT_CONTROL_PLANE_URL``; without it
they open the ledger themselves, so every read runs both ways against the same state and must
print the same thing. The gateway (``mlplat serve``) is a platform process: given the server's
URL it still opens the ledger itself, and serves what was deployed through the server.
"""
from __future__ import annotations

import json
import os
import re
import subprocess

import httpx
import pytest

from tests.conftest import BIN
from tests.integration.support_registry import AUTHOR, cli_in, db, embedded, make_registered_project, remote, spec_ctx, train
from tests.integration.support_serving import stop, wait_for_port_file
from tests.server_support import requests_served, running_server
from tests.timing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("api-serving")]

API = "/api/v1"
ROW = {"dataframe_records": [{f"x{i}": 0.1 * i for i in range(6)}]}
# (operation, parameters): every read of the serving commands, as `--json` prints it
READS = (
    ("deployments.list", {}),
    ("deployments.list", {"environment": "dev"}),
    ("deployments.list", {"environment": "production"}),
    ("deployments.show", {"model": "scorer"}),
    ("rollouts.status", {"model": "scorer"}),
)
# the same reads as a user types them (tables and text)
TEXT_READS = (("deployments", "list"), ("deployments", "show", "scorer"), ("rollout", "status", "scorer"))

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(project, server): ``scorer`` v1 and v2 gated (in staging), nothing deployed, and
    `mlplat server --stack dev` serving the ledger."""
    project = make_registered_project(tmp_path_factory.mktemp("api-serving") / "project")
    assert train(project, seed=2) == 2
    for version in ("1", "2"):
        promoted = cli_in(project, "models", "promote", "scorer", version, "--to", "staging")
        assert promoted.returncode == 0, promoted.stderr
    with running_server(project, "dev") as server:
        yield project, server


def ledger_rows(project) -> dict[str, int]:
    conn = db(project)
    try:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("endpoints", "rollouts", "rollout_events", "deployments", "audit_log")}
    finally:
        conn.close()


def assert_reads_identical(served, *, text: bool = False) -> None:
    """Every read returns the same document through the server as embedded (and, with ``text``,
    the CLI prints the same tables and text both ways)."""
    from mlplat.api.plane import EmbeddedPlane

    project, server = served
    spec, ctx = spec_ctx(project)
    there = server.plane(spec, ctx)
    try:
        for operation, params in READS:
            before = requests_served(server, operation)
            assert there.call(operation, **params) == EmbeddedPlane(spec, ctx).call(operation, **params), operation
            assert requests_served(server, operation) == before + 1, (operation, "the server did not answer it")
    finally:
        there.close()
    for args in TEXT_READS if text else ():
        printed_there, printed_here = remote(served, *args), embedded(served, *args)
        assert printed_there.returncode == printed_here.returncode == 0, (args, printed_there.stderr)
        assert printed_there.stdout == printed_here.stdout, args


def start_gateway(project, tmp_path, env: dict[str, str], *args: str):
    port_file = tmp_path / f"gateway-port-{len(list(tmp_path.iterdir()))}"
    proc = subprocess.Popen([str(BIN / "mlplat"), "serve", "--port", "0", "--port-file", str(port_file), "--no-monitor",
                             *args], cwd=project,
                            env={**os.environ, "MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": AUTHOR, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{wait_for_port_file(port_file, proc)}"


def test_deploy_canary_and_rollback_through_the_server(served, tmp_path):
    project, server = served
    empty = remote(served, "deployments", "list")
    assert empty.returncode == 0 and "No deployments yet" in empty.stdout
    assert json.loads(remote(served, "deployments", "list", "--json").stdout) == []

    deployed = remote(served, "deploy", "scorer", "1")
    assert deployed.returncode == 0, deployed.stderr
    assert deployed.stdout.strip() == "deployed scorer v1 to dev (direct): primary v1 100%"
    assert requests_served(server, "deployments.create") == 1
    endpoint = db(project).execute("SELECT strategy, stable_version, updated_by FROM endpoints WHERE model='scorer'")
    assert tuple(endpoint.fetchone()) == ("direct", 1, AUTHOR)  # the server recorded the client's user
    assert_reads_identical(served)

    # the gateway beside the server opens the ledger itself, even with the server's URL in its environment
    # (its canary controller is off: its analyses would change the rollout between two reads compared here)
    ledger = project / ".mlplat" / "dev" / "platform.db"
    proc, url = start_gateway(project, tmp_path, server.client_env(), "--database", f"sqlite:///{ledger}",
                              "--no-controller")
    try:
        scored = httpx.post(f"{url}/endpoints/scorer/invocations", json=ROW, timeout=10)
        assert scored.status_code == 200 and scored.headers["x-mlplat-version"] == "1", scored.text

        canary = remote(served, "deploy", "scorer", "2", "--strategy", "canary", "--steps", "10,100", "--bake", "3600",
                        "--json")
        assert canary.returncode == 0, canary.stderr
        doc = json.loads(canary.stdout)
        assert (doc["strategy"], doc["stable_version"]) == ("canary", 1)
        assert doc["routes"] == [{"variant": "canary", "version": 2, "weight": 10},
                                 {"variant": "stable", "version": 1, "weight": 90}]
        status = json.loads(remote(served, "rollout", "status", "scorer", "--json").stdout)
        assert status["rollout"]["state"] == "running" and status["rollout"]["policy"]["steps"] == [10, 100]
        assert status["rollout"]["id"] == doc["rollout_id"]
        text = remote(served, "rollout", "status", "scorer")
        assert text.returncode == 0 and "canary #" in text.stdout and "v1 → v2: running, step 1/2 (10%)" in text.stdout
        assert_reads_identical(served, text=True)

        rolled = remote(served, "rollback", "scorer", "--reason", "checked by hand", "--json")
        assert rolled.returncode == 0, rolled.stderr
        doc = json.loads(rolled.stdout)
        assert doc["routes"] == [{"variant": "primary", "version": 1, "weight": 100}] and doc["rollout_id"] is None
        assert doc["applied_in_s"] >= 0
        rollout = db(project).execute("SELECT state, reason FROM rollouts ORDER BY id DESC LIMIT 1").fetchone()
        assert tuple(rollout) == ("rolled_back", "checked by hand")
        # the gateway picks the rollback up from the ledger the server wrote
        with httpx.Client(base_url=url, timeout=10) as c:
            def only_v1() -> bool:
                versions = {c.post("/endpoints/scorer/invocations", json=ROW,
                                   headers={"x-routing-key": f"k{i}"}).headers["x-mlplat-version"] for i in range(30)}
                return versions == {"1"}

            wait_until(only_v1, timeout=30)
    finally:
        stop(proc)
    assert requests_served(server, "deployments.rollback") == 1
    shown = json.loads(remote(served, "deployments", "show", "scorer", "--json").stdout)
    assert [e["event"] for e in shown["events"]] == ["deployed", "deployed", "rolled_back"]
    assert shown["events"][-1]["actor"] == AUTHOR and shown["events"][-1]["reason"] == "checked by hand"
    assert_reads_identical(served)

    nothing_earlier = ("rollback", "scorer")  # v1 serves alone again, and no version served before it
    there, here = remote(served, *nothing_earlier), embedded(served, *nothing_earlier)
    assert there.returncode == here.returncode == 5, (there.stderr, here.stderr)
    assert there.stderr == here.stderr and "no earlier version" in there.stderr


def test_refusals_are_the_same_through_the_server_and_change_nothing(served):
    project, server = served
    before = ledger_rows(project)
    refused = [
        (("deploy", "nope", "1"), 4),  # no such model
        (("deploy", "scorer", "9"), 4),  # no such version
        (("deployments", "show", "nope"), 4),
        (("rollout", "status", "nope"), 4),
        (("rollback", "nope"), 4),
        (("deploy", "scorer", "1", "--strategy", "blue-green"), 2),  # refused by the CLI before any call
        (("deploy", "scorer", "1", "--env", "production"), 6),  # not approved for production
    ]
    for args, code in refused:
        there, here = remote(served, *args), embedded(served, *args)
        assert there.returncode == here.returncode == code, (args, there.stderr, here.stderr)
        assert there.stderr == here.stderr, args
    unknown = ("deploy", "nope", "1", "--json")  # the error document itself, as --json prints it
    there, here = remote(served, *unknown), embedded(served, *unknown)
    assert there.returncode == here.returncode == 4
    assert json.loads(there.stderr) == json.loads(here.stderr)
    assert json.loads(there.stderr)["error"] == "NotFound"
    assert ledger_rows(project) == before

    headers = {"Mlplat-User": AUTHOR}
    cases = [  # body, HTTP status, exit code, the field named (422 by the operation's parameters)
        ({"model": "scorer", "version": 1, "strategy": "blue-green"}, 422, 2, "strategy"),
        ({"model": "scorer", "version": 0}, 422, 2, "version"),
        ({"model": "scorer", "version": 1, "steps": "1,100"}, 422, 2, "steps"),
        ({"model": "scorer", "version": 1, "replicas": 3}, 422, 2, "replicas"),
        ({"model": "scorer", "version": 1, "weights": "50,50"}, 422, 2, "weights"),  # weights without ab
        ({"model": "scorer", "version": 2, "strategy": "shadow", "percent": 60}, 422, 1, None),
        ({"model": "scorer", "version": 2, "strategy": "canary", "steps": [50, 10]}, 422, 1, None),
        ({"model": "nope", "version": 1}, 404, 4, None),
        ({"model": "scorer", "version": 9}, 404, 4, None),
    ]
    for body, status, code, field in cases:
        response = httpx.post(server.url + API + "/deployments", json=body, headers=headers, timeout=60)
        assert response.status_code == status, (body, response.text)
        doc = response.json()
        assert doc["message"] and doc["hint"] is not None and doc["exit_code"] == code, (body, doc)
        if field is not None:
            assert doc["where"] == field or field in doc["message"], (body, doc)
    for path in ("/deployments/nope", "/rollouts/nope"):
        response = httpx.get(server.url + API + path, headers=headers, timeout=30)
        assert response.status_code == 404 and response.json()["error"] == "NotFound", response.text
    response = httpx.post(server.url + API + "/deployments/nope/rollback", json={}, headers=headers, timeout=30)
    assert response.status_code == 404 and response.json()["exit_code"] == 4, response.text
    assert ledger_rows(project) == before
