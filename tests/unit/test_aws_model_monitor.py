"""The opt-in Model Monitor schedule: baseline first, constraints that emit metrics, a schedule only on an endpoint
that exists, alarms on the metric Model Monitor publishes. AWS is a JSON-backed fake at the ``call`` boundary
that validates every request against botocore's service model (moto implements no monitoring schedule)."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from botocore.session import get_session
from botocore.validate import ParamValidator

from mlplat.errors import NotFound
from mlplat.stack import load_stack
from mlplat_providers.aws import service_rules as r
from mlplat_providers.aws.runtime import model_monitor as mm
from tests.conftest import REPO, write_project

ENDPOINT = "mlplat-fraud-production-card-scorer"
SUGGESTED = {"version": 0.0, "features": [{"name": "income", "inferred_type": "Fractional"},
                                          {"name": "age", "inferred_type": "Integral"}],
             "monitoring_config": {"evaluate_constraints": "Enabled", "emit_metrics": "Disabled",
                                   "distribution_constraints": {"perform_comparison": "Disabled",
                                                                "comparison_threshold": 0.1}}}


class FakeAws:
    """What SageMaker, S3 and CloudWatch hold, answering ``AwsSession.call``; every request checked first."""

    def __init__(self):
        self.session = get_session()
        self.endpoints: set[str] = set()
        self.jobs: dict[str, str] = {}
        self.definitions: set[str] = set()
        self.schedules: dict[str, dict] = {}
        self.objects: dict[tuple[str, str], bytes] = {}
        self.alarms: dict[str, dict] = {}
        self.sent: list[tuple[str, str, dict]] = []

    def call(self, service, operation, *, not_found=(), what=None, **params):
        model = self.session.get_service_model(service)
        api = {o: o for o in model.operation_names}
        name = next(o for o in api if o.lower() == operation.replace("_", ""))
        report = ParamValidator().validate(params, model.operation_model(name).input_shape)
        assert not report.has_errors(), report.generate_report()
        self.sent.append((service, operation, params))
        if operation == "describe_endpoint":
            if params["EndpointName"] not in self.endpoints:
                raise NotFound("Could not find endpoint")
            return {"EndpointName": params["EndpointName"], "EndpointStatus": "InService"}
        if operation == "describe_processing_job":
            if params["ProcessingJobName"] not in self.jobs:
                raise NotFound("Could not find job")
            return {"ProcessingJobStatus": self.jobs[params["ProcessingJobName"]]}
        if operation == "create_processing_job":
            self.jobs[params["ProcessingJobName"]] = "InProgress"
            return {}
        if operation == "put_object":
            self.objects[(params["Bucket"], params["Key"])] = params["Body"]
            return {}
        if operation == "get_object":
            return {"Body": io.BytesIO(self.objects[(params["Bucket"], params["Key"])])}
        if operation == "describe_data_quality_job_definition":
            if params["JobDefinitionName"] not in self.definitions:
                raise NotFound("Could not find job definition")
            return {}
        if operation == "create_data_quality_job_definition":
            self.definitions.add(params["JobDefinitionName"])
            return {}
        if operation == "describe_monitoring_schedule":
            if params["MonitoringScheduleName"] not in self.schedules:
                raise NotFound("Could not find schedule")
            return {"MonitoringScheduleConfig": self.schedules[params["MonitoringScheduleName"]]}
        if operation in ("create_monitoring_schedule", "update_monitoring_schedule"):
            self.schedules[params["MonitoringScheduleName"]] = params["MonitoringScheduleConfig"]
            return {}
        if operation == "put_metric_alarm":
            self.alarms[params["AlarmName"]] = params
            return {}
        raise AssertionError(f"unexpected {service}.{operation}")

    def creates(self) -> list[str]:
        return [op for _s, op, _p in self.sent if op.startswith(("create_", "update_", "put_metric_alarm"))]


@pytest.fixture
def spec(tmp_path):
    text = (REPO / "stacks" / "Pulumi.fraud-prod.yaml").read_text().replace(
        "    kind: aws\n", "    kind: aws\n    modelMonitor: {enabled: true, driftDistance: 0.15}\n", 1)
    return load_stack("fraud-prod", write_project(tmp_path / "p", {"fraud-prod": text}))


def schedules(spec, aws, reference=True):
    frame = pd.DataFrame({"income": [1.0, 2.0], "age": [30, 40], "__prediction__": [0.1, 0.9]})
    return mm.ModelMonitorSchedules(spec, aws.call, bucket="mlplat-fraud-production-artifacts", account="123456789012",
                                    role_arn="arn:aws:iam::123456789012:role/mlplat-fraud-production-platform",
                                    reference=lambda model, version: frame if reference else None)


def test_model_monitor_is_off_unless_a_stack_opts_in(spec):
    assert load_stack("fraud-prod", REPO).provider.model_monitor.enabled is False
    assert spec.provider.model_monitor.enabled is True and spec.provider.model_monitor.drift_distance == 0.15


def test_nothing_is_created_for_an_endpoint_that_does_not_exist(spec):
    aws = FakeAws()
    assert schedules(spec, aws).ensure("card-scorer", "production", ENDPOINT, 1)["state"] == "no endpoint"
    assert aws.creates() == []


def test_baseline_first_then_a_schedule_whose_constraints_emit_metrics_then_alarms_per_feature(spec):
    aws = FakeAws()
    aws.endpoints.add(ENDPOINT)
    mon = schedules(spec, aws)
    started = mon.ensure("card-scorer", "production", ENDPOINT, 1)
    assert started["state"] == "baselining" and aws.creates() == ["create_processing_job"]
    job = next(p for _s, op, p in aws.sent if op == "create_processing_job")
    assert job["Environment"]["publish_cloudwatch_metrics"] == "Disabled"
    assert job["AppSpecification"]["ImageUri"].endswith("sagemaker-model-monitor-analyzer")
    uploaded = aws.objects[("mlplat-fraud-production-artifacts",
                            "monitoring/card-scorer/production/baseline/v1/input/reference.jsonl")]
    assert [json.loads(line) for line in uploaded.decode().splitlines()] == [{"income": 1.0, "age": 30},
                                                                           {"income": 2.0, "age": 40}]

    assert mon.ensure("card-scorer", "production", ENDPOINT, 1)["state"] == "baselining"  # still running
    assert aws.creates() == ["create_processing_job"]

    aws.jobs[started["job"]] = "Completed"
    aws.objects[("mlplat-fraud-production-artifacts",
                 "monitoring/card-scorer/production/baseline/v1/output/constraints.json")] = json.dumps(SUGGESTED).encode()
    done = mon.ensure("card-scorer", "production", ENDPOINT, 1)
    assert done["state"] == "scheduled"
    definition = next(p for _s, op, p in aws.sent if op == "create_data_quality_job_definition")
    constraints_uri = definition["DataQualityBaselineConfig"]["ConstraintsResource"]["S3Uri"]
    bucket, key = constraints_uri.removeprefix("s3://").split("/", 1)
    emitted = json.loads(aws.objects[(bucket, key)])
    assert mm.constraints_problem(emitted) is None
    assert emitted["monitoring_config"]["distribution_constraints"]["comparison_threshold"] == 0.15
    assert definition["DataQualityAppSpecification"]["Environment"] == {"publish_cloudwatch_metrics": "Enabled"}
    assert definition["DataQualityJobInput"]["EndpointInput"]["EndpointName"] == ENDPOINT
    assert aws.schedules[done["schedule"]]["MonitoringJobDefinitionName"] == definition["JobDefinitionName"]

    publisher = r.Publisher("Model Monitor", r.MODEL_MONITOR_NAMESPACE,
                            frozenset({r.MODEL_MONITOR_DRIFT_PREFIX + "*"}), frozenset({"EndpointName", "ScheduleName"}),
                            {"EndpointName": frozenset({ENDPOINT}), "ScheduleName": frozenset({done["schedule"]})})
    assert sorted(a["MetricName"] for a in aws.alarms.values()) == ["feature_baseline_drift_age",
                                                                    "feature_baseline_drift_income"]
    for alarm in aws.alarms.values():
        dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        assert dims == {"EndpointName": ENDPOINT, "ScheduleName": done["schedule"]}
        assert r.alarm_metric_problem(alarm["Namespace"], alarm["MetricName"], dims, [publisher]) is None
        assert alarm["Threshold"] == 0.15 and alarm["AlarmActions"][0].endswith(":mlplat-fraud-production-alerts")

    before = aws.creates().count("create_monitoring_schedule")
    assert mon.ensure("card-scorer", "production", ENDPOINT, 1)["state"] == "scheduled"  # idempotent
    assert aws.creates().count("create_monitoring_schedule") == before == 1
    assert aws.creates().count("create_data_quality_job_definition") == 1


def test_a_new_version_gets_its_own_baseline_and_moves_the_schedule(spec):
    aws = FakeAws()
    aws.endpoints.add(ENDPOINT)
    mon = schedules(spec, aws)
    for version in (1, 2):
        job = mon.ensure("card-scorer", "production", ENDPOINT, version)["job"]
        aws.jobs[job] = "Completed"
        aws.objects[("mlplat-fraud-production-artifacts", f"monitoring/card-scorer/production/baseline/v{version}/"
                     "output/constraints.json")] = json.dumps(SUGGESTED).encode()
        assert mon.ensure("card-scorer", "production", ENDPOINT, version)["state"] == "scheduled"
    assert [op for op in aws.creates() if "schedule" in op] == ["create_monitoring_schedule",
                                                               "update_monitoring_schedule"]
    assert aws.schedules[mm.schedule_name(ENDPOINT)]["MonitoringJobDefinitionName"] == \
        mm.job_definition_name(ENDPOINT, 2)


def test_a_failed_baseline_or_no_reference_schedules_nothing(spec):
    aws = FakeAws()
    aws.endpoints.add(ENDPOINT)
    assert schedules(spec, aws, reference=False).ensure("card-scorer", "production", ENDPOINT, 1)["state"] == \
        "no reference"
    assert aws.creates() == []
    job = schedules(spec, aws).ensure("card-scorer", "production", ENDPOINT, 1)["job"]
    aws.jobs[job] = "Failed"
    failed = schedules(spec, aws).ensure("card-scorer", "production", ENDPOINT, 1)
    assert failed["state"] == "baseline failed" and aws.creates() == ["create_processing_job"]


def test_constraints_that_do_not_emit_are_refused():
    assert "emit_metrics" in mm.constraints_problem(SUGGESTED)
    assert mm.constraints_problem(mm.emitting_constraints(SUGGESTED, 0.2)) is None
    assert "no feature" in mm.constraints_problem(mm.emitting_constraints({**SUGGESTED, "features": []}, 0.2))
    assert SUGGESTED["monitoring_config"]["emit_metrics"] == "Disabled"  # the suggestion itself is not changed
