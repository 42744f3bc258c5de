"""`mlplat runs reproduce`: a bundle copied to another folder, its original project moved away,
rebuilds the code from its commit and diff, builds the locked venv, checks the data by hash and
trains again to the same metrics."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_cli, write_project
from tests.integration.test_up_and_tracking import git

pytestmark = pytest.mark.integration

TRAIN = '''
import pandas as pd
from sklearn.linear_model import LogisticRegression
import mlplat
from helpers import FEATURES  # an untracked file: it reaches the bundle through code.diff

df = pd.read_csv("data/train.csv")
with mlplat.start_run(experiment="repro", datasets={"train": "data/train.csv"}) as run:
    model = LogisticRegression(C=0.3, max_iter=500).fit(df[FEATURES], df["y"])
    run.log_metric("train_accuracy_manual", float((model.predict(df[FEATURES]) == df["y"]).mean()))
    run.log_metric("coef_a", float(model.coef_[0][0]))
    print("RUN", run.run_id)
'''


def _data(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(400, 3)), columns=["a", "b", "c"])
    df["y"] = (df["a"] - 0.5 * df["b"] + rng.normal(scale=0.5, size=400) > 0).astype(int)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project in git with a tracked run made from a dirty tree, and the run's bundle:
    (project, run id, bundle). Shared by the module: tests copy the bundle before using it."""
    tmp_path = tmp_path_factory.mktemp("reproduce")
    project = write_project(tmp_path / "project")
    (project / ".gitignore").write_text("data/\n")
    (project / "train.py").write_text(TRAIN)
    _data(project / "data" / "train.csv")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "train script")
    # uncommitted work: a tracked change and an untracked module the script imports
    (project / "train.py").write_text(TRAIN + "# try a smaller C next\n")
    (project / "helpers.py").write_text('FEATURES = ["a", "b", "c"]\n')
    env = {"MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": "ds@example.com"}
    assert run_cli("up", "--stack", "dev", "--yes", cwd=project, env=env).returncode == 0
    result = subprocess.run([sys.executable, "train.py"], cwd=project, capture_output=True, text=True, timeout=300,
                            check=False, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split("RUN ")[1].split()[0]
    out = tmp_path / "bundle"
    made = run_cli("runs", "reproduce", run_id, "--with-data", "--out", str(out), "--json", cwd=project, env=env)
    assert made.returncode == 0, made.stderr
    return project, run_id, out


def _isolated_env(tmp_path: Path) -> dict[str, str]:
    """The environment reproduce.sh runs in: no trace of the original project, no package index.

    The venv is still built from the lock by the script's default path; so that no download is
    needed, a ``sitecustomize`` on PYTHONPATH adds this test interpreter's site-packages, which
    already hold every locked version, and ``pip install -r requirements.lock`` finds them satisfied.
    """
    shim = tmp_path / "shim"
    shim.mkdir()
    site_packages = sysconfig.get_paths()["purelib"]
    (shim / "sitecustomize.py").write_text(f"import site\nsite.addsitedir({site_packages!r})\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLPLAT_", "VIRTUAL_ENV", "PYTHON"))}
    # The new venv comes with Python's bundled setuptools (65), older than torch's floor (>= 77.0.3); with no index
    # pip cannot upgrade it, so the complete lock is installed as pinned, without resolving dependencies again.
    return env | {"PYTHONPATH": str(shim), "PIP_NO_INDEX": "1", "MLPLAT_USER": "ds@example.com",
                  "MLPLAT_REPRO_PIP_EXTRA": "--no-deps",
                  "MLPLAT_REPRO_BASE_PYTHON": getattr(sys, "_base_executable", sys.executable)}


def test_a_bundle_reproduces_its_run_from_another_folder(trained, tmp_path):
    project, run_id, out = trained
    out_parent = out.parent
    script = (out / "reproduce.sh").read_text()
    assert str(out_parent) not in script and "/work/" not in script  # nothing of this machine's folders
    assert 'checkout --quiet --detach "$COMMIT"' in script and 'git clone --quiet --no-checkout' in script
    files = set(os.listdir(out))
    assert {"reproduce.sh", "code.bundle", "code.diff", "requirements.lock", "data.json", "run.json"} <= files
    assert "helpers.py" in (out / "code.diff").read_text()  # the untracked module travels in the diff

    # move the bundle and the project: absolute paths recorded at the run now lead nowhere
    elsewhere = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(out, elsewhere)
    moved = out_parent / "moved-away"
    project.rename(moved)
    try:
        result = subprocess.run(["bash", str(elsewhere / "reproduce.sh")], cwd=tmp_path, capture_output=True,
                                text=True, timeout=900, check=False, env=_isolated_env(tmp_path))
    finally:
        moved.rename(project)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "environment matches the lock" in result.stderr
    assert "dataset 'train' ok (data/train.csv, from the bundle)" in result.stderr

    work = elsewhere / "work"
    assert (work / "venv" / "bin" / "python").exists()
    comparison = json.loads((work / "comparison.json").read_text())
    assert comparison["original"] == run_id and comparison["reproduced"] != run_id
    assert comparison["same"] and comparison["tolerance"] == 0
    rows = {r["key"]: r for r in comparison["rows"]}
    for key in ("metric train_accuracy_manual", "metric coef_a", "mlplat.data.train.sha256",
                "mlplat.code.commit", "mlplat.code.diff_sha256"):
        assert rows[key]["same"] and rows[key]["original"] is not None, rows[key]
    assert rows["metric coef_a"]["original"] == rows["metric coef_a"]["reproduced"]
    # the run was retrained with the venv's own interpreter, on a platform provisioned in the work folder
    shown = run_cli("runs", "show", comparison["reproduced"], "--json", cwd=work / "src",
                    env={"MLPLAT_PROJECT_DIR": str(work / "src")})
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["tags"]["mlplat.reproduces"] == run_id
    assert doc["lineage"]["environment"]["executable"] == str(work / "venv" / "bin" / "python")
    assert not (out / "work").exists()  # the copy did its work in its own folder


def test_changed_data_stops_the_script_before_training(trained, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(trained[2], out)
    _data(out / "data" / "data" / "train.csv", seed=1)  # same path, other content
    env = _isolated_env(tmp_path) | {"MLPLAT_REPRO_PYTHON": sys.executable}
    result = subprocess.run(["bash", str(out / "reproduce.sh")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900, check=False, env=env)
    assert result.returncode == 1
    assert "dataset 'train' (data/train.csv" in result.stderr and "wrong content in the bundle" in result.stderr
    assert "MLPLAT_REPRO_DATA" in result.stderr
    assert "training:" not in result.stderr and not (out / "work" / "comparison.json").exists()


def test_a_bundle_never_overwrites_a_folder_it_did_not_write(trained, tmp_path):
    project, run_id, _bundle = trained
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    result = run_cli("runs", "reproduce", run_id, "--out", str(foreign), cwd=project,
                     env={"MLPLAT_PROJECT_DIR": str(project)})
    assert result.returncode != 0 and "not empty" in result.stderr
    assert os.listdir(foreign) == ["notes.txt"]
