"""Per-metric summaries and blocks, kept up to date as metric rows are stored.

Readers that must not depend on a run's size (the run page, the charts, the API) read these
instead of the rows: a series' summary (rows, numeric count, min, max, last value, first and last
seq, step and time) is one row, and its values in logging order are folded into blocks of
:data:`BLOCK` consecutive values with the same fields, so a chart of a million values reads about
``1,000,000 / BLOCK`` small rows, and a summary one.

A value is numeric when it is a plain JSON number (the text starts with a digit, or ``-`` and a
digit, and is at most 300 characters), the same rule the database applies to stored rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Values per block: a chart of up to 1,000 buckets stays exact for series up to 64,000 values.
BLOCK = 64
# The fields of a summary and of a block, besides their keys.
FIELDS = (
    "rows",
    "count",
    "min",
    "max",
    "first_seq",
    "last_seq",
    "last_num_seq",
    "last",
    "first_step",
    "last_step",
    "first_time",
    "last_time",
)
_DIGITS = frozenset("0123456789")


def numeric(value: str) -> float | None:
    """The float of a stored JSON value that is a plain number, else None (strings, booleans,
    lists, NaN, infinities, over 300 characters)."""
    if not value or len(value) > 300:
        return None
    first = value[0]
    if first not in _DIGITS and not (first == "-" and value[1:2] in _DIGITS):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def empty() -> dict[str, Any]:
    return dict.fromkeys(FIELDS) | {"rows": 0, "count": 0}


def add(acc: dict[str, Any], seq: int, step: int | None, logged_at: float, value: str) -> None:
    """Fold one stored row into a summary or block (rows arrive in seq order)."""
    if acc["rows"] == 0:
        acc["first_seq"] = seq
    acc["rows"] += 1
    acc["last_seq"] = seq
    num = numeric(value)
    if num is None:
        return
    if acc["count"] == 0:
        acc["min"] = acc["max"] = num
        acc["first_step"], acc["first_time"] = step, logged_at
    else:
        acc["min"] = min(acc["min"], num)
        acc["max"] = max(acc["max"], num)
    acc["count"] += 1
    acc["last"], acc["last_num_seq"] = num, seq
    acc["last_step"], acc["last_time"] = step, logged_at


def merge(into: dict[str, Any], later: dict[str, Any]) -> None:
    """Fold a summary of later values (higher seqs) into ``into``."""
    if not later["rows"]:
        return
    if not into["rows"]:
        into.update(later)
        return
    into["rows"] += later["rows"]
    into["last_seq"] = later["last_seq"]
    if not later["count"]:
        return
    if into["count"]:
        into["min"] = min(into["min"], later["min"])
        into["max"] = max(into["max"], later["max"])
    else:
        into["min"], into["max"] = later["min"], later["max"]
        into["first_step"], into["first_time"] = later["first_step"], later["first_time"]
    into["count"] += later["count"]
    for key in ("last", "last_num_seq", "last_step", "last_time"):
        into[key] = later[key]


def fold(
    rows: Iterable[dict[str, Any]],
    series: dict[tuple[str, str], dict[str, Any]],
    open_blocks: dict[tuple[str, str], dict[str, Any]],
) -> tuple[dict[tuple[str, str], dict[str, Any]], list[dict[str, Any]]]:
    """Fold new rows (in seq order) into their series' summaries and blocks.

    ``series`` holds the stored summaries of the series these rows belong to (missing: new
    series), ``open_blocks`` their stored last block when it is not full. Returns the updated
    summaries by key and every block touched (``name``, ``kind``, ``block`` and the fields), the
    open ones updated in place.
    """
    touched: dict[tuple[str, str], dict[str, Any]] = {}
    blocks: dict[tuple[str, str, int], dict[str, Any]] = {}
    for key, block in open_blocks.items():
        blocks[(key[0], key[1], block["block"])] = block
    for row in rows:
        key = (row["name"], row["kind"])
        summary = touched.get(key)
        if summary is None:
            summary = touched[key] = dict(series.get(key) or empty())
        index = summary["rows"] // BLOCK
        found = blocks.get((key[0], key[1], index))
        if found is None:
            found = blocks[(key[0], key[1], index)] = empty() | {
                "name": key[0],
                "kind": key[1],
                "block": index,
            }
        block = found
        add(block, row["seq"], row["step"], row["logged_at"], row["value"])
        add(summary, row["seq"], row["step"], row["logged_at"], row["value"])
    return touched, list(blocks.values())


def buckets(blocks: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """At most ``count`` buckets of consecutive blocks (in block order), each merged into one;
    blocks without a numeric value are left out, as a chart has nothing to draw from them."""
    numeric_blocks = [b for b in blocks if b["count"]]
    if not numeric_blocks:
        return []
    per = -(-len(numeric_blocks) // max(1, count))
    out = []
    for i in range(0, len(numeric_blocks), per):
        acc = empty()
        for b in numeric_blocks[i : i + per]:
            merge(acc, b)
        out.append(acc)
    return out
