"""What logging through MLflow costs a script inside a run, against ``run.log`` and MLflow's own stores.

    .venv/bin/python bench/bench_mlflow.py [--values 5000] [--reps 3]

Each case is a fresh ``python -c`` process (interpreter start-up and ``import mlflow`` included, as a
script pays them) that logs ``--values`` metrics one call at a time, in a run folder laid out as the
supervisor lays it (``MLFLOW_TRACKING_URI=mltrain:``, the store's entry points on ``PYTHONPATH``):

- ``run.log``: mltrain's own in-script API (the baseline a script without MLflow pays);
- ``mlflow -> mltrain``: ``mlflow.log_metric`` into the run through the ``mltrain:`` store;
- ``mlflow -> file store``: ``mlflow.log_metric`` into MLflow's file store (``./mlruns``), what a
  per-run store ingested afterwards would have cost the script;
- ``mlflow -> sqlite``: MLflow 3's default store, ``sqlite:///mlflow.db``.

The cost per value is timed inside the process, around the logging loop (after one value was
logged, so the store is loaded); the process's wall time (``import mlflow`` is most of it) is
reported beside it. Median of ``--reps``, cases interleaved. Needs ``mlflow-skinny`` (and SQLAlchemy and
alembic for the sqlite case, which Airflow brings). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from airflow_provider_mltrain.runner import RUNNER_DIR, supervisor

PYLIB = os.path.join(RUNNER_DIR, "pylib")

RUN_LOG = (
    "import time\nfrom mltrain import Run\nr = Run.get_context()\nr.log('warm', 0)\nt = time.perf_counter()\n"
    "for i in range({n}):\n    r.log('loss', 1.0 / (i + 1), step=i)\nprint(time.perf_counter() - t)\n"
)
MLFLOW = (
    "import time\nimport mlflow\nmlflow.start_run()\nmlflow.log_metric('warm', 0)\nt = time.perf_counter()\n"
    "for i in range({n}):\n    mlflow.log_metric('loss', 1.0 / (i + 1), step=i)\n"
    "print(time.perf_counter() - t)\nmlflow.end_run()\n"
)


def run_dir(root: str) -> tuple[str, dict[str, str]]:
    folder = tempfile.mkdtemp(dir=root)
    os.makedirs(os.path.join(folder, "snapshot", "outputs"))
    os.makedirs(os.path.join(folder, "logs"))
    with open(os.path.join(folder, "run.json"), "w") as f:
        f.write('{"run_id": "bench_run", "script": "x.py"}')
    sup = supervisor.Supervisor(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLTRAIN_", "MLFLOW_"))}
    env = {**env, "PYTHONPATH": ""}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        full = sup._environ()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return folder, full


def case(name: str, n: int, root: str) -> tuple[float, float]:
    """(wall time of the process, time of the logging loop inside it)."""
    folder, env = run_dir(root)
    code = (RUN_LOG if name == "run.log" else MLFLOW).format(n=n)
    if name == "mlflow -> file store":
        env.update(
            MLFLOW_TRACKING_URI="file://" + os.path.join(folder, "mlruns"), MLFLOW_ALLOW_FILE_STORE="true"
        )
        env.pop("MLFLOW_RUN_ID")
    elif name == "mlflow -> sqlite":
        env.update(MLFLOW_TRACKING_URI="sqlite:///" + os.path.join(folder, "mlflow.db"))
        env.pop("MLFLOW_RUN_ID")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=os.path.join(folder, "snapshot"),
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
    return seconds, float(proc.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--values", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    names = ["run.log", "mlflow -> mltrain", "mlflow -> file store", "mlflow -> sqlite"]
    wall: dict[str, list[float]] = {n: [] for n in names}
    loop: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.reps):
            for name in names:
                seconds, in_loop = case(name, args.values, root)
                wall[name].append(seconds)
                loop[name].append(in_loop)
    print(f"{args.values} values logged one call at a time, median of {args.reps}, one process each")
    base = statistics.median(loop["run.log"]) / args.values
    for name in names:
        per = statistics.median(loop[name]) / args.values
        print(
            f"{name:22s} process {statistics.median(wall[name]):6.2f} s  "
            f"{per * 1000:7.3f} ms/value  {per / base:7.1f}x run.log"
        )


if __name__ == "__main__":
    main()
