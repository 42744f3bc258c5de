"""Monitoring and cost on the gcp provider, against the fake BigQuery and Cloud Monitoring servers.

Vertex AI logs each request of an endpoint to BigQuery in its documented schema; the runtime reads that log
through BigQuery's REST API (``jobs.query``, the fake runs the same SQL on DuckDB), assigns each row to the
version its deployed model serves, and publishes the pass's results with ``CreateTimeSeries`` (gRPC fake)
under ``custom.googleapis.com/mlplat/``: every request is checked against Cloud Monitoring's documented
rules, and the metrics the program's alert policies watch are among those published. The bill comes from
the Cloud Billing export, grouped by the team label. BigQuery's quota errors (HTTP 403 ``rateLimitExceeded``)
are retried with backoff, then reported; a missing permission is named.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from tests.contract.gcp_fake.bigquery import (
    BILLING_EXPORT_SCHEMA,
    REQUEST_RESPONSE_LOG_SCHEMA,
    FakeBigQuery,
    bigquery_fake,  # noqa: F401
    bigquery_server,  # noqa: F401
    row_problems,
    table_problems,
)
from tests.contract.gcp_fake.fixtures import gcp_fake, gcp_servers  # noqa: F401

pytestmark = pytest.mark.integration

PROJECT = "acme-search-ml"
LOG = f"{PROJECT}.mlplat_logs.request_response_logging"
BILLING = "01A2B3-C4D5E6-F7A8B9"
T0 = 1_780_000_000.0
STACK_TEXT = f"""config:
  mlplat:team: search
  mlplat:environment: staging
  mlplat:provider:
    kind: gcp
    project: {PROJECT}
    region: europe-west4
    billingAccount: {BILLING}
  mlplat:tags:
    team: search
    cost-center: CC-2077
    environment: staging
    owner: search-ml@example.com
  mlplat:serving:
    instanceType: n1-standard-4
    pricePerHour: 0.19
"""


@pytest.fixture
def stack(tmp_path, monkeypatch, bigquery_fake, gcp_fake):  # noqa: F811
    from mlplat.db import Database
    from mlplat.stack import load_stack
    from mlplat_providers.gcp.runtime.session import GcpSession, RetryPolicy

    fake = bigquery_fake
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    (project / "Pulumi.yaml").write_text("name: mlplat\nruntime: python\nstackConfigDir: stacks\n")
    (project / "stacks" / "Pulumi.gcp-staging.yaml").write_text(STACK_TEXT)
    spec = load_stack("gcp-staging", project)
    db = Database(Path(tmp_path) / "platform.db")
    db.migrate()
    sleeps: list[float] = []
    session = GcpSession(spec, retry=RetryPolicy(attempts=4, sleep=sleeps.append))
    fake.create_table(*LOG.split("."), REQUEST_RESPONSE_LOG_SCHEMA)

    class Ctx:
        reading = False
        database_url = None

    monkeypatch.setattr("mlplat_providers.gcp.runtime.monitoring.GcpMonitor.database", lambda self: db)
    return {"spec": spec, "session": session, "fake": fake, "sleeps": sleeps, "ctx": Ctx(), "monitoring": gcp_fake}


def log(fake: FakeBigQuery, deployed_model_id: str, start: int, n: int, *, batch: int = 1, at: float = T0) -> None:
    """``n`` requests as Vertex logs them (one row each, ``batch`` instances per request)."""
    rows = []
    for i in range(start, start + n):
        instances = [{"x1": float(i), "x2": float(i % 7)} for _ in range(batch)]
        rows.append({"endpoint": f"projects/{PROJECT}/locations/europe-west4/endpoints/555",
                     "deployed_model_id": deployed_model_id, "logging_time": at + i,
                     "request_id": 9_000 + i, "request_payload": [json.dumps({"instances": instances})],
                     "response_payload": [json.dumps({"predictions": [i % 2] * batch})]})
    fake.insert(LOG, rows)


def monitor(stack, deployed: dict[str, tuple[str, int, str]]):
    from mlplat_providers.gcp.runtime.monitoring import DeployedVersion, GcpMonitor

    def endpoints():
        return [{"id": "555", "log_table": LOG,
                 "deployed": {dm: DeployedVersion(m, v, "staging", variant) for dm, (m, v, variant) in deployed.items()}}]

    return GcpMonitor(stack["spec"], stack["ctx"], stack["session"], endpoints=endpoints)


def test_logged_requests_belong_to_the_version_their_deployed_model_serves(stack):
    fake = stack["fake"]
    log(fake, "101", 0, 30)
    log(fake, "202", 30, 10, batch=2)
    log(fake, "999", 40, 5)  # a deployed model the platform did not deploy: never attributed
    mon = monitor(stack, {"101": ("scorer", 1, "primary"), "202": ("scorer", 2, "canary")})
    assert mon.deployed() == [("scorer", 2, "staging"), ("scorer", 1, "staging")]
    v1, v2 = mon.captures("scorer", 1), mon.captures("scorer", 2)
    assert [len(v1), len(v2)] == [30, 10]
    assert v1[0].request_id == "101-9000" and v1[0].inputs == {"instances": [{"x1": 0.0, "x2": 0.0}]}
    assert v1[0].ts == pytest.approx(T0) and v1[0].variant == "primary" and not v1[0].shadow
    assert [r[0] for r in v2[0].rows()] == ["202-9030#0", "202-9030#1"]
    assert mon.known_request_ids(["101-9001", "202-9030#1", "999-9040", "nope"]) == {"101-9001", "202-9030#1"}

    # v1 is undeployed (the endpoint now lists only v2): its logged traffic stays v1's, newer rows are read once
    log(fake, "202", 50, 5)
    later = monitor(stack, {"202": ("scorer", 2, "primary")})
    assert len(later.captures("scorer", 1)) == 30 and len(later.captures("scorer", 2)) == 15
    assert len(later.captures("scorer", 2, since=T0 + 50)) == 5 and len(later.captures("scorer", 2, limit=3)) == 3
    queries = [b for m, p, b in fake.requests if p.endswith("/queries")]
    assert queries and all(q["useLegacySql"] is False and "@after" in q["query"] for q in queries)


def report(features: int) -> dict:
    psi = {f"f{i:03d}": 0.01 * i for i in range(features)}
    return {"ts": T0, "windows": [{"model": "scorer", "version": 1, "environment": "staging",
                                   "drift": {"verdict": "drift", "share": 0.5, "rows": 150,
                                             "features": [{"feature": f, "psi": v} for f, v in psi.items()]},
                                   "metrics": {"quality.accuracy": 0.8, "quality.rows": 150}}],
            "cost": {"cost.daily_usd": 4.56, "cost.usd": 12.0}}


def test_a_pass_publishes_custom_metrics_cloud_monitoring_accepts(stack):
    from mlplat_providers.gcp import runtime_rules as rr
    from mlplat_providers.gcp.plan import alert_conditions, condition_filter, stack_plan

    log(stack["fake"], "101", 0, 3)
    mon = monitor(stack, {"101": ("scorer", 1, "primary")})
    requests, skipped = mon.requests(report(250))
    assert skipped == [] and [len(r["time_series"]) for r in requests] == [200, 57]
    published = mon.publish(report(250))
    assert (published["metrics"], published["requests"]) == (257, 2)
    state = stack["monitoring"].monitoring
    stored = {(s.metric_type, s.metric_labels.get("feature")): s for s in state.series.values()}
    assert {t for t, _f in stored} <= rr.PLATFORM_METRIC_TYPES
    # the program's alert policy on drift (its filter on a platform metric) matches a series the pass wrote
    spec = stack["spec"]
    plan = stack_plan(spec)
    [drift] = [c for c in alert_conditions(spec) if c.metric_type.startswith(rr.PLATFORM_PREFIX)]
    model_plan = type(plan.models[0])(**{**plan.models[0].__dict__, "model": "scorer"})
    wanted = dict(re.findall(r'(\S+?)="([^"]*)"', condition_filter(plan, model_plan, drift)))
    assert any(s.metric_type == wanted["metric.type"] and s.resource_type == wanted["resource.type"]
               and all(s.metric_labels.get(k.removeprefix("metric.label.")) == v
                       for k, v in wanted.items() if k.startswith("metric.label."))
               for s in state.series.values()), wanted
    top = stored[(rr.PLATFORM_PREFIX + rr.MAX_PSI, None)]
    assert top.metric_labels == {"team": "search", "environment": "staging", "model": "scorer", "endpoint_id": "555"}
    assert top.resource_type == "global" and top.resource_labels == {"project_id": PROJECT}
    assert top.points[-1][2] == pytest.approx(2.49)
    assert stored[(rr.PLATFORM_PREFIX + "quality/labelled_rows", None)].value_type == "INT64"


@pytest.mark.parametrize(("series", "problem"), [
    ({"metric": {"type": "aiplatform.googleapis.com/prediction/online/prediction_count"}}, "user-defined"),
    ({"metric": {"type": "custom.googleapis.com/mlplat/x", "labels": {"Team": "a"}}}, "label key 'Team'"),
    ({"metric": {"type": "custom.googleapis.com/mlplat/x", "labels": {f"l{i}": "v" for i in range(31)}}}, "31 labels"),
    ({"points": [{"interval": {"end_time": T0}, "value": {"double_value": 1.0}}] * 2}, "exactly one point"),
    ({"points": [{"interval": {"end_time": T0 - 26 * 3600}, "value": {"double_value": 1.0}}]}, "25 hours"),
    ({"points": [{"interval": {"end_time": T0 + 600}, "value": {"double_value": 1.0}}]}, "5 minutes"),
    ({"points": [{"interval": {"end_time": T0}, "value": {"int64_value": 1}}]}, "value type DOUBLE"),
    ({"resource": {"type": "global", "labels": {}}}, "project_id"),
])
def test_cloud_monitoring_rules_refuse_what_it_refuses(series, problem):
    from mlplat_providers.gcp import runtime_rules as rr

    good = {"metric": {"type": "custom.googleapis.com/mlplat/drift/share", "labels": {"team": "search"}},
            "resource": {"type": "global", "labels": {"project_id": PROJECT}}, "metric_kind": "GAUGE",
            "value_type": "DOUBLE", "points": [{"interval": {"end_time": T0}, "value": {"double_value": 0.5}}]}
    assert rr.time_series_problems(good, now=T0) == []
    assert any(problem in p for p in rr.time_series_problems({**good, **series}, now=T0))
    request = {"name": f"projects/{PROJECT}", "time_series": [good, good]}
    assert "the same time series appears twice in one request" in rr.create_time_series_problems(request, now=T0)
    assert any("1 to 200" in p for p in rr.create_time_series_problems(
        {"name": f"projects/{PROJECT}", "time_series": []}, now=T0))


def test_the_bill_is_the_billing_export_grouped_by_the_team_label(stack):
    from mlplat.errors import ExternalError
    from mlplat_providers.gcp.runtime.cost import GcpCost

    fake = stack["fake"]
    cost = GcpCost(stack["spec"], stack["ctx"], stack["session"], monitor=monitor(stack, {}))
    with pytest.raises(ExternalError, match="Cloud Billing export table .* does not exist") as missing:
        cost.billed(T0, T0 + 86_400)
    assert "cannot be enabled through an API" in missing.value.hint
    table = f"{PROJECT}.billing_export.gcp_billing_export_v1_{BILLING.replace('-', '_')}"
    assert cost.billing_table() == table
    fake.create_table(*table.split("."), BILLING_EXPORT_SCHEMA)

    def line(team: str | None, amount: float, credit: float = 0.0, at: float = T0 + 10) -> dict:
        return {"labels": [{"key": "team", "value": team}] if team else [], "cost": amount, "currency": "USD",
                "usage_start_time": at, "usage_end_time": at + 3600,
                "credits": [{"name": "Sustained use", "amount": credit}] if credit else []}

    fake.insert(table, [line("search", 10.0, -1.5), line("search", 2.25), line("ads", 7.0), line(None, 1.0),
                        line("search", 100.0, at=T0 - 86_400)])  # before the period
    everyone = cost.billed(T0, T0 + 86_400, team_only=False)
    assert everyone["by_team"] == {"search": pytest.approx(10.75), "ads": 7.0, "(untagged)": 1.0}
    assert everyone["source"] == "gcp-billing-export"
    assert cost.billed(T0, T0 + 86_400)["by_team"] == {"search": pytest.approx(10.75)}


def test_bigquery_quota_is_retried_with_backoff_then_reported_and_a_denied_permission_is_named(stack):
    from mlplat_providers.gcp.runtime.session import GcpPermissionDenied, GcpUnavailable

    fake = stack["fake"]
    log(fake, "101", 0, 4)
    fake.fail("/queries", 403, "rateLimitExceeded", "Exceeded rate limits: too many api requests per user", times=2)
    assert len(monitor(stack, {"101": ("scorer", 1, "primary")}).captures("scorer", 1)) == 4
    assert len(stack["sleeps"]) == 2 and stack["sleeps"][0] < stack["sleeps"][1] * 2

    fake.fail("/queries", 403, "quotaExceeded", "Quota exceeded: Your project exceeded quota for concurrent queries",
              times=10)
    with pytest.raises(GcpUnavailable, match="quotaExceeded 4 times") as exhausted:
        monitor(stack, {"101": ("scorer", 1, "primary")}).captures("scorer", 1)
    assert "higher BigQuery quota" in exhausted.value.hint
    fake.faults.clear()

    fake.fail("/queries", 403, "accessDenied", f"Access Denied: Project {PROJECT}: User does not have "
              f"bigquery.jobs.create permission in project {PROJECT}.")
    with pytest.raises(GcpPermissionDenied, match="Google denied bigquery.jobs.create") as denied:
        monitor(stack, {"101": ("scorer", 1, "primary")}).captures("scorer", 1)
    assert "roles/bigquery.jobUser" in denied.value.hint


def test_the_fake_bigquery_refuses_what_bigquery_refuses():
    fields = REQUEST_RESPONSE_LOG_SCHEMA + [{"name": "must", "type": "STRING", "mode": "REQUIRED"}]
    assert row_problems({"must": "x", "request_payload": ["a"]}, fields, "rows[0]") == []
    assert row_problems({"nope": 1}, fields, "rows[0]") == ["rows[0]: no such field: nope",
                                                            "rows[0]: missing required field: must"]
    assert row_problems({"must": "x", "request_payload": "a"}, fields, "r") == ["r.request_payload: a REPEATED "
                                                                                 "field takes an array"]
    body = {"tableReference": {"projectId": "p", "datasetId": "d", "tableId": "bad/table"},
            "schema": {"fields": [{"name": "1st", "type": "STRING"}, {"name": "b", "type": "WAT"}]}}
    assert table_problems(body, "p", "d") == ["invalid table id 'bad/table'", "schema: invalid field name '1st'",
                                              "schema.b: unknown type 'WAT'"]
    fake = FakeBigQuery()
    fake.create_table("p", "d", "t", [{"name": "a", "type": "TIMESTAMP"}])
    fake.insert("p.d.t", [{"a": dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()}])
    with pytest.raises(LookupError, match="p.d.missing"):
        fake.query("SELECT * FROM `p.d.missing`")
    schema, rows = fake.query("SELECT a FROM `p.d.t` WHERE a >= @t", {"t": dt.datetime(2025, 1, 1, tzinfo=dt.UTC)})
    assert schema == [{"name": "a", "type": "TIMESTAMP", "mode": "NULLABLE"}] and len(rows) == 1


def test_metered_usage_counts_the_logged_requests_of_each_deployed_version(stack):
    from mlplat_providers.gcp.runtime.cost import GcpCost

    fake = stack["fake"]
    log(fake, "101", 0, 30)
    log(fake, "202", 30, 10, batch=2)
    mon = monitor(stack, {"101": ("scorer", 1, "primary"), "202": ("scorer", 2, "canary")})
    db = mon.database()
    with db.transaction() as conn:
        conn.execute("INSERT INTO deployments (model, environment, version, variant, started_at, ended_at, "
                     "instance_type, instances, price_per_hour) VALUES (?,?,?,?,?,?,?,?,?)",
                     ("scorer", "staging", 1, "primary", T0 - 100, None, "n1-standard-4", 1, 0.19))
    cost = GcpCost(stack["spec"], stack["ctx"], stack["session"], monitor=mon)
    used = {(u.model, u.version): u.predictions for u in cost.usage(T0, T0 + 35)}
    assert used == {("scorer", 1): 30, ("scorer", 2): 5}  # requests in [start, end), per served version
    [deployment] = cost.deployments(T0, T0 + 35)
    assert (deployment.model, deployment.version, deployment.instance_type, deployment.team) == \
        ("scorer", 1, "n1-standard-4", "search")


def test_opted_in_model_monitoring_keeps_one_vertex_job_per_endpoint(stack):
    from google.cloud import aiplatform_v1 as v1

    from mlplat.errors import ExternalError

    vertex = stack["monitoring"].vertex
    endpoint = f"projects/{PROJECT}/locations/europe-west4/endpoints/555"

    def deployed(*ids: str) -> None:
        vertex.endpoints[endpoint] = v1.Endpoint(name=endpoint, display_name="e",
                                                 deployed_models=[v1.DeployedModel(id=i) for i in ids])

    spec = stack["spec"]
    settings = spec.provider.model_monitoring.model_copy(update={"enabled": True, "interval_hours": 2})
    stack["spec"] = spec.model_copy(update={"provider": spec.provider.model_copy(update={"model_monitoring": settings})})
    log(stack["fake"], "101", 0, 3)
    deployed("101", "202")
    mon = monitor(stack, {"101": ("scorer", 1, "primary"), "202": ("scorer", 2, "canary")})
    assert mon.publish(report(3))["model_monitoring"]["555"]["action"] == "create"
    [job] = vertex.extra["monitoring_jobs"].values()
    assert job.endpoint == endpoint and job.labels["mlplat-endpoint"] == "555" and job.labels["team"] == "search"
    assert sorted(c.deployed_model_id for c in job.model_deployment_monitoring_objective_configs) == ["101", "202"]
    assert job.model_deployment_monitoring_schedule_config.monitor_interval.total_seconds() == 7200
    assert mon.publish({**report(3), "ts": T0 + 60})["model_monitoring"]["555"]["action"] == "unchanged"

    deployed("202")  # the canary was promoted and v1 undeployed: the job follows the endpoint
    later = monitor(stack, {"202": ("scorer", 2, "primary")})
    assert later.publish({**report(3), "ts": T0 + 120})["model_monitoring"]["555"]["action"] == "update"
    [job] = vertex.extra["monitoring_jobs"].values()
    assert [c.deployed_model_id for c in job.model_deployment_monitoring_objective_configs] == ["202"]

    # the fake refuses what Vertex refuses: a model not deployed on the endpoint
    deployed("303")
    with pytest.raises(ExternalError, match="deployed model 202 is not deployed"):
        monitor(stack, {"202": ("scorer", 2, "primary"), "404": ("scorer", 3, "canary")}).publish(
            {**report(3), "ts": T0 + 180})
