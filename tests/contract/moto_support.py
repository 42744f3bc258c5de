"""What the AWS tests need from moto, and what moto lacks.

moto 5 does not implement SageMaker's ``UpdateEndpoint``, drops ``ShadowProductionVariants``
from endpoint configurations, and answers no value for CloudWatch percentile statistics
(``p95``) in ``GetMetricData``. :func:`install_sagemaker_gaps` adds both to moto's
SageMaker backend (in this process: ``mock_aws`` and ``ThreadedMotoServer`` alike),
doing what SageMaker documents: the endpoint takes the new configuration's variants
and weights, and refuses a deployment configuration when the variant names change; percentiles are interpolated over the published samples. The request shapes themselves are pinned with botocore's Stubber in
tests/integration/test_aws_runtime_shapes.py.
"""
from __future__ import annotations

import os
from pathlib import Path

from tests.contract.cloud_stack_support import APPROVERS, cloud_stack_text

REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_SECURITY_TOKEN": "testing", "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}
CLEARED = ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL")

_installed = False


def install_sagemaker_gaps() -> None:
    global _installed
    if _installed:
        return
    from moto.core.common_models import BaseModel  # noqa: F401  (moto imported before patching)
    from moto.core.responses import ActionResult
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.responses import SageMakerResponse

    shadows: dict[tuple[str, str], list] = {}

    def update_endpoint(self):
        backend = self.sagemaker_backend
        name, config_name = self._get_param("EndpointName"), self._get_param("EndpointConfigName")
        endpoint = backend.endpoints.get(name)
        config = backend.endpoint_configs.get(config_name)
        if endpoint is None or config is None:
            raise ValidationError(message=f"Could not find endpoint '{name}' or configuration '{config_name}'.")
        if self._get_param("DeploymentConfig"):
            # deployment guardrails need the same variant names in the old and the new configuration
            old = backend.endpoint_configs[endpoint.endpoint_config_name]
            names = [{v["VariantName"] for v in c.production_variants} for c in (old, config)]
            if names[0] != names[1]:
                raise ValidationError(message="A DeploymentConfig needs the same variant names in the current and "
                                              f"the new endpoint configuration ({sorted(names[0])} vs {sorted(names[1])}).")
        endpoint.endpoint_config_name = config_name
        endpoint.production_variants = endpoint._process_production_variants(config.production_variants)
        return ActionResult({"EndpointArn": endpoint.arn})

    original_create = SageMakerResponse.create_endpoint_config
    original_describe = SageMakerResponse.describe_endpoint_config

    def create_endpoint_config(self):
        result = original_create(self)
        shadow = self._get_param("ShadowProductionVariants")
        if shadow:
            shadows[(self.current_account, self._get_param("EndpointConfigName"))] = shadow
        return result

    def describe_endpoint_config(self):
        result = original_describe(self)
        shadow = shadows.get((self.current_account, self._get_param("EndpointConfigName")))
        if shadow:
            body = getattr(result, "result", None)
            if isinstance(body, dict):
                body["ShadowProductionVariants"] = shadow
        return result

    from moto.cloudwatch.models import Statistics

    original_stat = Statistics.get_statistics_for_type

    def get_statistics_for_type(self, stat):
        # moto answers None for percentile statistics (p95); CloudWatch interpolates over the samples
        if isinstance(stat, str) and stat.startswith("p") and stat[1:].replace(".", "", 1).isdigit():
            values = sorted(self.metric_single_values_list)
            if not values:
                return None
            k = (len(values) - 1) * float(stat[1:]) / 100
            lo, hi = int(k), min(int(k) + 1, len(values) - 1)
            return values[lo] + (values[hi] - values[lo]) * (k - lo)
        return original_stat(self, stat)

    Statistics.get_statistics_for_type = get_statistics_for_type
    SageMakerResponse.update_endpoint = update_endpoint
    SageMakerResponse.create_endpoint_config = create_endpoint_config
    SageMakerResponse.describe_endpoint_config = describe_endpoint_config
    _installed = True


def aws_env(endpoint_url: str | None = None) -> dict[str, str]:
    env = dict(FAKE_CREDENTIALS)
    if endpoint_url:
        env["AWS_ENDPOINT_URL"] = endpoint_url
    return env


def use_fake_aws(monkeypatch, endpoint_url: str | None = None) -> None:
    for key in CLEARED:
        monkeypatch.delenv(key, raising=False)
    for key, value in aws_env(endpoint_url).items():
        monkeypatch.setenv(key, value)


def aws_stack_text(*, environment: str = "production", account: str | None = ACCOUNT, risk: str = "critical",
                   approvers: str = APPROVERS, extra: str = "") -> str:
    return cloud_stack_text(
        cloud_config=[f"  aws:region: {REGION}"],
        provider=["    kind: aws", f"    region: {REGION}", *([f'    accountId: "{account}"'] if account else [])],
        instance_type="ml.m5.large", price_per_hour="0.115",
        environment=environment, risk=risk, approvers=approvers, extra=extra)


def provision_cloud(spec) -> None:
    """What `mlplat up` creates and the runtime expects: the artifact bucket and the rollback alarms (one per
    guarded variant and metric, named and dimensioned as the program makes them), and the platform's state on
    this machine, which `up` creates once Pulumi is done (reads never create it)."""
    import boto3

    from mlplat_providers.aws.plan import rollback_alarms, slug, stack_plan
    from mlplat_providers.aws.runtime.state import AwsState

    AwsState(spec.state_dir, None).ensure()

    plan = stack_plan(spec)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=plan.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    cw = boto3.client("cloudwatch", region_name=REGION)
    for model in ("scorer",):
        endpoint = slug(f"{plan.prefix}-{model}", 55)
        for name, variant, alarm in rollback_alarms(spec, endpoint):
            cw.put_metric_alarm(AlarmName=name, Namespace=alarm.namespace, MetricName=alarm.metric, Statistic="Sum",
                                Period=60, EvaluationPeriods=1, Threshold=float(alarm.threshold),
                                ComparisonOperator="GreaterThanThreshold",
                                Dimensions=[{"Name": "EndpointName", "Value": endpoint},
                                            {"Name": "VariantName", "Value": variant}])


def put_variant_metrics(endpoint: str, variant: str, *, invocations: int, errors: int = 0,
                        latency_ms: float = 5.0) -> None:
    """What SageMaker publishes for a variant (``primary``, ``canary``) that served traffic."""
    import boto3

    cw = boto3.client("cloudwatch", region_name=REGION)
    dims = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]
    cw.put_metric_data(Namespace="AWS/SageMaker", MetricData=[
        {"MetricName": "Invocations", "Dimensions": dims, "Value": float(invocations), "Unit": "Count"},
        {"MetricName": "Invocation5XXErrors", "Dimensions": dims, "Value": float(errors), "Unit": "Count"},
        {"MetricName": "ModelLatency", "Dimensions": dims, "Value": latency_ms * 1000.0, "Unit": "Microseconds"},
    ])


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


__all__ = ["REGION", "ACCOUNT", "install_sagemaker_gaps", "aws_env", "use_fake_aws", "aws_stack_text",
           "provision_cloud", "put_variant_metrics", "os"]
