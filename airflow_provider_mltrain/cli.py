"""The ``mltrain`` command: read the run history from a terminal.

This first version lists and shows runs; submitting, logs and downloads from the terminal come
with the monitoring work.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from airflow_provider_mltrain.core.errors import MLTrainError
from airflow_provider_mltrain.core.run import Run
from airflow_provider_mltrain.core.workspace import Workspace


def _fmt_duration(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def _scalar_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in metrics.items():
        if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            out[name] = value[-1]
        elif isinstance(value, (int, float, str)):
            out[name] = value
    return out


def _show(run: Run, as_json: bool) -> None:
    run.refresh()
    details = run.get_details()
    metrics = run.get_metrics()
    files = run.get_file_names()
    if as_json:
        json.dump({**details, "metrics": metrics, "files": files}, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    lines = [
        f"Run        {details['run_id']}",
        f"Experiment {details['experiment']}",
        f"Status     {details['status']}"
        + (f" (exit code {details['exit_code']})" if details["exit_code"] else ""),
        f"Target     {details['target']}",
        f"Script     {details['script']} {' '.join(details['arguments'])}".rstrip(),
        f"Snapshot   {details['snapshot_id'][:16]}",
        f"Started    {details['start_time'] or '-'}",
        f"Duration   {_fmt_duration(details['duration_seconds'])}",
    ]
    if details["error"]:
        lines.append(f"Error      {details['error']}")
    git = {k.rsplit(".", 1)[1]: v for k, v in details["properties"].items() if k.startswith("mltrain.git.")}
    if git:
        lines.append("Git        " + ", ".join(f"{k}={v}" for k, v in sorted(git.items())))
    if details["tags"]:
        lines.append("Tags       " + ", ".join(f"{k}={v}" for k, v in sorted(details["tags"].items())))
    lines.append("Metrics")
    for name, value in metrics.items():
        if isinstance(value, list) and len(value) > 1 and all(isinstance(v, (int, float)) for v in value):
            summary = f"last of {len(value)}; min {min(value):.6g}, max {max(value):.6g}"
            lines.append(f"  {name:<24} {value[-1]:.6g} ({summary})")
        else:
            lines.append(f"  {name:<24} {value}")
    base = details["output_dir"]
    lines.append("Files" + (f" (in {base})" if base else ""))
    lines += [f"  {name}" for name in files]
    sys.stdout.write("\n".join(lines) + "\n")


def _list(ws: Workspace, experiment: str | None, limit: int, as_json: bool) -> None:
    records = ws.store.list_runs(experiment=experiment, limit=limit)
    if as_json:
        json.dump(records, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    sys.stdout.write(f"{'RUN':<60} {'EXPERIMENT':<16} {'STATUS':<10} TARGET\n")
    for r in records:
        sys.stdout.write(f"{r['id']:<60} {r['experiment']:<16} {r['status']:<10} {r['target']}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mltrain", description="Run history of airflow-provider-mltrain.")
    parser.add_argument(
        "--workspace", help="workspace root (default: MLTRAIN_WORKSPACE or $AIRFLOW_HOME/mltrain)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    runs = sub.add_parser("runs", help="list and show runs").add_subparsers(dest="action", required=True)
    p_list = runs.add_parser("list", help="runs, newest first")
    p_list.add_argument("--experiment")
    p_list.add_argument("--limit", type=int, default=50)
    p_list.add_argument("--json", action="store_true")
    p_show = runs.add_parser("show", help="one run: status, metrics, files")
    p_show.add_argument("run_id", nargs="?")
    p_show.add_argument("--latest", action="store_true", help="the newest run (of --experiment if given)")
    p_show.add_argument("--experiment")
    p_show.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        ws = Workspace(args.workspace) if args.workspace else Workspace()
        if args.action == "list":
            _list(ws, args.experiment, args.limit, args.json)
        elif args.action == "show":
            if args.run_id:
                run = ws.get_run(args.run_id)
            elif args.latest:
                latest = ws.store.list_runs(experiment=args.experiment, limit=1)
                if not latest:
                    parser.error(
                        f"no runs in {ws.root}"
                        + (f" for experiment {args.experiment}" if args.experiment else "")
                    )
                run = Run(ws, latest[0]["id"])
            else:
                parser.error("give a RUN_ID or --latest")
            _show(run, args.json)
    except MLTrainError as exc:
        sys.stderr.write(f"mltrain: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
