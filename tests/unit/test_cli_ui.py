"""`mlplat ui` finds the tracking store through the stack's provider, never by reading a provider's files."""
from __future__ import annotations

from tests.conftest import REPO, run_cli, write_project


def test_ui_before_up_says_to_run_up_and_creates_nothing(project, cli):
    result = cli("ui", "--stack", "dev", "--port", "5999")
    assert result.returncode == 3, result.stderr  # a stack error: not provisioned
    assert "stack 'dev' is not provisioned" in result.stderr and "mlplat up --stack dev" in result.stderr
    assert not (project / ".mlplat").exists()


def test_ui_refuses_a_public_address_before_anything_else(project, cli):
    result = cli("ui", "--stack", "dev", "--host", "0.0.0.0")
    assert result.returncode == 6 and "refusing to bind to 0.0.0.0" in result.stderr
    assert not (project / ".mlplat").exists()


def test_ui_on_a_provider_without_a_tracking_ui_is_not_supported(tmp_path):
    stacks = {name: (REPO / "stacks" / f"Pulumi.{name}.yaml").read_text() for name in ("dev", "fraud-prod")}
    root = write_project(tmp_path / "project", stacks)
    result = run_cli("ui", "--stack", "fraud-prod", cwd=root, env={"MLPLAT_PROJECT_DIR": str(root)})
    assert result.returncode == 7, result.stderr
    assert "provider 'aws' does not support 'tracking UI'" in result.stderr
    assert "AWS console" in result.stderr
