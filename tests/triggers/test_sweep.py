"""SweepTrigger on the local target: real sweeps of short scripts, driven from an event loop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from airflow_provider_mltrain import Experiment, ScriptRunConfig
from airflow_provider_mltrain.core.sweep import HYPERPARAMETERS
from airflow_provider_mltrain.train.hyperdrive import (
    BanditPolicy,
    HyperDriveConfig,
    RandomParameterSampling,
    choice,
    uniform,
)
from airflow_provider_mltrain.triggers.sweep import SweepTrigger, run_config_kwargs


def counted_script(starts):
    """Each child appends a line to ``starts/<its id>`` as it starts, sleeps, then logs its x."""
    return textwrap.dedent(
        f"""
        import argparse, os, time
        from mltrain import Run
        p = argparse.ArgumentParser()
        p.add_argument("--x", type=float)
        x = p.parse_args().x
        run = Run.get_context()
        with open(os.path.join({str(starts)!r}, run.id), "a") as f:
            f.write("started\\n")
        time.sleep(0.8)
        run.log("score", x)
        """
    )


def trigger_for(sweep, config, poll_interval=0.1):
    return SweepTrigger(
        sweep_id=sweep.id,
        workspace=str(sweep.workspace.root),
        definition=sweep.definition,
        run_config=run_config_kwargs(config.run_config),
        poll_interval=poll_interval,
        cancel_grace_period=1,
    )


def collect(trigger):
    async def go():
        return [event async for event in trigger.run()]

    return asyncio.run(go())


def config_for(src, total, concurrent, seed=7, **kwargs):
    return HyperDriveConfig(
        run_config=ScriptRunConfig(src, "train.py"),
        hyperparameter_sampling=RandomParameterSampling({"--x": uniform(0, 1)}, seed=seed),
        primary_metric_name="score",
        primary_metric_goal="MAXIMIZE",
        max_total_runs=total,
        max_concurrent_runs=concurrent,
        **kwargs,
    )


def test_serializes_to_what_rebuilds_it(workspace, make_tree):
    src = make_tree({"train.py": "print(1)"})
    config = config_for(src, 2, 1, policy=BanditPolicy(slack_factor=0.2, delay_evaluation=3))
    trigger = SweepTrigger(
        "s1", str(workspace.root), config.describe(7), run_config_kwargs(config.run_config), not_before=9.0
    )
    path, kwargs = trigger.serialize()
    assert kwargs["not_before"] == 9.0
    assert path == "airflow_provider_mltrain.triggers.sweep.SweepTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs  # plain data, as Airflow stores it
    assert SweepTrigger(**kwargs).serialize() == (path, kwargs)
    rebuilt = SweepTrigger(**kwargs)._sweep().config
    assert rebuilt.describe(7) == config.describe(7)
    assert rebuilt.run_config.source_directory == str(src)


def test_drives_the_sweep_to_its_end_and_fires_once(workspace, make_tree, tmp_path):
    starts = tmp_path / "starts"
    starts.mkdir()
    src = make_tree({"train.py": counted_script(starts)})
    config = config_for(src, total=4, concurrent=2)
    sweep = Experiment(workspace, "exp").submit(config, run_id="s1")
    events = collect(trigger_for(sweep, config))
    assert [e.payload for e in events] == [{"sweep_id": "s1", "status": "Completed"}]
    assert [c.id for c in sweep.get_children()] == [f"s1_{i}" for i in range(4)]
    assert all(c.get_status() == "Completed" for c in sweep.get_children())
    best = max(sweep.get_children(), key=lambda c: json.loads(c.properties[HYPERPARAMETERS])["--x"])
    assert sweep.get_best_run_by_primary_metric().id == best.id


def test_the_end_event_is_not_fired_before_not_before(workspace, make_tree, tmp_path):
    """As RunTrigger's (triggers/run.py RESUME_NOT_BEFORE): a sweep over already resumes its task
    no sooner than ``not_before``."""
    starts = tmp_path / "starts"
    starts.mkdir()
    src = make_tree({"train.py": counted_script(starts)})
    config = config_for(src, total=1, concurrent=1)
    sweep = Experiment(workspace, "exp").submit(config, run_id="s1")
    assert collect(trigger_for(sweep, config))[0].payload["status"] == "Completed"
    trigger = trigger_for(sweep, config)  # a deferral that finds the sweep over
    trigger.not_before = time.time() + 1.5
    events = collect(trigger)
    assert [e.payload for e in events] == [{"sweep_id": "s1", "status": "Completed"}]
    assert time.time() >= trigger.not_before - 0.05  # asyncio may wake a clock tick early
    assert len(list(starts.iterdir())) == 1


def test_triggerer_restart_mid_sweep_resumes_with_no_duplicate_or_lost_child(workspace, make_tree, tmp_path):
    starts = tmp_path / "starts"
    starts.mkdir()
    src = make_tree({"train.py": counted_script(starts)})
    config = config_for(src, total=6, concurrent=2)
    sweep = Experiment(workspace, "exp").submit(config, run_id="s1")
    first = trigger_for(sweep, config, poll_interval=0.05)

    async def run_until_cancelled() -> int:
        events = first.run()
        pending = asyncio.ensure_future(events.__anext__())
        deadline = time.monotonic() + 120
        while len(await asyncio.to_thread(sweep.get_children)) < 3:
            assert not pending.done(), "the sweep ended before the triggerer could be stopped"
            assert time.monotonic() < deadline, "the trigger never started a third child"
            await asyncio.sleep(0.02)
        pending.cancel()  # what a triggerer that stops does to its triggers
        try:
            await pending
        except asyncio.CancelledError:
            pass
        await events.aclose()
        return len(await asyncio.to_thread(sweep.get_children))

    asyncio.run(run_until_cancelled())
    assert sweep.refresh().value == "Running"

    _, kwargs = first.serialize()
    events = collect(SweepTrigger(**kwargs))  # what a new triggerer rebuilds from the stored kwargs
    assert [e.payload for e in events] == [{"sweep_id": "s1", "status": "Completed"}]
    kids = sweep.get_children()
    assert [c.id for c in kids] == [f"s1_{i}" for i in range(6)]
    assert all(c.get_status() == "Completed" for c in kids), [(c.id, c.get_status()) for c in kids]
    sampling = RandomParameterSampling({"--x": uniform(0, 1)}, seed=7)
    assert [json.loads(c.properties[HYPERPARAMETERS]) for c in kids] == [
        sampling.sample(i, 7, [], True) for i in range(6)
    ]
    assert sorted(f.name for f in starts.iterdir()) == [c.id for c in kids]
    assert all(f.read_text() == "started\n" for f in starts.iterdir())  # each child ran once


def test_on_kill_cancels_the_sweep_and_its_children(workspace, make_tree):
    src = make_tree({"train.py": "import time\ntime.sleep(600)\n"})
    config = HyperDriveConfig(
        run_config=ScriptRunConfig(src, "train.py"),
        hyperparameter_sampling=RandomParameterSampling({"--q": choice(1, 2, 3)}, seed=1),
        primary_metric_name="score",
        primary_metric_goal="MAXIMIZE",
        max_total_runs=4,
        max_concurrent_runs=2,
    )
    sweep = Experiment(workspace, "exp").submit(config, run_id="s1")
    asyncio.run(trigger_for(sweep, config).on_kill())
    assert sweep.refresh().value == "Canceled"
    kids = sweep.get_children()
    assert len(kids) == 2
    assert all(c.wait_for_completion(raise_on_error=False)["status"] == "Canceled" for c in kids)


KILLED_TRIGGERER = """
import asyncio, json, sys
from airflow_provider_mltrain.triggers.sweep import SweepTrigger


async def drive(kwargs):
    async for _ in SweepTrigger(**kwargs).run():
        pass


asyncio.run(drive(json.loads(sys.argv[1])))
"""


def test_triggerer_killed_mid_sweep_resumes_with_no_duplicate_or_lost_child(workspace, make_tree, tmp_path):
    """A triggerer SIGKILLed (no cleanup, a step maybe half done): the next one finishes the sweep."""
    starts = tmp_path / "starts"
    starts.mkdir()
    src = make_tree({"train.py": counted_script(starts)})
    config = config_for(src, total=7, concurrent=3)
    sweep = Experiment(workspace, "exp").submit(config, run_id="s1")
    _, kwargs = trigger_for(sweep, config, poll_interval=0.02).serialize()
    script = tmp_path / "triggerer.py"
    script.write_text(KILLED_TRIGGERER)
    proc = subprocess.Popen([sys.executable, str(script), json.dumps(kwargs)])
    try:
        deadline = time.monotonic() + 120
        while len(sweep.get_children()) < 5:
            assert proc.poll() is None, "the triggerer ended before it could be killed"
            assert time.monotonic() < deadline, "the triggerer never started a fifth child"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert sweep.refresh().value == "Running"

    events = collect(SweepTrigger(**kwargs))
    assert [e.payload for e in events] == [{"sweep_id": "s1", "status": "Completed"}]
    kids = sweep.get_children()
    assert [c.id for c in kids] == [f"s1_{i}" for i in range(7)]
    assert all(c.get_status() == "Completed" for c in kids), [(c.id, c.get_status()) for c in kids]
    assert sorted(f.name for f in starts.iterdir()) == [c.id for c in kids]
    assert all(f.read_text() == "started\n" for f in starts.iterdir())  # each child ran once
