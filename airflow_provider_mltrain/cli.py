"""The ``mltrain`` command: submit, follow, inspect and rerun runs, and manage environments.

Every listing takes ``--json`` (output that parses back); everything else about a run comes from
the core, so the command and Python see the same run history. Exit codes: 0 success, 1 an error
from the core (its message, no traceback), 2 a usage error or a run or experiment that does not
exist.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import shlex
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TextIO

from airflow_provider_mltrain.core.errors import MLTrainError, RunNotFound
from airflow_provider_mltrain.core.metrics import finite_number
from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.core.text import for_terminal, strip_terminal_controls
from airflow_provider_mltrain.runner import RUNNER_DIR

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from airflow_provider_mltrain.core.model import Model
    from airflow_provider_mltrain.core.run import Run
    from airflow_provider_mltrain.core.snapshot import Snapshot
    from airflow_provider_mltrain.core.sweep import SweepRun
    from airflow_provider_mltrain.core.workspace import Workspace

# Each command imports what it uses (the run store, snapshots, targets, YAML) inside its function:
# `mltrain --help` and the commands that need none of it start in a few tens of milliseconds.

# Options of `submit` that take a value: the script's own arguments start after SCRIPT, so the
# command line is split there before argparse sees it (argparse would take `--lr` for its own).
TEXT_DIFF_MAX_BYTES = 1 << 20
# A table column holding text a script chose (a metric name, say) is cut to this many characters.
MAX_CELL = 60
LOG_CHUNK = 1 << 20


class UsageError(Exception):
    """Bad input that names something that does not exist or is not allowed: exit code 2."""


class _Out:
    """Where the command's answer goes: stdout as it was when ``main`` started."""

    stream: TextIO = sys.stdout


OUT = _Out()


def _fmt_duration(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def _dump(data: Any) -> None:
    json.dump(data, OUT.stream, indent=2, default=str)
    OUT.stream.write("\n")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _get_run(ws: Workspace, run_id: str) -> Run:
    try:
        return ws.get_run(run_id)
    except RunNotFound as exc:
        raise UsageError(f"{exc} List the runs with: mltrain runs list") from None


def _check_experiment(ws: Workspace, name: str | None) -> None:
    if name is None:
        return
    known = ws.list_experiments()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UsageError(f"No experiment {name!r} in the run store at {ws.store.url}.{hint}")


# -- progress ----------------------------------------------------------------------------------


class Feedback:
    """Progress on a terminal (rich bars for snapshot bytes and build steps, a spinner), plain
    lines elsewhere.

    Build progress is read from the build's log lines (uv's and Docker's own), so it needs nothing
    from the targets beyond the log callback they already take.
    """

    _STEP = re.compile(r"(?:^Step |^#\d+ \[(?:[\w.-]+ )?)(\d+)/(\d+)")
    _UV = (
        ("mltrain: building environment", 5, "creating the virtualenv"),
        ("$ ", None, None),
        ("Resolved ", 40, "downloading packages"),
        ("Prepared ", 70, "installing packages"),
        ("Installed ", 95, "finishing"),
        ("mltrain: environment ", 100, "ready"),
    )

    def __init__(self, enabled: bool, plain: Callable[[str], None]):
        self.plain = plain
        self.progress: Progress | None = None
        self._build: TaskID | None = None
        self._snapshot: TaskID | None = None
        self._upload: TaskID | None = None
        self._spinner: TaskID | None = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=Console(file=OUT.stream),
                transient=True,
            )

    def __enter__(self) -> Feedback:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def spinner(self, text: str) -> None:
        if self.progress is not None:
            self._spinner = self.progress.add_task(text, total=None)

    def snapshot(self, done: int, total: int) -> None:
        """``SnapshotStore.take``'s progress callback: bytes read and stored so far."""
        if self.progress is None:
            return
        if self._snapshot is None:
            self._snapshot = self.progress.add_task(
                f"snapshot: storing {total / 1e6:.1f} MB", total=total or 1
            )
        self.progress.update(self._snapshot, completed=done or (1 if not total else 0))

    def upload(self, done: int, total: int) -> None:
        """A target's ``upload_progress``: snapshot bytes sent to a remote target so far."""
        if self.progress is None:
            return
        if self._upload is None:
            self._upload = self.progress.add_task(f"upload: {total / 1e6:.1f} MB", total=total or 1)
        self.progress.update(self._upload, completed=done)

    def build_line(self, line: str) -> None:
        """An environment build's log line: printed, and moving the build bar."""
        if self.progress is None:
            self.plain(line)
            return
        self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        if self._build is None:
            self._build = self.progress.add_task("environment", total=100)
        step = self._STEP.search(line)
        if step:
            done, total = int(step.group(1)), int(step.group(2))
            self.progress.update(self._build, completed=100 * done / max(total, 1))
            return
        for prefix, percent, phase in self._UV:
            if line.startswith(prefix) and percent is not None:
                self.progress.update(self._build, completed=percent, description=f"environment: {phase}")
                return


def _feedback(plain: Callable[[str], None]) -> Feedback:
    return Feedback(OUT.stream.isatty(), plain)


# -- runs --------------------------------------------------------------------------------------


def _show(run: Run, as_json: bool) -> None:
    problem = None
    try:
        run.refresh()
    except Exception as exc:  # show what the store holds: the run's problem is part of the answer
        problem = f"status not refreshed: {type(exc).__name__}: {exc}"
        _err(f"mltrain: {run.id}: {problem}")
    details = run.get_details()
    if problem:
        details["warnings"] = [*details["warnings"], problem]
    entries = run.list_entries()
    files = entries.files
    if as_json:
        _dump({**details, "metrics": run.get_metrics(), "files": files, "links": entries.links})
        return
    metrics = _metrics_to_show(run)
    t = for_terminal
    lines = [
        f"Run        {details['run_id']}",
        f"Experiment {details['experiment']}",
        f"Status     {details['status']}"
        + (f" (exit code {details['exit_code']})" if details["exit_code"] else ""),
        f"Target     {t(details['target'])}",
        f"Script     {t(shlex.join([details['script'], *details['arguments']]))}",
        f"Snapshot   {details['snapshot_id'][:16]}",
        f"Started    {details['start_time'] or '-'}",
        f"Duration   {_fmt_duration(details['duration_seconds'])}",
    ]
    if details["error"]:
        lines.append(f"Error      {t(details['error'])}")
    for i, warning in enumerate(details["warnings"]):
        lines.append(f"{'Warning' if i == 0 else '':<10} {t(warning)}")
    rerun_of = details["properties"].get("mltrain.rerun_of")
    if rerun_of:
        lines.append(f"Rerun of   {t(str(rerun_of))}")
    git = {k.rsplit(".", 1)[1]: v for k, v in details["properties"].items() if k.startswith("mltrain.git.")}
    if git:
        lines.append("Git        " + ", ".join(f"{t(k)}={t(str(v))}" for k, v in sorted(git.items())))
    if details["tags"]:
        lines.append(
            "Tags       " + ", ".join(f"{t(k)}={t(str(v))}" for k, v in sorted(details["tags"].items()))
        )
    lines.append("Metrics")
    for name, value in metrics.items():
        if isinstance(value, LongSeries):
            summary = f"last of {value.count}; min {value.min:.6g}, max {value.max:.6g}"
            lines.append(f"  {t(name, MAX_CELL):<24} {value.last:.6g} ({summary})")
        elif _numeric_series(value) and len(value) > 1:
            summary = f"last of {len(value)}; min {min(value):.6g}, max {max(value):.6g}"
            lines.append(f"  {t(name, MAX_CELL):<24} {value[-1]:.6g} ({summary})")
        else:
            shown = value if isinstance(value, (int, float)) else json.dumps(value, default=str)
            lines.append(f"  {t(name, MAX_CELL):<24} {t(str(shown), 200)}")
    base = details["output_dir"]
    lines.append("Files" + (f" (in {t(str(base))})" if base else ""))
    lines += [f"  {t(name)}" for name in files]
    if entries.links:
        lines.append("Links (not followed)")
        lines += [f"  {t(name)} -> {t(target)}" for name, target in entries.links.items()]
    OUT.stream.write("\n".join(lines) + "\n")


def _numeric_series(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_number(v) for v in value)


def _is_number(value: Any) -> bool:
    """A number ``format(value, "g")`` can print: NaN is one, an int beyond a float's range is not."""
    return isinstance(value, float) or finite_number(value) is not None


def _list(ws: Workspace, experiment: str | None, limit: int, as_json: bool) -> None:
    _check_experiment(ws, experiment)
    details = [_list_entry(ws, record) for record in ws.store.list_runs(experiment=experiment, limit=limit)]
    if as_json:
        _dump(details)
        return
    rows = [
        [for_terminal(str(d[k]), MAX_CELL) for k in ("run_id", "experiment", "status")]
        + [_fmt_duration(d["duration_seconds"]), for_terminal(str(d["target"]), MAX_CELL)]
        for d in details
    ]
    width = max([3, *(len(r[0]) for r in rows)])
    exp_width = max([10, *(len(r[1]) for r in rows)])
    OUT.stream.write(
        f"{'RUN':<{width}}  {'EXPERIMENT':<{exp_width}}  {'STATUS':<10}  {'DURATION':>9}  TARGET\n"
    )
    for d, (run_id, experiment, status, duration, target) in zip(details, rows):
        count = len(d["warnings"])
        note = f"  ({count} warning{'s' if count != 1 else ''}: mltrain runs show {run_id})" if count else ""
        OUT.stream.write(
            f"{run_id:<{width}}  {experiment:<{exp_width}}  {status:<10}  {duration:>9}  {target}{note}\n"
        )


def _list_entry(ws: Workspace, record: dict[str, Any]) -> dict[str, Any]:
    """One run of ``runs list``; a run that cannot be read is listed with its problem, not fatal."""
    from airflow_provider_mltrain.core.run import Run

    run = Run(ws, record["id"])
    problem = None
    try:
        run.refresh()  # an active run's status comes from its target, not from the last reader
    except Exception as exc:  # one run's target or data must not take the whole listing down
        problem = f"status not refreshed: {type(exc).__name__}: {exc}"
        _err(f"mltrain: {run.id}: {problem}")
    try:
        details = run.get_details()
    except Exception as exc:
        problem = f"details not readable: {type(exc).__name__}: {exc}"
        _err(f"mltrain: {run.id}: {problem}")
        details = {
            "run_id": record["id"],
            "experiment": record["experiment"],
            "status": record["status"],
            "target": record["target"],
            "duration_seconds": None,
            "warnings": [],
        }
    if problem:
        details["warnings"] = [*details["warnings"], problem]
    return details


def _latest(ws: Workspace, experiment: str | None) -> Run:
    from airflow_provider_mltrain.core.run import Run

    _check_experiment(ws, experiment)
    latest = ws.store.list_runs(experiment=experiment, limit=1)
    if not latest:
        raise UsageError(f"No runs in the run store at {ws.store.url}.")
    return Run(ws, latest[0]["id"])


@dataclass(frozen=True)
class LongSeries:
    """A long series of plain numbers, shown by its summary from the run store."""

    last: float
    count: int
    min: float
    max: float


# A series of more plain numbers than this is shown from its summary, not read value by value.
LONG_SERIES = 1000


def _metrics_to_show(run: Run) -> dict[str, Any]:
    """``run.get_metrics()`` for the text views, except that a long series of plain numbers (one
    name, one kind) comes as its :class:`LongSeries` from the summaries the run store keeps: a run
    of a million values is shown from a few rows, with the same numbers."""
    run.refresh()  # reads the target only while the run is not collected
    summaries = run.workspace.store.metric_summaries(run.id)
    kinds = Counter(s["name"] for s in summaries)
    long = {
        s["name"]: LongSeries(s["last"], s["rows"], s["min"], s["max"])
        for s in summaries
        if kinds[s["name"]] == 1 and s["kind"] == "scalar" and s["count"] == s["rows"] > LONG_SERIES
    }
    if not long:
        return run.get_metrics()
    out: dict[str, Any] = {}
    for s in summaries:
        name = s["name"]
        if name not in out:
            out[name] = long[name] if name in long else run.get_metrics(name).get(name)
    return out


def _metrics(run: Run, as_json: bool) -> None:
    if as_json:
        _dump(run.get_metrics())
        return
    metrics = _metrics_to_show(run)
    names = {name: for_terminal(name, MAX_CELL) for name in metrics}
    width = max([6, *(len(n) for n in names.values())])
    OUT.stream.write(f"{'METRIC':<{width}}  {'LAST':>12}  {'COUNT':>5}  {'MIN':>12}  {'MAX':>12}\n")
    for key, value in metrics.items():
        name = names[key]
        if isinstance(value, LongSeries):
            OUT.stream.write(
                f"{name:<{width}}  {value.last:>12.6g}  {value.count:>5}  {value.min:>12.6g}  "
                f"{value.max:>12.6g}\n"
            )
        elif _numeric_series(value):
            OUT.stream.write(
                f"{name:<{width}}  {value[-1]:>12.6g}  {len(value):>5}  {min(value):>12.6g}  "
                f"{max(value):>12.6g}\n"
            )
        elif _is_number(value):
            OUT.stream.write(f"{name:<{width}}  {value:>12.6g}  {1:>5}\n")
        else:
            shown = for_terminal(json.dumps(value, default=str), 200)
            OUT.stream.write(f"{name:<{width}}  {shown}\n")


def _logs(run: Run, follow: bool, raw: bool = False) -> int:
    """The log as the script wrote it with ``raw``; else without the terminal control sequences a
    script could use to rewrite the screen or hide lines (colours stay)."""
    if follow:
        details = _wait(run, raw)
        if details is None:
            return 130
        _err(f"mltrain: run {run.id} ended {details['status']}")
        return 0
    run.refresh()
    OUT.stream.flush()
    offset, partial = 0, b""
    while True:
        data = run.read_log(offset, LOG_CHUNK)
        if not data:
            break
        offset += len(data)
        if raw:
            OUT.stream.buffer.write(data)
            continue
        data = partial + data
        cut = data.rfind(b"\n") + 1 if len(data) < 4 * LOG_CHUNK else len(data)
        partial = data[cut:]
        OUT.stream.buffer.write(_clean_log(data[:cut]))
    if partial:
        OUT.stream.buffer.write(_clean_log(partial))
    OUT.stream.flush()
    return 0


def _clean_log(data: bytes) -> bytes:
    return strip_terminal_controls(data.decode("utf-8", "replace")).encode("utf-8")


def _download(run: Run, path: str | None, output: str | None) -> None:
    if path is not None:
        pure = PurePosixPath(path.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise UsageError(
                f"Refusing path {path!r}: name a file or folder inside the run (outputs/..., logs/...), "
                "relative and without '..'."
            )
        path = pure.as_posix()
    entries = run.list_entries()
    names = entries.files
    if path is not None and path in names:
        dest = run.download_file(path, output)
        OUT.stream.write(f"{dest}\n")
        return
    if path is not None and path in entries.links:
        raise UsageError(
            f"{path} of run {run.id} is a symbolic link to {entries.links[path]!r}; links are listed, "
            "never followed or downloaded."
        )
    inside = [n for n in entries.links if path is None or n.startswith(path.rstrip("/") + "/")]
    for name in inside:
        _err(f"mltrain: skipped {name}: a symbolic link to {entries.links[name]!r} (never followed)")
    chosen = [n for n in names if path is None or n.startswith(path.rstrip("/") + "/")]
    if not chosen:
        if path is None:
            raise UsageError(f"Run {run.id} has no files (yet).")
        raise UsageError(f"Run {run.id} has no file or folder {path!r}; see: mltrain runs show {run.id}")
    root = Path(output) if output else Path.cwd() / run.id
    base = root.resolve()
    for name in chosen:
        dest = root.joinpath(*name.split("/"))
        if not dest.resolve().is_relative_to(base):
            raise UsageError(f"Refusing run file name {name!r}: it would leave {root}.")
        run.download_file(name, dest)
        OUT.stream.write(f"{dest}\n")


def _named(values: Sequence[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or ():
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"{flag} {item!r} is not NAME=VALUE.")
        if name in out:
            raise UsageError(f"{flag} {name} is given twice.")
        out[name] = value
    return out


def _data_options(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """--input/--mount/--output (and --data-conn) as ScriptRunConfig's inputs and outputs."""
    from airflow_provider_mltrain.core.inputs import Input
    from airflow_provider_mltrain.core.outputs import Output

    inputs: dict[str, Any] = {}
    for flag, mode, given in (("--input", "download", args.input), ("--mount", "mount", args.mount)):
        for name, value in _named(given, flag).items():
            if name in inputs:
                raise UsageError(f"input {name} is given by both --input and --mount.")
            remote = "://" in value and not value.startswith("file://")
            inputs[name] = Input(value, mode, conn_id=args.data_conn if remote else None)
    outputs: dict[str, Any] = {
        name: Output(url, conn_id=args.data_conn) for name, url in _named(args.output, "--output").items()
    }
    return inputs, outputs


def _parse_tags(values: Sequence[str] | None) -> dict[str, str]:
    tags = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag {item!r} is not KEY=VALUE.")
        tags[key] = value
    return tags


def _wait(run: Run, raw: bool = False) -> dict[str, Any] | None:
    """Stream the run's log until it ends; None when interrupted (the run goes on)."""

    def show(line: str) -> None:
        OUT.stream.write((line if raw else strip_terminal_controls(line)) + "\n")
        OUT.stream.flush()

    try:
        return run.wait_for_completion(
            show_output=True, raise_on_error=False, poll_interval=2.0, log_callback=show
        )
    except KeyboardInterrupt:
        follow, cancel = run.cli_commands()
        _err(f"mltrain: stopped following; run {run.id} goes on")
        _err(f"  follow it again: {follow}\n  cancel it:       {cancel}")
        return None


def _follow_new_run(run: Run, wait: bool) -> int:
    """After a submission: the run id alone on stdout, or its log until it ends."""
    submitted = run.get_details()
    _err(
        f"mltrain: submitted run {run.id} to {submitted['target']} (experiment {submitted['experiment']}, "
        f"snapshot {submitted['snapshot_id'][:12]})"
    )
    if not wait:
        OUT.stream.write(run.id + "\n")
        return 0
    details = _wait(run)
    if details is None:
        return 130
    if details["status"] == RunStatus.COMPLETED.value:
        _err(f"mltrain: run {run.id} Completed in {_fmt_duration(details['duration_seconds'])}")
        return 0
    code = details["exit_code"]
    _err(
        f"mltrain: run {run.id} {details['status']}"
        + (f" with exit code {code}" if code not in (None, 0) else "")
        + (f": {details['error']}" if details["error"] else "")
    )
    return 1


def _submit(ws: Workspace, args: argparse.Namespace) -> int:
    from airflow_provider_mltrain.core.compute import get_target
    from airflow_provider_mltrain.core.experiment import Experiment
    from airflow_provider_mltrain.core.run_config import ScriptRunConfig

    tags = _parse_tags(args.tag)
    inputs, outputs = _data_options(args)
    experiment = Experiment(ws, args.experiment)
    with _feedback(_err) as feedback:
        target = get_target(args.target, ws.root)
        if feedback.progress is not None:
            target.upload_progress = feedback.upload
        config = ScriptRunConfig(
            source_directory=args.directory,
            script=args.script,
            arguments=list(args.args),
            compute_target=target,
            environment=args.env,
            inputs=inputs,
            outputs=outputs,
        )
        feedback.spinner(f"submitting {args.script} to {args.target}")
        run = experiment.submit(
            config,
            tags=tags,
            run_id=args.run_id,
            log=feedback.build_line,
            rebuild_environment=args.rebuild_env,
            snapshot_progress=feedback.snapshot if feedback.progress is not None else None,
        )
    return _follow_new_run(run, args.wait)


def _rerun(ws: Workspace, args: argparse.Namespace) -> int:
    from airflow_provider_mltrain.core.compute import get_target
    from airflow_provider_mltrain.core.rerun import rerun

    _get_run(ws, args.run_id)
    tags = _parse_tags(args.tag)
    inputs, outputs = _data_options(args)
    with _feedback(_err) as feedback:
        target = get_target(args.target, ws.root) if args.target else None
        if target is not None and feedback.progress is not None:
            target.upload_progress = feedback.upload
        feedback.spinner(f"rerunning {args.run_id}")
        run = rerun(
            ws,
            args.run_id,
            target,
            experiment=args.experiment,
            new_run_id=args.new_run_id,
            tags=tags,
            log=feedback.build_line,
            rebuild_environment=args.rebuild_env,
            inputs=inputs,
            outputs=outputs,
            allow_changed_inputs=args.allow_changed_inputs,
        )
    return _follow_new_run(run, args.wait)


# -- workspace ---------------------------------------------------------------------------------


def workspace_facts(ws: Workspace) -> dict[str, Any]:
    """Where the workspace keeps what, with passwords masked, and whether the artifact store answers."""
    from sqlalchemy.engine import make_url

    from airflow_provider_mltrain.core import settings

    try:
        run_store = make_url(ws.database_url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: show only its scheme
        run_store = ws.database_url.split(":", 1)[0] + ":***"
    facts: dict[str, Any] = {
        "root": str(ws.root),
        "run_store": run_store,
        "artifact_store": None,
        "artifact_store_conn_id": settings.artifact_store_conn_id(),
        "root_is_cache": None,
        "artifact_store_ok": False,
        "artifact_store_error": None,
    }
    try:
        store = ws.artifacts
        facts["artifact_store"] = re.sub(r"//[^/@]*@", "//***@", store.url)
        facts["root_is_cache"] = not ws.artifacts_are_local_root
        ws.check_artifacts(force=True)
        facts["artifact_store_ok"] = True
    except MLTrainError as exc:
        facts["artifact_store"] = facts["artifact_store"] or settings.artifact_store()
        facts["artifact_store_error"] = {"type": type(exc).__name__, "message": str(exc)}
    return facts


def _workspace_show(ws: Workspace, as_json: bool) -> int:
    facts = workspace_facts(ws)
    if as_json:
        _dump(facts)
    else:
        role = " (a local cache of the artifact store)" if facts["root_is_cache"] else ""
        conn = facts["artifact_store_conn_id"]
        lines = [
            f"workspace root:  {facts['root']}{role}",
            f"run store:       {facts['run_store']}",
            f"artifact store:  {facts['artifact_store']}"
            + (" (the workspace root)" if facts["root_is_cache"] is False else ""),
            f"connection id:   {conn if conn else '(none: the backend configuration applies)'}",
        ]
        if facts["artifact_store_ok"] and facts["root_is_cache"] is False:
            lines.append("store check:     ok (a local folder)")
        elif facts["artifact_store_ok"]:
            lines.append("store check:     ok (reachable, bucket present, writable)")
        else:
            error = facts["artifact_store_error"]
            lines.append(f"store check:     FAILED: {error['type']}: {error['message']}")
        OUT.stream.write("".join(for_terminal(line) + "\n" for line in lines))
    return 0 if facts["artifact_store_ok"] else 1


# -- snapshots ---------------------------------------------------------------------------------


def _snapshot_content(ws: Workspace, snap: Snapshot, path: str) -> bytes | None:
    """The bytes of ``path`` in ``snap`` (a symlink as ``-> target``), None when it is not there."""
    for f in snap.files:
        if f.path == path:
            return ws.snapshots.read_blob(snap.id, f.hash) if f.size <= TEXT_DIFF_MAX_BYTES else b"\0"
    for link, target in snap.symlinks:
        if link == path:
            return f"-> {target}\n".encode()
    return None


def _text_diff(ws: Workspace, a: Snapshot, b: Snapshot, path: str) -> str | None:
    """A unified diff of one path, or None when either side is binary or too large."""
    old, new = _snapshot_content(ws, a, path), _snapshot_content(ws, b, path)
    texts: list[list[str]] = []
    for data in (old, new):
        if data is None:
            texts.append([])
            continue
        if b"\0" in data[:8192]:
            return None
        try:
            texts.append(data.decode("utf-8").splitlines(keepends=True))
        except UnicodeDecodeError:
            return None
    lines = difflib.unified_diff(
        texts[0],
        texts[1],
        fromfile=f"a/{path}" if old is not None else "/dev/null",
        tofile=f"b/{path}" if new is not None else "/dev/null",
    )
    out = "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )
    if not out:
        modes = {f.path: f.mode for f in a.files}, {f.path: f.mode for f in b.files}
        return f"mode {modes[0].get(path, 0):o} -> {modes[1].get(path, 0):o} {path}\n"
    return out


def _snapshot_diff(ws: Workspace, run_a: str, run_b: str, text: bool, as_json: bool) -> None:
    from airflow_provider_mltrain.core.snapshot import diff

    ids = [_get_run(ws, r).get_details()["snapshot_id"] for r in (run_a, run_b)]
    a, b = (ws.snapshots.get(i) for i in ids)
    changes = diff(a, b)
    diffs: dict[str, str | None] = {}
    if text:
        for path in sorted(changes["added"] + changes["removed"] + changes["changed"]):
            diffs[path] = _text_diff(ws, a, b, path)
    if as_json:
        out: dict[str, Any] = {"run_a": run_a, "run_b": run_b, "snapshot_a": a.id, "snapshot_b": b.id}
        out.update(changes)
        if text:
            out["diffs"] = diffs
        _dump(out)
        return
    OUT.stream.write(f"snapshot {a.id[:12]} ({run_a}) -> {b.id[:12]} ({run_b})\n")
    marks = {"added": "A", "removed": "D", "changed": "M"}
    kinds = {path: kind for kind in marks for path in changes[kind]}
    for path in sorted(kinds):
        OUT.stream.write(f"{marks[kinds[path]]}  {path}\n")
    if not kinds:
        OUT.stream.write("no differences\n")
    for path, body in diffs.items():
        OUT.stream.write("\n" + (body if body is not None else f"binary file {path} {kinds[path]}\n"))


# -- environments ------------------------------------------------------------------------------


def _env_list(ws: Workspace, as_json: bool) -> None:
    from airflow_provider_mltrain.core.environment import CURATED_PREFIX, Environment

    envs = Environment.list(ws)
    if as_json:
        _dump(
            {
                name: {**e.recordable(), "hash": e.content_hash(), "managed": e.managed}
                for name, e in envs.items()
            }
        )
        return
    OUT.stream.write(f"{'NAME':<28} {'VERSION':<8} {'KIND':<12} {'HASH':<12} FOR\n")
    for name, env in envs.items():
        kind = (
            "curated" if name.startswith(CURATED_PREFIX) else ("managed" if env.managed else "user-managed")
        )
        about = for_terminal(" ".join((env.description or "").split()), 200)
        line = f"{name:<28} {env.version or '-':<8} {kind:<12} {env.content_hash()[:12]} {about}"
        OUT.stream.write(line.rstrip() + "\n")


def _env_show(ws: Workspace, name: str, version: str | None, as_json: bool) -> None:
    import yaml

    from airflow_provider_mltrain.core.environment import Environment, resolve_environment

    env = Environment.get(ws, name, version) if version else resolve_environment(name, ws)
    data = {**env.recordable(), "hash": env.content_hash(), "managed": env.managed}
    if env.managed:
        data["requirement_lines"] = env.requirement_lines()
    if as_json:
        _dump(data)
    else:
        OUT.stream.write(yaml.safe_dump(data, sort_keys=False))


def _env_build(ws: Workspace, spec: str, target_name: str, rebuild: bool) -> None:
    from airflow_provider_mltrain.core.compute import get_target
    from airflow_provider_mltrain.core.environment import resolve_environment, warn_unpinned

    env = resolve_environment(spec, ws)
    target = get_target(target_name, ws.root)
    target.check_environment(env)
    if env.managed:
        warn_unpinned(env, _err)

    def echo(line: str) -> None:
        OUT.stream.write(line + "\n")
        OUT.stream.flush()

    try:
        with _feedback(echo) as feedback:
            prepared = target.prepare_environment(env, feedback.build_line, rebuild=rebuild)
    except MLTrainError as exc:
        ws.store.record_build(env.content_hash(), target.name, "failed", error=str(exc))
        raise
    if prepared.built:
        ws.store.record_build(env.content_hash(), target.name, "built", seconds=prepared.seconds)
    state = "built" if prepared.built else "already built (cache hit)"
    OUT.stream.write(f"{env.name} {env.content_hash()[:12]} {state}: {prepared.interpreter}\n")


# -- sweeps ------------------------------------------------------------------------------------


def _sweep_summary(sweep: SweepRun) -> dict[str, Any]:
    record = sweep._record()
    ranked = sweep.get_children_sorted_by_primary_metric()
    best = next((r for r in ranked if r["best_primary_metric"] is not None), None)
    return {
        "run_id": sweep.id,
        "experiment": record["experiment"],
        "status": record["status"],
        "created_at": datetime.fromtimestamp(record["created_at"], tz=timezone.utc).isoformat(
            timespec="seconds"
        ),
        "definition": sweep.definition,
        "children": len(ranked),
        "early_terminated": sum(1 for r in ranked if r["early_terminated"]),
        "best_run_id": best["run_id"] if best else None,
        "best_primary_metric": best["best_primary_metric"] if best else None,
        "warnings": sweep.warnings,
    }


def _sweeps_list(ws: Workspace, experiment: str | None, as_json: bool) -> None:
    from airflow_provider_mltrain.core.sweep import KIND, SweepRun

    records = [r for r in ws.store.list_runs(experiment=experiment) if r["properties"].get(KIND) == "sweep"]
    found = [_sweep_summary(SweepRun(ws, r["id"])) for r in records]
    if as_json:
        _dump(found)
        return
    t = for_terminal
    OUT.stream.write(f"{'SWEEP':<44} {'STATUS':<10} {'CHILDREN':>8} {'STOPPED':>7}  {'METRIC':<16} BEST\n")
    for s in found:
        d = s["definition"]
        goal = "max" if d.get("primary_metric_goal") == "MAXIMIZE" else "min"
        metric = f"{d.get('primary_metric_name', '')} {goal}"
        best = "-" if s["best_run_id"] is None else f"{s['best_primary_metric']:g} {s['best_run_id']}"
        OUT.stream.write(
            f"{t(s['run_id'])[:44]:<44} {s['status']:<10} {s['children']:>8} {s['early_terminated']:>7}  "
            f"{t(metric)[:16]:<16} {t(best)}\n"
        )
    if not found:
        OUT.stream.write("no sweeps" + (f" in experiment {t(experiment)}" if experiment else "") + "\n")


def _sweeps_show(ws: Workspace, run_id: str, as_json: bool) -> None:
    from airflow_provider_mltrain.core.sweep import KIND, SweepRun

    run = _get_run(ws, run_id)
    if run.properties.get(KIND) != "sweep":
        raise UsageError(
            f"run {for_terminal(run_id)} is not a sweep. List the sweeps with: mltrain sweeps list"
        )
    sweep = SweepRun(ws, run.id)
    summary = _sweep_summary(sweep)
    ranked = sweep.get_children_sorted_by_primary_metric()
    if as_json:
        _dump({**summary, "children": ranked})
        return
    t = for_terminal
    d = summary["definition"]
    lines = [
        f"Sweep       {t(sweep.id)} ({summary['status']}, experiment {t(summary['experiment'])})",
        f"Sampling    {d.get('sampling')} over {t(json.dumps(d.get('parameter_space')))}, "
        f"seed {d.get('seed')}",
        f"Policy      {d.get('policy')}"
        + "".join(f", {k}={v}" for k, v in d.items() if k in _POLICY_KEYS and v is not None),
        f"Metric      {t(str(d.get('primary_metric_name')))} "
        f"({str(d.get('primary_metric_goal', '')).lower()})",
        f"Budget      {d.get('max_total_runs')} runs, {d.get('max_concurrent_runs')} at once, "
        f"{d.get('max_duration_minutes'):g} min",
        f"Children    {summary['children']} ({summary['early_terminated']} stopped early)",
    ]
    lines += [f"Warning     {t(w)}" for w in summary["warnings"]]
    lines.append(f"  {'RUN':<44} {'STATUS':<10} {'BEST':>12}  HYPERPARAMETERS")
    for i, r in enumerate(ranked):
        metric = "-" if r["best_primary_metric"] is None else f"{r['best_primary_metric']:.6g}"
        mark = "*" if i == 0 and r["best_primary_metric"] is not None else " "
        params = " ".join(f"{k} {v}" for k, v in r["hyperparameters"].items())
        lines.append(f"{mark} {t(r['run_id'])[:44]:<44} {r['status']:<10} {metric:>12}  {t(params)}")
        if r["early_terminated"]:
            lines.append(f"    stopped: {t(r['early_terminated'])}")
    OUT.stream.write("\n".join(lines) + "\n")


_POLICY_KEYS = (
    "evaluation_interval",
    "delay_evaluation",
    "slack_factor",
    "slack_amount",
    "truncation_percentage",
    "exclude_finished_jobs",
)


# -- models ------------------------------------------------------------------------------------


def _model_arg(name: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME:VERSION``."""
    base, sep, version = name.rpartition(":")
    return (base, version) if sep and base else (name, None)


def _get_model(ws: Workspace, name: str, version: str | None, alias: str | None) -> Model:
    from airflow_provider_mltrain.core.model import InvalidModelName, Model, ModelNotFound

    base, given = _model_arg(name)
    try:
        return Model(ws, base, version=version or given, alias=alias)
    except (ModelNotFound, InvalidModelName) as exc:
        raise UsageError(f"{exc} List the models with: mltrain models list") from None


def _models_list(
    ws: Workspace, name: str | None, tags: Sequence[str] | None, latest: bool, as_json: bool
) -> None:
    from airflow_provider_mltrain.core.model import InvalidModelName, Model

    try:
        found = Model.list(ws, name=name, tags=_parse_tags(tags), latest=latest)
    except InvalidModelName as exc:
        raise UsageError(str(exc)) from None
    if as_json:
        _dump([m.serialize() for m in found])
        return
    t = for_terminal
    OUT.stream.write(f"{'NAME':<28} {'VERSION':>7}  {'ALIASES':<16} {'RUN':<36} {'SIZE':>10}  CREATED\n")
    for m in found:
        OUT.stream.write(
            f"{m.name:<28} {m.version:>7}  {','.join(m.aliases) or '-':<16} {t(m.run_id or '-')[:36]:<36} "
            f"{m.size:>10}  {m.created_time.isoformat(timespec='seconds')}\n"
        )
    if not found:
        OUT.stream.write("no models registered" + (f" under {name!r}" if name else "") + "\n")


def _models_show(model: Model, as_json: bool) -> None:
    data = model.serialize()
    if as_json:
        _dump(data)
        return
    t = for_terminal
    lines = [
        f"Model       {data['id']}",
        f"Aliases     {', '.join(data['aliases']) or '-'}",
        f"Source run  {t(data['run_id'] or '-')}",
        f"Path        {t(data['model_path'])}",
        f"Created     {data['created_time']}",
        f"Size        {data['size']} bytes in {len(data['files'])} file(s)",
    ]
    if data["description"]:
        lines.append(f"Description {t(data['description'])}")
    for label, values in (("Tags", data["tags"]), ("Properties", data["properties"])):
        if values:
            lines.append(f"{label:<11} " + ", ".join(f"{t(k)}={t(v)}" for k, v in sorted(values.items())))
    lines.append("Files")
    lines += [f"  {f['size']:>12}  {t(f['path'])}" for f in data["files"]]
    OUT.stream.write("\n".join(lines) + "\n")


def _models_register(ws: Workspace, args: argparse.Namespace) -> None:
    from airflow_provider_mltrain.core.model import InvalidModelName, ModelPathNotFound

    run = _get_run(ws, args.run_id)
    try:
        model = run.register_model(
            args.name, args.path, tags=_parse_tags(args.tag), description=args.description
        )
    except (InvalidModelName, ModelPathNotFound) as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        _dump(model.serialize())
    else:
        OUT.stream.write(f"registered {model.id} from run {for_terminal(run.id)}\n")


def _models(ws: Workspace, args: argparse.Namespace) -> None:
    from airflow_provider_mltrain.core.model import InvalidModelName, Model, ModelNotFound

    if args.action == "list":
        _models_list(ws, args.name, args.tag, args.latest, args.json)
    elif args.action == "show":
        _models_show(_get_model(ws, args.name, args.version, args.alias), args.json)
    elif args.action == "download":
        model = _get_model(ws, args.name, args.version, args.alias)
        path = model.download(args.output, exist_ok=args.overwrite)
        OUT.stream.write(f"{model.id} -> {path}\n")
    elif args.action == "register":
        _models_register(ws, args)
    elif args.action == "alias":
        base, given = _model_arg(args.name)
        if args.delete:
            try:
                Model.delete_alias(ws, base, args.alias)
            except (ModelNotFound, InvalidModelName) as exc:
                raise UsageError(str(exc)) from None
            OUT.stream.write(f"{base}: alias {args.alias} deleted\n")
            return
        if not (args.version or given):
            raise UsageError("give the VERSION the alias is to name (or --delete)")
        model = _get_model(ws, base, args.version or given, None)
        try:
            before = model.set_alias(args.alias)
        except InvalidModelName as exc:
            raise UsageError(str(exc)) from None
        moved = "new" if before is None else f"was version {before}"
        OUT.stream.write(f"{base}: {args.alias} -> version {model.version} ({moved})\n")


# -- command line ------------------------------------------------------------------------------


def split_script_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """``mltrain ... submit [OPTIONS] DIR SCRIPT ARGS...`` -> (everything up to SCRIPT, ARGS).

    The script's arguments pass through unchanged, options included; one ``--`` right after
    SCRIPT is dropped, so ``SCRIPT -- --help`` and ``SCRIPT --help`` both give the script
    ``--help``. Other commands are returned whole.
    """
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] == "--workspace" else 1
    if i >= len(argv) or argv[i] != "submit":
        return argv, []
    i += 1
    takes_value = _submit_value_options()
    positionals = 0
    options_done = False
    while i < len(argv) and positionals < 2:
        word = argv[i]
        if not options_done and word == "--":
            options_done = True
            i += 1
        elif not options_done and word in takes_value:
            i += 2
        elif not options_done and word.startswith("-") and word != "-":
            i += 1
        else:
            positionals += 1
            i += 1
    head, rest = argv[:i], argv[i:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return head, rest


def _submit_value_options() -> frozenset[str]:
    """The options of ``submit`` that take a value (read from the parser, so none is forgotten)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return frozenset(
        opt for action in sub.choices["submit"]._actions if action.nargs != 0 for opt in action.option_strings
    )


def _version() -> str:
    from airflow_provider_mltrain import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mltrain", description="Submit, follow and inspect runs of airflow-provider-mltrain."
    )
    parser.add_argument(
        "--workspace",
        help="workspace root (default: MLTRAIN_WORKSPACE, [mltrain] workspace in airflow.cfg, "
        "or $AIRFLOW_HOME/mltrain); give it before the command",
    )
    parser.add_argument(
        "--version", action="version", version=f"mltrain (airflow-provider-mltrain) {_version()}"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_submit = sub.add_parser(
        "submit",
        allow_abbrev=False,
        help="snapshot a folder and run a script in it",
        description="Snapshot DIR and run SCRIPT in it. Everything after SCRIPT goes to the script "
        "unchanged (a '--' right after SCRIPT is dropped); give mltrain's options before DIR.",
    )
    p_submit.add_argument("directory", metavar="DIR", help="the source folder (snapshotted)")
    p_submit.add_argument("script", metavar="SCRIPT", help="the script, relative to DIR")
    p_submit.add_argument("args", metavar="ARGS", nargs="*", help="the script's arguments")
    p_submit.add_argument("--experiment", required=True, help="the experiment the run belongs to (required)")
    p_submit.add_argument("--target", default="local", help="'local' or an Airflow connection id")
    p_submit.add_argument("--env", help="a registered or curated environment name, or a YAML file")
    p_submit.add_argument("--run-id", help="the run id (a submission with an existing id reattaches)")
    _run_options(p_submit)

    runs = sub.add_parser("runs", help="list, show and cancel runs").add_subparsers(
        dest="action", required=True
    )
    p_list = runs.add_parser("list", help="runs, newest first")
    p_list.add_argument("--experiment")
    p_list.add_argument("--limit", type=int, default=50)
    p_list.add_argument("--json", action="store_true")
    p_show = runs.add_parser("show", help="one run: status, metrics, files")
    p_show.add_argument("run_id", nargs="?")
    p_show.add_argument("--latest", action="store_true", help="the newest run (of --experiment if given)")
    p_show.add_argument("--experiment")
    p_show.add_argument("--json", action="store_true")
    p_cancel = runs.add_parser("cancel", help="stop a run: SIGTERM, then SIGKILL after the grace period")
    p_cancel.add_argument("run_id")
    p_cancel.add_argument("--grace", type=float, default=10.0, help="seconds before SIGKILL (10)")

    p_logs = sub.add_parser("logs", help="a run's stdout and stderr")
    p_logs.add_argument("run_id")
    p_logs.add_argument("-f", "--follow", action="store_true", help="follow the log until the run ends")
    p_logs.add_argument(
        "--raw",
        action="store_true",
        help="the log byte for byte; by default terminal control sequences but colours are removed",
    )

    p_metrics = sub.add_parser("metrics", help="the metrics a run logged")
    p_metrics.add_argument("run_id")
    p_metrics.add_argument("--json", action="store_true")

    p_download = sub.add_parser("download", help="copy a run's files (all, a folder, or one file)")
    p_download.add_argument("run_id")
    p_download.add_argument("path", nargs="?", help="outputs/model.pkl, outputs, logs/std_log.txt, ...")
    p_download.add_argument(
        "-o", "--output", help="destination (default: ./RUN_ID/ for folders, ./NAME for one file)"
    )

    snap = sub.add_parser("snapshot", help="compare snapshots").add_subparsers(dest="action", required=True)
    p_diff = snap.add_parser("diff", help="files added, removed and changed between two runs' snapshots")
    p_diff.add_argument("run_a")
    p_diff.add_argument("run_b")
    p_diff.add_argument("--text", action="store_true", help="unified diffs of text files")
    p_diff.add_argument("--json", action="store_true")

    p_rerun = sub.add_parser("rerun", help="run the same snapshot, script, arguments and environment again")
    p_rerun.add_argument("run_id")
    p_rerun.add_argument("--target", help="where to run it (default: the run's own target)")
    p_rerun.add_argument("--experiment", help="the new run's experiment (default: the run's)")
    p_rerun.add_argument("--run-id", dest="new_run_id", help="the new run's id")
    p_rerun.add_argument(
        "--allow-changed-inputs",
        action="store_true",
        help="run even if an input no longer holds the data the run read (default: refused)",
    )
    _run_options(p_rerun)

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
    inputs = sub.add_parser("inputs", help="the workspace's cache of run inputs").add_subparsers(
        dest="action", required=True
    )
    i_prune = inputs.add_parser("prune", help="delete cached inputs no run used recently")
    i_prune.add_argument("--days", type=float, default=7, help="keep inputs used in the last DAYS (7)")
    i_prune.add_argument("--dry-run", action="store_true")
    targets = sub.add_parser("target", help="compute targets").add_subparsers(dest="action", required=True)
    t_prune = targets.add_parser(
        "prune",
        help="delete a remote target's cached snapshot files and inputs that no recent submission used",
    )
    t_prune.add_argument("target", help="the target's connection id")
    t_prune.add_argument("--days", type=float, default=7, help="keep what was used in the last DAYS (7)")
    t_prune.add_argument("--json", action="store_true")
    models = sub.add_parser("models", help="the model registry").add_subparsers(dest="action", required=True)
    m_list = models.add_parser("list", help="registered model versions, newest first per name")
    m_list.add_argument("--name", help="only this model's versions")
    m_list.add_argument("--tag", action="append", metavar="KEY=VALUE", help="only versions with this tag")
    m_list.add_argument("--latest", action="store_true", help="only each model's newest version")
    m_list.add_argument("--json", action="store_true")
    m_show = models.add_parser("show", help="one model version: source run, tags, files")
    m_download = models.add_parser("download", help="copy a model version's files into a folder")
    for p in (m_show, m_download):
        p.add_argument("name", metavar="NAME[:VERSION]")
        which = p.add_mutually_exclusive_group()
        which.add_argument("--version", help="a version number (default: the latest)")
        which.add_argument("--alias", help="the version this alias names (production, say)")
    m_show.add_argument("--json", action="store_true")
    m_download.add_argument("-o", "--output", default=".", help="folder to copy into (default: here)")
    m_download.add_argument("--overwrite", action="store_true", help="replace files already there")
    m_register = models.add_parser("register", help="register a file or folder of an ended run")
    m_register.add_argument("run_id")
    m_register.add_argument("name")
    m_register.add_argument("path", help="the run's file or folder, e.g. outputs/model.pkl")
    m_register.add_argument("--tag", action="append", metavar="KEY=VALUE", help="a tag (repeatable)")
    m_register.add_argument("--description")
    m_register.add_argument("--json", action="store_true")
    m_alias = models.add_parser("alias", help="point an alias at a version (atomically), or delete it")
    m_alias.add_argument("name", metavar="NAME[:VERSION]")
    m_alias.add_argument("alias")
    m_alias.add_argument("version", nargs="?", help="the version to name (or NAME:VERSION)")
    m_alias.add_argument("--delete", action="store_true", help="delete the alias")
    sweeps = sub.add_parser("sweeps", help="hyperparameter sweeps").add_subparsers(
        dest="action", required=True
    )
    s_list = sweeps.add_parser("list", help="sweeps, newest first: status, children, best run")
    s_list.add_argument("--experiment")
    s_list.add_argument("--json", action="store_true")
    s_show = sweeps.add_parser("show", help="one sweep: definition, children best first, early stops")
    s_show.add_argument("run_id")
    s_show.add_argument("--json", action="store_true")
    workspace = sub.add_parser("workspace", help="the workspace").add_subparsers(dest="action", required=True)
    w_show = workspace.add_parser(
        "show",
        help="the workspace root, run store, artifact store and its connection, and whether the store "
        "answers (exit 1 when it does not)",
    )
    w_show.add_argument("--json", action="store_true")
    sub.add_parser(
        "pythonpath",
        help="print the folder holding the in-script 'mltrain' module, for running a script by hand: "
        "PYTHONPATH=$(mltrain pythonpath) python train.py",
    )
    return parser


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="a tag of the new run (repeatable)")
    p.add_argument(
        "--input",
        action="append",
        metavar="NAME=URL",
        help="named data the script reads, downloaded and cached: an object-store URL or a path; "
        "the script finds it by ${{inputs.NAME}} in ARGS or MLTRAIN_INPUT_NAME (repeatable)",
    )
    p.add_argument(
        "--mount",
        action="append",
        metavar="NAME=PATH",
        help="like --input, but a path used in place (local) or mounted read-only (Docker)",
    )
    p.add_argument(
        "--output",
        action="append",
        metavar="NAME=URL",
        help="upload the run's outputs/NAME/ to URL once it ends (repeatable)",
    )
    p.add_argument(
        "--data-conn",
        metavar="CONN_ID",
        help="the Airflow connection whose credentials read --input URLs and write --output URLs",
    )
    p.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stream the log until the run ends, exit 1 unless it completed (default); "
        "--no-wait prints the run id and returns",
    )
    p.add_argument("--rebuild-env", action="store_true", help="build the environment again even if cached")


def _dispatch(ws: Workspace, args: argparse.Namespace) -> int:
    command = args.command
    if command == "submit":
        return _submit(ws, args)
    if command == "rerun":
        return _rerun(ws, args)
    if command == "workspace":
        return _workspace_show(ws, args.json)
    if command == "models":
        _models(ws, args)
        return 0
    if command == "sweeps":
        if args.action == "list":
            _sweeps_list(ws, args.experiment, args.json)
        else:
            _sweeps_show(ws, args.run_id, args.json)
        return 0
    if command == "logs":
        return _logs(_get_run(ws, args.run_id), args.follow, args.raw)
    if command == "metrics":
        _metrics(_get_run(ws, args.run_id), args.json)
    elif command == "download":
        _download(_get_run(ws, args.run_id), args.path, args.output)
    elif command == "snapshot":
        _snapshot_diff(ws, args.run_a, args.run_b, args.text, args.json)
    elif command == "target":
        from airflow_provider_mltrain.core.compute import get_target
        from airflow_provider_mltrain.core.inputs import keys_in_use

        target = get_target(args.target, ws.root)
        # Inputs a recent or unfinished run of this workspace names stay, whatever their last use.
        keep = keys_in_use(ws.store.list_runs(), args.days)
        result = target.prune_cache(args.days, keep_inputs=keep)
        if args.json:
            _dump(result)
        else:
            OUT.stream.write(
                f"{args.target}: removed {result['removed']} file(s), {result['bytes'] / 1e6:.1f} MB; "
                f"kept {result['kept']}; removed {result['inputs_removed']} cached input(s), "
                f"{result['inputs_bytes'] / 1e6:.1f} MB\n"
            )
    elif command == "inputs":
        from airflow_provider_mltrain.core.inputs import prune_cache

        removed = prune_cache(ws.root, ws.store.list_runs(), args.days, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        for path in removed:
            OUT.stream.write(f"{verb} {path}\n")
        OUT.stream.write(f"{len(removed)} cached input(s) {'to remove' if args.dry_run else 'removed'}\n")
    elif command == "env":
        if args.action == "list":
            _env_list(ws, args.json)
        elif args.action == "show":
            _env_show(ws, args.name, args.version, args.json)
        elif args.action == "build":
            _env_build(ws, args.name, args.target, args.rebuild)
        elif args.action == "prune":
            from airflow_provider_mltrain.targets.local import prune_local_builds

            removed = prune_local_builds(ws, args.days, dry_run=args.dry_run)
            verb = "would remove" if args.dry_run else "removed"
            for path in removed:
                OUT.stream.write(f"{verb} {path}\n")
            OUT.stream.write(f"{len(removed)} build(s) {'to remove' if args.dry_run else 'removed'}\n")
    elif args.action == "list":
        _list(ws, args.experiment, args.limit, args.json)
    elif args.action == "show":
        if args.run_id:
            run = _get_run(ws, args.run_id)
        elif args.latest:
            run = _latest(ws, args.experiment)
        else:
            raise UsageError("give a RUN_ID or --latest")
        _show(run, args.json)
    elif args.action == "cancel":
        status = _get_run(ws, args.run_id).cancel(grace_period=args.grace)
        OUT.stream.write(f"{args.run_id} {status}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    head, script_args = split_script_arguments(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(head)
    if args.command == "submit":
        args.args = [*args.args, *script_args]
    if args.command == "pythonpath":
        sys.stdout.write(os.path.join(RUNNER_DIR, "pylib") + "\n")
        return 0
    OUT.stream = sys.stdout
    from airflow_provider_mltrain.core.workspace import Workspace

    try:
        # Our output is the command's answer (often --json for a script): whatever else prints
        # while it runs (Airflow's log lines when a connection is read, say) goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            ws = Workspace(args.workspace) if args.workspace else Workspace()
            return _dispatch(ws, args)
    except UsageError as exc:
        _err(f"mltrain: {exc}")
        return 2
    except MLTrainError as exc:
        _err(f"mltrain: {exc}")
        return 1
    except KeyboardInterrupt:
        _err("mltrain: interrupted")
        return 130
    except BrokenPipeError:
        # The reader (head, less) went away; not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), OUT.stream.fileno())
        return 0
    except OSError as exc:  # writing a download, reading a blob: the system's own message
        _err(f"mltrain: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
