"""The ``/mltrain`` FastAPI app: run history pages and the JSON API they are built on.

Pages are rendered on the server with Jinja2 (autoescape on) and charts are inline SVG, so the
app needs nothing from a CDN; the one script it ships only reloads, tails the log and swaps
fragments this app rendered. Every route depends on :func:`auth.require_reader`, but /static and
the OpenLineage facet's schema (/lineage/...: the same everywhere, no data). URL contract
relied on by the operator's extra link: ``/mltrain/runs/{run_id}``. The one action that changes
anything, cancelling a run, is a POST that needs the right to edit the run's DAG and, from a
browser, the page's CSRF token (:mod:`.csrf`).
"""

from __future__ import annotations

import math
import mimetypes
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_mltrain.core import sweep, text
from airflow_provider_mltrain.core.run import Run
from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.core.workspace import Workspace
from airflow_provider_mltrain.lineage import openlineage as lineage
from airflow_provider_mltrain.plugins import api_models as m
from airflow_provider_mltrain.plugins import charts, csrf, parameters, queries, registry
from airflow_provider_mltrain.plugins.auth import Access, ReaderDep

HERE = Path(__file__).parent
API_PREFIX = "/api"
# Final metric values a parallel-coordinates chart draws beside the hyperparameters.
MAX_PC_METRICS = 6
# Pages are framed by the Airflow UI (same origin); nothing else may frame them or inject script.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)


def get_workspace() -> Workspace:
    """The workspace the server's settings name (``MLTRAIN_WORKSPACE``, ``[mltrain] workspace``...)."""
    return Workspace()


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_displayable,
    )
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.filters["number"] = _number
    # A name holding bytes that were not UTF-8 links to those very bytes.
    env.filters["q"] = lambda v: quote(str(v), safe="", errors="surrogateescape")
    env.filters["qpath"] = lambda v: quote(str(v), safe="/", errors="surrogateescape")
    env.filters["size"] = _size
    env.filters["epoch"] = _epoch
    env.filters["metric_value"] = charts.metric_value
    env.filters["exp"] = _exp
    return env


def _displayable(value: Any) -> Any:
    """Every ``{{ }}`` of a page: text a script wrote shows control characters and bytes that
    were not UTF-8 as U+FFFD (escaping for HTML is autoescape's job)."""
    if isinstance(value, Markup):
        return Markup(text.for_display(value))  # noqa: S704 - already escaped, only characters replaced
    if isinstance(value, str):
        return text.for_display(value)
    return value


class SafeJSONResponse(JSONResponse):
    """JSON that encodes whatever a script wrote: a lone surrogate (a byte that was not UTF-8 in
    a file name, say) becomes U+FFFD and NaN or infinity null, where the stock encoder fails."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (ValueError, UnicodeEncodeError):
            return super().render(_json_safe(content))


def _json_safe(value: Any) -> Any:
    if isinstance(value, str):
        return text.replace_surrogates(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _when(ts: float | str | None) -> str:
    if ts is None:
        return ""
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts).timestamp()
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _epoch(ts: float | str | None) -> float | None:
    if ts is None or isinstance(ts, (int, float)):
        return ts
    return datetime.fromisoformat(ts).timestamp()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _exp(value: Any) -> str:
    """A loguniform bound (a natural logarithm, as in Azure ML) as the value it stands for."""
    try:
        return f"{math.exp(float(value)):.3g}"
    except (TypeError, ValueError, OverflowError):
        return ""


def _size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _checked_record(ws: Workspace, access: Access, run_id: str) -> dict[str, Any]:
    record = queries.get_record(ws, run_id)
    access.check_run(record)
    return record


def _runs_of(ws: Workspace, access: Access, experiment: str, **kwargs: Any) -> dict[str, Any]:
    return queries.list_runs(ws, experiment, visible=access.can_read_run, **kwargs)


def _experiments(ws: Workspace, access: Access) -> list[dict[str, Any]]:
    return queries.list_experiments(ws, visible=access.can_read_run)


def _model_visible(access: Access) -> registry.Visible:
    return lambda record: access.can_read_run(record) if record is not None else access.can_read_dag(None)


def _task_runs(ws: Workspace, dag_id: str, dag_run_id: str, task_id: str, map_index: int) -> list[str]:
    """Runs a task instance submitted, oldest first (a retry after a failure adds one), found by the
    ``airflow.*`` properties the operator records on each run."""
    wanted = {
        "airflow.dag_id": dag_id,
        "airflow.task_id": task_id,
        "airflow.run_id": dag_run_id,
        "airflow.map_index": str(map_index),
    }
    found = []
    for r in ws.store.list_runs():
        props = {**r["properties"]}
        if props.get("airflow.map_index") in (None, "None"):
            props["airflow.map_index"] = "-1"
        if all(props.get(k) == v for k, v in wanted.items()):
            found.append(r)
    return [r["id"] for r in sorted(found, key=lambda r: (r["created_at"], r["id"]))]


def _cancel(ws: Workspace, access: Access, run_id: str) -> str:
    """Cancel as ``mltrain runs cancel`` does, once the user may; returns the run's final status."""
    record = _checked_record(ws, access, run_id)
    access.check_cancel(record)
    return Run(ws, run_id).cancel()


def _comparison(ws: Workspace, run_ids: list[str]) -> dict[str, Any]:
    """:func:`queries.compare` plus the runs' parameters side by side (what differs between them)."""
    data = queries.compare(ws, run_ids)
    records = [queries.get_record(ws, rid) for rid in data["run_ids"]]
    return {**data, "parameters": parameters.parameter_rows(records)}


def _logging_order(data: dict[str, Any]) -> dict[str, int]:
    """Each metric's place in the order the compared runs first logged it."""
    order: dict[str, int] = {}
    for rid in data["run_ids"]:
        for name in data["series"][rid]:
            order.setdefault(name, len(order))
    return order


def _map_index(value: str | None) -> int:
    """``{MAP_INDEX}`` stays literal in the UI's link for a task that is not mapped: -1 then."""
    try:
        return int(value) if value is not None else -1
    except ValueError:
        return -1


# -- JSON API ------------------------------------------------------------------------------------


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, tags=["mltrain"])

    @router.get("/experiments", summary="Experiments with run counts", response_model=list[m.Experiment])
    def experiments(ws: WorkspaceDep, access: ReaderDep) -> list[dict[str, Any]]:
        return _experiments(ws, access)

    @router.get("/models", summary="Registered models", response_model=list[m.ModelSummary])
    def models(ws: WorkspaceDep, access: ReaderDep) -> list[dict[str, Any]]:
        return registry.list_models(ws, _model_visible(access))

    @router.get(
        "/models/{name}",
        summary="A model's versions with their source runs and final metrics",
        response_model=m.ModelDetails,
    )
    def model(name: str, ws: WorkspaceDep, access: ReaderDep) -> dict[str, Any]:
        return registry.model_versions(ws, name, _model_visible(access))

    @router.get(
        "/experiments/{experiment}/runs",
        summary="Runs of an experiment, filtered and sorted",
        response_model=m.RunList,
    )
    def runs(
        experiment: str,
        ws: WorkspaceDep,
        access: ReaderDep,
        status: str | None = None,
        tag: Annotated[str | None, Query(description="key or key=value")] = None,
        search: Annotated[str | None, Query(description="part of the run id")] = None,
        metric: Annotated[str | None, Query(description="the metric column (last value)")] = None,
        sort: Annotated[str, Query(description=", ".join(queries.SORT_KEYS))] = "created",
        order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
        limit: Annotated[int, Query(ge=1, le=queries.MAX_RUNS_LISTED)] = 100,
        children: Annotated[
            bool, Query(description="list child runs too (by default a parent's row stands for them)")
        ] = False,
    ) -> dict[str, Any]:
        return _runs_of(
            ws,
            access,
            experiment,
            status=status,
            tag=tag,
            search=search,
            metric=metric,
            sort=sort,
            descending=order == "desc",
            limit=limit,
            children=children,
        )

    @router.get(
        "/sweeps/{run_id}",
        summary="A sweep: its definition and its children ranked by the primary metric",
        response_model=m.SweepDetails,
    )
    def sweep_api(
        run_id: str,
        ws: WorkspaceDep,
        access: ReaderDep,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=queries.MAX_SWEEP_CHILDREN_PAGE)] = queries.SWEEP_CHILDREN_PAGE,
    ) -> dict[str, Any]:
        _checked_record(ws, access, run_id)
        return queries.sweep_details(ws, run_id, offset, limit, visible=access.can_read_run)

    @router.get(
        "/runs/{run_id}",
        summary="A run: status, timeline, arguments, git, environment, files",
        response_model=m.RunDetails,
    )
    def run(run_id: str, ws: WorkspaceDep, access: ReaderDep) -> dict[str, Any]:
        _checked_record(ws, access, run_id)
        return queries.run_details(ws, run_id)

    @router.post(
        "/runs/{run_id}/cancel",
        summary="Cancel an active run (SIGTERM, then SIGKILL after the grace period)",
        description="Needs the permission to edit the run's DAG (runs no DAG submitted: administrators). "
        f"Authenticated by the UI's cookie, the request must carry the page's CSRF token in `{csrf.HEADER}`.",
        response_model=m.Canceled,
    )
    async def cancel(run_id: str, request: Request, ws: WorkspaceDep, access: ReaderDep) -> dict[str, Any]:
        csrf.check(request, request.headers.get(csrf.HEADER))
        status = await run_in_threadpool(_cancel, ws, access, run_id)
        return {"run_id": run_id, "status": status}

    @router.get(
        "/runs/{run_id}/metrics",
        summary="Every logged metric as series over steps and time",
        response_model=dict[str, m.MetricSeries],
    )
    def metrics(
        run_id: str,
        ws: WorkspaceDep,
        access: ReaderDep,
        max_points: Annotated[
            int, Query(ge=2, le=queries.MAX_METRIC_PAGE, description="points per series before downsampling")
        ] = queries.MAX_CHART_POINTS,
    ) -> dict[str, Any]:
        _checked_record(ws, access, run_id)
        return queries.metric_series(ws, run_id, max_points)

    @router.get(
        "/runs/{run_id}/metric-values",
        summary="One page of a metric's values, exactly as logged",
        response_model=m.MetricPage,
    )
    def metric_values(
        run_id: str,
        ws: WorkspaceDep,
        access: ReaderDep,
        name: Annotated[str, Query(description="the metric's name as logged")],
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=queries.MAX_METRIC_PAGE)] = 1000,
    ) -> dict[str, Any]:
        _checked_record(ws, access, run_id)
        return queries.metric_page(ws, run_id, name, offset, limit)

    @router.get(
        "/runs/{run_id}/log", summary="One page of the run's log (by byte offset)", response_model=m.LogPage
    )
    def log(
        run_id: str,
        ws: WorkspaceDep,
        access: ReaderDep,
        offset: Annotated[
            int | None, Query(ge=0, description="byte offset; omitted: the last `limit` bytes")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=queries.MAX_LOG_CHUNK)] = queries.DEFAULT_LOG_CHUNK,
    ) -> dict[str, Any]:
        _checked_record(ws, access, run_id)
        return queries.read_log(ws, run_id, offset, limit)

    @router.get(
        "/runs/{run_id}/snapshot", summary="The files of the run's snapshot", response_model=m.SnapshotFiles
    )
    def snapshot(run_id: str, ws: WorkspaceDep, access: ReaderDep) -> dict[str, Any]:
        record = _checked_record(ws, access, run_id)
        return {"snapshot_id": record["snapshot_id"], "files": queries.snapshot_files(ws, run_id)}

    @router.get(
        "/runs/{run_id}/files",
        summary="One page of the names of the run's outputs and logs",
        response_model=m.FilePage,
    )
    def files(
        run_id: str,
        ws: WorkspaceDep,
        access: ReaderDep,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=queries.MAX_FILES_PAGE)] = 1000,
    ) -> dict[str, Any]:
        _checked_record(ws, access, run_id)
        return queries.file_page(ws, run_id, offset, limit)

    @router.get(
        "/runs/{run_id}/files/{path:path}",
        summary="Download one run file (outputs/... or logs/...)",
        response_class=Response,
    )
    def download(run_id: str, path: str, ws: WorkspaceDep, access: ReaderDep) -> Response:
        return _download(ws, access, run_id, path)

    @router.get(
        "/compare",
        summary="Metrics side by side and snapshot diffs of two or more runs",
        response_model=m.Comparison,
    )
    def compare(
        ws: WorkspaceDep, access: ReaderDep, runs: Annotated[list[str], Query(min_length=2)]
    ) -> dict[str, Any]:
        for run_id in runs:
            _checked_record(ws, access, run_id)
        return _comparison(ws, runs)

    @router.get(
        "/compare/file-diff",
        summary="Text diff of one snapshot file between two runs",
        response_model=m.FileDiff,
    )
    def file_diff(base: str, other: str, path: str, ws: WorkspaceDep, access: ReaderDep) -> dict[str, Any]:
        _checked_record(ws, access, base)
        _checked_record(ws, access, other)
        return queries.file_diff(ws, base, other, path)

    @router.get(
        "/task-instances/{dag_id}/{dag_run_id}/{task_id}",
        summary="The runs a task instance submitted (latest last)",
        response_model=m.TaskInstanceRuns,
    )
    def task_instance(
        dag_id: str,
        dag_run_id: str,
        task_id: str,
        ws: WorkspaceDep,
        access: ReaderDep,
        map_index: str | None = None,
    ) -> dict[str, Any]:
        if not access.can_read_dag(dag_id):
            raise StarletteHTTPException(403, "Forbidden: you may not read this DAG")
        found = _task_runs(ws, dag_id, dag_run_id, task_id, _map_index(map_index))
        if not found:
            raise queries.NotFound(f"Task {dag_id}.{task_id} of {dag_run_id} submitted no run.")
        return {"run_id": found[-1], "runs": found}

    return router


def _download(ws: Workspace, access: Access, run_id: str, path: str) -> Response:
    _checked_record(ws, access, run_id)
    # Served from the descriptor opened without following links, never re-opened by its path.
    f, size = queries.open_run_file(ws, run_id, path)
    name = text.replace_surrogates(path.rsplit("/", 1)[-1])  # a header must be encodable
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    headers = {
        # Never rendered by the browser as a page of ours: a run's HTML output cannot script this app.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
        "Content-Length": str(size),
    }

    def chunks() -> Iterator[bytes]:
        with f:
            remaining = size
            while remaining > 0 and (chunk := f.read(min(1 << 20, remaining))):
                remaining -= len(chunk)
                yield chunk

    return StreamingResponse(chunks(), media_type=media, headers=headers)


# -- pages ---------------------------------------------------------------------------------------


def pages_router(render: Callable[..., HTMLResponse]) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    def experiments_page(request: Request, ws: WorkspaceDep, access: ReaderDep) -> HTMLResponse:
        return render(request, "experiments.html", experiments=_experiments(ws, access))

    @router.get("/models")
    def models_page(request: Request, ws: WorkspaceDep, access: ReaderDep) -> HTMLResponse:
        return render(request, "models.html", models=registry.list_models(ws, _model_visible(access)))

    @router.get("/models/{name}")
    def model_page(request: Request, name: str, ws: WorkspaceDep, access: ReaderDep) -> HTMLResponse:
        return render(request, "model.html", data=registry.model_versions(ws, name, _model_visible(access)))

    @router.get("/experiments/{experiment}")
    def runs_page(
        request: Request,
        experiment: str,
        ws: WorkspaceDep,
        access: ReaderDep,
        status: str = "",
        tag: str = "",
        search: str = "",
        metric: str = "",
        sort: str = "created",
        order: str = "desc",
        children: bool = False,
    ) -> HTMLResponse:
        data = _runs_of(
            ws,
            access,
            experiment,
            status=status or None,
            tag=tag or None,
            search=search or None,
            metric=metric or None,
            sort=sort,
            descending=order != "asc",
            limit=queries.MAX_RUNS_LISTED,
            children=children,
        )
        query = {"status": status, "tag": tag, "search": search, "metric": data["metric"] or ""}
        if children:
            query["children"] = "1"
        return render(
            request,
            "runs.html",
            data=data,
            filters=query,
            sort=sort,
            order=order,
            statuses=[s.value for s in RunStatus],
            sort_link=lambda key: (
                "?"
                + urlencode(
                    {**query, "sort": key, "order": "asc" if sort == key and order == "desc" else "desc"}
                )
            ),
        )

    @router.get("/runs/{run_id}")
    def run_page(
        request: Request,
        run_id: str,
        ws: WorkspaceDep,
        access: ReaderDep,
        x: str = "step",
        files: Annotated[int, Query(ge=0)] = 0,
    ) -> HTMLResponse:
        record = _checked_record(ws, access, run_id)
        return render(
            request,
            "run.html",
            can_cancel=access.can_cancel_run(record),
            **_run_context(ws, run_id, x, files),
        )

    @router.get("/sweeps/{run_id}")
    def sweep_page(
        request: Request,
        run_id: str,
        ws: WorkspaceDep,
        access: ReaderDep,
        x: str = "step",
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> HTMLResponse:
        _checked_record(ws, access, run_id)
        return render(request, "sweep.html", **_sweep_context(ws, access, run_id, x, offset))

    @router.post("/runs/{run_id}/cancel")
    async def cancel_page(request: Request, run_id: str, ws: WorkspaceDep, access: ReaderDep) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        csrf.check(request, next(iter(form.get(csrf.FIELD) or []), None))
        await run_in_threadpool(_cancel, ws, access, run_id)
        root = request.scope.get("root_path", "")
        return RedirectResponse(f"{root}/runs/{quote(run_id, safe='')}", status_code=303)

    @router.get("/runs/{run_id}/live")
    def run_live_fragment(
        request: Request, run_id: str, ws: WorkspaceDep, access: ReaderDep, x: str = "step"
    ) -> HTMLResponse:
        _checked_record(ws, access, run_id)
        return render(request, "run_live.html", **_run_context(ws, run_id, x))

    @router.get("/runs/{run_id}/files/{path:path}")
    def download_page(run_id: str, path: str, ws: WorkspaceDep, access: ReaderDep) -> Response:
        return _download(ws, access, run_id, path)

    @router.get("/compare")
    def compare_page(
        request: Request,
        ws: WorkspaceDep,
        access: ReaderDep,
        runs: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI reads it, never mutated
        file: str = "",
        x: str = "step",
    ) -> HTMLResponse:
        for run_id in runs:
            _checked_record(ws, access, run_id)
        data = _comparison(ws, runs)
        runs = data["run_ids"]
        order = _logging_order(data)
        chart_list = [
            (
                row["name"],
                charts.line_chart(
                    row["name"],
                    [(rid, data["series"][rid].get(row["name"], {}).get("points") or []) for rid in runs],
                    axis=x,
                    chart_id=f"chart-{i}",
                ),
            )
            for i, row in enumerate(sorted(data["metrics"], key=lambda row: order[row["name"]]))
            # a value each run logged once is in the table above: a chart of single points says no more
            if max((c or {}).get("count", 0) for c in row["runs"].values()) > 1
        ]
        axes = [{**h, "kind": "param"} for h in parameters.hyperparameters(data["parameters"])]
        # a metric every run ended on the same value tells runs apart no better than no axis
        metric_rows = [r for r in data["metrics"] if len({c["last"] for c in r["runs"].values() if c}) >= 2]
        for row in sorted(metric_rows, key=lambda row: order[row["name"]])[:MAX_PC_METRICS]:
            values = {rid: (c["last"] if c else None) for rid, c in row["runs"].items()}
            axes.append({"name": row["name"], "numeric": True, "values": values, "kind": "metric"})
        parallel = (
            charts.parallel_coordinates(axes, runs, chart_id="parallel")
            if len(runs) >= 3 and len(axes) >= 2
            else None
        )
        experiments = {r["experiment"] for r in data["runs"]}
        file_diff = queries.file_diff(ws, runs[0], runs[1], file) if file else None
        return render(
            request,
            "compare.html",
            data=data,
            run_ids=runs,
            charts=chart_list,
            parallel=parallel,
            arguments={rid: [str(a) for a in queries.get_record(ws, rid)["arguments"] or []] for rid in runs},
            pin_key=experiments.pop() if len(experiments) == 1 else "compare",
            file_diff=file_diff,
            x=x,
            runs_query=urlencode([("runs", r) for r in runs]),
        )

    @router.get("/ti/{dag_id}/{dag_run_id}/{task_id}")
    def task_instance_page(
        request: Request,
        dag_id: str,
        dag_run_id: str,
        task_id: str,
        ws: WorkspaceDep,
        access: ReaderDep,
        map_index: str | None = None,
    ) -> Response:
        if not access.can_read_dag(dag_id):
            raise StarletteHTTPException(403, "Forbidden: you may not read this DAG")
        found = _task_runs(ws, dag_id, dag_run_id, task_id, _map_index(map_index))
        if found:
            root = request.scope.get("root_path", "")
            return RedirectResponse(f"{root}/runs/{quote(found[-1], safe='')}", status_code=307)
        return render(
            request,
            "no_run.html",
            status_code=404,
            dag_id=dag_id,
            dag_run_id=dag_run_id,
            task_id=task_id,
        )

    return router


def _run_context(ws: Workspace, run_id: str, x: str, files_offset: int = 0) -> dict[str, Any]:
    axis = "time" if x == "time" else "step"
    summaries = queries.metric_summaries(ws, run_id)
    details = queries.run_details(ws, run_id, files_offset, summaries)
    # In the order the script first logged each name.
    series = queries.metric_series(ws, run_id, summaries=summaries)
    chart_list: list[tuple[str, Markup]] = []
    single_values: list[tuple[str, float]] = []
    for name, s in series.items():
        if len(s["points"]) == 1 and not s["values"]:
            single_values.append((name, s["points"][0]["value"]))  # a value, not a one-point chart
        elif s["points"]:
            chart_id = f"chart-{len(chart_list)}"
            chart_list.append(
                (name, charts.line_chart(name, [(run_id, s["points"])], axis=axis, chart_id=chart_id))
            )
    others = {name: s["values"] for name, s in sorted(series.items()) if s["values"]}
    typed = [(t, _typed_drawing(t)) for t in queries.typed_metrics(ws, run_id, summaries)]
    log = queries.read_log(ws, run_id, None, queries.DEFAULT_LOG_CHUNK)
    snapshot: list[dict[str, Any]] = []
    try:
        snapshot = queries.snapshot_files(ws, run_id)
    except queries.NotFound:
        pass
    return {
        "run": details,
        "family": _family(ws, details),
        "charts": chart_list,
        "single_values": single_values,
        "other_values": others,
        "typed_metrics": typed,
        "log": log,
        "snapshot": snapshot,
        "x": axis,
        "files_per_page": queries.FILES_PER_PAGE,
    }


def _typed_drawing(metric: dict[str, Any]) -> Markup:
    """The drawing of one typed metric (Azure ML v1's log_confusion_matrix and kin)."""
    data, name, kind = metric["value"]["data"], metric["name"], metric["kind"]
    if kind == "confusion_matrix":
        return charts.confusion_matrix(data.get("class_labels"), data.get("matrix"))
    if kind == "accuracy_table":
        return charts.roc_chart(name, data.get("probability_tables"), data.get("class_labels"))
    if kind == "predictions":
        return charts.bar_chart(
            name, data.get("bin_edges"), data.get("bin_averages"), data.get("bin_errors"), "predicted value"
        )
    return charts.bar_chart(name, data.get("bin_edges"), data.get("bin_counts"), None, "residual")


# Search-space expressions whose values spread over orders of magnitude: a log axis.
_LOG_EXPRESSIONS = ("loguniform", "qloguniform", "lognormal", "qlognormal")
NO_METRIC_COLOR = "#8c959f"


def _sweep_context(ws: Workspace, access: Access, run_id: str, x: str, offset: int) -> dict[str, Any]:
    """The sweep page: its details, the children's primary-metric curves on one chart and the
    parallel coordinates of their hyperparameters against their best primary metric. Lines are
    coloured by rank (dark blue the best, light green the worst, grey without the metric) and
    drawn worst first, so the best lies on top."""
    axis = "time" if x == "time" else "step"
    details, ranked, curves = queries.sweep_charts(ws, run_id, offset, visible=access.can_read_run)
    ranked_with = [r for r in ranked if r["best_primary_metric"] is not None]
    colors = {
        r["run_id"]: charts.ramp(i / max(1, len(ranked_with) - 1))
        if r["best_primary_metric"] is not None
        # children without the metric come last in ``ranked``
        else NO_METRIC_COLOR
        for i, r in enumerate(ranked)
    }
    classes = {
        r["run_id"]: " ".join(c for c, on in (("best", r["best"]), ("stopped", r["early_terminated"])) if on)
        for r in ranked
    }
    name = details["primary_metric_name"]
    order = [r["run_id"] for r in reversed(ranked)]
    curve_chart = None
    if curves:
        curve_chart = charts.line_chart(
            name,
            [(rid, curves[rid]) for rid in order if rid in curves],
            axis=axis,
            chart_id="sweep-curves",
            legend=False,
            colors=colors,
            classes=classes,
        )
    axes: list[dict[str, Any]] = []
    for param, expression in details["parameter_space"].items():
        values = {r["run_id"]: _hyperparameter(r["hyperparameters"].get(param)) for r in ranked}
        present = [v for v in values.values() if v is not None]
        numeric = bool(present) and all(isinstance(v, float) for v in present)
        kind = expression[0] if isinstance(expression, list) and expression else ""
        if not numeric:
            values = {k: None if v is None else str(v) for k, v in values.items()}
        axes.append(
            {
                "name": str(param).lstrip("-") or str(param),
                "numeric": numeric,
                "values": values,
                "kind": "param",
                "log": kind in _LOG_EXPRESSIONS,
                "caption": str(kind) or "parameter",
            }
        )
    if axes:
        axes.append(
            {
                "name": name,
                "numeric": True,
                "values": {r["run_id"]: r["best_primary_metric"] for r in ranked},
                "kind": "metric",
                "caption": f"best ({'max' if details['primary_metric_goal'] != 'MINIMIZE' else 'min'})",
            }
        )
    parallel = (
        charts.parallel_coordinates(
            axes, order, chart_id="sweep-parallel", legend=False, colors=colors, classes=classes
        )
        if len(ranked) >= 2 and axes
        else None
    )
    return {
        "sweep": details,
        "curves": curve_chart,
        "curves_drawn": len(curves),
        "parallel": parallel,
        "colors": colors,
        "x": axis,
        "page_size": queries.SWEEP_CHILDREN_PAGE,
        "max_curves": queries.MAX_SWEEP_CURVES,
    }


def _family(ws: Workspace, details: dict[str, Any]) -> dict[str, Any]:
    """A run's place among runs: a sweep and its number of children, or a child, its parent, its
    hyperparameters and why the sweep's policy stopped it."""
    props = details["properties"]
    out: dict[str, Any] = {
        "sweep": props.get(sweep.KIND) == "sweep",
        "children": 0,
        "metric": "",
        "parent": props.get(sweep.PARENT),
        "sweep_child": str(props.get(sweep.INDEX, "")).isdigit(),
        "index": props.get(sweep.INDEX),
        "hyperparameters": queries.json_object(props.get(sweep.HYPERPARAMETERS)),
        "early_terminated": props.get(sweep.EARLY_TERMINATED),
    }
    if out["sweep"] or props.get(sweep.KIND) != "child":
        out["children"] = sum(
            1
            for r in ws.store.list_runs(experiment=details["experiment"])
            if r["properties"].get(sweep.PARENT) == details["run_id"]
        )
    if out["sweep"]:
        out["metric"] = str(queries.json_object(props.get(sweep.SWEEP)).get("primary_metric_name") or "")
    return out


def _hyperparameter(value: Any) -> Any:
    """A value as an axis places it: numbers (not bools) as floats, the rest as they are."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    return value


# -- the app -------------------------------------------------------------------------------------


def create_app() -> FastAPI:
    app = FastAPI(
        title="ML Training",
        description="Experiments, runs, metrics, logs, outputs and snapshots of airflow-provider-mltrain. "
        "Authenticate as for Airflow's REST API: a JWT in `Authorization: Bearer` or the UI's cookie.",
        version="1",
        docs_url=None,
        redoc_url=None,
        default_response_class=SafeJSONResponse,
    )
    templates = _templates()

    def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        token, new_nonce = csrf.token_for(request)
        html = templates.get_template(name).render(
            root=request.scope.get("root_path", ""), now=time.time(), csrf_token=token, **context
        )
        # Every {{ }} went through _displayable; this only guards what a template builds itself.
        body = text.replace_surrogates(html).encode("utf-8")
        response = HTMLResponse(body, status_code=status_code, headers=_page_headers())
        if new_nonce:
            csrf.set_cookie(response, request, new_nonce)
        return response

    app.include_router(api_router())
    app.include_router(pages_router(render))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/lineage/" + lineage.SCHEMA_FILE.name, include_in_schema=False)
    def lineage_schema() -> Response:
        """The JSON Schema of the OpenLineage run facet, which each event's ``_schemaURL`` names;
        no login, as for /static: it is the same for every deployment and holds no data."""
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=3600"}
        body = lineage.SCHEMA_FILE.read_bytes()
        return Response(body, media_type="application/schema+json", headers=headers)

    @app.exception_handler(queries.NotFound)
    def not_found(request: Request, exc: queries.NotFound) -> Response:
        return _error(request, render, 404, str(exc))

    @app.exception_handler(queries.BadRequest)
    def bad_request(request: Request, exc: queries.BadRequest) -> Response:
        return _error(request, render, 400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        login_needed = exc.status_code == 401 or (exc.status_code == 403 and "JWT" in str(exc.detail))
        if login_needed and not _is_api(request):
            return RedirectResponse(_login_url(request), status_code=303)
        return _error(request, render, exc.status_code, str(exc.detail), headers=exc.headers)

    return app


def _page_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def _is_api(request: Request) -> bool:
    root, path = request.scope.get("root_path", ""), request.scope["path"]
    path = path[len(root) :] if root and path.startswith(root) else path
    return path == API_PREFIX or path.startswith(f"{API_PREFIX}/")


def _login_url(request: Request) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=str(request.url))


def _error(
    request: Request,
    render: Callable[..., HTMLResponse],
    code: int,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    if _is_api(request):
        return SafeJSONResponse({"detail": message}, status_code=code, headers=dict(headers or {}))
    return render(request, "error.html", status_code=code, code=code, message=message)
