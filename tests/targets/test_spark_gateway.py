"""The Spark target submitting through an SSH gateway (the edge-node pattern), for real.

The gateway is the SSH test VM of tests/services/sshd.sh (user mltrain-vm on 127.0.0.1), with a
Spark client of its own (``gateway_spark_client``); the cluster is tests/services/spark.sh's. So
spark-submit, the supervisor and the driver run as the VM's user in its remote root, and this
process only talks SSH to them (and HTTP to the master's UI).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_provider_mltrain import Environment, Experiment, PythonSection, ScriptRunConfig
from airflow_provider_mltrain.core.errors import InvalidRunConfig, TargetUnreachable
from airflow_provider_mltrain.hooks.spark import SparkComputeHook
from airflow_provider_mltrain.hooks.ssh import SSHComputeHook
from tests.targets.harnesses.spark import (
    GATEWAY_CONN_ID,
    GATEWAY_SSH_CONN_ID,
    connection_json,
    end_leftover_applications,
    gateway_spark_client,
    spark_service,
)
from tests.targets.harnesses.ssh import connection_json as ssh_connection_json
from tests.targets.harnesses.ssh import require_ssh
from tests.targets.suite import wait_until
from tests.targets.test_spark import JOB, SLOW_JOB, free_port, get_json, master_apps

pytestmark = pytest.mark.integration
CONN_ID, SSH_CONN_ID = GATEWAY_CONN_ID, GATEWAY_SSH_CONN_ID


@pytest.fixture
def gateway(monkeypatch, workspace):
    """The spark connection CONN_ID with gateway-conn-id = the SSH VM, whose remote root is this test's."""
    master, ui = spark_service()
    ssh = require_ssh()
    python = gateway_spark_client(ssh["USER"])
    root = f"~/mltrain-tests/{secrets.token_hex(6)}"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{SSH_CONN_ID.upper()}",
        ssh_connection_json(ssh, remote_root=root, interpreter_path=python),
    )

    def connect(conn_id: str = CONN_ID, master_url: str = master, **extra) -> None:
        extra.setdefault("gateway-conn-id", SSH_CONN_ID)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(master_url, ui, **extra))

    connect()
    yield {"ui": ui, "python": python, "connect": connect, "master": master}
    end_leftover_applications(workspace, ui)
    target = SSHComputeHook(SSH_CONN_ID).get_target(Path("."))
    try:
        if posixpath.basename(posixpath.dirname(target.root)) == "mltrain-tests":
            target.run_command(["rm", "-rf", "--", target.root])
    finally:
        target.close()


def submit(workspace, src, target=CONN_ID, **kwargs):
    return Experiment(workspace, "spark-gw").submit(
        ScriptRunConfig(src, "job.py", compute_target=target, **kwargs)
    )


def remote_file(run, rel: str) -> str | None:
    """A file of the run's folder on the gateway (``snapshot/outputs/app``), or None."""
    gw = run.target.gateway
    path = posixpath.join(gw.run_dir(run.id), rel)

    def read(sftp):
        try:
            with sftp.open(path, "rb") as f:
                return f.read().decode() or None
        except FileNotFoundError:
            return None

    return gw.with_sftp(read)


WHO = """
import getpass, json, socket, sys
json.dump({"user": getpass.getuser(), "python": sys.executable}, open("outputs/who.json", "w"))
"""


def test_job_through_the_gateway_completes_with_driver_metrics_and_the_app_finished(
    workspace, gateway, make_tree
):
    # spark-home names the installation explicitly (the pyspark of the gateway's client).
    spark_home = str(Path(gateway["python"]).parents[1] / "lib/python3.11/site-packages/pyspark")
    gateway["connect"](**{"spark-home": spark_home})
    src = make_tree({"job.py": JOB + WHO, "helpers.py": "def double(x):\n    return 2 * x\n"})
    target = SparkComputeHook(CONN_ID).get_target(workspace.root)
    sent: list[tuple[int, int]] = []
    target.upload_progress = lambda done, total: sent.append((done, total))
    run = submit(workspace, src, target=target)
    assert sent and sent[-1][0] == sent[-1][1] > 0  # the snapshot went up through the SSH target
    details = run.wait_for_completion()
    assert details["status"] == "Completed"
    assert run.get_metrics() == {"total": 999000, "loss": [1.0, 0.5, 1 / 3]}
    app_id = run.properties["spark.application_id"]
    assert app_id.startswith("app-")
    out = Path(details["output_dir"])
    # The driver ran on the gateway, as its login, with the run's Python there.
    assert json.loads((out / "outputs/who.json").read_text()) == {
        "user": require_ssh()["USER"],
        "python": gateway["python"],
    }
    executors = json.loads((out / "outputs/executors.json").read_text())
    assert sum(e["totalTasks"] for e in executors if e["id"] != "driver") == 8
    assert run.target.application(run.id)["state"] == "FINISHED"
    assert app_id in (out / "logs/spark_driver.log").read_text()
    # The gateway's own run folder (kept: the ssh connection's cleanup is "never").
    assert json.loads(remote_file(run, "status.json"))["state"] == "Completed"
    launcher = json.loads(remote_file(run, "run.json"))["launcher"]
    assert launcher[0] == f"{spark_home}/bin/spark-submit"
    assert remote_file(run, "snapshot.zip") is None  # collected: the zip is gone


def test_controller_killed_after_submit_reattaches_and_the_application_runs_once(
    workspace, gateway, make_tree
):
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
    run_id = f"spark_gw_reattach_{secrets.token_hex(4)}"
    code = textwrap.dedent(f"""
        from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
        ws = Workspace({str(workspace.root)!r})
        config = ScriptRunConfig({str(src)!r}, "job.py", compute_target={CONN_ID!r})
        Experiment(ws, "spark-gw").submit(config, run_id={run_id!r})
    """)
    env = {**os.environ, "MLTRAIN_TEST_FAULT": "after_start"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr  # killed right after the gateway accepted the run
    config = ScriptRunConfig(src, "job.py", compute_target=CONN_ID)
    run = Experiment(workspace, "spark-gw").submit(config, run_id=run_id)
    assert run.wait_for_completion()["status"] == "Completed"
    assert "sum 45" in run.get_log_tail()
    apps = [a for a in master_apps(gateway["ui"]) if a["name"] == f"mltrain spark-gw {run_id}"]
    assert len(apps) == 1 and apps[0]["id"] == run.properties["spark.application_id"]


def test_cancel_ends_the_application_on_the_master(workspace, gateway, make_tree):
    ui = gateway["ui"]
    src = make_tree({"job.py": SLOW_JOB, "outputs/.keep": ""})
    run = submit(workspace, src)
    app_id = wait_until(lambda: remote_file(run, "snapshot/outputs/app"), timeout=90)
    wait_until(lambda: any(a["id"] == app_id and a["state"] == "RUNNING" for a in master_apps(ui)), 60)
    assert run.cancel(grace_period=5) == "Canceled"

    def ended():
        state = get_json(f"{ui}/json/")
        return app_id not in {a["id"] for a in state["activeapps"]} and next(
            a["state"] for a in state["completedapps"] if a["id"] == app_id
        )

    assert wait_until(ended, timeout=60) in ("FINISHED", "KILLED")
    wait_until(lambda: get_json(f"{ui}/json/")["coresused"] == 0, timeout=60)  # executors freed


# -- refused before anything is recorded -----------------------------------------------------------


@pytest.mark.parametrize(
    ("gateway_id", "message"),
    [
        ("no_such_gateway", r"gateway-conn-id names 'no_such_gateway', which is not an Airflow connection"),
        ("mltrain_test_spark_gw_other", r"a connection of type 'spark'; the gateway must be an ssh"),
    ],
)
def test_bad_gateway_connection_is_refused_before_anything_is_recorded(
    workspace, gateway, make_tree, gateway_id, message
):
    gateway["connect"]("mltrain_test_spark_gw_other", **{"gateway-conn-id": None})
    gateway["connect"]("spark_bad_gw", **{"gateway-conn-id": gateway_id})
    src = make_tree({"job.py": "print(1)\n"})
    with pytest.raises(InvalidRunConfig, match=message):
        submit(workspace, src, target="spark_bad_gw")
    assert workspace.store.list_runs() == []


def test_spark_home_without_spark_submit_is_named_before_submission(workspace, gateway, make_tree):
    gateway["connect"](**{"spark-home": "/opt/no-spark-here"})
    src = make_tree({"job.py": "print(1)\n"})
    with pytest.raises(
        InvalidRunConfig,
        match=r"spark-submit was not found on the gateway 127\.0\.0\.1 \(/opt/no-spark-here/bin",
    ):
        submit(workspace, src)
    assert workspace.store.list_runs() == []


def test_master_unreachable_from_the_gateway_is_named_before_submission(workspace, gateway, make_tree):
    port = free_port()
    gateway["connect"](master_url=f"spark://127.0.0.1:{port}")
    src = make_tree({"job.py": "print(1)\n"})
    with pytest.raises(
        TargetUnreachable,
        match=re.escape(f"spark://127.0.0.1:{port} is not reachable from the gateway 127.0.0.1"),
    ):
        submit(workspace, src)
    assert workspace.store.list_runs() == []


def test_managed_environment_is_built_and_packed_on_the_gateway(workspace, gateway, make_tree):
    """A managed environment is built on the edge node (as on the ssh target) and packed there for the
    executors, which unpack it as ./environment: the driver and the executors run the same packages."""
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
        import six
        print("driver", six.__version__, sys.executable)
    """
        }
    )
    environment = Environment(name="six", python=PythonSection(requirements=["six==1.17.0"]))
    run = submit(workspace, src, environment=environment)
    assert run.wait_for_completion()["status"] == "Completed"
    tail = run.get_log_tail()
    executors = next(line for line in tail.splitlines() if line.startswith("executors"))
    assert "'1.17.0'" in executors and "/environment/bin/python" in executors
    gw = run.target.gateway
    envs = posixpath.join(gw.root, "envs")
    digest = environment.content_hash()
    assert f"driver 1.17.0 {envs}/{digest}/bin/python" in tail
    assert run.get_details()["environment"]["packages"] == ["six==1.17.0"]
    listing = gw.with_sftp(lambda sftp: sftp.listdir(envs))
    assert f"{digest}.tar.gz" in listing
    assert not [name for name in listing if ".tar.gz." in name]  # no temporary archive left behind
    # The next run reuses both the build and the archive.
    before = gw.with_sftp(lambda sftp: sftp.stat(posixpath.join(envs, f"{digest}.tar.gz")).st_mtime)
    again = submit(workspace, src, environment=environment)
    assert again.wait_for_completion()["status"] == "Completed"
    assert again.get_details()["environment"]["cache_hit"] is True
    after = gw.with_sftp(lambda sftp: sftp.stat(posixpath.join(envs, f"{digest}.tar.gz")).st_mtime)
    assert after == before


def test_connection_test_checks_spark_on_the_gateway(gateway):
    ok, message = SparkComputeHook(CONN_ID).test_connection()
    assert ok, message
    assert f"spark-submit on 127.0.0.1 can submit to {gateway['master']}" in message
    assert "2 alive workers" in message
