"""Azure ML v1 scripts that read and steer their own run, run unchanged on the local target.

Written the way v1 users wrote them (``from azureml.core import Run``, ``run = Run.get_context()``,
typed metrics as JSON dicts), submitted through the core and checked from the driver's side.
"""

from __future__ import annotations

import json
from pathlib import Path

from airflow_provider_mltrain import Experiment, ScriptRunConfig

SELF_AWARE = """
import json
from pathlib import Path
import azureml.core
from azureml.core import Run

run = Run.get_context()
print("sdk", azureml.core.VERSION)
ws = run.experiment.workspace
print("workspace", ws.name)
try:
    ws.get_default_datastore()
except AttributeError as exc:
    print("datastore refused:", "run inputs" in str(exc))
print("status", run.get_status())
details = run.get_details()
print("details", json.dumps({k: details[k] for k in ("runId", "status", "runDefinition")}))
print("started", details["startTimeUtc"].endswith("Z"))

same = Run(run.experiment, run.id)
same.log("from_handle", 1.5)
child = run.child_run(name="fold-0")
again = Run(run.experiment, child.id)
again.log("fold_auc", 0.8)
again.complete()
print("child status", child.get_status())
try:
    Run(run.experiment, "someone_elses_run")
except LookupError as exc:
    print("other run:", type(exc).__name__, "Run(workspace, run_id)" in str(exc))

with open("report.txt", "w") as f:
    f.write("quarterly numbers")
run.upload_file(name="reports/q1.txt", path_or_stream="report.txt")
print("files", [n for n in run.get_file_names() if not n.startswith("logs/")])
run.download_file("reports/q1.txt", output_file_path="back.txt")
print("read back", open("back.txt").read())
"""


def _submit(workspace, make_tree, script):
    src = make_tree({"train.py": script})
    config = ScriptRunConfig(src, "train.py", compute_target="local")
    return Experiment(workspace, "compat").submit(config)


def test_a_v1_script_reads_and_reopens_its_own_run(workspace, make_tree):
    run = _submit(workspace, make_tree, SELF_AWARE)
    run.wait_for_completion()
    out = run.read_log().decode()
    assert "sdk 0+mltrain.compat" in out
    assert "workspace mltrain" in out and "datastore refused: True" in out
    assert "status Running" in out
    details = json.loads(out.split("details ", 1)[1].splitlines()[0])
    assert details["runId"] == run.id and details["status"] == "Running"
    assert details["runDefinition"]["script"] == "train.py"
    assert details["runDefinition"]["snapshotId"] == run.get_details()["snapshot_id"]
    assert "started True" in out
    assert "child status Completed" in out
    assert "other run: RunNotAvailable True" in out
    assert "files ['reports/q1.txt']" in out and "read back quarterly numbers" in out
    assert run.get_metrics()["from_handle"] == 1.5
    (child,) = run.get_children()
    assert child.get_metrics() == {"fold_auc": 0.8} and child.get_status() == "Completed"
    assert "reports/q1.txt" in run.get_file_names()


def test_cancel_from_inside_ends_the_run_canceled(workspace, make_tree):
    script = """
from azureml.core import Run
run = Run.get_context()
run.log("seen", 1)
kid = run.child_run()
kid.cancel()  # a child: it ends Canceled, the script goes on
print("after child cancel", kid.get_status())
run.cancel()
print("never printed")
"""
    run = _submit(workspace, make_tree, script)
    run.wait_for_completion(raise_on_error=False)
    assert run.get_status() == "Canceled"
    out = run.read_log().decode()
    assert "after child cancel Canceled" in out and "never printed" not in out
    assert run.get_metrics() == {"seen": 1}
    (child,) = run.get_children()
    assert child.get_status() == "Canceled"


TYPED = """
import json
from pathlib import Path
from azureml.core import Run
run = Run.get_context()
run.log_confusion_matrix("confusion", {
    "schema_type": "confusion_matrix", "schema_version": "1.0.0",
    "data": {"class_labels": ["cat", "<dog>"], "matrix": [[8, 2], [1, 9]]},
}, description="validation set")
run.log_accuracy_table("accuracy", json.dumps({
    "schema_type": "accuracy_table", "schema_version": "1.0.2",
    "data": {
        "probability_tables": [[[10, 10, 0, 0], [6, 1, 9, 4], [0, 0, 10, 10]]],
        "percentile_tables": [[[10, 10, 0, 0], [5, 2, 8, 5], [0, 0, 10, 10]]],
        "probability_thresholds": [0.0, 0.5, 1.0],
        "percentiles": [0.0, 50.0, 100.0],
        "class_labels": ["yes"],
    },
}))
run.log_predictions("predictions", {"schema_type": "predictions", "schema_version": "1.0.0", "data": {
    "bin_averages": [0.2, 0.7], "bin_errors": [0.01, 0.04], "bin_counts": [40, 60],
    "bin_edges": [0.0, 0.5, 1.0]}})
run.log_residuals("residuals", {"schema_type": "residuals", "schema_version": "1.0.0", "data": {
    "bin_edges": [-1.0, 0.0, 1.0], "bin_counts": [12, 30]}})
run.log_row("per class", "recall and precision of each class", cls="cat", recall=0.8)
for bad in ("not json", {"data": {"class_labels": ["a"]}}, {"schema_type": "residuals", "data": {}}):
    try:
        run.log_confusion_matrix("bad", bad)
    except ValueError as exc:
        print("refused:", exc)
"""


def test_typed_metrics_and_descriptions_land(workspace, make_tree):
    run = _submit(workspace, make_tree, TYPED)
    run.wait_for_completion()
    metrics = run.get_metrics()
    assert metrics["confusion"] == {
        "schema_type": "confusion_matrix",
        "schema_version": "1.0.0",
        "data": {"class_labels": ["cat", "<dog>"], "matrix": [[8, 2], [1, 9]]},
    }
    assert metrics["accuracy"]["data"]["probability_thresholds"] == [0.0, 0.5, 1.0]
    assert metrics["predictions"]["data"]["bin_counts"] == [40, 60]
    assert metrics["residuals"]["data"]["bin_edges"] == [-1.0, 0.0, 1.0]
    assert metrics["per class"] == {"cls": ["cat"], "recall": [0.8]}
    assert "bad" not in metrics
    out = run.read_log().decode()
    assert out.count("refused: mltrain: run.log_confusion_matrix('bad', ...)") == 3
    assert "data lacks the list(s) 'matrix'" in out and "got schema_type 'residuals'" in out
    rows = {r["name"]: r for r in workspace.store.get_metric_rows(run.id)}
    assert rows["per class"]["description"] == "recall and precision of each class"
    assert rows["confusion"]["description"] == "validation set"
    assert rows["residuals"]["description"] is None


def test_a_typed_line_of_the_wrong_shape_is_skipped_not_stored(workspace, make_tree):
    script = """
import json, os
with open(os.environ["MLTRAIN_METRICS_FILE"], "a") as f:
    f.write(json.dumps({"name": "cm", "kind": "confusion_matrix", "value": {"data": [1]}}) + "\\n")
    f.write(json.dumps({"name": "res", "kind": "residuals", "value": {"schema_type": "residuals",
        "data": {"bin_edges": [0, 1], "bin_counts": [3]}}}) + "\\n")
"""
    run = _submit(workspace, make_tree, script)
    run.wait_for_completion()
    assert list(run.get_metrics()) == ["res"]
    assert any("wrong type for its kind" in w for w in run.get_details()["warnings"])


def test_a_model_uploaded_under_its_own_name_is_registered_from_the_script(workspace, make_tree, tmp_path):
    script = """
import io
from azureml.core import Run
run = Run.get_context()
run.upload_file(name="model.pkl", path_or_stream=io.BytesIO(b"weights"))
run.register_model(model_name="churn", model_path="model.pkl")
"""
    run = _submit(workspace, make_tree, script)
    run.wait_for_completion()
    assert run.get_details()["warnings"] == []
    (model,) = run.get_models()
    assert model.name == "churn"
    path = model.download(tmp_path)
    assert Path(path).read_bytes() == b"weights"


def test_v1_scripts_run_unchanged_through_the_operator(tmp_path, make_tree):
    """The same scripts as a DAG would run them: ScriptRunOperator submits and follows; every
    value they log, upload or make lands in the run the task returns."""
    from types import SimpleNamespace

    from airflow_provider_mltrain import Workspace
    from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

    class TI(SimpleNamespace):
        def xcom_push(self, key, value):
            self.xcoms[key] = value

    src = make_tree({"self_aware.py": SELF_AWARE, "typed.py": TYPED})
    ws = Workspace(tmp_path / "ws")
    for script in ("self_aware.py", "typed.py"):
        ti = TI(dag_id="azure", task_id=script[:-3], run_id="r1", map_index=-1, stats_tags={}, xcoms={})
        op = ScriptRunOperator(
            task_id=script[:-3],
            experiment_name="compat",
            source_directory=str(src),
            script=script,
            workspace=str(ws.root),
            poll_interval=0.2,
        )
        run = ws.get_run(op.execute({"ti": ti}))
        assert run.get_status() == "Completed", run.get_log_tail()
        if script == "self_aware.py":
            assert run.get_metrics()["from_handle"] == 1.5
            assert [c.get_metrics() for c in run.get_children()] == [{"fold_auc": 0.8}]
            assert "reports/q1.txt" in run.get_file_names()
            assert "read back quarterly numbers" in run.read_log().decode()
        else:
            metrics = run.get_metrics()
            assert metrics["confusion"]["data"]["matrix"] == [[8, 2], [1, 9]]
            assert metrics["accuracy"]["data"]["probability_thresholds"] == [0.0, 0.5, 1.0]
            assert metrics["predictions"]["data"]["bin_counts"] == [40, 60]
            assert metrics["residuals"]["data"]["bin_edges"] == [-1.0, 0.0, 1.0]
            assert metrics["per class"] == {"cls": ["cat"], "recall": [0.8]}
            rows = {r["name"]: r for r in ws.store.get_metric_rows(run.id)}
            assert rows["confusion"]["description"] == "validation set"
