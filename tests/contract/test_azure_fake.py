"""The fake ARM / Azure ML REST API through the runtime's session and azure-ai-ml, and its documented rules."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.contract.azure_fake import rules
from tests.contract.azure_fake.fixtures import WORKSPACE, azure_fake, azure_server  # noqa: F401  (fixtures)
from tests.contract.azure_support import azure_session, azure_stack_text

ENDPOINT = "fraud-9f44ad0a"
A_EP_WRITE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/write"


# --- rules (each cites its documentation page in rules.py) --------------------------------------

@pytest.mark.parametrize("name, ok", [("fraud-9f44ad0a", True), ("ab", False), ("1fraud", False), ("fraud-", False),
                                      ("a" * 32, True), ("a" * 33, False), ("fraud_1", False)])
def test_online_names(name, ok):
    assert (rules.endpoint_name(name) is None) is ok
    assert (rules.deployment_name(name) is None) is ok


def test_traffic_sums_to_100_over_existing_deployments():
    deployments = {"blue", "green"}
    assert rules.traffic({}, deployments) is None
    assert rules.traffic({"blue": 90, "green": 10}, deployments) is None
    assert "sum to 100" in rules.traffic({"blue": 90, "green": 20}, deployments)
    assert "does not exist" in rules.traffic({"red": 100}, deployments)
    assert "integer" in rules.traffic({"blue": 99.5, "green": 0.5}, deployments)


def test_mirror_traffic_at_most_50_and_never_to_live():
    deployments = {"blue", "green", "shadow"}
    live = {"blue": 100}
    assert rules.mirror_traffic({"green": 50}, live, deployments) is None
    assert "50 %" in rules.mirror_traffic({"green": 30, "shadow": 21}, live, deployments)
    assert "live traffic" in rules.mirror_traffic({"blue": 10}, live, deployments)
    assert "does not exist" in rules.mirror_traffic({"red": 10}, live, deployments)


def test_tags_limits():
    assert rules.tags({f"k{i}": "v" for i in range(50)}) is None
    assert "Too many tags" in rules.tags({f"k{i}": "v" for i in range(51)})
    assert "longer than 256" in rules.tags({"k": "v" * 257})
    assert "longer than 512" in rules.tags({"k" * 513: "v"})


def test_model_version_immutable_but_tags_and_stage_change():
    old = {"modelUri": "https://a/b", "properties": {"digest": "x"}, "tags": {}, "stage": "Development"}
    assert rules.model_version_update(old, {**old, "tags": {"approved": "true"}, "stage": "Production"}) is None
    assert "immutable" in rules.model_version_update(old, {**old, "properties": {"digest": "y"}})
    assert "immutable" in rules.model_version_update(old, {**old, "modelUri": "https://a/c"})


# --- the fake through azure-ai-ml ------------------------------------------------------------

@pytest.fixture
def spec(tmp_path, azure_fake):  # noqa: F811
    from mlplat.stack import load_stack
    from tests.conftest import write_project

    project = write_project(tmp_path / "project", {"team": azure_stack_text()})
    return load_stack("team", project)


def _endpoint(session, **kwargs):
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    return ManagedOnlineEndpoint(name=session.endpoint_name("fraud"), auth_mode="key", tags=session.tags, **kwargs)


def _deployment(session, version):
    from azure.ai.ml.entities import ManagedOnlineDeployment

    return ManagedOnlineDeployment(name=session.deployment_name("fraud", version),
                                   endpoint_name=session.endpoint_name("fraud"), model=f"azureml:fraud:{version}",
                                   instance_type="Standard_DS3_v2", instance_count=1,
                                   environment="azureml:AzureML-sklearn-1.5:1", tags=session.tags)


def _model(version, digest="d1"):
    from azure.ai.ml.entities import Model

    return Model(name="fraud", version=str(version), path=f"https://acct.blob.core.windows.net/models/fraud/{version}",
                 type="custom_model", tags={"mlplat-managed": "true"}, properties={"mlplat.digest": digest})


def test_models_versions_immutable_properties(spec, azure_fake):  # noqa: F811
    from mlplat.errors import ExternalError

    session = azure_session(spec)
    ml = session.ml()
    created = session.call(ml.models.create_or_update, _model(1))
    assert created.properties["mlplat.digest"] == "d1"
    again = _model(1)
    again.tags = {"mlplat-managed": "true", "approved": "true"}
    assert session.call(ml.models.create_or_update, again).tags["approved"] == "true"
    with pytest.raises(ExternalError, match="immutable"):
        session.call(ml.models.create_or_update, _model(1, digest="d2"), what="re-registering")
    assert session.call(ml.models.get, "fraud", "1").properties["mlplat.digest"] == "d1"


def test_endpoint_deployments_traffic_and_mirror_through_lro(spec, azure_fake):  # noqa: F811
    from mlplat.errors import ExternalError

    session = azure_session(spec)
    ml = session.ml()
    for version in (1, 2):
        session.call(ml.models.create_or_update, _model(version))
    endpoint = session.run(ml.online_endpoints.begin_create_or_update, _endpoint(session), what="endpoint")
    assert endpoint.provisioning_state.lower() == "succeeded" and endpoint.tags["mlplat-managed"] == "true"
    for version in (1, 2):
        deployment = session.run(ml.online_deployments.begin_create_or_update, _deployment(session, version),
                                 what="deployment")
        assert deployment.provisioning_state.lower() == "succeeded"
    endpoint.traffic = {"fraud-v1": 100}
    endpoint.mirror_traffic = {"fraud-v2": 20}
    endpoint = session.run(ml.online_endpoints.begin_create_or_update, endpoint, what="traffic")
    assert endpoint.traffic == {"fraud-v1": 100} and endpoint.mirror_traffic == {"fraud-v2": 20}
    stored = azure_fake.arm.endpoints[(session.workspace_id.lower(), ENDPOINT)]["properties"]
    assert stored["traffic"] == {"fraud-v1": 100} and stored["provisioningState"] == "Succeeded"
    # refused as Azure refuses them, the endpoint left as it was
    for traffic, mirror, message in (({"fraud-v1": 90, "fraud-v2": 20}, {}, "sum to 100"),
                                     ({"fraud-v1": 100}, {"fraud-v2": 60}, "50 %"),
                                     ({"fraud-v1": 50, "fraud-v2": 50}, {"fraud-v2": 10}, "live traffic"),
                                     ({"fraud-v9": 100}, {}, "does not exist")):
        endpoint.traffic, endpoint.mirror_traffic = traffic, mirror
        with pytest.raises(ExternalError, match=message):
            session.run(ml.online_endpoints.begin_create_or_update, endpoint, what="traffic")
    assert azure_fake.arm.endpoints[(session.workspace_id.lower(), ENDPOINT)]["properties"]["traffic"] == \
        {"fraud-v1": 100}
    assert sorted(d.name for d in ml.online_deployments.list(ENDPOINT)) == ["fraud-v1", "fraud-v2"]


def test_failed_deployment_ends_failed(spec, azure_fake):  # noqa: F811
    from mlplat.errors import ExternalError

    session = azure_session(spec)
    ml = session.ml()
    session.call(ml.models.create_or_update, _model(1))
    session.run(ml.online_endpoints.begin_create_or_update, _endpoint(session), what="endpoint")
    azure_fake.arm.fail_deployment("fraud-v1")
    with pytest.raises(ExternalError, match="crashed"):
        session.run(ml.online_deployments.begin_create_or_update, _deployment(session, 1), what="deployment")
    assert ml.online_deployments.get("fraud-v1", ENDPOINT).provisioning_state.lower() == "failed"


def test_authorization_failed_names_the_action(spec, azure_fake):  # noqa: F811
    from mlplat_providers.azure.runtime.session import AzurePermissionDenied

    session = azure_session(spec)
    azure_fake.arm.deny(A_EP_WRITE)
    with pytest.raises(AzurePermissionDenied) as caught:
        session.run(session.ml().online_endpoints.begin_create_or_update, _endpoint(session), what="endpoint")
    assert caught.value.details["action"] == A_EP_WRITE and A_EP_WRITE in str(caught.value)
    assert caught.value.exit_code == 6


def test_throttling_retried_after_retry_after_then_one_clear_error(spec, azure_fake):  # noqa: F811
    from mlplat_providers.azure.runtime.session import AzureUnavailable

    read = "Microsoft.MachineLearningServices/workspaces/models/versions/read"
    sleeps: list[float] = []
    session = azure_session(spec, sleeps=sleeps, attempts=4)
    session.call(session.ml().models.create_or_update, _model(1))
    azure_fake.arm.throttle(read, times=2)
    # azure-core's own retry policy honours Retry-After first; ours then waits what the answer names
    session.ml()._service_client_08_2023_preview._config.retry_policy.total_retries = 0
    assert session.call(session.ml().models.get, "fraud", "1").version == "1"
    assert sleeps == [7.0, 7.0]
    azure_fake.arm.throttle(read, times=10)
    with pytest.raises(AzureUnavailable, match="429 4 times"):
        session.call(session.ml().models.get, "fraud", "1", what="reading fraud v1")


def _raw(url, method="PUT", body=None, token=True):
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": "Bearer t"} if token else {})})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bodies_read_with_the_sdk_models(spec, azure_fake):  # noqa: F811
    session = azure_session(spec)
    base = f"{azure_fake.http.url}{session.workspace_id}/onlineEndpoints"
    good = {"location": "westeurope", "properties": {"authMode": "Key"}}
    status, body = _raw(f"{base}/fraud-x1y2?api-version=2022-02-01-preview", body={**good, "bogus": 1})
    assert status == 400 and "bogus" in body["error"]["message"]
    status, body = _raw(f"{base}/fraud-x1y2?api-version=2022-02-01-preview",
                        body={**good, "properties": {"authMode": "Key", "trafic": {}}})
    assert status == 400 and "trafic" in body["error"]["message"]
    status, body = _raw(f"{base}/fraud-x1y2", body=good)
    assert status == 400 and body["error"]["code"] == "MissingApiVersionParameter"
    status, body = _raw(f"{base}/fraud-x1y2?api-version=2022-02-01-preview", body=good, token=False)
    assert status == 401
    status, body = _raw(f"{base}/x?api-version=2022-02-01-preview", body=good)
    assert status == 400 and "3-32" in body["error"]["message"]
    status, body = _raw(f"{base}/fraud-x1y2?api-version=2022-02-01-preview",
                        body={**good, "tags": {f"t{i}": "v" for i in range(51)}})
    assert status == 400 and "Too many tags" in body["error"]["message"]
    assert not azure_fake.arm.endpoints
    status, body = _raw(f"{base}/fraud-x1y2?api-version=2022-02-01-preview", body=good)
    assert status == 201 and body["properties"]["provisioningState"] == "Creating"
