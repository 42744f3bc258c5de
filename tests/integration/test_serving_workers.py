"""`mlplat serve --workers 2`: two gateway processes on one port, as a user starts them.

Each response names the worker that answered (``x-mlplat-worker``). A connection kept alive stays
with the worker that accepted it, so a test reaches a chosen worker through its own connection.
Every claim is checked on what the workers answer and on the ledger; nothing is timed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import BIN
from tests.integration.support_registry import AUTHOR, cli_in, make_registered_project, spec_ctx, train
from tests.integration.support_serving import stop, wait_for_port_file
from tests.timing import wait_until

pytestmark = pytest.mark.integration
URL = "/endpoints/scorer/invocations"
ROW = {"dataframe_records": [{f"x{i}": 0.1 * i for i in range(6)}]}
WORKER = "x-mlplat-worker"


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            pass
    return {p for p in found if alive(p)}


def deploy(project: Path, version: int, strategy: str = "direct", **kw):
    """Straight into the stack's ledger (the deploy command's gate and approval checks are tested elsewhere)."""
    from mlplat.services import rollout as ro
    from mlplat_providers.local.serving import LocalServing

    spec, ctx = spec_ctx(project)
    with LocalServing(spec, ctx).db.transaction() as conn:
        return ro.deploy(conn, model="scorer", environment="dev", version=version, strategy=strategy, actor=AUTHOR,
                         method="trusted-local", **kw)


def query(project: Path, sql: str, *args) -> list[dict]:
    from mlplat_providers.local.serving import LocalServing

    spec, ctx = spec_ctx(project)
    conn = LocalServing(spec, ctx).db.connect()
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


class Gateway:
    """`mlplat serve --workers 2` in a project, and one kept-alive connection per worker."""

    def __init__(self, project: Path, tmp: Path):
        self.port_file = tmp / "port"
        self.proc = subprocess.Popen([str(BIN / "mlplat"), "serve", "--workers", "2", "--port", "0", "--port-file",
                                      str(self.port_file), "--no-monitor"], cwd=project,
                                     env={**os.environ, "MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": AUTHOR},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{wait_for_port_file(self.port_file, self.proc, timeout=120)}"
        self.clients: dict[int, httpx.Client] = {}

    def workers(self) -> set[int]:
        return children(self.proc.pid)

    def connect(self) -> dict[int, httpx.Client]:
        """A client on a connection of its own to each worker (new connections until each has one)."""
        def one_each() -> bool:
            client = httpx.Client(base_url=self.url, timeout=10, limits=httpx.Limits(max_connections=1))
            pid = int(client.post(URL, json=ROW).headers[WORKER])
            if pid in self.clients:
                client.close()
            else:
                self.clients[pid] = client
            return set(self.clients) == self.workers() and len(self.clients) == 2

        for client in self.clients.values():
            client.close()
        self.clients = {}
        wait_until(one_each, timeout=60, interval=0, message=lambda: f"reached {sorted(self.clients)}")
        return self.clients

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        stop(self.proc)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A dev stack with scorer v1 and v2 registered, v1 then v2 deployed (v1 is the rollback target)."""
    root = make_registered_project(tmp_path_factory.mktemp("workers") / "project")
    assert train(root, seed=2) == 2
    deploy(root, 1)
    deploy(root, 2)
    return root


@pytest.fixture(scope="module")
def gateway(project, tmp_path_factory):
    gw = Gateway(project, tmp_path_factory.mktemp("gateway"))
    yield gw
    gw.close()


def test_both_workers_serve_and_follow_a_rollback(gateway, project):
    clients = gateway.connect()
    assert len(clients) == 2 and set(clients) == gateway.workers()
    for pid, client in clients.items():
        r = client.post(URL, json=ROW)
        assert r.status_code == 200 and r.headers[WORKER] == str(pid) and r.headers["x-mlplat-version"] == "2"

    rolled = cli_in(project, "rollback", "scorer", "--json")
    assert rolled.returncode == 0, rolled.stderr
    for pid, client in clients.items():  # each worker follows the ledger on its own connection
        wait_until(lambda c=client: c.post(URL, json=ROW).headers["x-mlplat-version"] == "1", timeout=30,
                   message=f"worker {pid} still serves v2")
        r = client.post(URL, json=ROW)
        assert r.headers[WORKER] == str(pid) and r.json()["predictions"] in ([0], [1])


def test_a_killed_worker_is_restarted_while_the_other_serves(gateway):
    clients = gateway.connect()
    survivor, victim = sorted(clients)
    clients[victim].close()
    outcomes: list[tuple[str, object]] = []  # (how, status or exception): every request, counted honestly
    fresh = threading.Event()
    done = threading.Event()

    def stream() -> None:
        while not done.is_set():
            try:
                r = clients[survivor].post(URL, json=ROW)
                outcomes.append(("kept-alive", (r.status_code, r.headers[WORKER])))
                if fresh.is_set():  # a new connection: whichever worker accepts it from the shared queue
                    r = httpx.post(gateway.url + URL, json=ROW, timeout=10)
                    outcomes.append(("new", (r.status_code, r.headers[WORKER])))
            except httpx.HTTPError as exc:
                outcomes.append(("error", exc))

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not alive(victim), timeout=30)
        fresh.set()  # from now on no connection can be accepted by the killed worker
        restarted = wait_until(lambda: gateway.workers() - {survivor, victim}, timeout=60).pop()
        wait_until(lambda: any(how == "new" and out == (200, str(restarted)) for how, out in outcomes), timeout=120,
                   message="the restarted worker did not answer a new connection")
    finally:
        done.set()
        thread.join(30)
    assert gateway.proc.poll() is None and gateway.workers() == {survivor, restarted}
    failed = [o for o in outcomes if o[0] == "error" or o[1][0] != 200]  # type: ignore[index]
    assert failed == [] and len(outcomes) > 10
    assert {out[1] for how, out in outcomes if how == "kept-alive"} == {str(survivor)}  # type: ignore[index]


def test_one_controller_steps_a_canary_across_both_workers(gateway, project):
    from mlplat.services.rollout import CanaryPolicy

    # v2 predicts like v1 closely enough, and latency is not what is judged: traffic alone passes each step
    policy = CanaryPolicy((50, 100), 0.0, max_error_rate=0.02, max_latency_ratio=1e9, max_prediction_shift=1.0,
                          min_requests=10)
    rid = deploy(project, 2, "canary", canary=policy).rollout_id
    clients = gateway.connect()
    holders: set[str] = set()

    def finished() -> bool:
        for client in clients.values():
            for _ in range(5):
                assert client.post(URL, json=ROW).status_code == 200
        holders.update(r["holder"] for r in query(project, "SELECT holder FROM leases WHERE name=?", "rollout:scorer:dev"))
        return query(project, "SELECT state FROM rollouts WHERE id=?", rid)[0]["state"] != "running"

    wait_until(finished, timeout=120, interval=0)
    assert query(project, "SELECT state FROM rollouts WHERE id=?", rid) == [{"state": "succeeded"}]
    events = [(e["event"], e["step_index"]) for e in
              query(project, "SELECT event, step_index FROM rollout_events WHERE rollout_id=? ORDER BY id", rid)]
    assert events == [("deployed", 0), ("step", 1), ("promoted", 1)]
    # one holder judged it, and it is one of the two workers (host:pid:random)
    assert len(holders) == 1 and int(holders.pop().split(":")[1]) in set(clients)


def test_sigterm_stops_every_worker(gateway):
    pids = gateway.workers()
    assert len(pids) == 2
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(60) == 0
    wait_until(lambda: not any(alive(p) for p in pids), timeout=30)


def test_bad_worker_options(project):
    zero = cli_in(project, "serve", "--workers", "0", "--port", "0")
    assert zero.returncode == 2 and "--workers" in zero.stderr
    not_a_socket = cli_in(project, "serve", "--listen-fd", "0", "--port", "0")
    assert not_a_socket.returncode == 1 and "--listen-fd 0 is not" in not_a_socket.stderr


SLEEPING_WORKER = """
import signal, sys
from pathlib import Path
from mlplat.serving.workers import inherit
sock = inherit(int(sys.argv[1]))
Path(sys.argv[2]).write_text(str(sock.getsockname()[1]))
signal.pause()
"""
SUPERVISOR = """
import sys
from pathlib import Path
from mlplat.serving.model_server import bind
from mlplat.serving.workers import Supervisor
sock = bind("127.0.0.1", 0)
Supervisor(sock, lambda fd, ready: [sys.executable, "-c", sys.argv[1], str(fd), str(ready)], 2).run(
    lambda pids: Path(sys.argv[2]).write_text(" ".join(map(str, pids))))
"""


def test_a_killed_supervisor_leaves_no_worker(tmp_path):
    ready = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, SLEEPING_WORKER, str(ready)], stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_until(lambda: ready.is_file() and ready.read_text(), timeout=60)
        pids = [int(p) for p in ready.read_text().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        proc.kill()
        proc.wait(10)
        wait_until(lambda: not any(alive(p) for p in pids), timeout=30, message="workers outlived their supervisor")
    finally:
        stop(proc)
