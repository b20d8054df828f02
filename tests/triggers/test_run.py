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
    trigger = RunTrigger(
        "r1", str(workspace.root), poll_interval=3, log_offset=7, deadline=12.5, not_before=9.0
    )
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


def test_an_event_that_resumes_the_task_is_not_fired_before_not_before(workspace, make_tree, capsys):
    """Airflow 3.3 fails a task resumed before the scheduler took in its deferral (apache/airflow#72716):
    a run that ended at once is reported no sooner than ``not_before``, and one that ended later at once."""
    src = make_tree({"train.py": "print('quick')\n"})
    run = Experiment(workspace, "t").submit(ScriptRunConfig(src, "train.py"))
    run.wait_for_completion()
    not_before = time.time() + 1.5
    capsys.readouterr()
    events = collect(RunTrigger(run.id, str(workspace.root), poll_interval=0.2, not_before=not_before))
    fired = time.time()
    assert events[0].payload["status"] == "Completed"
    assert fired >= not_before - 0.05  # asyncio may wake a clock tick early
    assert f"Run {run.id} has ended; resuming the task in" in capsys.readouterr().out  # the trigger's log
    events = collect(RunTrigger(run.id, str(workspace.root), not_before=time.time() - 1))
    assert (
        events[0].payload["status"] == "Completed" and "resuming the task in" not in capsys.readouterr().out
    )


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


def test_with_an_object_store_the_trigger_pushes_the_live_log_between_polls(
    tmp_path, make_tree, s3_store, monkeypatch
):
    """A deferred task's log reaches the store every second while the trigger waits out a long
    poll interval, so the api-server shows it live; and a trigger on another host refuses to follow
    a local-target run it cannot read."""
    import threading

    import pytest

    from airflow_provider_mltrain import RunOnOtherHost, Workspace
    from tests.conftest import s3_options
    from tests.targets.suite import wait_until

    opts = s3_options()
    monkeypatch.setenv("MLTRAIN_ARTIFACT_STORE", s3_store.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", opts["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", opts["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", opts["client_kwargs"]["endpoint_url"])
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    ws = Workspace(tmp_path / "worker", database_url=db)
    gate = tmp_path / "gate"
    src = make_tree(
        {
            "train.py": "import os, time\nprint('first', flush=True)\n"
            f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)\nprint('second', flush=True)\n"
        }
    )
    run = Experiment(ws, "t").submit(ScriptRunConfig(src, "train.py"))
    events: list = []
    thread = threading.Thread(
        target=lambda: events.extend(
            collect(RunTrigger(run.id, str(ws.root), poll_interval=600, database_url=db))
        ),
        daemon=True,
    )
    thread.start()
    reader = Workspace(tmp_path / "api-server", database_url=db).get_run(run.id)
    wait_until(lambda: b"first" in reader.read_log(), timeout=60)
    with pytest.raises(RunOnOtherHost, match="cannot read or stop it"):
        collect(RunTrigger(run.id, str(reader.workspace.root), poll_interval=1, database_url=db))
    gate.touch()
    wait_until(lambda: b"second" in reader.read_log(), timeout=60)
    thread.join(300)  # the trigger's own polls grow 1.5x from 1 s: it sees the end a little later
    assert events and events[0].payload["status"] == "Completed"
