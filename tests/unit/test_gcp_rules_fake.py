"""The documented Vertex AI and Cloud Monitoring rules the GCP fakes enforce (tests/contract/gcp_fake/rules.py)."""
from __future__ import annotations

import pytest

from tests.contract.gcp_fake import rules


@pytest.mark.parametrize("alias, ok", [("production", True), ("staging-2", True), ("default", True),
                                       ("3", False), ("Prod", False), ("a", False), ("x" * 129, False),
                                       ("has_underscore", False)])
def test_alias_format(alias, ok):
    assert (rules.alias_error(alias) is None) is ok


def test_merge_aliases_default_moves_others_must_be_removed_first():
    owners = {"default": "1", "production": "1"}
    assert rules.merge_aliases_error(["default"], "2", owners) is None
    assert "already used by version 1" in rules.merge_aliases_error(["production"], "2", owners)
    assert rules.merge_aliases_error(["-production"], "1", owners) is None
    assert "cannot be removed" in rules.merge_aliases_error(["-default"], "1", owners)
    assert rules.merge_aliases_error(["production"], "1", owners) is None  # already its own


@pytest.mark.parametrize("labels, problem", [
    ({"team": "fraud", "cost-center": "cc-1042"}, None),
    ({"Team": "fraud"}, "Label key 'Team'"),
    ({"team": "Fraud"}, "Label value 'Fraud'"),
    ({"1team": "x"}, "Label key '1team'"),
    ({"googled": "x"}, "reserved"),
    ({"k": "v" * 64}, "at most 63"),
    ({f"k{i}": "v" for i in range(65)}, "At most 64 labels"),
])
def test_labels(labels, problem):
    found = rules.labels_error(labels)
    assert (found is None) if problem is None else (problem in found)


def test_traffic_split_sums_to_100_over_deployed_ids():
    assert rules.traffic_split_error({"11": 90, "12": 10}, ["11", "12"]) is None
    assert rules.traffic_split_error({}, ["11"]) is None  # an endpoint may take no traffic
    assert "add up to 100, got 90" in rules.traffic_split_error({"11": 90}, ["11"])
    assert "not the id of a DeployedModel" in rules.traffic_split_error({"99": 100}, ["11"])
    assert rules.traffic_split_error({"0": 10, "11": 90}, ["11"], deploying=True) is None
    assert "use '0'" in rules.traffic_split_error({"7": 100}, ["11"], deploying=True)
    assert "not the id" in rules.traffic_split_error({"0": 100}, ["11"])  # '0' only while deploying
    assert "between 0 and 100" in rules.traffic_split_error({"11": 110, "12": -10}, ["11", "12"])


def test_undeploy_needs_no_traffic_left_on_the_model():
    assert "still receives 50%" in rules.undeploy_error("11", {"11": 50, "12": 50}, remaining=1)
    assert rules.undeploy_error("11", {"12": 100}, remaining=1) is None
    assert rules.undeploy_error("11", {"11": 100}, remaining=0) is None  # the last one empties the split


def test_model_delete_refused_while_deployed_and_resources():
    assert "undeploy it" in rules.delete_model_error("models/m", ["endpoints/1"])
    assert rules.delete_model_error("models/m", []) is None
    assert "at least 1" in rules.dedicated_resources_error("n1-standard-4", 0, 1)
    assert "machineType is required" in rules.dedicated_resources_error("", 1, 1)
    assert "less than" in rules.dedicated_resources_error("n1-standard-4", 2, 1)
    assert rules.dedicated_resources_error("n1-standard-4", 1, 2) is None


@pytest.mark.parametrize("value, ok", [("fraud-scorer", True), ("_x", True), ("1abc", False), ("-a", False),
                                       ("A", False), ("a" * 64, False)])
def test_model_id(value, ok):
    assert (rules.model_id_error(value) is None) is ok


@pytest.mark.parametrize("value, ok", [("123456789", True), ("1234567890", False), ("0123", False),
                                       ("scorer-prod", True), ("Scorer", False), ("a-", False)])
def test_endpoint_id(value, ok):
    assert (rules.endpoint_id_error(value) is None) is ok


def test_create_time_series_rules():
    custom = "custom.googleapis.com/mlplat/drift"
    assert rules.create_time_series_error([(custom, {"model": "m"}, 1)]) is None
    assert "exactly one point" in rules.create_time_series_error([(custom, {}, 2)])
    assert "duplicate time series" in rules.create_time_series_error([(custom, {"a": "1"}, 1), (custom, {"a": "1"}, 1)])
    assert "at most 200" in rules.create_time_series_error([(custom, {"i": str(i)}, 1) for i in range(201)])
    assert "cannot be written" in rules.create_time_series_error(
        [("aiplatform.googleapis.com/prediction/online/prediction_count", {}, 1)])
    assert "at most 30" in rules.create_time_series_error([(custom, {f"l{i}": "v" for i in range(31)}, 1)])
    assert "label key" in rules.create_time_series_error([(custom, {"bad-key": "v"}, 1)])


def test_the_monitoring_fake_takes_a_series_that_states_its_metric_kind():
    """google.api's MetricKind arrives as a plain int on a TimeSeries; the fake names it rather than failing."""
    from google.cloud import monitoring_v3

    from tests.contract.gcp_fake.monitoring import MetricService, MonitoringState

    state = MonitoringState()
    series = monitoring_v3.TimeSeries(metric={"type": "custom.googleapis.com/mlplat/drift/share", "labels": {"model": "m"}},
                                      resource={"type": "global", "labels": {}}, metric_kind=1, value_type=3,
                                      points=[{"interval": {"end_time": {"seconds": 1_700_000_000}},
                                               "value": {"double_value": 0.25}}])
    MetricService(state).create_time_series(monitoring_v3.CreateTimeSeriesRequest(name="projects/p",
                                                                                  time_series=[series]))
    (stored,) = state.series.values()
    assert stored.kind == "GAUGE" and stored.points[-1][2] == 0.25
