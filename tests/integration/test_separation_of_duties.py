"""Four eyes that cannot be faked: the author of a version never approves it, through any route, and a
client's edited copy of the stack file changes nothing in force unless an admin applies it.

One project per module: ``scorer`` (critical) version 1 registered by ds@example.com and promoted to
staging (a passed gate report: there is something to approve). ds@example.com is listed among the
approvers *and* holds the admin role, so only separation of duties stands between them and their own
approval. Two servers over the same ledger:

* ``mlplat server`` as a process, in ``trusted-local`` mode with roles declared (names typed in, one
  machine): the CLI, the SDK's control-plane client and client projects reach it;
* the server's app built with a test authenticator (verified OIDC principals from a test header), for
  raw API requests, where a ``Mlplat-User`` header is ignored.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import pytest

from mlplat.errors import Denied, Unauthenticated
from mlplat.identity import OIDC, Principal
from tests.conftest import REPO, run_cli, write_project
from tests.integration.support_registry import APPROVER, AUTHOR, cli_in, spec_ctx, stack_text, train
from tests.server_support import HeaderAuthenticator, running_server

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("separation-of-duties")]

DEVELOPER = "mallory@example.com"  # a developer who would like to approve
ADMIN = "platform@example.com"
ROLE_APPROVER = "rita@example.com"  # an approver by IdP group, not in governance.approvers
ROLES = f"""    roles:
      viewer: ["*"]
      developer: [{AUTHOR}, {DEVELOPER}]
      approver: [group:fraud-risk]
      admin: [{ADMIN}, {AUTHOR}]
"""
HEADER = "X-Test-Principal"
PRINCIPALS = {p.name: p for p in (
    Principal(AUTHOR, OIDC, groups=("fraud-ds", "fraud-risk"), ids=("sub-ds",)),
    Principal("DS@Example.COM", OIDC, groups=("fraud-risk",), ids=("sub-ds-2",)),  # the author, another spelling
    Principal(DEVELOPER, OIDC, groups=("fraud-ds",), ids=("sub-mallory",)),
    Principal(ROLE_APPROVER, OIDC, groups=("fraud-risk",), ids=("sub-rita",)),
)}


def stack() -> str:
    text = stack_text([APPROVER, AUTHOR])
    assert text.endswith("    mode: trusted-local\n")
    return text + ROLES


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """(project, server process, TestClient of the authenticating app) with scorer 1 in staging."""
    from starlette.testclient import TestClient

    from mlplat.api.server import create_app
    from mlplat.services import governance

    root = write_project(tmp_path_factory.mktemp("sod") / "project", {"dev": stack()})
    up = run_cli("up", "--stack", "dev", "--yes", cwd=root, env={"MLPLAT_PROJECT_DIR": str(root)})
    assert up.returncode == 0, up.stderr
    assert train(root) == 1
    promoted = cli_in(root, "models", "promote", "scorer", "1", "--to", "staging")
    assert promoted.returncode == 0, promoted.stderr
    spec, _ = spec_ctx(root)
    governance.reset_cache()
    with running_server(root, "dev") as server, \
            TestClient(create_app(spec, project_dir=root, authenticator=HeaderAuthenticator(PRINCIPALS, HEADER)),
                       raise_server_exceptions=False) as client:
        yield root, server, client


def state(project: Path) -> dict[str, int]:
    conn = sqlite3.connect(project / ".mlplat" / "dev" / "platform.db")
    try:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("approvals", "audit_log", "model_stages")}
    finally:
        conn.close()


def approve_raw(client, caller: str, extra: dict | None = None, version: int = 1):
    return client.post(f"/api/v1/models/scorer/versions/{version}/approvals", json={"reason": "looks good"},
                       headers={HEADER: caller, **(extra or {})})


def client_project(tmp_path: Path, server_url: str, text: str) -> Path:
    return write_project(tmp_path / "client", {"dev": text + f"  mlplat:controlPlane:\n    url: {server_url}\n"})


def client_cli(project: Path, *args: str, user: str):
    return run_cli(*args, cwd=project, env={"MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": user})


def test_the_author_cannot_approve_through_any_route(staged):
    project, server, client = staged
    before = state(project)
    # CLI, embedded (the machine owner's own ledger) and through the server
    for env in ({}, server.client_env()):
        for decision in ("approve", "reject"):
            result = cli_in(project, "models", decision, "scorer", "1", "--reason", "mine", env=env)
            assert result.returncode == 6 and "four-eyes" in result.stderr, result.stderr
    # another spelling of the same name is the same person
    respelled = cli_in(project, "models", "approve", "scorer", "1", "--reason", "mine", user="DS@EXAMPLE.com",
                       env=server.client_env())
    assert respelled.returncode == 6 and "four-eyes" in respelled.stderr, respelled.stderr
    # SDK: the control-plane client every SDK call goes through, remote and embedded
    from mlplat.api.plane import EmbeddedPlane

    spec, ctx = spec_ctx(project)
    for plane in (server.plane(spec, ctx), EmbeddedPlane(spec, ctx)):
        with pytest.raises(Denied, match="four-eyes"):
            plane.call("models.approve", name="scorer", version=1, reason="mine")
        plane.close()
    # raw API as verified principals: the author, also under another spelling, and with a forged user header
    for caller, extra in ((AUTHOR, {}), ("DS@Example.COM", {}), (AUTHOR, {"Mlplat-User": APPROVER})):
        response = approve_raw(client, caller, extra)
        assert response.status_code == 403, response.json()
        assert response.json()["error"] == "Denied" and "four-eyes" in response.json()["message"]
    assert state(project) == before, "a refused approval wrote something"


def test_a_forged_user_header_does_not_make_a_developer_an_approver(staged):
    project, _, client = staged
    before = state(project)
    response = approve_raw(client, DEVELOPER, {"Mlplat-User": APPROVER})
    body = response.json()
    assert response.status_code == 403 and body["error"] == "Forbidden", body
    assert f"{DEVELOPER} may not run models.approve" in body["message"]
    assert "needs the approver or admin role" in body["message"] and body["details"]["roles"] == ["viewer", "developer"]
    assert state(project) == before


def test_a_clients_edited_stack_file_changes_nothing(staged, tmp_path):
    project, server, _ = staged
    original = stack()
    edited = (original.replace(f"approvers: [{APPROVER}, {AUTHOR}]", f"approvers: [{APPROVER}, {AUTHOR}, {DEVELOPER}]")
              .replace("scorer: {riskTier: critical}", "scorer: {riskTier: low}")
              .replace(f"admin: [{ADMIN}, {AUTHOR}]", f"admin: [{ADMIN}, {AUTHOR}, {DEVELOPER}]"))
    assert edited != original
    client = client_project(tmp_path, server.url, edited)
    before = state(project)
    up = client_cli(client, "up", "--stack", "dev", "--yes", user=DEVELOPER)
    assert up.returncode == 6, up.stdout + up.stderr
    assert "may not run governance.apply" in up.stderr and "needs the admin role" in up.stderr, up.stderr
    assert state(project) == before, "a refused apply recorded something"
    # the approver list in force is the applied one: the developer is still no approver...
    approve = client_cli(client, "models", "approve", "scorer", "1", "--reason", "trust me", user=DEVELOPER)
    assert approve.returncode == 6 and "needs the approver or admin role" in approve.stderr, approve.stderr
    # ...and the model is still critical: no production promotion without an approval
    shown = json.loads(client_cli(client, "models", "show", "scorer", "1", "--json", user=DEVELOPER).stdout)
    assert shown["risk_tier"] == "critical" and shown["approvals"]["state"] == "pending"
    assert state(project) == before
    # the unedited file changes nothing, so any role may send it (every client's `mlplat up` does)
    same = client_cli(client_project(tmp_path / "b", server.url, original), "up", "--stack", "dev", "--yes",
                      user=DEVELOPER)
    assert same.returncode == 0, same.stderr
    assert "Governance applied" not in same.stdout and state(project) == before


def test_an_admin_applies_through_the_server_under_their_principal(staged, tmp_path):
    project, server, _ = staged
    extra = "second-approver@example.com"
    text = stack().replace(f"approvers: [{APPROVER}, {AUTHOR}]", f"approvers: [{APPROVER}, {AUTHOR}, {extra}]")
    client = client_project(tmp_path, server.url, text)
    up = client_cli(client, "up", "--stack", "dev", "--yes", user=ADMIN)
    assert up.returncode == 0, up.stderr
    assert "Governance applied: approvers" in up.stdout, up.stdout
    conn = sqlite3.connect(project / ".mlplat" / "dev" / "platform.db")
    try:
        actor, evidence = conn.execute("SELECT actor, evidence FROM audit_log WHERE action = 'governance.applied' "
                                       "ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    evidence = json.loads(evidence)
    assert actor == ADMIN and evidence["applied_by"]["principal"] == ADMIN
    assert evidence["changed"] == ["approvers"] and extra in evidence["governance"]["approvers"]
    roles = json.loads(client_cli(client, "models", "show", "scorer", "1", "--json", user=ADMIN).stdout)
    assert extra in roles["approvals"]["approvers"]
    # applying it again changes nothing
    again = client_cli(client, "up", "--stack", "dev", "--yes", user=ADMIN)
    assert again.returncode == 0 and "Governance applied" not in again.stdout, again.stdout


def test_an_approver_by_role_approves_and_it_counts(staged):
    project, _, client = staged
    before = state(project)
    response = approve_raw(client, ROLE_APPROVER, {"Mlplat-User": AUTHOR})  # the header changes nothing
    assert response.status_code == 200, response.json()
    result = response.json()["result"]
    assert result["state"] == "approved" and result["approvals"] == 1
    assert [(d["approver"], d["valid"]) for d in result["decisions"]] == [(ROLE_APPROVER, True)]
    after = state(project)
    assert after["approvals"] == before["approvals"] + 1 and after["audit_log"] == before["audit_log"] + 1
    conn = sqlite3.connect(project / ".mlplat" / "dev" / "platform.db")
    try:
        evidence = json.loads(conn.execute("SELECT evidence FROM audit_log WHERE action = 'approval.approved'")
                              .fetchone()[0])
    finally:
        conn.close()
    assert evidence["approver"] == {"method": "oidc", "ids": ["sub-rita"], "groups": ["fraud-risk"]}
    assert evidence["roles"] == ["viewer", "approver"] and evidence["author"] == AUTHOR
    # the count is re-checked from what was recorded: the decision still counts when read back
    shown = json.loads(cli_in(project, "models", "show", "scorer", "1", "--json").stdout)
    assert shown["approvals"]["state"] == "approved", shown["approvals"]


def test_registration_records_the_authors_ids_for_the_four_eyes_check():
    from mlplat.services.approvals import same_person

    author = Principal("arn:aws:sts::123456789012:assumed-role/Scientist/ds", "aws-iam",
                       ids=("arn:aws:iam::123456789012:role/Scientist",))
    same_role = Principal("arn:aws:sts::123456789012:assumed-role/Scientist/other-session", "aws-iam",
                          ids=("arn:aws:iam::123456789012:role/Scientist",))
    assert same_person(same_role, author)  # two sessions of one role are one person to the four-eyes rule
    assert same_person(Principal("DS@example.com", OIDC), Principal("ds@Example.com", ""))
    assert not same_person(Principal("risk@example.com", OIDC, ids=("sub-1",)), Principal("ds@example.com", "",
                                                                                          ids=("sub-2",)))
    assert REPO.is_dir()
