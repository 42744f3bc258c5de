"""A team on one `mlplat server`: two client project folders, two users, one ledger in PostgreSQL.

The server's project is provisioned (``mlplat up``: governance applied), its ledger moved into a
fresh database of the session's PostgreSQL (``mlplat db export``/``import``), and it runs
``mlplat server --tracking-port N --database <postgres url>`` (runs and model files in the tracking
server beside it). Client A (the data scientist) and client B (the
risk officer) are separate folders, each with its own stack file naming
``controlPlane: {url, tracking}`` and a copy of the example data; they share nothing but those
URLs, and every command runs as its own process in its own folder. The gate runs on the server,
on the server project's copy of the held-out set (the version names it relative to the project).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, run_cli, write_project
from tests.pg import fresh_database
from tests.server_support import free_port, running_server
from tests.timing import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

STACK = "dev"
AUTHOR = "head-of-ds@example.com"  # client A: an approver too, yet never of their own versions
APPROVER = "risk-office@example.com"  # client B: an approver of the dev stack's critical models
OPERATOR = "platform@example.com"  # runs the server
EXAMPLE = Path("examples") / "sklearn_tabular"

# A's training script: the example's data, a tracked run, a registered credit-risk version whose
# held-out set is named relative to the project (each machine resolves it in its own folder).
TRAIN = textwrap.dedent("""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    import mlplat

    data = "examples/sklearn_tabular/data"
    train = pd.read_parquet(f"{data}/train.parquet")
    features = train.drop(columns=["label"])
    with mlplat.start_run(experiment="credit-risk", datasets={"train": f"{data}/train.parquet"}) as run:
        model = LogisticRegression(max_iter=500).fit(features, train["label"])
        version = run.log_model(model, name="credit-risk", input_example=features.head(3),
                                holdout={"path": f"{data}/holdout.parquet", "label": "label"})
        print(f"registered credit-risk version {version}")
""")


def stack_text(**control_plane: str) -> str:
    text = (REPO / "stacks" / f"Pulumi.{STACK}.yaml").read_text() + "  mlplat:controlPlane:\n"
    return text + "".join(f"    {key}: {value}\n" for key, value in control_plane.items())


def folder_env(folder: Path, user: str) -> dict[str, str]:
    """The environment of a user working in ``folder``: nothing of the test's own mlplat settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLAT_") or k == "MLPLAT_CONTAINER_ENGINE"}
    return env | {"MLPLAT_PROJECT_DIR": str(folder), "MLPLAT_USER": user}


def mlplat(folder: Path, *args: str, user: str) -> subprocess.CompletedProcess:
    result = subprocess.run([str(Path(sys.executable).parent / "mlplat"), *args, "--stack", STACK], cwd=folder,
                            env=folder_env(folder, user), capture_output=True, text=True, timeout=600)
    assert "never applied" not in result.stderr, result.stderr  # the governance in force is the server's ledger's
    return result


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def as_json(folder: Path, *args: str, user: str):
    return json.loads(ok(mlplat(folder, *args, "--json", user=user)).stdout)


def example_data(root: Path) -> Path:
    """The example's generated data set (the example's own generator, its default seed), in ``root``."""
    (root / EXAMPLE).mkdir(parents=True)
    shutil.copy(REPO / EXAMPLE / "train.py", root / EXAMPLE / "train.py")
    made = subprocess.run([sys.executable, "-c", "import runpy; runpy.run_path('examples/sklearn_tabular/train.py')"
                           "['make_data'](7)"], cwd=root, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    return root / EXAMPLE


def tracking_up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_clients_share_one_registry_approvals_audit_and_deployments(postgres, tmp_path):
    import psycopg

    database = fresh_database(postgres)
    example = example_data(tmp_path / "example")
    tracking = f"http://127.0.0.1:{free_port()}"

    server_project = write_project(tmp_path / "server", {STACK: stack_text(tracking=tracking)})
    shutil.copytree(example, server_project / EXAMPLE)  # the gate's held-out set, where the gate runs
    operator = folder_env(server_project, OPERATOR)
    ok(run_cli("up", "--stack", STACK, "--yes", cwd=server_project, env=operator))  # governance applied, audited
    ledger = tmp_path / "ledger.json"  # the provisioned ledger moves into PostgreSQL, audit chain and all
    ok(run_cli("db", "export", str(ledger), "--stack", STACK, cwd=server_project, env=operator))
    ok(run_cli("db", "import", str(ledger), "--stack", STACK, "--database", database, cwd=server_project, env=operator))
    with running_server(server_project, STACK, database_url=database,
                        args=("--tracking-port", tracking.rsplit(":", 1)[1]),
                        env={"MLPLAT_USER": OPERATOR, "MLPLAT_CONTAINER_ENGINE": "none"}) as server:
        wait_until(lambda: tracking_up(tracking), timeout=120, message=server.output)
        a, b = (write_project(tmp_path / name, {STACK: stack_text(url=server.url, tracking=tracking)})
                for name in ("client-a", "client-b"))
        for client in (a, b):
            shutil.copytree(example, client / EXAMPLE)

        # A trains and registers: a script run in A's folder, as A
        trained = subprocess.run([sys.executable, "-c", TRAIN], cwd=a, env=folder_env(a, AUTHOR), capture_output=True,
                                 text=True, timeout=600)
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert "registered credit-risk version 1" in trained.stdout

        # B sees the same registry
        listed = as_json(a, "models", "list", user=AUTHOR)
        assert as_json(b, "models", "list", user=APPROVER) == listed
        assert [(v["model"], v["version"], v["author"], v["stage"], v["risk_tier"]) for v in listed["versions"]] == [
            ("credit-risk", 1, AUTHOR, "dev", "critical")]

        # A promotes to staging (the gate runs on the server); production waits for an approver
        staged = ok(mlplat(a, "models", "promote", "credit-risk", "1", "--to", "staging", user=AUTHOR))
        assert "credit-risk version 1 is now in staging" in staged.stdout, staged.stdout
        refused = mlplat(a, "models", "promote", "credit-risk", "1", "--to", "production", user=AUTHOR)
        assert refused.returncode == 6 and "needs 1 approval" in refused.stderr, refused.stderr
        own = mlplat(a, "models", "approve", "credit-risk", "1", "--reason", "mine", user=AUTHOR)
        assert own.returncode == 6 and "four-eyes" in own.stderr, own.stderr
        assert as_json(b, "approvals", "list", user=APPROVER) == as_json(a, "approvals", "list", user=AUTHOR)

        # B approves, as another user in another folder; A promotes to production
        ok(mlplat(b, "models", "approve", "credit-risk", "1", "--reason", "validated on the holdout", user=APPROVER))
        ok(mlplat(a, "models", "promote", "credit-risk", "1", "--to", "production", user=AUTHOR))
        shown = as_json(b, "models", "show", "credit-risk", "1", user=APPROVER)
        assert shown["stage"] == "production" and shown["production_version"] == 1
        assert [(x["approver"], x["decision"]) for x in shown["approvals"]["decisions"]] == [(APPROVER, "approved")]
        assert as_json(a, "models", "show", "credit-risk", "1", user=AUTHOR) == shown

        # a version promoted by A is deployable by B; A sees B's deployment
        deployed = as_json(b, "deploy", "credit-risk", "1", user=APPROVER)
        assert [(r["variant"], r["version"], r["weight"]) for r in deployed["routes"]] == [("primary", 1, 100)]
        seen = as_json(a, "deployments", "list", user=AUTHOR)
        assert seen == as_json(b, "deployments", "list", user=APPROVER)
        assert [(d["model"], d["stable_version"], d["updated_by"]) for d in seen] == [("credit-risk", 1, APPROVER)]

        # one audit log, read the same from both folders, and it verifies
        log = as_json(a, "audit", "log", "--limit", "1000", user=AUTHOR)
        assert as_json(b, "audit", "log", "--limit", "1000", user=APPROVER) == log
        actors = {(e["action"], e["actor"]) for e in log}
        for entry in (("governance.applied", OPERATOR), ("model.registered", AUTHOR), ("approval.approved", APPROVER), ("stage.changed", AUTHOR),
                      ("deployment.created", APPROVER)):
            assert entry in actors, entry
        for client, user in ((a, AUTHOR), (b, APPROVER)):
            verified = as_json(client, "audit", "verify", user=user)
            assert verified["ok"] and verified["entries"] == len(log), verified

    # the ledger is the server's PostgreSQL database; the clients keep no state
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT model, version, author FROM model_versions").fetchall() == [
            ("credit-risk", 1, AUTHOR)]
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == len(log)
    assert not (a / ".mlplat").exists() and not (b / ".mlplat").exists()
