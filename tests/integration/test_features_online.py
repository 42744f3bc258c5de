"""Online store (SQLite), materialization, the gateway's enrich(), and the skew report."""
from __future__ import annotations

from datetime import UTC, datetime, timezone

import pandas as pd
import pytest

from mlplat.context import Context
from mlplat.features import Entity, Feature, FeatureView, enrich
from mlplat.features.errors import FeatureDataError, UnknownFeature
from tests.integration.support_features import feature_project, seconds, store_for

pytestmark = pytest.mark.integration

driver = Entity("driver", join_key="driver_id")


def stats_view(version: int = 1, ttl=None, features=None):
    return FeatureView("stats", entities=[driver], source="data/stats.parquet", created_timestamp_field="created",
                       ttl=ttl, version=version,
                       features=features or [Feature("value", "float64"), Feature("count", "int64"),
                                             Feature("active", "bool"), Feature("tier", "string"),
                                             Feature("seen", "timestamp")])


def write(project, rows):
    frame = pd.DataFrame(rows, columns=["driver_id", "t", "c", "value", "count", "active", "tier"])
    pd.DataFrame({"driver_id": frame["driver_id"].astype("int64"), "event_timestamp": seconds(frame["t"]),
                  "created": seconds(frame["c"]), "value": frame["value"], "count": frame["count"].astype("int64"),
                  "active": frame["active"].astype(bool), "tier": frame["tier"], "seen": seconds(frame["t"])}).to_parquet(
        project / "data" / "stats.parquet", index=False)


@pytest.fixture
def fs(tmp_path, monkeypatch):
    project, spec = feature_project(tmp_path / "project", monkeypatch)
    (project / "data").mkdir()
    write(project, [(1, 10, 10, 1.0, 1, True, "a"), (1, 20, 20, 2.0, 2, False, "b"), (1, 20, 25, 2.5, 3, True, "c"),
                    (2, 15, 15, 5.0, 5, True, "z"), (3, 100, 100, 9.0, 9, True, "late")])
    store = store_for(spec)
    store.apply([stats_view()])
    return project, spec, store


def at(s: int) -> str:
    return (pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(seconds=s)).isoformat()


def test_materialize_writes_the_latest_value_in_the_window_with_types(fs):
    _, _, store = fs
    result = store.materialize(at(0), at(50))
    assert result == [{"view": "stats", "version": 1, "rows": 2}]
    rows = store.get_online_features([{"driver_id": 1}, {"driver_id": 2}, {"driver_id": 3}, {"driver_id": 1}],
                                     ["stats:value", "stats:count", "stats:active", "stats:tier", "stats:seen"])
    assert rows[0] == {"driver_id": 1, "value": 2.5, "count": 3, "active": True, "tier": "c",
                       "seen": datetime(2024, 1, 1, 0, 0, 20, tzinfo=UTC)}
    assert rows[3] == rows[0] and rows[1]["value"] == 5.0 and rows[1]["active"] is True
    assert rows[2] == {"driver_id": 3, "value": None, "count": None, "active": None, "tier": None, "seen": None}


def test_an_older_window_never_replaces_newer_values(fs):
    _, _, store = fs
    store.materialize(at(0), at(200))
    store.materialize(at(0), at(12))  # only the value at t=10 is in this window
    assert store.get_online_features([{"driver_id": 1}], ["stats:value"])[0]["value"] == 2.5
    assert store.get_online_features([{"driver_id": 3}], ["stats:value"])[0]["value"] == 9.0
    history = store.backend.materializations("stats")
    assert [h["state"] for h in history] == ["succeeded", "succeeded"] and history[0]["rows"] == 1


def test_bad_materialize_and_online_input(fs):
    _, _, store = fs
    with pytest.raises(FeatureDataError, match="is after end"):
        store.materialize(at(50), at(0))
    with pytest.raises(FeatureDataError, match="not a timestamp"):
        store.materialize("yesterday-ish", at(0))
    with pytest.raises(UnknownFeature, match="unknown feature view 'stat'"):
        store.materialize(at(0), at(1), ["stat"])
    with pytest.raises(FeatureDataError, match="entity key type mismatch"):
        store.get_online_features([{"driver_id": "1"}], ["stats:value"])
    with pytest.raises(FeatureDataError, match="no value for join key 'driver_id'"):
        store.get_online_features([{"driver": 1}], ["stats:value"])
    assert store.backend.materializations() == []


def test_never_materialized_view_returns_nulls_online(fs):
    _, _, store = fs
    assert store.get_online_features([{"driver_id": 1}], ["stats:value"]) == [{"driver_id": 1, "value": None}]


def test_enrich_serves_the_version_a_model_was_trained_on(fs):
    project, spec, store = fs
    store.apply([stats_view(), stats_view(2, features=[Feature("value", "float64"), Feature("count", "float64")])])
    store.materialize(at(0), at(200))
    ctx = Context(_user="gateway")
    rows = enrich(spec, ctx, ["stats@1"], [{"driver_id": 1, "amount": 3}])
    assert rows == [{"driver_id": 1, "amount": 3, "value": 2.5, "count": 3, "active": True, "tier": "c",
                     "seen": datetime(2024, 1, 1, 0, 0, 20, tzinfo=UTC)}]
    v2 = enrich(spec, ctx, ["stats@2"], [{"driver_id": 1}])
    assert v2 == [{"driver_id": 1, "value": 2.5, "count": 3.0}] and isinstance(v2[0]["count"], float)
    assert enrich(spec, ctx, ["stats@2:value"], [{"driver_id": 9}]) == [{"driver_id": 9, "value": None}]
    with pytest.raises(UnknownFeature):
        enrich(spec, ctx, ["stats@3"], [{"driver_id": 1}])


def test_skew_is_clean_after_materialization_and_catches_late_rows(fs):
    project, _, store = fs
    store.materialize(at(0), at(200))
    clean = store.skew("stats")
    assert clean.mismatch_count == 0 and clean.sampled == 3 and clean.compared == 15
    # a late-arriving correction lands in the source after materialization
    write(project, [(1, 10, 10, 1.0, 1, True, "a"), (1, 20, 20, 2.0, 2, False, "b"), (1, 20, 25, 2.5, 3, True, "c"),
                    (2, 15, 15, 5.0, 5, True, "z"), (3, 100, 100, 9.0, 9, True, "late"),
                    (2, 150, 300, 6.0, 6, False, "fixed"), (4, 120, 120, 1.0, 1, True, "new")])
    report = store.skew("stats")
    assert report.mismatches["value"] == 2 and report.kinds == {"different value": 5, "missing online": 5}
    assert {tuple(e["key"].values()) for e in report.examples} == {(2,), (4,)}
    store.materialize(at(0), at(200))
    assert store.skew("stats").mismatch_count == 0


def test_skew_shows_values_online_that_expired_offline(fs):
    _, _, store = fs
    store.apply([stats_view(ttl=30)])  # not used by a production model: the update is allowed
    store.materialize(at(0), at(200))
    report = store.skew("stats")
    # at t=200 every value is older than 30 s offline, but online keeps the last materialized value
    assert report.kinds == {"missing offline": 15}


def test_skew_before_materialize_is_a_clear_error(fs):
    _, _, store = fs
    with pytest.raises(UnknownFeature, match="never materialized"):
        store.skew("stats")


def test_concurrent_applies_register_a_version_once(fs):
    import sqlite3
    from concurrent.futures import ThreadPoolExecutor

    project, spec, _ = fs
    v2 = stats_view(2, features=[Feature("value", "float64")])

    def apply_once(_):
        return store_for(spec).apply([stats_view(), v2]).counts().get("create", 0)

    with ThreadPoolExecutor(4) as pool:
        creates = list(pool.map(apply_once, range(4)))
    assert sum(creates) == 1
    conn = sqlite3.connect(spec.state_dir / "platform.db")
    assert conn.execute("SELECT count(*) FROM feature_view_history WHERE name='stats' AND version=2").fetchone()[0] == 1
    conn.close()
