"""The Azure golden path as a user types it: every step a `mlplat` subprocess against the fake ARM.

The fake ARM / Azure ML REST API (with Blob Storage) runs on 127.0.0.1 in this process
(tests/contract/azure_fake); the subprocesses reach it through ``MLPLAT_AZURE_ARM_ENDPOINT`` with a fixed
fake token. The test reads the fake's state to check what the commands did.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import run_cli
from tests.contract.azure_fake.fixtures import azure_fake, azure_server  # noqa: F401  (fixtures)
from tests.contract.azure_support import azure_stack_text, provision_cloud
from tests.contract.lifecycle import APPROVER, AUTHOR, new_project
from tests.e2e.test_aws_cli_moto import TRAIN

pytestmark = pytest.mark.e2e

STACK = "fraud-azure"
A_EP_WRITE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/write"


def test_azure_golden_path_through_the_cli(tmp_path, azure_fake):  # noqa: F811
    from tests.contract.lifecycle import context

    broken = azure_stack_text().replace("    resourceGroup: rg-fraud-production\n", "")
    project = new_project(tmp_path / "project", {STACK: azure_stack_text(), "no-group": broken})
    env = {**azure_fake.env, "MLPLAT_PROJECT_DIR": str(project), "MLPLAT_STACK": STACK}
    for key in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        env[key] = ""

    def cli(*args: str, user: str = AUTHOR) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=project, env={**env, "MLPLAT_USER": user}, timeout=300)

    provision_cloud(context(project).stack(STACK))
    arm = azure_fake.arm

    trained = subprocess.run([sys.executable, "-c", TRAIN], cwd=project, capture_output=True, text=True, timeout=300,
                             env={**os.environ, **env, "MLPLAT_USER": AUTHOR})
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "VERSION 1" in trained.stdout
    [(key, version)] = arm.versions.items()
    assert key[1:] == ("fraud-scorer", "1")
    props = version["properties"]
    assert props["tags"]["mlplat-managed"] == "true" and props["tags"]["owner"].startswith("fraud-leads")
    assert props["properties"]["mlplat.run_id"]  # lineage travels with the version, immutably
    assert any(k[2].startswith("models/scorer/") for k in arm.blobs)

    listed = cli("models", "list", "--stack", STACK, "--json")
    assert listed.returncode == 0, listed.stderr
    assert "scorer" in json.dumps(json.loads(listed.stdout))

    staged = cli("models", "promote", "scorer", "1", "--to", "staging", "--stack", STACK)
    assert staged.returncode == 0, staged.stderr + staged.stdout
    assert arm.versions[key]["properties"]["stage"] == "Staging"
    early = cli("deploy", "scorer", "1", "--stack", STACK)  # production needs the production stage
    assert early.returncode == 6, early.stderr
    assert cli("models", "approve", "scorer", "1", "--reason", "holdout reviewed", "--stack", STACK,
               user=APPROVER).returncode == 0
    assert arm.versions[key]["properties"]["tags"]["mlplat-approval"] == "approved"
    released = cli("models", "promote", "scorer", "1", "--to", "production", "--stack", STACK)
    assert released.returncode == 0, released.stderr + released.stdout
    assert arm.versions[key]["properties"]["stage"] == "Production"

    deployed = cli("deploy", "scorer", "1", "--stack", STACK, "--json")
    assert deployed.returncode == 0, deployed.stderr
    applied = json.loads(deployed.stdout)["azure"]
    [endpoint] = arm.endpoints.values()
    assert applied["endpoint"] == endpoint["name"] and endpoint["properties"]["traffic"] == {"scorer-v1": 100}
    assert endpoint["tags"]["mlplat-managed"] == "true" and [k[2] for k in arm.deployments] == ["scorer-v1"]

    shown = cli("deployments", "show", "scorer", "--stack", STACK, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["stable_version"] == 1

    # the data collector's files of the deployment, then one monitoring pass over them
    import time

    import pandas as pd

    from tests.contract.azure_fake.monitoring_support import write_collected

    holdout = pd.read_parquet(project / "data" / "holdout.parquet").head(120).drop(columns=["label"])
    write_collected(azure_fake, next(iter(arm.workspaces.values())), endpoint["name"], "scorer-v1",
                    [{"inference_id": f"req-{i}", "features": row, "predicted": 1}
                     for i, row in enumerate(holdout.to_dict(orient="records"))], time.time() - 60)
    monitored = cli("monitor", "run", "--stack", STACK, "--no-retrain", "--json")
    assert monitored.returncode == 0, monitored.stderr
    [window] = json.loads(monitored.stdout)["windows"]
    assert (window["model"], window["version"], window["drift"]["rows"]) == ("scorer", 1, 120)
    published = arm.extra.get("custom_metrics", [])
    assert json.loads(monitored.stdout)["published"]["metrics"] == len(published)
    assert [d["dims"] for d in published if d["metric"] == "drift_share"] == [{"team": "fraud", "model": "scorer"}]

    bad = cli("deploy", "scorer", "1", "--stack", STACK, "--strategy", "canary", "--steps", "10,50")
    assert bad.returncode == 1 and "last canary step must be 100" in bad.stderr

    arm.deny(A_EP_WRITE)
    denied = cli("deploy", "scorer", "1", "--stack", STACK)
    assert denied.returncode == 6 and A_EP_WRITE in denied.stderr, denied.stderr
    arm.allow(A_EP_WRITE)
    assert next(iter(arm.endpoints.values()))["properties"]["traffic"] == {"scorer-v1": 100}
    after = cli("deployments", "show", "scorer", "--stack", STACK, "--json")
    assert json.loads(after.stdout)["stable_version"] == 1

    nothing = cli("rollback", "scorer", "--stack", STACK)
    assert nothing.returncode == 5 and "no earlier version" in nothing.stderr  # Conflict, nothing changed

    missing = cli("deploy", "scorer", "1", "--stack", "no-group")
    assert missing.returncode == 3 and "resourceGroup" in missing.stderr

    audit = cli("audit", "verify", "--stack", STACK)
    assert audit.returncode == 0, audit.stderr + audit.stdout
