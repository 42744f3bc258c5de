"""CloudWatch's documented limits for published metrics, which alarms can see data, and how the AWS monitor
reads SageMaker's data capture and names what it publishes. No AWS and no moto: rules and pure functions."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from mlplat_providers.aws import plan as p
from mlplat_providers.aws import service_rules as r
from mlplat_providers.aws.runtime import monitoring as m

NOW = 1_800_000_000.0


def datum(**extra):
    return {"MetricName": "FeatureDriftPSI", "Dimensions": [{"Name": "Model", "Value": "scorer"}], "Value": 0.3,
            **extra}


# --- PutMetricData --------------------------------------------------------------------------------


@pytest.mark.parametrize("namespace, problem", [
    ("mlplat/Models", None),
    ("AWS/SageMaker", "begins with 'AWS/'"),
    ("", "has 0 characters"),
    ("x" * 256, "has 256 characters"),
    ("mlplat/Modèles", "non-ASCII"),
    ("mlplat\tModels", "control characters"),
    ("   ", "no non-whitespace"),
])
def test_namespace(namespace, problem):
    found = r.namespace_problem(namespace)
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize("dimension, problem", [
    ({"Name": "Feature", "Value": "x" * 1024}, None),
    ({"Name": "Feature", "Value": "x" * 1025}, "has 1025 characters"),
    ({"Name": "F" * 256, "Value": "v"}, "has 256 characters"),
    ({"Name": ":Feature", "Value": "v"}, "begins with a colon"),
    ({"Name": "Feature", "Value": "âge"}, "non-ASCII"),
    ({"Name": "Feature", "Value": " "}, "no non-whitespace"),
    ({"Name": "Feature"}, "is not"),
])
def test_dimension(dimension, problem):
    found = r.dimension_problem(dimension)
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize("extra, problem", [
    ({}, None),
    ({"Value": float("nan")}, "NaN or infinity"),
    ({"Value": float("inf")}, "NaN or infinity"),
    ({"Value": 2.0 ** 361}, "outside -2^360 to 2^360"),
    ({"Dimensions": [{"Name": f"d{i}", "Value": "v"} for i in range(31)]}, "31 dimensions"),
    ({"Dimensions": [{"Name": "Model", "Value": "a"}, {"Name": "Model", "Value": "b"}]}, "names a dimension twice"),
    ({"StorageResolution": 30}, "StorageResolution 30"),
    ({"Timestamp": dt.datetime.fromtimestamp(NOW - 15 * 86_400, dt.UTC)}, "two weeks"),
    ({"Timestamp": dt.datetime.fromtimestamp(NOW + 3 * 3_600, dt.UTC)}, "two hours"),
    ({"Timestamp": dt.datetime.fromtimestamp(NOW - 13 * 86_400, dt.UTC)}, None),
    ({"MetricName": "x" * 256}, "has 256 characters"),
])
def test_metric_datum(extra, problem):
    found = r.metric_datum_problems(datum(**extra), now=NOW)
    assert found == [] if problem is None else any(problem in f for f in found), found


def test_values_and_counts():
    values = {k: v for k, v in datum().items() if k != "Value"}
    assert r.metric_datum_problems({**values, "Values": [1.0] * 150, "Counts": [1.0] * 150}, now=NOW) == []
    assert any("151 Values" in f for f in r.metric_datum_problems({**values, "Values": [1.0] * 151}, now=NOW))
    assert any("2 Counts for 3 Values" in f
               for f in r.metric_datum_problems({**values, "Values": [1.0, 2.0, 3.0], "Counts": [1, 1]}, now=NOW))
    assert any("exactly one of" in f for f in r.metric_datum_problems(values, now=NOW))


def test_a_request_takes_at_most_1000_data_and_1_mb():
    assert r.put_metric_data_problems({"Namespace": "mlplat/Models", "MetricData": [datum()] * 1000}, now=NOW) == []
    assert any("1001 metric data" in f for f in
               r.put_metric_data_problems({"Namespace": "mlplat/Models", "MetricData": [datum()] * 1001}, now=NOW))
    big = datum(Dimensions=[{"Name": f"d{i}", "Value": "v" * 1024} for i in range(30)])
    assert any("1 MB" in f for f in
               r.put_metric_data_problems({"Namespace": "mlplat/Models", "MetricData": [big] * 40}, now=NOW))
    assert any("1 to 1000" in f for f in r.put_metric_data_problems({"Namespace": "mlplat/Models",
                                                                     "MetricData": []}, now=NOW))


# --- alarms watch what something publishes ------------------------------------------------------------


@pytest.fixture
def fraud():
    from mlplat.stack import load_stack
    from tests.conftest import REPO

    return load_stack("fraud-prod", REPO)


def test_alarm_metrics_must_be_published_exactly(fraud):
    publishers = p.publishers(fraud)
    dims = p.platform_dimensions("card-scorer", "production", "primary")
    assert r.alarm_metric_problem(p.PLATFORM_NAMESPACE, p.DRIFT_ALARM_METRIC, dims, publishers) is None
    assert r.alarm_metric_problem(p.PLATFORM_NAMESPACE, p.FEATURE_DRIFT_METRIC,
                                  {**dims, "Feature": "income"}, publishers) is None
    # a variant the runtime never creates, a missing dimension, an unknown name: no data, ever
    for namespace, metric, wrong in [
        (p.PLATFORM_NAMESPACE, p.DRIFT_ALARM_METRIC, {**dims, "Variant": "v7-blue"}),
        (p.PLATFORM_NAMESPACE, p.DRIFT_ALARM_METRIC, {"Model": "card-scorer"}),
        (p.PLATFORM_NAMESPACE, "feature_baseline_drift_total", dims),
        ("AWS/SageMaker", "Invocations", {"EndpointName": "e", "VariantName": "AllTraffic"}),
        (p.PLATFORM_NAMESPACE, "CostUSD", {"Team": "payments", "Environment": "production"}),
    ]:
        assert "nothing publishes" in r.alarm_metric_problem(namespace, metric, wrong, publishers)
    assert r.alarm_metric_problem("AWS/SageMaker", "ModelLatency", {"EndpointName": "e", "VariantName": "canary"},
                                  publishers) is None
    assert r.alarm_metric_problem(p.PLATFORM_NAMESPACE, "CostUSD", p.team_dimensions("fraud", "production"),
                                  publishers) is None


def test_model_monitor_publishes_per_feature_drift_only_under_its_own_dimensions():
    monitor = r.Publisher("Model Monitor", r.MODEL_MONITOR_NAMESPACE, frozenset({r.MODEL_MONITOR_DRIFT_PREFIX + "*"}),
                          frozenset({"EndpointName", "ScheduleName"}))
    dims = {"EndpointName": "e", "ScheduleName": "e-data"}
    assert r.alarm_metric_problem(r.MODEL_MONITOR_NAMESPACE, "feature_baseline_drift_income", dims, [monitor]) is None
    assert r.alarm_metric_problem(r.MODEL_MONITOR_NAMESPACE, "feature_baseline_drift_", dims, [monitor])
    assert r.alarm_metric_problem(r.MODEL_MONITOR_NAMESPACE, "feature_baseline_drift_income",
                                  {"Endpoint": "e", "MonitoringSchedule": "e-data"}, [monitor])


def test_every_platform_metric_the_pass_can_send_is_one_cloudwatch_takes():
    names = p.PLATFORM_METRICS
    assert all(r._ascii_text_problem(n, "metric name", r.MAX_NAME) is None for n in names)
    assert r.namespace_problem(p.PLATFORM_NAMESPACE) is None


@pytest.mark.parametrize("schedule, period", [("15m", 900), ("30s", 60), ("90s", 120), ("2d", 86_400)])
def test_platform_alarm_period(fraud, schedule, period):
    spec = fraud.model_copy(update={"monitoring": fraud.monitoring.model_copy(update={"schedule": schedule})})
    assert p.platform_alarm_period(spec) == period


# --- SageMaker's data capture ---------------------------------------------------------------------------


KEY = "data-capture/scorer/production/mlplat-fraud-production-scorer/canary/2026/01/02/03/12-34-56-789-abc.jsonl"


def line(**meta):
    return json.dumps({
        "captureData": {
            "endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                              "data": json.dumps({"x0": 1.5}), "encoding": "JSON"},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                               "data": "eyJwcmVkaWN0aW9ucyI6IFsxXX0=", "encoding": "BASE64"}},
        "eventMetadata": {"eventId": "evt-1", "inferenceTime": "2026-01-02T03:04:05Z", **meta},
        "eventVersion": "0"})


def test_capture_keys_name_model_environment_and_variant():
    assert m.capture_location(KEY) == ("scorer", "production", "canary")
    assert m.capture_location(KEY.replace("data-capture/scorer", "data-capture/team/scorer")) == \
        ("team/scorer", "production", "canary")
    assert m.capture_location("data-capture/scorer/production/x.jsonl") is None
    assert m.capture_location("monitoring/scorer/production/e/primary/2026/01/02/03/f.jsonl") is None
    assert m.capture_location(KEY[:-6] + ".json") is None


def test_a_capture_line_reads_json_and_base64_payloads_and_the_inference_id():
    record = m.parse_capture_line(line(inferenceId="inf-9"), "scorer", "production", "canary")
    assert record is not None
    assert (record.event_id, record.inference_id, record.inputs, record.outputs) == \
        ("evt-1", "inf-9", {"x0": 1.5}, {"predictions": [1]})
    assert record.ts == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC).timestamp()
    assert m.parse_capture_line(line(), "scorer", "production", "canary").inference_id is None
    assert m.parse_capture_line("not json", "s", "p", "v") is None
    assert m.parse_capture_line(json.dumps({"captureData": {}}), "s", "p", "v") is None


def test_which_version_a_variant_served():
    rows = [m.Served(1, "primary", 0, 100), m.Served(1, "stable", 100, 300), m.Served(2, "canary", 100, 300),
            m.Served(3, "shadow", 150, None), m.Served(2, "primary", 300, None)]
    assert m.version_at(rows, "primary", 50) == 1
    assert m.version_at(rows, "primary", 200) == 1 and m.version_at(rows, "canary", 200) == 2
    assert m.version_at(rows, "primary", 400) == 2 and m.version_at(rows, "canary", 400) is None
    assert m.version_at(rows, "shadow", 200) == 3 and m.version_at(rows, "shadow", 120) is None
    ab = [m.Served(4, "v4", 0, None), m.Served(5, "v5", 10, None), m.Served(6, "v6", 20, None)]
    assert (m.version_at(ab, "primary", 30), m.version_at(ab, "canary", 30), m.version_at(ab, "v6", 30)) == (4, 6, 6)
    assert m.version_at(rows, "primary", -1) is None


def test_a_pass_becomes_metric_data_of_its_variant_and_data_cloudwatch_refuses_are_left_out(fraud):
    monitor = object.__new__(m.AwsMonitor)  # naming only: no session, no ledger
    monitor.spec = fraud
    monitor.variant_of = lambda model, version, environment: "canary"
    report = {"ts": NOW, "cost": {"cost.usd": 12.5, "cost.budget_share": 0.4}, "windows": [{
        "model": "card-scorer", "version": 2, "environment": "production", "metrics": {"quality.accuracy": 0.9},
        "drift": {"verdict": "ok", "rows": 120, "share": 0.25, "features": [
            {"feature": "income", "psi": 0.31}, {"feature": "âge", "psi": 0.05}, {"feature": "city", "psi": None},
            {"feature": "__prediction__", "psi": 0.9}]}}]}
    [request], skipped = monitor.requests(report)
    got = {(d["MetricName"], tuple(x["Value"] for x in d["Dimensions"])): d["Value"] for d in request["MetricData"]}
    dims = ("card-scorer", "production", "canary")
    assert got == {("FeatureDriftPSI", (*dims, "income")): 0.31, ("FeatureDriftMaxPSI", dims): 0.31,
                   ("DriftedFeatureShare", dims): 0.25, ("Predictions", dims): 120.0, ("Accuracy", dims): 0.9,
                   ("CostUSD", ("fraud", "production")): 12.5, ("BudgetShare", ("fraud", "production")): 0.4}
    assert len(skipped) == 1 and "non-ASCII" in skipped[0]
    assert r.put_metric_data_problems(request, now=NOW) == []
    from botocore.session import get_session
    from botocore.validate import ParamValidator

    shape = get_session().get_service_model("cloudwatch").operation_model("PutMetricData").input_shape
    assert not ParamValidator().validate(request, shape).has_errors()


def test_an_unjudged_window_publishes_no_drift():
    monitor = object.__new__(m.AwsMonitor)
    monitor.spec = type("S", (), {"team": "fraud", "environment": "production"})()
    monitor.variant_of = lambda *a: "primary"
    report = {"ts": NOW, "windows": [{"model": "s", "version": 1, "environment": "production", "metrics": {},
                                      "drift": {"verdict": "no reference", "rows": 3}}]}
    assert monitor.metric_data(report) == []


def test_the_canary_judge_reads_what_the_pass_published_per_variant(monkeypatch):
    """The canary's window carries the newest drift and accuracy the platform's pass published for each
    variant since the rollout began (moto's CloudWatch; every request checked against botocore's model)."""
    import boto3
    from botocore.validate import ParamValidator
    from moto import mock_aws

    from mlplat_providers.aws.runtime.serving import CloudWatchCanaryMetrics
    from mlplat_providers.aws.runtime.session import call
    from tests.contract import moto_support as ms

    ms.use_fake_aws(monkeypatch)
    now = dt.datetime.now(dt.UTC).timestamp()  # CloudWatch keeps data for a time: the numbers are relative to now
    rollout = {"model": "scorer", "environment": "production", "created_at": now - 1800, "step_started_at": now - 600}
    with mock_aws():
        cw = boto3.client("cloudwatch", region_name=ms.REGION)
        problems = []

        def check(params, model, **_):
            report = ParamValidator().validate(params, model.input_shape)
            problems.extend([report.generate_report()] if report.has_errors() else [])

        cw.meta.events.register("provide-client-params.cloudwatch.GetMetricData", check)

        def put(variant, name, value, at):
            dims = [{"Name": k, "Value": v} for k, v in p.platform_dimensions("scorer", "production", variant).items()]
            cw.put_metric_data(Namespace=p.PLATFORM_NAMESPACE, MetricData=[{
                "MetricName": name, "Dimensions": dims, "Value": value,
                "Timestamp": dt.datetime.fromtimestamp(at, dt.UTC)}])

        put("canary", p.DRIFT_ALARM_METRIC, 0.9, now - 3600)  # before the rollout: not this canary's
        put("canary", p.DRIFT_ALARM_METRIC, 0.41, now - 900)
        put("canary", "Accuracy", 0.7, now - 900)
        put("primary", "Accuracy", 0.85, now - 900)
        source = CloudWatchCanaryMetrics(lambda service, operation, **params: call(cw, operation, **params),
                                         lambda model, environment: "mlplat-fraud-production-scorer",
                                         lambda endpoint: [])
        assert source.platform_metrics(rollout, now) == {"canary": {p.DRIFT_ALARM_METRIC: 0.41, "Accuracy": 0.7},
                                                         "primary": {"Accuracy": 0.85}}
        assert problems == []


def test_the_policy_pack_counts_the_platforms_pass_as_an_endpoints_monitoring_schedule():
    from mlplat_policies import rules as pol

    def declared(**extra):
        return pol.Resource(pol.T_SERVING_DECLARATION, "serving", {"endpoints": [{"endpointName": "e", **extra}]})

    assert pol._monitored_endpoints([declared(monitorSchedule="15m")]) == {"e"}
    assert pol._monitored_endpoints([declared()]) == set()  # declared without a pass: reported as unmonitored
