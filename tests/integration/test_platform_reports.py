"""`mlplat sla` and `mlplat adoption` over ledgers with known history, embedded and through `mlplat server`,
and the adoption report on AWS (moto) with endpoints made by the platform and by hand.

The local project's dev stack is provisioned with `mlplat up`; its history is written through the service
layer at chosen times (audit entries, rollout deploys and a rollback with their ``now``, health samples from
a recorder on an injected clock), all within the last days, so a 30-day period ending now holds them and
every figure is known: promotion to serving 10 and 30 minutes (p95 30), a rollback asked for 42 s before
the switch, a gateway that died once and was back 2 s later (availability 902 s of 904), 1 5xx of 1,500
requests, overhead ≤ 1 ms.
"""
from __future__ import annotations

import json
import time

import pytest

from tests.conftest import REPO, run_cli, write_project
from tests.server_support import running_server

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("platform-reports")]

USER = "ds@example.com"
DAY = 86400.0


def cli(project, *args: str, env: dict | None = None):
    return run_cli(*args, cwd=project, env={"MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": USER, **(env or {})})


def context(project, clock=None):
    import os

    from rich.console import Console

    from mlplat.context import Context

    quiet = Console(file=open(os.devnull, "w"))
    return Context(project_dir=project, console=quiet, err=quiet, _user=USER, **({"clock": clock} if clock else {}))


def seed(project, now: float) -> dict[str, float]:
    """The known history, written through the services at chosen times; returns the times."""
    from mlplat.services import audit, health, rollout
    from mlplat.services import registry as reg

    ctx = context(project)
    spec = ctx.stack("dev")
    db = reg.registry_for(spec, ctx).database()
    t = {"p1": now - 3 * DAY, "p2": now - 2 * DAY, "rollback": now - DAY, "gateway": now - DAY - 7200}
    conn = db.connect()
    try:
        for version, promoted, serving in ((1, t["p1"], t["p1"] + 600), (2, t["p2"], t["p2"] + 1800)):
            with db.transaction(conn):
                audit.append(conn, actor=USER, method="os-user", action="stage.changed", model="scorer",
                             version=version, environment="dev", reason="promoted to production",
                             evidence={"stage": "production", "archived": version - 1 if version > 1 else None},
                             ts=promoted)
            with db.transaction(conn):
                rollout.deploy(conn, model="scorer", environment="dev", version=version, strategy="direct",
                               actor=USER, method="os-user", now=serving)
        with db.transaction(conn):
            rollout.rollback(conn, model="scorer", environment="dev", actor=USER, method="os-user", to=1,
                             reason="bad release", now=t["rollback"], requested_at=t["rollback"] - 42)
    finally:
        conn.close()
    clock = [t["gateway"]]
    first = health.HealthRecorder(db, component=health.GATEWAY, environment="dev", clock=lambda: clock[0],
                                  instance="gw:1")
    first.begin()
    for window in range(10):  # 600 s up, 1,000 requests, one 5xx; then it dies without a last row
        for i in range(100):
            first.observe(503 if window == 0 and i == 0 else 200, 0.8)
        clock[0] += 60
        first.flush()
    clock[0] += 2
    second = health.HealthRecorder(db, component=health.GATEWAY, environment="dev", clock=lambda: clock[0],
                                   instance="gw:2")
    second.begin()
    for _ in range(5):
        for _ in range(100):
            second.observe(200, 0.8)
        clock[0] += 60
        second.flush()
    second.stop()
    return t


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    project = write_project(tmp_path_factory.mktemp("platform-reports") / "project")
    up = cli(project, "up", "--stack", "dev", "--yes")
    assert up.returncode == 0, up.stderr
    now = time.time()
    return project, seed(project, now), now


def embedded(project, name: str, now: float, **params):
    from mlplat.api.plane import EmbeddedPlane

    ctx = context(project, clock=lambda: now)
    return EmbeddedPlane(ctx.stack("dev"), ctx).call(name, **params)


def test_sla_figures_from_known_promotion_rollback_and_health_history(site):
    project, t, now = site
    doc = embedded(project, "sla.report", now + 60)
    figures = {f["key"]: f for f in doc["figures"]}
    assert figures["promotion_to_serving_minutes"]["value"] == pytest.approx(30.0)
    assert figures["promotion_to_serving_minutes"]["samples"] == 2
    assert [round(p["seconds"]) for p in doc["promotions"]] == [600, 1800]
    assert figures["rollback_seconds"]["value"] == pytest.approx(42.0)
    assert doc["rollbacks"][0]["to_version"] == 1 and doc["rollbacks"][0]["reason"] == "bad release"
    assert figures["gateway_availability"]["value"] == pytest.approx(900 / 902)
    gateway = doc["availability"]["gateway"][0]
    assert (gateway["up_s"], gateway["down_s"], gateway["crashes"]) == (pytest.approx(900), pytest.approx(2), 1)
    assert figures["gateway_request_success"]["value"] == pytest.approx(1 - 1 / 1500)
    assert figures["gateway_overhead_p99_ms"]["value"] == 1.0
    assert figures["control_plane_availability"]["status"] == "not measured"  # embedded, no server ran
    assert figures["support_response_hours"]["status"] == "not measured"
    assert not doc["breached"] and all(f["status"] in ("met", "not measured") for f in doc["figures"])
    # a period that ends before the history began sees none of it
    old = embedded(project, "sla.report", now + 60, period="2025-01")
    assert {f["status"] for f in old["figures"]} <= {"no data", "not measured"}
    one_day = embedded(project, "sla.report", now + 60, period="36h")
    assert [p["version"] for p in one_day["promotions"]] == [] and len(one_day["rollbacks"]) == 1


def test_sla_exits_1_on_a_breach_of_an_objective_set_in_the_stack(site):
    project, _, _ = site
    ok = cli(project, "sla", "--stack", "dev")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "every measured objective met" in ok.stdout
    path = project / "stacks" / "Pulumi.dev.yaml"
    original = path.read_text()
    try:
        path.write_text(original.rstrip("\n") + "\n  mlplat:sla: {rollbackSeconds: 30, gatewayOverheadP99Ms: 0.5}\n")
        breached = cli(project, "sla", "--stack", "dev", "--format", "csv")
        assert breached.returncode == 1, breached.stdout + breached.stderr
        rows = {line.split(",")[0]: line for line in breached.stdout.splitlines()[1:]}
        assert ",breached," in rows["rollback_seconds"] and ",breached," in rows["gateway_overhead_p99_ms"]
        assert ",met," in rows["promotion_to_serving_minutes"]
        table = cli(project, "sla", "--stack", "dev")
        assert table.returncode == 1 and "breached: gateway overhead p99, rollback time (longest)" in table.stdout
    finally:
        path.write_text(original)


def test_bad_input_gets_one_message_and_a_non_zero_exit(site):
    project, _, _ = site
    for args, code, text in ((("sla", "--stack", "nope"), 3, "stack 'nope' not found"),
                             (("sla", "--period", "30x"), 2, "cannot read period '30x'"),
                             (("adoption", "--all", "--stack", "dev"), 2, "give --stack or --all, not both"),
                             (("adoption", "--stack", "nope"), 3, "stack 'nope' not found")):
        result = cli(project, *args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert text in result.stderr and "Traceback" not in result.stderr
    from mlplat.api.operations import InvalidRequest

    with pytest.raises(InvalidRequest, match="invalid period") as refused:
        embedded(project, "sla.report", time.time(), period="2026-13")
    assert refused.value.where == "period"


def _stable(doc: dict, kind: str) -> dict:
    """The document without what depends on the moment it was computed."""
    doc = json.loads(json.dumps(doc))
    if kind == "sla":
        doc.pop("period")
        doc.pop("availability").pop("control-plane", None)
        doc["figures"] = [f if not f["key"].startswith("control_plane") else {"key": f["key"]} for f in doc["figures"]]
        doc["breached"] = None
    else:
        doc.pop("now")
        for point in doc["trend"]["points"]:
            point.pop("end")
    return doc


def test_server_mode_answers_the_same_json_as_embedded(site):
    project, _, _ = site
    with running_server(project, "dev") as server:
        for args, kind in ((("sla", "--json"), "sla"), (("adoption", "--json"), "adoption")):
            here = cli(project, *args)
            there = cli(project, *args, env=server.client_env())
            assert here.returncode == there.returncode == 0, here.stderr + there.stderr + there.stdout
            assert _stable(json.loads(here.stdout), kind) == _stable(json.loads(there.stdout), kind)
        assert "Traceback" not in server.output()
    # the server recorded its own health: its samples end with a clean stop
    after = json.loads(cli(project, "sla", "--json").stdout)
    plane = after["availability"]["control-plane"]
    assert plane and plane[0]["crashes"] == 0 and plane[0]["requests"] >= 2
    assert {f["key"]: f for f in after["figures"]}["control_plane_request_success"]["status"] == "met"


def test_adoption_on_aws_counts_platform_tagged_and_hand_made_endpoints_with_their_owners(tmp_path, monkeypatch):
    from moto import mock_aws

    from mlplat.api.plane import EmbeddedPlane
    from tests.contract import moto_support as ms

    ms.use_fake_aws(monkeypatch)
    project = write_project(tmp_path / "project", {"fraud-aws": ms.aws_stack_text(),
                                                   "dev": (REPO / "stacks" / "Pulumi.dev.yaml").read_text()})
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(project))
    with mock_aws():
        import boto3

        ctx = context(project)
        spec = ctx.stack("fraud-aws")
        ms.provision_cloud(spec)
        sm = boto3.client("sagemaker", region_name=ms.REGION)
        platform_tags = {"team": "fraud", "cost-center": "CC-1042", "environment": "production",
                         "owner": "fraud-leads@example.com"}
        endpoints = {  # name -> tags
            "mlplat-fraud-production-scorer": platform_tags,
            "mlplat-fraud-production-merchant-tagger": platform_tags,
            "fraud-notebook-model": {"team": "fraud", "environment": "production", "owner": "bob@example.com"},
            "growth-churn-legacy": {"team": "growth", "environment": "production", "Owner": "alice@example.com"},
            "adhoc-test": {},
        }
        for name, tags in endpoints.items():
            sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn=f"arn:aws:iam::{ms.ACCOUNT}:role/r",
                            PrimaryContainer={"Image": f"{ms.ACCOUNT}.dkr.ecr.{ms.REGION}.amazonaws.com/m:1"})
            sm.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=[{
                "VariantName": "primary", "ModelName": f"{name}-model", "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large"}])
            sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config",
                               Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        doc = EmbeddedPlane(spec, ctx).call("adoption.report", trend="week")
        everything = EmbeddedPlane(spec, ctx).call("adoption.report", all_stacks=True)
    rows = {(r["team"], r["environment"]): r for r in doc["rows"]}
    fraud = rows[("fraud", "production")]
    assert fraud["platform_endpoints"] == ["merchant-tagger", "scorer"]
    assert (fraud["managed"], fraud["unmanaged"], fraud["share"]) == (2, 1, pytest.approx(2 / 3))
    assert fraud["owners"] == ["bob@example.com"]
    assert [e["name"] for e in fraud["unmanaged_endpoints"]] == ["fraud-notebook-model"]
    assert fraud["inspected"] == [f"aws {ms.ACCOUNT}/{ms.REGION}"]
    growth = rows[("growth", "production")]
    assert (growth["managed"], growth["unmanaged"], growth["owners"]) == (0, 1, ["alice@example.com"])
    assert rows[("(untagged)", "(untagged)")]["owners"] == ["unknown (no owner tag)"]
    assert (doc["managed"], doc["unmanaged"], doc["share"]) == (2, 3, pytest.approx(0.4))
    assert doc["trend"]["by"] == "week" and doc["trend"]["points"][-1]["unmanaged"] == 3
    # every stack: the local dev stack (never provisioned here) is skipped, AWS's account read once
    assert [s["stack"] for s in everything["skipped"]] == ["dev"] and everything["unmanaged"] == 3
    assert "not provisioned" in everything["skipped"][0]["reason"]
    assert [i["provider"] for i in everything["inventories"]] == ["aws"]


def test_a_provider_that_cannot_list_endpoints_says_so(site):
    from mlplat.errors import CapabilityNotSupported
    from mlplat.services import adoption

    project, _, now = site
    doc = embedded(project, "adoption.report", now)
    assert doc["inventories"] == [{"provider": "local", "location": doc["inventories"][0]["location"],
                                   "inspected": True, "endpoints": 0, "note": None}]
    row = doc["rows"][0]
    assert (row["team"], row["environment"], row["unmanaged"]) == ("ml-core", "dev", 0)
    # a provider without an inventory: the report names it, and counts nothing outside
    note = CapabilityNotSupported("gcp", "endpoint inventory").message
    report = adoption.build([], [adoption.Inventory("gcp", "europe-west4", None, f"not inspected: {note}")], now=now)
    assert report.to_dict()["inventories"][0]["inspected"] is False


def test_the_dashboard_shows_the_sla_figures_and_the_adoption_share(site):
    from mlplat.dashboard import render

    project, _, now = site
    doc = embedded(project, "dashboard.snapshot", now + 60)
    assert {f["key"] for f in doc["sla"]["figures"]} >= {"gateway_availability", "rollback_seconds"}
    section = render.parts(doc)["sla"]
    assert "Platform SLA and adoption" in section and "rollback time (longest)" in section
    assert "42.00 s" in section and "99.778%" in section and "served through the platform" in section
