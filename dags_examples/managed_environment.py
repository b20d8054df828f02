"""Train the digits classifier in a managed environment described by a YAML file next to the script.

The first run builds a virtualenv from ``train_digits/environment.yaml`` (scikit-learn, NumPy) with
uv and caches it by content hash; later runs, and every other DAG asking for the same spec, reuse it.
The build's output is in the ``train`` task's log.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import dag

from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

HERE = Path(__file__).parent


@dag(
    dag_id="mltrain_managed_environment",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["mltrain", "example"],
)
def mltrain_managed_environment():
    ScriptRunOperator(
        task_id="train",
        experiment_name="digits-managed-env",
        source_directory=str(HERE / "train_digits"),
        script="train.py",
        arguments=["--epochs", 10],
        environment="environment.yaml",  # found in source_directory; a name or an Environment works too
        poll_interval=2,
    )


mltrain_managed_environment()
