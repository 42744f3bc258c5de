"""The GCP driver of the monitoring contract: traffic as Vertex AI's request-response logging writes it, and
what the pass published, read back from the fake Cloud Monitoring."""
from __future__ import annotations

import json
from typing import Any

from tests.contract.gcp_fake.bigquery import REQUEST_RESPONSE_LOG_SCHEMA, FakeBigQuery


class GcpCaptures:
    name = "gcp"

    def __init__(self, project: Any, stack: str, environment: str, fake: Any, bigquery: FakeBigQuery):
        self.project, self.stack, self.environment = project, stack, environment
        self.fake, self.bigquery = fake, bigquery

    def capture(self, requests: list[dict], start: float) -> None:
        """One row per request in the endpoint's log table (the program creates the table), answered by the
        deployed model serving version 1; the caller's id travels as ``parameters.request_id``."""
        from mlplat_providers.gcp.plan import stack_plan, underscored
        from tests.contract.lifecycle import context, serving

        spec = context(self.project).stack(self.stack)
        plan = stack_plan(spec)
        table = f"{plan.project}.{plan.request_dataset}.{underscored('scorer_requests', 1024)}"
        if table not in self.bigquery.tables:
            self.bigquery.create_table(*table.split("."), REQUEST_RESPONSE_LOG_SCHEMA)
        gcp_serving = serving(self.project, self.stack)
        endpoint_id, deployed = gcp_serving._deployed_ids("scorer", self.environment)
        endpoint = f"projects/{plan.project}/locations/{plan.region}/endpoints/{endpoint_id}"
        self.bigquery.insert(table, [
            {"endpoint": endpoint, "deployed_model_id": deployed[1], "logging_time": start + i,
             "request_id": 7_000_000 + i,
             "request_payload": [json.dumps({"instances": [r["features"]],
                                             "parameters": {"request_id": r["inference_id"]}})],
             "response_payload": [json.dumps({"predictions": [r["predicted"]]})]}
            for i, r in enumerate(requests)])

    def published(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """(metric type, metric labels) → the last value written, as the fake Cloud Monitoring holds it."""
        return {(s.metric_type, tuple(sorted(s.metric_labels.items()))): s.points[-1][2]
                for s in self.fake.monitoring.series.values() if s.points}
