"""The azure provider's feature store against the fake ARM (feature-store entities and feature sets read into
azure-ai-ml's REST models), the fake Blob Storage and a Redis server on 127.0.0.1 standing in for Azure Cache
for Redis: what the provider-neutral suite (test_features_contract.py) does not look at."""
from __future__ import annotations

import io
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.conftest import write_project
from tests.contract.azure_fake.feature_support import azure_redis, azure_redis_server, provision_features  # noqa: F401
from tests.contract.azure_fake.fixtures import azure_fake, azure_server  # noqa: F401
from tests.contract.azure_support import azure_stack_text
from tests.contract.lifecycle import AUTHOR, call
from tests.contract.test_features_contract import (
    STACK,
    WINDOW,
    apply_and_materialize,
    cli,
    definitions,
    feature_project,
    source_frame,
    store,
)

pytestmark = pytest.mark.integration
FS = "fs-fraud-production"


@pytest.fixture
def project(tmp_path, monkeypatch, azure_fake, azure_redis):  # noqa: F811
    root = feature_project(tmp_path, monkeypatch, {STACK: azure_stack_text()})
    provision_features(root, STACK, azure_fake)
    return root, azure_fake


def assets(fake: Any, kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    held = fake.arm.extra.get("features", {"versions": {}})["versions"]
    return {(n, v): body for (_, k, n, v), body in held.items() if k == kind}


def blob(fake: Any, name: str) -> bytes:
    found = [data for (_, container, key), (data, _) in fake.arm.blobs.items() if key == name and container == "mlplat"]
    assert found, f"no blob {name}: {sorted(k[2] for k in fake.arm.blobs)}"
    return found[0]


def puts(fake: Any) -> list[str]:
    return [path for method, path in fake.arm.calls if method == "PUT"]


def test_a_view_version_is_an_entity_and_a_feature_set_version_with_its_spec(project):
    root, fake = project
    call(root, STACK, "features.apply", definitions=definitions())
    entities = assets(fake, "featurestoreEntities")
    assert list(entities) == [("driver", "1")]
    entity = entities[("driver", "1")]["properties"]
    assert entity["indexColumns"] == [{"columnName": "driver_id", "dataType": "Long"}]
    assert entity["tags"]["mlplat-managed"] == "true" and entity["tags"]["team"] == "fraud"

    sets = assets(fake, "featuresets")
    assert list(sets) == [("driver_stats", "1")]
    props = sets[("driver_stats", "1")]["properties"]
    assert props["provisioningState"] == "Succeeded"  # completed through the operation's polling
    assert props["entities"] == ["azureml:driver:1"]
    assert props["materializationSettings"]["storeType"] == "OnlineAndOffline"
    assert {k: props["tags"][k] for k in ("mlplat-managed", "mlplat-view", "mlplat-view-version", "cost-center")} == {
        "mlplat-managed": "true", "mlplat-view": "driver_stats", "mlplat-view-version": "1", "cost-center": "CC-1042"}
    assert props["specification"]["path"].endswith("/mlplat/featuresets/driver_stats/1")
    spec = yaml.safe_load(blob(fake, "featuresets/driver_stats/1/FeaturesetSpec.yaml"))
    assert spec["source"]["type"] == "parquet" and spec["source"]["timestamp_column"] == {"name": "event_timestamp"}
    assert spec["source"]["path"].endswith("/mlplat/offline/driver_stats/1/*.parquet")
    assert spec["index_columns"] == [{"name": "driver_id", "type": "long"}]
    assert [(f["name"], f["type"]) for f in spec["features"]] == [
        ("trips", "long"), ("rating", "double"), ("city", "string"), ("active", "boolean"), ("last_seen", "datetime")]

    before = len(puts(fake))
    assert [v["action"] for v in call(root, STACK, "features.apply", definitions=definitions())["views"]] == ["unchanged"]
    assert puts(fake)[before:] == []  # the same spec: no new version, nothing written

    assert call(root, STACK, "features.materialize", **WINDOW) == [{"view": "driver_stats", "version": 1, "rows": 5}]
    start, end = (int(pd.Timestamp(WINDOW[k], tz="UTC").value // 1000) for k in ("start", "end"))
    offline = pd.read_parquet(io.BytesIO(blob(fake, f"offline/driver_stats/1/{start}-{end}.parquet")))
    assert len(offline) == len(source_frame())  # every row of the window: the offline store keeps the history
    assert sorted(offline.columns) == sorted(["driver_id", "event_timestamp", "created", "trips", "rating", "city",
                                              "active", "last_seen"])
    assert str(offline["event_timestamp"].dtype).startswith("datetime64")


def test_an_added_feature_is_the_next_feature_set_version_and_a_retyped_one_is_refused(project):
    from mlplat.features.errors import FeatureDefinitionError

    root, fake = project
    frame = source_frame()
    call(root, STACK, "features.apply", definitions=definitions(feature_names=["trips"]))
    call(root, STACK, "features.materialize", **WINDOW)
    applied = call(root, STACK, "features.apply", definitions=definitions(feature_names=["trips", "rating"]))
    assert [v["action"] for v in applied["views"]] == ["update"]
    sets = assets(fake, "featuresets")
    assert sorted(sets) == [("driver_stats", "1"), ("driver_stats", "1.1")]  # versions are immutable: the next one
    assert sets[("driver_stats", "1")]["properties"]["properties"]["mlplat.features"] == '{"trips": "int64"}'
    assert list(assets(fake, "featurestoreEntities")) == [("driver", "1")]  # the same index column: reused

    call(root, STACK, "features.materialize", **WINDOW)
    refs = ["driver_stats:trips", "driver_stats:rating"]
    assert store(root, STACK).get_online_features([{"driver_id": 2}], refs) == [
        {"driver_id": 2, "trips": 23, "rating": None}]  # driver 2's latest event has no rating
    assert store(root, STACK).get_online_features([{"driver_id": 1}], refs) == [
        {"driver_id": 1, "trips": 13, "rating": pytest.approx(4.13)}]

    retyped = definitions(feature_names=["trips", "rating"])
    retyped["views"][0]["features"][1]["dtype"] = "string"
    frame.assign(rating=frame["rating"].astype(str)).to_parquet(root / "data" / "driver_stats.parquet", index=False)
    before = len(puts(fake))
    with pytest.raises(FeatureDefinitionError, match="cannot change a feature's type") as caught:
        call(root, STACK, "features.apply", definitions=retyped)
    assert "rating (float64 → string)" in caught.value.message
    assert "driver_stats version=N+1" in str(caught.value.hint) and "nothing was created" in str(caught.value.hint)
    assert puts(fake)[before:] == []
    assert call(root, STACK, "features.list")[0]["features"] == ["trips:int64", "rating:float64"]


def test_online_reads_of_many_keys_go_in_pipelines_of_a_hundred(project, monkeypatch):
    import redis.client

    root, _ = project
    call(root, STACK, "features.apply", definitions=definitions())
    call(root, STACK, "features.materialize", **WINDOW)
    sizes: list[int] = []
    execute = redis.client.Pipeline.execute

    def counted(self, *args, **kwargs):
        sizes.append(len(self.command_stack))
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", counted)
    rows = store(root, STACK).get_online_features([{"driver_id": d} for d in range(1, 251)], ["driver_stats:trips"])
    assert [r["trips"] for r in rows[:5]] == [13, 23, 33, 43, 53]
    assert all(r["trips"] is None for r in rows[5:])
    assert sizes == [100, 100, 50]


def test_an_older_window_never_replaces_a_newer_online_value(project):
    root, _ = project
    call(root, STACK, "features.apply", definitions=definitions())
    call(root, STACK, "features.materialize", **WINDOW)
    call(root, STACK, "features.materialize", start="2023-12-31T00:00:00", end="2024-01-01T01:30:00")
    rows = store(root, STACK).get_online_features([{"driver_id": 1}], ["driver_stats:trips"])
    assert rows == [{"driver_id": 1, "trips": 13}]


def test_a_missing_feature_store_or_a_denied_write_registers_nothing(project):
    from mlplat.errors import ExitCode
    from mlplat.features.errors import FeatureDataError
    from mlplat_providers.azure.runtime.session import AzurePermissionDenied

    root, fake = project
    fake.arm.deny("Microsoft.MachineLearningServices/workspaces/featuresets/versions/write")
    with pytest.raises(AzurePermissionDenied) as denied:
        call(root, STACK, "features.apply", definitions=definitions())
    assert denied.value.exit_code == ExitCode.DENIED
    assert "Microsoft.MachineLearningServices/workspaces/featuresets/versions/write" in str(denied.value.hint)
    assert call(root, STACK, "features.list") == []

    fake.arm.workspaces = {k: w for k, w in fake.arm.workspaces.items() if w["name"] != FS}
    with pytest.raises(FeatureDataError, match=f"feature store {FS} does not exist") as missing:
        call(root, STACK, "features.apply", definitions=definitions())
    assert "mlplat up --stack" in str(missing.value.hint)
    assert call(root, STACK, "features.list") == []


def test_the_fake_refuses_what_azure_refuses(project):
    """Bodies read into azure-ai-ml's REST models (unknown fields are 400), feature sets only in a feature store,
    entities of unknown versions refused."""
    import json
    import urllib.error
    import urllib.request

    from tests.contract.azure_fake.fixtures import RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE

    _, fake = project

    def put(workspace: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        url = (f"{fake.http.url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
               f"Microsoft.MachineLearningServices/workspaces/{workspace}/{path}?api-version=2025-12-01")
        request = urllib.request.Request(url, json.dumps(body).encode(), method="PUT", headers={
            "Authorization": "Bearer t", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    entity = {"properties": {"indexColumns": [{"columnName": "driver_id", "dataType": "Long"}]}}
    status, body = put(FS, "featurestoreEntities/driver/versions/1", {**entity, "colour": "blue"})
    assert (status, body["error"]["code"]) == (400, "InvalidRequestContent") and "colour" in body["error"]["message"]
    status, body = put(WORKSPACE, "featurestoreEntities/driver/versions/1", entity)
    assert status == 400 and "is not a feature store" in body["error"]["message"]
    status, body = put(FS, "featuresets/driver_stats/versions/1", {"properties": {
        "entities": ["azureml:driver:1"], "specification": {"path": "https://x/y"}}})
    assert status == 400 and "does not exist in this feature store" in body["error"]["message"]
    assert assets(fake, "featuresets") == {}


def test_without_the_redis_override_the_cache_of_the_feature_store_connection_is_used(project, monkeypatch):
    """The online store is the cache the feature store's ``mlplat-online-store`` connection targets, on TLS port
    6380 with an Entra ID token as password and its object id as user name; a missing connection is one clear
    error naming `mlplat up`."""
    import base64
    import json

    from mlplat.errors import StackError
    from mlplat.stack import load_stack
    from mlplat_providers.azure.runtime.features import REDIS_ENV, AzureFeatureStore
    from mlplat_providers.azure.runtime.session import AzureSession
    from tests.contract.lifecycle import context

    root, fake = project
    monkeypatch.delenv(REDIS_ENV)
    claims = base64.urlsafe_b64encode(json.dumps({"oid": "0b1d-object"}).encode()).decode().rstrip("=")

    class Jwt:
        def get_token(self, *scopes, **kwargs):
            from azure.core.credentials import AccessToken

            return AccessToken(f"h.{claims}.s", 4102444800)

    spec = load_stack(STACK, root)
    backend = AzureFeatureStore(spec, context(root), AzureSession(spec, credential=Jwt()))
    with pytest.raises(StackError, match="no online store connection 'mlplat-online-store'") as missing:
        backend.redis()
    assert "mlplat up --stack" in str(missing.value.hint)

    ws_id = next(w["id"] for w in fake.arm.workspaces.values() if w["name"] == FS).lower()
    fake.arm.extra["connections"] = {(ws_id, "mlplat-online-store"): {
        "category": "Redis", "authType": "ManagedIdentity",
        "target": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Cache/Redis/redis-fraud-production-abc123"}}
    import redis

    opened: list[dict[str, Any]] = []
    monkeypatch.setattr(redis, "Redis", lambda **kwargs: opened.append(kwargs) or "client")
    assert backend.redis() == "client"
    assert opened == [{"host": "redis-fraud-production-abc123.redis.cache.windows.net", "port": 6380, "ssl": True,
                       "username": "0b1d-object", "password": f"h.{claims}.s", "decode_responses": True}]


def test_the_cli_applies_materializes_and_refuses_a_retyped_feature_on_an_azure_stack(project, capsys):
    import json

    from mlplat.cli import main
    from mlplat.errors import ExitCode
    from tests.contract.test_features_contract import DEFINITIONS_MODULE

    root, fake = project
    (root / "good.py").write_text(DEFINITIONS_MODULE.format(rating="rating"))
    (root / "retyped.py").write_text(DEFINITIONS_MODULE.format(rating="rating").replace(
        "Feature('rating', \"float64\")", "Feature('rating', \"string\")"))

    mlplat = cli(capsys)
    apply_and_materialize(mlplat)

    frame = source_frame()
    frame.assign(rating=frame["rating"].astype(str)).to_parquet(root / "data" / "driver_stats.parquet", index=False)
    before = len(puts(fake))
    code, _, err = mlplat("features", "apply", "--stack", STACK, "-d", "retyped.py", "--yes")
    assert code == ExitCode.CONFIG, err
    assert "cannot change a feature's type" in err and "driver_stats version=N+1" in err
    assert puts(fake)[before:] == []
