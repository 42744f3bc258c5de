"""Policies the platform's own program satisfies by construction (tracking, storage), checked against a program
that breaks them: a provider whose program differs is evaluated through the same `policy check` service."""
from __future__ import annotations

import json

import pytest

from mlplat import providers
from mlplat.context import Context
from mlplat.contracts import Capability
from mlplat.providers import ProviderBundle
from mlplat.services.policy_check import check
from mlplat_providers.aws.provisioner import AwsProvisioner
from mlplat_providers.aws.settings import AwsProviderSpec
from tests.conftest import REPO, write_project

pytestmark = pytest.mark.pulumi


class DriftingProvisioner(AwsProvisioner):
    """The AWS program as a team might hand-edit it: training untracked, the bucket's public access block dropped."""

    def planned_resources(self):
        out = []
        for resource in super().planned_resources():
            if resource["type"] == "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock":
                continue
            if resource["type"] == "aws:sagemaker/pipeline:Pipeline":
                definition = json.loads(resource["props"]["pipelineDefinition"])
                for step in definition["Steps"]:
                    step.get("Arguments", {}).get("Environment", {}).pop("MLFLOW_TRACKING_URI", None)
                resource = {**resource, "props": {**resource["props"], "pipelineDefinition": json.dumps(definition)}}
            out.append(resource)
        return out


@pytest.fixture
def drifting_aws():
    providers.reset()
    providers.register(ProviderBundle("aws", "test: drifting program",
                                      {Capability.PROVISIONER: lambda spec, ctx: DriftingProvisioner(spec, ctx)},
                                      settings_model=AwsProviderSpec))
    yield
    providers.reset()


def test_untracked_training_and_public_bucket_are_caught(tmp_path, drifting_aws):
    project = write_project(tmp_path / "p", {"team": (REPO / "stacks" / "Pulumi.fraud-prod.yaml").read_text(),
                                             "dev": (REPO / "stacks" / "Pulumi.dev.yaml").read_text()})
    report = check(["team", "dev"], project, Context(project_dir=project))
    team, dev = report.stacks
    assert team.status == "failed" and dev.status == "passed"
    fired = {f.policy for f in team.findings}
    assert fired == {"tracking-required", "storage"}
    tracking = [f for f in team.findings if f.policy == "tracking-required"]
    assert len(tracking) == 2 and all("not wired" in f.message for f in tracking)  # one train pipeline per model
    assert any("public access block" in f.message for f in team.findings if f.policy == "storage")
    assert not report.ok


def test_the_real_program_passes_the_same_checks(tmp_path):
    project = write_project(tmp_path / "p", {"team": (REPO / "stacks" / "Pulumi.fraud-prod.yaml").read_text()})
    report = check(["team"], project, Context(project_dir=project))
    assert report.ok and report.stacks[0].findings == []
