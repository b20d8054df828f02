"""Child runs a script creates (``run.child_run()``, ``run.create_children(n)``), recorded in the store.

The script writes ``logs/children.jsonl`` (a line per creation or end) and each child's metrics in
``logs/children/<n>/metrics.jsonl`` (runner/pylib/mltrain). Whoever follows the parent reads them
here: the files are the script's, so each line is checked on its own and a bad one is a warning
on the parent. A child's id is ``<parent id>_<n>``; it lives as long as its parent at most.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core import run_warnings
from airflow_provider_mltrain.core.metrics import parse_lines
from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.core.store import RunExists

if TYPE_CHECKING:
    from airflow_provider_mltrain.core.run import Run

log = logging.getLogger(__name__)

CHILDREN = "logs/children.jsonl"
MAX_CHILDREN = 1000
MAX_CHILDREN_BYTES = 1 << 20
KIND = "mltrain.kind"
PARENT = "mltrain.parent"
CHILD_INDEX = "mltrain.child.index"
RESERVED = ("airflow.", "mltrain.")


def ingest(parent: Run, record: dict[str, Any], final: bool = False) -> None:
    """Create the child runs the script announced, store their new metrics and record their ends.

    ``final`` (the parent has ended): every child still open ends with the parent's state.
    """
    data = parent.target.read_file(parent.id, CHILDREN, 0, MAX_CHILDREN_BYTES + 1)
    if not data:
        return
    problems: list[str] = []
    if len(data) > MAX_CHILDREN_BYTES:
        problems.append(f"{CHILDREN} is over {MAX_CHILDREN_BYTES} bytes: the rest is ignored")
        data = data[: data.rfind(b"\n", 0, MAX_CHILDREN_BYTES) + 1]
    store = parent.workspace.store
    events: dict[int, list[dict[str, Any]]] = {}
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):  # an unfinished last line waits
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            problems.append(f"{CHILDREN} line {number} is not JSON: skipped")
            continue
        index = event.get("child") if isinstance(event, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < MAX_CHILDREN:
            problems.append(f"{CHILDREN} line {number} names no child index: skipped")
            continue
        events.setdefault(index, []).append(event)
    for index, child_events in sorted(events.items()):
        child_id = f"{parent.id}_{index}"
        child = store.get_run(child_id)
        if child is None:
            if not any(e.get("event") == "created" for e in child_events):
                continue
            child = _create(parent, record, child_id, index, child_events)
            if child is None:
                problems.append(f"child {index}: the id {child_id} is taken by another run: not recorded")
                continue
        elif child["properties"].get(PARENT) != parent.id:
            continue
        if child["collected"]:
            continue
        _ingest_metrics(parent, child, index, final)
        states: list[tuple[RunStatus, float, str | None]] = []
        for e in child_events:
            at = _time(e)
            if e.get("event") == "completed":
                states.append((RunStatus.COMPLETED, at, None))
            elif e.get("event") == "failed":
                states.append((RunStatus.FAILED, at, str(e.get("error") or "fail() called")[:1000]))
            elif e.get("event") == "canceled":
                states.append((RunStatus.CANCELED, at, "cancel() called by the script"))
        if final and not states:
            parent_status = RunStatus(store.get_run(parent.id)["status"])  # type: ignore[index]
            states.append((parent_status, time.time(), f"ended with its parent run {parent.id}"))
        if states:
            status = store.record_states(child_id, states)
            if status.is_terminal:
                failed = next((d for s, _, d in states if s == RunStatus.FAILED and d), None)
                _ingest_metrics(parent, store.get_run(child_id) or child, index, True)
                store.update(child_id, collected=True, error=failed)
    if problems:
        known = {w["key"] for w in record["warnings"]}
        new = [
            {"key": "children:" + p[:200], "text": p[: run_warnings.MAX_RUNNER_TEXT], "count": 1}
            for p in problems[:20]
            if "children:" + p[:200] not in known
        ]
        if new:
            log.warning("Run %s: %s", parent.id, "; ".join(problems))
            store.add_warnings(parent.id, new)


def _create(
    parent: Run, record: dict[str, Any], child_id: str, index: int, events: list[dict[str, Any]]
) -> dict[str, Any] | None:
    created = next(e for e in events if e.get("event") == "created")
    name = created.get("name")
    tags = {"mltrain.child.name": str(name)[:255]} if isinstance(name, str) else {}
    at = _time(created)
    store = parent.workspace.store
    try:
        store.create_run(
            {
                "id": child_id,
                "experiment": record["experiment"],
                "status": RunStatus.RUNNING.value,
                "target": record["target"],
                "source_directory": record["source_directory"],
                "script": record["script"],
                "arguments": record["arguments"],
                "snapshot_id": record["snapshot_id"],
                "environment": record["environment"],
                "tags": tags,
                "properties": {
                    KIND: "child",
                    PARENT: parent.id,
                    CHILD_INDEX: str(index),
                    "mltrain.workspace": record["properties"].get("mltrain.workspace", ""),
                },
            },
            at=at,
        )
    except RunExists:
        existing = store.get_run(child_id)
        return existing if existing and existing["properties"].get(PARENT) == parent.id else None
    return store.get_run(child_id)


def _ingest_metrics(parent: Run, child: dict[str, Any], index: int, final: bool) -> None:
    offset = child["metrics_offset"]
    data = parent.target.read_file(parent.id, f"logs/children/{index}/metrics.jsonl", offset)
    end = len(data) if final else data.rfind(b"\n") + 1
    if end <= 0:
        return
    parsed = parse_lines(child["id"], data[:end], offset)
    warnings = run_warnings.from_metrics(parsed)
    store = parent.workspace.store
    stored = store.ingest_metrics(child["id"], offset, offset + end, parsed.rows, warnings)
    if stored and (parsed.tags or parsed.properties):
        current = store.get_run(child["id"]) or child
        store.update(
            child["id"],
            tags=current["tags"] | {k: v for k, v in parsed.tags.items() if not k.startswith(RESERVED)},
            properties={**parsed.properties, **current["properties"]},
        )


def _time(event: dict[str, Any]) -> float:
    at = event.get("time")
    if isinstance(at, (int, float)) and not isinstance(at, bool) and math.isfinite(at):
        return float(at)
    return time.time()
