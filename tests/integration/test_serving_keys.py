"""Serving API keys: `mlplat keys create|list|revoke|rotate` (embedded and through `mlplat server`), and a real
gateway process (`mlplat serve`) on a stack with ``serving.auth.apiKeys: required``.

One project per module: ``scorer`` v1 gated and deployed in dev, ``other`` registered. The stack ``keyed``
shares dev's state (one ledger) and requires keys on the gateway; ``dev`` leaves them off.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import BIN, write_project
from tests.integration.support_registry import AUTHOR, cli_in, db, make_registered_project, remote, stack_text, train
from tests.integration.support_serving import save_toy, stop, wait_for_port_file
from tests.server_support import running_server
from tests.timing import ManualClock, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("serving-keys")]

ROW = {"dataframe_records": [{f"x{i}": 0.1 * i for i in range(6)}]}
V2 = {"inputs": [{"name": f"x{i}", "shape": [1], "datatype": "FP64", "data": [0.1 * i]} for i in range(6)]}


def keyed_stack() -> str:
    text = stack_text(["risk-office@example.com", AUTHOR])
    assert "    shadow: {percent: 10}\n" in text
    return text.replace("    shadow: {percent: 10}\n", "    shadow: {percent: 10}\n    auth: {apiKeys: required}\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = make_registered_project(tmp_path_factory.mktemp("serving-keys") / "project")
    (root / "stacks" / "Pulumi.keyed.yaml").write_text(keyed_stack())
    assert train(root, name="other") == 1
    assert cli_in(root, "models", "promote", "scorer", "1", "--to", "staging").returncode == 0
    deployed = cli_in(root, "deploy", "scorer", "1")
    assert deployed.returncode == 0, deployed.stderr
    return root


def keys(project: Path, *args: str, stack: str = "dev", env: dict | None = None) -> subprocess.CompletedProcess:
    return cli_in(project, "keys", *args, "--stack", stack, env=env)


def create(project: Path, model: str = "scorer", *args: str) -> dict:
    done = keys(project, "create", model, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rows(project: Path, sql: str, *args) -> list[dict]:
    conn = db(project)
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def captured(project: Path) -> int:
    return rows(project, "SELECT count(*) AS n FROM captures")[0]["n"]


def test_keys_create_list_revoke_rotate_through_the_cli(project):
    made = create(project, "scorer", "--description", "checkout service", "--expires-in", "30d")
    key, key_id = made["key"], made["id"]
    assert key.startswith(f"mlp_{key_id}_") and len(key) == len("mlp_") + 12 + 1 + 43
    assert (made["model"], made["environment"], made["state"], made["created_by"]) == ("scorer", "dev", "active", AUTHOR)
    assert made["expires_at"] - made["created_at"] == pytest.approx(30 * 86400)
    # only a digest is stored: the secret is nowhere in the ledger
    stored = rows(project, "SELECT * FROM api_keys WHERE id = ?", key_id)[0]
    assert key.split("_", 2)[2] not in json.dumps(stored) and len(stored["secret_hash"]) == 64
    # the text form prints the key alone on stdout, the rest on stderr
    plain = keys(project, "create", "scorer")
    assert plain.returncode == 0 and plain.stdout.strip().startswith("mlp_") and len(plain.stdout.split()) == 1
    assert "shown once" in plain.stderr

    listed = json.loads(keys(project, "list", "scorer", "--json").stdout)
    assert key_id in {r["id"] for r in listed}
    text = json.dumps(listed)
    assert "mlp_" not in text and "secret" not in text and "key" not in {k for r in listed for k in r}
    assert "checkout service" in keys(project, "list").stdout

    rotated = json.loads(keys(project, "rotate", "scorer", key_id, "--grace", "0", "--json").stdout)
    assert rotated["previous"]["id"] == key_id and rotated["previous"]["state"] == "expired"
    assert rotated["key"].startswith(f"mlp_{rotated['id']}_") and rotated["description"] == "checkout service"
    assert rotated["expires_at"] == made["expires_at"]  # the new key keeps the old one's lifetime
    graced = json.loads(keys(project, "rotate", "scorer", rotated["id"], "--json").stdout)  # default grace: 1 h
    assert graced["previous"]["state"] == "active"
    assert graced["previous"]["expires_at"] - graced["created_at"] == pytest.approx(3600, abs=5)

    revoked = json.loads(keys(project, "revoke", "scorer", graced["id"], "--reason", "leaked", "--json").stdout)
    assert revoked["state"] == "revoked" and revoked["changed"] and revoked["revoked_by"] == AUTHOR
    again = keys(project, "revoke", "scorer", graced["id"])
    assert again.returncode == 0 and "already revoked" in again.stdout

    actions = [r["action"] for r in rows(project, "SELECT action FROM audit_log WHERE action LIKE 'key.%' ORDER BY seq")]
    assert actions[:5] == ["key.created", "key.created", "key.rotated", "key.rotated", "key.revoked"]
    assert len(actions) == 5  # the second revoke changed nothing, so it wrote nothing


def test_bad_key_requests_are_refused_and_write_nothing(project):
    made = create(project)
    before = rows(project, "SELECT count(*) AS n FROM api_keys")[0]["n"], \
        rows(project, "SELECT count(*) AS n FROM audit_log")[0]["n"]
    refused = {
        "unknown model": (keys(project, "create", "nope"), 4, "no registered model 'nope'"),
        "bad lifetime": (keys(project, "create", "scorer", "--expires-in", "soon"), 2, "not a duration"),
        "zero lifetime": (keys(project, "create", "scorer", "--expires-in", "0"), 2, "must expire in the future"),
        "a key, not an id": (keys(project, "revoke", "scorer", made["key"]), 2, "key_id is an API key, not its id"),
        "not an id": (keys(project, "revoke", "scorer", "7"), 2, "key_id is not a key id"),
        "unknown id": (keys(project, "revoke", "scorer", "0123456789ab"), 4, "no API key 0123456789ab"),
        "another model's key": (keys(project, "revoke", "other", made["id"]), 4, f"no API key {made['id']} for model"),
        "negative grace": (keys(project, "rotate", "scorer", made["id"], "--grace", "-5"), 2, "not a duration"),
    }
    for what, (result, code, fragment) in refused.items():
        assert result.returncode == code, (what, result.returncode, result.stderr)
        assert fragment in result.stderr, (what, result.stderr)
    assert made["key"].split("_", 2)[2] not in refused["a key, not an id"][0].stderr  # the secret is not echoed
    assert keys(project, "revoke", "scorer", made["id"]).returncode == 0
    dead = keys(project, "rotate", "scorer", made["id"])
    assert dead.returncode == 5 and "is revoked: only an active key can be rotated" in dead.stderr
    after = rows(project, "SELECT count(*) AS n FROM api_keys")[0]["n"], \
        rows(project, "SELECT count(*) AS n FROM audit_log")[0]["n"]
    assert after == (before[0], before[1] + 1)  # the one revoke, nothing else


def test_keys_through_the_server(project):
    with running_server(project, "dev") as server:
        served = (project, server)
        made = remote(served, "keys", "create", "scorer", "--json", "-d", "via server")
        assert made.returncode == 0, made.stderr
        doc = json.loads(made.stdout)
        assert doc["key"].startswith("mlp_") and doc["created_by"] == AUTHOR
        listed = json.loads(remote(served, "keys", "list", "scorer", "--json").stdout)
        assert [r["description"] for r in listed if r["id"] == doc["id"]] == ["via server"]
        assert "mlp_" not in json.dumps(listed)
        revoked = remote(served, "keys", "revoke", "scorer", doc["id"], "--json")
        assert revoked.returncode == 0 and json.loads(revoked.stdout)["state"] == "revoked"
        unknown = remote(served, "keys", "create", "nope")
        assert unknown.returncode == 4 and "no registered model 'nope'" in unknown.stderr
    assert rows(project, "SELECT revoked_at FROM api_keys WHERE id = ?", doc["id"])[0]["revoked_at"] is not None


def start_gateway(project: Path, tmp: Path, stack: str, *args: str) -> tuple[subprocess.Popen, str]:
    port_file = tmp / f"port-{stack}-{len(list(tmp.iterdir()))}"
    proc = subprocess.Popen([str(BIN / "mlplat"), "serve", "--stack", stack, "--no-monitor", "--port", "0",
                             "--port-file", str(port_file), *args], cwd=project,
                            env={**os.environ, "MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": AUTHOR},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{wait_for_port_file(port_file, proc)}"


def test_a_gateway_requiring_keys(project, tmp_path):
    good = create(project, "scorer")["key"]
    other = create(project, "other")["key"]
    doomed = create(project, "scorer")
    # beyond loopback only when keys are required: refused on dev, accepted on keyed
    open_dev = cli_in(project, "serve", "--stack", "dev", "--host", "0.0.0.0")
    assert open_dev.returncode == 6 and "no authentication" in open_dev.stderr
    assert "serving.auth.apiKeys: required" in open_dev.stderr

    proc, url = start_gateway(project, tmp_path, "keyed", "--host", "0.0.0.0")
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            start = captured(project)
            missing = c.post("/endpoints/scorer/invocations", json=ROW)
            assert missing.status_code == 401 and missing.json()["error_code"] == "UNAUTHENTICATED"
            assert "mlplat keys create" in missing.json()["hint"] and missing.headers["www-authenticate"].startswith("Bearer")
            malformed = c.post("/endpoints/scorer/invocations", json=ROW, headers={"x-api-key": "mlp_nope"})
            assert malformed.status_code == 401 and "malformed" in malformed.json()["message"]
            forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
            assert c.post("/endpoints/scorer/invocations", json=ROW,
                          headers={"authorization": f"Bearer {forged}"}).status_code == 401
            basic = c.post("/endpoints/scorer/invocations", json=ROW, headers={"authorization": "Basic Zm9vOmJhcg=="})
            assert basic.status_code == 401
            wrong = c.post("/endpoints/scorer/invocations", json=ROW, headers={"authorization": f"Bearer {other}"})
            assert wrong.status_code == 403 and "is for model 'other'" in wrong.json()["message"]
            v2_missing = c.post("/v2/models/scorer/infer", json=V2)
            assert v2_missing.status_code == 401 and "error" in v2_missing.json()
            # nothing refused was scored or captured
            assert captured(project) == start

            ok = c.post("/endpoints/scorer/invocations", json=ROW, headers={"authorization": f"Bearer {good}"})
            assert ok.status_code == 200 and ok.json()["predictions"] in ([0], [1])
            assert c.post("/endpoints/scorer/invocations", json=ROW, headers={"x-api-key": good}).status_code == 200
            v2 = c.post("/v2/models/scorer/infer", json=V2, headers={"x-api-key": good})
            assert v2.status_code == 200, v2.text
            wait_until(lambda: captured(project) == start + 3, timeout=30, message="the 3 admitted calls were not captured")
            # health, metrics and metadata need no key
            for path in ("/ping", "/v2/health/ready", "/metrics", "/endpoints", "/v2/models/scorer"):
                assert c.get(path).status_code == 200, path

            # revoked: refused from the gateway's next routing poll on, no restart
            assert c.post("/endpoints/scorer/invocations", json=ROW, headers={"x-api-key": doomed["key"]}).status_code == 200
            assert keys(project, "revoke", "scorer", doomed["id"]).returncode == 0
            wait_until(lambda: c.post("/endpoints/scorer/invocations", json=ROW,
                                      headers={"x-api-key": doomed["key"]}).status_code == 401,
                       timeout=30, message="the revoked key is still admitted")
            assert "revoked" in c.post("/endpoints/scorer/invocations", json=ROW,
                                       headers={"x-api-key": doomed["key"]}).json()["message"]
            # rotated without grace: the old key stops, the new one works, on the running gateway
            rotated = json.loads(keys(project, "rotate", "scorer", good.split("_")[1], "--grace", "0", "--json").stdout)
            wait_until(lambda: c.post("/endpoints/scorer/invocations", json=ROW,
                                      headers={"x-api-key": rotated["key"]}).status_code == 200,
                       timeout=30, message="the rotated key is not admitted")
            assert c.post("/endpoints/scorer/invocations", json=ROW, headers={"x-api-key": good}).status_code == 401
            assert proc.poll() is None  # the same process throughout
    finally:
        stop(proc)


def test_rotation_grace_follows_the_gateway_clock(tmp_path):
    """The old key of a rotation is admitted until its grace ends and refused after, on a gateway whose clock
    the test moves (the same clock stamps the rotation)."""
    import uvicorn

    from mlplat.db import Database
    from mlplat.services import api_keys
    from mlplat.services import rollout as ro
    from mlplat.serving.gateway import Gateway, GatewayConfig
    from mlplat.serving.model_server import bind

    db = Database(tmp_path / "platform.db")
    db.migrate()
    model = save_toy(tmp_path / "toy")
    clock = ManualClock()
    with db.transaction() as conn:
        conn.execute("INSERT INTO model_versions (model, version, run_id, author, framework, source, manifest, "
                     "artifact_digest, seal, lineage, created_at) VALUES ('scorer', 1, 'run', 'a@example.com', "
                     "'pyfunc', '-', '{}', 'd', 's', '{}', 0)")
        ro.deploy(conn, model="scorer", environment="production", version=1, strategy="direct", actor=AUTHOR,
                  method="trusted-local")
        old = api_keys.create(conn, model="scorer", environment="production", actor=AUTHOR, method="trusted-local",
                              now=clock())
    config = GatewayConfig(environment="production", poll_interval=0.05, run_controller=False, api_keys="required")
    gateway = Gateway(tmp_path / "platform.db", config, lambda name, version: model, clock=clock)
    gateway.start()
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(gateway, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=20, interval=0.02, message="uvicorn did not start")
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/endpoints/scorer/invocations"
        row = {"dataframe_records": [{"a": 0.1, "b": 0.2, "c": 0.3}]}

        def status(key: str) -> int:
            return httpx.post(url, json=row, headers={"x-api-key": key}, timeout=30).status_code

        assert status(old["key"]) == 200
        revision = gateway.revision
        with db.transaction() as conn:
            new = api_keys.rotate(conn, key_id=old["id"], model="scorer", actor=AUTHOR, method="trusted-local",
                                  now=clock(), grace=600)
        wait_until(lambda: gateway.revision > revision, timeout=30, message="the gateway did not reload")
        clock.advance(599)
        assert status(old["key"]) == 200 and status(new["key"]) == 200  # within the grace: both
        clock.advance(2)
        assert status(old["key"]) == 401 and status(new["key"]) == 200  # after it: only the new one
        assert "expired" in httpx.post(url, json=row, headers={"x-api-key": old["key"]}, timeout=30).json()["message"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        gateway.stop()


def test_optional_keys_admit_keyless_calls_but_check_any_key_sent():
    """``optional``: no key is fine, a key sent must be good; ``off`` looks at no key at all."""
    import secrets

    from mlplat.services.api_keys import KeyEntry, KeyTable, digest
    from mlplat.serving.auth import GatewayAuth, Refused

    secret = secrets.token_urlsafe(32)
    table = KeyTable("dev", {"0123456789ab": KeyEntry("scorer", "dev", digest(secret), None, False)})
    good, bad = f"mlp_0123456789ab_{secret}", f"mlp_0123456789ab_{secrets.token_urlsafe(32)}"

    def scope(key: str | None) -> dict:
        return {"headers": [(b"x-api-key", key.encode())] if key else []}

    optional, off = GatewayAuth("optional", "dev"), GatewayAuth("off", "dev")
    optional.table = off.table = table
    assert optional.check(scope(None), "scorer", 0.0) is None
    assert optional.check(scope(good), "scorer", 0.0) == "0123456789ab"
    for key, model, status in ((bad, "scorer", 401), (good, "other", 403), ("nonsense", "scorer", 401)):
        with pytest.raises(Refused) as refused:
            optional.check(scope(key), model, 0.0)
        assert refused.value.status == status
    assert off.check(scope(bad), "scorer", 0.0) is None
    with pytest.raises(ValueError, match="serving.auth.apiKeys"):
        GatewayAuth("sometimes", "dev")
