"""The AWS golden path as a user types it: every step a `mlplat` subprocess against moto's server.

moto's server runs on a free port on 127.0.0.1 in this process (ThreadedMotoServer, with
the SageMaker gaps of tests/contract/moto_support.py filled in); the subprocesses reach
it through ``AWS_ENDPOINT_URL`` with fake credentials. The test reads SageMaker back
with boto3 to check what the commands did.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import run_cli
from tests.contract import moto_support as ms
from tests.contract.lifecycle import APPROVER, AUTHOR, new_project

pytestmark = pytest.mark.e2e

STACK = "fraud-aws"
TRAIN = textwrap.dedent("""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    import mlplat

    train = pd.read_parquet("data/train.parquet")
    X, y = train.drop(columns=["label"]), train["label"]
    with mlplat.start_run(experiment="scorer", datasets={"train": "data/train.parquet"}) as run:
        model = LogisticRegression(max_iter=500).fit(X, y)
        print("VERSION", run.log_model(model, name="scorer", input_example=X.head(3),
                                       holdout={"path": "data/holdout.parquet", "label": "label"}))
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def moto_server(monkeypatch):
    from moto.server import ThreadedMotoServer

    ms.install_sagemaker_gaps()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    ms.use_fake_aws(monkeypatch, url)
    try:
        yield url
    finally:
        server.stop()


def test_aws_golden_path_through_the_cli(tmp_path, moto_server):
    import boto3

    project = new_project(tmp_path / "project", {STACK: ms.aws_stack_text(),
                                                 "no-account": ms.aws_stack_text(account=None)})
    env = {**ms.aws_env(moto_server), "MLPLAT_PROJECT_DIR": str(project), "MLPLAT_STACK": STACK}

    def cli(*args: str, user: str = AUTHOR) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=project, env={**env, "MLPLAT_USER": user}, timeout=300)

    from tests.contract.lifecycle import context

    ms.provision_cloud(context(project).stack(STACK))  # what `mlplat up` (Pulumi) creates: bucket, alarms

    trained = subprocess.run([sys.executable, "-c", TRAIN], cwd=project, capture_output=True, text=True, timeout=300,
                             env={**os.environ, **env, "MLPLAT_USER": AUTHOR})
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "VERSION 1" in trained.stdout

    listed = cli("models", "list", "--stack", STACK, "--json")
    assert listed.returncode == 0, listed.stderr
    assert "scorer" in json.dumps(json.loads(listed.stdout))

    staged = cli("models", "promote", "scorer", "1", "--to", "staging", "--stack", STACK)
    assert staged.returncode == 0, staged.stderr + staged.stdout
    early = cli("deploy", "scorer", "1", "--stack", STACK)  # production needs the production stage
    assert early.returncode == 6, early.stderr
    assert cli("models", "approve", "scorer", "1", "--reason", "holdout reviewed", "--stack", STACK,
               user=APPROVER).returncode == 0
    sm = boto3.client("sagemaker", region_name=ms.REGION)
    arn = f"arn:aws:sagemaker:{ms.REGION}:{ms.ACCOUNT}:model-package/fraud-scorer/1"
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Approved"
    released = cli("models", "promote", "scorer", "1", "--to", "production", "--stack", STACK)
    assert released.returncode == 0, released.stderr + released.stdout

    deployed = cli("deploy", "scorer", "1", "--stack", STACK, "--json")
    assert deployed.returncode == 0, deployed.stderr
    assert json.loads(deployed.stdout)["sagemaker"]["action"] == "create"
    endpoint = sm.describe_endpoint(EndpointName="mlplat-fraud-production-scorer")
    assert [(v["VariantName"], v["CurrentWeight"]) for v in endpoint["ProductionVariants"]] == [("primary", 100.0)]

    shown = cli("deployments", "show", "scorer", "--stack", STACK, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["stable_version"] == 1

    bad = cli("deploy", "scorer", "1", "--stack", STACK, "--strategy", "canary", "--steps", "10,50")
    assert bad.returncode == 1 and "last canary step must be 100" in bad.stderr
    wide = cli("deploy", "scorer", "1", "--stack", STACK, "--strategy", "shadow", "--percent", "60")
    assert wide.returncode == 2 and "60" in wide.stderr
    nothing = cli("rollback", "scorer", "--stack", STACK)
    assert nothing.returncode == 5 and "no earlier version" in nothing.stderr  # Conflict, nothing changed

    missing = cli("deploy", "scorer", "1", "--stack", "no-account")
    assert missing.returncode == 3 and "accountId" in missing.stderr

    cost = cli("cost", "report", "--stack", STACK, "--period", "24h", "--json")
    assert cost.returncode == 0, cost.stderr
    report = json.loads(cost.stdout)
    assert report["rows"][0]["team"] == "fraud" and report["total_usd"] > 0
    billed = cli("cost", "report", "--stack", STACK, "--period", "24h", "--billed", "--json")
    assert billed.returncode == 0, billed.stderr
    [bill] = json.loads(billed.stdout)["billed"]
    assert bill["source"] == "aws-cost-explorer" and isinstance(bill["by_team"], dict)

    # monitoring runs on an AWS stack: no capture yet, so no window; the team's cost goes to CloudWatch
    monitored = cli("monitor", "run", "--stack", STACK, "--no-retrain", "--json")
    assert monitored.returncode == 0, monitored.stderr
    passed = json.loads(monitored.stdout)
    assert passed["windows"] == [] and passed["published"]["namespace"] == "mlplat/Models"
    names = {m["MetricName"] for m in boto3.client("cloudwatch", region_name=ms.REGION).list_metrics(
        Namespace="mlplat/Models")["Metrics"]}
    assert {"CostUSD", "BilledPredictions"} <= names
    status = cli("monitor", "status", "--stack", STACK, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["windows"] == [], status.stderr

    audit = cli("audit", "verify", "--stack", STACK)
    assert audit.returncode == 0, audit.stderr + audit.stdout
