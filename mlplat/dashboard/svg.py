"""Small server-rendered SVG charts: no JavaScript, no CDN, readable without colour alone.

Every chart scales down with its card (``viewBox``, ``max-width: 100%``), names its axes with
their units, and labels its ticks. Time runs along the x axis in UTC.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2")
REFERENCE, CURRENT = "#94a3b8", "#d97706"
_TIME_STEPS = (60, 300, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400,
               14 * 86400, 30 * 86400)


def _num(value: float) -> str:
    return f"{value:.4g}"


def _open(width: int, height: int, title: str) -> str:
    return (f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
            f"<title>{escape(title)}</title>")


def placeholder(message: str, *, title: str = "", height: int = 120) -> str:
    """What stands where a chart would, while there is nothing to draw (never an empty frame)."""
    return (f'<div class="placeholder" role="note" aria-label="{escape(title or message)}" '
            f'style="min-height:{height}px">{escape(message)}</div>')


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values from at most ``lo`` to at least ``hi`` (steps of 1, 2 or 5 × a power of ten)."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def time_ticks(t0: float, t1: float, count: int = 6) -> tuple[list[float], str]:
    """Tick times (UTC) between ``t0`` and ``t1`` and the strftime format that labels them."""
    span = max(t1 - t0, 1.0)
    step = next((s for s in _TIME_STEPS if span / s <= count), _TIME_STEPS[-1])
    # steps of a day or more start at the first UTC midnight in the span (not at a multiple of the step)
    align = 86400 if step >= 86400 else step
    first = float(math.ceil(t0 / align) * align)
    ticks = [first + i * step for i in range(int((t1 - first) // step) + 1)] or [t0]
    one_day = utc(t0, "%Y-%m-%d") == utc(t1, "%Y-%m-%d")
    fmt = "%Y-%m-%d" if step >= 86400 else "%H:%M" if one_day else "%m-%d %H:%M"
    return ticks, fmt


def utc(ts: float, fmt: str) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime(fmt)


def bars(items: Sequence[tuple[str, float, bool]], *, threshold: float | None = None, title: str = "",
         width: int = 520, unit: str = "", axis: str = "") -> str:
    """Horizontal bars (label, value, flagged); flagged bars are red and marked with '!'. ``axis`` names the
    value axis (with its unit)."""
    if not items:
        return placeholder("no values to draw", title=title)
    row_h, left, right = 22, 150, 70
    height = row_h * len(items) + 48
    top = max([v for _, v, _ in items] + [threshold or 0.0]) or 1.0
    scale = (width - left - right) / top
    base = 10 + row_h * len(items)
    out = [_open(width, height, title),
           f'<line x1="{left}" y1="{base}" x2="{width - right}" y2="{base}" stroke="#999"/>']
    for tick in nice_ticks(0, top, 4):
        x = left + tick * scale
        out.append(f'<text class="tick" x="{x:.1f}" y="{base + 12}" text-anchor="middle" font-size="10">'
                   f"{_num(tick)}</text>")
    for i, (label, value, flagged) in enumerate(items):
        y = 10 + i * row_h
        w = max(1.0, value * scale)
        colour = "#dc2626" if flagged else "#2563eb"
        out.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" font-size="12">{escape(label)}</text>')
        out.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" fill="{colour}"/>')
        out.append(f'<text x="{left + w + 4:.1f}" y="{y + 14}" font-size="11">{_num(value)}{unit}'
                   f'{" !" if flagged else ""}</text>')
    if threshold is not None:
        x = left + threshold * scale
        out.append(f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{base}" stroke="#111" stroke-dasharray="4 3"/>'
                   f'<text x="{x + 3:.1f}" y="8" font-size="10">threshold {_num(threshold)}</text>')
    if axis:
        out.append(f'<text class="axis-title" x="{left + (width - left - right) / 2}" y="{height - 4}" '
                   f'text-anchor="middle" font-size="11">{escape(axis)}</text>')
    out.append("</svg>")
    return "".join(out)


def time_lines(series: Mapping[str, Sequence[tuple[float, float]]], *, title: str, y_title: str,
               x_title: str = "time (UTC)", width: int = 560, height: int = 220, y_min: float | None = None,
               y_max: float | None = None, x_range: tuple[float, float] | None = None,
               dashed: Sequence[str] = (), guides: Sequence[tuple[str, float]] = ()) -> str:
    """Lines over time: ``series`` maps a name to ``(unix seconds, value)`` points. The x axis carries UTC
    tick labels and ``x_title``, the y axis ticks and ``y_title`` (name the unit there). ``dashed`` series
    (forecasts) are drawn dashed; ``guides`` are labelled horizontal lines (budgets, thresholds)."""
    points = [p for s in series.values() for p in s]
    if not points:
        return placeholder("no points yet", title=title)
    left, right, top, bottom = 56, 130, 12, 44
    xs = [p[0] for p in points]
    ys = [p[1] for p in points] + [g[1] for g in guides]
    x0, x1 = x_range if x_range else (min(xs), max(xs))
    if x1 <= x0:
        x0, x1 = x0 - 1800, x1 + 1800
    y0 = min(ys) if y_min is None else y_min
    y1 = max(ys) if y_max is None else y_max
    if y1 <= y0:
        y0, y1 = (y0 - 1, y1 + 1) if y0 else (0.0, 1.0)
    yt = nice_ticks(y0, y1)
    y0, y1 = min(y0, yt[0]), max(y1, yt[-1])
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    out = [_open(width, height, title),
           f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#999"/>']
    for tick in yt:
        out.append(f'<line x1="{left}" y1="{sy(tick):.1f}" x2="{left + plot_w}" y2="{sy(tick):.1f}" stroke="#eef2f7"/>'
                   f'<text class="tick" x="{left - 4}" y="{sy(tick) + 3:.1f}" text-anchor="end" font-size="10">'
                   f"{_num(tick)}</text>")
    ticks, fmt = time_ticks(x0, x1)
    for tick in ticks:
        out.append(f'<line x1="{sx(tick):.1f}" y1="{top + plot_h}" x2="{sx(tick):.1f}" y2="{top + plot_h + 4}" '
                   f'stroke="#999"/><text class="tick" x="{sx(tick):.1f}" y="{top + plot_h + 15}" '
                   f'text-anchor="middle" font-size="10">{escape(utc(tick, fmt))}</text>')
    out.append(f'<text class="axis-title" x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" '
               f'font-size="11">{escape(x_title)}</text>'
               f'<text class="axis-title" x="12" y="{top + plot_h / 2}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 12 {top + plot_h / 2})">{escape(y_title)}</text>')
    for label, value in guides:
        out.append(f'<line x1="{left}" y1="{sy(value):.1f}" x2="{left + plot_w}" y2="{sy(value):.1f}" stroke="#111" '
                   f'stroke-dasharray="2 2"/><text x="{left + 4}" y="{sy(value) - 3:.1f}" font-size="10">'
                   f"{escape(label)}</text>")
    for i, (name, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        pts = sorted(pts)
        dash = ' stroke-dasharray="6 4"' if name in dashed else ""
        if len(pts) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{path}"/>')
        for x, y in pts:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"><title>{escape(name)} '
                       f'{_num(y)} at {escape(utc(x, "%Y-%m-%d %H:%M UTC"))}</title></circle>')
        ly = top + 16 * i + 8
        out.append(f'<line x1="{width - right + 8}" y1="{ly - 3}" x2="{width - right + 22}" y2="{ly - 3}" '
                   f'stroke="{colour}" stroke-width="3"{dash}/>'
                   f'<text class="legend" x="{width - right + 26}" y="{ly + 1}" font-size="11">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def histogram(bins: Sequence[str], reference: Sequence[float], current: Sequence[float], *, title: str,
              x_title: str, width: int = 420, height: int = 200) -> str:
    """Reference and current shares side by side per bin (grey: reference, amber: current)."""
    if not bins:
        return placeholder("no bins stored for this window", title=title)
    left, right, top, bottom = 44, 8, 22, 58
    plot_w, plot_h = width - left - right, height - top - bottom
    y1 = max(list(reference) + list(current) + [0.01])
    yt = nice_ticks(0, y1 * 100, 4)
    y1 = yt[-1] / 100
    slot = plot_w / len(bins)
    bar = max(1.0, slot / 2 - 1)
    out = [_open(width, height, title),
           f'<rect x="{left}" y="4" width="10" height="10" fill="{REFERENCE}"/>'
           f'<text class="legend" x="{left + 14}" y="13" font-size="11">reference</text>'
           f'<rect x="{left + 84}" y="4" width="10" height="10" fill="{CURRENT}"/>'
           f'<text class="legend" x="{left + 98}" y="13" font-size="11">current window</text>',
           f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>']
    for tick in yt:
        y = top + plot_h - tick / 100 / y1 * plot_h
        out.append(f'<text class="tick" x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" font-size="10">'
                   f"{_num(tick)}</text>")
    every = max(1, math.ceil(len(bins) / 6))
    for i, label in enumerate(bins):
        x = left + i * slot
        for j, (share, colour, name) in enumerate(((reference[i], REFERENCE, "reference"),
                                                    (current[i], CURRENT, "current"))):
            h = share / y1 * plot_h
            out.append(f'<rect x="{x + j * bar + 1:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                       f'fill="{colour}"><title>{escape(label)}: {name} {share:.1%}</title></rect>')
        if i % every == 0:
            out.append(f'<text class="tick" x="{x + slot / 2:.1f}" y="{top + plot_h + 13}" text-anchor="middle" '
                       f'font-size="9">{escape(label)}</text>')
    out.append(f'<text class="axis-title" x="{left + plot_w / 2}" y="{height - 18}" text-anchor="middle" '
               f'font-size="11">{escape(x_title)}</text>'
               f'<text class="axis-title" x="12" y="{top + plot_h / 2}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 12 {top + plot_h / 2})">share of rows (%)</text></svg>')
    return "".join(out)


def reliability(bins: Sequence[dict[str, Any]], *, title: str = "calibration", size: int = 240) -> str:
    """Observed positive rate against mean score per bin; the diagonal is perfect calibration."""
    if not bins:
        return placeholder("no scored labels yet", title=title)
    pad = 36
    span = size - 2 * pad

    def at(v: float) -> float:
        return pad + v * span

    out = [_open(size, size, title),
           f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="none" stroke="#999"/>',
           f'<line x1="{pad}" y1="{size - pad}" x2="{size - pad}" y2="{pad}" stroke="#999" stroke-dasharray="4 3"/>',
           f'<text class="axis-title" x="{size / 2}" y="{size - 6}" text-anchor="middle" font-size="11">'
           "mean predicted score (0–1)</text>",
           f'<text class="axis-title" x="12" y="{size / 2}" font-size="11" transform="rotate(-90 12 {size / 2})" '
           'text-anchor="middle">observed positive rate (0–1)</text>']
    for tick in (0.0, 0.5, 1.0):
        out.append(f'<text class="tick" x="{at(tick):.1f}" y="{size - pad + 12}" text-anchor="middle" font-size="10">'
                   f'{_num(tick)}</text><text class="tick" x="{pad - 4}" y="{size - at(tick) + 3:.1f}" '
                   f'text-anchor="end" font-size="10">{_num(tick)}</text>')
    total = sum(b["count"] for b in bins) or 1
    for b in bins:
        r = 2 + 8 * (b["count"] / total) ** 0.5
        out.append(f'<circle cx="{at(b["mean_score"]):.1f}" cy="{size - at(b["observed"]):.1f}" r="{r:.1f}" '
                   f'fill="#2563eb" fill-opacity="0.7"><title>score {_num(b["mean_score"])}, observed '
                   f'{_num(b["observed"])}, n={b["count"]}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def split(routes: Sequence[tuple[str, float]], *, width: int = 320, title: str = "traffic split") -> str:
    """One stacked bar of traffic weights (percent)."""
    if not routes:
        return ""
    total = sum(w for _, w in routes) or 1
    out = [_open(width, 26, title)]
    x = 0.0
    for i, (label, weight) in enumerate(routes):
        w = weight / total * width
        out.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="26" fill="{PALETTE[i % len(PALETTE)]}"/>')
        if w > 40:
            out.append(f'<text x="{x + 4:.1f}" y="17" font-size="11" fill="#fff">{escape(label)} {weight:g}%</text>')
        x += w
    out.append("</svg>")
    return "".join(out)


def gauge(spent: float, budget: float, *, width: int = 320, title: str = "budget") -> str:
    """Spend against a budget; past 80 % amber, past 100 % red."""
    share = spent / budget if budget else 0.0
    colour = "#dc2626" if share >= 1 else "#d97706" if share >= 0.8 else "#059669"
    w = min(1.0, share) * width
    return (_open(width, 22, title) + f'<rect x="0" y="0" width="{width}" height="22" fill="#e5e7eb"/>'
            f'<rect x="0" y="0" width="{w:.1f}" height="22" fill="{colour}"/>'
            f'<text x="6" y="15" font-size="11">{share:.1%} of ${budget:,.2f}</text></svg>')
