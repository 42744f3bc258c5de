"""Every platform API route × every role (and no role) × own team / another team → allowed or denied.

The app is the real Starlette app of ``mlplat server`` over a provisioned SQLite ledger of a ``fraud``
team stack declaring roles (mapped from IdP groups); callers are identified by a small test
authenticator (authentication itself is tested elsewhere): the ``X-Test-Principal`` header names one
of :data:`PRINCIPALS`, each with its groups, as a verified OIDC principal.

:data:`EXPECTED` is written here from the documented roles, independently of the server's own
permission table, so a wrong mapping there fails here. Allowed means the role check let the request
through (the operation may still answer 404, 409 or 422 on this test data); denied means 403
``Forbidden`` naming the roles that would allow it, and nothing written (the audit log's length and
the applied settings unchanged).
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import pytest

from mlplat.api import operations
from mlplat.errors import Unauthenticated
from mlplat.identity import OIDC, Principal
from tests.conftest import REPO, run_cli, write_project
from tests.server_support import HeaderAuthenticator

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("rbac-matrix")]

HEADER = "X-Test-Principal"
ROLE_GROUPS = {"viewer": "viewers", "developer": "ds", "approver": "risk", "operator": "ops", "admin": "platform"}

ACCESS = """  mlplat:access:
    mode: oidc
    oidc: {issuer: "http://127.0.0.1:9/issuer", audience: mlplat}
    roles:
      viewer: [group:fraud-viewers]
      developer: [group:fraud-ds]
      approver: [group:fraud-risk]
      operator: [group:fraud-ops]
      admin: [group:fraud-platform]
    featureGrants:
      - views: [merchant_stats]
        principals: [group:payments-ds]
"""


def fraud_stack() -> str:
    text = (REPO / "stacks" / "Pulumi.dev.yaml").read_text()
    text = text.replace("mlplat:team: ml-core", "mlplat:team: fraud").replace("team: ml-core", "team: fraud")
    head, _, _ = text.partition("  # The demo plays several people")
    return head + ACCESS


def principal(team: str, role: str | None) -> Principal:
    group = f"{team}-{ROLE_GROUPS[role]}" if role else f"{team}-everyone"
    return Principal(f"{team}-{role or 'nobody'}@example.com", OIDC, groups=(group,),
                     ids=(f"sub-{team}-{role or 'nobody'}",), issuer="http://127.0.0.1:9/issuer")


# "fraud" is the stack's team; "payments" principals hold the same roles in their own team's stack
CALLERS = [(team, role) for team in ("fraud", "payments") for role in (*ROLE_GROUPS, None)]
PRINCIPALS = {principal(team, role).name: principal(team, role) for team, role in CALLERS}


ANY = {"viewer", "developer", "approver", "operator", "admin", None}  # with no role too
READ = {"viewer", "developer", "approver", "operator", "admin"}
DEVELOP = {"developer", "operator", "admin"}
APPROVE = {"approver", "admin"}
OPERATE = {"operator", "admin"}
ADMIN = {"admin"}

VIEW_DOC = {"views": [], "entities": []}
# (route id, operation, parameters, roles of the stack's own team allowed). Another team's principals
# are allowed only the operations open to anyone authenticated.
EXPECTED: list[tuple[str, str, dict, set]] = [
    ("whoami", "access.whoami", {}, ANY),
    ("roles", "access.roles", {}, ANY),
    ("approvals", "approvals.list", {}, READ),
    ("audit-export", "audit.export", {}, READ),
    ("audit-log", "audit.log", {"limit": 5}, READ),
    ("audit-verify", "audit.verify", {}, READ),
    ("cost", "cost.report", {"by": "model"}, READ),
    ("cost-all-stacks", "cost.report", {"all_stacks": True}, ADMIN),
    ("adoption", "adoption.report", {}, READ),
    ("adoption-all-stacks", "adoption.report", {"all_stacks": True}, ADMIN),
    ("sla", "sla.report", {"period": "30d"}, READ),
    ("dashboard", "dashboard.snapshot", {}, READ),
    ("deploy-dev", "deployments.create", {"model": "scorer", "version": 1}, DEVELOP),
    ("deploy-staging", "deployments.create", {"model": "scorer", "version": 1, "environment": "staging"}, DEVELOP),
    ("deploy-production", "deployments.create", {"model": "scorer", "version": 1, "environment": "production"},
     OPERATE),
    ("deploy-prod", "deployments.create", {"model": "scorer", "version": 1, "environment": "prod"}, OPERATE),
    ("deployments", "deployments.list", {}, READ),
    ("rollback-dev", "deployments.rollback", {"model": "scorer"}, DEVELOP),
    ("rollback-production", "deployments.rollback", {"model": "scorer", "environment": "production"}, OPERATE),
    ("deployment", "deployments.show", {"model": "scorer"}, READ),
    ("features-apply", "features.apply", {"definitions": VIEW_DOC}, DEVELOP),
    ("features-list", "features.list", {}, READ),
    ("features-materialize", "features.materialize", {"start": "2024-01-01", "end": "2024-01-02"}, DEVELOP),
    ("features-plan", "features.plan", {"definitions": VIEW_DOC}, DEVELOP),
    ("features-skew", "features.skew", {"view": "customer_stats"}, READ),
    ("governance-apply", "governance.apply", {}, ADMIN),  # a changing document: see params_for
    ("keys-create", "keys.create", {"model": "scorer"}, OPERATE),
    ("keys", "keys.list", {}, READ),
    ("keys-revoke", "keys.revoke", {"key_id": "k-none", "model": "scorer"}, OPERATE),
    ("keys-rotate", "keys.rotate", {"key_id": "k-none", "model": "scorer"}, OPERATE),
    ("approve", "models.approve", {"name": "scorer", "version": 1, "reason": "checked"}, APPROVE),
    ("check-registration", "models.check_registration", {"name": "scorer", "run_id": "r0"}, DEVELOP),
    ("models", "models.list", {}, READ),
    ("evaluate", "models.evaluate", {"name": "scorer", "version": 1}, DEVELOP),
    ("pipeline-record", "pipelines.record", {"pipeline": "nightly", "run_id": "nightly-1", "state": "SUCCEEDED"},
     DEVELOP),
    ("promote-staging", "models.promote", {"name": "scorer", "version": 1, "target": "staging"}, DEVELOP),
    ("promote-production", "models.promote", {"name": "scorer", "version": 1, "target": "production"}, OPERATE),
    ("register", "models.register", {"name": "scorer", "version": 1, "run_id": "r0", "source": "/nowhere",
                                     "artifact_digest": "0" * 64, "framework": "sklearn",
                                     "lineage": {"datasets": {}}}, DEVELOP),
    ("reject", "models.reject", {"name": "scorer", "version": 1, "reason": "no"}, APPROVE),
    ("share", "models.share", {"name": "scorer", "version": 1}, OPERATE),
    ("sealed", "models.sealed_version", {"name": "scorer", "version": 1}, READ),
    ("model-version", "models.show", {"name": "scorer", "version": 1}, READ),
    ("model", "models.show_latest", {"name": "scorer"}, READ),
    ("labels", "monitoring.labels", {"labels": [{"request_id": "req-1", "label": 1}]}, DEVELOP),
    ("monitoring-run", "monitoring.run", {"retrain": False}, DEVELOP),
    ("monitoring", "monitoring.status", {}, READ),
    ("rollout", "rollouts.status", {"model": "scorer"}, READ),
]

# Another team's principals granted a feature view (payments' developers are in group payments-ds): they
# may list the views (only the granted ones: test_feature_grants_show_only_the_granted_views); skew of a view not granted
# stays refused.
OTHER_TEAM = {"features-list": {"developer"}}

CASES = [pytest.param(route, op, params, allowed, team, role, id=f"{route}-{team}-{role or 'norole'}")
         for route, op, params, allowed in EXPECTED for team, role in CALLERS]


@pytest.fixture(scope="module")
def fraud(tmp_path_factory):
    """(project, TestClient) of the fraud team's provisioned dev stack, served with the test authenticator."""
    from starlette.testclient import TestClient

    from mlplat.api.server import create_app
    from mlplat.context import Context
    from mlplat.services import governance

    project = write_project(tmp_path_factory.mktemp("rbac") / "project", {"dev": fraud_stack()})
    up = run_cli("up", "--stack", "dev", "--yes", cwd=project, env={"MLPLAT_PROJECT_DIR": str(project)})
    assert up.returncode == 0, up.stderr
    spec = Context(project_dir=project).stack("dev")
    governance.reset_cache()
    app = create_app(spec, project_dir=project, authenticator=HeaderAuthenticator(PRINCIPALS, HEADER))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield project, client


def ledger(project: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(project / ".mlplat" / "dev" / "platform.db")
    conn.row_factory = sqlite3.Row
    return conn


def audit_state(project: Path) -> tuple[int, str | None]:
    conn = ledger(project)
    try:
        count = conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]
        applied = conn.execute("SELECT evidence FROM audit_log WHERE action = 'governance.applied' "
                               "ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    return count, applied[0] if applied else None


def send(client, name: str, params: dict, caller: Principal | None, extra: dict | None = None):
    op = operations.get(name)
    values = op.params.model_validate(params).model_dump(mode="json")
    path = op.url_path(values)
    rest = {k: v for k, v in values.items() if k not in op.path_params}
    headers = {HEADER: caller.name} if caller else {}
    headers.update(extra or {})
    if op.method == "GET":
        return client.get(path, params={k: v for k, v in rest.items() if v is not None}, headers=headers)
    return client.post(path, json=rest, headers=headers)


def stack_governance(project: Path) -> dict:
    from mlplat.context import Context
    from mlplat.services import governance

    return governance.document(Context(project_dir=project).stack("dev").governance)


def params_for(project: Path, op: str, params: dict, caller: Principal) -> dict:
    if op != "governance.apply":
        return params
    # a change only an admin may make: one more approver, unique to this caller and call
    doc = stack_governance(project)
    doc["approvers"] = [*doc["approvers"], f"extra-{caller.name}-{audit_state(project)[0]}"]
    return {"governance": doc}


def test_every_route_is_in_the_expected_table():
    assert {op for _, op, _, _ in EXPECTED} == set(operations.load()), \
        "every operation of the platform API needs a row in EXPECTED (its roles, written from the docs)"


@pytest.mark.parametrize("route, op, params, allowed, team, role", CASES)
def test_route_by_role_and_team(fraud, route, op, params, allowed, team, role):
    project, client = fraud
    caller = principal(team, role)
    params = params_for(project, op, params, caller)
    expect_allowed = role in allowed and (team == "fraud" or allowed is ANY) or (
        team == "payments" and role in OTHER_TEAM.get(route, set()))
    before = audit_state(project)
    response = send(client, op, params, caller)
    body = response.json()
    assert response.status_code != 401, body
    refused = response.status_code == 403 and body.get("error") == "Forbidden"
    if expect_allowed:
        assert not refused, (route, caller.name, body)
        assert response.status_code < 500, body
        return
    assert refused, (route, caller.name, response.status_code, body)
    needed = sorted(r for r in allowed if r)
    assert sorted(body["details"]["required_roles"]) == needed
    assert f"needs the {' or '.join(r for r in ROLE_GROUPS if r in needed)} role" in body["message"]
    assert op in body["message"] and caller.name in body["message"]
    assert body["details"]["roles"] == ([role] if team == "fraud" and role else [])
    assert audit_state(project) == before, "a refused request wrote to the ledger"


def test_without_credentials_every_route_is_401(fraud):
    _, client = fraud
    for name in operations.load():
        if name == "governance.apply":
            continue  # its body is built per caller; the identity check comes first anyway
        _, _, params, _ = next(row for row in EXPECTED if row[1] == name)
        response = send(client, name, params, None)
        assert response.status_code == 401, (name, response.json())
        assert "mlplat login" in (response.json().get("hint") or ""), response.json()


def test_whoami_and_roles_answer_a_caller_with_no_role(fraud):
    _, client = fraud
    mine = send(client, "access.whoami", {}, principal("fraud", "approver")).json()["result"]
    assert (mine["principal"], mine["method"], mine["roles"]) == ("fraud-approver@example.com", "oidc", ["approver"])
    assert (mine["team"], mine["environment"], mine["stack"]) == ("fraud", "dev", "dev")
    assert mine["groups"] == ["fraud-risk"] and mine["ids"] == ["sub-fraud-approver"]
    stranger = send(client, "access.whoami", {}, principal("payments", "admin")).json()["result"]
    assert stranger["roles"] == [] and stranger["principal"] == "payments-admin@example.com"
    # a principal the applied governance names as an approver holds the approver role
    listed = Principal("risk-office@example.com", OIDC)
    PRINCIPALS[listed.name] = listed
    try:
        assert send(client, "access.whoami", {}, listed).json()["result"]["roles"] == ["approver"]
    finally:
        del PRINCIPALS[listed.name]
    roles = send(client, "access.roles", {}, principal("payments", None)).json()["result"]
    assert roles["mode"] == "oidc" and roles["applied"] is True
    assert roles["roles"]["admin"] == ["group:fraud-platform"]
    assert roles["feature_grants"] == [{"views": ["merchant_stats"], "principals": ["group:payments-ds"]}]


def test_a_forged_user_header_is_ignored_by_an_authenticating_server(fraud):
    project, client = fraud
    before = audit_state(project)
    response = send(client, "models.list", {}, principal("payments", "admin"),
                    extra={"Mlplat-User": "fraud-admin@example.com"})
    assert response.status_code == 403 and "payments-admin@example.com" in response.json()["message"]
    assert send(client, "models.list", {}, None, extra={"Mlplat-User": "fraud-admin@example.com"}).status_code == 401
    assert audit_state(project) == before


def test_roles_in_force_are_the_applied_ones_not_the_file(fraud):
    """Editing the stack file on the server's own machine changes nothing until it is applied."""
    project, client = fraud
    path = project / "stacks" / "Pulumi.dev.yaml"
    original = path.read_text()
    try:
        path.write_text(original.replace("viewer: [group:fraud-viewers]", "viewer: [group:payments-everyone]"))
        response = send(client, "models.list", {}, principal("payments", None))
        assert response.status_code == 403, response.json()
    finally:
        path.write_text(original)
    assert json.loads(audit_state(project)[1])["access"]["roles"]["viewer"] == ["group:fraud-viewers"]


def test_feature_grants_show_only_the_granted_views(fraud):
    import pandas as pd

    project, client = fraud
    data = project / "data"
    data.mkdir(exist_ok=True)
    times = pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC")
    views = []
    for view, key in (("merchant_stats", "merchant_id"), ("customer_stats", "customer_id")):
        path = data / f"{view}.parquet"
        pd.DataFrame({key: [1, 2, 1, 2], "event_timestamp": times, "spend": [1.0, 2.0, 3.0, 4.0]}).to_parquet(path)
        entity = {"name": key.removesuffix("_id"), "join_key": key}
        views.append({"name": view, "entities": [entity], "features": [{"name": "spend"}],
                      "source": {"kind": "parquet", "path": str(path.relative_to(project))}})
    definitions = {"entities": [v["entities"][0] for v in views], "views": views}
    applied = send(client, "features.apply", {"definitions": definitions}, principal("fraud", "developer"))
    assert applied.status_code == 200, applied.json()

    def listed(caller: Principal) -> list[str]:
        response = send(client, "features.list", {}, caller)
        assert response.status_code == 200, response.json()
        return sorted(row["view"] for row in response.json()["result"])

    assert listed(principal("fraud", "viewer")) == ["customer_stats", "merchant_stats"]
    assert listed(principal("payments", "developer")) == ["merchant_stats"]  # granted to group payments-ds
    not_granted = send(client, "features.list", {}, principal("payments", "viewer"))
    assert not_granted.status_code == 403 and not_granted.json()["error"] == "Forbidden"
    refused = send(client, "features.skew", {"view": "customer_stats"}, principal("payments", "developer"))
    assert refused.status_code == 403 and "features.skew of view 'customer_stats'" in refused.json()["message"]
    granted = send(client, "features.skew", {"view": "merchant_stats"}, principal("payments", "developer"))
    assert granted.json().get("error") != "Forbidden", granted.json()


@pytest.mark.parametrize("change, where, message", [
    ({"governance": {"requiredApprovals": "many"}}, "mlplat:governance", "requiredApprovals"),
    ({"governance": {"colour": "red"}}, "mlplat:governance", "colour"),
    ({"access": {"mode": "oidc", "roles": {"superuser": ["*"]}}}, "mlplat:access", "unknown role(s) 'superuser'"),
    ({"access": {"mode": "trusted-local", "roles": {}}}, "mlplat:access.mode", "not trusted-local"),
    ({"access": {"mode": "oidc", "oidc": {"issuer": "https://evil.example.com"}}}, "mlplat:access",
     "cannot be applied through the server"),
])
def test_an_admins_bad_settings_are_refused_and_nothing_is_applied(fraud, change, where, message):
    project, client = fraud
    params = {"governance": stack_governance(project), **{k: v for k, v in change.items() if k == "access"}}
    if "governance" in change:
        params["governance"] = {**params["governance"], **change["governance"]}
    before = audit_state(project)
    response = send(client, "governance.apply", params, principal("fraud", "admin"))
    body = response.json()
    assert response.status_code == 400 and body["where"] == where, body
    assert message in body["message"] and "nothing was applied" in body["hint"], body
    assert audit_state(project) == before


def test_governance_apply_records_an_admins_change_and_refuses_anyone_elses(fraud):
    project, client = fraud
    access = {"mode": "oidc", "roles": {"viewer": ["group:fraud-viewers"], "developer": ["group:fraud-ds"],
                                        "approver": ["group:fraud-risk"], "operator": ["group:fraud-ops"],
                                        "admin": ["group:fraud-platform", "group:fraud-ds"]},  # developers made admin
              "featureGrants": [{"views": ["merchant_stats"], "principals": ["group:payments-ds"]}]}
    in_force = json.loads(audit_state(project)[1])["governance"]  # earlier tests may have applied approvers
    params = {"governance": in_force, "access": access}
    before = audit_state(project)
    for team, role in (("fraud", "developer"), ("fraud", "operator"), ("fraud", "approver"), ("payments", "admin")):
        refused = send(client, "governance.apply", params, principal(team, role))
        assert refused.status_code == 403 and "needs the admin role" in refused.json()["message"], refused.json()
    assert audit_state(project) == before
    applied = send(client, "governance.apply", params, principal("fraud", "admin"))
    assert applied.status_code == 200, applied.json()
    assert applied.json()["result"]["changed"] == ["access.roles.admin"]
    count, evidence = audit_state(project)
    assert count == before[0] + 1
    recorded = json.loads(evidence)
    assert recorded["applied_by"] == {"principal": "fraud-admin@example.com", "method": "oidc",
                                      "ids": ["sub-fraud-admin"], "groups": ["fraud-platform"]}
    assert recorded["access"]["roles"]["admin"] == ["group:fraud-platform", "group:fraud-ds"]
    conn = ledger(project)
    try:
        actor, method = conn.execute("SELECT actor, auth_method FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    assert (actor, method) == ("fraud-admin@example.com", "oidc")
    # in force at once: the developer now holds admin, and the same document changes nothing any more
    roles = send(client, "access.whoami", {}, principal("fraud", "developer")).json()["result"]["roles"]
    assert roles == ["developer", "admin"]
    again = send(client, "governance.apply", params, principal("fraud", "viewer"))
    assert again.status_code == 200 and again.json()["result"]["changed"] == [], again.json()
    assert audit_state(project)[0] == count
    # put the roles back for the rest of the module
    access["roles"]["admin"] = ["group:fraud-platform"]
    restored = send(client, "governance.apply", {**params, "access": access}, principal("fraud", "admin"))
    assert restored.status_code == 200 and restored.json()["result"]["changed"] == ["access.roles.admin"]


def test_embedded_whoami_is_the_user_of_the_command(project):
    from mlplat.api.plane import EmbeddedPlane
    from mlplat.context import Context

    ctx = Context(project_dir=project)
    spec = ctx.stack("dev")  # trusted-local: MLPLAT_USER (ds@example.com in this fixture) is believed
    me = EmbeddedPlane(spec, ctx).call("access.whoami")
    assert (me["principal"], me["method"], me["roles"], me["team"]) == ("ds@example.com", "trusted-local", [],
                                                                         "ml-core")
    roles = EmbeddedPlane(spec, ctx).call("access.roles")
    assert roles == {"mode": "trusted-local", "roles": {}, "feature_grants": [],
                     "approvers": ["risk-office@example.com", "head-of-ds@example.com"], "applied": False}
