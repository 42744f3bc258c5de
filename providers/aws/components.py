"""The AWS team platform as Pulumi components: one ``ComponentResource`` per platform component.

Every component has typed ``*Args``, a ``mlplat:aws:<Thing>`` token, children with
``parent=self`` and names derived from the component's name, and ends with
``register_outputs``. Decisions live in :mod:`mlplat_providers.aws.plan`; this module
only declares resources (never inside ``apply``). Every taggable child carries the
stack's cost tags (``plan.tags``), which tests/pulumi pins for every component.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from mlplat_providers.aws import plan as p
from mlplat_providers.aws.control_plane import ControlPlane, ControlPlaneArgs


def _child(parent: pulumi.Resource, **extra: Any) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, **extra)


# --- tracking ---------------------------------------------------------------------------


@dataclass
class TrackingArgs:
    plan: p.StackPlan


class Tracking(pulumi.ComponentResource):
    """Experiment tracking: the artifact bucket (encrypted, versioned, private), the platform role and the
    SageMaker managed MLflow tracking server."""

    def __init__(self, name: str, args: TrackingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:aws:Tracking", name, None, opts)
        plan, tags = args.plan, args.plan.tags
        self.bucket = aws.s3.Bucket(f"{name}-artifacts", bucket=plan.bucket, force_destroy=False, tags=tags,
                                    opts=_child(self))
        aws.s3.BucketVersioning(f"{name}-artifacts-versioning", bucket=self.bucket.id,
                                versioning_configuration={"status": "Enabled"}, opts=_child(self))
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-artifacts-encryption", bucket=self.bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms"},
                    "bucket_key_enabled": True}], opts=_child(self))
        aws.s3.BucketPublicAccessBlock(f"{name}-artifacts-private", bucket=self.bucket.id, block_public_acls=True,
                                       block_public_policy=True, ignore_public_acls=True,
                                       restrict_public_buckets=True, opts=_child(self))
        self.role = aws.iam.Role(f"{name}-role", name=p.slug(f"{plan.prefix}-platform", 64),
                                 assume_role_policy=p.assume_role_policy("sagemaker.amazonaws.com"),
                                 description=f"mlplat platform role of {plan.spec.team}/{plan.spec.environment}",
                                 tags=tags, opts=_child(self))
        aws.iam.RolePolicy(f"{name}-role-policy", role=self.role.id, policy=p.platform_role_policy(plan),
                           opts=_child(self))
        self.server = aws.sagemaker.MlflowTrackingServer(
            f"{name}-server", tracking_server_name=plan.tracking_server, role_arn=self.role.arn,
            artifact_store_uri=pulumi.Output.concat("s3://", self.bucket.id, "/mlflow"),
            tracking_server_size="Small", automatic_model_registration=False, tags=tags, opts=_child(self))
        self.register_outputs({"bucket": self.bucket.id, "role_arn": self.role.arn,
                               "tracking_server_arn": self.server.arn})


# --- alerts ------------------------------------------------------------------------------


@dataclass
class AlertsArgs:
    plan: p.StackPlan
    account: pulumi.Input[str]


class Alerts(pulumi.ComponentResource):
    """The SNS topic every alarm and budget notifies, with the stack's webhook channels and owner subscribed."""

    def __init__(self, name: str, args: AlertsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:aws:Alerts", name, None, opts)
        plan = args.plan
        # a customer managed key: alarms and budgets cannot publish to a topic under alias/aws/sns
        self.key = aws.kms.Key(f"{name}-key", description=f"mlplat alert topic of {plan.spec.team}/{plan.spec.environment}",
                               enable_key_rotation=True, deletion_window_in_days=30,
                               policy=pulumi.Output.from_input(args.account).apply(p.alert_key_policy),
                               tags=plan.tags, opts=_child(self))
        aws.kms.Alias(f"{name}-key-alias", name=f"alias/{p.alert_topic_name(plan)}", target_key_id=self.key.id,
                      opts=_child(self))
        self.topic = aws.sns.Topic(f"{name}-topic", name=p.alert_topic_name(plan), kms_master_key_id=self.key.arn,
                                   tags=plan.tags, opts=_child(self))
        aws.sns.TopicPolicy(f"{name}-topic-policy", arn=self.topic.arn, policy=pulumi.Output.all(
            self.topic.arn, args.account).apply(lambda a: p.alert_topic_policy(a[0], a[1], plan.region)),
            opts=_child(self))
        for i, channel in enumerate(plan.spec.monitoring.channels):
            if channel.kind == "webhook" and channel.url:
                aws.sns.TopicSubscription(f"{name}-webhook-{i}", topic=self.topic.arn,
                                          protocol="https" if channel.url.startswith("https") else "http",
                                          endpoint=channel.url, opts=_child(self))
        owner = plan.spec.tags.owner
        if "@" in owner:
            aws.sns.TopicSubscription(f"{name}-owner", topic=self.topic.arn, protocol="email", endpoint=owner,
                                      opts=_child(self))
        self.register_outputs({"topic_arn": self.topic.arn})


# --- registry ----------------------------------------------------------------------------


@dataclass
class RegistryArgs:
    plan: p.StackPlan
    account: pulumi.Input[str]


class Registry(pulumi.ComponentResource):
    """A model package group per model, tagged with its risk tier, with a group policy."""

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:aws:Registry", name, None, opts)
        plan = args.plan
        self.groups: dict[str, aws.sagemaker.ModelPackageGroup] = {}
        for model in plan.models:
            group = aws.sagemaker.ModelPackageGroup(
                f"{name}-{model.model}", model_package_group_name=model.group,
                model_package_group_description=f"{model.model} ({model.risk_tier.value} risk), team {plan.spec.team}",
                tags={**plan.tags, "risk-tier": model.risk_tier.value}, opts=_child(self))
            aws.sagemaker.ModelPackageGroupPolicy(
                f"{name}-{model.model}-policy", model_package_group_name=group.model_package_group_name,
                resource_policy=pulumi.Output.all(group.arn, args.account).apply(lambda a: p.group_policy(a[0], a[1])),
                opts=_child(self))
            self.groups[model.model] = group
        self.register_outputs({"groups": {m: g.arn for m, g in self.groups.items()}})


# --- pipelines ---------------------------------------------------------------------------


@dataclass
class PipelinesArgs:
    plan: p.StackPlan
    account: pulumi.Input[str]
    role_arn: pulumi.Input[str]
    tracking_server_arn: pulumi.Input[str]
    groups: dict[str, pulumi.Resource]
    control_plane_url: pulumi.Input[str] | None = None  # where the steps reach the ledger


class Pipelines(pulumi.ComponentResource):
    """Per model: its default training pipeline (train → the gate → register → staging), its deploy pipeline
    (production promotion → canary) started by an EventBridge rule when a version of the model is approved;
    and the role EventBridge Scheduler assumes to start the stack's pipelines on their schedules.

    The program owns these two pipelines per model; the runtime owns the pipelines `mlplat pipeline run`
    creates (and refuses these names). Both compile through ``pipeline_compiler`` (``plan`` says why)."""

    def __init__(self, name: str, args: PipelinesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:aws:Pipelines", name, None, opts)
        plan, tags = args.plan, args.plan.tags
        events_role = aws.iam.Role(f"{name}-events-role", name=p.slug(f"{plan.prefix}-events", 64),
                                   assume_role_policy=p.assume_role_policy("events.amazonaws.com"), tags=tags,
                                   opts=_child(self))
        self.pipelines: dict[str, aws.sagemaker.Pipeline] = {}
        deploy_arns = []
        url = args.control_plane_url if args.control_plane_url is not None else ""
        for model in plan.models:
            group = args.groups.get(model.model)
            depends = [group] if group is not None else []
            train = aws.sagemaker.Pipeline(
                f"{name}-{model.model}-train", pipeline_name=model.pipeline, pipeline_display_name=model.pipeline,
                role_arn=args.role_arn,
                pipeline_definition=pulumi.Output.all(args.tracking_server_arn, args.role_arn, args.account, url).apply(
                    lambda a, m=model: p.pipeline_definition(plan, m, tracking_arn=a[0], role_arn=a[1], account=a[2],
                                                             control_plane_url=a[3] or None)),
                tags=tags, opts=_child(self, depends_on=depends))
            deploy = aws.sagemaker.Pipeline(
                f"{name}-{model.model}-deploy", pipeline_name=model.deploy_pipeline,
                pipeline_display_name=model.deploy_pipeline, role_arn=args.role_arn,
                pipeline_definition=pulumi.Output.all(args.role_arn, args.account, args.tracking_server_arn, url).apply(
                    lambda a, m=model: p.deploy_pipeline_definition(plan, m, role_arn=a[0], account=a[1],
                                                                    tracking_arn=a[2], control_plane_url=a[3] or None)),
                tags=tags, opts=_child(self))
            rule = aws.cloudwatch.EventRule(
                f"{name}-{model.model}-approved", name=p.slug(f"{model.endpoint}-approved", 64),
                description=f"Deploy {model.model} when a version is approved",
                event_pattern=p.approval_event_pattern(model.group), tags=tags, opts=_child(self))
            # pipeline parameters of an EventBridge target are fixed: "approved" is resolved by the job's entry
            # to the newest Approved version of the model (the one whose approval started the run)
            aws.cloudwatch.EventTarget(
                f"{name}-{model.model}-deploy-target", rule=rule.name, arn=deploy.arn, role_arn=events_role.arn,
                sagemaker_pipeline_target={"pipeline_parameter_lists": [
                    {"name": "ModelVersion", "value": "approved"}]}, opts=_child(self))
            self.pipelines[model.model] = train
            deploy_arns.append(deploy.arn)
        aws.iam.RolePolicy(f"{name}-events-role-policy", role=events_role.id,
                           policy=pulumi.Output.all(*deploy_arns).apply(lambda arns: json.dumps({
                               "Version": "2012-10-17", "Statement": [{
                                   "Effect": "Allow", "Action": "sagemaker:StartPipelineExecution",
                                   "Resource": list(arns) or ["arn:aws:sagemaker:::pipeline/none"]}]})),
                           opts=_child(self))
        # EventBridge Scheduler starts the stack's pipelines (the runtime's schedules) as this role
        scheduler_role = aws.iam.Role(f"{name}-scheduler-role", name=p.scheduler_role_name(plan),
                                      assume_role_policy=p.assume_role_policy("scheduler.amazonaws.com"), tags=tags,
                                      opts=_child(self))
        aws.iam.RolePolicy(f"{name}-scheduler-role-policy", role=scheduler_role.id,
                           policy=pulumi.Output.from_input(args.account).apply(lambda account: json.dumps({
                               "Version": "2012-10-17", "Statement": [{
                                   "Effect": "Allow", "Action": "sagemaker:StartPipelineExecution",
                                   "Resource": f"arn:aws:sagemaker:{plan.region}:{account}:pipeline/{plan.prefix}-*"}]})),
                           opts=_child(self))
        self.register_outputs({"pipelines": {m: pl.arn for m, pl in self.pipelines.items()},
                               "scheduler_role_arn": scheduler_role.arn})


# --- serving -----------------------------------------------------------------------------


@dataclass
class ServingArgs:
    plan: p.StackPlan
    account: pulumi.Input[str]
    role_arn: pulumi.Input[str]
    bucket: pulumi.Input[str]
    alert_topic_arn: pulumi.Input[str]


class Serving(pulumi.ComponentResource):
    """Per model: the rollback alarms of the endpoint, one per guarded variant and metric.

    The program creates no SageMaker model, endpoint configuration or endpoint: the runtime creates the
    endpoint on the first deploy of an approved version and owns its configurations, variants and
    weights (a program that made them would point at a model package before any exists, and a later
    ``pulumi up`` would put its configuration back over the runtime's). The variants the runtime creates
    have stable names (``primary``, ``canary``), which these alarms watch, so they get data and can fire;
    the runtime sends them as the endpoint's auto-rollback alarms and the canary controller reads them.
    The component's inputs declare what the runtime will run (``plan.serving_declaration``) for the
    policy pack."""

    def __init__(self, name: str, args: ServingArgs, opts: pulumi.ResourceOptions | None = None):
        plan, tags, spec = args.plan, args.plan.tags, args.plan.spec
        super().__init__("mlplat:aws:Serving", name, {
            "endpoints": [p.serving_declaration(plan, model) for model in plan.models]}, opts)
        self.endpoints: dict[str, str] = {}
        self.alarms: dict[str, list[aws.cloudwatch.MetricAlarm]] = {}
        for model in plan.models:
            alarms = []
            for alarm_name, variant, alarm in p.rollback_alarms(spec, model.endpoint):
                alarms.append(aws.cloudwatch.MetricAlarm(
                    f"{name}-{model.model}-{variant}-{alarm.suffix}", name=alarm_name,
                    alarm_description=f"{alarm.description} (variant {variant})", namespace=alarm.namespace,
                    metric_name=alarm.metric, dimensions={"EndpointName": model.endpoint, "VariantName": variant},
                    statistic=alarm.statistic, extended_statistic=alarm.extended_statistic,
                    comparison_operator="GreaterThanThreshold", threshold=alarm.threshold, period=60,
                    evaluation_periods=2, datapoints_to_alarm=2,
                    # a variant without traffic (no canary running) has no data: INSUFFICIENT_DATA says so;
                    # notBreaching would show an alarm that cannot see anything as OK
                    treat_missing_data="missing",
                    alarm_actions=[args.alert_topic_arn], ok_actions=[args.alert_topic_arn], tags=tags,
                    opts=_child(self)))
            for alarm in p.alarm_plans(spec):
                if alarm.rollback:
                    continue
                # the drift alarm watches what the platform's monitoring pass publishes for the stable variant
                # (plan.PLATFORM_NAMESPACE), one datapoint per pass; no pass yet is INSUFFICIENT_DATA, not OK
                alarms.append(aws.cloudwatch.MetricAlarm(
                    f"{name}-{model.model}-{alarm.suffix}", name=p.alarm_name(model, alarm),
                    alarm_description=alarm.description, namespace=alarm.namespace, metric_name=alarm.metric,
                    dimensions=p.alarm_dimensions(spec, model, alarm),
                    statistic=alarm.statistic, extended_statistic=alarm.extended_statistic,
                    comparison_operator="GreaterThanThreshold", threshold=alarm.threshold,
                    period=p.platform_alarm_period(spec), evaluation_periods=1, datapoints_to_alarm=1,
                    treat_missing_data="missing",
                    alarm_actions=[args.alert_topic_arn], ok_actions=[args.alert_topic_arn], tags=tags,
                    opts=_child(self)))
            self.endpoints[model.model] = model.endpoint
            self.alarms[model.model] = alarms
        self.register_outputs({"endpoints": dict(self.endpoints)})


# --- monitoring --------------------------------------------------------------------------


@dataclass
class MonitoringArgs:
    plan: p.StackPlan
    role_arn: pulumi.Input[str]
    bucket: pulumi.Input[str]
    endpoints: Sequence[pulumi.Resource]


class Monitoring(pulumi.ComponentResource):
    """The team's CloudWatch dashboard: per endpoint SageMaker's invocations, latency and errors per variant,
    and the drift the platform's monitoring pass publishes (plan.dashboard_body).

    The program creates no Model Monitor schedule: a schedule reads an endpoint, which the runtime creates on
    the first deploy, and Model Monitor is no longer open to new customers. The platform's own pass monitors
    every endpoint; a stack that opts in (``mlplat:provider.modelMonitor``) gets a data-quality schedule from
    the runtime once an endpoint exists (``runtime/model_monitor.py``)."""

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:aws:Monitoring", name, None, opts)
        plan = args.plan
        self.dashboard = aws.cloudwatch.Dashboard(f"{name}-dashboard", dashboard_name=p.slug(f"{plan.prefix}", 255),
                                                  dashboard_body=p.dashboard_body(plan), opts=_child(self))
        self.register_outputs({"dashboard": self.dashboard.dashboard_name})


# --- feature store -----------------------------------------------------------------------


@dataclass
class FeatureStoreArgs:
    plan: p.StackPlan
    role_arn: pulumi.Input[str]
    bucket: pulumi.Input[str]


class FeatureStore(pulumi.ComponentResource):
    """Feature groups with an online store and an offline store in S3, catalogued in Glue."""

    def __init__(self, name: str, args: FeatureStoreArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:aws:FeatureStore", name, None, opts)
        plan, tags = args.plan, args.plan.tags
        database = aws.glue.CatalogDatabase(f"{name}-catalog", name=p.feature_database(plan),
                                            description=f"Offline features of {plan.spec.team}", tags=tags,
                                            opts=_child(self))
        for group in p.feature_groups(plan.spec):
            aws.sagemaker.FeatureGroup(
                f"{name}-{group.name}", feature_group_name=group.name, record_identifier_feature_name=group.record_id,
                event_time_feature_name=group.event_time, role_arn=args.role_arn,
                feature_definitions=p.feature_definitions(group),
                online_store_config={"enable_online_store": True},
                offline_store_config={
                    "s3_storage_config": {"s3_uri": pulumi.Output.concat("s3://", args.bucket, "/features")},
                    "data_catalog_config": {"catalog": "AwsDataCatalog", "database": database.name,
                                            "table_name": group.name.replace("-", "_")},
                },
                tags=tags, opts=_child(self))
        self.register_outputs({"catalog": database.name})


# --- cost --------------------------------------------------------------------------------


@dataclass
class CostArgs:
    plan: p.StackPlan
    alert_topic_arn: pulumi.Input[str]


class Cost(pulumi.ComponentResource):
    """The team's monthly budget with notifications, and (when the stack opts in) the cost tags activated as cost
    allocation tags for Cost Explorer."""

    def __init__(self, name: str, args: CostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:aws:Cost", name, None, opts)
        plan = args.plan
        # opt-in, account-wide, and left active on destroy: another stack of the account may rely on them
        for key in p.cost_allocation_tags(plan.spec):
            aws.costexplorer.CostAllocationTag(f"{name}-tag-{key}", tag_key=key, status="Active",
                                               opts=_child(self, retain_on_delete=True))
        budget = p.budget_plan(plan.spec)
        outputs: dict[str, Any] = {}
        if budget is not None:
            owner = [plan.spec.tags.owner] if "@" in plan.spec.tags.owner else []
            created = aws.budgets.Budget(
                f"{name}-budget", name=p.slug(f"{plan.prefix}-monthly", 100), budget_type="COST",
                limit_amount=budget["limit"], limit_unit="USD", time_unit="MONTHLY",
                cost_filters=[{"name": "TagKeyValue", "values": [budget["tag_filter"]]}],
                notifications=[{"comparison_operator": "GREATER_THAN", "notification_type": kind, "threshold": t,
                                "threshold_type": "PERCENTAGE", "subscriber_sns_topic_arns": [args.alert_topic_arn],
                                "subscriber_email_addresses": owner}
                               for t in budget["thresholds"] for kind in ("ACTUAL",)]
                + [{"comparison_operator": "GREATER_THAN", "notification_type": "FORECASTED", "threshold": 100,
                    "threshold_type": "PERCENTAGE", "subscriber_sns_topic_arns": [args.alert_topic_arn]}],
                tags=plan.tags, opts=_child(self))
            outputs["budget"] = created.name
        self.register_outputs(outputs)


# --- the whole team platform ------------------------------------------------------------------


class TeamPlatform(pulumi.ComponentResource):
    """A team × environment platform on SageMaker: every component above, wired together."""

    def __init__(self, name: str, plan: p.StackPlan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplat:aws:TeamPlatform", name, None, opts)
        account: pulumi.Input[str] = plan.spec.provider.account_id or aws.get_caller_identity_output(
            opts=pulumi.InvokeOutputOptions(parent=self)).account_id
        self.tracking = Tracking(f"{name}-tracking", TrackingArgs(plan), _child(self))
        self.alerts = Alerts(f"{name}-alerts", AlertsArgs(plan, account), _child(self))
        self.registry = Registry(f"{name}-registry", RegistryArgs(plan, account), _child(self))
        self.control_plane = ControlPlane(f"{name}-control-plane", ControlPlaneArgs(
            plan, account, self.tracking.bucket.id), _child(self))
        self.pipelines = Pipelines(f"{name}-pipelines", PipelinesArgs(
            plan, account, self.tracking.role.arn, self.tracking.server.arn, dict(self.registry.groups),
            self.control_plane.url), _child(self))
        self.serving = Serving(f"{name}-serving", ServingArgs(
            plan, account, self.tracking.role.arn, self.tracking.bucket.id, self.alerts.topic.arn), _child(self))
        self.monitoring = Monitoring(f"{name}-monitoring", MonitoringArgs(
            plan, self.tracking.role.arn, self.tracking.bucket.id, [self.serving]), _child(self))
        self.features = FeatureStore(f"{name}-features", FeatureStoreArgs(
            plan, self.tracking.role.arn, self.tracking.bucket.id), _child(self))
        self.cost = Cost(f"{name}-cost", CostArgs(plan, self.alerts.topic.arn), _child(self))
        self.register_outputs({
            "bucket": self.tracking.bucket.id,
            "tracking_server_arn": self.tracking.server.arn,
            "alert_topic_arn": self.alerts.topic.arn,
            "endpoints": dict(self.serving.endpoints),
            "control_plane_url": self.control_plane.url,
        })


def program(spec) -> None:
    """The Pulumi program of an AWS stack: the team platform plus stack outputs."""
    plan = p.stack_plan(spec)
    platform = TeamPlatform(plan.prefix, plan)
    pulumi.export("bucket", platform.tracking.bucket.id)
    pulumi.export("tracking_server_arn", platform.tracking.server.arn)
    # the runtime creates these endpoints on the first deploy; captured requests land under dataCapture
    pulumi.export("endpoints", dict(platform.serving.endpoints))
    pulumi.export("dataCapture", {m.model: p.capture_uri(plan.bucket, m.model, plan.spec.environment)
                                  for m in plan.models})
    # `mlplat up` prints these; the stack file's mlplat:controlPlane names them for every command
    pulumi.export("controlPlaneUrl", platform.control_plane.url)
    pulumi.export("trackingUrl", platform.control_plane.tracking_url)
