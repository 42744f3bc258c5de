"""Operations on cost: metered cost per team, model, version or environment against the budget."""
from __future__ import annotations

from typing import Any, Literal

from mlplat.api.operations import operation


def _report(ctx: Any, specs: list[Any], by: str, period_text: str, billed: list[dict[str, Any]] | None) -> Any:
    """The metered report over ``specs``; with ``billed`` (a list to fill), also what each stack's cloud billed."""
    from mlplat import providers
    from mlplat.contracts import Capability
    from mlplat.errors import CapabilityNotSupported
    from mlplat.services import training as training_service
    from mlplat.services.monitoring import cost as cost_mod

    period = cost_mod.parse_period(period_text, ctx.clock())
    reports = []
    for spec in specs:
        source = providers.capability(spec, ctx, Capability.COST)
        if billed is not None:
            try:
                bill = source.billed(period.start, period.end)
            except CapabilityNotSupported as exc:
                raise CapabilityNotSupported(exc.provider, exc.capability,
                                             hint=f"the {exc.provider} provider meters usage itself: drop --billed",
                                             ) from None
            billed.append({"stack": spec.name, **bill})
        reports.append(cost_mod.attribute(
            source.deployments(period.start, period.end), source.usage(period.start, period.end), period,
            price_for=spec.serving.price_for, default_instance_type=spec.serving.instance_type, by=by,
            budgets={spec.team: spec.budget.monthly_usd} if spec.budget else {},
            training=training_service.cost_runs(spec, ctx)))
    return reports[0] if len(reports) == 1 else cost_mod.merge(reports, by)


def _provisioned_stacks(ctx: Any) -> list[Any]:
    """Every stack of the project whose provider meters locally and has metered something."""
    from mlplat.errors import NotFound
    from mlplat.stack import list_stacks, load_stack

    specs = []
    for name in list_stacks(ctx.project()):
        spec = load_stack(name, ctx.project())
        store = spec.provider.metering_store(spec.state_dir)  # None: the provider meters in its cloud
        if store is not None and store.is_file():
            specs.append(spec)
    if not specs:
        raise NotFound("no provisioned local stack in this project", hint="run `mlplat up --stack dev` first")
    return specs


@operation("cost.report", "GET", "/cost/report")
def report(spec: Any, ctx: Any, *, by: Literal["team", "model", "version", "env"] = "team", period: str = "month",
           all_stacks: bool = False, billed: bool = False) -> dict[str, Any]:
    """Instance-hours × price, predictions, cost per prediction, busy share, and the budget used.

    ``period``: 7d, 24h, month (calendar month to date), 2026-11, or 2026-11-01..2026-11-15.
    ``all_stacks``: every provisioned local stack of the project where the operation runs, side
    by side. ``billed``: also what the cloud billed for the team's tag (AWS charges per call)."""
    from mlplat.services.monitoring import cost as cost_mod

    specs = _provisioned_stacks(ctx) if all_stacks else [spec]
    bills: list[dict[str, Any]] | None = [] if billed else None
    result = _report(ctx, specs, by, period, bills)
    return result.to_dict() | {"rows": cost_mod.report_rows(result)} | ({"billed": bills} if bills is not None else {})
