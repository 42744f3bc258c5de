"""`mlplat adoption` and `mlplat sla`: how much serving goes through the platform, and the levels it keeps."""
from __future__ import annotations

import re

import click

from mlplat.cli.options import emit_json, pass_ctx, stack_option, wide_option

FORMATS = click.Choice(["table", "csv", "json"])
PERIOD = re.compile(r"\d+[mhd]|month|\d{4}-\d{2}|\d{4}-\d{2}-\d{2}\.\.\d{4}-\d{2}-\d{2}")


def _period(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not PERIOD.fullmatch(value.strip()):
        raise click.BadParameter(f"cannot read period '{value}': use 30d, 7d, 24h, month (calendar month to date), "
                                 "2026-11, or 2026-11-01..2026-11-15")
    return value.strip()


def _csv(columns: list[str], rows: list[dict]) -> None:
    import csv
    import sys

    writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})


def _share(value) -> str:
    return "-" if value is None else f"{value:.1%}"


# --- adoption ----------------------------------------------------------------------------------------

ADOPTION_COLUMNS = ["team", "environment", "managed", "unmanaged", "share", "owners", "not_inspected"]


@click.command("adoption")
@stack_option
@click.option("--all", "all_stacks", is_flag=True, help="Every stack of the project provisioned here, together.")
@click.option("--trend", type=click.Choice(["week", "month"]), default="month", show_default=True,
              help="The share at the end of each week or month.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@wide_option
@pass_ctx
def adoption(ctx, stack: str, all_stacks: bool, trend: str, fmt: str, as_json: bool, wide: bool) -> None:
    """Production models served through the platform vs endpoints running outside it, per team and environment.

    Outside endpoints are read from the provider's account and region (AWS: SageMaker endpoints without
    the platform's tags) with their owners from their tags; a trend of the share per week or month; and per
    model the time from its first tracked run to its first production promotion, with the manual
    interventions it took (approvals waited on, rollbacks)."""
    from mlplat.api.plane import plane_for

    if all_stacks and stack_given():
        raise click.UsageError("--all reads every stack of the project: give --stack or --all, not both")
    spec = _any_stack(ctx, stack, all_stacks)
    doc = plane_for(spec, ctx).call("adoption.report", all_stacks=all_stacks, trend=trend)
    if as_json or fmt == "json":
        emit_json(doc)
        return
    rows = [{**r, "share": _share(r["share"]), "owners": ", ".join(r["owners"]) or "-",
             "not_inspected": "; ".join(r["not_inspected"]) or "-"} for r in doc["rows"]]
    if fmt == "csv":
        _csv(["team", "environment", "managed", "unmanaged", "share", "owners", "production_models",
              "unmanaged_endpoints"],
             [{**r, "share": "" if r["share"] is None else round(r["share"], 4), "owners": ";".join(r["owners"]),
               "production_models": ";".join(r["production_models"]),
               "unmanaged_endpoints": ";".join(e["name"] for e in r["unmanaged_endpoints"])} for r in doc["rows"]])
        return
    from mlplat.formatting import Column, print_table, when

    priority = {"owners": 1, "not_inspected": 2}
    print_table(ctx.console, [Column(c, priority.get(c, 0), wrap=c in priority,
                                     justify="right" if c in ("managed", "unmanaged", "share") else "left")
                              for c in ADOPTION_COLUMNS],
                [[str(r[c]) for c in ADOPTION_COLUMNS] for r in rows], wide=wide,
                title=f"adoption: {doc['managed']} served through the platform, {doc['unmanaged']} outside it "
                      f"({_share(doc['share'])})")
    for inv in doc["inventories"]:
        if not inv["inspected"]:
            ctx.console.print(f"{inv['provider']} {inv['location']}: {inv['note']}", highlight=False, markup=False)
    for skipped in doc.get("skipped") or []:
        ctx.console.print(f"skipped stack {skipped['stack']}: {skipped['reason']}", highlight=False, markup=False)
    points = doc["trend"]["points"]
    print_table(ctx.console, [Column(doc["trend"]["by"]), Column("managed", justify="right"),
                              Column("unmanaged", justify="right"), Column("share", justify="right")],
                [[p["period"], str(p["managed"]), str(p["unmanaged"]), _share(p["share"])] for p in points],
                wide=wide, title=f"share per {doc['trend']['by']}")
    if doc["models"]:
        columns = [Column("stack"), Column("model"), Column("first run", 2), Column("first production", 1),
                   Column("days", justify="right"), Column("approvals", justify="right"),
                   Column("rollbacks", justify="right"), Column("interventions", justify="right")]
        print_table(ctx.console, columns, [[
            m["stack"], m["model"],
            when(m["first_run_at"]) + (" (registered)" if m["first_run_source"] == "registration" else ""),
            when(m["first_production_at"]), "-" if m["days"] is None else f"{m['days']:.2f}", str(m["approvals"]),
            f"{m['rollbacks_manual']} (+{m['rollbacks_automatic']} automatic)", str(m["interventions"])]
            for m in doc["models"]], wide=wide, title="time to production")


def stack_given() -> bool:
    """Whether --stack/-s was typed (its default comes from $MLPLAT_STACK or is dev)."""
    source = click.get_current_context().get_parameter_source("stack")
    return source is not None and source.name == "COMMANDLINE"


def _any_stack(ctx, stack: str, all_stacks: bool):
    """The stack whose control plane answers; with --all any stack of the project will do."""
    from mlplat.errors import StackError

    try:
        return ctx.stack(stack)
    except StackError:
        if not all_stacks:
            raise
        from mlplat.stack import list_stacks

        names = list_stacks(ctx.project())
        if not names:
            raise
        return ctx.stack(names[0])


# --- sla ---------------------------------------------------------------------------------------------

UNITS = {"share": lambda v: f"{v:.3%}", "ms": lambda v: f"{v:g} ms", "minutes": lambda v: f"{v:.1f} min",
         "seconds": lambda v: f"{v:.2f} s", "hours": lambda v: f"{v:g} h"}


def _value(unit: str, value) -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return "above the histogram"
    return UNITS[unit](value)


@click.command("sla")
@stack_option
@click.option("--period", default="30d", show_default=True, callback=_period,
              help="30d, 7d, 24h, month (calendar month to date), 2026-11, or 2026-11-01..2026-11-15; ends now.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@wide_option
@pass_ctx
def sla(ctx, stack: str, period: str, fmt: str, as_json: bool, wide: bool) -> None:
    """The platform's service levels against the stack's objectives (mlplat:sla; docs/SLA.md).

    Availability of the gateway and the control plane, the gateway's p99 overhead, promotion-to-serving
    and rollback times, measured from the ledger's records. Exit 1 when a measured figure misses its
    objective, 0 otherwise."""
    from mlplat.api.plane import plane_for

    spec = ctx.stack(stack)
    doc = plane_for(spec, ctx).call("sla.report", period=period)
    if as_json or fmt == "json":
        emit_json(doc)
    elif fmt == "csv":
        _csv(["key", "name", "value", "objective", "unit", "better", "status", "samples", "detail"], doc["figures"])
    else:
        from mlplat.formatting import Column, print_table

        print_table(ctx.console, [Column("objective"), Column("measured", justify="right"),
                                  Column("target", justify="right"), Column("status"), Column("detail", 1, wrap=True)],
                    [[f["name"], _value(f["unit"], f["value"]),
                      ("≥ " if f["better"] == "higher" else "≤ ") + _value(f["unit"], f["objective"]),
                      f["status"].upper() if f["status"] == "breached" else f["status"], f["detail"]]
                     for f in doc["figures"]], wide=wide,
                    title=f"SLA of stack {doc['stack']} (team {doc['team']}), {doc['period']['label']}")
        breached = [f["name"] for f in doc["figures"] if f["status"] == "breached"]
        ctx.console.print(f"breached: {', '.join(breached)}" if breached else "every measured objective met",
                          highlight=False, markup=False)
    if doc["breached"]:
        raise click.exceptions.Exit(1)
