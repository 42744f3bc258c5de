"""Request shapes and error handling of the AWS runtime, pinned with botocore's Stubber (no moto).

Where moto lacks an API or its semantics (SageMaker ``UpdateEndpoint``, Cost Explorer's
grouping and filtering, throttling, access denied), the exact request the runtime sends
and its reaction to AWS's answers are checked here.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from mlplat.errors import ExitCode
from tests.conftest import write_project
from tests.contract import moto_support as ms
from tests.contract.lifecycle import context

pytestmark = pytest.mark.integration


@pytest.fixture
def spec(tmp_path, monkeypatch):
    ms.use_fake_aws(monkeypatch)
    project = write_project(tmp_path / "project", {"fraud-aws": ms.aws_stack_text()})
    return context(project).stack("fraud-aws")


def stubbed(session, service: str):
    from botocore.stub import Stubber

    client = session.client(service)
    stub = Stubber(client)
    stub.activate()
    return stub


def session_for(spec, sleeps: list[float] | None = None):
    from mlplat_providers.aws.runtime.session import AwsSession, RetryPolicy

    retry = RetryPolicy(attempts=4, base_seconds=0.5, sleep=(sleeps.append if sleeps is not None else lambda s: None))
    session = AwsSession(spec, retry=retry)
    session.__dict__["account"] = ms.ACCOUNT  # skip the STS check: no endpoint behind the Stubber
    return session


def test_throttling_is_retried_with_growing_backoff(spec):
    sleeps: list[float] = []
    session = session_for(spec, sleeps)
    stub = stubbed(session, "sagemaker")
    for _ in range(2):
        stub.add_client_error("describe_endpoint", service_error_code="ThrottlingException", service_message="Rate exceeded")
    stub.add_response("describe_endpoint", {"EndpointName": "e", "EndpointArn": "arn:aws:sagemaker:eu-west-1:1:endpoint/e",
                                            "EndpointConfigName": "c", "EndpointStatus": "InService",
                                            "CreationTime": "2026-01-01T00:00:00Z",
                                            "LastModifiedTime": "2026-01-01T00:00:00Z"},
                      {"EndpointName": "e"})
    assert session.call("sagemaker", "describe_endpoint", EndpointName="e")["EndpointStatus"] == "InService"
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0
    stub.assert_no_pending_responses()


def test_throttling_that_never_ends_is_a_clear_error(spec):
    from mlplat_providers.aws.runtime.session import AwsUnavailable

    session = session_for(spec)
    stub = stubbed(session, "sagemaker")
    for _ in range(4):
        stub.add_client_error("update_endpoint_weights_and_capacities", service_error_code="ThrottlingException")
    with pytest.raises(AwsUnavailable, match="sagemaker:UpdateEndpointWeightsAndCapacities after 4 attempts"):
        session.call("sagemaker", "update_endpoint_weights_and_capacities", EndpointName="e",
                     DesiredWeightsAndCapacities=[{"VariantName": "v1", "DesiredWeight": 1.0}])


def test_access_denied_names_the_iam_action(spec):
    from mlplat_providers.aws.runtime.session import AwsAccessDenied

    session = session_for(spec)
    stub = stubbed(session, "sagemaker")
    stub.add_client_error("create_model_package_group", service_error_code="AccessDeniedException",
                          service_message="User is not authorized", http_status_code=400)
    with pytest.raises(AwsAccessDenied) as exc:
        session.call("sagemaker", "create_model_package_group", ModelPackageGroupName="fraud-scorer")
    assert "sagemaker:CreateModelPackageGroup" in exc.value.message
    assert "grant sagemaker:CreateModelPackageGroup" in exc.value.hint
    assert exc.value.exit_code == ExitCode.DENIED


NAME = "mlplat-fraud-production-scorer"
ROLE = "arn:aws:iam::123456789012:role/mlplat-fraud-production-platform"
CAPTURE = {"EnableCapture": True, "InitialSamplingPercentage": 100,
           "DestinationS3Uri": "s3://mlplat-fraud-production-artifacts-123456789012/data-capture/scorer/production",
           "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
           "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}}


def _endpoint(config: str, weights: dict[str, float]) -> dict:
    return {"EndpointName": NAME, "EndpointArn": f"arn:aws:sagemaker:eu-west-1:123456789012:endpoint/{NAME}",
            "EndpointConfigName": config, "EndpointStatus": "InService", "CreationTime": "2026-01-01T00:00:00Z",
            "LastModifiedTime": "2026-01-01T00:00:00Z",
            "ProductionVariants": [{"VariantName": k, "CurrentWeight": w, "DesiredWeight": w} for k, w in weights.items()]}


def _config(name: str, variants: dict[str, int]) -> dict:
    return {"EndpointConfigName": name, "EndpointConfigArn": f"arn:aws:sagemaker:eu-west-1:123456789012:endpoint-config/{name}",
            "CreationTime": "2026-01-01T00:00:00Z",
            "ProductionVariants": [{"VariantName": variant, "ModelName": f"{NAME}-v{v}", "InitialInstanceCount": 1,
                                    "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0}
                                   for variant, v in variants.items()]}


def _package(version: int, status: str) -> dict:
    return {"ModelPackageName": "fraud-scorer", "ModelPackageGroupName": "fraud-scorer", "ModelPackageVersion": version,
            "ModelPackageArn": f"arn:aws:sagemaker:eu-west-1:123456789012:model-package/fraud-scorer/{version}",
            "CreationTime": "2026-01-01T00:00:00Z", "ModelPackageStatus": "Completed", "ModelApprovalStatus": status,
            "ModelPackageStatusDetails": {"ValidationStatuses": []},
            "InferenceSpecification": {"Containers": [{"Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlplat/serve:1",
                                                       "ModelDataUrl": f"s3://b/models/scorer/{version}/model.tar.gz"}],
                                       "SupportedContentTypes": ["application/json"],
                                       "SupportedResponseMIMETypes": ["application/json"]}}


def _new_model(stub, version: int, status: str, containers: list[dict]) -> None:
    from botocore.stub import ANY

    stub.add_client_error("describe_model", service_error_code="ValidationException",
                          service_message="Could not find model", expected_params={"ModelName": f"{NAME}-v{version}"})
    stub.add_response("describe_model_package", _package(version, status), {
        "ModelPackageName": f"arn:aws:sagemaker:eu-west-1:123456789012:model-package/fraud-scorer/{version}"})
    stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:eu-west-1:123456789012:model/{NAME}-v{version}"},
                      {"ModelName": f"{NAME}-v{version}", "ExecutionRoleArn": ROLE, "Containers": containers,
                       "Tags": ANY})


def _serving(spec):
    from mlplat_providers.aws.runtime.serving import AwsServing

    session = session_for(spec)
    return AwsServing(spec, context(Path(spec.project_dir)), session), session


def test_a_shadow_gets_a_new_config_and_update_endpoint_without_guardrails(spec):
    """moto has no shadow variants: the request is checked field by field. Adding a variant changes the
    configuration's variant names, so SageMaker's deployment guardrails cannot run: no DeploymentConfig."""
    from botocore.stub import ANY

    from mlplat.services.rollout import Endpoint, Route

    serving, session = _serving(spec)
    stub = stubbed(session, "sagemaker")
    stub.add_response("describe_endpoint", _endpoint("old", {"primary": 100.0}), {"EndpointName": NAME})
    stub.add_response("describe_endpoint_config", _config("old", {"primary": 1}), {"EndpointConfigName": "old"})
    stub.add_response("describe_model", {"ModelName": f"{NAME}-v1", "ModelArn": "arn:aws:sagemaker:eu-west-1:1:model/m",
                                         "CreationTime": "2026-01-01T00:00:00Z", "ExecutionRoleArn": ROLE},
                      {"ModelName": f"{NAME}-v1"})
    _new_model(stub, 2, "Approved", [{"ModelPackageName":
                                      "arn:aws:sagemaker:eu-west-1:123456789012:model-package/fraud-scorer/2"}])
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:eu-west-1:1:endpoint-config/x"}, {
        "EndpointConfigName": ANY, "Tags": ANY,
        "ProductionVariants": [{"VariantName": "primary", "ModelName": f"{NAME}-v1", "InstanceType": "ml.m5.large",
                                "InitialInstanceCount": 1, "InitialVariantWeight": 100.0}],
        "ShadowProductionVariants": [{"VariantName": "shadow", "ModelName": f"{NAME}-v2",
                                      "InstanceType": "ml.m5.large", "InitialInstanceCount": 1,
                                      "InitialVariantWeight": 25.0}],
        "DataCaptureConfig": CAPTURE})
    stub.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:eu-west-1:1:endpoint/x"}, {
        "EndpointName": NAME, "EndpointConfigName": ANY, "RetainAllVariantProperties": False})
    endpoint = Endpoint("scorer", "production", "shadow", [Route("primary", 1, 100)], {"version": 2, "percent": 25}, 1, None)
    out = serving.apply(endpoint)
    assert out["action"] == "update" and out["config"].startswith(NAME[:40]) and out["deployment_config"] is None
    stub.assert_no_pending_responses()


def test_a_new_version_on_the_same_variant_updates_with_the_stacks_deployment_config(spec):
    """Same variant names before and after: UpdateEndpoint carries blue/green routing and, as rollback alarms,
    exactly the alarms the program creates for the variants the runtime names."""
    from botocore.stub import ANY

    from mlplat.services.rollout import Endpoint, Route
    from mlplat_providers.aws.plan import deployment_config, rollback_alarms
    from mlplat_providers.aws.service_rules import update_endpoint_problem

    serving, session = _serving(spec)
    stub = stubbed(session, "sagemaker")
    watch = stubbed(session, "cloudwatch")
    alarms = [name for name, _variant, _alarm in rollback_alarms(spec, NAME)]
    assert {v for _n, v, _a in rollback_alarms(spec, NAME)} == {"primary", "canary"}
    stub.add_response("describe_endpoint", _endpoint("old", {"primary": 100.0}), {"EndpointName": NAME})
    stub.add_response("describe_endpoint_config", _config("old", {"primary": 1}), {"EndpointConfigName": "old"})
    _new_model(stub, 2, "Approved", [{"ModelPackageName":
                                      "arn:aws:sagemaker:eu-west-1:123456789012:model-package/fraud-scorer/2"}])
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:eu-west-1:1:endpoint-config/x"}, {
        "EndpointConfigName": ANY, "Tags": ANY, "DataCaptureConfig": CAPTURE,
        "ProductionVariants": [{"VariantName": "primary", "ModelName": f"{NAME}-v2", "InstanceType": "ml.m5.large",
                                "InitialInstanceCount": 1, "InitialVariantWeight": 100.0}]})
    watch.add_response("describe_alarms", {"MetricAlarms": [{"AlarmName": a} for a in alarms]}, {"AlarmNames": alarms})
    expected = deployment_config(spec, alarms)
    stub.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:eu-west-1:1:endpoint/x"}, {
        "EndpointName": NAME, "EndpointConfigName": ANY, "RetainAllVariantProperties": False,
        "DeploymentConfig": expected})
    out = serving.apply(Endpoint("scorer", "production", "direct", [Route("primary", 2, 100)], None, 2, 1))
    assert out["action"] == "update" and out["deployment_config"] == expected
    assert [a["AlarmName"] for a in expected["AutoRollbackConfiguration"]["Alarms"]] == alarms
    assert expected["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"  # one instance
    request = {"EndpointName": NAME, "EndpointConfigName": out["config"], "DeploymentConfig": expected}
    assert update_endpoint_problem(request, old_variants={"primary"}, new_variants={"primary"}, fleet=1) is None
    stub.assert_no_pending_responses()
    watch.assert_no_pending_responses()


def test_a_version_awaiting_approval_runs_its_container_outside_production(spec):
    """SageMaker deploys a versioned package only once Approved: a QA endpoint of a pending version is built
    from the package's own image and model data; production refuses it."""
    from botocore.stub import ANY

    from mlplat.errors import Denied
    from mlplat_providers.aws.runtime.serving import AwsServing

    serving, session = _serving(spec)
    stub = stubbed(session, "sagemaker")
    qa = f"{NAME}-qa"
    stub.add_client_error("describe_model", service_error_code="ValidationException",
                          service_message="Could not find model", expected_params={"ModelName": f"{qa}-v3"})
    stub.add_response("describe_model_package", _package(3, "PendingManualApproval"), {"ModelPackageName": ANY})
    stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:eu-west-1:1:model/m"}, {
        "ModelName": f"{qa}-v3", "ExecutionRoleArn": ROLE, "Tags": ANY, "Containers": [{
            "Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlplat/serve:1",
            "ModelDataUrl": "s3://b/models/scorer/3/model.tar.gz"}]})
    assert serving.ensure_model("scorer", 3, "qa") == f"{qa}-v3"
    stub.add_client_error("describe_model", service_error_code="ValidationException",
                          service_message="Could not find model", expected_params={"ModelName": f"{NAME}-v3"})
    stub.add_response("describe_model_package", _package(3, "PendingManualApproval"), {"ModelPackageName": ANY})
    with pytest.raises(Denied, match="PendingManualApproval"):
        serving.ensure_model("scorer", 3, "production")
    stub.assert_no_pending_responses()
    assert isinstance(serving, AwsServing)


def test_traffic_steps_between_present_versions_only_move_weights(spec):
    from mlplat.services.rollout import Endpoint, Route

    serving, session = _serving(spec)
    stub = stubbed(session, "sagemaker")
    stub.add_response("describe_endpoint", _endpoint("cfg", {"primary": 90.0, "canary": 10.0}), {"EndpointName": NAME})
    stub.add_response("describe_endpoint_config", _config("cfg", {"primary": 1, "canary": 2}),
                      {"EndpointConfigName": "cfg"})
    stub.add_response("update_endpoint_weights_and_capacities", {"EndpointArn": "arn:aws:sagemaker:eu-west-1:1:endpoint/x"},
                      {"EndpointName": NAME, "DesiredWeightsAndCapacities": [
                          {"VariantName": "canary", "DesiredWeight": 100.0},
                          {"VariantName": "primary", "DesiredWeight": 0.0}]})
    endpoint = Endpoint("scorer", "production", "canary", [Route("canary", 2, 100)], None, 1, None, rollout_id=3)
    assert serving.apply(endpoint)["action"] == "weights"
    stub.assert_no_pending_responses()


def test_cost_explorer_request_groups_by_the_team_tag_and_follows_pages(spec):
    """moto returns whatever result was queued, whatever the grouping: the request is pinned here."""
    from mlplat_providers.aws.runtime.cost import AwsCost

    session = session_for(spec)
    source = AwsCost(spec, context(Path(spec.project_dir)), session)
    stub = stubbed(session, "ce")
    start, end = 1_793_491_200.0, 1_796_083_200.0  # 2026-11-01 .. 2026-12-01 UTC
    request = {"TimePeriod": {"Start": "2026-11-01", "End": "2026-12-01"}, "Granularity": "DAILY",
               "Metrics": ["UnblendedCost"], "GroupBy": [{"Type": "TAG", "Key": "team"}],
               "Filter": {"Tags": {"Key": "team", "Values": ["fraud"], "MatchOptions": ["EQUALS"]}}}

    def page(amount: str, token: str | None) -> dict:
        body = {"ResultsByTime": [{"TimePeriod": {"Start": "2026-11-01", "End": "2026-11-02"}, "Total": {},
                                   "Groups": [{"Keys": ["team$fraud"], "Metrics": {"UnblendedCost": {
                                       "Amount": amount, "Unit": "USD"}}}], "Estimated": False}]}
        return body | ({"NextPageToken": token} if token else {})

    stub.add_response("get_cost_and_usage", page("10.25", "p2"), request)
    stub.add_response("get_cost_and_usage", page("2.75", None), request | {"NextPageToken": "p2"})
    billed = source.billed(start, end - 1)
    assert billed["by_team"] == {"fraud": 13.0} and billed["period"] == request["TimePeriod"]
    stub.assert_no_pending_responses()
