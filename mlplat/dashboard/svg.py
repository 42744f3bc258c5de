"""Small server-rendered SVG charts: no JavaScript, no CDN, readable without colour alone."""
from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2")


def _num(value: float) -> str:
    return f"{value:.4g}"


def bars(items: Sequence[tuple[str, float, bool]], *, threshold: float | None = None, title: str = "",
         width: int = 520, unit: str = "") -> str:
    """Horizontal bars (label, value, flagged); flagged bars are red and marked with '!'."""
    if not items:
        return '<p class="muted">no data</p>'
    row_h, left, right = 22, 150, 70
    height = row_h * len(items) + 30
    top = max([v for _, v, _ in items] + [threshold or 0.0]) or 1.0
    scale = (width - left - right) / top
    out = [f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">', f"<title>{escape(title)}</title>"]
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
        out.append(f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{height - 18}" stroke="#111" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 4}" text-anchor="middle" font-size="10">threshold {_num(threshold)}</text>')
    out.append("</svg>")
    return "".join(out)


def lines(series: dict[str, Sequence[tuple[float, float]]], *, title: str = "", width: int = 520, height: int = 200,
          y_min: float | None = None, y_max: float | None = None) -> str:
    """Lines over x (e.g. time or window number) with a legend; one colour and one marker per series."""
    points = [p for s in series.values() for p in s]
    if not points:
        return '<p class="muted">no data</p>'
    left, right, top, bottom = 40, 110, 10, 24
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0 = min(ys) if y_min is None else y_min
    y1 = max(ys) if y_max is None else y_max
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom)

    out = [f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">', f"<title>{escape(title)}</title>",
           f'<line x1="{left}" y1="{sy(y0):.1f}" x2="{width - right}" y2="{sy(y0):.1f}" stroke="#999"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{sy(y0):.1f}" stroke="#999"/>',
           f'<text x="{left - 4}" y="{sy(y1) + 4:.1f}" text-anchor="end" font-size="10">{_num(y1)}</text>',
           f'<text x="{left - 4}" y="{sy(y0):.1f}" text-anchor="end" font-size="10">{_num(y0)}</text>']
    for i, (name, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        pts = sorted(pts)
        if len(pts) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for x, y in pts:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"><title>{escape(name)} '
                       f'{_num(y)}</title></circle>')
        ly = top + 14 * i + 8
        out.append(f'<rect x="{width - right + 8}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{width - right + 22}" y="{ly + 1}" font-size="11">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def reliability(bins: Sequence[dict], *, title: str = "calibration", size: int = 220) -> str:
    """Observed positive rate against mean score per bin; the diagonal is perfect calibration."""
    if not bins:
        return '<p class="muted">no scored labels yet</p>'
    pad = 28
    span = size - 2 * pad

    def at(v: float) -> float:
        return pad + v * span

    out = [f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{size}" height="{size}" '
           f'viewBox="0 0 {size} {size}" xmlns="http://www.w3.org/2000/svg">', f"<title>{escape(title)}</title>",
           f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="none" stroke="#999"/>',
           f'<line x1="{pad}" y1="{size - pad}" x2="{size - pad}" y2="{pad}" stroke="#999" stroke-dasharray="4 3"/>',
           f'<text x="{size / 2}" y="{size - 6}" text-anchor="middle" font-size="10">mean score</text>',
           f'<text x="10" y="{size / 2}" font-size="10" transform="rotate(-90 10 {size / 2})" '
           f'text-anchor="middle">observed rate</text>']
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
    out = [f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="26" '
           f'viewBox="0 0 {width} 26" xmlns="http://www.w3.org/2000/svg">', f"<title>{escape(title)}</title>"]
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
    return (f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="22" '
            f'viewBox="0 0 {width} 22" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
            f'<rect x="0" y="0" width="{width}" height="22" fill="#e5e7eb"/>'
            f'<rect x="0" y="0" width="{w:.1f}" height="22" fill="{colour}"/>'
            f'<text x="6" y="15" font-size="11">{share:.1%} of ${budget:,.2f}</text></svg>')
