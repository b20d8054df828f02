"""A run whose environment installs the real ``azureml-core``: the submission says so and the values
the script logs through ``azureml.core.Run`` still land in the run history (its offline run would
print and drop them). The environment is built by the project's uv-based builder."""

from __future__ import annotations

from airflow_provider_mltrain import Environment, Experiment, PythonSection, ScriptRunConfig

AZUREML_CORE = "azureml-core==1.61.0"
# azureml-core imports pkg_resources, which setuptools 81 removed.
SETUPTOOLS = "setuptools==80.9.0"

SCRIPT = """
import azureml.core
from azureml.core import Run, Workspace  # the real SDK's Workspace stays importable

assert azureml.core.__file__.endswith("site-packages/azureml/core/__init__.py"), azureml.core.__file__
run = Run.get_context()
run.log("accuracy", 0.93)
for step in range(3):
    run.log("loss", 1.0 / (step + 1), step=step)
run.tag("framework", "azureml")
"""


def test_the_real_azureml_core_is_warned_about_and_values_land(workspace, make_tree):
    lines: list[str] = []
    environment = Environment("real-azureml", python=PythonSection(requirements=[AZUREML_CORE, SETUPTOOLS]))
    config = ScriptRunConfig(make_tree({"train.py": SCRIPT}), "train.py", environment=environment)
    run = Experiment(workspace, "azureml").submit(config, log=lines.append)
    assert run.wait_for_completion()["status"] == "Completed", run.get_log_tail()
    assert any("real Azure ML SDK (azureml-core)" in line for line in lines), lines
    assert run.get_metrics() == {"accuracy": 0.93, "loss": [1.0, 0.5, 1.0 / 3]}
    assert run.tags["framework"] == "azureml"
    assert "azureml.core.Run.get_context() returns the mltrain run" in run.get_log_tail()
