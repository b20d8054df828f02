"""SubmitRunTrigger: ScriptRunOperator(start_from_trigger=True) submits and waits in the triggerer.

The trigger runs here in-process with a stand-in task instance; tests/test_airflow_faults.py runs it
through a real scheduler and triggerer.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from airflow.triggers.base import TaskFailedEvent, TaskSuccessEvent

from airflow_provider_mltrain.core.environment import Environment
from airflow_provider_mltrain.core.inputs import Input
from airflow_provider_mltrain.core.outputs import Output
from airflow_provider_mltrain.operators.script_run import ScriptRunOperator
from airflow_provider_mltrain.operators.submission import from_trigger_value, trigger_value
from airflow_provider_mltrain.triggers.run import SubmitRunTrigger


def collect(trigger) -> list:
    async def go():
        return [event async for event in trigger.run()]

    return asyncio.run(go())


def operator(src, ws, **kwargs):
    defaults = {"task_id": "train", "experiment_name": "from-trigger", "deferrable": True}
    return ScriptRunOperator(
        source_directory=str(src),
        script="train.py",
        workspace=str(ws),
        start_from_trigger=True,
        poll_interval=0.2,
        **{**defaults, **kwargs},
    )


def trigger_of(op: ScriptRunOperator, try_number: int = 1) -> SubmitRunTrigger:
    """The trigger Airflow builds from the serialized task, with the task instance it is given."""
    trigger = SubmitRunTrigger(**op.start_trigger_args.trigger_kwargs)
    trigger.task_instance = SimpleNamespace(
        dag_id="dag", task_id=op.task_id, run_id="manual__1", map_index=-1, try_number=try_number
    )
    return trigger


def test_the_start_args_name_the_trigger_and_every_templated_field(make_tree, tmp_path):
    op = operator(make_tree({"train.py": ""}), tmp_path / "ws")
    args = op.start_trigger_args
    assert op.start_from_trigger is True
    assert args.trigger_cls == "airflow_provider_mltrain.triggers.run.SubmitRunTrigger"
    assert args.next_method == "execute_complete"
    # The triggerer renders exactly the operator's template fields that are trigger kwargs.
    assert set(op.template_fields) <= set(args.trigger_kwargs)
    trigger = SubmitRunTrigger(**args.trigger_kwargs)
    path, kwargs = trigger.serialize()
    assert path == args.trigger_cls and kwargs == args.trigger_kwargs
    assert SubmitRunTrigger(**kwargs).serialize() == (path, kwargs)


def test_submits_once_and_a_restarted_trigger_follows_the_same_run(make_tree, tmp_path):
    src = make_tree({"train.py": "import time\nprint('trained')\ntime.sleep(0.5)\n"})
    op = operator(src, tmp_path / "ws")
    (event,) = collect(trigger_of(op))
    assert event.payload["status"] == "Completed"
    run_id = event.payload["run_id"]
    ws = op._workspace()
    (record,) = ws.store.list_runs()
    assert record["id"] == run_id
    assert record["properties"]["airflow.try_number"] == "1"
    # The triggerer restarts: the trigger is built again from the same kwargs, and finds its run.
    (again,) = collect(trigger_of(op))
    assert again.payload == {**event.payload, "log_offset": again.payload["log_offset"]}
    assert [r["id"] for r in ws.store.list_runs()] == [run_id]


def test_a_restart_follows_this_tries_run_even_with_resubmit(make_tree, tmp_path):
    src = make_tree({"train.py": "print('trained')\n"})
    op = operator(src, tmp_path / "ws", action_if_run_exists="resubmit")
    (first,) = collect(trigger_of(op))
    (again,) = collect(trigger_of(op))
    assert again.payload["run_id"] == first.payload["run_id"]
    assert len(op._workspace().store.list_runs()) == 1
    # A retry is a new try: "resubmit" starts a new run, linked to the last one.
    (retry,) = collect(trigger_of(op, try_number=2))
    assert retry.payload["run_id"] == first.payload["run_id"] + ".a2"
    record = op._workspace().store.get_run(retry.payload["run_id"])
    assert record["properties"]["mltrain.previous_run_id"] == first.payload["run_id"]


def test_bad_input_fires_not_submitted_with_the_reason_and_submits_nothing(make_tree, tmp_path):
    op = operator(make_tree({"other.py": ""}), tmp_path / "ws")
    (event,) = collect(trigger_of(op))
    assert event.payload["status"] == "not_submitted"
    assert "train.py" in event.payload["error"] and "run not submitted" in event.payload["error"]
    assert op._workspace().store.list_runs() == []
    with pytest.raises(Exception, match=r"train\.py"):
        op.execute_complete({"ti": None}, event.payload)


def test_end_from_trigger_ends_the_task_in_the_triggerer(make_tree, tmp_path):
    src = make_tree({"train.py": "import sys\nprint('trained')\nsys.exit(int(sys.argv[1]))\n"})
    ok = operator(src, tmp_path / "ws", end_from_trigger=True, arguments=[0])
    (event,) = collect(trigger_of(ok))
    assert isinstance(event, TaskSuccessEvent)
    assert event.xcoms is None  # Airflow 3.3 would store them encoded twice (see RunTrigger._end)
    failing = operator(src, tmp_path / "ws", end_from_trigger=True, arguments=[3], task_id="other")
    (failed,) = collect(trigger_of(failing))
    assert isinstance(failed, TaskFailedEvent)
    statuses = {r["id"].split(".")[1]: r["status"] for r in failing._workspace().store.list_runs()}
    assert statuses == {"train": "Completed", "other": "Failed"}


def test_a_timed_out_run_is_canceled_when_the_task_ends_in_the_triggerer(make_tree, tmp_path):
    src = make_tree({"train.py": "import time\ntime.sleep(600)\n"})
    op = operator(src, tmp_path / "ws", end_from_trigger=True, timeout=1, cancel_grace_period=1)
    (event,) = collect(trigger_of(op))
    assert isinstance(event, TaskFailedEvent)
    (record,) = op._workspace().store.list_runs()
    assert record["status"] == "Canceled"


def test_bad_input_with_end_from_trigger_fails_the_task(make_tree, tmp_path):
    op = operator(make_tree({"other.py": ""}), tmp_path / "ws", end_from_trigger=True)
    (event,) = collect(trigger_of(op))
    assert isinstance(event, TaskFailedEvent)
    assert op._workspace().store.list_runs() == []


def test_the_triggerer_renders_templates_and_keeps_run_placeholders(make_tree, tmp_path):
    src = make_tree({"train.py": "import sys\nprint('args', sys.argv[1:])\n"})
    data = make_tree({"d.csv": "x\n"})
    op = operator(
        src,
        tmp_path / "ws",
        arguments=["--day", "{{ ds }}", "--data", "${{inputs.train}}"],
        inputs={"train": str(data)},
        tags={"day": "{{ ds }}"},
    )
    trigger = trigger_of(op)
    trigger.template_fields = tuple(f for f in op.template_fields if hasattr(trigger, f))
    trigger.render_template_fields(context={"ds": "2026-12-02"})
    assert trigger.arguments == ["--day", "2026-12-02", "--data", "${{inputs.train}}"]
    (event,) = collect(trigger)
    assert event.payload["status"] == "Completed"
    record = op._workspace().store.get_run(event.payload["run_id"])
    assert record["tags"] == {"day": "2026-12-02"}
    # The placeholder reached mltrain, which put the input's local copy in its place.
    day, data_arg = record["arguments"][:2], record["arguments"][3]
    assert day == ["--day", "2026-12-02"] and data_arg.endswith("/data") and "inputs" in data_arg


def test_fields_travel_as_plain_data_and_come_back_the_same(tmp_path):
    env = Environment.from_dict({"name": "e", "environment_variables": {"A": "1"}}, base_dir=str(tmp_path))
    values = {
        "environment": env,
        "inputs": {"a": Input("s3://b/k", mode="mount", conn_id="c"), "b": "/data"},
        "outputs": {"m": Output("s3://b/out/{{ ds }}/", required=False)},
    }
    for field, value in values.items():
        plain = trigger_value(field, value)
        assert json.loads(json.dumps(plain)) == plain
        back = from_trigger_value(plain)
        assert back == value
    assert from_trigger_value(trigger_value("environment", env)).base_dir == str(tmp_path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"deferrable": False}, "deferrable=True"),
        ({"wait_for_completion": False}, "wait_for_completion=True"),
        ({"end_from_trigger": True, "outputs": {"m": "s3://b/m/"}}, "outputs"),
        ({"end_from_trigger": True, "register_model": {"name": "m", "path": "outputs/m"}}, "register_model"),
        ({"tags": {"when": object()}}, "no plain form"),
    ],
)
def test_what_cannot_start_from_the_triggerer_is_refused_when_the_dag_is_parsed(
    kwargs, message, make_tree, tmp_path
):
    with pytest.raises(Exception, match=message):
        operator(make_tree({"train.py": ""}), tmp_path / "ws", **kwargs)


@pytest.mark.parametrize("action", ["reattach", "resubmit"])
def test_two_triggerers_running_one_trigger_at_once_start_one_run(make_tree, tmp_path, action):
    """During a triggerer failover two triggerers can run the same trigger for a moment: both
    submit the same try's run id, the script runs once, and both follow that one run."""
    starts = tmp_path / "starts.txt"
    src = make_tree({"train.py": f"import time\nopen({str(starts)!r}, 'a').write('x')\ntime.sleep(1)\n"})
    op = operator(src, tmp_path / "ws", action_if_run_exists=action)

    async def both():
        async def one():
            return [event async for event in trigger_of(op).run()]

        return await asyncio.gather(one(), one())

    first, second = asyncio.run(both())
    assert [e.payload["status"] for e in first + second] == ["Completed", "Completed"]
    assert first[0].payload["run_id"] == second[0].payload["run_id"]
    assert len(op._workspace().store.list_runs()) == 1
    assert starts.read_text() == "x"
