"""Serving on the azure provider: rollouts in the platform database, applied to managed online endpoints.

The rollout rules are the provider-neutral ones (``mlplat.services.rollout``): the same spec, the same
validation, the same events and audit entries as on the local gateway, AWS and GCP. Each change is
computed in a platform-database transaction and applied to Azure before it commits, so a refused or
failed call leaves the ledger unchanged.

Mapping: one managed online endpoint per (model, environment), named ``<model>-<8 hex>`` by
``naming.endpoint_name`` (unique per region; created by the runtime, tagged ``mlplat-managed``, key
auth). Each version the ledger routes to is one ``ManagedOnlineDeployment`` (``<model>-v<version>``) of
the registered model version on the stack's instance type. The ledger's weights become the endpoint's
``traffic`` (integers summing to 100) and a shadow rollout its ``mirror_traffic`` (native mirroring:
Azure copies that share of live requests to the shadow deployment and discards its answers; at most
50 %, never to a deployment taking live traffic). A change creates the deployments missing (no
traffic), sets ``traffic`` and ``mirror_traffic`` in one endpoint update, then deletes the platform's
deployments left with neither; a rollback is one traffic change back to the stable version. The
runtime is the one owner of the endpoint's traffic and never changes an endpoint or deployment
without the ``mlplat-managed`` tag.

Canary: the controller steps the traffic through the stack's ``serving.canary.steps``; ``step`` runs
the provider-neutral judge (``CanaryJudge``) on Azure Monitor's per-deployment endpoint metrics
(``RequestsPerMinute`` totals, those with ``statusCodeClass`` ``5xx`` as errors, ``RequestLatency``
averages, split by the ``deployment`` dimension).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from mlplat.contracts import CanaryMetrics, CanaryWindow, EndpointDeployer, VariantStats
from mlplat.contracts.inventory import ServedEndpoint
from mlplat.errors import Conflict, NotFound
from mlplat.services import rollout as ro
from mlplat_providers.azure.naming import SERVING_ENVIRONMENT
from mlplat_providers.azure.runtime.session import MANAGED_TAG, AzureSession
from mlplat_providers.azure.runtime.state import AzureState

CONTROLLER = "azure-canary-controller"
A_EP = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
SERVING_ENVIRONMENT_ENV = "MLPLAT_AZURE_SERVING_ENVIRONMENT"


def traffic_map(weights: Mapping[int, int], names: Mapping[int, str]) -> dict[str, int]:
    """The endpoint's ``traffic`` for ledger ``weights`` (version → %): deployment name → integer
    percentage, summing to 100; versions at 0 left out."""
    traffic = {names[v]: int(w) for v, w in weights.items() if int(w) > 0}
    total = sum(traffic.values())
    if traffic and total != 100:
        raise ValueError(f"the ledger's weights sum to {total}, not 100: {dict(weights)}")
    return traffic


class AzureServing(ro.CloudEndpoints, EndpointDeployer):
    cloud_key = "azure"

    def __init__(self, spec: Any, ctx: Any, session: AzureSession | None = None):
        self.spec = spec
        self.ctx = ctx
        self.azure = session or AzureSession(spec)
        self.state = AzureState(spec.state_dir, getattr(ctx, "database_url", None)).ensure(
            create=not getattr(ctx, "reading", False))
        self.db = self.state.database()

    @cached_property
    def registry(self) -> Any:
        from mlplat_providers.azure.runtime.registry import AzureModelRegistry

        return AzureModelRegistry(self.spec, self.azure)

    @property
    def _cost(self) -> dict[str, Any]:
        serving = self.spec.serving
        return {"instance_type": serving.instance_type, "price_per_hour": serving.price_for()}

    # --- names -------------------------------------------------------------------------------

    def endpoint_name(self, model: str, environment: str) -> str:
        return str(self.azure.endpoint_name(model if environment == self.spec.environment else
                                            f"{model}-{environment}"))

    def deployment_name(self, model: str, version: int) -> str:
        return str(self.azure.deployment_name(model, version))

    # --- Azure ----------------------------------------------------------------------------------

    def get_endpoint(self, model: str, environment: str) -> Any | None:
        try:
            return self.azure.call(self.azure.ml().online_endpoints.get, self.endpoint_name(model, environment),
                                   not_found=True, action=f"{A_EP}/read", what=f"the endpoint of {model}")
        except NotFound:
            return None

    def ensure_endpoint(self, model: str, environment: str) -> Any:
        """The endpoint of ``model`` in ``environment``, created (tagged, platform-managed) if missing; an
        endpoint of that name the platform did not create is refused, never taken over."""
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        found = self.get_endpoint(model, environment)
        if found is not None:
            if (found.tags or {}).get(MANAGED_TAG) != "true":
                raise Conflict(f"online endpoint {found.name} exists without the {MANAGED_TAG} tag; mlplat does not "
                               "change endpoints it did not create",
                               hint="deploy the model under another name, or tag the endpoint "
                                    f"{MANAGED_TAG}=true if the platform team hands it over")
            return found
        name = self.endpoint_name(model, environment)
        endpoint = ManagedOnlineEndpoint(name=name, auth_mode="key", tags={**self.azure.tags, "mlplat-model": model,
                                                                           "mlplat-environment": environment},
                                         description=f"mlplat endpoint of {model} in {environment}")
        return self.azure.run(self.azure.ml().online_endpoints.begin_create_or_update, endpoint,
                              action=f"{A_EP}/write", what=f"creating the endpoint of {model} in {environment}")

    def deployments(self, endpoint: Any, model: str) -> dict[int, Any]:
        """Version → deployment of ``model``'s platform deployments on ``endpoint``."""
        prefix = self.deployment_name(model, 0)[:-1]
        out: dict[int, Any] = {}
        listed = self.azure.call(lambda: list(self.azure.ml().online_deployments.list(endpoint.name)),
                                 action=f"{A_EP}/deployments/read", what=f"deployments of {endpoint.name}")
        for deployment in listed:
            tail = deployment.name[len(prefix):]
            if deployment.name.startswith(prefix) and tail.isdigit() and \
                    (deployment.tags or {}).get(MANAGED_TAG) == "true":
                out[int(tail)] = deployment
        return out

    def describe(self, model: str, environment: str) -> dict[str, Any] | None:
        """The endpoint as Azure has it: name, deployments (version → name), traffic and mirror traffic."""
        endpoint = self.get_endpoint(model, environment)
        if endpoint is None:
            return None
        deployed = self.deployments(endpoint, model)
        by_name = {d.name: v for v, d in deployed.items()}
        traffic = dict(endpoint.traffic or {})
        mirror = dict(endpoint.mirror_traffic or {})
        return {"endpoint": endpoint.name, "deployed": {str(v): d.name for v, d in sorted(deployed.items())},
                "traffic": traffic, "mirror_traffic": mirror,
                "weights": {str(by_name[n]): w for n, w in traffic.items() if n in by_name and w},
                "shadow": {str(by_name[n]): w for n, w in mirror.items() if n in by_name and w}}

    def _create_deployment(self, endpoint: Any, model: str, version: int) -> Any:
        from azure.ai.ml.entities import ManagedOnlineDeployment

        from mlplat_providers.azure.runtime.collector import data_collector

        name = self.deployment_name(model, version)
        deployment = ManagedOnlineDeployment(
            name=name, endpoint_name=endpoint.name,
            model=f"azureml:{self.registry.model_name(model)}:{version}",
            environment=os.environ.get(SERVING_ENVIRONMENT_ENV) or f"{SERVING_ENVIRONMENT}@latest",
            instance_type=self.spec.serving.instance_type, instance_count=1,
            data_collector=data_collector(),  # model_inputs / model_outputs to the workspace blob store
            tags={**self.azure.tags, "mlplat-model": model, "mlplat-version": str(version)})
        return self.azure.run(self.azure.ml().online_deployments.begin_create_or_update, deployment,
                              action=f"{A_EP}/deployments/write",
                              what=f"deploying {model} version {version} on {endpoint.name}")

    def apply(self, endpoint: ro.Endpoint) -> dict[str, Any]:
        """Make the Azure endpoint route as the ledger's ``endpoint`` says; returns what was done."""
        model, environment = endpoint.model, endpoint.environment
        weights: dict[int, int] = {}
        for route in endpoint.routes:
            weights[int(route.version)] = weights.get(int(route.version), 0) + int(route.weight)
        shadow = getattr(endpoint, "shadow", None) or None
        shadow_version = int(shadow["version"]) if shadow else None
        live = self.ensure_endpoint(model, environment)
        deployed = self.deployments(live, model)
        wanted = {v for v, w in weights.items() if w > 0} | ({shadow_version} if shadow_version is not None else set())
        added = []
        for version in sorted(wanted - set(deployed)):
            deployed[version] = self._create_deployment(live, model, version)
            added.append(version)
        names = {v: d.name for v, d in deployed.items()}
        traffic = traffic_map(weights, names)
        mirror = {names[shadow_version]: int(shadow["percent"])} if shadow and shadow_version is not None else {}
        live = self.get_endpoint(model, environment) or live
        live.traffic = traffic
        live.mirror_traffic = mirror
        self.azure.run(self.azure.ml().online_endpoints.begin_create_or_update, live, action=f"{A_EP}/write",
                       what=f"moving traffic on {live.name}")
        removed = []
        for version, deployment in sorted(deployed.items()):
            if version not in wanted:
                self.azure.run(self.azure.ml().online_deployments.begin_delete, deployment.name, live.name,
                               action=f"{A_EP}/deployments/delete",
                               what=f"deleting the deployment of {model} version {version} from {live.name}")
                removed.append(version)
        return {"endpoint": live.name, "traffic": traffic, "mirror_traffic": mirror, "deployed": added,
                "deleted": removed}

    # --- changes: deploy and rollback are ro.CloudEndpoints' (ledger + apply in one transaction) ----

    def inventory(self) -> list[ServedEndpoint]:
        """Every online endpoint of the workspace, whoever made it; the platform's carry ``mlplat-managed``
        and name their model in the ``mlplat-model`` tag."""
        out: list[ServedEndpoint] = []
        listed = self.azure.call(lambda: list(self.azure.ml().online_endpoints.list()), action=f"{A_EP}/read",
                                 what="listing the workspace's endpoints")
        for item in listed:
            tags = dict(item.tags or {})
            platform = tags.get(MANAGED_TAG) == "true"
            out.append(ServedEndpoint(name=item.name, platform=platform, tags=tags,
                                      model=tags.get("mlplat-model") if platform else None, created_at=None,
                                      status="deployed" if item.traffic else "empty",
                                      location=f"{self.azure.workspace}/{self.azure.location}"))
        return out

    # --- the canary controller -------------------------------------------------------------------

    @cached_property
    def judge(self) -> ro.CanaryJudge:
        """The provider-neutral canary judge on Azure Monitor's metrics; one per instance, so a breach held
        for a re-check on fresh traffic is remembered across :meth:`step` calls."""
        return ro.CanaryJudge(MonitorCanaryMetrics(self.azure, self._deployment_ids), actor=CONTROLLER,
                              on_change=self.apply, **self._cost)

    def _deployment_ids(self, model: str, environment: str) -> tuple[str | None, dict[int, str]]:
        endpoint = self.get_endpoint(model, environment)
        if endpoint is None:
            return None, {}
        return str(endpoint.id), {v: d.name for v, d in self.deployments(endpoint, model).items()}

    def step(self, name: str, *, environment: str) -> dict[str, Any]:
        """Judge the running canary of ``name`` once: advance to the next step, wait, or roll back."""
        verdict = ro.judge_running(self.db, self.judge, name, environment)
        return ro.step_report(verdict, self.show(name, environment=environment), self.cloud_key)

    # --- reading (list, show, rollout_status: ro.CloudEndpoints) ---------------------------------------

    def serve(self, *, environment: str, host: str, port: int, port_file: str | None = None,
              controller: bool = True) -> None:
        """Azure serves the traffic; this runs the canary controller in the foreground until interrupted."""
        interval = float(os.environ.get("MLPLAT_AZURE_CONTROLLER_INTERVAL", "60"))
        self.ctx.console.print(f"stack {self.spec.name} serves on Azure Machine Learning ({self.azure.workspace}); "
                               f"stepping canaries in '{environment}' every {interval:g}s", highlight=False)
        if not controller:
            return
        while True:
            self.step_running(environment)
            time.sleep(interval)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _timespan(start: float, end: float) -> str:
    """``<start>/<end>`` in whole seconds, the end rounded up so the last second's points count."""
    return f"{_iso(math.floor(start))}/{_iso(math.floor(end) + 1)}"


# The canary's queries of its endpoint's metrics: (metric names, aggregations, dimensions filtered on).
# Only names and dimensions Azure Monitor publishes for online endpoints (service_rules.metric_query_problem).
MetricQuery = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
TRAFFIC_QUERY: MetricQuery = (("RequestsPerMinute", "RequestLatency"), ("Total", "Average"), ("deployment",))
ERRORS_QUERY: MetricQuery = (("RequestsPerMinute",), ("Total",), ("deployment", "statusCodeClass"))
CANARY_QUERIES = (TRAFFIC_QUERY, ERRORS_QUERY)


class MonitorCanaryMetrics(CanaryMetrics):
    """A canary as Azure Monitor reports it: per deployment (the ``deployment`` dimension of the endpoint's
    metrics), ``RequestsPerMinute`` totals as the request count and each period's ``RequestLatency``
    average as one latency sample; predictions are not seen, so prediction shift is not judged. A
    window's ``mark`` is the time of that look."""

    def __init__(self, session: AzureSession,
                 deployment_ids: Callable[[str, str], tuple[str | None, dict[int, str]]]):
        self.azure = session
        self.deployment_ids = deployment_ids

    def query(self, endpoint_id: str, query: MetricQuery, start: float, end: float, **values: str) -> Any:
        """One Azure Monitor query of the endpoint's ``query`` metrics, filtered on ``values`` (dimension →
        value, the query's dimensions, joined by ``and``), one point per minute."""
        names, aggregations, dimensions = query
        where = " and ".join(f"{d} eq '{values[d]}'" for d in dimensions)
        return self.azure.call(
            self.azure.monitor().metrics.list, endpoint_id, timespan=_timespan(start, end), interval="PT1M",
            metricnames=",".join(names), aggregation=",".join(aggregations), filter=where,
            action="Microsoft.Insights/metrics/read",
            what=f"Azure Monitor metrics {', '.join(names)} of deployment {values.get('deployment')}")

    def stats(self, endpoint_id: str, deployment: str, start: float, end: float) -> VariantStats:
        if end <= start:
            return VariantStats()
        response = self.query(endpoint_id, TRAFFIC_QUERY, start, end, deployment=deployment)
        requests, latencies = 0, []
        for metric in response.value:
            for series in metric.timeseries or []:
                for point in series.data or []:
                    if metric.name.value == "RequestsPerMinute" and point.total:
                        requests += int(point.total)
                    elif metric.name.value == "RequestLatency" and point.average is not None:
                        latencies.append(float(point.average))
        errors = self.query(endpoint_id, ERRORS_QUERY, start, end, deployment=deployment, statusCodeClass="5xx")
        failed = sum(int(point.total or 0) for metric in errors.value for series in metric.timeseries or []
                     for point in series.data or [])
        return VariantStats(requests=requests, errors=min(failed, requests), latencies_ms=latencies)

    def window(self, rollout: Mapping[str, Any], now: float) -> CanaryWindow | None:
        endpoint_id, deployed = self.deployment_ids(rollout["model"], rollout["environment"])
        stable_v, candidate_v = int(rollout["stable_version"]), int(rollout["candidate_version"])
        if endpoint_id is None or stable_v not in deployed or candidate_v not in deployed:
            return None
        stable = self.stats(endpoint_id, deployed[stable_v], float(rollout["created_at"]), now)
        candidate = self.stats(endpoint_id, deployed[candidate_v], float(rollout["step_started_at"]), now)
        return CanaryWindow(stable, candidate, mark=now,
                            metrics={"source": "azure-monitor", "endpoint": endpoint_id,
                                     "deployments": {str(stable_v): deployed[stable_v],
                                                     str(candidate_v): deployed[candidate_v]}})

    def since(self, rollout: Mapping[str, Any], mark: float, now: float) -> VariantStats | None:
        endpoint_id, deployed = self.deployment_ids(rollout["model"], rollout["environment"])
        candidate_v = int(rollout["candidate_version"])
        if endpoint_id is None or candidate_v not in deployed:
            return None
        return self.stats(endpoint_id, deployed[candidate_v], mark, now)
