"""`mlplat train` on the local provider, as a user types it: a real git project, real subprocesses.

One project (provisioned once for the module) trains a small sklearn model as a job that registers
a version; a second job, run from a dirty tree with --allow-dirty, is watched and stopped from other
processes; and every refusal (missing script, unreadable data, dirty tree, disallowed instance type,
too many GPUs) is one clear message that leaves no job folder and no run behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_project
from tests.timing import wait_until

pytestmark = pytest.mark.integration

GIT = ["git", "-c", "user.email=ds@example.com", "-c", "user.name=ds", "-c", "commit.gpgsign=false"]
JOB_TIMEOUT = 900  # a bound on a hang under a loaded CI machine, never a measurement

TRAIN = '''\
import os

import pandas as pd
from sklearn.linear_model import LogisticRegression

import mlplat

frame = pd.read_csv(os.environ["MLPLAT_DATA_TRAIN"])
X, y = frame[["a", "b"]], frame["label"]
with mlplat.start_run(experiment="tiny", datasets={"train": os.environ["MLPLAT_DATA_TRAIN"]}) as run:
    model = LogisticRegression().fit(X, y)
    run.log_metric("accuracy", float(model.score(X, y)))
    print("registered version", run.log_model(model, name="tiny-model"), flush=True)
'''

SLEEPER = '''\
import subprocess

import mlplat

with mlplat.start_run(experiment="sleeper") as run:
    child = subprocess.Popen(["sleep", "600"])
    print(f"started grandchild {child.pid}", flush=True)
    child.wait()
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def proj(tmp_path_factory) -> dict:
    root = write_project(tmp_path_factory.mktemp("training") / "project")
    (root / "train.py").write_text(TRAIN)
    (root / ".gitignore").write_text(".mlplat/\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "tiny project")
    data = root.parent / "train.csv"
    rows = ["a,b,label"] + [f"{i % 7 - 3},{(i * 5) % 11 - 5},{int((i % 7 - 3) + ((i * 5) % 11 - 5) > 0)}"
                            for i in range(120)]
    data.write_text("\n".join(rows) + "\n")
    env = {"MLPLAT_PROJECT_DIR": str(root), "MLPLAT_USER": "ds@example.com", "MLPLAT_STACK": "dev"}
    up = run_cli("up", "--stack", "dev", "--yes", cwd=root, env=env)
    assert up.returncode == 0, up.stderr
    return {"root": root, "data": data, "env": env}


def mlp(proj: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=proj["root"], env=proj["env"], timeout=timeout)


def jobs_dir(proj: dict) -> Path:
    return proj["root"] / ".mlplat" / "dev" / "training"


def job_names(proj: dict) -> set[str]:
    root = jobs_dir(proj)
    return {p.name for p in root.iterdir() if p.name != "envs"} if root.is_dir() else set()


def run_ids(proj: dict) -> set[str]:
    from mlplat import providers
    from mlplat.context import Context
    from mlplat.contracts import Capability

    ctx = Context(project_dir=proj["root"])
    tracker = providers.capability(ctx.stack("dev"), ctx, Capability.TRACKING)
    return {r.run_id for r in tracker.list_runs(limit=10_000)}


def tracker_run(proj: dict, run_id: str):
    from mlplat import providers
    from mlplat.context import Context
    from mlplat.contracts import Capability

    ctx = Context(project_dir=proj["root"])
    spec = ctx.stack("dev")
    return spec, ctx, providers.capability(spec, ctx, Capability.TRACKING).get_run(run_id)


def test_a_training_job_registers_a_version_from_a_tracked_run_with_its_commit_and_instance_type(proj):
    result = mlp(proj, "train", "--stack", "dev", "--data", f"train={proj['data']}", "--", "python", "train.py",
                 timeout=JOB_TIMEOUT)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "registered version 1" in result.stdout  # the script's own output, streamed
    assert "SUCCEEDED" in result.stderr and "registered tiny-model version 1" in result.stderr

    listed = mlp(proj, "train", "list", "--stack", "dev", "--json")
    (job,) = [j for j in json.loads(listed.stdout) if j["model"] == "tiny-model"]
    assert job["state"] == "SUCCEEDED" and job["model_version"] == 1 and job["instance_type"] == "local.cpu"

    record = json.loads((jobs_dir(proj) / job["job_id"] / "job.json").read_text())
    assert (record["run_id"], record["model"], record["model_version"]) == (job["run_id"], "tiny-model", 1)
    assert record["exit_code"] == 0 and Path(record["log"]).is_file()
    spec, ctx, run = tracker_run(proj, job["run_id"])
    tags = run.tags
    assert tags["mlplat.training.job"] == job["job_id"]
    assert tags["mlplat.code.commit"] == git(proj["root"], "rev-parse", "HEAD")
    assert tags["mlplat.code.in_git"] == "true" and tags["mlplat.code.dirty"] == "false"
    assert tags["mlplat.training.instance_type"] == "local.cpu"
    assert float(tags["mlplat.training.price_per_hour"]) == spec.serving.price_for("local.cpu")
    assert tags["mlplat.data.train.sha256"] == hashlib.sha256(proj["data"].read_bytes()).hexdigest()
    assert tags["mlplat.tag.cost-center"] == spec.tags.as_dict()["cost-center"]
    assert tags["mlplat.env.hash"] and tags["mlplat.tracked"] == "true"
    assert tags["mlplat.registered.tiny-model"] == "1"

    from mlplat.api.plane import plane_for

    sealed = plane_for(spec, ctx).call("models.sealed_version", name="tiny-model", version=1)
    assert sealed["lineage"]["run_id"] == job["run_id"]
    assert sealed["lineage"]["code"]["commit"] == tags["mlplat.code.commit"]

    # the job's cost: a training line under the run's team and model, in the budget share
    by_model = json.loads(mlp(proj, "cost", "report", "--stack", "dev", "--by", "model", "--json").stdout)
    (line,) = [t for t in by_model["training"] if t["job_id"] == job["job_id"]]
    assert line["model"] == "tiny-model" and line["version"] == 1 and line["team"] == spec.team
    assert line["hours"] > 0 and line["cost_usd"] == pytest.approx(line["hours"] * spec.serving.price_for("local.cpu"))
    (group,) = [g for g in by_model["groups"] if g["key"] == "tiny-model"]
    assert group["training_hours"] >= line["hours"]
    by_team = json.loads(mlp(proj, "cost", "report", "--stack", "dev", "--by", "team", "--json").stdout)
    (row,) = [r for r in by_team["rows"] if r["team"] == spec.team]
    assert row["training_usd"] > 0 and row["budget_share"] is not None
    table = mlp(proj, "cost", "report", "--stack", "dev", "--by", "model")
    assert "training_usd" in table.stdout and "training: " in table.stdout


def test_a_job_from_a_dirty_tree_is_watched_and_stopped_from_other_processes(proj):
    root = proj["root"]
    (root / "sleeper.py").write_text(SLEEPER)  # untracked: the tree is dirty
    before = job_names(proj)
    refused = mlp(proj, "train", "--stack", "dev", "--", "python", "sleeper.py")
    assert refused.returncode == 1 and "uncommitted changes: sleeper.py" in refused.stderr
    assert "--allow-dirty" in refused.stderr
    assert job_names(proj) == before

    submitted = mlp(proj, "train", "--stack", "dev", "--allow-dirty", "--detach", "--json", "--",
                    "python", "sleeper.py")
    assert submitted.returncode == 0, submitted.stderr
    doc = json.loads(submitted.stdout)
    job_id = doc["job_id"]
    assert doc["dirty"] is True and doc["state"] in ("PENDING", "RUNNING")

    def started() -> str | None:
        out = mlp(proj, "train", "logs", job_id, "--stack", "dev").stdout
        return out if "started grandchild" in out else None

    output = wait_until(started, timeout=JOB_TIMEOUT, interval=1.0,
                        message=lambda: mlp(proj, "train", "logs", job_id, "--stack", "dev").stdout)
    grandchild = int(output.split("started grandchild ")[1].split()[0])
    status = json.loads(mlp(proj, "train", "status", job_id, "--stack", "dev", "--json").stdout)
    assert status["state"] == "RUNNING" and status["run_id"]

    # the diff travelled with the job and the run records it
    job_dir = jobs_dir(proj) / job_id
    diff = (job_dir / "code.diff").read_text()
    assert "sleeper.py" in diff
    _, _, run = tracker_run(proj, status["run_id"])
    assert run.tags["mlplat.code.dirty"] == "true"
    assert run.tags["mlplat.code.diff_sha256"] == hashlib.sha256(diff.encode()).hexdigest()
    record = json.loads((job_dir / "job.json").read_text())
    assert Path(record["environment"]["dir"]).name == record["lock_hash"]  # the environment cached by lock hash

    stopped = mlp(proj, "train", "stop", job_id, "--stack", "dev", "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["state"] == "STOPPED"
    wait_until(lambda: not _alive(grandchild), timeout=60, message=f"process {grandchild} survived the stop")
    assert not _alive(record["pid"])
    after = json.loads(mlp(proj, "train", "status", job_id, "--stack", "dev", "--json").stdout)
    assert after["state"] == "STOPPED" and after["ended"] is not None
    again = mlp(proj, "train", "stop", job_id, "--stack", "dev", "--json")  # a finished job is left as it is
    assert again.returncode == 0 and json.loads(again.stdout)["ended"] == after["ended"]
    (root / "sleeper.py").unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("args, code, message", [
    (("--", "python", "nope.py"), 4, "the script nope.py does not exist in the project"),
    (("--data", "train=/no/such/train.csv", "--", "python", "train.py"), 4,
     "data channel 'train': /no/such/train.csv does not exist"),
    (("--data", "train=ftp://example.com/train.csv", "--", "python", "train.py"), 1,
     "the scheme of ftp://example.com/train.csv is not supported"),
    (("--instance-type", "ml.p4d.24xlarge", "--", "python", "train.py"), 6,
     "instance type ml.p4d.24xlarge is not allowed by the stack's spend policy (allowedInstanceTypes: ml.t3.*"),
    (("--gpus", "5", "--", "python", "train.py"), 6,
     "5 GPU(s) asked for (--gpus 5), more than the stack's spend policy allows (maxGpuInstances: 4)"),
    (("python", "train.py"), 2, "put it after --"),
])
def test_refused_jobs_submit_nothing(proj, args, code, message):
    jobs, runs = job_names(proj), run_ids(proj)
    result = mlp(proj, "train", "--stack", "dev", *args)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in " ".join(result.stderr.split())
    assert result.stderr.count("error:") <= 1  # one message
    assert job_names(proj) == jobs and run_ids(proj) == runs


def test_unknown_jobs_are_not_found(proj):
    for command in (("status", "train-nope"), ("logs", "train-nope"), ("stop", "train-nope"), ("status", "../x")):
        result = mlp(proj, "train", *command, "--stack", "dev")
        assert result.returncode == 4, (command, result.stderr)
        assert "no training job" in result.stderr and "mlplat train list" in result.stderr


# --- the local supervisor, on job folders made by hand -------------------------------------------


def _job_folder(tmp_path: Path, command: list[str], **record) -> tuple[object, Path]:
    """A job folder as ``submit_training`` leaves it, and a LocalTrainingJobs over its state folder."""
    from types import SimpleNamespace

    from mlplat_providers.local.training import LocalTrainingJobs, write_json

    spec = SimpleNamespace(name="dev", state_dir=str(tmp_path / "state"), control_plane=SimpleNamespace(tracking=None))
    ctx = SimpleNamespace(clock=__import__("time").time, user="ds@example.com")
    job_dir = tmp_path / "state" / "training" / "train-by-hand"
    (job_dir / "source").mkdir(parents=True)
    (job_dir / "requirements.lock").write_text("")
    (job_dir / "output.log").touch()
    write_json(job_dir / "job.json", {"job_id": "train-by-hand", "state": "PENDING", "created": 1.0, "started": None,
                                      "ended": None, "message": "", "command": command, "instance_type": "local.cpu",
                                      "data": {}, "env": {}, "lock_hash": "0" * 64, "supervisor_pid": None,
                                      "pid": None, "pgid": None, "max_runtime_seconds": 86_400, **record})
    return LocalTrainingJobs(spec, ctx), job_dir


def test_a_job_past_its_max_runtime_is_stopped_and_failed(tmp_path):
    jobs, job_dir = _job_folder(tmp_path, ["python", "-c", "import time; print('working', flush=True); time.sleep(600)"],
                                max_runtime_seconds=1)
    supervisor = subprocess.run([__import__("sys").executable, "-m", "mlplat_providers.local.training", str(job_dir)],
                                capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert supervisor.returncode == 1
    status = jobs.training_status("train-by-hand")  # type: ignore[attr-defined]
    assert status.state == "FAILED" and "longer than its max runtime (1 s)" in status.message
    assert "working" in list(jobs.training_logs("train-by-hand"))  # type: ignore[attr-defined]
    record = json.loads((job_dir / "job.json").read_text())
    assert not _alive(record["pid"]) and record["environment"]["dir"].endswith("0" * 64)


def test_a_supervisor_killed_without_recording_an_end_is_reported_failed_and_stop_records_it(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    jobs, _ = _job_folder(tmp_path, ["python", "train.py"], state="RUNNING", started=2.0, supervisor_pid=gone.pid)
    status = jobs.training_status("train-by-hand")  # type: ignore[attr-defined]
    assert status.state == "FAILED" and "supervisor ended without recording an outcome" in status.message
    stopped = jobs.stop_training("train-by-hand")  # type: ignore[attr-defined]
    assert stopped.state == "STOPPED" and stopped.ended is not None
    assert jobs.training_status("train-by-hand").state == "STOPPED"  # type: ignore[attr-defined]
