"""The Docker example DAG through a real Airflow (``airflow dags test``) and the test Docker engine.

The image build installs the example's pinned scikit-learn and NumPy from the package index once
per machine; later runs reuse ``mltrain-env:<hash>`` from the daemon.
"""

from __future__ import annotations

import subprocess

import pytest

from airflow_provider_mltrain import Workspace
from tests.targets.harnesses.docker import docker_connection, require_docker
from tests.test_dags import AIRFLOW, _env

pytestmark = [pytest.mark.airflow, pytest.mark.integration]


def test_docker_dag_trains_in_a_container(tmp_path):
    require_docker()
    home = tmp_path / "airflow_home"
    subprocess.run([AIRFLOW, "db", "migrate"], env=_env(home), check=True, capture_output=True, timeout=300)
    env = _env(home, AIRFLOW_CONN_DOCKER_GPU=docker_connection())
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", "mltrain_docker_training"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    run = Workspace(home / "mltrain").experiment("digits-docker").list_runs()[0]
    details = run.get_details()
    assert details["status"] == "Completed" and details["target"] == "docker_gpu"
    assert details["environment"]["image"].startswith("mltrain-env:")
    assert details["environment"]["interpreter"] == "/opt/mltrain/env/bin/python"
    assert "scikit-learn==1.9.1" in details["environment"]["packages"]
    assert len(run.get_metrics()["accuracy"]) == 10 and run.get_metrics()["final_accuracy"] > 0.9
    assert "outputs/model.pkl" in run.get_file_names()
    assert "epoch 10  accuracy" in out  # the container's log streamed into the task log
