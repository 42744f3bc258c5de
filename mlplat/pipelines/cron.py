"""Five-field cron expressions (UTC): parsing with one clear message per mistake, and fire times.

``minute hour day-of-month month day-of-week``, each field ``*``, a number, a range ``a-b``, a
step ``*/n`` or ``a-b/n``, or a comma list of those; months and weekdays also by their English
three-letter names; ``@hourly``, ``@daily``, ``@weekly``, ``@monthly`` and ``@yearly`` as usual.
As in Vixie cron, when both day fields are restricted a day matches if either does.
"""
from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mlplat.errors import ExitCode, MlplatError

ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
           "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
# (name, lowest, highest, names)
FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}), ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS))
HINT = ("a schedule is 5 fields, UTC: minute hour day-of-month month day-of-week, "
        "e.g. \"0 3 * * 1\" (Mondays 03:00) or \"*/15 * * * *\"")
SEARCH_DAYS = 366 * 8  # long enough for "29 february on a Monday"


class CronError(MlplatError):
    """A schedule that is not a valid cron expression."""

    exit_code = ExitCode.CONFIG


@dataclass(frozen=True)
class Cron:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def _day_matches(self, day: datetime) -> bool:
        weekday = (day.weekday() + 1) % 7
        if self.days_restricted and self.weekdays_restricted:
            return day.day in self.days or weekday in self.weekdays
        return day.day in self.days and weekday in self.weekdays

    def next_after(self, ts: float) -> float:
        """The first fire time strictly after ``ts`` (seconds since the epoch)."""
        start = datetime.fromtimestamp(ts, tz=UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for _ in range(SEARCH_DAYS):
            if day.month in self.months and self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        at = day.replace(hour=hour, minute=minute)
                        if at >= start:
                            return at.timestamp()
            day += timedelta(days=1)
        raise CronError(f"schedule {self.expression!r} never fires", hint=HINT)


def _number(text: str, name: str, low: int, high: int, names: dict[str, int], expression: str) -> int:
    value = names.get(text.lower()) if names else None
    if value is None:
        if not text.isdigit():
            raise CronError(f"schedule {expression!r}: {name} field has {text!r}, not a number"
                            + (f" or a name ({', '.join(names)})" if names else ""), hint=HINT)
        value = int(text)
    if not low <= value <= high:
        raise CronError(f"schedule {expression!r}: {name} {value} is outside {low}-{high}", hint=HINT)
    return value


def _field(text: str, name: str, low: int, high: int, names: dict[str, int], expression: str) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronError(f"schedule {expression!r}: {name} field has an empty list item", hint=HINT)
        body, _, step_text = item.partition("/")
        step = 1
        if "/" in item:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"schedule {expression!r}: {name} step {step_text!r} must be a positive number",
                                hint=HINT)
            step = int(step_text)
        if body == "*":
            first, last = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            first = _number(a, name, low, high, names, expression)
            last = _number(b, name, low, high, names, expression)
            if first > last:
                raise CronError(f"schedule {expression!r}: {name} range {body!r} runs backwards", hint=HINT)
        else:
            first = _number(body, name, low, high, names, expression)
            last = high if "/" in item else first
        values.update(range(first, last + 1, step))
    return values


def parse(expression: str) -> Cron:
    """Parse ``expression``; :class:`CronError` names the field and what is wrong with it."""
    if not isinstance(expression, str) or not expression.strip():
        raise CronError("the schedule is empty", hint=HINT)
    text = ALIASES.get(expression.strip().lower(), expression.strip())
    if text.startswith("@"):
        raise CronError(f"schedule {expression!r}: unknown alias (known: {', '.join(ALIASES)})", hint=HINT)
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"schedule {expression!r} has {len(parts)} field(s), a cron expression has 5", hint=HINT)
    sets = [_field(part, *spec, expression=expression) for part, spec in zip(parts, FIELDS, strict=True)]
    weekdays = {0 if d == 7 else d for d in sets[4]}
    return Cron(expression=expression, minutes=frozenset(sets[0]), hours=frozenset(sets[1]), days=frozenset(sets[2]),
                months=frozenset(sets[3]), weekdays=frozenset(weekdays), days_restricted=parts[2] != "*",
                weekdays_restricted=parts[4] != "*")


def validate(expression: str) -> str:
    """``expression`` if valid (and able to fire), else :class:`CronError`."""
    cron = parse(expression)
    cron.next_after(0.0)
    return expression
