"""The ``mltrain`` command: runs and environments from a terminal.

``runs list|show`` read the run history; ``env list|show|build|prune`` manage environments.
Submitting, logs and downloads from the terminal come with the monitoring work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import yaml

from airflow_provider_mltrain.core.compute import get_target
from airflow_provider_mltrain.core.environment import (
    CURATED_PREFIX,
    Environment,
    resolve_environment,
    warn_unpinned,
)
from airflow_provider_mltrain.core.errors import MLTrainError
from airflow_provider_mltrain.core.run import Run
from airflow_provider_mltrain.core.workspace import Workspace
from airflow_provider_mltrain.runner import RUNNER_DIR
from airflow_provider_mltrain.targets.local import prune_local_builds


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
    runs = [Run(ws, r["id"]) for r in ws.store.list_runs(experiment=experiment, limit=limit)]
    for run in runs:
        try:
            run.refresh()  # an active run's status comes from its target, not from the last reader
        except MLTrainError as exc:
            sys.stderr.write(f"mltrain: {run.id}: status not refreshed ({exc})\n")
    details = [run.get_details() for run in runs]
    if as_json:
        json.dump(details, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    width = max([3, *(len(d["run_id"]) for d in details)])
    exp_width = max([10, *(len(d["experiment"]) for d in details)])
    sys.stdout.write(
        f"{'RUN':<{width}}  {'EXPERIMENT':<{exp_width}}  {'STATUS':<10}  {'DURATION':>9}  TARGET\n"
    )
    for d in details:
        sys.stdout.write(
            f"{d['run_id']:<{width}}  {d['experiment']:<{exp_width}}  {d['status']:<10}  "
            f"{_fmt_duration(d['duration_seconds']):>9}  {d['target']}\n"
        )


def _env_list(ws: Workspace, as_json: bool) -> None:
    envs = Environment.list(ws)
    if as_json:
        out = {
            name: {**e.to_dict(), "hash": e.content_hash(), "managed": e.managed} for name, e in envs.items()
        }
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    sys.stdout.write(f"{'NAME':<28} {'VERSION':<8} {'KIND':<12} HASH\n")
    for name, env in envs.items():
        kind = (
            "curated" if name.startswith(CURATED_PREFIX) else ("managed" if env.managed else "user-managed")
        )
        sys.stdout.write(f"{name:<28} {env.version or '-':<8} {kind:<12} {env.content_hash()[:12]}\n")


def _env_show(ws: Workspace, name: str, version: str | None, as_json: bool) -> None:
    env = Environment.get(ws, name, version) if version else resolve_environment(name, ws)
    data = {**env.to_dict(), "hash": env.content_hash(), "managed": env.managed}
    if env.managed:
        data["requirement_lines"] = env.requirement_lines()
    if as_json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


def _env_build(ws: Workspace, spec: str, target_name: str, rebuild: bool) -> None:
    env = resolve_environment(spec, ws)
    target = get_target(target_name, ws.root)
    target.check_environment(env)
    if env.managed:
        warn_unpinned(env, lambda line: sys.stderr.write(line + "\n"))

    def echo(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        prepared = target.prepare_environment(env, echo, rebuild=rebuild)
    except MLTrainError as exc:
        ws.store.record_build(env.content_hash(), target.name, "failed", error=str(exc))
        raise
    if prepared.built:
        ws.store.record_build(env.content_hash(), target.name, "built", seconds=prepared.seconds)
    state = "built" if prepared.built else "already built (cache hit)"
    sys.stdout.write(f"{env.name} {env.content_hash()[:12]} {state}: {prepared.interpreter}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mltrain", description="Run history of airflow-provider-mltrain.")
    parser.add_argument(
        "--workspace",
        help="workspace root (default: MLTRAIN_WORKSPACE, [mltrain] workspace in airflow.cfg, "
        "or $AIRFLOW_HOME/mltrain); give it before the command",
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
    envs = sub.add_parser("env", help="environments").add_subparsers(dest="action", required=True)
    e_list = envs.add_parser("list", help="registered and curated environments")
    e_list.add_argument("--json", action="store_true")
    e_show = envs.add_parser("show", help="one environment's spec and hash")
    e_show.add_argument("name", help="a registered or curated name, or a YAML file")
    e_show.add_argument("--version")
    e_show.add_argument("--json", action="store_true")
    e_build = envs.add_parser("build", help="build an environment now (or find it built)")
    e_build.add_argument("name", help="a registered or curated name, or a YAML file")
    e_build.add_argument("--target", default="local")
    e_build.add_argument("--rebuild", action="store_true", help="build again even when cached")
    e_prune = envs.add_parser("prune", help="delete local builds no run used recently")
    e_prune.add_argument("--days", type=float, default=30, help="keep builds used in the last DAYS (30)")
    e_prune.add_argument("--dry-run", action="store_true")
    sub.add_parser(
        "pythonpath",
        help="print the folder holding the in-script 'mltrain' module, for running a script by hand: "
        "PYTHONPATH=$(mltrain pythonpath) python train.py",
    )
    args = parser.parse_args(argv)
    if args.command == "pythonpath":
        sys.stdout.write(os.path.join(RUNNER_DIR, "pylib") + "\n")
        return 0
    try:
        ws = Workspace(args.workspace) if args.workspace else Workspace()
        if args.command == "env":
            if args.action == "list":
                _env_list(ws, args.json)
            elif args.action == "show":
                _env_show(ws, args.name, args.version, args.json)
            elif args.action == "build":
                _env_build(ws, args.name, args.target, args.rebuild)
            elif args.action == "prune":
                removed = prune_local_builds(ws, args.days, dry_run=args.dry_run)
                verb = "would remove" if args.dry_run else "removed"
                for path in removed:
                    sys.stdout.write(f"{verb} {path}\n")
                sys.stdout.write(f"{len(removed)} build(s) {'to remove' if args.dry_run else 'removed'}\n")
        elif args.action == "list":
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
    except BrokenPipeError:
        # The reader (head, less) went away; not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
