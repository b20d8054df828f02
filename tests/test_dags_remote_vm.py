"""The remote-VM example DAG through a real Airflow (``airflow dags test``) and the test sshd."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_provider_mltrain import Workspace
from tests.targets.harnesses.ssh import connection_json, require_ssh
from tests.test_dags import AIRFLOW, ROOT, _env

pytestmark = [pytest.mark.airflow, pytest.mark.integration]


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home_remote_vm")
    subprocess.run([AIRFLOW, "db", "migrate"], env=_env(home), check=True, capture_output=True, timeout=300)
    return home


def test_the_dag_parses_without_the_connection(airflow_home):
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(ROOT / 'dags_examples' / 'remote_vm.py')!r})\n"
        "print('DAGS', sorted(bag.dags), len(bag.import_errors))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_env(airflow_home), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "DAGS ['mltrain_remote_vm'] 0" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_remote_vm_dag_trains_on_the_vm(airflow_home):
    ssh = require_ssh()
    remote_root = "~/mltrain-tests/remote-vm-dag"
    env = _env(airflow_home, AIRFLOW_CONN_GPU_VM=connection_json(ssh, remote_root=remote_root))
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", "mltrain_remote_vm"], env=env, capture_output=True, text=True, timeout=900
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    run = Workspace(airflow_home / "mltrain").experiment("digits-remote-vm").list_runs()[0]
    details = run.get_details()
    assert details["status"] == "Completed" and details["target"] == "gpu_vm"
    assert len(run.get_metrics()["accuracy"]) == 10 and run.get_metrics()["final_accuracy"] > 0.9
    assert "outputs/model.pkl" in run.get_file_names()
    assert "/mltrain-tests/remote-vm-dag/envs/" in details["environment"]["interpreter"]
    assert "epoch 10  accuracy" in out  # the VM's log streamed into the task log
