"""Start-up of the ``mltrain`` command and the Python API, beside ``python -c pass`` and a bare
``import sqlalchemy``, measured in the same run.

    .venv/bin/python bench/bench_startup.py [--reps 15] [--before DIR] [--no-pyc]

Each case is a new process, timed from ``subprocess.run`` to its exit:

- ``mltrain --help``, ``mltrain --version`` (the installed console script);
- ``mltrain runs list`` on a small workspace (5 completed runs, SQLite run store);
- ``python -c "import airflow_provider_mltrain"`` and Airflow's provider discovery
  (``get_provider_info()``);
- a no-op submit + wait from a new interpreter (``python -c "...submit(...).wait_for_completion()"``
  of a script that is ``pass``, local target), beside ``python noop.py``.

The cases run round-robin, once each per repetition, so a busy moment hits every case alike;
medians of ``--reps``. One untimed pass runs first. By default the children may write ``.pyc``
files, so that pass leaves the bytecode cache warm, as after ``pip install`` (which compiles).
``--no-pyc`` sets ``PYTHONDONTWRITEBYTECODE=1`` for the children: after removing the venv's
``__pycache__`` folders (``find .venv/lib -name __pycache__ -prune -exec rm -rf {} +``) that is an
install without bytecode, such as ``uv pip install`` without ``--compile-bytecode``; the
interpreter's own standard library keeps its bytecode. The output says which it measured.
``--before DIR`` adds every package case again with DIR first on the children's ``PYTHONPATH``
(a ``git archive`` of an older commit), in the same round-robin: the code before a change, with
the same interpreter and libraries, at the same moment.
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MLTRAIN = str(Path(sys.executable).with_name("mltrain"))
SUBMIT = """
import sys
from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
run = Experiment(Workspace(sys.argv[1]), "bench").submit(ScriptRunConfig(sys.argv[2], "noop.py"))
run.wait_for_completion()
"""
PROVIDER_INFO = (
    "from airflow_provider_mltrain.get_provider_info import get_provider_info; get_provider_info()"
)


BASELINES = ("python -c pass", "python -c 'import sqlalchemy'", "python noop.py")


def cases(list_ws: Path, submit_ws: Path, src: Path) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "python -c pass": [py, "-c", "pass"],
        "python -c 'import sqlalchemy'": [py, "-c", "import sqlalchemy"],
        "python noop.py": [py, str(src / "noop.py")],
        "mltrain --help": [MLTRAIN, "--help"],
        "mltrain --version": [MLTRAIN, "--version"],
        "mltrain runs list (5 runs)": [MLTRAIN, "--workspace", str(list_ws), "runs", "list"],
        "import airflow_provider_mltrain": [py, "-c", "import airflow_provider_mltrain"],
        "get_provider_info()": [py, "-c", PROVIDER_INFO],
        "no-op submit + wait, new process": [py, "-c", SUBMIT, str(submit_ws), str(src)],
    }


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """``cwd`` is outside the repository: ``python -c`` puts its working folder first on the path."""
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def commit_of(code: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(code), "log", "-1", "--format=%h"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "?"


def child_env(tmp: Path, code: Path | None, no_pyc: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    env["MLTRAIN_WORKSPACE"] = str(tmp / "ws-default")
    env["AIRFLOW_HOME"] = str(tmp / "airflow")
    if code:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code.resolve()), env.get("PYTHONPATH")) if p)
    if no_pyc:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def bytecode_state() -> str:
    """Whether the installed libraries have bytecode: SQLAlchemy's decides most of a start-up."""
    spec = importlib.util.find_spec("sqlalchemy")  # finds it without importing (or compiling) it
    folder = Path(spec.origin).parent if spec and spec.origin else None
    cached = list(folder.glob("__pycache__/*.pyc")) if folder else []
    return "SQLAlchemy has bytecode" if cached else "SQLAlchemy has NO bytecode"


def package_file(env: dict[str, str], cwd: Path) -> str:
    """Which copy of the package the children import (``--before`` must not measure this one)."""
    return subprocess.run(
        [sys.executable, "-c", "import airflow_provider_mltrain as m; print(m.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument(
        "--before",
        type=Path,
        help="another source tree (git archive COMMIT | tar -x -C DIR): its package cases run in the "
        "same round-robin, with DIR first on PYTHONPATH",
    )
    parser.add_argument("--no-pyc", action="store_true", help="children read and write no bytecode cache")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    state = bytecode_state()
    tmp = Path(tempfile.mkdtemp(prefix="mltrain-bench-startup-"))
    versions = {"": child_env(tmp, None, args.no_pyc)}
    if args.before:
        versions[" [before]"] = child_env(tmp, args.before, args.no_pyc)
    try:
        src = tmp / "src"
        src.mkdir()
        (src / "noop.py").write_text("pass\n")
        files = {label: package_file(env, tmp) for label, env in versions.items()}
        if len(set(files.values())) != len(files):
            raise SystemExit(f"--before imports the same package as this tree: {files}")
        commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        for label, env in versions.items():
            tag = label.strip(" []") or "after"
            for name, argv in cases(tmp / "ws-list", tmp / f"ws-submit-{tag}", src).items():
                if name in BASELINES and label:
                    continue
                commands[name + label] = (argv, env)
        for _ in range(5):  # the small workspace `runs list` reads
            argv, env = commands["no-op submit + wait, new process"]
            timed([*argv[:-2], str(tmp / "ws-list"), argv[-1]], env, tmp)
        for argv, env in commands.values():  # untimed: leaves the bytecode cache warm (or not)
            timed(argv, env, tmp)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.reps):
            for name, (argv, env) in commands.items():
                times[name].append(timed(argv, env, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {name: statistics.median(t) for name, t in times.items()}
    bare, sqla = med["python -c pass"], med["python -c 'import sqlalchemy'"]
    here = Path(__file__).resolve().parent.parent
    for label, file in files.items():
        print(f"package{label or ' [after]'}: {file}")
    print(
        f"commit {commit_of(here)}; python {platform.python_version()}; {os.cpu_count()} cores; "
        f"{'children write no bytecode' if args.no_pyc else 'bytecode cache warm'} "
        f"({state}); "
        f"medians of {args.reps}, round-robin; "
        f"1-minute load {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    rows = [["case", "median ms", "- python -c pass", "/ python -c pass", "/ import sqlalchemy"]]
    for name, ms in med.items():
        rows.append([name, f"{ms:.0f}", f"{ms - bare:+.0f}", f"{ms / bare:.2f}x", f"{ms / sqla:.2f}x"])
    for label in versions:
        submit = med["no-op submit + wait, new process" + label]
        rows.append(
            [f"no-op submit + wait{label} / python noop.py", f"{submit / med['python noop.py']:.1f}x"]
        )
        rows[-1] += [""] * 3
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
