"""The permission table and the role rules, without a server."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlplat.api import operations
from mlplat.errors import Forbidden
from mlplat.identity import OIDC, TRUSTED_LOCAL, Principal, rbac
from mlplat.services.governance import AccessInForce
from mlplat.stack import ROLES, FeatureGrant

SPEC = SimpleNamespace(name="fraud-dev", team="fraud", environment="dev")
PROD = SimpleNamespace(name="fraud-prod", team="fraud", environment="production")


def access(roles: dict[str, list[str]] | None = None, approvers: tuple[str, ...] = (),
           grants: tuple[FeatureGrant, ...] = ()) -> AccessInForce:
    return AccessInForce(mode="oidc", roles={r: tuple(p) for r, p in (roles or {}).items()}, feature_grants=grants,
                         approvers=approvers, applied=True)


def test_every_operation_is_mapped_to_an_action():
    missing = rbac.unmapped(operations.load())
    assert missing == [], f"operations without an entry in mlplat.identity.rbac.PERMISSIONS (admin-only): {missing}"
    for name, rule in rbac.PERMISSIONS.items():
        assert callable(rule) or rule in (*rbac.ACTIONS, rbac.ANYONE), name


def test_an_operation_missing_from_the_table_is_admin_only():
    assert rbac.unmapped(["models.list", "models.delete_everything"]) == ["models.delete_everything"]
    assert rbac.action_for("models.delete_everything", SPEC, {}) == rbac.ADMIN
    assert rbac.roles_allowing(rbac.action_for("models.delete_everything", SPEC, {})) == ["admin"]


def test_roles_grant_the_documented_actions():
    granted = {role: {a for a in rbac.ACTIONS if rbac.allows([role], a)} for role in ROLES}
    assert granted == {
        "viewer": {"read"}, "developer": {"read", "develop"}, "approver": {"read", "approve"},
        "operator": {"read", "develop", "operate"}, "admin": {"read", "develop", "approve", "operate", "admin"}}
    assert not rbac.allows([], rbac.READ) and rbac.allows([], rbac.ANYONE)


@pytest.mark.parametrize("name, spec, params, action", [
    ("models.promote", SPEC, {"target": "staging"}, "develop"),
    ("models.promote", PROD, {"target": "staging"}, "develop"),
    ("models.promote", SPEC, {"target": "production"}, "operate"),
    ("deployments.create", SPEC, {}, "develop"),
    ("deployments.create", SPEC, {"environment": "production"}, "operate"),
    ("deployments.create", SPEC, {"environment": "prod"}, "operate"),
    ("deployments.create", SPEC, {"environment": "prod-eu"}, "operate"),
    ("deployments.create", SPEC, {"environment": "Production"}, "operate"),
    ("deployments.create", SPEC, {"environment": "staging"}, "develop"),
    ("deployments.create", SPEC, {"environment": "products"}, "develop"),
    ("deployments.create", PROD, {}, "operate"),  # the stack's own environment by default
    ("deployments.rollback", PROD, {"environment": None}, "operate"),
    ("deployments.rollback", SPEC, {}, "develop"),
    ("cost.report", SPEC, {"all_stacks": False}, "read"),
    ("cost.report", SPEC, {"all_stacks": True}, "admin"),
    ("adoption.report", SPEC, {"all_stacks": False}, "read"),
    ("adoption.report", SPEC, {"all_stacks": True}, "admin"),
    ("sla.report", SPEC, {"period": "30d"}, "read"),
    ("models.approve", PROD, {}, "approve"),
    ("governance.apply", SPEC, {}, "admin"),
    ("keys.list", SPEC, {}, "read"),
    ("keys.rotate", SPEC, {}, "operate"),
    ("access.whoami", SPEC, {}, "anyone"),
])
def test_the_action_follows_the_parameters(name, spec, params, action):
    assert rbac.action_for(name, spec, params) == action
    # a validated parameter model is read the same way as a mapping
    assert rbac.action_for(name, spec, SimpleNamespace(**params)) == action


def test_roles_come_from_patterns_and_the_approvers_list():
    rules = access({"developer": ["group:fraud-ds"], "admin": ["platform@example.com"],
                    "operator": ["arn:aws:iam::123456789012:role/Ops"]}, approvers=("Risk@Example.com",))
    assert rbac.roles_of(Principal("ann@example.com", OIDC, groups=("fraud-ds",)), rules) == ["developer"]
    assert rbac.roles_of(Principal("PLATFORM@example.com", OIDC), rules) == ["admin"]
    assert rbac.roles_of(Principal("risk@example.com", OIDC), rules) == ["approver"]
    session = Principal("arn:aws:sts::123456789012:assumed-role/Ops/bob", "aws-iam",
                        ids=("arn:aws:iam::123456789012:role/Ops",))
    assert rbac.roles_of(session, rules) == ["operator"]
    assert rbac.roles_of(Principal("eve@example.com", OIDC, groups=("payments-ds",)), rules) == []


def test_open_only_without_authentication_and_without_roles():
    typed = Principal("anyone", TRUSTED_LOCAL)
    token = Principal("anyone@example.com", OIDC)
    assert rbac.open_to_all(typed, access())
    assert not rbac.open_to_all(typed, access({"viewer": ["x@example.com"]}))
    assert not rbac.open_to_all(token, access())  # an authenticating server with no roles refuses everyone


def authorize_with(monkeypatch, rules: AccessInForce, principal: Principal | None, name: str, params: dict,
                   spec=SPEC) -> None:
    from mlplat.services import governance

    monkeypatch.setattr(governance, "access_in_force_for", lambda spec, ctx: rules)
    rbac.authorize(spec, SimpleNamespace(), principal, SimpleNamespace(name=name), params)


def test_authorize_denies_by_default_naming_the_roles(monkeypatch):
    rules = access({"viewer": ["group:fraud"], "operator": ["ops@example.com"]})
    viewer = Principal("vic@example.com", OIDC, groups=("fraud",))
    authorize_with(monkeypatch, rules, viewer, "models.list", {})
    with pytest.raises(Forbidden) as refused:
        authorize_with(monkeypatch, rules, viewer, "deployments.create", {"environment": "production"})
    exc = refused.value
    assert exc.http_status == 403 and exc.exit_code == 6
    assert "deployments.create in environment 'production'" in exc.message
    assert "needs the operator or admin role (operate)" in exc.message and "vic@example.com has viewer" in exc.message
    assert exc.details["required_roles"] == ["operator", "admin"] and exc.details["roles"] == ["viewer"]
    with pytest.raises(Forbidden, match="has no role"):
        authorize_with(monkeypatch, rules, Principal("x@example.com", OIDC), "models.list", {})
    authorize_with(monkeypatch, rules, Principal("x@example.com", OIDC), "access.whoami", {})  # anyone
    authorize_with(monkeypatch, access(), Principal("x", TRUSTED_LOCAL), "governance.apply", {"governance": {}})
    authorize_with(monkeypatch, rules, None, "governance.apply", {})  # embedded: not checked here
    with pytest.raises(Forbidden, match="needs the admin role"):
        authorize_with(monkeypatch, access(), Principal("x@example.com", OIDC), "unknown.operation", {})


def test_feature_grants_open_only_the_granted_views(monkeypatch):
    rules = access({"viewer": ["group:fraud"]}, grants=(FeatureGrant(views=["shared"], principals=["group:payments"]),))
    other = Principal("pat@example.com", OIDC, groups=("payments",))
    assert rbac.granted_views(other, rules) == {"shared"} and not rbac.reads_all_features(other, rules)
    assert rbac.reads_all_features(Principal("v@example.com", OIDC, groups=("fraud",)), rules)
    authorize_with(monkeypatch, rules, other, "features.list", {})
    authorize_with(monkeypatch, rules, other, "features.skew", {"view": "shared"})
    with pytest.raises(Forbidden, match="features.skew of view 'private'"):
        authorize_with(monkeypatch, rules, other, "features.skew", {"view": "private"})
    with pytest.raises(Forbidden):
        authorize_with(monkeypatch, rules, other, "models.list", {})
    with pytest.raises(Forbidden):
        authorize_with(monkeypatch, rules, Principal("q@example.com", OIDC), "features.list", {})
