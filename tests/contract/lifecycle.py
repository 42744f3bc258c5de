"""Building blocks of the lifecycle tests, provider-neutral: a project, training, contexts.

Training runs in this process (``autolog=False``), so an in-process moto (``mock_aws``)
sees the registry's calls; the model is a small scikit-learn classifier on generated data.
Everything else a user does goes through the stack's control plane
(``mlplat.api.plane.plane_for``): this process when the stack is embedded, ``mlplat server``
when ``MLPLAT_CONTROL_PLANE_URL`` names one. :func:`platform_serving` is the serving capability
of a platform component beside the ledger (the gateway's controller), never a client's.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


def call(project: Path, stack: str, operation: str, *, user: str = AUTHOR, **params: Any) -> Any:
    """One platform operation as ``user``, through the stack's control plane; its JSON result."""
    from mlplat.api.plane import plane_for

    ctx = context(project, user)
    plane = plane_for(ctx.stack(stack), ctx)
    try:
        return plane.call(operation, **params)
    finally:
        plane.close()


def plane_mode(project: Path, stack: str) -> str:
    """``embedded`` or ``server``: where a client's operations on ``stack`` run."""
    from mlplat.api.plane import plane_for

    ctx = context(project)
    plane = plane_for(ctx.stack(stack), ctx)
    plane.close()
    return plane.mode


def promote(project: Path, stack: str, version: int, target: str, name: str = "scorer", user: str = AUTHOR) -> dict:
    return call(project, stack, "models.promote", user=user, name=name, version=version, target=target)


def approve(project: Path, stack: str, version: int, *, decision: str = "approved", name: str = "scorer",
            user: str = APPROVER) -> dict:
    operation = {"approved": "models.approve", "rejected": "models.reject"}[decision]
    return call(project, stack, operation, user=user, name=name, version=version, reason="checked the holdout")


def show(project: Path, stack: str, version: int, *, environment: str | None = None, name: str = "scorer") -> dict:
    """``models.show``: stage, lineage, author, approvals of one version."""
    return call(project, stack, "models.show", name=name, version=version, environment=environment)


class Deployments:
    """Deploy, show, rollout status and rollback of a user, as platform operations."""

    def __init__(self, project: Path, stack: str, user: str = AUTHOR):
        self.project, self.stack, self.user = project, stack, user

    def _call(self, operation: str, **params: Any) -> dict:
        return call(self.project, self.stack, operation, user=self.user, **params)

    def deploy(self, model: str, version: int, **params: Any) -> dict:
        return self._call("deployments.create", model=model, version=version, **params)

    def show(self, model: str, **params: Any) -> dict:
        return self._call("deployments.show", model=model, **params)

    def rollout_status(self, model: str, **params: Any) -> dict:
        return self._call("rollouts.status", model=model, **params)

    def rollback(self, model: str, **params: Any) -> dict:
        return self._call("deployments.rollback", model=model, **params)


def deployments(project: Path, stack: str, user: str = AUTHOR) -> Deployments:
    return Deployments(project, stack, user)


def platform_serving(project: Path, stack: str, *, database_url: str | None = None):
    """The serving capability of a platform process that owns the ledger (``database_url``: the
    server's, when it is not the state directory's SQLite)."""
    from mlplat import providers
    from mlplat.contracts import Capability

    ctx = context(project)
    ctx.ledger_owner, ctx.database_url = True, database_url
    return providers.capability(ctx.stack(stack), ctx, Capability.SERVING)


def serving(project: Path, stack: str, user: str = AUTHOR):
    """The stack's serving capability in this process (embedded stacks only: it opens the ledger here)."""
    from mlplat import providers
    from mlplat.contracts import Capability

    ctx = context(project, user)
    return providers.capability(ctx.stack(stack), ctx, Capability.SERVING)
