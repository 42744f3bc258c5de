"""The AWS runtime against moto in this process: register, approve, deploy with every strategy, step, roll back.

Each test reads SageMaker back (package status and metadata, endpoint configs, variant
weights, alarms) and the platform database, so a wrong mapping fails here, not in a cloud.
One module-wide moto holds two registered versions promoted to staging in a ``qa``
environment (serving tests) and in the stack's ``production`` environment (approvals).
"""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from mlplat.errors import Conflict, Denied, StackError
from mlplat.services.rollout import RolloutError
from tests.contract import moto_support as ms
from tests.contract.lifecycle import AUTHOR, approve, context, new_project, promote, serving, train

pytestmark = pytest.mark.integration

STACK = "fraud-aws"
QA = "qa"
ENDPOINT = "mlplat-fraud-production-scorer"
QA_ENDPOINT = "mlplat-fraud-production-scorer-qa"


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        ms.use_fake_aws(mp)
        ms.install_sagemaker_gaps()
        project = new_project(tmp_path_factory.mktemp("aws") / "project", {
            STACK: ms.aws_stack_text(),
            "no-account": ms.aws_stack_text(account=None),
            "other-region": ms.aws_stack_text().replace("  aws:region: eu-west-1", "  aws:region: us-east-1"),
            "gpu-only": ms.aws_stack_text(extra="  mlplat:policy:\n    policies:\n      spend:\n"
                                                "        allowedInstanceTypes: [ml.g5.*]\n"),
        })
        mp.setenv("MLPLAT_PROJECT_DIR", str(project))
        mp.setenv("MLPLAT_USER", AUTHOR)
        mp.chdir(project)
        with mock_aws():
            ms.provision_cloud(context(project).stack(STACK))
            assert train(project, STACK) == 1
            assert train(project, STACK, c=0.5) == 2
            for version in (1, 2):
                promote_in(project, version, "staging", QA)
            promote(project, STACK, 1, "staging")
            yield project


def promote_in(project, version: int, target: str, environment: str) -> dict:
    from mlplat.services import promotion

    ctx = context(project)
    return promotion.promote(ctx.stack(STACK), ctx, "scorer", version, target, environment=environment)


def sm():
    import boto3

    return boto3.client("sagemaker", region_name=ms.REGION)


def package(version: int) -> dict:
    return sm().describe_model_package(
        ModelPackageName=f"arn:aws:sagemaker:{ms.REGION}:{ms.ACCOUNT}:model-package/fraud-scorer/{version}")


def live(endpoint: str) -> dict:
    """Variant → (current weight) and the configuration's variants and shadow, as SageMaker has them."""
    described = sm().describe_endpoint(EndpointName=endpoint)
    config = sm().describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    return {"config": described["EndpointConfigName"],
            "weights": {v["VariantName"]: v.get("CurrentWeight", 0.0) for v in described["ProductionVariants"]},
            "models": {v["VariantName"]: v["ModelName"] for v in config["ProductionVariants"]},
            "shadow": config.get("ShadowProductionVariants"), "capture": config.get("DataCaptureConfig")}


def audit_ok(project) -> None:
    from mlplat.services import audit
    from mlplat_providers.aws.runtime.state import AwsState

    conn = AwsState(context(project).stack(STACK).state_dir).database().connect()
    try:
        verification = audit.verify(conn)
        assert verification.ok, verification.problems
    finally:
        conn.close()


# --- registry ------------------------------------------------------------------------------------


def test_versions_are_model_packages_with_lineage_and_artifacts_in_the_bucket(aws):
    import boto3

    from mlplat.services import registry as reg
    from mlplat_providers.aws.runtime.registry import split_s3

    first, second = package(1), package(2)
    assert (first["ModelPackageVersion"], second["ModelPackageVersion"]) == (1, 2)
    meta = first["CustomerMetadataProperties"]
    conn = reg.registry_for(context(aws).stack(STACK), context(aws)).database().connect()
    row = reg.version_row(conn, "scorer", 1)
    conn.close()
    assert meta["mlplat:artifact-digest"] == row["artifact_digest"]
    assert meta["mlplat:run-id"] == row["run_id"]
    assert meta["mlplat:data:train"] == row["lineage"]["datasets"]["train"]["sha256"]
    assert meta["mlplat:env-hash"] == row["lineage"]["environment"]["hash"]
    assert meta["mlplat:commit"] and meta["mlplat:stack"] == STACK
    container = first["InferenceSpecification"]["Containers"][0]
    assert container["ModelDataUrl"] == row["source"]
    bucket, key = split_s3(row["source"])
    assert bucket == "mlplat-fraud-production-artifacts-123456789012" and key.endswith("model.tar.gz")
    assert boto3.client("s3", region_name=ms.REGION).head_object(Bucket=bucket, Key=key)["ContentLength"] > 1000
    # critical model, nothing decided yet: SageMaker waits for the platform
    assert second["ModelApprovalStatus"] == "PendingManualApproval"


def test_a_fresh_machine_downloads_and_verifies_the_files(aws):
    import shutil

    from mlplat.services import registry as reg
    from mlplat_providers.aws.runtime.state import AwsState

    spec, ctx = context(aws).stack(STACK), context(aws)
    cache = AwsState(spec.state_dir).cache / "scorer" / "2"
    shutil.rmtree(cache)
    folder = reg.verified_model_dir(spec, ctx, "scorer", 2)  # downloads model.tar.gz, checks every sha256
    assert folder == cache and (folder / "MLmodel").is_file()


def test_approval_and_rejection_reach_sagemaker_bound_to_the_digests(aws):
    from mlplat.services import registry as reg

    status = approve(aws, STACK, 1)
    assert status["state"] == "approved"
    approved = package(1)
    assert approved["ModelApprovalStatus"] == "Approved"
    assert status["binding"]["artifact_digest"] in approved["ApprovalDescription"]
    assert status["binding"]["gate_digest"] in approved["ApprovalDescription"]
    assert "risk-office@example.com" in approved["ApprovalDescription"]
    # the author may not approve: refused by the platform, SageMaker untouched
    with pytest.raises(Denied):
        approve(aws, STACK, 2, user=AUTHOR)
    assert package(2)["ModelApprovalStatus"] == "PendingManualApproval"
    promote(aws, STACK, 2, "staging")
    assert approve(aws, STACK, 2, decision="rejected")["state"] == "rejected"
    assert package(2)["ModelApprovalStatus"] == "Rejected"
    promote(aws, STACK, 1, "production")
    spec = context(aws).stack(STACK)
    assert reg.registry_for(spec, context(aws)).get_alias("scorer", "production") == 1


def test_production_serves_only_packages_sagemaker_lists_as_approved(aws):
    dep = serving(aws, STACK)
    with pytest.raises(Denied, match="not production|has not passed|stage"):
        dep.deploy("scorer", 2, environment="production", strategy="direct")  # rejected, never promoted
    sm().update_model_package(ModelPackageArn=package(1)["ModelPackageArn"], ModelApprovalStatus="Rejected",
                              ApprovalDescription="revoked in the console")
    with pytest.raises(Denied, match="Rejected in SageMaker"):
        dep.deploy("scorer", 1, environment="production", strategy="direct")
    assert dep.list("production") == []  # nothing recorded
    with pytest.raises(ClientError):
        sm().describe_endpoint(EndpointName=ENDPOINT)  # nothing created
    promote(aws, STACK, 1, "production")  # a rerun re-mirrors the platform's state: Approved again
    assert package(1)["ModelApprovalStatus"] == "Approved"
    out = dep.deploy("scorer", 1, environment="production", strategy="direct")
    assert out["sagemaker"]["action"] == "create"
    state = live(ENDPOINT)
    assert state["weights"] == {"primary": 100.0}
    assert state["capture"]["EnableCapture"]
    assert state["capture"]["DestinationS3Uri"].endswith("/data-capture/scorer/production")  # the one prefix
    # an Approved package deploys as the package itself
    model = sm().describe_model(ModelName=state["models"]["primary"])
    assert [c.get("ModelPackageName") for c in model.get("Containers") or [model.get("PrimaryContainer")]] == [
        package(1)["ModelPackageArn"]]


# --- serving -------------------------------------------------------------------------------------


def test_canary_steps_by_cloudwatch_metrics_then_rolls_back_on_an_alarm(aws):
    import boto3

    dep = serving(aws, STACK)
    dep.deploy("scorer", 1, environment=QA, strategy="direct")
    out = dep.deploy("scorer", 2, environment=QA, strategy="canary")
    assert out["sagemaker"]["action"] == "update"
    first = live(QA_ENDPOINT)
    assert first["weights"] == {"primary": 90.0, "canary": 10.0}
    assert out["sagemaker"]["deployment_config"] is None  # a variant was added: no guardrails
    waited = dep.step("scorer", environment=QA)  # no traffic yet: not enough requests to judge
    assert waited["action"] == "wait" and "requests" in waited["reasons"][0]
    ms.put_variant_metrics(QA_ENDPOINT, "primary", invocations=90)
    ms.put_variant_metrics(QA_ENDPOINT, "canary", invocations=12)
    stepped = dep.step("scorer", environment=QA)
    assert stepped["action"] == "step", stepped
    assert stepped["sagemaker"]["action"] == "weights"  # no new instances for a traffic step
    second = live(QA_ENDPOINT)
    assert second["config"] == first["config"] and second["weights"] == {"primary": 50.0, "canary": 50.0}
    # the endpoint's rollback alarm fires: the next judgement rolls back to the warm stable variant
    boto3.client("cloudwatch", region_name=ms.REGION).put_metric_alarm(
        AlarmName=f"{QA_ENDPOINT}-canary-5xx", Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors",
        Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=0, ComparisonOperator="GreaterThanThreshold",
        Dimensions=[{"Name": "EndpointName", "Value": QA_ENDPOINT}, {"Name": "VariantName", "Value": "canary"}])
    boto3.client("cloudwatch", region_name=ms.REGION).set_alarm_state(
        AlarmName=f"{QA_ENDPOINT}-canary-5xx", StateValue="ALARM", StateReason="5xx above 0")
    rolled = dep.step("scorer", environment=QA)
    assert rolled["action"] == "rollback" and "5xx" in rolled["reasons"][0]
    after = live(QA_ENDPOINT)
    assert after["config"] == first["config"] and after["weights"] == {"primary": 100.0, "canary": 0.0}
    shown = dep.show("scorer", environment=QA)
    assert shown["routes"] == [{"variant": "primary", "version": 1, "weight": 100}]
    assert [e["event"] for e in shown["events"]][-4:] == ["deployed", "deployed", "step", "rolled_back"]
    with pytest.raises(Conflict):
        dep.step("scorer", environment=QA)  # nothing running any more
    boto3.client("cloudwatch", region_name=ms.REGION).delete_alarms(AlarmNames=[f"{QA_ENDPOINT}-canary-5xx"])
    audit_ok(aws)


def test_canary_breaching_the_error_rate_rolls_back(aws):
    dep = serving(aws, STACK)
    dep.deploy("scorer", 1, environment=QA, strategy="direct")
    dep.deploy("scorer", 2, environment=QA, strategy="canary", steps=[25, 100], bake_seconds=0)
    assert live(QA_ENDPOINT)["weights"] == {"primary": 75.0, "canary": 25.0}
    ms.put_variant_metrics(QA_ENDPOINT, "canary", invocations=40, errors=9)
    result = dep.step("scorer", environment=QA)
    assert result["action"] == "rollback" and "error rate" in result["reasons"][0]
    assert result["metrics"]["candidate"]["errors"] >= 9
    assert live(QA_ENDPOINT)["weights"] == {"primary": 100.0, "canary": 0.0}
    status = dep.rollout_status("scorer", environment=QA)
    assert status["rollout"]["state"] == "rolled_back" and status["sagemaker"]["weights"] == {1: 100.0, 2: 0.0}


def test_ab_and_shadow_map_to_variants_and_a_shadow_variant(aws):
    dep = serving(aws, STACK)
    dep.deploy("scorer", 1, environment=QA, strategy="direct")
    dep.deploy("scorer", 2, environment=QA, strategy="ab", weights="1=70,2=30")
    assert live(QA_ENDPOINT)["weights"] == {"primary": 70.0, "canary": 30.0}
    dep.deploy("scorer", 1, environment=QA, strategy="direct")
    out = dep.deploy("scorer", 2, environment=QA, strategy="shadow", percent=20)
    state = live(QA_ENDPOINT)
    assert state["weights"] == {"primary": 100.0}
    assert [(s["VariantName"], s["InitialVariantWeight"]) for s in state["shadow"]] == [("shadow", 20.0)]
    assert state["models"]["primary"].endswith("-v1") and state["shadow"][0]["ModelName"].endswith("-v2")
    assert out["shadow"] == {"version": 2, "percent": 20}
    rolled = dep.rollback("scorer", environment=QA)
    assert rolled["shadow"] is None and live(QA_ENDPOINT)["shadow"] is None


def test_a_new_version_on_the_same_variant_sends_the_deployment_config(aws):
    """primary v1 → primary v2 keeps the variant names: a guarded blue/green UpdateEndpoint (moto refuses a
    DeploymentConfig whose variant names change, as SageMaker documents)."""
    from mlplat_providers.aws.service_rules import blue_green_problem

    dep = serving(aws, STACK)
    dep.deploy("scorer", 1, environment=QA, strategy="direct")
    dep.tidy("scorer", QA)  # a canary of an earlier test may have left a variant at 0
    out = dep.deploy("scorer", 2, environment=QA, strategy="direct")
    config = out["sagemaker"]["deployment_config"]
    assert out["sagemaker"]["action"] == "update" and config is not None
    assert blue_green_problem(config["BlueGreenUpdatePolicy"], fleet=1) is None
    assert "AutoRollbackConfiguration" not in config  # `mlplat up` makes alarms for the stack's environment only
    assert live(QA_ENDPOINT)["models"] == {"primary": f"{QA_ENDPOINT}-v2"}


def test_finished_rollouts_leave_no_idle_variant_config_or_model(aws):
    """After a rollback the candidate's variant sits at weight 0 on paid instances: tidy drops it with a new
    configuration, then deletes the configurations and models no longer in use, and only the platform's."""
    dep = serving(aws, STACK)
    dep.deploy("scorer", 1, environment=QA, strategy="direct")
    dep.tidy("scorer", QA)
    dep.deploy("scorer", 2, environment=QA, strategy="canary", steps=[25, 100], bake_seconds=0)
    assert dep.tidy("scorer", QA)["action"] != "variants"  # a running canary keeps both variants
    assert live(QA_ENDPOINT)["weights"] == {"primary": 75.0, "canary": 25.0}
    dep.rollback("scorer", environment=QA)
    assert live(QA_ENDPOINT)["weights"] == {"primary": 100.0, "canary": 0.0}
    foreign = sm().create_endpoint_config(EndpointConfigName=f"{QA_ENDPOINT}-by-hand", ProductionVariants=[{
        "VariantName": "x", "ModelName": f"{QA_ENDPOINT}-v1", "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1}])
    dropped = dep.tidy("scorer", QA)
    assert dropped["action"] == "variants" and dropped["removed"] == ["canary"]
    state = live(QA_ENDPOINT)
    assert state["weights"] == {"primary": 100.0} and state["models"] == {"primary": f"{QA_ENDPOINT}-v1"}
    deleted = dep.tidy("scorer", QA)
    assert deleted["action"] == "deleted" and f"{QA_ENDPOINT}-v2" in deleted["removed"]
    configs = {c["EndpointConfigName"] for c in sm().list_endpoint_configs(MaxResults=100)["EndpointConfigs"]}
    assert state["config"] in configs and f"{QA_ENDPOINT}-by-hand" in configs and foreign
    assert not {c for c in configs if c.startswith(QA_ENDPOINT[:40]) and c not in (state["config"],
                                                                                    f"{QA_ENDPOINT}-by-hand")}
    models = {m["ModelName"] for m in sm().list_models(MaxResults=100)["Models"]}
    assert f"{QA_ENDPOINT}-v1" in models and f"{QA_ENDPOINT}-v2" not in models
    assert dep.tidy("scorer", QA) == {"action": "none", "removed": []}  # idempotent
    sm().delete_endpoint_config(EndpointConfigName=f"{QA_ENDPOINT}-by-hand")


def test_bad_input_is_refused_and_changes_nothing(aws):
    dep = serving(aws, STACK)
    dep.deploy("scorer", 1, environment=QA, strategy="direct")
    before = live(QA_ENDPOINT)
    history = len(dep.show("scorer", environment=QA)["events"])
    with pytest.raises(RolloutError, match="sum to 100"):
        dep.deploy("scorer", 2, environment=QA, strategy="ab", weights="1=70,2=20")
    with pytest.raises(RolloutError, match="between 1 and 50"):
        dep.deploy("scorer", 2, environment=QA, strategy="shadow", percent=60)
    with pytest.raises(RolloutError, match="last canary step"):
        dep.deploy("scorer", 2, environment=QA, strategy="canary", steps=[10, 50])
    with pytest.raises(StackError, match="not allowed by the stack's spend policy"):
        serving(aws, "gpu-only").deploy("scorer", 2, environment=QA, strategy="direct")
    assert live(QA_ENDPOINT) == before
    assert len(dep.show("scorer", environment=QA)["events"]) == history


def test_missing_or_inconsistent_settings_are_stack_errors(aws):
    with pytest.raises(StackError, match="no AWS account id") as exc:
        serving(aws, "no-account").deploy("scorer", 1, environment=QA, strategy="direct")
    assert "accountId" in exc.value.hint
    with pytest.raises(StackError, match="disagree"):
        serving(aws, "other-region")


def test_cost_report_from_the_ledger_cloudwatch_and_cost_explorer(aws):
    import time

    from mlplat.services.monitoring import cost as cost_mod
    from mlplat_providers.aws.runtime.cost import AwsCost

    spec, ctx = context(aws).stack(STACK), context(aws)
    source = AwsCost(spec, ctx)
    now = time.time()
    ms.put_variant_metrics(ENDPOINT, "primary", invocations=400, latency_ms=8.0)
    deployments = source.deployments(now - 3600, now + 60)
    assert any(d.model == "scorer" and d.instance_type == "ml.m5.large" and d.price_per_hour == 0.115
               for d in deployments)
    usage = {(u.environment, u.version): u for u in source.usage(now - 3600, now + 60)}
    assert usage[("production", 1)].predictions == 400
    assert usage[("production", 1)].busy_seconds == pytest.approx(400 * 0.008)
    period = cost_mod.Period(now - 3600, now + 60, "last hour")
    report = cost_mod.attribute(deployments, usage.values(), period, price_for=spec.serving.price_for,
                                default_instance_type=spec.serving.instance_type, by="team")
    assert report.groups[0].key == "fraud" and report.predictions >= 400 and report.total_usd > 0
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.set_ce_cost_usage({"ResultsByTime": [{"TimePeriod": {"Start": "2026-11-01", "End": "2026-11-02"},
                                                           "Groups": [{"Keys": ["team$fraud"], "Metrics": {
                                                               "UnblendedCost": {"Amount": "12.5", "Unit": "USD"}}}],
                                                           "Total": {}, "Estimated": True}]}, ms.ACCOUNT)
    billed = source.billed(now - 86400, now)
    assert billed["by_team"] == {"fraud": 12.5} and billed["source"] == "aws-cost-explorer"


def test_a_thirty_day_cost_report_reads_the_usage(aws):
    """CloudWatch answers nothing when a query's period does not fit the data's age (a multiple of 300 s
    for data 15 to 63 days old); moto neither ages data nor checks periods. So the report runs as of 20
    days after the traffic (the context's clock), and every GetMetricData request is checked as it is
    sent: against botocore's service model and CloudWatch's period rule (account_rules)."""
    import dataclasses
    import time

    from botocore.validate import ParamValidator

    from mlplat_providers.aws import account_rules
    from mlplat_providers.aws.runtime.cost import AwsCost

    serving(aws, STACK).deploy("scorer", 1, environment=QA, strategy="direct")
    spec = context(aws).stack(STACK)
    started = max(d.started for d in AwsCost(spec, context(aws)).deployments(0, time.time() + 60)
                  if (d.environment, d.version, d.ended) == (QA, 1, None))
    # 20 days and a minute after the deployment started: a window's length is then no multiple of 300 s
    later = started + 20 * 86_400 + 60
    ctx = dataclasses.replace(context(aws), clock=lambda: later)
    source = AwsCost(spec, ctx)
    sent: list[dict] = []
    problems: list[str] = []

    def check(params, model, **_):
        report = ParamValidator().validate(params, model.input_shape)
        problems.extend([report.generate_report()] if report.has_errors() else [])
        problems.extend(account_rules.metric_request_problems(params, later))
        sent.append(params)

    source.aws.client("cloudwatch").meta.events.register("provide-client-params.cloudwatch.GetMetricData", check)
    ms.put_variant_metrics(QA_ENDPOINT, "primary", invocations=250, latency_ms=4.0)  # a direct deploy serves on primary
    usage = {(u.environment, u.version): u for u in source.usage(later - 30 * 86_400, later)}
    assert sent and problems == []
    assert all(q["MetricStat"]["Period"] % 300 == 0 for request in sent for q in request["MetricDataQueries"])
    assert usage[(QA, 1)].predictions >= 250 and usage[(QA, 1)].busy_seconds > 0
