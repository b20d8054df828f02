"""Quickstart: train a digits classifier on this machine and gate on its accuracy.

``train`` snapshots ``train_digits/``, runs ``train.py`` on the local target and streams its log
into the task log; its XCom is the run id. ``check_accuracy`` reads the run's metrics from the run
history and fails the DAG run if the model is not good enough.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import dag, task

from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

HERE = Path(__file__).parent


@dag(
    dag_id="mltrain_quickstart",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["mltrain", "example"],
)
def mltrain_quickstart():
    train = ScriptRunOperator(
        task_id="train",
        experiment_name="digits",
        source_directory=str(HERE / "train_digits"),
        script="train.py",
        arguments=["--epochs", 15, "--alpha", 1e-4],
        compute_target="local",
        tags={"dag_run": "{{ run_id }}"},
        poll_interval=2,
    )

    @task
    def check_accuracy(mltrain_run_id: str, minimum: float = 0.9) -> float:
        from airflow_provider_mltrain import Workspace

        accuracy = Workspace().get_run(mltrain_run_id).get_metrics("final_accuracy")["final_accuracy"]
        if accuracy < minimum:
            raise ValueError(f"accuracy {accuracy:.3f} is below {minimum}")
        return accuracy

    check_accuracy(train.output)


mltrain_quickstart()
