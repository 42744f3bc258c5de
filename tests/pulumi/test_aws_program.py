"""The AWS program under Pulumi's mocks: the recorded resource graph, component by component.

Each test runs a fresh program (``run_offline`` gives every run its own event loop
and root stack), so nothing leaks between tests.
"""
from __future__ import annotations

import importlib
import inspect
import json

import pytest

from mlplat.pulumi_support import ProgramFailed, run_offline
from mlplat.stack import REQUIRED_TAGS, load_stack
from mlplat_policies import rules
from mlplat_policies.taggable_aws import TAGGABLE_AWS
from tests.conftest import REPO, write_project

pytestmark = pytest.mark.pulumi


@pytest.fixture
def fraud():
    return load_stack("fraud-prod", REPO)


def run_program(spec):
    from mlplat_providers.aws.components import program

    return run_offline(lambda: program(spec), project="mlplat", stack=spec.name, region=spec.provider.region)


def of(records, type_):
    return [r for r in records if r.type == type_]


def accepts_tags(type_: str) -> bool:
    """Whether pulumi-aws's class for ``type_`` takes a ``tags`` argument (independent of the policy's table)."""
    service, cls = type_.split(":")[1].split("/")[0], type_.split(":")[2]
    module = importlib.import_module(f"pulumi_aws.{service}")
    return "tags" in inspect.signature(getattr(module, cls)._internal_init).parameters


def test_every_taggable_resource_carries_the_cost_tags(fraud):
    records = run_program(fraud)
    custom = [r for r in records if r.custom]
    assert len(custom) > 40
    expected = fraud.tags.as_dict()
    checked = 0
    for record in custom:
        resource = rules.Resource(record.type, record.name, record.inputs, record.urn)
        if accepts_tags(record.type) or record.type == rules.T_CLOUDCONTROL:
            tags = rules.tags_of(resource)
            assert {k: tags.get(k) for k in expected} == expected, record.name
            checked += 1
    assert checked >= 35


def test_taggable_table_agrees_with_pulumi_aws(fraud):
    for record in run_program(fraud):
        if record.custom and record.type.startswith("aws:") and record.type != rules.T_CLOUDCONTROL:
            assert (record.type in TAGGABLE_AWS) == accepts_tags(record.type), record.type


def test_components_use_mlplat_tokens_and_parent_every_child(fraud):
    records = run_program(fraud)
    components = {r.urn: r for r in records if not r.custom}
    assert {r.type for r in components.values()} == {f"mlplat:aws:{t}" for t in (
        "TeamPlatform", "Tracking", "Alerts", "Registry", "Pipelines", "Serving", "Monitoring", "FeatureStore", "Cost",
        "ControlPlane")}
    for record in records:
        if record.custom:
            parent = components.get(record.parent)
            assert parent is not None and parent.type != "mlplat:aws:TeamPlatform", record.name
            assert record.name.startswith(parent.name), (record.name, parent.name)


def test_artifact_bucket_is_encrypted_versioned_and_private(fraud):
    records = run_program(fraud)
    bucket = of(records, "aws:s3/bucket:Bucket")[0]
    name = bucket.inputs["bucket"]
    sse = of(records, rules.T_SSE[0])[0].inputs
    assert sse["bucket"] == name
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    assert of(records, "aws:s3/bucketVersioning:BucketVersioning")[0].inputs["versioningConfiguration"] == {"status": "Enabled"}
    pab = of(records, rules.T_PAB)[0].inputs
    assert all(pab[flag] is True for flag in rules.PAB_FLAGS)
    server = of(records, rules.T_TRACKING)[0].inputs
    assert server["artifactStoreUri"] == f"s3://{name}/mlflow"


def declared(records) -> list[dict]:
    """The endpoints the Serving component declares (the runtime creates them on the first deploy)."""
    serving = [r for r in records if r.type == "mlplat:aws:Serving"]
    assert len(serving) == 1
    return list(serving[0].inputs["endpoints"])


def test_an_empty_registry_ups_cleanly_nothing_references_what_does_not_exist_yet(fraud):
    """No SageMaker model, endpoint configuration or endpoint in the program: they would point at model
    package version 1 before any version exists (and SageMaker deploys a versioned package only once it is
    Approved). No input anywhere names a model package version."""
    import re

    records = run_program(fraud)
    assert not of(records, rules.T_MODEL) and not of(records, rules.T_ENDPOINT_CONFIG)
    assert not of(records, rules.T_ENDPOINT)
    package_version = re.compile(r":model-package/[^/\"]+/\d+")
    for record in records:
        assert not package_version.search(json.dumps(record.inputs, default=str)), record.name
    assert {e["endpointName"] for e in declared(records)} == {
        "mlplat-fraud-production-card-scorer", "mlplat-fraud-production-merchant-tagger"}


def test_data_capture_is_one_json_prefix_shared_with_the_runtime(fraud):
    from mlplat_providers.aws import plan as p
    from mlplat_providers.aws.service_rules import data_capture_problem

    records = run_program(fraud)
    bucket = of(records, "aws:s3/bucket:Bucket")[0].inputs["bucket"]
    for endpoint in declared(records):
        capture = endpoint["dataCapture"]
        runtime = p.capture_config(fraud, bucket, endpoint["model"], fraud.environment)
        assert capture["enableCapture"] is True and capture["initialSamplingPercentage"] == 100
        assert capture["destinationS3Uri"] == runtime["DestinationS3Uri"] == \
            f"s3://{bucket}/data-capture/{endpoint['model']}/production"
        assert capture["captureContentTypeHeader"]["jsonContentTypes"] == ["application/json"]
        assert data_capture_problem(runtime) is None


def test_rollback_alarms_watch_the_variants_the_runtime_creates(fraud):
    """Rules over the recorded graph: each rollback alarm names its endpoint and a variant the runtime creates
    (``slots``), is one the runtime sends and reads, notifies, and does not call missing data OK."""
    from mlplat.services.rollout import Endpoint, Route
    from mlplat_providers.aws.runtime.serving import AwsServing, slots

    records = run_program(fraud)
    alarms = {r.inputs["name"]: r.inputs for r in of(records, rules.T_ALARM)}
    topic = of(records, rules.T_TOPIC)[0].outputs["arn"]
    canary = Endpoint("m", "production", "canary", [Route("canary", 2, 10), Route("stable", 1, 90)], None, 1, None)
    created = set(slots(canary))
    assert created == {"primary", "canary"}
    for endpoint in declared(records):
        names = endpoint["rollbackAlarms"]
        assert 1 <= len(names) <= 10 and len(names) == 4
        for name in names:
            alarm = alarms[name]
            assert alarm["dimensions"]["EndpointName"] == endpoint["endpointName"]
            assert alarm["dimensions"]["VariantName"] in created
            assert alarm["namespace"] == "AWS/SageMaker"
            assert alarm["alarmActions"] == [topic] and alarm["treatMissingData"] == "missing"
        assert {alarms[n]["dimensions"]["VariantName"] for n in names} == created
        runtime = object.__new__(AwsServing)  # the runtime's own naming; no session or ledger needed
        runtime.spec = fraud
        assert runtime._rollback_alarms(endpoint["endpointName"]) == names


def test_dashboard_body_names_every_endpoint_and_runtime_variant(fraud):
    records = run_program(fraud)
    body = of(records, "aws:cloudwatch/dashboard:Dashboard")[0].inputs["dashboardBody"]
    names = [e["endpointName"] for e in declared(records)]
    assert names and all(name in body for name in names)
    variants = {m[5] for w in json.loads(body)["widgets"] for m in (w["properties"].get("metrics") or [])
                if m[0] == "AWS/SageMaker"}
    assert variants == {"primary", "canary", "shadow"}


def test_every_endpoint_is_monitored_by_the_platforms_pass_and_no_schedule_names_a_missing_endpoint(fraud):
    """The program creates no endpoint, so it creates no Model Monitor schedule (one would read an endpoint
    that does not exist at `up`); the declared endpoints are monitored by the platform's own pass."""
    records = run_program(fraud)
    graph = [rules.Resource(r.type, r.name, r.inputs, r.urn) for r in records]
    assert of(records, rules.T_SCHEDULE) == [] and of(records, rules.T_DQ_JOB) == []
    assert rules._monitored_endpoints(graph) == {e["endpointName"] for e in declared(records)}
    assert {e["monitorSchedule"] for e in declared(records)} == {fraud.monitoring.schedule}


def test_a_stack_opting_into_model_monitor_still_gets_no_schedule_from_the_program(tmp_path):
    """The runtime creates the opt-in schedule once the endpoint exists; `up` never names a missing endpoint."""
    opted = load_stack("fraud-prod", write_project(tmp_path / "p", {"fraud-prod": (
        REPO / "stacks" / "Pulumi.fraud-prod.yaml").read_text().replace(
        "    kind: aws\n", "    kind: aws\n    modelMonitor: {enabled: true}\n", 1)}))
    assert opted.provider.model_monitor.enabled
    records = run_program(opted)
    assert of(records, rules.T_SCHEDULE) == [] and of(records, rules.T_DQ_JOB) == []


def test_the_drift_alarm_watches_the_metric_the_monitoring_pass_publishes(fraud):
    from mlplat_providers.aws import plan as p

    records = run_program(fraud)
    drift = [r.inputs for r in of(records, rules.T_ALARM) if r.inputs["name"].endswith("-drift")]
    assert len(drift) == len(declared(records)) == 2
    for alarm in drift:
        model = next(e["model"] for e in declared(records) if alarm["name"] == f"{e['endpointName']}-drift")
        assert (alarm["namespace"], alarm["metricName"]) == ("mlplat/Models", "FeatureDriftMaxPSI")
        assert alarm["dimensions"] == {"Model": model, "Environment": "production", "Variant": "primary"}
        assert alarm["threshold"] == fraud.monitoring.drift.psi
        assert alarm["period"] == p.platform_alarm_period(fraud) and alarm["period"] % 60 == 0
        assert alarm["treatMissingData"] == "missing"


def test_every_alarm_watches_a_metric_something_publishes(fraud):
    from mlplat_providers.aws import plan as p
    from mlplat_providers.aws.service_rules import alarm_metric_problem

    alarms = [r.inputs for r in of(run_program(fraud), rules.T_ALARM)]
    assert len(alarms) == 10
    publishers = p.publishers(fraud)
    assert [alarm_metric_problem(a["namespace"], a["metricName"], a["dimensions"], publishers) for a in alarms] \
        == [None] * len(alarms)
    # the alarm this program used to make: nothing publishes it
    assert "nothing publishes" in alarm_metric_problem("aws/sagemaker/Endpoints/data-metrics",
                                                       "feature_baseline_drift_total", {"EndpointName": "e"},
                                                       publishers)


def test_dashboard_drift_widgets_read_the_platforms_metric(fraud):
    from mlplat_providers.aws import plan as p
    from mlplat_providers.aws.service_rules import alarm_metric_problem

    body = json.loads(of(run_program(fraud), "aws:cloudwatch/dashboard:Dashboard")[0].inputs["dashboardBody"])
    lines = [m for w in body["widgets"] for m in (w["properties"].get("metrics") or []) if m[0] == "mlplat/Models"]
    assert {(m[1], m[3], m[7]) for m in lines} == {("FeatureDriftMaxPSI", model, variant)
                                                  for model in ("card-scorer", "merchant-tagger")
                                                  for variant in ("primary", "canary", "shadow")}
    for m in lines:
        dims = dict(zip(m[2:-1:2], m[3:-1:2]))
        assert alarm_metric_problem(m[0], m[1], dims, p.publishers(fraud)) is None


def test_registry_pipeline_and_approval_rule_per_model(fraud):
    records = run_program(fraud)
    groups = {r.inputs["modelPackageGroupName"]: r.inputs["tags"]["risk-tier"] for r in of(records, rules.T_GROUP)}
    assert groups == {"fraud-card-scorer": "critical", "fraud-merchant-tagger": "low"}
    assert len(of(records, "aws:sagemaker/modelPackageGroupPolicy:ModelPackageGroupPolicy")) == 2
    patterns = [json.loads(r.inputs["eventPattern"]) for r in of(records, rules.T_EVENT_RULE)]
    assert sorted(p["detail"]["ModelPackageGroupName"][0] for p in patterns) == sorted(groups)
    assert len(of(records, "aws:cloudwatch/eventTarget:EventTarget")) == 2


def test_budget_and_cost_allocation_tags(fraud, tmp_path):
    records = run_program(fraud)
    budget = of(records, rules.T_BUDGET)[0].inputs
    assert budget["limitAmount"] == "5000.00" and budget["costFilters"][0]["values"] == ["user:team$fraud"]
    # activation is account-wide and fails on a new account: only a stack that opts in activates the tags
    assert of(records, "aws:costexplorer/costAllocationTag:CostAllocationTag") == []
    opted = load_stack("fraud-prod", write_project(tmp_path / "p", {"fraud-prod": (
        REPO / "stacks" / "Pulumi.fraud-prod.yaml").read_text().replace(
        "    kind: aws\n", "    kind: aws\n    activateCostAllocationTags: true\n", 1)}))
    tags = of(run_program(opted), "aws:costexplorer/costAllocationTag:CostAllocationTag")
    assert {r.inputs["tagKey"] for r in tags} == set(REQUIRED_TAGS)


def test_the_recorded_graph_passes_the_policy_pack(fraud):
    graph = [rules.Resource(r.type, r.name, r.inputs, r.urn, r.parent) for r in run_program(fraud)]
    assert rules.evaluate(graph, fraud.policy.as_settings()) == []


def test_a_raising_program_fails_alone_and_the_next_run_is_clean(fraud):
    import pulumi_aws as aws

    def broken():
        aws.s3.Bucket("half-done", tags={"team": "x"})
        raise RuntimeError("boom in the program")

    with pytest.raises(ProgramFailed, match="boom in the program"):
        run_offline(broken, project="mlplat", stack="broken")
    records = run_program(fraud)
    assert "half-done" not in {r.name for r in records}
    assert len(run_program(fraud)) == len(records)


# --- contract: every component on its own --------------------------------------------------------


def _components(plan):
    from mlplat_providers.aws import components as c

    role, bucket, topic, account, server = ("arn:aws:iam::123456789012:role/r", "bucket", "arn:aws:sns:x:1:t",
                                            "123456789012", "arn:aws:sagemaker:x:1:mlflow-tracking-server/s")
    return {
        "Tracking": lambda: c.Tracking("t", c.TrackingArgs(plan)),
        "Alerts": lambda: c.Alerts("a", c.AlertsArgs(plan, account)),
        "Registry": lambda: c.Registry("r", c.RegistryArgs(plan, account)),
        "Pipelines": lambda: c.Pipelines("p", c.PipelinesArgs(plan, account, role, server, {})),
        "Serving": lambda: c.Serving("s", c.ServingArgs(plan, account, role, bucket, topic)),
        "Monitoring": lambda: c.Monitoring("m", c.MonitoringArgs(plan, role, bucket, [])),
        "FeatureStore": lambda: c.FeatureStore("f", c.FeatureStoreArgs(plan, role, bucket)),
        "Cost": lambda: c.Cost("c", c.CostArgs(plan, topic)),
    }


@pytest.mark.parametrize("component", ["Tracking", "Alerts", "Registry", "Pipelines", "Serving", "Monitoring",
                                       "FeatureStore", "Cost"])
def test_contract_every_child_of_every_component_is_tagged(component, fraud):
    from mlplat_providers.aws.plan import stack_plan

    plan = stack_plan(fraud)
    records = run_offline(_components(plan)[component], project="mlplat", stack=f"contract-{component}")
    root = [r for r in records if not r.custom]
    assert [r.type for r in root] == [f"mlplat:aws:{component}"]
    children = [r for r in records if r.custom]
    assert children, component
    for child in children:
        assert child.parent == root[0].urn, child.name
        if accepts_tags(child.type) or child.type == rules.T_CLOUDCONTROL:
            tags = rules.tags_of(rules.Resource(child.type, child.name, child.inputs))
            missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
            assert not missing, f"{component}: {child.type} {child.name} lacks {missing}"


def test_pulumi_yaml_main_builds_the_selected_stack(fraud):
    """`main: mlplat/pulumi_main.py` is what the Pulumi CLI runs; under mocks it builds the same graph."""
    import yaml

    from mlplat.pulumi_main import build

    assert yaml.safe_load((REPO / "Pulumi.yaml").read_text())["main"] == "mlplat/pulumi_main.py"
    records = run_offline(lambda: build("fraud-prod", REPO), project="mlplat", stack="fraud-prod")
    assert sorted(r.name for r in records) == sorted(r.name for r in run_program(fraud))


def test_pulumi_main_refuses_a_local_stack():
    from mlplat.errors import MlplatError
    from mlplat.pulumi_main import build

    with pytest.raises(MlplatError, match="has no Pulumi program"):
        build("dev", REPO)


# --- alerts are delivered, IAM allows what it means to -------------------------------------------------------------


def test_alarms_and_budgets_can_publish_to_the_alert_topic(fraud):
    from mlplat.pulumi_support import FAKE_ACCOUNT
    from mlplat_providers.aws import account_rules

    records = run_program(fraud)
    topic = of(records, rules.T_TOPIC)[0]
    # the stack holds more than one key (the control plane's database has its own); find the topic's by its ARN
    keys = [k for k in of(records, "aws:kms/key:Key") if k.outputs["arn"] == topic.inputs["kmsMasterKeyId"]]
    assert len(keys) == 1 and topic.inputs["kmsMasterKeyId"] != account_rules.AWS_MANAGED_SNS_KEY
    key = keys[0]
    policy = of(records, "aws:sns/topicPolicy:TopicPolicy")[0].inputs["policy"]
    assert account_rules.topic_publisher_problems(
        kms_master_key_id=topic.inputs["kmsMasterKeyId"], topic_policy=policy, key_policy=key.inputs["policy"],
        account=FAKE_ACCOUNT, key_rotation=key.inputs["enableKeyRotation"]) == []
    granted = [s for s in json.loads(policy)["Statement"] if s["Resource"] == topic.outputs["arn"]]
    assert {s["Principal"]["Service"] for s in granted} == set(account_rules.ALERT_PUBLISHERS)
    aliases = [a.inputs for a in of(records, "aws:kms/alias:Alias") if a.inputs.get("targetKeyId") == key.outputs["id"]]
    assert [a["name"] for a in aliases] == [f"alias/{topic.inputs['name']}"]
    # every alarm and the budget notify that topic
    assert {tuple(a.inputs["alarmActions"]) for a in of(records, rules.T_ALARM) if a.inputs.get("alarmActions")} >= {
        (topic.outputs["arn"],)}
    notifications = of(records, rules.T_BUDGET)[0].inputs["notifications"]
    assert all(n["subscriberSnsTopicArns"] == [topic.outputs["arn"]] for n in notifications)


def test_every_inline_role_policy_keeps_the_iam_rules(fraud):
    from mlplat_providers.aws import account_rules

    policies = {r.name: r.inputs["policy"] for r in of(run_program(fraud), "aws:iam/rolePolicy:RolePolicy")}
    assert len(policies) >= 2
    for name, document in policies.items():
        assert account_rules.policy_problems(document) == [], name
        assert account_rules.create_action_problems(document) == [], name
        assert account_rules.pass_role_problems(document) == [], name


# --- pipelines: built by the runtime's compiler, runnable as declared ------------------------------


def test_every_pipeline_the_program_declares_can_run(fraud):
    """Each definition keeps SageMaker's rules (property files have their outputs, conditions read a path the
    gate's report has, references resolve, parameters are read) and runs only mlplat commands that exist."""
    from mlplat_providers.aws import pipeline_compiler as pc
    from mlplat_providers.aws import service_rules

    pipelines = of(run_program(fraud), rules.T_PIPELINE)
    assert len(pipelines) == 2 * len(fraud.governance.models)
    for record in pipelines:
        definition = json.loads(record.inputs["pipelineDefinition"])
        assert service_rules.pipeline_definition_problems(definition) == [], record.name
        assert pc.command_problems(definition) == [], record.name
        for step in service_rules._all_steps(definition["Steps"]):
            for file in step.get("PropertyFiles") or []:
                assert file["FilePath"] == pc.EVALUATION_FILE and file["OutputName"] == pc.EVALUATION_OUTPUT
            for condition in (step.get("Arguments") or {}).get("Conditions") or []:
                assert condition["LeftValue"]["Std:JsonGet"]["Path"] == pc.GATE_PATH


def test_pipeline_jobs_reach_the_ledger_through_the_programs_control_plane(fraud):
    records = run_program(fraud)
    dns = next(r for r in records if r.type == "aws:lb/loadBalancer:LoadBalancer").outputs["dnsName"]
    for record in of(records, rules.T_PIPELINE):
        definition = json.loads(record.inputs["pipelineDefinition"])
        for step in definition["Steps"]:
            if step["Type"] in ("Training", "Processing"):
                assert step["Arguments"]["Environment"]["MLPLAT_CONTROL_PLANE_URL"] == f"http://{dns}", record.name


def test_the_approval_rule_starts_the_deploy_pipeline_with_a_parameter_it_reads(fraud):
    records = run_program(fraud)
    deploy = {r.outputs["arn"]: json.loads(r.inputs["pipelineDefinition"]) for r in of(records, rules.T_PIPELINE)
              if r.inputs["pipelineName"].endswith("-deploy")}
    targets = of(records, "aws:cloudwatch/eventTarget:EventTarget")
    assert targets and all(t.inputs["arn"] in deploy for t in targets)
    for target in targets:
        declared = {p["Name"] for p in deploy[target.inputs["arn"]]["Parameters"]}
        sent = {p["name"]: p["value"] for p in target.inputs["sagemakerPipelineTarget"]["pipelineParameterLists"]}
        assert sent == {"ModelVersion": "approved"} and set(sent) <= declared


def test_eventbridge_scheduler_may_start_only_the_stacks_pipelines(fraud):
    from mlplat_providers.aws import account_rules
    from mlplat_providers.aws.plan import scheduler_role_name, stack_plan

    plan = stack_plan(fraud)
    records = run_program(fraud)
    [role] = [r for r in of(records, "aws:iam/role:Role") if r.inputs["name"] == scheduler_role_name(plan)]
    assert json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {
        "Service": ["scheduler.amazonaws.com"]}
    [policy] = [r.inputs["policy"] for r in of(records, "aws:iam/rolePolicy:RolePolicy") if r.name.endswith(
        "-scheduler-role-policy")]
    [statement] = json.loads(policy)["Statement"]
    assert statement["Action"] == "sagemaker:StartPipelineExecution"
    assert statement["Resource"].endswith(f":pipeline/{plan.prefix}-*")
    assert account_rules.policy_problems(policy) == []
