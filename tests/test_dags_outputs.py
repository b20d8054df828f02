"""An output's Asset event, through a real Airflow (``airflow dags test``, SQLite): the event
carries the run, and the scheduler's queue holds the downstream DAG that schedules on the Asset."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import uuid

import pytest

from tests.conftest import s3_options
from tests.test_dags import AIRFLOW, _env

pytestmark = pytest.mark.airflow

DAGS = """
import datetime, os, pathlib
from airflow.sdk import DAG, Asset
from airflow_provider_mltrain import Output
from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

PREFIX = os.environ["MLTRAIN_TEST_OUTPUT_PREFIX"]
SRC = pathlib.Path(__file__).parent / "train"

with DAG("mltrain_test_produce_model", schedule=None, start_date=datetime.datetime(2026, 1, 1)):
    ScriptRunOperator(
        task_id="train",
        experiment_name="assets",
        source_directory=str(SRC),
        script="train.py",
        arguments=["--out", "${{outputs.model}}"],
        outputs={"model": Output(f"s3://{PREFIX}/models/{{{{ ds }}}}/", conn_id="mltrain_test_s3")},
        poll_interval=0.5,
    )

with DAG(
    "mltrain_test_deploy_model",
    schedule=[Asset(f"s3://{PREFIX}/models/")],
    start_date=datetime.datetime(2026, 1, 1),
):
    from airflow.providers.standard.operators.empty import EmptyOperator

    EmptyOperator(task_id="deploy")

with DAG("mltrain_test_produce_better", schedule=None, start_date=datetime.datetime(2026, 1, 1)):
    ScriptRunOperator(
        task_id="train",
        experiment_name="assets",
        source_directory=str(SRC),
        script="train.py",
        arguments=["--out", "${{outputs.model}}"],
        outputs={"model": Output(f"s3://{PREFIX}/better/{{{{ ds }}}}/", conn_id="mltrain_test_s3")},
        register_model={"name": "churn", "path": "outputs/model"},
        publish_if_better={"metric": "auc", "model": "churn", "alias": "production"},
        poll_interval=0.5,
    )
"""

TRAIN = """
import argparse, os
from mltrain import Run
args = argparse.ArgumentParser()
args.add_argument("--out")
out = args.parse_args().out
open(os.path.join(out, "model.txt"), "w").write("weights")
Run.get_context().log("auc", 0.91)
"""


def _setup(tmp_path):
    options = s3_options()
    prefix = f"mltrain-test/dag-outputs-{uuid.uuid4().hex}"
    dags = tmp_path / "dags"
    (dags / "train").mkdir(parents=True)
    (dags / "assets_dags.py").write_text(DAGS)
    (dags / "train" / "train.py").write_text(TRAIN)
    home = tmp_path / "home"
    conn = json.dumps(
        {
            "conn_type": "aws",
            "login": options["key"],
            "password": options["secret"],
            "extra": {"endpoint_url": options["client_kwargs"]["endpoint_url"]},
        }
    )
    env = _env(
        home,
        dags,
        AIRFLOW_CONN_MLTRAIN_TEST_S3=conn,
        MLTRAIN_TEST_OUTPUT_PREFIX=prefix,
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
    )
    for argv in (["db", "migrate"], ["dags", "reserialize"]):
        subprocess.run([AIRFLOW, *argv], env=env, check=True, capture_output=True, timeout=300)
    return home, env, prefix


def _dags_test(env, dag_id, day):
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", dag_id, day], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def test_publish_if_better_publishes_only_when_the_run_beats_the_promoted_model(tmp_path):
    import s3fs

    from airflow_provider_mltrain import Model, Workspace

    home, env, prefix = _setup(tmp_path)
    fs = s3fs.S3FileSystem(**s3_options(), skip_instance_cache=True)
    try:
        out = _dags_test(env, "mltrain_test_produce_better", "2026-11-30")
        assert "has no version at 'production' yet: publishing" in out
        Model(Workspace(home / "mltrain"), "churn", version=1).set_alias("production")
        out = _dags_test(env, "mltrain_test_produce_better", "2026-12-01")
        assert "auc=0.91 vs 0.91 of churn@production (v1): no Asset event published" in out
        assert fs.exists(f"{prefix}/better/2026-12-01/model.txt")  # uploaded all the same
    finally:
        fs.rm(prefix, recursive=True)
    with sqlite3.connect(home / "airflow.db") as db:
        events = db.execute(
            "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id"
        ).fetchall()
    assert [(uri, json.loads(extra)["uri"]) for uri, extra in events] == [
        (f"s3://{prefix}/better", f"s3://{prefix}/better/2026-11-30/")
    ]


def test_an_uploaded_output_emits_an_asset_event_that_queues_the_downstream_dag(tmp_path):
    import s3fs

    home, env, prefix = _setup(tmp_path)
    _dags_test(env, "mltrain_test_produce_model", "2026-11-30")

    fs = s3fs.S3FileSystem(**s3_options(), skip_instance_cache=True)
    try:
        assert fs.cat(f"{prefix}/models/2026-11-30/model.txt") == b"weights"
    finally:
        fs.rm(prefix, recursive=True)
    with sqlite3.connect(home / "airflow.db") as db:
        events = db.execute(
            "SELECT a.uri, e.extra, e.source_dag_id FROM asset_event e JOIN asset a ON a.id = e.asset_id"
        ).fetchall()
        queued = db.execute(
            "SELECT q.target_dag_id FROM asset_dag_run_queue q JOIN asset a ON a.id = q.asset_id"
        ).fetchall()
    assert len(events) == 1, events
    uri, extra, source = events[0]
    extra = json.loads(extra)
    assert uri == f"s3://{prefix}/models" and source == "mltrain_test_produce_model"
    assert extra["experiment"] == "assets" and extra["output"] == "model"
    assert extra["uri"] == f"s3://{prefix}/models/2026-11-30/"
    assert extra["metrics"] == {"auc": 0.91}
    assert extra["mltrain_run_id"].startswith("mltrain_test_produce_model.train.")
    assert queued == [("mltrain_test_deploy_model",)]  # the scheduler's next run of the deploy DAG
