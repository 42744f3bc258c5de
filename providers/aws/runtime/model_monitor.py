"""SageMaker Model Monitor data-quality schedules: opt-in (``mlplat:provider.modelMonitor.enabled``).

Model Monitor is no longer open to new customers; accounts that already use it may keep a schedule
beside the platform's own pass (``runtime/monitoring.py``), which monitors every endpoint either way.
https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-availability-change.html

A schedule reads an endpoint, and the endpoint is the runtime's (the first deploy creates it), so the
runtime creates the schedule, never ``mlplat up``. :meth:`ModelMonitorSchedules.ensure` is an idempotent
state machine, advanced after a deploy, by ``mlplat serve``'s controller and by each monitoring pass:

1. the endpoint must exist (nothing is created for an endpoint SageMaker does not list);
2. a baselining job (the analyzer image as a processing job) suggests statistics and constraints from the
   stable version's reference sample (the one the platform's pass compares with);
   https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-create-baseline.html
3. once it completed, its constraints are written again with ``monitoring_config.emit_metrics`` and the
   distribution comparison enabled and the stack's ``driftDistance`` as ``comparison_threshold``: only then
   does the schedule publish per-feature CloudWatch metrics;
   https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-byoc-constraints.html
4. a data-quality job definition on those constraints (``publish_cloudwatch_metrics`` Enabled) and the
   schedule (created, or updated to the new definition after a new version);
5. one alarm per feature on ``feature_baseline_drift_<feature>`` in ``/aws/sagemaker/Endpoints/data-metric``
   with the dimensions ``EndpointName`` and ``ScheduleName``; its threshold is the distance, not a PSI.
   https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-interpreting-cloudwatch.html
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from mlplat.errors import NotFound
from mlplat_providers.aws import plan as p
from mlplat_providers.aws.service_rules import MODEL_MONITOR_DRIFT_PREFIX, MODEL_MONITOR_NAMESPACE

MISSING = ("Could not find", "does not exist", "ResourceNotFound", "not found", "NoSuchKey")
INPUT = "/opt/ml/processing/input/baseline_dataset_input"
OUTPUT = "/opt/ml/processing/output"
ENDPOINT_INPUT = "/opt/ml/processing/input/endpoint"


def schedule_name(endpoint: str) -> str:
    return str(p.slug(f"{endpoint}-data", 63))


def baseline_job_name(endpoint: str, version: int) -> str:
    return str(p.slug(f"{endpoint[:45]}-baseline-v{int(version)}", 63))


def job_definition_name(endpoint: str, version: int) -> str:
    return str(p.slug(f"{endpoint[:50]}-data-v{int(version)}", 63))


def baseline_prefix(bucket: str, model: str, environment: str, version: int) -> str:
    return f"s3://{bucket}/monitoring/{model}/{environment}/baseline/v{int(version)}"


def baseline_job_request(*, name: str, image: str, role_arn: str, input_uri: str, output_uri: str,
                         instance_type: str, tags: list[dict[str, str]]) -> dict[str, Any]:
    """``CreateProcessingJob`` of a baselining job: the analyzer suggests statistics and constraints of a JSON
    Lines dataset (the reference sample's feature rows, shaped like the captured requests)."""
    return {
        "ProcessingJobName": name, "RoleArn": role_arn, "Tags": tags,
        "AppSpecification": {"ImageUri": image},
        "Environment": {"dataset_format": json.dumps({"json": {"lines": True}}), "dataset_source": INPUT,
                        "output_path": OUTPUT, "publish_cloudwatch_metrics": "Disabled"},
        "ProcessingInputs": [{"InputName": "baseline_dataset_input", "S3Input": {
            "S3Uri": input_uri, "LocalPath": INPUT, "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "monitoring_output", "S3Output": {
            "S3Uri": output_uri, "LocalPath": OUTPUT, "S3UploadMode": "EndOfJob"}}]},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": instance_type,
                                                  "VolumeSizeInGB": 20}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }


def emitting_constraints(constraints: dict[str, Any], distance: float) -> dict[str, Any]:
    """The baseline's suggested constraints with metric emission and the distribution comparison turned on at
    ``distance`` (the schedule publishes ``feature_baseline_drift_<feature>`` only with emit_metrics Enabled)."""
    out = copy.deepcopy(constraints)
    config = out.setdefault("monitoring_config", {})
    config["evaluate_constraints"] = "Enabled"
    config["emit_metrics"] = "Enabled"
    distribution = config.setdefault("distribution_constraints", {})
    distribution["perform_comparison"] = "Enabled"
    distribution["comparison_threshold"] = float(distance)
    return out


def constraints_problem(constraints: dict[str, Any]) -> str | None:
    """Why a schedule on ``constraints`` would publish no drift metric, or ``None``."""
    config = constraints.get("monitoring_config") or {}
    if config.get("emit_metrics") != "Enabled":
        return "the baseline constraints do not set monitoring_config.emit_metrics to Enabled: no metric is published"
    if (config.get("distribution_constraints") or {}).get("perform_comparison") != "Enabled":
        return "the baseline constraints do not enable distribution_constraints.perform_comparison: no drift is measured"
    if not constraints.get("features"):
        return "the baseline constraints name no feature"
    return None


def job_definition_request(*, name: str, image: str, endpoint: str, role_arn: str, constraints_uri: str,
                           statistics_uri: str, output_uri: str, instance_type: str,
                           tags: list[dict[str, str]]) -> dict[str, Any]:
    """``CreateDataQualityJobDefinition`` on the endpoint's capture, against the emitting constraints."""
    return {
        "JobDefinitionName": name, "RoleArn": role_arn, "Tags": tags,
        "DataQualityBaselineConfig": {"ConstraintsResource": {"S3Uri": constraints_uri},
                                      "StatisticsResource": {"S3Uri": statistics_uri}},
        "DataQualityAppSpecification": {"ImageUri": image, "Environment": {"publish_cloudwatch_metrics": "Enabled"}},
        "DataQualityJobInput": {"EndpointInput": {"EndpointName": endpoint, "LocalPath": ENDPOINT_INPUT,
                                                  "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}},
        "DataQualityJobOutputConfig": {"MonitoringOutputs": [{"S3Output": {
            "S3Uri": output_uri, "LocalPath": OUTPUT, "S3UploadMode": "EndOfJob"}}]},
        "JobResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": instance_type, "VolumeSizeInGB": 20}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 1800},
    }


def schedule_config(job_definition: str, cron: str) -> dict[str, Any]:
    return {"ScheduleConfig": {"ScheduleExpression": cron}, "MonitoringJobDefinitionName": job_definition,
            "MonitoringType": "DataQuality"}


def drift_alarm_requests(*, endpoint: str, schedule: str, features: list[str], distance: float,
                         topic_arn: str | None, tags: list[dict[str, str]]) -> list[dict[str, Any]]:
    """``PutMetricAlarm`` per feature on Model Monitor's drift distance; the schedule runs hourly at most."""
    out = []
    for feature in features:
        request: dict[str, Any] = {
            "AlarmName": p.slug(f"{endpoint}-monitor-drift-{feature}", 255),
            "AlarmDescription": f"Model Monitor measures feature {feature} of {endpoint} farther than {distance:g} "
                                "(distribution distance) from its baseline.",
            "Namespace": MODEL_MONITOR_NAMESPACE, "MetricName": f"{MODEL_MONITOR_DRIFT_PREFIX}{feature}",
            "Dimensions": [{"Name": "EndpointName", "Value": endpoint}, {"Name": "ScheduleName", "Value": schedule}],
            "Statistic": "Maximum", "Period": 3600, "EvaluationPeriods": 1, "DatapointsToAlarm": 1,
            "Threshold": float(distance), "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "missing", "Tags": tags}
        if topic_arn:
            request["AlarmActions"] = [topic_arn]
            request["OKActions"] = [topic_arn]
        out.append(request)
    return out


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class ModelMonitorSchedules:
    """The opt-in Model Monitor schedule of the stack's endpoints (see the module doc).

    ``call`` is ``AwsSession.call``; ``reference`` returns a version's reference sample (a DataFrame) or
    ``None``; ``role_arn`` and ``account`` name the platform role and the stack's account."""

    def __init__(self, spec: Any, call: Callable[..., dict[str, Any]], *, bucket: str, role_arn: str, account: str,
                 reference: Callable[[str, int], Any]):
        self.spec = spec
        self.settings = spec.provider.model_monitor
        self.call = call
        self.bucket = bucket
        self.role_arn = role_arn
        self.account = account
        self.reference = reference

    @property
    def tags(self) -> list[dict[str, str]]:
        return [{"Key": k, "Value": v} for k, v in self.spec.tags.as_dict().items()]

    def _exists(self, operation: str, **params: Any) -> dict[str, Any] | None:
        try:
            return self.call("sagemaker", operation, not_found=MISSING, **params)
        except NotFound:
            return None

    def ensure(self, model: str, environment: str, endpoint: str, version: int) -> dict[str, Any]:
        """Advance the schedule of ``endpoint`` (serving ``version`` on its stable variant) one step; idempotent.
        Returns ``{"state": "no endpoint" | "no reference" | "baselining" | "baseline failed" | "scheduled", ...}``."""
        found = self._exists("describe_endpoint", EndpointName=endpoint)
        if found is None:
            return {"state": "no endpoint", "endpoint": endpoint}
        image = p.monitor_image(self.spec.provider.region)
        prefix = baseline_prefix(self.bucket, model, environment, version)
        job = baseline_job_name(endpoint, version)
        described = self._exists("describe_processing_job", ProcessingJobName=job)
        if described is None:
            frame = self.reference(model, version)
            if frame is None:
                return {"state": "no reference", "endpoint": endpoint, "version": version}
            rows = frame.drop(columns=[c for c in frame.columns if c.startswith("__")])
            body = "\n".join(json.dumps(r, default=float) for r in rows.to_dict(orient="records")) + "\n"
            bucket, key = _split(f"{prefix}/input/reference.jsonl")
            self.call("s3", "put_object", Bucket=bucket, Key=key, Body=body.encode(),
                      what="uploading the baseline dataset")
            self.call("sagemaker", "create_processing_job", what=f"starting baselining job {job}",
                      **baseline_job_request(name=job, image=image, role_arn=self.role_arn,
                                             input_uri=f"{prefix}/input", output_uri=f"{prefix}/output",
                                             instance_type=self.settings.instance_type, tags=self.tags))
            return {"state": "baselining", "endpoint": endpoint, "job": job}
        status = described.get("ProcessingJobStatus")
        if status in ("InProgress", "Stopping"):
            return {"state": "baselining", "endpoint": endpoint, "job": job}
        if status != "Completed":
            return {"state": "baseline failed", "endpoint": endpoint, "job": job,
                    "reason": described.get("FailureReason") or status}
        bucket, key = _split(f"{prefix}/output/constraints.json")
        try:
            suggested = json.loads(self.call("s3", "get_object", Bucket=bucket, Key=key, not_found=("NoSuchKey",),
                                             what="reading the baseline's constraints")["Body"].read())
        except NotFound:
            return {"state": "baseline failed", "endpoint": endpoint, "job": job,
                    "reason": f"the baselining job completed without writing s3://{bucket}/{key}"}
        constraints = emitting_constraints(suggested, self.settings.drift_distance)
        problem = constraints_problem(constraints)
        if problem:
            return {"state": "baseline failed", "endpoint": endpoint, "job": job, "reason": problem}
        _, emitting_key = _split(f"{prefix}/emitting/constraints.json")
        self.call("s3", "put_object", Bucket=bucket, Key=emitting_key, Body=json.dumps(constraints).encode(),
                  what="writing the emitting constraints")
        definition = job_definition_name(endpoint, version)
        if self._exists("describe_data_quality_job_definition", JobDefinitionName=definition) is None:
            self.call("sagemaker", "create_data_quality_job_definition", what=f"creating {definition}",
                      **job_definition_request(
                          name=definition, image=image, endpoint=endpoint, role_arn=self.role_arn,
                          constraints_uri=f"s3://{bucket}/{emitting_key}",
                          statistics_uri=f"{prefix}/output/statistics.json",
                          output_uri=f"s3://{self.bucket}/monitoring/{model}/{environment}/reports",
                          instance_type=self.settings.instance_type, tags=self.tags))
        schedule = schedule_name(endpoint)
        config = schedule_config(definition, p.monitoring_cron(self.spec.monitoring.schedule))
        current = self._exists("describe_monitoring_schedule", MonitoringScheduleName=schedule)
        if current is None:
            self.call("sagemaker", "create_monitoring_schedule", MonitoringScheduleName=schedule,
                      MonitoringScheduleConfig=config, Tags=self.tags, what=f"creating schedule {schedule}")
        elif (current.get("MonitoringScheduleConfig") or {}).get("MonitoringJobDefinitionName") != definition:
            self.call("sagemaker", "update_monitoring_schedule", MonitoringScheduleName=schedule,
                      MonitoringScheduleConfig=config, what=f"moving schedule {schedule} to {definition}")
        topic = f"arn:aws:sns:{self.spec.provider.region}:{self.account}:{p.alert_topic_name(p.stack_plan(self.spec))}"
        alarms = drift_alarm_requests(endpoint=endpoint, schedule=schedule,
                                      features=[f["name"] for f in constraints["features"] if f.get("name")],
                                      distance=self.settings.drift_distance, topic_arn=topic, tags=self.tags)
        for alarm in alarms:
            self.call("cloudwatch", "put_metric_alarm", what=f"creating alarm {alarm['AlarmName']}", **alarm)
        return {"state": "scheduled", "endpoint": endpoint, "schedule": schedule, "job_definition": definition,
                "alarms": [a["AlarmName"] for a in alarms]}
