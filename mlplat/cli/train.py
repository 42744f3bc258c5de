"""`mlplat train [OPTIONS] -- COMMAND...` and `mlplat train status | logs | stop | list`."""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import click

from mlplat.cli.options import emit_json, json_option, pass_ctx, stack_option, wide_option
from mlplat.context import Context
from mlplat.errors import Aborted, CheckFailed
from mlplat.formatting import Column

STATE_COLOUR = {"PENDING": "cyan", "RUNNING": "yellow", "SUCCEEDED": "green", "FAILED": "red", "STOPPED": "magenta"}
USAGE = "mlplat train --stack S [--instance-type T] [--gpus N] [--data name=uri ...] -- python train.py ARGS"


class TrainGroup(click.Group):
    """A group whose own invocation takes the job's command after ``--``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            at = args.index("--")
            ctx.meta["mlplat.train.command"] = args[at + 1:]
            args = args[:at]
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and name not in self.commands:
            raise click.UsageError(f"'{name}' is not a train subcommand (status, logs, stop, list); to run a "
                                   f"command as a job, put it after --:\n  {USAGE}")
        return super().resolve_command(ctx, args)


def _spec(ctx: Any, stack: str) -> Any:
    return ctx.stack(stack)


@click.group(cls=TrainGroup, invoke_without_command=True,
             subcommand_metavar="-- COMMAND [ARGS]... | status|logs|stop|list ...")
@stack_option
@click.option("--instance-type", "-t", default=None,
              help="Instance type to train on (default: local.cpu, or local.gpu with --gpus, on a local stack; "
                   "serving.instanceType elsewhere). Must be allowed by the stack's spend policy.")
@click.option("--gpus", type=click.IntRange(min=0), default=0, show_default=True, help="GPUs the job needs.")
@click.option("--data", "data", multiple=True, metavar="NAME=URI",
              help="A data channel, exposed to the script as $MLPLAT_DATA_<NAME> (repeatable).")
@click.option("--allow-dirty", is_flag=True, help="Run the work tree with its uncommitted changes (the diff is recorded).")
@click.option("--detach", "-d", is_flag=True, help="Submit and return; follow with `mlplat train logs JOB --follow`.")
@click.option("--max-runtime", type=click.IntRange(min=1), default=86_400, show_default=True,
              help="Seconds after which the job is stopped and marked FAILED.")
@click.option("--spot", is_flag=True, help="Use spot capacity where the provider offers it.")
@json_option
@click.pass_context
def train(click_ctx: click.Context, stack: str, instance_type: str | None, gpus: int, data: tuple[str, ...],
          allow_dirty: bool, detach: bool, max_runtime: int, spot: bool, as_json: bool) -> None:
    """Run a command as a tracked training job on the stack's compute, from the project at its commit.

    \b
      mlplat train --stack dev -- python train.py --epochs 3
      mlplat train --stack dev --data train=data/train.parquet --detach -- python train.py
      mlplat train status JOB | logs JOB [--follow] | stop JOB | list

    The job is a tracked run (commit, data hashes, environment, cost tags, instance type and its
    price); a version the script registers with run.log_model is linked to the job.
    """
    if click_ctx.invoked_subcommand is not None:
        return
    command = click_ctx.meta.get("mlplat.train.command")
    if not command:
        raise click.UsageError(f"give the job's command after --:\n  {USAGE}")
    from mlplat.services import training as service

    ctx = click_ctx.ensure_object(Context)
    spec = _spec(ctx, stack)
    submitted = service.submit(spec, ctx, command, instance_type=instance_type, gpus=gpus,
                               data=service.parse_data(data), allow_dirty=allow_dirty,
                               max_runtime_seconds=max_runtime, spot=spot)
    for warning in submitted.warnings:
        ctx.err.print(f"[yellow]warning:[/] {warning}", markup=True, highlight=False)
    job_id = submitted.status.job_id
    if detach or as_json:
        if as_json:
            emit_json(asdict(submitted.status) | {"commit": submitted.job.source.commit,
                                                  "dirty": submitted.job.source.dirty})
        else:
            ctx.console.print(f"submitted training job {job_id} ({submitted.job.instance_type}, commit "
                              f"{submitted.job.source.commit[:8]}{'*' if submitted.job.source.dirty else ''})\n"
                              f"follow it: mlplat train logs {job_id} --stack {spec.name} --follow", highlight=False)
        return
    ctx.err.print(f"training job {job_id} on {submitted.job.instance_type}, commit "
                  f"{submitted.job.source.commit[:8]}{'*' if submitted.job.source.dirty else ''} "
                  "(Ctrl-C detaches; the job keeps running)", highlight=False)
    _stream(ctx, spec, job_id)


def _stream(ctx: Any, spec: Any, job_id: str) -> None:
    """Print the job's output with a live status line until it ends; non-zero exit unless it succeeded."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from mlplat.services import training as service

    backend = service.backend(spec, ctx)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=ctx.err, transient=True)
    try:
        with progress:
            task = progress.add_task(f"{job_id} PENDING", total=None)
            checked = 0.0
            for line in backend.training_logs(job_id, follow=True):
                ctx.console.print(line, markup=False, highlight=False, soft_wrap=True)
                if time.monotonic() - checked > 1.0:
                    checked = time.monotonic()
                    progress.update(task, description=f"{job_id} {backend.training_status(job_id).state}")
    except KeyboardInterrupt:
        raise Aborted(f"detached from training job {job_id}; it keeps running",
                      hint=f"`mlplat train stop {job_id} --stack {spec.name}` stops it") from None
    status = backend.training_status(job_id)
    _summary(ctx, status)
    if status.state != "SUCCEEDED":
        raise CheckFailed(f"training job {job_id} {status.state.lower()}" + (f": {status.message}" if status.message
                                                                             else ""),
                          hint=f"`mlplat train logs {job_id} --stack {spec.name}` shows its output")


def _summary(ctx: Any, status: Any) -> None:
    colour = STATE_COLOUR.get(status.state, "white")
    took = f" in {status.ended - status.started:.1f}s" if status.started and status.ended else ""
    parts = [f"[{colour}]{status.state}[/]{took}"]
    if status.run_id:
        parts.append(f"run {status.run_id}")
    if status.model and status.model_version is not None:
        parts.append(f"registered {status.model} version {status.model_version}")
    ctx.err.print(f"training job {status.job_id}: " + ", ".join(parts), highlight=False)


@train.command("status")
@click.argument("job_id")
@stack_option
@json_option
@pass_ctx
def status_cmd(ctx: Any, job_id: str, stack: str, as_json: bool) -> None:
    """A job's state, times, instance type, run and registered version."""
    from mlplat.services import training as service

    spec = _spec(ctx, stack)
    job = service.status(spec, ctx, job_id)
    if as_json:
        emit_json(asdict(job) | {"cost_usd": service.cost_usd(job, ctx.clock())})
        return
    from mlplat.formatting import when

    colour = STATE_COLOUR.get(job.state, "white")
    rows = [("job", job.job_id), ("state", f"[{colour}]{job.state}[/]"), ("message", job.message or "-"),
            ("instance type", job.instance_type or "-"),
            ("price per hour", "-" if job.price_per_hour is None else f"${job.price_per_hour:,.4f}"),
            ("cost so far", f"${service.cost_usd(job, ctx.clock()):,.4f}"),
            ("started", when(job.started) if job.started else "-"), ("ended", when(job.ended) if job.ended else "-"),
            ("run", job.run_id or "-"),
            ("registered", f"{job.model} version {job.model_version}" if job.model else "-")]
    for key, value in rows:
        ctx.console.print(f"{key:>15}  {value}", highlight=False)


@train.command("logs")
@click.argument("job_id")
@stack_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@pass_ctx
def logs_cmd(ctx: Any, job_id: str, stack: str, follow: bool) -> None:
    """A job's output (the command's stdout and stderr)."""
    from mlplat.services import training as service

    spec = _spec(ctx, stack)
    lines = service.logs(spec, ctx, job_id, follow=follow)
    try:
        for line in lines:
            click.echo(line)
    except KeyboardInterrupt:
        raise Aborted(f"stopped following training job {job_id}; it keeps running") from None


@train.command("stop")
@click.argument("job_id")
@stack_option
@json_option
@pass_ctx
def stop_cmd(ctx: Any, job_id: str, stack: str, as_json: bool) -> None:
    """Stop a running job (its whole process group); a finished job is left as it is."""
    from mlplat.services import training as service

    spec = _spec(ctx, stack)
    job = service.stop(spec, ctx, job_id)
    if as_json:
        emit_json(asdict(job))
        return
    _summary(ctx, job)


@train.command("list")
@stack_option
@wide_option
@json_option
@pass_ctx
def list_cmd(ctx: Any, stack: str, wide: bool, as_json: bool) -> None:
    """The stack's training jobs, newest first."""
    from mlplat.services import training as service

    spec = _spec(ctx, stack)
    jobs = service.jobs(spec, ctx)
    now = ctx.clock()
    if as_json:
        emit_json([asdict(j) | {"cost_usd": service.cost_usd(j, now)} for j in jobs])
        return
    if not jobs:
        ctx.console.print(f"No training jobs in stack {spec.name} yet: {USAGE}", highlight=False)
        return
    from mlplat.formatting import print_table, when

    rows = []
    for j in jobs:
        took = f"{(j.ended or now) - j.started:.1f}s" if j.started else "-"
        rows.append([j.job_id, f"[{STATE_COLOUR.get(j.state, 'white')}]{j.state}[/]", j.instance_type or "-",
                     when(j.started) if j.started else "-", took, f"${service.cost_usd(j, now):,.4f}",
                     j.run_id or "-", f"{j.model} v{j.model_version}" if j.model else "-"])
    print_table(ctx.console, JOB_COLUMNS, rows, wide=wide)


JOB_COLUMNS = (Column("job"), Column("state"), Column("instance type", 3), Column("started", 2),
               Column("took", 4, justify="right"), Column("cost_usd", justify="right"), Column("run", 5), Column("registered", 1))
