"""One-line summaries of the key properties of the AWS program's resources (for `preview --offline`)."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Summary = Callable[[dict[str, Any]], str]


def _loads(value: Any) -> Any:
    try:
        return json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return None


def _variants(props: dict[str, Any]) -> str:
    prod = props.get("productionVariants") or []
    shadow = props.get("shadowProductionVariants") or []
    capture = props.get("dataCaptureConfig") or {}
    parts = [f"{v.get('variantName')}:{v.get('instanceType')} w={v.get('initialVariantWeight')}" for v in prod]
    parts += [f"shadow {v.get('variantName')} w={v.get('initialVariantWeight')}" for v in shadow]
    parts.append(f"capture {capture.get('initialSamplingPercentage', 0)}% -> {capture.get('destinationS3Uri')}"
                 if capture.get("enableCapture") else "capture off")
    return ", ".join(parts)


def _endpoint(props: dict[str, Any]) -> str:
    deployment = props.get("deploymentConfig") or {}
    routing = (deployment.get("blueGreenUpdatePolicy") or {}).get("trafficRoutingConfiguration") or {}
    size = routing.get("canarySize") or routing.get("linearStepSize") or {}
    alarms = [a.get("alarmName") for a in (deployment.get("autoRollbackConfiguration") or {}).get("alarms") or []]
    return (f"{props.get('name')}: {routing.get('type')} {size.get('value', '')}{'%' if size else ''} "
            f"wait {routing.get('waitIntervalInSeconds')}s, rollback on {', '.join(alarms) or 'nothing'}")


def _serving(props: dict[str, Any]) -> str:
    """The endpoints the runtime creates on the first deploy, as the program declares them."""
    parts = []
    for e in props.get("endpoints") or []:
        steps = e.get("canarySteps") or []
        capture = e.get("dataCapture") or {}
        kind = "CANARY" if len(steps) > 1 else "ALL_AT_ONCE"
        parts.append(f"{e.get('endpointName')} (created by the first deploy): {e.get('instanceCount')} x "
                     f"{e.get('instanceType')}, {kind} {'/'.join(map(str, steps))}% every {e.get('bakeSeconds')}s, "
                     f"capture {capture.get('initialSamplingPercentage', 0)}% -> {capture.get('destinationS3Uri')}, "
                     f"rollback on {len(e.get('rollbackAlarms') or [])} alarms")
    return "; ".join(parts)


def _pipeline(props: dict[str, Any]) -> str:
    definition = _loads(props.get("pipelineDefinition")) or {}
    names = []
    for step in definition.get("Steps", []):
        names.append(step.get("Name"))
        names += [s.get("Name") for s in (step.get("Arguments") or {}).get("IfSteps") or [] if isinstance(s, dict)]
    return f"{props.get('pipelineName')}: {' -> '.join(n for n in names if n)}"


def _rule(props: dict[str, Any]) -> str:
    detail = (_loads(props.get("eventPattern")) or {}).get("detail") or {}
    return f"{props.get('name')}: on {detail.get('ModelPackageGroupName')} {detail.get('ModelApprovalStatus')}"


def _n(value: Any) -> Any:
    """A number as the program wrote it (the engine hands integers back as floats)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _database(props: dict[str, Any]) -> str:
    return (f"{props.get('identifier')}: {props.get('engine')} {props.get('engineVersion')} "
            f"{props.get('instanceClass')}, {'encrypted' if props.get('storageEncrypted') else 'NOT ENCRYPTED'}, "
            f"{'PUBLIC' if props.get('publiclyAccessible') else 'private'}, "
            f"{'password in Secrets Manager' if props.get('manageMasterUserPassword') else 'UNMANAGED PASSWORD'}, "
            f"backups {_n(props.get('backupRetentionPeriod'))} d"
            + (", deletion protection" if props.get("deletionProtection") else ""))


def _containers(props: dict[str, Any]) -> str:
    containers = _loads(props.get("containerDefinitions")) or []
    return f"{props.get('family')} ({props.get('cpu')} CPU, {props.get('memory')} MiB): " + ", ".join(
        f"{c.get('name')}:{','.join(str(m.get('containerPort')) for m in c.get('portMappings') or [])}"
        + (f" secrets {','.join(s.get('name') for s in c.get('secrets') or [])}" if c.get("secrets") else "")
        for c in containers if isinstance(c, dict))


def _security_group(props: dict[str, Any]) -> str:
    rules = []
    for rule in props.get("ingress") or []:
        sources = list(rule.get("cidrBlocks") or []) + [f"sg {g}" for g in rule.get("securityGroups") or []]
        low, high = _n(rule.get("fromPort")), _n(rule.get("toPort"))
        ports = low if low == high else f"{low}-{high}"
        rules.append(f"{ports} from {', '.join(sources) or 'nobody'}")
    return f"{props.get('description')}: in " + ("; ".join(rules) or "nothing")


SUMMARIES: dict[str, Summary] = {
    "aws:rds/instance:Instance": _database,
    "aws:ecs/taskDefinition:TaskDefinition": _containers,
    "aws:ec2/securityGroup:SecurityGroup": _security_group,
    "aws:lb/loadBalancer:LoadBalancer": lambda p: f"{p.get('name')}: {'internal' if p.get('internal') else 'INTERNET-FACING'} {p.get('loadBalancerType')}",
    "aws:lb/listener:Listener": lambda p: f"{p.get('protocol')} :{_n(p.get('port'))}" + (" (internal HTTP, unencrypted)" if p.get("protocol") == "HTTP" else ""),
    "aws:ecs/service:Service": lambda p: f"{p.get('name')}: {_n(p.get('desiredCount'))} x {p.get('launchType')}, {len(p.get('loadBalancers') or [])} target group(s)",
    "aws:s3/bucket:Bucket": lambda p: f"{p.get('bucket')}",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": lambda p: "sse " + ", ".join(
        (r.get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm", "?") for r in p.get("rules") or []),
    "aws:s3/bucketVersioning:BucketVersioning": lambda p: f"versioning {(p.get('versioningConfiguration') or {}).get('status')}",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": lambda p: "public access blocked" if all(
        p.get(k) for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")) else "PUBLIC ACCESS OPEN",
    "aws:iam/role:Role": lambda p: f"{p.get('name')}",
    "aws:sagemaker/mlflowTrackingServer:MlflowTrackingServer": lambda p: f"{p.get('trackingServerName')} ({p.get('trackingServerSize')}), artifacts {p.get('artifactStoreUri')}",
    "aws:sagemaker/modelPackageGroup:ModelPackageGroup": lambda p: f"{p.get('modelPackageGroupName')} risk {(p.get('tags') or {}).get('risk-tier')}",
    "aws:sagemaker/pipeline:Pipeline": _pipeline,
    "aws:cloudwatch/eventRule:EventRule": _rule,
    "aws:sagemaker/model:Model": lambda p: f"{p.get('name')} <- {(p.get('primaryContainer') or {}).get('modelPackageName')}",
    "aws:sagemaker/endpointConfiguration:EndpointConfiguration": _variants,
    "aws:sagemaker/endpoint:Endpoint": _endpoint,
    "mlplat:aws:Serving": _serving,
    "aws:cloudwatch/metricAlarm:MetricAlarm": lambda p: f"{p.get('name')}: {p.get('metricName')} {p.get('statistic') or p.get('extendedStatistic')} > {p.get('threshold')} -> {len(p.get('alarmActions') or [])} action(s)",
    "aws:sagemaker/dataQualityJobDefinition:DataQualityJobDefinition": lambda p: f"{p.get('name')} reads {((p.get('dataQualityJobInput') or {}).get('endpointInput') or {}).get('endpointName')}",
    "aws:sagemaker/monitoringSchedule:MonitoringSchedule": lambda p: f"{p.get('name')}: {(p.get('monitoringScheduleConfig') or {}).get('monitoringType')} {((p.get('monitoringScheduleConfig') or {}).get('scheduleConfig') or {}).get('scheduleExpression')}",
    "aws:cloudcontrol/resource:Resource": lambda p: f"{p.get('typeName')} {(_loads(p.get('desiredState')) or {}).get('JobDefinitionName', '')}",
    "aws:cloudwatch/dashboard:Dashboard": lambda p: f"{p.get('dashboardName')}: {len((_loads(p.get('dashboardBody')) or {}).get('widgets', []))} widgets",
    "aws:sns/topic:Topic": lambda p: f"{p.get('name')}",
    "aws:sns/topicSubscription:TopicSubscription": lambda p: f"{p.get('protocol')} {p.get('endpoint')}",
    "aws:budgets/budget:Budget": lambda p: f"{p.get('name')}: {p.get('limitAmount')} {p.get('limitUnit')}/{p.get('timeUnit')}, {len(p.get('notifications') or [])} notification(s)",
    "aws:costexplorer/costAllocationTag:CostAllocationTag": lambda p: f"{p.get('tagKey')} {p.get('status')}",
    "aws:sagemaker/featureGroup:FeatureGroup": lambda p: f"{p.get('featureGroupName')}: online {(p.get('onlineStoreConfig') or {}).get('enableOnlineStore')}, offline {((p.get('offlineStoreConfig') or {}).get('dataCatalogConfig') or {}).get('database')}",
    "aws:glue/catalogDatabase:CatalogDatabase": lambda p: f"{p.get('name')}",
    "aws:iam/rolePolicy:RolePolicy": lambda p: f"inline policy, {len((_loads(p.get('policy')) or {}).get('Statement', []))} statement(s)",
    "aws:sns/topicPolicy:TopicPolicy": lambda p: "publish: " + ", ".join(
        s.get("Principal", {}).get("Service", []) and ", ".join(s["Principal"]["Service"]) for s in (_loads(p.get("policy")) or {}).get("Statement", [])),
    "aws:sagemaker/modelPackageGroupPolicy:ModelPackageGroupPolicy": lambda p: f"{p.get('modelPackageGroupName')}: owning account only",
    "aws:cloudwatch/eventTarget:EventTarget": lambda p: f"{p.get('rule')} -> {p.get('arn')}",
}


def summarize(resource_type: str, props: dict[str, Any]) -> str:
    fn = SUMMARIES.get(resource_type)
    if fn is None:
        return ""
    try:
        return fn(props)
    except (AttributeError, TypeError):  # an unknown value in preview: show nothing rather than fail
        return ""
