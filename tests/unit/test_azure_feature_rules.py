"""The Azure ML managed feature store's documented rules (the fake's ``feature_rules``) and the runtime's pure
mapping of views onto entities, feature sets and the online store (``providers/azure/runtime/features.py``)."""
from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from mlplat.errors import StackError
from mlplat_providers.azure.runtime import features as f
from tests.contract.azure_fake import feature_rules as rules

VIEW = {"name": "driver_stats", "version": 2, "timestamp_field": "event_timestamp", "ttl_seconds": 7200,
        "entities": [{"name": "driver", "join_key": "driver_id", "dtype": "int64"}],
        "features": [{"name": "trips", "dtype": "int64"}, {"name": "seen", "dtype": "timestamp"}]}


# https://learn.microsoft.com/azure/machine-learning/reference-yaml-featureset (name)
@pytest.mark.parametrize("name, ok", [("driver_stats", True), ("d.v-1", True), ("9lives", True), ("_x", False),
                                      ("has space", False), ("x" * 256, False), ("", False)])
def test_asset_names(name, ok):
    assert (rules.asset_name(name, "feature set") is None) is ok
    assert (f.asset_name_problem(name, "feature set name") is None) is ok


# https://learn.microsoft.com/azure/machine-learning/concept-azure-machine-learning-v2#versioning
@pytest.mark.parametrize("version, ok", [("1", True), ("1.1", True), ("2024-01", True), ("", False),
                                         (".1", False), ("1" * 31, False)])
def test_asset_versions(version, ok):
    assert (rules.asset_version(version) is None) is ok


# https://learn.microsoft.com/azure/machine-learning/reference-yaml-feature-entity (index_columns)
def test_entity_index_columns():
    assert rules.index_columns([{"columnName": "driver_id", "dataType": "Long"}]) is None
    assert "at least one" in str(rules.index_columns([]))
    assert "data type 'BigInt'" in str(rules.index_columns([{"columnName": "id", "dataType": "BigInt"}]))
    assert "unique" in str(rules.index_columns([{"columnName": "a", "dataType": "Long"}] * 2))
    assert "columnName" in str(rules.index_columns([{"dataType": "Long"}]))


# https://learn.microsoft.com/azure/machine-learning/reference-yaml-featureset (entities, specification,
# materialization_settings)
def test_feature_set_versions_name_existing_entities_a_spec_and_known_stores():
    good = {"entities": ["azureml:driver:1"], "specification": {"path": "https://a/b"},
            "materializationSettings": {"storeType": "OnlineAndOffline"}}
    assert rules.featureset_version(good, {"driver": ["1"]}) is None
    assert "does not exist" in str(rules.featureset_version(good, {"driver": ["2"]}))
    assert "azureml:<entity>:<version>" in str(rules.featureset_version({**good, "entities": ["driver"]}, {}))
    assert "at least one entity" in str(rules.featureset_version({**good, "entities": []}, {}))
    assert "specification.path" in str(rules.featureset_version({**good, "specification": {}}, {"driver": ["1"]}))
    assert "storeType" in str(rules.featureset_version(
        {**good, "materializationSettings": {"storeType": "Everywhere"}}, {"driver": ["1"]}))


# https://learn.microsoft.com/azure/machine-learning/concept-azure-machine-learning-v2#versioning
def test_versions_are_immutable_but_for_tags_description_stage_and_archive():
    old = {"entities": ["azureml:driver:1"], "tags": {"a": "1"}, "stage": "Development"}
    assert rules.version_update(old, {**old, "tags": {"a": "2"}, "stage": "Production", "isArchived": True}) is None
    assert "immutable" in str(rules.version_update(old, {**old, "entities": ["azureml:driver:2"]}))


def test_view_layout_problems():
    assert f.layout_problems(VIEW) == []
    bad = {**VIEW, "name": "_driver", "features": [{"name": "driver_id", "dtype": "int64"},
                                                   {"name": "blob", "dtype": "bytes"}]}
    problems = f.layout_problems(bad)
    assert any("feature set name '_driver'" in p for p in problems)
    assert any("also an index column" in p for p in problems)
    assert any("dtype 'bytes'" in p for p in problems)


def test_feature_set_version_of_each_spec_revision():
    assert [f.azure_version(3, r) for r in (1, 2, 3)] == ["3", "3.1", "3.2"]
    assert all(rules.asset_version(f.azure_version(3, r)) is None for r in (1, 2, 40))


def test_spec_document_follows_the_featureset_spec_schema():
    # https://learn.microsoft.com/azure/machine-learning/reference-yaml-featureset-spec
    spec = f.spec_document(VIEW, "https://acct.blob.core.windows.net/mlplat/offline/driver_stats/2/")
    assert spec["source"] == {"type": "parquet", "path": "https://acct.blob.core.windows.net/mlplat/offline/"
                              "driver_stats/2/*.parquet", "timestamp_column": {"name": "event_timestamp"}}
    assert spec["features"] == [{"name": "trips", "type": "long"}, {"name": "seen", "type": "datetime"}]
    assert spec["index_columns"] == [{"name": "driver_id", "type": "long"}]
    assert spec["temporal_join_lookback"]["seconds"] == 7200
    assert set(f.DATA_TYPE.values()) <= rules.DATA_TYPES


def test_online_values_round_trip_through_their_json_text():
    seen = datetime(2024, 1, 1, 0, 0, 0, 123457, tzinfo=UTC)
    us = int((seen - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)
    for value, dtype, back in [(3, "int64", 3), (float("nan"), "float64", None), (None, "string", None),
                               (True, "bool", True), ("x", "string", "x"), (us, "timestamp", seen), (1.5, "float32", 1.5)]:
        assert f.decode(f.encode(value, dtype), dtype) == back
    assert f.decode(None, "int64") is None


def test_redis_host_and_the_entra_user_of_the_cache():
    # https://learn.microsoft.com/azure/azure-cache-for-redis/cache-azure-active-directory-for-authentication
    target = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Cache/Redis/redis-fraud"
    assert f.redis_host(target) == "redis-fraud.redis.cache.windows.net"
    assert f.redis_host("rediss://cache.example:6380") == "cache.example"
    claims = base64.urlsafe_b64encode(json.dumps({"oid": "abc-123"}).encode()).decode().rstrip("=")
    assert f.token_object_id(f"h.{claims}.s") == "abc-123"
    with pytest.raises(StackError, match="names no object id"):
        f.token_object_id("not-a-jwt")


def test_online_reads_are_chunked_by_the_batch_size():
    assert [len(c) for c in f.chunks(list(range(250)))] == [100, 100, 50]
    assert f.ONLINE_BATCH == 100
