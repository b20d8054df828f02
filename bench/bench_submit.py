"""Submission overhead on the local target, against running the same script directly, in the same run.

    .venv/bin/python bench/bench_submit.py [--reps 20] [--process-reps 10]

The script, ``noop.py``, exits at once. Both sides pay interpreter start-up: the baseline is
``subprocess.run([sys.executable, "noop.py"])``; a submitted run starts the run supervisor and then
the script, each a new interpreter. Timed cases:

- in-process: ``Experiment(ws, "bench").submit(ScriptRunConfig(src, "noop.py"))`` then
  ``run.wait_for_completion()`` with its defaults, in a process that already imported the package
  and already submitted once to this workspace (the Airflow worker case). Median of ``--reps``.
- first submission: the same, into a new workspace (run store created, target folder made).
- new process: ``python -c "import ...; submit; wait"``, i.e. interpreter start-up and the package
  import on top (what a one-off command pays). Median of ``--process-reps``.

The source folder is a git repository with one commit, as a team's training code usually is, so
the git properties recorded on each run cost what they cost in practice. Runs are interleaved with
the baseline. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}
IN_NEW_PROCESS = """
import sys
from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
run = Experiment(Workspace(sys.argv[1]), "bench").submit(ScriptRunConfig(sys.argv[2], "noop.py"))
run.wait_for_completion()
"""


def make_source(src: Path) -> None:
    src.mkdir()
    (src / "noop.py").write_text("pass\n")
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "noop"]):
        subprocess.run(["git", "-C", str(src), *args], check=True, env=env)


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def direct(src: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "noop.py"], cwd=src, check=True)
    return ms_since(start)


def submitted(ws: Workspace, src: Path) -> float:
    start = time.perf_counter()
    run = Experiment(ws, "bench").submit(ScriptRunConfig(src, "noop.py"))
    run.wait_for_completion()
    return ms_since(start)


def submitted_new_process(ws_root: Path, src: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", IN_NEW_PROCESS, str(ws_root), str(src)], check=True)
    return ms_since(start)


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--process-reps", type=int, default=10)
    parser.add_argument(
        "--first-reps", type=int, default=5, help="new workspaces for the first-submission case"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mltrain-bench-submit-"))
    cases: list[tuple[str, list[float], list[float]]] = []
    try:
        src = tmp / "src"
        make_source(src)
        direct(src)  # page cache and git index warm for both sides

        base: list[float] = []
        first: list[float] = []
        for rep in range(args.first_reps):
            base.append(direct(src))
            first.append(submitted(Workspace(tmp / f"ws-first-{rep}"), src))
        cases.append(("first submission, new workspace", first, base))

        ws = Workspace(tmp / "ws")
        submitted(ws, src)  # imports done, run store created: an Airflow worker's steady state
        base, warm = [], []
        for _ in range(args.reps):
            base.append(direct(src))
            warm.append(submitted(ws, src))
        cases.append(("submit + wait, in-process", warm, base))

        base, fresh = [], []
        for _ in range(args.process_reps):
            base.append(direct(src))
            fresh.append(submitted_new_process(ws.root, src))
        cases.append(("submit + wait, new process", fresh, base))

        runs = Experiment(ws, "bench").list_runs()
        if len(runs) != 1 + args.reps + args.process_reps or any(r.get_status() != "Completed" for r in runs):
            raise RuntimeError("not every benchmark run completed")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [["case", "reps", "median ms", "python noop.py ms", "more ms", "ratio", "goal"]]
    for name, times, baseline in cases:
        run_ms, base_ms = statistics.median(times), statistics.median(baseline)
        goal = "<= 150 ms more" if name.endswith("in-process") else ""
        rows.append(
            [
                name,
                str(len(times)),
                f"{run_ms:.1f}",
                f"{base_ms:.1f}",
                f"{run_ms - base_ms:+.1f}",
                f"{run_ms / base_ms:.2f}x",
                goal,
            ]
        )
    print(f"python {sys.version.split()[0]} ({sys.executable}); medians; baseline measured interleaved")
    print_table(rows)


if __name__ == "__main__":
    main()
