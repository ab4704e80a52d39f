"""Line charts as SVG, drawn on the server: the console loads no charting script and nothing
from elsewhere (its CSP allows scripts and styles from itself only; SVG presentation
attributes need neither)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from ikd_audit.domain.patterns import Chart

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
)
OTHER = "other"


@dataclass(frozen=True, slots=True)
class Line:
    label: str
    colour: str
    values: list[int]

    @property
    def total(self) -> int:
        return sum(self.values)


def lines(chart: Chart, metric: str, *, most: int = 8) -> list[Line]:
    """The busiest `most` keys, and the rest summed as `other`."""
    series = [(s.key or "(none)", getattr(s, metric)) for s in chart.series]
    shown = series[:most]
    rest = series[most:]
    found = [Line(k, PALETTE[i % len(PALETTE)], list(v)) for i, (k, v) in enumerate(shown)]
    if rest:
        summed = [sum(col) for col in zip(*(v for _, v in rest), strict=True)]
        found.append(Line(OTHER, PALETTE[-1], summed))
    return found


def _label(at: dt.datetime, width: dt.timedelta) -> str:
    return at.strftime("%Y-%m-%d" if width >= dt.timedelta(days=1) else "%m-%d %H:%M")


def svg(
    chart: Chart,
    metric: str,
    *,
    chart_id: str,
    title: str,
    alerts: Sequence[dt.datetime] = (),
    size: tuple[int, int] = (760, 240),
) -> Markup:
    """One line per key over the chart's buckets; alert windows marked with a red tick."""
    width, height = size
    left, right, top, bottom = 48, 12, 20, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    drawn = lines(chart, metric)
    n = len(chart.buckets)
    peak = max((max(line.values, default=0) for line in drawn), default=0)
    scale = max(peak, 1)

    def x(i: float) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h - plot_h * v / scale

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{escape(chart_id)}" class="chart" '
        f'role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'data-metric="{escape(metric)}" data-total="{sum(line.total for line in drawn)}" '
        f'data-buckets="{n}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" '
        'stroke="#c9ced6"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="11">{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" font-size="11">0</text>',
    ]
    for i in sorted({0, n // 2, n - 1}) if n else ():
        # the first label starts at the axis and the last ends at the edge: none is cut off
        anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="{anchor}" font-size="11">'
            f"{escape(_label(chart.buckets[i], chart.width))}</text>"
        )
    index = {b: i for i, b in enumerate(chart.buckets)}
    for at in alerts:
        marked = index.get(at)
        if marked is not None:
            parts.append(
                f'<line class="alert-marker" x1="{x(marked):.1f}" x2="{x(marked):.1f}" y1="{top}" '
                f'y2="{top + plot_h}" stroke="#a40e26" stroke-dasharray="4 3"/>'
            )
    for line in drawn:
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(line.values))
        parts.append(
            f'<polyline class="series" data-key="{escape(line.label)}" '
            f'data-total="{line.total}" fill="none" stroke="{line.colour}" stroke-width="2" '
            f'points="{points}"><title>{escape(line.label)}: {line.total}</title></polyline>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped above
