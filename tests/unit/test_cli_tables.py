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
