"""SageMaker Feature Store's rules (service_rules) and how the aws provider maps a feature view onto them.

Each rule is checked on a value SageMaker refuses and on one it takes; the mapping on the views the
platform accepts, including those SageMaker would not.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlplat.stack import load_stack
from mlplat_providers.aws import account_rules
from mlplat_providers.aws import plan as p
from mlplat_providers.aws import service_rules as rules
from mlplat_providers.aws.runtime import features as f
from tests.conftest import REPO

ACCOUNT = "123456789012"
PREFIX = "mlplat-fraud-production"


def view_doc(*, features=(("trips", "int64"), ("rating", "float64")), entities=(("driver_id", "int64"),),
             created: str | None = "created", name: str = "driver_stats", version: int = 1) -> dict:
    return {"name": name, "version": version,
            "entities": [{"name": k, "join_key": k, "dtype": t} for k, t in entities],
            "features": [{"name": n, "dtype": t} for n, t in features],
            "timestamp_field": "event_timestamp", "created_timestamp_field": created,
            "source": {"kind": "parquet", "path": "x.parquet"}}


def create_request(**changes) -> dict:
    request = {"FeatureGroupName": "g", "RecordIdentifierFeatureName": "id", "EventTimeFeatureName": "t",
               "FeatureDefinitions": [{"FeatureName": "id", "FeatureType": "String"},
                                      {"FeatureName": "t", "FeatureType": "Fractional"}],
               "OfflineStoreConfig": {"S3StorageConfig": {"S3Uri": "s3://bucket/features"}}}
    request.update(changes)
    return request


@pytest.mark.parametrize("name, reason", [
    ("rating", None), ("a", None), ("trips-7d_avg", None), ("A1", None), ("x" * 64, None),
    ("_rating", "must start and end"), ("rating_", "must start and end"), ("rat ing", "must start and end"),
    ("x" * 65, "at most 64"), ("", "empty"), ("write_time", "reserved"), ("IS_DELETED", "reserved"),
    ("api_invocation_time", "reserved"),
])
def test_feature_names(name, reason):
    problem = rules.feature_store_name_problem(name)
    assert (problem is None) if reason is None else (reason in problem)


def test_reserved_names_are_reserved_for_features_only():
    assert rules.feature_store_name_problem("write_time", what="feature group name") is None


@pytest.mark.parametrize("dtype, kind", [("int32", "Integral"), ("int64", "Integral"), ("bool", "Integral"),
                                         ("float32", "Fractional"), ("float64", "Fractional"),
                                         ("string", "String"), ("timestamp", "Fractional"), ("decimal", None),
                                         ("object", None)])
def test_dtypes_map_onto_the_three_feature_types(dtype, kind):
    assert rules.feature_type_of(dtype) == kind


def test_group_names_fit_and_stay_distinct():
    assert rules.feature_group_name(PREFIX, "driver_stats", 2) == f"{PREFIX}-driver_stats-v2"
    long_a = rules.feature_group_name(PREFIX, "a" * 60 + "_one", 1)
    long_b = rules.feature_group_name(PREFIX, "a" * 60 + "_two", 1)
    assert long_a != long_b and long_a.endswith("-v1")
    for name in (long_a, long_b, rules.feature_group_name(PREFIX, "x_" * 31 + "y", 12)):
        assert len(name) <= 64 and rules.feature_store_name_problem(name, what="feature group name") is None


def test_create_feature_group_problems():
    assert rules.create_feature_group_problems(create_request()) == []
    too_many = [{"FeatureName": f"f{i}", "FeatureType": "Integral"} for i in range(2499)]
    assert rules.create_feature_group_problems(create_request(
        FeatureDefinitions=create_request()["FeatureDefinitions"] + too_many)) == [
        "feature group 'g' has 2501 feature definitions; SageMaker allows 1 to 2500"]
    problems = rules.create_feature_group_problems(create_request(FeatureDefinitions=[
        {"FeatureName": "id", "FeatureType": "String"}, {"FeatureName": "t", "FeatureType": "Integral"},
        {"FeatureName": "id", "FeatureType": "Boolean"}]))
    assert any("event time feature is Integral" in x for x in problems)
    assert any("defined twice" in x for x in problems) and any("'Boolean'" in x for x in problems)
    assert any("record identifier feature 'nope'" in x
               for x in rules.create_feature_group_problems(create_request(RecordIdentifierFeatureName="nope")))
    assert any("not an s3://" in x for x in rules.create_feature_group_problems(create_request(
        OfflineStoreConfig={"S3StorageConfig": {"S3Uri": "bucket/features"}})))
    assert any("feature group name" in x for x in rules.create_feature_group_problems(create_request(FeatureGroupName="-g")))


def test_batch_get_record_takes_at_most_a_hundred_identifiers():
    def request(n: int, entries: int = 1) -> dict:
        return {"Identifiers": [{"FeatureGroupName": "g", "RecordIdentifiersValueAsString": [str(i) for i in range(n)],
                                 "FeatureNames": ["a"]}] * entries}

    assert rules.batch_get_record_problems(request(100)) == []
    assert "takes 1 to 100 identifiers" in rules.batch_get_record_problems(request(101))[0]
    assert rules.batch_get_record_problems(request(0)) != []
    assert rules.batch_get_record_problems(request(1, entries=101)) != []


def test_put_record_problems():
    types = {"id": "Integral", "t": "Fractional", "city": "String"}

    def record(**values) -> dict:
        return {"FeatureGroupName": "g", "Record": [{"FeatureName": k, "ValueAsString": v} for k, v in values.items()]}

    check = lambda r: rules.put_record_problems(r, types, record_identifier="id", event_time="t")  # noqa: E731
    assert check(record(id="7", t="1714560000.123456", city="x")) == []
    assert any("Integral" in x for x in check(record(id="7.5", t="1")))
    assert any("Fractional" in x for x in check(record(id="7", t="2024-05-01")))
    assert any("no event time" in x for x in check(record(id="7")))
    assert any("'zip' is not defined" in x for x in check(record(id="7", t="1", zip="1")))


def test_a_view_becomes_a_group_of_its_keys_times_and_features():
    layout = f.layout_of(view_doc(features=(("trips", "int64"), ("rating", "float64"), ("city", "string"),
                                            ("active", "bool"), ("seen", "timestamp"))), PREFIX)
    assert layout.name == f"{PREFIX}-driver_stats-v1"
    assert (layout.record_identifier, layout.event_time) == ("driver_id", "event_timestamp")
    assert layout.types == {"driver_id": "Integral", "event_timestamp": "Fractional", "created": "Fractional",
                            "trips": "Integral", "rating": "Fractional", "city": "String", "active": "Integral",
                            "seen": "Fractional"}
    assert layout.record_id([42]) == "42"
    two = f.layout_of(view_doc(entities=(("driver_id", "int64"), ("city_id", "string"))), PREFIX)
    assert two.record_identifier == f.RECORD_KEY and two.types[f.RECORD_KEY] == "String"
    assert two.record_id([42, "x"]) == '[42,"x"]'


def test_views_sagemaker_would_refuse_are_named_with_every_reason():
    assert f.layout_problems(view_doc(), PREFIX) == []
    problems = f.layout_problems(view_doc(features=(("write_time", "int64"), ("rating_", "float64"),
                                                    ("price", "decimal"))), PREFIX)
    assert len(problems) == 3
    assert any("reserved" in x for x in problems) and any("'rating_'" in x for x in problems)
    assert any("dtype 'decimal'" in x and "no SageMaker feature type" in x for x in problems)
    clash = f.layout_problems(view_doc(entities=(("a", "int64"), ("b", "int64")), features=((f.RECORD_KEY, "string"),)),
                              PREFIX)
    assert any("record identifier of a view of several entities" in x for x in clash)


@pytest.mark.parametrize("us", [0, 1, 1_714_560_000_123_457, 1_714_560_000_999_999, 4_102_444_799_999_999, -1_500_001])
def test_fractional_seconds_keep_every_microsecond(us):
    text = f.seconds(us)
    assert round(float(text) * 1e6) == us
    assert f.from_text(text, "timestamp") == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


@pytest.mark.parametrize("value, dtype, text", [(True, "bool", "1"), (False, "bool", "0"), (7, "int64", "7"),
                                                (0.1, "float64", "0.1"), ("x", "string", "x"), (None, "int64", None),
                                                (float("nan"), "float64", None)])
def test_values_travel_as_strings_and_come_back_typed(value, dtype, text):
    assert f.to_text(value, dtype) == text
    if text is not None:
        assert f.from_text(text, dtype) == value


def test_the_platform_role_may_do_what_the_feature_store_sends():
    """The program's policy allows every action the runtime sends: the create with the stack's tags (and no
    other tag key), the runtime's reads and writes on the team's groups, the offline store's objects."""
    plan = p.stack_plan(load_stack("fraud-prod", REPO))
    doc = p.platform_role_policy(plan, ACCOUNT)
    group = f"arn:aws:sagemaker:{plan.region}:{ACCOUNT}:feature-group/{rules.feature_group_name(plan.prefix, 'v', 1)}"
    create = {"aws:RequestTag/team": plan.spec.team, "aws:TagKeys": sorted(plan.tags)}
    assert account_rules.allowed(doc, "sagemaker:CreateFeatureGroup", group, create)
    team = {"aws:ResourceTag/team": plan.spec.team}
    for action in ("DescribeFeatureGroup", "UpdateFeatureGroup", "PutRecord", "BatchGetRecord", "GetRecord"):
        assert account_rules.allowed(doc, f"sagemaker:{action}", group, team), action
        assert not account_rules.allowed(doc, f"sagemaker:{action}", group, {"aws:ResourceTag/team": "ads"}), action
    assert account_rules.allowed(doc, "iam:PassRole", p.platform_role_arn(plan, ACCOUNT),
                                 {"iam:PassedToService": "sagemaker.amazonaws.com"})
    key = f"features/{ACCOUNT}/sagemaker/{plan.region}/offline-store/g-1/data/year=2024/x.parquet"
    assert account_rules.allowed(doc, "s3:GetObject", f"arn:aws:s3:::{plan.bucket}/{key}")
    assert account_rules.allowed(doc, "s3:ListBucket", f"arn:aws:s3:::{plan.bucket}")
