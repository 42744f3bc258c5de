"""Fake Cost Management query API (``POST {scope}/providers/Microsoft.CostManagement/query``).

Charges are steered into the state with :func:`add_charge` (team tag value or None, amount, day); the
query body is read into azure-mgmt-costmanagement's own ``QueryDefinition`` (a body it cannot read, or one
naming a field it does not know, is refused with 400) and checked against the documented rules in
:func:`query_rules`. The answer is a ``QueryResult`` with columns ``Cost, TagKey, TagValue, Currency``
as Cost Management answers a query grouped by a tag key. Throttling (``state.throttle(ACTION)``)
answers 429 with ``x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after`` as well as ``Retry-After``.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.contract.azure_fake.arm import ArmError, Call, Route

ACTION = "Microsoft.CostManagement/query/action"
QPU_HEADER = "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after"
MAX_DAYS = 366


def add_charge(state: Any, team: str | None, amount: float, day: str, currency: str = "USD") -> None:
    """One charge of ``amount`` on ``day`` (``YYYY-MM-DD``) for resources tagged ``team`` (None: untagged)."""
    with state.lock:
        state.extra.setdefault("cost", []).append({"team": team, "amount": amount, "day": day,
                                                   "currency": currency})


def throttle(state: Any, times: int = 1, *, qpu_seconds: int = 30, retry_after: int = 5) -> None:
    """The next ``times`` queries answer 429 naming ``qpu_seconds`` in the QPU header and ``retry_after``
    in ``Retry-After`` (the client must wait the longest)."""
    with state.lock:
        state.extra["cost_throttle"] = {"times": times, "qpu": qpu_seconds, "retry_after": retry_after}


def query_rules(body: dict[str, Any]) -> str | None:
    """Cost Management's documented query limits; the refusal's message, or None.

    https://learn.microsoft.com/en-us/rest/api/cost-management/query/usage — ``timePeriod`` is required
    with ``timeframe: Custom`` and must not end before it starts; a custom period covers at most one
    year; grouping takes at most two groupings, of type ``Dimension`` or ``TagKey``.
    """
    timeframe = body.get("timeframe")
    period = body.get("timePeriod")
    if timeframe == "Custom":
        if not period or not period.get("from") or not period.get("to"):
            return "Invalid query definition: timePeriod (from, to) is required when timeframe is Custom."
        start, end = _when(period["from"]), _when(period["to"])
        if end < start:
            return "Invalid query definition: timePeriod.to must not be before timePeriod.from."
        if (end - start).days > MAX_DAYS:
            return f"Invalid query definition: the time period can not exceed 1 year ({(end - start).days} days)."
    grouping = (body.get("dataset") or {}).get("grouping") or []
    if len(grouping) > 2:
        return "Invalid query definition: at most 2 groupings are allowed."
    for group in grouping:
        if group.get("type") not in ("Dimension", "TagKey"):
            return f"Invalid query definition: grouping type '{group.get('type')}' is not supported."
    return None


def _when(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ArmError(400, "BadRequest", f"Invalid query definition: '{value}' is not a date.") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _read(body: Any) -> dict[str, Any]:
    from azure.mgmt.costmanagement import models

    if not isinstance(body, dict):
        raise ArmError(400, "BadRequest", "Invalid query definition: the body must be a JSON object.")
    try:
        parsed = models.QueryDefinition.deserialize(body)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the client's
        raise ArmError(400, "BadRequest", f"Invalid query definition: {exc}") from None
    known = set(models.QueryDefinition._attribute_map[a]["key"].split(".")[0]
                for a in models.QueryDefinition._attribute_map)
    unknown = sorted(set(body) - known)
    if unknown or parsed.type is None or parsed.dataset is None:
        raise ArmError(400, "BadRequest", f"Invalid query definition: unknown member(s) {unknown}" if unknown
                       else "Invalid query definition: type and dataset are required.")
    return dict(parsed.serialize())


def query(call: Call) -> Any:
    with call.state.lock:
        throttled = call.state.extra.get("cost_throttle")
        if throttled and throttled["times"] > 0:
            throttled["times"] -= 1
            raise ArmError(429, "429", "Too many requests. Please retry.",
                           headers={QPU_HEADER: str(throttled["qpu"]), "Retry-After": str(throttled["retry_after"])})
    body = _read(call.json)
    refused = query_rules(body)
    if refused:
        raise ArmError(400, "BadRequest", refused)
    dataset = body["dataset"]
    tag = next((g["name"] for g in dataset.get("grouping") or [] if g.get("type") == "TagKey"), None)
    wanted = ((dataset.get("filter") or {}).get("tags") or {}).get("values")
    start = _when(body["timePeriod"]["from"]).date().isoformat()
    end = _when(body["timePeriod"]["to"]).date().isoformat()
    totals: dict[tuple[str, str, str], float] = {}
    for charge in call.state.extra.get("cost", []):
        if not (start <= charge["day"] <= end):
            continue
        if wanted is not None and charge["team"] not in wanted:
            continue
        key = ((tag or "") if charge["team"] else "", charge["team"] or "", charge["currency"])
        totals[key] = totals.get(key, 0.0) + charge["amount"]
    rows = [[round(amount, 6), key, value, currency] for (key, value, currency), amount in sorted(totals.items())]
    columns = [{"name": "Cost", "type": "Number"}, {"name": "TagKey", "type": "String"},
               {"name": "TagValue", "type": "String"}, {"name": "Currency", "type": "String"}]
    return {"id": f"{call.path}/{len(call.state.calls)}", "name": "query", "type": "Microsoft.CostManagement/query",
            "properties": {"nextLink": None, "columns": columns, "rows": rows}}


ROUTES: list[Route] = [
    ("POST", "/subscriptions/{subscription}/providers/Microsoft.CostManagement/query", ACTION, query),
    ("POST", "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.CostManagement/query", ACTION,
     query),
]
