"""Tables and completion on a real project: a registered, staged and deployed model, its runs.

Commands run as a user's shell runs them, piped, with $COLUMNS set; completion is driven through
click's own protocol (``_MLPLAT_COMPLETE=bash_complete`` with ``COMP_WORDS``/``COMP_CWORD``), the
way the script `mlplat completion bash` prints asks for it.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.support_registry import AUTHOR, make_registered_project

pytestmark = [pytest.mark.integration]

ZONED = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z+\-0-9]+"


def cli(project: Path, *args: str, columns: int | None = None, env: dict | None = None):
    extra = {"MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": AUTHOR, **(env or {})}
    if columns is not None:
        extra["COLUMNS"] = str(columns)
    return run_cli(*args, cwd=project, env=extra)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = make_registered_project(tmp_path_factory.mktemp("tables") / "project")
    # a stack of the project that was never provisioned on this machine
    dev = (root / "stacks" / "Pulumi.dev.yaml").read_text()
    (root / "stacks" / "Pulumi.ghost.yaml").write_text(dev.replace("stateDir: .mlplat/dev", "stateDir: .mlplat/ghost"))
    for args in (("models", "promote", "scorer", "1", "--to", "staging"), ("deploy", "scorer", "1")):
        done = cli(root, *args)
        assert done.returncode == 0, done.stderr
    return root


@pytest.fixture(scope="module")
def facts(project) -> dict:
    version = json.loads(cli(project, "models", "list", "--json").stdout)["versions"][0]
    runs = json.loads(cli(project, "runs", "list", "--json").stdout)
    return {"run_id": version["run_id"], "digest": version["artifact_digest"], "runs": [r["run_id"] for r in runs]}


def body_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("│")]


@pytest.mark.parametrize("columns, dropped", [
    (100, "digest, task, framework, run"),
    (80, "digest, task, framework, run, author"),
])
def test_models_list_fits_columns_and_says_what_it_left_out(project, columns, dropped):
    result = cli(project, "models", "list", columns=columns)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert all(len(line) <= columns for line in out.splitlines())
    [row] = body_lines(out)
    assert [cell.strip() for cell in row.strip("│").split("│")][:3] == ["scorer", "1", "staging"]
    assert f"left out to fit {columns} columns: {dropped}" in " ".join(out.split())
    assert "…" not in out


def test_models_list_wide_shows_every_column_with_the_full_run_id_and_digest(project, facts):
    out = cli(project, "models", "list", "--wide", columns=80).stdout
    assert facts["run_id"] in out and facts["digest"] in out and "sklearn" in out
    assert "left out" not in out
    assert re.search(ZONED, out)


def test_runs_list_shows_full_ids_at_80_columns_and_a_prefix_names_a_run(project, facts):
    out = cli(project, "runs", "list", columns=80).stdout
    for run_id in facts["runs"]:
        assert run_id in out
    assert "left out to fit 80 columns: metrics" in out
    shown = cli(project, "runs", "show", facts["run_id"][:7], columns=100)
    assert shown.returncode == 0, shown.stderr
    assert f"run {facts['run_id']}" in shown.stdout
    assert re.search(rf"started {ZONED}", shown.stdout)


def test_an_unknown_run_prefix_is_not_found(project):
    result = cli(project, "runs", "show", "zzzz")
    assert result.returncode == 4 and "run 'zzzz' not found" in result.stderr


def test_runs_show_says_how_many_schema_columns_it_did_not_print(project, facts):
    out = " ".join(cli(project, "runs", "show", facts["run_id"], columns=200).stdout.split())
    assert "and 1 more column (--wide lists them)" in out  # label + x0..x5: 7 columns, 6 printed
    assert "x5:double" not in out
    wide = " ".join(cli(project, "runs", "show", facts["run_id"], "--wide", columns=200).stdout.split())
    assert "x5:double" in wide and "more column" not in wide


def test_models_show_prints_deployments_as_a_table_with_zoned_dates(project):
    out = cli(project, "models", "show", "scorer", "1", columns=100).stdout
    table = out.split("deployments")[-1]
    assert "deployment: " not in out and "started_at=" not in out  # no raw records
    [row] = body_lines(table)
    cells = [cell.strip() for cell in row.strip("│").split("│")]
    assert cells[:2] == ["dev", "primary"] and re.fullmatch(ZONED, cells[2]) and cells[3] == "serving now"


# --- completion ----------------------------------------------------------------------------------


def complete(project: Path, *words: str, env: dict | None = None) -> list[str]:
    """What bash would offer after ``mlplat WORDS`` (the last word is the one being completed)."""
    line = ["mlplat", *words]
    result = cli(project, env={"_MLPLAT_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(line),
                               "COMP_CWORD": str(len(line) - 1), **(env or {})})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [item.split(",", 1)[1] for item in result.stdout.splitlines() if item]  # nothing offered: one empty line


def ledger_hash(project: Path) -> str:
    return hashlib.sha256((project / ".mlplat" / "dev" / "platform.db").read_bytes()).hexdigest()


def test_completion_offers_stacks_models_versions_and_run_ids_and_writes_nothing(project, facts):
    before = ledger_hash(project)
    assert complete(project, "runs", "list", "--stack", "") == ["dev", "ghost", "strict"]
    assert complete(project, "runs", "list", "--stack", "gh") == ["ghost"]
    assert complete(project, "models", "show", "") == ["scorer"]
    assert complete(project, "models", "show", "sc") == ["scorer"]
    assert complete(project, "models", "promote", "scorer", "") == ["1"]
    assert complete(project, "models", "show", "scorer", "v") == ["v1"]
    assert complete(project, "runs", "show", facts["run_id"][:4]) == [facts["run_id"]]
    assert sorted(complete(project, "runs", "compare", "")) == sorted(facts["runs"])
    assert ledger_hash(project) == before


def test_completion_on_a_stack_never_provisioned_offers_nothing_and_creates_nothing(project):
    assert complete(project, "models", "show", "--stack", "ghost", "") == []
    assert complete(project, "runs", "show", "--stack", "ghost", "") == []
    assert complete(project, "models", "show", "--stack", "nosuch", "") == []  # no such stack file: quietly nothing
    assert not (project / ".mlplat" / "ghost").exists()


@pytest.mark.parametrize("shell, marker", [("bash", "_MLPLAT_COMPLETE=bash_complete"),
                                           ("zsh", "_MLPLAT_COMPLETE=zsh_complete"),
                                           ("fish", "_MLPLAT_COMPLETE=fish_complete")])
def test_completion_prints_the_script_for_each_shell(project, shell, marker):
    result = cli(project, "completion", shell)
    assert result.returncode == 0 and marker in result.stdout


def test_completion_for_an_unknown_shell_is_a_usage_error(project):
    result = cli(project, "completion", "tcsh")
    assert result.returncode == 2 and "tcsh" in result.stderr
