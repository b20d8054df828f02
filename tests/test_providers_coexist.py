"""Beside the official SSH and Apache Spark providers: their connection types stay theirs, and one
connection of each serves their operator and ours (``airflow dags test`` on the real sshd and Spark)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_provider_mltrain import Workspace
from tests.targets.harnesses.spark import connection_json as spark_connection_json
from tests.targets.harnesses.spark import spark_service
from tests.targets.harnesses.ssh import require_ssh
from tests.test_dags import AIRFLOW, _env

pytestmark = [pytest.mark.airflow, pytest.mark.integration]

OFFICIAL_HOOKS = {
    "ssh": ("airflow.providers.ssh.hooks.ssh.SSHHook", "apache-airflow-providers-ssh"),
    "spark": (
        "airflow.providers.apache.spark.hooks.spark_submit.SparkSubmitHook",
        "apache-airflow-providers-apache-spark",
    ),
}

DAG = """
from datetime import datetime

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.ssh.operators.ssh import SSHOperator
from airflow.sdk import DAG, BaseHook, task

from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

HERE = {here!r}

with DAG("mltrain_test_coexist", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

    @task
    def hooks_of_the_connections():
        for conn_id in ("vm", "cluster"):
            hook = BaseHook.get_connection(conn_id).get_hook()
            print(f"HOOK {{conn_id}} {{type(hook).__module__}}.{{type(hook).__name__}}")

    ssh_command = SSHOperator(
        task_id="ssh_command", ssh_conn_id="vm", command="echo ssh-operator-on-$(whoami)"
    )
    ssh_train = ScriptRunOperator(
        task_id="ssh_train",
        experiment_name="coexist-ssh",
        source_directory=HERE + "/src",
        script="train.py",
        compute_target="vm",
        poll_interval=1,
    )
    spark_submit = SparkSubmitOperator(
        task_id="spark_submit",
        conn_id="cluster",
        application=HERE + "/src/count.py",
        conf={{"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}},
        executor_memory="512m",
    )
    spark_train = ScriptRunOperator(
        task_id="spark_train",
        experiment_name="coexist-spark",
        source_directory=HERE + "/src",
        script="count.py",
        compute_target="cluster",
        framework="pyspark",
        target_options={{"executor_memory": "512m"}},
        poll_interval=1,
    )
    hooks_of_the_connections() >> ssh_command >> ssh_train >> spark_submit >> spark_train
"""

COUNT = """
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
print("counted", spark.range(1000).count(), "rows on", spark.sparkContext.master)
spark.stop()
"""


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home_coexist")
    subprocess.run([AIRFLOW, "db", "migrate"], env=_env(home), check=True, capture_output=True, timeout=300)
    return home


def test_the_official_providers_keep_their_connection_types(airflow_home):
    proc = subprocess.run(
        [AIRFLOW, "providers", "hooks", "-o", "json", "--verbose"],
        env=_env(airflow_home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "already registered" not in out, out[-4000:]
    hooks = {h["connection_type"]: h for h in json.loads(proc.stdout[proc.stdout.index("\n[") :])}
    for conn_type, (hook, package) in OFFICIAL_HOOKS.items():
        assert (hooks[conn_type]["class"], hooks[conn_type]["package_name"]) == (hook, package)
    for ours in ("mltrain_docker", "mltrain_ssh", "mltrain_spark"):
        assert hooks[ours]["package_name"] == "airflow-provider-mltrain"


@pytest.mark.timeout(1200)  # the DAG's own deadline is 900 s: four tasks on SSH and Spark, on a busy VM
def test_one_connection_serves_the_official_operators_and_ours(airflow_home, tmp_path):
    ssh = require_ssh()
    master, ui = spark_service()
    dags = tmp_path / "dags"
    (tmp_path / "src").mkdir()
    train = "import getpass\nprint('script-run-on-' + getpass.getuser())\n"
    (tmp_path / "src" / "train.py").write_text(train)
    (tmp_path / "src" / "count.py").write_text(textwrap.dedent(COUNT))
    dags.mkdir()
    (dags / "coexist.py").write_text(DAG.format(here=str(tmp_path)))
    host_key = " ".join(Path(ssh["HOST_KEY_FILE"]).read_text().split()[:2])
    # As the official SSH provider's docs define it: host key pinned, checked; our extra beside.
    vm = {
        "conn_type": "ssh",
        "host": ssh["HOST"],
        "port": int(ssh["PORT"]),
        "login": ssh["USER"],
        "extra": {
            "key_file": ssh["KEY_FILE"],
            "host_key": host_key,
            "no_host_key_check": "false",
            "look_for_keys": "false",
            "remote_root": "~/mltrain-tests/coexist",
        },
    }
    env = _env(
        airflow_home,
        dags,
        AIRFLOW_CONN_VM=json.dumps(vm),
        AIRFLOW_CONN_CLUSTER=spark_connection_json(master, ui, **{"rest-port": "6066"}),
    )
    # spark-submit of this venv's pyspark, for the official operator (ours finds it by itself).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = [AIRFLOW, "dags", "test", "mltrain_test_coexist"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    for conn_id, conn_type in (("vm", "ssh"), ("cluster", "spark")):
        assert f"HOOK {conn_id} {OFFICIAL_HOOKS[conn_type][0]}" in out, out[-6000:]
    assert "ssh-operator-on-mltrain-vm" in out  # SSHOperator's output
    assert "script-run-on-mltrain-vm" in out  # our run's log, streamed from the VM
    assert "counted 1000 rows on spark://" in out  # SparkSubmitOperator's driver output
    ws = Workspace(airflow_home / "mltrain")
    ssh_run = ws.experiment("coexist-ssh").list_runs()[0]
    spark_run = ws.experiment("coexist-spark").list_runs()[0]
    assert ssh_run.get_status() == "Completed" and ssh_run.get_details()["target"] == "vm"
    assert spark_run.get_status() == "Completed" and spark_run.get_details()["target"] == "cluster"
    assert "counted 1000 rows on spark://" in spark_run.get_log_tail()
    assert "DagRun Finished" in out and "state=success" in out
