"""Monitoring on the azure provider, against the fake ARM server (Blob Storage, Azure ML, Azure Monitor).

Azure Machine Learning's data collector writes each deployment's inputs and outputs as JSON Lines to the
workspace blob store; the runtime lists and reads those files (List Blobs, Get Blob), joins inputs to
outputs by correlation id, assigns each request to the version its deployment serves, and publishes the
pass's results to Azure Monitor's custom-metrics ingestion API (namespace ``mlplat`` on the workspace): every
body is checked against the documented rules, and ``drift_share`` carries exactly the dimensions the
program's metric alert filters on. Opted-in stacks keep one Azure ML monitoring schedule per deployment
(data drift and prediction drift signals), created and updated only when platform-managed. A missing
container, a window with no data, a denied publish and throttling get one clear answer each.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.contract import azure_support as azs
from tests.contract.azure_fake.arm import storage_account
from tests.contract.azure_fake.drift_schedules import monitor_problem, trigger_problem
from tests.contract.azure_fake.fixtures import WORKSPACE, azure_fake, azure_server  # noqa: F401
from tests.contract.azure_fake.monitoring_support import seed_deployment, write_collected

pytestmark = pytest.mark.integration

ENV = "production"
T0 = 1_780_000_000.0
MONITORING_ON = "    modelMonitoring: {enabled: true, intervalHours: 6}\n"


def _stack(tmp_path, monkeypatch, fake, provider_extra: str = ""):
    from mlplat.db import Database
    from mlplat.stack import load_stack
    from mlplat_providers.azure.runtime.monitoring import AzureMonitor
    from mlplat_providers.azure.runtime.serving import AzureServing

    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    (project / "Pulumi.yaml").write_text("name: mlplat\nruntime: python\nstackConfigDir: stacks\n")
    text = azs.azure_stack_text().replace("    kind: azure\n", "    kind: azure\n" + provider_extra, 1).replace(
        "    requiredApprovals: 1\n", "    requiredApprovals: 1\n    models: {scorer: {riskTier: critical}}\n", 1)
    (project / "stacks" / "Pulumi.fraud-prod.yaml").write_text(text)
    spec = load_stack("fraud-prod", project)
    db = Database(Path(tmp_path) / "platform.db")
    db.migrate()
    sleeps: list[float] = []
    session = azs.azure_session(spec, sleeps)

    class Ctx:
        reading = False
        database_url = None
        user = "tester"

    serving = AzureServing(spec, Ctx(), session)
    endpoint = serving.endpoint_name("scorer", ENV)
    versions = {(endpoint, serving.deployment_name("scorer", 1)): ("scorer", 1, ENV, "primary"),
                (endpoint, serving.deployment_name("scorer", 2)): ("scorer", 2, ENV, "shadow")}
    monkeypatch.setattr(AzureMonitor, "database", lambda self: db)
    monkeypatch.setattr(AzureMonitor, "versions", lambda self: versions)
    monitor = AzureMonitor(spec, Ctx(), session, clock=lambda: T0)
    return {"spec": spec, "monitor": monitor, "session": session, "sleeps": sleeps, "fake": fake,
            "endpoint": endpoint, "deployments": [d for _e, d in versions]}


@pytest.fixture
def stack(tmp_path, monkeypatch, azure_fake):  # noqa: F811
    return _stack(tmp_path, monkeypatch, azure_fake)


def requests_(n: int, prefix: str = "req") -> list[dict]:
    return [{"inference_id": f"{prefix}-{i}", "features": {"x1": float(i), "x2": 1.0}, "predicted": i % 2}
            for i in range(n)]


def workspace(fake) -> dict:
    [ws] = fake.arm.workspaces.values()
    return ws


def test_collected_requests_belong_to_the_version_their_deployment_serves(stack):
    fake, monitor, endpoint = stack["fake"], stack["monitor"], stack["endpoint"]
    primary, shadow = stack["deployments"]
    ws = workspace(fake)
    write_collected(fake, ws, endpoint, primary, requests_(5), T0)
    write_collected(fake, ws, endpoint, shadow, requests_(3), T0 + 100)  # mirrored: same caller ids
    write_collected(fake, ws, endpoint, "someone-elses", requests_(2), T0)  # not the platform's deployment
    write_collected(fake, ws, "another-endpoint", primary, requests_(2), T0)
    # an input whose output has not been written yet is kept, without a prediction
    container = f"azureml-blobstore-{ws['properties']['workspaceId']}"
    from tests.contract.azure_fake.monitoring_support import collector_line

    hour = dt.datetime.fromtimestamp(T0, dt.UTC).strftime("%Y/%m/%d/%H")
    fake.arm.blobs[(storage_account(WORKSPACE), container,
                    f"modelDataCollector/{endpoint}/{primary}/model_inputs/{hour}/late.jsonl")] = (
        (collector_line("model_inputs", "late-1", T0 + 50, [{"x1": 9.0, "x2": 1.0}], "s") + "\n{not json\n").encode(),
        {})

    v1 = monitor.captures("scorer", 1)
    assert [c.request_id for c in v1] == [f"{primary}/req-{i}" for i in range(5)] + [f"{primary}/late-1"]
    assert v1[0].inputs == [{"x1": 0.0, "x2": 1.0}] and v1[1].outputs == {"predictions": [1]}
    assert v1[-1].outputs is None and not any(c.shadow for c in v1)
    [(rid, features, label, _score)] = list(v1[1].rows())
    assert (rid, features, label) == (f"{primary}/req-1", {"x1": 1.0, "x2": 1.0}, 1)
    v2 = monitor.captures("scorer", 2)
    assert len(v2) == 3 and all(c.shadow and c.variant == "shadow" for c in v2)
    assert monitor.captures("scorer", 1, since=T0 + 2, until=T0 + 4) == v1[2:4]
    assert monitor.deployed() == [("scorer", 2, ENV), ("scorer", 1, ENV)]
    # the caller's id (its x-request-id, the collector's correlation id) names the live capture, not the shadow's
    resolved = monitor.resolve_request_ids(["req-3", f"{shadow}/req-0", "nobody"])
    assert resolved == {"req-3": [f"{primary}/req-3"], f"{shadow}/req-0": [f"{shadow}/req-0"]}
    assert monitor.known_request_ids([f"{primary}/req-4#0", "req-4"]) == {f"{primary}/req-4#0"}


def test_collector_files_are_read_once(stack):
    fake, monitor, endpoint = stack["fake"], stack["monitor"], stack["endpoint"]
    primary = stack["deployments"][0]
    write_collected(fake, workspace(fake), endpoint, primary, requests_(4), T0)
    assert len(monitor.captures("scorer", 1)) == 4
    reads = [p for m, p in fake.arm.calls if m == "GET" and p.endswith(".jsonl")]
    assert len(reads) == 4  # two files per collection
    assert len(monitor.captures("scorer", 1)) == 4
    assert [p for m, p in fake.arm.calls if m == "GET" and p.endswith(".jsonl")] == reads


def test_list_blobs_pages_by_marker_and_a_missing_container_is_404(stack):
    from azure.core.exceptions import ResourceNotFoundError

    service = stack["session"].blob_service()
    container = service.get_container_client("mlplat")
    for i in range(7):
        container.upload_blob(f"a/{i}.jsonl", b"x" * i)
    container.upload_blob("b/other", b"1")
    pages = [[b.name for b in page] for page in container.list_blobs(name_starts_with="a/",
                                                                       results_per_page=3).by_page()]
    assert pages == [["a/0.jsonl", "a/1.jsonl", "a/2.jsonl"], ["a/3.jsonl", "a/4.jsonl", "a/5.jsonl"], ["a/6.jsonl"]]
    assert [(b.name, b.size) for b in container.list_blobs()][-2:] == [("a/6.jsonl", 6), ("b/other", 1)]
    with pytest.raises(ResourceNotFoundError) as caught:
        list(service.get_container_client("nope").list_blobs())
    assert caught.value.error_code == "ContainerNotFound"


def test_a_missing_container_is_named_with_the_setting_to_fix_it(tmp_path, monkeypatch, azure_fake):  # noqa: F811
    from mlplat.errors import StackError

    s = _stack(tmp_path, monkeypatch, azure_fake, "    collectorContainer: not-there\n")
    with pytest.raises(StackError) as caught:
        s["monitor"].captures("scorer", 1)
    assert "not-there" in caught.value.message and "collectorContainer" in (caught.value.hint or "")


def test_a_window_with_no_data_reads_nothing_and_publishes_nothing(stack):
    monitor, fake = stack["monitor"], stack["fake"]
    assert monitor.deployed() == [] and monitor.captures("scorer", 1) == []
    assert monitor.resolve_request_ids(["req-1"]) == {}
    assert monitor.publish({"ts": T0, "windows": []}) == {
        "namespace": "mlplat", "resource": stack["session"].workspace_id, "metrics": 0, "skipped": []}
    assert "custom_metrics" not in fake.arm.extra


def report(share: float = 0.5) -> dict:
    features = [{"feature": "x1", "psi": 0.9}, {"feature": "x2", "psi": 0.01}, {"feature": "__prediction__", "psi": 0.3}]
    return {"ts": T0, "windows": [{"model": "scorer", "version": 1, "environment": ENV,
                                   "drift": {"verdict": "drift", "share": share, "rows": 40, "features": features},
                                   "metrics": {"quality.accuracy": 0.8}}]}


def test_a_pass_publishes_what_the_metric_alert_watches(stack):
    from mlplat_providers.azure.plan import alert_criteria, criteria_of, stack_plan

    fake, spec = stack["fake"], stack["spec"]
    fake.arm.extra["metrics_now"] = T0 + 60
    out = stack["monitor"].publish(report())
    sent = fake.arm.extra["custom_metrics"]
    assert out["metrics"] == len(sent) == 7 and out["skipped"] == []
    assert {(d["metric"], d["dims"].get("feature")) for d in sent} == {
        ("feature_psi", "x1"), ("feature_psi", "x2"), ("max_psi", None), ("prediction_drift", None),
        ("drift_share", None), ("predictions", None), ("accuracy", None)}
    assert {d["resource"] for d in sent} == {stack["session"].workspace_id}
    # what the program's alerts may watch (service_rules) is exactly what the pass publishes
    from mlplat_providers.azure import service_rules as sr

    assert {d["metric"] for d in sent} | {"precision", "recall"} == sr.PLATFORM_METRICS
    assert {tuple(d["dims"])[:2] for d in sent} == {sr.PLATFORM_DIMENSIONS}
    plan = stack_plan(spec)
    [model] = [m for m in plan.models if m.model == "scorer"]
    [drift] = [c for c in alert_criteria(spec) if c.namespace == "mlplat"]
    [criterion] = criteria_of(drift, model, spec.team)["allOf"]
    dims = {d["name"]: d["values"][0] for d in criterion["dimensions"]}
    [watched] = [d for d in sent if d["metric"] == criterion["metricName"] and d["namespace"] ==
                 criterion["metricNamespace"] and d["dims"] == dims]
    assert watched["max"] == 0.5 > 0 and criterion["timeAggregation"] == "Maximum"


def test_a_denied_publish_names_the_action_and_throttling_is_retried(stack):
    from mlplat_providers.azure.runtime.session import AzurePermissionDenied

    fake = stack["fake"]
    fake.arm.extra["metrics_now"] = T0
    fake.arm.deny("Microsoft.Insights/Metrics/Write")
    with pytest.raises(AzurePermissionDenied) as caught:
        stack["monitor"].publish(report())
    assert "Microsoft.Insights/Metrics/Write" in caught.value.message
    assert "Microsoft.Insights/Metrics/Write" in (caught.value.hint or "")
    fake.arm.allow("Microsoft.Insights/Metrics/Write")
    fake.arm.throttle("Microsoft.Insights/Metrics/Write", times=2)
    assert stack["monitor"].publish(report())["metrics"] == 7
    assert stack["sleeps"] == [7.0, 7.0]


def test_bodies_azure_monitor_would_refuse_are_left_out_with_the_reason(stack):
    from mlplat.errors import ExternalError
    from mlplat_providers.azure.runtime.monitoring import AzureMonitor

    late = AzureMonitor(stack["spec"], stack["monitor"].ctx, stack["session"], clock=lambda: T0 + 3600)
    with pytest.raises(ExternalError) as caught:
        late.publish(report())
    assert "more than 20 minutes in the past" in caught.value.message
    assert "custom_metrics" not in stack["fake"].arm.extra


def _body(**change):
    from mlplat_providers.azure.runtime.monitoring import metric_body

    body = metric_body("drift_share", T0, {"team": "fraud", "model": "scorer"}, 0.5)
    base = body["data"]["baseData"]
    for key, value in change.items():
        if key == "time":
            body["time"] = value
        elif key in ("min", "count", "dimValues"):
            base["series"][0][key] = value
        else:
            base[key] = value
    return body


@pytest.mark.parametrize(("change", "problem"), [
    ({}, None),
    ({"time": "2026-05-28T20:00:00Z"}, "20 minutes in the past"),
    ({"time": dt.datetime.fromtimestamp(T0 + 6 * 60, dt.UTC).isoformat()}, "5 minutes in the future"),
    ({"time": "yesterday"}, "ISO 8601"),
    ({"dimNames": [f"d{i}" for i in range(11)], "dimValues": ["v"] * 11}, "at most 10"),
    ({"dimNames": ["Team", "team"]}, "distinct"),
    ({"metric": ""}, "metric must be a non-empty string"),
    ({"namespace": "x" * 257}, "longer than 256"),
    ({"metric": " drift"}, "spaces"),
    ({"dimValues": ["fraud"]}, "1 dimension values for 2"),
    ({"min": 9.0}, "min must not exceed max"),
    ({"count": 0}, "count must be at least 1"),
])
def test_custom_metric_rules_refuse_what_azure_monitor_refuses(change, problem):
    from mlplat_providers.azure.runtime.monitoring import custom_metric_problems

    problems = custom_metric_problems(_body(**change), now=T0)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_opted_in_stacks_keep_one_monitoring_schedule_per_platform_deployment(tmp_path, monkeypatch,
                                                                              azure_fake):  # noqa: F811
    s = _stack(tmp_path, monkeypatch, azure_fake, MONITORING_ON)
    primary = s["deployments"][0]
    dep_id = seed_deployment(azure_fake, s["endpoint"], primary)
    seed_deployment(azure_fake, s["endpoint"], "scorer-v9")  # managed, but no version the ledger deployed
    azure_fake.arm.extra["metrics_now"] = T0
    first = s["monitor"].publish(report())["model_monitoring"]
    name = f"mlplat-{s['endpoint']}-{primary}"
    assert first == {name: {"target": f"{s['endpoint']}:{primary}", "action": "create",
                            "signals": ["data-drift", "prediction-drift"]}}
    [(key, kept)] = azure_fake.arm.extra["monitor_schedules"].items()
    props = kept["properties"]
    assert key[1] == name and props["tags"]["mlplat-managed"] == "true" and props["tags"]["team"] == "fraud"
    monitor = props["action"]["monitorDefinition"]
    assert monitor["monitoringTarget"]["deploymentId"].lower() == dep_id.lower()
    assert monitor["computeConfiguration"]["computeType"] == "ServerlessSpark"
    assert {k: v["signalType"] for k, v in monitor["signals"].items()} == {
        "data-drift": "DataDrift", "prediction-drift": "PredictionDrift"}
    assert props["trigger"]["frequency"].capitalize() == "Hour" and props["trigger"]["interval"] == 6
    assert s["monitor"].publish(report())["model_monitoring"][name]["action"] == "update"
    # a schedule of that name the platform did not create is never changed
    azure_fake.arm.extra["monitor_schedules"][key]["properties"]["tags"] = {"owner": "someone"}
    before = json.loads(json.dumps(azure_fake.arm.extra["monitor_schedules"][key]))
    assert s["monitor"].publish(report())["model_monitoring"][name]["action"] == "not managed"
    assert azure_fake.arm.extra["monitor_schedules"][key] == before


def test_monitor_schedule_rules():
    deployments = {"/x/deployments/d"}
    good = {"computeConfiguration": {"computeType": "ServerlessSpark", "instanceType": "standard_e4s_v3",
                                     "runtimeVersion": "3.4"},
            "signals": {"s": {}}, "monitoringTarget": {"deploymentId": "/x/deployments/D"}}
    assert monitor_problem(good, deployments) is None
    assert "ServerlessSpark" in monitor_problem({**good, "computeConfiguration": {"computeType": "AmlCompute"}},
                                                deployments)
    assert "instance type" in monitor_problem({**good, "computeConfiguration": {
        **good["computeConfiguration"], "instanceType": "standard_ds3_v2"}}, deployments)
    assert "runtime" in monitor_problem({**good, "computeConfiguration": {
        **good["computeConfiguration"], "runtimeVersion": "3.1"}}, deployments)
    assert "at least one signal" in monitor_problem({**good, "signals": {}}, deployments)
    assert "does not exist" in monitor_problem(good, set())
    assert trigger_problem({"triggerType": "Recurrence", "frequency": "Hour", "interval": 6}) is None
    assert "frequency" in trigger_problem({"triggerType": "Recurrence", "frequency": "Fortnight", "interval": 1})
    assert "interval" in trigger_problem({"triggerType": "Recurrence", "frequency": "Day", "interval": 0})


def test_a_ground_truth_asset_adds_the_model_performance_signal(tmp_path, monkeypatch, azure_fake):  # noqa: F811
    s = _stack(tmp_path, monkeypatch, azure_fake, "    modelMonitoring: {enabled: true, groundTruth: 'fraud-truth:3', "
                                                   "labelColumn: is_fraud}\n")
    primary = s["deployments"][0]
    seed_deployment(azure_fake, s["endpoint"], primary)
    azure_fake.arm.extra["metrics_now"] = T0
    [made] = s["monitor"].publish(report())["model_monitoring"].values()
    assert made["signals"] == ["data-drift", "model-performance", "prediction-drift"]
    [kept] = azure_fake.arm.extra["monitor_schedules"].values()
    performance = kept["properties"]["action"]["monitorDefinition"]["signals"]["model-performance"]
    assert performance["signalType"] == "ModelPerformance"
    text = json.dumps(performance)
    assert "fraud-truth" in text and "is_fraud" in text and f"{s['endpoint']}-{primary}-model_outputs" in text
