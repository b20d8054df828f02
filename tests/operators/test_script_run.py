from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from airflow_provider_mltrain.core.experiment import NAME_RE
from airflow_provider_mltrain.operators.script_run import ScriptRunOperator, run_id_for_task


def test_run_id_is_stable_safe_and_unique():
    a = run_id_for_task("dag", "train", "manual__2026-11-29T05:00:00+00:00")
    assert a == run_id_for_task("dag", "train", "manual__2026-11-29T05:00:00+00:00")
    assert NAME_RE.match(a) and len(a) <= 255
    assert re.fullmatch(r"dag\.train\.manual__2026-11-29T05_00_00_00_00\.[0-9a-f]{10}", a)
    assert (
        run_id_for_task("dag", "train", "manual__2026-11-29T05_00_00_00_00") != a
    )  # sanitizing never merges ids
    assert run_id_for_task("dag", "train", "r", map_index=2) != run_id_for_task(
        "dag", "train", "r", map_index=3
    )
    long = run_id_for_task("d" * 250, "t" * 250, "r" * 250)
    assert NAME_RE.match(long)
    assert run_id_for_task("dag", "train", "r", attempt=2).endswith(".a2")


def test_template_fields():
    assert set(ScriptRunOperator.template_fields) >= {"source_directory", "script", "arguments", "tags"}


@pytest.fixture
def operator(tmp_path):
    return ScriptRunOperator(
        task_id="train",
        experiment_name="exp",
        source_directory=str(tmp_path),
        script="t.py",
        workspace=str(tmp_path / "ws"),
    )


def test_retry_after_failure_gets_a_fresh_linked_run(operator, tmp_path, make_tree):
    from airflow_provider_mltrain import Experiment, ScriptRunConfig

    ws = operator._workspace()
    ti = SimpleNamespace(dag_id="d", task_id="train", run_id="r1", map_index=-1)
    first_id, previous = operator._pick_run_id(ws, ti)
    assert previous is None
    src = make_tree({"t.py": "raise SystemExit(1)"})
    Experiment(ws, "exp").submit(ScriptRunConfig(src, "t.py"), run_id=first_id).wait_for_completion(
        raise_on_error=False
    )
    second_id, previous = operator._pick_run_id(ws, ti)
    assert previous == first_id and second_id == first_id + ".a2"
    (src / "t.py").write_text("print('ok')")
    Experiment(ws, "exp").submit(ScriptRunConfig(src, "t.py"), run_id=second_id).wait_for_completion()
    # A completed run is returned as it is: no third run.
    assert operator._pick_run_id(ws, ti)[0] == second_id
    assert len(ws.store.list_runs()) == 2


def test_action_if_run_exists(tmp_path, make_tree):
    from airflow_provider_mltrain import Experiment, ScriptRunConfig
    from airflow_provider_mltrain.version_compat import AirflowException

    def op(action):
        return ScriptRunOperator(
            task_id="train",
            experiment_name="exp",
            source_directory=str(tmp_path),
            script="t.py",
            workspace=str(tmp_path / "ws"),
            action_if_run_exists=action,
        )

    ti = SimpleNamespace(dag_id="d", task_id="train", run_id="r1", map_index=-1)
    ws = op("reattach")._workspace()
    src = make_tree({"t.py": "print('ok')"})
    first_id, _ = op("reattach")._pick_run_id(ws, ti)
    Experiment(ws, "exp").submit(ScriptRunConfig(src, "t.py"), run_id=first_id).wait_for_completion()
    # resubmit: a completed run is followed by a fresh one, linked to it (e.g. a cleared task retrains).
    second_id, previous = op("resubmit")._pick_run_id(ws, ti)
    assert second_id == first_id + ".a2" and previous == first_id
    Experiment(ws, "exp").submit(ScriptRunConfig(src, "t.py"), run_id=second_id).wait_for_completion()
    # reattach follows the latest run of the chain, not the first.
    assert op("reattach")._pick_run_id(ws, ti) == (second_id, None)
    with pytest.raises(AirflowException, match="action_if_run_exists='fail'"):
        op("fail")._pick_run_id(ws, ti)
    with pytest.raises(ValueError, match="use one of reattach, resubmit, fail"):
        op("sometimes")


def test_on_kill_cancels_the_run(operator, make_tree):
    from airflow_provider_mltrain import Experiment, ScriptRunConfig

    ws = operator._workspace()
    src = make_tree({"t.py": "import time\ntime.sleep(600)\n"})
    operator._run = Experiment(ws, "exp").submit(ScriptRunConfig(src, "t.py"))
    operator.cancel_grace_period = 1
    operator.on_kill()
    assert operator._run.get_status() == "Canceled"
