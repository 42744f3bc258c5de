"""Every policy's validator, called as CrossGuard calls it: compliant and violating inputs, a collecting report."""
from __future__ import annotations

import json

import pytest

from mlplat_policies import rules
from tests.policies.graphs import TAGS, aws_graph, local_graph, pipeline, r, replace, without


class Collect:
    """A report_violation that keeps what it is told."""

    def __init__(self):
        self.messages: list[str] = []
        self.urns: list[str | None] = []

    def __call__(self, message: str, urn: str | None = None) -> None:
        self.messages.append(message)
        self.urns.append(urn)


def run(policy: str, graph, **config):
    p = rules.BY_NAME[policy]
    report = Collect()
    settings = {**p.defaults(), **config}
    if p.kind == "resource":
        for resource in graph:
            p.validate(resource, settings, report)
    else:
        p.validate(graph, settings, report)
    return report.messages


@pytest.mark.parametrize("graph", [aws_graph(), local_graph()], ids=["aws", "local"])
@pytest.mark.parametrize("policy", rules.NAMES)
def test_compliant_graphs_pass_every_policy(policy, graph):
    assert run(policy, graph) == []


# --- required-cost-tags --------------------------------------------------------------------


def test_cost_tags_missing_tag_is_named():
    graph = replace(aws_graph(), "endpoint", tags={k: v for k, v in TAGS.items() if k != "cost-center"})
    messages = run("required-cost-tags", graph)
    assert len(messages) == 1 and "cost-center" in messages[0] and "endpoint" in messages[0]


def test_cost_tags_empty_value_and_untagged_taggable_resource():
    graph = replace(aws_graph(), "budget", tags={**TAGS, "owner": " "})
    graph = replace(graph, "artifacts", tags=None)  # a bucket with no tags at all
    messages = run("required-cost-tags", graph)
    assert any("owner" in m and "budget" in m for m in messages)
    assert any("team, cost-center, environment, owner" in m and "artifacts" in m for m in messages)


def test_cost_tags_ignore_untaggable_resources_and_components():
    graph = [r("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "pab", bucket="b"),
             r("mlplat:aws:Serving", "serving")]
    assert run("required-cost-tags", graph) == []


def test_cost_tags_extra_required_tag_from_config():
    assert run("required-cost-tags", aws_graph(), requiredTags=["team", "project"])


def test_cost_tags_gcp_labels_azure_tags_and_cloudcontrol():
    good = [r("gcp:storage/bucket:Bucket", "b", labels=dict(TAGS)),
            r("azure-native:storage:StorageAccount", "s", tags=dict(TAGS)),
            r("aws:cloudcontrol/resource:Resource", "q", typeName="AWS::SageMaker::ModelQualityJobDefinition",
              desiredState=json.dumps({"Tags": [{"Key": k, "Value": v} for k, v in TAGS.items()]}))]
    assert run("required-cost-tags", good) == []
    bad = [r("gcp:storage/bucket:Bucket", "b", labels={"team": "x"}),
           r("aws:cloudcontrol/resource:Resource", "q", desiredState=json.dumps({"Tags": []}))]
    assert len(run("required-cost-tags", bad)) == 2


# --- tracking-required ---------------------------------------------------------------------


def test_tracking_pipeline_not_wired_to_the_stack_server():
    graph = replace(aws_graph(), "train", pipelineDefinition=pipeline(tracking_uri="http://elsewhere:5000").props[
        "pipelineDefinition"])
    messages = run("tracking-required", graph)
    assert len(messages) == 1 and "Train" in messages[0] and "elsewhere" in messages[0]


def test_tracking_pipeline_without_any_server():
    assert "no tracking server" in run("tracking-required", without(aws_graph(), "server"))[0]


def test_tracking_unknown_definition_is_not_judged():
    # During a real preview the definition of a new pipeline is unknown: nothing to say.
    assert run("tracking-required", replace(aws_graph(), "train", pipelineDefinition=None)) == []


def test_tracking_local_runner_pointing_elsewhere_or_untracked():
    messages = run("tracking-required", replace(local_graph(), "sdk", trackingUri="sqlite:///other.db",
                                                requireTrackedRuns=False))
    assert len(messages) == 2


# --- approval-required ---------------------------------------------------------------------


def test_approval_critical_group_registered_as_approved():
    graph = replace(aws_graph(), "train", pipelineDefinition=pipeline(status="Approved").props["pipelineDefinition"])
    messages = run("approval-required", graph)
    assert len(messages) == 1 and "manual approval" in messages[0]


def test_approval_critical_group_without_approval_rule():
    messages = run("approval-required", without(aws_graph(), "approved"))
    assert "EventBridge" in messages[0]


def test_approval_production_endpoint_serving_a_raw_image():
    graph = replace(aws_graph(), "model", primaryContainer={"image": "123.dkr.ecr/x:latest"})
    assert "raw image" in run("approval-required", graph)[0]


def test_approval_for_all_models_flags_low_risk_groups():
    graph = replace(aws_graph(), "group", tags={**TAGS, "risk-tier": "low"})
    graph = replace(graph, "train", pipelineDefinition=pipeline(status="Approved").props["pipelineDefinition"])
    assert run("approval-required", graph) == []
    assert run("approval-required", graph, approvalFor="all")


def test_approval_local_registry():
    assert run("approval-required", replace(local_graph(), "registry", requiredApprovals=3))
    assert run("approval-required", local_graph(), approvalFor="all")  # the low-risk model promotes itself


# --- monitoring-required -------------------------------------------------------------------


def test_monitoring_capture_off():
    graph = replace(aws_graph(), "config", dataCaptureConfig={"enableCapture": False, "initialSamplingPercentage": 0})
    assert "capture" in run("monitoring-required", graph)[0]


def test_monitoring_no_schedule_no_alarms_no_route():
    assert "monitoring schedule" in run("monitoring-required", without(aws_graph(), "sched"))[0]
    assert "no CloudWatch alarms" in run("monitoring-required", without(aws_graph(), "err"))[0]
    assert "notify nobody" in run("monitoring-required", replace(aws_graph(), "err", alarmActions=[]))[0]


def test_monitoring_applies_to_production_only():
    graph = replace(aws_graph(), "endpoint", tags={**TAGS, "environment": "staging"})
    graph = replace(graph, "config", dataCaptureConfig=None)
    assert run("monitoring-required", graph) == []
    assert run("monitoring-required", graph, productionEnvironments=["staging"])


def test_monitoring_local_gateway():
    messages = run("monitoring-required", local_graph(captureSampling=0.0, alertChannels=[]))
    assert len(messages) == 2


# --- safe-rollout ------------------------------------------------------------------------


def _routing(kind, value=None, key="canarySize"):
    cfg = {"type": kind}
    if value is not None:
        cfg[key] = {"type": "CAPACITY_PERCENT", "value": value}
    return {"autoRollbackConfiguration": {"alarms": [{"alarmName": "card-5xx"}]},
            "blueGreenUpdatePolicy": {"trafficRoutingConfiguration": cfg}}


def test_rollout_first_canary_step_above_limit():
    graph = replace(aws_graph(), "endpoint", deploymentConfig=_routing("CANARY", 20))
    assert "20" in run("safe-rollout", graph)[0]
    assert run("safe-rollout", graph, maxFirstCanaryStep=25) == []


def test_rollout_all_at_once_and_linear():
    assert "all at once" in run("safe-rollout", replace(aws_graph(), "endpoint",
                                                        deploymentConfig=_routing("ALL_AT_ONCE")))[0]
    assert run("safe-rollout", replace(aws_graph(), "endpoint",
                                       deploymentConfig=_routing("LINEAR", 10, "linearStepSize"))) == []


def test_rollout_missing_or_dangling_rollback_alarms():
    no_alarms = _routing("CANARY", 1)
    no_alarms["autoRollbackConfiguration"] = {"alarms": []}
    assert "auto-rollback" in run("safe-rollout", replace(aws_graph(), "endpoint", deploymentConfig=no_alarms))[0]
    assert "not defined" in run("safe-rollout", without(aws_graph(), "err"))[0]


def test_rollout_shadow_share():
    config = next(x for x in aws_graph() if x.name == "config")
    heavy = [dict(config.props["shadowProductionVariants"][0], initialVariantWeight=0.6)]
    graph = replace(aws_graph(), "config", shadowProductionVariants=heavy)
    assert "60" in run("safe-rollout", graph)[0]
    assert rules.shadow_percent({"productionVariants": [{"initialVariantWeight": 2}],
                                 "shadowProductionVariants": [{"initialVariantWeight": 1}]}) == 50


def test_rollout_local_gateway():
    assert len(run("safe-rollout", local_graph(canarySteps=[20, 100], shadowPercent=30, autoRollback=False),
                   maxShadowPercent=25)) == 3


# --- storage -------------------------------------------------------------------------------


def test_storage_unencrypted_public_bucket():
    graph = without(aws_graph(), "sse", "pab")
    graph = replace(graph, "artifacts", acl="public-read")
    messages = run("storage", graph)
    assert len(messages) == 3
    assert any("encrypted" in m for m in messages) and any("public ACL" in m for m in messages)


def test_storage_partial_public_access_block_and_kms_requirement():
    graph = replace(aws_graph(), "pab", restrictPublicBuckets=False)
    assert "restrictPublicBuckets" in run("storage", graph)[0]
    aes = replace(aws_graph(), "sse", rules=[{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}])
    assert run("storage", aes) == []
    assert "KMS" in run("storage", aes, requireKms=True)[0]


def test_storage_local_stores():
    assert run("storage", local_graph(), allowHostFilesystemEncryption=False)
    assert "readable" in run("storage", replace(local_graph(), "artifacts", private=False))[0]


# --- spend -------------------------------------------------------------------------------


def test_spend_instance_type_outside_allow_list():
    messages = run("spend", aws_graph(), allowedInstanceTypes=["ml.c5.*"])
    assert len(messages) >= 2 and all("allow-list" in m for m in messages)


def test_spend_gpu_cap():
    graph = replace(aws_graph(), "config", productionVariants=[
        {"variantName": "primary", "modelName": "card-v1", "instanceType": "ml.g5.xlarge", "initialInstanceCount": 3}])
    assert run("spend", graph) == []  # 3 <= default cap 4
    assert "GPU" in run("spend", graph, maxGpuInstances=2)[0]
    assert rules.is_gpu("ml.p4d.24xlarge") and rules.is_gpu("ml.g6.xlarge") and not rules.is_gpu("ml.m5.large")


def test_spend_budget_required():
    assert "no budget" in run("spend", without(aws_graph(), "budget"))[0]
    assert "no budget" in run("spend", without(local_graph(), "budget"))[0]
    assert run("spend", without(aws_graph(), "budget"), requireBudget=False) == []
    assert "notifies nobody" in run("spend", replace(aws_graph(), "budget", notifications=[]))[0]


# --- database ------------------------------------------------------------------------------


def test_database_unencrypted_or_encryption_left_unset():
    assert "not encrypted at rest (storageEncrypted is off)" in run("database", replace(
        aws_graph(), "ledger", storageEncrypted=False))[0]
    # RDS's default for a new database is unencrypted: leaving the switch out is a finding, not a pass
    assert "storageEncrypted is unset" in run("database", replace(aws_graph(), "ledger", storageEncrypted=None))[0]


def test_database_publicly_accessible():
    messages = run("database", replace(aws_graph(), "ledger", publiclyAccessible=True))
    assert len(messages) == 1 and "publicly accessible" in messages[0] and "ledger" in messages[0]


def test_database_literal_or_unmanaged_master_password():
    literal = run("database", replace(aws_graph(), "ledger", manageMasterUserPassword=None, password="hunter22"))
    assert len(literal) == 1 and "in password" in literal[0] and "manageMasterUserPassword" in literal[0]
    write_only = run("database", replace(aws_graph(), "ledger", passwordWo="hunter22"))
    assert len(write_only) == 1 and "passwordWo" in write_only[0]
    assert "not set" in run("database", replace(aws_graph(), "ledger", manageMasterUserPassword=None))[0]
    assert run("database", replace(aws_graph(), "ledger", manageMasterUserPassword=None),
               requireManagedPassword=False) == []


def test_database_replicas_inherit_encryption_and_credentials():
    replica = r("aws:rds/instance:Instance", "replica", tags=TAGS, replicateSourceDb="fraud-ledger")
    assert run("database", [replica]) == []
    assert "storageEncrypted is off" in run("database", [r("aws:rds/instance:Instance", "replica", tags=TAGS,
                                                           replicateSourceDb="fraud-ledger", storageEncrypted=False)])[0]


def test_database_clusters_are_held_to_the_same_rules():
    cluster = r("aws:rds/cluster:Cluster", "aurora", tags=TAGS, engine="aurora-postgresql", storageEncrypted=True,
                manageMasterUserPassword=True)
    assert run("database", [cluster]) == []
    messages = run("database", [r("aws:rds/cluster:Cluster", "aurora", tags=TAGS, masterPassword="x" * 12)])
    assert len(messages) == 2 and any("masterPassword" in m for m in messages)


def test_database_findings_through_evaluate_are_mandatory_and_point_at_the_resource():
    findings = [f for f in rules.evaluate(replace(aws_graph(), "ledger", publiclyAccessible=True, storageEncrypted=False))
                if f.policy == "database"]
    assert len(findings) == 2 and {f.level for f in findings} == {rules.MANDATORY}
    assert {f.resource_name for f in findings} == {"ledger"}
