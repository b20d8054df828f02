"""What the UI shows, read from a workspace as plain JSON-ready dicts (no FastAPI, no HTML here).

Both the pages and the JSON API are built on these functions, so a page never shows anything the
API does not serve. Lookups of unknown runs or experiments raise :class:`NotFound`; file paths
from a request go through :func:`safe_run_path`, which never leaves the run's folder.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import posixpath
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

from airflow_provider_mltrain.core import run_warnings
from airflow_provider_mltrain.core.errors import MLTrainError, SnapshotError
from airflow_provider_mltrain.core.gitinfo import PREFIX as GIT_PREFIX
from airflow_provider_mltrain.core.metrics import TYPED_KINDS, finite_number, stored_value
from airflow_provider_mltrain.core.run import STD_LOG, Run, read_collected
from airflow_provider_mltrain.core.runfiles import RunFiles
from airflow_provider_mltrain.core.snapshot import Snapshot, diff
from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.core.sweep import EARLY_TERMINATED, HYPERPARAMETERS, INDEX, KIND, PARENT, SWEEP
from airflow_provider_mltrain.core.workspace import Workspace

log = logging.getLogger(__name__)

# The most log text one request returns; a bigger log is paged (API) or tailed (page).
MAX_LOG_CHUNK = 256 * 1024
DEFAULT_LOG_CHUNK = 64 * 1024
# Files bigger than this are not diffed as text (the diff page says so).
MAX_DIFF_BYTES = 1024 * 1024
MAX_RUNS_LISTED = 500
SORT_KEYS = ("created", "duration", "status", "metric", "id")
# Active runs whose target a runs list reads per request (the newest ones); a run page reads its own.
MAX_REFRESHED = 20
# Charts: points per series (min and max of each bucket beyond), series per run, non-numeric
# values per series, and rows of a list/row/table metric expanded into points.
MAX_CHART_POINTS = 2000
MAX_SERIES = 500
MAX_VALUES = 100
MAX_EXPANDED_ROWS = 2000
EXPANDED_KINDS = ("list", "row", "table")
# Azure ML v1's typed metrics drawn on the run page (the last value of each name), at most this many.
MAX_TYPED = 20
MAX_METRIC_PAGE = 10_000
# Run files per page (the run page and the API); a script may write 100,000 outputs.
FILES_PER_PAGE = 500
MAX_FILES_PAGE = 10_000
# A sweep's page: children per page of its table, the best children whose curves it draws, and
# the points of all those curves together (each curve gets its share, downsampled beyond).
SWEEP_CHILDREN_PAGE = 100
MAX_SWEEP_CHILDREN_PAGE = 500
MAX_SWEEP_CURVES = 200
MAX_SWEEP_POINTS = 20_000


class NotFound(LookupError):
    """An unknown run, experiment, file or snapshot: a 404 for the caller."""


class BadRequest(ValueError):
    """A request the UI refuses (a path leaving the run folder, an unknown sort key): a 400."""


# -- runs ----------------------------------------------------------------------------------------


def get_record(ws: Workspace, run_id: str) -> dict[str, Any]:
    record = ws.store.get_run(run_id)
    if record is None:
        raise NotFound(f"No run {run_id!r} in the run store.")
    return record


def refresh_if_active(ws: Workspace, record: dict[str, Any]) -> dict[str, Any]:
    """Read an unfinished run's target once, so the page shows current state, metrics and log.

    A target that cannot be read (a VM that is down), or anything else that fails, leaves the
    stored state on the page, with the problem under ``"problem"``: one run never breaks a page.
    """
    if record["collected"]:
        return record
    try:
        Run(ws, record["id"]).refresh()
    except (MLTrainError, OSError) as exc:
        log.warning("Run %s: could not read its target (%s); showing stored state", record["id"], exc)
        return {**get_record(ws, record["id"]), "problem": f"could not read its target: {exc}"}
    except Exception as exc:
        log.exception("Run %s: refreshing it failed; showing stored state", record["id"])
        return {**get_record(ws, record["id"]), "problem": f"refreshing it failed: {type(exc).__name__}"}
    return get_record(ws, record["id"])


def _warnings(record: dict[str, Any]) -> list[str]:
    problem = record.get("problem")
    return run_warnings.texts(record["warnings"]) + ([problem] if problem else [])


def _times(events: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    at = {e["status"]: e["at"] for e in events}
    start = at.get(RunStatus.RUNNING.value)
    end = next((at[s.value] for s in RunStatus if s.is_terminal and s.value in at), None)
    return start, end


def _environment_label(env: dict[str, Any]) -> str:
    name = str(env.get("name") or "")
    version = env.get("version")
    return f"{name}:{version}" if name and version else name


def run_summary(ws: Workspace, record: dict[str, Any], metric: str | None = None) -> dict[str, Any]:
    """One row of a runs table."""
    events = ws.store.get_events(record["id"])
    start, end = _times(events)
    status = RunStatus(record["status"])
    summary = {
        "run_id": record["id"],
        "experiment": record["experiment"],
        "status": record["status"],
        "active": not status.is_terminal,
        "target": record["target"],
        "environment": _environment_label(record["environment"]),
        "script": record["script"],
        "created_at": record["created_at"],
        "start_time": start,
        "end_time": end,
        "duration_seconds": (end - start) if start is not None and end is not None else None,
        "tags": record["tags"],
        "metric": None,
        "warnings": _warnings(record),
        "sweep": record["properties"].get(KIND) == "sweep",
        "parent": record["properties"].get(PARENT),
        "children": 0,
    }
    if metric:
        summary["metric"] = ws.store.last_numeric(record["id"], metric)
    return summary


Visible = Callable[[dict[str, Any]], bool]


def list_experiments(ws: Workspace, visible: Visible = lambda record: True) -> list[dict[str, Any]]:
    """Experiments with counts over the runs ``visible`` keeps (an experiment with none is left out)."""
    out = []
    for record_list in _by_experiment(r for r in ws.store.list_runs() if visible(r)).values():
        latest = record_list[0]
        statuses: dict[str, int] = {}
        for r in record_list:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        out.append(
            {
                "name": latest["experiment"],
                "runs": len(record_list),
                "runs_with_warnings": sum(1 for r in record_list if r["warnings"]),
                "active": sum(n for s, n in statuses.items() if not RunStatus(s).is_terminal),
                "statuses": statuses,
                "last_run_id": latest["id"],
                "last_run_at": latest["created_at"],
            }
        )
    return sorted(out, key=lambda e: e["name"])


def _by_experiment(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["experiment"], []).append(r)
    return groups


def metric_names_of_experiment(ws: Workspace, records: list[dict[str, Any]]) -> list[str]:
    names: set[str] = set()
    for r in records[:50]:
        names.update(
            m["name"]
            for m in ws.store.metric_summaries(r["id"], MAX_SERIES)
            if m["kind"] == "scalar" and m["count"]
        )
    return sorted(names)


def parse_tag_filter(tag: str | None) -> tuple[str, str | None] | None:
    """``key`` (has the tag) or ``key=value`` (has it with that value)."""
    if not tag:
        return None
    key, sep, value = tag.partition("=")
    return key, (value if sep else None)


def list_runs(
    ws: Workspace,
    experiment: str,
    status: str | None = None,
    tag: str | None = None,
    search: str | None = None,
    metric: str | None = None,
    sort: str = "created",
    descending: bool = True,
    limit: int = 100,
    visible: Visible = lambda record: True,
    children: bool = False,
) -> dict[str, Any]:
    """The runs of one experiment that ``visible`` keeps, filtered and sorted, with the metric
    names a table may show. A child run (of a sweep, or one its script made) is left out while
    its parent is listed, unless ``children``: its parent's row counts it (``children``), so a
    sweep of 500 children is one row."""
    if sort not in SORT_KEYS:
        raise BadRequest(f"sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}.")
    if status and status not in {s.value for s in RunStatus}:
        raise BadRequest(f"status must be one of {', '.join(s.value for s in RunStatus)}, not {status!r}.")
    records = [r for r in ws.store.list_runs(experiment=experiment) if visible(r)]
    if not records:
        raise NotFound(f"No experiment {experiment!r} in the run store.")
    active = [r for r in records if not r["collected"]][:MAX_REFRESHED]
    if active:
        fresh = {r["id"]: refresh_if_active(ws, r) for r in active}
        records = [fresh.get(r["id"], r) for r in records]
    counts: dict[str, int] = {}
    for r in records:
        parent = r["properties"].get(PARENT)
        if parent is not None:
            counts[parent] = counts.get(parent, 0) + 1
    metric_names = metric_names_of_experiment(ws, records)
    if metric is None and metric_names:
        metric = metric_names[0]
    if status:
        records = [r for r in records if r["status"] == status]
    tag_filter = parse_tag_filter(tag)
    if tag_filter:
        tag_key, tag_value = tag_filter
        records = [r for r in records if tag_key in r["tags"]]
        if tag_value is not None:
            records = [r for r in records if r["tags"][tag_key] == tag_value]
    if search:
        needle = search.lower()
        records = [r for r in records if needle in r["id"].lower()]
    listed = {r["id"] for r in records}
    hidden = 0
    if not children:
        kept = [r for r in records if r["properties"].get(PARENT) not in listed]
        hidden, records = len(records) - len(kept), kept
    rows = [_summary_or_problem(ws, r, metric) for r in records[:MAX_RUNS_LISTED]]
    for row in rows:
        row["children"] = counts.get(row["run_id"], 0)

    def sort_key(row: dict[str, Any]) -> tuple[int, Any]:
        value = {
            "created": row["created_at"],
            "duration": row["duration_seconds"],
            "status": row["status"],
            "metric": row["metric"],
            "id": row["run_id"],
        }[sort]
        return (0, value) if value is not None else (1, 0)  # runs without a value go last

    present = sorted((r for r in rows if sort_key(r)[0] == 0), key=sort_key, reverse=descending)
    rows = present + [r for r in rows if sort_key(r)[0] == 1]
    return {
        "experiment": experiment,
        "metric": metric,
        "metric_names": metric_names,
        "total": len(records),
        "children_hidden": hidden,
        "active": any(r["active"] for r in rows),
        "runs": rows[: max(1, min(limit, MAX_RUNS_LISTED))],
    }


def _summary_or_problem(ws: Workspace, record: dict[str, Any], metric: str | None) -> dict[str, Any]:
    """The run's table row; a run whose stored data cannot be read still gets one, naming the problem."""
    try:
        return run_summary(ws, record, metric)
    except Exception as exc:
        log.exception("Run %s: its row could not be made; listing it with the problem", record["id"])
        return {
            "run_id": record["id"],
            "experiment": record["experiment"],
            "status": record["status"],
            "active": False,
            "target": record["target"],
            "environment": "",
            "script": record["script"],
            "created_at": record["created_at"],
            "start_time": None,
            "end_time": None,
            "duration_seconds": None,
            "tags": record["tags"] if isinstance(record["tags"], dict) else {},
            "metric": None,
            "warnings": [*_warnings(record), f"this run could not be read: {type(exc).__name__}"],
            "sweep": False,
            "parent": None,
            "children": 0,
        }


def run_details(
    ws: Workspace, run_id: str, files_offset: int = 0, summaries: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Everything the run page shows except the log text and the metric values; ``files`` is one
    page of the run's file names (from ``files_offset``), ``files_total`` how many there are.
    ``summaries`` (:func:`metric_summaries`) spares a caller that has them a scan of the metrics."""
    record = refresh_if_active(ws, get_record(ws, run_id))
    run = Run(ws, run_id)
    details = run.get_details()
    properties = details["properties"]
    env = dict(details["environment"])
    details["events"] = [
        {"status": e["status"], "at": e["at"], "detail": e["detail"]} for e in ws.store.get_events(run_id)
    ]
    details["active"] = not RunStatus(record["status"]).is_terminal
    details["git"] = {k[len(GIT_PREFIX) :]: v for k, v in properties.items() if k.startswith(GIT_PREFIX)}
    details["airflow"] = {
        k[len("airflow.") :]: v for k, v in properties.items() if k.startswith("airflow.")
    } or None
    details["environment"] = env
    details["warnings"] = _warnings(record)
    details["packages"] = [str(p) for p in env.get("packages") or []]
    details.pop("output_dir", None)  # a path on the server: not the browser's business
    entries = run_entries(ws, run_id)
    page = _page(run_id, entries.files, files_offset, FILES_PER_PAGE)
    details["files"] = page["files"]
    details["files_total"] = page["total"]
    details["files_offset"] = page["offset"]
    details["files_next_offset"] = page["next_offset"]
    details["links"] = [{"path": name, "target": target} for name, target in entries.links.items()]
    details["metric_names"] = (
        ws.store.metric_names(run_id, MAX_SERIES)
        if summaries is None
        else sorted({m["name"] for m in summaries})
    )
    details["log_size"] = log_size(ws, run_id)
    return details


def file_names(ws: Workspace, run_id: str) -> list[str]:
    """The run's regular files: what can be downloaded (links are not, see :func:`run_entries`)."""
    return run_entries(ws, run_id).files


def run_entries(ws: Workspace, run_id: str) -> RunFiles:
    """The run's regular files and its links (shown as links, never followed)."""
    try:
        run = Run(ws, run_id)
        return run.list_entries()
    except (MLTrainError, OSError) as exc:
        log.warning("Run %s: could not list its files (%s)", run_id, exc)
        return RunFiles()


def file_page(ws: Workspace, run_id: str, offset: int = 0, limit: int = FILES_PER_PAGE) -> dict[str, Any]:
    """Names ``offset`` to ``offset + limit`` of the run's files, sorted, and how many there are."""
    return _page(run_id, file_names(ws, run_id), offset, limit)


def _page(run_id: str, names: list[str], offset: int, limit: int) -> dict[str, Any]:
    offset = max(0, offset)
    end = offset + max(1, min(limit, MAX_FILES_PAGE))
    return {
        "run_id": run_id,
        "offset": offset,
        "total": len(names),
        "next_offset": end if end < len(names) else None,
        "files": names[offset:end],
    }


def snapshot_files(ws: Workspace, run_id: str) -> list[dict[str, Any]]:
    snap = _snapshot(ws, get_record(ws, run_id))
    files = [{"path": f.path, "size": f.size, "mode": f"{f.mode:o}", "link": None} for f in snap.files]
    files += [{"path": p, "size": None, "mode": None, "link": target} for p, target in snap.symlinks]
    return sorted(files, key=lambda f: f["path"])


def _snapshot(ws: Workspace, record: dict[str, Any]) -> Snapshot:
    try:
        return ws.snapshots.get(record["snapshot_id"])
    except SnapshotError as exc:
        raise NotFound(f"The snapshot of run {record['id']} is not in this workspace: {exc}") from None


# -- metrics -------------------------------------------------------------------------------------


def metric_summaries(ws: Workspace, run_id: str, max_points: int = MAX_CHART_POINTS) -> list[dict[str, Any]]:
    """Per logged metric: its kind, count, min, max and last value, and the min and max of each of
    ``max_points / 2`` runs of consecutive values: one scan of the run's metrics in the database."""
    return ws.store.metric_overview(run_id, max(1, max_points // 2), MAX_SERIES)


def metric_series(
    ws: Workspace,
    run_id: str,
    max_points: int = MAX_CHART_POINTS,
    summaries: list[dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every logged metric as numeric series over steps and time, plus non-numeric values as-is.

    ``{name: {"kind", "points": [{"step", "time", "value"}], "values": [...], "count",
    "downsampled"}}``: a scalar series has one point per ``log``; a list is one point per item; a
    row or table gives one series per numeric column, named ``name.column``. A series of more than
    ``max_points`` values is downsampled by the database to the min and max of each of
    ``max_points / 2`` runs of consecutive values (``count`` is the number of values logged, the
    whole series pages through :func:`metric_page`), so a chart of a million steps keeps its peaks
    and costs a few thousand points. At most :data:`MAX_SERIES` names and :data:`MAX_VALUES`
    non-numeric values per name are returned.
    """
    get_record(ws, run_id)
    max_points = max(2, max_points)
    out: dict[str, dict[str, Any]] = {}
    for summary in metric_summaries(ws, run_id, max_points) if summaries is None else summaries:
        name, kind = summary["name"], summary["kind"]
        if kind in TYPED_KINDS:
            continue  # drawn by their kind: see typed_metrics
        # Knowing where the metric's rows are and how many there are, the database stops early.
        seqs = (summary["first_seq"], summary["last_seq"])
        if kind in EXPANDED_KINDS or summary["rows"] <= max_points:
            limit = min(summary["rows"], MAX_EXPANDED_ROWS if kind in EXPANDED_KINDS else max_points)
            for row in ws.store.metric_page(run_id, name, 0, limit, kind=kind, seqs=seqs):
                _add_row(out, row)
            continue
        entry = _entry(out, name, kind)
        entry["count"] += summary["count"]
        entry["downsampled"] = True
        if summary["count"]:
            for b in summary["buckets"]:
                entry["points"].append({"step": b["first_step"], "time": b["first_time"], "value": b["min"]})
                if b["count"] > 1:
                    entry["points"].append(
                        {"step": b["last_step"], "time": b["last_time"], "value": b["max"]}
                    )
        if summary["count"] < summary["rows"]:
            limit = min(MAX_VALUES, summary["rows"] - summary["count"])
            for row in ws.store.metric_page(run_id, name, 0, limit, kind=kind, non_numeric=True, seqs=seqs):
                entry["values"].append(stored_value(row["value"]))
    for entry in out.values():
        if len(entry["points"]) > max_points:
            entry["points"] = downsample(entry["points"], max_points)
            entry["downsampled"] = True
        del entry["values"][MAX_VALUES:]
    return out


def typed_metrics(
    ws: Workspace, run_id: str, summaries: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The last value of each typed metric (confusion matrix, accuracy table, predictions,
    residuals) as ``{"name", "kind", "description", "value"}``, in logging order, at most
    :data:`MAX_TYPED`; a value whose shape is not its kind's is left out."""
    get_record(ws, run_id)
    out: list[dict[str, Any]] = []
    for summary in metric_summaries(ws, run_id) if summaries is None else summaries:
        if summary["kind"] not in TYPED_KINDS or len(out) >= MAX_TYPED:
            continue
        seqs = (summary["first_seq"], summary["last_seq"])
        rows = ws.store.metric_page(
            run_id, summary["name"], summary["rows"] - 1, 1, kind=summary["kind"], seqs=seqs
        )
        value = stored_value(rows[-1]["value"]) if rows else None
        if isinstance(value, dict) and isinstance(value.get("data"), dict):
            out.append(
                {
                    "name": summary["name"],
                    "kind": summary["kind"],
                    "description": rows[-1].get("description"),
                    "value": value,
                }
            )
    return out


def downsample(points: list[dict[str, Any]], max_points: int) -> list[dict[str, Any]]:
    """At most ``max_points`` points: the lowest and highest point of each of ``max_points / 2``
    runs of consecutive points, in their order (so peaks and dips survive)."""
    buckets = max(1, max_points // 2)
    size = len(points) / buckets
    out: list[dict[str, Any]] = []
    for i in range(buckets):
        chunk = points[int(i * size) : int((i + 1) * size)]
        if not chunk:
            continue
        low = min(range(len(chunk)), key=lambda k: chunk[k]["value"])
        high = max(range(len(chunk)), key=lambda k: chunk[k]["value"])
        out.extend(chunk[k] for k in sorted({low, high}))
    return out


def _entry(out: dict[str, dict[str, Any]], name: str, kind: str) -> dict[str, Any]:
    return out.setdefault(name, {"kind": kind, "points": [], "values": [], "count": 0, "downsampled": False})


def _add_row(out: dict[str, dict[str, Any]], row: dict[str, Any]) -> None:
    kind, name = row["kind"], row["name"]
    value = stored_value(row["value"])
    at = finite_number(row["logged_at"])
    if at is None:
        return  # a row of an older version with a NaN time: no place on any axis
    if kind == "row" and isinstance(value, dict):
        for col, v in value.items():
            _add(out, f"{name}.{col}", "row", None, at, v)
    elif kind == "table" and isinstance(value, dict):
        for col, values in value.items():
            for i, v in enumerate(values if isinstance(values, list) else [values]):
                _add(out, f"{name}.{col}", "table", i, at, v)
    elif kind == "list" and isinstance(value, list):
        for i, v in enumerate(value):
            _add(out, name, "list", i, at, v)
    else:
        _add(out, name, kind, row["step"], at, value)


def _add(out: dict[str, dict[str, Any]], name: str, kind: str, step: Any, at: float, value: Any) -> None:
    entry = _entry(out, name, kind)
    number = finite_number(value)
    if number is not None:
        entry["points"].append({"step": step, "time": at, "value": number})
        entry["count"] += 1
    elif len(entry["values"]) < MAX_VALUES:
        entry["values"].append(value)


def metric_page(ws: Workspace, run_id: str, name: str, offset: int, limit: int) -> dict[str, Any]:
    """Values ``offset`` to ``offset + limit`` of one logged metric (a name as the run logged it),
    exactly as logged, in logging order: the API's way through a series too long to send whole."""
    get_record(ws, run_id)
    limit = max(1, min(limit, MAX_METRIC_PAGE))
    rows = ws.store.metric_page(run_id, name, offset, limit + 1)
    if not rows and offset == 0:
        raise NotFound(f"Run {run_id} logged no metric {name!r}.")
    more = len(rows) > limit
    return {
        "run_id": run_id,
        "name": name,
        "offset": offset,
        "next_offset": offset + limit if more else None,
        "values": [
            {"step": r["step"], "time": r["logged_at"], "kind": r["kind"], "value": stored_value(r["value"])}
            for r in rows[:limit]
        ],
    }


# -- log -----------------------------------------------------------------------------------------


def log_size(ws: Workspace, run_id: str) -> int:
    try:
        return Run(ws, run_id).target_log_size()
    except (MLTrainError, OSError):
        return 0


def read_log(ws: Workspace, run_id: str, offset: int | None, limit: int) -> dict[str, Any]:
    """One page of the run's log: ``limit`` bytes from ``offset``, or the last ``limit`` bytes.

    Pages end on a line break when there is one, so a line is never split across two pages
    (unless it is longer than a page).
    """
    record = get_record(ws, run_id)
    limit = max(1, min(limit, MAX_LOG_CHUNK))
    run = Run(ws, run_id)
    size = log_size(ws, run_id)
    start = max(0, size - limit) if offset is None else max(0, offset)
    if offset is None and start > 0:
        head = _read_range(ws, run, record, start, min(limit, 4096))
        newline = head.find(b"\n")
        if 0 <= newline < len(head) - 1:
            start += newline + 1  # begin the tail on a line boundary
    data = _read_range(ws, run, record, start, limit)
    if len(data) == limit and start + len(data) < size:
        cut = data.rfind(b"\n")
        if cut > 0:
            data = data[: cut + 1]
    end = start + len(data)
    return {
        "run_id": run_id,
        "offset": start,
        "next_offset": end,
        "size": max(size, end),
        "eof": end >= size,
        "active": not RunStatus(record["status"]).is_terminal,
        "text": data.decode("utf-8", "replace"),
    }


def _read_range(ws: Workspace, run: Run, record: dict[str, Any], start: int, limit: int) -> bytes:
    if record["collected"] and ws.artifacts.is_local:
        return read_collected(ws.run_files_dir(run.id), STD_LOG, start, limit)
    try:
        return run.read_log(start, limit)
    except (MLTrainError, OSError) as exc:
        log.warning("Run %s: could not read its log (%s)", run.id, exc)
        return b""


# -- files ---------------------------------------------------------------------------------------


def safe_run_path(name: str) -> str:
    """A run file name as ``get_file_names`` gives it, or :class:`BadRequest` for anything else.

    Refuses absolute paths, ``..`` and ``.`` parts, backslashes and NUL bytes before any
    filesystem access, so a name can only address a file inside the run's own folder.
    """
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        raise BadRequest(f"{name!r} is not a run file name (like outputs/model.pkl).")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BadRequest(f"{name!r} is not a run file name: '..', '.' and empty parts are refused.")
    return posixpath.normpath(name)


def open_run_file(ws: Workspace, run_id: str, name: str) -> tuple[BinaryIO, int]:
    """The run file open for reading, and its size: a collected file streamed from the artifact
    store or opened without following any link, or the bytes of a file still on the target (read
    the same way there). Raises :class:`NotFound` for a name the run has no regular file of: a link
    is never served."""
    name = safe_run_path(name)
    get_record(ws, run_id)
    if name not in file_names(ws, run_id):
        raise NotFound(f"Run {run_id} has no file {name!r}.")
    try:
        return Run(ws, run_id).open_file(name)
    except FileNotFoundError:
        raise NotFound(f"Run {run_id} has no file {name!r}.") from None


# -- sweeps --------------------------------------------------------------------------------------

_POLICY_SETTINGS = (
    "evaluation_interval",
    "delay_evaluation",
    "slack_factor",
    "slack_amount",
    "truncation_percentage",
    "exclude_finished_jobs",
)


def sweep_details(
    ws: Workspace,
    run_id: str,
    offset: int = 0,
    limit: int = SWEEP_CHILDREN_PAGE,
    visible: Visible = lambda record: True,
) -> dict[str, Any]:
    """A sweep: its definition, and one page of its children (those ``visible`` keeps) ranked as
    ``SweepRun.get_children_sorted_by_primary_metric`` ranks them (best first by each child's best
    value under the goal, ties by id, children without the metric last, by index). Each child's
    best value comes from the metric summaries kept at ingestion, so ranking 500 children reads
    500 small rows, not every value they logged. :class:`NotFound` for a run that is no sweep."""
    record, definition = _sweep_record(ws, run_id)
    return _sweep_page(record, definition, _ranked_children(ws, record, definition, visible), offset, limit)


def _sweep_record(ws: Workspace, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    record = get_record(ws, run_id)
    if record["properties"].get(KIND) != "sweep":
        raise NotFound(f"Run {run_id!r} is not a sweep: its page is /runs/{run_id}.")
    return record, json_object(record["properties"].get(SWEEP))


def _sweep_page(
    record: dict[str, Any], definition: dict[str, Any], ranked: list[dict[str, Any]], offset: int, limit: int
) -> dict[str, Any]:
    limit = max(1, min(limit, MAX_SWEEP_CHILDREN_PAGE))
    offset = max(0, offset)
    statuses: dict[str, int] = {}
    for child in ranked:
        statuses[child["status"]] = statuses.get(child["status"], 0) + 1
    best = ranked[0] if ranked and ranked[0]["best_primary_metric"] is not None else None
    space = definition.get("parameter_space")
    return {
        "run_id": record["id"],
        "experiment": record["experiment"],
        "status": record["status"],
        "active": not RunStatus(record["status"]).is_terminal,
        "created_at": record["created_at"],
        "error": record["error"],
        "warnings": _warnings(record),
        "definition": definition,
        "sampling": definition.get("sampling"),
        "parameter_space": space if isinstance(space, dict) else {},
        "policy": definition.get("policy") or "none",
        "policy_settings": {k: definition[k] for k in _POLICY_SETTINGS if definition.get(k) is not None},
        "primary_metric_name": str(definition.get("primary_metric_name") or ""),
        "primary_metric_goal": str(definition.get("primary_metric_goal") or ""),
        "children_total": len(ranked),
        "early_terminated": sum(1 for c in ranked if c["early_terminated"]),
        "statuses": statuses,
        "best_run_id": best["run_id"] if best else None,
        "best_primary_metric": best["best_primary_metric"] if best else None,
        "offset": offset,
        "next_offset": offset + limit if offset + limit < len(ranked) else None,
        "children": [_public_child(c) for c in ranked[offset : offset + limit]],
    }


def json_object(value: Any) -> dict[str, Any]:
    """A JSON object held in a property, or {} for anything else (a script cannot set mltrain.*
    properties, but an older version or a hand-edited store may hold anything)."""
    try:
        loaded = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _ranked_children(
    ws: Workspace, record: dict[str, Any], definition: dict[str, Any], visible: Visible
) -> list[dict[str, Any]]:
    name = str(definition.get("primary_metric_name") or "")
    maximize = definition.get("primary_metric_goal") != "MINIMIZE"
    children = [
        child
        for child in ws.store.list_runs(experiment=record["experiment"])
        if child["properties"].get(PARENT) == record["id"]
        and child["properties"].get(INDEX, "").isdigit()
        and visible(child)
    ]
    summaries = ws.store.series_summaries([c["id"] for c in children], name) if name else {}
    rows = []
    for child in children:
        props = child["properties"]
        summary = summaries.get(child["id"])
        if summary is not None and not summary["count"]:
            summary = None
        value = None if summary is None else summary["max"] if maximize else summary["min"]
        rows.append(
            {
                "run_id": child["id"],
                "index": int(props[INDEX]),
                "status": child["status"],
                "hyperparameters": json_object(props.get(HYPERPARAMETERS)),
                "best_primary_metric": value if value is not None and math.isfinite(value) else None,
                "values_logged": summary["count"] if summary else 0,
                "early_terminated": props.get(EARLY_TERMINATED),
                "_summary": summary,
            }
        )
    sign = -1 if maximize else 1
    with_metric = sorted(
        (r for r in rows if r["best_primary_metric"] is not None),
        key=lambda r: (sign * r["best_primary_metric"], r["run_id"]),
    )
    without = sorted((r for r in rows if r["best_primary_metric"] is None), key=lambda r: r["index"])
    ranked = with_metric + without
    for rank, row in enumerate(ranked):
        row["rank"] = rank + 1
        row["best"] = rank == 0 and row["best_primary_metric"] is not None
    return ranked


def _public_child(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def sweep_charts(
    ws: Workspace,
    run_id: str,
    offset: int = 0,
    limit: int = SWEEP_CHILDREN_PAGE,
    visible: Visible = lambda record: True,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """What a sweep's page shows: :func:`sweep_details` (one page of the table), every visible
    child ranked (the parallel coordinates draw them all), and the primary-metric points of the
    best :data:`MAX_SWEEP_CURVES` children, each downsampled to its share of
    :data:`MAX_SWEEP_POINTS`."""
    record, definition = _sweep_record(ws, run_id)
    ranked = _ranked_children(ws, record, definition, visible)
    details = _sweep_page(record, definition, ranked, offset, limit)
    name = details["primary_metric_name"]
    drawn = [r for r in ranked if r["_summary"] is not None][:MAX_SWEEP_CURVES]
    per_child = max(20, min(MAX_CHART_POINTS, MAX_SWEEP_POINTS // max(1, len(drawn))))
    long = [r["run_id"] for r in drawn if r["_summary"]["rows"] > per_child]
    short = [r["run_id"] for r in drawn if r["_summary"]["rows"] <= per_child]
    curves: dict[str, list[dict[str, Any]]] = {}
    for child_id, rows in ws.store.series_rows(short, name).items():
        points = []
        for row in rows:
            number, at = finite_number(stored_value(row["value"])), finite_number(row["logged_at"])
            if number is not None and at is not None:
                points.append({"step": row["step"], "time": at, "value": number})
        curves[child_id] = points
    for child_id, buckets in ws.store.series_buckets(long, name, max(1, per_child // 2)).items():
        points = []
        for b in buckets:  # the lowest and highest value of each run of values, as metric_series
            points.append({"step": b["first_step"], "time": b["first_time"], "value": b["min"]})
            if b["count"] > 1:
                points.append({"step": b["last_step"], "time": b["last_time"], "value": b["max"]})
        curves[child_id] = points
    curves = {r["run_id"]: curves[r["run_id"]] for r in drawn if curves.get(r["run_id"])}
    return details, [_public_child(r) for r in ranked], curves


# -- comparing -----------------------------------------------------------------------------------


def compare(ws: Workspace, run_ids: list[str]) -> dict[str, Any]:
    """Metrics side by side (last, min, max of each numeric series) and the snapshot diff of the
    oldest run against each other run."""
    if len(run_ids) < 2:
        raise BadRequest("Compare needs at least two runs (runs=A&runs=B).")
    # Oldest first, so the snapshot diff reads from the earlier run to the later one.
    records = sorted(
        {r: get_record(ws, r) for r in run_ids}.values(), key=lambda r: (r["created_at"], r["id"])
    )
    if len(records) < 2:
        raise BadRequest("Compare needs two different runs.")
    summaries = {r["id"]: metric_summaries(ws, r["id"]) for r in records}
    series = {r["id"]: metric_series(ws, r["id"], summaries=summaries[r["id"]]) for r in records}
    # Exact statistics of whole scalar series from the database; the points may be downsampled.
    stats = {
        rid: {m["name"]: m for m in summary if m["kind"] not in EXPANDED_KINDS and m["count"]}
        for rid, summary in summaries.items()
    }
    names = sorted({n for s in series.values() for n, entry in s.items() if entry["points"]})
    table = []
    for name in names:
        cells: dict[str, dict[str, Any] | None] = {}
        for rid, s in series.items():
            exact = stats[rid].get(name)
            points = s.get(name, {}).get("points") or []
            values = [p["value"] for p in points]
            if exact is not None:
                cells[rid] = {k: exact[k] for k in ("last", "min", "max", "count")}
            else:
                cells[rid] = (
                    {"last": values[-1], "min": min(values), "max": max(values), "count": len(values)}
                    if values
                    else None
                )
        table.append({"name": name, "runs": cells})
    base = records[0]
    diffs = []
    for other in records[1:]:
        diffs.append(
            {"base": base["id"], "other": other["id"], **snapshot_diff(ws, base["id"], other["id"])["files"]}
        )
    return {
        "run_ids": [r["id"] for r in records],
        "runs": [run_summary(ws, r) for r in records],
        "metrics": table,
        "series": series,
        "snapshot_diffs": diffs,
    }


def snapshot_diff(ws: Workspace, base_id: str, other_id: str) -> dict[str, Any]:
    a = _snapshot(ws, get_record(ws, base_id))
    b = _snapshot(ws, get_record(ws, other_id))
    return {"base": base_id, "other": other_id, "same": a.id == b.id, "files": diff(a, b)}


def file_diff(ws: Workspace, base_id: str, other_id: str, path: str) -> dict[str, Any]:
    """A unified text diff of one snapshot file between two runs (empty side: added or removed)."""
    a = _snapshot(ws, get_record(ws, base_id))
    b = _snapshot(ws, get_record(ws, other_id))
    old, new = _snapshot_text(ws, a, path), _snapshot_text(ws, b, path)
    if old is None and new is None:
        raise NotFound(f"Neither run's snapshot has a file {path!r}.")
    result: dict[str, Any] = {"base": base_id, "other": other_id, "path": path, "binary": False, "diff": ""}
    if isinstance(old, bytes) or isinstance(new, bytes):
        result["binary"] = True
        return result
    lines = difflib.unified_diff(
        (old or "").splitlines(keepends=True),
        (new or "").splitlines(keepends=True),
        fromfile=f"{base_id}/{path}" if old is not None else "/dev/null",
        tofile=f"{other_id}/{path}" if new is not None else "/dev/null",
    )
    result["diff"] = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return result


def _snapshot_text(ws: Workspace, snap: Snapshot, path: str) -> str | bytes | None:
    """The file's text; ``b""`` when it is binary or too big to diff; None when absent."""
    entry = next((f for f in snap.files if f.path == path), None)
    if entry is None:
        link = dict(snap.symlinks).get(path)
        return None if link is None else f"symlink -> {link}\n"
    if entry.size > MAX_DIFF_BYTES:
        return b""
    data = ws.snapshots.read_blob(snap.id, entry.hash)  # from the cache, else the shared store
    if b"\x00" in data:
        return b""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return b""
