from __future__ import annotations

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig
from airflow_provider_mltrain.sensors.run import RunSensor
from airflow_provider_mltrain.version_compat import AirflowException


class FakeTI:
    def __init__(self):
        self.pushed = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


def sensor(workspace, run_id):
    return RunSensor(task_id="wait", run_id=run_id, workspace=str(workspace.root))


def test_poke_false_while_running_then_true(workspace, make_tree):
    src = make_tree({"train.py": "import time\ntime.sleep(1)\n"})
    run = Experiment(workspace, "s").submit(ScriptRunConfig(src, "train.py"))
    ti = FakeTI()
    assert sensor(workspace, run.id).poke({"ti": ti}) is False
    run.wait_for_completion()
    assert sensor(workspace, run.id).poke({"ti": ti}) is True
    assert ti.pushed["run_details"]["status"] == "Completed"


def test_failed_run_fails_the_sensor_with_exit_code(workspace, make_tree):
    src = make_tree({"train.py": "print('boom')\nraise SystemExit(5)\n"})
    run = Experiment(workspace, "s").submit(ScriptRunConfig(src, "train.py"))
    run.wait_for_completion(raise_on_error=False)
    with pytest.raises(AirflowException, match="failed with exit code 5") as err:
        sensor(workspace, run.id).poke({"ti": FakeTI()})
    assert "boom" in str(err.value)


def test_unknown_run_id_is_a_clear_error(workspace):
    with pytest.raises(AirflowException, match="Check the run_id"):
        sensor(workspace, "no-such-run").poke({"ti": FakeTI()})
