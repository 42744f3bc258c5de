"""`mlplat pipeline run | list | status | schedule`."""
from __future__ import annotations

from datetime import UTC
from typing import Any

import click

from mlplat.cli.options import emit_json, json_option, pass_ctx, stack_option, wide_option
from mlplat.formatting import Column, print_table, when

STATE_COLOUR = {"SUCCEEDED": "green", "CACHED": "cyan", "FAILED": "red", "RUNNING": "yellow", "PENDING": "white",
                "SKIPPED": "dim", "STOPPED": "dim"}


@click.group()
def pipeline() -> None:
    """Pipelines declared in Python: run (cached, retried, resumable), list, status, schedule."""


STEP_COLUMNS = (Column("step"), Column("state"), Column("attempts", 2, justify="right"), Column("took", 3, justify="right"),
                Column("detail", 1, wrap=True))
RUN_COLUMNS = (Column("run"), Column("pipeline"), Column("state"), Column("started", 1), Column("steps", 2, justify="right"))


def _print_status(ctx: Any, status: Any, *, wide: bool = False) -> None:
    colour = STATE_COLOUR.get(status.state, "white")
    rows = []
    for step in status.steps:
        took = f"{step.ended - step.started:.1f}s" if step.started and step.ended else "-"
        detail = step.message.splitlines()[0] if step.message else ", ".join(step.outputs) or ""
        rows.append([escape(step.name), f"[{STATE_COLOUR.get(step.state, 'white')}]{step.state}[/]", str(step.attempts),
                     took, escape(detail)])
    print_table(ctx.console, STEP_COLUMNS, rows, wide=wide,
                title=f"pipeline {escape(status.pipeline)}, run {status.run_id}: [{colour}]{status.state}[/]")
    _print_failure(ctx, status)


def _print_failure(ctx: Any, status: Any) -> None:
    if status.state == "FAILED" and status.message:
        ctx.err.print(f"[bold red]error:[/] {escape(status.message)}", markup=True, highlight=False)
        ctx.err.print(f"[yellow]hint:[/] fix it, then `mlplat pipeline run {status.pipeline} --resume "
                      f"{status.run_id}` continues from the failed step", markup=True, highlight=False)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _progress(ctx: Any) -> Any:
    def say(step: str, state: str, detail: str) -> None:
        if ctx.json:
            return
        colour = STATE_COLOUR.get(state, "white")
        ctx.err.print(f"  [{colour}]{state:<9}[/] {step:<14} {escape(detail.splitlines()[0] if detail else '')}",
                      markup=True, highlight=False)

    return say


@pipeline.command("run")
@click.argument("target", required=False, metavar="[FILE_OR_NAME]")
@click.option("--resume", "resume", metavar="RUN", default=None,
              help="Continue run RUN (killed or failed): finished steps are kept, the rest run.")
@click.option("--step", "step", metavar="STEP", default=None, help="Run only STEP; the steps before it come from the cache.")
@click.option("--from", "start", metavar="STEP", default=None,
              help="Run STEP and every step after it; the steps before it come from the cache.")
@click.option("--allow-dirty", is_flag=True, help="Run a work tree with uncommitted changes (the diff is recorded).")
@stack_option
@json_option
@pass_ctx
def run_cmd(ctx: Any, target: str | None, resume: str | None, step: str | None, start: str | None, allow_dirty: bool,
            stack: str, as_json: bool) -> int:
    """Run a pipeline (its file, or the name of one run or scheduled before) on the stack's provider.

    Exits 1 when a step fails; the message names it, with the end of its log."""
    from mlplat.services import pipelines as service

    spec = ctx.stack(stack)
    status = service.run(spec, ctx, target, resume=resume, step=step, start=start, allow_dirty=allow_dirty,
                         progress=_progress(ctx))
    if as_json:
        emit_json(service.status_doc(status))
        _print_failure(ctx, status)  # stderr: the JSON on stdout stays whole
    else:
        _print_status(ctx, status)
    return 0 if status.state == "SUCCEEDED" else 1


@pipeline.command("list")
@click.option("--pipeline", "name", default=None, help="Only the runs of this pipeline.")
@stack_option
@wide_option
@json_option
@pass_ctx
def list_cmd(ctx: Any, name: str | None, stack: str, wide: bool, as_json: bool) -> None:
    """Pipeline runs of the stack, newest first."""
    from mlplat.services import pipelines as service

    spec = ctx.stack(stack)
    runs = service.backend_for(spec, ctx).pipeline_runs(name)
    if as_json:
        emit_json([service.status_doc(r) for r in runs])
        return
    if not runs:
        ctx.console.print("No pipeline runs yet. Start one with `mlplat pipeline run FILE`.")
        return
    rows = []
    for r in runs:
        done = sum(1 for s in r.steps if s.state in ("SUCCEEDED", "CACHED"))
        rows.append([r.run_id, escape(r.pipeline), f"[{STATE_COLOUR.get(r.state, 'white')}]{r.state}[/]",
                     when(r.started) if r.started else "-", f"{done}/{len(r.steps)}"])
    print_table(ctx.console, RUN_COLUMNS, rows, wide=wide, title=f"pipeline runs (stack {spec.name})")


@pipeline.command("status")
@click.argument("run_id", metavar="RUN")
@stack_option
@wide_option
@json_option
@pass_ctx
def status_cmd(ctx: Any, run_id: str, stack: str, wide: bool, as_json: bool) -> None:
    """A run's state and each step's (attempts, outputs, why it failed)."""
    from mlplat.services import pipelines as service

    spec = ctx.stack(stack)
    status = service.backend_for(spec, ctx).pipeline_status(run_id)
    if as_json:
        emit_json(service.status_doc(status))
    else:
        _print_status(ctx, status, wide=wide)


@pipeline.command("schedule")
@click.argument("target", required=False, metavar="[FILE_OR_NAME]")
@click.option("--cron", default=None, help='When to run, 5 fields in UTC, e.g. "0 3 * * 1" (Mondays 03:00).')
@click.option("--run-due", is_flag=True, help="Run every scheduled pipeline whose time has come, once, then exit.")
@click.option("--at", "at", default=None, metavar="TIME",
              help="With --run-due: judge the schedules at TIME (ISO 8601, UTC unless it says) instead of now.")
@stack_option
@json_option
@pass_ctx
def schedule_cmd(ctx: Any, target: str | None, cron: str | None, run_due: bool, at: str | None, stack: str,
                 as_json: bool) -> int:
    """Schedule a pipeline on a cron (`schedule FILE --cron "..."`), list the schedules (no argument),
    or run the due ones (`--run-due`, e.g. from the system's cron every few minutes)."""
    from mlplat.errors import MlplatError
    from mlplat.services import pipelines as service

    spec = ctx.stack(stack)
    if run_due:
        if target or cron:
            raise click.UsageError("--run-due takes no pipeline and no --cron")
        now = _parse_time(at) if at else ctx.clock()
        results = service.run_due(spec, ctx, now, progress=_progress(ctx))
        if as_json:
            emit_json([service.status_doc(r) for r in results])
        elif not results:
            ctx.console.print("No scheduled pipeline is due.")
        for status in results if not as_json else []:
            _print_status(ctx, status)
        return 0 if all(r.state == "SUCCEEDED" for r in results) else 1
    if at:
        raise click.UsageError("--at goes with --run-due")
    if target is None and cron is None:
        rows = service.schedules(spec, ctx)
        if as_json:
            emit_json(rows)
            return 0
        if not rows:
            ctx.console.print("No scheduled pipelines. Add one with `mlplat pipeline schedule FILE --cron \"0 3 * * 1\"`.")
        for row in rows:
            ctx.console.print(f"{row['pipeline']}: {row['cron']} (next {when(row['next_run'])})")
        return 0
    if target is None or cron is None:
        raise MlplatError("schedule needs both the pipeline and --cron",
                          hint='e.g. `mlplat pipeline schedule examples/pipelines/credit_risk.py --cron "0 3 * * 1"`')
    info = service.schedule(spec, ctx, target, cron)
    if as_json:
        emit_json(info)
    else:
        ctx.console.print(f"scheduled {info['pipeline']} on '{info['cron']}' (UTC); next run "
                          f"{when(info['next_run']) if info['next_run'] else '-'}; kept in {info['target']}")
        ctx.console.print("Due runs start with `mlplat pipeline schedule --run-due` (e.g. from the system's cron).")
    return 0


def _parse_time(text: str) -> float:
    from datetime import datetime

    from mlplat.errors import MlplatError

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MlplatError(f"--at {text!r} is not an ISO 8601 time", hint="e.g. --at 2026-03-02T03:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
