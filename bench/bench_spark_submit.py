"""Submission overhead on the Spark target, against plain ``spark-submit`` of the same script, in one run.

    eval "$(bash tests/services/spark.sh | sed 's/^/export /')"
    .venv/bin/python bench/bench_spark_submit.py [--reps 5]

The script, ``job.py``, starts a SparkSession on the cluster, sums a small RDD on the executors and
stops. Both sides submit it with the same ``spark-submit`` to the same master, with the same conf:

- baseline: ``subprocess.run([spark-submit, --master, M, ..., job.py])``, waited for;
- mltrain: ``Experiment.submit(ScriptRunConfig(src, "job.py", compute_target=<spark conn>))`` then
  ``run.wait_for_completion()`` with its defaults, in a process that already submitted once to the
  workspace (the Airflow worker case): snapshot, run record, run folder, supervisor, ``--py-files``
  zip, log and metrics collection are all in it.

Runs are interleaved; the median of ``--reps`` each and their ratio are printed (goal, issue 6:
<= 1.2x). Executors start for every application on both sides. Nothing here asserts a time; run it
on an otherwise idle machine.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.targets.spark import find_spark_submit
from tests.targets.harnesses.spark import connection_json

JOB = """
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
print("sum", spark.sparkContext.parallelize(range(1000), 4).sum())
spark.stop()
"""
CONF = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    master = os.environ.get("MLTRAIN_TEST_SPARK_MASTER")
    ui = os.environ.get("MLTRAIN_TEST_SPARK_UI")
    if not master or not ui:
        sys.exit(
            "Start the test cluster first: eval \"$(bash tests/services/spark.sh | sed 's/^/export /')\""
        )
    os.environ["AIRFLOW_CONN_BENCH_SPARK"] = connection_json(master, ui)
    tmp = Path(tempfile.mkdtemp(prefix="mltrain-bench-spark-"))
    try:
        src = tmp / "src"
        src.mkdir()
        (src / "job.py").write_text(JOB)
        spark_submit = find_spark_submit("spark-submit")
        plain = [spark_submit, "--master", master, "--deploy-mode", "client"]
        for key, value in CONF.items():
            plain += ["--conf", f"{key}={value}"]
        plain.append(str(src / "job.py"))
        experiment = Experiment(Workspace(tmp / "ws"), "bench")
        config = ScriptRunConfig(src, "job.py", compute_target="bench_spark")

        def with_mltrain() -> float:
            start = time.perf_counter()
            experiment.submit(config).wait_for_completion()
            return time.perf_counter() - start

        def with_spark_submit() -> float:
            start = time.perf_counter()
            subprocess.run(plain, check=True, capture_output=True, cwd=src)
            return time.perf_counter() - start

        with_mltrain()  # untimed: the workspace and run store exist afterwards, as on a worker
        base, ours = [], []
        for _ in range(args.reps):
            base.append(with_spark_submit())
            ours.append(with_mltrain())
        b, o = statistics.median(base), statistics.median(ours)
        print(f"{'case':<34}{'median s':>10}{'ratio':>8}")
        print(f"{'spark-submit job.py':<34}{b:>10.2f}{1:>8.2f}")
        print(f"{'mltrain submit + wait':<34}{o:>10.2f}{o / b:>8.2f}")
        print(f"({args.reps} reps each, interleaved; master {master})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
