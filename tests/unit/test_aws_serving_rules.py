"""SageMaker's documented serving rules (``service_rules``) and the requests the AWS plan builds from them.

Each rule cites its AWS page beside its code; here each is shown refusing what SageMaker refuses and
accepting what it accepts, and the plan's requests are run through the rules and botocore's own model.
"""
from __future__ import annotations

import pytest

from mlplat.errors import StackError
from mlplat.stack import parse_stack
from mlplat_providers.aws import plan as p
from mlplat_providers.aws import service_rules as r
from tests.contract import moto_support as ms


def validate(operation: str, params: dict) -> None:
    """The request as botocore's service model takes it (the same check a client makes before sending)."""
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("sagemaker")
    validate_parameters(params, model.operation_model(operation).input_shape)


def stack(tmp_path, *, steps: str = "[10, 50, 100]", extra_provider: str = ""):
    text = ms.aws_stack_text().replace("canary: {steps: [10, 50, 100], bakeSeconds: 0, minRequests: 5}",
                                       f"canary: {{steps: {steps}, bakeSeconds: 600, minRequests: 5}}")
    text = text.replace('    accountId: "123456789012"\n', f'    accountId: "123456789012"\n{extra_provider}')
    path = tmp_path / "stacks" / "Pulumi.s.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return parse_stack(text, path=path, name="s", project_dir=tmp_path)


# --- canary size against the fleet -----------------------------------------------------------------


@pytest.mark.parametrize("steps, fleet, problem", [
    ([1, 10, 50, 100], 1, None),              # one instance: all at once, no canary to size
    ([25, 50, 100], 4, None),                 # one of four instances
    ([50, 100], 4, None),                     # two of four: exactly half
    ([10, 50, 100], 4, "0.4 instances"),      # not a whole instance
    ([60, 100], 5, "at most half"),           # three of five
    ([100], 3, None),                         # no canary at all
])
def test_canary_schedule_against_the_fleet(steps, fleet, problem):
    found = r.canary_schedule_problem(steps, fleet)
    assert (found is None) if problem is None else (problem in found)


def test_stack_validate_refuses_a_schedule_the_fleet_cannot_run(tmp_path):
    assert stack(tmp_path).provider.instance_count == 1  # the default fleet runs any schedule
    assert stack(tmp_path, steps="[25, 50, 100]", extra_provider="    instanceCount: 4\n").provider.instance_count == 4
    with pytest.raises(StackError) as exc:
        stack(tmp_path, steps="[10, 50, 100]", extra_provider="    instanceCount: 4\n")
    message = str(exc.value)
    assert "Pulumi.s.yaml:" in message and "mlplat:serving.canary.steps" in message
    assert "10 % of 4 instances, is 0.4 instances" in message and "instanceCount is 4" in message
    line = int(message.split("Pulumi.s.yaml:")[1].split(":")[0])
    assert "canary:" in (tmp_path / "stacks" / "Pulumi.s.yaml").read_text().splitlines()[line - 1]
    assert "change one of them" in exc.value.hint


def test_stack_validate_refuses_model_monitor_where_aws_has_no_analyzer_image(tmp_path):
    on = "    modelMonitor: {enabled: true}\n"
    assert stack(tmp_path, extra_provider=on).provider.model_monitor.enabled  # eu-west-1 has the image
    text = ms.aws_stack_text().replace(ms.REGION, "sa-east-1")
    assert "sa-east-1" in text
    path = tmp_path / "stacks" / "Pulumi.t.yaml"
    path.write_text(text.replace('    accountId: "123456789012"\n', '    accountId: "123456789012"\n' + on))
    with pytest.raises(StackError) as exc:
        parse_stack(path.read_text(), path=path, name="t", project_dir=tmp_path)
    assert "no Model Monitor analyzer image is known for region sa-east-1" in str(exc.value)
    assert parse_stack(text, path=path, name="t", project_dir=tmp_path).provider.region == "sa-east-1"  # off: fine


# --- the blue/green policy and UpdateEndpoint ------------------------------------------------------


def test_blue_green_limits():
    routing = {"Type": "CANARY", "WaitIntervalInSeconds": 600, "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1}}
    assert r.blue_green_problem({"TrafficRoutingConfiguration": routing}, fleet=2) is None
    assert "outside 0-3600" in r.blue_green_problem(
        {"TrafficRoutingConfiguration": routing | {"WaitIntervalInSeconds": 7200}}, fleet=2)
    assert "half" in r.blue_green_problem({"TrafficRoutingConfiguration": routing}, fleet=1)
    assert "whole instances" in r.blue_green_problem({"TrafficRoutingConfiguration": routing | {
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 1}}}, fleet=4)
    assert "outside 600-28800" in r.blue_green_problem(
        {"TrafficRoutingConfiguration": routing, "MaximumExecutionTimeoutInSeconds": 30_000}, fleet=2)
    assert "does not exceed" in r.blue_green_problem(
        {"TrafficRoutingConfiguration": routing, "MaximumExecutionTimeoutInSeconds": 1200,
         "TerminationWaitInSeconds": 300}, fleet=2)
    assert "10-50 %" in r.blue_green_problem({"TrafficRoutingConfiguration": {
        "Type": "LINEAR", "WaitIntervalInSeconds": 0, "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 5}}},
        fleet=10)


@pytest.mark.parametrize("steps, bake, fleet", [([1, 10, 50, 100], 300, 1), ([25, 50, 100], 3600, 4),
                                                ([50, 100], 86_400, 2), ([100], 0, 1)])
def test_the_plans_deployment_config_is_one_sagemaker_accepts(tmp_path, steps, bake, fleet):
    spec = stack(tmp_path).model_copy(deep=True)
    spec = spec.model_copy(update={
        "serving": spec.serving.model_copy(update={"canary": spec.serving.canary.model_copy(
            update={"steps": steps, "bake_seconds": bake})}),
        "provider": spec.provider.model_copy(update={"instance_count": fleet})})
    alarms = [n for n, _v, _a in p.rollback_alarms(spec, "e")]
    config = p.deployment_config(spec, alarms)
    request = {"EndpointName": "e", "EndpointConfigName": "c", "DeploymentConfig": config}
    validate("UpdateEndpoint", request)
    assert r.update_endpoint_problem(request, old_variants={"primary"}, new_variants={"primary"}, fleet=fleet) is None


def test_update_endpoint_keeps_guardrails_only_where_sagemaker_runs_them():
    config = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE",
                                                                        "WaitIntervalInSeconds": 0}},
              "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "a"}]}}
    same, added = ({"primary"}, {"primary"}), ({"primary"}, {"primary", "canary"})
    base = {"EndpointName": "e", "EndpointConfigName": "c"}
    assert r.update_endpoint_problem(base | {"DeploymentConfig": config}, old_variants=same[0], new_variants=same[1],
                                     fleet=1) is None
    assert "same variant names" in r.update_endpoint_problem(base | {"DeploymentConfig": config},
                                                             old_variants=added[0], new_variants=added[1], fleet=1)
    assert "would be dropped" in r.update_endpoint_problem(base, old_variants=same[0], new_variants=same[1], fleet=1)
    assert r.update_endpoint_problem(base | {"RetainDeploymentConfig": True}, old_variants=same[0],
                                     new_variants=same[1], fleet=1) is None
    assert r.update_endpoint_problem(base, old_variants=added[0], new_variants=added[1], fleet=1) is None
    eleven = config | {"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": str(i)} for i in range(11)]}}
    assert "1 to 10" in r.update_endpoint_problem(base | {"DeploymentConfig": eleven}, old_variants=same[0],
                                                  new_variants=same[1], fleet=1)


# --- data capture and packages ---------------------------------------------------------------------


def test_capture_is_json_inputs_and_outputs_under_the_one_prefix(tmp_path):
    spec = stack(tmp_path)
    config = p.capture_config(spec, "bucket", "scorer", "production")
    assert config["DestinationS3Uri"] == p.capture_uri("bucket", "scorer", "production") == \
        "s3://bucket/data-capture/scorer/production"
    assert r.data_capture_problem(config) is None
    validate("CreateEndpointConfig", {"EndpointConfigName": "c", "DataCaptureConfig": config, "ProductionVariants": [
        {"VariantName": "primary", "ModelName": "m", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}]})
    base64 = {k: v for k, v in config.items() if k != "CaptureContentTypeHeader"}
    assert "base64" in r.data_capture_problem(base64)
    assert "Input and Output" in r.data_capture_problem(config | {"CaptureOptions": [{"CaptureMode": "Input"}]})
    off = spec.model_copy(update={"serving": spec.serving.model_copy(update={"capture_sampling": 0.0})})
    assert p.capture_config(off, "bucket", "scorer", "production") is None


def test_only_approved_packages_deploy_as_packages():
    assert r.package_deploy_problem("Approved") is None
    assert "only once it is Approved" in r.package_deploy_problem("PendingManualApproval")
    assert r.package_deploy_problem("Rejected")
