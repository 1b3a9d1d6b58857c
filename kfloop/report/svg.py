"""Small inline SVG charts for the periodic report: line trends, bars, stacked bars, a verdict strip and a budget
bar. Each returns one ``<svg>`` element with a ``<title>`` (what it shows, for screen readers and hover) and a
``data-plot`` name; all text is escaped; nothing is fetched and no script runs, so the page draws at once, offline,
and prints as it shows."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["COLORS", "bars", "budget_bar", "lines", "stacked_bars", "verdict_strip"]

COLORS = {
    "blue": "#1c7ed6",
    "orange": "#f08c00",
    "red": "#c92a2a",
    "green": "#2f9e44",
    "violet": "#7048e8",
    "grey": "#9aa5b1",
    "axis": "#9aa5b1",
    "text": "#52606d",
}
_FONT = 'font-family="system-ui,sans-serif" font-size="11"'


def _num(value: float) -> str:
    """A compact axis label: 0.9123 → 0.912, 12345 → 12.3k."""
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.3g}k"
    if magnitude >= 1e3:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _open(name: str, title: str, width: int, height: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" data-plot="{escape(name)}" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>'
    )


def _text(x: float, y: float, label: str, anchor: str = "start", color: str = COLORS["text"]) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{color}" {_FONT}>{escape(label)}</text>'


def lines(
    name: str,
    title: str,
    series: Sequence[tuple[str, Sequence[float | None], str]],
    *,
    x_labels: tuple[str, str] = ("", ""),
    xs: Sequence[float] | None = None,
    threshold: tuple[str, float] | None = None,
    width: int = 640,
    height: int = 170,
    floor_zero: bool = True,
) -> str:
    """Lines through ``series`` (label, values, color); a None value breaks its line. The i-th values sit at
    ``xs[i]`` (0 the left edge, 1 the right: e.g. their times in the period), else equally spaced. Each point is a
    small dot (one ``<circle>`` per value), so a single run still shows. ``threshold`` (label, value) is drawn
    dashed; the y axis spans every value and the threshold (from 0 unless ``floor_zero`` is false)."""
    left, right, top, bottom = 44, 10, 18, 22
    values = [v for _, vs, _ in series for v in vs if v is not None]
    if threshold is not None:
        values.append(threshold[1])
    if not values:
        return _open(name, title, width, 40) + _text(4, 24, "no data in this period") + "</svg>"
    lo, hi = (min(0.0, *values) if floor_zero else min(values)), max(values)
    if hi == lo:
        hi, lo = hi + (abs(hi) * 0.1 or 1.0), lo - (abs(lo) * 0.1 if not floor_zero else 0.0)
    n = max(len(vs) for _, vs, _ in series)
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(i: int) -> float:
        if xs is not None:
            return left + plot_w * min(1.0, max(0.0, xs[i]))
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - lo) / (hi - lo))

    parts = [_open(name, title, width, height)]
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{COLORS["axis"]}"/>'
    )
    parts += [_text(left - 4, y(hi) + 4, _num(hi), "end"), _text(left - 4, y(lo) + 4, _num(lo), "end")]
    parts += [_text(left, height - 6, x_labels[0]), _text(left + plot_w, height - 6, x_labels[1], "end")]
    if threshold is not None:
        ty = y(threshold[1])
        parts.append(
            f'<line x1="{left}" y1="{ty:.1f}" x2="{left + plot_w}" y2="{ty:.1f}" stroke="{COLORS["red"]}" '
            'stroke-dasharray="4 3" data-threshold="1"/>'
        )
        parts.append(_text(left + plot_w, ty - 3, f"{threshold[0]} {_num(threshold[1])}", "end", COLORS["red"]))
    legend_x = left
    for label, vs, color in series:
        runs: list[list[str]] = [[]]
        dots = []
        for i, v in enumerate(vs):
            if v is None:
                runs.append([])
                continue
            runs[-1].append(f"{x(i):.1f},{y(v):.1f}")
            dots.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="{2 if n > 60 else 3}" fill="{color}"/>')
        parts += [
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(r)}"/>' for r in runs if r
        ]
        parts.append(f'<g class="points" data-series="{escape(label)}">{"".join(dots)}</g>')
        parts.append(f'<rect x="{legend_x}" y="4" width="10" height="10" fill="{color}"/>')
        parts.append(_text(legend_x + 14, 13, label))
        legend_x += 24 + 7 * len(label)
    return "".join(parts) + "</svg>"


def bars(
    name: str,
    title: str,
    items: Sequence[tuple[str, float | None, str]],
    *,
    width: int = 640,
    height: int = 170,
) -> str:
    """One bar per item (label, value, color), labelled below with its name and above with its value; a None
    value leaves an empty slot marked ``n/a``."""
    left, right, top, bottom = 10, 10, 18, 24
    values = [v for _, v, _ in items if v is not None]
    if not items:
        return _open(name, title, width, 40) + _text(4, 24, "no data in this period") + "</svg>"
    lo, hi = min(0.0, *values) if values else 0.0, max([0.0, *values]) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom
    slot = plot_w / len(items)
    bar_w = max(2.0, min(48.0, slot * 0.7))
    parts = [_open(name, title, width, height)]
    base = top + plot_h * hi / (hi - lo) if hi > lo else top + plot_h
    parts.append(f'<line x1="{left}" y1="{base:.1f}" x2="{left + plot_w}" y2="{base:.1f}" stroke="{COLORS["axis"]}"/>')
    for i, (label, v, color) in enumerate(items):
        cx = left + slot * (i + 0.5)
        if v is None:
            parts.append(_text(cx, base - 4, "n/a", "middle"))
        else:
            h = plot_h * abs(v) / (hi - lo) if hi > lo else 0.0
            y = base - h if v >= 0 else base
            parts.append(
                f'<rect class="bar" x="{cx - bar_w / 2:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 1):.1f}" '
                f'fill="{color}"><title>{escape(label)}: {escape(_num(v))}</title></rect>'
            )
            if slot >= 28:
                parts.append(_text(cx, y - 3 if v >= 0 else y + h + 11, _num(v), "middle"))
        if slot >= 28:
            parts.append(_text(cx, height - 8, label, "middle"))
    return "".join(parts) + "</svg>"


def stacked_bars(
    name: str,
    title: str,
    labels: Sequence[str],
    stacks: Sequence[tuple[str, Sequence[float], str]],
    *,
    x_labels: tuple[str, str] = ("", ""),
    xs: Sequence[float] | None = None,
    width: int = 640,
    height: int = 170,
) -> str:
    """One bar per label, its parts stacked in the order of ``stacks`` (name, values, color), with a legend; the
    i-th bar centred at ``xs[i]`` (0 the left edge, 1 the right), else in equal slots."""
    left, right, top, bottom = 44, 10, 18, 22
    if not labels:
        return _open(name, title, width, 40) + _text(4, 24, "no data in this period") + "</svg>"
    totals = [sum(s[1][i] for s in stacks) for i in range(len(labels))]
    hi = max(totals) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom
    slot = plot_w / len(labels)
    bar_w = max(1.0, min(40.0 if xs is None else 16.0, slot * 0.75))
    inner = plot_w - bar_w
    parts = [_open(name, title, width, height)]
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{COLORS["axis"]}"/>'
    )
    parts += [_text(left - 4, top + 4, _num(hi), "end"), _text(left - 4, top + plot_h + 4, "0", "end")]
    parts += [_text(left, height - 6, x_labels[0]), _text(left + plot_w, height - 6, x_labels[1], "end")]
    for i, label in enumerate(labels):
        y = top + plot_h
        tip = ", ".join(f"{s[0]} {s[1][i]:,.0f}" for s in stacks)
        group = [f'<g class="bar" data-label="{escape(label)}"><title>{escape(label)}: {escape(tip)}</title>']
        for _, values, color in stacks:
            h = plot_h * values[i] / hi
            if h > 0:
                y -= h
                x = left + (inner * min(1.0, max(0.0, xs[i])) if xs is not None else slot * (i + 0.5) - bar_w / 2)
                group.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 1):.1f}" fill="{color}"/>'
                )
        parts.append("".join(group) + "</g>")
    legend_x = left
    for label, _, color in stacks:
        parts.append(f'<rect x="{legend_x}" y="4" width="10" height="10" fill="{color}"/>')
        parts.append(_text(legend_x + 14, 13, label))
        legend_x += 24 + 7 * len(label)
    return "".join(parts) + "</svg>"


def verdict_strip(
    name: str,
    title: str,
    verdicts: Sequence[str],
    colors: dict[str, str],
    *,
    x_labels: tuple[str, str] = ("", ""),
    width: int = 640,
    height: int = 46,
) -> str:
    """One cell per check, in order, colored by its verdict; equal neighbours merge into one band."""
    left, right = 10, 10
    if not verdicts:
        return _open(name, title, width, 40) + _text(4, 24, "no checks in this period") + "</svg>"
    plot_w = width - left - right
    cell = plot_w / len(verdicts)
    parts = [_open(name, title, width, height)]
    i = 0
    while i < len(verdicts):
        j = i
        while j + 1 < len(verdicts) and verdicts[j + 1] == verdicts[i]:
            j += 1
        color = colors.get(verdicts[i], COLORS["grey"])
        parts.append(
            f'<rect class="band" data-verdict="{escape(verdicts[i])}" data-checks="{j - i + 1}" '
            f'x="{left + cell * i:.1f}" y="4" width="{cell * (j - i + 1):.2f}" height="22" fill="{color}">'
            f"<title>{escape(verdicts[i])}: {j - i + 1} check(s)</title></rect>"
        )
        i = j + 1
    parts += [_text(left, height - 6, x_labels[0]), _text(left + plot_w, height - 6, x_labels[1], "end")]
    return "".join(parts) + "</svg>"


def budget_bar(name: str, remaining: float | None, *, width: int = 220, height: int = 18) -> str:
    """The error budget left (1: untouched, 0: spent, below 0: overspent) as a filled bar: green above half, orange
    above zero, red when spent or overspent; None (not measured) is an empty outline."""
    title = "error budget: not measured" if remaining is None else f"error budget left: {remaining:.0%}"
    parts = [_open(name, title, width, height)]
    parts.append(
        f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="#eef2f6" stroke="{COLORS["axis"]}"/>'
    )
    if remaining is not None:
        share = max(0.0, min(1.0, remaining))
        color = COLORS["green"] if remaining > 0.5 else COLORS["orange"] if remaining > 0 else COLORS["red"]
        fill = width - 2 if remaining <= 0 else (width - 2) * share
        parts.append(
            f'<rect class="budget" x="1" y="1" width="{fill:.1f}" height="{height - 2}" fill="{color}" '
            f'opacity="{0.35 if remaining <= 0 else 1}"/>'
        )
    return "".join(parts) + "</svg>"
