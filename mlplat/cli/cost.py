"""`mlplat cost report`."""
from __future__ import annotations

import click

from mlplat.cli.options import emit_json, pass_ctx, stack_option


@click.group()
def cost() -> None:
    """Cost per prediction and per team / model / version / environment, against the budget."""


def build_report(ctx, stacks: list[str], by: str, period_text: str, billed: list | None = None):
    """The metered report; with ``billed`` (a list to fill), also what each stack's cloud billed."""
    from mlplat import providers
    from mlplat.contracts import Capability
    from mlplat.errors import CapabilityNotSupported
    from mlplat.services.monitoring import cost as cost_mod

    period = cost_mod.parse_period(period_text, ctx.clock())
    reports = []
    for name in stacks:
        spec = ctx.stack(name)
        source = providers.capability(spec, ctx, Capability.COST)
        if billed is not None:
            try:
                bill = source.billed(period.start, period.end)
            except CapabilityNotSupported as exc:
                raise CapabilityNotSupported(exc.provider, exc.capability,
                                             hint=f"the {exc.provider} provider meters usage itself: drop --billed",
                                             ) from None
            billed.append({"stack": name, **bill})
        reports.append(cost_mod.attribute(
            source.deployments(period.start, period.end), source.usage(period.start, period.end), period,
            price_for=spec.serving.price_for, default_instance_type=spec.serving.instance_type, by=by,
            budgets={spec.team: spec.budget.monthly_usd} if spec.budget else {}))
    return reports[0] if len(reports) == 1 else cost_mod.merge(reports, by)


@cost.command("report")
@stack_option
@click.option("--all-stacks", is_flag=True, help="Every provisioned local stack of the project, side by side.")
@click.option("--by", type=click.Choice(["team", "model", "version", "env"]), default="team", show_default=True)
@click.option("--period", default="month", show_default=True,
              help="7d, 24h, month (calendar month to date), 2026-11, or 2026-11-01..2026-11-15.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--billed", is_flag=True,
              help="Also show what the cloud billed for the team's tag (AWS Cost Explorer; AWS charges per call).")
@pass_ctx
def report(ctx, stack: str, all_stacks: bool, by: str, period: str, fmt: str, as_json: bool, billed: bool) -> None:
    """Instance-hours × price, predictions, cost per prediction, busy share, and the budget used."""
    from mlplat.services.monitoring import cost as cost_mod

    names = [stack]
    if all_stacks:
        from mlplat.stack import list_stacks, load_stack

        names = []
        for name in list_stacks(ctx.project()):
            spec = load_stack(name, ctx.project())
            store = spec.provider.metering_store(spec.state_dir)  # None: the provider meters in its cloud
            if store is not None and store.is_file():
                names.append(name)
        if not names:
            from mlplat.errors import NotFound

            raise NotFound("no provisioned local stack in this project", hint="run `mlplat up --stack dev` first")
    bills: list | None = [] if billed else None
    result = build_report(ctx, names, by, period, billed=bills)
    rows = cost_mod.report_rows(result)
    if as_json or fmt == "json":
        emit_json(result.to_dict() | {"rows": rows} | ({"billed": bills} if bills is not None else {}))
        return
    columns = [by, "cost_usd", "instance_hours", "predictions", "cost_per_prediction_usd", "busy_seconds", "utilisation"]
    if by == "team" and result.budgets:
        columns += ["budget_period_usd", "budget_share"]
    if fmt == "csv":
        import csv
        import sys

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
        return
    from rich.table import Table

    table = Table(*columns, title=f"cost by {by}, {result.period.label} ({result.period.days:.2f} days)")
    for row in rows:
        table.add_row(*[_cell(k, row.get(k)) for k in columns])
    ctx.console.print(table)
    per = result.total_usd / result.predictions if result.predictions else None
    ctx.console.print(f"total ${result.total_usd:.4f} for {result.predictions} predictions"
                      + (f" (${per:.6f} per prediction)" if per is not None else ""), highlight=False)
    for team, monthly in result.budgets.items():
        share = result.budget_share(team)
        ctx.console.print(f"budget of {team}: ${monthly:,.2f}/month, ${result.budget_for_period(team):,.2f} for this "
                          f"period, {share:.1%} used" if share is not None else f"budget of {team}: ${monthly:,.2f}/month",
                          highlight=False)
    for bill in bills or []:
        teams = ", ".join(f"{team} ${usd:,.2f}" for team, usd in sorted(bill["by_team"].items())) or "nothing billed"
        ctx.console.print(f"billed ({bill['source']}, {bill['metric']}) for stack {bill['stack']}: {teams}",
                          highlight=False)


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "budget_share" or key == "utilisation":
        return f"{value:.2%}"
    if key.endswith("_usd"):
        return f"${value:.6f}" if key == "cost_per_prediction_usd" else f"${value:,.4f}"
    return str(value)
