"""Mistakes in reading commands fail loudly (exit 3 or 4 with a hint), and a read creates no state.

As a user types them: an unknown model, environment or stack, a stack never provisioned, a
mistyped command group, and versions given as ``v1`` as well as ``1``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, write_project
from tests.integration.support_registry import cli_in, registered  # noqa: F401  (module fixture)

pytestmark = pytest.mark.integration


def files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.fixture
def cloud_project(tmp_path) -> Path:
    """A project with the repository's AWS stack, never provisioned on this machine."""
    return write_project(tmp_path / "project",
                         {"fraud-prod": (REPO / "stacks" / "Pulumi.fraud-prod.yaml").read_text()})


@pytest.mark.parametrize("command", [
    ("runs", "list"), ("runs", "show", "0123abcd"), ("models", "list"), ("models", "show", "card-scorer", "v1"),
    ("deployments", "list"), ("rollout", "status", "card-scorer"), ("monitor", "status"), ("approvals", "list"),
    ("features", "list"), ("cost", "report"), ("sla",), ("adoption",),
])
def test_reading_a_cloud_stack_never_provisioned_creates_nothing(cloud_project, command):
    before = files_under(cloud_project)
    result = cli_in(cloud_project, *command, "--stack", "fraud-prod")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "stack 'fraud-prod' is not provisioned" in result.stderr
    assert "mlplat up --stack fraud-prod" in result.stderr
    # no state folder, no signing key, no lock file, no MLflow store
    assert files_under(cloud_project) == before


def test_reading_a_local_stack_never_provisioned_is_a_stack_error(project):
    before = files_under(project)
    for command in (("runs", "list"), ("models", "list"), ("deployments", "list"), ("monitor", "status")):
        result = cli_in(project, *command)
        assert result.returncode == 3, (command, result.stderr)
        assert "stack 'dev' is not provisioned" in result.stderr and "mlplat up --stack dev" in result.stderr
    assert files_under(project) == before


def test_unknown_model_environment_and_stack_in_reads(registered):  # noqa: F811
    project = registered
    cases = {
        ("monitor", "status", "scorr"): (4, "model 'scorr' is not registered", "did you mean 'scorer'?"),
        ("monitor", "status", "nosuch"): (4, "model 'nosuch' is not registered", "models list"),
        ("models", "list", "--env", "nosuch"): (4, "environment 'nosuch' is unknown to stack 'dev'",
                                                "known environments: dev, production, staging"),
        ("models", "list", "--env", "prodution"): (4, "environment 'prodution' is unknown",
                                                   "did you mean 'production'?"),
        ("deployments", "list", "--env", "nosuch"): (4, "environment 'nosuch' is unknown", "known environments"),
        ("models", "show", "scorer", "v9"): (4, "has no version 9", "known versions: 1"),
        ("runs", "list", "--stack", "nosuch"): (3, "stack 'nosuch' not found", "existing stacks"),
    }
    for command, (code, message, hint) in cases.items():
        result = cli_in(project, *command)
        assert result.returncode == code, (command, result.stdout, result.stderr)
        assert message in result.stderr and hint in result.stderr, (command, result.stderr)
    # what does exist still answers
    for environment in ("dev", "production"):  # the stack's own, and one of the lifecycle's
        assert cli_in(project, "models", "list", "--env", environment).returncode == 0
    assert cli_in(project, "monitor", "status", "scorer").returncode == 0


def test_versions_as_printed_and_mistyped_groups(registered):  # noqa: F811
    project = registered
    for version in ("1", "v1", "V1"):
        shown = cli_in(project, "models", "show", "scorer", version, "--json")
        assert shown.returncode == 0, (version, shown.stderr)
        assert '"version": 1' in shown.stdout
    for bad, fragment in (("v0", "versions start at 1"), ("vx", "give its number, e.g. 3 or v3"),
                          ("1.5", "is not a model version")):
        refused = cli_in(project, "deploy", "scorer", bad)
        assert refused.returncode == 2 and fragment in refused.stderr, (bad, refused.stderr)
    typo = cli_in(project, "model", "list")
    assert typo.returncode == 2 and "No such command 'model'" in typo.stderr
    assert "Did you mean 'models'?" in typo.stderr
