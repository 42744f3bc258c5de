"""AWS's rules for alert topics, IAM documents, metric periods and cost tags, and the AWS program's documents under them.

Each rule is checked on a document or request AWS would refuse (or silently drop) and on the one the
program now generates; the documents the program generated before are kept here as the failing cases.
"""
from __future__ import annotations

import datetime as dt
import json

import pytest

from mlplat.stack import load_stack
from mlplat_providers.aws import account_rules as rules
from mlplat_providers.aws import plan as p
from tests.conftest import REPO, write_project

DAY = 86_400
NOW = 1_796_083_200.0  # 2026-12-01 00:00 UTC
ACCOUNT = "123456789012"


@pytest.fixture
def plan():
    return p.stack_plan(load_stack("fraud-prod", REPO))


def old_platform_role_policy(plan) -> dict:
    """What the program granted the platform role before: SageMaker only on resource tags, no iam:PassRole."""
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": [f"arn:aws:s3:::{plan.bucket}/*"]},
        {"Effect": "Allow", "Action": ["sagemaker:*"], "Resource": "*",
         "Condition": {"StringEquals": {"aws:ResourceTag/team": plan.spec.team}}},
    ]}


# --- IAM grammar ---------------------------------------------------------------------------------------------


def test_policy_grammar_catches_what_iam_refuses():
    assert rules.policy_problems({"Statement": []}) == [
        "the policy's Version is None; use '2012-10-17'", "the policy has no Statement"]
    bad = {"Version": "2012-10-17", "Statement": [
        {"Sid": "a-b", "Effect": "allow", "Action": "s3:GetObject", "NotAction": "s3:PutObject", "Resource": "bucket"},
        {"Sid": "Two", "Effect": "Allow", "Principal": "*", "Action": "GetObject", "Resource": "*",
         "Condition": {"StringEqualz": {"aws:SourceAccount": ACCOUNT}}},
        {"Sid": "Two", "Effect": "Deny", "Action": "s3:*"},
    ]}
    problems = "\n".join(rules.policy_problems(bad))
    for expected in ("Sid 'a-b' may hold only letters and digits", "Effect is 'allow'", "exactly one of Action and NotAction",
                     "resource 'bucket' is neither", "an identity policy names no Principal", "'GetObject' is not an action",
                     "'StringEqualz' is not an IAM condition operator", "Sid 'Two' is used twice", "needs a Resource"):
        assert expected in problems
    assert rules.policy_problems({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sns:Publish", "Resource": "*"}]}, kind="resource") == [
        "statement 0: a resource policy needs a Principal"]
    huge = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": [f"arn:aws:s3:::b/{i:05d}" for i in range(800)]}]}
    assert "an inline role policy may hold 10240" in rules.policy_problems(huge)[0]
    assert rules.policy_problems("{not json")[0].startswith("the policy is not JSON")


def test_condition_operators_with_set_qualifiers_and_if_exists_are_known():
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sagemaker:AddTags", "Resource": "*",
                                                   "Condition": {"ForAllValues:StringLike": {"aws:TagKeys": ["a*"]},
                                                                 "StringEqualsIfExists": {"aws:RequestTag/team": "x"},
                                                                 "Null": {"aws:TagKeys": "false"}}}]}
    assert rules.policy_problems(doc) == []


# --- IAM: creates, tags and passing the role --------------------------------------------------------------------


def test_the_old_policy_denies_every_create_and_passes_no_role(plan):
    old = old_platform_role_policy(plan)
    problems = rules.create_action_problems(old)
    assert len(problems) == 1 and "a resource being created has no tags yet" in problems[0]
    assert "aws:RequestTag/<key> and aws:TagKeys" in problems[0]
    assert rules.pass_role_problems(old) == [
        f"the policy allows {', '.join(sorted(rules.ROLE_PASSING_ACTIONS))}, which pass a role to "
        "sagemaker.amazonaws.com, but not iam:PassRole: grant iam:PassRole on the execution role"]
    # what IAM does with it: the endpoint SageMaker should create is denied, its own team's tag notwithstanding
    endpoint = f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:endpoint/mlplat-fraud-production-card-scorer"
    create = {"aws:RequestTag/team": "fraud", "aws:TagKeys": ["team"]}
    assert not rules.allowed(old, "sagemaker:CreateEndpoint", endpoint, create)


def test_request_tags_without_tag_keys_and_loose_pass_role_are_flagged():
    doc = {"Version": "2012-10-17", "Statement": [
        {"Sid": "Creates", "Effect": "Allow", "Action": ["sagemaker:CreateModel"], "Resource": "*",
         "Condition": {"StringEquals": {"aws:RequestTag/team": "fraud"}}},
        {"Sid": "Pass", "Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"},
    ]}
    assert rules.create_action_problems(doc) == [
        "statement Creates allows sagemaker:CreateModel on aws:requesttag/team without aws:TagKeys: limit the tag keys "
        "a create may send"]
    assert rules.pass_role_problems(doc) == [
        "statement Pass lets the role pass any role: name the execution role's ARN",
        "statement Pass has no iam:PassedToService condition naming sagemaker.amazonaws.com"]
    # presigned URLs act on an existing tracking server: a resource tag condition is right for them
    presigned = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sagemaker:CreatePresignedMlflowTrackingServerUrl", "Resource": "*",
         "Condition": {"StringEquals": {"aws:ResourceTag/team": "fraud"}}}]}
    assert rules.create_action_problems(presigned) == []


def test_the_platform_role_policy_keeps_every_rule(plan):
    doc = json.loads(p.platform_role_policy(plan, ACCOUNT))
    assert rules.policy_problems(doc) == []
    assert rules.create_action_problems(doc) == []
    assert rules.pass_role_problems(doc) == []
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert by_sid["PassPlatformRoleToSageMaker"]["Resource"] == \
        f"arn:aws:iam::{ACCOUNT}:role/mlplat-fraud-production-platform"
    database = p.feature_database(plan)
    assert f"arn:aws:glue:eu-west-1:{ACCOUNT}:table/{database}/*" in by_sid["OfflineFeatureStoreCatalog"]["Resource"]
    assert f"arn:aws:s3:::{plan.bucket}/features/*" in by_sid["OfflineFeatureStoreObjects"]["Resource"]
    assert "logs:CreateLogGroup" in by_sid["SageMakerLogs"]["Action"]


def test_the_platform_role_may_create_with_team_tags_and_act_on_team_resources_only(plan):
    doc = p.platform_role_policy(plan, ACCOUNT)
    sm = f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}"
    tags = sorted(plan.tags)
    create = {"aws:RequestTag/team": "fraud", "aws:TagKeys": tags}
    for action, resource in (("sagemaker:CreateEndpoint", f"{sm}:endpoint/e"), ("sagemaker:CreateModel", f"{sm}:model/m"),
                             ("sagemaker:CreateModelPackageGroup", f"{sm}:model-package-group/fraud-scorer"),
                             ("sagemaker:CreateFeatureGroup", f"{sm}:feature-group/g"), ("sagemaker:AddTags", f"{sm}:model/m")):
        assert rules.allowed(doc, action, resource, create), action
    # another team's tag, an extra tag key, or no tags at all: denied
    assert not rules.allowed(doc, "sagemaker:CreateEndpoint", f"{sm}:endpoint/e", {**create, "aws:RequestTag/team": "ads"})
    assert not rules.allowed(doc, "sagemaker:CreateEndpoint", f"{sm}:endpoint/e", {**create, "aws:TagKeys": [*tags, "x"]})
    assert not rules.allowed(doc, "sagemaker:CreateEndpoint", f"{sm}:endpoint/e", {})
    # existing resources: by their team tag
    assert rules.allowed(doc, "sagemaker:UpdateEndpointWeightsAndCapacities", f"{sm}:endpoint/e", {"aws:ResourceTag/team": "fraud"})
    assert not rules.allowed(doc, "sagemaker:DeleteEndpoint", f"{sm}:endpoint/e", {"aws:ResourceTag/team": "ads"})
    # versions (untagged) of the team's groups, by name; alias tags on the team's groups only
    assert rules.allowed(doc, "sagemaker:CreateModelPackage", f"{sm}:model-package/fraud-scorer/3")
    assert rules.allowed(doc, "sagemaker:UpdateModelPackage", f"{sm}:model-package/fraud-scorer/3")
    assert not rules.allowed(doc, "sagemaker:UpdateModelPackage", f"{sm}:model-package/ads-ranker/3")
    assert rules.allowed(doc, "sagemaker:AddTags", f"{sm}:model-package-group/fraud-scorer",
                         {"aws:TagKeys": ["mlplat:alias:production"]})
    assert not rules.allowed(doc, "sagemaker:AddTags", f"{sm}:model-package-group/fraud-scorer", {"aws:TagKeys": ["team"]})
    # passing itself to SageMaker, and to nothing else
    role = f"arn:aws:iam::{ACCOUNT}:role/mlplat-fraud-production-platform"
    assert rules.allowed(doc, "iam:PassRole", role, {"iam:PassedToService": "sagemaker.amazonaws.com"})
    assert not rules.allowed(doc, "iam:PassRole", role, {"iam:PassedToService": "ec2.amazonaws.com"})
    assert not rules.allowed(doc, "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin",
                             {"iam:PassedToService": "sagemaker.amazonaws.com"})
    # the offline store and the job logs
    assert rules.allowed(doc, "glue:UpdateTable", f"arn:aws:glue:eu-west-1:{ACCOUNT}:table/{p.feature_database(plan)}/t")
    assert rules.allowed(doc, "s3:PutObject", f"arn:aws:s3:::{plan.bucket}/features/fraud/part-0.parquet")
    assert rules.allowed(doc, "logs:CreateLogGroup",
                         f"arn:aws:logs:eu-west-1:{ACCOUNT}:log-group:/aws/sagemaker/TrainingJobs")


def test_without_an_account_id_the_policy_names_any_account(plan):
    doc = json.loads(p.platform_role_policy(plan))
    assert rules.policy_problems(doc) == []
    pass_role = next(s for s in doc["Statement"] if s["Sid"] == "PassPlatformRoleToSageMaker")
    assert pass_role["Resource"] == "arn:aws:iam::*:role/mlplat-fraud-production-platform"


# --- SNS topics and keys ----------------------------------------------------------------------------------------


OLD_TOPIC_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Sid": "AlarmsAndBudgets", "Effect": "Allow",
    "Principal": {"Service": ["cloudwatch.amazonaws.com", "budgets.amazonaws.com"]},
    "Action": "SNS:Publish", "Resource": "arn:aws:sns:eu-west-1:123456789012:t"}]}


def test_a_topic_under_the_aws_managed_key_receives_no_alarm_or_budget():
    problems = rules.topic_publisher_problems(kms_master_key_id="alias/aws/sns", topic_policy=OLD_TOPIC_POLICY)
    assert [q for q in problems if "AWS managed key alias/aws/sns" in q and "can never publish" in q] == [
        problems[1], problems[3]]
    assert "publish for any account" in problems[0] and "publish for any account" in problems[2]


def test_the_alert_key_and_topic_policies_let_every_publisher_deliver():
    topic = "arn:aws:sns:eu-west-1:123456789012:mlplat-fraud-production-alerts"
    key_policy = p.alert_key_policy(ACCOUNT)
    topic_policy = p.alert_topic_policy(topic, ACCOUNT, "eu-west-1")
    assert rules.policy_problems(key_policy, kind="resource") == []
    assert rules.policy_problems(topic_policy, kind="resource") == []
    key = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert rules.topic_publisher_problems(kms_master_key_id=key, topic_policy=topic_policy, key_policy=key_policy,
                                          account=ACCOUNT, key_rotation=True) == []


def test_a_key_missing_a_publisher_or_the_account_or_rotation_is_flagged():
    topic_policy = p.alert_topic_policy("arn:aws:sns:eu-west-1:123456789012:t", ACCOUNT, "eu-west-1")
    only_cloudwatch = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
         "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*"}]}
    problems = rules.topic_publisher_problems(kms_master_key_id="k", topic_policy=topic_policy, key_policy=only_cloudwatch,
                                              account=ACCOUNT, key_rotation=False)
    assert problems == [
        "the topic's key policy does not allow budgets.amazonaws.com kms:Decrypt: its notifications are dropped",
        "the topic's key policy does not allow budgets.amazonaws.com kms:GenerateDataKey: its notifications are dropped",
        f"the key policy does not let account {ACCOUNT} administer the key (kms:*): KMS refuses such a policy, and the "
        "key could not be managed",
        "the topic's key does not rotate: turn on automatic key rotation"]
    # no topic policy grant at all
    assert rules.topic_publisher_problems(kms_master_key_id=None, topic_policy=None) == [
        f"the topic policy does not let {s} publish (SNS:Publish)" for s in rules.ALERT_PUBLISHERS]


# --- metric periods -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("age", "granularity"), [
    (0, 60), (3 * 3600, 60), (15 * DAY - rules.EDGE_MARGIN - 1, 60),
    (15 * DAY - rules.EDGE_MARGIN, 300), (15 * DAY, 300), (15 * DAY + 1, 300), (30 * DAY, 300),
    (63 * DAY - rules.EDGE_MARGIN - 1, 300), (63 * DAY - rules.EDGE_MARGIN, 3600), (63 * DAY + 1, 3600), (400 * DAY, 3600),
])
def test_metric_granularity_follows_the_age_of_the_data(age, granularity):
    assert rules.metric_granularity(NOW - age, NOW) == granularity


@pytest.mark.parametrize("days", [1 / 24, 7, 14.9, 15, 30, 62, 63, 90, 365])
def test_usage_period_covers_the_window_in_one_period_cloudwatch_answers(days):
    start = NOW - days * DAY
    period = rules.usage_period(start, NOW)
    assert period >= days * DAY and period % rules.metric_granularity(start, NOW) == 0
    assert period - days * DAY <= rules.metric_granularity(start, NOW)
    assert rules.metric_period_problem(start, NOW, period) is None


def test_the_old_thirty_day_period_reads_nothing():
    start, end = NOW - 30 * DAY, NOW + 60
    old = max(60, int((end - start) // 60 + 1) * 60)  # what the cost report asked for before
    assert rules.metric_period_problem(start, NOW, old) == (
        f"a period of {old} s over data from 30.0 days ago returns nothing: CloudWatch needs a multiple of 300 s for "
        "data that old")
    assert rules.usage_period(start, NOW, end) % 300 == 0


def test_metric_request_problems_checks_every_query():
    request = {"StartTime": dt.datetime.fromtimestamp(NOW - 20 * DAY, dt.UTC), "MetricDataQueries": [
        {"Id": "a", "MetricStat": {"Period": 600}}, {"Id": "b", "MetricStat": {"Period": 660}},
        {"Id": "c", "Expression": "a * 2"}]}
    problems = rules.metric_request_problems(request, NOW)
    assert len(problems) == 1 and problems[0].startswith("query b: a period of 660 s")


# --- cost allocation tags ----------------------------------------------------------------------------------


def test_cost_allocation_tags_are_opt_in(tmp_path):
    default = load_stack("fraud-prod", REPO)
    assert p.cost_allocation_tags(default) == []
    text = (REPO / "stacks" / "Pulumi.fraud-prod.yaml").read_text().replace(
        "    kind: aws\n", "    kind: aws\n    activateCostAllocationTags: true\n", 1)
    opted = load_stack("fraud-prod", write_project(tmp_path / "p", {"fraud-prod": text}))
    assert p.cost_allocation_tags(opted) == ["team", "cost-center", "environment", "owner"]
    assert rules.cost_allocation_problems(p.cost_allocation_tags(opted)) == []
    assert rules.cost_allocation_problems([]) == ["0 tag keys: one request activates 1 to 20"]
    assert rules.cost_allocation_problems(["aws:createdBy"]) == ["tag key 'aws:createdBy' begins with 'aws:', which AWS reserves"]
