"""Metric charts drawn on the server as inline SVG: no JavaScript library, nothing from a CDN.

Every text that reaches the SVG (metric and run names) goes through ``markupsafe.escape``; the
result is ``Markup`` so templates embed it without escaping it twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 560, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 40
# Colour-blind-safe palette (Okabe-Ito), one per compared run.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
MAX_MARKERS = 60


def x_values(points: Sequence[dict[str, Any]], axis: str) -> list[float]:
    """x of each point: its step (or position when steps are missing) or seconds since the first."""
    if axis == "time":
        t0 = points[0]["time"] if points else 0.0
        return [float(p["time"]) - t0 for p in points]
    if points and all(p.get("step") is not None for p in points):
        return [float(p["step"]) for p in points]
    return [float(i) for i in range(len(points))]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4g}"


def _span(lo: float, hi: float) -> tuple[float, float]:
    if hi > lo:
        return lo, hi
    pad = abs(lo) * 0.1 or 1.0
    return lo - pad, hi + pad


def line_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    axis: str = "step",
    chart_id: str = "",
) -> Markup:
    """An SVG line chart of one metric; ``series`` is ``[(label, points)]`` (one per run compared)."""
    drawn = [(label, points, x_values(points, axis)) for label, points in series if points]
    xs = [x for _, _, xv in drawn for x in xv]
    ys = [p["value"] for _, points, _ in drawn for p in points]
    label_x = "seconds since first value" if axis == "time" else "step"
    parts = [
        f'<svg class="mltrain-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)} over {label_x}" data-metric="{escape(title)}" '
        f'data-points="{len(ys)}" id="{escape(chart_id)}">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="{LEFT}" y="18">{escape(title)}</text>',
    ]
    if not drawn:
        parts.append(f'<text class="chart-empty" x="{WIDTH / 2}" y="{HEIGHT / 2}">no numeric values</text>')
        parts.append("</svg>")
        return Markup("".join(parts))  # noqa: S704 - every text above went through escape()  # noqa: S704 - every text above went through escape()
    x0, x1 = _span(min(xs), max(xs))
    y0, y1 = _span(min(ys), max(ys))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - (y - y0) / (y1 - y0) * plot_h

    parts.append(
        f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none"></rect>'
    )
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"></line>'
            f'<text class="tick" x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_fmt(y)}</text>'
        )
    for i in range(5):
        x = x0 + (x1 - x0) * i / 4
        parts.append(
            f'<text class="tick" x="{sx(x):.1f}" y="{TOP + plot_h + 16}" '
            f'text-anchor="middle">{_fmt(x)}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{LEFT + plot_w / 2}" y="{HEIGHT - 4}" '
        f'text-anchor="middle">{label_x}</text>'
    )
    for n, (label, points, xv) in enumerate(drawn):
        color = COLORS[n % len(COLORS)]
        coords = " ".join(f"{sx(x):.1f},{sy(p['value']):.1f}" for x, p in zip(xv, points))
        parts.append(
            f'<polyline class="series" fill="none" stroke="{color}" stroke-width="2" points="{coords}" '
            f'data-label="{escape(label)}"></polyline>'
        )
        if len(points) <= MAX_MARKERS:
            for x, p in zip(xv, points):
                parts.append(
                    f'<circle cx="{sx(x):.1f}" cy="{sy(p["value"]):.1f}" r="3" fill="{color}">'
                    f"<title>{escape(label)}: {_fmt(p['value'])} at {label_x} {_fmt(x)}"
                    f"{_when(p.get('time'))}</title></circle>"
                )
        if len(drawn) > 1:
            parts.append(
                f'<text class="legend" x="{LEFT + plot_w - 4}" y="{TOP + 14 + 14 * n}" text-anchor="end" '
                f'fill="{color}">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above went through escape()


def _when(ts: float | None) -> str:
    if ts is None or not math.isfinite(ts):
        return ""
    return " (" + datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") + ")"
