"""The Spark target on the real standalone cluster of tests/services/spark.sh (two workers).

The shared suite (test_target_suite.py) covers plain scripts; these tests run real Spark jobs.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from airflow_provider_mltrain import (
    Environment,
    Experiment,
    InvalidRunConfig,
    PythonSection,
    RunFailed,
    ScriptRunConfig,
)
from airflow_provider_mltrain.core.compute import RunSpec
from airflow_provider_mltrain.core.errors import TargetUnreachable
from airflow_provider_mltrain.targets.spark import SparkSettings, SparkTarget
from tests.targets.harnesses.spark import CONN_ID, connection_json, end_leftover_applications, spark_service
from tests.targets.suite import wait_until


@pytest.fixture
def cluster(monkeypatch, workspace):
    master, ui = spark_service()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(master, ui))
    yield master, ui
    end_leftover_applications(workspace, ui)


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def master_apps(ui: str) -> list[dict]:
    state = get_json(f"{ui}/json/")
    return state["activeapps"] + state["completedapps"]


def submit(workspace, src, script="job.py", target=CONN_ID, **kwargs):
    return Experiment(workspace, "spark").submit(
        ScriptRunConfig(src, script, compute_target=target, **kwargs)
    )


JOB = """
import json, urllib.request
from pyspark.sql import SparkSession
from mltrain import Run
from helpers import double  # a module of the snapshot: executors import it from --py-files

run = Run.get_context()
spark = SparkSession.builder.getOrCreate()
sc = spark.sparkContext
rdd = sc.parallelize(range(1000), 8)
total = rdd.map(double).sum()
run.log("total", total)
for step in range(3):
    run.log("loss", 1.0 / (step + 1), step=step)
url = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/executors"
with urllib.request.urlopen(url) as resp:
    executors = json.load(resp)
json.dump(executors, open("outputs/executors.json", "w"))
spark.stop()
"""


def test_job_runs_on_both_workers_and_driver_metrics_land(workspace, cluster, make_tree):
    _, ui = cluster
    src = make_tree({"job.py": JOB, "helpers.py": "def double(x):\n    return 2 * x\n"})
    run = submit(workspace, src)
    details = run.wait_for_completion()
    assert details["status"] == "Completed"
    assert run.get_metrics() == {"total": 999000, "loss": [1.0, 0.5, 1 / 3]}
    app_id = run.properties["spark.application_id"]
    assert app_id.startswith("app-")
    executors = json.loads((Path(details["output_dir"]) / "outputs/executors.json").read_text())
    busy = [e for e in executors if e["id"] != "driver" and e["totalTasks"] > 0]
    assert len(busy) == 2, executors
    assert sum(e["totalTasks"] for e in busy) == 8
    # Each worker of the cluster ran an executor of this application.
    workers = get_json(f"{ui}/json/")["workers"]
    assert len(workers) == 2
    for worker in workers:
        report = get_json(f"{worker['webuiaddress']}/json/")
        assert app_id in {e["appid"] for e in report["executors"] + report["finishedexecutors"]}
    assert run.target.application(run.id)["state"] == "FINISHED"
    assert "logs/spark_driver.log" in run.get_file_names()
    assert app_id in (Path(details["output_dir"]) / "logs/spark_driver.log").read_text()


SLOW_JOB = """
import time
from pyspark.sql import SparkSession
sc = SparkSession.builder.getOrCreate().sparkContext
open("outputs/app", "w").write(sc.applicationId)
sc.parallelize(range(2), 2).map(lambda x: time.sleep(600)).collect()
"""


@pytest.mark.timeout(600)
def test_cancel_ends_the_application_on_the_master(workspace, cluster, harness_dir, make_tree):
    _, ui = cluster
    src = make_tree({"job.py": SLOW_JOB, "outputs/.keep": ""})
    run = submit(workspace, src)
    # Three JVMs start first (driver, two executors): minutes on a loaded 2-core machine.
    app_id = wait_until(lambda: harness_dir(run, "outputs/app"), timeout=300)
    wait_until(lambda: any(a["id"] == app_id and a["state"] == "RUNNING" for a in master_apps(ui)), 60)
    assert run.cancel(grace_period=5) == "Canceled"

    def ended():
        state = get_json(f"{ui}/json/")
        return app_id not in {a["id"] for a in state["activeapps"]} and next(
            a["state"] for a in state["completedapps"] if a["id"] == app_id
        )

    assert wait_until(ended, timeout=60) in ("FINISHED", "KILLED")
    wait_until(lambda: get_json(f"{ui}/json/")["coresused"] == 0, timeout=60)  # executors freed


@pytest.fixture
def harness_dir():
    def read(run, rel):
        path = run.workspace.root / "targets" / f"spark-{CONN_ID}" / "runs" / run.id / "snapshot" / rel
        try:
            return path.read_text() or None
        except FileNotFoundError:
            return None

    return read


def test_pyspark_script_that_raises_fails_with_the_python_traceback(workspace, cluster, make_tree):
    src = make_tree(
        {
            "job.py": """
        from pyspark.sql import SparkSession
        sc = SparkSession.builder.getOrCreate().sparkContext
        def ratio(x):
            return 1 / (x - x)
        sc.parallelize([1, 2], 2).map(ratio).collect()
    """
        }
    )
    run = submit(workspace, src)
    with pytest.raises(RunFailed) as err:
        run.wait_for_completion()
    assert err.value.status == "Failed" and err.value.exit_code not in (None, 0)
    assert "ZeroDivisionError" in str(err.value)  # the executor's Python traceback, through the driver
    # The error names both the driver's exception and the executor's.
    assert run.get_details()["error"] == (
        "script exited with code 1: PythonException: An exception was thrown from the Python worker: "
        "ZeroDivisionError: division by zero"
    )
    assert "Traceback (most recent call last)" in err.value.log_tail


def test_controller_killed_after_submit_reattaches_and_the_application_runs_once(
    workspace, cluster, make_tree
):
    _, ui = cluster
    src = make_tree(
        {
            "job.py": """
        import time
        from pyspark.sql import SparkSession
        sc = SparkSession.builder.getOrCreate().sparkContext
        time.sleep(3)
        print("sum", sc.parallelize(range(10), 2).sum())
    """
        }
    )
    run_id = f"spark_reattach_{secrets.token_hex(4)}"  # the master remembers earlier test sessions' apps
    code = textwrap.dedent(f"""
        from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
        ws = Workspace({str(workspace.root)!r})
        config = ScriptRunConfig({str(src)!r}, "job.py", compute_target={CONN_ID!r})
        Experiment(ws, "spark").submit(config, run_id={run_id!r})
    """)
    env = {**os.environ, "MLTRAIN_TEST_FAULT": "after_start"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr  # killed right after the target accepted the run
    # A retry (another controller) submits the same run id: it reattaches instead of submitting again.
    config = ScriptRunConfig(src, "job.py", compute_target=CONN_ID)
    run = Experiment(workspace, "spark").submit(config, run_id=run_id)
    assert run.wait_for_completion()["status"] == "Completed"
    assert "sum 45" in run.get_log_tail()
    apps = [a for a in master_apps(ui) if a["name"] == f"mltrain spark {run_id}"]
    assert len(apps) == 1 and apps[0]["id"] == run.properties["spark.application_id"]


def test_managed_environment_is_packed_for_the_executors(workspace, cluster, make_tree):
    src = make_tree(
        {
            "job.py": """
        import sys
        from pyspark.sql import SparkSession
        sc = SparkSession.builder.getOrCreate().sparkContext
        def probe(_):
            import six, sys
            return six.__version__, sys.executable
        print("executors", sorted(set(sc.parallelize(range(4), 4).map(probe).collect())))
        print("driver", sys.executable)
    """
        }
    )
    environment = Environment(name="six", python=PythonSection(requirements=["six==1.17.0"]))
    run = submit(workspace, src, environment=environment)
    run.wait_for_completion()
    tail = run.get_log_tail()
    executors = next(line for line in tail.splitlines() if line.startswith("executors"))
    assert "'1.17.0'" in executors and "/environment/bin/python" in executors
    envs = workspace.root / "targets" / f"spark-{CONN_ID}" / "envs"
    assert f"driver {envs}" in tail
    assert (envs / f"{environment.content_hash()}.tar.gz").is_file()


def test_framework_python_runs_the_script_on_the_gateway_without_spark_submit(workspace, cluster, make_tree):
    src = make_tree({"job.py": "import sys\nprint('plain', sys.argv[1:])\n"})
    run = submit(workspace, src, framework="python", arguments=["a b"])
    assert run.wait_for_completion()["status"] == "Completed"
    assert "plain ['a b']" in run.get_log_tail()
    assert run.properties["mltrain.framework"] == "python"
    assert "logs/spark_driver.log" not in run.get_file_names()


# -- refused before anything is submitted ----------------------------------------------------------


def test_unknown_target_options_are_refused_before_submission(workspace, cluster, make_tree):
    src = make_tree({"job.py": "print(1)\n"})
    with pytest.raises(InvalidRunConfig, match=r"Unknown target_options .*: executor_ram"):
        submit(workspace, src, target_options={"executor_ram": "1g"})
    assert workspace.store.list_runs() == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_master_is_named_and_nothing_is_submitted(workspace, monkeypatch, make_tree):
    port = free_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_DOWN",
        json.dumps({"conn_type": "spark", "host": "spark://127.0.0.1", "port": port}),
    )
    src = make_tree({"job.py": "print(1)\n"})
    with pytest.raises(TargetUnreachable, match=re.escape(f"spark://127.0.0.1:{port} is not reachable")):
        submit(workspace, src, target="spark_down")
    assert workspace.store.list_runs() == []


@pytest.mark.parametrize("binary", ["bash", "/usr/bin/spark-submit", "spark-submit; rm -rf /"])
def test_spark_binary_outside_the_allowlist_is_refused(workspace, monkeypatch, make_tree, binary):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_BAD",
        json.dumps({"conn_type": "spark", "host": "local[2]", "extra": {"spark-binary": binary}}),
    )
    src = make_tree({"job.py": "print(1)\n"})
    with pytest.raises(InvalidRunConfig, match=r"spark-binary .* is not allowed: use one of spark-submit"):
        submit(workspace, src, target="spark_bad")
    assert workspace.store.list_runs() == []


@pytest.fixture
def target(tmp_path) -> SparkTarget:
    return SparkTarget("spk", tmp_path / "spk", SparkSettings(master="local[2]", conf={"spark.a": "conn"}))


def test_spark_options_are_checked_and_unknown_keys_named(target):
    framework, options = target.check_options(
        None,
        {
            "conf": {"spark.sql.shuffle.partitions": 4, "spark.dynamicAllocation.enabled": False},
            "num_executors": 2,
            "executor_memory": "512m",
            "packages": "org.example:a:1.0, org.example:b:2.0",
            "jars": ["/opt/x.jar"],
        },
    )
    assert framework == "pyspark"
    assert options["conf"] == {
        "spark.sql.shuffle.partitions": "4",
        "spark.dynamicAllocation.enabled": "false",
    }
    assert options["packages"] == ["org.example:a:1.0", "org.example:b:2.0"]
    with pytest.raises(
        InvalidRunConfig, match=r"Unknown target_options .*: executor_mem, gpus\. Known: conf"
    ):
        target.check_options("pyspark", {"executor_mem": "1g", "gpus": 1})
    with pytest.raises(InvalidRunConfig, match=r"executor_memory.*memory size"):
        target.check_options("pyspark", {"executor_memory": "lots"})
    with pytest.raises(InvalidRunConfig, match=r"num_executors.*positive whole number"):
        target.check_options("pyspark", {"num_executors": 0})
    with pytest.raises(InvalidRunConfig, match=r"'shuffle\.partitions' is not a Spark property"):
        target.check_options("pyspark", {"conf": {"shuffle.partitions": 4}})
    with pytest.raises(InvalidRunConfig, match=r"'cluster' is not supported: runs use deploy mode 'client'"):
        target.check_options("pyspark", {"deploy_mode": "cluster"})
    with pytest.raises(InvalidRunConfig, match="need framework 'pyspark'"):
        target.check_options("python", {"num_executors": 2})
    with pytest.raises(InvalidRunConfig, match="framework 'tensorflow' is not supported"):
        target.check_options("tensorflow", {})


def test_a_cluster_mode_connection_is_usable_with_client_per_run(tmp_path):
    """A spark connection shared with SparkSubmitOperator may say deploy-mode cluster: runs through it
    are refused with the fix (client per run), and with it they are submitted in client mode."""
    cluster = SparkTarget("shared", tmp_path / "t", SparkSettings(master="local[2]", deploy_mode="cluster"))
    with pytest.raises(InvalidRunConfig) as err:
        cluster.check_options("pyspark", {"num_executors": 2})
    assert "connection 'shared' sets deploy-mode 'cluster'" in str(err.value)
    assert "target_options={'deploy_mode': 'client'}" in str(err.value)
    framework, options = cluster.check_options("pyspark", {"deploy_mode": "client"})
    assert framework == "pyspark" and options == {}
    assert cluster.check_options("python", {}) == ("python", {})  # no spark-submit: no deploy mode
    spec = RunSpec("r", "e", "job.py", (), "snap", interpreter="/usr/bin/python3", target_options=options)
    argv = cluster.launcher(spec)
    assert argv[3:5] == ["--deploy-mode", "client"]


def test_launcher_carries_the_options_and_the_conf(target):
    _, options = target.check_options(
        "pyspark", {"conf": {"spark.a": "run"}, "packages": ["org.example:a:1.0"], "num_executors": 3}
    )
    spec = RunSpec("r1", "exp", "job.py", (), "snap", interpreter="/usr/bin/python3", target_options=options)
    argv = target.launcher(spec)
    assert argv[0].endswith("spark-submit")
    assert argv[1:5] == ["--master", "local[2]", "--deploy-mode", "client"]
    pairs = list(itertools.pairwise(argv))
    assert ("--name", "mltrain exp r1") in pairs
    assert ("--packages", "org.example:a:1.0") in pairs and ("--num-executors", "3") in pairs
    assert ("--conf", "spark.a=run") in pairs  # the run's conf wins over the connection's
    assert ("--conf", "spark.pyspark.driver.python=/usr/bin/python3") in pairs
    assert "--archives" not in argv  # a user-managed interpreter: executors use the cluster's Python


def test_missing_java_is_named_before_submission(workspace, monkeypatch, make_tree, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_LOCAL", json.dumps({"conn_type": "spark", "host": "local[2]"}))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    src = make_tree({"job.py": "print(1)\n"})
    with pytest.raises(InvalidRunConfig, match="spark-submit needs Java"):
        submit(workspace, src, target="spark_local")
    assert workspace.store.list_runs() == []


# -- executors lost mid-job: the run reflects Spark's own outcome ----------------------------------

# Eight tasks on two one-core executors. Every task waits for a "release" file the test writes once it
# has killed a busy executor, so the executor killed is running a task whatever the machine's load (a
# task that merely sleeps may end between the test's look at the executor and its kill, and a lost idle
# executor fails nothing). The squares are checked exactly; allexecutors (the live and the lost ones)
# is kept for the test.
LOSSY_JOB = """
import json, os, time, urllib.request
from pyspark.sql import SparkSession
sc = SparkSession.builder.getOrCreate().sparkContext
release = os.path.abspath("release")
with open("outputs/.driver.json", "w") as f:
    json.dump({"ui": sc.uiWebUrl, "app": sc.applicationId}, f)
os.replace("outputs/.driver.json", "outputs/driver.json")

def held_square(x):
    deadline = time.monotonic() + 600
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.2)
    return x * x

print("squares", sc.parallelize(range(8), 8).map(held_square).collect(), flush=True)
url = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/allexecutors"
with urllib.request.urlopen(url) as resp:
    json.dump(json.load(resp), open("outputs/allexecutors.json", "w"))
"""


def executor_pid(app_id: str, executor_id: str) -> int | None:
    """The pid of the executor JVM ``executor_id`` of the application ``app_id``, found by its argv."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        args = [a.decode(errors="replace") for a in argv]
        if "org.apache.spark.executor.CoarseGrainedExecutorBackend" not in args:
            continue
        pairs = set(itertools.pairwise(args))
        if ("--app-id", app_id) in pairs and ("--executor-id", executor_id) in pairs:
            return int(proc.name)
    return None


def kill_a_busy_executor(run, harness_dir) -> tuple[str, str]:
    """Wait until an executor of ``run``'s application runs a task, SIGKILL its JVM, release the job's tasks;
    (app id, executor id)."""
    driver = wait_until(lambda: harness_dir(run, "outputs/driver.json"), timeout=120)
    ui, app_id = json.loads(driver)["ui"], json.loads(driver)["app"]
    url = f"{ui}/api/v1/applications/{app_id}/executors"

    def busy():
        try:
            executors = get_json(url)
        except OSError:  # the driver's UI is slow to answer on a loaded machine: ask again
            return None
        return next((e["id"] for e in executors if e["id"] != "driver" and e["activeTasks"] > 0), None)

    executor_id = wait_until(busy, timeout=120, interval=0.5)
    pid = executor_pid(app_id, executor_id)
    assert pid is not None, f"no JVM of executor {executor_id} of {app_id} on this machine"
    os.kill(pid, signal.SIGKILL)
    # The job's tasks wait for this file: the killed executor's task was running, the others go on.
    release = run.workspace.root / "targets" / f"spark-{CONN_ID}" / "runs" / run.id / "snapshot" / "release"
    release.write_text("")
    return app_id, executor_id


def assert_application_ended(ui: str, app_id: str) -> None:
    """The master recorded the application FINISHED and no worker still runs one of its executors."""

    def ended():
        state = get_json(f"{ui}/json/")
        if app_id in {a["id"] for a in state["activeapps"]}:
            return None
        return next((a["state"] for a in state["completedapps"] if a["id"] == app_id), None)

    def executors_left():
        workers = get_json(f"{ui}/json/")["workers"]
        reports = [get_json(f"{w['webuiaddress']}/json/") for w in workers]
        return [e for r in reports for e in r["executors"] if e["appid"] == app_id]

    assert wait_until(ended, timeout=60, interval=0.5) == "FINISHED"
    wait_until(lambda: not executors_left(), timeout=60, interval=0.5)


def test_executor_killed_mid_job_is_replaced_and_the_run_completes(
    workspace, cluster, harness_dir, make_tree
):
    _, ui = cluster
    src = make_tree({"job.py": LOSSY_JOB})
    run = submit(workspace, src)
    app_id, lost = kill_a_busy_executor(run, harness_dir)
    details = run.wait_for_completion(timeout=300)
    assert details["status"] == "Completed"
    assert run.properties["spark.application_id"] == app_id
    assert f"squares {[x * x for x in range(8)]}" in run.get_log_tail()
    executors = json.loads((Path(details["output_dir"]) / "outputs/allexecutors.json").read_text())
    gone = next(e for e in executors if e["id"] == lost)
    assert gone["isActive"] is False and gone["removeReason"], gone  # Spark saw the executor lost
    driver_log = (Path(details["output_dir"]) / "logs/spark_driver.log").read_text()
    assert f"ExecutorLostFailure (executor {lost} exited" in driver_log  # ... with a task running
    # The task lost with it ran again on another executor: eight successes in all (a result stage's
    # finished tasks are not rerun).
    assert sum(e["completedTasks"] for e in executors if e["id"] != "driver") == 8, executors
    assert_application_ended(ui, app_id)


def test_executor_killed_mid_job_without_task_retries_fails_the_run_with_sparks_reason(
    workspace, cluster, harness_dir, make_tree
):
    _, ui = cluster
    src = make_tree({"job.py": LOSSY_JOB})
    # spark.task.maxFailures=1 alone is enough: the standalone master reports the executor's exit, and
    # Spark counts an executor that exited as a failure of the tasks it ran ("ExecutorLostFailure ...
    # exited caused by one of the running tasks"), so the first loss aborts the job.
    run = submit(workspace, src, target_options={"conf": {"spark.task.maxFailures": "1"}})
    app_id, lost = kill_a_busy_executor(run, harness_dir)
    with pytest.raises(RunFailed) as err:
        run.wait_for_completion(timeout=300)
    assert err.value.status == "Failed" and err.value.exit_code not in (None, 0)
    # Spark's reason heads the Py4JJavaError, whose JVM stack trace fills the log's last lines: the
    # run's error carries it.
    error = run.get_details()["error"]
    assert error.startswith("script exited with code 1: Py4JJavaError: An error occurred while calling")
    assert "SparkException: Job aborted due to stage failure" in error
    assert f"ExecutorLostFailure (executor {lost} exited caused by one of the running tasks)" in error
    assert error in str(err.value)
    log = run.read_log().decode()
    assert "org.apache.spark.SparkException: Job aborted due to stage failure" in log
    assert "failed 1 times" in log
    assert f"ExecutorLostFailure (executor {lost} exited caused by one of the running tasks)" in log
    assert "squares [" not in log  # no result was printed
    assert_application_ended(ui, app_id)


@pytest.mark.parametrize("master", ["yarn\n", "local[*]\n", "local\nyarn"])
def test_a_master_with_a_line_break_is_refused(master):
    from airflow_provider_mltrain.targets.spark import check_master

    with pytest.raises(InvalidRunConfig, match="not a master URL"):
        check_master(master)
