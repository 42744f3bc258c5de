"""Tracked runs on a real local stack: the code version ignores the platform's own state, untracked
files count by content, and the monitoring reference sample comes from the run's training data."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplat import lineage
from tests.conftest import REPO, run_cli, write_project
from tests.integration.test_up_and_tracking import client, git

pytestmark = pytest.mark.integration

FRAME_SCRIPT = '''
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
import mlplat

rng = np.random.default_rng(0)
df = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
df["y"] = (df["a"] + df["b"] > 0).astype(int)
with mlplat.start_run(experiment="exp", datasets={"train": df}) as run:
    LogisticRegression(max_iter=200).fit(df[["a", "b", "c"]], df["y"])
    print("RUN", run.run_id)
'''


def _train(project: Path) -> str:
    result = subprocess.run([sys.executable, "train.py"], cwd=project, capture_output=True, text=True, timeout=300,
                            check=False, env={**os.environ, "MLPLAT_PROJECT_DIR": str(project)})
    assert result.returncode == 0, result.stderr
    return result.stdout.split("RUN ")[1].split()[0]


# --- the code version ---------------------------------------------------------------------


def test_a_clean_tree_after_up_records_a_clean_run(project, cli):
    # No .gitignore at all: the state folder `up` creates must neither show in git nor make runs dirty.
    (project / "train.py").write_text(FRAME_SCRIPT)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "init")
    assert cli("up", "--stack", "dev", "--yes").returncode == 0
    assert git(project, "status", "--porcelain") == ""  # .mlplat/ ignores itself
    assert (project / ".mlplat" / ".gitignore").read_text().splitlines()[-1] == "*"
    run_id = _train(project)
    tags = client(project).get_run(run_id).data.tags
    assert tags["mlplat.code.dirty"] == "false" and "mlplat.code.diff_sha256" not in tags


def test_the_state_folder_is_left_out_even_when_git_would_see_it(tmp_path):
    # An older .mlplat/ without its own .gitignore, or a state folder elsewhere: still not the user's code.
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text("print(1)\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    for folder in (repo / ".mlplat" / "dev", repo / "state"):
        folder.mkdir(parents=True)
        (folder / "platform.db").write_bytes(b"x")
    assert lineage.code_version(repo).dirty  # git sees them
    clean = lineage.code_version(repo, exclude=(repo / ".mlplat", repo / "state"))
    assert not clean.dirty and clean.diff == "" and clean.diff_sha256 is None


def test_untracked_files_count_by_content_and_travel_in_the_diff(tmp_path):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "train.py").write_text("print(1)\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    # an untracked file in an untracked folder: git lists only "src/" unless asked for every file
    (repo / "src" / "features.py").write_text("SCALE = 1\n")
    first = lineage.code_version(repo)
    (repo / "src" / "features.py").write_text("SCALE = 2\n")
    second = lineage.code_version(repo)
    assert first.dirty and second.dirty
    assert first.diff_sha256 != second.diff_sha256  # same names, different content
    assert lineage.code_version(repo).diff_sha256 == second.diff_sha256  # and stable
    (repo / "src" / "__pycache__").mkdir()  # bytecode written by importing the code is not code
    (repo / "src" / "__pycache__" / "features.cpython-311.pyc").write_bytes(b"\x00mtime")
    assert lineage.code_version(repo).diff_sha256 == second.diff_sha256

    # the diff rebuilds the work tree on a fresh clone of the commit
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    (tmp_path / "code.diff").write_text(second.diff)
    git(clone, "apply", str(tmp_path / "code.diff"))
    assert (clone / "src" / "features.py").read_text() == "SCALE = 2\n"
    assert lineage.code_version(clone).diff_sha256 == second.diff_sha256


def test_up_hints_when_a_configured_state_folder_is_not_ignored(tmp_path):
    text = (REPO / "stacks" / "Pulumi.dev.yaml").read_text().replace("stateDir: .mlplat/dev", "stateDir: state/dev")
    assert "stateDir: state/dev" in text
    root = write_project(tmp_path / "project", {"dev": text})
    git(root, "init", "-q")
    env = {"MLPLAT_PROJECT_DIR": str(root)}
    result = run_cli("up", "--stack", "dev", "--yes", cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    assert "add the line '/state/dev/' to .gitignore" in result.stderr
    assert not (root / ".gitignore").exists()  # a hint: the user's files are theirs to change
    (root / ".gitignore").write_text("/state/\n")
    (root / "stacks" / "Pulumi.dev.yaml").write_text(text + "  mlplat:budget: {monthlyUsd: 10}\n")  # a change to apply
    again = run_cli("up", "--stack", "dev", "--yes", cwd=root, env=env)
    assert again.returncode == 0 and "not ignored by git" not in again.stderr


# --- the reference sample -----------------------------------------------------------------


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    df["y"] = (df["a"] + df["b"] > 0).astype(int)
    return df


def _version_lineage(project: Path, name: str, version: int) -> dict:
    conn = sqlite3.connect(project / ".mlplat" / "dev" / "platform.db")
    try:
        row = conn.execute("SELECT lineage FROM model_versions WHERE model=? AND version=?", (name, version)).fetchone()
    finally:
        conn.close()
    return json.loads(row[0])


def test_a_dataframe_train_set_is_the_reference_sample(up_project, capsys):
    from sklearn.linear_model import LogisticRegression

    import mlplat

    df = _frame(300, 1)
    with mlplat.start_run(experiment="ref", datasets={"train": df}) as run:
        model = LogisticRegression(max_iter=200).fit(df[["a", "b", "c"]], df["y"])
        version = run.log_model(model, name="ref-frame", input_example=df[["a", "b", "c"]].head(5))
    reference = _version_lineage(up_project, "ref-frame", version)["reference"]
    assert reference["rows"] == 300 and reference["source_rows"] == 300
    assert reference["source"] == "train dataset (in-memory DataFrame)"
    said = capsys.readouterr().err
    assert "monitoring reference sample of 300 rows from train dataset (in-memory DataFrame)" in said
    assert "insufficient reference" not in said


def test_a_tiny_reference_is_announced_and_never_judged(up_project, capsys):
    from sklearn.linear_model import LogisticRegression

    import mlplat

    df = _frame(300, 2)
    with mlplat.start_run(experiment="ref") as run:  # no datasets: only the input example remains
        model = LogisticRegression(max_iter=200).fit(df[["a", "b", "c"]], df["y"])
        version = run.log_model(model, name="ref-tiny", input_example=df[["a", "b", "c"]].head(5))
    reference = _version_lineage(up_project, "ref-tiny", version)["reference"]
    assert reference["rows"] == 5 and reference["source"] == "input example"
    said = capsys.readouterr().err
    assert "reference sample of 5 rows from input example" in said
    assert "below monitoring.drift.minReferenceRows (100)" in said

    # clearly shifted traffic, plenty of it: still no verdict, and no alert
    traffic = _frame(300, 3)[["a", "b", "c"]] + 4.0
    conn = sqlite3.connect(up_project / ".mlplat" / "dev" / "platform.db")
    with conn:
        conn.executemany("INSERT INTO captures (request_id, ts, model, version, variant, environment, inputs, outputs, "
                         "latency_ms, status, shadow) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                         [(f"t-{i}", time.time() - 600 + i, "ref-tiny", version, "primary", "dev", json.dumps(r), "[1]",
                           3.0, 200, 0) for i, r in enumerate(traffic.to_dict(orient="records"))])
    conn.close()
    result = run_cli("monitor", "run", "--stack", "dev", "--json", cwd=up_project,
                     env={"MLPLAT_PROJECT_DIR": str(up_project)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    [window] = [w for w in report["windows"] if w["model"] == "ref-tiny"]
    assert window["drift"]["verdict"] == "insufficient reference" and window["drift"]["reference_rows"] == 5
    assert "minReferenceRows (100)" in window["drift"]["note"]
    assert not window["breach"] and "drift.detected" not in window["metrics"]
    assert report["events"] == []
