"""Point-in-time correctness of offline retrieval (DuckDB over Parquet/CSV) against a brute-force
reference: property-based on random data, plus crafted cases."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlplat.features import Entity, Feature, FeatureView
from mlplat.features.errors import FeatureDataError, UnknownFeature
from tests.integration.support_features import BASE, brute_force, feature_project, plain, seconds, store_for

pytestmark = pytest.mark.integration

driver = Entity("driver", join_key="driver_id")
customer = Entity("customer", join_key="customer_id", dtype="string")


@pytest.fixture
def fs(tmp_path, monkeypatch):
    project, spec = feature_project(tmp_path / "project", monkeypatch)
    (project / "data").mkdir()
    return project, store_for(spec)


def stats_view(ttl, *, name="stats", created="created", path="data/stats.parquet", version=1):
    return FeatureView(name, entities=[driver], source=path, created_timestamp_field=created, ttl=ttl, version=version,
                       features=[Feature("value", "float64"), Feature("count", "int64")])


# --- property-based: random data vs the brute-force reference ----------------------------------------

rows_strategy = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 40), st.one_of(st.none(), st.integers(0, 5)),
              st.one_of(st.none(), st.floats(-5, 5, allow_nan=False, width=32))),
    min_size=0, max_size=40)
entity_strategy = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 50)), min_size=1, max_size=25)


@pytest.fixture
def random_store(tmp_path_factory, monkeypatch):
    """One registered store per test function: views with several TTLs over one Parquet file that each
    hypothesis example rewrites (the source is read at query time)."""
    root = tmp_path_factory.mktemp("pit")
    project, spec = feature_project(root / "project", monkeypatch)
    (project / "data").mkdir()
    write_random(project, [(0, 0, None, 1.0)])
    store = store_for(spec)
    store.apply([stats_view(None, name="no_ttl"), stats_view(5, name="ttl5"), stats_view(timedelta(seconds=20), name="ttl20"),
                 stats_view(5, name="no_created", created=None)])
    return project, store


def write_random(project, rows):
    frame = pd.DataFrame({
        "driver_id": pd.Series([r[0] for r in rows], dtype="int64"),
        "event_timestamp": seconds([r[1] for r in rows]),
        "created": pd.Series([pd.NaT if r[2] is None else BASE + pd.Timedelta(seconds=r[2]) for r in rows],
                             dtype="datetime64[us, UTC]"),
        "value": pd.Series([r[3] for r in rows], dtype="float64"),
        "count": pd.Series(range(len(rows)), dtype="int64"),
    })
    frame.to_parquet(project / "data" / "stats.parquet", index=False)
    return frame


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy, entity_rows=entity_strategy)
def test_random_data_matches_brute_force(random_store, rows, entity_rows):
    project, store = random_store
    source = write_random(project, rows)
    entities = pd.DataFrame({"driver_id": pd.Series([e[0] for e in entity_rows], dtype="int64"),
                             "event_timestamp": seconds([e[1] for e in entity_rows])})
    got = store.get_historical_features(
        entities, ["no_ttl:value", "no_ttl:count", "ttl5:value", "ttl5:count", "ttl20:count", "no_created:count"],
        full_feature_names=True)
    assert len(got) == len(entities) and list(got.index) == list(entities.index)
    for view, ttl, created in (("no_ttl", None, "created"), ("ttl5", 5, "created"), ("ttl20", 20, "created"),
                               ("no_created", 5, None)):
        feats = ["value", "count"] if view in ("no_ttl", "ttl5") else ["count"]
        want = brute_force(source, entities, "driver_id", feats, ttl_s=ttl, created=created)
        for i, expected in enumerate(want):
            for f in feats:
                assert plain(got[f"{view}__{f}"].iloc[i]) == expected[f], (view, i, f, entities.iloc[i].to_dict())


# --- crafted cases ----------------------------------------------------------------------------------


def test_equal_timestamps_latest_created_wins_then_last_row(fs):
    project, store = fs
    pd.DataFrame({
        "driver_id": [1, 1, 1, 2, 2],
        "event_timestamp": seconds([10, 10, 10, 10, 10]),
        "created": pd.Series([BASE + pd.Timedelta(seconds=s) for s in (30, 50, 40, 5, 5)], dtype="datetime64[us, UTC]"),
        "value": [1.0, 2.0, 3.0, 4.0, 5.0],
        "count": [1, 2, 3, 4, 5],
    }).to_parquet(project / "data" / "stats.parquet", index=False)
    store.apply([stats_view(None)])
    got = store.get_historical_features(pd.DataFrame({"driver_id": [1, 2], "event_timestamp": seconds([10, 11])}),
                                        ["stats:value"])
    assert got["value"].tolist() == [2.0, 5.0]  # created 50 wins; equal created: the later row


def test_ttl_expiry_is_inclusive_and_rows_after_the_time_are_ignored(fs):
    project, store = fs
    pd.DataFrame({"driver_id": [1, 1], "event_timestamp": seconds([100, 200]), "created": seconds([100, 200]),
                  "value": [1.0, 2.0], "count": [1, 2]}).to_parquet(project / "data" / "stats.parquet", index=False)
    store.apply([stats_view(50)])
    times = [99, 100, 150, 151, 199, 200, 250, 251]
    got = store.get_historical_features(pd.DataFrame({"driver_id": [1] * len(times), "event_timestamp": seconds(times)}),
                                        ["stats:value"])
    assert [plain(v) for v in got["value"]] == [None, 1.0, 1.0, None, None, 2.0, 2.0, None]


def test_late_arriving_row_changes_history_only_from_its_event_time(fs):
    project, store = fs
    path = project / "data" / "stats.parquet"
    base = pd.DataFrame({"driver_id": [1, 1], "event_timestamp": seconds([10, 30]), "created": seconds([10, 30]),
                         "value": [1.0, 3.0], "count": [1, 3]})
    base.to_parquet(path, index=False)
    store.apply([stats_view(None)])
    entities = pd.DataFrame({"driver_id": [1, 1, 1], "event_timestamp": seconds([15, 25, 35])})
    assert store.get_historical_features(entities, ["stats:value"])["value"].tolist() == [1.0, 1.0, 3.0]
    late = pd.DataFrame({"driver_id": [1, 1], "event_timestamp": seconds([20, 10]), "created": seconds([60, 60]),
                         "value": [2.0, 1.5], "count": [2, 9]})  # a new event at 20 and a correction of 10
    pd.concat([base, late]).to_parquet(path, index=False)
    assert store.get_historical_features(entities, ["stats:value"])["value"].tolist() == [1.5, 2.0, 3.0]


def test_entities_without_history_get_nulls_and_keep_order_and_index(fs):
    project, store = fs
    pd.DataFrame({"driver_id": [1], "event_timestamp": seconds([10]), "created": seconds([10]), "value": [1.0],
                  "count": [7]}).to_parquet(project / "data" / "stats.parquet", index=False)
    store.apply([stats_view(None)])
    entities = pd.DataFrame({"driver_id": [9, 1, 9, 1], "event_timestamp": seconds([20, 20, 5, 5]),
                             "label": [1, 0, 1, 0]}, index=[40, 30, 20, 10])
    got = store.get_historical_features(entities, ["stats:value", "stats:count"])
    assert list(got.index) == [40, 30, 20, 10] and got["label"].tolist() == [1, 0, 1, 0]
    assert [plain(v) for v in got["count"]] == [None, 7, None, None]
    assert str(got["count"].dtype) == "Int64" and entities.columns.tolist() == ["driver_id", "event_timestamp", "label"]


def test_several_views_with_different_ttls_and_entities_at_once(fs):
    project, store = fs
    pd.DataFrame({"driver_id": [1, 1], "event_timestamp": seconds([0, 100]), "created": seconds([0, 100]),
                  "value": [1.0, 2.0], "count": [1, 2]}).to_parquet(project / "data" / "stats.parquet", index=False)
    pd.DataFrame({"customer_id": ["a", "b"], "event_timestamp": ["2024-01-01 00:00:50", "2024-01-01 00:00:00"],
                  "segment": ["vip", "new"]}).to_csv(project / "data" / "profile.csv", index=False)
    short = stats_view(30, name="short")
    long = stats_view(None, name="long")
    profile = FeatureView("profile", entities=[customer], source="data/profile.csv", ttl=60,
                          features=[Feature("segment", "string")])
    store.apply([short, long, profile])
    entities = pd.DataFrame({"driver_id": [1, 1, 1], "customer_id": ["a", "b", "zz"],
                             "event_timestamp": seconds([20, 90, 120])})
    got = store.get_historical_features(entities, ["short:value", "long:value", "profile:segment"], full_feature_names=True)
    assert [plain(v) for v in got["short__value"]] == [1.0, None, 2.0]
    assert [plain(v) for v in got["long__value"]] == [1.0, 1.0, 2.0]
    assert [plain(v) for v in got["profile__segment"]] == [None, None, None]  # a: not yet; b: expired at 90 > 60
    got = store.get_historical_features(entities.assign(event_timestamp=seconds([55, 30, 0])), ["profile:segment"])
    assert [plain(v) for v in got["segment"]] == ["vip", "new", None]


def test_timezone_rule_naive_is_utc_in_sources_and_entity_rows(fs):
    project, store = fs
    # naive source timestamps mean UTC
    pd.DataFrame({"driver_id": [1], "event_timestamp": [pd.Timestamp("2024-01-01 12:00:00")],
                  "value": [1.0], "count": [1]}).to_parquet(project / "data" / "stats.parquet", index=False)
    store.apply([stats_view(None, created=None)])
    aware = pd.to_datetime(["2024-01-01 12:30:00", "2024-01-01 12:30:00"]).tz_localize("Europe/Paris")  # 11:30 UTC
    naive = pd.to_datetime(["2024-01-01 11:59:59", "2024-01-01 12:00:00"])
    a = store.get_historical_features(pd.DataFrame({"driver_id": [1, 1], "event_timestamp": aware}), ["stats:value"])
    n = store.get_historical_features(pd.DataFrame({"driver_id": [1, 1], "event_timestamp": naive}), ["stats:value"])
    assert [plain(v) for v in a["value"]] == [None, None] and [plain(v) for v in n["value"]] == [None, 1.0]


# --- bad input: clear errors -------------------------------------------------------------------------


@pytest.fixture
def applied(fs):
    project, store = fs
    pd.DataFrame({"driver_id": [1], "event_timestamp": seconds([10]), "created": seconds([10]), "value": [1.0],
                  "count": [1]}).to_parquet(project / "data" / "stats.parquet", index=False)
    store.apply([stats_view(None)])
    return store


def test_missing_timestamp_column(applied):
    with pytest.raises(FeatureDataError, match="no timestamp column 'event_timestamp'") as err:
        applied.get_historical_features(pd.DataFrame({"driver_id": [1], "event_timestmp": seconds([1])}), ["stats:value"])
    assert "did you mean 'event_timestmp'" in err.value.hint


def test_entity_key_type_mismatch_and_missing_keys(applied):
    with pytest.raises(FeatureDataError, match="entity key type mismatch: 'driver_id' is object|entity key type mismatch: 'driver_id' is str"):
        applied.get_historical_features(pd.DataFrame({"driver_id": ["1"], "event_timestamp": seconds([1])}), ["stats:value"])
    with pytest.raises(FeatureDataError, match="float64 but the entity is int64"):
        applied.get_historical_features(pd.DataFrame({"driver_id": [1.0], "event_timestamp": seconds([1])}), ["stats:value"])
    with pytest.raises(FeatureDataError, match="no join key column 'driver_id'"):
        applied.get_historical_features(pd.DataFrame({"driver": [1], "event_timestamp": seconds([1])}), ["stats:value"])
    with pytest.raises(FeatureDataError, match="missing values"):
        applied.get_historical_features(pd.DataFrame({"driver_id": pd.array([1, None], dtype="Int64"),
                                                      "event_timestamp": seconds([1, 2])}), ["stats:value"])


def test_unknown_feature_suggests_nearest(applied):
    with pytest.raises(UnknownFeature) as err:
        applied.get_historical_features(pd.DataFrame({"driver_id": [1], "event_timestamp": seconds([1])}), ["stats:valu"])
    assert "did you mean 'value'" in err.value.hint


def test_wrong_timestamp_type_in_entity_rows(applied):
    with pytest.raises(FeatureDataError, match="not datetime"):
        applied.get_historical_features(pd.DataFrame({"driver_id": [1], "event_timestamp": ["2024-01-01"]}), ["stats:value"])


def test_bad_sources_are_refused_at_apply_and_nothing_is_registered(fs):
    project, store = fs
    path = project / "data" / "stats.parquet"
    cases = [
        (pd.DataFrame({"driver_id": [1], "ts": seconds([1]), "value": [1.0], "count": [1], "created": seconds([1])}),
         "event timestamp column 'event_timestamp' is not in the source"),
        (pd.DataFrame({"driver_id": [1], "event_timestamp": ["2024-01-01"], "value": [1.0], "count": [1], "created": seconds([1])}),
         "not a timestamp"),
        (pd.DataFrame({"driver_id": [1], "event_timestamp": seconds([1]), "value": ["x"], "count": [1], "created": seconds([1])}),
         "feature 'value' is declared float64 but the source has VARCHAR"),
        (pd.DataFrame({"driver_id": ["1"], "event_timestamp": seconds([1]), "value": [1.0], "count": [1], "created": seconds([1])}),
         "join key 'driver_id' has type VARCHAR"),
        (pd.DataFrame({"driver_id": [1], "event_timestamp": seconds([1]), "valeu": [1.0], "count": [1], "created": seconds([1])}),
         "feature column 'value' is not in the source"),
    ]
    for frame, message in cases:
        frame.to_parquet(path, index=False)
        with pytest.raises(FeatureDataError, match=message):
            store.apply([stats_view(None)])
        assert store.registered(refresh=True) == {}
    path.unlink()
    with pytest.raises(FeatureDataError, match="cannot be read"):
        store.apply([stats_view(None)])
    assert store.registered(refresh=True) == {}


def test_dataframe_source_is_snapshotted_and_versioned(fs):
    project, store = fs
    frame = pd.DataFrame({"driver_id": [1, 2], "event_timestamp": seconds([1, 1]), "value": [1.0, 2.0], "count": [1, 2]})
    plan = store.apply([FeatureView("mem", entities=[driver], source=frame, features=[Feature("value")])])
    assert plan.views[0].action == "create"
    doc = store.registered()[("mem", 1)]
    assert doc["source"]["kind"] == "snapshot" and (store.backend.layout.root / doc["source"]["path"]).is_file()
    got = store.get_historical_features(pd.DataFrame({"driver_id": [2], "event_timestamp": seconds([5])}), ["mem:value"])
    assert got["value"].tolist() == [2.0]
    frame.loc[1, "value"] = 9.0  # changed data → the view version is updated, not silently reused
    again = store.plan([FeatureView("mem", entities=[driver], source=frame, features=[Feature("value")])])
    assert again.views[0].action == "update" and not again.views[0].breaking


def test_many_rows_keep_their_order(fs):
    project, store = fs
    rng = np.random.default_rng(1)
    n = 20_000
    pd.DataFrame({"driver_id": rng.integers(0, 100, n), "event_timestamp": seconds(rng.integers(0, 10_000, n)),
                  "created": seconds(rng.integers(0, 10_000, n)), "value": rng.random(n),
                  "count": np.arange(n)}).to_parquet(project / "data" / "stats.parquet", index=False)
    store.apply([stats_view(3600)])
    entities = pd.DataFrame({"driver_id": rng.integers(0, 120, 5000), "event_timestamp": seconds(rng.integers(0, 11_000, 5000))})
    got = store.get_historical_features(entities, ["stats:count"])
    assert (got["driver_id"].to_numpy() == entities["driver_id"].to_numpy()).all()
    source = pd.read_parquet(project / "data" / "stats.parquet")
    sample = entities.sample(40, random_state=3)
    want = brute_force(source, sample, "driver_id", ["count"], ttl_s=3600, created="created")
    assert [plain(got.loc[i, "count"]) for i in sample.index] == [w["count"] for w in want]


def test_a_glob_of_parquet_files_is_one_source_and_later_files_win_ties(fs):
    project, store = fs
    parts = project / "data" / "parts"
    parts.mkdir()
    for name, value in (("2024-01-01.parquet", 1.0), ("2024-01-02.parquet", 2.0)):
        pd.DataFrame({"driver_id": [1, 2], "event_timestamp": seconds([10, 10 if value == 1.0 else 20]),
                      "value": [value, value], "count": [1, 2]}).to_parquet(parts / name, index=False)
    store.apply([stats_view(None, created=None, path="data/parts/*.parquet")])
    got = store.get_historical_features(pd.DataFrame({"driver_id": [1, 2, 2], "event_timestamp": seconds([10, 15, 20])}),
                                        ["stats:value"])
    assert got["value"].tolist() == [2.0, 1.0, 2.0]
