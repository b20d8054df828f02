"""Deferrable against synchronous waiting: many long runs through a real Airflow with few worker slots.

    .venv/bin/python bench/bench_deferrable.py [--runs 30] [--seconds 20] [--slots 2] [--keep] [--cases A,B]

One real deployment on this machine (api-server, scheduler, dag-processor, triggerer; LocalExecutor
on SQLite in a temporary AIRFLOW_HOME, as tests/test_airflow_faults.py starts it) with
``[core] parallelism = --slots``: the executor's worker slots. These DAGs, run one after another in
the same deployment (``--cases`` picks the ones after ``bench_one``):

- ``bench_one``: one ScriptRunOperator run of ``sleep.py --seconds``, twice: the first (cold: the
  first task of the deployment) is shown, the second is the baseline, one run's time;
- ``bench_deferrable``: ``--runs`` mapped ScriptRunOperator tasks with ``deferrable=True``; the
  waits go to the triggerer, so the slots are busy only while submitting and collecting;
- ``bench_sync``: the same with ``deferrable=False``; each task holds a slot for its whole run, so
  the wall time is bounded below by ``runs / slots * seconds``;
- ``bench_deferrable_unmapped``: ``bench_deferrable`` as ``--runs`` separate tasks (Airflow does not
  start a mapped task from the triggerer, apache/airflow#52141), the control for the next two;
- ``bench_from_trigger``: the same with ``start_from_trigger=True``: submitted by the triggerer, a
  slot only for ``execute_complete``;
- ``bench_in_trigger``: with ``end_from_trigger=True`` too: no worker slot at all.

Wall time is from the API request that creates the DAG run to the moment the DAG run is seen
finished (polled every 0.3 s), so scheduling, task start-up (a new interpreter per try), submission,
the wait and the collection of outputs are all in it. The deployment is started, and each DAG parsed,
before anything is timed. Goal (issues 7 and 19): deferrable <= 1.5x one run's time. Nothing here asserts a
time; run it on an otherwise idle machine (2 cores: one pytest run at the same time skews it).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_airflow_faults import AirflowDeployment, wait_for

DAGS = """
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

ARGS = dict(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_tasks={runs})


def train(deferrable, runs):
    return ScriptRunOperator.partial(
        task_id="train",
        experiment_name="bench",
        source_directory={scripts!r},
        script="sleep.py",
        deferrable=deferrable,
        poll_interval=2,
    ).expand(arguments=[[{seconds}, i] for i in range(runs)])


with DAG("bench_one", **ARGS):
    train(False, 1)

with DAG("bench_deferrable", **ARGS):
    train(True, {runs})

with DAG("bench_sync", **ARGS):
    train(False, {runs})


def unmapped(runs, **kwargs):
    # Airflow starts a mapped task on a worker whatever it asks (apache/airflow#52141): one task each.
    for i in range(runs):
        ScriptRunOperator(
            task_id=f"train_{{i}}",
            experiment_name="bench",
            source_directory={scripts!r},
            script="sleep.py",
            arguments=[{seconds}, i],
            deferrable=True,
            poll_interval=2,
            **kwargs,
        )


with DAG("bench_deferrable_unmapped", **ARGS):
    unmapped({runs})

with DAG("bench_from_trigger", **ARGS):
    unmapped({runs}, start_from_trigger=True)

with DAG("bench_in_trigger", **ARGS):
    unmapped({runs}, start_from_trigger=True, end_from_trigger=True)
"""

# Timed after bench_one, in this order: mapped deferrable, synchronous, then one unmapped task per
# run: deferrable, started in the triggerer, and started and ended there.
CASES = (
    "bench_deferrable",
    "bench_sync",
    "bench_deferrable_unmapped",
    "bench_from_trigger",
    "bench_in_trigger",
)

SLEEP = "import sys, time\ntime.sleep(float(sys.argv[1]))\n"


def timed_dag_run(airflow: AirflowDeployment, dag_id: str, timeout: float) -> tuple[float, str]:
    start = time.perf_counter()
    run_id = airflow.trigger(dag_id)
    wait_for(lambda: airflow.dag_run_state(dag_id, run_id) in ("success", "failed"), timeout, dag_id, airflow)
    return time.perf_counter() - start, str(airflow.dag_run_state(dag_id, run_id))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--slots", type=int, default=2, help="[core] parallelism: the worker slots")
    parser.add_argument("--keep", action="store_true", help="keep the temporary AIRFLOW_HOME and print it")
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"which DAGs to time after bench_one (comma-separated; default all: {', '.join(CASES)})",
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="mltrain-bench-deferrable-"))
    scripts, dags, home = root / "scripts", root / "dags", root / "home"
    for folder in (scripts, dags, home):
        folder.mkdir()
    (scripts / "sleep.py").write_text(SLEEP)
    (dags / "bench_dags.py").write_text(
        DAGS.format(runs=args.runs, seconds=args.seconds, scripts=str(scripts))
    )
    airflow = AirflowDeployment(home, dags, extra_env={"AIRFLOW__CORE__PARALLELISM": str(args.slots)})
    sync_bound = args.runs / args.slots * args.seconds
    results = []
    try:
        print(f"starting Airflow in {home} ...", flush=True)
        airflow.up()
        chosen = [c for c in args.cases.split(",") if c]
        unknown = sorted(set(chosen) - set(CASES))
        if unknown:
            parser.error(f"--cases: unknown {unknown}; choose from {', '.join(CASES)}")
        for dag_id in ("bench_one", *chosen):
            wait_for(
                lambda d=dag_id: airflow.query("SELECT 1 FROM dag WHERE dag_id=?", d), 120, dag_id, airflow
            )
        # bench_one twice: the first task of a fresh deployment also pays cold caches.
        cases = [("bench_one", 1, " (cold)"), ("bench_one", 1, "")] + [(c, args.runs, "") for c in chosen]
        for dag_id, runs, label in cases:
            print(
                f"{dag_id}{label}: {runs} run(s) of {args.seconds:g} s on {args.slots} slot(s) ...",
                flush=True,
            )
            seconds, state = timed_dag_run(airflow, dag_id, timeout=max(600.0, 3 * sync_bound))
            results.append((dag_id + label, runs, seconds, state))
    finally:
        airflow.down()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    one = results[1][2]  # the warm bench_one
    print()
    print(f"{'DAG':<27}{'runs':>6}{'wall s':>10}{'x one run':>11}  state")
    for dag_id, runs, seconds, state in results:
        print(f"{dag_id:<27}{runs:>6}{seconds:>10.1f}{seconds / one:>11.2f}  {state}")
    print(
        f"\n{args.slots} slots; synchronous lower bound {sync_bound:.0f} s (runs / slots x seconds). "
        "Goal: deferrable <= 1.5x one run."
    )


if __name__ == "__main__":
    main()
