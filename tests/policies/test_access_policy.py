"""The access policy: a stack on a cloud provider authenticates its callers and names its admins.

The validator is called as CrossGuard calls it (pure, a collecting report); then through `mlplat policy
check`, which reads the stack file's mlplat:access, on the repository's own stacks and on edited copies.
"""
from __future__ import annotations

import re

import pytest

from mlplat.context import Context
from mlplat.services.policy_check import access_resource, check
from mlplat.stack import load_stack
from mlplat_policies import rules
from tests.conftest import REPO, write_project
from tests.policies.graphs import aws_graph, local_graph, r


def access(provider: str, mode: str | None, **roles) -> rules.Resource:
    return r(rules.T_ACCESS, "team", provider=provider, mode=mode, roles=roles)


def run(graph, **config) -> list[str]:
    policy = rules.BY_NAME["access"]
    messages: list[str] = []
    policy.validate(graph, {**policy.defaults(), **config}, lambda message, urn=None: messages.append(message))
    return messages


@pytest.mark.parametrize("provider", ["aws", "gcp", "azure"])
@pytest.mark.parametrize("mode", ["oidc", "aws-iam", "google", "entra"])
def test_a_cloud_stack_with_an_authenticated_mode_and_an_admin_passes(provider, mode):
    assert run([*aws_graph(), access(provider, mode, admin=["group:platform"], developer=["*"])]) == []


@pytest.mark.parametrize("provider", ["aws", "gcp", "azure"])
@pytest.mark.parametrize("mode", ["trusted-local", "os-user", None])
def test_a_cloud_stack_whose_callers_name_themselves_is_refused(provider, mode):
    messages = run([access(provider, mode, admin=["group:platform"])])
    assert len(messages) == 1
    assert f"stack on {provider}" in messages[0] and "oidc, aws-iam, google, entra" in messages[0]
    assert (repr(mode) if mode else "no mode") in messages[0]


@pytest.mark.parametrize("mode", ["trusted-local", "os-user", None, "oidc"])
def test_the_local_provider_may_use_any_mode(mode):
    assert run([*local_graph(), access("local", mode)]) == []


@pytest.mark.parametrize("roles", [{}, {"developer": ["group:ds"]}, {"admin": []}, {"admin": ["  "]}],
                         ids=["no-roles", "no-admin-role", "empty-admin-list", "blank-pattern"])
def test_a_cloud_stack_without_an_admin_is_refused(roles):
    messages = run([access("aws", "oidc", **roles)])
    assert len(messages) == 1 and "names no admin" in messages[0] and "roles.admin" in messages[0]


def test_everyone_as_admin_is_not_naming_an_admin():
    messages = run([access("gcp", "google", admin=["platform-admin@example.com", "*"])])
    assert len(messages) == 1 and "every authenticated caller an admin" in messages[0]


def test_require_admin_can_be_turned_off_but_the_mode_still_counts():
    assert run([access("aws", "aws-iam")], requireAdmin=False) == []
    assert len(run([access("aws", "trusted-local")], requireAdmin=False)) == 1


def test_both_problems_are_reported_and_point_at_the_stack():
    graph = [access("azure", "trusted-local")]
    policy, seen = rules.BY_NAME["access"], []
    policy.validate(graph, policy.defaults(), lambda message, urn=None: seen.append(urn))
    assert seen == [graph[0].urn, graph[0].urn]


def test_a_graph_without_the_stack_settings_is_not_judged():
    """CrossGuard in Pulumi's engine sees only the program's resources; the rule then has nothing to read."""
    assert run(aws_graph()) == []


# --- through `mlplat policy check`, on stack files ------------------------------------------------


def strip_access(text: str) -> str:
    """The stack file without its mlplat:access section (and the comment above it)."""
    return re.sub(r"(?ms)^  # [^\n]*\n(?:  #[^\n]*\n)*  mlplat:access:\n(?:    [^\n]*\n)*", "", text)


def test_the_access_settings_are_read_from_the_stack_file():
    spec = load_stack("fraud-prod", REPO)
    doc = access_resource(spec)
    assert doc["type"] == rules.T_ACCESS and doc["name"] == "fraud-prod"
    assert doc["props"]["provider"] == "aws" and doc["props"]["mode"] == "oidc"
    assert doc["props"]["roles"]["admin"] == ["group:ml-platform-admins"]


def test_every_stack_of_the_repository_passes(tmp_path):
    names = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (REPO / "stacks").glob("Pulumi.*.yaml"))
    report = check(names, REPO, Context(project_dir=REPO))
    assert report.ok, [(s.stack, [f.message for f in s.findings], s.error) for s in report.stacks if s.blocking]
    assert all(not [f for f in s.findings if f.policy == "access"] for s in report.stacks)


@pytest.mark.pulumi
def test_an_azure_stack_without_access_fails_beside_its_program(tmp_path):
    text = strip_access((REPO / "stacks" / "Pulumi.nlp-prod.yaml").read_text())
    assert "mlplat:access" not in text
    project = write_project(tmp_path / "p", {"team": text})
    result = check(["team"], project, Context(project_dir=project)).stacks[0]
    assert result.status == "failed" and result.error is None
    assert {f.policy for f in result.findings} == {"access"}  # the program itself passes the pack
    assert any("stack on azure declares no mode" in f.message for f in result.findings)


def test_trusted_local_on_a_cloud_stack_fails_the_check(tmp_path):
    text = (REPO / "stacks" / "Pulumi.search-staging.yaml").read_text()
    text = strip_access(text) + "  mlplat:access:\n    mode: trusted-local\n    roles: {admin: [ops@example.com]}\n"
    project = write_project(tmp_path / "p", {"team": text, "dev": (REPO / "stacks" / "Pulumi.dev.yaml").read_text()})
    team, dev = check(["team", "dev"], project, Context(project_dir=project)).stacks
    assert team.status == "failed" and [f.policy for f in team.findings] == ["access"]
    assert "'trusted-local'" in team.findings[0].message
    assert dev.status == "passed"  # the local demo stack keeps trusted-local


@pytest.mark.pulumi
def test_an_aws_stack_without_access_fails_beside_its_program(tmp_path):
    text = strip_access((REPO / "stacks" / "Pulumi.fraud-prod.yaml").read_text())
    project = write_project(tmp_path / "p", {"team": text})
    result = check(["team"], project, Context(project_dir=project)).stacks[0]
    assert result.status == "failed"
    assert sorted(f.message.split(";")[0] for f in result.findings if f.policy == "access") == [
        "stack on aws declares no mode (embedded, the OS user) under mlplat:access",
        "stack on aws names no admin under mlplat:access.roles.admin"]
    assert {f.policy for f in result.findings} == {"access"}


@pytest.mark.pulumi
def test_a_gcp_stack_without_access_fails_beside_its_program(tmp_path):
    text = strip_access((REPO / "stacks" / "Pulumi.search-staging.yaml").read_text())
    project = write_project(tmp_path / "p", {"team": text})
    result = check(["team"], project, Context(project_dir=project)).stacks[0]
    assert result.status == "failed" and result.error is None
    assert {f.policy for f in result.findings} == {"access"}
    assert any("stack on gcp declares no mode" in f.message for f in result.findings)


@pytest.mark.pulumi
def test_the_policy_can_be_made_advisory_per_stack(tmp_path):
    text = strip_access((REPO / "stacks" / "Pulumi.nlp-prod.yaml").read_text())
    text += "  mlplat:policy:\n    policies:\n      access: advisory\n"
    project = write_project(tmp_path / "p", {"team": text})
    result = check(["team"], project, Context(project_dir=project)).stacks[0]
    assert result.status == "warned" and result.findings and all(f.level == "advisory" for f in result.findings)
