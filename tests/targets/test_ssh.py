"""The SSH target's own behaviour and faults, against the real sshd of tests/services/sshd.sh.

The shared suite (test_target_suite.py) covers runs end to end; here: incremental upload, one
transport per wait, host keys, credentials, remote Python, a full remote disk, sshd restarts,
controllers that die, shell metacharacters, cleanup and pruning.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import paramiko
import pytest

from airflow_provider_mltrain import Environment, Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.core.compute import RunSpec
from airflow_provider_mltrain.core.environment import EnvironmentBuildFailed, InvalidEnvironment
from airflow_provider_mltrain.core.errors import (
    HostKeyRejected,
    InvalidRunConfig,
    TargetAuthenticationFailed,
    TargetError,
    TargetUnreachable,
)
from airflow_provider_mltrain.targets import ssh as ssh_target
from airflow_provider_mltrain.targets.ssh import SSHSettings, SSHTarget
from tests.targets.harnesses.ssh import connection_json, require_ssh
from tests.targets.suite import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def env():
    return require_ssh()


@pytest.fixture
def settings(env):
    """Settings for the test sshd, with a remote root of this test's own (removed afterwards)."""
    root = f"~/mltrain-tests/{secrets.token_hex(6)}"
    s = SSHSettings(
        host=env["HOST"],
        port=int(env["PORT"]),
        username=env["USER"],
        key_file=env["KEY_FILE"],
        known_hosts=env["KNOWN_HOSTS"],
        remote_root=root,
        reconnect_timeout=30.0,
    )
    yield s
    cleanup = SSHTarget("cleanup", s)
    try:
        cleanup._run(["rm", "-rf", "--", cleanup.root])
    finally:
        cleanup.close()


@pytest.fixture
def target(settings):
    t = SSHTarget("vm", settings)
    yield t
    t.close()


def submit(workspace, target, src, script="train.py", **kwargs):
    return Experiment(workspace, "ssh").submit(ScriptRunConfig(src, script, compute_target=target, **kwargs))


def test_upload_progress_is_reported_per_bundle(workspace, target, make_tree):
    src = make_tree({"train.py": "print('ok')\n", "big.bin": os.urandom(9 * 1024 * 1024), "a.txt": "a"})
    reports: list[tuple[int, int]] = []
    target.upload_progress = lambda done, total: reports.append((done, total))
    submit(workspace, target, src).wait_for_completion()
    total = target.last_upload["bytes"]
    assert len(reports) == 2 and reports[-1] == (total, total)  # the big blob alone, then a bundle
    assert reports[0][0] < total


def server_fingerprint(env) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", env["HOST_KEY_FILE"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- uploads ---------------------------------------------------------------------------------------


def test_resubmission_sends_only_the_changed_blob(workspace, target, make_tree):
    src = make_tree(
        {
            "train.py": "print(open('data/a.txt').read())\n",
            "data/a.txt": "version 1",
            "data/b.txt": "b" * 1000,
            "lib/util.py": "X = 1\n",
            "big.bin": os.urandom(200_000),
        }
    )
    first = submit(workspace, target, src)
    assert target.last_upload["blobs"] == 5
    first.wait_for_completion()
    assert "version 1" in first.get_log_tail()

    submit(workspace, target, src).wait_for_completion()
    assert target.last_upload == {"blobs": 0, "bytes": 0}

    (src / "data/a.txt").write_text("version 2!")
    third = submit(workspace, target, src)
    assert target.last_upload == {"blobs": 1, "bytes": len("version 2!")}
    third.wait_for_completion()
    assert "version 2!" in third.get_log_tail()


def test_one_transport_serves_a_whole_submit_and_wait(workspace, target, make_tree):
    src = make_tree(
        {"train.py": "import time\nfor i in range(10):\n    print(i, flush=True)\n    time.sleep(0.2)\n"}
    )
    before = target.connects
    run = submit(workspace, target, src)
    lines: list[str] = []
    run.wait_for_completion(log_callback=lines.append, poll_interval=0.2)
    assert lines == [str(i) for i in range(10)]
    assert target.connects - before <= 1


def test_start_of_an_existing_run_id_returns_false_and_runs_nothing(workspace, target, make_tree):
    src = make_tree({"train.py": "print('ran once')\n"})
    run = submit(workspace, target, src)
    run.wait_for_completion()
    snapshot = workspace.snapshots.take(src)
    spec = RunSpec(run_id=run.id, experiment="ssh", script="train.py", arguments=(), snapshot_id=snapshot.id)
    assert target.start(spec, snapshot, workspace.snapshots) is False
    assert target.last_upload["blobs"] == 0
    assert target.last_start["calls"] == 1  # the existing run is found by the start call itself
    assert run.read_log().decode().count("ran once") == 1


# -- delta manifests -------------------------------------------------------------------------------

# Prints the working copy as the run sees it: files by content hash and mode, symlinks, empty folders.
LIST_TREE = """
import hashlib, json, os
out = {"files": {}, "symlinks": {}, "dirs": []}
for folder, dirs, files in os.walk("."):
    rel = os.path.relpath(folder, ".").replace(os.sep, "/")
    if rel.split("/")[0] in ("outputs", "logs"):
        continue
    for name in list(dirs):
        path = os.path.join(folder, name)
        if os.path.islink(path):
            dirs.remove(name)
            files.append(name)
    if rel != "." and not dirs and not files:
        out["dirs"].append(rel)
    for name in files:
        path = os.path.join(folder, name)
        key = os.path.normpath(path).replace(os.sep, "/")
        if os.path.islink(path):
            out["symlinks"][key] = os.readlink(path)
        else:
            data = open(path, "rb").read()
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            out["files"][key] = [hashlib.sha256(data).hexdigest(), mode]
print("TREE " + json.dumps(out, sort_keys=True))
"""


def _tree_of(run) -> dict:
    line = next(x for x in run.read_log().decode().splitlines() if x.startswith("TREE "))
    return json.loads(line[len("TREE ") :])


def _expected_tree(snapshot) -> dict:
    return {
        "files": {f.path: [f.hash, f.mode] for f in snapshot.files},
        "symlinks": dict(snapshot.symlinks),
        "dirs": sorted(snapshot.dirs),
    }


def _count_remote_processes(monkeypatch, target: SSHTarget) -> list[list[str]]:
    calls: list[list[str]] = []
    run = target._run

    def counting(argv, **kwargs):
        calls.append(argv)
        return run(argv, **kwargs)

    monkeypatch.setattr(target, "_run", counting)
    return calls


def test_one_file_changed_in_2000_sends_one_blob_and_a_small_start(workspace, target, make_tree):
    files = {f"data/d{i % 20:02}/f{i:04}.txt": f"file {i}\n" for i in range(1999)}
    files["train.py"] = "print(open('data/d07/f0007.txt').read())\n"
    src = make_tree(files)
    submit(workspace, target, src).wait_for_completion()
    full = workspace.snapshots.take(src)
    # First: the whole manifest, answered with the missing blobs; once they are there, the start
    # is asked again against the manifest the remote kept.
    assert target.last_start["calls"] == 2 and target.last_upload["blobs"] == 2000
    (src / "data/d07/f0007.txt").write_text("changed\n")
    run = submit(workspace, target, src)
    assert target.last_upload["blobs"] == 1
    assert target.last_start["calls"] == 1 and target.last_start["delta_manifest"] == 1
    manifest_bytes = len(json.dumps(full.to_dict()))
    assert target.last_start["request_bytes"] < manifest_bytes / 10, (target.last_start, manifest_bytes)
    run.wait_for_completion()
    assert "changed" in run.get_log_tail()


def test_an_unchanged_tree_starts_in_one_remote_process(workspace, target, make_tree, monkeypatch):
    src = make_tree({"train.py": "print('same')\n", "lib/a.py": "A = 1\n", "big.bin": os.urandom(100_000)})
    submit(workspace, target, src).wait_for_completion()
    calls = _count_remote_processes(monkeypatch, target)
    run = submit(workspace, target, src)
    assert target.last_upload == {"blobs": 0, "bytes": 0}
    assert [argv[4] for argv in calls] == ["start"], calls  # python -I -S RUNNER_DIR start ROOT RUN_ID
    assert target.last_start["calls"] == 1 and target.last_start["delta_manifest"] == 1
    monkeypatch.undo()
    assert run.wait_for_completion()["status"] == "Completed"


def test_the_working_copy_from_a_delta_is_the_snapshot(workspace, target, make_tree):
    src = make_tree(
        {
            "train.py": LIST_TREE,
            "keep.txt": "kept",
            "change.txt": "before",
            "remove.txt": "gone soon",
            "sub/deep/x.py": "X = 1\n",
            "run.sh": "#!/bin/sh\necho hi\n",
            "big.bin": os.urandom(100_000),
            # Unchanged files: with most files changed, the whole manifest is as small as a delta.
            **{f"same/s{i}.txt": str(i) for i in range(10)},
        }
    )
    (src / "run.sh").chmod(0o755)
    (src / "empty").mkdir()
    (src / "link-old").symlink_to("keep.txt")
    first = submit(workspace, target, src)
    first.wait_for_completion()
    assert _tree_of(first) == _expected_tree(workspace.snapshots.take(src))

    (src / "change.txt").write_text("after")
    (src / "remove.txt").unlink()
    (src / "sub/deep/added.py").write_text("ADDED = 1\n")
    (src / "link-old").unlink()
    (src / "sub/link-new").symlink_to("deep/x.py")
    (src / "big.bin").write_bytes(os.urandom(100_000))
    second = submit(workspace, target, src)
    assert target.last_start["delta_manifest"] == 1 and target.last_start["calls"] == 1
    assert target.last_upload["blobs"] == 3  # change.txt, added.py, big.bin
    second.wait_for_completion()
    snapshot = workspace.snapshots.take(src)
    tree = _tree_of(second)
    assert tree == _expected_tree(snapshot)
    assert "remove.txt" not in tree["files"] and tree["symlinks"] == {"sub/link-new": "deep/x.py"}


def test_a_base_manifest_missing_on_the_remote_falls_back_to_the_whole_one(workspace, target, make_tree):
    src = make_tree({"train.py": "print(open('a.txt').read())\n", "a.txt": "one", "b.txt": "b"})
    submit(workspace, target, src).wait_for_completion()
    code, _out, err = target._run(["rm", "-rf", "--", posixpath.join(target.root, "manifests")])
    assert code == 0, err
    (src / "a.txt").write_text("two")
    run = submit(workspace, target, src)
    assert target.last_start["calls"] == 2 and target.last_start["delta_manifest"] == 0
    assert target.last_upload["blobs"] == 1
    run.wait_for_completion()
    assert "two" in run.get_log_tail()
    again = submit(workspace, target, src)  # the remote holds the new manifest again
    assert target.last_start["calls"] == 1 and target.last_start["delta_manifest"] == 1
    assert again.wait_for_completion()["status"] == "Completed"


def test_blobs_removed_after_the_base_ran_travel_again(workspace, target, make_tree):
    src = make_tree({"train.py": "print(open('a.txt').read())\n", "a.txt": "from the cache"})
    submit(workspace, target, src).wait_for_completion()
    code, _out, err = target._run(["rm", "-rf", "--", posixpath.join(target.root, "blobs")])
    assert code == 0, err
    run = submit(workspace, target, src)
    assert target.last_upload["blobs"] == 2
    # missing blobs answered without creating the run, then one more start against the same manifest
    assert target.last_start["calls"] == 2 and target.last_start["delta_manifest"] == 1
    run.wait_for_completion()
    assert "from the cache" in run.get_log_tail()


def test_prune_removes_old_manifests_and_a_later_start_recovers(workspace, target, make_tree):
    src = make_tree({"train.py": "print(open('a.txt').read())\n", "a.txt": "first"})
    submit(workspace, target, src).wait_for_completion()
    manifests = posixpath.join(target.root, "manifests")
    assert len(_remote_listdir(target, manifests)) == 1
    assert target.prune_blobs(days=1)["removed"] == 0 and len(_remote_listdir(target, manifests)) == 1
    pruned = target.prune_blobs(days=0)
    assert pruned["removed"] == 2 and _remote_listdir(target, manifests) == []
    (src / "a.txt").write_text("second")
    run = submit(workspace, target, src)
    assert target.last_upload["blobs"] == 2  # both blobs were pruned: both travel again
    run.wait_for_completion()
    assert "second" in run.get_log_tail()
    assert len(_remote_listdir(target, manifests)) == 1


def test_prune_removes_cached_inputs_no_recent_or_unfinished_run_uses(workspace, target, make_tree, tmp_path):
    """Inputs sent to the VM are cached by content under <root>/inputs/; a prune deletes the ones
    no submission used in its window, but never one a run still names (keep_inputs), and the next
    run that needs a pruned input sends it again."""
    from airflow_provider_mltrain.core.inputs import keys_in_use

    data = tmp_path / "data"
    data.mkdir()
    (data / "x.csv").write_text("1,2\n")
    src = make_tree({"train.py": "import os\nprint(open(os.environ['MLTRAIN_INPUT_D'] + '/x.csv').read())\n"})
    run = submit(workspace, target, src, inputs={"d": str(data)})
    assert run.wait_for_completion()["status"] == "Completed", run.get_log_tail()
    inputs = posixpath.join(target.root, "inputs")
    (key,) = _remote_listdir(target, inputs)
    assert keys_in_use(workspace.store.list_runs(), days=1) == {key}

    assert target.prune_cache(days=1, keep_inputs=())["inputs_removed"] == 0  # used today
    kept = target.prune_cache(days=0, keep_inputs={key})  # too old, but a run names it
    assert kept["inputs_removed"] == 0 and _remote_listdir(target, inputs) == [key]
    assert keys_in_use(workspace.store.list_runs(), days=0) == set()  # the run ended: no longer
    pruned = target.prune_cache(days=0, keep_inputs=())
    assert pruned["inputs_removed"] == 1 and pruned["inputs_bytes"] == len("1,2\n")
    assert _remote_listdir(target, inputs) == []

    again = submit(workspace, target, src, inputs={"d": str(data)})
    assert target.last_input_upload == {"inputs": 1, "bytes": len("1,2\n")}
    assert again.wait_for_completion()["status"] == "Completed"
    assert "1,2" in again.get_log_tail()
    third = submit(workspace, target, src, inputs={"d": str(data)})  # held again: a use, nothing sent
    assert target.last_input_upload == {"inputs": 0, "bytes": 0}
    third.wait_for_completion()


# -- reused working copies ------------------------------------------------------------------------

# Prints the working copy exactly: files by content hash and permission bits, symlinks, empty
# folders, and anything else there (a FIFO, say) by name. With the argument "vandal" it first does
# what a script may do to its working copy: rewrite files in place (one with its mtime put back),
# chmod, delete, link, add files, folders and links, make a folder read-only.
EXACT_TREE = """
import hashlib, json, os, stat, sys
if sys.argv[1:] == ["vandal"]:
    os.chmod("big.bin", 0o644)
    with open("big.bin", "r+b") as f:
        f.write(b"X" * 10)
    with open("config.txt", "r+") as f:
        f.write("Z")
    st = os.stat("same.txt")
    with open("same.txt", "w") as f:
        f.write("same")
    os.utime("same.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod("run.sh", 0o600)
    os.remove("gone.txt")
    os.link("link-me.txt", "hard.txt")
    os.makedirs("extra/deeper")
    open("extra/deeper/x", "w").close()
    open("stray.txt", "w").close()
    os.symlink("/etc/passwd", "sneaky")
    os.mkfifo("fifo")
    open("sub/new.txt", "w").close()
    os.chmod("sub", 0o500)
    print("vandalized")
out = {"files": {}, "symlinks": {}, "dirs": [], "other": []}
for folder, dirs, files in os.walk("."):
    rel = os.path.relpath(folder, ".").replace(os.sep, "/")
    if rel.split("/")[0] in ("outputs", "logs"):
        continue
    for name in list(dirs):
        if os.path.islink(os.path.join(folder, name)):
            dirs.remove(name)
            files.append(name)
    if rel != "." and not dirs and not files:
        out["dirs"].append(rel)
    for name in files:
        path = os.path.join(folder, name)
        key = os.path.normpath(path).replace(os.sep, "/")
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            out["symlinks"][key] = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                out["files"][key] = [hashlib.sha256(f.read()).hexdigest(), stat.S_IMODE(st.st_mode)]
        else:
            out["other"].append(key)
print("TREE " + json.dumps(out, sort_keys=True))
"""


def _exact_expected(snapshot) -> dict:
    return {**_expected_tree(snapshot), "other": []}


def _check_blob_cache(target: SSHTarget) -> list[str]:
    """The blobs in the remote cache whose bytes do not hash to their name."""
    code = (
        "import hashlib, os, sys\n"
        "root = os.path.join(sys.argv[1], 'blobs')\n"
        "for sub in sorted(os.listdir(root)):\n"
        "    if len(sub) != 2: continue\n"
        "    for name in os.listdir(os.path.join(root, sub)):\n"
        "        data = open(os.path.join(root, sub, name), 'rb').read()\n"
        "        if hashlib.sha256(data).hexdigest() != sub + name: print(sub + name)\n"
    )
    rc, out, err = target._run(["python3", "-c", code, target.root])
    assert rc == 0, err
    return out.decode().split()


def test_a_reused_working_copy_is_the_snapshot(workspace, target, make_tree):
    src = make_tree(
        {
            "train.py": EXACT_TREE,
            "keep.txt": "kept",
            "change.txt": "before",
            "remove.txt": "gone soon",
            "chmod.sh": "#!/bin/sh\necho hi\n",
            "unchmod.sh": "#!/bin/sh\necho ho\n",
            "sub/deep/x.py": "X = 1\n",
            "old/only.txt": "a folder that goes",
            "swap": "a file that becomes a folder",
            "big.bin": os.urandom(100_000),
        }
    )
    (src / "unchmod.sh").chmod(0o755)
    (src / "empty-old").mkdir()
    (src / "link-old").symlink_to("keep.txt")
    first = submit(workspace, target, src)
    assert target.last_start["reused_worktree"] == 0
    first.wait_for_completion()  # collected: its working copy waits for the next start
    assert _tree_of(first) == _exact_expected(workspace.snapshots.take(src))

    (src / "change.txt").write_text("after")
    (src / "remove.txt").unlink()
    (src / "chmod.sh").chmod(0o755)
    (src / "unchmod.sh").chmod(0o644)
    (src / "sub/deep/added.py").write_text("ADDED = 1\n")
    shutil.rmtree(src / "old")
    (src / "swap").unlink()
    (src / "swap").mkdir()
    (src / "swap/inner.txt").write_text("inside")
    (src / "empty-old").rmdir()
    (src / "empty-new/deeper").mkdir(parents=True)
    (src / "link-old").unlink()
    (src / "sub/link-new").symlink_to("deep/x.py")
    second = submit(workspace, target, src)
    assert target.last_start["reused_worktree"] == 1
    # Only what changed is written: change.txt, added.py, swap/inner.txt (modes are set in place).
    assert target.last_start["files_copied"] == 3, target.last_start
    second.wait_for_completion()
    assert _tree_of(second) == _exact_expected(workspace.snapshots.take(src))
    # The third start of the same tree reuses the second's copy and copies nothing.
    third = submit(workspace, target, src)
    assert target.last_start["reused_worktree"] == 1 and target.last_start["files_copied"] == 0
    third.wait_for_completion()
    assert _tree_of(third) == _exact_expected(workspace.snapshots.take(src))


def test_a_run_that_rewrites_its_working_copy_changes_neither_the_cache_nor_the_next_run(
    workspace, target, make_tree
):
    src = make_tree(
        {
            "train.py": EXACT_TREE,
            "big.bin": os.urandom(200_000),
            "config.txt": "lr=0.1\n",
            "same.txt": "same",
            "run.sh": "#!/bin/sh\n",
            "gone.txt": "deleted by the script",
            "link-me.txt": "hard-linked by the script",
            "sub/keep.txt": "in a folder made read-only",
        }
    )
    (src / "run.sh").chmod(0o755)
    vandal = submit(workspace, target, src, arguments=["vandal"])
    assert vandal.wait_for_completion()["status"] == "Completed"
    assert "vandalized" in vandal.get_log_tail()
    assert _check_blob_cache(target) == []
    expected = _exact_expected(workspace.snapshots.take(src))
    after = submit(workspace, target, src)
    assert target.last_start["reused_worktree"] == 1
    after.wait_for_completion()
    assert _tree_of(after) == expected
    # Also when the vandal's working copy is taken before its run was collected.
    again = submit(workspace, target, src, arguments=["vandal"])
    wait_until(lambda: "vandalized" in again.read_log().decode(), timeout=60)
    wait_until(lambda: (target.read_status(again.id) or {}).get("state") == "Completed", timeout=60)
    wait_until(lambda: not target.runner_alive(again.id, None), timeout=60)
    last = submit(workspace, target, src)
    assert target.last_start["reused_worktree"] == 1
    last.wait_for_completion()
    assert _tree_of(last) == expected
    assert _check_blob_cache(target) == []


def test_a_running_runs_working_copy_is_never_taken(workspace, target, make_tree, tmp_path):
    src = make_tree({"lib.py": "X = 1\n", "train.py": "import time\ntime.sleep(6)\n" + EXACT_TREE})
    expected = _exact_expected(workspace.snapshots.take(src))
    running = submit(workspace, target, src)
    wait_until(lambda: running.get_status() == "Running", timeout=60)
    other = submit(workspace, target, src)
    assert target.last_start["reused_worktree"] == 0
    assert running.wait_for_completion()["status"] == "Completed"
    assert other.wait_for_completion()["status"] == "Completed"
    assert _tree_of(running) == expected and _tree_of(other) == expected


def test_concurrent_submissions_from_two_controllers_each_get_a_whole_working_copy(
    workspace, settings, make_tree, tmp_path
):
    src = make_tree({"lib.py": "X = 1\n", "train.py": EXACT_TREE, "data.bin": os.urandom(80_000)})
    # Two controllers: two workspaces, two connections (settings that differ in nothing that matters).
    controllers = [
        (workspace, SSHTarget("vm", settings)),
        (Workspace(tmp_path / "ws2"), SSHTarget("vm", replace(settings, conn_timeout=11.0))),
    ]
    for ws, t in controllers:  # each leaves an ended, collected run: two working copies to take
        submit(ws, t, src).wait_for_completion()
    (src / "lib.py").write_text("X = 2\n")
    barrier = threading.Barrier(2)
    runs: list = [None, None]
    reused = [0, 0]

    def go(i: int) -> None:
        ws, t = controllers[i]
        barrier.wait()
        runs[i] = submit(ws, t, src)
        reused[i] = t.last_start["reused_worktree"]

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    expected = _exact_expected(workspace.snapshots.take(src))
    for run in runs:
        assert run is not None and run.wait_for_completion()["status"] == "Completed"
        assert _tree_of(run) == expected
    assert sum(reused) >= 1, reused
    for _ws, t in controllers:
        t.close()


def test_the_interpreter_probe_is_remembered_until_the_interpreter_changes(
    workspace, settings, make_tree, monkeypatch
):
    helper = SSHTarget("helper", replace(settings, conn_timeout=12.0))
    venv = posixpath.join(helper.root, "venv")
    rc, _out, err = helper._run(["python3", "-m", "venv", "--without-pip", venv])
    assert rc == 0, err
    s = replace(settings, interpreter_path=f"{venv}/bin/python3")
    notes = workspace.root / "targets" / "ssh-vm"
    src = make_tree({"train.py": "import sys\nprint('on', sys.executable)\n"})

    def new_worker() -> tuple[SSHTarget, list[list[str]]]:
        """A new worker process: its own connection and target; the workspace's notes."""
        ssh_target._pool.clear()
        t = SSHTarget("vm", s, notes)
        return t, _count_remote_processes(monkeypatch, t)

    def probes(calls: list[list[str]]) -> int:
        return sum(1 for argv in calls if "-c" in argv)

    first, calls = new_worker()
    submit(workspace, first, src)
    assert probes(calls) == 1
    first.close()
    second, calls = new_worker()
    run = submit(workspace, second, src)
    assert [argv[4] for argv in calls] == ["start"], calls  # no probe: one remote Python
    assert (
        run.wait_for_completion()["status"] == "Completed" and f"on {venv}/bin/python3" in run.get_log_tail()
    )
    second.close()
    # The venv rebuilt (its python3 link made again, in a later second: SFTP times are whole
    # seconds): asked again.
    rc, _out, err = helper._run(
        ["sh", "-c", 'sleep 1.1 && rm -rf -- "$1" && python3 -m venv --without-pip "$1"', "sh", venv]
    )
    assert rc == 0, err
    third, calls = new_worker()
    assert submit(workspace, third, src).wait_for_completion()["status"] == "Completed"
    assert probes(calls) == 1
    # The interpreter gone under a target that knows it: its next remote call asks again, and says so.
    rc, _out, err = helper._run(["rm", "-rf", "--", venv])
    assert rc == 0, err
    with pytest.raises(InvalidEnvironment, match="interpreter_path"):
        third.runner_alive("any", None)
    fourth, calls = new_worker()
    with pytest.raises(InvalidEnvironment, match="interpreter_path"):
        submit(workspace, fourth, src)
    fourth.close()
    third.close()
    helper.close()


# -- connection faults -----------------------------------------------------------------------------


def test_connection_refused_names_host_and_port(workspace, settings, make_tree):
    port = free_port()
    target = SSHTarget("vm", replace(settings, port=port))
    with pytest.raises(TargetUnreachable) as err:
        submit(workspace, target, make_tree({"train.py": ""}))
    assert f"127.0.0.1:{port}" in str(err.value) and "refused" in str(err.value)
    assert workspace.store.list_runs() == []


def test_a_server_that_never_answers_times_out_naming_host_and_port(workspace, settings, make_tree):
    with socket.socket() as silent:  # accepts TCP connections (backlog) but never speaks SSH
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        target = SSHTarget("vm", replace(settings, port=port, conn_timeout=1.0))
        with pytest.raises(TargetUnreachable) as err:
            submit(workspace, target, make_tree({"train.py": ""}))
    assert f"127.0.0.1:{port}" in str(err.value) and "handshake" in str(err.value)
    assert workspace.store.list_runs() == []


def test_authentication_failure_is_clear(workspace, settings, make_tree, tmp_path):
    stranger = tmp_path / "stranger_rsa"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(stranger))
    target = SSHTarget("vm", replace(settings, key_file=str(stranger)))
    with pytest.raises(TargetAuthenticationFailed) as err:
        submit(workspace, target, make_tree({"train.py": ""}))
    message = str(err.value)
    assert "refused the login of 'mltrain-vm'" in message and str(stranger) in message
    assert "authorized_keys" in message
    assert workspace.store.list_runs() == []


def test_unknown_host_key_is_refused_with_its_fingerprint(env, workspace, settings, make_tree, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    target = SSHTarget("vm", replace(settings, known_hosts=str(empty)))
    with pytest.raises(HostKeyRejected) as err:
        submit(workspace, target, make_tree({"train.py": ""}))
    message = str(err.value)
    assert "unknown" in message and server_fingerprint(env) in message
    assert f"ssh-keyscan -p {env['PORT']} 127.0.0.1" in message
    assert workspace.store.list_runs() == []


def test_changed_host_key_is_refused_with_both_fingerprints(env, workspace, settings, make_tree, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(
        f"[127.0.0.1]:{env['PORT']} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n"
    )
    other_fp = subprocess.run(
        ["ssh-keygen", "-lf", str(other)], capture_output=True, text=True
    ).stdout.split()[1]
    target = SSHTarget("vm", replace(settings, known_hosts=str(known)))
    with pytest.raises(HostKeyRejected) as err:
        submit(workspace, target, make_tree({"train.py": ""}))
    message = str(err.value)
    assert "CHANGED" in message and server_fingerprint(env) in message and other_fp in message
    assert workspace.store.list_runs() == []


def test_host_key_from_the_connection(env, workspace, settings, make_tree, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host_pub = Path(env["HOST_KEY_FILE"]).read_text()
    good = SSHTarget("vm", replace(settings, known_hosts=str(empty), host_key=host_pub))
    run = submit(workspace, good, make_tree({"train.py": "print('trusted')\n"}))
    assert run.wait_for_completion()["status"] == "Completed"

    wrong_pub = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_pub)], check=True)
    bad = SSHTarget(
        "vm2", replace(settings, known_hosts=str(empty), host_key=wrong_pub.with_suffix(".pub").read_text())
    )
    with pytest.raises(HostKeyRejected) as err:
        submit(workspace, bad, make_tree({"train.py": ""}))
    assert server_fingerprint(env) in str(err.value) and "host_key" in str(err.value)


def test_no_python_on_the_remote(workspace, settings, make_tree):
    target = SSHTarget("vm", replace(settings, interpreter_path="/opt/nowhere/python3"))
    with pytest.raises(InvalidEnvironment) as err:
        submit(workspace, target, make_tree({"train.py": ""}))
    message = str(err.value)
    assert "'/opt/nowhere/python3'" in message and "interpreter_path" in message and "127.0.0.1" in message
    assert workspace.store.list_runs() == []


def test_environment_interpreter_missing_on_the_remote(workspace, target, make_tree):
    env = Environment()
    env.python.interpreter_path = "/opt/nowhere/python3"
    with pytest.raises(InvalidEnvironment) as err:
        submit(workspace, target, make_tree({"train.py": ""}), environment=env)
    assert "'/opt/nowhere/python3'" in str(err.value) and "environment 'default'" in str(err.value)
    assert workspace.store.list_runs() == []


def test_bad_settings_are_refused_before_connecting(settings):
    with pytest.raises(InvalidRunConfig, match="cleanup"):
        replace(settings, cleanup="sometimes")
    with pytest.raises(InvalidRunConfig, match="port"):
        replace(settings, port=70000)


def test_unknown_target_option_is_refused(workspace, target, make_tree):
    with pytest.raises(InvalidRunConfig, match="cleanup"):
        submit(workspace, target, make_tree({"train.py": ""}), target_options={"gpus": 2})
    assert workspace.store.list_runs() == []


# -- remote disk full ------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(env):
    """A 1 MiB tmpfs in the remote user's home: a real full disk (needs root to mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    home = Path(os.path.expanduser(f"~{env['USER']}"))
    mount = home / f"tiny-{secrets.token_hex(4)}"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        shutil.chown(mount, env["USER"], env["USER"])
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()


def test_remote_disk_full_keeps_no_partial_blob(workspace, settings, tiny_disk, make_tree):
    target = SSHTarget("vm", replace(settings, remote_root=str(tiny_disk / "root")))
    src = make_tree({"train.py": "print('small')\n", "weights.bin": os.urandom(3 * 1024 * 1024)})
    with pytest.raises(TargetError) as err:
        submit(workspace, target, src)
    message = str(err.value)
    assert "disk is full" in message and "No partial blob was kept" in message
    # Blobs uploaded before the disk filled are whole (their bytes hash to their name); no partial
    # upload is left, not even under a temporary name.
    blobs = [p for p in (tiny_disk / "root" / "blobs").rglob("*") if p.is_file()]
    assert all(p.parent.name + p.name == hashlib.sha256(p.read_bytes()).hexdigest() for p in blobs)
    assert len(blobs) < 2
    (record,) = workspace.store.list_runs()
    assert record["status"] == "Failed" and "disk is full" in record["error"]
    # With the big file left out the same remote root works: nothing broken was left behind.
    (src / ".mltrainignore").write_text("weights.bin\n")
    assert submit(workspace, target, src).wait_for_completion()["status"] == "Completed"


# -- sshd restart, dead controllers ----------------------------------------------------------------


def _sshd_children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


class OwnSSHD:
    """An sshd of one test's own beside the shared one of tests/services/sshd.sh: its configuration,
    host key and user, on another port. Restarting it cuts this test's sessions only, not those of
    the tests running meanwhile in other xdist workers."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.pid_file = folder / "sshd.pid"
        self.log = folder / "sshd.log"
        shared = Path(os.environ["MLTRAIN_TEST_SSH_CONFIG"])
        lines = [
            line
            for line in shared.read_text().splitlines()
            if line.split(" ", 1)[0] not in ("Port", "PidFile")
        ]
        self.config = folder / "sshd_config"
        self.config.write_text("\n".join([f"Port {self.port}", f"PidFile {self.pid_file}", *lines]) + "\n")
        host_key = " ".join(Path(env["HOST_KEY_FILE"]).read_text().split()[:2])
        self.known_hosts = folder / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_key}\n")
        # sshd.sh runs sshd under a name of its own: its PAM service, which moves sessions into the
        # cgroup delegated to the VM user. The same name here, so the same PAM service applies.
        named = shared.parent / f"mltrain-test-sshd-{env['PORT']}"
        self.binary = str(named if named.exists() else Path("/usr/sbin/sshd"))

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def start(self) -> None:
        subprocess.run([self.binary, "-f", str(self.config), "-E", str(self.log)], check=True, timeout=60)
        wait_until(self.answers, timeout=60)

    def stop(self) -> None:
        """Stop it and every session it serves (by pid)."""
        listener = int(self.pid_file.read_text())
        children = _sshd_children(listener)
        os.kill(listener, signal.SIGTERM)
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not Path(f"/proc/{listener}").exists(), timeout=30)

    def restart(self) -> None:
        self.stop()
        time.sleep(1.0)  # the controller sees "connection refused" for a while
        self.start()


@pytest.fixture
def own_sshd(env, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("an sshd of the test's own needs root")
    sshd = OwnSSHD(env, tmp_path)
    sshd.start()
    yield sshd
    if sshd.pid_file.exists():
        sshd.stop()


def test_sshd_restart_mid_run_the_wait_reconnects_with_the_whole_log(
    workspace, settings, own_sshd, make_tree
):
    target = SSHTarget("vm", replace(settings, port=own_sshd.port, known_hosts=str(own_sshd.known_hosts)))
    src = make_tree(
        {
            "train.py": "import time\nfor i in range(30):\n"
            "    print('line', i, flush=True)\n    time.sleep(0.2)\n"
        }
    )
    run = submit(workspace, target, src)
    before = target.connects
    lines: list[str] = []
    restarted = threading.Event()

    def on_line(line: str) -> None:
        lines.append(line)
        if line == "line 3" and not restarted.is_set():
            restarted.set()
            own_sshd.restart()  # inside the wait: its next read finds the connection gone

    try:
        details = run.wait_for_completion(log_callback=on_line, poll_interval=0.2)
    finally:
        target.close()
    assert restarted.is_set()
    assert details["status"] == "Completed"
    assert lines == [f"line {i}" for i in range(30)]
    assert target.connects > before  # it did reconnect


def test_controller_killed_mid_run_a_new_one_reattaches(workspace, settings, make_tree, monkeypatch, env):
    monkeypatch.setenv("AIRFLOW_CONN_SSH_VM_REATTACH", connection_json(env, remote_root=settings.remote_root))
    src = make_tree(
        {
            "train.py": "import os, time\nprint('started', os.getpid(), flush=True)\ntime.sleep(8)\n"
            "print('finished', flush=True)\n"
        }
    )
    code = textwrap.dedent(f"""
        from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
        ws = Workspace({str(workspace.root)!r})
        config = ScriptRunConfig({str(src)!r}, "train.py", compute_target="ssh_vm_reattach")
        run = Experiment(ws, "ssh").submit(config)
        print("RUN_ID=" + run.id, flush=True)
        run.wait_for_completion(show_output=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        run_id = next(line for line in proc.stdout if line.startswith("RUN_ID="))[len("RUN_ID=") :].strip()
        run = Workspace(workspace.root).get_run(run_id)
        wait_until(lambda: "started" in run.read_log().decode(), timeout=60)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    run = Workspace(workspace.root).get_run(run_id)
    assert run.get_status() == "Running"
    assert run.wait_for_completion()["status"] == "Completed"
    log = run.read_log().decode()
    assert log.count("started") == 1 and "finished" in log


# What a remote process holds: its command line, session id and open descriptors (by their targets).
PROC_INFO = """
import json, os, sys
pid = int(sys.argv[1])
proc = "/proc/%d/" % pid
print(json.dumps({
    "cmdline": open(proc + "cmdline", "rb").read().decode().split("\\0"),
    "sid": os.getsid(pid),
    "fds": {int(fd): os.readlink(proc + "fd/" + fd) for fd in os.listdir(proc + "fd")},
}))
"""


def test_the_supervisor_forked_by_the_start_is_detached_and_outlives_the_connection(
    workspace, target, make_tree
):
    train = "import time\nprint('started', flush=True)\ntime.sleep(4)\nprint('finished', flush=True)\n"
    src = make_tree({"train.py": train})
    run = submit(workspace, target, src)
    pid = target.read_status(run.id)["supervisor_pid"]  # claimed before the start answered
    # Running: the script started (while it starts, the supervisor has exec's error pipe open).
    wait_until(lambda: target.read_status(run.id)["state"] == "Running", timeout=60)
    code, out, err = target._run(["python3", "-c", PROC_INFO, str(pid)])
    assert code == 0, err
    info = json.loads(out)
    # Forked by remote.py start (no second interpreter), in a session of its own, holding nothing
    # of the exec channel (stdio, pipes, sockets) or of the start (the cache's locks).
    assert info["cmdline"][3:6] == [target._runner_dir(), "start", target.root], info
    assert info["sid"] == pid
    fds = {int(fd): path for fd, path in info["fds"].items()}
    assert fds[0] == "/dev/null"
    assert fds[1] == fds[2] == posixpath.join(target.run_dir(run.id), "supervisor.log")
    held = [
        p
        for p in fds.values()
        if p.startswith(("pipe:", "socket:")) or posixpath.basename(p) in ("blobs.lock", "worktrees.lock")
    ]
    assert not held, fds
    # remote.py ran from its bytecode, kept beside it
    cached = _remote_listdir(target, posixpath.join(target._runner_dir(), "__pycache__"))
    assert [name for name in cached if name.startswith("remote.")], cached
    target.close()  # the connection that started the run goes; the run goes on
    assert run.wait_for_completion()["status"] == "Completed"
    log = run.read_log().decode()
    assert log.count("started") == 1 and "finished" in log


def test_shell_metacharacters_reach_nothing_but_argv(workspace, settings, make_tree, env):
    home = os.path.expanduser(f"~{env['USER']}")
    root = f"~/mltrain-tests/odd {secrets.token_hex(3)} $(touch PWNED) `touch PWNED2`; touch PWNED3 'q\""
    target = SSHTarget("vm", replace(settings, remote_root=root))
    try:
        args = ["$(touch PWNED4)", "`id`", "a;touch PWNED5", "x' 'y", "&&", "|", "*", "~", "$HOME", "\\n"]
        src = make_tree({"train.py": "import sys\nprint(repr(sys.argv[1:]))\n"})
        run = submit(workspace, target, src, arguments=args)
        run.wait_for_completion()
        assert repr(args) in run.get_log_tail()
        assert target.root.endswith("'q\"")
        for name in ("PWNED", "PWNED2", "PWNED3", "PWNED4", "PWNED5"):
            assert not os.path.exists(os.path.join(home, name))
    finally:
        target._run(["rm", "-rf", "--", target.root])


# -- cleanup and pruning ---------------------------------------------------------------------------


def _exists(target: SSHTarget, path: str) -> bool:
    try:
        target._sftp(lambda sftp: sftp.stat(path))
    except FileNotFoundError:
        return False
    return True


@pytest.mark.parametrize(
    ("policy", "kept_after_success", "kept_after_failure"),
    [("never", True, True), ("on_success", False, True), ("always", False, False)],
)
def test_cleanup_policy(workspace, target, make_tree, policy, kept_after_success, kept_after_failure):
    ok = submit(workspace, target, make_tree({"train.py": "print(1)\n"}), target_options={"cleanup": policy})
    bad = submit(
        workspace,
        target,
        make_tree({"train.py": "raise SystemExit(2)\n"}),
        target_options={"cleanup": policy},
    )
    assert ok.wait_for_completion()["status"] == "Completed"
    assert bad.wait_for_completion(raise_on_error=False)["status"] == "Failed"
    assert _exists(target, target.run_dir(ok.id)) is kept_after_success
    assert _exists(target, target.run_dir(bad.id)) is kept_after_failure
    assert not _exists(target, posixpath.join(target.run_dir(ok.id), "snapshot"))
    assert "logs/std_log.txt" in ok.get_file_names()  # collected before the cleanup


def test_cleanup_policy_from_the_connection(workspace, settings, make_tree):
    target = SSHTarget("vm", replace(settings, cleanup="always"))
    run = submit(workspace, target, make_tree({"train.py": "print(1)\n"}))
    run.wait_for_completion()
    assert not _exists(target, target.run_dir(run.id))


def test_prune_removes_unused_blobs_only(workspace, target, make_tree):
    src = make_tree({"train.py": "import time\ntime.sleep(30)\n", "data.txt": "d" * 100})
    done = submit(workspace, target, make_tree({"train.py": "print('x')\n", "other.txt": "o"}))
    done.wait_for_completion()
    running = submit(workspace, target, src)
    wait_until(lambda: running.get_status() == "Running", timeout=30)
    # Blobs are copied into small working copies, so only the age protects a running run's blobs.
    assert target.prune_blobs(days=1)["removed"] == 0
    pruned = target.prune_blobs(days=0)
    assert pruned["removed"] == 4 and pruned["bytes"] > 0
    running.cancel(grace_period=1)
    again = submit(workspace, target, make_tree({"train.py": "print('x')\n", "other.txt": "o"}))
    assert target.last_upload["blobs"] == 2  # pruned blobs travel again
    assert again.wait_for_completion()["status"] == "Completed"


def test_managed_environment_is_built_on_the_remote_once(workspace, target, make_tree):
    src = make_tree({"train.py": "import six, sys\nprint('six', six.__version__, sys.prefix)\n"})
    env = Environment(name="six")
    env.python.requirements = ["six==1.17.0"]
    lines: list[str] = []
    first = Experiment(workspace, "ssh").submit(
        ScriptRunConfig(src, "train.py", compute_target=target, environment=env), log=lines.append
    )
    first.wait_for_completion()
    details = first.get_details()["environment"]
    assert "six 1.17.0" in first.get_log_tail()
    assert details["packages"] == ["six==1.17.0"] and details["cache_hit"] is False
    assert details["interpreter"].startswith(target.root + "/envs/")
    assert any("six" in line for line in lines)
    second = submit(workspace, target, src, environment=env)
    second.wait_for_completion()
    assert second.get_details()["environment"]["cache_hit"] is True


def _remote_listdir(target: SSHTarget, path: str) -> list[str]:
    try:
        return target._sftp(lambda sftp: sftp.listdir(path))
    except FileNotFoundError:
        return []


def test_failed_environment_build_caches_nothing(workspace, target, make_tree):
    env = Environment(name="broken")
    env.python.requirements = ["mltrain-no-such-package-xyz==1.0"]
    lines: list[str] = []
    with pytest.raises(EnvironmentBuildFailed, match="mltrain-no-such-package-xyz") as err:
        Experiment(workspace, "ssh").submit(
            ScriptRunConfig(make_tree({"train.py": ""}), "train.py", compute_target=target, environment=env),
            log=lines.append,
        )
    assert "127.0.0.1" in str(err.value)
    assert any("mltrain-no-such-package-xyz" in line for line in lines)  # the installer's own output
    left = _remote_listdir(target, posixpath.join(target.root, "envs"))
    assert env.content_hash() not in left and not [n for n in left if n.startswith((".tmp-", ".spec-"))]
    (record,) = workspace.store.list_runs()
    assert record["status"] == "Failed"


def test_unavailable_python_version_is_a_clear_build_error(workspace, target, make_tree):
    env = Environment(name="future")
    env.python.python_version = "3.19"
    with pytest.raises(EnvironmentBuildFailed, match=r"3\.19"):
        submit(workspace, target, make_tree({"train.py": ""}), environment=env)


def test_two_concurrent_submissions_build_the_environment_once(
    workspace, settings, make_tree, monkeypatch, env
):
    monkeypatch.setenv("AIRFLOW_CONN_SSH_VM_ENVS", connection_json(env, remote_root=settings.remote_root))
    src = make_tree(
        {
            "train.py": "import six\nprint('six', six.__version__)\n",
            "env.yaml": "python:\n  requirements: [six==1.17.0]\n",
        }
    )
    code = textwrap.dedent(f"""
        from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
        ws = Workspace({str(workspace.root)!r})
        cfg = ScriptRunConfig({str(src)!r}, "train.py", compute_target="ssh_vm_envs", environment="env.yaml")
        Experiment(ws, "envs").submit(cfg).wait_for_completion()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    runs = Experiment(workspace, "envs").list_runs()
    assert {r.get_status() for r in runs} == {"Completed"} and len(runs) == 2
    env_hash = runs[0].get_details()["environment"]["hash"]
    assert [b["status"] for b in workspace.store.list_builds(env_hash)] == ["built"]
    assert sorted(r.get_details()["environment"]["cache_hit"] for r in runs) == [False, True]


def test_many_files_travel_in_bundles_and_arrive_whole(workspace, target, make_tree):
    files = {f"pkg/m{i:03}.py": f"VALUE = {i}\n" for i in range(300)}
    files["train.py"] = textwrap.dedent("""
        import hashlib, os
        total = sum(int(open(os.path.join('pkg', n)).read().split('=')[1]) for n in os.listdir('pkg'))
        print('files', len(os.listdir('pkg')), 'total', total)
        print('big', hashlib.sha256(open('big.bin', 'rb').read()).hexdigest())
    """)
    big = os.urandom(9 * 1024 * 1024)  # travels alone, not in a bundle
    files["big.bin"] = big
    run = submit(workspace, target, make_tree(files))
    assert target.last_upload["blobs"] == 302
    run.wait_for_completion()
    tail = run.get_log_tail()
    assert f"files 300 total {sum(range(300))}" in tail
    assert f"big {hashlib.sha256(big).hexdigest()}" in tail
    leftovers = target._sftp(lambda sftp: sftp.listdir(posixpath.join(target.root, "blobs")))
    assert not [n for n in leftovers if n.startswith(".tmp-")]


def test_the_remote_root_and_run_json_are_private(workspace, target, make_tree):
    run = submit(workspace, target, make_tree({"train.py": "print(1)\n"}))
    run.wait_for_completion()
    root_mode = target._sftp(lambda sftp: sftp.stat(target.root)).st_mode & 0o777
    spec_mode = target._sftp(lambda sftp: sftp.stat(target.run_dir(run.id) + "/run.json")).st_mode & 0o777
    assert (root_mode, spec_mode) == (0o700, 0o600)


def test_mltrain_target_prune_command_reaches_the_vm(workspace, monkeypatch, capsys):
    import json

    from airflow_provider_mltrain.cli import main
    from tests.targets.harnesses.ssh import connection_json, require_ssh

    monkeypatch.setenv(
        "AIRFLOW_CONN_PRUNE_VM", connection_json(require_ssh(), remote_root="~/mltrain-tests/prune")
    )
    code = main(["--workspace", str(workspace.root), "target", "prune", "prune_vm", "--json"])
    assert code == 0, capsys.readouterr().err
    assert set(json.loads(capsys.readouterr().out)) == {
        "removed",
        "bytes",
        "kept",
        "inputs_removed",
        "inputs_bytes",
    }


def test_a_waiting_follower_does_not_hold_up_the_connection(workspace, target, make_tree, monkeypatch):
    """wait_for_change waits on the VM on a channel of its own: other calls on the same (pooled)
    connection, from other threads, go on meanwhile."""
    monkeypatch.setenv("MLTRAIN_HEARTBEAT_INTERVAL", "120")  # no heartbeat ends the wait early
    src = make_tree({"train.py": "import time\nprint('up', flush=True)\ntime.sleep(60)\n"})
    run = submit(workspace, target, src)
    wait_until(lambda: "up" in run.get_log_tail(), timeout=60)
    woke = threading.Event()
    waiter = threading.Thread(target=lambda: (target.wait_for_change(run.id, 30), woke.set()), daemon=True)
    waiter.start()
    time.sleep(1.0)  # the waiter is on the VM now
    assert target.read_status(run.id) is not None
    assert "up" in target.read_file(run.id, "logs/std_log.txt").decode()
    assert not woke.is_set(), "the reads waited for the follower's wait to end"
    run.cancel(grace_period=1)
    assert woke.wait(60)  # the cancel changed status.json: the waiter woke too
