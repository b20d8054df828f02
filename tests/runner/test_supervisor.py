"""The supervisor's cgroup handling, on this machine's real cgroup v2 hierarchy (skipped without one).

The end-to-end behaviour (daemons end with their run, on every target) is in
tests/targets/test_hostile_processes.py; these check the parts a target suite cannot reach: the
kernels without ``cgroup.kill``, and the check that keeps a forged ``status.json`` from pointing a
controller at processes of another cgroup.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from airflow_provider_mltrain.runner import supervisor
from airflow_provider_mltrain.runner.supervisor import Cgroup, CgroupUnavailable, cgroup_name

# Forks a new child every 10 ms for as long as it lives: a kill that is not atomic must win a race.
FORK_BOMBLET = (
    "import os, time\n"
    "while True:\n"
    "    if os.fork() == 0:\n"
    "        time.sleep(600)\n"
    "        os._exit(0)\n"
    "    time.sleep(0.01)\n"
)


@pytest.fixture
def cgroup():
    try:
        made = Cgroup.create(cgroup_name("unit-test"))
    except CgroupUnavailable as exc:
        pytest.skip(f"no cgroup can be made here: {exc}")
    yield made
    made.kill()
    made.remove()


def _start_inside(cgroup: Cgroup, code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code], preexec_fn=cgroup.enter, start_new_session=True, close_fds=True
    )


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_without_cgroup_kill_freezing_ends_a_forking_tree(cgroup, monkeypatch):
    proc = _start_inside(cgroup, FORK_BOMBLET)
    _wait_for(lambda: len(cgroup.pids()) >= 5)
    real_exists = os.path.exists
    # A kernel before 5.14: no cgroup.kill file.
    monkeypatch.setattr(os.path, "exists", lambda p: not p.endswith("cgroup.kill") and real_exists(p))
    cgroup.kill()
    proc.wait(timeout=30)
    assert cgroup.pids() == []
    with open(os.path.join(cgroup.path, "cgroup.freeze")) as f:
        assert f.read().strip() == "0"  # thawed again, so it can be removed or reused


def test_a_forged_status_cannot_point_the_controller_at_another_cgroup(cgroup):
    proc = _start_inside(cgroup, "import time; time.sleep(600)")
    try:
        _wait_for(lambda: cgroup.pids() == [proc.pid])
        # The script can write status.json: another run's (or any) cgroup is refused.
        forged = {"cgroup": cgroup.path}
        assert supervisor.kill_recorded_cgroup(forged, "some-other-run") is False
        assert supervisor.kill_recorded_cgroup({"cgroup": "/proc"}, "unit-test") is False
        assert proc.poll() is None
        # Its own run's recorded cgroup is ended, and removed.
        assert supervisor.kill_recorded_cgroup(forged, "unit-test") is True
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert not os.path.exists(cgroup.path)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_base_outside_the_cgroup_file_system_is_refused(tmp_path):
    with pytest.raises(CgroupUnavailable, match="is not a cgroup v2 directory"):
        Cgroup.create(cgroup_name("unit-test"), str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_mount_points_with_spaces_are_decoded(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "41 31 0:38 / /mnt/cg\\040two rw,relatime shared:9 - cgroup2 cgroup2 rw\n"
    )
    assert supervisor.cgroup2_mounts(str(mountinfo)) == ["/mnt/cg two"]


def test_the_mlflow_run_id_is_one_mlflow_accepts():
    mlflow_run_id = supervisor.mlflow_run_id
    mlflow_rule = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")  # mlflow.utils.validation._RUN_ID_REGEX
    assert mlflow_run_id("suite_1796098674_1f14deb8") == "suite_1796098674_1f14deb8"
    assert mlflow_run_id("nightly.train:2026-01-01T00+00") == "nightly_train_2026-01-01T00_00"
    for odd in ("_x", "é" * 300, "a/b c", "-"):
        assert mlflow_rule.match(mlflow_run_id(odd)), odd


# A launcher that holds a lock while it forks the supervisor (as remote.py would, were it careless).
LAUNCHER = """
import fcntl, json, os, sys
from airflow_provider_mltrain.runner import supervisor
held = open(sys.argv[2], "a+")
fcntl.flock(held.fileno(), fcntl.LOCK_SH)
print(json.dumps({"problem": supervisor.detach(sys.argv[1]), "launcher": os.getpid()}), flush=True)
"""


def test_a_supervisor_forked_by_its_launcher_is_detached_and_inherits_no_descriptor(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "snapshot").mkdir(parents=True)
    (run_dir / "snapshot" / "train.py").write_text(
        "import time\nprint('started', flush=True)\ntime.sleep(4)\n"
    )
    (run_dir / "run.json").write_text('{"run_id": "r1", "script": "train.py", "arguments": []}')
    lock = tmp_path / "launcher.lock"
    out = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(run_dir), str(lock)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)  # the launcher's own output went out once, only from the launcher
    assert answer["problem"] is None and out.stdout.count("launcher") == 1
    status = json.loads((run_dir / "status.json").read_text())  # claimed before detach returned
    pid = status["supervisor_pid"]
    assert pid != answer["launcher"]
    # Running: the script started (while it starts, the supervisor has exec's error pipe open).
    _wait_for(lambda: json.loads((run_dir / "status.json").read_text())["state"] == "Running")
    assert os.getsid(pid) == pid  # a session of its own: no hangup from the launcher's
    fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert fds[0] == os.devnull
    assert fds[1] == fds[2] == str(run_dir / "supervisor.log")
    assert not [t for t in fds.values() if t.startswith(("pipe:", "socket:")) or t == str(lock)], fds
    # The launcher's lock went with the launcher, while the run goes on.
    with open(lock, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    _wait_for(lambda: json.loads((run_dir / "status.json").read_text())["state"] == "Completed")
    assert (run_dir / "logs" / "std_log.txt").read_text() == "started\n"


def test_the_supervisor_starts_without_socket_or_shutil(tmp_path):
    """Every run's start pays for the supervisor's imports: the host name comes from uname (what
    gethostname returns), and shutil is imported only to move files a script left."""
    runner = os.path.dirname(supervisor.__file__)
    code = (
        f"import sys; sys.path.insert(0, {runner!r}); import supervisor; "
        "print(sorted({'socket', 'shutil', 'tarfile'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
    import socket

    (tmp_path / "run.json").write_text(json.dumps({"run_id": "r1"}))
    assert supervisor.Supervisor(str(tmp_path)).status["host"] == socket.gethostname()
