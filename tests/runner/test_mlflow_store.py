"""Scripts that log with MLflow's fluent API land in the mltrain run, with no tracking server.

The real ``mlflow-skinny`` (and scikit-learn) in the submitting interpreter, which the local target
runs scripts with.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_mltrain import Environment, Model
from tests.targets.suite import submit

mlflow = pytest.importorskip("mlflow")

SCRIPT = """
import os, sys
import mlflow

with mlflow.start_run() as active:
    assert mlflow.active_run().info.run_id == active.info.run_id
    assert active.info.run_name == os.environ["MLTRAIN_RUN_ID"], active.info.run_name
    mlflow.log_param("lr", 0.01)
    mlflow.log_params({"layers": 3, "optimizer": "adam"})
    mlflow.set_tag("team", "churn")
    for step in range(3):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    mlflow.log_metrics({"accuracy": 0.9})
    with open("notes.txt", "w") as f:
        f.write("hello")
    mlflow.log_artifact("notes.txt")
    mlflow.log_artifact("notes.txt", artifact_path="reports")
    mlflow.log_text("some text", "texts/a.txt")
    mlflow.log_dict({"k": 1}, "cfg.json")
    # An MLflow param is immutable, as on any MLflow server.
    try:
        mlflow.log_param("lr", 0.5)
        raise SystemExit("a changed param was accepted")
    except mlflow.exceptions.MlflowException as exc:
        assert "lr" in str(exc)
    # The run's id is the only one there is: another id is refused, never silently dropped.
    try:
        mlflow.MlflowClient().log_metric("not-this-run", "x", 1.0)
        raise SystemExit("a foreign run id was accepted")
    except mlflow.exceptions.MlflowException:
        pass
    # Registering a file that is not one of the run's outputs is refused.
    try:
        mlflow.register_model("file:///etc", "stolen")
        raise SystemExit("registered /etc")
    except mlflow.exceptions.MlflowException as exc:
        assert "outputs" in str(exc)

# A second top-level run attaches to the same mltrain run.
with mlflow.start_run():
    mlflow.log_metric("second", 2.0)

# Autologging: sklearn's params, training metrics and the model, then a registration.
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

mlflow.sklearn.autolog()
X, y = load_iris(return_X_y=True)
with mlflow.start_run():
    model = LogisticRegression(max_iter=200, C=0.5).fit(X, y)
mlflow.sklearn.autolog(disable=True)

with mlflow.start_run():
    info = mlflow.sklearn.log_model(model, name="iris", registered_model_name="iris-lr")
print("logged", info.model_uri)
"""


def _files(run) -> set[str]:
    return set(run.get_file_names())


def test_mlflow_fluent_api_lands_in_the_run(workspace, make_tree, tmp_path):
    run = submit(workspace, "local", make_tree({"train.py": SCRIPT}))
    details = run.wait_for_completion()
    assert details["status"] == "Completed", run.get_log_tail()
    metrics = run.get_metrics()
    assert metrics["loss"] == [1.0, 0.5, 1.0 / 3]
    assert metrics["accuracy"] == 0.9
    assert metrics["second"] == 2.0
    # Autologging: sklearn's training metrics.
    assert any(name.startswith("training_") for name in metrics), sorted(metrics)
    props = run.properties
    assert (props["lr"], props["layers"], props["optimizer"]) == ("0.01", "3", "adam")
    assert props["C"] == "0.5" and props["max_iter"] == "200"
    assert run.tags["team"] == "churn"
    assert not any(k.startswith("mlflow.") for k in run.tags)
    files = _files(run)
    for expected in (
        "outputs/notes.txt",
        "outputs/reports/notes.txt",
        "outputs/texts/a.txt",
        "outputs/cfg.json",
        "outputs/model/MLmodel",
        "outputs/iris/MLmodel",
    ):
        assert expected in files, (expected, sorted(files))
    assert Path(run.download_file("outputs/notes.txt", tmp_path / "n.txt")).read_text() == "hello"
    model = Model(workspace, "iris-lr")
    assert (model.version, model.run_id) == (1, run.id)
    assert "iris/MLmodel" in [f["path"] for f in model.files]
    assert "stolen" not in [m.name for m in Model.list(workspace)]


HOSTILE = """
import os
import mlflow
from sklearn.linear_model import LinearRegression

run_dir = os.environ["MLTRAIN_RUN_DIR"]
with open(os.path.join(run_dir, "logs", "metrics.jsonl"), "ab") as f:
    f.write(b"not json\\n" + b"{\\"name\\": 5}\\n" + b"\\xff\\xfe\\n")
# A link where MLflow would put the model: the model goes beside it, the link stays a link.
os.makedirs("outputs", exist_ok=True)
os.symlink("/etc", "outputs/model")
mlflow.log_metric("after", 1.0)
mlflow.log_param("odd\\u202ename", "v")
mlflow.log_metric("x" * 250, 2.0)
model = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
info = mlflow.sklearn.log_model(model, name="model", registered_model_name="beside")
assert "/etc" not in info.artifact_path
for source in ("file://" + os.path.realpath("outputs/model"), "file:///etc/passwd", "../../x"):
    try:
        mlflow.register_model(source, "evil")
        raise SystemExit("registered " + source)
    except mlflow.exceptions.MlflowException:
        pass
"""


def test_hostile_files_in_the_mlflow_folder_never_leak_or_wedge(workspace, make_tree):
    run = submit(workspace, "local", make_tree({"train.py": HOSTILE}))
    assert run.wait_for_completion()["status"] == "Completed", run.get_log_tail()
    metrics = run.get_metrics()
    assert metrics["after"] == 1.0 and metrics["x" * 250] == 2.0
    assert run.properties["odd\u202ename"] == "v"
    assert "skipped 3 malformed lines" in " ".join(run.warnings), run.warnings
    assert run.get_links()["outputs/model"] == "/etc"
    [beside] = [f for f in run.get_file_names() if f.endswith("/MLmodel")]
    assert beside.startswith("outputs/model-m-"), beside
    model = Model(workspace, "beside")
    assert model.run_id == run.id and any(f["path"].endswith("MLmodel") for f in model.files)
    assert [m.name for m in Model.list(workspace)] == ["beside"]


OWN_URI = """
import mlflow
mlflow.log_param("p", "1")
mlflow.set_tag("t", "v")
mlflow.log_metric("m", 3.0, step=7)
mlflow.end_run()
"""


def test_a_users_own_tracking_uri_gets_the_values_too(workspace, make_tree, tmp_path, monkeypatch):
    # MLflow's file store stands in for the user's server; MLflow 3 refuses it unless allowed.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    own = tmp_path / "own-mlruns"
    variables = {"MLFLOW_TRACKING_URI": own.as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
    env = Environment("own-uri", environment_variables=variables)
    run = submit(workspace, "local", make_tree({"train.py": OWN_URI}), environment=env)
    assert run.wait_for_completion()["status"] == "Completed", run.get_log_tail()
    assert run.get_metrics()["m"] == 3.0 and run.properties["p"] == "1" and run.tags["t"] == "v"
    client = mlflow.MlflowClient(tracking_uri=own.as_uri())
    experiment = client.get_experiment_by_name("suite")
    [mirrored] = client.search_runs([experiment.experiment_id])
    assert mirrored.data.tags["mltrain.run_id"] == run.id
    assert mirrored.data.params == {"p": "1"} and mirrored.data.tags["t"] == "v"
    assert [(m.value, m.step) for m in client.get_metric_history(mirrored.info.run_id, "m")] == [(3.0, 7)]
    assert mirrored.info.status == "FINISHED"
