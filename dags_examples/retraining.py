"""Retraining chained after a data pipeline, every week, with a promotion gate and failure alerts.

* ``mltrain_prepare_data`` is the data pipeline: it writes a fresh training set and marks the
  ``digits_training_data`` Asset as updated.
* ``mltrain_retrain`` runs whenever that Asset is updated, and every Monday at 03:00 anyway. It
  trains on the new data, compares the run's accuracy with the best earlier run in the run
  history, and promotes the model (copies it to ``<workspace>/models/digits/``, tags the run)
  only if it is better. Any failed task sends a notification (here: the log; swap in Slack, a
  pager, e-mail).

Run ``mltrain_prepare_data`` first: without its CSV, ``train`` fails (and retries once).
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, task
from airflow.timetables.trigger import CronTriggerTimetable

from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

HERE = Path(__file__).parent
DATA_DIR = Path(os.environ.get("MLTRAIN_EXAMPLE_DATA", "/tmp/mltrain-example-data"))
TRAINING_DATA = Asset(name="digits_training_data", uri=f"file://{DATA_DIR / 'digits.csv'}")
log = logging.getLogger(__name__)


def notify_failure(context) -> None:
    """Failure notification: who failed, which run, where to look."""
    ti = context["ti"]
    run_id = ti.xcom_pull(task_ids=ti.task_id, key="run_id")
    log.error(
        "ALERT mltrain: %s.%s failed in DAG run %s (mltrain run %s): %s",
        ti.dag_id,
        ti.task_id,
        ti.run_id,
        run_id or "-",
        context.get("exception"),
    )


with DAG(
    dag_id="mltrain_prepare_data",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["mltrain", "example"],
):

    @task(outlets=[TRAINING_DATA])
    def export_training_data() -> str:
        import numpy as np
        from sklearn.datasets import load_digits

        digits = load_digits()
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path = DATA_DIR / "digits.csv"
        np.savetxt(path, np.column_stack([digits.data, digits.target]), delimiter=",", fmt="%g")
        return str(path)

    export_training_data()


with DAG(
    dag_id="mltrain_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=TRAINING_DATA
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"on_failure_callback": notify_failure, "retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["mltrain", "example"],
):
    train = ScriptRunOperator(
        task_id="train",
        experiment_name="digits-retrain",
        source_directory=str(HERE / "train_digits"),
        script="train.py",
        arguments=["--epochs", 10, "--data", str(DATA_DIR / "digits.csv")],
        tags={"trigger": "{{ dag_run.run_type }}"},
        poll_interval=2,
    )

    @task.branch
    def better_than_before(mltrain_run_id: str) -> str:
        """Promote only a model that beats every earlier completed, promoted run."""
        from airflow_provider_mltrain import Workspace

        ws = Workspace()
        new = ws.get_run(mltrain_run_id).get_metrics("final_accuracy")["final_accuracy"]
        best = max(
            (
                r.get_metrics("final_accuracy").get("final_accuracy", 0.0)
                for r in ws.experiment("digits-retrain").list_runs(
                    status="Completed", tags={"promoted": "true"}
                )
                if r.id != mltrain_run_id
            ),
            default=0.0,
        )
        log.info("New run: accuracy %.4f; best promoted so far: %.4f", new, best)
        return "promote" if new > best else "keep_current"

    @task
    def promote(mltrain_run_id: str) -> str:
        from airflow_provider_mltrain import Workspace

        ws = Workspace()
        run = ws.get_run(mltrain_run_id)
        target = ws.root / "models" / "digits"
        target.mkdir(parents=True, exist_ok=True)
        run.download_file("outputs/model.pkl", target / "model.pkl.new")
        shutil.move(target / "model.pkl.new", target / "model.pkl")
        run.tag("promoted", "true")
        return str(target / "model.pkl")

    @task
    def keep_current() -> None:
        log.info("The current model stays.")

    decision = better_than_before(train.output)
    decision >> [promote(train.output), keep_current()]
