"""Webhook alerts: a receiver that times out is retried with backoff, off the caller's thread."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlplat.context import Context
from mlplat.services.monitoring import alerts
from mlplat.services.monitoring.passes import monitor_for, run_pass
from mlplat.services.monitoring.scheduler import MonitorLoop
from tests.conftest import REPO, run_cli, write_project

pytestmark = pytest.mark.integration


class Receiver(BaseHTTPRequestHandler):
    hang_first = 2
    hang_seconds = 1.5
    received: list = []
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.lock:
            type(self).received.append((time.monotonic(), body))
            attempt = len(type(self).received)
        if attempt <= self.hang_first:
            time.sleep(self.hang_seconds)  # longer than the channel's timeout
        try:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")
        except OSError:  # the client gave up already
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_slow_webhook_is_retried_with_backoff_and_never_blocks_the_pass(tmp_path, receiver):
    stack = (REPO / "stacks" / "Pulumi.dev.yaml").read_text().split("  mlplat:monitoring:")[0] + f"""\
  mlplat:monitoring:
    channels:
      - {{kind: webhook, url: "{receiver}", timeoutSeconds: 0.3, maxAttempts: 4, backoffSeconds: 0.2}}
  mlplat:budget: {{monthlyUsd: 0.000001, alertAt: [0.5]}}
"""
    root = write_project(tmp_path / "project", {"dev": stack})
    assert run_cli("up", "--stack", "dev", "--yes", cwd=root, env={"MLPLAT_PROJECT_DIR": str(root)}).returncode == 0
    ctx = Context(project_dir=root)
    spec = ctx.stack("dev")
    db = monitor_for(spec, ctx).database()
    conn = db.connect()
    with conn:  # one captured request makes a tiny cost: the $0.000001 budget is blown
        conn.execute("INSERT INTO captures (request_id, ts, model, version, variant, environment, inputs, outputs, "
                     "latency_ms, status, shadow) VALUES ('r1', ?, 'm', 1, 'primary', 'dev', '{\"x\": 1}', '[1]', 5, 200, 0)",
                     (time.time() - 7200,))
        conn.execute("INSERT INTO captures (request_id, ts, model, version, variant, environment, inputs, outputs, "
                     "latency_ms, status, shadow) VALUES ('r2', ?, 'm', 1, 'primary', 'dev', '{\"x\": 2}', '[0]', 5, 200, 0)",
                     (time.time() - 60,))
    conn.close()

    report = run_pass(spec, ctx, deliver="background", retrain="off")
    assert [(e["rule"], e["event"]) for e in report.events] == [("budget-50", "fired")]
    # the pass returned while the receiver still hangs on the first attempt
    status = db.connect().execute("SELECT status, attempts FROM alert_outbox").fetchone()
    assert status[0] in ("pending", "sending") and status[1] <= 1  # not delivered yet: the receiver hangs

    sender = alerts.deliver_in_background(db)
    sender.join(timeout=30)
    assert not sender.is_alive()
    row = db.connect().execute("SELECT status, attempts, last_error FROM alert_outbox").fetchone()
    assert (row[0], row[1]) == ("sent", 3)
    assert "Timeout" in (row[2] or "") or row[2] is None
    times = [t for t, _ in Receiver.received]
    assert len(times) == 3
    # backoff doubles: ≥ 0.2 s then ≥ 0.4 s between the end of one timeout and the next attempt
    assert times[1] - times[0] >= 0.3 + 0.2 - 0.05 and times[2] - times[1] >= 0.3 + 0.4 - 0.05
    payload = json.loads(Receiver.received[-1][1])
    assert payload["event"] == "fired" and payload["rule"] == "budget-50" and payload["team"] == "ml-core"

    # the breach persists: the next pass sends nothing new
    again = run_pass(spec, ctx, deliver="sync", retrain="off")
    assert again.events == []
    assert db.connect().execute("SELECT COUNT(*) FROM alert_outbox").fetchone()[0] == 1


def test_receiver_that_never_answers_is_given_up_after_max_attempts(tmp_path, receiver):
    Receiver.hang_first = 99
    try:
        from mlplat.db import Database

        database = Database(tmp_path / "platform.db")
        database.migrate()
        with database.transaction() as conn:
            conn.execute("INSERT INTO alert_events(ts, rule, subject, kind, severity, metric, value, threshold, message) "
                         "VALUES (0, 'r', 's', 'fired', 'warning', 'm', 1, 0, 'msg')")
            conn.execute("INSERT INTO alert_outbox(event_id, url, payload, timeout_s, max_attempts, backoff_s, attempts, "
                         "next_attempt, status) VALUES (1, ?, '{}', 0.2, 2, 0.05, 0, 0, 'pending')", (receiver,))
        counts = alerts.deliver_due(database, deadline=time.time() + 20)
        assert counts == {"sent": 0, "failed": 1, "retried": 1}
        row = database.connect().execute("SELECT status, attempts FROM alert_outbox").fetchone()
        assert tuple(row) == ("failed", 2)
    finally:
        Receiver.hang_first = 2


def test_monitor_loop_runs_passes_on_a_schedule(tmp_path):
    root = write_project(tmp_path / "project")
    assert run_cli("up", "--stack", "dev", "--yes", cwd=root, env={"MLPLAT_PROJECT_DIR": str(root)}).returncode == 0
    ctx = Context(project_dir=root)
    loop = MonitorLoop(ctx.stack("dev"), ctx, interval=0.2).start()
    deadline = time.monotonic() + 20
    while loop.passes < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    loop.stop()
    assert loop.passes >= 2 and loop.last_error is None
