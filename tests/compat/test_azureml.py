"""compat.azureml: Azure ML v1's driver names over mltrain, refusing what has no counterpart by name.

The cells run end to end on every target in tests/targets/test_azureml_driver.py; these are the
quick checks of each name (the local target where a run is needed).
"""

from __future__ import annotations

import io
import json

import pytest

from airflow_provider_mltrain.compat.azureml.core import (
    ComputeTarget,
    ComputeTargetException,
    CondaDependencies,
    Environment,
    Experiment,
    RunConfiguration,
    ScriptRunConfig,
    Workspace,
)
from airflow_provider_mltrain.compat.azureml.core.workspace import WorkspaceConfigNotFound
from airflow_provider_mltrain.compat.azureml.widgets import RunDetails
from airflow_provider_mltrain.core.environment import EnvironmentNotFound, InvalidEnvironment
from airflow_provider_mltrain.core.errors import InvalidRunConfig


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws", compute_targets={"cpu-cluster": "local"})


def test_from_config_reads_azure_config_json_from_a_parent_folder(tmp_path, monkeypatch):
    (tmp_path / ".azureml").mkdir()
    config = {
        "subscription_id": "sub",
        "resource_group": "rg",
        "workspace_name": "ml-ws",
        "mltrain": {"workspace": "mltrain-ws", "compute_targets": {"gpu-cluster": "docker_gpu"}},
    }
    (tmp_path / ".azureml" / "config.json").write_text(json.dumps(config))
    notebooks = tmp_path / "notebooks" / "deep"
    notebooks.mkdir(parents=True)
    monkeypatch.chdir(notebooks)
    ws = Workspace.from_config()
    assert (ws.name, ws.subscription_id, ws.resource_group) == ("ml-ws", "sub", "rg")
    assert ws.root == tmp_path / "mltrain-ws"  # relative to the project folder
    assert ws.target_name("gpu-cluster") == "docker_gpu" and ws.target_name("local") == "local"
    assert Workspace.from_config(path=str(tmp_path / ".azureml" / "config.json")).root == ws.root


def test_from_config_without_a_file_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkspaceConfigNotFound, match=r"\.azureml/config\.json.*MLTRAIN_WORKSPACE"):
        Workspace.from_config()
    (tmp_path / "config.json").write_text(json.dumps({"mltrain": {"workspce": "x"}}))
    with pytest.raises(InvalidRunConfig, match=r"unknown key\(s\) mltrain.workspce"):
        Workspace.from_config()


def test_azure_curated_names_map_to_ours_and_the_rest_are_refused_by_name(ws):
    assert Environment.get(ws, "AzureML-Minimal").name == "mltrain-minimal"
    legacy = Environment.get(workspace=ws, name="AzureML-sklearn-1.0-ubuntu20.04-py38-cpu")
    assert legacy.name == "mltrain-sklearn-legacy" and isinstance(legacy, Environment)
    assert "numpy==1.23.5" in legacy.python.requirements
    assert Environment.get(ws, "azureml:AzureML-sklearn-1.1-ubuntu20.04-py38-cpu@latest").name == legacy.name
    with pytest.raises(
        EnvironmentNotFound, match=r"'AzureML-pytorch-1\.10-ubuntu18\.04-py38-cuda11-gpu' has no"
    ):
        Environment.get(ws, "AzureML-pytorch-1.10-ubuntu18.04-py38-cuda11-gpu")


def test_environment_files_take_azures_keyword_names(ws, tmp_path):
    (tmp_path / "requirements.txt").write_text("six==1.17.0\n")
    (tmp_path / "env.yml").write_text(
        "dependencies:\n  - python=3.11\n  - pip\n  - pip:\n    - six==1.17.0\n"
    )
    env = Environment.from_pip_requirements(name="pip-env", file_path=str(tmp_path / "requirements.txt"))
    assert env.requirement_lines() == ["six==1.17.0"] and env.managed
    conda = Environment.from_conda_specification(name="conda-env", file_path=str(tmp_path / "env.yml"))
    assert (conda.name, conda.python.python_version, conda.python.requirements) == (
        "conda-env",
        "3.11",
        ["six==1.17.0"],
    )
    conda.python.conda_dependencies.add_pip_package("numpy==1.23.5")  # writes through, as in Azure
    assert conda.python.requirements == ["six==1.17.0", "numpy==1.23.5"]
    registered = conda.register(ws)
    assert Environment.get(ws, "conda-env").python.requirements == registered.python.requirements
    assert Environment.get(ws, "conda-env").docker.enabled is False
    boxed = Environment("boxed")
    boxed.docker.enabled = True
    boxed.docker.base_image = "python:3.11-slim"
    boxed.register(ws)
    assert Environment.get(ws, "boxed").docker.enabled is True  # kept through the registry


def test_conda_packages_are_refused_by_name_with_the_pip_line_to_use():
    deps = CondaDependencies.create(
        pip_packages=["scikit-learn==1.1.3"], conda_packages=["python=3.10", "pip"]
    )
    deps.add_pip_package("scikit-learn==1.0.2")  # replaces the earlier pin
    assert list(deps.pip_packages) == ["scikit-learn==1.0.2"] and deps.get_python_version() == "3.10"
    with pytest.raises(InvalidEnvironment) as raised:
        CondaDependencies.create(conda_packages=["numpy=1.21.2", "pytorch", "cudatoolkit=11.3"])
    message = str(raised.value)
    assert "pip_packages=['numpy==1.21.2', 'torch']" in message
    assert "'cudatoolkit=11.3' has no PyPI package" in message
    with pytest.raises(InvalidEnvironment, match="'lightgbm'"):
        deps.add_conda_package("lightgbm")


def test_azure_attributes_without_a_counterpart_are_refused_not_ignored():
    env = Environment("x")
    env.docker.enabled = True
    env.docker.base_image = "python:3.11-slim"
    with pytest.raises(AttributeError, match=r"DockerSection.base_dockerfile is not available: write"):
        env.docker.base_dockerfile = "FROM python:3.11-slim"
    with pytest.raises(AttributeError, match=r"Environment.spark is not available"):
        env.spark = object()
    rc = RunConfiguration()
    with pytest.raises(AttributeError, match=r"RunConfiguration.communicator is not available"):
        rc.communicator = "Mpi"
    with pytest.raises(InvalidRunConfig, match="framework 'TensorFlow' is not available"):
        rc.framework = "TensorFlow"


def test_run_config_holds_what_script_run_config_was_given(ws, make_tree):
    src = ScriptRunConfig(
        source_directory=str(make_tree({"train.py": "print(1)\n"})),
        script="train.py",
        compute_target="cpu-cluster",
        environment="AzureML-Minimal",
        max_run_duration_seconds=60,
    )
    assert (src.run_config.target, src.run_config.framework) == ("cpu-cluster", "Python")
    src.run_config.framework = "PySpark"
    config = src.to_mltrain(ws.compute_targets)
    assert (config.compute_target, config.framework, config.max_run_duration_seconds) == (
        "local",
        "pyspark",
        60,
    )
    assert config.environment == "mltrain-minimal"  # Azure's curated name, given as a string


def test_compute_target_names_resolve_to_our_targets(ws):
    assert ComputeTarget(workspace=ws, name="cpu-cluster").kind == "local"
    with pytest.raises(ComputeTargetException, match="Unknown compute target 'no-such-cluster'"):
        ComputeTarget(ws, "no-such-cluster")


def test_get_runs_filters_and_run_details_on_the_local_target(ws, make_tree, monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com")
    src = make_tree({"train.py": "from azureml.core import Run\nRun.get_context().log('acc', 0.5)\n"})
    exp = Experiment(ws, "filters")
    first = exp.submit(
        ScriptRunConfig(str(src), "train.py", compute_target="cpu-cluster"), tags={"kind": "a"}
    )
    second = exp.submit(
        ScriptRunConfig(str(src), "train.py"), tags={"kind": "b"}, properties={"owner": "ann"}
    )
    first.wait_for_completion(False, True)  # Azure's order: show_output, wait_post_processing
    assert second.wait_for_completion(show_output=False, wait_post_processing=True)["status"] == "Completed"
    assert [r.id for r in exp.get_runs(tags={"kind": "a"})] == [first.id]
    assert [r.id for r in exp.get_runs(tags="kind")] == [second.id, first.id]
    assert [r.id for r in exp.get_runs(properties={"owner": "ann"})] == [second.id]
    assert list(exp.get_runs(tags={"kind": "a"}, properties="owner")) == []
    assert ws.get_run(first.id).get_details()["runId"] == first.id
    assert first.get_portal_url() == f"https://airflow.example.com/mltrain/runs/{first.id}"
    out = io.StringIO()
    RunDetails(first).show(output=out)
    text = out.getvalue()
    assert f"Run {first.id}" in text and "Completed" in text and "acc = 0.5" in text


def test_hyperdrive_takes_an_azure_script_run_config(ws, make_tree):
    from airflow_provider_mltrain.compat.azureml.train.hyperdrive import (
        GridParameterSampling,
        HyperDriveConfig,
        PrimaryMetricGoal,
        choice,
    )

    script = (
        "import argparse\nfrom azureml.core import Run\np = argparse.ArgumentParser()\n"
        "p.add_argument('--lr', type=float)\nRun.get_context().log('acc', p.parse_args().lr)\n"
    )
    src = ScriptRunConfig(str(make_tree({"train.py": script})), "train.py", compute_target="cpu-cluster")
    config = HyperDriveConfig(
        run_config=src,
        hyperparameter_sampling=GridParameterSampling({"--lr": choice(0.1, 0.2)}),
        primary_metric_name="acc",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=2,
        max_concurrent_runs=2,
    )
    sweep = Experiment(ws, "sweep").submit(config)
    sweep.wait_for_completion()
    assert sweep.get_best_run_by_primary_metric().get_metrics()["acc"] == 0.2


def test_the_import_loads_only_what_mltrains_own_api_does():
    """A notebook's first cell pays for the run store, not for YAML, packaging, the remote
    targets' clients or Airflow (tests/test_startup.py's rule for the native API)."""
    import sys

    from tests.test_startup import HEAVY, imported_modules

    code = (
        "from airflow_provider_mltrain.compat.azureml.core import Workspace, Experiment, ScriptRunConfig, "
        "Environment, RunConfiguration\n"
        "from airflow_provider_mltrain.compat.azureml.widgets import RunDetails\n"
        "from airflow_provider_mltrain.compat.azureml.train.hyperdrive import HyperDriveConfig\n"
    )
    names, proc = imported_modules(sys.executable, "-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    unused = (set(HEAVY) | {"packaging"}) - {"sqlalchemy", "pathspec"}
    assert not names & unused, sorted(names & unused)


def test_a_sweep_never_drops_the_run_duration_limit(make_tree):
    """The Azure run_config's limit reaches the sweep's config, which gives it to every child
    (tests/core/test_sweep.py runs that)."""
    from airflow_provider_mltrain.compat.azureml.train.hyperdrive import (
        GridParameterSampling,
        HyperDriveConfig,
        choice,
    )

    src = ScriptRunConfig(str(make_tree({"train.py": ""})), "train.py", max_run_duration_seconds=60)
    config = HyperDriveConfig(
        run_config=src,
        hyperparameter_sampling=GridParameterSampling({"--lr": choice(0.1)}),
        primary_metric_name="acc",
        primary_metric_goal="MAXIMIZE",
        max_total_runs=1,
    )
    assert config.run_config.max_run_duration_seconds == 60


def test_environments_from_a_docker_image_or_dockerfile_run_in_a_container(tmp_path):
    (tmp_path / "requirements.txt").write_text("six==1.17.0\n")
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")
    env = Environment.from_docker_image(
        "img", "python:3.11-slim", pip_requirements=str(tmp_path / "requirements.txt")
    )
    assert (env.docker.enabled, env.docker.base_image, env.requirement_lines()) == (
        True,
        "python:3.11-slim",
        ["six==1.17.0"],
    )
    built = Environment.from_dockerfile("built", str(tmp_path / "Dockerfile"))
    assert built.docker.enabled and built.docker.dockerfile == str(tmp_path / "Dockerfile")
    with pytest.raises(InvalidEnvironment, match="Write the Dockerfile's text to a file"):
        Environment.from_dockerfile("text", "FROM python:3.11-slim\nRUN pip install six\n")
