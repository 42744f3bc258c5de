"""Which pipeline retrains a model: the stack's monitoring.retrain.pipeline, else a pipeline of the
stack whose model it is, else none (monitoring.retrain.command runs)."""
from __future__ import annotations

import shutil

import pytest

from mlplat.context import Context
from mlplat.errors import StackError
from mlplat.services import pipelines as service
from tests.conftest import REPO, write_project


def stack(retrain: str) -> str:
    return (REPO / "stacks" / "Pulumi.dev.yaml").read_text().split("  mlplat:monitoring:")[0] + f"""\
  mlplat:monitoring:
    retrain: {retrain}
  mlplat:access: {{mode: trusted-local}}
"""


def test_the_declared_pipeline_file_retrains_the_model(tmp_path):
    root = write_project(tmp_path / "p", {"dev": stack("{pipeline: examples/pipelines/credit_risk.py}")})
    shutil.copytree(REPO / "examples" / "pipelines", root / "examples" / "pipelines")
    ctx = Context(project_dir=root)
    spec = ctx.stack("dev")
    assert spec.monitoring.retrain.command is None
    found = service.for_model(spec, ctx, "credit-risk")
    assert found is not None and found.name == "credit-risk"
    assert [s.name for s in found.steps] == ["prepare", "train", "evaluate", "register", "promote"]


def test_without_a_pipeline_for_the_model_the_command_runs(tmp_path):
    root = write_project(tmp_path / "p", {"dev": stack("{command: python train.py}")})
    ctx = Context(project_dir=root)
    assert service.for_model(ctx.stack("dev"), ctx, "credit-risk") is None


def test_a_retrain_rule_needs_a_command_or_a_pipeline(tmp_path):
    root = write_project(tmp_path / "p", {"dev": stack("{violationWindows: 1, evaluationWindows: 2}")})
    with pytest.raises(StackError, match="retraining needs a 'command' or a 'pipeline' to run"):
        Context(project_dir=root).stack("dev")
