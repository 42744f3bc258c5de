"""The commands that listen (`dashboard`, `serve`, `ui`) as real processes on 127.0.0.1: a port that is
taken gets one clear error and exit 9 (never a URL first), and a URL is printed only once it answers."""
from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BIN, run_cli, write_project
from tests.integration.support_serving import stop
from tests.timing import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory) -> Path:
    root = write_project(tmp_path_factory.mktemp("ports") / "project")
    up = run_cli("up", "--stack", "dev", "--yes", cwd=root, env={"MLPLAT_PROJECT_DIR": str(root)})
    assert up.returncode == 0, up.stderr
    return root


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 held by a listening socket of the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def env_for(project: Path) -> dict[str, str]:
    return {"MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": "ds@example.com"}


@pytest.mark.parametrize("command", [("dashboard",), ("serve", "--no-monitor"), ("ui",), ("server",)])
def test_a_taken_port_is_one_clear_error_and_exit_9(provisioned, held_port, command):
    result = run_cli(*command, "--port", str(held_port), cwd=provisioned, env=env_for(provisioned), timeout=120)
    assert result.returncode == 9, (result.stdout, result.stderr)
    assert f"port {held_port} on 127.0.0.1 is already in use by another process" in result.stderr
    assert "--port" in result.stderr
    output = result.stdout + result.stderr
    assert "http://" not in output  # no URL announced for a server that never listened
    assert "Errno" not in output and output.count("error:") == 1


def start(project: Path, *args: str, stream: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "mlplat"), *args], cwd=project, env={**os.environ, **env_for(project)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def first_line_with(proc: subprocess.Popen, stream, fragment: str) -> str:
    seen = []
    for line in stream:
        seen.append(line)
        if fragment in line:
            return line
    raise AssertionError(f"exited {proc.wait()} without printing {fragment!r}: {''.join(seen)[-3000:]}")


def answers(url: str) -> int:
    """The status of a GET of ``url`` (redirects not followed); raises if nothing listens there."""
    return httpx.get(url, timeout=10, follow_redirects=False).status_code


def test_dashboard_and_gateway_print_their_url_once_they_answer(provisioned):
    dashboard = start(provisioned, "dashboard", "--port", "0", stream="stderr")
    try:
        line = first_line_with(dashboard, dashboard.stderr, "log in: ")
        login = line.split("log in: ")[1].strip()
        assert answers(login) in (302, 303)  # the moment the link is printed it answers: a session
    finally:
        stop(dashboard)
    gateway = start(provisioned, "serve", "--port", "0", "--no-monitor", stream="stdout")
    try:
        line = first_line_with(gateway, gateway.stdout, "gateway for stack dev")
        base = line.split(": ", 1)[1].split()[0]
        assert answers(base + "/metrics") == 200
    finally:
        stop(gateway)


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``pid``."""
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out.append((int(child), Path(f"/proc/{child}/cmdline").read_text().replace("\0", " ")[:200]))
        out += descendants(int(child))
    return out


def test_ui_prints_the_runs_table_url_once_it_answers_with_one_worker(provisioned):
    from mlflow.tracking import MlflowClient

    state = provisioned / ".mlplat" / "dev"
    client = MlflowClient(f"sqlite:///{state / 'mlflow.db'}")
    older = client.create_experiment("older", artifact_location=str(state / "artifacts" / "older"))
    client.create_run(older, start_time=1_000)
    latest = client.create_experiment("credit-risk", artifact_location=str(state / "artifacts" / "credit-risk"))
    client.create_run(latest, start_time=2_000)

    ui = start(provisioned, "ui", "--port", "0", stream="stdout")
    try:
        line = first_line_with(ui, ui.stdout, "MLflow UI for stack dev: ")
        url = line.split(": ", 1)[1].split()[0]
        base, fragment = url.split("/#", 1)
        assert fragment == f"/experiments/{latest}/runs"  # the runs table of the latest run's experiment
        assert answers(base + "/health") == 200  # printed only once the UI answers
        # one worker: the MLflow CLI and the one uvicorn process it runs (four workers add a supervisor's children)
        tree = wait_until(lambda: descendants(ui.pid) or None, timeout=30)
        assert len(tree) <= 2 and sum("uvicorn" in cmd for _, cmd in tree) == 1, tree
        pids = [pid for pid, _ in tree]
    finally:
        ui.terminate()
        assert ui.wait(timeout=60) == 0  # stopped like Ctrl-C: not a failure
    # the UI's processes went with it
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), timeout=30)

    chosen = start(provisioned, "ui", "--port", "0", "--experiment", "older", stream="stdout")
    try:
        line = first_line_with(chosen, chosen.stdout, "MLflow UI for stack dev: ")
        assert line.split(": ", 1)[1].split()[0].endswith(f"/#/experiments/{older}/runs")
    finally:
        stop(chosen)
