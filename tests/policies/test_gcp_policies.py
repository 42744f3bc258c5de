"""The policy pack over GCP resources: the generated labelable-type table, and each policy passing the GCP
program's graph and failing a wrong one."""
from __future__ import annotations

import pytest

from mlplat_policies import generate_tables, rules
from mlplat_policies.taggable_gcp import LABELABLE_GCP

LABELS = {"team": "search", "cost-center": "cc-2077", "environment": "production", "owner": "search-ml_at_example_com"}
ENDPOINT_ID = "2731932457"


def res(type_, logical, **props):
    return rules.Resource(type_, logical, props, urn=f"urn:{logical}")


def run(policy: str, graph, **config) -> list[str]:
    found = []
    chosen = rules.BY_NAME[policy]
    settings = {**chosen.defaults(), **config}
    if chosen.kind == "resource":
        for resource in graph:
            chosen.validate(resource, settings, lambda message, urn=None: found.append(message))
    else:
        chosen.validate(graph, settings, lambda message, urn=None: found.append(message))
    return found


def gcp_graph(**over):
    """A production GCP stack as the program records it (the parts the policies read)."""
    filt = (f'metric.type="aiplatform.googleapis.com/prediction/online/error_count" AND '
            f'resource.type="aiplatform.googleapis.com/Endpoint" AND resource.label.endpoint_id="{ENDPOINT_ID}"')
    graph = {
        "bucket": res("gcp:storage/bucket:Bucket", "bucket", name="b", labels=dict(LABELS),
                      uniformBucketLevelAccess=True, publicAccessPrevention="enforced", versioning={"enabled": True}),
        "endpoint": res("gcp:vertex/aiEndpoint:AiEndpoint", "endpoint", name=ENDPOINT_ID, labels=dict(LABELS),
                        predictRequestResponseLoggingConfig={"enabled": True, "samplingRate": 1.0,
                                                             "bigqueryDestination": {"outputUri": "bq://p.d.t"}}),
        "alert": res("gcp:monitoring/alertPolicy:AlertPolicy", "alert", userLabels=dict(LABELS),
                     notificationChannels=["projects/p/notificationChannels/1"],
                     conditions=[{"displayName": "errors", "conditionThreshold": {"filter": filt}}]),
        "channel": res("gcp:monitoring/notificationChannel:NotificationChannel", "channel", type="email",
                       labels={"email_address": "a@example.com"}, userLabels=dict(LABELS)),
        "budget": res("gcp:billing/budget:Budget", "budget", billingAccount="01A2B3-C4D5E6-F7A8B9",
                      budgetFilter={"labels": {"team": "search"}},
                      allUpdatesRule={"monitoringNotificationChannels": ["projects/p/notificationChannels/1"]}),
        "sql": res("gcp:sql/databaseInstance:DatabaseInstance", "sql", name="ledger", settings={
            "userLabels": dict(LABELS), "ipConfiguration": {"ipv4Enabled": True, "sslMode": "ENCRYPTED_ONLY",
                                                            "authorizedNetworks": []}}),
        "serving": res("mlplat:gcp:Serving", "serving", endpoints=[{
            "displayName": "e", "machineType": "n1-standard-4", "canarySteps": [1, 10, 50, 100], "shadowPercent": 0,
            "labels": dict(LABELS)}]),
    }
    for key, props in over.items():
        if props is None:
            graph.pop(key)
        else:
            old = graph[key]
            graph[key] = rules.Resource(old.type, old.name, {**old.props, **props}, old.urn)
    return list(graph.values())


def test_labelable_gcp_table_is_current():
    current = generate_tables.labelable_gcp()
    assert current == LABELABLE_GCP, "policies/taggable_gcp.py is stale; run `python -m mlplat_policies.generate_tables`"
    assert LABELABLE_GCP["gcp:monitoring/notificationChannel:NotificationChannel"] == "userLabels"
    assert LABELABLE_GCP["gcp:storage/bucket:Bucket"] == "labels"


def test_reader_prefers_user_labels():
    source = '''
class Channel(pulumi.CustomResource):
    def _internal_init(__self__,
                 resource_name: str,
                 opts=None,
                 labels: pulumi.Input[Optional[Mapping[str, str]]] = None,
                 user_labels: pulumi.Input[Optional[Mapping[str, str]]] = None,
                 __props__=None):
        super(Channel, __self__).__init__(
            'gcp:demo/channel:Channel',
            resource_name, __props__, opts)

class Plain(pulumi.CustomResource):
    def _internal_init(__self__,
                 resource_name: str,
                 opts=None,
                 __props__=None):
        __props__.__dict__["effective_labels"] = None
        super(Plain, __self__).__init__(
            'gcp:demo/plain:Plain',
            resource_name, __props__, opts)
'''
    assert generate_tables._labelable_tokens(source) == {"gcp:demo/channel:Channel": "userLabels"}


def test_the_gcp_graph_passes_every_policy():
    for policy in ("required-cost-tags", "monitoring-required", "safe-rollout", "storage", "spend", "database"):
        assert run(policy, gcp_graph()) == [], policy


def test_cost_tags_read_the_label_property_of_each_type():
    assert run("required-cost-tags", gcp_graph(alert={"userLabels": {}}))
    assert run("required-cost-tags", gcp_graph(sql={"settings": {"ipConfiguration": {"sslMode": "ENCRYPTED_ONLY"}}}))
    # a notification channel's `labels` are its configuration, not cost labels
    assert run("required-cost-tags", gcp_graph(channel={"userLabels": {}}))


@pytest.mark.parametrize("over,needle", [
    ({"bucket": {"uniformBucketLevelAccess": False}}, "uniform bucket-level access"),
    ({"bucket": {"publicAccessPrevention": "inherited"}}, "public access prevention"),
])
def test_storage_fails_a_bucket_that_can_be_public(over, needle):
    assert any(needle in m for m in run("storage", gcp_graph(**over)))


def test_storage_fails_a_public_member_and_wants_cmek_when_required():
    graph = gcp_graph() + [res("gcp:storage/bucketIAMMember:BucketIAMMember", "m", bucket="b",
                               role="roles/storage.objectViewer", member="allUsers")]
    assert any("is public" in m for m in run("storage", graph))
    assert any("customer-managed" in m for m in run("storage", gcp_graph(), requireKms=True))
    assert run("storage", gcp_graph(bucket={"encryption": {"defaultKmsKeyName": "projects/k"}}), requireKms=True) == []


@pytest.mark.parametrize("over,needle", [
    ({"endpoint": {"predictRequestResponseLoggingConfig": {"enabled": False}}}, "does not log requests"),
    ({"alert": None}, "has no alert policy"),
    ({"alert": {"notificationChannels": []}}, "notify nobody"),
    ({"alert": {"conditions": [{"conditionThreshold": {"filter": f'metric.type="compute.googleapis.com/instance/'
                                                                 f'cpu/utilization" AND endpoint_id="{ENDPOINT_ID}"'}}]}},
     "neither Vertex AI nor the platform publishes"),
])
def test_monitoring_fails_an_unwatched_endpoint(over, needle):
    assert any(needle in m for m in run("monitoring-required", gcp_graph(**over)))


def test_monitoring_skips_non_production_endpoints():
    staging = {**LABELS, "environment": "staging"}
    assert run("monitoring-required", gcp_graph(endpoint={"labels": staging}, alert=None)) == []


@pytest.mark.parametrize("over,needle", [
    ({"budget": None}, "defines no budget"),
    ({"budget": {"budgetFilter": {}}}, "not filtered on the team's label"),
    ({"budget": {"allUpdatesRule": {"disableDefaultIamRecipients": True}}}, "notifies nobody"),
])
def test_spend_wants_a_team_budget_that_notifies(over, needle):
    assert any(needle in m for m in run("spend", gcp_graph(**over)))


def test_spend_reads_gcp_machine_types():
    declared = [{"displayName": "e", "machineType": "a2-highgpu-1g", "canarySteps": [1, 100], "labels": dict(LABELS)}]
    messages = run("spend", gcp_graph(serving={"endpoints": declared}), maxGpuInstances=0)
    assert any("not in the allow-list" in m for m in messages) and any("GPU instance" in m for m in messages)


def test_safe_rollout_reads_the_declared_canary():
    declared = [{"displayName": "e", "canarySteps": [100], "shadowPercent": 60, "labels": dict(LABELS)}]
    messages = run("safe-rollout", gcp_graph(serving={"endpoints": declared}))
    assert any("all at once" in m for m in messages) and any("mirrors 60" in m for m in messages)


@pytest.mark.parametrize("over,needle", [
    ({"sql": {"settings": {"userLabels": LABELS, "ipConfiguration": {
        "sslMode": "ENCRYPTED_ONLY", "authorizedNetworks": [{"value": "0.0.0.0/0"}]}}}}, "publicly accessible"),
    ({"sql": {"settings": {"userLabels": LABELS, "ipConfiguration": {"sslMode": "ALLOW_UNENCRYPTED_AND_ENCRYPTED"}}}},
     "unencrypted connections"),
    ({"sql": {"rootPassword": "hunter2"}}, "literal root password"),
])
def test_database_fails_an_open_cloud_sql(over, needle):
    assert any(needle in m for m in run("database", gcp_graph(**over)))


def test_database_fails_a_user_with_a_password():
    user = res("gcp:sql/user:User", "u", name="mlplat", instance="ledger", password="secret")
    assert any("literal password" in m for m in run("database", [user]))
    assert run("database", [res("gcp:sql/user:User", "u", type="CLOUD_IAM_SERVICE_ACCOUNT")]) == []
