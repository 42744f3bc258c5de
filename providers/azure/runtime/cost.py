"""Cost of an Azure stack: deployments from the ledger, traffic from Azure Monitor, bills from Cost Management.

``AzureCost.deployments`` and ``usage`` feed the provider-neutral attribution (machine-hours × the
stack's price, predictions, cost per prediction) exactly as on the local, AWS and GCP providers.

``billed`` asks Cost Management (``POST {scope}/providers/Microsoft.CostManagement/query``, the
stack's resource group's actual cost) what Azure charged in a period, grouped by the ``team`` tag the program and
the runtime put on every resource (spend without the tag is reported under ``(untagged)``, as on AWS), so
the metered estimate can be checked against the bill.

Cost Management throttles harder than the rest of ARM: a 429 names how long to wait in
``x-ms-ratelimit-microsoft.costmanagement-{qpu,entity,tenant}-retry-after`` and/or ``Retry-After``; the
query waits the longest of them (through the session's injected sleeper) and tries again, then gives up
with one clear error (https://learn.microsoft.com/en-us/azure/cost-management-billing/automate/
api-rate-limits — "wait for the time in the retry-after headers").
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from mlplat.contracts import CostSource
from mlplat.errors import ExternalError, NotFound

COST_ACTION = "Microsoft.CostManagement/query/action"
TEAM_TAG = "team"
UNTAGGED = "(untagged)"
RETRY_HEADERS = ("x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after",
                 "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after",
                 "x-ms-ratelimit-microsoft.costmanagement-tenant-retry-after",
                 "x-ms-ratelimit-microsoft.consumption-retry-after", "retry-after")


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def query_body(start: float, end: float, *, team: str | None = None, tag: str = TEAM_TAG) -> dict[str, Any]:
    """The ``QueryDefinition``: actual cost over ``[start, end)`` summed per value of ``tag`` (one team if given)."""
    dataset: dict[str, Any] = {"granularity": "None",
                               "aggregation": {"totalCost": {"name": "Cost", "function": "Sum"}},
                               "grouping": [{"type": "TagKey", "name": tag}]}
    if team:
        dataset["filter"] = {"tags": {"name": tag, "operator": "In", "values": [team]}}
    return {"type": "ActualCost", "timeframe": "Custom",
            "timePeriod": {"from": _iso(start), "to": _iso(max(start, end - 1))}, "dataset": dataset}


def parse_result(pages: list[dict[str, Any]]) -> tuple[dict[str, float], str]:
    """Team → amount, and the currency, from ``QueryResult`` pages (columns named, rows positional)."""
    out: dict[str, float] = {}
    currency = "USD"
    for page in pages:
        props = page.get("properties") or {}
        names = [str(c.get("name", "")) for c in props.get("columns") or []]
        for row in props.get("rows") or []:
            record = dict(zip(names, row))
            team = str(record.get("TagValue") or "") or UNTAGGED
            amount = record.get("Cost", record.get("PreTaxCost", 0.0))
            out[team] = out.get(team, 0.0) + float(amount or 0.0)
            currency = str(record.get("Currency") or currency)
    return out, currency


def cost_retry_after(exc: BaseException) -> float | None:
    """The longest wait a throttled Cost Management answer names, in seconds (None: it names none)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    waits: list[float] = []
    for name in RETRY_HEADERS:
        value = headers.get(name)
        try:
            if value is not None:
                waits.append(float(value))
        except ValueError:
            continue
    return max(waits) if waits else None


class AzureBill:
    """What Azure charged, read through Cost Management with the stack's session."""

    def __init__(self, spec: Any, session: Any = None):
        self.spec = spec
        if session is None:
            from mlplat_providers.azure.runtime.session import AzureSession

            session = AzureSession(spec)
        self.azure = session

    @property
    def scope(self) -> str:
        """The stack's resource group: where the program grants the identity Cost Management Reader (never
        subscription-wide)."""
        return f"/subscriptions/{self.azure.subscription_id}/resourceGroups/{self.azure.resource_group}"

    def _query(self, body: dict[str, Any]) -> dict[str, Any]:
        from azure.core.exceptions import HttpResponseError
        from azure.mgmt.costmanagement import models

        from mlplat_providers.azure.runtime.session import AzureUnavailable, RetryPolicy, call

        definition = models.QueryDefinition.deserialize(body)
        client = self.azure.cost()
        retry = self.azure.retry
        what = "reading the bill from Cost Management"
        for attempt in range(retry.attempts):
            try:
                result = client.query.usage(self.scope, definition, retry_total=0)  # retries are ours
                return dict(result.serialize(keep_readonly=True)) if result is not None else {}
            except HttpResponseError as exc:
                if getattr(exc, "status_code", None) != 429:
                    def again(error: BaseException = exc) -> Any:
                        raise error
                    call(again, action=COST_ACTION, what=what, retry=RetryPolicy(attempts=1, sleep=retry.sleep))
                    raise
                if attempt + 1 < retry.attempts:
                    retry.sleep(retry.delay(attempt, cost_retry_after(exc)))
                    continue
                raise AzureUnavailable(f"{what}: Cost Management answered 429 {retry.attempts} times",
                                       hint="Cost Management's query budget is shared by the whole tenant; "
                                            "retry later", status=429) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def billed(self, start: float, end: float, *, team_only: bool = True) -> dict[str, Any]:
        """What Azure charged, by the team tag, for ``[start, end)`` (actual cost)."""
        if end <= start:
            raise ExternalError(f"the billing period ends ({_iso(end)}) before it starts ({_iso(start)})",
                                hint="pass a period that ends after it starts")
        team = self.spec.team if team_only else None
        body = query_body(start, end, team=team)
        pages = [self._query(body)]
        by_team, currency = parse_result(pages)
        if team:
            by_team = {team: by_team.get(team, 0.0)}
        return {"source": "azure-cost-management", "metric": "ActualCost", "currency": currency,
                "scope": self.scope, "period": {"Start": body["timePeriod"]["from"][:10],
                                                "End": _iso(end)[:10]}, "by_team": by_team}


def _timespan(start: float, end: float) -> str:
    return f"{_iso(start)}/{_iso(end)}"


class AzureCost(AzureBill, CostSource):
    """The stack's metered usage for the provider-neutral attribution, and its bill.

    ``deployments`` are the ledger's (the rollout service writes a row whenever a version starts or stops
    serving); ``usage`` reads each served version's traffic from Azure Monitor, where managed online
    endpoints publish ``RequestsPerMinute`` (total: requests) and ``RequestLatency`` (average, ms) split
    by the ``deployment`` dimension, over the hours the version served. An endpoint since deleted has no
    metrics left: its versions count machine-hours and no predictions."""

    def __init__(self, spec: Any, ctx: Any, session: Any = None, state: Any = None):
        super().__init__(spec, session)
        self.ctx = ctx
        self._state = state

    @property
    def state(self) -> Any:
        if self._state is None:
            from mlplat_providers.azure.runtime.state import AzureState

            self._state = AzureState(self.spec.state_dir, getattr(self.ctx, "database_url", None)).ensure(
                create=not getattr(self.ctx, "reading", False))
        return self._state

    def deployments(self, start: float, end: float) -> list[Any]:
        from mlplat.services.monitoring.cost import ledger_deployments

        return ledger_deployments(self.state.database(), self.spec.team, start, end)

    def usage(self, start: float, end: float) -> list[Any]:
        from mlplat.contracts import Usage

        monitor = self.azure.monitor()
        totals: dict[tuple[str, int, str], list[float]] = {}
        for dep in self.deployments(start, end):
            lo, hi = max(start, dep.started), min(end, dep.ended if dep.ended is not None else end)
            if hi <= lo:
                continue
            resource = f"{self.azure.workspace_id}/onlineEndpoints/{self.azure.endpoint_name(dep.model)}"
            try:
                result = self.azure.call(
                    monitor.metrics.list, resource, timespan=_timespan(lo, hi), interval="PT1H",
                    metricnames="RequestsPerMinute,RequestLatency", aggregation="Total,Average",
                    filter=f"deployment eq '{self.azure.deployment_name(dep.model, dep.version)}'", not_found=True,
                    action="Microsoft.Insights/metrics/read", what="reading endpoint traffic for the cost report")
            except NotFound:  # the endpoint is gone, and its metrics with it: its machine-hours still count
                continue
            calls, latency = 0.0, []
            for metric in result.value or []:
                for series in metric.timeseries or []:
                    for point in series.data or []:
                        if metric.name.value == "RequestsPerMinute" and point.total:
                            calls += point.total
                        elif metric.name.value == "RequestLatency" and point.average is not None:
                            latency.append(point.average)
            total = totals.setdefault((dep.model, dep.version, dep.environment), [0.0, 0.0])
            total[0] += calls
            total[1] += (sum(latency) / len(latency)) * calls / 1000.0 if latency else 0.0
        return [Usage(m, v, e, int(calls), busy, self.spec.team) for (m, v, e), (calls, busy) in totals.items()
                if calls]
