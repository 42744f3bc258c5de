"""Serving on the aws provider: rollouts in the platform database, applied to SageMaker endpoints.

The rollout rules are the provider-neutral ones (``mlplat.services.rollout``): the same
spec, the same validation, the same events and audit entries as on the local gateway.
Each change is computed in a platform-database transaction and applied to SageMaker
before it commits, so a refused or failed AWS call leaves the ledger unchanged.

Mapping: the runtime owns the endpoint, its configurations, its SageMaker models and the traffic
(the Pulumi program creates none of them, only the rollback alarms and the dashboard that watch
them). One endpoint per (model, environment), named like the program's; variants have stable
names whatever version they serve: ``primary`` the stable version, ``canary`` the candidate of a
canary or A/B deployment, ``shadow`` a mirrored version (its weight the mirrored share of the
primary's), weights in percent. A change that only moves traffic between variants already serving
the right versions (canary steps, rollback to the warm stable version, A/B weights) is
``UpdateEndpointWeightsAndCapacities``: seconds, no new instances. Anything else gets a new
endpoint configuration and ``UpdateEndpoint`` (``CreateEndpoint`` the first time), sending the
stack's ``DeploymentConfig`` whenever the variant names stay the same. :meth:`AwsServing.tidy`
removes variants left at weight 0 once a rollout is over, then older configurations and unused
models, all named by the platform.

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
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

from mlplat.contracts import CanaryMetrics, CanaryWindow, EndpointDeployer, ServedEndpoint
from mlplat.errors import Conflict, Denied, NotFound, StackError
from mlplat.services import rollout as ro
from mlplat.services.serving import check_deploy
from mlplat_providers.aws.plan import CANARY, PRIMARY
from mlplat_providers.aws.runtime.session import AwsSession
from mlplat_providers.aws.runtime.state import AwsState

CONTROLLER = "aws-canary-controller"
MISSING = ("Could not find", "does not exist", "ResourceNotFound", "not found")
PRODUCTION_ENVS = ("production", "prod")
# The tag keys this runtime puts on every endpoint it creates (the stack's cost tags, ``Tags=self._tags()``;
# the platform role may create with these keys only): an endpoint lacking one was made outside the platform.
PLATFORM_TAG_KEYS = ("team", "cost-center", "environment", "owner")


_MODEL_VERSION = re.compile(r"-v(\d+)$")


def version_of(model_name: str) -> int | None:
    """The version a SageMaker model of the platform serves (its name ends in ``-v<version>``)."""
    match = _MODEL_VERSION.search(model_name or "")
    return int(match.group(1)) if match else None


def sagemaker_variant(ledger_variant: str, version: int, stable: int | None) -> str:
    """The SageMaker variant that serves a route the ledger names ``ledger_variant`` (``primary`` or
    ``stable``: the stable version; ``canary``: the candidate; an A/B arm ``v<N>``: ``primary`` when it is
    the stable version, else ``canary``), as :func:`slots` names them."""
    if ledger_variant in (PRIMARY, "stable"):
        return PRIMARY
    if ledger_variant == CANARY:
        return CANARY
    return PRIMARY if stable is not None and int(version) == int(stable) else CANARY


def slots(endpoint: ro.Endpoint) -> dict[str, tuple[int, int]]:
    """Variant name → (version, weight %) for the ledger's ``endpoint``: the stable version on ``primary``,
    the candidate on ``canary``, any further A/B arm on ``v<version>``. Stable names across deploys keep
    the alarms and the dashboard on variants that exist, and let SageMaker's guardrails run."""
    from mlplat_providers.aws.plan import CANARY, PRIMARY

    desired: dict[int, int] = {}
    for route in endpoint.routes:
        desired[route.version] = desired.get(route.version, 0) + int(route.weight)
    out: dict[str, tuple[int, int]] = {}
    for version, weight in sorted(desired.items(), key=lambda vw: (vw[0] != endpoint.stable_version, vw[0])):
        name = PRIMARY if version == endpoint.stable_version else CANARY if CANARY not in out else f"v{version}"
        out[name] = (version, weight)
    return out


def allowed_instance_types(spec) -> list[str] | None:
    """The spend policy's allow-list for this stack (``None`` when the policy is disabled)."""
    from mlplat_policies.rules import BY_NAME, policy_config, resolve_level

    policy = BY_NAME["spend"]
    setting = spec.policy.policies.get("spend")
    if resolve_level(policy, spec.policy.enforcement_level, setting) == "disabled":
        return None
    return list(policy_config(policy, setting).get("allowedInstanceTypes") or [])


class AwsServing(ro.CloudEndpoints, EndpointDeployer):
    cloud_key = "sagemaker"

    def __init__(self, spec, ctx, session: AwsSession | None = None):
        self.spec = spec
        self.ctx = ctx
        self.aws = session or AwsSession(spec)
        self.state = AwsState(spec.state_dir, getattr(ctx, "database_url", None)).ensure(
            create=not getattr(ctx, "reading", False))
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

    def stable_version(self, model: str, environment: str) -> int | None:
        conn = self.db.connect()
        try:
            endpoint = ro.get_endpoint(conn, model, environment)
        finally:
            conn.close()
        return None if endpoint is None else endpoint.stable_version

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
        """The endpoint as SageMaker has it: status, configuration, its variants (name → version, weight,
        model), the weight per version, the shadow."""
        name = self.endpoint_name(model, environment)
        try:
            endpoint = self.aws.call("sagemaker", "describe_endpoint", EndpointName=name, not_found=MISSING)
        except NotFound:
            return None
        config = self.aws.call("sagemaker", "describe_endpoint_config",
                               EndpointConfigName=endpoint["EndpointConfigName"])
        live = {v["VariantName"]: v for v in endpoint.get("ProductionVariants") or []}
        variants: dict[str, dict[str, Any]] = {}
        for v in config.get("ProductionVariants") or []:
            current = live.get(v["VariantName"], {})
            variants[v["VariantName"]] = {
                "version": version_of(v.get("ModelName", "")), "model": v.get("ModelName"),
                "weight": float(current.get("CurrentWeight", current.get("DesiredWeight", 0.0)) or 0.0)}
        shadow = None
        for v in config.get("ShadowProductionVariants") or []:
            shadow = {"variant": v["VariantName"], "version": version_of(v.get("ModelName", "")),
                      "model": v.get("ModelName"), "weight": float(v.get("InitialVariantWeight") or 0.0)}
        weights = {v["version"]: v["weight"] for v in variants.values() if v["version"] is not None}
        return {"endpoint": name, "status": endpoint.get("EndpointStatus"), "config": endpoint["EndpointConfigName"],
                "variants": variants, "weights": weights, "shadow": shadow}

    def ensure_model(self, model: str, version: int, environment: str) -> str:
        """The SageMaker model of ``version``: built from its model package once SageMaker lists the package
        as Approved (SageMaker deploys a versioned package only then). Outside production a version still
        not Approved (awaiting a production approval, or refused one) runs the package's own container and
        model data; production serves Approved packages only (:meth:`check_approved` refuses earlier)."""
        from mlplat_providers.aws.service_rules import package_deploy_problem

        name = self.model_name(model, version, environment)
        try:
            self.aws.call("sagemaker", "describe_model", ModelName=name, not_found=MISSING)
            return name
        except NotFound:
            pass
        package = self.registry.describe_version(model, version)
        status = str(package.get("ModelApprovalStatus") or "PendingManualApproval")
        if package_deploy_problem(status) is None:
            containers = [{"ModelPackageName": self.registry.package_arn(model, version)}]
        elif environment.lower() in PRODUCTION_ENVS:
            raise Denied(f"{model} version {version} is {status} in SageMaker's registry; it cannot be served",
                         where=self.registry.package_arn(model, version),
                         hint="deploy an approved version, or promote this one again")
        else:
            spec = (package.get("InferenceSpecification") or {}).get("Containers") or [{}]
            containers = [{k: spec[0][k] for k in ("Image", "ModelDataUrl", "Environment") if spec[0].get(k)}]
        self.aws.call("sagemaker", "create_model", ModelName=name, Containers=containers,
                      ExecutionRoleArn=self.aws.role_arn, Tags=self._tags(),
                      what=f"creating the SageMaker model of {model} version {version}")
        return name

    def config_name(self, endpoint_name: str) -> str:
        return f"{endpoint_name[:40]}-{int(time.time() * 1000)}-{uuid.uuid4().hex[:4]}"

    def _owned_config(self, endpoint_name: str, config: str) -> bool:
        """An endpoint configuration this platform made for ``endpoint_name`` (see :meth:`config_name`)."""
        return re.fullmatch(re.escape(endpoint_name[:40]) + r"-\d{13}-[0-9a-f]{4}", config) is not None

    def apply(self, endpoint: ro.Endpoint, *, force_config: bool = False) -> dict[str, Any]:
        """Make the SageMaker endpoint route as ``endpoint`` says; returns what was done.

        A change that only moves traffic between variants already serving the right versions is
        ``UpdateEndpointWeightsAndCapacities``. Anything else (or ``force_config``) is a new endpoint
        configuration: ``CreateEndpoint`` the first time, else ``UpdateEndpoint`` — with the stack's
        ``DeploymentConfig`` (blue/green routing, rollback alarms) whenever the variant names stay the same,
        which deployment guardrails require; a change of names (a canary or shadow added or removed) is
        SageMaker's default all-at-once blue/green, the platform's controller watching the same alarms.
        """
        from mlplat_providers.aws.plan import SHADOW, capture_config, deployment_config, instance_count
        from mlplat_providers.aws.service_rules import update_endpoint_problem

        model, environment = endpoint.model, endpoint.environment
        name = self.endpoint_name(model, environment)
        wanted = slots(endpoint)
        primary = max((w for _, w in wanted.values()), default=100)
        shadow: dict[str, Any] | None = None
        if endpoint.shadow:
            shadow = {"version": int(endpoint.shadow["version"]),
                      "weight": round(primary * int(endpoint.shadow["percent"]) / 100.0, 4)}
        current = self.describe(model, environment)
        if current is not None and current["status"] not in ("InService", None):
            raise Conflict(f"SageMaker endpoint {name} is {current['status']}; it accepts changes when InService",
                           hint="wait for the running update to finish (mlplat deployments show), then retry")
        same_shadow = current is not None and (shadow or {}).get("version") == (current["shadow"] or {}).get(
            "version") and (shadow is None or abs(shadow["weight"] - current["shadow"]["weight"]) < 1e-6)
        if current is not None and not force_config and same_shadow and all(
                current["variants"].get(v, {}).get("version") == version for v, (version, _) in wanted.items()):
            weights = [{"VariantName": v, "DesiredWeight": float(wanted[v][1] if v in wanted else 0)}
                       for v in sorted(current["variants"])]
            self.aws.call("sagemaker", "update_endpoint_weights_and_capacities", EndpointName=name,
                          DesiredWeightsAndCapacities=weights, what=f"moving traffic on {name}")
            return {"action": "weights", "endpoint": name, "config": current["config"],
                    "weights": {w["VariantName"]: w["DesiredWeight"] for w in weights}}
        instance, count = self.spec.serving.instance_type, instance_count(self.spec)
        variants = [{"VariantName": v, "ModelName": self.ensure_model(model, version, environment),
                     "InstanceType": instance, "InitialInstanceCount": count, "InitialVariantWeight": float(w)}
                    for v, (version, w) in wanted.items()]
        config_name = self.config_name(name)
        params: dict[str, Any] = {"EndpointConfigName": config_name, "ProductionVariants": variants,
                                  "Tags": self._tags()}
        if shadow is not None:
            params["ShadowProductionVariants"] = [{
                "VariantName": SHADOW, "ModelName": self.ensure_model(model, shadow["version"], environment),
                "InstanceType": instance, "InitialInstanceCount": count, "InitialVariantWeight": shadow["weight"]}]
        capture = capture_config(self.spec, self.aws.bucket, model, environment)
        if capture is not None:
            params["DataCaptureConfig"] = capture
        self.aws.call("sagemaker", "create_endpoint_config", what=f"creating endpoint configuration {config_name}",
                      **params)
        new_names = {v["VariantName"] for v in variants} | ({SHADOW} if shadow is not None else set())
        update: dict[str, Any] = {}
        if current is None:
            self.aws.call("sagemaker", "create_endpoint", EndpointName=name, EndpointConfigName=config_name,
                          Tags=self._tags(), what=f"creating endpoint {name}")
            action = "create"
        else:
            old_names = set(current["variants"]) | ({current["shadow"]["variant"]} if current["shadow"] else set())
            update = {"EndpointName": name, "EndpointConfigName": config_name, "RetainAllVariantProperties": False}
            if old_names == new_names:
                update["DeploymentConfig"] = deployment_config(self.spec, self._existing_alarms(name))
            problem = update_endpoint_problem(update, old_variants=old_names, new_variants=new_names,
                                              fleet=count)
            if problem:  # a bug here, not a user error: never send SageMaker what it refuses
                raise StackError(f"refusing to update endpoint {name}: {problem}", where=self.spec.path or None,
                                 hint="report this; the endpoint is unchanged")
            self.aws.call("sagemaker", "update_endpoint", what=f"updating endpoint {name}", **update)
            action = "update"
        return {"action": action, "endpoint": name, "config": config_name,
                "weights": {v["VariantName"]: v["InitialVariantWeight"] for v in variants},
                "shadow": params.get("ShadowProductionVariants"),
                "deployment_config": update.get("DeploymentConfig")}

    def tidy(self, model: str, environment: str) -> dict[str, Any]:
        """Remove what finished deploys leave on SageMaker, all of it named by this platform: once no rollout
        runs, variants at weight 0 (they keep paid instances) go with a new configuration; once the endpoint
        is InService on it, the older configurations and the models no configuration uses are deleted.
        Idempotent; does nothing while the endpoint is updating (SageMaker forbids deleting a configuration
        then)."""
        current = self.describe(model, environment)
        if current is None or current["status"] != "InService":
            return {"action": "none", "removed": []}
        conn = self.db.connect()
        try:
            endpoint = ro.require_endpoint(conn, model, environment)
            running = endpoint.rollout_id is not None
        finally:
            conn.close()
        idle = [v for v, d in current["variants"].items() if d["weight"] <= 0]
        if idle and not running:
            applied = self.apply(endpoint, force_config=True)
            return {"action": "variants", "removed": sorted(idle), "sagemaker": applied}
        name = current["endpoint"]
        removed = []
        configs = self.aws.call("sagemaker", "list_endpoint_configs", NameContains=name[:40], MaxResults=100,
                                what=f"listing the configurations of {name}").get("EndpointConfigs", [])
        for config in configs:
            config_name = config["EndpointConfigName"]
            if config_name != current["config"] and self._owned_config(name, config_name):
                try:
                    self.aws.call("sagemaker", "delete_endpoint_config", EndpointConfigName=config_name,
                                  not_found=MISSING, what=f"deleting endpoint configuration {config_name}")
                except NotFound:
                    continue  # deleted meanwhile
                removed.append(config_name)
        used = {d["model"] for d in current["variants"].values()} | (
            {current["shadow"]["model"]} if current["shadow"] else set())
        models = self.aws.call("sagemaker", "list_models", NameContains=f"{name}-v", MaxResults=100,
                               what=f"listing the models of {name}").get("Models", [])
        for found in models:
            model_name = found["ModelName"]
            if model_name not in used and re.fullmatch(re.escape(name) + r"-v\d+", model_name):
                try:
                    self.aws.call("sagemaker", "delete_model", ModelName=model_name, not_found=MISSING,
                                  what=f"deleting model {model_name}")
                except NotFound:
                    continue
                removed.append(model_name)
        return {"action": "deleted" if removed else "none", "removed": removed}

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
        out = endpoint.to_dict() | {"sagemaker": applied}
        if self.spec.provider.model_monitor.enabled:  # opt-in; the endpoint exists now, the deploy is committed
            out["model_monitor"] = self.model_monitor(name, environment)
        return out

    def model_monitor(self, model: str, environment: str) -> dict[str, Any]:
        """Advance the opt-in Model Monitor schedule of the endpoint of ``model`` one step (runtime/model_monitor.py).
        Only the stack's environment has alarms; a refused call is reported, never undoes a committed deploy."""
        from mlplat.errors import MlplatError
        from mlplat_providers.aws.runtime.model_monitor import ModelMonitorSchedules

        if environment != self.spec.environment:
            return {"state": "not monitored", "reason": f"Model Monitor runs in {self.spec.environment} only"}
        stable = self.stable_version(model, environment)
        if stable is None:
            return {"state": "no endpoint"}

        def reference(name: str, version: int) -> Any:
            from mlplat.services.monitoring.passes import reference_frame

            return reference_frame(self.spec, self.ctx, name, version)

        try:
            schedules = ModelMonitorSchedules(self.spec, self.aws.call, bucket=self.aws.bucket,
                                              role_arn=self.aws.role_arn, account=self.aws.account,
                                              reference=reference)
            state: dict[str, Any] = schedules.ensure(model, environment, self.endpoint_name(model, environment), stable)
        except MlplatError as exc:
            return {"state": "error", "error": exc.message}
        return state

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
                                   reason=reason or "manual rollback", requested_at=started, **self._cost)
            assert endpoint is not None
            applied = self.apply(endpoint)
        out = endpoint.to_dict() | {"sagemaker": applied}
        out["applied_in_s"] = round(time.time() - started, 4)
        return out

    # --- what runs beside the platform -----------------------------------------------------------

    def inventory(self) -> list[ServedEndpoint]:
        """Every SageMaker endpoint of the stack's account and region (ListEndpoints, ListTags).

        An endpoint is the platform's when it carries every tag key this runtime puts on the endpoints it
        creates (:data:`PLATFORM_TAG_KEYS`, the stack's cost tags) and its name follows the program's
        naming (``mlplat-<team>-<environment>-<model>``), which also names its model. Tags the caller may
        not read (the platform role reads only its team's) leave the endpoint untagged: outside the
        platform, owner unknown."""
        from mlplat_providers.aws.plan import slug
        from mlplat_providers.aws.runtime.session import AwsAccessDenied

        location = f"{self.aws.account}/{self.aws.plan.region}"
        out: list[ServedEndpoint] = []
        params: dict[str, Any] = {"MaxResults": 100}
        while True:
            page = self.aws.call("sagemaker", "list_endpoints", what="listing the account's endpoints", **params)
            for item in page.get("Endpoints") or []:
                name = item["EndpointName"]
                try:
                    tags = {t["Key"]: t["Value"] for t in self.aws.call(
                        "sagemaker", "list_tags", ResourceArn=item["EndpointArn"], MaxResults=100,
                        what=f"reading the tags of endpoint {name}").get("Tags") or []}
                except AwsAccessDenied:
                    tags = {}
                platform, model = False, None
                if all(tags.get(k) for k in PLATFORM_TAG_KEYS):
                    prefix = slug(f"mlplat-{tags['team']}-{tags['environment']}", 40) + "-"
                    if name.startswith(prefix):
                        platform, model = True, name[len(prefix):]
                created = item.get("CreationTime")
                out.append(ServedEndpoint(name=name, platform=platform, tags=tags, model=model,
                                          created_at=created.timestamp() if isinstance(created, dt.datetime) else None,
                                          status=item.get("EndpointStatus"), location=location))
            token = page.get("NextToken")
            if not token:
                return out
            params["NextToken"] = token

    # --- the canary controller -------------------------------------------------------------------

    @cached_property
    def judge(self) -> ro.CanaryJudge:
        """The provider-neutral canary judge on this stack's CloudWatch metrics. One per instance:
        a breach it holds for a re-check on fresh traffic is remembered across :meth:`step` calls."""
        return ro.CanaryJudge(CloudWatchCanaryMetrics(self.aws.call, self.endpoint_name, self._rollback_alarms),
                              actor=CONTROLLER, on_change=self.apply, **self._cost)

    def _rollback_alarms(self, endpoint_name: str) -> list[str]:
        from mlplat_providers.aws.plan import rollback_alarms

        return [name for name, _variant, _alarm in rollback_alarms(self.spec, endpoint_name)]

    def _existing_alarms(self, endpoint_name: str) -> list[str]:
        """The endpoint's rollback alarms that exist (`mlplat up` makes them for the stack's environment)."""
        found = self.aws.call("cloudwatch", "describe_alarms", AlarmNames=self._rollback_alarms(endpoint_name),
                              what=f"reading the rollback alarms of {endpoint_name}").get("MetricAlarms", [])
        names = {a["AlarmName"] for a in found}
        return [n for n in self._rollback_alarms(endpoint_name) if n in names]

    def step(self, name: str, *, environment: str) -> dict[str, Any]:
        """Judge the running canary of ``name`` once: advance to the next step, wait, or roll back."""
        verdict = ro.judge_running(self.db, self.judge, name, environment)
        assert verdict.decision is not None  # CloudWatch always gives a view of the current step
        return ro.step_report(verdict, self.show(name, environment=environment), self.cloud_key)

    # --- reading (list, show, rollout_status: ro.CloudEndpoints) ---------------------------------------

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
            self.step_running(environment)
            for deployment in self.list(environment):
                tidied = self.tidy(deployment["model"], environment)
                if tidied["removed"]:
                    self.ctx.console.print(f"{deployment['model']}: removed {', '.join(tidied['removed'])}",
                                           highlight=False)
                if self.spec.provider.model_monitor.enabled:
                    state = self.model_monitor(deployment["model"], environment)
                    if state["state"] not in ("scheduled", "baselining", "not monitored"):
                        self.ctx.console.print(f"{deployment['model']}: Model Monitor {state}", highlight=False,
                                               markup=False)
            time.sleep(interval)


class CloudWatchCanaryMetrics(CanaryMetrics):
    """A canary as SageMaker reports it: per variant, CloudWatch's invocations, 5xx errors and p95
    model latency per minute (predictions are not seen: prediction shift is not judged), and the
    endpoint's rollback alarms; beside them, the drift and accuracy the platform's monitoring pass
    published per variant (``metrics["platform"]``). A window's ``mark`` is the time of that look."""

    def __init__(self, call: Callable[..., dict[str, Any]], endpoint_name: Callable[[str, str], str],
                 rollback_alarms: Callable[[str], list[str]]):
        self.call = call  # AwsSession.call: (service, operation, **params)
        self.endpoint_name = endpoint_name
        self.rollback_alarms = rollback_alarms

    def window(self, rollout: Mapping[str, Any], now: float) -> CanaryWindow:
        endpoint = self.endpoint_name(rollout["model"], rollout["environment"])
        firing = self.alarms_firing(endpoint)
        stable = self.variant_stats(endpoint, PRIMARY, float(rollout["created_at"]), now)
        candidate = self.variant_stats(endpoint, CANARY, float(rollout["step_started_at"]), now)
        return CanaryWindow(stable, candidate, mark=now, alarms=tuple(firing),
                            metrics={"alarms": firing, "source": "cloudwatch",
                                     "platform": self.platform_metrics(rollout, now)})

    def since(self, rollout: Mapping[str, Any], mark: float, now: float) -> ro.VariantStats:
        # a datapoint covers its whole minute: the minute holding the mark is partly older traffic
        start = max(math.ceil(mark / 60) * 60, float(rollout["step_started_at"]))
        endpoint = self.endpoint_name(rollout["model"], rollout["environment"])
        return self.variant_stats(endpoint, CANARY, start, now)

    def platform_metrics(self, rollout: Mapping[str, Any], now: float) -> dict[str, dict[str, float]]:
        """Variant → the newest drift (``FeatureDriftMaxPSI``) and quality (``Accuracy``) the platform's monitoring
        pass published for it since the rollout began (runtime/monitoring.py; one datapoint per pass), for the
        step's record beside SageMaker's own metrics."""
        from mlplat_providers.aws.account_rules import metric_granularity
        from mlplat_providers.aws.plan import DRIFT_ALARM_METRIC, PLATFORM_NAMESPACE, QUALITY_METRICS, platform_dimensions

        since = float(rollout["created_at"])
        names = (DRIFT_ALARM_METRIC, QUALITY_METRICS["quality.accuracy"])
        queries, keys = [], {}
        for variant in (PRIMARY, CANARY):
            dims = [{"Name": k, "Value": v}
                    for k, v in platform_dimensions(rollout["model"], rollout["environment"], variant).items()]
            for i, name in enumerate(names):
                keys[f"{variant}{i}"] = (variant, name)
                queries.append({"Id": f"{variant}{i}", "MetricStat": {"Metric": {
                    "Namespace": PLATFORM_NAMESPACE, "MetricName": name, "Dimensions": dims},
                    "Period": metric_granularity(since, now), "Stat": "Maximum"}})
        result = self.call("cloudwatch", "get_metric_data", MetricDataQueries=queries, ScanBy="TimestampDescending",
                           StartTime=dt.datetime.fromtimestamp(int(since // 60) * 60, dt.UTC),
                           EndTime=dt.datetime.fromtimestamp(now + 60, dt.UTC),
                           what=f"reading the monitoring metrics of {rollout['model']}")
        out: dict[str, dict[str, float]] = {}
        for r in result.get("MetricDataResults", []):
            if r.get("Values") and r["Id"] in keys:
                variant, name = keys[r["Id"]]
                out.setdefault(variant, {})[name] = float(r["Values"][0])
        return out

    def alarms_firing(self, endpoint_name: str) -> list[str]:
        alarms = self.call("cloudwatch", "describe_alarms", AlarmNames=self.rollback_alarms(endpoint_name),
                           what=f"reading the rollback alarms of {endpoint_name}").get("MetricAlarms", [])
        return [f"CloudWatch alarm {a['AlarmName']} is in ALARM ({a.get('StateReason', '')})".strip()
                for a in alarms if a.get("StateValue") == "ALARM"]

    def variant_stats(self, endpoint_name: str, variant: str, since: float, until: float) -> ro.VariantStats:
        """Invocations, 5xx errors and p95 model latency of one variant (``primary``: the stable version,
        ``canary``: the candidate), from CloudWatch."""
        start = dt.datetime.fromtimestamp(int(since // 60) * 60, dt.UTC)
        end = dt.datetime.fromtimestamp(until + 60, dt.UTC)
        dims = [{"Name": "EndpointName", "Value": endpoint_name}, {"Name": "VariantName", "Value": variant}]

        def query(qid: str, metric: str, stat: str) -> dict[str, Any]:
            return {"Id": qid, "MetricStat": {"Metric": {"Namespace": "AWS/SageMaker", "MetricName": metric,
                                                         "Dimensions": dims}, "Period": 60, "Stat": stat}}

        result = self.call("cloudwatch", "get_metric_data", StartTime=start, EndTime=end, ScanBy="TimestampAscending",
                           MetricDataQueries=[query("invocations", "Invocations", "Sum"),
                                              query("errors", "Invocation5XXErrors", "Sum"),
                                              query("latency", "ModelLatency", "p95")],
                           what=f"reading the metrics of {endpoint_name}/{variant}")
        values = {r["Id"]: r.get("Values") or [] for r in result.get("MetricDataResults", [])}
        latencies_ms = [v / 1000.0 for v in values.get("latency", [])]  # ModelLatency is in microseconds
        return ro.VariantStats(requests=int(sum(values.get("invocations", []))),
                               errors=int(sum(values.get("errors", []))), latencies_ms=latencies_ms)
