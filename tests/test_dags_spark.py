"""The Spark example DAG through a real Airflow (``airflow dags test``) and the real test cluster."""

from __future__ import annotations

import subprocess

import pytest

from airflow_provider_mltrain import Workspace
from tests.targets.harnesses.spark import connection_json, spark_service
from tests.test_dags import AIRFLOW, ROOT, _env, airflow_home, xcom  # noqa: F401 - fixture

pytestmark = pytest.mark.airflow


def test_spark_example_prepares_data_and_trains_on_the_cluster(airflow_home):  # noqa: F811
    master, ui = spark_service()
    env = _env(airflow_home, ROOT / "dags_examples")
    env["AIRFLOW_CONN_SPARK_CLUSTER"] = connection_json(master, ui)
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", "mltrain_spark_training"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "held-out rows" in out  # the driver's output streamed into the task log
    run = Workspace(airflow_home / "mltrain").experiment("spark-logistic-regression").list_runs()[0]
    details = run.get_details()
    assert details["status"] == "Completed" and details["target"] == "spark_cluster"
    assert run.properties["mltrain.framework"] == "pyspark"
    metrics = run.get_metrics()
    assert metrics["accuracy"] > 0.8 and len(metrics["loss"]) > 1
    app_id = run.properties["spark.application_id"]
    assert run.tags["spark_app"] == app_id and app_id.startswith("app-")
    assert any(name.startswith("outputs/model/") for name in run.get_file_names())
    assert (
        xcom(airflow_home, "mltrain_spark_training", "check_accuracy", "return_value") == metrics["accuracy"]
    )


def test_spark_example_parses_without_the_connection(airflow_home):  # noqa: F811
    proc = subprocess.run(
        [AIRFLOW, "dags", "list-import-errors", "-o", "json"],
        env=_env(airflow_home, ROOT / "dags_examples"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "spark_training" not in proc.stdout
