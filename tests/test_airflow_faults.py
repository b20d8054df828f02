"""Faults against a real Airflow deployment: api-server, scheduler, dag-processor, triggerer, LocalExecutor.

One deployment per module, on SQLite in a temporary AIRFLOW_HOME, with the test DAGs written to a
temporary dags folder. Each fault kills a real process (the task's, the submitter's at an injected
point, the triggerer) and checks what users rely on: one task instance, one run, whatever dies when.
The training scripts append a line to a counter file outside their snapshot each time they start.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mltrain import Workspace

pytestmark = pytest.mark.airflow

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")

# Test DAGs. ``{counter_dir}`` is filled in when the module writes them.
DAGS = '''
import atexit
import os
import signal
import time
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

SCRIPTS = {scripts!r}
COUNTERS = {counters!r}
ARGS = dict(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={{"retries": 1, "retry_delay": timedelta(seconds=1)}},
)


def fault_on_first_try(context):
    """Arms the submitter's fault point (core/experiment.py) on try 1 only."""
    if context["ti"].try_number == 1:
        os.environ["MLTRAIN_TEST_FAULT"] = "after_start"
    else:
        os.environ.pop("MLTRAIN_TEST_FAULT", None)


def fail_first_try_after_its_run(context, result=None):
    if context["ti"].try_number == 1:
        raise RuntimeError("failing try 1 after its run, on purpose")


def counted(task_id, experiment, seconds, fail_first=False, **kwargs):
    return ScriptRunOperator(
        task_id=task_id,
        experiment_name=experiment,
        source_directory=SCRIPTS,
        script="counted.py",
        arguments=[os.path.join(COUNTERS, experiment), seconds] + (["--fail-first"] if fail_first else []),
        poll_interval=0.5,
        **kwargs,
    )


with DAG("fault_kill_task", **ARGS):
    counted("train", "kill-task", 8)

with DAG("fault_after_start", **ARGS):
    counted("train", "after-start", 2, pre_execute=fault_on_first_try)

with DAG("fault_failed_run", **ARGS):
    counted("train", "failed-run", 0, fail_first=True)

def exit_late(context):
    """The task process exits 4 s after its task, as Airflow's task supervisor sometimes reports a
    deferring process's exit up to [workers] min_heartbeat_interval (5 s) late."""
    atexit.register(time.sleep, 4)  # Airflow runs the atexit functions registered after its fork


# Over 2 s after the deferral, seconds before the scheduler sees the deferring process exit: a
# trigger firing then meets Airflow's stale-executor-event race (apache/airflow#67287, #72716) and
# fails the try, unless it waits for its not_before (triggers/run.py RESUME_NOT_BEFORE).
with DAG("fault_deferrable", **ARGS):
    counted("train", "deferrable", 2, deferrable=True, pre_execute=exit_late)

# Try 1 completes its run and then fails (a post_execute hook): try 2 finds the run over.
with DAG("fault_deferrable_retry", **ARGS):
    counted("train", "deferrable-retry", 4, deferrable=True, post_execute=fail_first_try_after_its_run)

with DAG("fault_triggerer_restart", **ARGS):
    counted("train", "triggerer-restart", 15, deferrable=True)

# Submitted in the triggerer: no worker slot until execute_complete; the tag is rendered there.
with DAG("fault_start_from_trigger", **ARGS):
    counted(
        "train", "from-trigger", 2, deferrable=True, start_from_trigger=True,
        tags={{"dag_run": "{{{{ run_id }}}}"}},
    )

with DAG("fault_from_trigger_restart", **ARGS):
    counted("train", "from-trigger-restart", 15, deferrable=True, start_from_trigger=True)

# Airflow starts a mapped task on a worker whatever it asks (apache/airflow#52141).
with DAG("fault_from_trigger_mapped", **ARGS):
    ScriptRunOperator.partial(
        task_id="train",
        experiment_name="from-trigger-mapped",
        source_directory=SCRIPTS,
        script="counted.py",
        poll_interval=0.5,
        deferrable=True,
        start_from_trigger=True,
    ).expand(arguments=[[os.path.join(COUNTERS, "from-trigger-mapped"), 1]])

# Never on a worker: the first run fails, the retry (a new try, from the triggerer again) completes.
with DAG("fault_end_from_trigger", **ARGS):
    counted(
        "train", "end-from-trigger", 1, fail_first=True, deferrable=True, start_from_trigger=True,
        end_from_trigger=True,
    )


def sweep(experiment, deferrable):
    from airflow_provider_mltrain.operators.sweep import SweepOperator
    from airflow_provider_mltrain.train.hyperdrive import RandomParameterSampling, uniform

    return SweepOperator(
        task_id="train",
        experiment_name=experiment,
        source_directory=SCRIPTS,
        script="sweep_child.py",
        arguments=[os.path.join(COUNTERS, experiment)],
        hyperparameter_sampling=RandomParameterSampling({{"--x": uniform(0, 1)}}),
        primary_metric_name="score",
        max_total_runs=6,
        max_concurrent_runs=2,
        poll_interval=0.5,
        deferrable=deferrable,
    )

with DAG("fault_sweep_kill_task", **ARGS):
    sweep("sweep-kill-task", deferrable=False)

with DAG("fault_sweep_triggerer_restart", **ARGS):
    sweep("sweep-triggerer-restart", deferrable=True)
'''

COUNTED_SCRIPT = """
import sys
import time

counter, seconds = sys.argv[1], float(sys.argv[2])
with open(counter, "a") as f:
    f.write("started\\n")
with open(counter) as f:
    starts = len(f.readlines())
print(f"start number {starts}", flush=True)
if "--fail-first" in sys.argv and starts == 1:
    print("failing on purpose", flush=True)
    raise SystemExit(5)
time.sleep(seconds)
print("all done", flush=True)
"""

# A sweep's child: appends its run id to the counter file as it starts, waits for the test to open
# the gate (the file <counter>.go), then logs its --x. The sweep cannot end before the fault.
SWEEP_CHILD_SCRIPT = """
import argparse
import os
import time

from mltrain import Run

parser = argparse.ArgumentParser()
parser.add_argument("counter")
parser.add_argument("--x", type=float)
args = parser.parse_args()
run = Run.get_context()
with open(args.counter, "a") as f:
    f.write(run.id + "\\n")
deadline = time.monotonic() + 600
while not os.path.exists(args.counter + ".go") and time.monotonic() < deadline:
    time.sleep(0.2)
time.sleep(1)
run.log("score", args.x)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AirflowDeployment:
    """The four Airflow processes on one machine, each in its own session, stopped by its own pid."""

    def __init__(self, home: Path, dags: Path, extra_env: dict[str, str] | None = None):
        self.home = home
        self.dags = dags
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLTRAIN"))}
        self.env.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__DAGS_FOLDER=str(dags),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.base_url}/execution/",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__API__BASE_URL=self.base_url,
            # Shared by every component: task tokens (jwt_secret) and log-server requests (secret_key).
            AIRFLOW__API_AUTH__JWT_SECRET="mltrain-test-only-" + "0" * 64,
            AIRFLOW__API__SECRET_KEY="mltrain-test-only-" + "1" * 64,
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="2",
            AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.5",
            AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="1",
            AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="5",
            MLTRAIN_WORKSPACE=str(home / "mltrain"),
        )
        self.env.update(extra_env or {})

    # -- processes ---------------------------------------------------------------------------

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=True
        )

    def start(self, component: str) -> subprocess.Popen[bytes]:
        args = (
            [component, "--host", "127.0.0.1", "--port", str(self.port)]
            if component == "api-server"
            else [component]
        )
        log = open(self.home / f"{component}.log", "ab")  # noqa: SIM115 - the process owns it
        proc = subprocess.Popen(
            [AIRFLOW, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.procs[component] = proc
        return proc

    def stop(self, component: str, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        """Signals the component's session (it forks workers) by its own pid, then waits for it."""
        proc = self.procs.pop(component)
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)  # the group id is the pid: started with setsid
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def up(self) -> None:
        self.airflow("db", "migrate")
        for component in COMPONENTS:
            self.start(component)
        wait_for(self._api_answers, 120, "the api-server to answer", self)

    def down(self) -> None:
        for component in reversed(COMPONENTS):
            if component in self.procs:
                self.stop(component)

    def logs(self) -> str:
        out = []
        for component in COMPONENTS:
            path = self.home / f"{component}.log"
            if path.exists():
                out.append(f"--- {component} ---\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    # -- API and metadata --------------------------------------------------------------------

    def _api_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=5):
                return True
        except (OSError, urllib.error.URLError):
            return False

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.base_url}/api/v2/{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.home / "airflow.db", timeout=30) as db:
            return db.execute(sql, params).fetchall()

    def trigger(self, dag_id: str) -> str:
        """Starts a DAG run once the dag-processor has parsed the DAG; returns its run id."""
        wait_for(
            lambda: bool(self.query("SELECT 1 FROM dag WHERE dag_id=?", dag_id)),
            120,
            f"{dag_id} parsed",
            self,
        )
        run = self.api("POST", f"dags/{dag_id}/dagRuns", {"logical_date": None})
        return str(run["dag_run_id"])

    def ti(self, dag_id: str, run_id: str, task_id: str = "train") -> tuple[str | None, int]:
        rows = self.query(
            "SELECT state, try_number FROM task_instance WHERE dag_id=? AND run_id=? AND task_id=?",
            dag_id,
            run_id,
            task_id,
        )
        return (rows[0][0], int(rows[0][1])) if rows else (None, 0)

    def dag_run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id=? AND run_id=?", dag_id, run_id)
        return rows[0][0] if rows else None

    def wait_dag_run(self, dag_id: str, run_id: str, timeout: float = 180) -> str:
        wait_for(
            lambda: self.dag_run_state(dag_id, run_id) in ("success", "failed"),
            timeout,
            f"{dag_id} to end",
            self,
        )
        return str(self.dag_run_state(dag_id, run_id))

    def task_log(self, dag_id: str, run_id: str, task_id: str = "train", pattern: str = "*") -> str:
        """The task's log files (every try, and the trigger's), or those matching ``pattern``."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob(pattern)) if p.is_file())


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, deployment: AirflowDeployment | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    logs = deployment.logs() if deployment else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowDeployment]:
    root = tmp_path_factory.mktemp("airflow-faults")
    scripts, counters, dags = root / "scripts", root / "counters", root / "dags"
    for folder in (scripts, counters, dags):
        folder.mkdir()
    (scripts / "counted.py").write_text(textwrap.dedent(COUNTED_SCRIPT))
    (scripts / "sweep_child.py").write_text(SWEEP_CHILD_SCRIPT)
    (dags / "fault_dags.py").write_text(DAGS.format(scripts=str(scripts), counters=str(counters)))
    airflow = AirflowDeployment(root / "home", dags)
    airflow.home.mkdir()
    try:
        airflow.up()
        yield airflow
    finally:
        airflow.down()


def starts(deployment: AirflowDeployment, experiment: str) -> int:
    path = deployment.home.parent / "counters" / experiment
    return len(path.read_text().splitlines()) if path.exists() else 0


def runs(deployment: AirflowDeployment, experiment: str) -> list[Any]:
    return Workspace(deployment.home / "mltrain").experiment(experiment).list_runs()


def run_id_of(deployment: AirflowDeployment, dag_id: str, run_id: str) -> str:
    from airflow_provider_mltrain.operators.script_run import run_id_for_task

    return run_id_for_task(dag_id, "train", run_id)


def xcom(deployment: AirflowDeployment, dag_id: str, run_id: str, key: str = "return_value") -> Any:
    rows = deployment.query(
        "SELECT value FROM xcom WHERE dag_id=? AND run_id=? AND task_id='train' AND key=?",
        dag_id,
        run_id,
        key,
    )
    assert len(rows) == 1, rows
    return json.loads(rows[0][0])


def tries(deployment: AirflowDeployment, dag_id: str, run_id: str) -> list[tuple[int, str]]:
    """(try number, state) of every earlier try of the task, from the task instance history."""
    return deployment.query(
        "SELECT try_number, state FROM task_instance_history WHERE dag_id=? AND run_id=? ORDER BY try_number",
        dag_id,
        run_id,
    )


def stored_run_id(deployment: AirflowDeployment, dag_id: str, run_id: str) -> Any:
    """What ResumableJobMixin persisted in Airflow's task_state_store for the task."""
    rows = deployment.query(
        "SELECT value FROM task_state_store WHERE dag_id=? AND run_id=? AND task_id='train' AND key=?",
        dag_id,
        run_id,
        "mltrain_run_id",
    )
    return json.loads(rows[0][0]) if rows else None


def test_killing_the_task_process_mid_run_reattaches_on_retry(deployment):
    dag_id = "fault_kill_task"
    dag_run = deployment.trigger(dag_id)
    mltrain_id = run_id_of(deployment, dag_id, dag_run)
    store = Workspace(deployment.home / "mltrain").store

    def running_record():
        record = store.get_run(mltrain_id)
        return record if record and record["status"] == "Running" else None

    record = wait_for(running_record, 120, "the run to be Running", deployment)
    host, _, pid = record["properties"]["mltrain.submitted_by"].rpartition(":")
    assert host == socket.gethostname()
    assert int(pid) not in {p.pid for p in deployment.procs.values()}
    os.kill(int(pid), signal.SIGKILL)

    assert deployment.wait_dag_run(dag_id, dag_run) == "success", deployment.task_log(dag_id, dag_run)
    assert '"signal_name":"SIGKILL"' in deployment.task_log(dag_id, dag_run, pattern="attempt=1.log")
    assert starts(deployment, "kill-task") == 1
    assert [r.id for r in runs(deployment, "kill-task")] == [mltrain_id]
    assert runs(deployment, "kill-task")[0].get_status() == "Completed"
    assert deployment.ti(dag_id, dag_run) == ("success", 2)
    assert xcom(deployment, dag_id, dag_run) == mltrain_id
    assert stored_run_id(deployment, dag_id, dag_run) == mltrain_id
    # The finished task's "ML Training run" link opens the run's page under the API's base URL.
    assert xcom(deployment, dag_id, dag_run, "_link_MLTrainRunLink") == (
        f"{deployment.base_url}/mltrain/runs/{mltrain_id}"
    )


def test_submitter_killed_right_after_the_target_accepted_the_run(deployment):
    dag_id = "fault_after_start"
    dag_run = deployment.trigger(dag_id)
    assert deployment.wait_dag_run(dag_id, dag_run) == "success", deployment.task_log(dag_id, dag_run)
    mltrain_id = run_id_of(deployment, dag_id, dag_run)
    assert tries(deployment, dag_id, dag_run) == [(1, "failed")]  # try 1 died at the fault point
    assert '"signal_name":"SIGKILL"' in deployment.task_log(dag_id, dag_run, pattern="attempt=1.log")
    assert deployment.ti(dag_id, dag_run) == ("success", 2)
    assert starts(deployment, "after-start") == 1
    assert [r.id for r in runs(deployment, "after-start")] == [mltrain_id]
    assert xcom(deployment, dag_id, dag_run) == mltrain_id
    # Try 1 died before ResumableJobMixin persisted anything; try 2 found the run by its id.
    assert stored_run_id(deployment, dag_id, dag_run) == mltrain_id


def test_retry_after_a_failed_run_starts_a_linked_run(deployment):
    dag_id = "fault_failed_run"
    dag_run = deployment.trigger(dag_id)
    assert deployment.wait_dag_run(dag_id, dag_run) == "success", deployment.task_log(dag_id, dag_run)
    first = run_id_of(deployment, dag_id, dag_run)
    newer, older = runs(deployment, "failed-run")
    assert (older.id, older.get_status()) == (first, "Failed")
    assert (newer.id, newer.get_status()) == (first + ".a2", "Completed")
    assert newer.properties["mltrain.previous_run_id"] == first
    assert starts(deployment, "failed-run") == 2
    assert xcom(deployment, dag_id, dag_run) == newer.id
    assert stored_run_id(deployment, dag_id, dag_run) == newer.id


def test_deferrable_run_through_scheduler_triggerer_and_local_executor(deployment):
    dag_id = "fault_deferrable"
    dag_run = deployment.trigger(dag_id)
    assert deployment.wait_dag_run(dag_id, dag_run) == "success", deployment.task_log(dag_id, dag_run)
    mltrain_id = run_id_of(deployment, dag_id, dag_run)
    assert [(r.id, r.get_status()) for r in runs(deployment, "deferrable")] == [(mltrain_id, "Completed")]
    assert starts(deployment, "deferrable") == 1
    assert deployment.ti(dag_id, dag_run) == ("success", 1)
    log = deployment.task_log(dag_id, dag_run)
    assert "DEFERRED" in log and "all done" in log, log[-4000:]
    assert xcom(deployment, dag_id, dag_run) == mltrain_id
    assert xcom(deployment, dag_id, dag_run, "run_details")["status"] == "Completed"
    assert stored_run_id(deployment, dag_id, dag_run) == mltrain_id


def test_a_deferrable_retry_that_finds_its_run_over_finishes_on_its_worker(deployment):
    """Deferring again would only fire the trigger at once, which can meet Airflow's stale-event
    race (apache/airflow#72716, #67287) and fail the retry too."""
    dag_id = "fault_deferrable_retry"
    dag_run = deployment.trigger(dag_id)
    assert deployment.wait_dag_run(dag_id, dag_run) == "success", deployment.task_log(dag_id, dag_run)
    mltrain_id = run_id_of(deployment, dag_id, dag_run)
    assert [(r.id, r.get_status()) for r in runs(deployment, "deferrable-retry")] == [
        (mltrain_id, "Completed")
    ]
    assert starts(deployment, "deferrable-retry") == 1
    assert deployment.ti(dag_id, dag_run) == ("success", 2)
    # Try 1 failed one of two ways, each leaving the run Completed for try 2 to find: in its
    # post_execute hook once resumed, or, before it resumed, by Airflow 3.3's race itself. Then the
    # scheduler took the deferring process's late "success" for a task changed from outside (a
    # "state mismatch" in its log table), failed the queued resumption, and kept no history row.
    mismatches = deployment.query(
        "SELECT COUNT(*) FROM log WHERE event='state mismatch' AND dag_id=? AND run_id=?", dag_id, dag_run
    )[0][0]
    first = deployment.task_log(dag_id, dag_run, pattern="attempt=1.log*")
    assert "DEFERRED" in first and "all done" in first, first[-4000:]
    if mismatches:
        assert tries(deployment, dag_id, dag_run) == []
    else:
        assert tries(deployment, dag_id, dag_run) == [(1, "failed")], first[-4000:]
        assert "failing try 1 after its run, on purpose" in first, first[-4000:]
    second = deployment.task_log(dag_id, dag_run, pattern="attempt=2.log*")
    assert "has ended already: finishing on this worker, not deferring" in second, second[-4000:]
    assert "DEFERRED" not in second and "all done" in second, second[-4000:]
    assert xcom(deployment, dag_id, dag_run) == mltrain_id
    assert xcom(deployment, dag_id, dag_run, "run_details")["status"] == "Completed"


def test_triggerer_restart_mid_wait_resumes_without_canceling(deployment):
    dag_id = "fault_triggerer_restart"
    dag_run = deployment.trigger(dag_id)
    wait_for(lambda: deployment.ti(dag_id, dag_run)[0] == "deferred", 120, "the task to defer", deployment)
    wait_for(
        lambda: deployment.query("SELECT 1 FROM trigger WHERE triggerer_id IS NOT NULL"),
        60,
        "a triggerer to take the trigger",
        deployment,
    )
    old = deployment.procs["triggerer"].pid
    deployment.stop("triggerer")
    assert starts(deployment, "triggerer-restart") == 1
    assert runs(deployment, "triggerer-restart")[0].get_status() == "Running"
    deployment.start("triggerer")
    assert deployment.procs["triggerer"].pid != old
    assert deployment.wait_dag_run(dag_id, dag_run) == "success", deployment.task_log(dag_id, dag_run)
    (run,) = runs(deployment, "triggerer-restart")
    assert run.get_status() == "Completed" and run.id == run_id_of(deployment, dag_id, dag_run)
    assert starts(deployment, "triggerer-restart") == 1
    assert deployment.ti(dag_id, dag_run) == ("success", 1)  # no retry: the wait resumed


def sweep_children(deployment: AirflowDeployment, sweep_id: str) -> list[Any]:
    store = Workspace(deployment.home / "mltrain").store
    return [r for r in store.list_runs() if r["properties"].get("mltrain.parent") == sweep_id]


def open_gate(deployment: AirflowDeployment, experiment: str) -> None:
    (deployment.home.parent / "counters" / f"{experiment}.go").touch()


def started_children(deployment: AirflowDeployment, experiment: str) -> list[str]:
    path = deployment.home.parent / "counters" / experiment
    return path.read_text().splitlines() if path.exists() else []


def check_sweep_ran_each_child_once(
    deployment: AirflowDeployment, dag_id: str, dag_run: str, experiment: str
):
    from airflow_provider_mltrain.core.sweep import SweepRun

    sweep_id = run_id_of(deployment, dag_id, dag_run)
    sweep = SweepRun(Workspace(deployment.home / "mltrain"), sweep_id)
    assert sweep.get_status() == "Completed"
    kids = sweep.get_children()
    assert [c.id for c in kids] == [f"{sweep_id}_{i}" for i in range(6)]
    assert all(c.get_status() == "Completed" for c in kids), [(c.id, c.get_status()) for c in kids]
    assert sorted(started_children(deployment, experiment)) == [c.id for c in kids]  # each started once
    assert [r.id for r in runs(deployment, experiment) if r.id not in {c.id for c in kids}] == [sweep_id]
    best = sweep.get_best_run_by_primary_metric()
    assert xcom(deployment, dag_id, dag_run) == best.id
    summary = xcom(deployment, dag_id, dag_run, "sweep_summary")
    assert summary["sweep_id"] == sweep_id and summary["best_run_id"] == best.id
    assert len(summary["children"]) == 6


def test_killing_a_sweeps_task_process_mid_sweep_resumes_it_on_retry(deployment):
    dag_id = "fault_sweep_kill_task"
    dag_run = deployment.trigger(dag_id)
    sweep_id = run_id_of(deployment, dag_id, dag_run)
    # Two children (max_concurrent_runs) wait at the gate, so the sweep is mid-way.
    wait_for(
        lambda: len(started_children(deployment, "sweep-kill-task")) == 2, 180, "two children", deployment
    )
    record = Workspace(deployment.home / "mltrain").store.get_run(sweep_id)
    host, _, pid = record["properties"]["mltrain.submitted_by"].rpartition(":")
    assert host == socket.gethostname()
    os.kill(int(pid), signal.SIGKILL)
    open_gate(deployment, "sweep-kill-task")

    assert deployment.wait_dag_run(dag_id, dag_run) == "success", deployment.task_log(dag_id, dag_run)
    assert '"signal_name":"SIGKILL"' in deployment.task_log(dag_id, dag_run, pattern="attempt=1.log")
    assert deployment.ti(dag_id, dag_run) == ("success", 2)
    check_sweep_ran_each_child_once(deployment, dag_id, dag_run, "sweep-kill-task")


def test_triggerer_restart_mid_sweep_resumes_it_with_no_duplicate_child(deployment):
    dag_id = "fault_sweep_triggerer_restart"
    dag_run = deployment.trigger(dag_id)
    sweep_id = run_id_of(deployment, dag_id, dag_run)
    wait_for(lambda: deployment.ti(dag_id, dag_run)[0] == "deferred", 120, "the task to defer", deployment)
    wait_for(
        lambda: deployment.query("SELECT 1 FROM trigger WHERE triggerer_id IS NOT NULL"),
        60,
        "a triggerer to take the trigger",
        deployment,
    )
    wait_for(
        lambda: len(started_children(deployment, "sweep-triggerer-restart")) == 2,
        180,
        "two children",
        deployment,
    )
    deployment.stop("triggerer")
    assert Workspace(deployment.home / "mltrain").store.get_run(sweep_id)["status"] == "Running"
    # The two children end while no triggerer runs; the next one must start the other four.
    open_gate(deployment, "sweep-triggerer-restart")
    assert len(sweep_children(deployment, sweep_id)) == 2
    deployment.start("triggerer")

    assert deployment.wait_dag_run(dag_id, dag_run) == "success", deployment.task_log(dag_id, dag_run)
    assert deployment.ti(dag_id, dag_run) == ("success", 1)  # no retry: the new triggerer went on
    check_sweep_ran_each_child_once(deployment, dag_id, dag_run, "sweep-triggerer-restart")


def test_start_from_trigger_submits_in_the_triggerer_once(deployment):
    dag_id = "fault_start_from_trigger"
    dag_run = deployment.trigger(dag_id)
    assert deployment.wait_dag_run(dag_id, dag_run) == "success", deployment.task_log(dag_id, dag_run)
    mltrain_id = run_id_of(deployment, dag_id, dag_run)
    (run,) = runs(deployment, "from-trigger")
    assert (run.id, run.get_status()) == (mltrain_id, "Completed")
    assert run.tags == {"dag_run": dag_run}  # rendered by the triggerer, with the task's context
    assert run.properties["airflow.try_number"] == "1"
    assert starts(deployment, "from-trigger") == 1
    assert deployment.ti(dag_id, dag_run) == ("success", 1)
    log = deployment.task_log(dag_id, dag_run)
    assert f"Run {mltrain_id} submitted from the triggerer" in log and "all done" in log, log[-4000:]
    assert "started on a worker" not in log, log[-4000:]
    # execute_complete ran on a worker, which recorded its pid (what the end_from_trigger test checks).
    ((pid,),) = deployment.query("SELECT pid FROM task_instance WHERE dag_id=? AND run_id=?", dag_id, dag_run)
    assert pid is not None
    assert xcom(deployment, dag_id, dag_run) == mltrain_id
    assert xcom(deployment, dag_id, dag_run, "run_details")["status"] == "Completed"
    assert stored_run_id(deployment, dag_id, dag_run) == mltrain_id


def test_triggerer_restart_after_submitting_follows_the_same_run(deployment):
    dag_id = "fault_from_trigger_restart"
    dag_run = deployment.trigger(dag_id)
    wait_for(lambda: starts(deployment, "from-trigger-restart") == 1, 120, "the run to start", deployment)
    deployment.stop("triggerer")
    assert runs(deployment, "from-trigger-restart")[0].get_status() == "Running"
    deployment.start("triggerer")  # builds the trigger again from its kwargs: it submits nothing new
    assert deployment.wait_dag_run(dag_id, dag_run) == "success", deployment.task_log(dag_id, dag_run)
    (run,) = runs(deployment, "from-trigger-restart")
    assert (run.id, run.get_status()) == (run_id_of(deployment, dag_id, dag_run), "Completed")
    assert starts(deployment, "from-trigger-restart") == 1
    assert deployment.ti(dag_id, dag_run) == ("success", 1)
    log = deployment.task_log(dag_id, dag_run)
    assert f"Run {run.id} was submitted by this try (1): following it." in log, log[-4000:]


def test_a_mapped_start_from_trigger_task_submits_from_its_worker(deployment):
    dag_id = "fault_from_trigger_mapped"
    dag_run = deployment.trigger(dag_id)
    # A mapped task's logs are one folder down.
    failed = deployment.wait_dag_run(dag_id, dag_run) != "success"
    assert not failed, deployment.task_log(dag_id, dag_run, pattern="map_index=0/*")[-8000:]
    (run,) = runs(deployment, "from-trigger-mapped")
    assert run.get_status() == "Completed" and run.properties["airflow.map_index"] == "0"
    assert starts(deployment, "from-trigger-mapped") == 1
    log = deployment.task_log(dag_id, dag_run, pattern="map_index=0/*")
    assert "start_from_trigger: this task started on a worker" in log, log[-4000:]
    assert "submitted from the triggerer" not in log, log[-4000:]


def test_end_from_trigger_never_takes_a_worker_and_retries_a_failed_run(deployment):
    dag_id = "fault_end_from_trigger"
    dag_run = deployment.trigger(dag_id)
    assert deployment.wait_dag_run(dag_id, dag_run) == "success", deployment.task_log(dag_id, dag_run)
    first = run_id_of(deployment, dag_id, dag_run)
    assert [(r.id, r.get_status()) for r in runs(deployment, "end-from-trigger")] == [
        (first + ".a2", "Completed"),
        (first, "Failed"),
    ]
    assert starts(deployment, "end-from-trigger") == 2
    assert deployment.ti(dag_id, dag_run) == ("success", 2)
    assert tries(deployment, dag_id, dag_run) == [(1, "failed")]  # the failed run failed try 1
    # No worker ran either try: Airflow records a worker's pid when it starts a try.
    pids = "SELECT pid FROM {} WHERE dag_id=? AND run_id=? AND task_id='train'"
    assert deployment.query(pids.format("task_instance"), dag_id, dag_run) == [(None,)]
    assert deployment.query(pids.format("task_instance_history"), dag_id, dag_run) == [(None,)]
    log = deployment.task_log(dag_id, dag_run)
    assert "failing on purpose" in log and "exit code 5" in log and "all done" in log, log[-4000:]
    # No XCom: Airflow 3.3 stores an end event's XComs encoded twice (a downstream task would
    # read the run id as '"<id>"'), so the trigger sends none.
    assert deployment.query("SELECT key FROM xcom WHERE dag_id=? AND run_id=?", dag_id, dag_run) == []
