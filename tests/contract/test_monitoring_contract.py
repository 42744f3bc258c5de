"""The MONITORING contract: the same pass over captured traffic, the same assertions, on every provider.

A released version serves in production; captured traffic has one feature shifted by three standard
deviations; ground truth arrives under the caller's own request ids. Through the stack's control plane
(``monitoring.labels``, ``monitoring.run``, ``monitoring.status``), each provider must find that feature
drifted, join the labels and score the predictions, and keep the window in the ledger.

The traffic is written where each provider's serving writes it: the gateway's ``captures`` table on the
local provider (request id, caller's ``x-request-id``), SageMaker's data capture on AWS (JSON Lines under
the endpoint's capture prefix in S3, moto in this process, with ``eventId`` and the caller's
``InferenceId``), Vertex AI's request-response log on GCP (rows in the endpoint's BigQuery table, the fake
BigQuery server on 127.0.0.1, the caller's id sent as ``parameters.request_id``), Azure Machine Learning's
data collector on Azure (JSON Lines of ``model_inputs`` and ``model_outputs`` in the workspace blob store of
the fake ARM server, the caller's ``x-request-id`` as the correlation id). On AWS the pass also publishes the platform's CloudWatch metrics; every request the
runtime sends is checked against botocore's service model, and every ``PutMetricData`` against
CloudWatch's documented limits (``service_rules``), and the program's drift alarm must watch exactly a
metric the pass published.
"""
from __future__ import annotations

import datetime as dt
import json
import time

import pandas as pd
import pytest

from tests.contract import azure_support as azs
from tests.contract import gcp_support as gs
from tests.contract import moto_support as ms
from tests.contract.azure_fake.fixtures import azure_fake, azure_server  # noqa: F401  (fixtures)
from tests.contract.azure_fake.monitoring_support import AzureCaptures
from tests.contract.gcp_fake.bigquery import bigquery_fake, bigquery_server  # noqa: F401  (fixtures)
from tests.contract.gcp_fake.fixtures import gcp_fake, gcp_servers  # noqa: F401  (fixtures)
from tests.contract.gcp_fake.monitoring_support import GcpCaptures
from tests.contract.lifecycle import AUTHOR, call, context, deployments, new_project, train
from tests.contract.test_lifecycle_contract import APPROVERS, ENV, STACK, local_stack_text, release

pytestmark = pytest.mark.integration

SHIFTED = "x2"
ROWS = 150
MODELS = "    requiredApprovals: 1\n    models: {scorer: {riskTier: critical}}\n"


def traffic(project) -> list[dict]:
    """``ROWS`` requests from the holdout with ``SHIFTED`` moved by three standard deviations; the answer is the
    true label except on every fifth request, so accuracy is exactly 0.8."""
    frame = pd.read_parquet(project / "data" / "holdout.parquet").head(ROWS).reset_index(drop=True)
    frame[SHIFTED] = frame[SHIFTED] + 3 * float(frame[SHIFTED].std())
    out = []
    for i, row in enumerate(frame.to_dict(orient="records")):
        truth = int(row.pop("label"))
        out.append({"inference_id": f"inf-{i:04d}", "event_id": f"evt-{i:04d}", "features": row,
                    "truth": truth, "predicted": truth if i % 5 else 1 - truth})
    return out


class LocalCaptures:
    name = "local"

    def __init__(self, project):
        self.project = project

    def capture(self, requests: list[dict], start: float) -> None:
        """As the gateway writes them: the platform's request id, the caller's x-request-id beside it."""
        import sqlite3

        from mlplat_providers.local.layout import StateLayout

        spec = context(self.project).stack(STACK)
        conn = sqlite3.connect(StateLayout(spec.state_dir).platform_db, timeout=60)
        try:
            with conn:
                conn.executemany(
                    "INSERT INTO captures (request_id, ts, model, version, variant, environment, inputs, outputs, "
                    "latency_ms, status, shadow, client_request_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [(r["event_id"], start + i, "scorer", 1, "primary", ENV, json.dumps(r["features"]),
                      json.dumps({"predictions": [r["predicted"]]}), 5.0, 200, 0, r["inference_id"])
                     for i, r in enumerate(requests)])
        finally:
            conn.close()


class AwsCaptures:
    name = "aws"

    def __init__(self, project):
        self.project = project

    def capture(self, requests: list[dict], start: float) -> None:
        """As SageMaker's data capture writes them: JSON Lines under <prefix>/<endpoint>/<variant>/yyyy/mm/dd/hh/."""
        import boto3

        from mlplat_providers.aws.plan import capture_uri, stack_plan
        from tests.contract.lifecycle import serving

        spec = context(self.project).stack(STACK)
        bucket = stack_plan(spec).bucket
        endpoint = serving(self.project, STACK).endpoint_name("scorer", ENV)
        prefix = capture_uri(bucket, "scorer", ENV).removeprefix(f"s3://{bucket}/")
        lines = []
        for i, r in enumerate(requests):
            when = dt.datetime.fromtimestamp(start + i, dt.UTC)
            lines.append(json.dumps({
                "captureData": {
                    "endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                                      "data": json.dumps(r["features"]), "encoding": "JSON"},
                    "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                       "data": json.dumps({"predictions": [r["predicted"]]}), "encoding": "JSON"}},
                "eventMetadata": {"eventId": r["event_id"], "inferenceId": r["inference_id"],
                                  "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
                "eventVersion": "0"}))
        hour = dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y/%m/%d/%H")
        s3 = boto3.client("s3", region_name=ms.REGION)
        half = len(lines) // 2  # two files, as SageMaker writes several per hour
        for n, part in enumerate((lines[:half], lines[half:])):
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{endpoint}/primary/{hour}/{n:02d}-capture.jsonl",
                          Body=("\n".join(part) + "\n").encode())


@pytest.fixture(params=["local", "aws", "gcp", "azure"])
def captures(request, tmp_path, monkeypatch):
    text = {"local": local_stack_text, "aws": lambda: ms.aws_stack_text(approvers=APPROVERS),
            "gcp": lambda: gs.gcp_stack_text(approvers=APPROVERS),
            "azure": lambda: azs.azure_stack_text(approvers=APPROVERS)}[request.param]()
    project = new_project(tmp_path / "project", {STACK: text.replace("    requiredApprovals: 1\n", MODELS)})
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(project))
    monkeypatch.setenv("MLPLAT_USER", AUTHOR)
    monkeypatch.delenv("MLPLAT_STACK", raising=False)
    monkeypatch.delenv("MLPLAT_CONTROL_PLANE_URL", raising=False)
    monkeypatch.chdir(project)
    if request.param == "local":
        from mlplat_providers.local.provisioner import LocalProvisioner

        monkeypatch.setattr("mlplat_providers.local.delivery.container_engine", lambda: None)
        ctx = context(project)
        provisioner = LocalProvisioner(ctx.stack(STACK), ctx)
        provisioner.apply(provisioner.plan())
        yield LocalCaptures(project)
        return
    if request.param == "gcp":
        fake = request.getfixturevalue("gcp_fake")
        gs.provision_cloud(context(project).stack(STACK), fake)
        yield GcpCaptures(project, STACK, ENV, fake, request.getfixturevalue("bigquery_fake"))
        return
    if request.param == "azure":
        fake = request.getfixturevalue("azure_fake")
        azs.provision_cloud(context(project).stack(STACK))
        yield AzureCaptures(project, STACK, ENV, fake)
        return
    from moto import mock_aws

    ms.use_fake_aws(monkeypatch)
    ms.install_sagemaker_gaps()
    sent = checked_requests(monkeypatch)
    with mock_aws():
        ms.provision_cloud(context(project).stack(STACK))
        drv = AwsCaptures(project)
        drv.sent = sent
        yield drv


def checked_requests(monkeypatch) -> dict[str, list]:
    """Every request the AWS runtime sends, validated as it is sent against botocore's service model, and each
    PutMetricData against CloudWatch's documented limits: ``{"problems": [...], "put_metric_data": [...],
    "operations": [...]}``."""
    from botocore.validate import ParamValidator

    from mlplat_providers.aws import service_rules
    from mlplat_providers.aws.runtime.session import AwsSession

    sent: dict[str, list] = {"problems": [], "put_metric_data": [], "operations": []}
    original = AwsSession.client

    def check(params, model, **_):
        sent["operations"].append(model.name)
        report = ParamValidator().validate(params, model.input_shape)
        if report.has_errors():
            sent["problems"].append(f"{model.name}: {report.generate_report()}")
        if model.name == "PutMetricData":
            sent["problems"].extend(service_rules.put_metric_data_problems(params, now=time.time()))
            sent["put_metric_data"].append(params)

    def client(self, service):
        made = original(self, service)
        made.meta.events.register("provide-client-params", check, unique_id="contract-request-check")
        return made

    monkeypatch.setattr(AwsSession, "client", client)
    return sent


def test_a_shifted_feature_drifts_labels_join_by_the_callers_id_and_the_window_is_kept(captures):
    project = captures.project
    assert context(project).stack(STACK).provider.kind == captures.name
    assert train(project, STACK) == 1
    release(project, 1)
    assert deployments(project, STACK).deploy("scorer", 1, environment=ENV, strategy="direct")["stable_version"] == 1
    requests = traffic(project)
    captures.capture(requests, time.time() + 1)

    # labels name the caller's ids; an id never captured is counted, not stored
    labels = [{"request_id": r["inference_id"], "label": r["truth"]} for r in requests]
    joined = call(project, STACK, "monitoring.labels", labels=labels + [{"request_id": "inf-never", "label": 1}])
    assert (joined["stored"], joined["unknown"], joined["unknown_ids"]) == (ROWS, 1, ["inf-never"])

    report = call(project, STACK, "monitoring.run", retrain=False)
    [window] = report["windows"]
    assert (window["model"], window["version"], window["environment"]) == ("scorer", 1, ENV)
    drift, quality = window["drift"], window["quality"]
    # one feature of six drifted: below the share that makes the window's verdict drift (0.5)
    assert drift["verdict"] == "ok" and drift["rows"] == ROWS
    assert SHIFTED in drift["drifted_features"] and drift["share"] == len(drift["drifted_features"]) / 6
    psi = {f["feature"]: f["psi"] for f in drift["features"] if f["psi"] is not None}
    assert max(psi, key=psi.get) == SHIFTED and psi[SHIFTED] > 0.2
    assert quality["verdict"] == "ok" and quality["rows"] == ROWS
    assert window["metrics"]["quality.accuracy"] == pytest.approx(0.8)

    status = call(project, STACK, "monitoring.status", model="scorer")
    kept = {w["kind"]: w for w in status["windows"] if w["pass_id"] == report["pass_id"]}
    assert kept["drift"]["details"]["drifted_features"] == drift["drifted_features"] and kept["quality"]["metrics"]["quality.accuracy"] == pytest.approx(0.8)

    if captures.name == "aws":
        published_metrics_are_what_the_alarm_watches(captures, report, psi)
    elif captures.name == "gcp":
        published_metrics_are_what_the_alert_policy_watches(captures, report, psi)
    elif captures.name == "azure":
        published_metrics_are_what_the_metric_alert_watches(captures, report, psi)
    else:
        assert report["published"] == {}  # the local gateway's alarms read the ledger


def published_metrics_are_what_the_alarm_watches(captures, report: dict, psi: dict[str, float]) -> None:
    import boto3

    from mlplat.pulumi_support import run_offline
    from mlplat_providers.aws.components import Serving, ServingArgs
    from mlplat_providers.aws.plan import stack_plan

    sent = captures.sent
    assert sent["problems"] == []
    assert report["published"]["metrics"] == sum(len(r["MetricData"]) for r in sent["put_metric_data"]) > 0
    assert {r["Namespace"] for r in sent["put_metric_data"]} == {"mlplat/Models"}
    data = {(d["MetricName"], tuple(sorted((x["Name"], x["Value"]) for x in d["Dimensions"]))): d["Value"]
            for r in sent["put_metric_data"] for d in r["MetricData"]}
    dims = (("Environment", ENV), ("Model", "scorer"), ("Variant", "primary"))
    by_feature = {f: v for (name, d), v in data.items() if name == "FeatureDriftPSI" for k, f in d if k == "Feature"}
    assert by_feature == pytest.approx({f: v for f, v in psi.items() if f != "__prediction__"})
    assert data[("FeatureDriftMaxPSI", dims)] == pytest.approx(psi[SHIFTED])
    assert data[("Accuracy", dims)] == pytest.approx(0.8)
    assert data[("Predictions", dims)] == ROWS

    # the program's drift alarm for this model (its Serving component makes the alarms) watches exactly that
    # metric, with its threshold below the PSI
    spec = context(captures.project).stack(STACK)
    plan = stack_plan(spec)
    records = run_offline(lambda: Serving("s", ServingArgs(plan, ms.ACCOUNT, "arn:aws:iam::1:role/r", plan.bucket,
                                                           "arn:aws:sns:eu-west-1:1:t")),
                          project="mlplat", stack=spec.name, region=spec.provider.region)
    [alarm] = [r.inputs for r in records if r.type == "aws:cloudwatch/metricAlarm:MetricAlarm"
               and r.inputs["name"].endswith("-scorer-drift")]
    watched = (alarm["metricName"], tuple(sorted(alarm["dimensions"].items())))
    assert alarm["namespace"] == "mlplat/Models" and watched in data
    assert data[watched] > alarm["threshold"]
    # and CloudWatch holds the datapoint under that identity
    got = boto3.client("cloudwatch", region_name=ms.REGION).get_metric_data(
        MetricDataQueries=[{"Id": "drift", "MetricStat": {"Metric": {
            "Namespace": alarm["namespace"], "MetricName": alarm["metricName"],
            "Dimensions": [{"Name": k, "Value": v} for k, v in alarm["dimensions"].items()]},
            "Period": 60, "Stat": "Maximum"}}],
        StartTime=dt.datetime.fromtimestamp(report["ts"] - 3600, dt.UTC),
        EndTime=dt.datetime.fromtimestamp(report["ts"] + 3600, dt.UTC))
    assert got["MetricDataResults"][0]["Values"] == [pytest.approx(psi[SHIFTED])]


def published_metrics_are_what_the_alert_policy_watches(captures, report: dict, psi: dict[str, float]) -> None:
    """GCP: user-defined metrics under custom.googleapis.com/mlplat/, and the program's drift alert policy
    filters exactly a series the pass wrote."""
    import re

    from mlplat_providers.gcp.plan import alert_conditions, condition_filter, stack_plan

    data = captures.published()
    assert report["published"]["metrics"] == len(data) > 0 and report["published"]["skipped"] == []
    assert all(t.startswith("custom.googleapis.com/mlplat/") for t, _ in data)
    by_feature = {dict(k)["feature"]: v for (t, k), v in data.items() if t.endswith("/drift/feature_psi")}
    assert by_feature == pytest.approx({f: v for f, v in psi.items() if f != "__prediction__"})
    window = {t.rsplit("mlplat/", 1)[1]: v for (t, k), v in data.items() if "feature" not in dict(k)
              and dict(k).get("model") == "scorer"}
    assert window["drift/max_psi"] == pytest.approx(psi[SHIFTED]) and window["quality/accuracy"] == pytest.approx(0.8)
    assert window["predictions"] == ROWS
    spec = context(captures.project).stack(STACK)
    plan = stack_plan(spec)
    [model] = [m for m in plan.models if m.model == "scorer"]
    [drift] = [c for c in alert_conditions(spec) if c.metric_type.startswith("custom.googleapis.com/mlplat/")]
    wanted = dict(re.findall(r'(\S+?)="([^"]*)"', condition_filter(plan, model, drift)))
    watched = [v for (t, k), v in data.items() if t == wanted["metric.type"] and all(
        dict(k).get(key.removeprefix("metric.label.")) == value for key, value in wanted.items()
        if key.startswith("metric.label."))]
    assert len(watched) == 1 and watched[0] == pytest.approx(window["drift/share"])


def published_metrics_are_what_the_metric_alert_watches(captures, report: dict, psi: dict[str, float]) -> None:
    """Azure: custom metrics in namespace mlplat on the workspace, and the program's drift metric alert (scoped
    to the workspace) watches exactly a series the pass wrote."""
    from mlplat_providers.azure.plan import alert_criteria, criteria_of, stack_plan

    data = captures.published()
    assert report["published"]["metrics"] == len(data) > 0 and report["published"]["skipped"] == []
    assert {d["namespace"] for d in data} == {"mlplat"}
    spec = context(captures.project).stack(STACK)
    plan = stack_plan(spec)
    assert {d["resource"].lower() for d in data} == {plan.workspace_id().lower()}
    by_feature = {d["dims"]["feature"]: d["max"] for d in data if d["metric"] == "feature_psi"}
    assert by_feature == pytest.approx({f: v for f, v in psi.items() if f != "__prediction__"})
    window = {d["metric"]: d["max"] for d in data if "feature" not in d["dims"] and d["dims"]["model"] == "scorer"}
    assert window["max_psi"] == pytest.approx(psi[SHIFTED]) and window["accuracy"] == pytest.approx(0.8)
    assert window["predictions"] == ROWS
    [model] = [m for m in plan.models if m.model == "scorer"]
    [drift] = [c for c in alert_criteria(spec) if c.namespace == "mlplat"]
    [wanted] = criteria_of(drift, model, spec.team)["allOf"]
    dims = {d["name"]: d["values"][0] for d in wanted["dimensions"]}
    watched = [d for d in data if d["metric"] == wanted["metricName"] and d["namespace"] == wanted["metricNamespace"]
               and d["dims"] == dims]
    assert len(watched) == 1 and watched[0]["max"] == pytest.approx(window["drift_share"])


def test_an_opted_in_aws_stack_baselines_the_endpoint_its_deploy_created(tmp_path, monkeypatch):
    """Model Monitor is opt-in; when chosen, the deploy that creates the endpoint starts the baselining job
    (moto runs none, so the schedule waits for it: no schedule ever names an endpoint before it exists)."""
    import boto3
    from moto import mock_aws

    text = ms.aws_stack_text(approvers=APPROVERS).replace("    kind: aws\n", "    kind: aws\n    modelMonitor: "
                                                          "{enabled: true}\n", 1)
    project = new_project(tmp_path / "project", {STACK: text})
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(project))
    monkeypatch.setenv("MLPLAT_USER", AUTHOR)
    monkeypatch.delenv("MLPLAT_CONTROL_PLANE_URL", raising=False)
    monkeypatch.chdir(project)
    ms.use_fake_aws(monkeypatch)
    ms.install_sagemaker_gaps()
    sent = checked_requests(monkeypatch)
    with mock_aws():
        ms.provision_cloud(context(project).stack(STACK))
        assert train(project, STACK) == 1
        release(project, 1)
        deployed = deployments(project, STACK).deploy("scorer", 1, environment=ENV, strategy="direct")
        assert deployed["sagemaker"]["action"] == "create"
        assert deployed["model_monitor"]["state"] == "baselining"
        job = boto3.client("sagemaker", region_name=ms.REGION).describe_processing_job(
            ProcessingJobName=deployed["model_monitor"]["job"])
        assert job["AppSpecification"]["ImageUri"].endswith("/sagemaker-model-monitor-analyzer")
        assert job["ProcessingInputs"][0]["S3Input"]["S3Uri"].endswith("/baseline/v1/input")
        # the next pass advances it one step: moto reports the job completed but it wrote no constraints, so
        # no job definition, schedule or alarm is made on a baseline that does not exist
        report = call(project, STACK, "monitoring.run", retrain=False)
        state = report["published"]["model_monitor"]["scorer"]
        assert state["state"] == "baseline failed" and "constraints.json" in state["reason"]
    assert sent["problems"] == []
    assert not {"CreateDataQualityJobDefinition", "CreateMonitoringSchedule", "PutMetricAlarm"} & set(sent["operations"])
