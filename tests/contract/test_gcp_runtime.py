"""The GCP runtime against the fakes: what Vertex AI and Cloud Monitoring refuse, IAM and quota errors,
traffic by deployed-model id, the canary's metrics, shadow refused, unmanaged endpoints left alone."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from tests.contract.gcp_fake.fixtures import PROJECT, REGION, gcp_fake, gcp_servers  # noqa: F401  (fixtures)
from tests.contract.gcp_support import canary_versions, gcp_stack_text, provision_cloud  # noqa: F401
from tests.contract.lifecycle import context

pytestmark = pytest.mark.integration

LOCATION = f"projects/{PROJECT}/locations/{REGION}"


@pytest.fixture
def stack(tmp_path, monkeypatch, gcp_fake):  # noqa: F811
    from tests.conftest import write_project

    project = write_project(tmp_path / "project", {"team": gcp_stack_text()})
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(project))
    monkeypatch.setenv("MLPLAT_USER", "ds@example.com")
    monkeypatch.chdir(project)
    ctx = context(project)
    spec = ctx.stack("team")
    provision_cloud(spec, gcp_fake)
    return SimpleNamespace(spec=spec, ctx=ctx, fake=gcp_fake)


def session(spec, sleeps=None):
    from mlplat_providers.gcp.runtime.session import GcpSession, RetryPolicy

    return GcpSession(spec, retry=RetryPolicy(attempts=4, sleep=(sleeps.append if sleeps is not None else
                                                                 lambda _s: None)))


def upload(gcp, model_id: str, *, parent: bool = False, labels=None) -> str:
    from google.cloud import aiplatform_v1 as v1

    request = v1.UploadModelRequest(parent=gcp.location, model=v1.Model(
        display_name=model_id, container_spec={"image_uri": "europe-west4-docker.pkg.dev/p/r/serve:1"},
        labels=labels or {}))
    if parent:
        request.parent_model = f"{gcp.location}/models/{model_id}"
    else:
        request.model_id = model_id
    return gcp.vertex("model").upload_model(request=request).result().model_version_id


def raw(fake, method: str, path: str, body) -> tuple[int, dict]:
    request = urllib.request.Request(fake.http.url + path, method=method, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_requests_are_parsed_into_the_service_types(gcp_fake):  # noqa: F811
    path = f"/v1/{LOCATION}/models:upload"
    status, body = raw(gcp_fake, "POST", path, {"model": {"displayName": "m", "bogusField": 1}})
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT" and "bogusField" in body["error"]["message"]
    status, body = raw(gcp_fake, "POST", path, {"model": {"displayName": "m", "labels": "team=fraud"}})
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    status, body = raw(gcp_fake, "POST", path, {"model": {"displayName": "m", "labels": {"Team": "x"},
                                                          "containerSpec": {"imageUri": "i"}}})
    assert status == 400 and "Label key 'Team'" in body["error"]["message"]
    assert gcp_fake.vertex.models == {}  # nothing stored by a refused request


def test_permission_denied_names_the_iam_permission_and_quota_is_retried(stack):
    from mlplat.errors import ExitCode
    from mlplat_providers.gcp.runtime.session import GcpPermissionDenied, GcpUnavailable

    sleeps: list[float] = []
    gcp = session(stack.spec, sleeps)
    models = gcp.vertex("model")
    stack.fake.vertex.deny("aiplatform.models.list")
    with pytest.raises(GcpPermissionDenied) as denied:
        gcp.call(models.list_models, parent=gcp.location, method="list_models")
    assert denied.value.details["permission"] == "aiplatform.models.list"
    assert "grant aiplatform.models.list" in denied.value.hint and denied.value.exit_code == ExitCode.DENIED
    stack.fake.vertex.allow("aiplatform.models.list")

    stack.fake.vertex.exhaust("aiplatform.models.list", times=2)
    assert list(gcp.call(models.list_models, parent=gcp.location, method="list_models")) == []
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9  # backoff grows (jittered)
    stack.fake.vertex.exhaust("aiplatform.models.list", times=10)
    with pytest.raises(GcpUnavailable, match="RESOURCE_EXHAUSTED to list_models 4 times"):
        gcp.call(models.list_models, parent=gcp.location, method="list_models")


def test_versions_aliases_and_delete_rules(stack):
    from google.api_core import exceptions as gexc

    gcp = session(stack.spec)
    models = gcp.vertex("model")
    assert upload(gcp, "fraud-scorer") == "1" and upload(gcp, "fraud-scorer", parent=True) == "2"
    name = f"{gcp.location}/models/fraud-scorer"
    models.merge_version_aliases(name=f"{name}@2", version_aliases=["production"])
    with pytest.raises(gexc.BadRequest, match="already used by version 2"):
        models.merge_version_aliases(name=f"{name}@1", version_aliases=["production"])
    assert models.get_model(name=f"{name}@production").version_id == "2"
    assert models.get_model(name=name).version_id == "1"  # the default alias stays on the first version
    with pytest.raises(gexc.BadRequest, match="default version alias cannot be removed"):
        models.merge_version_aliases(name=f"{name}@1", version_aliases=["-default"])


def test_a_concurrent_first_registration_adds_a_version(stack, tmp_path, monkeypatch):
    from mlplat_providers.gcp.runtime.registry import GcpModelRegistry

    registry = GcpModelRegistry(stack.spec, session(stack.spec), stack.ctx)
    upload(registry.gcp, registry.model_id("scorer"))  # another process registered it after our look
    monkeypatch.setattr(registry, "run_tags", lambda _run: {"mlplat.code.commit": "abc"})
    real_get = registry.models.get_model

    def missing_then_real(*args, **kwargs):
        from google.api_core import exceptions as gexc

        monkeypatch.setattr(registry.models, "get_model", real_get)
        raise gexc.NotFound("The Model does not exist")

    monkeypatch.setattr(registry.models, "get_model", missing_then_real)
    files = tmp_path / "model"
    files.mkdir()
    (files / "MLmodel").write_text("flavors: {}\n")
    stored = registry.store_version("scorer", "run-1", files, tags={"mlplat.artifact_digest": "sha256:00"})
    assert stored.version == 2 and stored.source.startswith("gs://")
    assert registry.describe_version("scorer", 2).labels["mlplat-managed"] == "true"


def test_serving_applies_traffic_by_deployed_model_id_and_undeploys_the_rest(stack):
    from mlplat_providers.gcp.runtime.serving import GcpServing

    serving = GcpServing(stack.spec, stack.ctx, session(stack.spec))
    model_id = serving.registry.model_id("scorer")
    upload(serving.gcp, model_id, labels=serving.gcp.labels)
    upload(serving.gcp, model_id, parent=True)

    def ledger(*weights: tuple[int, int]):
        return SimpleNamespace(model="scorer", environment="production",
                               routes=[SimpleNamespace(version=v, weight=w) for v, w in weights])

    first = serving.apply(ledger((1, 100)))
    assert first["deployed"] == [1] and list(first["traffic_split"].values()) == [100]
    endpoint = stack.fake.vertex.endpoints[serving.endpoint_name("scorer", "production")]
    assert endpoint.labels["mlplat-managed"] == "true" and endpoint.labels["cost-center"] == "cc-1042"
    canary = serving.apply(ledger((1, 90), (2, 10)))
    described = serving.describe("scorer", "production")
    assert described["weights"] == {"1": 90, "2": 10} and canary["deployed"] == [2]
    back = serving.apply(ledger((1, 100)))
    assert back["undeployed"] == [2] and serving.describe("scorer", "production")["weights"] == {"1": 100}
    assert [d.model_version_id for d in endpoint.deployed_models] == ["1"]


def test_an_endpoint_the_platform_did_not_create_is_left_alone(stack):
    from google.cloud import aiplatform_v1 as v1

    from mlplat.errors import Conflict
    from mlplat_providers.gcp.runtime.serving import GcpServing

    serving = GcpServing(stack.spec, stack.ctx, session(stack.spec))
    serving.endpoints.create_endpoint(parent=serving.gcp.location, endpoint=v1.Endpoint(display_name="theirs"),
                                      endpoint_id=serving.endpoint_id("scorer", "production")).result()
    with pytest.raises(Conflict, match="without the mlplat-managed label"):
        serving.apply(SimpleNamespace(model="scorer", environment="production",
                                      routes=[SimpleNamespace(version=1, weight=100)]))
    assert not stack.fake.vertex.endpoints[serving.endpoint_name("scorer", "production")].deployed_models


def test_inventory_tells_the_platforms_endpoints_apart(stack):
    from google.cloud import aiplatform_v1 as v1

    from mlplat_providers.gcp.runtime.serving import GcpServing

    serving = GcpServing(stack.spec, stack.ctx, session(stack.spec))
    upload(serving.gcp, serving.registry.model_id("scorer"))
    serving.apply(SimpleNamespace(model="scorer", environment="staging", routes=[SimpleNamespace(version=1, weight=100)]))
    serving.endpoints.create_endpoint(parent=serving.gcp.location, endpoint=v1.Endpoint(
        display_name="hand-made", labels={"team": "fraud"})).result()
    found = {e.name.rsplit("/", 1)[1]: e for e in serving.inventory()}
    ours = found[serving.endpoint_id("scorer", "staging")]
    assert ours.platform and ours.model == "scorer" and ours.status == "deployed"
    [theirs] = [e for e in found.values() if not e.platform]
    assert theirs.model is None and theirs.tags == {"team": "fraud"}


def test_shadow_is_refused_naming_the_reason(stack):
    from mlplat.errors import CapabilityNotSupported
    from mlplat_providers.gcp.runtime.serving import GcpServing

    serving = GcpServing(stack.spec, stack.ctx, session(stack.spec))
    with pytest.raises(CapabilityNotSupported) as refused:
        serving.deploy("scorer", 1, environment="production", strategy="shadow", percent=10)
    assert "no traffic mirroring" in refused.value.hint
    assert stack.fake.vertex.endpoints == {}


def test_canary_metrics_are_read_per_deployed_model(stack):
    from mlplat_providers.gcp.runtime.serving import MonitoringCanaryMetrics

    gcp = session(stack.spec)
    fake = stack.fake.monitoring
    fake.feed(project=PROJECT, location=REGION, endpoint_id="123", deployed_model_id="11", at=1_000_060.0,
              requests=120, errors=3, latencies_ms=[4.0] * 19 + [40.0])
    fake.feed(project=PROJECT, location=REGION, endpoint_id="123", deployed_model_id="12", at=1_000_060.0,
              requests=15, latencies_ms=[6.0])
    fake.feed(project=PROJECT, location=REGION, endpoint_id="999", deployed_model_id="11", at=1_000_060.0,
              requests=1000)  # another endpoint's model of the same id is not counted
    source = MonitoringCanaryMetrics(gcp, lambda _m, _e: ("123", {1: "11", 2: "12"}))
    rollout = {"model": "scorer", "environment": "production", "stable_version": 1, "candidate_version": 2,
               "created_at": 1_000_000.0, "step_started_at": 1_000_000.0}
    window = source.window(rollout, 1_000_100.0)
    assert (window.stable.requests, window.stable.errors, window.candidate.requests) == (120, 3, 15)
    assert window.stable.latencies_ms == [40.0] and window.candidate.latencies_ms == [6.0]
    assert source.since(rollout, 1_000_070.0, 1_000_100.0).requests == 0  # nothing after the mark


def test_custom_metric_writes_follow_cloud_monitorings_rules(stack):
    from google.api_core import exceptions as gexc
    from google.cloud import monitoring_v3

    client = session(stack.spec).monitoring()
    series = monitoring_v3.TimeSeries(metric={"type": "custom.googleapis.com/mlplat/drift_psi", "labels": {"m": "s"}},
                                      resource={"type": "global", "labels": {"project_id": PROJECT}})
    for at in (100, 200):
        series.points.append(monitoring_v3.Point(interval={"end_time": {"seconds": at}}, value={"double_value": 0.1}))
    with pytest.raises(gexc.InvalidArgument, match="exactly one point"):
        client.create_time_series(name=f"projects/{PROJECT}", time_series=[series])
    series.points.pop()
    client.create_time_series(name=f"projects/{PROJECT}", time_series=[series])
    with pytest.raises(gexc.InvalidArgument, match="written in order"):
        client.create_time_series(name=f"projects/{PROJECT}", time_series=[series])
