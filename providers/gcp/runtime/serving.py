"""Serving on the gcp provider: rollouts in the platform database, applied to Vertex AI endpoints.

The rollout rules are the provider-neutral ones (``mlplat.services.rollout``): the same spec, the
same validation, the same events and audit entries as on the local gateway and on AWS. Each change is
computed in a platform-database transaction and applied to Vertex before it commits, so a refused or
failed call leaves the ledger unchanged.

Mapping: one Vertex endpoint per (model, environment), the id the Pulumi program gives it
(``plan.endpoint_id``; the runtime creates it, labelled ``mlplat-managed``, where the program did not).
Each version the ledger routes to is one DeployedModel of the version (``models/<id>@<version>``, on the
stack's machine type); the ledger's weights become the endpoint's ``trafficSplit`` keyed by deployed-model
id (integers summing to 100). A change deploys the versions missing (with no traffic), sets the split in
one ``endpoints.patch`` (``updateMask=traffic_split``), then undeploys the versions left without traffic;
a rollback is one split change back to the stable version's deployed model. The runtime is the one owner
of the split (the program ignores changes to it) and refuses endpoints without ``mlplat-managed``.

Canary: the controller steps the split through the stack's ``serving.canary.steps``; ``step`` runs the
provider-neutral judge (``CanaryJudge``) on Cloud Monitoring's per-deployed-model metrics
(``aiplatform.googleapis.com/prediction/online/prediction_count``, ``error_count``,
``prediction_latencies``), then advances, waits or rolls back. ``mlplat serve`` runs it in a loop.

Shadow: Vertex AI endpoints have no traffic mirroring, so a shadow deployment is refused with
``CapabilityNotSupported`` (use a canary or an A/B split).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

from mlplat.contracts import CanaryMetrics, CanaryWindow, EndpointDeployer, VariantStats
from mlplat.contracts.inventory import ServedEndpoint
from mlplat.errors import CapabilityNotSupported, Conflict, NotFound
from mlplat.services import rollout as ro
from mlplat_providers.gcp.runtime.session import GcpSession
from mlplat_providers.gcp.runtime.state import GcpState

CONTROLLER = "gcp-canary-controller"
VERTEX_METRIC = "aiplatform.googleapis.com/prediction/online/"
SHADOW_REASON = ("Vertex AI endpoints have no traffic mirroring (trafficSplit routes each request to one deployed "
                 "model); deploy with --strategy canary or ab instead")


def traffic_split(weights: Mapping[int, int], deployed: Mapping[int, str]) -> dict[str, int]:
    """The endpoint's ``trafficSplit`` for ledger ``weights`` (version → %) and ``deployed`` (version →
    deployed-model id): integer percentages summing to 100, versions at 0 left out."""
    split = {deployed[v]: int(w) for v, w in weights.items() if int(w) > 0}
    total = sum(split.values())
    if split and total != 100:
        raise ValueError(f"the ledger's weights sum to {total}, not 100: {dict(weights)}")
    return split


def distribution_percentile(distribution: Any, q: float) -> float | None:
    """The ``q``-th percentile of a Cloud Monitoring distribution: the upper bound of the bucket holding it
    (explicit, linear or exponential buckets), the mean where the bucket has no upper bound."""
    count = int(distribution.count)
    if not count:
        return None
    options = distribution.bucket_options
    counts = list(distribution.bucket_counts)
    if options.explicit_buckets.bounds:
        bounds = list(options.explicit_buckets.bounds)
    elif options.exponential_buckets.num_finite_buckets:
        exp = options.exponential_buckets
        bounds = [exp.scale * exp.growth_factor ** i for i in range(exp.num_finite_buckets + 1)]
    elif options.linear_buckets.num_finite_buckets:
        lin = options.linear_buckets
        bounds = [lin.offset + lin.width * i for i in range(lin.num_finite_buckets + 1)]
    else:
        return float(distribution.mean)
    rank, seen = math.ceil(count * q / 100), 0
    for i, n in enumerate(counts):
        seen += int(n)
        if seen >= rank:
            # bucket i covers [bounds[i-1], bounds[i]); the overflow bucket has no upper bound
            return float(bounds[i]) if i < len(bounds) else float(max(distribution.mean, bounds[-1]))
    return float(distribution.mean)


class GcpServing(ro.CloudEndpoints, EndpointDeployer):
    cloud_key = "vertex"

    def __init__(self, spec: Any, ctx: Any, session: GcpSession | None = None):
        self.spec = spec
        self.ctx = ctx
        self.gcp = session or GcpSession(spec)
        self.state = GcpState(spec.state_dir, getattr(ctx, "database_url", None)).ensure(
            create=not getattr(ctx, "reading", False))
        self.db = self.state.database()

    @cached_property
    def registry(self) -> Any:
        from mlplat_providers.gcp.runtime.registry import GcpModelRegistry

        return GcpModelRegistry(self.spec, self.gcp)

    @property
    def _cost(self) -> dict[str, Any]:
        serving = self.spec.serving
        return {"instance_type": serving.instance_type, "price_per_hour": serving.price_for()}

    @property
    def endpoints(self) -> Any:
        return self.gcp.vertex("endpoint")

    # --- names -------------------------------------------------------------------------------

    def endpoint_id(self, model: str, environment: str) -> str:
        from mlplat_providers.gcp.plan import endpoint_id

        plan = self.gcp.plan
        return str(endpoint_id(plan.prefix, model if environment == self.spec.environment else f"{model}-{environment}"))

    def endpoint_name(self, model: str, environment: str) -> str:
        return f"{self.gcp.location}/endpoints/{self.endpoint_id(model, environment)}"

    # --- Vertex ---------------------------------------------------------------------------------

    def get_endpoint(self, model: str, environment: str) -> Any | None:
        try:
            return self.gcp.call(self.endpoints.get_endpoint, name=self.endpoint_name(model, environment),
                                 not_found=True, method="get_endpoint", what=f"the endpoint of {model}")
        except NotFound:
            return None

    def ensure_endpoint(self, model: str, environment: str) -> Any:
        """The Vertex endpoint of ``model`` in ``environment``, created (labelled, platform-managed) if missing;
        an endpoint of that id the platform did not create is refused, never taken over."""
        from google.cloud import aiplatform_v1 as v1

        from mlplat_providers.gcp.plan import MANAGED_LABEL, slug

        found = self.get_endpoint(model, environment)
        if found is not None:
            if found.labels.get(MANAGED_LABEL) != "true":
                raise Conflict(f"Vertex endpoint {found.name} exists without the {MANAGED_LABEL} label; mlplat "
                               "does not change endpoints it did not create",
                               hint="deploy the model under another name, or label the endpoint "
                                    f"{MANAGED_LABEL}=true if the platform team hands it over")
            return found
        plan = self.gcp.plan
        endpoint = v1.Endpoint(display_name=slug(f"{plan.prefix}-{model}-{environment}", 128),
                               description=plan.describe(f"mlplat endpoint of {model} in {environment}"),
                               labels=self.gcp.labels)
        operation = self.gcp.call(self.endpoints.create_endpoint, parent=self.gcp.location, endpoint=endpoint,
                                  endpoint_id=self.endpoint_id(model, environment), method="create_endpoint",
                                  what=f"creating the endpoint of {model} in {environment}")
        return self.gcp.wait(operation, what=f"creating the endpoint of {model}")

    def deployed(self, endpoint: Any, model: str) -> dict[int, str]:
        """Version → deployed-model id of ``model``'s versions on ``endpoint``."""
        base = self.registry.model_name(model)
        return {int(d.model_version_id): d.id for d in endpoint.deployed_models
                if d.model.split("@", 1)[0] == base and str(d.model_version_id).isdigit()}

    def describe(self, model: str, environment: str) -> dict[str, Any] | None:
        """The endpoint as Vertex has it: name, deployed models (version → id) and the traffic per version."""
        endpoint = self.get_endpoint(model, environment)
        if endpoint is None:
            return None
        deployed = self.deployed(endpoint, model)
        by_id = {i: v for v, i in deployed.items()}
        return {"endpoint": endpoint.name, "deployed": {str(v): i for v, i in sorted(deployed.items())},
                "traffic_split": dict(endpoint.traffic_split),
                "weights": {str(by_id[i]): w for i, w in endpoint.traffic_split.items() if i in by_id}}

    def apply(self, endpoint: ro.Endpoint) -> dict[str, Any]:
        """Make the Vertex endpoint route as the ledger's ``endpoint`` says; returns what was done."""
        from google.cloud import aiplatform_v1 as v1

        model, environment = endpoint.model, endpoint.environment
        weights: dict[int, int] = {}
        for route in endpoint.routes:
            weights[int(route.version)] = weights.get(int(route.version), 0) + int(route.weight)
        live = self.ensure_endpoint(model, environment)
        deployed = self.deployed(live, model)
        added = []
        for version in sorted(v for v, w in weights.items() if w > 0 and v not in deployed):
            resources = v1.DedicatedResources(machine_spec=v1.MachineSpec(machine_type=self.gcp.plan.machine_type),
                                              min_replica_count=1, max_replica_count=1)
            operation = self.gcp.call(
                self.endpoints.deploy_model, endpoint=live.name, method="deploy_model",
                deployed_model=v1.DeployedModel(model=self.registry.version_name(model, version),
                                                display_name=f"{model}-v{version}"[:128],
                                                dedicated_resources=resources),
                traffic_split={}, what=f"deploying {model} version {version} on {live.name}")
            result = self.gcp.wait(operation, what=f"deploying {model} version {version}")
            deployed[version] = result.deployed_model.id
            added.append(version)
        split = traffic_split(weights, deployed)
        # deployed models of other models on the endpoint keep no traffic: the endpoint is this model's
        self.gcp.call(self.endpoints.update_endpoint, endpoint=v1.Endpoint(name=live.name, traffic_split=split),
                      update_mask={"paths": ["traffic_split"]}, method="update_endpoint",
                      what=f"moving traffic on {live.name}")
        removed = []
        for version, deployed_id in sorted(deployed.items()):
            if weights.get(version, 0) <= 0:
                operation = self.gcp.call(self.endpoints.undeploy_model, endpoint=live.name,
                                          deployed_model_id=deployed_id, method="undeploy_model",
                                          what=f"undeploying {model} version {version} from {live.name}")
                self.gcp.wait(operation, what=f"undeploying {model} version {version}")
                removed.append(version)
        return {"endpoint": live.name, "traffic_split": split, "deployed": added, "undeployed": removed}

    # --- changes -----------------------------------------------------------------------------------

    def check_strategy(self, strategy: str) -> None:
        if strategy == "shadow":
            raise CapabilityNotSupported("gcp", "shadow deployment", hint=SHADOW_REASON)

    def inventory(self) -> list[ServedEndpoint]:
        """Every Vertex endpoint of the stack's project and region (``endpoints.list``), whoever made it.

        An endpoint is the platform's when it carries ``mlplat-managed: "true"`` (on everything the program
        and the runtime create); its display name (``<prefix>-<model>``, or ``<prefix>-<model>-<environment>``
        for another environment's endpoint) names its model."""
        from mlplat_providers.gcp.plan import MANAGED_LABEL

        prefix = f"{self.gcp.plan.prefix}-"
        out: list[ServedEndpoint] = []
        pager = self.gcp.call(self.endpoints.list_endpoints, parent=self.gcp.location, method="list_endpoints",
                              what="listing the project's endpoints")
        for item in pager:
            labels = dict(item.labels)
            platform = labels.get(MANAGED_LABEL) == "true"
            model = None
            if platform and item.display_name.startswith(prefix):
                model = item.display_name[len(prefix):]
                for environment in sorted(_environments(self.spec), key=len, reverse=True):
                    if model.endswith(f"-{environment}") and environment != self.spec.environment:
                        model = model[:-len(environment) - 1]
                        break
            created = item.create_time
            out.append(ServedEndpoint(name=item.name, platform=platform, tags=labels, model=model,
                                      created_at=created.timestamp() if created else None,
                                      status="deployed" if item.deployed_models else "empty",
                                      location=f"{self.gcp.project}/{self.gcp.region}"))
        return out

    # --- the canary controller -------------------------------------------------------------------

    @cached_property
    def judge(self) -> ro.CanaryJudge:
        """The provider-neutral canary judge on Cloud Monitoring's metrics; one per instance, so a breach
        held for a re-check on fresh traffic is remembered across :meth:`step` calls."""
        return ro.CanaryJudge(MonitoringCanaryMetrics(self.gcp, self._deployed_ids), actor=CONTROLLER,
                              on_change=self.apply, **self._cost)

    def _deployed_ids(self, model: str, environment: str) -> tuple[str, dict[int, str]]:
        endpoint = self.get_endpoint(model, environment)
        if endpoint is None:
            return self.endpoint_id(model, environment), {}
        return endpoint.name.rsplit("/", 1)[1], self.deployed(endpoint, model)

    def step(self, name: str, *, environment: str) -> dict[str, Any]:
        """Judge the running canary of ``name`` once: advance to the next step, wait, or roll back."""
        verdict = ro.judge_running(self.db, self.judge, name, environment)
        return ro.step_report(verdict, self.show(name, environment=environment), self.cloud_key)

    # --- reading (list, show, rollout_status: ro.CloudEndpoints) ---------------------------------------

    def serve(self, *, environment: str, host: str, port: int, port_file: str | None = None,
              controller: bool = True) -> None:
        """Vertex AI serves the traffic; this runs the canary controller in the foreground until interrupted."""
        interval = float(os.environ.get("MLPLAT_GCP_CONTROLLER_INTERVAL", "30"))
        self.ctx.console.print(f"stack {self.spec.name} serves on Vertex AI ({self.gcp.location}); stepping "
                               f"canaries in '{environment}' every {interval:g}s", highlight=False)
        if not controller:
            return
        while True:
            self.step_running(environment)
            time.sleep(interval)


def _environments(spec: Any) -> set[str]:
    return {"dev", "staging", "production", str(spec.environment)}


class MonitoringCanaryMetrics(CanaryMetrics):
    """A canary as Vertex AI reports it to Cloud Monitoring: per deployed model, the prediction and error
    counts and the model latency distribution (each point's p95 is one latency sample); predictions are
    not seen, so prediction shift is not judged. A window's ``mark`` is the time of that look."""

    def __init__(self, session: GcpSession, deployed_ids: Callable[[str, str], tuple[str, dict[int, str]]]):
        self.gcp = session
        self.deployed_ids = deployed_ids

    def window(self, rollout: Mapping[str, Any], now: float) -> CanaryWindow | None:
        endpoint_id, deployed = self.deployed_ids(rollout["model"], rollout["environment"])
        stable_v, candidate_v = int(rollout["stable_version"]), int(rollout["candidate_version"])
        if stable_v not in deployed or candidate_v not in deployed:
            return None
        stable = self.stats(endpoint_id, deployed[stable_v], float(rollout["created_at"]), now)
        candidate = self.stats(endpoint_id, deployed[candidate_v], float(rollout["step_started_at"]), now)
        return CanaryWindow(stable, candidate, mark=now,
                            metrics={"source": "cloud-monitoring", "endpoint_id": endpoint_id,
                                     "deployed_models": {str(stable_v): deployed[stable_v],
                                                         str(candidate_v): deployed[candidate_v]}})

    def since(self, rollout: Mapping[str, Any], mark: float, now: float) -> VariantStats | None:
        endpoint_id, deployed = self.deployed_ids(rollout["model"], rollout["environment"])
        candidate_v = int(rollout["candidate_version"])
        if candidate_v not in deployed:
            return None
        return self.stats(endpoint_id, deployed[candidate_v], max(mark, float(rollout["step_started_at"])), now)

    def series(self, metric: str, endpoint_id: str, deployed_id: str, start: float, end: float,
               extra: str = "") -> list[Any]:
        from google.cloud import monitoring_v3

        request = monitoring_v3.ListTimeSeriesRequest(
            name=f"projects/{self.gcp.project}",
            filter=(f'metric.type = "{VERTEX_METRIC}{metric}" AND resource.type = "aiplatform.googleapis.com/Endpoint" '
                    f'AND resource.labels.endpoint_id = "{endpoint_id}" '
                    f'AND metric.labels.deployed_model_id = "{deployed_id}"{extra}'),
            interval=monitoring_v3.TimeInterval(start_time={"seconds": int(math.floor(start))},
                                                end_time={"seconds": int(math.ceil(end))}),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL)
        pager = self.gcp.call(self.gcp.monitoring().list_time_series, request=request, method="list_time_series",
                              what=f"reading {metric} of deployed model {deployed_id}")
        return [point for ts in pager for point in ts.points]

    def stats(self, endpoint_id: str, deployed_id: str, since: float, until: float) -> VariantStats:
        requests = sum(int(p.value.int64_value) for p in
                       self.series("prediction_count", endpoint_id, deployed_id, since, until))
        errors = sum(int(p.value.int64_value) for p in self.series("error_count", endpoint_id, deployed_id, since,
                                                                    until))
        latencies = [distribution_percentile(p.value.distribution_value, 95)
                     for p in self.series("prediction_latencies", endpoint_id, deployed_id, since, until,
                                               ' AND metric.labels.latency_type = "model"')]
        return VariantStats(requests=requests, errors=errors,
                               latencies_ms=[v for v in latencies if v is not None])
