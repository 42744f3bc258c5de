"""`mlplat runs list | show | compare | reproduce`."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mlplat import lineage as lin
from mlplat import reproduce as bundles
from mlplat.cli.completion import complete_runs
from mlplat.cli.options import emit_json, json_option, pass_ctx, stack_option, wide_option
from mlplat.errors import ExitCode, MlplatError, NotFound
from mlplat.formatting import Column, print_table, when

if TYPE_CHECKING:
    from mlplat.contracts import RunRecord

# The provider registry and the contracts load the stack model (pydantic) on import: each command
# imports them when it runs, so `mlplat runs --help` stays light.


def _tracker(ctx, stack: str):
    from mlplat import providers
    from mlplat.contracts import Capability

    spec = ctx.stack(stack)
    return spec, providers.capability(spec, ctx, Capability.TRACKING)


def resolve_run(tracker, ref: str) -> RunRecord:
    """A run by full id or unique prefix (see ``ExperimentTracker.resolve_run``)."""
    return tracker.resolve_run(ref)



def _duration(run: RunRecord) -> str:
    if not run.start_time:
        return "-"
    seconds = (run.end_time or time.time()) - run.start_time
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _commit(run: RunRecord) -> str:
    commit = run.tags.get("mlplat.code.commit", "")
    if run.tags.get("mlplat.code.in_git") != "true":
        return "no git"
    return commit[:8] + ("*" if run.tags.get("mlplat.code.dirty") == "true" else "")


STATUS_COLOUR = {"FINISHED": "green", "FAILED": "red", "RUNNING": "yellow", "KILLED": "magenta"}


@click.group()
def runs() -> None:
    """List, show, compare and reproduce tracked runs."""


@runs.command("list")
@stack_option
@click.option("--experiment", "-e", help="Only runs of this experiment.")
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=20, show_default=True)
@wide_option
@json_option
@pass_ctx
def list_runs(ctx, stack: str, experiment: str | None, limit: int, wide: bool, as_json: bool) -> None:
    """The most recent runs of a stack."""
    _, tracker = _tracker(ctx, stack)
    records = tracker.list_runs(experiment=experiment, limit=limit)
    if as_json:
        emit_json([r.to_dict() for r in records])
        return
    if not records:
        ctx.console.print("No runs yet. Train inside `with mlplat.start_run(...)` to record one.")
        return
    rows = []
    for r in records:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(r.metrics.items())[:3])
        colour = STATUS_COLOUR.get(r.status, "white")
        rows.append([r.run_id, r.experiment, r.name, f"[{colour}]{r.status}[/]", r.user, when(r.start_time),
                     _duration(r), _commit(r), metrics])
    print_table(ctx.console, RUN_COLUMNS, rows, wide=wide)


# The run id (what a reader copies) and its experiment always show, whole; then the run's name and
# status, when, who, how long.
RUN_COLUMNS = (Column("run"), Column("experiment"), Column("name", 1), Column("status", 1), Column("user", 3),
               Column("started", 2), Column("took", 4, justify="right"), Column("commit", 5),
               Column("metrics", 6, wrap=True))


@runs.command("show")
@click.argument("run_ref", shell_complete=complete_runs)
@stack_option
@wide_option
@json_option
@pass_ctx
def show(ctx, run_ref: str, stack: str, wide: bool, as_json: bool) -> None:
    """Everything recorded about one run (id or unique prefix)."""
    _, tracker = _tracker(ctx, stack)
    run = resolve_run(tracker, run_ref)
    lineage = _lineage(tracker, run)
    if as_json:
        emit_json(run.to_dict() | {"lineage": lineage})
        return
    from rich.markup import escape

    c = ctx.console
    colour = STATUS_COLOUR.get(run.status, "white")
    c.print(f"[bold]run {run.run_id}[/]  {run.experiment}/{run.name}  [{colour}]{run.status}[/]")
    c.print(f"user {run.user}, started {when(run.start_time)}, took {_duration(run)}")
    if "mlplat.error" in run.tags:
        c.print(f"[red]error:[/] {run.tags['mlplat.error']}", markup=True, highlight=False)
    code = lineage.get("code", {})
    if code.get("in_git"):
        c.print(f"code: commit {code.get('commit')} on {code.get('branch')}"
                + (f", [yellow]dirty[/] (diff sha256 {str(code.get('diff_sha256'))[:12]})" if code.get("dirty") else ", clean"))
    else:
        c.print("code: not in a git repository")
    env = lineage.get("environment", {})
    if env:
        c.print(f"environment: Python {env.get('python')} on {env.get('os')}, packages hash {str(env.get('hash'))[:12]}")
    c.print(f"command: {run.tags.get('mlplat.command', '-')}", highlight=False)
    if lineage.get("datasets"):
        rows = [[d["name"], d["kind"], str(d["rows"]), d["sha256"] if wide else d["sha256"][:16],
                 _schema(d["schema"], None if wide else SCHEMA_SHOWN)] for d in lineage["datasets"]]
        print_table(c, DATA_COLUMNS, rows, wide=wide, title="data")
    for title, values in (("params", run.params), ("metrics", run.metrics)):
        if values:
            print_table(c, (Column("name"), Column("value", wrap=True)),
                        [[escape(k), escape(f"{v:.6g}" if isinstance(v, float) else str(v))] for k, v in sorted(values.items())],
                        wide=wide, title=title)
    tags = {k: v for k, v in run.tags.items() if k.startswith("mlplat.tag.")}
    if tags:
        c.print("cost tags: " + ", ".join(f"{k.removeprefix('mlplat.tag.')}={v}" for k, v in sorted(tags.items())))


DATA_COLUMNS = (Column("dataset"), Column("kind", 2), Column("rows", 1, justify="right"), Column("sha256", 3),
                Column("schema", 4, wrap=True))
SCHEMA_SHOWN = 6


def _schema(schema: dict[str, str], shown: int | None) -> str:
    """``name:type`` of the first ``shown`` columns (all with None), saying how many more there are."""
    items = list(schema.items())
    text = ", ".join(f"{k}:{v}" for k, v in items[:shown])
    rest = len(items) - len(items[:shown])
    return text + (f" … and {rest} more column{'s' if rest != 1 else ''} (--wide lists them)" if rest else "")


def _lineage(tracker, run: RunRecord) -> dict:
    with tempfile.TemporaryDirectory(prefix="mlplat-") as tmp:
        try:
            path = tracker.download_artifacts(run.run_id, "mlplat/lineage.json", tmp)
        except Exception:  # runs made outside mlplat have no lineage document
            return {}
        return json.loads(Path(path).read_text())


@runs.command("compare")
@click.argument("run_refs", nargs=-1, required=True, shell_complete=complete_runs)
@stack_option
@click.option("--all-keys", is_flag=True, help="Show keys whose values are equal too.")
@json_option
@pass_ctx
def compare(ctx, run_refs: tuple[str, ...], stack: str, all_keys: bool, as_json: bool) -> None:
    """Params, metrics, data and code of several runs side by side; differences first."""
    if len(run_refs) < 2:
        raise click.UsageError("compare needs at least two runs")
    _, tracker = _tracker(ctx, stack)
    records = [resolve_run(tracker, ref) for ref in run_refs]
    rows: list[tuple[str, list[str]]] = []
    keys = sorted({("param", k) for r in records for k in r.params} | {("metric", k) for r in records for k in r.metrics})
    for kind, key in keys:
        values = [str(r.params.get(key, "-")) if kind == "param" else
                  (f"{r.metrics[key]:.6g}" if key in r.metrics else "-") for r in records]
        rows.append((f"{kind} {key}", values))
    for tag, label in (("mlplat.code.commit", "code commit"), ("mlplat.code.dirty", "code dirty"),
                       ("mlplat.env.hash", "environment hash")):
        rows.append((label, [r.tags.get(tag, "-")[:12] for r in records]))
    datasets = sorted({k for r in records for k in r.tags if k.startswith("mlplat.data.") and k.endswith(".sha256")})
    for key in datasets:
        rows.append((f"data {key.split('.')[2]}", [r.tags.get(key, "-")[:12] for r in records]))
    differing = [(label, values) for label, values in rows if len(set(values)) > 1]
    shown = rows if all_keys else differing
    if as_json:
        emit_json({"runs": [r.run_id for r in records],
                   "rows": [{"key": label, "values": values, "differs": len(set(values)) > 1} for label, values in shown]})
        return
    from rich.markup import escape

    # Every column stays (the full run id heads its column): a narrow terminal folds cells, never cuts them.
    columns = [Column(""), *(Column(escape(f"{r.run_id} {r.name}"), wrap=True) for r in records)]
    cells = []
    for label, values in shown:
        style = "bold" if len(set(values)) > 1 else "dim"
        cells.append([f"[{style}]{escape(cell)}[/]" for cell in (label, *values)])
    print_table(ctx.console, columns, cells, title=f"{len(differing)} of {len(rows)} keys differ")


@runs.command("reproduce")
@click.argument("run_ref", shell_complete=complete_runs)
@stack_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the bundle (default: .mlplat/reproduce/<run id> in the project).")
@click.option("--with-data", is_flag=True, help="Copy the run's dataset files (those inside the repository) into the bundle.")
@click.option("--no-code", is_flag=True, help="Leave out code.bundle; reproduce.sh then needs the repository passed to it.")
@click.option("--check", is_flag=True, help="Exit 1 if current data or code no longer match the run.")
@json_option
@pass_ctx
def reproduce(ctx, run_ref: str, stack: str, out_dir: Path | None, with_data: bool, no_code: bool, check: bool,
              as_json: bool) -> int:
    """Write a relocatable bundle that reruns RUN: code (commit + diff), locked venv, data hashes, command.

    Run the bundle's reproduce.sh anywhere: it clones the commit into a fresh folder, applies the
    diff, builds a venv from the lock, checks the data by sha256, trains with the venv's python and
    compares the new run's metrics with this one's."""
    spec, tracker = _tracker(ctx, stack)
    run = resolve_run(tracker, run_ref)
    out_dir = out_dir or Path(spec.project_dir) / lin.STATE_ROOT / "reproduce" / run.run_id
    with tempfile.TemporaryDirectory(prefix="mlplat-") as tmp:
        try:
            folder = Path(tracker.download_artifacts(run.run_id, "mlplat", tmp))
        except Exception as exc:  # MLflow raises several types for a missing artifact folder
            raise NotFound(f"run {run.run_id} has no mlplat lineage (was it tracked by mlplat?)",
                           hint="only runs started with mlplat.start_run can be reproduced") from exc
        if not (folder / "lineage.json").is_file():
            raise NotFound(f"run {run.run_id} has no mlplat lineage (was it tracked by mlplat?)")
        _check_out_dir(out_dir, run.run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("lineage.json", "requirements.lock", "environment.json", "code.diff"):
            if (folder / name).exists():
                shutil.copy(folder / name, out_dir / name)
    doc = json.loads((out_dir / "lineage.json").read_text())
    environment = json.loads((out_dir / "environment.json").read_text()) if (out_dir / "environment.json").exists() else None
    bundle = bundles.write(out_dir, run=run, doc=doc, environment=environment, stack=spec.name,
                           provider_kind=spec.provider.kind, project_dir=Path(spec.project_dir),
                           with_data=with_data, with_code=not no_code)
    if as_json:
        emit_json({"run": run.run_id, "out": str(out_dir), "files": bundle.files, "warnings": bundle.warnings,
                   "notes": bundle.notes})
    else:
        ctx.console.print(f"Wrote {out_dir}: {', '.join(bundle.files)}", highlight=False)
        ctx.console.print(f"Run it anywhere: {out_dir / 'reproduce.sh'}", highlight=False)
        for w in bundle.warnings:
            ctx.console.print(f"[yellow]warning:[/] {w}", highlight=False)
        for n in bundle.notes:
            ctx.console.print(f"note: {n}", highlight=False)
    return ExitCode.FAILED if (check and bundle.warnings) else ExitCode.OK


def _check_out_dir(out_dir: Path, run_id: str) -> None:
    """A bundle goes into a new or empty folder, or over an earlier bundle of the same run (whose
    files it rewrites with the same content); never over anything else."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise MlplatError(f"--out {out_dir} is a file", hint="give a new folder")
    if not any(out_dir.iterdir()):
        return
    try:
        same = json.loads((out_dir / "lineage.json").read_text()).get("run_id") == run_id
    except (OSError, ValueError):
        same = False
    if not same:
        raise MlplatError(f"--out {out_dir} is not empty and holds no bundle of run {run_id}",
                          hint="give a new or empty folder")
