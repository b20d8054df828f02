"""Sweeps on the local target: real child runs of short scripts, driven through the run store."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from airflow_provider_mltrain import Experiment, InvalidRunConfig, ScriptRunConfig
from airflow_provider_mltrain.core.sweep import EARLY_TERMINATED, HYPERPARAMETERS, INDEX, SweepRun
from airflow_provider_mltrain.train.hyperdrive import (
    BanditPolicy,
    BayesianParameterSampling,
    GridParameterSampling,
    HyperDriveConfig,
    InvalidSweep,
    PrimaryMetricGoal,
    RandomParameterSampling,
    choice,
    normal,
    uniform,
)

CURVES = """
import argparse, time
from mltrain import Run
p = argparse.ArgumentParser()
p.add_argument("--quality")
a = p.parse_args()
run = Run.get_context()
value = {"good": 1.0, "ok": 0.95, "bad": 0.5}[a.quality]
for i in range(10):
    run.log("accuracy", value)
    time.sleep(0.3 if a.quality == "bad" else 0.02)
"""

QUADRATIC = """
import argparse
from mltrain import Run
p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
Run.get_context().log("score", -(p.parse_args().x - 0.7) ** 2)
"""


def sweep_config(src, sampling, total, concurrent, metric="accuracy", compute_target=None, **kwargs):
    return HyperDriveConfig(
        run_config=ScriptRunConfig(src, "train.py", compute_target=compute_target or "local"),
        hyperparameter_sampling=sampling,
        primary_metric_name=metric,
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=total,
        max_concurrent_runs=concurrent,
        **kwargs,
    )


def children(sweep):
    return [(c, json.loads(c.properties[HYPERPARAMETERS])) for c in sweep.get_children()]


def max_overlap(sweep):
    """The most children that were ever active at once, from the states the store recorded."""
    spans = []
    for child in sweep.get_children():
        events = sweep.workspace.store.get_events(child.id)
        start = min(e["at"] for e in events)
        end = max(e["at"] for e in events if e["status"] in ("Completed", "Failed", "Canceled"))
        spans.append((start, end))
    return max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)


def test_random_sweep_bandit_cancels_exactly_the_laggards(workspace, make_tree):
    random_bandit_sweep_cancels_exactly_the_laggards(workspace, make_tree)


def random_bandit_sweep_cancels_exactly_the_laggards(
    workspace, make_tree, compute_target=None, bad_sleep=0.3
):
    """12 children of known curves, 3 at once, a bandit policy: every bad child is canceled by the
    policy, every other completes (tests/targets/test_docker.py runs it on Docker too, where the
    bad children run longer: each of the driver's passes reads the children from the daemon)."""
    src = make_tree({"train.py": CURVES.replace("0.3 if", f"{bad_sleep!r} if")})
    space = {"--quality": choice("good", "ok", "bad")}
    # A seed whose first child is good (so every bad child has a leader to lag behind) and whose
    # twelve children hold some of each kind: the test then knows which children must stop.
    seed = next(
        s
        for s in range(1000)
        if (draws := [RandomParameterSampling(space).sample(i, s, [], True)["--quality"] for i in range(12)])[
            0
        ]
        == "good"
        and draws.count("bad") >= 3
        and draws.count("ok") >= 2
    )
    config = sweep_config(
        src,
        RandomParameterSampling(space, seed=seed),
        total=12,
        concurrent=3,
        policy=BanditPolicy(slack_factor=0.1, evaluation_interval=1),
        compute_target=compute_target,
    )
    sweep = Experiment(workspace, "exp").submit(config)
    assert isinstance(sweep, SweepRun)
    sweep.wait_for_completion(poll_interval=0.1)

    kids = children(sweep)
    assert len(kids) == 12
    assert [int(c.properties[INDEX]) for c, _ in kids] == list(range(12))
    for child, params in kids:
        if params["--quality"] == "bad":
            assert child.get_status() == "Canceled", child.id
            assert "BanditPolicy" in child.properties[EARLY_TERMINATED]
        else:
            assert child.get_status() == "Completed", child.id
            assert EARLY_TERMINATED not in child.properties
        assert child.parent == sweep
        assert child.get_details()["arguments"][-2:] == ["--quality", params["--quality"]]
    assert max_overlap(sweep) <= 3
    assert sweep.get_status() == "Completed"
    best = sweep.get_best_run_by_primary_metric()
    assert json.loads(best.properties[HYPERPARAMETERS]) == {"--quality": "good"}
    ranked = sweep.get_children_sorted_by_primary_metric()
    assert [r["best_primary_metric"] for r in ranked] == sorted(
        (r["best_primary_metric"] for r in ranked), reverse=True
    )
    assert ranked[-1]["early_terminated"]


def test_grid_covers_the_grid(workspace, make_tree):
    src = make_tree(
        {
            "train.py": textwrap.dedent(
                """
                import argparse
                from mltrain import Run
                p = argparse.ArgumentParser()
                p.add_argument("--batch", type=int)
                p.add_argument("--opt")
                a = p.parse_args()
                run = Run.get_context()
                run.log("accuracy", a.batch + (0.5 if a.opt == "adam" else 0))
                run.tag("parent_seen", run.parent.id)
                """
            )
        }
    )
    space = {"--batch": choice(16, 32, 64), "opt": choice("sgd", "adam")}
    sweep = Experiment(workspace, "exp").submit(
        sweep_config(src, GridParameterSampling(space), total=6, concurrent=4)
    )
    sweep.wait_for_completion(poll_interval=0.1)
    got = sorted((p["--batch"], p["opt"]) for _, p in children(sweep))
    assert got == sorted(itertools.product([16, 32, 64], ["sgd", "adam"]))
    assert all(c.get_status() == "Completed" for c, _ in children(sweep))
    assert {c.tags["parent_seen"] for c, _ in children(sweep)} == {sweep.id}  # run.parent in the script
    assert sweep.get_best_run_by_primary_metric().get_metrics()["accuracy"] == 64.5


def test_bayesian_finds_the_optimum_in_fewer_children_than_random(workspace, make_tree):
    src = make_tree({"train.py": QUADRATIC})
    space = {"--x": uniform(0, 1)}

    def first_hit(sweep):
        hits = [int(c.properties[INDEX]) for c, p in children(sweep) if abs(p["--x"] - 0.7) < 0.02]
        return min(hits) + 1 if hits else None

    bayes = Experiment(workspace, "exp").submit(
        sweep_config(src, BayesianParameterSampling(space, seed=0), total=12, concurrent=1, metric="score")
    )
    bayes.wait_for_completion(poll_interval=0.05)
    needed = first_hit(bayes)
    assert needed is not None and needed <= 12
    rand = Experiment(workspace, "exp").submit(
        sweep_config(src, RandomParameterSampling(space, seed=0), total=needed, concurrent=4, metric="score")
    )
    rand.wait_for_completion(poll_interval=0.05)
    assert first_hit(rand) is None  # random with the same seed has not found it after as many children
    best = bayes.get_best_run_by_primary_metric()
    assert abs(json.loads(best.properties[HYPERPARAMETERS])["--x"] - 0.7) < 0.02


def test_same_seed_same_children(workspace, make_tree):
    src = make_tree({"train.py": QUADRATIC})
    space = {"--x": uniform(0, 1)}
    runs = []
    for _ in range(2):
        sweep = Experiment(workspace, "exp").submit(
            sweep_config(src, RandomParameterSampling(space, seed=42), total=4, concurrent=4, metric="score")
        )
        sweep.wait_for_completion(poll_interval=0.05)
        runs.append([p for _, p in children(sweep)])
    assert runs[0] == runs[1]
    assert len({p["--x"] for p in runs[0]}) == 4
    other = RandomParameterSampling(space, seed=43)
    assert [other.sample(i, 43, [], True) for i in range(4)] != runs[0]


DRIVER = """
import sys
from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.train.hyperdrive import (
    HyperDriveConfig, PrimaryMetricGoal, RandomParameterSampling, uniform,
)


def config(src):
    return HyperDriveConfig(
        run_config=ScriptRunConfig(src, "train.py"),
        hyperparameter_sampling=RandomParameterSampling({"--x": uniform(0, 1)}, seed=7),
        primary_metric_name="score",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=8,
        max_concurrent_runs=3,
    )


if __name__ == "__main__":
    workspace, src = sys.argv[1], sys.argv[2]
    Experiment(Workspace(workspace), "exp").submit(config(src), run_id="sweep1").wait_for_completion(
        poll_interval=0.05
    )
"""


def test_driver_killed_mid_sweep_resumes_without_duplicate_or_lost_child(workspace, make_tree, tmp_path):
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
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(driver), str(workspace.root), str(src)])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            records = [
                r for r in workspace.store.list_runs() if r["properties"].get("mltrain.parent") == "sweep1"
            ]
            if len(records) >= 4:
                break
            assert proc.poll() is None, "the driver ended before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("the driver never started a fourth child")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert workspace.store.get_run("sweep1")["status"] == "Running"

    sys.path.insert(0, str(tmp_path))
    try:
        import driver as driver_module  # the same HyperDriveConfig the killed driver had
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("driver", None)
    sweep = Experiment(workspace, "exp").submit(driver_module.config(src), run_id="sweep1")
    sweep.wait_for_completion(poll_interval=0.05)

    kids = children(sweep)
    assert [c.id for c, _ in kids] == [f"sweep1_{i}" for i in range(8)]
    assert all(c.get_status() == "Completed" for c, _ in kids), [(c.id, c.get_status()) for c, _ in kids]
    sampling = RandomParameterSampling({"--x": uniform(0, 1)}, seed=7)
    assert [p for _, p in kids] == [sampling.sample(i, 7, [], True) for i in range(8)]
    assert sorted(f.name for f in starts.iterdir()) == sorted(c.id for c, _ in kids)
    assert all(f.read_text() == "started\n" for f in starts.iterdir())  # each child ran once


def test_primary_metric_never_logged_is_a_warning(workspace, make_tree):
    src = make_tree({"train.py": QUADRATIC})
    sweep = Experiment(workspace, "exp").submit(
        sweep_config(
            src,
            RandomParameterSampling({"--x": uniform(0, 1)}, seed=1),
            total=2,
            concurrent=2,
            metric="accuracy",
            policy=BanditPolicy(slack_factor=0.1),
        )
    )
    sweep.wait_for_completion(poll_interval=0.05)
    assert any("without logging the primary metric 'accuracy'" in w for w in sweep.warnings)
    assert sweep.get_best_run_by_primary_metric() is None
    assert all(c.get_status() == "Completed" for c in sweep.get_children())


def test_resume_with_another_definition_is_refused(workspace, make_tree):
    src = make_tree({"train.py": QUADRATIC})
    config = sweep_config(src, RandomParameterSampling({"--x": uniform(0, 1)}, seed=1), 1, 1, metric="score")
    Experiment(workspace, "exp").submit(config, run_id="s1").wait_for_completion(poll_interval=0.05)
    other = sweep_config(src, RandomParameterSampling({"--x": uniform(0, 2)}, seed=1), 1, 1, metric="score")
    with pytest.raises(InvalidSweep, match="parameter_space"):
        Experiment(workspace, "exp").submit(other, run_id="s1")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda src: RandomParameterSampling({}), "parameter_space is empty"),
        (lambda src: RandomParameterSampling({"--a": choice(1, "two")}), "mix types"),
        (lambda src: RandomParameterSampling({"--a": choice()}), "at least one option"),
        (lambda src: RandomParameterSampling({"--a": 0.1}), "must be an expression"),
        (lambda src: RandomParameterSampling({"bad name!": uniform(0, 1)}), "not valid"),
        (lambda src: uniform(1, 0), "min_value must be less than max_value"),
        (
            lambda src: sweep_config(
                src, GridParameterSampling({"--a": choice(1, 2, 3), "--b": choice(1, 2)}), 5, 2
            ),
            "grid has 6 combinations but max_total_runs is 5",
        ),
        (lambda src: GridParameterSampling({"--a": uniform(0, 1)}), "does not take"),
        (
            lambda src: sweep_config(
                src,
                BayesianParameterSampling({"--a": uniform(0, 1)}),
                5,
                1,
                policy=BanditPolicy(slack_factor=0.1),
            ),
            "takes no early termination policy",
        ),
        (lambda src: BayesianParameterSampling({"--a": normal(0, 1)}), "does not take"),
        (
            lambda src: sweep_config(src, RandomParameterSampling({"--a": uniform(0, 1)}), 0, 1),
            "max_total_runs",
        ),
        (
            lambda src: sweep_config(src, RandomParameterSampling({"--a": uniform(0, 1)}), 2, 1, metric=""),
            "primary",
        ),
    ],
)
def test_bad_sweeps_are_refused(make, match, make_tree):
    src = make_tree({"train.py": QUADRATIC})
    with pytest.raises(InvalidSweep, match=match):
        make(src)


def test_bad_sweep_submission_writes_nothing(workspace, make_tree):
    src = make_tree({"train.py": QUADRATIC})
    config = HyperDriveConfig(
        run_config=ScriptRunConfig(src, "train.py", arguments=["--x", "1"]),
        hyperparameter_sampling=RandomParameterSampling({"--x": uniform(0, 1)}),
        primary_metric_name="score",
        primary_metric_goal="maximize",
        max_total_runs=2,
    )
    with pytest.raises(InvalidSweep, match="already pass --x"):
        Experiment(workspace, "exp").submit(config)
    missing = HyperDriveConfig(
        run_config=ScriptRunConfig(src, "nope.py"),
        hyperparameter_sampling=RandomParameterSampling({"--x": uniform(0, 1)}),
        primary_metric_name="score",
        primary_metric_goal="maximize",
        max_total_runs=2,
    )
    with pytest.raises(InvalidRunConfig, match="does not exist"):
        Experiment(workspace, "exp").submit(missing)
    assert workspace.store.list_runs() == []


def test_cancelling_a_sweep_cancels_its_children_and_starts_no_more(workspace, make_tree):
    from airflow_provider_mltrain import Run

    src = make_tree({"train.py": "import time\nfrom mltrain import Run\nRun.get_context()\ntime.sleep(60)\n"})
    config = sweep_config(src, RandomParameterSampling({"--x": uniform(0, 1)}, seed=1), 6, 2, metric="score")
    sweep = Experiment(workspace, "exp").submit(config)  # starts the first two children
    assert len(sweep.get_children()) == 2
    assert Run(workspace, sweep.id).cancel(grace_period=2) == "Canceled"  # as `mltrain runs cancel` does
    assert [c.get_status() for c in sweep.get_children()] == ["Canceled", "Canceled"]
    details = sweep.wait_for_completion(poll_interval=0.05, raise_on_error=False)
    assert details["status"] == "Canceled"
    assert len(sweep.get_children()) == 2


def test_a_recorded_definition_rebuilds_the_same_config(make_tree):
    """What a trigger holds (plain data) drives the sweep exactly as the config it came from."""
    from airflow_provider_mltrain.train.hyperdrive import (
        MedianStoppingPolicy,
        NoTerminationPolicy,
        TruncationSelectionPolicy,
        loguniform,
        quniform,
        randint,
    )

    src = make_tree({"train.py": "print(1)"})
    space = {"--lr": loguniform(-9, -2), "--n": randint(5), "--b": quniform(1, 9, 2), "--o": choice("a", "b")}
    samplings = [
        GridParameterSampling({"--o": choice("a", "b"), "--k": choice(1, 2.5)}),
        RandomParameterSampling({**space, "--w": normal(0, 1)}, seed=3),
        BayesianParameterSampling(space, seed=4, sampler="tpe", n_startup_trials=3),
    ]
    policies = [
        BanditPolicy(slack_amount=0.2, evaluation_interval=2, delay_evaluation=1),
        MedianStoppingPolicy(evaluation_interval=3, delay_evaluation=4),
        TruncationSelectionPolicy(30, delay_evaluation=2, exclude_finished_jobs=True),
        NoTerminationPolicy(),
    ]
    cases = [(samplings[0], p) for p in policies] + [(samplings[1], policies[0]), (samplings[2], None)]
    for sampling, policy in cases:
        config = sweep_config(src, sampling, total=10, concurrent=2, policy=policy, max_duration_minutes=30)
        recorded = json.loads(json.dumps(config.describe(11)))
        rebuilt = HyperDriveConfig.from_definition(recorded, config.run_config)
        assert rebuilt.describe(11) == config.describe(11)
        index_samples = [rebuilt.hyperparameter_sampling.sample(i, 11, [], True) for i in range(3)]
        if not isinstance(sampling, BayesianParameterSampling):
            assert index_samples == [sampling.sample(i, 11, [], True) for i in range(3)]
    with pytest.raises(InvalidSweep, match="Not a sweep definition"):
        HyperDriveConfig.from_definition({"sampling": "sobol"}, config.run_config)


def test_children_keep_the_run_configs_duration_limit(workspace, make_tree):
    """max_run_duration_seconds of the sweep's run_config is each child's limit."""
    src = make_tree(
        {
            "train.py": "import sys, time\nfrom mltrain import Run\nRun.get_context().log('accuracy', 1.0)\n"
            "if sys.argv[-1] == 'slow':\n    time.sleep(600)\n"
        }
    )
    config = HyperDriveConfig(
        run_config=ScriptRunConfig(src, "train.py", max_run_duration_seconds=1),
        hyperparameter_sampling=GridParameterSampling({"--speed": choice("fast", "slow")}),
        primary_metric_name="accuracy",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=2,
        max_concurrent_runs=2,
    )
    sweep = Experiment(workspace, "exp").submit(config)
    sweep.wait_for_completion(poll_interval=0.1, raise_on_error=False, timeout=300)
    by_speed = {p["--speed"]: c for c, p in children(sweep)}
    assert by_speed["fast"].get_status() == "Completed"
    slow = by_speed["slow"].get_details()
    assert slow["status"] == "Canceled" and "max_run_duration_seconds=1" in slow["error"]


def test_a_freed_slot_is_filled_when_its_child_ends_not_at_the_next_poll(workspace, make_tree):
    """The driver waits on its oldest running child's status, so with a poll interval far longer
    than the children, one child at a time still runs them back to back: with the plain sleep this
    sweep took three poll intervals and hit its timeout first."""
    src = make_tree({"train.py": "from mltrain import Run\nRun.get_context().log('score', 1.0)\n"})
    config = sweep_config(src, RandomParameterSampling({"--x": uniform(0, 1)}, seed=3), 3, 1, metric="score")
    sweep = Experiment(workspace, "exp").submit(config)
    details = sweep.wait_for_completion(poll_interval=600, timeout=240)
    assert details["status"] == "Completed"
    assert [c.get_status() for c in sweep.get_children()] == ["Completed"] * 3


class _Target:
    """A target whose child ends during the first wait: counts the calls the driver makes."""

    def __init__(self, states):
        self.states, self.waits = dict(states), []

    def read_status(self, run_id):
        return {"state": self.states[run_id]}

    def wait_for_change(self, run_id, seconds):
        self.waits.append(run_id)
        self.states[run_id] = "Finalizing" if self.states[run_id] == "Running" else "Completed"


def test_the_driver_is_woken_once_per_ended_child(workspace, make_tree, monkeypatch):
    """Only a child that ended (not one still Finalizing) wakes the driver, and only once: while
    the store says Running a while longer the next wait is on the next child, never a loop of
    steps with no sleep. A target that fails the wait costs a plain sleep of the poll interval."""
    src = make_tree({"train.py": "import time\nfrom mltrain import Run\nRun.get_context()\ntime.sleep(60)\n"})
    config = sweep_config(src, RandomParameterSampling({"--x": uniform(0, 1)}, seed=1), 2, 2, metric="score")
    sweep = Experiment(workspace, "exp").submit(config)  # two children, Running or about to
    first, second = sorted(c.id for c in sweep.get_children())
    target = _Target({first: "Running", second: "Running"})
    monkeypatch.setattr(type(sweep._child(first)), "target", property(lambda run: target))
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    from airflow_provider_mltrain.core.sweep import _run_ended

    # A child just started has no status yet: that is no news (else a wave's children would each
    # wake the driver at once, and it would then sleep a whole poll interval).
    assert [_run_ended(s) for s in (None, {"state": None}, {"state": "Finalizing"})] == [False] * 3
    assert all(_run_ended({"state": s}) for s in ("Completed", "Failed", "Canceled"))
    try:
        sweep.wait_for_a_child(5.0)  # the oldest: Finalizing wakes nothing, Completed does
        assert target.waits == [first, first] and slept == []
        sweep.wait_for_a_child(5.0)  # the first is still Running in the store: the second now
        assert target.waits == [first, first, second, second] and slept == []
        sweep.wait_for_a_child(5.0)  # both woke the driver once: a plain poll interval
        assert target.waits == [first, first, second, second] and slept == [5.0]

        def broken(run_id, seconds):
            raise OSError("the target went away")

        sweep._ended.clear()
        target.states = {first: "Running", second: "Running"}
        monkeypatch.setattr(target, "wait_for_change", broken)
        sweep.wait_for_a_child(5.0)
        assert len(slept) == 2 and 4.0 < slept[1] <= 5.0
    finally:
        monkeypatch.undo()
        sweep.cancel(grace_period=1)


class _Died(BaseException):
    """What a SIGKILL between recording a child and starting it looks like from inside."""


def test_a_later_try_starts_the_child_a_dead_driver_on_another_host_recorded(
    workspace, make_tree, monkeypatch
):
    """Airflow retries a task only after the try before it ended, so the driver of try 2 starts a
    child that try 1 recorded and never started, whichever host try 1 ran on; a driver of the same
    try (which may still be alive there) leaves it alone. Each child runs once."""
    from airflow_provider_mltrain.core.sweep import DRIVER_TRY, submit_sweep
    from airflow_provider_mltrain.targets.local import LocalTarget

    src = make_tree({"train.py": "from mltrain import Run\nRun.get_context().log('score', 1.0)\n"})
    config = sweep_config(src, RandomParameterSampling({"--x": uniform(0, 1)}, seed=5), 2, 1, metric="score")
    experiment = Experiment(workspace, "exp")

    def die(*args, **kwargs):
        raise _Died

    with monkeypatch.context() as m:
        m.setattr(LocalTarget, "start", die)
        with pytest.raises(_Died):
            submit_sweep(experiment, config, run_id="swp", driver_try=1)
    child = workspace.store.get_run("swp_0")
    assert child["status"] in ("Queued", "Preparing")
    assert child["properties"][DRIVER_TRY] == "1"
    # The dead driver ran on another host: this host cannot tell whether that process is alive.
    workspace.store.update(
        "swp_0", properties={**child["properties"], "mltrain.submitted_by": "elsewhere:4242"}
    )

    same_try = submit_sweep(experiment, config, run_id="swp", driver_try=1)
    same_try.step()
    assert workspace.store.get_run("swp_0")["status"] in ("Queued", "Preparing")
    assert [c.id for c in same_try.get_children()] == ["swp_0"]  # its slot stays taken

    retry = submit_sweep(experiment, config, run_id="swp", driver_try=2)
    details = retry.wait_for_completion(poll_interval=0.05, timeout=240)
    assert details["status"] == "Completed"
    kids = retry.get_children()
    assert [(c.id, c.get_status()) for c in kids] == [("swp_0", "Completed"), ("swp_1", "Completed")]
    assert [c.properties[DRIVER_TRY] for c in kids] == ["2", "2"]
    assert [len(workspace.store.get_metric_rows(c.id, "score")) for c in kids] == [1, 1]  # each ran once
