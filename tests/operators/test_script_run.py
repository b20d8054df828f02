from __future__ import annotations

import re
import time
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


def test_the_runs_warnings_reach_the_task_log(operator, make_tree, monkeypatch):
    from airflow_provider_mltrain import Experiment, ScriptRunConfig

    ws = operator._workspace()
    src = make_tree({"t.py": "import os\nopen(os.environ['MLTRAIN_METRICS_FILE'], 'a').write('oops\\n')\n"})
    run = Experiment(ws, "exp").submit(ScriptRunConfig(src, "t.py"))
    details = run.wait_for_completion()
    pushed = {}
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}))
    logged = []
    task_log = SimpleNamespace(warning=lambda msg, *args: logged.append(msg % args), info=lambda *a: None)
    monkeypatch.setattr(type(operator), "log", property(lambda self: task_log))
    assert operator._finish(run, details, ti) == run.id
    assert logged == [f"Run {run.id}: {details['warnings'][0]}"]
    assert "skipped 1 malformed line" in details["warnings"][0]
    assert any("skipped 1 malformed line" in w for w in next(iter(pushed.values()))["warnings"])


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


# -- ResumableJobMixin contract (durable=True), with a task_state_store and without ------------------

COUNTED = """
import sys, time
with open(sys.argv[1], "a") as f:
    f.write("started\\n")
with open(sys.argv[1]) as f:
    starts = len(f.readlines())
if "--fail-first" in sys.argv and starts == 1:
    raise SystemExit(5)
time.sleep(float(sys.argv[2]))
"""


class TaskStateStore(dict):
    """The part of Airflow's TaskStateStoreAccessor the mixin uses: get and set by key."""

    def get(self, key, default=None):
        return super().get(key, default)

    def set(self, key, value, **_):
        self[key] = value


class TI(SimpleNamespace):
    def __init__(self):
        super().__init__(dag_id="d", task_id="train", run_id="r1", map_index=-1, stats_tags={}, xcoms={})

    def xcom_push(self, key, value):
        self.xcoms[key] = value


@pytest.fixture
def counted(tmp_path, make_tree):
    """(operator factory, number of times the script started)."""
    src = make_tree({"counted.py": COUNTED})
    counter = tmp_path / "starts"

    def make(seconds=0, fail_first=False, **kwargs):
        return ScriptRunOperator(
            task_id="train",
            experiment_name="exp",
            source_directory=str(src),
            script="counted.py",
            arguments=[str(counter), seconds] + (["--fail-first"] if fail_first else []),
            workspace=str(tmp_path / "ws"),
            poll_interval=0.2,
            **kwargs,
        )

    def starts():
        return len(counter.read_text().splitlines()) if counter.exists() else 0

    return make, starts


BASE_ID = run_id_for_task("d", "train", "r1")


def test_durable_by_default_and_the_run_id_goes_to_the_task_state_store(counted):
    make, starts = counted
    op, ti, store = make(), TI(), TaskStateStore()
    assert op.durable is True
    assert op.execute({"ti": ti, "task_state_store": store}) == BASE_ID
    assert store == {"mltrain_run_id": BASE_ID}
    assert ti.xcoms["run_id"] == BASE_ID and ti.xcoms["run_details"]["status"] == "Completed"
    assert starts() == 1


def test_retry_returns_a_completed_run_without_running_it_again(counted):
    make, starts = counted
    store = TaskStateStore()
    make().execute({"ti": TI(), "task_state_store": store})
    ti = TI()
    assert make().execute({"ti": ti, "task_state_store": store}) == BASE_ID
    assert ti.xcoms["run_details"]["status"] == "Completed"
    assert starts() == 1
    assert len(make()._workspace().store.list_runs()) == 1


def test_retry_reattaches_to_a_running_run(counted):
    make, starts = counted
    op = make(seconds=3, wait_for_completion=False)
    store = TaskStateStore()
    op.execute({"ti": TI(), "task_state_store": store})  # try 1 submitted, then "died"
    assert store == {"mltrain_run_id": BASE_ID}
    assert op._workspace().get_run(BASE_ID).get_status() in ("Starting", "Running", "Preparing", "Queued")
    assert make(seconds=3).execute({"ti": TI(), "task_state_store": store}) == BASE_ID
    assert starts() == 1 and len(op._workspace().store.list_runs()) == 1


def test_crash_between_submit_and_persisting_the_id_still_reattaches(counted):
    """The gap ResumableJobMixin documents: the target has the run, task_state_store has nothing."""
    make, starts = counted
    make(seconds=2, wait_for_completion=False).execute({"ti": TI()})  # submitted, id never persisted
    store = TaskStateStore()
    assert make(seconds=2).execute({"ti": TI(), "task_state_store": store}) == BASE_ID
    assert starts() == 1 and store == {"mltrain_run_id": BASE_ID}


def test_retry_after_a_failed_run_starts_a_fresh_linked_run(counted):
    from airflow_provider_mltrain.version_compat import AirflowException

    make, starts = counted
    store = TaskStateStore()
    with pytest.raises(AirflowException, match="failed with exit code 5"):
        make(fail_first=True).execute({"ti": TI(), "task_state_store": store})
    assert store == {"mltrain_run_id": BASE_ID}
    ti = TI()
    assert make(fail_first=True).execute({"ti": ti, "task_state_store": store}) == BASE_ID + ".a2"
    assert store == {"mltrain_run_id": BASE_ID + ".a2"}
    ws = make()._workspace()
    assert ws.get_run(BASE_ID + ".a2").properties["mltrain.previous_run_id"] == BASE_ID
    assert ws.get_run(BASE_ID).get_status() == "Failed"
    assert starts() == 2


def test_stored_id_of_a_failed_run_with_a_newer_run_running_attaches_to_the_newer(counted):
    """Died after submitting the fresh run, before persisting its id: the stored id is the failed one."""
    make, starts = counted
    store = TaskStateStore()
    with pytest.raises(Exception, match="exit code 5"):
        make(fail_first=True).execute({"ti": TI(), "task_state_store": store})
    make(seconds=2, wait_for_completion=False).execute({"ti": TI()})  # .a2, not persisted
    assert store == {"mltrain_run_id": BASE_ID}
    assert make(seconds=2).execute({"ti": TI(), "task_state_store": store}) == BASE_ID + ".a2"
    assert starts() == 2 and len(make()._workspace().store.list_runs()) == 2


def test_action_if_run_exists_overrides_the_mixin(counted):
    from airflow_provider_mltrain.version_compat import AirflowException

    make, starts = counted
    store = TaskStateStore()
    make().execute({"ti": TI(), "task_state_store": store})
    assert make(action_if_run_exists="resubmit").execute({"ti": TI(), "task_state_store": store}) == (
        BASE_ID + ".a2"
    )
    assert store == {"mltrain_run_id": BASE_ID + ".a2"} and starts() == 2
    with pytest.raises(AirflowException, match="action_if_run_exists='fail'"):
        make(action_if_run_exists="fail").execute({"ti": TI(), "task_state_store": store})
    assert starts() == 2


def test_durable_false_submits_a_fresh_run_every_try(counted):
    make, starts = counted
    store = TaskStateStore()
    assert make(durable=False).execute({"ti": TI(), "task_state_store": store}) == BASE_ID
    assert make(durable=False).execute({"ti": TI(), "task_state_store": store}) == BASE_ID + ".a2"
    assert store == {} and starts() == 2


def test_without_task_state_store_the_run_store_gives_the_same_outcomes(counted, monkeypatch):
    """Airflow < 3.3 (no mixin, no task_state_store): the run ids in the run store decide."""
    from airflow_provider_mltrain.operators import script_run

    monkeypatch.setattr(script_run, "HAS_TASK_STATE_STORE", False)
    make, starts = counted
    with pytest.raises(Exception, match="exit code 5"):
        make(fail_first=True).execute({"ti": TI()})
    assert make(fail_first=True).execute({"ti": TI()}) == BASE_ID + ".a2"
    assert make(fail_first=True).execute({"ti": TI()}) == BASE_ID + ".a2"  # completed: not again
    assert starts() == 2


class Deferred(Exception):
    pass


def deferrals(op, monkeypatch):
    """The triggers ``op`` defers to; deferring raises ``Deferred`` as Airflow's TaskDeferred would."""
    seen = []

    def defer(*, trigger, method_name, **_):
        seen.append((trigger, method_name))
        raise Deferred

    monkeypatch.setattr(op, "defer", defer)
    return seen


def test_deferrable_defers_while_the_run_goes_on_and_a_retry_of_an_ended_run_finishes_on_the_worker(
    counted, monkeypatch
):
    """A retry that finds its earlier try's run over must not defer: the trigger would fire at once,
    and a trigger firing before Airflow has taken in the deferral can fail the try
    (apache/airflow#72716)."""
    from airflow_provider_mltrain.triggers.run import RESUME_NOT_BEFORE, RunTrigger

    make, starts = counted
    op, store = make(seconds=1, deferrable=True), TaskStateStore()
    seen = deferrals(op, monkeypatch)
    with pytest.raises(Deferred):
        op.execute({"ti": TI(), "task_state_store": store})
    ((trigger, method),) = seen
    assert isinstance(trigger, RunTrigger) and trigger.run_id == BASE_ID and method == "execute_complete"
    # It resumes the task no sooner than RESUME_NOT_BEFORE after the deferral (triggers/run.py).
    assert trigger.not_before == pytest.approx(time.time() + RESUME_NOT_BEFORE, abs=5)
    run = op._workspace().get_run(BASE_ID)
    run.wait_for_completion(timeout=60)  # the try "died" in the triggerer; the run went on
    retry, ti = make(seconds=1, deferrable=True), TI()
    seen = deferrals(retry, monkeypatch)
    assert retry.execute({"ti": ti, "task_state_store": store}) == BASE_ID
    assert seen == []
    assert ti.xcoms["run_id"] == BASE_ID and ti.xcoms["run_details"]["status"] == "Completed"
    assert starts() == 1 and len(op._workspace().store.list_runs()) == 1


def test_a_task_that_ends_in_the_triggerer_is_not_held_back(counted, monkeypatch):
    """With end_from_trigger the task never resumes on a worker, so Airflow's race cannot meet it:
    its trigger fires as soon as the run ends."""
    make, _ = counted
    op = make(seconds=1, deferrable=True, end_from_trigger=True)
    seen = deferrals(op, monkeypatch)
    with pytest.raises(Deferred):
        op.execute({"ti": TI(), "task_state_store": TaskStateStore()})
    ((trigger, _),) = seen
    assert trigger.end_from_trigger and trigger.not_before is None
    op._workspace().get_run(BASE_ID).wait_for_completion(timeout=60)


def test_deferrable_retry_of_a_failed_run_defers_on_its_fresh_run(counted, monkeypatch):
    from airflow_provider_mltrain.version_compat import AirflowException

    make, starts = counted
    store = TaskStateStore()
    with pytest.raises(AirflowException, match="failed with exit code 5"):
        make(fail_first=True).execute({"ti": TI(), "task_state_store": store})
    retry = make(seconds=5, fail_first=True, deferrable=True)
    seen = deferrals(retry, monkeypatch)
    with pytest.raises(Deferred):
        retry.execute({"ti": TI(), "task_state_store": store})
    assert [t.run_id for t, _ in seen] == [BASE_ID + ".a2"]
    retry._workspace().get_run(BASE_ID + ".a2").wait_for_completion(timeout=60)
    assert starts() == 2


# -- templated fields that render to the wrong type ----------------------------------------------


@pytest.mark.parametrize(
    ("field", "template", "params", "given"),
    [
        ("source_directory", "{{ params.v }}", {"v": 5}, "int"),
        ("source_directory", "{{ params.v }}", {"v": None}, "NoneType"),
        ("source_directory", "{{ params.v }}", {"v": ["a", "b"]}, "list"),
        ("script", "{{ params.v }}", {"v": 3.5}, "float"),
        ("script", "{{ params.v }}", {"v": None}, "NoneType"),
        ("experiment_name", "{{ params.v }}", {"v": 2026}, "int"),
        ("arguments", "{{ params.v }}", {"v": 5}, "int"),
        ("arguments", "{{ params.v }}", {"v": {"epochs": 5}}, "dict"),
        ("compute_target", "{{ params.v }}", {"v": None}, "NoneType"),
        ("compute_target", "{{ params.v }}", {"v": ["local"]}, "list"),
        ("environment", "{{ params.v }}", {"v": 7}, "int"),
        ("tags", "{{ params.v }}", {"v": ["a", "b"]}, "list"),
        ("tags", {"epochs": "{{ params.v }}"}, {"v": [1, 2]}, "list"),
        ("target_options", "{{ params.v }}", {"v": 5}, "int"),
    ],
)
def test_templated_field_rendering_to_a_wrong_type_is_refused(
    tmp_path, make_tree, field, template, params, given
):
    """Rendered natively (render_template_as_native_obj=True), a template gives any type."""
    import datetime

    from airflow.sdk import DAG

    from airflow_provider_mltrain import InvalidRunConfig, Workspace

    src = make_tree({"t.py": "print('ok')"})
    kwargs = {
        "experiment_name": "exp",
        "source_directory": str(src),
        "script": "t.py",
        "workspace": str(tmp_path / "ws"),
        field: template,
    }
    with DAG(
        "d", schedule=None, start_date=datetime.datetime(2026, 1, 1), render_template_as_native_obj=True
    ):
        op = ScriptRunOperator(task_id="train", **kwargs)
    op.render_template_fields({"params": params})
    with pytest.raises(InvalidRunConfig) as err:
        op.execute({"ti": TI()})
    message = str(err.value)
    assert f"ScriptRunOperator 'train': {field}" in message and "must be" in message, message
    assert f"({given})" in message, message
    ws = Workspace(tmp_path / "ws")
    assert ws.store.list_runs() == []
    assert not (ws.root / "snapshots").exists() or not any((ws.root / "snapshots").rglob("*.json"))


def test_list_field_rendered_as_text_says_how_to_render_natively(tmp_path, make_tree):
    """Without native rendering a templated list arrives as its text: the error says so."""
    import datetime

    from airflow.sdk import DAG

    from airflow_provider_mltrain import InvalidRunConfig

    src = make_tree({"t.py": "print('ok')"})
    with DAG("d", schedule=None, start_date=datetime.datetime(2026, 1, 1)):
        op = ScriptRunOperator(
            task_id="train",
            experiment_name="exp",
            source_directory=str(src),
            script="t.py",
            arguments="{{ params.args }}",
            workspace=str(tmp_path / "ws"),
        )
    op.render_template_fields({"params": {"args": ["--epochs", 5]}})
    with pytest.raises(
        InvalidRunConfig, match=r"arguments must be a list.*got \"\['--epochs', 5\]\" \(str\)"
    ):
        op.execute({"ti": TI()})
    with pytest.raises(InvalidRunConfig, match="render_template_as_native_obj=True"):
        op.execute({"ti": TI()})


def test_path_objects_are_accepted_by_the_operator(tmp_path, make_tree):
    from pathlib import Path

    src = make_tree({"t.py": "print('ok')"})
    op = ScriptRunOperator(
        task_id="train",
        experiment_name="exp",
        source_directory=Path(src),
        script=Path("t.py"),
        workspace=str(tmp_path / "ws"),
        poll_interval=0.2,
    )
    ti = TI()
    assert op.execute({"ti": ti}) == BASE_ID
    assert ti.xcoms["run_details"]["status"] == "Completed"


def test_secret_variables_are_masked_in_the_task_log(tmp_path, make_tree):
    """The run's log streams into the task log: Airflow's masker learns the environment's secrets."""
    from airflow.sdk.log import _secrets_masker

    from airflow_provider_mltrain import Environment

    src = make_tree({"t.py": "import os\nprint(os.environ['API_TOKEN'], os.environ['DATABASE_URL'])\n"})
    env = Environment(
        name="masked",
        environment_variables={"API_TOKEN": "tok-5f3a9b", "DATABASE_URL": "postgresql://app:pw-77c1e2@db/ml"},
    )
    op = ScriptRunOperator(
        task_id="train",
        experiment_name="exp",
        source_directory=str(src),
        script="t.py",
        environment=env,
        workspace=str(tmp_path / "ws"),
        poll_interval=0.2,
    )
    ti = TI()
    op.execute({"ti": ti})
    log = (tmp_path / "ws" / "runs" / BASE_ID / "logs" / "std_log.txt").read_text()
    assert "tok-5f3a9b" in log  # the script got the real values
    shown = _secrets_masker().redact(log)
    assert "tok-5f3a9b" not in shown and "pw-77c1e2" not in shown
    assert "postgresql://app:***@db/ml" in shown


def test_a_retry_on_another_host_does_not_reattach_to_a_local_run_there(tmp_path, make_tree, monkeypatch):
    """A local-target run lives on its worker's host: a retry elsewhere says so and follows
    action_if_run_exists, instead of waiting forever on a target it cannot read or starting it again."""
    import socket

    from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
    from airflow_provider_mltrain.version_compat import AirflowException
    from tests.targets.suite import wait_until

    monkeypatch.setenv("MLTRAIN_DATABASE_URL", f"sqlite:///{tmp_path / 'shared.db'}")

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
    first_id, _ = op("reattach")._pick_run_id(ws, ti)
    gate = tmp_path / "gate"
    src = make_tree({"t.py": f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)\n"})
    run = Experiment(ws, "exp").submit(ScriptRunConfig(src, "t.py"), run_id=first_id)
    wait_until(lambda: run.refresh().value == "Running", timeout=60)
    here = socket.gethostname()
    with monkeypatch.context() as m:
        m.setattr(socket, "gethostname", lambda: "worker-b")
        with pytest.raises(AirflowException, match=f"on host {here}.*action_if_run_exists='resubmit'"):
            op("reattach")._pick_run_id(ws, ti)
        assert op("resubmit")._pick_run_id(ws, ti) == (first_id + ".a2", first_id)
        assert Workspace(tmp_path / "ws").get_run(first_id).refresh().value == "Running"  # not lost
    gate.touch()
    assert run.wait_for_completion()["status"] == "Completed"
    assert op("reattach")._pick_run_id(ws, ti) == (first_id, None)


# -- register_model -----------------------------------------------------------------------------------


def test_register_model_when_the_run_completes_once_per_run(tmp_path, make_tree):
    from airflow_provider_mltrain import Model

    script = "import os\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/m.pkl', 'wb').write(b'm')\n"
    src = make_tree({"t.py": script})

    def make():
        return ScriptRunOperator(
            task_id="train",
            experiment_name="exp",
            source_directory=str(src),
            script="t.py",
            workspace=str(tmp_path / "ws"),
            poll_interval=0.2,
            register_model={"name": "churn", "path": "outputs/m.pkl", "tags": {"from": "dag"}},
        )

    store = TaskStateStore()
    ti = TI()
    run_id = make().execute({"ti": ti, "task_state_store": store})
    assert ti.xcoms["model"] == {"name": "churn", "version": 1, "id": "churn:1"}
    model = Model(make()._workspace(), "churn")
    assert model.run_id == run_id
    assert model.properties == {"airflow.dag_id": "d", "airflow.task_id": "train", "airflow.run_id": "r1"}
    # A retry of the completed task: the same run, the same version.
    retry = TI()
    make().execute({"ti": retry, "task_state_store": store})
    assert retry.xcoms["model"]["version"] == 1
    assert [m.id for m in Model.list(make()._workspace())] == ["churn:1"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "bad name", "path": "outputs/m.pkl"}, "letters, digits"),
        ({"name": "churn"}, "register_model must be"),
        ({"name": "churn", "path": "outputs/m.pkl", "alias": "x"}, "unknown keys \\['alias'\\]"),
        ({"name": "churn", "path": "outputs/m.pkl", "tags": {"airflow.x": 1}}, "belong to the provider"),
    ],
)
def test_register_model_bad_input_is_refused_before_submission(tmp_path, make_tree, spec, message):
    from airflow_provider_mltrain import MLTrainError

    src = make_tree({"t.py": "print(1)"})
    op = ScriptRunOperator(
        task_id="train",
        experiment_name="exp",
        source_directory=str(src),
        script="t.py",
        workspace=str(tmp_path / "ws"),
        register_model=spec,
    )
    with pytest.raises(MLTrainError, match=message):
        op.execute({"ti": TI(), "task_state_store": TaskStateStore()})
    assert op._workspace().store.list_runs() == []


def test_inputs_from_an_asset_and_a_template_with_placeholders_left_for_mltrain(tmp_path, make_tree):
    """An Asset input is its URI (and an inlet); ``${{inputs.NAME}}`` survives Jinja rendering while
    the ``{{ params }}`` template beside it renders."""
    import datetime
    import json

    from airflow.sdk import DAG, Asset

    data = tmp_path / "data"
    data.mkdir()
    (data / "d.txt").write_text("asset data")
    asset = Asset(name="digits", uri=f"file://{data}")
    src = make_tree(
        {"t.py": "import sys\nprint('ARGS', sys.argv[1:])\nprint(open(sys.argv[2] + '/d.txt').read())\n"}
    )
    with DAG("d", schedule=None, start_date=datetime.datetime(2026, 1, 1)):
        op = ScriptRunOperator(
            task_id="train",
            experiment_name="exp",
            source_directory=str(src),
            script="t.py",
            arguments=["--data", "${{ inputs.digits }}", "{{ params.epochs }}"],
            inputs={"digits": asset},
            workspace=str(tmp_path / "ws"),
            poll_interval=0.2,
        )
    assert op.inlets == [asset]
    op.render_template_fields({"params": {"epochs": "7"}})
    assert op.arguments == ["--data", "${{ inputs.digits }}", "7"]
    ti = TI()
    op.execute({"ti": ti})
    details = ti.xcoms["run_details"]
    assert details["status"] == "Completed"
    (recorded,) = details["inputDatasets"]
    assert recorded["uri"] == str(data) and recorded["name"] == "digits"
    from airflow_provider_mltrain import Workspace

    log = Workspace(tmp_path / "ws").get_run(details["run_id"]).read_log().decode()
    assert "asset data" in log and json.dumps(recorded["path"])[1:-1] in log


def test_publish_if_better_compares_with_the_run_of_the_promoted_model(tmp_path, make_tree):
    from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
    from airflow_provider_mltrain.operators.script_run import beats_promoted, output_asset_uri

    ws = Workspace(tmp_path / "ws")
    spec = {"metric": "auc", "model": "churn", "alias": "production"}
    assert beats_promoted(ws, {"auc": 0.5}, spec)[0]  # nothing promoted yet
    assert not beats_promoted(ws, {"loss": 0.5}, spec)[0]  # no such metric: no event
    script = (
        "import os, sys\nfrom mltrain import Run\nos.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/m.txt', 'w').write('m')\nRun.get_context().log('auc', float(sys.argv[1]))\n"
    )
    src = make_tree({"t.py": script})
    run = Experiment(ws, "e").submit(ScriptRunConfig(src, "t.py", arguments=["0.8"]))
    run.wait_for_completion(raise_on_error=True)
    run.register_model("churn", "outputs/m.txt").set_alias("production")
    assert beats_promoted(ws, {"auc": 0.85}, spec)[0]
    better, why = beats_promoted(ws, {"auc": 0.75}, spec)
    assert not better and "0.75 vs 0.8" in why
    assert beats_promoted(ws, {"auc": 0.75}, {**spec, "higher_is_better": False})[0]
    assert output_asset_uri("s3://b/models/{{ ds }}/") == "s3://b/models/"
    assert output_asset_uri("s3://b/models/latest/") == "s3://b/models/latest/"
