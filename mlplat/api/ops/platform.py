"""Operations on the platform itself: adoption across teams, and the service levels it keeps."""
from __future__ import annotations

from typing import Any, Literal

from mlplat.api.operations import InvalidRequest, operation
from mlplat.errors import MlplatError


def _ledger(spec: Any, ctx: Any) -> Any:
    from mlplat.services import registry as reg

    return reg.registry_for(spec, ctx).database()


def _run_started(spec: Any, ctx: Any) -> Any:
    """run id -> when the tracked run started, or None when the stack's tracking store cannot say."""
    cache: dict[str, float | None] = {}
    tracker: list[Any] = []

    def started(run_id: str) -> float | None:
        if run_id in cache:
            return cache[run_id]
        value = None
        try:
            if not tracker:
                from mlplat import providers
                from mlplat.contracts import Capability

                tracker.append(providers.capability(spec, ctx, Capability.TRACKING))
            value = tracker[0].get_run(run_id).start_time
        except MlplatError:  # no tracking store here, or the run is gone: the registration time stands in
            value = None
        cache[run_id] = value
        return value

    return started


def _inventory(spec: Any, ctx: Any) -> Any:
    from mlplat import providers
    from mlplat.contracts import Capability
    from mlplat.errors import CapabilityNotSupported
    from mlplat.services.adoption import Inventory

    kind = spec.provider.kind
    location = str(getattr(spec.provider, "region", None) or getattr(spec.provider, "location", None) or spec.name)
    try:
        serving = providers.capability(spec, ctx, Capability.SERVING)
    except MlplatError as exc:
        return Inventory(kind, location, None, f"not inspected: provider not available ({exc.message})")
    try:
        endpoints = serving.inventory()
    except CapabilityNotSupported as exc:
        return Inventory(kind, location, None, f"not inspected: {exc.hint or exc.message}")
    except MlplatError as exc:  # credentials, permissions, the cloud API: the ledger's part still stands
        return Inventory(kind, location, None, f"not inspected: {exc.message}")
    where = next((e.location for e in endpoints if e.location), location)
    return Inventory(kind, where, endpoints)


def _stacks(spec: Any, ctx: Any, all_stacks: bool) -> list[Any]:
    if not all_stacks:
        return [spec]
    from mlplat.stack import list_stacks, load_stack

    return [load_stack(name, ctx.project()) for name in list_stacks(ctx.project())]


@operation("adoption.report", "GET", "/adoption/report")
def adoption_report(spec: Any, ctx: Any, *, all_stacks: bool = False,
                    trend: Literal["week", "month"] = "month") -> dict[str, Any]:
    """Production models served through the platform against endpoints running outside it, per team and environment.

    ``all_stacks``: every stack of the project where the operation runs that has a ledger here
    (stacks never provisioned, or whose provider has no registry yet, are listed as skipped).
    ``trend``: the share per week or per month.
    Endpoints outside the platform are read from each provider's account and region (AWS: SageMaker
    endpoints without the platform's tags); providers that cannot list them say so."""
    from mlplat.errors import CapabilityNotSupported, NotProvisioned
    from mlplat.services import adoption

    views, connections, skipped, inventories = [], [], [], {}
    try:
        for each in _stacks(spec, ctx, all_stacks):
            try:
                conn = _ledger(each, ctx).connect()
            except (NotProvisioned, CapabilityNotSupported) as exc:
                if not all_stacks:
                    raise
                skipped.append({"stack": each.name, "reason": exc.message})
                continue
            connections.append(conn)
            views.append(adoption.LedgerView(each, conn, _run_started(each, ctx)))
            inventory = _inventory(each, ctx)
            inventories.setdefault((inventory.provider, inventory.location), inventory)
        if not views:
            from mlplat.errors import StackError

            raise StackError("no stack of this project is provisioned on this machine: "
                             + "; ".join(f"{s['stack']}: {s['reason']}" for s in skipped),
                             hint="run `mlplat up --stack dev` first")
        result = adoption.build(views, list(inventories.values()), now=ctx.clock(), trend=trend)
    finally:
        for conn in connections:
            conn.close()
    return result.to_dict() | {"skipped": skipped}


def period_of(text: str, now: float) -> Any:
    """The period ``text`` names, ending at ``now``; a request naming none it can read is refused (422, exit 2)."""
    from mlplat.services.monitoring.cost import PeriodError, parse_period

    hint = "use 30d, 7d, 24h, month, 2026-11 or 2026-11-01..2026-11-15"
    try:
        window = parse_period(text, now)
    except PeriodError as exc:
        raise InvalidRequest(f"invalid period: {exc.message}", where="period", hint=exc.hint or hint) from None
    except (ValueError, OverflowError) as exc:  # a date the calendar does not have (year 0)
        raise InvalidRequest(f"invalid period: '{text}': {exc}", where="period", hint=hint) from None
    if window.end <= window.start:
        raise InvalidRequest(f"invalid period: '{text}' has not begun yet", where="period", hint=hint)
    return window


@operation("sla.report", "GET", "/sla/report")
def sla_report(spec: Any, ctx: Any, *, period: str = "30d") -> dict[str, Any]:
    """The platform's service levels over the period ending now, against the stack's objectives (mlplat:sla).

    ``period``: 30d, 7d, 24h, month (calendar month to date), 2026-11, or 2026-11-01..2026-11-15.
    ``breached`` is true when a measured figure misses its objective."""
    from mlplat.services import sla

    window = period_of(period, ctx.clock())
    conn = _ledger(spec, ctx).connect()
    try:
        mode = "server" if getattr(spec.control_plane, "url", None) else "embedded"
        result = sla.report(conn, spec, start=window.start, end=window.end, label=window.label, control_plane=mode)
    finally:
        conn.close()
    return result.to_dict() | {"objectives": spec.sla.model_dump()}
