"""DAGs run through a real Airflow (``airflow dags test``) on SQLite, each in its own process."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_mltrain import Workspace

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    env = _env(home, ROOT / "dags_examples")
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return home


def _env(home: Path, dags: Path = ROOT / "dags_examples", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLTRAIN"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        # Plain log lines on every Airflow version (3.1 colours them even into a pipe).
        AIRFLOW__LOGGING__COLORED_CONSOLE_LOG="False",
        MLTRAIN_WORKSPACE=str(home / "mltrain"),
        MLTRAIN_EXAMPLE_DATA=str(home / "example-data"),
        **extra,
    )
    return env


def dags_test(home: Path, dags: Path, dag_id: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AIRFLOW, "dags", "test", dag_id], env=_env(home, dags), capture_output=True, text=True, timeout=600
    )


def xcom(home: Path, dag_id: str, task_id: str, key: str):
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute(
            "SELECT value FROM xcom WHERE dag_id=? AND task_id=? AND key=?", (dag_id, task_id, key)
        ).fetchall()
    assert len(rows) == 1, rows
    value = rows[0][0]
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def test_provider_is_registered(airflow_home):
    proc = subprocess.run(
        [AIRFLOW, "providers", "list", "-o", "json"],
        env=_env(airflow_home, ROOT / "dags_examples"),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    providers = {p["package_name"]: p for p in json.loads(proc.stdout[proc.stdout.index("[") :])}
    assert "airflow-provider-mltrain" in providers


def test_quickstart_trains_and_records_the_run(airflow_home):
    proc = dags_test(airflow_home, ROOT / "dags_examples", "mltrain_quickstart")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    ws = Workspace(airflow_home / "mltrain")
    runs = ws.experiment("digits").list_runs()
    assert len(runs) == 1
    run = runs[0]
    assert run.get_status() == "Completed"
    metrics = run.get_metrics()
    assert len(metrics["accuracy"]) == 15
    assert metrics["final_accuracy"] > 0.9
    assert "outputs/model.pkl" in run.get_file_names()
    assert run.properties["airflow.dag_id"] == "mltrain_quickstart"
    assert run.tags["dag_run"].startswith("manual__")
    assert xcom(airflow_home, "mltrain_quickstart", "train", "return_value") == run.id
    details = xcom(airflow_home, "mltrain_quickstart", "train", "run_details")
    assert details["status"] == "Completed" and details["run_id"] == run.id
    assert (
        xcom(airflow_home, "mltrain_quickstart", "check_accuracy", "return_value")
        == metrics["final_accuracy"]
    )
    # The training log streamed into the task log.
    assert "epoch 15  accuracy" in proc.stdout + proc.stderr


def test_managed_environment_dag_builds_from_yaml(airflow_home):
    proc = dags_test(airflow_home, ROOT / "dags_examples", "mltrain_managed_environment")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "mltrain: building environment" in out  # build output in the task log
    run = Workspace(airflow_home / "mltrain").experiment("digits-managed-env").list_runs()[0]
    env = run.get_details()["environment"]
    assert run.get_status() == "Completed"
    assert env["name"] == "digits-sklearn" and env["managed"] is True
    assert "scikit-learn==1.9.1" in env["packages"] and "numpy==2.4.6" in env["packages"]
    assert env["interpreter"].startswith(str(airflow_home / "mltrain" / "targets" / "local" / "envs"))
    assert len(run.get_metrics()["accuracy"]) == 10


def test_failing_script_fails_the_task_with_exit_code_and_log_tail(airflow_home):
    proc = dags_test(airflow_home, ROOT / "tests" / "dags", "mltrain_test_failing")
    out = proc.stdout + proc.stderr
    assert "failed with exit code 3" in out, out[-4000:]
    assert "something went wrong, exiting with 3" in out
    run = Workspace(airflow_home / "mltrain").experiment("failing").list_runs()[0]
    details = run.get_details()
    assert details["status"] == "Failed" and details["exit_code"] == 3
    assert details["arguments"] == ["--code", "3"]  # templated from params


def test_a_task_refused_before_submitting_says_why_and_nothing_else(airflow_home):
    proc = dags_test(airflow_home, ROOT / "tests" / "dags", "mltrain_test_not_submitted")
    out = proc.stdout + proc.stderr
    assert "script 'fial.py' does not exist" in out and "Did you mean 'fail.py'?" in out, out[-4000:]
    # The "MLTrain run" link of a task without a run is empty, without an error about its XCom.
    assert "XCom not found" not in out, out[-4000:]
    assert xcom(airflow_home, "mltrain_test_not_submitted", "train", "_link_MLTrainRunLink") == ""


def test_timeout_cancels_the_run_and_fails_the_task(airflow_home):
    proc = dags_test(airflow_home, ROOT / "tests" / "dags", "mltrain_test_timeout")
    out = proc.stdout + proc.stderr
    assert "timed out after 2" in out, out[-4000:]
    run = Workspace(airflow_home / "mltrain").experiment("timeout").list_runs()[0]
    assert run.get_status() == "Canceled"


def test_deferrable_wait_completes_with_log_and_xcoms(airflow_home):
    proc = dags_test(airflow_home, ROOT / "tests" / "dags", "mltrain_test_deferrable")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Pausing task as DEFERRED" in out and "Trigger completed" in out
    # The run's log reached the task log through the trigger.
    assert re.search(r"all done\s+\[airflow_provider_mltrain\.triggers\.run\.RunTrigger\]", out), out[-4000:]
    run = Workspace(airflow_home / "mltrain").experiment("deferrable").list_runs()[0]
    assert run.get_status() == "Completed" and run.get_metrics()["score"] == [0, 0.5, 1.0]
    assert xcom(airflow_home, "mltrain_test_deferrable", "train", "return_value") == run.id
    assert xcom(airflow_home, "mltrain_test_deferrable", "train", "run_details")["status"] == "Completed"


def test_deferrable_failure_and_timeout(airflow_home):
    proc = dags_test(airflow_home, ROOT / "tests" / "dags", "mltrain_test_deferrable_fail")
    out = proc.stdout + proc.stderr
    assert "failed with exit code 4" in out and "something went wrong, exiting with 4" in out, out[-4000:]
    proc = dags_test(airflow_home, ROOT / "tests" / "dags", "mltrain_test_deferrable_timeout")
    out = proc.stdout + proc.stderr
    assert "timed out after 2" in out, out[-4000:]
    run = Workspace(airflow_home / "mltrain").experiment("deferrable-timeout").list_runs()[0]
    assert run.get_status() == "Canceled"


def test_submit_then_sensors(airflow_home):
    proc = dags_test(airflow_home, ROOT / "tests" / "dags", "mltrain_test_sensor")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    run = Workspace(airflow_home / "mltrain").experiment("sensor").list_runs()[0]
    assert run.get_status() == "Completed"
    assert "Pausing task as DEFERRED" in out  # wait_deferred went to the trigger
    for task in ("wait_poke", "wait_deferred"):
        assert xcom(airflow_home, "mltrain_test_sensor", task, "run_details")["run_id"] == run.id
    # The "ML Training run" extra link of the finished operator and sensors opens the run's page.
    for task in ("submit", "wait_poke", "wait_deferred"):
        link = xcom(airflow_home, "mltrain_test_sensor", task, "_link_MLTrainRunLink")
        assert link == f"/mltrain/runs/{run.id}", (task, link)


def test_mapped_sweep_gives_one_run_per_index(airflow_home):
    proc = dags_test(airflow_home, ROOT / "tests" / "dags", "mltrain_test_mapped")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    runs = Workspace(airflow_home / "mltrain").experiment("sweep").list_runs()
    assert len(runs) == 3 and {r.get_status() for r in runs} == {"Completed"}
    by_index = {r.properties["airflow.map_index"]: r for r in runs}
    assert set(by_index) == {"0", "1", "2"}
    assert len({r.id for r in runs}) == 3 and all(".m" in r.id for r in runs)
    assert by_index["2"].get_details()["arguments"] == ["--seconds", "0.6"]


# Runs the example's DAG object as ``airflow dags test`` does, with one change: a 1 s retry delay
# instead of the example's minute, so the final failure (and its callback) comes quickly.
DAG_TEST_FAST_RETRY = """
import sys
from datetime import timedelta

from airflow.dag_processing.dagbag import DagBag

dag = DagBag(dag_folder=sys.argv[1]).get_dag(sys.argv[2])
for task in dag.tasks:
    task.retry_delay = timedelta(seconds=1)
dag.test()
"""


def test_retraining_example_notifies_when_training_fails(airflow_home):
    env = _env(airflow_home, ROOT / "dags_examples")
    # The bad data where the example reads it in this Airflow home: the data Asset keeps the URI
    # the home's other DAG runs registered (another URI under the same Asset name is inactive).
    data = Path(env["MLTRAIN_EXAMPLE_DATA"]) / "digits.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("not,a,number\n")  # train.py fails on it
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                DAG_TEST_FAST_RETRY,
                str(ROOT / "dags_examples" / "retraining.py"),
                "mltrain_retrain",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        data.unlink()
    out = proc.stdout + proc.stderr
    ws = Workspace(airflow_home / "mltrain")
    failed = [r for r in ws.experiment("digits-retrain").list_runs() if r.get_status() == "Failed"]
    assert len(failed) == 2, out[-4000:]  # the first try and its retry, each its own run
    latest = next(r for r in failed if r.id.endswith(".a2"))
    alert = re.search(
        r"ALERT mltrain: mltrain_retrain\.train failed in DAG run (\S+) \(mltrain run (\S+)\)", out
    )
    assert alert, out[-4000:]
    assert alert.group(2) == latest.id
    assert latest.properties["airflow.run_id"] == alert.group(1)
    assert len(re.findall("ALERT mltrain", out)) == 1  # on the final failure only, not on the retry


def test_deferrable_sweep_operator_hands_its_best_run_and_summary_downstream(airflow_home):
    proc = dags_test(airflow_home, ROOT / "tests" / "dags", "mltrain_test_sweep")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Pausing task as DEFERRED" in out and "Trigger completed" in out, out[-4000:]
    ws = Workspace(airflow_home / "mltrain")
    (sweep,) = [r for r in ws.experiment("sweep-operator").list_runs() if r.properties.get("mltrain.kind")]
    assert sweep.get_status() == "Completed"
    children = {c.properties["mltrain.hyperparameters"]: c for c in sweep.get_children()}
    assert len(children) == 3
    good, bad = children['{"--quality": "good"}'], children['{"--quality": "bad"}']
    assert bad.get_status() == "Canceled" and good.get_status() == "Completed"
    assert xcom(airflow_home, "mltrain_test_sweep", "sweep", "return_value") == good.id
    summary = xcom(airflow_home, "mltrain_test_sweep", "sweep", "sweep_summary")
    assert summary["sweep_id"] == sweep.id and summary["status"] == "Completed"
    assert summary["children"][0]["run_id"] == good.id and len(summary["children"]) == 3
    assert xcom(airflow_home, "mltrain_test_sweep", "report", "return_value") == {
        "best": good.id,
        "best_of_summary": good.id,
        "stopped": [bad.id],
    }
