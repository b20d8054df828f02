"""Metric lines: each line of a run's ``logs/metrics.jsonl`` checked on its own before it is stored.

The file is written by the training script, so anything may be in it. :func:`parse_lines` keeps
the good lines and counts the bad ones by reason; a bad line never stops the lines around it nor
the run. ``airflow.*`` and ``mltrain.*`` tags and properties belong to the provider and are dropped.
The readers' helpers (:func:`stored_value`, :func:`finite_number`) survive rows stored by older
versions that did not check.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_mltrain.core.text import replace_surrogates

# Azure ML v1's typed metrics (run.log_confusion_matrix, ...): a JSON object {"schema_type": kind,
# "schema_version": ..., "data": {...}} whose data holds at least these lists.
TYPED_KINDS = {
    "confusion_matrix": ("class_labels", "matrix"),
    "accuracy_table": ("probability_tables", "percentile_tables", "probability_thresholds", "percentiles"),
    "predictions": ("bin_averages", "bin_errors", "bin_counts", "bin_edges"),
    "residuals": ("bin_edges", "bin_counts"),
}
KINDS = frozenset({"scalar", "list", "row", "table", "image", "tags", "properties", *TYPED_KINDS})
MAX_DESCRIPTION = 4096  # characters of a metric's description kept
MAX_NAME = 255  # the run store's column
STEP_MIN, STEP_MAX = -(2**63), 2**63 - 1  # a BIGINT
TIME_MAX = 253402300799.0  # 9999-12-31T23:59:59Z: the last time a datetime can show
RESERVED_PREFIXES = ("airflow.", "mltrain.")
MAX_DEPTH = 32

# Reasons a line is skipped, as the run's warning names them.
NOT_JSON = "not a JSON object"
BAD_NAME = f"no name, or a name that is not a string of 1-{MAX_NAME} characters"
BAD_KIND = "an unknown kind"
BAD_VALUE = "a value of the wrong type for its kind"
BAD_STEP = "a step that is not a whole number within 64 bits"
BAD_TIME = "a time that is not a finite number of seconds"


def is_reserved(key: str) -> bool:
    """``airflow.*`` and ``mltrain.*`` keys: set by the provider at submission, never by a script."""
    return key.lower().startswith(RESERVED_PREFIXES)


@dataclass
class ParsedLines:
    """What :func:`parse_lines` made of a stretch of the metrics file."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    first_skipped: int | None = None
    reserved: list[str] = field(default_factory=list)

    def skip(self, reason: str, at: int) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if self.first_skipped is None:
            self.first_skipped = at


class _Bad(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_lines(run_id: str, data: bytes, offset: int) -> ParsedLines:
    """Rows for the run store from whole lines of ``data``, read at byte ``offset`` of the file.

    Each row's ``seq`` is the byte offset of its line, so reading the same bytes twice gives the
    same rows. ``data`` must end on a line break (or be the file's final, unterminated line).
    """
    out = ParsedLines()
    pos = offset
    for line in data.split(b"\n"):
        at, pos = pos, pos + len(line) + 1
        if not line.strip():
            continue
        try:
            row = _parse(line, out)
        except _Bad as bad:
            out.skip(bad.reason, at)
            continue
        if row is not None:
            out.rows.append({"run_id": run_id, "seq": at, **row})
    return out


def _parse(line: bytes, out: ParsedLines) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):  # bad JSON or UTF-8, or nesting deeper than json can read
        raise _Bad(NOT_JSON) from None
    if not isinstance(rec, dict):
        raise _Bad(NOT_JSON)
    name = rec.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise _Bad(BAD_NAME)
    kind = rec.get("kind", "scalar")
    if kind not in KINDS:
        raise _Bad(BAD_KIND)
    value = rec.get("value")
    if not _fits(kind, value):
        raise _Bad(BAD_VALUE)
    step = _step(rec.get("step"))
    logged_at = _time(rec.get("time"))
    description = rec.get("description")
    description = replace_surrogates(description[:MAX_DESCRIPTION]) if isinstance(description, str) else None
    if kind in ("tags", "properties") and isinstance(value, dict):
        pairs = {str(k): "" if v is None else str(v) for k, v in value.items()}
        reserved = [k for k in pairs if is_reserved(k)]
        out.reserved += reserved
        kept = {k: v for k, v in pairs.items() if k not in reserved}
        (out.tags if kind == "tags" else out.properties).update(kept)
        value = kept
    return {
        # A database column holds UTF-8 only: bytes that were not become U+FFFD.
        "name": replace_surrogates(name),
        "kind": kind,
        "step": step,
        "value": json.dumps(value),
        "logged_at": logged_at,
        "description": description or None,
    }


def _fits(kind: str, value: Any) -> bool:
    if kind == "scalar":
        return _plain(value, 0) and not isinstance(value, list)
    if kind == "list":
        return isinstance(value, list) and _plain(value, 0)
    if kind == "row":
        return isinstance(value, dict) and all(_plain(v, 1) for v in value.values())
    if kind == "table":
        return isinstance(value, dict) and all(isinstance(v, list) and _plain(v, 1) for v in value.values())
    if kind == "image":
        return isinstance(value, str)
    if kind in TYPED_KINDS:
        data = value.get("data") if isinstance(value, dict) else None
        return (
            isinstance(data, dict)
            and value.get("schema_type") == kind
            and all(isinstance(data.get(key), list) for key in TYPED_KINDS[kind])
            and _json_tree(value, 0)
        )
    # tags, properties: flat string pairs (numbers and null are written as text, as the API does)
    return isinstance(value, dict) and all(
        v is None or isinstance(v, (str, bool, float)) or (isinstance(v, int) and _number_fits(v))
        for v in value.values()
    )


def _plain(value: Any, depth: int) -> bool:
    """A number, string, bool, null or a list of those: what ``run.log`` and ``log_list`` write."""
    if value is None or isinstance(value, (str, bool, float)):
        return True
    if isinstance(value, int):
        return _number_fits(value)
    if isinstance(value, list) and depth < MAX_DEPTH:
        return all(_plain(v, depth + 1) for v in value)
    return False


def _json_tree(value: Any, depth: int) -> bool:
    """``_plain`` for JSON objects too: dicts of text keys, lists, numbers, strings, bools, null."""
    if isinstance(value, dict):
        return depth < MAX_DEPTH and all(_json_tree(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return depth < MAX_DEPTH and all(_json_tree(v, depth + 1) for v in value)
    return _plain(value, depth)


def _number_fits(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _step(step: Any) -> int | None:
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        raise _Bad(BAD_STEP)
    if isinstance(step, float):
        if not math.isfinite(step):
            raise _Bad(BAD_STEP)
        step = int(step)
    if not STEP_MIN <= step <= STEP_MAX:
        raise _Bad(BAD_STEP)
    return step


def _time(at: Any) -> float:
    if at is None:
        return time.time()
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        raise _Bad(BAD_TIME)
    try:
        at = float(at)
    except OverflowError:
        raise _Bad(BAD_TIME) from None
    if not (math.isfinite(at) and 0 <= at <= TIME_MAX):
        raise _Bad(BAD_TIME)
    return at


# -- reading stored rows ---------------------------------------------------------------------------


def stored_value(text: Any) -> Any:
    """The value of a stored metric row; None for text that is not JSON (never an exception)."""
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return None


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float, or None for anything else (bools, NaN, ints beyond a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
