"""`mlplat features apply | list | materialize | skew`."""
from __future__ import annotations

from datetime import UTC

import click

from mlplat.cli.options import emit_json, json_option, pass_ctx, stack_option, yes_option
from mlplat.errors import CheckFailed

SYMBOLS = {"create": ("+", "green"), "update": ("~", "yellow"), "unchanged": ("=", "dim"), "kept": ("=", "dim")}


def _store(ctx, stack: str):
    from mlplat.features.client import FeatureStore

    return FeatureStore(stack=stack, ctx=ctx)


@click.group()
def features() -> None:
    """Register feature definitions, materialize them online, check training/serving skew."""


def print_plan(ctx, store, plan) -> None:
    from rich.markup import escape

    c = ctx.console
    c.print(f"[bold]Feature plan for stack {store.spec.name}[/]")
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
    """Register entities and feature views: validates sources, shows the diff, then applies it."""
    from mlplat.cli.provision import _confirm
    from mlplat.features.plan import refuse_breaking

    store = _store(ctx, stack)
    definitions = store.load_definitions(definitions_path)
    plan = store.plan(definitions)
    if not as_json:
        print_plan(ctx, store, plan)
    refuse_breaking(plan)
    if dry_run or not plan.has_changes:
        if as_json:
            emit_json(plan.to_dict() | {"applied": False})
        elif not plan.has_changes:
            ctx.console.print("[green]No changes.[/] The registered definitions are up to date.")
        return
    _confirm(ctx, "Apply these changes?", yes or as_json)
    applied = store.apply(definitions, plan=plan)
    if as_json:
        emit_json(applied.to_dict() | {"applied": True})
    else:
        counts = applied.counts()
        ctx.console.print(f"[green]Applied.[/] {counts.get('create', 0)} created, {counts.get('update', 0)} updated.")


@features.command("list")
@stack_option
@json_option
@pass_ctx
def list_cmd(ctx, stack: str, as_json: bool) -> None:
    """Registered feature views and versions, their last materialization and the runs that read them."""
    from datetime import datetime

    store = _store(ctx, stack)
    views = store.registered(refresh=True)
    done = store.backend.materializations()
    usage = store.backend.usage()
    rows = []
    for (name, version), doc in sorted(views.items()):
        last = next((m for m in done if m["name"] == name and m["version"] == version and m["state"] == "succeeded"), None)
        runs = sorted({u["run_id"] for u in usage if u["view"] == name and u["version"] == version})
        rows.append({
            "view": name, "version": version,
            "entities": [e["join_key"] for e in doc["entities"]],
            "features": [f"{f['name']}:{f['dtype']}" for f in doc["features"]],
            "ttl_seconds": doc.get("ttl_seconds"),
            "source": doc["source"].get("path") or doc["source"]["kind"],
            "materialized_until": (datetime.fromtimestamp(last["end_us"] / 1e6, tz=UTC).isoformat()
                                   if last else None),
            "online_rows": last["rows"] if last else None,
            "runs": runs,
            "production_models": store.backend.production_users(name, version),
        })
    if as_json:
        emit_json(rows)
        return
    if not rows:
        ctx.console.print("No feature views registered. Define them in "
                          f"{store.settings.definitions} and run `mlplat features apply`.")
        return
    from rich.table import Table

    table = Table("view", "entities", "features", "ttl", "source", "materialized until", "runs", "production")
    for r in rows:
        ttl = f"{r['ttl_seconds'] // 86400}d" if r["ttl_seconds"] and r["ttl_seconds"] % 86400 == 0 else (
            f"{r['ttl_seconds']}s" if r["ttl_seconds"] else "none")
        table.add_row(f"{r['view']}@{r['version']}", ", ".join(r["entities"]), ", ".join(r["features"]), ttl,
                      r["source"], r["materialized_until"] or "-", str(len(r["runs"])),
                      ", ".join(r["production_models"]) or "-")
    ctx.console.print(table)


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

    store = _store(ctx, stack)
    if end == "now":
        end = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(ctx.clock()))
    t0 = _time.perf_counter()
    results = store.materialize(start, end, list(views) or None)
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
    store = _store(ctx, stack)
    report = store.skew(view, sample=sample or store.settings.skew_sample, seed=seed, at=at)
    limit = store.settings.max_skew_rate
    if as_json:
        emit_json(report.to_dict() | {"max_skew_rate": limit, "ok": report.mismatch_rate <= limit})
    else:
        c = ctx.console
        c.print(f"[bold]Skew of {report.view}@{report.version}[/] at {report.at}: {report.sampled} entities, "
                f"{report.compared} values compared", highlight=False)
        from rich.table import Table

        table = Table("feature", "mismatches", "rate")
        per = max(report.sampled, 1)
        for feature, count in report.mismatches.items():
            table.add_row(feature, str(count), f"{count / per:.1%}", style="red" if count else None)
        c.print(table)
        if report.kinds:
            c.print("by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(report.kinds.items())), highlight=False)
        for ex in report.examples[:5]:
            c.print(f"  e.g. {ex['key']} {ex['feature']}: offline={ex['offline']!r} online={ex['online']!r} ({ex['kind']})",
                    highlight=False, markup=False)
        colour = "green" if report.mismatch_rate <= limit else "red"
        c.print(f"[{colour}]mismatch rate {report.mismatch_rate:.2%}[/] (allowed {limit:.2%})")
    if report.mismatch_rate > limit:
        raise CheckFailed(f"{report.mismatch_count} of {report.compared} values differ between the offline and online "
                          f"store for {report.view}@{report.version}",
                          hint="re-run `mlplat features materialize` over a window that ends now; late-arriving rows "
                               "and a window shorter than the TTL both show up here")
