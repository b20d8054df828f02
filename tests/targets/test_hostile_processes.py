"""A script's processes end with its run, even those it starts in a session of their own.

Run over every target by the shared ``harness``/``target`` fixtures. Where the machine has a cgroup
v2 hierarchy (local, SSH with a delegated subtree, the Spark gateway) the run's cgroup ends them;
in Docker the container does. Where no cgroup can be made, the run still works and says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_provider_mltrain import Environment
from tests.targets.harnesses.docker import CONN_ID as DOCKER_CONN_ID
from tests.targets.harnesses.docker import docker_connection
from tests.targets.suite import submit, wait_until

pytestmark = pytest.mark.no_object_store_variant(
    "the script's processes, on the target: the artifact store plays no part"
)

# Writes its pid (atomically) to the file named by argv[1], then lingers.
DAEMON = (
    "import os, sys, time\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "time.sleep(600)\n"
)

# Starts a setsid daemon and a double-forked one (own session, reparented), waits until both are up,
# writes their pids to outputs/daemons, then exits or lingers (argv[1]).
LEAVES_DAEMONS = f"""
import os, subprocess, sys, time
DAEMON = {DAEMON!r}
subprocess.Popen(
    [sys.executable, "-c", DAEMON, "outputs/setsid.pid"],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    start_new_session=True,
)
first = os.fork()
if first == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execv(sys.executable, [sys.executable, "-c", DAEMON, "outputs/forked.pid"])
    os._exit(0)
os.waitpid(first, 0)
deadline = time.time() + 60
while not (os.path.exists("outputs/setsid.pid") and os.path.exists("outputs/forked.pid")):
    if time.time() > deadline:
        sys.exit("the daemons did not start")
    time.sleep(0.05)
pids = open("outputs/setsid.pid").read() + " " + open("outputs/forked.pid").read()
open("outputs/daemons.tmp", "w").write(pids)
os.rename("outputs/daemons.tmp", "outputs/daemons")
print("daemons", pids, flush=True)
if sys.argv[1:] == ["linger"]:
    time.sleep(600)
"""


def _pids(text: str) -> list[int]:
    return [int(p) for p in text.split()]


def test_daemons_end_with_the_run(workspace, target, harness, make_tree):
    src = make_tree({"train.py": LEAVES_DAEMONS, "outputs/.keep": ""})
    run = submit(workspace, target, src)
    details = run.wait_for_completion(timeout=300)
    assert details["status"] == "Completed"
    pids = _pids((Path(details["output_dir"]) / "outputs/daemons").read_text())
    assert len(pids) == 2
    wait_until(lambda: not any(harness.pids_alive(run, pids)), timeout=30)


def test_daemons_end_with_a_canceled_run(workspace, target, harness, make_tree):
    src = make_tree({"train.py": LEAVES_DAEMONS, "outputs/.keep": ""})
    run = submit(workspace, target, src, arguments=["linger"])
    pids = _pids(wait_until(lambda: harness.read_working_file(run, "outputs/daemons"), timeout=120))
    assert all(harness.pids_alive(run, pids))
    assert run.cancel(grace_period=2) == "Canceled"
    wait_until(lambda: not any(harness.pids_alive(run, pids)), timeout=30)
    status = run.target.read_status(run.id)
    if status.get("cgroup"):  # local, SSH and Spark here: the run's cgroup went with its processes
        assert not os.path.exists(status["cgroup"]), status["cgroup"]
    assert not status.get("warnings")


def test_daemons_end_when_the_runner_is_lost(workspace, target, harness, make_tree):
    src = make_tree({"train.py": LEAVES_DAEMONS, "outputs/.keep": ""})
    run = submit(workspace, target, src, arguments=["linger"])
    pids = _pids(wait_until(lambda: harness.read_working_file(run, "outputs/daemons"), timeout=120))
    status = run.target.read_status(run.id)
    harness.kill_runner(run, status)
    wait_until(lambda: not run.target.runner_alive(run.id, status))
    assert run.get_status() == "Failed"  # the controller notices, and ends what the runner left
    wait_until(lambda: not any(harness.pids_alive(run, pids)), timeout=30)


def test_without_a_cgroup_the_run_works_and_says_so(workspace, target, make_tree, monkeypatch):
    if target == DOCKER_CONN_ID:  # keep the container, whose status.json is read below
        monkeypatch.setenv(f"AIRFLOW_CONN_{DOCKER_CONN_ID.upper()}", docker_connection(cleanup="never"))
    src = make_tree({"train.py": "print('trained')\n"})
    env = Environment("no-cgroup", environment_variables={"MLTRAIN_CGROUP_BASE": "/nonexistent/mltrain"})
    run = submit(workspace, target, src, environment=env)
    details = run.wait_for_completion(timeout=300)
    assert details["status"] == "Completed"
    assert "trained" in run.read_log().decode()
    status = run.target.read_status(run.id)
    assert "cgroup" not in status
    [warning] = status["warnings"]
    assert "no cgroup for this run" in warning
    assert "MLTRAIN_CGROUP_BASE=/nonexistent/mltrain is not a cgroup v2 directory" in warning
    assert "setsid" in warning
    # The runner's warning is the run's: in its details, as `mltrain runs show` and the run page show it.
    assert run.warnings == [warning] and details["warnings"] == [warning]
