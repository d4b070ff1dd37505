"""Server-rendered SVG charts (lines over time, grouped bars): no JavaScript, no CDN.

Every data point is an element carrying ``data-series`` and ``data-value`` (a ``circle`` of a
line chart, a ``rect`` of a bar chart) with a ``<title>`` tooltip, so a browser test (or a
curious operator) can read the values back from the page.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 48
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")


@dataclass(frozen=True)
class Series:
    """One named line or bar group; ``values`` align with the chart's x labels (None = gap)."""

    name: str
    values: Sequence[float | None]


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value`` (1 for 0)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-9):
            return step * power
    return 10 * power


def number(value: float, unit: str = "") -> str:
    if value == 0:
        text = "0"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 1:
        text = f"{value:.3g}"
    else:
        text = f"{value:.2g}"
    return f"{text}{unit}"


def _frame(chart_id: str, kind: str, title: str, top: float, unit: str, parts: list[str]) -> str:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    grid = []
    for i in range(5):
        y = TOP + plot_h * (1 - i / 4)
        grid.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" '
            f'stroke="#e5e7eb"/><text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
            f'font-size="11" fill="#6b7280">{escape(number(top * i / 4, unit))}</text>'
        )
    return (
        f'<svg class="chart" id="{escape(chart_id)}" data-kind="{kind}" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" style="max-width:{WIDTH}px" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        + "".join(grid)
        + "".join(parts)
        + "</svg>"
    )


def _empty(chart_id: str, title: str) -> SafeString:
    return mark_safe(  # noqa: S308 (every interpolated value is escaped)
        f'<svg class="chart" id="{escape(chart_id)}" data-kind="empty" role="img" '
        f'viewBox="0 0 {WIDTH} 60" width="100%" style="max-width:{WIDTH}px" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        f'<text x="{WIDTH / 2}" y="34" text-anchor="middle" font-size="13" fill="#6b7280">'
        "No data in this window.</text></svg>"
    )


def _x_labels(labels: Sequence[str], x_of, limit: int = 8) -> list[str]:
    step = max(1, math.ceil(len(labels) / limit))
    return [
        f'<text x="{x_of(i):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
        f'font-size="11" fill="#6b7280">{escape(label)}</text>'
        for i, label in enumerate(labels)
        if i % step == 0
    ]


def _legend(series: Sequence[Series]) -> list[str]:
    parts, x = [], LEFT
    for index, item in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        parts.append(
            f'<rect x="{x}" y="{HEIGHT - 18}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="{HEIGHT - 9}" font-size="11" fill="#374151">'
            f"{escape(item.name)}</text>"
        )
        x += 24 + 7 * len(item.name)
    return parts


def line_chart(
    chart_id: str, title: str, labels: Sequence[str], series: Sequence[Series], unit: str = ""
) -> SafeString:
    """Lines over ``labels`` (time buckets), one per series, with a marker per data point."""
    present = [v for s in series for v in s.values if v is not None]
    if not labels or not present:
        return _empty(chart_id, title)
    top = nice_ceiling(max(present))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(i: int) -> float:
        return LEFT + (plot_w * i / (len(labels) - 1) if len(labels) > 1 else plot_w / 2)

    def y_of(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    parts = _x_labels(labels, x_of)
    for index, item in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        name = escape(item.name)
        points = [(i, v) for i, v in enumerate(item.values) if v is not None]
        path = " ".join(
            f"{'L' if n else 'M'}{x_of(i):.1f},{y_of(v):.1f}" for n, (i, v) in enumerate(points)
        )
        parts.append(
            f'<path class="line" data-series="{name}" d="{path}" fill="none" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        for i, v in points:
            parts.append(
                f'<circle class="point" data-series="{name}" data-x="{escape(labels[i])}" '
                f'data-value="{v:g}" cx="{x_of(i):.1f}" cy="{y_of(v):.1f}" r="3" fill="{color}">'
                f"<title>{name} at {escape(labels[i])}: {escape(number(v, unit))}</title></circle>"
            )
    parts += _legend(series)
    return mark_safe(_frame(chart_id, "line", title, top, unit, parts))  # noqa: S308


def bar_chart(
    chart_id: str, title: str, categories: Sequence[str], series: Sequence[Series], unit: str = ""
) -> SafeString:
    """Grouped bars: one group per category, one bar per series."""
    present = [v for s in series for v in s.values if v is not None]
    if not categories or not present:
        return _empty(chart_id, title)
    top = nice_ceiling(max(present))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    group_w = plot_w / len(categories)
    bar_w = group_w * 0.8 / max(len(series), 1)

    def x_of(i: int) -> float:
        return LEFT + group_w * (i + 0.5)

    parts = _x_labels(categories, x_of, limit=12)
    for index, item in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        name = escape(item.name)
        for i, v in enumerate(item.values):
            if v is None:
                continue
            height = plot_h * v / top
            x = LEFT + group_w * i + group_w * 0.1 + bar_w * index
            parts.append(
                f'<rect class="bar" data-series="{name}" data-x="{escape(categories[i])}" '
                f'data-value="{v:g}" x="{x:.1f}" y="{TOP + plot_h - height:.1f}" '
                f'width="{bar_w:.1f}" height="{height:.1f}" fill="{color}">'
                f"<title>{name}, {escape(categories[i])}: {escape(number(v, unit))}</title></rect>"
            )
    parts += _legend(series)
    return mark_safe(_frame(chart_id, "bar", title, top, unit, parts))  # noqa: S308
