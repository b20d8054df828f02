"""Metric charts drawn on the server as inline SVG: no JavaScript library, nothing from a CDN.

Every text that reaches the SVG (metric and run names) goes through ``markupsafe.escape``; the
result is ``Markup`` so templates embed it without escaping it twice.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 560, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 40
# Colour-blind-safe palette (Okabe-Ito), one per compared run.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
MAX_MARKERS = 60
# Beyond this many series (a sweep's children), points get no markers: the lines say enough.
MAX_MARKED_SERIES = 12


def x_values(points: Sequence[dict[str, Any]], axis: str) -> list[float]:
    """x of each point: its step (or position when steps are missing) or seconds since the first."""
    if axis == "time":
        t0 = points[0]["time"] if points else 0.0
        return [float(p["time"]) - t0 for p in points]
    if points and all(p.get("step") is not None for p in points):
        return [float(p["step"]) for p in points]
    return [float(i) for i in range(len(points))]


def _fmt(value: float) -> str:
    """A value for a tooltip: short, but with the digits a metric needs."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4g}"


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` round tick values (1, 2, 2.5 or 5 times a power of ten) covering [lo, hi];
    whole numbers only when ``integer`` (steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, math.ceil(step))
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    i = 0
    while first + i * step <= hi + step * 1e-9:
        ticks.append(round(first + i * step, 12))
        i += 1
    return ticks


def tick_label(value: float, step: float) -> str:
    """A tick as people write it: as many decimals as the tick spacing needs, k/M/G for big values,
    powers of ten for tiny ones."""
    size = abs(value)
    if size >= 1e4:
        for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if size >= div:
                decimals = max(0, -math.floor(math.log10(step / div))) if step < div else 0
                return f"{value / div:.{min(decimals, 3)}f}{suffix}"
    if step < 1e-3:
        return "0" if value == 0 else f"{value:.1e}".replace("e-0", "e-")
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    while decimals < 12 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1
    return f"{0.0 if abs(value) < step * 1e-6 else value:.{decimals}f}"  # every tick with the same decimals


# The unit a metric's name tells, by its last word: ``epoch_seconds``, ``latency_ms``,
# ``model_bytes``, ``gpu_util_pct``. Nothing else is guessed.
_UNITS = {
    "seconds": "s", "secs": "s", "sec": "s", "s": "s",
    "ms": "ms", "millis": "ms",
    "bytes": "B",
    "pct": "%", "percent": "%",
}  # fmt: skip


def unit_of(metric: str) -> str | None:
    """``s``, ``ms``, ``B`` or ``%`` when the metric's name ends in a word that says so."""
    last = metric.replace(".", "_").replace("-", "_").rsplit("_", 1)
    return _UNITS.get(last[-1].lower()) if len(last) == 2 else None


def value_label(value: float, step: float, unit: str | None, top: float = 0.0) -> str:
    """A y tick in the metric's unit: ``1m30s``, ``250 ms``, ``1.5 MB``, ``40%``; seconds read as
    durations on an axis that reaches a minute (``top``: its largest absolute value)."""
    if unit == "s" and step >= 1 and top >= 60:
        return duration_label(value)
    if unit == "B" and abs(value) >= 1024:
        for div, suffix in ((1024**3, "GB"), (1024**2, "MB"), (1024, "KB")):
            if abs(value) >= div:
                return f"{value / div:.{1 if step < div else 0}f} {suffix}"
    text = tick_label(value, step)
    return f"{text}%" if unit == "%" else f"{text} {unit}" if unit else text


def metric_value(value: float, metric: str) -> str:
    """A value logged once, as its card shows it: 6 significant digits, in the name's unit."""
    unit = unit_of(metric)
    if unit == "s" and abs(value) >= 60:
        return f"{duration_label(value)} ({value:.6g} s)"
    text = f"{value:.6g}"
    return f"{text}%" if unit == "%" else f"{text} {unit}" if unit else text


def duration_label(seconds: float) -> str:
    """Seconds on a time axis: 45s, 2m30s, 1h05m."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


_CLOCK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)


def _time_ticks(hi: float) -> list[float]:
    for step in _CLOCK_STEPS:
        if hi / step <= 5:
            return [float(step * i) for i in range(int(hi // step) + 1)]
    return nice_ticks(0, hi)


def _span(lo: float, hi: float) -> tuple[float, float]:
    if hi > lo:
        return lo, hi
    pad = abs(lo) * 0.1 or 1.0
    return lo - pad, hi + pad


LEGEND_ROW = 16
CHAR_WIDTH = 7.2  # of the 12px legend font, a little generous, so entries never run into each other
MAX_LEGEND_CHARS = 40


def _legend_layout(labels: Sequence[str], width: float = WIDTH) -> list[tuple[float, int, str]]:
    """(x, row, shown text) of each legend entry, packed left to right in rows under the plot."""
    placed = []
    x, row = float(LEFT), 0
    for label in labels:
        text = label if len(label) <= MAX_LEGEND_CHARS else label[: MAX_LEGEND_CHARS - 1] + "…"
        entry = 18 + len(text) * CHAR_WIDTH + 14
        if x > LEFT and x + entry > width - RIGHT:
            x, row = float(LEFT), row + 1
        placed.append((x, row, text))
        x += entry
    return placed


def line_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    axis: str = "step",
    chart_id: str = "",
    legend: bool = True,
    colors: Mapping[str, str] | None = None,
    classes: Mapping[str, str] | None = None,
) -> Markup:
    """An SVG line chart of one metric; ``series`` is ``[(label, points)]`` (one per run compared).

    The legend (more than one series, unless ``legend`` is False) sits under the x axis, outside
    the plot, so it never hides a line; the SVG grows by one row per line of legend. ``colors``
    and ``classes`` (by label) override a line's palette colour and add CSS classes to it; every
    line's label is its tooltip.
    """
    drawn = [(label, points, x_values(points, axis)) for label, points in series if points]
    unit = unit_of(title)
    unit_suffix = f" {unit}" if unit else ""
    xs = [x for _, _, xv in drawn for x in xv]
    ys = [p["value"] for _, points, _ in drawn for p in points]
    label_x = "time since the first value" if axis == "time" else "step"
    rows = _legend_layout([label for label, _, _ in drawn]) if len(drawn) > 1 and legend else []
    height = HEIGHT + (LEGEND_ROW * (rows[-1][1] + 1) + 12 if rows else 0)
    parts = [
        f'<svg class="mltrain-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" aria-label="{escape(title)} over {label_x}" data-metric="{escape(title)}" '
        f'data-points="{len(ys)}" id="{escape(chart_id)}">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="{LEFT}" y="18">{escape(title)}</text>',
    ]
    if not drawn:
        parts.append(f'<text class="chart-empty" x="{WIDTH / 2}" y="{HEIGHT / 2}">no numeric values</text>')
        parts.append("</svg>")
        return Markup("".join(parts))  # noqa: S704 - every text above went through escape()
    integer_x = axis != "time" and all(float(x).is_integer() for x in xs)
    if axis == "time":
        x0, x1 = _span(min(xs), max(xs))
        x_ticks = [t for t in _time_ticks(x1) if t >= x0]
    else:
        x0, x1 = _span(min(xs), max(xs))
        if integer_x and x1 - x0 < 2:
            x0, x1 = math.floor(x0), math.ceil(x1)
        x_ticks = nice_ticks(x0, x1, 6, integer=integer_x)
    lo, hi = _span(min(ys), max(ys))
    rough = nice_ticks(lo, hi)
    y_step = rough[1] - rough[0] if len(rough) > 1 else (hi - lo)
    if unit == "s" and max(abs(lo), abs(hi)) >= 60:  # a clock's steps: 30s, 1m, 5m, 1h...
        y_step = next((t for t in _CLOCK_STEPS if (hi - lo) / t <= 5), y_step)
    # The axis starts and ends on a tick, so the top and bottom lines are labelled too.
    y0, y1 = math.floor(lo / y_step + 1e-9) * y_step, math.ceil(hi / y_step - 1e-9) * y_step
    y_ticks = [round(y0 + i * y_step, 12) for i in range(round((y1 - y0) / y_step) + 1)]
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - (y - y0) / (y1 - y0) * plot_h

    parts.append(
        f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none"></rect>'
    )
    for y in y_ticks:
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"></line>'
            f'<text class="tick" x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">'
            f"{value_label(y, y_step, unit, max(abs(y0), abs(y1)))}</text>"
        )
    for x in x_ticks:
        text = duration_label(x) if axis == "time" else tick_label(x, x_step)
        parts.append(
            f'<text class="tick x-tick" x="{sx(x):.1f}" y="{TOP + plot_h + 16}" '
            f'text-anchor="middle">{text}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{LEFT + plot_w / 2}" y="{HEIGHT - 4}" '
        f'text-anchor="middle">{label_x}</text>'
    )
    for n, (label, points, xv) in enumerate(drawn):
        color = _color(n, label, colors)
        coords = " ".join(f"{sx(x):.1f},{sy(p['value']):.1f}" for x, p in zip(xv, points))
        parts.append(
            f'<polyline class="{_classes(label, classes)}" fill="none" stroke="{color}" stroke-width="2" '
            f'points="{coords}" data-label="{escape(label)}"><title>{escape(label)}</title></polyline>'
        )
        if len(points) <= MAX_MARKERS and len(drawn) <= MAX_MARKED_SERIES:
            x_name = "time" if axis == "time" else "step"
            for x, p in zip(xv, points):
                x_text = duration_label(x) if axis == "time" else _fmt(x)
                parts.append(
                    f'<circle cx="{sx(x):.1f}" cy="{sy(p["value"]):.1f}" r="3" fill="{color}">'
                    f"<title>{escape(label)}: {_fmt(p['value'])}{unit_suffix} at {x_name} {x_text}"
                    f"{_when(p.get('time'))}</title></circle>"
                )
    for n, (x, row, text) in enumerate(rows):
        color = _color(n, drawn[n][0], colors)
        y = HEIGHT + 10 + LEGEND_ROW * row
        parts.append(
            f'<line class="legend-swatch" x1="{x:.1f}" x2="{x + 14:.1f}" y1="{y - 4}" y2="{y - 4}" '
            f'stroke="{color}" stroke-width="3"></line><text class="legend" x="{x + 18:.1f}" y="{y}" '
            f'fill="{color}">{escape(text)}<title>{escape(drawn[n][0])}</title></text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above went through escape()


PC_WIDTH, PC_HEIGHT = 900, 300
PC_TOP, PC_BOTTOM, PC_SIDE = 44, 28, 70
# Beyond this many lines (a sweep's children), a parallel-coordinates chart draws no point markers.
MAX_PC_MARKED = 60


def parallel_coordinates(
    axes: Sequence[dict[str, Any]],
    labels: Sequence[str],
    chart_id: str = "",
    legend: bool = True,
    colors: Mapping[str, str] | None = None,
    classes: Mapping[str, str] | None = None,
) -> Markup:
    """Runs as lines across one vertical axis per hyperparameter and final metric value.

    ``axes`` are ``{"name", "numeric", "values": {label: value or None}, "kind"}``, optionally
    with ``"log": True`` (a numeric axis of positive values scaled by powers of ten) and
    ``"caption"`` (the line under the name); a numeric axis runs from its smallest value (bottom)
    to its largest (top), a categorical one spaces its values evenly. A run without a value on an
    axis passes it with a dashed line. ``legend``, ``colors`` and ``classes`` as for
    :func:`line_chart`.
    """
    n = len(axes)
    legend_rows = _legend_layout(list(labels), width=PC_WIDTH) if legend else []
    height = PC_HEIGHT + (LEGEND_ROW * (legend_rows[-1][1] + 1) + 4 if legend_rows else 0)
    parts = [
        f'<svg class="mltrain-chart parallel" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {PC_WIDTH} {height}" role="img" id="{escape(chart_id)}" data-axes="{n}" '
        f'data-runs="{len(labels)}" aria-label="hyperparameters and final metric values of each run">',
        "<title>Hyperparameters and final metric values</title>",
    ]
    plot_h = PC_HEIGHT - PC_TOP - PC_BOTTOM
    gap = (PC_WIDTH - 2 * PC_SIDE) / max(1, n - 1)
    room = int(max(gap, 80) / 8.0) - 1  # characters of a bold 12px axis name that fit between axes
    positions: list[dict[str, float]] = []
    for k, axis in enumerate(axes):
        x = PC_SIDE + k * gap if n > 1 else PC_WIDTH / 2
        present = {lab: v for lab, v in axis["values"].items() if v is not None}
        place: dict[str, float] = {}
        ticks: list[tuple[float, str]] = []
        log_scale = bool(axis.get("log")) and bool(present) and all(float(v) > 0 for v in present.values())
        if axis["numeric"] and log_scale:
            place, ticks = _log_axis(present, plot_h)
        elif axis["numeric"] and present:
            lo, hi = _span(min(present.values()), max(present.values()))
            rough = nice_ticks(lo, hi)
            step = rough[1] - rough[0] if len(rough) > 1 else hi - lo
            lo, hi = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
            for lab, v in present.items():
                place[lab] = PC_TOP + plot_h - (float(v) - lo) / (hi - lo) * plot_h
            for i in range(round((hi - lo) / step) + 1):
                y = PC_TOP + plot_h - i * step / (hi - lo) * plot_h
                ticks.append((y, tick_label(lo + i * step, step)))
        else:
            categories = sorted({str(v) for v in present.values()})
            for c, cat in enumerate(categories):
                y = (
                    PC_TOP + plot_h / 2
                    if len(categories) == 1
                    else PC_TOP + plot_h * (1 - c / (len(categories) - 1))
                )
                ticks.append((y, cat if len(cat) <= 14 else cat[:13] + "…"))
            for lab, v in present.items():
                place[lab] = next(y for y, cat in zip((t[0] for t in ticks), categories) if cat == str(v))
        positions.append({lab: y for lab, y in place.items()} | {"__x": x})
        name = str(axis["name"])
        shown = name if len(name) <= room else name[: room - 1] + "…"
        kind = "metric" if axis.get("kind") == "metric" else "param"
        caption = axis.get("caption") or ("final value" if kind == "metric" else "parameter")
        parts.append(
            f'<line class="pc-axis pc-{kind}" x1="{x:.1f}" x2="{x:.1f}" y1="{PC_TOP}" y2="{PC_TOP + plot_h}">'
            f'</line><text class="pc-name pc-{kind}" x="{x:.1f}" y="{PC_TOP - 22}" text-anchor="middle">'
            f"{escape(shown)}<title>{escape(name)}</title></text>"
            f'<text class="pc-kind" x="{x:.1f}" y="{PC_TOP - 9}" text-anchor="middle">'
            f"{escape(caption)}{' (log)' if log_scale and axis['numeric'] else ''}</text>"
        )
        for y, text in ticks:
            parts.append(
                f'<text class="tick" x="{x - 5:.1f}" y="{y + 3:.1f}" text-anchor="end">{escape(text)}</text>'
                f'<line class="pc-tick" x1="{x - 3:.1f}" x2="{x:.1f}" y1="{y:.1f}" y2="{y:.1f}"></line>'
            )
    for r, lab in enumerate(labels):
        color = _color(r, lab, colors)
        points = [(k, f"{pos['__x']:.1f},{pos[lab]:.1f}") for k, pos in enumerate(positions) if lab in pos]
        parts.append(
            f'<polyline class="{_classes(lab, classes)}" fill="none" stroke="{color}" stroke-width="2" '
            f'points="{" ".join(p for _, p in points)}" data-label="{escape(lab)}">'
            f"<title>{escape(lab)}</title></polyline>"
        )
        for (k0, p0), (k1, p1) in itertools.pairwise(points):
            if k1 - k0 > 1:  # the run has no value on the axes between: a dashed bridge over them
                parts.append(
                    f'<polyline class="gap" fill="none" stroke="#fff" stroke-width="3" '
                    f'stroke-dasharray="4 4" points="{p0} {p1}"></polyline>'
                )
        if len(labels) <= MAX_PC_MARKED:
            for _, point in points:
                px, py = point.split(",")
                parts.append(f'<circle cx="{px}" cy="{py}" r="3" fill="{color}"></circle>')
    for r, (x, row, text) in enumerate(legend_rows):
        color = _color(r, labels[r], colors)
        y = PC_HEIGHT + 2 + LEGEND_ROW * row
        parts.append(
            f'<line class="legend-swatch" x1="{x:.1f}" x2="{x + 14:.1f}" y1="{y - 4}" y2="{y - 4}" '
            f'stroke="{color}" stroke-width="3"></line><text class="legend" x="{x + 18:.1f}" y="{y}" '
            f'fill="{color}">{escape(text)}<title>{escape(labels[r])}</title></text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above went through escape()


def _log_axis(present: Mapping[str, Any], plot_h: float) -> tuple[dict[str, float], list[tuple[float, str]]]:
    """Places and ticks of a log-scaled axis: one tick per power of ten (every other one past
    eight decades), the axis spanning whole decades."""
    logs = {lab: math.log10(float(v)) for lab, v in present.items()}
    lo, hi = math.floor(min(logs.values()) + 1e-9), math.ceil(max(logs.values()) - 1e-9)
    if hi <= lo:
        hi = lo + 1
    place = {lab: PC_TOP + plot_h - (v - lo) / (hi - lo) * plot_h for lab, v in logs.items()}
    every = 1 if hi - lo <= 8 else 2
    ticks = [
        (PC_TOP + plot_h - (p - lo) / (hi - lo) * plot_h, f"{10.0**p:g}") for p in range(lo, hi + 1, every)
    ]
    return place, ticks


def _color(n: int, label: str, colors: Mapping[str, str] | None) -> str:
    return (colors or {}).get(label) or COLORS[n % len(COLORS)]


def _classes(label: str, classes: Mapping[str, str] | None) -> str:
    extra = (classes or {}).get(label)
    return f"series {escape(extra)}" if extra else "series"


def ramp(t: float) -> str:
    """A colour from dark blue (0) through teal to light green (1): ranks on a sequential scale
    that stays readable on white (viridis, without its pale yellow end)."""
    stops = ((49, 54, 149), (33, 102, 172), (33, 145, 140), (53, 183, 121), (144, 208, 67))
    t = min(1.0, max(0.0, t)) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    f = t - i
    rgb = [round(a + (b - a) * f) for a, b in zip(stops[i], stops[i + 1])]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _when(ts: float | None) -> str:
    if ts is None or not math.isfinite(ts):
        return ""
    return " (" + datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") + ")"


# -- Azure ML v1's typed metrics (run.log_confusion_matrix, ...) ---------------------------------
# Drawn from what a script logged: every label is escaped, every number checked finite, and each
# drawing is bounded (classes, bins, thresholds) however large the logged value is.
MAX_CLASSES = 30
MAX_BINS = 200
MAX_CURVES = len(COLORS)
MAX_THRESHOLDS = 500


def _numbers(values: Any, limit: int) -> list[float | None]:
    """The first ``limit`` items of ``values`` as finite floats (None for anything else)."""
    if not isinstance(values, list):
        return []
    out: list[float | None] = []
    for v in values[:limit]:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        out.append(float(v) if ok else None)
    return out


def confusion_matrix(labels: Any, matrix: Any) -> Markup:
    """An HTML table of a confusion matrix (rows: true class, columns: predicted), each cell
    shaded by its share of its row. At most ``MAX_CLASSES`` classes are shown."""
    rows = [_numbers(r, MAX_CLASSES) for r in (matrix if isinstance(matrix, list) else [])[:MAX_CLASSES]]
    size = max([len(rows), *(len(r) for r in rows)], default=0)
    names = [str(x) for x in labels[:size]] if isinstance(labels, list) else []
    names += [str(i) for i in range(len(names), size)]
    parts = ['<table class="grid confusion"><thead><tr><th>true \\ predicted</th>']
    parts += [f"<th>{escape(n)}</th>" for n in names]
    parts.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        total = sum(v for v in row if v is not None and v > 0)
        parts.append(f"<tr><th>{escape(names[i])}</th>")
        for j in range(size):
            v = row[j] if j < len(row) else None
            share = (v / total) if v is not None and total > 0 and v > 0 else 0.0
            text = "" if v is None else _fmt(v)
            parts.append(
                f'<td class="num" style="background: rgba(0, 114, 178, {share * 0.8:.2f})">{text}</td>'
            )
        parts.append("</tr>")
    parts.append("</tbody></table>")
    more = isinstance(matrix, list) and len(matrix) > MAX_CLASSES
    if more:
        parts.append(f'<p class="muted">The first {MAX_CLASSES} of {len(matrix)} classes.</p>')
    return Markup("".join(parts))  # noqa: S704 - every text above went through escape()


def bar_chart(title: str, edges: Any, heights: Any, errors: Any = None, y_label: str = "") -> Markup:
    """An SVG histogram: one bar per bin between consecutive ``edges`` (at most ``MAX_BINS``), with
    error whiskers where ``errors`` gives them."""
    hs = _numbers(heights, MAX_BINS)
    es = _numbers(edges, MAX_BINS + 1)
    errs = _numbers(errors, MAX_BINS) if errors is not None else []
    bins: list[tuple[float, float, float, float | None]] = []
    for i, h in enumerate(hs):
        a, b = (es[i], es[i + 1]) if i + 1 < len(es) else (None, None)
        if h is not None and a is not None and b is not None:
            bins.append((a, b, h, errs[i] if i < len(errs) else None))
    parts = [
        f'<svg class="mltrain-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" data-bars="{len(bins)}">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="{LEFT}" y="18">{escape(title)}</text>',
    ]
    if not bins:
        parts.append(
            f'<text class="chart-empty" x="{WIDTH / 2}" y="{HEIGHT / 2}">no bins to draw</text></svg>'
        )
        return Markup("".join(parts))  # noqa: S704 - every text above went through escape()
    x0 = min(min(a, b) for a, b, _, _ in bins)
    x1 = max(max(a, b) for a, b, _, _ in bins)
    lo = min(0.0, *(h - (e or 0.0) for _, _, h, e in bins))
    hi = max(0.0, *(h + (e or 0.0) for _, _, h, e in bins))
    lo, hi = _span(lo, hi)
    x0, x1 = _span(x0, x1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - (y - lo) / (hi - lo) * plot_h

    parts.append(
        f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none"></rect>'
    )
    y_ticks = nice_ticks(lo, hi)
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
    for y in y_ticks:
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">'
            f"{escape(tick_label(y, y_step))}</text>"
        )
    x_ticks = nice_ticks(x0, x1, 6)
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1.0
    for x in x_ticks:
        parts.append(
            f'<text class="tick x-tick" x="{sx(x):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">'
            f"{escape(tick_label(x, x_step))}</text>"
        )
    if y_label:
        parts.append(
            f'<text class="axis-label" x="{LEFT + plot_w / 2}" y="{HEIGHT - 4}" '
            f'text-anchor="middle">{escape(y_label)}</text>'
        )
    zero = sy(max(lo, 0.0))
    for a, b, h, e in bins:
        left, right = sorted((sx(a), sx(b)))
        top = min(sy(h), zero)
        parts.append(
            f'<rect class="bar" x="{left:.1f}" y="{top:.1f}" width="{max(right - left - 1, 1):.1f}" '
            f'height="{abs(zero - sy(h)):.1f}" fill="{COLORS[0]}"><title>{_fmt(a)} to {_fmt(b)}: '
            f"{_fmt(h)}{'' if e is None else ' ± ' + _fmt(e)}</title></rect>"
        )
        if e:
            mid = (left + right) / 2
            parts.append(
                f'<line class="whisker" x1="{mid:.1f}" x2="{mid:.1f}" y1="{sy(h - e):.1f}" '
                f'y2="{sy(h + e):.1f}" stroke="#000"></line>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above went through escape()


def roc_chart(title: str, tables: Any, labels: Any) -> Markup:
    """ROC curves from an accuracy table's ``probability_tables`` (per class, per threshold:
    [TP, FP, TN, FN]): false positive rate against true positive rate, one curve per class
    (at most ``MAX_CURVES``, ``MAX_THRESHOLDS`` points each)."""
    series: list[tuple[str, list[dict[str, Any]]]] = []
    names = labels if isinstance(labels, list) else []
    for c, table in enumerate(tables[:MAX_CURVES] if isinstance(tables, list) else []):
        rows = table if isinstance(table, list) else []
        stride = max(1, math.ceil(len(rows) / MAX_THRESHOLDS))
        points = []
        for row in rows[::stride]:
            counts = [v for v in _numbers(row, 4) if v is not None]
            if len(counts) != 4:
                continue
            tp, fp, tn, fn = counts
            if tp + fn > 0 and fp + tn > 0:
                points.append({"step": fp / (fp + tn), "value": tp / (tp + fn)})
        points.sort(key=lambda p: (p["step"], p["value"]))
        label = str(names[c]) if c < len(names) else f"class {c}"
        series.append((label, points))
    chart = line_chart(title, series)
    return Markup(  # noqa: S704 - line_chart escaped every text; only the fixed axis name changes
        str(chart).replace(">step</text>", ">false positive rate (y: true positive rate)</text>", 1)
    )
