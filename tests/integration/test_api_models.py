"""Models, approvals and the audit log through a real `mlplat server`, and the same commands embedded.

One project per module: ``scorer`` version 1 (critical) registered by ds@example.com in embedded
mode, then a real ``mlplat server`` started on the same project serves that ledger. CLI
subprocesses reach it through ``MLPLAT_CONTROL_PLANE_URL``; without it they open the ledger
themselves, so each read command can be run both ways against the same state and compared.
"""
from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.integration.support_registry import APPROVER, AUTHOR, cli_in, db, embedded, make_registered_project, remote
from tests.server_support import requests_served, running_server

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("api-models")]

API = "/api/v1"
READS = (
    ("models", "show", "scorer", "1", "--json"),
    ("models", "show", "scorer", "--json"),
    ("models", "list", "--json"),
    ("approvals", "list", "--json"),
    ("approvals", "list", "--all", "--json"),
    ("audit", "log", "--json"),
    ("audit", "log", "--model", "scorer", "-n", "3", "--json"),
    ("audit", "verify", "--json"),
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(project, server): ``scorer`` version 1 registered, and `mlplat server --stack dev` serving its ledger."""
    project = make_registered_project(tmp_path_factory.mktemp("api-models") / "project")
    with running_server(project, "dev") as server:
        yield project, server


def counts(project) -> dict[str, int]:
    conn = db(project)
    return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("approvals", "audit_log", "promotions", "model_stages")}


def assert_reads_identical(served) -> None:
    """Every read command prints the same JSON through the server as embedded (same ledger state)."""
    _, server = served
    for args in READS:
        operation = {"show": "models.show", "list": f"{args[0]}.list", "log": "audit.log", "verify": "audit.verify"}[args[1]]
        if args[:3] == ("models", "show", "scorer") and args[3] == "--json":
            operation = "models.show_latest"
        before = requests_served(server, operation)
        here, there = embedded(served, *args), remote(served, *args)
        assert here.returncode == 0, (args, here.stderr)
        assert there.returncode == 0, (args, there.stderr)
        assert json.loads(there.stdout) == json.loads(here.stdout), args
        assert requests_served(server, operation) == before + 1, (args, "the server did not answer it")


def test_reads_are_identical_embedded_and_through_the_server(served):
    assert_reads_identical(served)
    shown = json.loads(remote(served, "models", "show", "scorer", "--json").stdout)
    assert (shown["model"], shown["version"], shown["author"], shown["risk_tier"]) == ("scorer", 1, AUTHOR, "critical")
    table = remote(served, "models", "show", "scorer", "1")
    assert table.returncode == 0 and "scorer version 1" in table.stdout and f"author {AUTHOR}" in table.stdout
    assert remote(served, "audit", "log").stdout == embedded(served, "audit", "log").stdout


def test_promote_approve_and_audit_through_the_server(served):
    project, server = served
    promoted = remote(served, "models", "promote", "scorer", "1", "--to", "staging")
    assert promoted.returncode == 0, promoted.stderr
    assert "Promoting scorer version 1 to staging in 'dev'" in promoted.stdout
    assert "scorer version 1 is now in staging" in promoted.stdout
    # the steps the server ran come back as lines, one per step, in order
    steps = re.findall(r"^\s+ok\s+(\w+)\s+\d+\.\d\ds", promoted.stderr, flags=re.M)
    assert steps == ["gate", "package", "endpoint", "integration", "stage"], promoted.stderr
    assert requests_served(server, "models.promote") == 1
    stages = db(project).execute("SELECT stage, updated_by FROM model_stages WHERE model='scorer' AND version=1")
    assert tuple(stages.fetchone()) == ("staging", AUTHOR)

    waiting = json.loads(remote(served, "approvals", "list", "--json").stdout)
    assert [(i["model"], i["version"], i["state"]) for i in waiting["items"]] == [("scorer", 1, "pending")]
    listed = remote(served, "approvals", "list")
    assert listed.returncode == 0 and "scorer" in listed.stdout and "pending" in listed.stdout

    # production before approval: refused by the server's governance
    blocked = remote(served, "models", "promote", "scorer", "1", "--to", "production")
    assert blocked.returncode == 6 and "needs 1 approval" in blocked.stderr, blocked.stderr

    # the author may not approve: same exit code, same error document either way, nothing written
    before = counts(project)
    mine = ("models", "approve", "scorer", "1", "--reason", "mine", "--json")
    there, here = remote(served, *mine), embedded(served, *mine)
    assert there.returncode == here.returncode == 6, (there.stderr, here.stderr)
    assert json.loads(there.stderr) == json.loads(here.stderr)
    assert json.loads(there.stderr)["error"] == "Denied" and "four-eyes" in json.loads(there.stderr)["message"]
    text = remote(served, "models", "approve", "scorer", "1", "--reason", "mine")
    assert text.returncode == 6 and text.stderr == embedded(served, "models", "approve", "scorer", "1",
                                                            "--reason", "mine").stderr
    assert counts(project) == before

    # another user approves: the server records the identity the client sent
    approved = remote(served, "models", "approve", "scorer", "1", "--reason", "validated on the holdout", user=APPROVER)
    assert approved.returncode == 0, approved.stderr
    assert f"approved scorer version 1 as {APPROVER}: now approved (1/1 approvals)" in approved.stdout
    row = db(project).execute("SELECT approver, decision, reason FROM approvals WHERE model='scorer'").fetchone()
    assert tuple(row) == (APPROVER, "approved", "validated on the holdout")
    again = remote(served, "models", "reject", "scorer", "1", "--reason", "changed my mind", user=APPROVER)
    assert again.returncode == 5 and "final" in again.stderr

    released = remote(served, "models", "promote", "scorer", "1", "--to", "production", "--json")
    assert released.returncode == 0, released.stderr
    doc = json.loads(released.stdout)
    assert (doc["stage"], doc["changed"]) == ("production", True) and doc["steps"]["approval"]["status"] == "done"
    assert "ok  " not in released.stderr  # --json: no step lines

    entries = json.loads(remote(served, "audit", "log", "--model", "scorer", "--json").stdout)
    decided = [e for e in entries if e["action"] == "approval.approved"]
    assert [(e["actor"], e["reason"]) for e in decided] == [(APPROVER, "validated on the holdout")]
    assert [e["evidence"]["stage"] for e in entries if e["action"] == "stage.changed"] == ["staging", "production"]
    verified = remote(served, "audit", "verify")
    assert verified.returncode == 0 and "audit log intact" in verified.stdout, verified.stderr
    shown = json.loads(remote(served, "models", "show", "scorer", "1", "--json").stdout)
    assert shown["stage"] == "production" and shown["approvals"]["state"] == "approved"
    assert_reads_identical(served)


def test_unknown_model_is_not_found_through_the_cli_and_the_api(served):
    _, server = served
    for args in (("models", "show", "scorr", "1"), ("models", "show", "scorr"),
                 ("models", "promote", "scorer", "9", "--to", "staging")):
        there, here = remote(served, *args), embedded(served, *args)
        assert there.returncode == here.returncode == 4, (args, there.stderr)
        assert there.stderr == here.stderr
    assert "did you mean 'scorer'" in remote(served, "models", "show", "scorr", "1").stderr
    headers = {"Mlplat-User": AUTHOR}
    for path in ("/models/scorr/versions/1", "/models/scorr", "/models/scorer/versions/9"):
        response = httpx.get(server.url + API + path, headers=headers, timeout=30)
        assert response.status_code == 404, (path, response.text)
        doc = response.json()
        assert doc["error"] == "NotFound" and doc["exit_code"] == 4 and doc["hint"], doc
    assert "is not registered" in httpx.get(server.url + API + "/models/scorr", headers=headers, timeout=30).json()["message"]


def test_malformed_requests_are_refused_by_field_and_change_nothing(served):
    project, server = served
    before = counts(project)
    headers = {"Mlplat-User": APPROVER}
    cases = [
        ("post", "/models/scorer/versions/1/approvals", {"reason": ["not", "a", "string"]}, "reason"),
        ("post", "/models/scorer/versions/1/approvals", {"reason": "ok", "verdict": "yes"}, "verdict"),
        ("post", "/models/scorer/versions/one/rejections", {"reason": "no"}, "version"),
        ("post", "/models/scorer/versions/1/promotions", {"target": "qa"}, "target"),
        ("post", "/models/scorer/versions/1/promotions", {"target": "staging", "progress": "loud"}, "progress"),
        ("get", "/audit", {"limit": "0"}, "limit"),
        ("get", "/approvals", {"include_decided": "perhaps"}, "include_decided"),
    ]
    for method, path, payload, field in cases:
        if method == "post":
            response = httpx.post(server.url + API + path, json=payload, headers=headers, timeout=30)
        else:
            response = httpx.get(server.url + API + path, params=payload, headers=headers, timeout=30)
        assert response.status_code == 422, (path, payload, response.text)
        doc = response.json()
        assert doc["error"] == "InvalidRequest" and doc["exit_code"] == 2, doc
        assert [f["field"] for f in doc["details"]["fields"]] == [field], doc
        assert field in doc["message"]
    assert counts(project) == before
