"""SweepOperator: real sweeps on the local target, the task instance faked by its identity alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest

from airflow_provider_mltrain import Workspace
from airflow_provider_mltrain.core.sweep import EARLY_TERMINATED, HYPERPARAMETERS, SWEEP_SEED, SweepRun
from airflow_provider_mltrain.operators.script_run import run_id_for_task
from airflow_provider_mltrain.operators.sweep import XCOM_SWEEP_SUMMARY, SweepOperator
from airflow_provider_mltrain.train.hyperdrive import (
    BanditPolicy,
    GridParameterSampling,
    HyperDriveConfig,
    InvalidSweep,
    RandomParameterSampling,
    choice,
    uniform,
)
from airflow_provider_mltrain.triggers.sweep import SweepTrigger
from airflow_provider_mltrain.version_compat import AirflowException
from tests.operators.test_script_run import Deferred, deferrals


class FakeTI(SimpleNamespace):
    def __init__(self, run_id="manual__1"):
        super().__init__(dag_id="dag", task_id="sweep", run_id=run_id, map_index=-1, xcoms={})

    def xcom_push(self, key, value):
        self.xcoms[key] = json.loads(json.dumps(value))  # what XCom would store


def context(ti):
    return {"ti": ti}


CURVES = """
import argparse, time
from mltrain import Run
p = argparse.ArgumentParser()
p.add_argument("--quality")
a = p.parse_args()
run = Run.get_context()
value = {"good": 1.0, "ok": 0.95, "bad": 0.5}[a.quality]
for i in range(8):
    run.log("accuracy", value)
    time.sleep(0.3 if a.quality == "bad" else 0.02)
"""


def grid_operator(src, ws, **kwargs):
    return SweepOperator(
        task_id="sweep",
        experiment_name="exp",
        source_directory=str(src),
        script="train.py",
        hyperparameter_sampling=GridParameterSampling({"--quality": choice("good", "bad", "ok")}),
        policy=BanditPolicy(slack_factor=0.1),
        primary_metric_name="accuracy",
        max_total_runs=3,
        max_concurrent_runs=3,
        poll_interval=0.1,
        workspace=str(ws),
        **kwargs,
    )


def test_sweep_returns_the_best_child_and_pushes_the_summary(tmp_path, make_tree):
    src = make_tree({"train.py": CURVES})
    ti = FakeTI()
    best = grid_operator(src, tmp_path / "ws", deferrable=False).execute(context(ti))

    sweep_id = run_id_for_task("dag", "sweep", "manual__1")
    assert best == f"{sweep_id}_0"
    summary = ti.xcoms[XCOM_SWEEP_SUMMARY]
    assert summary["sweep_id"] == sweep_id and summary["status"] == "Completed"
    assert summary["best_run_id"] == best and summary["best_primary_metric"] == 1.0
    assert summary["primary_metric_name"] == "accuracy" and summary["primary_metric_goal"] == "MAXIMIZE"
    by_quality = {c["hyperparameters"]["--quality"]: c for c in summary["children"]}
    assert [c["run_id"] for c in summary["children"]] == [best, f"{sweep_id}_2", f"{sweep_id}_1"]
    assert by_quality["good"]["status"] == by_quality["ok"]["status"] == "Completed"
    assert by_quality["bad"]["status"] == "Canceled"
    assert "BanditPolicy" in by_quality["bad"]["early_terminated"]
    assert ti.xcoms["run_id"] == sweep_id  # the "ML Training run" link opens the sweep
    sweep = SweepRun(Workspace(tmp_path / "ws"), sweep_id)
    assert sweep.properties["airflow.dag_id"] == "dag" and sweep.properties["airflow.task_id"] == "sweep"
    # Every child belongs to the DAG too (the UI shows a run to those who may read its DAG),
    # the first ones, started with the parent, included.
    for child in sweep.get_children():
        assert child.properties["airflow.dag_id"] == "dag", child.id
        assert child.properties["airflow.run_id"] == "manual__1", child.id


def test_deferrable_execute_defers_to_a_sweep_trigger_and_completes_from_its_event(
    tmp_path, make_tree, monkeypatch
):
    src = make_tree({"train.py": CURVES})
    operator = grid_operator(src, tmp_path / "ws", deferrable=True)
    seen = deferrals(operator, monkeypatch)
    with pytest.raises(Deferred):
        operator.execute(context(FakeTI()))
    ((trigger, method_name),) = seen
    assert isinstance(trigger, SweepTrigger) and method_name == "execute_complete"
    from tests.triggers.test_sweep import collect

    (event,) = collect(SweepTrigger(**trigger.serialize()[1]))
    ti = FakeTI()
    best = operator.execute_complete(context(ti), event.payload)
    assert best == ti.xcoms[XCOM_SWEEP_SUMMARY]["best_run_id"] == f"{trigger.sweep_id}_0"


def test_a_failed_sweep_fails_the_task_after_pushing_its_summary(tmp_path, make_tree):
    src = make_tree({"train.py": "raise SystemExit(3)"})
    ti = FakeTI()
    with pytest.raises(AirflowException, match="every child failed"):
        grid_operator(src, tmp_path / "ws", deferrable=False).execute(context(ti))
    summary = ti.xcoms[XCOM_SWEEP_SUMMARY]
    assert summary["status"] == "Failed" and {c["status"] for c in summary["children"]} == {"Failed"}
    # A retry starts a new sweep, which records the one it follows.
    (src / "train.py").write_text(CURVES)
    retry = FakeTI()
    best = grid_operator(src, tmp_path / "ws", deferrable=False).execute(context(retry))
    first = summary["sweep_id"]
    assert best == f"{first}.a2_0"
    assert SweepRun(Workspace(tmp_path / "ws"), f"{first}.a2").properties["mltrain.previous_run_id"] == first


def test_no_child_logged_the_primary_metric_fails_the_task_saying_so(tmp_path, make_tree):
    src = make_tree({"train.py": "print('no metric')"})
    operator = grid_operator(src, tmp_path / "ws", deferrable=False)
    with pytest.raises(AirflowException, match="no child logged the primary metric 'accuracy'"):
        operator.execute(context(FakeTI()))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_total_runs": 2}, "grid has 3 combinations but max_total_runs is 2"),
        ({"primary_metric_name": ""}, "primary_metric_name"),
        ({"max_total_runs": None}, "needs max_total_runs"),
        (
            {"seed": 3, "hyperparameter_sampling": RandomParameterSampling({"--x": uniform(0, 1)}, seed=4)},
            "seed",
        ),
    ],
)
def test_a_bad_sweep_is_refused_when_the_dag_is_parsed(tmp_path, kwargs, match):
    arguments = {
        "task_id": "sweep",
        "experiment_name": "exp",
        "source_directory": str(tmp_path),
        "script": "train.py",
        "hyperparameter_sampling": GridParameterSampling({"--q": choice(1, 2, 3)}),
        "primary_metric_name": "accuracy",
        "max_total_runs": 3,
        **kwargs,
    }
    with pytest.raises(InvalidSweep, match=match):
        SweepOperator(**arguments)


def test_a_ready_hyperdrive_config_or_the_arguments_not_both(tmp_path):
    from airflow_provider_mltrain import ScriptRunConfig

    config = HyperDriveConfig(
        run_config=ScriptRunConfig(str(tmp_path), "train.py", arguments=["--epochs", 2]),
        hyperparameter_sampling=RandomParameterSampling({"--x": uniform(0, 1)}, seed=1),
        primary_metric_name="score",
        primary_metric_goal="MINIMIZE",
        max_total_runs=5,
        max_concurrent_runs=2,
    )
    operator = SweepOperator(task_id="sweep", experiment_name="exp", hyperdrive_config=config)
    assert (operator.source_directory, operator.script, operator.arguments) == (
        str(tmp_path),
        "train.py",
        ["--epochs", 2],
    )
    assert (operator.max_total_runs, operator.max_concurrent_runs, operator.primary_metric_goal.value) == (
        5,
        2,
        "MINIMIZE",
    )
    with pytest.raises(InvalidSweep, match="not both"):
        SweepOperator(task_id="sweep", experiment_name="exp", hyperdrive_config=config, max_total_runs=3)


def test_child_pool_holds_the_sweeps_concurrency_in_the_pool(tmp_path):
    base = {
        "experiment_name": "exp",
        "source_directory": str(tmp_path),
        "script": "train.py",
        "hyperparameter_sampling": RandomParameterSampling({"--x": uniform(0, 1)}),
        "primary_metric_name": "score",
        "max_total_runs": 10,
    }
    operator = SweepOperator(task_id="a", child_pool="gpu", max_concurrent_runs=4, **base)
    assert (operator.pool, operator.pool_slots, operator.max_concurrent_runs) == ("gpu", 4, 4)
    # Fewer slots than max_concurrent_runs: the sweep runs no more children at once than it holds.
    operator = SweepOperator(task_id="b", child_pool="gpu", pool_slots=2, max_concurrent_runs=4, **base)
    assert (operator.pool, operator.pool_slots, operator.max_concurrent_runs) == ("gpu", 2, 2)
    with pytest.raises(ValueError, match="give child_pool only"):
        SweepOperator(task_id="c", child_pool="gpu", pool="cpu", **base)


KILLED_WORKER = """
import json, sys
from types import SimpleNamespace
from airflow_provider_mltrain.operators.sweep import SweepOperator
from airflow_provider_mltrain.train.hyperdrive import RandomParameterSampling, uniform


def operator(workspace, src):
    return SweepOperator(
        task_id="sweep",
        experiment_name="exp",
        source_directory=src,
        script="train.py",
        hyperparameter_sampling=RandomParameterSampling({"--x": uniform(0, 1)}),  # no seed given
        primary_metric_name="score",
        max_total_runs=7,
        max_concurrent_runs=3,
        poll_interval=0.05,
        workspace=workspace,
        deferrable=False,
    )


if __name__ == "__main__":
    ti = SimpleNamespace(dag_id="dag", task_id="sweep", run_id="manual__1", map_index=-1)
    ti.xcom_push = lambda key, value: None
    operator(sys.argv[1], sys.argv[2]).execute({"ti": ti})
"""


def test_worker_killed_mid_sweep_then_the_task_run_again_resumes_the_same_sweep(tmp_path, make_tree):
    starts = tmp_path / "starts"
    starts.mkdir()
    src = make_tree(
        {
            "train.py": textwrap.dedent(
                f"""
                import argparse, os, time
                from mltrain import Run
                p = argparse.ArgumentParser()
                p.add_argument("--x", type=float)
                x = p.parse_args().x
                run = Run.get_context()
                with open(os.path.join({str(starts)!r}, run.id), "a") as f:
                    f.write("started\\n")
                time.sleep(1.0)
                run.log("score", x)
                """
            )
        }
    )
    ws = Workspace(tmp_path / "ws")
    sweep_id = run_id_for_task("dag", "sweep", "manual__1")
    worker = tmp_path / "killed_worker.py"
    worker.write_text(KILLED_WORKER)
    proc = subprocess.Popen([sys.executable, str(worker), str(ws.root), str(src)])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            records = [r for r in ws.store.list_runs() if r["properties"].get("mltrain.parent") == sweep_id]
            if len(records) >= 4:
                break
            assert proc.poll() is None, "the worker ended before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("the worker never started a fourth child")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert ws.store.get_run(sweep_id)["status"] == "Running"

    sys.path.insert(0, str(tmp_path))
    try:
        import killed_worker  # the same operator the killed worker ran
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("killed_worker", None)
    ti = FakeTI()
    best = killed_worker.operator(str(ws.root), str(src)).execute(context(ti))

    sweep = SweepRun(ws, sweep_id)
    kids = sweep.get_children()
    assert [c.id for c in kids] == [f"{sweep_id}_{i}" for i in range(7)]
    assert all(c.get_status() == "Completed" for c in kids), [(c.id, c.get_status()) for c in kids]
    seed = int(sweep.properties[SWEEP_SEED])  # drawn by the killed worker, kept by the retry
    sampling = RandomParameterSampling({"--x": uniform(0, 1)})
    assert [json.loads(c.properties[HYPERPARAMETERS]) for c in kids] == [
        sampling.sample(i, seed, [], True) for i in range(7)
    ]
    assert sorted(f.name for f in starts.iterdir()) == sorted(c.id for c in kids)
    assert all(f.read_text() == "started\n" for f in starts.iterdir())  # each child ran once
    assert best == max(kids, key=lambda c: json.loads(c.properties[HYPERPARAMETERS])["--x"]).id
    assert len(ws.store.list_runs(experiment="exp")) == 8  # the sweep and its children, nothing else
    assert not any(EARLY_TERMINATED in c.properties for c in kids)
    assert ti.xcoms[XCOM_SWEEP_SUMMARY]["sweep_id"] == sweep_id
