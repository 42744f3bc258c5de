"""Tables that fit the terminal: priorities decide what is left out, and nothing a reader copies is cut.

Also: timestamps name their zone, a piped console takes its width from $COLUMNS, and a run is found
by a unique prefix of its id (the one resolver every command uses)."""
from __future__ import annotations

import io
import re
from datetime import UTC
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from mlplat.cli.models import LIST_COLUMNS
from mlplat.cli.runs import RUN_COLUMNS
from mlplat.contracts.tracking import ExperimentTracker, RunRecord
from mlplat.errors import Ambiguous, ExitCode, NotFound
from mlplat.formatting import Column, fit, print_table, when

RUN_A = "9f1c2e3d4b5a69788796a5b4c3d2e1f0"
RUN_B = "9f1c77aa00bb11cc22dd33ee44ff5566"
DIGEST = "f7ea8dda4b384b3a0c1d2e3f405162738495a6b7c8d9eaf0b1c2d3e4f5061728"
T0 = 1_764_662_898.0  # 2025-12-02 08:08:18 UTC


def render(columns, rows, width: int, **kw) -> tuple[str, list[str]]:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, legacy_windows=False)
    fitted = print_table(console, columns, rows, **kw)
    return buffer.getvalue(), fitted.dropped


def model_rows() -> list[list[str]]:
    return [["credit-risk-scorer", "12", "[green]production[/]", "critical", when(T0, UTC), "ds@example.com", RUN_A,
             "sklearn", "classification", DIGEST[:12]],
            ["fraud", "3", "staging", "low", when(T0, UTC), "other@example.com", RUN_B, "xgboost", "-", DIGEST[:12]]]


def lines_of(text: str) -> list[str]:
    return text.splitlines()


@pytest.mark.parametrize("width, dropped", [
    (100, ["digest", "task", "framework", "run", "author"]),
    (80, ["digest", "task", "framework", "run", "author", "registered"]),
])
def test_models_table_keeps_names_versions_stages_and_drops_lowest_priority_first(width, dropped):
    out, left_out = render(LIST_COLUMNS, model_rows(), width)
    assert left_out == dropped
    assert all(len(line) <= width for line in lines_of(out))
    for value in ("credit-risk-scorer", "production", "staging", "fraud", "12"):
        assert value in out  # whole, on one line
    assert "…" not in out
    assert f"left out to fit {width} columns: {', '.join(dropped)}" in out.replace("\n", " ")


def test_wide_shows_every_column_and_the_full_run_id_beyond_the_terminal():
    out, left_out = render(LIST_COLUMNS, model_rows(), 80, wide=True)
    assert left_out == []
    assert RUN_A in out and RUN_B in out and "classification" in out and "ds@example.com" in out
    assert max(len(line) for line in lines_of(out)) > 80  # wider than the terminal on purpose
    assert "left out" not in out


def test_run_ids_are_shown_whole_at_80_columns():
    rows = [[RUN_A, "credit-risk", "bright-owl-12", "FINISHED", "ds@example.com", when(T0, UTC), "4.7s", "a1b2c3d4",
             "roc_auc=0.9312, accuracy=0.8841"]]
    out, left_out = render(RUN_COLUMNS, rows, 80)
    assert RUN_A in out  # one line, not folded, not cut
    assert left_out == ["metrics", "commit", "took", "user", "started"]
    assert "FINISHED" in out and "bright-owl-12" in out


def test_money_is_never_cut_even_when_the_must_keep_columns_barely_fit():
    columns = [Column("team"), Column("cost_usd", justify="right"), Column("cost_per_prediction_usd", justify="right"),
               Column("instance_hours", 4, justify="right"), Column("busy_seconds", 5, justify="right")]
    rows = [["fraud-detection", "$12,345.6789", "$0.000123", "1234.5", "98765.4"]]
    out, left_out = render(columns, rows, 70)
    assert left_out == ["busy_seconds", "instance_hours"]
    assert "$12,345.6789" in out and "$0.000123" in out


def test_a_table_narrower_than_its_must_keep_columns_folds_cells_instead_of_cutting_them():
    out, left_out = render(RUN_COLUMNS, [[RUN_A, "credit-risk", "n", "FINISHED", "u", "-", "-", "-", ""]], 30)
    assert "status" in left_out
    body = out.split("┩")[1].split("└")[0].strip().splitlines()
    assert "".join(line.split("│")[1].strip() for line in body) == RUN_A  # every character, in order
    assert all(len(line) <= 30 for line in lines_of(out))


def test_wrapping_columns_wrap_rather_than_being_dropped_when_their_words_fit():
    columns = [Column("id"), Column("reason", 1, wrap=True)]
    fitted = fit(columns, [["abc", "a long free-text reason that wraps over several lines"]], width=30)
    assert fitted.dropped == [] and fitted.shown == ["id", "reason"]


def test_timestamps_name_their_zone():
    assert when(T0, UTC) == "2025-12-02 08:08:18 UTC"
    assert when(T0, ZoneInfo("Europe/Paris")) == "2025-12-02 09:08:18 CET"
    assert when(None) == "-" and when(0) == "-"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+", when(T0))  # local zone, named


def test_a_piped_console_takes_its_width_from_columns(monkeypatch):
    from mlplat.context import _console

    monkeypatch.setattr("sys.stdout", io.StringIO())
    monkeypatch.setenv("COLUMNS", "100")
    assert _console(False).width == 100
    monkeypatch.setenv("COLUMNS", "nonsense")
    assert _console(False).width == 160
    monkeypatch.delenv("COLUMNS")
    assert _console(False).width == 160


# --- run ids: a unique prefix anywhere a run is named -------------------------------------------


class Runs(ExperimentTracker):
    """The reading half of a tracker over a fixed list of runs."""

    def __init__(self, ids: list[str]):
        self.runs = [RunRecord(i, "exp", f"run-{n}", "FINISHED", "u", T0, T0 + 1) for n, i in enumerate(ids)]

    def get_run(self, run_id):
        for r in self.runs:
            if r.run_id == run_id:
                return r
        raise NotFound(f"run '{run_id}' not found")

    def list_runs(self, *, experiment=None, limit=50):
        return self.runs[:limit]

    def start_run(self, experiment, *, name, tags):
        raise NotImplementedError

    def log_batch(self, run_id, *, params=None, metrics=(), tags=None):
        raise NotImplementedError

    def log_artifact(self, run_id, local_path, artifact_path=None):
        raise NotImplementedError

    def end_run(self, run_id, status):
        raise NotImplementedError

    def metric_history(self, run_id, key):
        raise NotImplementedError

    def download_artifacts(self, run_id, path, dst):
        raise NotImplementedError


def test_a_unique_prefix_names_its_run_and_a_full_id_always_does():
    tracker = Runs([RUN_A, RUN_B, "0" * 32])
    assert tracker.resolve_run("9f1c2").run_id == RUN_A
    assert tracker.resolve_run(RUN_B).run_id == RUN_B
    assert tracker.resolve_run(" 0000 ").run_id == "0" * 32


def test_an_ambiguous_prefix_lists_the_candidates_and_chooses_none():
    with pytest.raises(Ambiguous) as caught:
        Runs([RUN_A, RUN_B]).resolve_run("9f1c")
    error = caught.value
    assert error.exit_code == ExitCode.NOT_FOUND
    assert RUN_A in error.message and RUN_B in error.message and "matches 2 runs" in error.message
    assert error.details["candidates"] == [RUN_A, RUN_B] and "more characters" in (error.hint or "")


def test_no_match_and_an_empty_reference_are_not_found():
    with pytest.raises(NotFound, match="run 'abc' not found"):
        Runs([RUN_A]).resolve_run("abc")
    with pytest.raises(NotFound, match="no run id given"):
        Runs([RUN_A]).resolve_run("  ")


# --- every CLI table goes through the fitted-table mechanism ----------------------------------------


def table_builders(source: str) -> list[str]:
    """Where ``source`` imports rich.table or calls a ``Table`` (by name or as an attribute)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rich.table"):
            found.append(f"{node.lineno}: imports rich.table")
        elif isinstance(node, ast.Import) and any(a.name.startswith("rich.table") for a in node.names):
            found.append(f"{node.lineno}: imports rich.table")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name == "Table" or (name == "grid" and "Table" in ast.unparse(func)):
                found.append(f"{node.lineno}: builds a Table")
    return found


def test_no_cli_module_builds_a_rich_table_of_its_own():
    """A command that builds ``rich.table.Table`` itself would crop ids and ignore --wide: only
    mlplat/formatting.py may (every table in mlplat/cli/ goes through ``print_table``)."""
    from pathlib import Path

    import mlplat.cli

    modules = sorted(Path(mlplat.cli.__file__).parent.glob("*.py"))
    assert len(modules) > 10
    offenders = [f"{path.name}:{where}" for path in modules for where in table_builders(path.read_text())]
    assert offenders == [], "build CLI tables with mlplat.formatting.print_table: " + "; ".join(offenders)


@pytest.mark.parametrize("source", [
    "from rich.table import Table\n",
    "import rich.table\n",
    "def f():\n    from rich import table\n    return table.Table('a')\n",
    "def f(Table):\n    return Table('a', 'b', title='x')\n",
    "def f(rich):\n    return rich.table.Table.grid()\n",
])
def test_the_guard_sees_every_way_of_building_a_table(source):
    assert table_builders(source)


def test_the_guard_lets_fitted_tables_through():
    assert table_builders("from mlplat.formatting import print_table\nprint_table(c, cols, rows, wide=True)\n") == []


JOB = "train-20251202-080818-3f9a1c"


def test_training_jobs_keep_job_run_and_cost_whole_at_80_columns_and_wide_shows_all():
    from mlplat.cli.train import JOB_COLUMNS

    rows = [[JOB, "[green]SUCCEEDED[/]", "ml.m5.xlarge", when(T0, UTC), "412.3s", "$1,234.5678", RUN_A,
             "credit-risk-scorer v12"]]
    out, left_out = render(JOB_COLUMNS, rows, 80)
    assert all(len(line) <= 80 for line in lines_of(out))
    for value in (JOB, "SUCCEEDED", "$1,234.5678"):
        assert value in out
    assert "…" not in out
    assert left_out and left_out[0] == "run" and "cost_usd" not in left_out and "job" not in left_out
    out, left_out = render(JOB_COLUMNS, rows, 80, wide=True)
    assert left_out == [] and RUN_A in out and "ml.m5.xlarge" in out and "credit-risk-scorer v12" in out


def test_feature_views_keep_view_and_version_and_drop_the_source_first():
    from mlplat.cli.features import VIEW_COLUMNS

    rows = [["customer_transactions_30d@3", "customer_id", "amount_sum_30d, amount_mean_30d, txn_count_30d", "30d",
             "data/transactions_with_a_long_name.parquet", "2025-12-02T08:00:00", "4", "credit-risk-scorer"]]
    out, left_out = render(VIEW_COLUMNS, rows, 80)
    assert "customer_transactions_30d@3" in out and all(len(line) <= 80 for line in lines_of(out))
    assert left_out[0] == "source" and "view" not in left_out
    assert "…" not in out
    out, left_out = render(VIEW_COLUMNS, rows, 80, wide=True)
    assert left_out == [] and "data/transactions_with_a_long_name.parquet" in out


def test_pipeline_runs_keep_the_full_run_id_and_state():
    from mlplat.cli.pipeline import RUN_COLUMNS as PIPELINE_RUNS
    from mlplat.cli.pipeline import STEP_COLUMNS

    rows = [[RUN_A, "credit-risk-training-pipeline", "[red]FAILED[/]", when(T0, UTC), "3/5"]]
    out, left_out = render(PIPELINE_RUNS, rows, 80)
    assert RUN_A in out and "credit-risk-training-pipeline" in out and "FAILED" in out
    assert left_out == ["steps", "started"]
    out, left_out = render(PIPELINE_RUNS, rows, 80, wide=True)
    assert left_out == [] and when(T0, UTC) in out and "3/5" in out
    steps = [["train_model_with_a_long_step_name", "[red]FAILED[/]", "3", "12.5s",
              "ValueError: could not convert string to float in column income_bracket_normalised"]]
    out, left_out = render(STEP_COLUMNS, steps, 80)
    assert "train_model_with_a_long_step_name" in out and "FAILED" in out and "…" not in out
    assert left_out == ["took", "attempts"]  # the reason wraps; the timing goes first


def test_rollout_decisions_keep_when_and_event_and_the_ab_readout_keeps_accuracy():
    from mlplat.cli.serving import AB_COLUMNS, EVENT_COLUMNS

    events = [[when(T0, UTC), "rolled_back", "2", "25%", "controller@example.com",
               "candidate error rate 0.12 above the stable 0.01 + 0.02 allowed"]]
    out, left_out = render(EVENT_COLUMNS, events, 60)
    assert when(T0, UTC) in out and "rolled_back" in out and "25%" in out
    assert left_out and "event" not in left_out and "when" not in left_out
    ab = [["candidate", "v12", "50%", "10432", "17", "12.4", "5210", "0.8841"]]
    out, left_out = render(AB_COLUMNS, ab, 50)
    assert all(value in out for value in ("candidate", "v12", "50%", "0.8841"))
    assert left_out[:2] == ["mean ms", "errors"]
    out, left_out = render(AB_COLUMNS, ab, 50, wide=True)
    assert left_out == [] and "10432" in out


def test_providers_honour_columns_when_piped_and_wide_shows_every_column():
    from tests.conftest import run_cli

    narrow = run_cli("providers", env={"COLUMNS": "45"})
    assert narrow.returncode == 0, narrow.stderr
    assert all(len(line) <= 45 for line in lines_of(narrow.stdout))
    assert "local" in narrow.stdout and "aws" in narrow.stdout
    assert "description" in narrow.stdout.split("left out to fit 45 columns:")[1]
    assert "--wide shows every column" in narrow.stdout.replace("\n", " ")
    wide = run_cli("providers", "--wide", env={"COLUMNS": "45"})
    assert wide.returncode == 0, wide.stderr
    assert "left out" not in wide.stdout and "Amazon SageMaker" in wide.stdout
