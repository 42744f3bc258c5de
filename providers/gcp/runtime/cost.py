"""Cost of a GCP stack: deployments from the ledger, traffic from the request-response log, bills from the
Cloud Billing export in BigQuery.

``deployments`` and ``usage`` feed the provider-neutral attribution (machine-hours × the stack's price,
predictions, cost per prediction) exactly as on the local and AWS providers. ``billed`` asks the billing
export (the standard usage cost table, ``gcp_billing_export_v1_<billing account>``) what Google charged,
grouped by the ``team`` label the program and the runtime put on every resource, so the estimate can be
checked against the bill. Cloud Billing's export to BigQuery cannot be enabled through an API: it is a
one-off step in the console (README, "GCP: cost"); until it is done ``billed`` says so.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from mlplat.contracts import CostSource, Deployment, Usage
from mlplat.errors import ExternalError, NotFound
from mlplat.services.monitoring.cost import ledger_deployments
from mlplat_providers.gcp import runtime_rules as rr

BILLING_DATASET = "billing_export"  # the dataset the one-off export step writes into (the stack's project)
TEAM_LABEL = "team"


def billed_query(table: str) -> str:
    """Cost and credits per value of the team label (NULL: unlabelled spend) in ``[@start, @end)``."""
    return ("SELECT (SELECT l.value FROM UNNEST(labels) AS l WHERE l.key = @label) AS team, "
            "SUM(cost) AS cost, SUM(IFNULL((SELECT SUM(c.amount) FROM UNNEST(credits) AS c), 0)) AS credits "
            f"FROM `{table}` WHERE usage_start_time >= @start AND usage_start_time < @end "
            "GROUP BY team ORDER BY team")


def parse_billed(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Team → USD net of credits. Unlabelled spend is reported under ``(untagged)``, as on AWS."""
    out: dict[str, float] = {}
    for row in rows:
        team = row.get("team") or "(untagged)"
        out[team] = out.get(team, 0.0) + float(row.get("cost") or 0.0) + float(row.get("credits") or 0.0)
    return out


class GcpCost(CostSource):
    def __init__(self, spec: Any, ctx: Any, session: Any = None, monitor: Any = None):
        self.spec = spec
        self.ctx = ctx
        if session is None:
            from mlplat_providers.gcp.runtime.session import GcpSession

            session = GcpSession(spec)
        self.gcp = session
        self._monitor = monitor

    @property
    def monitor(self) -> Any:
        if self._monitor is None:
            from mlplat_providers.gcp.runtime.monitoring import GcpMonitor

            self._monitor = GcpMonitor(self.spec, self.ctx, self.gcp)
        return self._monitor

    def deployments(self, start: float, end: float) -> list[Deployment]:
        return ledger_deployments(self.monitor.database(), self.spec.team, start, end)

    def usage(self, start: float, end: float) -> list[Usage]:
        """Predictions per served version in ``[start, end)``, counted in the endpoints' request-response log
        (the program logs every request: sampling rate 1). The log holds no latency, so busy seconds are 0."""
        counts: dict[tuple[str, int, str], int] = {}
        for model, version, environment in self.monitor.deployed():
            n = len(self.monitor.captures(model, version, since=start, until=end))
            if n:
                counts[(model, version, environment)] = counts.get((model, version, environment), 0) + n
        return [Usage(m, v, e, n, 0.0, self.spec.team) for (m, v, e), n in counts.items()]

    def billing_table(self) -> str:
        configured = getattr(self.spec.provider, "billing_export_table", None)
        if configured:
            return str(configured)
        return str(rr.billing_table(str(self.gcp.project), BILLING_DATASET, str(self.spec.provider.billing_account)))

    def billed(self, start: float, end: float, *, team_only: bool = True) -> dict[str, Any]:
        """What Google charged, by the team label, for ``[start, end)`` (the billing export, net of credits)."""
        from google.cloud import bigquery

        from mlplat_providers.gcp.runtime import bq

        table = self.billing_table()
        params = [bigquery.ScalarQueryParameter("label", "STRING", TEAM_LABEL),
                  bigquery.ScalarQueryParameter("start", "TIMESTAMP", dt.datetime.fromtimestamp(start, dt.UTC)),
                  bigquery.ScalarQueryParameter("end", "TIMESTAMP", dt.datetime.fromtimestamp(end, dt.UTC))]
        try:
            result = bq.query(self.gcp, billed_query(table), params, not_found=True,
                              what="reading the bill from the billing export")
        except NotFound:
            raise ExternalError(f"the Cloud Billing export table {table} does not exist",
                                hint="enable Cloud Billing's standard usage cost export to BigQuery once (Billing > "
                                     f"Billing export, dataset {BILLING_DATASET} of project {self.gcp.project}); "
                                     "it cannot be enabled through an API") from None
        by_team = parse_billed(result)
        if team_only:
            from mlplat_providers.gcp.labels import normalise_value

            team = normalise_value(self.spec.team)
            by_team = {team: by_team.get(team, 0.0)}
        return {"source": "gcp-billing-export", "metric": "cost+credits", "table": table,
                "period": {"Start": dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%d"),
                           "End": dt.datetime.fromtimestamp(end, dt.UTC).strftime("%Y-%m-%d")},
                "by_team": by_team}
