"""Faults of the control plane: `mlplat server` on PostgreSQL killed mid-promotion, PostgreSQL restarted
under load, a client of another API version, malformed requests.

One project per module: the suite's trained project (scorer v1 in production, v2 in staging) moved
onto a fresh PostgreSQL database (``tests/integration/support_control_plane.py``); each test starts
its own real `mlplat server` on it.
"""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading

import httpx
import pytest

from mlplat.services.promotion import FAULT_ENV
from tests.chaos.support import no_orphans
from tests.conftest import BIN
from tests.integration.support_control_plane import (
    ENV,
    label_of,
    pg_clone,
    pg_ledger,
    production_counts,
    project_env,
    promotion_rows,
    seed_captures,
    status_counts,
)
from tests.server_support import running_server, start_server
from tests.timing import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

API = "/api/v1"
HEADERS = {"Mlplat-Api-Version": "1", "Mlplat-User": "ds@example.com", "Mlplat-Stack": "dev"}


@pytest.fixture(scope="module")
def site(bases, tmp_path_factory, postgres):
    """(project, database URL): the suite's trained project with its ledger on PostgreSQL."""
    base, _ = bases
    return pg_clone(base, tmp_path_factory.mktemp("cp-faults") / "project", postgres)


def cli(project, server, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mlplat"), *args], cwd=project, env=project_env(project, **server.client_env()),
                          capture_output=True, text=True, timeout=timeout)


def ledger_invariants(conn) -> None:
    """What no fault may break, read straight from PostgreSQL."""
    assert all(n == 1 for n in production_counts(conn).values()), production_counts(conn)
    running = conn.execute("SELECT model, environment, count(*) AS n FROM promotions WHERE state='running' "
                           "GROUP BY model, environment HAVING count(*) > 1").fetchall()
    assert not running, [dict(r) for r in running]
    for e in conn.execute("SELECT * FROM endpoints"):
        assert sum(r["weight"] for r in json.loads(e["routes"])) == 100, dict(e)
    live = conn.execute("SELECT model, environment, count(*) FROM rollouts WHERE state='running' "
                        "GROUP BY model, environment HAVING count(*) > 1").fetchall()
    assert not live, live


def audit_verifies(project, server) -> None:
    verified = cli(project, server, "audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] is True


# --- (a) the server killed mid-promotion ----------------------------------------------------------


def test_server_killed_mid_promotion_then_the_same_command_resumes_it(site, report):
    """SIGKILL at the promotion's own fault seam (``MLPLAT_FAULT_KILL``), in the server: first when the
    staging integration tests start, then inside the stage change's transaction before its COMMIT."""
    project, url = site
    promote = ("models", "promote", "scorer", "2", "--to", "production")
    db = pg_ledger(project, url)
    conn = db.connect()
    before = [p["id"] for p in promotion_rows(conn, "scorer")]
    seq_before = conn.execute("SELECT max(seq) FROM audit_log").fetchone()[0]
    conn.close()

    for point, done in (("integration:start", ["gate", "approval", "package", "endpoint"]),
                        ("stage:commit", ["gate", "approval", "package", "endpoint", "integration"])):
        server = start_server(project, "dev", database_url=url, env={FAULT_ENV: point})
        try:
            killed = cli(project, server, *promote)
            wait_until(lambda s=server: not s.alive(), timeout=60, message=f"the server did not die at {point}")
        finally:
            server.kill()
        assert server.process.returncode == -signal.SIGKILL, (point, server.process.returncode, server.output())
        # the client says what it knows: the request reached the server, which died before answering
        assert killed.returncode == 9, (point, killed.stdout, killed.stderr)
        assert "closed the connection before answering models.promote" in killed.stderr, killed.stderr
        assert "partly or wholly carried out" in killed.stderr and "Traceback" not in killed.stderr
        conn = db.connect()
        rows = [p for p in promotion_rows(conn, "scorer", 2, "production") if p["id"] not in before]
        assert [p["state"] for p in rows] == ["running"], rows
        steps = json.loads(rows[0]["steps"])
        assert {s for s, step in steps.items() if step.get("status") == "done"} == set(done), steps
        stages = dict(conn.execute("SELECT version, stage FROM model_stages WHERE model='scorer'").fetchall())
        assert stages == {1: "production", 2: "staging"}, (point, stages)  # nothing committed a stage change
        ledger_invariants(conn)
        conn.close()

    with running_server(project, "dev", database_url=url) as server:
        resumed = cli(project, server, *promote)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"resuming promotion #{rows[0]['id']} after gate, approval, package, endpoint, integration" in resumed.stderr
        assert "scorer version 2 is now in production" in resumed.stdout
        again = cli(project, server, *promote, "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False, again.stderr
        audit_verifies(project, server)
        shown = json.loads(cli(project, server, "models", "show", "scorer", "2", "--json").stdout)
        assert (shown["stage"], shown["production_version"]) == ("production", 2)
    assert no_orphans(project) == []  # the killed runs' staging endpoints did not outlive the promotion

    conn = db.connect()
    rows = [p for p in promotion_rows(conn, "scorer", 2, "production") if p["id"] not in before]
    assert [p["state"] for p in rows] == ["succeeded"], rows
    assert all(step["status"] == "done" for step in json.loads(rows[0]["steps"]).values()), rows[0]["steps"]
    stages = dict(conn.execute("SELECT version, stage FROM model_stages WHERE model='scorer'").fetchall())
    assert stages == {1: "archived", 2: "production"}
    actions = [r[0] for r in conn.execute("SELECT action FROM audit_log WHERE model='scorer' AND version=2 AND seq > ? "
                                          "ORDER BY seq", (seq_before,))
               if r[0].startswith("promotion.") or r[0] == "stage.changed"]
    # requested once; resumed twice (the commit the second kill cut short left no entry); done once
    assert actions == ["promotion.requested", "promotion.step", "promotion.step", "stage.changed",
                       "promotion.succeeded"], actions
    ledger_invariants(conn)
    conn.close()
    report.extra["mlplat server killed mid-promotion"] = {"kill points": ["integration:start", "stage:commit"],
                                                          "promotion records": len(rows), "resumed": True}
    report.write()


# --- (b) PostgreSQL restarted under load -----------------------------------------------------------


class Client(threading.Thread):
    """Calls operations through a RemotePlane in a loop (bounded) and records every outcome."""

    def __init__(self, url: str, number: int, calls, stop: threading.Event, limit: int = 400):
        super().__init__(daemon=True)
        self.url, self.number, self.calls, self.stop, self.limit = url, number, calls, stop, limit
        self.outcomes: list[dict] = []

    def run(self) -> None:
        from mlplat.api.plane import RemotePlane
        from mlplat.errors import MlplatError

        plane = RemotePlane(self.url, stack="dev", user=f"client{self.number}@example.com", timeout=120)
        try:
            for n in range(self.limit):
                if self.stop.is_set():
                    break
                name, params = self.calls(self.number, n)
                try:
                    self.outcomes.append({"op": name, "params": params, "ok": True,
                                          "result": plane.call(name, **params)})
                except MlplatError as exc:
                    self.outcomes.append({"op": name, "params": params, "ok": False, "error": type(exc).__name__,
                                          "message": exc.message})
        finally:
            plane.close()

    def succeeded(self) -> int:
        return sum(o["ok"] for o in self.outcomes)


UNAVAILABLE = "the platform database is unavailable"


def test_postgres_restarted_under_load_loses_no_committed_write(site, postgres, report):
    project, url = site
    ids = [f"pgr-{i:04d}" for i in range(300)]
    seed_captures(project, url, ids)
    rng = random.Random(7)
    batches: dict[str, list[str]] = {}

    def write(number: int, n: int):
        batch_id = f"restart-{number}-{n}"
        chosen = batches.setdefault(batch_id, rng.sample(ids, 20))
        return "monitoring.labels", {"labels": [{"request_id": i, "label": label_of(i)} for i in chosen],
                                     "source": "restart", "batch_id": batch_id}

    def read(number: int, n: int):
        return [("audit.log", {"limit": 1}), ("models.show", {"name": "scorer", "version": 2}),
                ("models.list", {})][n % 3]

    db = pg_ledger(project, url)
    conn = db.connect()
    audit_before = conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    conn.close()
    stop = threading.Event()
    with running_server(project, "dev", database_url=url) as server:
        clients = [Client(server.url, i, write if i < 2 else read, stop) for i in range(4)]
        for c in clients:
            c.start()
        try:
            wait_until(lambda: all(c.succeeded() >= 3 for c in clients), timeout=120, message="load before the restart")
            marks = [c.succeeded() for c in clients]
            postgres.restart()
            wait_until(lambda: all(c.succeeded() >= m + 5 for c, m in zip(clients, marks)) or
                       not any(c.is_alive() for c in clients), timeout=180, message="load after the restart")
        finally:
            stop.set()
            for c in clients:
                c.join(timeout=300)
        assert not any(c.is_alive() for c in clients)
        assert all(c.succeeded() >= m + 5 for c, m in zip(clients, marks)), [c.outcomes[-3:] for c in clients]
        statuses = status_counts(httpx.get(server.url + "/metrics", timeout=30).text)

        # every request answered, or answered 503 (the client retried it, then gave up): nothing else
        outcomes = [o for c in clients for o in c.outcomes]
        failures = [o for o in outcomes if not o["ok"] and not o["message"].startswith(UNAVAILABLE)]
        assert failures == [], failures[:5]
        assert {status for _, status in statuses} <= {200, 503}, statuses
        assert sum(n for (_, status), n in statuses.items() if status == 503) >= 1, (
            "no request met the restart", statuses)

        # the writes the server refused with 503 wrote nothing; sent again under their batch ids they land
        answers = {o["params"]["batch_id"]: o["result"] for o in outcomes if o["op"] == "monitoring.labels" and o["ok"]}
        refused = {o["params"]["batch_id"] for o in outcomes if o["op"] == "monitoring.labels" and not o["ok"]}
        plane = server.plane(*_spec_ctx(project))
        for batch_id in sorted(refused):
            chosen = batches[batch_id]
            answers[batch_id] = plane.call("monitoring.labels", source="restart", batch_id=batch_id,
                                           labels=[{"request_id": i, "label": label_of(i)} for i in chosen])
        plane.close()
        audit_verifies(project, server)
        ready = httpx.get(server.url + "/readyz", timeout=30)
        assert ready.status_code == 200, ready.text

    conn = db.connect()
    rows = {r[0]: json.loads(r[1]) for r in conn.execute("SELECT request_id, label FROM monitor_labels WHERE "
                                                         "request_id LIKE 'pgr-%'")}
    assert set(answers) == set(batches)
    assert set(rows) == {i for chosen in batches.values() for i in chosen}  # every acknowledged label is there
    assert sum(a["stored"] for a in answers.values()) == len(rows)  # and was stored once
    assert all(rows[i] == label_of(i) for i in rows)
    recorded = conn.execute("SELECT count(*) FROM meta WHERE key LIKE 'monitoring.label_batch:restart-%'").fetchone()[0]
    assert recorded == len(batches)
    assert conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == audit_before  # labels are not audited
    ledger_invariants(conn)
    conn.close()
    report.extra["PostgreSQL restarted under load"] = {
        "requests": len(outcomes), "answered 503 (then retried)": sum(n for (_, st), n in statuses.items() if st == 503),
        "refused after the retries": len([o for o in outcomes if not o["ok"]]), "writes sent again": len(refused),
        "labels": len(rows)}
    report.write()


def _spec_ctx(project):
    from tests.integration.support_registry import spec_ctx

    return spec_ctx(project)


# --- (c) a client of another API version ------------------------------------------------------------

NEWER_CLIENT = ("import sys, mlplat.api.operations as o; o.API_VERSION = 2; o.API_PREFIX = '/api/v2'; "
                "sys.argv = ['mlplat', *sys.argv[1:]]; from mlplat.cli import main; main()")


def test_a_client_of_another_api_version_gets_one_error_naming_both(site):
    project, url = site
    with running_server(project, "dev", database_url=url) as server:
        # a newer mlplat CLI (platform API v2) against this server (v1)
        newer = subprocess.run([sys.executable, "-c", NEWER_CLIENT, "models", "list"], cwd=project,
                               env=project_env(project, **server.client_env()), capture_output=True, text=True,
                               timeout=120)
        assert newer.returncode == 1, newer.stdout + newer.stderr
        lines = newer.stderr.strip().splitlines()
        assert lines[0] == f"error: this mlplat speaks platform API v2 but the control plane at {server.url} speaks v1"
        assert lines[1:] == ["hint: install the mlplat version the server runs (or upgrade the server)"], lines
        assert newer.stdout == ""
        as_json = subprocess.run([sys.executable, "-c", NEWER_CLIENT, "models", "list", "--json"], cwd=project,
                                 env=project_env(project, **server.client_env()), capture_output=True, text=True,
                                 timeout=120)
        assert as_json.returncode == 1 and json.loads(as_json.stderr)["message"] == lines[0].removeprefix("error: ")

        # any client sending another version, on either path: 400, both versions named, nothing run
        for path in (f"{API}/models", "/api/v2/models"):
            answer = httpx.get(server.url + path, headers=HEADERS | {"Mlplat-Api-Version": "2"}, timeout=30)
            assert answer.status_code == 400 and answer.headers["Mlplat-Api-Version"] == "1", answer.text
            doc = answer.json()
            assert "v2" in doc["message"] and "v1" in doc["message"], doc
            assert doc["details"] == {"client_api_version": "2" if path.startswith(API) else "v2",
                                      "server_api_version": 1}, doc
        statuses = status_counts(httpx.get(server.url + "/metrics", timeout=30).text)
        assert ("models.list", 200) not in statuses, statuses


# --- (d) malformed requests -----------------------------------------------------------------------

MALFORMED = [
    # (what, method, path, body (bytes: sent as is), the field the answer must name)
    ("wrong type in the path", "GET", "/models/scorer/versions/abc", None, "version"),
    ("wrong type in the query", "GET", "/audit?limit=many", None, "limit"),
    ("out of range", "GET", "/audit?limit=0", None, "limit"),
    ("unknown query parameter", "GET", "/models?colour=red", None, "colour"),
    ("missing field", "POST", "/models/scorer/versions/2/promotions", {}, "target"),
    ("invalid choice", "POST", "/models/scorer/versions/2/promotions", {"target": "prod"}, "target"),
    ("unknown field", "POST", "/models/scorer/versions/2/promotions", {"target": "staging", "force": True}, "force"),
    ("wrong type", "POST", "/models/scorer/versions/2/approvals", {"reason": ["a", "list"]}, "reason"),
    ("not JSON", "POST", "/monitoring/labels", b'{"labels": [', "(body)"),
    ("not an object", "POST", "/monitoring/labels", b"[1, 2]", "(body)"),
    ("wrong type of a list", "POST", "/monitoring/labels", {"labels": "pgr-0001,1"}, "labels"),
    ("missing field in a row", "POST", "/monitoring/labels", {"labels": [{"request_id": "pgr-0001"}]}, "labels.0.label"),
    ("unknown field in a row", "POST", "/monitoring/labels",
     {"labels": [{"request_id": "pgr-0001", "label": 1, "weight": 2}]}, "labels.0.weight"),
    ("missing field", "POST", "/deployments", {"version": 2}, "model"),
    ("out of range", "POST", "/deployments", {"model": "scorer", "version": 0}, "version"),
]


def test_malformed_requests_are_4xx_naming_the_field_and_write_nothing(site):
    project, url = site
    db = pg_ledger(project, url)

    def counts():
        conn = db.connect()
        try:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                    for t in ("audit_log", "promotions", "approvals", "monitor_labels", "meta", "deployments")}
        finally:
            conn.close()

    before = counts()
    with running_server(project, "dev", database_url=url) as server, httpx.Client(base_url=server.url + API,
                                                                                  headers=HEADERS, timeout=60) as http:
        for what, method, path, body, field in MALFORMED:
            if isinstance(body, bytes):
                answer = http.request(method, path, content=body, headers={"content-type": "application/json"})
            else:
                answer = http.request(method, path, json=body)
            assert 400 <= answer.status_code < 500, (what, path, answer.status_code, answer.text)
            doc = answer.json()
            assert doc["exit_code"] == 2 and doc["where"] == field, (what, path, doc)
            assert (field if field != "(body)" else "request body") in doc["message"], (what, doc["message"])
        statuses = status_counts(http.get(server.url + "/metrics").text)
    assert not [k for k in statuses if k[1] >= 500], statuses
    assert counts() == before
