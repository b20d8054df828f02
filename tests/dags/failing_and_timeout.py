"""DAGs the tests run: a script that fails, and one that overruns its timeout."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

SCRIPTS = Path(__file__).parent / "scripts"

with DAG("mltrain_test_failing", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    ScriptRunOperator(
        task_id="train",
        experiment_name="failing",
        source_directory=str(SCRIPTS),
        script="fail.py",
        arguments=["--code", "{{ params.code }}"],
        params={"code": 3},
        poll_interval=0.5,
    )

with DAG("mltrain_test_timeout", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    ScriptRunOperator(
        task_id="train",
        experiment_name="timeout",
        source_directory=str(SCRIPTS),
        script="sleep.py",
        timeout=2,
        cancel_grace_period=1,
        poll_interval=0.5,
    )

with DAG("mltrain_test_not_submitted", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    ScriptRunOperator(
        task_id="train",
        experiment_name="not-submitted",
        source_directory=str(SCRIPTS),
        script="fial.py",  # mistyped: refused before anything is submitted
    )
