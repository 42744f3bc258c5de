"""The CI example runs what the README says it runs."""
from __future__ import annotations

import yaml

from tests.conftest import REPO


def test_workflow_checks_all_stacks_uploads_sarif_and_previews_with_the_pack():
    workflow = yaml.safe_load((REPO / "examples" / "ci" / "policy.yml").read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
    check = workflow["jobs"]["policy-check"]["steps"]
    commands = " ".join(step.get("run", "") for step in check)
    assert "mlplat policy check --all --format sarif --output policy.sarif" in commands
    assert any(step.get("uses", "").startswith("github/codeql-action/upload-sarif") and
               step["with"]["sarif_file"] == "policy.sarif" for step in check)
    preview = workflow["jobs"]["pulumi-preview"]
    assert "AWS_ROLE_ARN" in preview["if"]
    assert any("pulumi preview" in step.get("run", "") and "--policy-pack policies" in step["run"]
               for step in preview["steps"])
