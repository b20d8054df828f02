"""Data in, a better model out: retraining chained between a data pipeline and a deployment.

* ``mltrain_prepare_data`` is the data pipeline: it writes a fresh training set and marks the
  ``digits_training_data`` Asset as updated.
* ``mltrain_retrain`` runs whenever that Asset is updated, and every Monday at 03:00 anyway. Its
  ``train`` task reads the Asset as the run's input ``train``, writes the model to the run's output
  ``model`` (uploaded to ``MODELS``), and registers it as the next version of the model ``digits``.
  Only when the run's ``final_accuracy`` beats the version at the ``production`` alias does it
  publish an event of the ``MODELS`` Asset (``publish_if_better``). Any failed task sends a
  notification (here: the log; swap in Slack, a pager, e-mail).
* ``mltrain_deploy`` runs on that Asset, so only for a better model: it moves the ``production``
  alias to the new version and copies its files to ``SERVING_DIR/current``, where a model server
  would read them. Run by hand, it deploys the latest version.

Everything stays on this machine (``MLTRAIN_EXAMPLE_DATA``, default ``/tmp/mltrain-example-data``);
for a deployment, make ``DATA`` and ``MODELS`` object-store URLs (``s3://bucket/...``) and give
their credentials with ``Input(..., conn_id=...)`` / ``Output(..., conn_id=...)``.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, task
from airflow.timetables.trigger import CronTriggerTimetable

from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

HERE = Path(__file__).parent
DATA_DIR = Path(os.environ.get("MLTRAIN_EXAMPLE_DATA", "/tmp/mltrain-example-data"))
TRAINING_DATA = Asset(name="digits_training_data", uri=f"file://{DATA_DIR / 'digits.csv'}")
# Each run's model goes to its own folder under MODELS; the Asset the operator publishes is
# MODELS itself, named by its URI.
MODELS = f"file://{DATA_DIR / 'models' / 'digits'}/"
DIGITS_MODEL = Asset(MODELS)
SERVING_DIR = DATA_DIR / "serving" / "digits"
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
    params={"epochs": 10},
    default_args={"on_failure_callback": notify_failure, "retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["mltrain", "example"],
):
    ScriptRunOperator(
        task_id="train",
        experiment_name="digits-retrain",
        source_directory=str(HERE / "train_digits"),
        script="train.py",
        arguments=[
            "--epochs",
            "{{ params.epochs }}",
            "--data",
            "${{inputs.train}}",
            "--model-dir",
            "${{outputs.model}}",
        ],
        inputs={"train": TRAINING_DATA},
        # An Asset-triggered run has no logical date: name the folder by when the run was due.
        outputs={"model": MODELS + "{{ dag_run.run_after | ts_nodash }}/"},
        register_model={
            "name": "digits",
            "path": "outputs/model",
            "tags": {"trigger": "{{ dag_run.run_type }}"},
        },
        publish_if_better={"metric": "final_accuracy", "model": "digits", "alias": "production"},
        tags={"trigger": "{{ dag_run.run_type }}"},
        poll_interval=2,
    )


with DAG(
    dag_id="mltrain_deploy",
    schedule=[DIGITS_MODEL],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"on_failure_callback": notify_failure},
    tags=["mltrain", "example"],
):

    @task
    def deploy(*, triggering_asset_events=None) -> str:
        """Promote the model version behind the event (by hand: the latest) and serve its files."""
        from airflow_provider_mltrain import Model, Workspace

        ws = Workspace()
        events = triggering_asset_events[DIGITS_MODEL] if triggering_asset_events else []
        if events:
            run_id = events[-1].extra["mltrain_run_id"]
            model = Model.list(ws, name="digits", run_id=run_id)[0]
            log.info("Run %s made a better model: deploying %s", run_id, model.id)
        else:
            model = Model(ws, "digits")
            log.info("Started by hand: deploying the latest version, %s", model.id)
        target = SERVING_DIR / f"v{model.version}"
        model.download(target, exist_ok=True)
        # The server reads SERVING_DIR/current: a link switched in one rename.
        link = SERVING_DIR / ".current.new"
        link.unlink(missing_ok=True)
        link.symlink_to(target.name)
        link.replace(SERVING_DIR / "current")
        model.set_alias("production")
        return model.id

    deploy()
