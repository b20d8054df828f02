"""The ``/mltrain`` FastAPI app: run history pages and the JSON API they are built on.

Pages are rendered on the server with Jinja2 (autoescape on) and charts are inline SVG, so the
app needs nothing from a CDN; the one script it ships only reloads, tails the log and swaps
fragments this app rendered. Every route depends on :func:`auth.require_reader`. URL contract
relied on by the operator's extra link: ``/mltrain/runs/{run_id}``.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.core.workspace import Workspace
from airflow_provider_mltrain.plugins import api_models as m
from airflow_provider_mltrain.plugins import charts, queries
from airflow_provider_mltrain.plugins.auth import Access, ReaderDep

HERE = Path(__file__).parent
API_PREFIX = "/api"
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
    )
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.filters["number"] = _number
    env.filters["q"] = lambda v: quote(str(v), safe="")
    env.filters["qpath"] = lambda v: quote(str(v), safe="/")
    env.filters["size"] = _size
    return env


def _when(ts: float | str | None) -> str:
    if ts is None:
        return ""
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts).timestamp()
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


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
        )

    @router.get(
        "/runs/{run_id}",
        summary="A run: status, timeline, arguments, git, environment, files",
        response_model=m.RunDetails,
    )
    def run(run_id: str, ws: WorkspaceDep, access: ReaderDep) -> dict[str, Any]:
        _checked_record(ws, access, run_id)
        return queries.run_details(ws, run_id)

    @router.get(
        "/runs/{run_id}/metrics",
        summary="Every logged metric as series over steps and time",
        response_model=dict[str, m.MetricSeries],
    )
    def metrics(run_id: str, ws: WorkspaceDep, access: ReaderDep) -> dict[str, Any]:
        _checked_record(ws, access, run_id)
        return queries.metric_series(ws, run_id)

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

    @router.get("/runs/{run_id}/files", summary="Names of the run's outputs and logs")
    def files(run_id: str, ws: WorkspaceDep, access: ReaderDep) -> list[str]:
        _checked_record(ws, access, run_id)
        return queries.file_names(ws, run_id)

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
        return queries.compare(ws, runs)

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
    name = path.rsplit("/", 1)[-1]
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
        )
        query = {"status": status, "tag": tag, "search": search, "metric": data["metric"] or ""}
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
        request: Request, run_id: str, ws: WorkspaceDep, access: ReaderDep, x: str = "step"
    ) -> HTMLResponse:
        _checked_record(ws, access, run_id)
        return render(request, "run.html", **_run_context(ws, run_id, x))

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
        data = queries.compare(ws, runs)
        runs = data["run_ids"]
        chart_list = [
            charts.line_chart(
                row["name"],
                [(rid, data["series"][rid].get(row["name"], {}).get("points") or []) for rid in runs],
                axis=x,
                chart_id=f"chart-{i}",
            )
            for i, row in enumerate(data["metrics"])
        ]
        file_diff = queries.file_diff(ws, runs[0], runs[1], file) if file else None
        return render(
            request,
            "compare.html",
            data=data,
            run_ids=runs,
            charts=chart_list,
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


def _run_context(ws: Workspace, run_id: str, x: str) -> dict[str, Any]:
    axis = "time" if x == "time" else "step"
    details = queries.run_details(ws, run_id)
    series = queries.metric_series(ws, run_id)
    chart_list = [
        charts.line_chart(name, [(run_id, s["points"])], axis=axis, chart_id=f"chart-{i}")
        for i, (name, s) in enumerate(sorted(series.items()))
        if s["points"]
    ]
    others = {name: s["values"] for name, s in sorted(series.items()) if s["values"]}
    log = queries.read_log(ws, run_id, None, queries.DEFAULT_LOG_CHUNK)
    snapshot: list[dict[str, Any]] = []
    try:
        snapshot = queries.snapshot_files(ws, run_id)
    except queries.NotFound:
        pass
    return {
        "run": details,
        "charts": chart_list,
        "other_values": others,
        "log": log,
        "snapshot": snapshot,
        "x": axis,
    }


# -- the app -------------------------------------------------------------------------------------


def create_app() -> FastAPI:
    app = FastAPI(
        title="ML Training run history",
        description="Experiments, runs, metrics, logs, outputs and snapshots of airflow-provider-mltrain. "
        "Authenticate as for Airflow's REST API: a JWT in `Authorization: Bearer` or the UI's cookie.",
        version="1",
        docs_url=None,
        redoc_url=None,
    )
    templates = _templates()

    def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = templates.get_template(name).render(
            root=request.scope.get("root_path", ""), now=time.time(), **context
        )
        return HTMLResponse(html, status_code=status_code, headers=_page_headers())

    app.include_router(api_router())
    app.include_router(pages_router(render))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

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
        return JSONResponse({"detail": message}, status_code=code, headers=dict(headers or {}))
    return render(request, "error.html", status_code=code, code=code, message=message)
