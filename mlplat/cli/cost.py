"""`mlplat cost report`."""
from __future__ import annotations

import click

from mlplat.cli.options import emit_json, pass_ctx, stack_option, wide_option


@click.group()
def cost() -> None:
    """Cost per prediction and per team / model / version / environment, against the budget."""


@cost.command("report")
@stack_option
@click.option("--all-stacks", is_flag=True, help="Every provisioned local stack of the project, side by side.")
@click.option("--by", type=click.Choice(["team", "model", "version", "env"]), default="team", show_default=True)
@click.option("--period", default="month", show_default=True,
              help="7d, 24h, month (calendar month to date), 2026-11, or 2026-11-01..2026-11-15.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--billed", is_flag=True,
              help="Also show what the cloud billed for the team's tag (AWS Cost Explorer, which charges per "
                   "call; GCP's billing export; Azure Cost Management).")
@wide_option
@pass_ctx
def report(ctx, stack: str, all_stacks: bool, by: str, period: str, fmt: str, as_json: bool, billed: bool,
           wide: bool) -> None:
    """Instance-hours × price, predictions, cost per prediction, busy share, and the budget used."""
    from mlplat.api.plane import plane_for

    spec = _stack(ctx, stack, all_stacks)
    doc = plane_for(spec, ctx).call("cost.report", by=by, period=period, all_stacks=all_stacks, billed=billed)
    rows = doc["rows"]
    if as_json or fmt == "json":
        emit_json(doc)
        return
    columns = [by, "cost_usd", "instance_hours", "predictions", "cost_per_prediction_usd", "busy_seconds", "utilisation"]
    if doc.get("training"):  # training jobs ran in the period: their instance time and cost, per group
        columns += ["training_hours", "training_usd"]
    if by == "team" and doc["budget"]:
        columns += ["budget_period_usd", "budget_share"]
    if fmt == "csv":
        import csv
        import sys

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
        return
    from mlplat.formatting import Column, print_table

    print_table(ctx.console, [Column(k, TABLE_PRIORITY.get(k, 0), justify="left" if k == by else "right")
                              for k in columns],
                [[_cell(k, row.get(k)) for k in columns] for row in rows], wide=wide,
                title=f"cost by {by}, {doc['period']['label']} ({doc['period']['days']:.2f} days)")
    per = doc["cost_per_prediction_usd"]
    ctx.console.print(f"total ${doc['total_usd']:.4f} for {doc['predictions']} predictions"
                      + (f" (${per:.6f} per prediction)" if per is not None else ""), highlight=False)
    if doc.get("training"):
        jobs = doc["training"]
        ctx.console.print(f"training: {len(jobs)} job(s), {sum(j['hours'] for j in jobs):.4f} instance-hours, "
                          f"${sum(j['cost_usd'] for j in jobs):,.4f} (in the total and the budget share)",
                          highlight=False)
    for team, budget in doc["budget"].items():
        monthly, share = budget["monthly_usd"], budget["share"]
        ctx.console.print(f"budget of {team}: ${monthly:,.2f}/month, ${budget['period_usd']:,.2f} for this "
                          f"period, {share:.1%} used" if share is not None else f"budget of {team}: ${monthly:,.2f}/month",
                          highlight=False)
    for bill in doc.get("billed") or []:
        teams = ", ".join(f"{team} ${usd:,.2f}" for team, usd in sorted(bill["by_team"].items())) or "nothing billed"
        ctx.console.print(f"billed ({bill['source']}, {bill['metric']}) for stack {bill['stack']}: {teams}",
                          highlight=False)


def _stack(ctx, stack: str, all_stacks: bool):
    """The stack whose control plane answers; with --all-stacks any stack of the project will do."""
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


# The group and its money always show, whole; the usage behind the money goes first when space runs out.
TABLE_PRIORITY = {"predictions": 1, "budget_share": 1, "budget_period_usd": 2, "utilisation": 3, "instance_hours": 4,
                  "busy_seconds": 5}


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "budget_share" or key == "utilisation":
        return f"{value:.2%}"
    if key.endswith("_usd"):
        return f"${value:.6f}" if key == "cost_per_prediction_usd" else f"${value:,.4f}"
    return str(value)
