"""DAGs the tests run: the deferrable wait, and submit -> RunSensor in its three modes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_mltrain.operators.script_run import ScriptRunOperator
from airflow_provider_mltrain.sensors.run import RunSensor

SCRIPTS = Path(__file__).parent / "scripts"
START = datetime(2026, 1, 1)

with DAG("mltrain_test_deferrable", schedule=None, start_date=START, catchup=False):
    ScriptRunOperator(
        task_id="train",
        experiment_name="deferrable",
        source_directory=str(SCRIPTS),
        script="metrics.py",
        arguments=["--seconds", 2],
        deferrable=True,
        poll_interval=0.5,
    )

with DAG("mltrain_test_deferrable_fail", schedule=None, start_date=START, catchup=False):
    ScriptRunOperator(
        task_id="train",
        experiment_name="deferrable-fail",
        source_directory=str(SCRIPTS),
        script="fail.py",
        arguments=["--code", 4],
        deferrable=True,
        poll_interval=0.5,
    )

with DAG("mltrain_test_deferrable_timeout", schedule=None, start_date=START, catchup=False):
    ScriptRunOperator(
        task_id="train",
        experiment_name="deferrable-timeout",
        source_directory=str(SCRIPTS),
        script="sleep.py",
        deferrable=True,
        timeout=2,
        cancel_grace_period=1,
        poll_interval=0.5,
    )

with DAG("mltrain_test_sensor", schedule=None, start_date=START, catchup=False):
    submit = ScriptRunOperator(
        task_id="submit",
        experiment_name="sensor",
        source_directory=str(SCRIPTS),
        script="metrics.py",
        # Long enough to be still running when wait_deferred starts, even on a busy machine.
        arguments=["--seconds", 45],
        wait_for_completion=False,
    )
    run_id = "{{ ti.xcom_pull(task_ids='submit') }}"
    poke = RunSensor(task_id="wait_poke", run_id=run_id, mode="poke", poke_interval=0.5)
    deferred = RunSensor(task_id="wait_deferred", run_id=run_id, deferrable=True, poke_interval=0.5)
    submit >> deferred >> poke  # the deferred sensor waits first, while the run is still going

with DAG("mltrain_test_mapped", schedule=None, start_date=START, catchup=False):
    ScriptRunOperator.partial(
        task_id="sweep",
        experiment_name="sweep",
        source_directory=str(SCRIPTS),
        script="metrics.py",
        max_active_tis_per_dagrun=2,
        poll_interval=0.5,
    ).expand(arguments=[["--seconds", 0], ["--seconds", 0.3], ["--seconds", 0.6]])
