"""Azure ML v1 driver cells, run with only the import changed, on every target.

The cells below are written the way v1 notebooks wrote them (Workspace.from_config, Experiment,
CondaDependencies, ScriptRunConfig with compute_target/environment/max_run_duration_seconds/
docker_runtime_config, RunDetails, get_details, get_runs): the test swaps ``from azureml.`` for
``from airflow_provider_mltrain.compat.azureml.`` and nothing else, then checks every value lands.
"""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stdout

import pytest

import airflow_provider_mltrain as mltrain
from airflow_provider_mltrain.core.errors import InvalidRunConfig

pytestmark = pytest.mark.no_object_store_variant("config.json names a workspace folder; credentials stay out")

IMPORT = "from airflow_provider_mltrain.compat.azureml."

TRAIN = """\
import argparse
import os

import six
from azureml.core import Run

parser = argparse.ArgumentParser()
parser.add_argument("--reg-rate", type=float, dest="reg", default=0.01)
parser.add_argument("--epochs", type=int, default=1)
args = parser.parse_args()

run = Run.get_context()
run.log("Regularization Rate", float(args.reg))
losses = [1.0 / (epoch + 1) for epoch in range(args.epochs)]
for loss in losses:
    run.log("loss", loss)
run.log("accuracy", 0.91)
run.log("reg_rate_env", float(os.environ["REG_RATE"]))
run.log("six_major", int(six.__version__.split(".")[0]))
os.makedirs("outputs", exist_ok=True)
with open("outputs/model.txt", "w") as f:
    f.write("weights")
run.complete()
"""

# The notebook: cells as a v1 user wrote them. ``script_folder`` and ``use_docker`` and
# ``base_image`` come from an earlier cell of the notebook (here: the test).
CELLS = """\
from azureml.core import Workspace, Experiment, Environment, ScriptRunConfig
from azureml.core.conda_dependencies import CondaDependencies
from azureml.core.runconfig import DockerConfiguration
from azureml.widgets import RunDetails

ws = Workspace.from_config()
print(ws.name, ws.resource_group, sep="\\t")

experiment = Experiment(workspace=ws, name="diabetes-training")

sklearn_env = Environment("diabetes-env")
sklearn_env.python.user_managed_dependencies = False
packages = CondaDependencies.create(conda_packages=["pip"], pip_packages=[])
packages.add_pip_package("six==1.17.0")
sklearn_env.python.conda_dependencies = packages
sklearn_env.environment_variables = {"REG_RATE": "0.25"}
if use_docker:
    sklearn_env.docker.enabled = True
    sklearn_env.docker.base_image = base_image

src = ScriptRunConfig(source_directory=script_folder,
                      script="train.py",
                      arguments=["--reg-rate", 0.1, "--epochs", 3],
                      compute_target="cpu-cluster",
                      environment=sklearn_env,
                      max_run_duration_seconds=1800,
                      docker_runtime_config=DockerConfiguration(use_docker=use_docker))
print(src.run_config.target, src.run_config.framework, src.run_config.environment.name)

run = experiment.submit(config=src, tags={"team": "diabetes"})
RunDetails(run).show()
run.wait_for_completion(show_output=True)

metrics = run.get_metrics()
for key in metrics.keys():
    print(key, metrics.get(key))
details = run.get_details()
tagged = list(experiment.get_runs(tags={"team": "diabetes"}))
other = list(experiment.get_runs(tags={"team": "other"}))
"""


def notebook(cells: str) -> str:
    """The cells with only the import prefix changed."""
    changed = cells.replace("from azureml.", IMPORT)
    assert changed.replace(IMPORT, "from azureml.") == cells
    return changed


def write_config(folder, target: str, root) -> None:
    (folder / ".azureml").mkdir(parents=True)
    config = {
        "subscription_id": "00000000-0000-0000-0000-000000000000",
        "resource_group": "ml-rg",
        "workspace_name": "ml-ws",
        "mltrain": {"workspace": str(root), "compute_targets": {"cpu-cluster": target}},
    }
    (folder / ".azureml" / "config.json").write_text(json.dumps(config))


def test_driver_cells_run_with_only_the_import_changed(workspace, harness, target, make_tree, tmp_path):
    notebook_dir = tmp_path / "notebooks" / "training"
    write_config(tmp_path / "notebooks", target, workspace.root)
    notebook_dir.mkdir(parents=True)
    script_folder = make_tree({"train.py": TRAIN})
    kind = "docker" if "docker" in target else target
    use_docker = kind == "docker"
    scope = {
        "script_folder": str(script_folder),
        "use_docker": use_docker,
        "base_image": os.environ.get("MLTRAIN_TEST_DOCKER_IMAGE"),
    }
    printed = io.StringIO()
    cwd = os.getcwd()
    os.chdir(notebook_dir)  # from_config() looks here, then in the parents
    try:
        with redirect_stdout(printed):
            exec(compile(notebook(CELLS), "notebook", "exec"), scope)
    finally:
        os.chdir(cwd)
    out = printed.getvalue()
    run, details = scope["run"], scope["details"]

    assert "ml-ws\tml-rg" in out
    assert "cpu-cluster Python diabetes-env" in out
    # The values the script logged, the arguments it got and the environment it ran in.
    assert scope["metrics"] == {
        "Regularization Rate": 0.1,
        "loss": [1.0, 0.5, 1.0 / 3],
        "accuracy": 0.91,
        "reg_rate_env": 0.25,
        "six_major": 1,
    }
    assert "outputs/model.txt" in run.get_file_names()
    # get_details(): Azure's keys beside mltrain's.
    assert details["runId"] == details["run_id"] == run.id
    assert details["status"] == "Completed"
    assert details["startTimeUtc"].endswith("Z") and details["endTimeUtc"] >= details["startTimeUtc"]
    assert details["tags"] == {"team": "diabetes"}
    assert details["target"] == target
    definition = details["runDefinition"]
    assert definition["script"] == "train.py"
    assert definition["arguments"] == ["--reg-rate", "0.1", "--epochs", "3"]
    # The Spark targets run a script as a PySpark application: Azure's name for that framework.
    framework = "PySpark" if "spark" in target else "Python"
    assert definition["target"] == target and definition["framework"] == framework
    assert definition["maxRunDurationSeconds"] == 1800
    env = definition["environment"]
    assert env["name"] == "diabetes-env"
    assert env["python"]["condaDependencies"]["dependencies"][-1] == {"pip": ["six==1.17.0"]}
    assert env["environmentVariables"] == {"REG_RATE": "0.25"}
    assert env["docker"]["enabled"] is use_docker
    if use_docker:
        assert env["docker"]["baseImage"] == scope["base_image"]
    assert details["inputDatasets"] == [] and isinstance(details["properties"], dict)
    # RunDetails(run).show(): the progress as text, then the summary.
    assert "Completed" in out and "accuracy" in out and "0.91" in out
    assert [r.id for r in scope["tagged"]] == [run.id] and scope["other"] == []
    assert [r.id for r in scope["experiment"].get_runs(properties="mltrain.framework")] == [run.id]


def test_max_run_duration_seconds_cancels_the_script(workspace, harness, target, make_tree):
    """The runner ends a script that runs past the limit, whoever follows it."""
    from airflow_provider_mltrain.compat.azureml.core import Experiment, ScriptRunConfig

    src = make_tree(
        {"train.py": "import time\nprint('started', flush=True)\nwhile True:\n    time.sleep(0.2)\n"}
    )
    config = ScriptRunConfig(src, "train.py", compute_target=target, max_run_duration_seconds=2)
    run = Experiment(workspace, "limits").submit(config)
    details = run.wait_for_completion(raise_on_error=False, timeout=300)
    assert details["status"] == "Canceled"
    assert "max_run_duration_seconds=2" in details["error"]
    assert details["runDefinition"]["maxRunDurationSeconds"] == 2


def test_a_container_asked_for_is_never_dropped(workspace, harness, target, make_tree):
    """docker.enabled (or use_docker) on a target that runs no container is refused before submission."""
    from airflow_provider_mltrain.compat.azureml.core import Environment, Experiment, ScriptRunConfig
    from airflow_provider_mltrain.compat.azureml.core.runconfig import DockerConfiguration

    if "docker" in target:
        pytest.skip("the Docker target runs the container")
    env = Environment("boxed")
    env.docker.enabled = True
    env.docker.base_image = "python:3.11-slim"
    src = make_tree({"train.py": "print(1)\n"})
    with pytest.raises(InvalidRunConfig, match=r"docker.enabled = True.*runs no container"):
        Experiment(workspace, "boxed").submit(
            ScriptRunConfig(src, "train.py", compute_target=target, environment=env)
        )
    config = ScriptRunConfig(
        src, "train.py", compute_target=target, docker_runtime_config=DockerConfiguration(use_docker=True)
    )
    with pytest.raises(InvalidRunConfig, match="use_docker=True"):
        Experiment(workspace, "boxed").submit(config)
    native = mltrain.ScriptRunConfig(src, "train.py", compute_target=target, environment=env)
    with pytest.raises(InvalidRunConfig, match=r"docker.enabled = True.*runs no container"):
        Experiment(workspace, "boxed").submit(native)  # mltrain's own config, this layer's Environment
    assert workspace.store.list_runs() == []
