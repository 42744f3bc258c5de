"""`mlplat server` as a process: it answers, documents itself, refuses what it must, and the CLI
reaches it (or says clearly that it cannot)."""
from __future__ import annotations

import json
import signal

import httpx
import pytest

from mlplat.api import operations
from tests.conftest import REPO, run_cli, write_project
from tests.server_support import free_port, running_server

pytestmark = pytest.mark.integration


def stack_with_control_plane(url: str, extra: str = "") -> str:
    text = (REPO / "stacks" / "Pulumi.dev.yaml").read_text()
    return text + f"  mlplat:controlPlane:\n    url: {url}\n{extra}"


def test_server_answers_documents_itself_and_serves_the_cli(up_project, cli):
    with running_server(up_project, "dev") as server:
        assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
        assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}
        version = httpx.get(server.url + "/api/v1/version").json()
        assert version["api_version"] == operations.API_VERSION and version["stack"] == "dev"
        doc = httpx.get(server.url + "/api/v1/openapi.json").json()
        served = {entry["operationId"] for path in doc["paths"].values() for entry in path.values()}
        assert served == set(operations.load())
        embedded = cli("models", "list", "--json")
        remote = cli("models", "list", "--json", env=server.client_env())
        assert remote.returncode == 0, remote.stderr
        assert json.loads(remote.stdout) == json.loads(embedded.stdout)
        metrics = httpx.get(server.url + "/metrics").text
        assert 'mlplat_api_requests_total{operation="models.list",status="200"} 1' in metrics
        server.process.send_signal(signal.SIGTERM)
        # a graceful shutdown: uvicorn finishes and re-raises the signal it caught
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Traceback" not in server.output()


def test_a_client_project_reaches_the_server_named_in_its_stack_file(up_project, tmp_path):
    with running_server(up_project, "dev") as server:
        client = write_project(tmp_path / "client", {"dev": stack_with_control_plane(server.url)})
        result = run_cli("models", "list", "--json", cwd=client, env={"MLPLAT_PROJECT_DIR": str(client)})
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"environment": "dev", "versions": []}
        assert not (client / ".mlplat").exists(), "a client in server mode keeps no ledger of its own"


def test_unreachable_control_plane_is_exit_9_naming_the_url(tmp_path):
    port = free_port()
    client = write_project(tmp_path / "client", {"dev": stack_with_control_plane(f"http://127.0.0.1:{port}")})
    result = run_cli("models", "list", cwd=client, env={"MLPLAT_PROJECT_DIR": str(client)})
    assert result.returncode == 9, result.stderr
    assert f"http://127.0.0.1:{port} is unreachable" in result.stderr
    assert "mlplat server --stack dev" in result.stderr
    assert not (client / ".mlplat").exists()


def test_server_binds_loopback_only(up_project, cli):
    result = cli("server", "--stack", "dev", "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 6
    assert "no authentication" in result.stderr


@pytest.mark.parametrize("block, message", [
    ("    database: postgresql://mlplat:hunter2@db.internal/mlplat\n", "password must not be written"),
    ("    tracking: ftp://tracking\n", "is not an http(s) URL"),
])
def test_control_plane_settings_are_validated(tmp_path, block, message):
    text = (REPO / "stacks" / "Pulumi.dev.yaml").read_text() + "  mlplat:controlPlane:\n" + block
    client = write_project(tmp_path / "client", {"dev": text})
    result = run_cli("stack", "validate", "--stack", "dev", cwd=client, env={"MLPLAT_PROJECT_DIR": str(client)})
    assert result.returncode == 3, result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_the_server_machine_provisions_with_server_side_even_when_the_stack_names_the_server(tmp_path):
    port = free_port()
    project = write_project(tmp_path / "platform", {"dev": stack_with_control_plane(f"http://127.0.0.1:{port}")})
    env = {"MLPLAT_PROJECT_DIR": str(project)}
    as_client = run_cli("up", "--stack", "dev", "--yes", cwd=project, env=env)
    assert as_client.returncode == 9 and not (project / ".mlplat").exists()
    here = run_cli("up", "--stack", "dev", "--yes", "--server-side", cwd=project, env=env)
    assert here.returncode == 0, here.stderr
    assert (project / ".mlplat" / "dev" / ".mlplat-state.json").is_file()
    with running_server(project, "dev", port=port):
        status = run_cli("status", "--stack", "dev", "--json", cwd=project, env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["control_plane"] == f"http://127.0.0.1:{port}"
        audit = run_cli("audit", "log", "--stack", "dev", "--json", cwd=project, env=env)
        assert [e["action"] for e in json.loads(audit.stdout)] == ["governance.applied"]
    gone = run_cli("destroy", "--stack", "dev", "--yes", cwd=project, env=env)
    assert gone.returncode == 5 and (project / ".mlplat" / "dev").is_dir()
    removed = run_cli("destroy", "--stack", "dev", "--yes", "--server-side", cwd=project, env=env)
    assert removed.returncode == 0, removed.stderr
