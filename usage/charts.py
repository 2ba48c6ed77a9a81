"""
Server-rendered SVG bar charts for the admin's usage page: geometry computed here, drawn by
the template with presentation attributes only (nothing for the page's CSP to refuse, no
script, no chart library).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: str
    label_x: float


@dataclass(frozen=True)
class BarChart:
    title: str
    width: int
    height: int
    bars: list[Bar]
    max_label: str
    baseline: float


def column_chart(
    title: str, points: list[tuple[str, float]], *, fmt: str = "{:,.0f}", width: int = 560
) -> BarChart:
    """Vertical bars, one per point, scaled to the largest value."""
    height, top, bottom = 180, 16, 28
    plot = height - top - bottom
    peak = max((value for _, value in points), default=0) or 1
    step = width / max(1, len(points))
    bars = []
    for index, (label, value) in enumerate(points):
        bar_height = plot * value / peak
        x = index * step + step * 0.15
        bars.append(
            Bar(
                x=round(x, 1),
                y=round(top + plot - bar_height, 1),
                width=round(step * 0.7, 1),
                height=round(bar_height, 1),
                label=label,
                value=fmt.format(value),
                label_x=round(index * step + step / 2, 1),
            )
        )
    return BarChart(title, width, height, bars, fmt.format(peak), top + plot)
