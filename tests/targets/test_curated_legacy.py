"""The curated environment for old scripts: what Azure ML's 2021-2024 sklearn images ran, runs.

Local target only: the build needs PyPI (uv caches it after the first time); the curated spec is
the same on every target.
"""

from __future__ import annotations

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.compat.azureml.core import Environment as AzureEnvironment

OLD_SCRIPT = """\
import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from azureml.core import Run

X = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float)  # np.float: removed in NumPy 1.24
y = np.array([0, 0, 1, 1], dtype=np.int)
model = LogisticRegression().fit(X, y)
run = Run.get_context()
run.log("accuracy", np.float(model.score(X, y)))
run.log("numpy_minor", int(np.__version__.split(".")[1]))
run.log("sklearn_minor", int(sklearn.__version__.split(".")[1]))
run.log("str_alias", np.str("ok") == "ok")
"""


def test_a_script_using_np_float_completes_in_the_legacy_environment(tmp_path, make_tree):
    ws = Workspace(tmp_path / "ws")
    src = make_tree({"train.py": OLD_SCRIPT})
    # Reached by Azure's curated name, as a v1 notebook asks for it.
    env = AzureEnvironment.get(ws, "AzureML-sklearn-1.0-ubuntu20.04-py38-cpu")
    assert env.name == "mltrain-sklearn-legacy"
    run = Experiment(ws, "legacy").submit(ScriptRunConfig(src, "train.py", environment=env))
    details = run.wait_for_completion(show_output=True, raise_on_error=False)
    assert details["status"] == "Completed", run.get_log_tail()
    metrics = run.get_metrics()
    assert metrics["accuracy"] == 1.0
    assert metrics["numpy_minor"] == 23 and metrics["sklearn_minor"] == 1
    assert metrics["str_alias"] in (True, 1)
    assert "numpy==1.23.5" in details["environment"]["packages"]
