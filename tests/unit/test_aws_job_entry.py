"""The runtime image's entry in SageMaker jobs, run here on SageMaker's directory layout (MLPLAT_JOB_ROOT).

Commands run as real subprocesses from the unpacked project; the platform commands a pipeline step
runs (``mlplat models ...``) are played by a recording runner, since no control plane is behind them.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mlplat_providers.aws.runtime import job_entry

SCRIPT = """\
import json, os, pathlib, sys
seen = {k: v for k, v in os.environ.items() if k.startswith(("MLPLAT_DATA_", "MLPLAT_INPUT_", "MLPLAT_OUTPUT_", "MLPLAT_MODEL_DIR",
                                                              "MLPLAT_PROJECT_DIR"))}
seen["args"] = sys.argv[1:]
seen["cwd"] = os.getcwd()
print(json.dumps(seen))
if "MLPLAT_MODEL_DIR" in os.environ:
    pathlib.Path(os.environ["MLPLAT_MODEL_DIR"], "model.txt").write_text("weights")
sys.exit(int(os.environ.get("EXIT", "0")))
"""


def project_archive(where: Path) -> None:
    tree = where.parent / "tree"
    (tree / "stacks").mkdir(parents=True)
    (tree / "train.py").write_text(SCRIPT)
    where.mkdir(parents=True)
    with tarfile.open(where / "source.tar.gz", "w:gz") as tar:
        tar.add(tree, arcname=".")


@pytest.fixture
def training_root(tmp_path):
    root = tmp_path / "opt-ml"
    project_archive(root / "input" / "data" / "code")
    (root / "input" / "data" / "train").mkdir(parents=True)
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(
        {"mlplat_command": json.dumps([sys.executable, "train.py", "--epochs", "3"])}))
    return root


def test_a_training_job_runs_the_hyperparameter_command_from_the_unpacked_project(training_root, capfd):
    assert job_entry.training(root=training_root) == 0
    seen = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    work = str(training_root / "work")
    assert seen["args"] == ["--epochs", "3"] and seen["cwd"] == work and seen["MLPLAT_PROJECT_DIR"] == work
    assert seen["MLPLAT_DATA_TRAIN"] == str(training_root / "input" / "data" / "train")
    assert "MLPLAT_DATA_CODE" not in seen
    assert (training_root / "model" / "model.txt").read_text() == "weights"  # what SageMaker uploads


def test_a_failing_training_command_leaves_its_reason_for_describe_training_job(training_root, monkeypatch):
    monkeypatch.setenv("EXIT", "3")
    assert job_entry.training(root=training_root) == 3
    assert "exited with 3" in (training_root / "output" / "failure").read_text()


def test_an_archive_escaping_the_work_directory_is_refused(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    evil = tmp_path / "evil.txt"
    evil.write_text("x")
    with tarfile.open(code / "source.tar.gz", "w:gz") as tar:
        tar.add(evil, arcname="../outside.txt")
    with pytest.raises(tarfile.OutsideDestinationError):
        job_entry.unpack_code(code, tmp_path / "work")
    assert not (tmp_path / "outside.txt").exists()
    with pytest.raises(SystemExit, match="expected one project archive"):
        job_entry.unpack_code(tmp_path / "nothing", tmp_path / "work")


@pytest.fixture
def processing_root(tmp_path):
    root = tmp_path / "opt-ml"
    project_archive(root / "processing" / "input" / "code")
    (root / "processing" / "input" / "holdout").mkdir(parents=True)
    (root / "processing" / "output" / "evaluation").mkdir(parents=True)
    return root


class Recorder:
    """Plays the mlplat CLI: `models show` answers version 7; the gate or promotion exits with ``promote_exit``."""

    def __init__(self, promote_exit: int = 0):
        self.calls: list[list[str]] = []
        self.promote_exit = promote_exit

    def __call__(self, argv, cwd, env):
        self.calls.append(list(argv))
        if argv[:3] == ["mlplat", "models", "show"] and len(argv) > 4 and argv[4] == "--stack":
            return subprocess.CompletedProcess(argv, 0, stdout=json.dumps({"model": argv[3], "version": 7}))
        return subprocess.CompletedProcess(argv, self.promote_exit, stdout=json.dumps(
            {"model": argv[3], "version": int(argv[4]), "stage": "staging", "changed": True}))


def test_the_gate_step_resolves_latest_and_writes_the_report_its_property_file_names(processing_root):
    from mlplat_providers.aws import pipeline_compiler as pc

    report = processing_root / "processing" / "output" / pc.EVALUATION_OUTPUT / pc.EVALUATION_FILE
    runner = Recorder()
    code = job_entry.processing(["--report", str(report), "--", "mlplat", "models", "evaluate", "scorer", "latest",
                                 "--stack", "fraud-aws", "--json"], root=processing_root, run=runner)
    assert code == 0
    assert runner.calls == [["mlplat", "models", "show", "scorer", "--stack", "fraud-aws", "--json"],
                            ["mlplat", "models", "evaluate", "scorer", "7", "--stack", "fraud-aws", "--json"]]
    written = json.loads(report.read_text())
    assert written[pc.GATE_PATH] is True  # the Path the pipeline's condition reads
    assert written["exit_code"] == 0 and written["result"]["version"] == 7


def test_a_refusing_gate_is_a_result_and_any_other_failure_fails_the_step(processing_root):
    report = processing_root / "processing" / "output" / "evaluation" / "evaluation.json"
    argv = ["--report", str(report), "--", "mlplat", "models", "evaluate", "scorer", "3", "--stack", "fraud-aws"]
    assert job_entry.processing(argv, root=processing_root, run=Recorder(promote_exit=1)) == 0
    assert json.loads(report.read_text())["passed"] is False
    assert job_entry.processing(argv, root=processing_root, run=Recorder(promote_exit=9)) == 9


def test_a_command_step_sees_its_inputs_and_declared_outputs(processing_root, capfd):
    code = job_entry.processing(["--output", "dataset", "--", sys.executable, "train.py"], root=processing_root)
    assert code == 0
    seen = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    base = processing_root / "processing"
    # the names a pipeline step reads on the local provider, and a training job's data channel name
    assert seen["MLPLAT_INPUT_HOLDOUT"] == seen["MLPLAT_DATA_HOLDOUT"] == str(base / "input" / "holdout")
    assert seen["MLPLAT_OUTPUT_DATASET"] == str(base / "output" / "dataset") and (base / "output" / "dataset").is_dir()


def test_approved_resolves_through_the_model_package_group(processing_root):
    runner = Recorder()
    argv = job_entry.resolve_version(["mlplat", "deploy", "scorer", "approved", "--stack", "fraud-aws"],
                                     processing_root, {}, runner, approved=lambda stack, model: 4)
    assert argv == ["mlplat", "deploy", "scorer", "4", "--stack", "fraud-aws"] and runner.calls == []
    assert job_entry.resolve_version(["python", "train.py", "latest"], processing_root, {}, runner) == \
        ["python", "train.py", "latest"]  # only a platform command's version position is resolved
