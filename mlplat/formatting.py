"""How the CLI and the dashboard show values to people (one definition each)."""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def when(ts: float | None, tz: tzinfo | None = None) -> str:
    """A Unix timestamp as ``YYYY-MM-DD HH:MM:SS TZ`` in ``tz`` (default: the machine's local zone),
    always naming its zone so that a time read off a table or a log can be compared with another
    machine's; ``-`` for none (or 0)."""
    if not ts:
        return "-"
    moment = datetime.fromtimestamp(ts, tz) if tz is not None else datetime.fromtimestamp(ts).astimezone()
    return f"{moment:%Y-%m-%d %H:%M:%S} {moment.tzname() or moment.strftime('%z')}"


# --- tables that fit the terminal ----------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of a CLI table.

    ``priority`` 0 marks what a reader needs to act (ids, names, versions, stages, money): always shown,
    never cut. Columns with a higher number are left out first, the highest first (rightmost first among
    equals), when the table does not fit the width. ``wrap`` marks free text (metrics, reasons) that may
    wrap over several lines; every other cell keeps its line whole.
    """

    header: str
    priority: int = 0
    wrap: bool = False
    justify: Literal["left", "right", "center"] = "left"


@dataclass
class Fitted:
    table: Table
    shown: list[str]
    dropped: list[str]
    width: int  # the width the table needs (its widest line)


def fit(columns: Sequence[Column], rows: Sequence[Sequence[str]], *, width: int, wide: bool = False,
        title: str | None = None) -> Fitted:
    """A rich table of ``rows`` (cells are rich markup) that fits ``width`` columns of text.

    Lower-priority columns are left out until the table fits with every kept cell whole (wrapping
    columns at their longest word); priority-0 columns are always kept, and no cell is ever
    truncated (a cell wider than the terminal folds onto the next line instead). ``wide`` keeps
    every column and reports the table's natural width, for printing without the terminal's limit.
    """
    from rich.console import Console
    from rich.errors import MarkupError
    from rich.text import Text

    def text(cell: str) -> Text:
        try:
            return Text.from_markup(cell)
        except MarkupError:  # a reason or description holding brackets: shown as typed
            return Text(cell)

    texts = [[text(cell) for cell in row] for row in rows]
    natural = [max([Text.from_markup(c.header).cell_len,
                    *(max((line.cell_len for line in row[i].split()), default=0) for row in texts)])
               for i, c in enumerate(columns)]
    measuring = Console(width=10_000, file=io.StringIO(), color_system=None, legacy_windows=False)

    def build(keep: list[int], *, whole: bool = True) -> Table:
        from rich.table import Table

        table = Table(title=title)
        for i in keep:
            c = columns[i]
            table.add_column(c.header, justify=c.justify, overflow="fold", no_wrap=whole and not c.wrap,
                             min_width=natural[i] if whole and not c.wrap else None)
        for row in texts:
            table.add_row(*[row[i] for i in keep])
        return table

    def needed(keep: list[int]) -> tuple[int, int]:
        from rich.measure import Measurement

        table = build(keep)
        m = Measurement.get(measuring, measuring.options, table)
        return m.minimum, m.maximum

    keep = list(range(len(columns)))
    dropped: list[str] = []
    if not wide:
        while needed(keep)[0] > width:
            candidates = [i for i in keep if columns[i].priority > 0]
            if not candidates:
                break
            worst = max(candidates, key=lambda i: (columns[i].priority, i))
            keep.remove(worst)
            dropped.append(columns[worst].header)
    minimum, maximum = needed(keep)
    # Only when even the columns that must stay are wider than the terminal may a cell fold over lines
    # (an id broken in two is still whole; a cropped one is not).
    return Fitted(build(keep, whole=wide or minimum <= width), [columns[i].header for i in keep], dropped, maximum)


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]], *,
                wide: bool = False, title: str | None = None) -> Fitted:
    """Fit a table to ``console`` (see :func:`fit`), print it, and say which columns were left out."""
    fitted = fit(columns, rows, width=console.width, wide=wide, title=title)
    if wide and fitted.width > console.width:
        width = console.width
        console.width = fitted.width  # wider than the terminal on purpose: its lines wrap, cells stay whole
        try:
            console.print(fitted.table, crop=False)
        finally:
            console.width = width
    else:
        console.print(fitted.table)
    if fitted.dropped:
        console.print(f"left out to fit {console.width} columns: {', '.join(fitted.dropped)} "
                      "(--wide shows every column)", style="dim", highlight=False, markup=False)
    return fitted
