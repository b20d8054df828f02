"""The retraining showcase (dags_examples/retraining.py) end to end through a real Airflow
(``airflow dags test``, SQLite): the data DAG's Asset queues training, training reads it as an
input and registers the model, and only a run that beats the model in production publishes the
model Asset that the deploy DAG is scheduled on."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest

from airflow_provider_mltrain import Model, Workspace
from tests.test_dags import AIRFLOW, ROOT, _env

pytestmark = pytest.mark.airflow


def _dags_test(env, dag_id, *args):
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", dag_id, *args], env=env, capture_output=True, text=True, timeout=900
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "state=success" in out, out[-6000:]
    return out


def _asset_state(home):
    """The events of each Asset (by URI) and the DAGs the scheduler would start next."""
    with sqlite3.connect(home / "airflow.db") as db:
        events = db.execute(
            "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id ORDER BY e.id"
        ).fetchall()
        queued = db.execute("SELECT target_dag_id FROM asset_dag_run_queue").fetchall()
    by_asset: dict[str, list[dict]] = {}
    for name, extra in events:  # name: the URI
        by_asset.setdefault(name.rstrip("/"), []).append(json.loads(extra) if extra else {})
    return by_asset, {dag_id for (dag_id,) in queued}


@pytest.mark.timeout(2400)  # five `airflow dags test` runs, each a fresh process
def test_only_a_better_model_reaches_the_deploy_dag(tmp_path):
    home = tmp_path / "home"
    env = _env(home, ROOT / "dags_examples", AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False")
    for argv in (["db", "migrate"], ["dags", "reserialize"]):
        subprocess.run([AIRFLOW, *argv], env=env, check=True, capture_output=True, timeout=300)
    data = home / "example-data"
    training_data, model_asset = f"file://{data}/digits.csv", f"file://{data}/models/digits"

    _dags_test(env, "mltrain_prepare_data")
    events, queued = _asset_state(home)
    assert len(events[training_data]) == 1 and model_asset not in events
    assert "mltrain_retrain" in queued and "mltrain_deploy" not in queued

    out = _dags_test(env, "mltrain_retrain", "2026-11-30")  # 10 epochs
    assert "model 'digits' has no version at 'production' yet: publishing" in out
    ws = Workspace(home / "mltrain")
    first = Model(ws, "digits")
    assert first.version == 1
    run = first.run
    assert run.get_details()["inputDatasets"][0]["uri"] == str(data / "digits.csv")
    accuracy = run.get_metrics("final_accuracy")["final_accuracy"]
    events, queued = _asset_state(home)
    [published] = events[model_asset]
    assert published["mltrain_run_id"] == run.id and published["metrics"]["final_accuracy"] == accuracy
    assert published["uri"].startswith(f"file://{data}/models/digits/")
    assert (
        data / "models" / "digits" / published["uri"].rstrip("/").rsplit("/", 1)[1] / "model.pkl"
    ).exists()
    assert "mltrain_deploy" in queued  # the deploy DAG's Asset condition is met

    out = _dags_test(env, "mltrain_deploy")  # what the scheduler starts next (by hand: the latest)
    assert Model(ws, "digits", alias="production").version == 1
    assert (data / "serving" / "digits" / "current" / "model" / "model.pkl").is_file()

    out = _dags_test(env, "mltrain_retrain", "2026-12-01", "-c", json.dumps({"epochs": 1}))
    second = Model(ws, "digits")
    assert second.version == 2  # registered all the same: the registry keeps every candidate
    worse = second.run.get_metrics("final_accuracy")["final_accuracy"]
    assert worse < accuracy
    assert f"final_accuracy={worse} vs {accuracy} of digits@production (v1): no Asset event published" in out
    events, _ = _asset_state(home)
    assert len(events[model_asset]) == 1  # no second event: deploy is not triggered again
    assert Model(ws, "digits", alias="production").version == 1
