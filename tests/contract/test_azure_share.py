"""Sharing a model version to an Azure ML registry shared across teams: the copy with its lineage, what Azure
refuses (a missing registry, a changed immutable version), what the platform refuses (a version that is not
the approved production version), and the audit entry of a share."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.contract.azure_fake import registries as fake_registries
from tests.contract.azure_fake.fixtures import LOCATION, RESOURCE_GROUP, SUBSCRIPTION, azure_fake, azure_server  # noqa: F401
from tests.contract.azure_support import azure_session, azure_stack_text, team_stack
from tests.contract.lifecycle import context

SHARED = "mlr-shared"
DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def stack(tmp_path, monkeypatch, azure_fake):  # noqa: F811
    return team_stack(tmp_path, monkeypatch, azure_fake)


def _registry(stack, *, digest=DIGEST, tags=None):
    from azure.ai.ml.entities import Model

    from mlplat_providers.azure.runtime.registry import AzureModelRegistry

    registry = AzureModelRegistry(stack.spec, azure_session(stack.spec), stack.ctx)
    registry.azure.call(registry.models.create_or_update, Model(
        name="fraud-scorer", version="3", path="https://acct.blob.core.windows.net/mlplat/models/scorer/x/model.tar.gz",
        tags=tags if tags is not None else registry.tags("scorer"),
        properties={"mlplat.artifact_digest": digest, "mlplat.run_id": "run-7", "mlplat.commit": "abc"}))
    return registry


def _evidence(stage="production"):
    return {"model": "scorer", "version": 3, "environment": "production", "stage": stage, "artifact_digest": DIGEST}


# --- the fake's rules --------------------------------------------------------------------------

def test_share_rules(azure_fake):  # noqa: F811
    state = azure_fake.arm
    guid = next(iter(state.workspaces.values()))["properties"]["workspaceId"]
    uri = f"azureml://locations/{LOCATION}/workspaces/{guid}/models/fraud-scorer/versions/3"
    assert "modelUri is required" in fake_registries.share_rules(state, None, {})
    assert "not found" in fake_registries.share_rules(state, None, {"modelUri": uri})  # no such workspace version
    assert fake_registries.share_rules(state, None, {"modelUri": "https://acct.blob.core.windows.net/c/m"}) is None
    existing = {"properties": {"modelUri": "https://a/b", "properties": {"k": "1"}, "tags": {}}}
    assert "immutable" in fake_registries.share_rules(state, existing, {"modelUri": "https://a/c"})
    assert fake_registries.share_rules(state, existing, {"modelUri": "https://a/b", "tags": {"x": "y"}}) is None


# --- the runtime -------------------------------------------------------------------------------

def test_share_copies_the_version_with_its_lineage_once(stack):
    fake_registries.add_registry(stack.fake.arm, SUBSCRIPTION, RESOURCE_GROUP, SHARED, LOCATION)
    registry = _registry(stack)
    shared = registry.share("scorer", 3, registry=SHARED, evidence=_evidence())
    assert (shared.registry, shared.shared_name, shared.shared_version) == (SHARED, "fraud-scorer", "3")
    held = fake_registries.versions(stack.fake.arm)[(SHARED, "fraud-scorer", "3")]["properties"]
    assert held["provisioningState"] == "Succeeded" and held["stage"] == "Production"
    assert held["modelUri"].startswith(f"azureml://locations/{LOCATION}/workspaces/")
    assert held["properties"]["mlplat.run_id"] == "run-7" and held["properties"]["mlplat.artifact_digest"] == DIGEST
    assert held["properties"]["mlplat.source"] == held["modelUri"]
    assert held["tags"]["mlplat-managed"] == "true" and held["tags"]["mlplat-source-workspace"] == registry.azure.workspace
    assert shared.asset_id.endswith(f"/registries/{SHARED}/models/fraud-scorer/versions/3")
    writes = sum(1 for m, p in stack.fake.arm.calls if m == "PUT" and "/registries/" in p)
    assert registry.share("scorer", 3, registry=SHARED, evidence=_evidence()) == shared  # idempotent
    assert sum(1 for m, p in stack.fake.arm.calls if m == "PUT" and "/registries/" in p) == writes


def test_share_refusals_name_what_and_how(stack):
    from mlplat.errors import Conflict, IntegrityError, NotFound, StackError
    from mlplat_providers.azure.runtime.session import AzurePermissionDenied

    registry = _registry(stack)
    with pytest.raises(StackError, match="names no registry") as no_registry:
        registry.share("scorer", 3, registry=None, evidence=_evidence())
    assert "mlplat:provider.registry" in no_registry.value.hint
    with pytest.raises(NotFound, match=f"registry '{SHARED}' does not exist") as missing:
        registry.share("scorer", 3, registry=SHARED, evidence=_evidence())
    assert "createRegistry" in missing.value.hint
    fake_registries.add_registry(stack.fake.arm, SUBSCRIPTION, RESOURCE_GROUP, SHARED, LOCATION)
    with pytest.raises(NotFound):
        registry.share("scorer", 9, registry=SHARED, evidence=_evidence())  # no such version
    with pytest.raises(IntegrityError, match="sealed artifact digest"):
        registry.share("scorer", 3, registry=SHARED, evidence={**_evidence(), "artifact_digest": "sha256:" + "b" * 64})
    stack.fake.arm.deny("Microsoft.MachineLearningServices/registries/models/versions/write")
    with pytest.raises(AzurePermissionDenied, match="registries/models/versions/write"):
        registry.share("scorer", 3, registry=SHARED, evidence=_evidence())
    stack.fake.arm.allow("Microsoft.MachineLearningServices/registries/models/versions/write")
    assert fake_registries.versions(stack.fake.arm) == {}
    # another team's artifact under the same number: registry versions are immutable
    registry.share("scorer", 3, registry=SHARED, evidence=_evidence())
    held = fake_registries.versions(stack.fake.arm)[(SHARED, "fraud-scorer", "3")]
    held["properties"]["properties"]["mlplat.artifact_digest"] = "sha256:" + "c" * 64
    with pytest.raises(Conflict, match="immutable"):
        registry.share("scorer", 3, registry=SHARED, evidence=_evidence())


def test_versions_the_platform_did_not_register_are_not_shared(stack):
    from mlplat.errors import IntegrityError

    fake_registries.add_registry(stack.fake.arm, SUBSCRIPTION, RESOURCE_GROUP, SHARED, LOCATION)
    registry = _registry(stack, tags={"owner": "someone"})
    with pytest.raises(IntegrityError, match="not managed by mlplat"):
        registry.share("scorer", 3, registry=SHARED, evidence=_evidence())
    assert fake_registries.versions(stack.fake.arm) == {}


# --- the platform's rule, and the audit -----------------------------------------------------------

def test_only_the_production_version_is_shared_and_the_share_is_audited(stack, monkeypatch):
    from mlplat.errors import Denied
    from mlplat.services import audit
    from mlplat.services.sharing import share_version

    fake_registries.add_registry(stack.fake.arm, SUBSCRIPTION, RESOURCE_GROUP, SHARED, LOCATION)
    _registry(stack)
    monkeypatch.setattr("mlplat.services.deployability.assert_deployable", lambda *a, **k: _evidence("staging"))
    with pytest.raises(Denied, match="only the production version is shared") as refused:
        share_version(stack.spec, stack.ctx, "scorer", 3, registry=SHARED)
    assert "mlplat models promote scorer 3 --to production" in refused.value.hint
    assert fake_registries.versions(stack.fake.arm) == {}

    monkeypatch.setattr("mlplat.services.deployability.assert_deployable", lambda *a, **k: _evidence())
    done = share_version(stack.spec, stack.ctx, "scorer", 3, registry=SHARED)
    assert (done["registry"], done["shared_name"], done["shared_version"]) == (SHARED, "fraud-scorer", "3")
    from mlplat.services.registry import registry_for

    conn = registry_for(stack.spec, stack.ctx).database().connect()
    try:
        [entry] = [e for e in audit.entries(conn, model="scorer") if e["action"] == "model.shared"]
    finally:
        conn.close()
    assert entry["actor"] == "ds@example.com" and entry["version"] == 3


def test_providers_without_shared_registries_say_so():
    from mlplat.contracts import ModelRegistry
    from mlplat.errors import CapabilityNotSupported

    class Minimal(ModelRegistry):
        provider_name = "local"
        database = signing_key = scratch_dir = store_version = local_dir = None  # type: ignore[assignment]
        set_alias = get_alias = run_environment = run_tags = None  # type: ignore[assignment]

    Minimal.__abstractmethods__ = frozenset()
    with pytest.raises(CapabilityNotSupported, match="sharing"):
        Minimal().share("m", 1, registry=None, evidence={})


def test_cli_share_of_an_unknown_version_is_refused_with_nothing_shared(stack):
    from pathlib import Path

    from tests.conftest import run_cli

    fake_registries.add_registry(stack.fake.arm, SUBSCRIPTION, RESOURCE_GROUP, SHARED, LOCATION)
    project = Path(stack.spec.path).parent.parent
    result = run_cli("models", "share", "scorer", "3", "--registry", SHARED, "--stack", "team", cwd=project,
                     env={"MLPLAT_PROJECT_DIR": str(project), **stack.fake.env})
    assert result.returncode == 4, result.stderr  # NOT_FOUND: the ledger has no such version
    assert "scorer" in result.stderr and "Traceback" not in result.stderr
    assert fake_registries.versions(stack.fake.arm) == {}
