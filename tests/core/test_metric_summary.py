"""Summaries kept at ingestion agree with the rows, however the rows arrive in batches."""

from __future__ import annotations

import json
import random

import pytest

from airflow_provider_mltrain.core import metric_summary
from airflow_provider_mltrain.core.store import RunStore
from tests.core.test_store import record


def expected_summary(rows: list[dict]) -> dict:
    nums = [(r, metric_summary.numeric(r["value"])) for r in rows]
    numeric = [(r, n) for r, n in nums if n is not None]
    return {
        "rows": len(rows),
        "count": len(numeric),
        "min": min((n for _, n in numeric), default=None),
        "max": max((n for _, n in numeric), default=None),
        "last": numeric[-1][1] if numeric else None,
        "first_seq": rows[0]["seq"],
        "last_seq": rows[-1]["seq"],
        "first_step": numeric[0][0]["step"] if numeric else None,
        "last_step": numeric[-1][0]["step"] if numeric else None,
    }


def make_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows, seq = [], 0
    odd = ['"text"', "true", "null", "[1, 2]", "NaN", "-Infinity", "1" * 400]
    for i in range(n):
        name = rng.choice(["loss", "acc", "lr", "table"])
        kind = "table" if name == "table" else rng.choice(["scalar", "scalar", "scalar", "list"])
        value = rng.choice(odd) if rng.random() < 0.05 else json.dumps(round(rng.uniform(-5, 5), 3))
        rows.append(
            {
                "run_id": "r",
                "seq": seq,
                "name": name,
                "kind": kind,
                "step": i,
                "value": value,
                "logged_at": i / 10,
            }
        )
        seq += rng.randint(20, 90)  # byte offsets of lines
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_summaries_match_the_rows_whatever_the_batches(tmp_path, seed):
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    store.create_run(record("r"))
    rows = make_rows(3000, seed)
    rng = random.Random(seed)
    start = 0
    while start < len(rows):  # batches of 1 to 300 rows: blocks are filled across batches
        end = min(len(rows), start + rng.randint(1, 300))
        assert store.ingest_metrics("r", start, end, rows[start:end])
        start = end
    by_series: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_series.setdefault((r["name"], r["kind"]), []).append(r)
    summaries = {(s["name"], s["kind"]): s for s in store.metric_summaries("r")}
    assert set(summaries) == set(by_series)
    for key, series_rows in by_series.items():
        got = summaries[key]
        assert {k: got[k] for k in expected_summary(series_rows)} == expected_summary(series_rows), key
    for entry in store.metric_overview("r", buckets=7, limit=10):
        series_rows = by_series[(entry["name"], entry["kind"])]
        assert len(entry["buckets"]) <= 7
        assert sum(b["count"] for b in entry["buckets"]) == entry["count"]
        # Each bucket holds the min and max of its own run of consecutive values, in order.
        numeric = [metric_summary.numeric(r["value"]) for r in series_rows]
        numeric = [n for n in numeric if n is not None]
        at = 0
        for b in entry["buckets"]:
            chunk = numeric[at : at + b["count"]]
            assert (b["min"], b["max"]) == (min(chunk), max(chunk))
            at += b["count"]
    loss_numbers = [metric_summary.numeric(r["value"]) for r in rows if r["name"] == "loss"]
    assert store.last_numeric("r", "loss") == [n for n in loss_numbers if n is not None][-1]


def test_numeric_is_the_databases_rule():
    assert [metric_summary.numeric(v) for v in ["1", "-2.5", "2.5e3", "0"]] == [1.0, -2.5, 2500.0, 0.0]
    for value in ['"1.5"', "true", "null", "[1]", "NaN", "Infinity", "-Infinity", "-", "", "1" * 301]:
        assert metric_summary.numeric(value) is None, value


def test_a_late_page_of_a_series_starts_at_its_block_and_matches_the_full_list(tmp_path):
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    store.create_run(record("r"))
    rows = make_rows(2000, 7)
    assert store.ingest_metrics("r", 0, 1, rows[:1234])
    assert store.ingest_metrics("r", 1, 2, rows[1234:])
    for name in ("loss", "table"):  # "loss" has two kinds (scalar, list): the plain OFFSET path
        everything = [r["seq"] for r in store.metric_page("r", name, 0, 10_000)]
        assert len(everything) == sum(1 for r in rows if r["name"] == name)
        for offset in (0, 63, 64, 65, 130, 200, len(everything) - 3, len(everything) + 5):
            page = [r["seq"] for r in store.metric_page("r", name, offset, 7)]
            assert page == everything[offset : offset + 7], (name, offset)
