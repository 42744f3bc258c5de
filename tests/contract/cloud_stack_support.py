"""A cloud stack file for the contract tests: the same team, tags, governance, gate, serving and budget
on every cloud; each provider's support module names its config keys, provider block and instance type.
Also the projects a cloud's pipeline tests package: a one-file archive, a committed git project."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

APPROVERS = "[risk-office@example.com, head-of-ds@example.com]"
GIT = ["git", "-c", "user.email=ds@example.com", "-c", "user.name=ds", "-c", "commit.gpgsign=false"]


def train_archive(path: Path, data: bytes = b"print('train')\n") -> Path:
    """A project archive (``.tar.gz``) at ``path`` holding one file, train.py, of ``data``."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def commit_pipelines_project(root: Path) -> None:
    """train.py, a .gitignore of the state folder and the example pipelines in ``root``, committed to a new git
    repository (what `mlplat pipeline schedule` packages at its commit)."""
    import shutil
    import subprocess

    from tests.conftest import REPO

    (root / "train.py").write_text("print('training')\n")
    (root / ".gitignore").write_text(".mlplat/\n")
    shutil.copytree(REPO / "examples" / "pipelines", root / "examples" / "pipelines")
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "project"]):
        subprocess.run([*GIT, *args], cwd=root, check=True, capture_output=True)


def cloud_stack_text(*, cloud_config: Sequence[str], provider: Sequence[str], instance_type: str,
                     price_per_hour: str, environment: str = "production", risk: str = "critical",
                     approvers: str = APPROVERS, extra: str = "") -> str:
    """The stack file's text. ``cloud_config``: the cloud's own config lines (``  aws:region: ...``);
    ``provider``: the lines under ``mlplat:provider:`` (``    kind: aws``, ...)."""
    lines = [
        "config:",
        *cloud_config,
        "  mlplat:team: fraud",
        f"  mlplat:environment: {environment}",
        "  mlplat:provider:",
        *provider,
        "  mlplat:tags:",
        "    team: fraud",
        "    cost-center: CC-1042",
        f"    environment: {environment}",
        "    owner: fraud-leads@example.com",
        "  mlplat:governance:",
        f"    riskTier: {risk}",
        f"    approvers: {approvers}",
        "    requiredApprovals: 1",
        "  mlplat:gate:",
        "    holdout: {path: data/holdout.parquet, label: label}",
        "    thresholds: {roc_auc: 0.70, accuracy: 0.60}",
        "  mlplat:serving:",
        f"    instanceType: {instance_type}",
        f"    pricePerHour: {price_per_hour}",
        "    canary: {steps: [10, 50, 100], bakeSeconds: 0, minRequests: 5}",
        "  mlplat:budget: {monthlyUsd: 5000}",
        "  mlplat:access: {mode: trusted-local}",  # the tests play several people with MLPLAT_USER
    ]
    return "\n".join(lines) + "\n" + extra
