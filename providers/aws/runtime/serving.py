"""Serving on the aws provider: rollouts in the platform database, applied to SageMaker endpoints.

The rollout rules are the provider-neutral ones (``mlplat.services.rollout``): the same
spec, the same validation, the same events and audit entries as on the local gateway.
Each change is computed in a platform-database transaction and applied to SageMaker
before it commits, so a refused or failed AWS call leaves the ledger unchanged.

Mapping: one endpoint per (model, environment), named like the Pulumi program's; one
production variant per served version (``v<version>``), weights in percent; a shadow
version is a shadow production variant whose weight is the mirrored share of the
primary's. A change that only moves traffic between versions already on the endpoint
(canary steps, rollback to the warm stable version, A/B weights) is
``UpdateEndpointWeightsAndCapacities``: seconds, no new instances. Anything else gets a
new endpoint configuration and ``UpdateEndpoint`` (``CreateEndpoint`` the first time).

Canary: SageMaker's own canary has two steps, so the platform steps the weights itself
through the stack's ``serving.canary.steps``. ``step`` runs the provider-neutral canary
judge (``mlplat.services.rollout.CanaryJudge``) on the endpoint's rollback alarms (any in
ALARM rolls back) and its CloudWatch metrics per variant (invocations, 5xx errors, p95
latency against the stable variant, with the stack's thresholds and minimum requests; a
latency breach is judged again on the minutes after it), then advances, waits or rolls
back. ``mlplat serve`` on an AWS stack runs that controller in a loop.
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

from mlplat.contracts import CanaryMetrics, CanaryWindow, EndpointDeployer
from mlplat.errors import Conflict, Denied, NotFound, StackError
from mlplat.services import rollout as ro
from mlplat.services.serving import check_deploy
from mlplat_providers.aws.runtime.session import AwsSession
from mlplat_providers.aws.runtime.state import AwsState

CONTROLLER = "aws-canary-controller"
MISSING = ("Could not find", "does not exist", "ResourceNotFound", "not found")
PRODUCTION_ENVS = ("production", "prod")


def variant(version: int) -> str:
    return f"v{int(version)}"


def version_of(variant_name: str) -> int | None:
    name = variant_name.removeprefix("shadow-")
    return int(name[1:]) if name.startswith("v") and name[1:].isdigit() else None


def allowed_instance_types(spec) -> list[str] | None:
    """The spend policy's allow-list for this stack (``None`` when the policy is disabled)."""
    from mlplat_policies.rules import BY_NAME, policy_config, resolve_level

    policy = BY_NAME["spend"]
    setting = spec.policy.policies.get("spend")
    if resolve_level(policy, spec.policy.enforcement_level, setting) == "disabled":
        return None
    return list(policy_config(policy, setting).get("allowedInstanceTypes") or [])


class AwsServing(EndpointDeployer):
    def __init__(self, spec, ctx, session: AwsSession | None = None):
        self.spec = spec
        self.ctx = ctx
        self.aws = session or AwsSession(spec)
        self.state = AwsState(spec.state_dir, getattr(ctx, "database_url", None)).ensure()
        self.db = self.state.database()

    @cached_property
    def registry(self):
        from mlplat_providers.aws.runtime.registry import AwsModelRegistry

        return AwsModelRegistry(self.spec, self.aws)

    @property
    def _cost(self) -> dict[str, Any]:
        serving = self.spec.serving
        return {"instance_type": serving.instance_type, "price_per_hour": serving.price_for()}

    # --- names -------------------------------------------------------------------------------

    def endpoint_name(self, model: str, environment: str) -> str:
        from mlplat_providers.aws.plan import slug

        base = slug(f"{self.aws.plan.prefix}-{model}", 55)
        return base if environment == self.spec.environment else slug(f"{base}-{environment}")

    def model_name(self, model: str, version: int, environment: str) -> str:
        from mlplat_providers.aws.plan import slug

        return slug(f"{self.endpoint_name(model, environment)}-v{int(version)}")

    def _tags(self) -> list[dict[str, str]]:
        return [{"Key": k, "Value": v} for k, v in self.spec.tags.as_dict().items()]

    # --- checks ------------------------------------------------------------------------------

    def check_instance_type(self) -> None:
        instance_type = self.spec.serving.instance_type
        allowed = allowed_instance_types(self.spec)
        if allowed is not None and allowed and not any(fnmatch.fnmatchcase(instance_type, p) for p in allowed):
            raise StackError(f"serving.instanceType {instance_type} is not allowed by the stack's spend policy "
                             f"(allowed: {', '.join(allowed)})", where=self.spec.path or None,
                             hint="pick an allowed mlplat:serving.instanceType, or extend "
                                  "policy.policies.spend.allowedInstanceTypes with the platform team")
        if not instance_type.startswith("ml."):
            raise StackError(f"serving.instanceType {instance_type} is not a SageMaker instance type",
                             where=self.spec.path or None, hint="use an ml.* type, e.g. ml.m5.large")

    def check_approved(self, model: str, versions: Sequence[int], environment: str) -> None:
        """Production endpoints serve only packages SageMaker lists as Approved (the platform's mirror)."""
        if environment.lower() not in PRODUCTION_ENVS:
            return
        for version in versions:
            status = self.registry.approval_status(model, version)
            if status != "Approved":
                raise Denied(f"{model} version {version} is {status} in SageMaker's registry; production endpoints "
                             "serve approved packages only", where=self.registry.package_arn(model, version),
                             hint=f"promote it with `mlplat models promote {model} {version} --to production` "
                                  "(which approves the package once the gate and approvals allow)")

    # --- SageMaker ----------------------------------------------------------------------------

    def describe(self, model: str, environment: str) -> dict[str, Any] | None:
        """The endpoint as SageMaker has it: status, configuration, weight per version, shadow."""
        name = self.endpoint_name(model, environment)
        try:
            endpoint = self.aws.call("sagemaker", "describe_endpoint", EndpointName=name, not_found=MISSING)
        except NotFound:
            return None
        config = self.aws.call("sagemaker", "describe_endpoint_config",
                               EndpointConfigName=endpoint["EndpointConfigName"])
        weights = {}
        live = {v["VariantName"]: v for v in endpoint.get("ProductionVariants") or []}
        for v in config.get("ProductionVariants") or []:
            version = version_of(v["VariantName"])
            if version is None:
                continue
            current = live.get(v["VariantName"], {})
            weights[version] = float(current.get("CurrentWeight", current.get("DesiredWeight", 0.0)) or 0.0)
        shadow = None
        for v in config.get("ShadowProductionVariants") or []:
            version = version_of(v["VariantName"])
            if version is not None:
                shadow = {"version": version, "weight": float(v.get("InitialVariantWeight") or 0.0)}
        return {"endpoint": name, "status": endpoint.get("EndpointStatus"), "config": endpoint["EndpointConfigName"],
                "weights": weights, "shadow": shadow}

    def ensure_model(self, model: str, version: int, environment: str) -> str:
        name = self.model_name(model, version, environment)
        try:
            self.aws.call("sagemaker", "describe_model", ModelName=name, not_found=MISSING)
        except NotFound:
            self.aws.call("sagemaker", "create_model", ModelName=name,
                          Containers=[{"ModelPackageName": self.registry.package_arn(model, version)}],
                          ExecutionRoleArn=self.aws.role_arn, Tags=self._tags(),
                          what=f"creating the SageMaker model of {model} version {version}")
        return name

    def apply(self, endpoint: ro.Endpoint) -> dict[str, Any]:
        """Make the SageMaker endpoint route as ``endpoint`` says; returns what was done."""
        model, environment = endpoint.model, endpoint.environment
        name = self.endpoint_name(model, environment)
        desired: dict[int, int] = {}
        for route in endpoint.routes:
            desired[route.version] = desired.get(route.version, 0) + int(route.weight)
        primary = max(desired.values()) if desired else 100
        shadow = None
        if endpoint.shadow:
            shadow = {"version": int(endpoint.shadow["version"]),
                      "weight": round(primary * int(endpoint.shadow["percent"]) / 100.0, 4)}
        current = self.describe(model, environment)
        if current is not None and current["status"] not in ("InService", None):
            raise Conflict(f"SageMaker endpoint {name} is {current['status']}; it accepts changes when InService",
                           hint="wait for the running update to finish (mlplat deployments show), then retry")
        if current is not None and set(desired) <= set(current["weights"]) and \
                (shadow or {}).get("version") == (current["shadow"] or {}).get("version") and \
                (shadow is None or abs(shadow["weight"] - current["shadow"]["weight"]) < 1e-6):
            weights = [{"VariantName": variant(v), "DesiredWeight": float(desired.get(v, 0))}
                       for v in sorted(current["weights"])]
            self.aws.call("sagemaker", "update_endpoint_weights_and_capacities", EndpointName=name,
                          DesiredWeightsAndCapacities=weights, what=f"moving traffic on {name}")
            return {"action": "weights", "endpoint": name, "config": current["config"],
                    "weights": {variant(v): w["DesiredWeight"] for v, w in zip(sorted(current["weights"]), weights)}}
        instance = self.spec.serving.instance_type
        variants = [{"VariantName": variant(v), "ModelName": self.ensure_model(model, v, environment),
                     "InstanceType": instance, "InitialInstanceCount": 1, "InitialVariantWeight": float(w)}
                    for v, w in sorted(desired.items())]
        config_name = f"{name[:40]}-{int(time.time() * 1000)}-{uuid.uuid4().hex[:4]}"
        params: dict[str, Any] = {"EndpointConfigName": config_name, "ProductionVariants": variants,
                                  "Tags": self._tags()}
        if shadow is not None:
            params["ShadowProductionVariants"] = [{
                "VariantName": "shadow-" + variant(shadow["version"]),
                "ModelName": self.ensure_model(model, shadow["version"], environment), "InstanceType": instance,
                "InitialInstanceCount": 1, "InitialVariantWeight": shadow["weight"]}]
        sampling = int(round(self.spec.serving.capture_sampling * 100))
        if sampling > 0:
            params["DataCaptureConfig"] = {
                "EnableCapture": True, "InitialSamplingPercentage": sampling,
                "DestinationS3Uri": f"s3://{self.aws.bucket}/capture/{model}/{environment}",
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]}
        self.aws.call("sagemaker", "create_endpoint_config", what=f"creating endpoint configuration {config_name}",
                      **params)
        if current is None:
            self.aws.call("sagemaker", "create_endpoint", EndpointName=name, EndpointConfigName=config_name,
                          Tags=self._tags(), what=f"creating endpoint {name}")
            action = "create"
        else:
            self.aws.call("sagemaker", "update_endpoint", EndpointName=name, EndpointConfigName=config_name,
                          RetainAllVariantProperties=False, what=f"updating endpoint {name}")
            action = "update"
        return {"action": action, "endpoint": name, "config": config_name,
                "weights": {v["VariantName"]: v["InitialVariantWeight"] for v in variants},
                "shadow": params.get("ShadowProductionVariants")}

    # --- changes -----------------------------------------------------------------------------------

    def deploy(self, name: str, version: int, *, environment: str, strategy: str, weights: str | None = None,
               steps: Sequence[int] | None = None, bake_seconds: float | None = None,
               percent: int | None = None) -> dict[str, Any]:
        self.check_instance_type()
        _ = self.aws.account  # missing or mismatched account settings fail before anything is read or written
        checked = check_deploy(self.spec, self.ctx, name, version, environment=environment, strategy=strategy,
                               weights=weights, steps=steps, bake_seconds=bake_seconds, percent=percent)
        versions = checked.versions
        self.check_approved(name, versions, environment)
        with self.db.transaction() as conn:
            endpoint = ro.deploy(conn, model=name, environment=environment, version=int(version), strategy=strategy,
                                 actor=self.ctx.user, method=self.ctx.method, canary=checked.canary, weights=weights,
                                 shadow_percent=checked.shadow_percent, evidence=checked.evidence, **self._cost)
            applied = self.apply(endpoint)
        return endpoint.to_dict() | {"sagemaker": applied}

    def rollback(self, name: str, *, environment: str, to: int | None = None,
                 reason: str | None = None) -> dict[str, Any]:
        if to is not None:
            from mlplat.services import deployability

            deployability.assert_deployable(self.spec, self.ctx, name, int(to), environment)
            self.check_approved(name, [int(to)], environment)
        started = time.time()
        with self.db.transaction() as conn:
            endpoint = ro.rollback(conn, model=name, environment=environment, actor=self.ctx.user,
                                   method=self.ctx.method, to=to,
                                   reason=reason or "manual rollback", **self._cost)
            assert endpoint is not None
            applied = self.apply(endpoint)
        out = endpoint.to_dict() | {"sagemaker": applied}
        out["applied_in_s"] = round(time.time() - started, 4)
        return out

    # --- the canary controller -------------------------------------------------------------------

    @cached_property
    def judge(self) -> ro.CanaryJudge:
        """The provider-neutral canary judge on this stack's CloudWatch metrics. One per instance:
        a breach it holds for a re-check on fresh traffic is remembered across :meth:`step` calls."""
        return ro.CanaryJudge(CloudWatchCanaryMetrics(self.aws.call, self.endpoint_name, self._rollback_alarms),
                              actor=CONTROLLER, on_change=self.apply, **self._cost)

    def _rollback_alarms(self, endpoint_name: str) -> list[str]:
        from mlplat_providers.aws.plan import alarm_plans, slug

        return [slug(f"{endpoint_name}-{a.suffix}", 255) for a in alarm_plans(self.spec) if a.rollback]

    def step(self, name: str, *, environment: str) -> dict[str, Any]:
        """Judge the running canary of ``name`` once: advance to the next step, wait, or roll back."""
        conn = self.db.connect()
        try:
            rollout = conn.execute("SELECT * FROM rollouts WHERE model=? AND environment=? AND state='running'",
                                   (name, environment)).fetchone()
            rollout = dict(rollout) if rollout else None
            if rollout is None:
                raise Conflict(f"no canary rollout of '{name}' is running in '{environment}'",
                               hint=f"start one with `mlplat deploy {name} VERSION --env {environment} "
                                    "--strategy canary`")
            verdict = self.judge.judge(self.db, conn, rollout)
        finally:
            conn.close()
        decision = verdict.decision
        assert decision is not None  # CloudWatch always gives a view of the current step
        current = self.show(name, environment=environment)
        action = decision.action if decision.action != "pass" else (
            "promoted" if current.get("rollout_id") is None else "step")
        return {"action": action, "reasons": list(decision.reasons), "metrics": decision.metrics,
                "endpoint": {k: v for k, v in current.items() if k not in ("history", "events")},
                "sagemaker": verdict.applied}

    # --- reading ------------------------------------------------------------------------------------

    def list(self, environment: str | None = None) -> list[dict[str, Any]]:
        conn = self.db.connect()
        try:
            return [e.to_dict() for e in ro.list_endpoints(conn, environment)]
        finally:
            conn.close()

    def show(self, name: str, *, environment: str) -> dict[str, Any]:
        conn = self.db.connect()
        try:
            endpoint = ro.require_endpoint(conn, name, environment)
            out = endpoint.to_dict()
            out["history"] = ro.history(conn, name, environment)
            out["events"] = ro.events(conn, name, environment, limit=20)
        finally:
            conn.close()
        return out

    def rollout_status(self, name: str, *, environment: str) -> dict[str, Any]:
        conn = self.db.connect()
        try:
            out = ro.status(conn, name, environment)
        finally:
            conn.close()
        out["sagemaker"] = self.describe(name, environment)
        return out

    def serve(self, *, environment: str, host: str, port: int, port_file: str | None = None,
              controller: bool = True) -> None:
        """SageMaker serves the traffic; this runs the canary controller in the foreground until interrupted."""
        interval = float(os.environ.get("MLPLAT_AWS_CONTROLLER_INTERVAL", "30"))
        self.ctx.console.print(f"stack {self.spec.name} serves on SageMaker (endpoints "
                               f"{self.aws.plan.prefix}-*); stepping canaries in '{environment}' every {interval:g}s",
                               highlight=False)
        if not controller:
            return
        while True:
            conn = self.db.connect()
            try:
                running = [dict(r) for r in ro.running_rollouts(conn, environment)]
            finally:
                conn.close()
            for rollout in running:
                result = self.step(rollout["model"], environment=environment)
                self.ctx.console.print(f"{rollout['model']}: {result['action']} ({'; '.join(result['reasons'])})",
                                       highlight=False)
            time.sleep(interval)


class CloudWatchCanaryMetrics(CanaryMetrics):
    """A canary as SageMaker reports it: per variant, CloudWatch's invocations, 5xx errors and p95
    model latency per minute (predictions are not seen: prediction shift is not judged), and the
    endpoint's rollback alarms. A window's ``mark`` is the time of that look."""

    def __init__(self, call: Callable[..., dict[str, Any]], endpoint_name: Callable[[str, str], str],
                 rollback_alarms: Callable[[str], list[str]]):
        self.call = call  # AwsSession.call: (service, operation, **params)
        self.endpoint_name = endpoint_name
        self.rollback_alarms = rollback_alarms

    def window(self, rollout: Mapping[str, Any], now: float) -> CanaryWindow:
        endpoint = self.endpoint_name(rollout["model"], rollout["environment"])
        firing = self.alarms_firing(endpoint)
        stable = self.variant_stats(endpoint, int(rollout["stable_version"]), float(rollout["created_at"]), now)
        candidate = self.variant_stats(endpoint, int(rollout["candidate_version"]),
                                       float(rollout["step_started_at"]), now)
        return CanaryWindow(stable, candidate, mark=now, alarms=tuple(firing),
                            metrics={"alarms": firing, "source": "cloudwatch"})

    def since(self, rollout: Mapping[str, Any], mark: float, now: float) -> ro.VariantStats:
        # a datapoint covers its whole minute: the minute holding the mark is partly older traffic
        start = max(math.ceil(mark / 60) * 60, float(rollout["step_started_at"]))
        endpoint = self.endpoint_name(rollout["model"], rollout["environment"])
        return self.variant_stats(endpoint, int(rollout["candidate_version"]), start, now)

    def alarms_firing(self, endpoint_name: str) -> list[str]:
        alarms = self.call("cloudwatch", "describe_alarms", AlarmNames=self.rollback_alarms(endpoint_name),
                           what=f"reading the rollback alarms of {endpoint_name}").get("MetricAlarms", [])
        return [f"CloudWatch alarm {a['AlarmName']} is in ALARM ({a.get('StateReason', '')})".strip()
                for a in alarms if a.get("StateValue") == "ALARM"]

    def variant_stats(self, endpoint_name: str, version: int, since: float, until: float) -> ro.VariantStats:
        """Invocations, 5xx errors and p95 model latency of one variant, from CloudWatch."""
        start = dt.datetime.fromtimestamp(int(since // 60) * 60, dt.UTC)
        end = dt.datetime.fromtimestamp(until + 60, dt.UTC)
        dims = [{"Name": "EndpointName", "Value": endpoint_name}, {"Name": "VariantName", "Value": variant(version)}]

        def query(qid: str, metric: str, stat: str) -> dict[str, Any]:
            return {"Id": qid, "MetricStat": {"Metric": {"Namespace": "AWS/SageMaker", "MetricName": metric,
                                                         "Dimensions": dims}, "Period": 60, "Stat": stat}}

        result = self.call("cloudwatch", "get_metric_data", StartTime=start, EndTime=end, ScanBy="TimestampAscending",
                           MetricDataQueries=[query("invocations", "Invocations", "Sum"),
                                              query("errors", "Invocation5XXErrors", "Sum"),
                                              query("latency", "ModelLatency", "p95")],
                           what=f"reading the metrics of {endpoint_name}/{variant(version)}")
        values = {r["Id"]: r.get("Values") or [] for r in result.get("MetricDataResults", [])}
        latencies_ms = [v / 1000.0 for v in values.get("latency", [])]  # ModelLatency is in microseconds
        return ro.VariantStats(requests=int(sum(values.get("invocations", []))),
                               errors=int(sum(values.get("errors", []))), latencies_ms=latencies_ms)
