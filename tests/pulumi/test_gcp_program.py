"""The GCP program under Pulumi's mocks answering GCP ids and invokes: the recorded graph, component by
component, the service rules over it, and the bad inputs the program names."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import json

import pytest

from mlplat.errors import StackError
from mlplat.pulumi_support import run_offline
from mlplat.stack import load_stack
from mlplat_policies import rules
from mlplat_providers.gcp import labels as gl
from mlplat_providers.gcp import plan as gp
from mlplat_providers.gcp import service_rules as sr
from mlplat_providers.gcp.offline import GcpOfflineCloud, project_number
from tests.conftest import REPO, run_cli, write_project

pytestmark = pytest.mark.pulumi

STACK_TEXT = (REPO / "stacks" / "Pulumi.search-staging.yaml").read_text()


def run_program(spec):
    from mlplat_providers.gcp.components import program

    return run_offline(lambda: program(spec), project="mlplat", stack=spec.name, region=spec.provider.region,
                       cloud=GcpOfflineCloud(spec.provider.project, spec.provider.region))


@pytest.fixture(scope="module")
def search():
    return load_stack("search-staging", REPO)


@pytest.fixture(scope="module")
def records(search):
    return run_program(search)


def of(records, type_):
    return [r for r in records if r.type == type_]


def label_param(type_: str) -> str | None:
    """The label argument pulumi-gcp's class for ``type_`` takes (independent of the policy's table)."""
    module_name, cls = type_.split(":")[1].split("/")[0], type_.split(":")[2]
    module = importlib.import_module(f"pulumi_gcp.{module_name}")
    params = inspect.signature(getattr(module, cls)._internal_init).parameters
    return "userLabels" if "user_labels" in params else "labels" if "labels" in params else None


def stack_variant(tmp_path, name: str, old: str, new: str):
    assert old in STACK_TEXT
    root = write_project(tmp_path / name, {name: STACK_TEXT.replace(old, new)})
    return root


def test_every_labelable_resource_carries_the_normalised_cost_tags(search, records):
    expected = {**gl.labels_from_tags(search.tags.as_dict()), "mlplat-managed": "true"}
    assert expected["owner"] == "search-ml_at_example_com" and expected["cost-center"] == "cc-2077"
    checked = 0
    for record in (r for r in records if r.custom):
        param = label_param(record.type)
        if record.type == "gcp:sql/databaseInstance:DatabaseInstance":
            assert record.inputs["settings"]["userLabels"] == expected
            checked += 1
        elif param is not None:
            assert record.inputs.get(param, {}) | {} and {k: record.inputs[param].get(k) for k in expected} == expected, \
                record.name
            assert rules.tags_of(rules.Resource(record.type, record.name, record.inputs)).get("team") == "search"
            checked += 1
    assert checked >= 18


def test_labelable_table_agrees_with_pulumi_gcp(records):
    from mlplat_policies.taggable_gcp import LABELABLE_GCP

    for record in records:
        if record.custom:
            assert LABELABLE_GCP.get(record.type) == label_param(record.type), record.type


def test_components_use_mlplat_gcp_tokens_and_parent_every_child(records):
    components = {r.urn: r for r in records if not r.custom}
    assert {r.type for r in components.values()} == {f"mlplat:gcp:{t}" for t in (
        "TeamPlatform", "ProjectServices", "Identity", "Storage", "Artifacts", "Tracking", "ControlPlane", "Serving",
        "Monitoring", "FeatureStore", "Cost")}
    for record in records:
        if record.custom:
            parent = components.get(record.parent)
            assert parent is not None and parent.type != "mlplat:gcp:TeamPlatform", record.name
            assert record.name.startswith(parent.name), (record.name, parent.name)


def test_the_program_passes_the_service_rules(search, records):
    assert sr.program_problems(records, project=search.provider.project) == []


def test_service_rules_fail_a_wrong_program(search, records):
    def broken(type_, **changes):
        record = of(records, type_)[0]
        return dataclasses.replace(record, inputs={**record.inputs, **changes})

    bad = [
        broken("gcp:storage/bucket:Bucket", name="google-artifacts"),
        broken("gcp:serviceaccount/account:Account", accountId="ml"),
        broken("gcp:projects/iAMMember:IAMMember", role="roles/editor"),
        broken("gcp:vertex/aiFeatureOnlineStore:AiFeatureOnlineStore", name="9-online"),
        broken("gcp:cloudrunv2/service:Service", name="x" * 50),
        broken("gcp:vertex/aiEndpoint:AiEndpoint", labels={"Owner": "a@b.c"}),
        broken("gcp:monitoring/alertPolicy:AlertPolicy", conditions=[{"displayName": "cpu", "conditionThreshold": {
            "filter": 'metric.type="compute.googleapis.com/instance/cpu/utilization"'}}]),
    ]
    problems = sr.program_problems(bad, project=search.provider.project)
    assert len(problems) == len(bad), problems
    for needle in ("starts with 'goog'", "6 to 30", "basic role", "not starting with a digit", "1 to 49",
                   "label key 'Owner'", "published neither by Vertex AI"):
        assert any(needle in p for p in problems), (needle, problems)


def test_mocks_answer_gcp_ids_and_invokes(search, records):
    endpoint = of(records, "gcp:vertex/aiEndpoint:AiEndpoint")[0]
    model = gp.stack_plan(search).models[0]
    assert endpoint.outputs["id"] == f"projects/acme-search-ml/locations/europe-west4/endpoints/{model.endpoint_id}"
    assert len(model.endpoint_id) == 9 and not model.endpoint_id.startswith("0")  # endpoints.create: at most 9 digits
    account = of(records, "gcp:serviceaccount/account:Account")[0]
    assert account.outputs["email"].endswith("@acme-search-ml.iam.gserviceaccount.com")
    members = {r.inputs["member"] for r in of(records, "gcp:projects/iAMMember:IAMMember")}
    assert all(m.startswith("serviceAccount:ml-search-staging-") for m in members)
    budget = of(records, "gcp:billing/budget:Budget")[0]
    assert budget.inputs["budgetFilter"]["projects"] == [f"projects/{project_number('acme-search-ml')}"]
    assert not any("arn:aws" in json.dumps(r.outputs, default=str) for r in records)


def test_mocks_answer_the_client_config_and_project_invokes():
    import pulumi
    import pulumi_gcp as gcp

    def program():
        config = gcp.organizations.get_client_config_output()
        project = gcp.organizations.get_project_output()
        gcp.storage.Bucket("b", name=pulumi.Output.concat(config.project, "-", project.number), location=config.region)

    records = run_offline(program, project="mlplat", stack="t", cloud=GcpOfflineCloud("acme-search-ml", "europe-west4"))
    assert records[0].inputs == {"name": f"acme-search-ml-{project_number('acme-search-ml')}", "location": "europe-west4"}


def test_server_may_act_as_the_platform_account_only(records):
    acts = of(records, "gcp:serviceaccount/iAMMember:IAMMember")
    assert [(m.inputs["role"], m.inputs["member"]) for m in acts] == [
        ("roles/iam.serviceAccountUser", "serviceAccount:ml-search-staging-server@acme-search-ml.iam.gserviceaccount.com")]
    assert acts[0].inputs["serviceAccountId"].endswith("ml-search-staging-platform@acme-search-ml.iam.gserviceaccount.com")
    bucket_members = {m.inputs["member"].split("@")[0] for m in of(records, "gcp:storage/bucketIAMMember:BucketIAMMember")}
    assert bucket_members == {"serviceAccount:ml-search-staging-platform", "serviceAccount:ml-search-staging-server"}


def test_bucket_is_uniform_private_versioned_and_cmek_when_set(tmp_path, records):
    bucket = of(records, "gcp:storage/bucket:Bucket")[0].inputs
    assert bucket["uniformBucketLevelAccess"] is True and bucket["publicAccessPrevention"] == "enforced"
    assert bucket["versioning"] == {"enabled": True} and not bucket.get("encryption")
    key = "projects/acme-kms/locations/europe-west4/keyRings/ml/cryptoKeys/search"
    root = stack_variant(tmp_path, "cmek", "    billingAccount:", f"    cmekKeyName: {key}\n    billingAccount:")
    cmek = run_program(load_stack("cmek", root))
    assert of(cmek, "gcp:storage/bucket:Bucket")[0].inputs["encryption"] == {"defaultKmsKeyName": key}
    assert of(cmek, "gcp:vertex/aiEndpoint:AiEndpoint")[0].inputs["encryptionSpec"] == {"kmsKeyName": key}
    assert all(r.inputs.get("kmsKeyName") == key for r in of(cmek, "gcp:artifactregistry/repository:Repository"))


def test_service_accounts_get_predefined_roles_only(records):
    roles = {r.inputs["role"] for r in records if "role" in r.inputs}
    assert roles and not roles & set(sr.BASIC_ROLES)
    assert all(sr.role_problem(role) is None for role in roles)
    assert {r.inputs["format"] for r in of(records, "gcp:artifactregistry/repository:Repository")} == {"DOCKER", "KFP"}
    assert len(of(records, "gcp:projects/service:Service")) == len(gp.SERVICES)
    assert all(r.inputs["disableOnDestroy"] is False for r in of(records, "gcp:projects/service:Service"))


def test_endpoint_logs_to_a_created_table_and_leaves_traffic_to_the_runtime(search, records):
    endpoint = of(records, "gcp:vertex/aiEndpoint:AiEndpoint")[0]
    assert endpoint.ignore_changes == ["trafficSplit"] and "trafficSplit" not in endpoint.inputs
    logging = endpoint.inputs["predictRequestResponseLoggingConfig"]
    table = of(records, "gcp:bigquery/table:Table")
    uri = f"bq://acme-search-ml.{gp.stack_plan(search).request_dataset}.search_model_requests"
    assert logging == {"enabled": True, "samplingRate": 1.0, "bigqueryDestination": {"outputUri": uri}}
    assert any(t.inputs["tableId"] == "search_model_requests" for t in table)
    assert [c["name"] for c in json.loads(next(t for t in table if t.inputs["tableId"] == "search_model_requests")
                                          .inputs["schema"])] == [c["name"] for c in gp.REQUEST_LOG_SCHEMA]


def test_alert_policies_watch_only_published_metrics_and_notify(records):
    policies = of(records, "gcp:monitoring/alertPolicy:AlertPolicy")
    assert policies
    for policy in policies:
        types = [t for c in policy.inputs["conditions"] for t in sr.filter_metric_types(c["conditionThreshold"]["filter"])]
        assert types and all(sr.metric_type_problem(t) is None for t in types), types
        assert policy.inputs["notificationChannels"]
    assert any(t.startswith(sr.PLATFORM_METRIC_PREFIX) for p in policies for c in p.inputs["conditions"]
               for t in sr.filter_metric_types(c["conditionThreshold"]["filter"]))
    channels = of(records, "gcp:monitoring/notificationChannel:NotificationChannel")
    assert channels[0].inputs["labels"] == {"email_address": "search-ml@example.com"}
    dashboard = json.loads(of(records, "gcp:monitoring/dashboard:Dashboard")[0].inputs["dashboardJson"])
    assert len(dashboard["mosaicLayout"]["tiles"]) == 3


def test_control_plane_has_no_password_and_is_private(records):
    instance = of(records, "gcp:sql/databaseInstance:DatabaseInstance")[0].inputs
    assert instance["settings"]["ipConfiguration"] == {"ipv4Enabled": True, "sslMode": "ENCRYPTED_ONLY",
                                                       "authorizedNetworks": []}
    assert {"name": "cloudsql.iam_authentication", "value": "on"} in instance["settings"]["databaseFlags"]
    assert "rootPassword" not in instance
    user = of(records, "gcp:sql/user:User")[0].inputs
    assert user["type"] == "CLOUD_IAM_SERVICE_ACCOUNT" and "password" not in user
    services = of(records, "gcp:cloudrunv2/service:Service")
    assert {s.inputs["name"] for s in services} == {"mlplat-search-staging-server", "mlplat-search-staging-tracking"}
    for service in services:
        assert service.inputs["ingress"] == "INGRESS_TRAFFIC_INTERNAL"
        containers = service.inputs["template"]["containers"]
        assert containers[1]["args"][0] == "--auto-iam-authn"
        assert containers[1]["args"][-1] == "acme-search-ml:europe-west4:mlplat-search-staging-ledger"


def test_feature_store_and_budget(records):
    group = of(records, "gcp:vertex/aiFeatureGroup:AiFeatureGroup")[0].inputs
    assert group["bigQuery"]["bigQuerySource"]["inputUri"].startswith("bq://acme-search-ml.")
    assert group["bigQuery"]["entityIdColumns"] == ["entity_id"]
    assert of(records, "gcp:vertex/aiFeatureGroupFeature:AiFeatureGroupFeature")[0].inputs["name"] == "first_seen"
    view = of(records, "gcp:vertex/aiFeatureOnlineStoreFeatureview:AiFeatureOnlineStoreFeatureview")[0].inputs
    assert view["featureRegistrySource"]["featureGroups"][0]["featureIds"] == ["first_seen"]
    budget = of(records, "gcp:billing/budget:Budget")[0].inputs
    assert budget["billingAccount"] == "01A2B3-C4D5E6-F7A8B9"
    assert budget["budgetFilter"]["labels"] == {"team": "search"}
    assert budget["amount"] == {"specifiedAmount": {"currencyCode": "USD", "units": "3000"}}
    assert budget["allUpdatesRule"]["monitoringNotificationChannels"]


def test_policy_pack_passes_the_program_and_fails_a_wrong_one(search, records):
    graph = [rules.Resource(r.type, r.name, r.inputs, r.urn, r.parent) for r in records]
    assert [f for f in rules.evaluate(graph) if f.level == "mandatory"] == []
    unlabelled = [dataclasses.replace(g, props={**g.props, "labels": {}}) if g.type == "gcp:storage/bucket:Bucket"
                  else g for g in graph if g.type != "gcp:billing/budget:Budget"]
    findings = {(f.policy, f.message) for f in rules.evaluate(unlabelled) if f.level == "mandatory"}
    assert ("spend", "the stack defines no budget") in findings
    assert any(policy == "required-cost-tags" and msg.startswith("gcp:storage/bucket:Bucket") for policy, msg in findings)


def test_a_production_stack_passes_the_pack_and_protects_its_data(tmp_path):
    text = STACK_TEXT.replace("environment: staging", "environment: production")
    root = write_project(tmp_path / "prod", {"prod": text})
    spec = load_stack("prod", root)
    records = run_program(spec)
    graph = [rules.Resource(r.type, r.name, r.inputs, r.urn, r.parent) for r in records]
    assert [f.message for f in rules.evaluate(graph) if f.level == "mandatory"] == []
    instance = of(records, "gcp:sql/databaseInstance:DatabaseInstance")[0].inputs
    assert instance["deletionProtection"] is True and instance["settings"]["availabilityType"] == "REGIONAL"
    assert all(t.inputs["deletionProtection"] for t in of(records, "gcp:bigquery/table:Table"))
    # without an alert route the production endpoint fails monitoring-required
    silent = [g for g in graph if g.type != "gcp:monitoring/notificationChannel:NotificationChannel"]
    silent = [rules.Resource(g.type, g.name, {**g.props, "notificationChannels": []}, g.urn, g.parent)
              if g.type == "gcp:monitoring/alertPolicy:AlertPolicy" else g for g in silent]
    assert any("notify nobody" in f.message for f in rules.evaluate(silent) if f.policy == "monitoring-required")


def test_preview_offline_prints_the_tree():
    result = run_cli("preview", "--stack", "search-staging", "--offline", cwd=REPO)
    assert result.returncode == 0, result.stderr
    for text in ("mlplat:gcp:TeamPlatform", "gcp:vertex/aiEndpoint:AiEndpoint", "traffic owned by the runtime",
                 "gcp:billing/budget:Budget", "Nothing was created"):
        assert text in result.stdout, text


def test_up_without_the_pulumi_cli_says_how_to_install_it(tmp_path):
    env = {"PATH": "/usr/bin:/bin"}  # no pulumi on PATH
    result = run_cli("up", "--stack", "search-staging", "--yes", cwd=REPO, env=env)
    assert result.returncode == 7, result.stderr
    assert "the pulumi CLI is not installed" in result.stderr and "get.pulumi.com" in result.stderr


@pytest.mark.parametrize("key", ["project", "region", "billingAccount"])
def test_a_missing_setting_is_named(tmp_path, key):
    line = {"project": "    project: acme-search-ml\n", "region": "    region: europe-west4\n",
            "billingAccount": "    billingAccount: 01A2B3-C4D5E6-F7A8B9\n"}[key]
    root = stack_variant(tmp_path, "missing", line, "")
    with pytest.raises(StackError) as info:
        load_stack("missing", root)
    assert f"mlplat:provider.{key}: missing required key" in str(info.value)


def test_a_label_value_that_cannot_be_normalised_is_named(tmp_path):
    root = stack_variant(tmp_path, "badlabel", "owner: search-ml@example.com", 'owner: "研究チーム"')
    with pytest.raises(StackError) as info:
        load_stack("badlabel", root)
    assert "mlplat:tags.owner" in str(info.value) and "cannot be a GCP label value" in str(info.value)


def test_plan_refuses_a_stack_without_billing_account_even_when_built_by_hand(search):
    provider = search.provider.model_construct(**{**search.provider.__dict__, "billing_account": ""})
    spec = search.model_copy(update={"provider": provider})
    with pytest.raises(StackError, match=r"no mlplat:provider.billingAccount"):
        gp.stack_plan(spec)
