"""Registering a model from a client machine: the run goes to the stack's shared tracking server, the
version's files to its artifact store, and `mlplat server` seals the manifest and records the version.

One set-up per module: a server project (``up``, then ``mlplat server --tracking-port``) and two
separate client project folders whose stack files name ``controlPlane: {url, tracking}`` and hold no
state of their own. A training script run with the venv's python in the first client folder logs
``scorer`` version 1 as ``client-ds@example.com``.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.conftest import REPO, run_cli, write_project
from tests.server_support import free_port, running_server
from tests.timing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("api-registration")]

CLIENT_USER = "client-ds@example.com"
SERVER_USER = "platform@example.com"

TRAIN = textwrap.dedent("""
    import sys
    from pathlib import Path
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    import mlplat

    name = sys.argv[1]
    data = Path("data"); data.mkdir(exist_ok=True)
    X, y = make_classification(n_samples=600, n_features=4, n_informative=3, n_redundant=0, random_state=3)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(4)]); frame["label"] = y
    frame.iloc[:450].to_parquet(data / "train.parquet", index=False)
    frame.iloc[450:].to_parquet(data / "holdout.parquet", index=False)
    train = pd.read_parquet(data / "train.parquet")
    with mlplat.start_run(experiment=name, datasets={"train": "data/train.parquet"}) as run:
        features = train.drop(columns=["label"])
        model = LogisticRegression(max_iter=300).fit(features, train["label"])
        print(f"RUN {run.run_id}", flush=True)
        version = run.log_model(model, name=name, input_example=features.head(3),
                                holdout={"path": "data/holdout.parquet", "label": "label"})
        print(f"VERSION {version}")
""")


def stack_text(**control_plane: str) -> str:
    text = (REPO / "stacks" / "Pulumi.dev.yaml").read_text() + "  mlplat:controlPlane:\n"
    return text + "".join(f"    {key}: {value}\n" for key, value in control_plane.items())


def train(folder: Path, name: str = "scorer", user: str = CLIENT_USER) -> subprocess.CompletedProcess:
    """The training script, run as a user would in ``folder`` (its own process, the venv's python)."""
    env = {**os.environ, "MLPLAT_PROJECT_DIR": str(folder), "MLPLAT_USER": user}
    for key in ("MLPLAT_STACK", "MLPLAT_CONTROL_PLANE_URL"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-c", TRAIN, name], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)


def cli_at(folder: Path, *args: str, user: str = CLIENT_USER) -> subprocess.CompletedProcess:
    env = {"MLPLAT_PROJECT_DIR": str(folder), "MLPLAT_USER": user, "MLPLAT_CONTROL_PLANE_URL": ""}
    return run_cli(*args, cwd=folder, env=env)


def ledger(project: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(project / ".mlplat" / "dev" / "platform.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def tracking_up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("registration")
    tracking = f"http://127.0.0.1:{free_port()}"
    server_project = write_project(root / "server", {"dev": stack_text(tracking=tracking)})
    up = cli_at(server_project, "up", "--stack", "dev", "--yes", user=SERVER_USER)
    assert up.returncode == 0, up.stderr
    port = tracking.rsplit(":", 1)[1]
    with running_server(server_project, "dev", args=("--tracking-port", port)) as server:
        wait_until(lambda: tracking_up(tracking), timeout=120, message=server.output)
        clients = [write_project(root / name, {"dev": stack_text(url=server.url, tracking=tracking)})
                   for name in ("client", "client-2")]
        trained = train(clients[0])
        assert trained.returncode == 0, trained.stderr[-3000:]
        yield SimpleNamespace(server=server, project=server_project, tracking=tracking, client=clients[0],
                              other=clients[1], run_id=trained.stdout.split("RUN ")[1].split()[0],
                              version=int(trained.stdout.split("VERSION ")[1].split()[0]), output=trained)
    # `mlplat server` stops the tracking server it started, with every process of it
    wait_until(lambda: not tracking_up(tracking), timeout=60, message="the tracking server outlived mlplat server")


def test_a_version_logged_on_a_client_is_in_the_servers_ledger_sealed_and_audited(site):
    assert site.version == 1
    assert "monitoring reference sample of 450 rows" in site.output.stderr  # the SDK's notes, as embedded
    for folder in (site.project, site.other):  # the ledger itself, and another client through the server
        listed = cli_at(folder, "models", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        [version] = json.loads(listed.stdout)["versions"]
        assert (version["model"], version["version"], version["author"], version["stage"]) == (
            "scorer", 1, CLIENT_USER, "dev")
    conn = ledger(site.project)
    row = conn.execute("SELECT * FROM model_versions WHERE model='scorer' AND version=1").fetchone()
    assert row["run_id"] == site.run_id and row["source"].startswith("mlflow-artifacts:")
    assert json.loads(row["lineage"])["author"] == CLIENT_USER
    assert {"MLmodel", "model.skops", "reference.parquet", "profile.json"} <= set(json.loads(row["manifest"])["files"])
    [entry] = conn.execute("SELECT actor, model, version FROM audit_log WHERE action='model.registered'").fetchall()
    assert tuple(entry) == (CLIENT_USER, "scorer", 1)
    for folder in (site.project, site.client):
        verified = cli_at(folder, "audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
    # the clients keep no state: not a ledger, not a run, not a model file
    assert not (site.client / ".mlplat").exists() and not (site.other / ".mlplat").exists()


def test_runs_of_every_machine_land_in_the_shared_tracking_store(site):
    for folder in (site.project, site.other):
        runs = cli_at(folder, "runs", "list", "--json")
        assert runs.returncode == 0, runs.stderr
        assert [(r["run_id"], r["user"]) for r in json.loads(runs.stdout)] == [(site.run_id, CLIENT_USER)]
    shown = cli_at(site.other, "runs", "show", site.run_id[:10], "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["tags"]["mlplat.registered.scorer"] == "1"
    assert doc["lineage"]["run_id"] == site.run_id  # the run's own files, read back over HTTP


def _stored_file(site, name: str) -> Path:
    """The file ``name`` of scorer v1 in the tracking server's artifact store (on the server's machine)."""
    source = ledger(site.project).execute("SELECT source FROM model_versions WHERE model='scorer'").fetchone()[0]
    artifacts = site.project / ".mlplat" / "dev" / "tracking-server" / "artifacts"
    path = artifacts / source.split("mlflow-artifacts:/", 1)[1] / name
    assert path.is_file(), path
    return path


def test_the_servers_seal_verifies_and_a_changed_stored_file_is_refused(site, monkeypatch):
    from rich.console import Console

    from mlplat.context import Context
    from mlplat.errors import IntegrityError
    from mlplat.services import registry as reg

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.delenv("MLPLAT_CONTROL_PLANE_URL", raising=False)
    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - closed with the process
    on_server = Context(project_dir=site.project, console=quiet, err=quiet, _user=SERVER_USER, ledger_owner=True)
    on_client = Context(project_dir=site.other, console=quiet, err=quiet, _user=CLIENT_USER)
    sides = ((on_server.stack("dev"), on_server), (on_client.stack("dev"), on_client))
    folders = [reg.verified_model_dir(spec, ctx, "scorer", 1) for spec, ctx in sides]
    assert all((folder / "model.skops").is_file() for folder in folders)
    assert folders[0].is_relative_to(site.project / ".mlplat" / "dev" / "cache")

    target = _stored_file(site, "model.skops")
    original = target.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    try:
        target.write_bytes(bytes(flipped))
        for spec, ctx in sides:
            with pytest.raises(IntegrityError, match="'model.skops'.*modified"):
                reg.verified_model_dir(spec, ctx, "scorer", 1)
    finally:
        target.write_bytes(original)
    assert reg.verified_model_dir(*sides[0], "scorer", 1) == folders[0]


def test_the_server_refuses_a_registration_whose_files_are_not_the_logged_ones(site):
    from mlplat.context import Context
    from mlplat.errors import IntegrityError, NotFound

    client = Context(project_dir=site.other, _user="mallory@example.com")
    spec = client.stack("dev")
    plane = site.server.plane(spec, client)
    conn = ledger(site.project)
    row = conn.execute("SELECT * FROM model_versions WHERE model='scorer' AND version=1").fetchone()
    request = dict(name="scorer", version=7, run_id=row["run_id"], source=row["source"], framework="sklearn",
                   artifact_digest="0" * 64, lineage=json.loads(row["lineage"]))
    before = conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    with pytest.raises(IntegrityError, match="not the files that were logged"):
        plane.call("models.register", **request)
    with pytest.raises(NotFound, match="not found in the tracking server"):
        plane.call("models.register", **(request | {"run_id": "0" * 32}))
    forged = json.loads(row["lineage"])
    forged["datasets"]["train"]["sha256"] = "f" * 64
    with pytest.raises(IntegrityError, match="dataset 'train'"):
        plane.call("models.register", **(request | {"artifact_digest": row["artifact_digest"], "lineage": forged}))
    plane.close()
    assert conn.execute("SELECT count(*) FROM model_versions").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == before


def test_log_model_with_the_control_plane_down_names_it_and_registers_nothing(site, tmp_path):
    from mlflow.tracking import MlflowClient

    dead = f"http://127.0.0.1:{free_port()}"
    offline = write_project(tmp_path / "offline", {"dev": stack_text(url=dead, tracking=site.tracking)})
    trained = train(offline, name="offline-scorer")
    assert trained.returncode != 0
    assert "ExternalError" in trained.stderr and f"the control plane at {dead} is unreachable" in trained.stderr
    assert ledger(site.project).execute("SELECT count(*) FROM model_versions WHERE model='offline-scorer'"
                                        ).fetchone()[0] == 0
    client = MlflowClient(tracking_uri=site.tracking, registry_uri=site.tracking)
    assert client.search_model_versions("name='offline-scorer'") == []  # no file was stored either


def test_up_status_and_destroy_on_a_client(site, tmp_path):
    up = cli_at(site.other, "up", "--stack", "dev", "--yes")
    assert up.returncode == 0, up.stderr
    assert f"served by the control plane at {site.server.url} (ready)" in up.stdout
    assert "Nothing to provision on this machine" in up.stdout
    status = cli_at(site.other, "status", "--stack", "dev", "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["mode"] == "server" and doc["control_plane"] == site.server.url
    assert [(r["resource"], r["exists"]) for r in doc["resources"]] == [("control plane", True),
                                                                      ("tracking server", True)]
    embedded = cli_at(site.project, "status", "--stack", "dev", "--json")
    assert embedded.returncode == 0 and json.loads(embedded.stdout)["mode"] == "embedded"
    destroy = cli_at(site.other, "destroy", "--stack", "dev", "--yes")
    assert destroy.returncode == 5, destroy.stderr
    assert "where `mlplat server --stack dev` runs" in destroy.stderr
    assert (site.project / ".mlplat" / "dev" / "platform.db").is_file()

    dead = f"http://127.0.0.1:{free_port()}"
    lost = write_project(tmp_path / "lost", {"dev": stack_text(url=dead, tracking=site.tracking)})
    refused = cli_at(lost, "up", "--stack", "dev", "--yes")
    assert refused.returncode == 9, refused.stderr
    assert dead in refused.stderr and "nothing was written" in refused.stderr
    assert cli_at(lost, "status", "--stack", "dev").returncode == 1
    assert not (lost / ".mlplat").exists() and not (site.other / ".mlplat").exists()
