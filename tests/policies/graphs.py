"""Small hand-built resource graphs in the shape the policy pack reads (Pulumi input props, camelCase)."""
from __future__ import annotations

import copy
import json

from mlplat_policies.rules import Resource

TAGS = {"team": "fraud", "cost-center": "CC-1", "environment": "production", "owner": "o@example.com"}
SERVER = "mlplat-fraud-mlflow"
SERVER_ARN = f"arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/{SERVER}"


def r(type_: str, logical: str, **props) -> Resource:
    return Resource(type=type_, name=logical, props=props, urn=f"urn:pulumi:s::mlplat::{type_}::{logical}")


def pipeline(tracking_uri: str = SERVER_ARN, status: str = "PendingManualApproval", instance: str = "ml.m5.xlarge",
             group: str = "fraud-card") -> Resource:
    definition = {"Version": "2020-12-01", "Steps": [
        {"Name": "Train", "Type": "Training", "Arguments": {
            "ResourceConfig": {"InstanceType": instance, "InstanceCount": 1},
            "Environment": {"MLFLOW_TRACKING_URI": tracking_uri}}},
        {"Name": "Gate", "Type": "Condition", "Arguments": {"IfSteps": [
            {"Name": "Register", "Type": "RegisterModel",
             "Arguments": {"ModelPackageGroupName": group, "ModelApprovalStatus": status}}]}},
    ]}
    return r("aws:sagemaker/pipeline:Pipeline", "train", pipelineName="train", tags=TAGS,
             pipelineDefinition=json.dumps(definition))


def approval_rule(group: str = "fraud-card", status=("Approved",)) -> Resource:
    pattern = {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"],
               "detail": {"ModelPackageGroupName": [group], "ModelApprovalStatus": list(status)}}
    return r("aws:cloudwatch/eventRule:EventRule", "approved", name="approved", tags=TAGS,
             eventPattern=json.dumps(pattern))


def aws_graph() -> list[Resource]:
    """A compliant production stack: one endpoint with everything the policies ask for."""
    endpoint = "fraud-card"
    return [
        r("mlplat:aws:Serving", "serving"),
        r("aws:s3/bucket:Bucket", "artifacts", bucket="fraud-artifacts", tags=TAGS),
        r("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "sse",
          bucket="fraud-artifacts", rules=[{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}]),
        r("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "pab", bucket="fraud-artifacts",
          blockPublicAcls=True, blockPublicPolicy=True, ignorePublicAcls=True, restrictPublicBuckets=True),
        r("aws:sagemaker/mlflowTrackingServer:MlflowTrackingServer", "server", trackingServerName=SERVER, tags=TAGS),
        r("aws:sagemaker/modelPackageGroup:ModelPackageGroup", "group", modelPackageGroupName="fraud-card",
          tags={**TAGS, "risk-tier": "critical"}),
        pipeline(),
        approval_rule(),
        r("aws:sagemaker/model:Model", "model", name="card-v1", tags=TAGS,
          primaryContainer={"modelPackageName": "arn:aws:sagemaker:eu-west-1:1:model-package/fraud-card/1"}),
        r("aws:sagemaker/endpointConfiguration:EndpointConfiguration", "config", name="card-config", tags=TAGS,
          productionVariants=[{"variantName": "primary", "modelName": "card-v1", "instanceType": "ml.m5.large",
                               "initialInstanceCount": 1, "initialVariantWeight": 1.0}],
          shadowProductionVariants=[{"variantName": "shadow", "modelName": "card-v1", "instanceType": "ml.m5.large",
                                     "initialInstanceCount": 1, "initialVariantWeight": 0.1}],
          dataCaptureConfig={"enableCapture": True, "initialSamplingPercentage": 100,
                             "destinationS3Uri": "s3://fraud-artifacts/capture"}),
        r("aws:cloudwatch/metricAlarm:MetricAlarm", "err", name="card-5xx", dimensions={"EndpointName": endpoint},
          alarmActions=["arn:aws:sns:eu-west-1:1:alerts"], tags=TAGS),
        r("aws:sagemaker/endpoint:Endpoint", "endpoint", name=endpoint, endpointConfigName="card-config", tags=TAGS,
          deploymentConfig={"autoRollbackConfiguration": {"alarms": [{"alarmName": "card-5xx"}]},
                            "blueGreenUpdatePolicy": {"trafficRoutingConfiguration": {
                                "type": "CANARY", "canarySize": {"type": "CAPACITY_PERCENT", "value": 1}}}}),
        r("aws:sagemaker/dataQualityJobDefinition:DataQualityJobDefinition", "dq", name="card-dq", tags=TAGS,
          dataQualityJobInput={"endpointInput": {"endpointName": endpoint}},
          jobResources={"clusterConfig": {"instanceType": "ml.m5.large", "instanceCount": 1}}),
        r("aws:sagemaker/monitoringSchedule:MonitoringSchedule", "sched", name="card-dq-s", tags=TAGS,
          monitoringScheduleConfig={"monitoringJobDefinitionName": "card-dq", "monitoringType": "DataQuality",
                                    "scheduleConfig": {"scheduleExpression": "cron(0 * ? * * *)"}}),
        r("aws:budgets/budget:Budget", "budget", name="b", limitAmount="100", tags=TAGS,
          notifications=[{"threshold": 80}]),
        r("aws:rds/instance:Instance", "ledger", identifier="fraud-ledger", engine="postgres", tags=TAGS,
          storageEncrypted=True, kmsKeyId="arn:aws:kms:eu-west-1:123456789012:key/k", publiclyAccessible=False,
          manageMasterUserPassword=True, username="mlplat"),
    ]


def local_graph(**gateway) -> list[Resource]:
    """A compliant local production stack."""
    tags = dict(TAGS)
    store = {"tags": tags, "private": True, "encryption": "host-filesystem"}
    props = {"tags": tags, "environment": "production", "instanceType": "local.cpu", "captureSampling": 1.0,
             "canarySteps": [1, 10, 50, 100], "autoRollback": True, "shadowPercent": 10, "monitorSchedule": "5m",
             "alarms": ["drift"], "alertChannels": ["console"], **gateway}
    return [
        r("mlplat:local:TrackingStore", "mlflow.db", uri="sqlite:///x/mlflow.db", **store),
        r("mlplat:local:ArtifactStore", "artifacts", public=False, **store),
        r("mlplat:local:TrainingRunner", "sdk", tags=tags, trackingUri="sqlite:///x/mlflow.db", requireTrackedRuns=True),
        r("mlplat:local:ModelRegistry", "registry", tags=tags, manualApproval=True, approvers=["a@x", "b@x"],
          requiredApprovals=1, models={"card": "critical", "tagger": "low"}),
        r("mlplat:local:Gateway", "gateway", **props),
        r("mlplat:local:Budget", "budget", tags=tags, monthlyUsd=100.0),
    ]


def replace(graph: list[Resource], name: str, **props) -> list[Resource]:
    """The graph with resource ``name``'s props updated (``None`` removes a prop)."""
    out = []
    for res in graph:
        if res.name == name:
            merged = copy.deepcopy(dict(res.props))
            for key, value in props.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            res = Resource(res.type, res.name, merged, res.urn, res.parent)
        out.append(res)
    return out


def without(graph: list[Resource], *names: str) -> list[Resource]:
    return [res for res in graph if res.name not in names]
