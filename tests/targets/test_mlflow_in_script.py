"""Every target: a script that logs with MLflow, in an environment that has ``mlflow-skinny``
(built by the target's environment builder), lands its values in the run with no server."""

from __future__ import annotations

from airflow_provider_mltrain import Environment, PythonSection
from tests.targets.suite import submit

MLFLOW = "mlflow-skinny==3.17.2"

SCRIPT = """
import mlflow

mlflow.log_param("lr", 0.01)
mlflow.set_tag("team", "churn")
for step in range(3):
    mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
with open("notes.txt", "w") as f:
    f.write("hello")
mlflow.log_artifact("notes.txt", artifact_path="reports")
assert mlflow.active_run().info.run_name == __import__("os").environ["MLTRAIN_RUN_ID"]
mlflow.end_run()
"""


def test_mlflow_values_land_on_every_target(workspace, target, make_tree):
    environment = Environment("mlflow", python=PythonSection(requirements=[MLFLOW]))
    run = submit(workspace, target, make_tree({"train.py": SCRIPT}), environment=environment)
    assert run.wait_for_completion()["status"] == "Completed", run.get_log_tail()
    assert run.get_metrics() == {"loss": [1.0, 0.5, 1.0 / 3]}
    assert run.properties["lr"] == "0.01" and run.tags["team"] == "churn"
    assert "outputs/reports/notes.txt" in run.get_file_names()
