"""The azure runtime against the fake ARM: the registry's versions, lineage, approvals and aliases."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from tests.contract.azure_fake.fixtures import azure_fake, azure_server  # noqa: F401  (fixtures)
from tests.contract.azure_support import azure_session, azure_stack_text, team_stack
from tests.contract.lifecycle import context


@pytest.fixture
def stack(tmp_path, monkeypatch, azure_fake):  # noqa: F811
    return team_stack(tmp_path, monkeypatch, azure_fake)


def _files(tmp_path, name):
    files = tmp_path / name
    files.mkdir()
    (files / "MLmodel").write_text("flavors: {}\n")
    (files / "model.pkl").write_bytes(b"\x00weights")
    return files


def test_registry_versions_lineage_approvals_and_aliases(stack, tmp_path, monkeypatch):
    from mlplat.errors import IntegrityError
    from mlplat_providers.azure.runtime.registry import AzureModelRegistry

    registry = AzureModelRegistry(stack.spec, azure_session(stack.spec), stack.ctx)
    monkeypatch.setattr(registry, "run_tags", lambda _run: {"mlplat.code.commit": "abc",
                                                            "mlplat.data.train.sha256": "d" * 64})
    first = registry.store_version("scorer", "run-1", _files(tmp_path, "a"), tags={"mlplat.artifact_digest": "s:1"})
    second = registry.store_version("scorer", "run-2", _files(tmp_path, "b"), tags={"mlplat.artifact_digest": "s:2"})
    assert (first.version, second.version) == (1, 2)
    version = registry.describe_version("scorer", 1)
    assert version.name == "fraud-scorer" and version.tags["mlplat-managed"] == "true"
    assert version.tags["cost-center"] == "CC-1042" and version.tags["mlplat-model"] == "scorer"
    assert version.properties["mlplat.run_id"] == "run-1" and version.properties["mlplat.commit"] == "abc"
    assert version.properties["mlplat.data.train"] == "d" * 64
    assert any(key[2].endswith("model.tar.gz") for key in stack.fake.arm.blobs)

    assert registry.approval_status("scorer", 1) == "pending"
    registry.record_approval("scorer", 1, state="approved", environment="production", decisions=[],
                             artifact_digest="s:1", gate_digest=None)
    assert registry.approval_status("scorer", 1) == "approved"

    assert registry.get_alias("scorer", "production") is None
    registry.set_alias("scorer", "production", 1)
    registry.set_alias("scorer", "production", 2)
    assert registry.get_alias("scorer", "production") == 2
    assert registry.describe_version("scorer", 2).stage == "Production"
    assert registry.describe_version("scorer", 1).stage == "Development"
    assert "mlplat-alias-production" not in registry.describe_version("scorer", 1).tags
    registry.set_alias("scorer", "production", None)
    assert registry.get_alias("scorer", "production") is None
    # lineage is immutable in Azure: the fake refuses a changed property, the version is left as it was
    from mlplat.errors import ExternalError

    changed = registry.describe_version("scorer", 1)
    changed.properties = {**changed.properties, "mlplat.run_id": "run-9"}
    with pytest.raises(ExternalError, match="immutable"):
        registry.azure.call(registry.models.create_or_update, changed)
    assert registry.describe_version("scorer", 1).properties["mlplat.run_id"] == "run-1"

    # files come back from the storage account when this machine's cache is gone
    shutil.rmtree(registry.state.cache / "scorer" / "2")
    restored = registry.local_dir("scorer", 2, second.source)
    assert (restored / "model.pkl").read_bytes() == b"\x00weights"
    stack.fake.arm.blobs.clear()
    shutil.rmtree(registry.state.cache / "scorer" / "1")
    with pytest.raises(IntegrityError, match="missing"):
        registry.local_dir("scorer", 1, first.source)


def test_registry_leaves_versions_it_did_not_create(stack, tmp_path):
    from azure.ai.ml.entities import Model

    from mlplat.errors import IntegrityError
    from mlplat_providers.azure.runtime.registry import AzureModelRegistry

    registry = AzureModelRegistry(stack.spec, azure_session(stack.spec), stack.ctx)
    registry.azure.call(registry.models.create_or_update, Model(
        name="fraud-legacy", version="1", path="https://acct.blob.core.windows.net/c/m", tags={"owner": "someone"}))
    with pytest.raises(IntegrityError, match="not managed by mlplat"):
        registry.set_alias("legacy", "production", 1)
    assert registry.describe_version("legacy", 1).tags == {"owner": "someone"}


def test_registry_denied_upload_names_the_action(stack, tmp_path, monkeypatch):
    from mlplat_providers.azure.runtime.registry import AzureModelRegistry
    from mlplat_providers.azure.runtime.session import AzurePermissionDenied

    registry = AzureModelRegistry(stack.spec, azure_session(stack.spec), stack.ctx)
    monkeypatch.setattr(registry, "run_tags", lambda _run: {})
    stack.fake.arm.deny("Microsoft.MachineLearningServices/workspaces/models/versions/write")
    with pytest.raises(AzurePermissionDenied, match="models/versions/write"):
        registry.store_version("scorer", "run-1", _files(tmp_path, "a"), tags={})


def _ledger(*weights, shadow=None, environment="production"):
    return SimpleNamespace(model="scorer", environment=environment, shadow=shadow,
                           routes=[SimpleNamespace(version=v, weight=w) for v, w in weights])


def _register(serving, *versions):
    from azure.ai.ml.entities import Model

    for version in versions:
        serving.azure.call(serving.registry.models.create_or_update, Model(
            name=serving.registry.model_name("scorer"), version=str(version), tags=serving.azure.tags,
            path=f"https://acct.blob.core.windows.net/mlplat/models/scorer/{version}/model.tar.gz"))


def test_serving_applies_traffic_mirror_and_deletes_the_rest(stack):
    from mlplat_providers.azure.runtime.serving import AzureServing

    serving = AzureServing(stack.spec, stack.ctx, azure_session(stack.spec))
    _register(serving, 1, 2, 3)
    first = serving.apply(_ledger((1, 100)))
    assert first["deployed"] == [1] and first["traffic"] == {"scorer-v1": 100}
    name = serving.endpoint_name("scorer", "production")
    endpoint = stack.fake.arm.endpoints[(serving.azure.workspace_id.lower(), name)]
    assert endpoint["tags"]["mlplat-managed"] == "true" and endpoint["tags"]["cost-center"] == "CC-1042"
    canary = serving.apply(_ledger((1, 90), (2, 10)))
    assert canary["deployed"] == [2] and serving.describe("scorer", "production")["weights"] == {"1": 90, "2": 10}
    # shadow is native: the candidate takes a mirrored share, no live traffic
    shadow = serving.apply(_ledger((1, 100), shadow={"version": 3, "percent": 20}))
    assert shadow["deleted"] == [2] and shadow["mirror_traffic"] == {"scorer-v3": 20}
    described = serving.describe("scorer", "production")
    assert described["weights"] == {"1": 100} and described["shadow"] == {"3": 20}
    back = serving.apply(_ledger((1, 100)))
    assert back["deleted"] == [3] and serving.describe("scorer", "production")["mirror_traffic"] == {}
    assert sorted(k[2] for k in stack.fake.arm.deployments) == ["scorer-v1"]


def test_an_endpoint_the_platform_did_not_create_is_left_alone(stack):
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    from mlplat.errors import Conflict
    from mlplat_providers.azure.runtime.serving import AzureServing

    serving = AzureServing(stack.spec, stack.ctx, azure_session(stack.spec))
    name = serving.endpoint_name("scorer", "production")
    serving.azure.run(serving.azure.ml().online_endpoints.begin_create_or_update,
                      ManagedOnlineEndpoint(name=name, auth_mode="key", tags={"team": "fraud"}), what="theirs")
    with pytest.raises(Conflict, match="without the mlplat-managed tag"):
        serving.apply(_ledger((1, 100)))
    assert not stack.fake.arm.deployments
    found = {e.name: e for e in serving.inventory()}
    assert not found[name].platform and found[name].model is None


def test_a_refused_traffic_change_leaves_the_endpoint_routing(stack):
    from mlplat_providers.azure.runtime.serving import AzureServing
    from mlplat_providers.azure.runtime.session import AzurePermissionDenied

    serving = AzureServing(stack.spec, stack.ctx, azure_session(stack.spec))
    _register(serving, 1, 2)
    serving.apply(_ledger((1, 100)))
    stack.fake.arm.deny("Microsoft.MachineLearningServices/workspaces/onlineEndpoints/write")
    with pytest.raises(AzurePermissionDenied, match="onlineEndpoints/write"):
        serving.apply(_ledger((1, 50), (2, 50)))
    assert serving.describe("scorer", "production")["weights"] == {"1": 100}


def test_delivery_uploads_the_build_context_once_per_digest(stack, tmp_path):
    from mlplat_providers.azure.runtime.delivery import AzureDeliveryPipeline

    delivery = AzureDeliveryPipeline(stack.spec, stack.ctx, azure_session(stack.spec))
    files = _files(tmp_path, "model")
    package = delivery.package("scorer", 1, files, ["scikit-learn==1.5.2"], artifact_digest="sha256:" + "0" * 64)
    assert package.engine == "blob" and package.image.startswith("crmlwfraudproduction.azurecr.io/scorer:")
    uploaded = [k for k in stack.fake.arm.blobs if k[2].startswith("packages/scorer/1-")]
    assert len(uploaded) == 1 and stack.fake.arm.blobs[uploaded[0]][1]["mlplat_digest"] == package.digest
    calls = len(stack.fake.arm.calls)
    assert delivery.package("scorer", 1, files, ["scikit-learn==1.5.2"],
                            artifact_digest="sha256:" + "0" * 64).digest == package.digest
    assert not any(m == "PUT" for m, _ in stack.fake.arm.calls[calls:])
