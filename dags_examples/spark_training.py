"""Prepare data, then train a Spark MLlib logistic regression on a Spark cluster.

Create an Airflow connection of type ``spark`` named ``spark_cluster`` (or pass another id as the
``compute_target`` param): host ``spark://MASTER`` with port 7077 for a standalone cluster (``yarn``,
``k8s://https://API`` or ``local[*]`` work too), and optionally the ``master-ui`` extra
(``http://MASTER:8080``) so the application's state is read from the master. ``prepare_data`` writes
a generated, labelled CSV; ``train`` submits ``train_spark_lr/train.py`` with ``spark-submit`` from
this machine (the gateway; driver in client mode) and streams the driver's output into the task log.
The executors read the CSV by path: on a real cluster, point ``data_dir`` at storage they share
(HDFS, S3, NFS). See docs/targets/spark.md.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import Param, dag, task

from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

HERE = Path(__file__).parent
DATA_DIR = os.environ.get("MLTRAIN_EXAMPLE_DATA", "/tmp/mltrain-example-data")


@dag(
    dag_id="mltrain_spark_training",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "compute_target": Param("spark_cluster", type="string", description="Id of a spark connection"),
        "data_dir": Param(DATA_DIR, type="string", description="A folder the executors can read"),
    },
    tags=["mltrain", "example", "spark"],
)
def mltrain_spark_training():
    @task
    def prepare_data(data_dir: str, rows: int = 4000, seed: int = 42) -> str:
        """Two noisy Gaussian blobs in 4 dimensions: linearly separable, up to the noise."""
        import csv
        import random

        rng = random.Random(seed)
        path = Path(data_dir) / "spark_lr.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["f0", "f1", "f2", "f3", "label"])
            for _ in range(rows):
                label = rng.random() < 0.5
                center = 1.0 if label else -1.0
                out.writerow([round(rng.gauss(center, 1.2), 5) for _ in range(4)] + [int(label)])
        os.replace(tmp, path)
        return str(path)

    data = prepare_data("{{ params.data_dir }}")
    train = ScriptRunOperator(
        task_id="train",
        experiment_name="spark-logistic-regression",
        source_directory=str(HERE / "train_spark_lr"),
        script="train.py",
        arguments=["--data", data, "--reg", 0.01],
        compute_target="{{ params.compute_target }}",
        framework="pyspark",
        # spark-submit settings of this run; connection-wide ones go in the connection's spark-conf.
        target_options={"executor_memory": "512m", "conf": {"spark.sql.shuffle.partitions": "4"}},
        poll_interval=2,
    )

    @task
    def check_accuracy(mltrain_run_id: str, minimum: float = 0.8) -> float:
        from airflow_provider_mltrain import Workspace

        accuracy = Workspace().get_run(mltrain_run_id).get_metrics("accuracy")["accuracy"]
        if accuracy < minimum:
            raise ValueError(f"accuracy {accuracy:.3f} is below {minimum}")
        return accuracy

    data >> train
    check_accuracy(train.output)


mltrain_spark_training()
