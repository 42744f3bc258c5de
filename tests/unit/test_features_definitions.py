"""Feature definitions, references, the apply plan and timestamp rules: pure logic, no stores."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest

from mlplat.features.client import resolve, to_utc_micros
from mlplat.features.definitions import Entity, Feature, FeatureRef, FeatureView, collect, load_module, parse_ttl
from mlplat.features.errors import BreakingChange, FeatureDataError, FeatureDefinitionError, UnknownFeature
from mlplat.features.plan import make_plan, refuse_breaking

driver = Entity("driver", join_key="driver_id")


def view(version: int = 1, **kw) -> FeatureView:
    args = dict(entities=[driver], source="data/stats.parquet", ttl=timedelta(days=1), version=version,
                features=[Feature("trips", "int64"), Feature("rating", "float64")])
    args.update(kw)
    return FeatureView("stats", **args)


# --- definitions -------------------------------------------------------------------------------


def test_entity_defaults_join_key_to_name_and_checks_dtype():
    assert Entity("customer").join_key == "customer"
    with pytest.raises(FeatureDefinitionError, match="unknown dtype 'float64'"):
        Entity("x", dtype="float64")


def test_unknown_feature_dtype_suggests_nearest():
    with pytest.raises(FeatureDefinitionError) as err:
        Feature("rating", "flaot64")
    assert "did you mean 'float64'" in err.value.hint


@pytest.mark.parametrize("bad", ["1 day", -5, 0, 1.5, True, "30w"])
def test_bad_ttl_is_refused(bad):
    with pytest.raises(FeatureDefinitionError):
        parse_ttl(bad, "view")


@pytest.mark.parametrize(("value", "seconds"), [(timedelta(days=30), 2_592_000), ("12h", 43_200), (90, 90), (None, None)])
def test_ttl_forms(value, seconds):
    assert parse_ttl(value, "view") == seconds


def test_view_validation_errors():
    with pytest.raises(FeatureDefinitionError, match="declared twice"):
        view(features=[Feature("a"), Feature("a")])
    with pytest.raises(FeatureDefinitionError, match="neither a .parquet nor a .csv"):
        view(source="data/stats.json")
    with pytest.raises(FeatureDefinitionError, match="version must be a positive integer"):
        view(version=0)
    with pytest.raises(FeatureDefinitionError, match="both a feature and a key"):
        view(features=[Feature("driver_id", "int64")])
    with pytest.raises(FeatureDefinitionError, match="not a valid identifier"):
        FeatureView("bad-name", entities=[driver], features=[Feature("a")], source="x.parquet")


def test_the_same_view_version_twice_is_refused_and_two_versions_are_fine():
    assert [v.ref for v in collect([view(1), view(2)]).views] == ["stats@1", "stats@2"]
    with pytest.raises(FeatureDefinitionError, match="defined twice"):
        collect([view(1), view(1)])


def test_dataframe_source_is_accepted():
    frame = pd.DataFrame({"driver_id": [1], "event_timestamp": [pd.Timestamp("2024-01-01")], "trips": [1], "rating": [1.0]})
    assert view(source=frame).source.kind == "dataframe"


def test_load_module_collects_definitions_and_names_failures(tmp_path):
    good = tmp_path / "defs.py"
    good.write_text("from mlplat.features import Entity, Feature, FeatureView\n"
                    "d = Entity('driver', join_key='driver_id')\n"
                    "v = FeatureView('stats', entities=[d], features=[Feature('a')], source='x.parquet')\n")
    loaded = load_module(good)
    assert [e.name for e in loaded.entities] == ["driver"] and loaded.views[0].ref == "stats@1"
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(FeatureDefinitionError, match="RuntimeError: boom"):
        load_module(broken)
    with pytest.raises(FeatureDefinitionError, match="not found"):
        load_module(tmp_path / "missing.py")


@pytest.mark.parametrize(("text", "expected"), [
    ("stats:trips", FeatureRef("stats", None, "trips")),
    ("stats@2:trips", FeatureRef("stats", 2, "trips")),
    ("stats@v3:*", FeatureRef("stats", 3, None)),
    ("stats@2", FeatureRef("stats", 2, None)),
])
def test_feature_refs(text, expected):
    assert FeatureRef.parse(text) == expected


@pytest.mark.parametrize("bad", ["", "stats:", ":trips", "stats@x:trips", "a:b:c", 7])
def test_malformed_refs(bad):
    with pytest.raises(FeatureDefinitionError, match="malformed feature reference"):
        FeatureRef.parse(bad)


# --- resolving references -----------------------------------------------------------------------


REGISTERED = {("stats", 1): view(1).to_dict(), ("stats", 2): view(2, features=[
    Feature("trips", "float64"), Feature("rating", "float64"), Feature("speed", "float64")]).to_dict()}


def test_resolve_uses_latest_version_unless_pinned():
    sel = resolve(["stats:trips", "stats@1:rating"], REGISTERED, full_feature_names=True)
    assert [(s.version, s.features, s.columns) for s in sel] == [
        (2, ("trips",), ("stats__trips",)), (1, ("rating",), ("stats__rating",))]


def test_unknown_feature_suggests_the_nearest():
    with pytest.raises(UnknownFeature) as err:
        resolve(["stats:ratng"], REGISTERED)
    assert "did you mean 'rating'" in err.value.hint and err.value.exit_code == 4
    with pytest.raises(UnknownFeature, match="unknown feature view 'stat'") as err:
        resolve(["stat:rating"], REGISTERED)
    assert "did you mean 'stats'" in err.value.hint
    with pytest.raises(UnknownFeature, match="no version 7"):
        resolve(["stats@7:rating"], REGISTERED)


def test_same_column_from_two_versions_needs_distinct_names():
    with pytest.raises(FeatureDataError, match="comes from both"):
        resolve(["stats@1:trips", "stats@2:trips"], REGISTERED)


# --- the plan ------------------------------------------------------------------------------------


def plan_for(new: FeatureView, old: FeatureView | None, users=()):
    registered = {(old.name, old.version): old.to_dict()} if old else {}
    return make_plan(collect([new]), registered, {"driver": driver.to_dict()}, lambda n, v: list(users))


def test_plan_create_unchanged_and_kept():
    assert plan_for(view(), None).views[0].action == "create"
    assert plan_for(view(), view()).views[0].action == "unchanged"
    plan = plan_for(view(2), view(1))
    assert [(v.ref, v.action) for v in plan.views] == [("stats@2", "create"), ("stats@1", "kept")]
    assert "new version next to v1" in plan.views[0].changes[-1]


@pytest.mark.parametrize(("change", "breaking"), [
    (dict(features=[Feature("trips", "int64"), Feature("rating", "float64"), Feature("speed")]), False),
    (dict(description="new words", owner="me@example.com", tags={"a": "b"}), False),
    (dict(source="data/moved.parquet"), False),
    (dict(features=[Feature("trips", "int64")]), True),
    (dict(features=[Feature("trips", "float64"), Feature("rating", "float64")]), True),
    (dict(ttl=timedelta(days=2)), True),
    (dict(timestamp_field="ts"), True),
    (dict(created_timestamp_field="created"), True),
    (dict(entities=[Entity("driver", join_key="driver_id", dtype="string")]), True),
])
def test_breaking_classification(change, breaking):
    plan = plan_for(view(**change), view())
    assert plan.views[0].action == "update"
    assert bool(plan.views[0].breaking) is breaking, plan.views[0].changes


def test_breaking_change_refused_only_when_a_production_model_uses_the_version():
    removed = view(features=[Feature("trips", "int64")])
    quiet = plan_for(removed, view())
    refuse_breaking(quiet)  # nobody in production: allowed
    used = plan_for(removed, view(), users=["churn v3 (production in dev)"])
    with pytest.raises(BreakingChange) as err:
        refuse_breaking(used)
    assert err.value.exit_code == 6 and "stats version=2" in err.value.hint and "churn v3" in str(err.value)
    additive = plan_for(view(features=[*view().features, Feature("speed")]), view(), users=["churn v3"])
    refuse_breaking(additive)  # not breaking: allowed even in production use


# --- timestamps: naive means UTC -------------------------------------------------------------------


def test_naive_timestamps_are_utc_and_aware_ones_are_converted():
    naive = pd.Series(pd.to_datetime(["2024-01-01 12:00:00"]))
    aware = pd.Series(pd.to_datetime(["2024-01-01 13:00:00"]).tz_localize("Europe/Paris"))
    python_aware = pd.Series([datetime(2024, 1, 1, 12, tzinfo=UTC)], dtype=object)
    expected = int(pd.Timestamp("2024-01-01 12:00:00", tz="UTC").value // 1000)
    assert to_utc_micros(naive, "ts")[0] == to_utc_micros(aware, "ts")[0] == to_utc_micros(python_aware, "ts")[0] == expected


def test_mixed_naive_and_aware_is_an_error():
    mixed = pd.Series([datetime(2024, 1, 1), datetime(2024, 1, 1, tzinfo=UTC)], dtype=object)
    with pytest.raises(FeatureDataError, match="mixes timezone-naive and timezone-aware"):
        to_utc_micros(mixed, "ts")


def test_string_and_missing_timestamps_are_errors():
    with pytest.raises(FeatureDataError, match="has type string, not datetime") as err:
        to_utc_micros(pd.Series(["2024-01-01"]), "ts")
    assert "pd.to_datetime" in err.value.hint
    with pytest.raises(FeatureDataError, match="missing value"):
        to_utc_micros(pd.Series(pd.to_datetime(["2024-01-01", None])), "ts")


# --- stack settings and run lineage tags -----------------------------------------------------------


def test_stack_features_settings_are_strict_with_defaults(tmp_path):
    from mlplat.errors import StackError
    from mlplat.stack import parse_stack

    base = ("config:\n  mlplat:team: t\n  mlplat:environment: dev\n  mlplat:tags:\n    team: t\n    cost-center: c\n"
            "    environment: dev\n    owner: o@example.com\n")
    spec = parse_stack(base, path=tmp_path / "Pulumi.dev.yaml", name="dev", project_dir=tmp_path)
    assert spec.features.definitions == "features/definitions.py" and spec.features.timestamp_column == "event_timestamp"
    custom = parse_stack(base + "  mlplat:features:\n    definitions: fs/defs.py\n    maxSkewRate: 0.01\n",
                         path=tmp_path / "Pulumi.dev.yaml", name="dev", project_dir=tmp_path)
    assert custom.features.definitions == "fs/defs.py" and custom.features.max_skew_rate == 0.01
    with pytest.raises(StackError, match="did you mean 'definitions'"):
        parse_stack(base + "  mlplat:features:\n    definitons: x.py\n", path=tmp_path / "Pulumi.dev.yaml", name="dev",
                    project_dir=tmp_path)


def test_views_of_run_reads_the_lineage_tags():
    from mlplat.features import views_of_run

    tags = {"mlplat.features.driver_stats": "1,2", "mlplat.features.customer": "1", "mlplat.user": "x"}
    assert views_of_run(tags) == ["customer@1", "driver_stats@1", "driver_stats@2"]
