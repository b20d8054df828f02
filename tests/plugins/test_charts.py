"""Server-side SVG charts: drawn from the points given, every label escaped."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

from airflow_provider_mltrain.plugins.charts import (
    duration_label,
    line_chart,
    metric_value,
    parallel_coordinates,
    tick_label,
    unit_of,
    x_values,
)

SVG = "{http://www.w3.org/2000/svg}"


def points(values, steps=None, t0=100.0):
    return [
        {"value": v, "step": None if steps is None else steps[i], "time": t0 + 2 * i}
        for i, v in enumerate(values)
    ]


def test_one_polyline_per_run_through_every_point():
    svg = ET.fromstring(
        str(line_chart("loss", [("a", points([3, 2, 1], [0, 5, 10])), ("b", points([1, 1]))]))
    )
    lines = svg.findall(f"{SVG}polyline")
    assert [len(line.get("points").split()) for line in lines] == [3, 2]
    assert svg.get("data-points") == "5"
    assert [t.text for t in svg.findall(f"{SVG}text[@class='legend']")] == ["a", "b"]


def test_x_axis_is_the_step_the_position_or_the_time():
    assert x_values(points([1, 2, 3], [0, 10, 20]), "step") == [0, 10, 20]
    assert x_values(points([1, 2, 3]), "step") == [0, 1, 2]
    assert x_values(points([1, 2, 3]), "time") == [0, 2, 4]


def test_labels_are_escaped():
    probe = "<script>alert(1)</script>"
    markup = str(line_chart(probe, [(f'"{probe}', points([1, 2]))]))
    assert "<script>" not in markup
    svg = ET.fromstring(markup)  # still well-formed XML
    assert svg.find(f"{SVG}title").text == probe


def test_no_numeric_values_draws_an_empty_chart():
    svg = ET.fromstring(str(line_chart("name", [("a", [])])))
    assert svg.findall(f"{SVG}polyline") == [] and svg.get("data-points") == "0"


def test_a_constant_series_gets_a_visible_range():
    svg = ET.fromstring(str(line_chart("c", [("a", points([5.0, 5.0, 5.0]))])))
    ys = {float(p.split(",")[1]) for p in svg.find(f"{SVG}polyline").get("points").split()}
    assert len(ys) == 1 and 0 < ys.pop() < 240


def _plot_box(svg):
    rect = svg.find(f"{SVG}rect[@class='plot']")
    return float(rect.get("y")), float(rect.get("y")) + float(rect.get("height"))


def test_step_ticks_are_whole_numbers_and_y_ticks_share_their_decimals():
    svg = ET.fromstring(str(line_chart("acc", [("a", points([0.77, 0.81, 0.9], [0, 1, 2]))])))
    x_ticks = [t.text for t in svg.findall(f"{SVG}text[@class='tick x-tick']")]
    assert x_ticks == ["0", "1", "2"]
    y_ticks = [t.text for t in svg.findall(f"{SVG}text[@class='tick']")]
    assert y_ticks == ["0.75", "0.80", "0.85", "0.90"]
    many = ET.fromstring(str(line_chart("loss", [("a", points(list(range(8)), list(range(8))))])))
    assert [t.text for t in many.findall(f"{SVG}text[@class='tick x-tick']")] == ["0", "2", "4", "6"]


def test_tick_labels_read_as_people_write_them():
    assert tick_label(2_000_000, 1_000_000) == "2M" and tick_label(1500, 500) == "1500"
    assert tick_label(0.0002, 0.0001) == "2.0e-4"
    assert [duration_label(s) for s in (0, 45, 90, 3900)] == ["0s", "45s", "1m30s", "1h05m"]
    svg = ET.fromstring(str(line_chart("t", [("a", points([1, 2, 3, 4], t0=0.0))], axis="time")))
    assert [t.text for t in svg.findall(f"{SVG}text[@class='tick x-tick']")] == ["0s", "2s", "4s", "6s"]
    assert "time since the first value" in [t.text for t in svg.findall(f"{SVG}text[@class='axis-label']")]


def test_the_legend_sits_under_the_plot_and_grows_the_chart():
    labels = [f"experiment_1796071854_{i:08x}" for i in range(5)]
    svg = ET.fromstring(str(line_chart("loss", [(label, points([3, 2, 1])) for label in labels])))
    _, bottom = _plot_box(svg)
    legend = svg.findall(f"{SVG}text[@class='legend']")
    assert [t.text for t in legend] == labels
    assert all(float(t.get("y")) - 12 > bottom + 20 for t in legend)  # below the x axis and its label
    rows = sorted({float(t.get("y")) for t in legend})
    assert len(rows) > 1 and float(svg.get("viewBox").split()[3]) >= rows[-1] + 4
    for row in rows:  # entries of a row never overlap one another
        xs = sorted(float(t.get("x")) for t in legend if float(t.get("y")) == row)
        assert all(b - a >= 18 + len(labels[0]) * 6 for a, b in itertools.pairwise(xs))


def test_parallel_coordinates_draw_each_run_across_every_axis():
    axes = [
        {"name": "lr", "numeric": True, "values": {"a": 0.01, "b": 0.1, "c": 0.3}, "kind": "param"},
        {
            "name": "optimizer",
            "numeric": False,
            "values": {"a": "sgd", "b": "adam", "c": None},
            "kind": "param",
        },
        {"name": "accuracy", "numeric": True, "values": {"a": 0.9, "b": 0.8, "c": 0.6}, "kind": "metric"},
    ]
    svg = ET.fromstring(str(parallel_coordinates(axes, ["a", "b", "c"])))
    assert svg.get("data-axes") == "3" and svg.get("data-runs") == "3"
    lines = {
        line.get("data-label"): len(line.get("points").split()) for line in svg.findall(f"{SVG}polyline")
    }
    assert lines == {"a": 3, "b": 3, "c": 2, None: 2}  # c has no optimizer: a dashed bridge over it
    (gap,) = svg.findall(f"{SVG}polyline[@class='gap']")
    assert gap.get("stroke-dasharray")
    names = [t.text for t in svg.findall(f"{SVG}text") if (t.get("class") or "").startswith("pc-name")]
    assert names == ["lr", "optimizer", "accuracy"]
    a_y = [float(p.split(",")[1]) for p in svg.find(f"{SVG}polyline[@data-label='a']").get("points").split()]
    c_lr_y = float(svg.find(f"{SVG}polyline[@data-label='c']").get("points").split()[0].split(",")[1])
    assert c_lr_y < a_y[0]  # the larger lr is drawn higher


def test_a_unit_the_metric_name_tells_is_on_its_ticks_and_values():
    assert [unit_of(n) for n in ("epoch_seconds", "latency_ms", "model_bytes", "gpu_pct", "loss", "s")] == [
        "s",
        "ms",
        "B",
        "%",
        None,
        None,
    ]
    svg = ET.fromstring(str(line_chart("epoch_seconds", [("a", points([30.0, 90.0, 150.0], [0, 1, 2]))])))
    y_ticks = [t.text for t in svg.findall(f"{SVG}text[@class='tick']")]
    assert y_ticks == ["30s", "1m", "1m30s", "2m", "2m30s"]  # seconds read as durations, in clock steps
    assert metric_value(1234.5, "train_seconds") == "20m34s (1234.5 s)"
    assert metric_value(0.85, "final_accuracy") == "0.85" and metric_value(40, "gpu_pct") == "40%"


def test_a_log_axis_places_values_by_their_power_of_ten():
    axes = [
        {"name": "lr", "numeric": True, "log": True, "values": {"a": 1e-4, "b": 1e-3, "c": 1e-1}},
        {"name": "acc", "numeric": True, "values": {"a": 0.5, "b": 0.6, "c": 0.7}, "kind": "metric"},
    ]
    svg = ET.fromstring(str(parallel_coordinates(axes, ["a", "b", "c"])))
    ys = {
        p.get("data-label"): float(p.get("points").split()[0].split(",")[1])
        for p in svg.iter(f"{SVG}polyline")
    }
    # 1e-4 -> 1e-3 is one decade, 1e-3 -> 1e-1 two: evenly spaced by power of ten, not by value
    assert abs((ys["a"] - ys["b"]) * 2 - (ys["b"] - ys["c"])) < 0.5
    ticks = [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "tick"][:4]
    assert ticks == ["0.0001", "0.001", "0.01", "0.1"]
    assert "parameter (log)" in [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "pc-kind"]


def test_many_lines_without_legend_take_their_colours_and_classes():
    labels = [f"run-{i}" for i in range(30)]
    series = [(label, points([1, 2, 3])) for label in labels]
    svg = ET.fromstring(
        str(line_chart("m", series, legend=False, colors={"run-0": "#123456"}, classes={"run-0": "best"}))
    )
    assert svg.findall(f"{SVG}text[@class='legend']") == []
    lines = svg.findall(f"{SVG}polyline")
    assert lines[0].get("stroke") == "#123456" and lines[0].get("class") == "series best"
    assert lines[0].find(f"{SVG}title").text == "run-0"
    assert svg.findall(f"{SVG}circle") == []  # 30 lines: no point markers
