"""`mlplat up` and tracked runs, as a user runs them: subprocesses in a throwaway project,
results read back through MLflow's own client."""
from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from mlplat.errors import Conflict
from mlplat.locking import stack_lock

pytestmark = pytest.mark.integration

TRAIN_SCRIPT = '''
import sys
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
import mlplat

rng = np.random.default_rng(0)
df = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
df["y"] = (df["a"] + df["b"] > 0).astype(int)
df.to_parquet("train.parquet", index=False)
with mlplat.start_run(experiment="exp", name="lr", datasets={"train": "train.parquet", "frame": df},
                      params={"note": "first"}) as run:
    model = LogisticRegression(C=0.5, max_iter=200).fit(df[["a", "b", "c"]], df["y"])
    for step in range(100):
        run.log_metric("loss", 1.0 / (step + 1))
    if sys.argv[1:] == ["crash"]:
        raise RuntimeError("diverged at step 100")
    print("RUN", run.run_id)
'''


def git(project: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@example.com", "PATH": "/usr/bin:/bin"}).stdout.strip()


def client(project: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{project / '.mlplat' / 'dev' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri)


def train(project: Path, *args: str) -> subprocess.CompletedProcess:
    (project / "train.py").write_text(TRAIN_SCRIPT)
    return subprocess.run([sys.executable, "train.py", *args], cwd=project, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "MLPLAT_PROJECT_DIR": str(project)})


def test_up_plans_applies_and_is_idempotent(project, cli):
    first = cli("up", "--stack", "dev", "--yes")
    assert first.returncode == 0, first.stderr
    assert "+ create" in first.stdout and "6 to create" in first.stdout
    state = project / ".mlplat" / "dev"
    assert (state / "mlflow.db").is_file() and (state / "platform.db").is_file()
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert oct((state / "keys" / "platform.key").stat().st_mode & 0o777) == "0o600"
    marker = json.loads((state / ".mlplat-state.json").read_text())  # up proves it made the directory
    assert marker["stack"] == "dev" and marker["createdRoot"] is True and "platform.db" in marker["entries"]
    second = cli("up", "--stack", "dev", "--yes")
    assert second.returncode == 0 and "No changes" in second.stdout and "+ create" not in second.stdout
    assert cli("status", "--stack", "dev").returncode == 0
    # the platform DB is in WAL mode with its migrations recorded
    import sqlite3

    conn = sqlite3.connect(state / "platform.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert "0001_core" in {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}


def test_changed_stack_file_plans_an_update(up_project, cli):
    path = up_project / "stacks" / "Pulumi.dev.yaml"
    path.write_text(path.read_text().replace("monthlyUsd: 200", "monthlyUsd: 300"))
    preview = cli("preview", "--stack", "dev")
    assert preview.returncode == 0 and "~ update" in preview.stdout and "budget" in preview.stdout
    assert "in sync" not in cli("status", "--stack", "dev").stdout
    assert "1 updated" in cli("up", "--stack", "dev", "--yes").stdout


def test_up_without_confirmation_on_a_pipe_changes_nothing(project, cli):
    result = cli("up", "--stack", "dev")
    assert result.returncode == 130 and "--yes" in result.stderr
    assert not (project / ".mlplat" / "dev").exists()


def test_second_up_refuses_while_the_lock_is_held_then_waits(project, cli):
    lock = project / ".mlplat" / ".dev.lock"
    with stack_lock(lock, operation="up dev"):
        refused = cli("up", "--stack", "dev", "--yes")
    assert refused.returncode == 5 and "holds the stack lock" in refused.stderr and "up dev" in refused.stderr
    assert not (project / ".mlplat" / "dev" / "platform.db").exists()

    release = threading.Event()

    def hold():
        with stack_lock(lock, operation="up dev"):
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.3)
    threading.Timer(1.0, release.set).start()
    waited = cli("up", "--stack", "dev", "--yes", "--lock-wait", "30")
    holder.join()
    assert waited.returncode == 0, waited.stderr


def test_lock_is_released_when_the_holder_dies(project):
    lock = project / ".mlplat" / ".dev.lock"
    code = f"from mlplat.locking import stack_lock\nimport os\nwith stack_lock(__import__('pathlib').Path({str(lock)!r}), operation='up'):\n    os._exit(9)\n"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    with stack_lock(lock, operation="again"):  # no stale lock, no manual cancel
        pass
    with stack_lock(lock, operation="x"):
        with pytest.raises(Conflict):
            with stack_lock(lock, operation="y"):
                pass


def test_up_resumes_after_a_crash_mid_apply(project, monkeypatch):
    from mlplat.context import Context
    from mlplat.stack import load_stack
    from mlplat_providers.local.provisioner import LocalProvisioner

    spec = load_stack("dev", project)
    boom = LocalProvisioner(spec, Context())
    monkeypatch.setattr(boom, "_create_key", lambda: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        boom.apply(boom.plan())
    again = LocalProvisioner(spec, Context())
    plan = again.plan()
    pending = {c.resource.rsplit(":", 1)[1] for c in plan.changes if c.action == "create"}
    assert "SigningKey" in pending and "TrackingStore" not in pending
    again.apply(plan)
    assert not LocalProvisioner(spec, Context()).plan().has_changes


def test_destroy_asks_and_removes(up_project, cli):
    assert cli("destroy", "--stack", "dev").returncode == 130
    assert (up_project / ".mlplat" / "dev").exists()
    result = cli("destroy", "--stack", "dev", "--yes")
    assert result.returncode == 0 and not (up_project / ".mlplat" / "dev").exists()
    assert (up_project / "stacks" / "Pulumi.dev.yaml").is_file()  # the project around it stays
    assert cli("status", "--stack", "dev").returncode == 1
    assert "Nothing to destroy" in cli("destroy", "--stack", "dev", "--yes").stdout


def test_tracked_run_records_everything_unasked(up_project, cli):
    git(up_project, "init", "-q")
    git(up_project, "add", "-A")
    git(up_project, "commit", "-qm", "init")
    (up_project / ".gitignore").write_text(".mlplat/\n*.parquet\n")
    (up_project / "train.py").write_text(TRAIN_SCRIPT)
    git(up_project, "add", "-A")
    git(up_project, "commit", "-qm", "train script")
    head = git(up_project, "rev-parse", "HEAD")

    result = train(up_project)
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split("RUN ")[1].split()[0]
    run = client(up_project).get_run(run_id)
    tags, params = run.data.tags, run.data.params
    assert run.info.status == "FINISHED"
    assert params["C"] == "0.5" and params["note"] == "first"  # autologged + explicit
    assert tags["mlplat.tracked"] == "true" and tags["mlplat.user"] == "ds@example.com"
    assert tags["mlplat.code.commit"] == head and tags["mlplat.code.dirty"] == "false"
    assert tags["mlplat.tag.cost-center"] == "CC-0001" and tags["mlplat.team"] == "ml-core"
    expected = hashlib.sha256((up_project / "train.parquet").read_bytes()).hexdigest()
    assert tags["mlplat.data.train.sha256"] == expected and tags["mlplat.data.train.rows"] == "200"
    assert len(tags["mlplat.data.frame.sha256"]) == 64
    assert tags["mlplat.env.python"] == ".".join(map(str, sys.version_info[:3]))
    history = client(up_project).get_metric_history(run_id, "loss")
    assert len(history) == 100 and sorted(m.step for m in history) == list(range(100))
    artifacts = {a.path for a in client(up_project).list_artifacts(run_id, "mlplat")}
    assert {"mlplat/lineage.json", "mlplat/requirements.lock", "mlplat/environment.json"} <= artifacts

    # an uncommitted change is detected and its diff kept
    (up_project / ".gitignore").write_text(".mlplat/\n*.parquet\n# tweak\n")  # train() rewrites train.py itself
    dirty = train(up_project)
    dirty_id = dirty.stdout.split("RUN ")[1].split()[0]
    dtags = client(up_project).get_run(dirty_id).data.tags
    assert dtags["mlplat.code.dirty"] == "true" and len(dtags["mlplat.code.diff_sha256"]) == 64
    assert "mlplat/code.diff" in {a.path for a in client(up_project).list_artifacts(dirty_id, "mlplat")}

    listed = json.loads(cli("runs", "list", "--json").stdout)
    assert [r["run_id"] for r in listed[:2]] == [dirty_id, run_id]
    shown = cli("runs", "show", run_id[:10])
    assert shown.returncode == 0 and f"commit {head}" in shown.stdout and "train.parquet" not in shown.stderr
    compared = json.loads(cli("runs", "compare", run_id, dirty_id, "--json").stdout)
    assert any(r["key"] == "code dirty" and r["differs"] for r in compared["rows"])

    out = up_project / "repro"
    repro = cli("runs", "reproduce", run_id, "--out", str(out), "--check")
    assert repro.returncode == 0, repro.stdout + repro.stderr
    script = (out / "reproduce.sh").read_text()
    assert f"COMMIT={head}" in script and "pip install --quiet" in script and '"$PY" train.py' in script
    assert "scikit-learn==" in (out / "requirements.lock").read_text()
    (up_project / "train.parquet").write_bytes(b"changed")
    changed = cli("runs", "reproduce", run_id, "--out", str(out), "--check")
    assert changed.returncode == 1 and "changed since the run" in changed.stdout


def test_a_crashing_block_is_recorded_failed_with_its_metrics(up_project):
    result = train(up_project, "crash")
    assert result.returncode != 0 and "diverged at step 100" in result.stderr
    runs = client(up_project).search_runs([e.experiment_id for e in client(up_project).search_experiments()])
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 1
    assert failed[0].data.tags["mlplat.error"] == "RuntimeError: diverged at step 100"
    assert len(client(up_project).get_metric_history(failed[0].info.run_id, "loss")) == 100


def test_outside_a_run_models_cannot_be_logged(up_project):
    import mlplat
    from mlplat.errors import TrackingRequired

    with pytest.raises(TrackingRequired, match="outside a tracked run"):
        mlplat.log_model(object(), name="m")
    with pytest.raises(TrackingRequired):
        mlplat.log_metric("x", 1.0)


def test_training_before_up_says_to_run_up(project):
    result = train(project)
    assert result.returncode != 0 and "mlplat up --stack dev" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_stack_store_on_loopback_only(up_project, cli):
    refused = cli("ui", "--host", "0.0.0.0")
    assert refused.returncode == 6 and "no authentication" in refused.stderr
    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlplat"), "ui", "--port", str(port)], cwd=up_project,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 90
        body = None
        while time.time() < deadline and body is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read().decode()
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.5)
        assert body is not None and "OK" in body
    finally:
        proc.terminate()
        proc.wait(timeout=60)  # a bound on a hang: MLflow's UI stops its workers one by one


def test_xgboost_parameters_are_autologged(up_project):
    import numpy as np
    import xgboost

    import mlplat

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] > 0).astype(int)
    with mlplat.start_run(experiment="xgb", datasets={"train": X}) as run:
        xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(X, y)
    params = client(up_project).get_run(run.run_id).data.params
    assert params.get("max_depth") == "2"
    assert client(up_project).get_run(run.run_id).data.tags["mlplat.data.train.rows"] == "300"


def test_an_invalid_stack_writes_nothing(project, cli):
    path = project / "stacks" / "Pulumi.dev.yaml"
    path.write_text(path.read_text().replace("    cost-center: CC-0001\n", ""))
    result = cli("up", "--stack", "dev", "--yes")
    assert result.returncode == 3 and "mlplat:tags.cost-center: missing required cost tag" in result.stderr
    assert not (project / ".mlplat").exists()


def test_the_local_provider_has_no_bill_to_read(up_project, cli):
    result = cli("cost", "report", "--billed")
    assert result.returncode == 7 and "billed cost" in result.stderr and "drop --billed" in result.stderr
