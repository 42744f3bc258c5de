"""Fixtures for registry tests: a provisioned project with one registered model, built once per module.

Training runs in a subprocess (as a user's script would), so MLflow's global state never
leaks into the test process. A second stack file, ``strict``, shares the dev stack's state
folder but demands an impossible gate, to exercise failures on the same registry.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli, write_project

AUTHOR = "ds@example.com"
APPROVER = "risk-office@example.com"

TRAIN = textwrap.dedent("""
    import sys
    from pathlib import Path
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    import mlplat

    name, seed = sys.argv[1], int(sys.argv[2])
    data = Path("data"); data.mkdir(exist_ok=True)
    X, y = make_classification(n_samples=1200, n_features=6, n_informative=4, random_state=7)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)]); frame["label"] = y
    frame.iloc[:900].to_parquet(data / "train.parquet", index=False)
    frame.iloc[900:].to_parquet(data / "holdout.parquet", index=False)
    train = pd.read_parquet(data / "train.parquet")
    with mlplat.start_run(experiment=name, datasets={"train": "data/train.parquet"}) as run:
        model = LogisticRegression(C=1.0 / seed, max_iter=500).fit(train.drop(columns=["label"]), train["label"])
        version = run.log_model(model, name=name, input_example=train.drop(columns=["label"]).head(3),
                                holdout={"path": "data/holdout.parquet", "label": "label"})
        print(f"VERSION {version}")
""")


def stack_text(approvers: list[str], thresholds: str = "{roc_auc: 0.70, accuracy: 0.60}", required: int = 1,
               risk: str = "critical") -> str:
    text = (REPO / "stacks" / "Pulumi.dev.yaml").read_text()
    text = text.replace("approvers: [risk-office@example.com, head-of-ds@example.com]", f"approvers: [{', '.join(approvers)}]")
    text = text.replace("requiredApprovals: 1", f"requiredApprovals: {required}")
    text = text.replace("credit-risk: {riskTier: critical}", f"credit-risk: {{riskTier: critical}}\n      scorer: {{riskTier: {risk}}}")
    text = text.replace("thresholds: {roc_auc: 0.80, accuracy: 0.70}", f"thresholds: {thresholds}")
    return text


def train(project: Path, name: str = "scorer", seed: int = 1, env: dict | None = None) -> int:
    full = {**os.environ, "MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": AUTHOR, **(env or {})}
    full.pop("MLPLAT_STACK", None)
    done = subprocess.run([sys.executable, "-c", TRAIN, name, str(seed)], cwd=project, env=full,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.split("VERSION ")[1].split()[0])


def make_registered_project(root: Path) -> Path:
    strict = stack_text([APPROVER, AUTHOR], thresholds="{roc_auc: 0.999, brier: 0.001}").replace(
        "stateDir: .mlplat/dev", "stateDir: .mlplat/dev")
    write_project(root, {"dev": stack_text([APPROVER, AUTHOR]), "strict": strict})
    up = run_cli("up", "--stack", "dev", "--yes", cwd=root, env={"MLPLAT_PROJECT_DIR": str(root)})
    assert up.returncode == 0, up.stderr
    assert train(root) == 1
    return root


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> Path:
    """A project whose dev stack has ``scorer`` version 1 registered by ds@example.com (critical model)."""
    return make_registered_project(tmp_path_factory.mktemp("registry") / "project")


@pytest.fixture
def in_project(registered, monkeypatch):
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(registered))
    monkeypatch.setenv("MLPLAT_USER", AUTHOR)
    monkeypatch.delenv("MLPLAT_STACK", raising=False)
    monkeypatch.chdir(registered)
    return registered


def cli_in(project: Path, *args: str, user: str = AUTHOR, env: dict | None = None, timeout: float = 300):
    return run_cli(*args, cwd=project, env={"MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": user, **(env or {})},
                   timeout=timeout)


def db(project: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(project / ".mlplat" / "dev" / "platform.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def spec_ctx(project: Path, stack: str = "dev", user: str = AUTHOR):
    from rich.console import Console

    from mlplat.context import Context

    ctx = Context(project_dir=project, console=Console(file=open(os.devnull, "w")), _user=user)
    return ctx.stack(stack), ctx


# --- the same command embedded and through a served ledger: ``served`` is ``(project, ServerProcess)`` ---


def remote(served, *args: str, user: str = AUTHOR):
    """``mlplat ARGS`` in the project as a client of its server."""
    project, server = served
    return cli_in(project, *args, user=user, env=server.client_env())


def embedded(served, *args: str, user: str = AUTHOR):
    """``mlplat ARGS`` in the project on its own ledger."""
    project, _ = served
    return cli_in(project, *args, user=user)
