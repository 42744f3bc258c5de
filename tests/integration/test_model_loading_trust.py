"""The trust boundary of model files, as an attacker who can write the artifact store and read the
stack's key meets it: a registered model's file is replaced by one that runs code when loaded, the
manifest is resealed with the key, and someone runs `mlplat models promote`.

* scikit-learn (skops): the promotion is refused — the type is not on the platform's allow-list, even
  though the attacker added it to the model's own MLmodel — and the payload never runs anywhere;
* pyfunc (cloudpickle, no safe format exists): the payload may run in the scoring child and the staging
  model server, never in the promoting CLI process.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, REPO, run_cli, write_project

pytestmark = pytest.mark.integration

AUTHOR = "ds@example.com"

PAYLOAD = textwrap.dedent('''
    import os

    import mlflow.pyfunc

    def _mark():
        folder = os.environ.get("MLPLAT_TEST_MARKER_DIR")
        if folder:
            open(os.path.join(folder, f"marker-{os.getpid()}"), "w").write("ran")

    class Evil:
        """Writes a marker when a loader rebuilds it: the stand-in for any code in a model file."""
        def __init__(self, tag):
            self.tag = tag
        def __setstate__(self, state):
            _mark()
            self.__dict__.update(state)

    class Rule(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return (model_input["x0"] + model_input["x1"] > 0).astype(int).to_numpy()

    def rebuild(evil, model):
        return model

    class Carrier:
        """Unpickles as a working ``Rule`` model, rebuilding an ``Evil`` on the way."""
        def __reduce__(self):
            return (rebuild, (Evil("x"), Rule()))
''')

TRAIN = textwrap.dedent("""
    from pathlib import Path
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    import mlflow.pyfunc
    import mlplat

    rng = np.random.default_rng(11)
    frame = pd.DataFrame(rng.normal(size=(800, 3)), columns=["x0", "x1", "x2"])
    frame["label"] = (frame["x0"] + frame["x1"] > 0).astype(int)
    Path("data").mkdir(exist_ok=True)
    frame.iloc[:600].to_parquet("data/train.parquet", index=False)
    frame.iloc[600:].to_parquet("data/holdout.parquet", index=False)
    train = frame.iloc[:600]
    holdout = {"path": "data/holdout.parquet", "label": "label"}

    class Rule(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return (model_input["x0"] + model_input["x1"] > 0).astype(int).to_numpy()

    with mlplat.start_run(experiment="trust", datasets={"train": "data/train.parquet"}) as run:
        features = train.drop(columns=["label"])
        run.log_model(LogisticRegression().fit(features, train["label"]), name="scorer", holdout=holdout,
                      input_example=features.head(3))
        run.log_model(Rule(), name="rules", holdout=holdout, input_example=features.head(3))
""")


def _stack() -> str:
    return (REPO / "stacks" / "Pulumi.dev.yaml").read_text().replace(
        "thresholds: {roc_auc: 0.80, accuracy: 0.70}", "thresholds: {accuracy: 0.70}")


def _reseal(root: Path, name: str) -> None:
    """What an attacker holding the key does after changing files: rehash them, seal, write the row."""
    from mlplat.context import Context
    from mlplat.services import audit, manifest
    from mlplat.services import registry as reg

    ctx = Context(project_dir=root)
    key = reg.registry_for(ctx.stack("dev"), ctx).signing_key()
    conn = sqlite3.connect(root / ".mlplat" / "dev" / "platform.db", isolation_level=None)
    try:
        row = conn.execute("SELECT source, manifest FROM model_versions WHERE model=? AND version=1",
                           (name,)).fetchone()
        meta = {k: v for k, v in json.loads(row[1]).items() if k != "files"}
        new = manifest.build(Path(row[0]), **meta)
        conn.execute("UPDATE model_versions SET manifest=?, artifact_digest=?, seal=? WHERE model=? AND version=1",
                     (audit.canonical(new), manifest.digest(new), manifest.seal(new, key), name))
    finally:
        conn.close()


def _source(root: Path, name: str) -> Path:
    conn = sqlite3.connect(root / ".mlplat" / "dev" / "platform.db")
    try:
        row = conn.execute("SELECT source FROM model_versions WHERE model=? AND version=1", (name,)).fetchone()
        return Path(row[0])
    finally:
        conn.close()


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    """A project with ``scorer`` v1 (skops) and ``rules`` v1 (pyfunc) whose model files an attacker
    replaced and resealed with the stack's key; the payload module is importable through PYTHONPATH
    (in every process the platform starts, as a malicious package installed beside the platform would be)."""
    root = write_project(tmp_path_factory.mktemp("trust") / "project", {"dev": _stack()})
    payload_dir = root.parent / "payload"
    payload_dir.mkdir()
    (payload_dir / "evil_payload.py").write_text(PAYLOAD)
    # staging endpoints as processes of this machine, where the payload is installed (a container image holds only
    # what its package locked, so the payload would not be there to run)
    env = {**os.environ, "MLPLAT_PROJECT_DIR": str(root), "MLPLAT_USER": AUTHOR, "MLPLAT_CONTAINER_ENGINE": "none",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(payload_dir), os.environ.get("PYTHONPATH")]))}
    env.pop("MLPLAT_STACK", None)
    env.pop("MLPLAT_TEST_MARKER_DIR", None)
    up = run_cli("up", "--stack", "dev", "--yes", cwd=root, env=env)
    assert up.returncode == 0, up.stderr
    trained = subprocess.run([sys.executable, "-c", TRAIN], cwd=root, env=env, capture_output=True, text=True,
                             timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]

    import cloudpickle
    import skops.io

    sys.path.insert(0, str(payload_dir))
    try:
        import evil_payload

        scorer = _source(root, "scorer")
        skops.io.dump(evil_payload.Evil("x"), scorer / "model.skops")
        mlmodel = yaml.safe_load((scorer / "MLmodel").read_text())
        mlmodel["flavors"]["sklearn"]["skops_trusted_types"] = ["evil_payload.Evil"]
        (scorer / "MLmodel").write_text(yaml.safe_dump(mlmodel))
        (_source(root, "rules") / "python_model.pkl").write_bytes(cloudpickle.dumps(evil_payload.Carrier()))
    finally:
        sys.path.remove(str(payload_dir))
        sys.modules.pop("evil_payload", None)
    _reseal(root, "scorer")
    _reseal(root, "rules")
    return root, env, payload_dir


def _promote(root: Path, env: dict, name: str, markers: Path) -> tuple[int, subprocess.CompletedProcess]:
    """Run `mlplat models promote NAME 1 --to staging` as its own process; return its pid and result."""
    proc = subprocess.Popen([str(BIN / "mlplat"), "models", "promote", name, "1", "--to", "staging"], cwd=root,
                            env={**env, "MLPLAT_TEST_MARKER_DIR": str(markers)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=600)
    return proc.pid, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_resealed_skops_model_with_a_foreign_type_is_refused_and_never_runs(attacked, tmp_path):
    root, env, payload_dir = attacked
    markers = tmp_path / "markers"
    markers.mkdir()
    pid, result = _promote(root, env, "scorer", markers)
    assert result.returncode == 8, (result.stdout, result.stderr)
    assert "allow-list" in result.stderr and "evil_payload.Evil" in result.stderr, result.stderr
    assert list(markers.iterdir()) == []  # refused before anything was rebuilt, in any process
    # Live payload: MLflow's own loader, which trusts the types MLmodel lists, does run it.
    load = f"import mlflow.sklearn; mlflow.sklearn.load_model({str(_source(root, 'scorer'))!r})"
    check = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, timeout=300,
                           env={**env, "MLPLAT_TEST_MARKER_DIR": str(markers),
                                "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"})
    assert len(list(markers.iterdir())) == 1, check.stderr[-2000:]


def test_resealed_pickle_runs_only_outside_the_promoting_process(attacked, tmp_path):
    root, env, payload_dir = attacked
    markers = tmp_path / "markers"
    markers.mkdir()
    pid, result = _promote(root, env, "rules", markers)
    ran_in = sorted(int(p.name.split("-")[1]) for p in markers.iterdir())
    assert pid not in ran_in, f"the pickle ran inside `mlplat models promote` (pid {pid})"
    assert ran_in, "the payload never ran: the scoring child and the staging server should have loaded it"
    assert result.returncode == 0, result.stderr  # pickle flavors still promote, scored in a child process
    assert "now staging" in result.stdout


def test_gate_in_this_process_never_unpickles(attacked, tmp_path, monkeypatch):
    """The gate called as a library (as the dashboard or a notebook would) scores pickles in a child too."""
    root, env, payload_dir = attacked
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("MLPLAT_TEST_MARKER_DIR", str(markers))
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    monkeypatch.setenv("MLPLAT_USER", AUTHOR)
    from mlplat.context import Context
    from mlplat.errors import IntegrityError
    from mlplat.services import gate

    ctx = Context(project_dir=root)
    spec = ctx.stack("dev")
    report = gate.run_gate(spec, ctx, "rules", 1, "dev", record=False)
    assert report["metrics"]["accuracy"] == 1.0
    ran_in = [int(p.name.split("-")[1]) for p in markers.iterdir()]
    assert ran_in and os.getpid() not in ran_in
    with pytest.raises(IntegrityError, match="allow-list"):
        gate.run_gate(spec, ctx, "scorer", 1, "dev", record=False)
    assert os.getpid() not in [int(p.name.split("-")[1]) for p in markers.iterdir()]
