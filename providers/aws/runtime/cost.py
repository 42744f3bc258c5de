"""Cost of an AWS stack: deployments from the platform database, traffic from CloudWatch, bills from Cost Explorer.

``deployments`` and ``usage`` feed the provider-neutral attribution (instance-hours ×
the stack's price, predictions, cost per prediction) exactly as on the local provider.
``billed`` asks Cost Explorer (``GetCostAndUsage``, grouped by the ``team`` cost tag) what
AWS actually charged the team, so the estimate can be checked against the bill.
"""
from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from mlplat.contracts import CostSource, Deployment, Usage
from mlplat.services.monitoring.cost import ledger_deployments
from mlplat_providers.aws.account_rules import usage_period
from mlplat_providers.aws.plan import instance_count
from mlplat_providers.aws.runtime.session import AwsSession
from mlplat_providers.aws.runtime.state import AwsState

COST_METRIC = "UnblendedCost"


def _day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def cost_request(team_tag: str, start: float, end: float, *, team: str | None = None) -> dict[str, Any]:
    """The ``GetCostAndUsage`` request: daily unblended cost grouped by the team tag (one team if given)."""
    start_day = _day(start)
    end_day = _day(end + 86_399)  # Cost Explorer's end date is exclusive: cover the last partial day
    if end_day <= start_day:
        end_day = _day(start + 86_400)
    request: dict[str, Any] = {"TimePeriod": {"Start": start_day, "End": end_day}, "Granularity": "DAILY",
                               "Metrics": [COST_METRIC], "GroupBy": [{"Type": "TAG", "Key": team_tag}]}
    if team:
        request["Filter"] = {"Tags": {"Key": team_tag, "Values": [team], "MatchOptions": ["EQUALS"]}}
    return request


def parse_costs(pages: list[dict[str, Any]], team_tag: str = "team") -> dict[str, float]:
    """Team → USD from ``GetCostAndUsage`` pages. Untagged spend is reported under ``(untagged)``."""
    out: dict[str, float] = {}
    for page in pages:
        for period in page.get("ResultsByTime", []):
            for group in period.get("Groups", []):
                key = (group.get("Keys") or [""])[0]
                team = key.split("$", 1)[1] if "$" in key else key
                amount = float(((group.get("Metrics") or {}).get(COST_METRIC) or {}).get("Amount") or 0.0)
                out[team or "(untagged)"] = out.get(team or "(untagged)", 0.0) + amount
    return out


class AwsCost(CostSource):
    def __init__(self, spec, ctx, session: AwsSession | None = None):
        self.spec = spec
        self.ctx = ctx
        self.aws = session or AwsSession(spec)
        self.state = AwsState(spec.state_dir, getattr(ctx, "database_url", None)).ensure(
            create=not getattr(ctx, "reading", False))

    def deployments(self, start: float, end: float) -> list[Deployment]:
        return ledger_deployments(self.state.database(), self.spec.team, start, end,
                                  instances=instance_count(self.spec))

    def usage(self, start: float, end: float) -> list[Usage]:
        """Invocations and busy seconds (ModelLatency average × invocations) per served version, from CloudWatch.

        SageMaker publishes per variant, and variants have stable names (``primary`` serves the stable
        version, ``canary`` the candidate), so each version's traffic is read from the variant that served
        it over the time it served there (the ledger's deployment rows)."""
        from mlplat_providers.aws.runtime.serving import AwsServing, sagemaker_variant

        serving = AwsServing(self.spec, self.ctx, self.aws)
        now = getattr(self.ctx, "clock", time.time)()
        windows: dict[tuple[float, float], list[tuple[tuple[str, int, str], list[dict[str, Any]]]]] = {}
        stables: dict[tuple[str, str], int | None] = {}
        for dep in self.deployments(start, end):
            # CloudWatch's datapoints are per minute: each row reads the whole minutes from the one it started in
            # to the one the next row took over in, so consecutive rows of a variant never count a minute twice
            lo = math.floor(max(start, dep.started) / 60) * 60
            hi = math.floor(min(end, end if dep.ended is None else dep.ended) / 60) * 60
            if dep.ended is None or dep.ended >= end:
                hi = max(hi, math.ceil(end / 60) * 60)
            if hi <= lo:
                continue  # served for less than a minute boundary: its traffic is the next row's minute
            where = (dep.model, dep.environment)
            if where not in stables:
                stables[where] = serving.stable_version(dep.model, dep.environment)
            dims = [{"Name": "EndpointName", "Value": serving.endpoint_name(dep.model, dep.environment)},
                    {"Name": "VariantName", "Value": sagemaker_variant(dep.variant, dep.version, stables[where])}]
            windows.setdefault((lo, hi), []).append(((dep.model, dep.version, dep.environment), dims))
        totals: dict[tuple[str, int, str], list[float]] = {}
        for (lo, hi), reads in windows.items():
            # one data point over the whole window, in a period CloudWatch answers for data that old (a 30-day
            # report needs a multiple of 300 s, a 90-day one of 3,600 s; anything else reads zero usage)
            period = usage_period(lo, now, hi)
            queries, keys = [], {}
            for i, (key, dims) in enumerate(reads):
                for metric, stat in (("Invocations", "Sum"), ("ModelLatency", "Average")):
                    qid = f"q{i}{'n' if metric == 'Invocations' else 'l'}"
                    keys[qid] = key
                    queries.append({"Id": qid, "MetricStat": {"Metric": {
                        "Namespace": "AWS/SageMaker", "MetricName": metric, "Dimensions": dims},
                        "Period": period, "Stat": stat}})
            values: dict[str, list[float]] = {}
            for chunk in range(0, len(queries), 500):
                result = self.aws.call("cloudwatch", "get_metric_data", MetricDataQueries=queries[chunk:chunk + 500],
                                       StartTime=dt.datetime.fromtimestamp(lo, dt.UTC),
                                       EndTime=dt.datetime.fromtimestamp(hi, dt.UTC),
                                       what="reading endpoint traffic for the cost report")
                for r in result.get("MetricDataResults", []):
                    values[r["Id"]] = r.get("Values") or []
            for i, (key, _dims) in enumerate(reads):
                calls = sum(values.get(f"q{i}n", []))
                latency_us = values.get(f"q{i}l", [])
                total = totals.setdefault(key, [0.0, 0.0])
                total[0] += calls
                total[1] += (sum(latency_us) / len(latency_us)) * calls / 1e6 if latency_us else 0.0
        return [Usage(key[0], key[1], key[2], int(calls), busy, self.spec.team)
                for key, (calls, busy) in totals.items() if calls]

    def billed(self, start: float, end: float, *, team_only: bool = True) -> dict[str, Any]:
        """What AWS charged, by team tag, for the period (Cost Explorer; paginated)."""
        request = cost_request("team", start, end, team=self.spec.team if team_only else None)
        pages, token = [], None
        while True:
            page = self.aws.call("ce", "get_cost_and_usage", what="reading the bill from Cost Explorer",
                                 **request, **({"NextPageToken": token} if token else {}))
            pages.append(page)
            token = page.get("NextPageToken")
            if not token:
                break
        return {"source": "aws-cost-explorer", "metric": COST_METRIC, "period": request["TimePeriod"],
                "by_team": parse_costs(pages)}
