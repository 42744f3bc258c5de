"""`mlplat models evaluate`: the gate alone, as a pipeline's evaluate step runs it on SageMaker.

The step's entry writes the command's JSON and exit code into the report the pipeline's condition reads
(``passed``); exit 1 is the gate saying no, and the report is kept in the ledger either way.
"""
from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, run_cli
from tests.contract.lifecycle import new_project, train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    dev = (REPO / "stacks" / "Pulumi.dev.yaml").read_text().replace(
        "examples/sklearn_tabular/data/holdout.parquet", "data/holdout.parquet")
    strict = dev.replace("thresholds: {roc_auc: 0.80, accuracy: 0.70}", "thresholds: {roc_auc: 0.9999, accuracy: 0.70}"
                         ).replace("stateDir: .mlplat/dev", "stateDir: .mlplat/strict")
    assert strict != dev
    project = new_project(tmp_path_factory.mktemp("evaluate") / "project", {"dev": dev, "strict": strict})
    env = {"MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": "ds@example.com"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.chdir(project)
        for stack in ("dev", "strict"):
            assert run_cli("up", "--stack", stack, "--yes", cwd=project, env=env).returncode == 0
            assert train(project, stack) == 1
    return project, env


def test_a_passing_gate_prints_its_report_and_exits_0(trained):
    project, env = trained
    done = run_cli("models", "evaluate", "scorer", "1", "--stack", "dev", "--json", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] is True and {c["check"] for c in report["checks"]} >= {"min roc_auc", "min accuracy"}
    shown = json.loads(run_cli("models", "show", "scorer", "1", "--stack", "dev", "--json", cwd=project,
                               env=env).stdout)
    assert [r["digest"] for r in shown["gate_reports"]] == [report["digest"]]


def test_a_failing_gate_exits_1_naming_the_check_and_keeps_the_report(trained):
    project, env = trained
    done = run_cli("models", "evaluate", "scorer", "1", "--stack", "strict", "--json", cwd=project, env=env)
    assert done.returncode == 1
    assert json.loads(done.stdout)["passed"] is False
    assert "failed the evaluation gate (min roc_auc)" in done.stderr
    unknown = run_cli("models", "evaluate", "scorer", "9", "--stack", "dev", cwd=project, env=env)
    assert unknown.returncode == 4
