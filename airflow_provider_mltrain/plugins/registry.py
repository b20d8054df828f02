"""What the models pages and their JSON API show: registered models, their versions, the runs that
made them and those runs' final metrics, limited to what the user may read.

A version made by a run is shown to who may read that run's DAG (as the run itself); a version
registered from local files (no run) to who may read runs no DAG submitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_provider_mltrain.core.workspace import Workspace
from airflow_provider_mltrain.plugins.queries import NotFound

# Final metrics shown per version (the first the run logged): a run may log thousands of names.
MAX_METRICS = 8
# Versions listed per model page: the newest.
MAX_VERSIONS = 500

Visible = Callable[[dict[str, Any] | None], bool]


def _runs(ws: Workspace, versions: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    return {v["run_id"]: ws.store.get_run(v["run_id"]) for v in versions if v["run_id"]}


def _shown(
    versions: list[dict[str, Any]], runs: dict[str, dict[str, Any] | None], visible: Visible
) -> list[dict[str, Any]]:
    return [v for v in versions if visible(runs.get(v["run_id"]) if v["run_id"] else None)]


def list_models(ws: Workspace, visible: Visible) -> list[dict[str, Any]]:
    """Each model with a version the user may read: its versions, latest, aliases."""
    versions = ws.store.list_model_versions()
    runs = _runs(ws, versions)
    aliases: dict[str, dict[str, int]] = {}
    for a in ws.store.model_aliases():
        aliases.setdefault(a["name"], {})[a["alias"]] = a["version"]
    out: dict[str, dict[str, Any]] = {}
    for v in _shown(versions, runs, visible):
        entry = out.setdefault(
            v["name"],
            {
                "name": v["name"],
                "versions": 0,
                "latest_version": v["version"],
                "latest_run_id": v["run_id"],
                "latest_created_at": v["created_at"],
                "aliases": {},
            },
        )
        entry["versions"] += 1
        if v["version"] in aliases.get(v["name"], {}).values():
            entry["aliases"].update({k: n for k, n in aliases[v["name"]].items() if n == v["version"]})
    return sorted(out.values(), key=lambda e: e["name"])


def model_versions(ws: Workspace, name: str, visible: Visible) -> dict[str, Any]:
    """One model's versions (newest first) with their source runs and those runs' final metrics."""
    versions = ws.store.list_model_versions(name=name, limit=MAX_VERSIONS)
    runs = _runs(ws, versions)
    shown = _shown(versions, runs, visible)
    if not shown:
        raise NotFound(f"No model {name!r} in the registry.")
    by_version: dict[int, list[str]] = {}
    for a in ws.store.model_aliases(name):
        by_version.setdefault(a["version"], []).append(a["alias"])
    metric_names: list[str] = []
    rows = []
    for v in shown:
        run = runs.get(v["run_id"]) if v["run_id"] else None
        metrics = {}
        if run is not None:
            for s in ws.store.metric_summaries(run["id"], limit=MAX_METRICS):
                if s["last"] is not None:
                    metrics[s["name"]] = s["last"]
                    if s["name"] not in metric_names:
                        metric_names.append(s["name"])
        rows.append(
            {
                "version": v["version"],
                "id": f"{name}:{v['version']}",
                "aliases": sorted(by_version.get(v["version"], [])),
                "run_id": v["run_id"],
                "run_status": run["status"] if run else None,
                "experiment": run["experiment"] if run else None,
                "model_path": v["model_path"],
                "description": v["description"],
                "tags": v["tags"],
                "created_at": v["created_at"],
                "files": len(v["files"]),
                "size": sum(int(f["size"]) for f in v["files"]),
                "metrics": metrics,
            }
        )
    return {
        "name": name,
        "aliases": {a: n for n, names in by_version.items() for a in names},
        "metric_names": metric_names[: MAX_METRICS * 2],
        "versions": rows,
    }
