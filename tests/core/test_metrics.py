"""The metric line validator: every bad line is skipped and counted by reason, good lines land."""

from __future__ import annotations

import json
import time

import pytest

from airflow_provider_mltrain.core import metrics, run_warnings
from airflow_provider_mltrain.core.metrics import finite_number, parse_lines, stored_value


def lines(*items: str | bytes) -> bytes:
    return b"".join((i if isinstance(i, bytes) else i.encode()) + b"\n" for i in items)


GOOD = '{"name": "loss", "value": 0.5, "step": 3, "time": 1700000000.5}'


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", metrics.NOT_JSON),
        ('{"name": "a", "value": 1', metrics.NOT_JSON),
        (b'\xff{"name": "a"}', metrics.NOT_JSON),
        ("[" * 100_000, metrics.NOT_JSON),
        ("[1, 2]", metrics.NOT_JSON),
        ("null", metrics.NOT_JSON),
        ('{"value": 1}', metrics.BAD_NAME),
        ('{"name": 7, "value": 1}', metrics.BAD_NAME),
        ('{"name": "", "value": 1}', metrics.BAD_NAME),
        ('{"name": "' + "n" * 256 + '", "value": 1}', metrics.BAD_NAME),
        ('{"name": "a", "kind": "bogus", "value": 1}', metrics.BAD_KIND),
        ('{"name": "a", "kind": 3, "value": 1}', metrics.BAD_KIND),
        ('{"name": "a", "value": {"x": 1}}', metrics.BAD_VALUE),
        ('{"name": "a", "value": [1, 2]}', metrics.BAD_VALUE),
        ('{"name": "a", "value": 1' + "0" * 400 + "}", metrics.BAD_VALUE),
        ('{"name": "a", "kind": "list", "value": 3}', metrics.BAD_VALUE),
        ('{"name": "a", "kind": "list", "value": [{"x": 1}]}', metrics.BAD_VALUE),
        ('{"name": "a", "kind": "row", "value": [1]}', metrics.BAD_VALUE),
        ('{"name": "a", "kind": "row", "value": {"c": {"d": 1}}}', metrics.BAD_VALUE),
        ('{"name": "a", "kind": "table", "value": {"c": 1}}', metrics.BAD_VALUE),
        ('{"name": "a", "kind": "image", "value": 1}', metrics.BAD_VALUE),
        ('{"name": "t", "kind": "tags", "value": "ab"}', metrics.BAD_VALUE),
        ('{"name": "t", "kind": "properties", "value": {"k": [1]}}', metrics.BAD_VALUE),
        ('{"name": "a", "value": 1, "step": NaN}', metrics.BAD_STEP),
        ('{"name": "a", "value": 1, "step": -Infinity}', metrics.BAD_STEP),
        ('{"name": "a", "value": 1, "step": 1e30}', metrics.BAD_STEP),
        ('{"name": "a", "value": 1, "step": 9223372036854775808}', metrics.BAD_STEP),
        ('{"name": "a", "value": 1, "step": "3"}', metrics.BAD_STEP),
        ('{"name": "a", "value": 1, "step": true}', metrics.BAD_STEP),
        ('{"name": "a", "value": 1, "time": "now"}', metrics.BAD_TIME),
        ('{"name": "a", "value": 1, "time": NaN}', metrics.BAD_TIME),
        ('{"name": "a", "value": 1, "time": Infinity}', metrics.BAD_TIME),
        ('{"name": "a", "value": 1, "time": 1e300}', metrics.BAD_TIME),
        ('{"name": "a", "value": 1, "time": -5}', metrics.BAD_TIME),
        ('{"name": "a", "value": 1, "time": 1' + "0" * 400 + "}", metrics.BAD_TIME),
    ],
)
def test_a_bad_line_is_skipped_with_its_reason_and_the_lines_around_it_land(line, reason):
    data = lines(GOOD, line, GOOD.replace("0.5", "0.25"))
    parsed = parse_lines("r", data, 100)
    assert parsed.skipped == {reason: 1}
    assert [json.loads(r["value"]) for r in parsed.rows] == [0.5, 0.25]
    assert parsed.first_skipped == 100 + len(GOOD) + 1
    # a row's seq is its line's byte offset in the file: reading the same bytes again gives the same rows
    assert [r["seq"] for r in parsed.rows] == [100, 100 + data.rindex(b"\n", 0, len(data) - 1) + 1]


def test_good_lines_of_every_kind_become_rows():
    data = lines(
        GOOD,
        '{"name": "a", "value": NaN, "step": 9223372036854775807}',
        '{"name": "a", "value": "text", "step": -9223372036854775808}',
        '{"name": "a", "value": true, "step": 2.0}',
        '{"name": "l", "kind": "list", "value": [1, [2, 3], null]}',
        '{"name": "r", "kind": "row", "value": {"x": 1, "y": "b"}}',
        '{"name": "t", "kind": "table", "value": {"x": [1, 2]}}',
        '{"name": "i", "kind": "image", "value": "outputs/images/i.png"}',
        '{"name": "' + "n" * 255 + '", "value": 1}',
        "",
    )
    before = time.time()
    parsed = parse_lines("r", data, 0)
    assert parsed.skipped == {}
    assert [r["kind"] for r in parsed.rows] == ["scalar"] * 4 + ["list", "row", "table", "image", "scalar"]
    assert [r["step"] for r in parsed.rows][:4] == [3, 2**63 - 1, -(2**63), 2]
    assert parsed.rows[0]["logged_at"] == 1700000000.5
    assert parsed.rows[1]["logged_at"] >= before  # no time: the time it was read


def test_reserved_tags_and_properties_are_dropped_and_named():
    data = lines(
        '{"name": "tags", "kind": "tags", "value": {"stage": "x", "airflow.dag_id": "d", "n": 3}}',
        '{"name": "properties", "kind": "properties", '
        '"value": {"MLTRAIN.workspace": "/w", "team": null, "airflow.dag_id": "d"}}',
    )
    parsed = parse_lines("r", data, 0)
    assert parsed.tags == {"stage": "x", "n": "3"}
    assert parsed.properties == {"team": ""}
    assert parsed.reserved == ["airflow.dag_id", "MLTRAIN.workspace", "airflow.dag_id"]
    assert json.loads(parsed.rows[0]["value"]) == {"stage": "x", "n": "3"}


def test_warnings_are_one_per_class_and_counts_add_up_across_reads():
    first = parse_lines("r", lines("x", '{"name": "a", "value": 1, "step": NaN}', "y"), 10)
    second = parse_lines(
        "r", lines('{"value": 1}', '{"name": "tags", "kind": "tags", "value": {"airflow.a": "1"}}'), 50
    )
    merged = run_warnings.merge(run_warnings.from_metrics(first), run_warnings.from_metrics(second))
    texts = run_warnings.texts(merged)
    assert len(texts) == 2
    assert texts[0].startswith(
        "logs/metrics.jsonl: skipped 4 malformed lines (first at byte 10): 2 not a JSON"
    )
    assert "1 " + metrics.BAD_STEP in texts[0] and "1 " + metrics.BAD_NAME in texts[0]
    assert texts[1].startswith("logs/metrics.jsonl: ignored 1 reserved tag or property (airflow.a)")


def test_runner_warnings_are_kept_once_and_bounded():
    status = {"warnings": ["no cgroup: memory is not limited", 5, "", "x" * 10_000]}
    once = run_warnings.merge([], run_warnings.from_runner(status))
    twice = run_warnings.merge(once, run_warnings.from_runner(status))
    assert twice == once
    assert run_warnings.texts(once) == [
        "no cgroup: memory is not limited",
        "x" * run_warnings.MAX_RUNNER_TEXT,
    ]
    assert run_warnings.from_runner({"warnings": "not a list"}) == []
    assert run_warnings.from_runner(None) == []


def test_stored_rows_of_older_versions_read_safely():
    assert stored_value("not json") is None and stored_value(None) is None
    assert stored_value("[" * 100_000) is None
    assert finite_number(10**400) is None and finite_number(float("nan")) is None
    assert finite_number(True) is None and finite_number("1") is None
    assert finite_number(3) == 3.0
