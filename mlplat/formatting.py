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
    headers = [text(c.header) for c in columns]
    # Each column's width on one line per cell (natural) and, for a wrapping column, its longest word
    # (the narrowest rich will make it): measured once, then added up for each choice of columns.
    natural = [max([headers[i].cell_len, *(line.cell_len for row in texts for line in row[i].split())])
               for i in range(len(columns))]
    longest_word = [max([len(w) for t in (headers[i], *(row[i] for row in texts)) for w in t.plain.split()] or [1])
                    for i in range(len(columns))]
    least = [longest_word[i] if c.wrap else natural[i] for i, c in enumerate(columns)]
    frames: dict[int, int] = {}

    def frame(n: int) -> int:
        """The borders and padding of a table of ``n`` columns."""
        if n not in frames:
            from rich.measure import Measurement
            from rich.table import Table

            console = Console(width=10_000, file=io.StringIO(), color_system=None, legacy_windows=False)
            empty = Table(title=None)
            for _ in range(n):
                empty.add_column("", min_width=1, no_wrap=True)
            frames[n] = Measurement.get(console, console.options, empty).maximum - n
        return frames[n]

    def build(keep: list[int], *, whole: bool = True) -> Table:
        from rich.table import Table

        table = Table(title=title)
        for i in keep:
            c = columns[i]
            table.add_column(headers[i], justify=c.justify, overflow="fold", no_wrap=whole and not c.wrap,
                             min_width=natural[i] if whole and not c.wrap else None)
        for row in texts:
            table.add_row(*[row[i] for i in keep])
        return table

    keep = list(range(len(columns)))
    dropped: list[str] = []
    if not wide:
        while frame(len(keep)) + sum(least[i] for i in keep) > width:
            candidates = [i for i in keep if columns[i].priority > 0]
            if not candidates:
                break
            worst = max(candidates, key=lambda i: (columns[i].priority, i))
            keep.remove(worst)
            dropped.append(columns[worst].header)
    minimum = frame(len(keep)) + sum(least[i] for i in keep)
    maximum = frame(len(keep)) + sum(natural[i] for i in keep)
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
