"""Sixteen client processes at once against one `mlplat server` whose ledger is on PostgreSQL.

The project is the fault-injection suite's trained one (scorer v1 in production, v2 in staging, 300
captures), with ``ranker`` v1 registered, moved onto PostgreSQL. At the same moment: four
``mlplat models promote scorer 2 --to production`` race for one model and environment; two
``mlplat models promote ranker 1 --to staging`` race for another; five processes send label
batches through ``monitoring.labels`` (some delivered twice); five gateways' capture writers write
captures into the same ledger. Then:

* promotions: one production version per model and environment (scorer v2; v1 archived), exactly
  one promotion record per promoted version, succeeded. A racer that found the model's promotion
  lock held was refused with ``Conflict`` (exit 5) before anything was written; that is acceptable
  only because the same command, run again, then answers that the version *is* in the target stage
  (``changed: false``): the operation is observable as done. Every other outcome is an error.
* labels: every label of every acknowledged batch is stored exactly once with its value; the
  ``stored`` counts of all answers add up to the rows in the ledger; a second delivery of a batch
  is a replay that writes nothing and answers what the first did.
* captures: every queued capture is in the ledger exactly once.
* the server answered no request with 5xx, and ``mlplat audit verify`` passes.
"""
from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from tests.chaos.support import shared_bases
from tests.conftest import BIN
from tests.integration.support_control_plane import (
    ENV,
    PER_ROUND,
    finish,
    label_of,
    pg_clone,
    pg_ledger,
    production_counts,
    project_env,
    start_client,
    status_counts,
    wait_ready,
)
from tests.server_support import running_server

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.xdist_group("control-plane-pg")]

RACERS = 4
LABELLERS = 5
CAPTURERS = 5
ROUNDS = 150  # at most, per labelling or capturing process; they stop once every promotion has answered


def promote(project, server, model: str, version: int, target: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "mlplat"), "models", "promote", model, str(version), "--to", target, "--json"],
                            cwd=project, env=project_env(project, **server.client_env()), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def outcome(process: subprocess.Popen) -> tuple[int, dict]:
    out, err = process.communicate(timeout=600)
    if process.returncode == 0:
        return 0, json.loads(out)
    try:  # with --json the error document is what the CLI writes on stderr
        return process.returncode, json.loads(err[err.index("{"):])
    except ValueError:
        raise AssertionError(f"exit {process.returncode} without an error document: {out}\n{err[-3000:]}") from None


def is_lock_conflict(code: int, doc: dict) -> bool:
    """Refused because another promotion of the model holds its lock; the hint says to run it again."""
    return (code == 5 and doc.get("error") == "Conflict" and "holds the stack lock" in doc.get("message", "")
            and (doc.get("hint") or "").startswith("rerun `mlplat models promote "))


def test_sixteen_clients_promote_label_and_capture_at_once(tmp_path, tmp_path_factory, worker_id, postgres):
    base, _ = shared_bases(tmp_path_factory, worker_id)
    project, url = pg_clone(base, tmp_path / "project", postgres, register={"ranker": 1})
    conn = pg_ledger(project, url).connect()
    captured = [r[0] for r in conn.execute("SELECT request_id FROM captures ORDER BY request_id")]
    assert len(captured) == 300 and conn.execute("SELECT count(*) FROM monitor_labels").fetchone()[0] == 0
    last_seq = conn.execute("SELECT max(seq) FROM audit_log").fetchone()[0]
    last_promotion = conn.execute("SELECT max(id) FROM promotions").fetchone()[0]
    conn.close()
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps(captured))
    stop = tmp_path / "stop"

    with running_server(project, "dev", database_url=url) as server:
        clients = [start_client("labels", server.url, w, ids_file, stop, ROUNDS, cwd=project) for w in range(LABELLERS)]
        clients += [start_client("captures", url, project / ".mlplat" / ENV, w, stop, ROUNDS, cwd=project)
                    for w in range(CAPTURERS)]
        for client in clients:
            wait_ready(client)
        for client in clients:
            client.stdin.write("g")
            client.stdin.flush()
        racers = [promote(project, server, "scorer", 2, "production") for _ in range(RACERS)]
        stagers = [promote(project, server, "ranker", 1, "staging") for _ in range(2)]
        assert len(clients) + len(racers) + len(stagers) == 16

        raced = {("scorer", 2, "production"): [outcome(p) for p in racers],
                 ("ranker", 1, "staging"): [outcome(p) for p in stagers]}
        stop.write_text("promotions answered")
        docs = [finish(c) for c in clients]

        # -- promotions: one winner per race; every refusal a lock conflict, then observable as done
        for (model, version, target), outcomes in raced.items():
            winners = [doc for code, doc in outcomes if code == 0 and doc["changed"]]
            assert len(winners) == 1, outcomes
            for code, doc in outcomes:
                if code == 0:
                    assert (doc["model"], doc["version"], doc["stage"]) == (model, version, target), doc
                    continue
                assert is_lock_conflict(code, doc), (code, doc)
                again = outcome(promote(project, server, model, version, target))
                assert again[0] == 0 and (again[1]["stage"], again[1]["changed"]) == (target, False), again

        verified = subprocess.run([str(BIN / "mlplat"), "audit", "verify", "--json"], cwd=project,
                                  env=project_env(project, **server.client_env()), capture_output=True, text=True,
                                  timeout=300)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert json.loads(verified.stdout)["ok"] is True
        statuses = status_counts(httpx.get(server.url + "/metrics", timeout=30).text)

    # -- the server failed nothing, and refused only what the lock refused
    assert not [k for k in statuses if k[1] >= 500], statuses
    assert {k[1] for k in statuses if k[0] == "models.promote"} <= {200, 409}, statuses
    assert statuses[("monitoring.labels", 200)] >= LABELLERS * 3

    conn = pg_ledger(project, url).connect()
    assert production_counts(conn) == {("scorer", ENV): 1}
    stages = {(r[0], r[1]): r[2] for r in conn.execute("SELECT model, version, stage FROM model_stages")}
    assert stages == {("scorer", 1): "archived", ("scorer", 2): "production", ("ranker", 1): "staging"}, stages
    new = [dict(r) for r in conn.execute("SELECT * FROM promotions WHERE id > ? ORDER BY id", (last_promotion,))]
    assert sorted((p["model"], p["version"], p["target"], p["state"]) for p in new) == [
        ("ranker", 1, "staging", "succeeded"), ("scorer", 2, "production", "succeeded")], new
    changed = [(r["model"], r["version"], json.loads(r["evidence"])["stage"]) for r in
               conn.execute("SELECT * FROM audit_log WHERE action='stage.changed' AND seq > ? ORDER BY seq", (last_seq,))]
    assert sorted(changed) == [("ranker", 1, "staging"), ("scorer", 2, "production")], changed

    # -- labels: each acknowledged label once, with its value; the answers account for every row
    labellers, capturers = docs[:LABELLERS], docs[LABELLERS:]
    assert [d["errors"] for d in labellers] == [[]] * LABELLERS
    first = [b for d in labellers for b in d["batches"] if b["delivery"] == 1]
    replays = [b for d in labellers for b in d["batches"] if b["delivery"] == 2]
    assert replays and all(b["replayed"] for b in replays)
    by_id = {b["batch_id"]: b for b in first}
    counted = ("stored", "updated", "unknown")
    for replay in replays:
        assert {k: replay[k] for k in counted} == {k: by_id[replay["batch_id"]][k] for k in counted}, replay
    assert all(not b.get("replayed") and b["unknown"] == 1 and b["updated"] == 0 for b in first), first[:3]
    sent = {i for b in first for i in b["ids"] if not i.startswith("ghost-")}
    rows = {r[0]: json.loads(r[1]) for r in conn.execute("SELECT request_id, label FROM monitor_labels")}
    assert set(rows) == sent and sum(b["stored"] for b in first) == len(rows)
    assert all(rows[i] == label_of(i) for i in rows)
    batches = conn.execute("SELECT count(*) FROM meta WHERE key LIKE 'monitoring.label_batch:%'").fetchone()[0]
    assert batches == len(first)

    # -- captures: every queued capture once
    assert all((d["written"], d["dropped"]) == (len(d["ids"]), 0) for d in capturers), [
        (d["written"], d["dropped"], len(d["ids"])) for d in capturers]
    queued = [i for d in capturers for i in d["ids"]]
    assert len(queued) == len(set(queued)) >= CAPTURERS * 3 * PER_ROUND
    stored = [r[0] for r in conn.execute("SELECT request_id FROM captures WHERE request_id LIKE 'c%'")]
    assert sorted(stored) == sorted(queued)
    assert conn.execute("SELECT count(*) FROM captures").fetchone()[0] == len(captured) + len(queued)
    conn.close()
