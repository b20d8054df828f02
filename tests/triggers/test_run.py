from __future__ import annotations

import asyncio
import time

from airflow_provider_mltrain import Experiment, ScriptRunConfig
from airflow_provider_mltrain.triggers.run import RunTrigger


def collect(trigger: RunTrigger) -> list:
    async def go():
        return [event async for event in trigger.run()]

    return asyncio.run(go())


def test_serializes_to_what_rebuilds_it(workspace):
    trigger = RunTrigger("r1", str(workspace.root), poll_interval=3, log_offset=7, deadline=12.5)
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_mltrain.triggers.run.RunTrigger"
    assert RunTrigger(**kwargs).serialize() == (path, kwargs)


def test_fires_once_when_the_run_ends_and_resumes_from_an_offset(workspace, make_tree):
    src = make_tree({"train.py": "import time\nprint('first')\ntime.sleep(0.5)\nprint('second')\n"})
    run = Experiment(workspace, "t").submit(ScriptRunConfig(src, "train.py"))
    events = collect(RunTrigger(run.id, str(workspace.root), poll_interval=0.2))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "Completed" and payload["run_id"] == run.id
    assert payload["log_offset"] == len(run.read_log())
    # A trigger recreated after a triggerer restart at that offset repeats nothing.
    again = collect(RunTrigger(run.id, str(workspace.root), log_offset=payload["log_offset"]))
    assert again[0].payload["status"] == "Completed"


def test_deadline_fires_timeout_and_leaves_the_run_alone(workspace, make_tree):
    src = make_tree({"train.py": "import time\ntime.sleep(3)\n"})
    run = Experiment(workspace, "t").submit(ScriptRunConfig(src, "train.py"))
    events = collect(RunTrigger(run.id, str(workspace.root), poll_interval=0.2, deadline=time.time() + 0.5))
    assert events[0].payload["status"] == "timeout"
    assert run.get_status() in ("Starting", "Running")
    run.wait_for_completion()


def test_on_kill_cancels_the_run(workspace, make_tree):
    src = make_tree({"train.py": "import time\ntime.sleep(600)\n"})
    run = Experiment(workspace, "t").submit(ScriptRunConfig(src, "train.py"))
    asyncio.run(RunTrigger(run.id, str(workspace.root), cancel_grace_period=1).on_kill())
    assert run.get_status() == "Canceled"


def test_a_sensor_trigger_leaves_the_run_alone_on_kill(workspace, make_tree):
    src = make_tree({"train.py": "import time\ntime.sleep(1)\n"})
    run = Experiment(workspace, "t").submit(ScriptRunConfig(src, "train.py"))
    asyncio.run(RunTrigger(run.id, str(workspace.root), cancel_on_kill=False).on_kill())
    assert run.wait_for_completion()["status"] == "Completed"


def test_polls_off_the_event_loop(workspace, make_tree, monkeypatch):
    """Every store and target read runs in a worker thread, never on the triggerer's loop thread."""
    import threading

    from airflow_provider_mltrain.core.run import Run

    src = make_tree({"train.py": "import time\ntime.sleep(0.5)\n"})
    run = Experiment(workspace, "t").submit(ScriptRunConfig(src, "train.py"))
    threads = set()
    original = Run.refresh

    def recording(self):
        threads.add(threading.current_thread())
        return original(self)

    monkeypatch.setattr(Run, "refresh", recording)
    events = collect(RunTrigger(run.id, str(workspace.root), poll_interval=0.1))
    assert events[0].payload["status"] == "Completed"
    assert threads and threading.main_thread() not in threads
