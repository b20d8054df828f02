"""Server-side SVG charts: drawn from the points given, every label escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from airflow_provider_mltrain.plugins.charts import line_chart, x_values

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
