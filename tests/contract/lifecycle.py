"""Building blocks of the lifecycle tests, provider-neutral: a project, training, contexts.

Training runs in this process (``autolog=False``), so an in-process moto (``mock_aws``)
sees the registry's calls; the model is a small scikit-learn classifier on generated data.
"""
from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import write_project

AUTHOR = "ds@example.com"
APPROVER = "risk-office@example.com"


def make_data(project: Path) -> None:
    import pandas as pd
    from sklearn.datasets import make_classification

    data = project / "data"
    data.mkdir(exist_ok=True)
    X, y = make_classification(n_samples=900, n_features=6, n_informative=4, random_state=7)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)])
    frame["label"] = y
    frame.iloc[:600].to_parquet(data / "train.parquet", index=False)
    frame.iloc[600:].to_parquet(data / "holdout.parquet", index=False)


def new_project(root: Path, stacks: dict[str, str]) -> Path:
    write_project(root, stacks)
    make_data(root)
    return root


def context(project: Path, user: str = AUTHOR):
    from rich.console import Console

    from mlplat.context import Context

    return Context(project_dir=project, console=Console(file=open(os.devnull, "w")),
                   err=Console(file=open(os.devnull, "w")), _user=user)


def train(project: Path, stack: str, *, c: float = 1.0, name: str = "scorer") -> int:
    """A tracked run on ``stack`` that registers ``name``; returns the new version."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import mlplat

    ctx = context(project)
    train_frame = pd.read_parquet(project / "data" / "train.parquet")
    X, y = train_frame.drop(columns=["label"]), train_frame["label"]
    with mlplat.start_run(experiment=name, datasets={"train": "data/train.parquet"}, stack=stack, autolog=False,
                          ctx=ctx) as run:
        model = LogisticRegression(C=c, max_iter=500).fit(X, y)
        return run.log_model(model, name=name, input_example=X.head(3),
                             holdout={"path": "data/holdout.parquet", "label": "label"})


def promote(project: Path, stack: str, version: int, target: str, name: str = "scorer", user: str = AUTHOR) -> dict:
    from mlplat.services import promotion

    ctx = context(project, user)
    return promotion.promote(ctx.stack(stack), ctx, name, version, target)


def approve(project: Path, stack: str, version: int, *, decision: str = "approved", name: str = "scorer",
            user: str = APPROVER) -> dict:
    from mlplat.services import approvals

    ctx = context(project, user)
    return approvals.decide(ctx.stack(stack), ctx, name, version, decision=decision, reason="checked the holdout")


def serving(project: Path, stack: str, user: str = AUTHOR):
    from mlplat import providers
    from mlplat.contracts import Capability

    ctx = context(project, user)
    return providers.capability(ctx.stack(stack), ctx, Capability.SERVING)
