"""`mlplat features apply | list | materialize | skew`."""
from __future__ import annotations

import click

from mlplat.cli.options import emit_json, json_option, pass_ctx, stack_option, stack_plane, wide_option, yes_option
from mlplat.errors import CheckFailed
from mlplat.formatting import Column

SYMBOLS = {"create": ("+", "green"), "update": ("~", "yellow"), "unchanged": ("=", "dim"), "kept": ("=", "dim")}


@click.group()
def features() -> None:
    """Register feature definitions, materialize them online, check training/serving skew."""


def load_definitions(spec, path: str | None):
    """The definitions module at ``path`` (relative to the working directory), else the stack's
    features.definitions (relative to the project root), loaded and validated here."""
    from pathlib import Path

    from mlplat.features.definitions import load_module

    target = Path(path) if path else Path(spec.features.definitions)
    if not target.is_absolute():
        target = (Path(spec.project_dir or ".") / target) if path is None else target.resolve()
    return load_module(target)


def plan_from(doc: dict):
    """A plan document (``FeaturePlan.to_dict()``) as the plan it describes."""
    from mlplat.features.plan import EntityChange, FeaturePlan, ViewChange

    return FeaturePlan([EntityChange(e["entity"], e["action"], list(e["changes"])) for e in doc["entities"]],
                       [ViewChange(v["view"], v["version"], v["action"], list(v["changes"]), list(v["breaking"]),
                                   list(v["used_by"])) for v in doc["views"]])


def print_plan(ctx, spec, plan) -> None:
    from rich.markup import escape

    c = ctx.console
    c.print(f"[bold]Feature plan for stack {spec.name}[/]")
    for e in plan.entities:
        symbol, colour = SYMBOLS.get(e.action, ("?", "white"))
        detail = f"  {escape('; '.join(e.changes))}" if e.changes and e.action != "unchanged" else ""
        c.print(f"  [{colour}]{symbol} {e.action:<9}[/] entity        {e.name}[dim]{detail}[/]", highlight=False)
    for v in plan.views:
        symbol, colour = SYMBOLS.get(v.action, ("?", "white"))
        if v.refused:
            symbol, colour = "!", "red"
        c.print(f"  [{colour}]{symbol} {v.action:<9}[/] feature view  {v.ref}", highlight=False)
        if v.action in ("create", "update"):
            for change in v.changes:
                colour = "red" if change.endswith("[breaking]") else "dim"
                c.print(f"      [{colour}]{escape(change)}[/]", highlight=False)
        if v.used_by:
            c.print(f"      [red]used by {escape(', '.join(v.used_by))}[/]", highlight=False)
    counts = plan.counts()
    c.print(f"Plan: {counts.get('create', 0)} to create, {counts.get('update', 0)} to update, "
            f"{counts.get('unchanged', 0) + counts.get('kept', 0)} unchanged.")


@features.command("apply")
@stack_option
@click.option("--definitions", "-d", "definitions_path", type=click.Path(dir_okay=False), default=None,
              help="Definitions module (default: the stack's features.definitions).")
@click.option("--dry-run", is_flag=True, help="Validate and show the diff; change nothing.")
@yes_option
@json_option
@pass_ctx
def apply_cmd(ctx, stack: str, definitions_path: str | None, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Register entities and feature views: validates sources, shows the diff, then applies it.

    The definitions module is loaded here; its sources are read where the platform runs (relative
    paths from that project's root)."""
    from mlplat.api.ops.features import definitions_doc
    from mlplat.cli.provision import _confirm
    from mlplat.features.plan import refuse_breaking

    spec, plane = stack_plane(ctx, stack)
    document = definitions_doc(load_definitions(spec, definitions_path))
    planned = plane.call("features.plan", definitions=document)
    plan = plan_from(planned)
    if not as_json:
        print_plan(ctx, spec, plan)
    refuse_breaking(plan)
    if dry_run or not plan.has_changes:
        if as_json:
            emit_json(planned | {"applied": False})
        elif not plan.has_changes:
            ctx.console.print("[green]No changes.[/] The registered definitions are up to date.")
        return
    _confirm(ctx, "Apply these changes?", yes or as_json)
    applied = plane.call("features.apply", definitions=document)
    if as_json:
        emit_json(applied | {"applied": True})
    else:
        counts = plan_from(applied).counts()
        ctx.console.print(f"[green]Applied.[/] {counts.get('create', 0)} created, {counts.get('update', 0)} updated.")


@features.command("list")
@stack_option
@wide_option
@json_option
@pass_ctx
def list_cmd(ctx, stack: str, wide: bool, as_json: bool) -> None:
    """Registered feature views and versions, their last materialization and the runs that read them."""
    spec, plane = stack_plane(ctx, stack)
    rows = plane.call("features.list")
    if as_json:
        emit_json(rows)
        return
    if not rows:
        ctx.console.print("No feature views registered. Define them in "
                          f"{spec.features.definitions} and run `mlplat features apply`.")
        return
    from mlplat.formatting import print_table

    cells = []
    for r in rows:
        ttl = f"{r['ttl_seconds'] // 86400}d" if r["ttl_seconds"] and r["ttl_seconds"] % 86400 == 0 else (
            f"{r['ttl_seconds']}s" if r["ttl_seconds"] else "none")
        cells.append([f"{r['view']}@{r['version']}", ", ".join(r["entities"]), ", ".join(r["features"]), ttl,
                      r["source"], r["materialized_until"] or "-", str(len(r["runs"])),
                      ", ".join(r["production_models"]) or "-"])
    print_table(ctx.console, VIEW_COLUMNS, cells, wide=wide)


VIEW_COLUMNS = (Column("view"), Column("entities", 1, wrap=True), Column("features", 3, wrap=True), Column("ttl", 4),
                Column("source", 6, wrap=True), Column("materialized until", 2), Column("runs", 5, justify="right"),
                Column("production", 1, wrap=True))
SKEW_COLUMNS = (Column("feature"), Column("mismatches", justify="right"), Column("rate", justify="right"))


@features.command("materialize")
@click.argument("views", nargs=-1)
@stack_option
@click.option("--start", required=True, help="Start of the event-time window (ISO 8601; naive = UTC).")
@click.option("--end", required=True, help="End of the event-time window, inclusive (ISO 8601; naive = UTC; 'now').")
@json_option
@pass_ctx
def materialize_cmd(ctx, views: tuple[str, ...], stack: str, start: str, end: str, as_json: bool) -> None:
    """Write the latest value per entity in [START, END] into the online store (all views, or VIEWS)."""
    import time as _time

    spec, plane = stack_plane(ctx, stack)
    if end == "now":
        end = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(ctx.clock()))
    t0 = _time.perf_counter()
    results = plane.call("features.materialize", start=start, end=end, views=list(views) or None)
    if as_json:
        emit_json(results)
        return
    for r in results:
        ctx.console.print(f"  {r['view']}@{r['version']}: {r['rows']} entities written", highlight=False)
    ctx.console.print(f"[green]Materialized[/] {len(results)} view version(s) in {_time.perf_counter() - t0:.2f}s.")


@features.command("skew")
@click.argument("view")
@stack_option
@click.option("--sample", type=click.IntRange(1, 100_000), default=None,
              help="Entities to sample (default: the stack's features.skewSample).")
@click.option("--at", default=None, help="Compare at this time (default: the end of the last materialization).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@json_option
@pass_ctx
def skew_cmd(ctx, view: str, stack: str, sample: int | None, at: str | None, seed: int, as_json: bool) -> None:
    """Compare online values with offline point-in-time values for a sample of entities.

    Exits 1 when the mismatch rate is above the stack's features.maxSkewRate."""
    spec, plane = stack_plane(ctx, stack)
    report = plane.call("features.skew", view=view, sample=sample, at=at, seed=seed)
    limit = report["max_skew_rate"]
    if as_json:
        emit_json(report)
    else:
        c = ctx.console
        c.print(f"[bold]Skew of {report['view']}@{report['version']}[/] at {report['at']}: "
                f"{report['sampled_entities']} entities, {report['compared_values']} values compared", highlight=False)
        from mlplat.formatting import print_table

        per = max(report["sampled_entities"], 1)
        print_table(c, SKEW_COLUMNS, [[f"[red]{feature}[/]" if count else feature, f"[red]{count}[/]" if count else "0",
                                       f"{count / per:.1%}"] for feature, count in report["by_feature"].items()])
        if report["by_kind"]:
            c.print("by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(report["by_kind"].items())), highlight=False)
        for ex in report["examples"][:5]:
            c.print(f"  e.g. {ex['key']} {ex['feature']}: offline={ex['offline']!r} online={ex['online']!r} ({ex['kind']})",
                    highlight=False, markup=False)
        colour = "green" if report["ok"] else "red"
        c.print(f"[{colour}]mismatch rate {report['mismatch_rate']:.2%}[/] (allowed {limit:.2%})")
    if not report["ok"]:
        raise CheckFailed(f"{report['mismatches']} of {report['compared_values']} values differ between the offline and "
                          f"online store for {report['view']}@{report['version']}",
                          hint="re-run `mlplat features materialize` over a window that ends now; late-arriving rows "
                               "and a window shorter than the TTL both show up here")
