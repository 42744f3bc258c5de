"""The GCP golden path as a user types it: every step a `mlplat` subprocess against the GCP fakes.

The fake Vertex AI REST API (with GCS's JSON API) and the fake Cloud Monitoring gRPC server run on
127.0.0.1 in this process (tests/contract/gcp_fake); the subprocesses reach them through
``MLPLAT_GCP_VERTEX_ENDPOINT`` / ``MLPLAT_GCP_MONITORING_ENDPOINT`` / ``MLPLAT_GCP_STORAGE_ENDPOINT``
with anonymous credentials. The test reads the fakes' state to check what the commands did.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import run_cli
from tests.contract.gcp_fake.fixtures import gcp_fake, gcp_servers  # noqa: F401  (fixtures)
from tests.contract.gcp_support import gcp_stack_text, provision_cloud
from tests.contract.lifecycle import APPROVER, AUTHOR, new_project
from tests.e2e.test_aws_cli_moto import TRAIN

pytestmark = pytest.mark.e2e

STACK = "fraud-gcp"


def test_gcp_golden_path_through_the_cli(tmp_path, gcp_fake):  # noqa: F811
    from tests.contract.lifecycle import context

    broken = gcp_stack_text().replace('    billingAccount: "012345-6789AB-CDEF01"\n', "")
    project = new_project(tmp_path / "project", {STACK: gcp_stack_text(), "no-billing": broken})
    env = {**gcp_fake.env, "MLPLAT_PROJECT_DIR": str(project), "MLPLAT_STACK": STACK}
    for key in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"):
        env[key] = ""

    def cli(*args: str, user: str = AUTHOR) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=project, env={**env, "MLPLAT_USER": user}, timeout=300)

    provision_cloud(context(project).stack(STACK), gcp_fake)  # what `mlplat up` (Pulumi) creates: the bucket
    vertex = gcp_fake.vertex

    trained = subprocess.run([sys.executable, "-c", TRAIN], cwd=project, capture_output=True, text=True, timeout=300,
                             env={**os.environ, **env, "MLPLAT_USER": AUTHOR})
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "VERSION 1" in trained.stdout
    [(model_name, entry)] = vertex.models.items()
    assert model_name.endswith("/models/fraud-scorer") and list(entry["versions"]) == ["1"]
    version = entry["versions"]["1"]
    assert version.labels["mlplat-managed"] == "true" and version.labels["owner"].startswith("fraud-leads")
    assert json.loads(version.version_description)["run_id"]  # lineage travels with the version
    assert version.artifact_uri.startswith("gs://") and any(k[1].startswith("models/scorer/") for k in vertex.objects)

    listed = cli("models", "list", "--stack", STACK, "--json")
    assert listed.returncode == 0, listed.stderr
    assert "scorer" in json.dumps(json.loads(listed.stdout))

    staged = cli("models", "promote", "scorer", "1", "--to", "staging", "--stack", STACK)
    assert staged.returncode == 0, staged.stderr + staged.stdout
    assert "staging" in version.version_aliases
    early = cli("deploy", "scorer", "1", "--stack", STACK)  # production needs the production stage
    assert early.returncode == 6, early.stderr
    assert cli("models", "approve", "scorer", "1", "--reason", "holdout reviewed", "--stack", STACK,
               user=APPROVER).returncode == 0
    assert version.labels["mlplat-approval"] == "approved"  # Vertex has no approval status: a label mirrors it
    released = cli("models", "promote", "scorer", "1", "--to", "production", "--stack", STACK)
    assert released.returncode == 0, released.stderr + released.stdout
    assert "production" in version.version_aliases

    deployed = cli("deploy", "scorer", "1", "--stack", STACK, "--json")
    assert deployed.returncode == 0, deployed.stderr
    applied = json.loads(deployed.stdout)["vertex"]
    [endpoint] = vertex.endpoints.values()
    [served] = endpoint.deployed_models
    assert applied["endpoint"] == endpoint.name and dict(endpoint.traffic_split) == {served.id: 100}
    assert served.model_version_id == "1" and endpoint.labels["mlplat-managed"] == "true"

    shown = cli("deployments", "show", "scorer", "--stack", STACK, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["stable_version"] == 1

    shadow = cli("deploy", "scorer", "1", "--stack", STACK, "--strategy", "shadow", "--percent", "10")
    assert shadow.returncode == 7 and "no traffic mirroring" in shadow.stderr
    bad = cli("deploy", "scorer", "1", "--stack", STACK, "--strategy", "canary", "--steps", "10,50")
    assert bad.returncode == 1 and "last canary step must be 100" in bad.stderr

    vertex.deny("aiplatform.endpoints.update")
    denied = cli("deploy", "scorer", "1", "--stack", STACK)
    assert denied.returncode == 6 and "aiplatform.endpoints.update" in denied.stderr, denied.stderr
    vertex.allow("aiplatform.endpoints.update")
    assert dict(endpoint.traffic_split) == {served.id: 100}
    after = cli("deployments", "show", "scorer", "--stack", STACK, "--json")
    assert json.loads(after.stdout)["stable_version"] == 1

    nothing = cli("rollback", "scorer", "--stack", STACK)
    assert nothing.returncode == 5 and "no earlier version" in nothing.stderr  # Conflict, nothing changed

    missing = cli("deploy", "scorer", "1", "--stack", "no-billing")
    assert missing.returncode == 3 and "billingAccount" in missing.stderr

    audit = cli("audit", "verify", "--stack", STACK)
    assert audit.returncode == 0, audit.stderr + audit.stdout
