"""The checks every compute target must pass. A target joins by adding a harness in ``harnesses/``.

Each test submits real scripts through the public API and follows them through the target's own
channel; nothing here is faked.

Each test runs on every target with a local workspace (``[local]``, ``[docker_test]``...) and, where
the artifact store changes what happens, again with the workspace's artifact store on the real S3
server (``[docker_test-s3]``; select them with ``-k s3``). There the snapshot travels through the
store, the follower pushes the live log to it and uploads the files and manifest at the end, and
every read after that (log, tail, files, downloads) comes from the store; ``assert_store_holds``
then checks that a workspace with no local files (another host) reads the same. The s3 variants:
completion with outputs and metrics, a failed script, the streamed log, both cancels, the timeout,
reattaching from a new controller (for Docker and SSH runs, on another host: no local files), a
lost runner, a source edited after submit, the outputs folder; and, with the object store only, a
run whose files wait in one host's cache (the store refused the upload) read by another host.

Marked ``no_object_store_variant`` (no s3 variant), because the artifact store plays no part in what
they check and each variant costs a run per target: argv, the exception in the error (the
runner's summary, read from the target), the follower's wake-up and the heartbeat (the target's
own channel), environment variables and interpreter, the azureml shims, numpy and mixed metric
values (metrics live in the run store, not the artifact store) and the script's environment.

On the Spark targets (the slowest, one shared cluster) only the tests marked
``object_store_on_every_target`` have an s3 variant: completion with outputs, and the reattach.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_mltrain import (
    Environment,
    RunFailed,
    RunStatus,
    RunTimeout,
    Workspace,
)
from airflow_provider_mltrain.core.artifacts import FsspecArtifactStore
from tests.targets.harnesses.docker import join_removals
from tests.targets.suite import assert_store_holds, is_object_store, reopen, submit, wait_until

TRAIN = """
import os, sys
from mltrain import Run
run = Run.get_context()
print("training on", run.id)
print("to stderr", file=sys.stderr)
for epoch in range(3):
    run.log("loss", 1.0 / (epoch + 1), step=epoch)
run.log("accuracy", 0.93)
run.log_list("lr", [0.1, 0.01])
run.log_row("per_class", cls=0, recall=0.9)
run.log_row("per_class", cls=1, recall=0.8)
run.set_tags({"framework": "none"})
os.makedirs("outputs/nested", exist_ok=True)
open("outputs/model.bin", "wb").write(b"weights")
open("outputs/nested/info.json", "w").write("{}")
os.makedirs("logs", exist_ok=True)
open("logs/train.log", "w").write("custom log")
"""


STORE_UNTOUCHED = "the artifact store plays no part in what this checks"
TARGET_ONLY = "checks the target's own channel, the same whatever the artifact store"

# A script that runs until the test writes ``release`` into its working folder (after it said it
# waits, in outputs/waiting): the test, not a sleep guessed long enough for a busy machine, says
# when it ends.
WAIT_FOR_RELEASE = """
import os, time
os.makedirs("outputs", exist_ok=True)
open("outputs/waiting", "w").write("1")
deadline = time.time() + 600
while not os.path.exists("release") and time.time() < deadline:
    time.sleep(0.05)
"""


def release(harness, run) -> None:
    """End a WAIT_FOR_RELEASE script."""
    wait_until(lambda: harness.read_working_file(run, "outputs/waiting"), timeout=300)
    harness.write_working_file(run, "release", "1")


@pytest.mark.object_store_on_every_target
def test_completed_run_has_status_log_metrics_outputs(workspace, target, make_tree):
    src = make_tree({"train.py": TRAIN})
    run = submit(workspace, target, src)
    details = run.wait_for_completion()
    assert details["status"] == "Completed"
    assert details["exit_code"] == 0
    assert details["target"] == target
    assert set(details["state_times"]) == {
        s.value for s in RunStatus if s not in (RunStatus.FAILED, RunStatus.CANCELED)
    }
    assert run.get_metrics() == {
        "loss": [1.0, 0.5, 1 / 3],
        "accuracy": 0.93,
        "lr": [0.1, 0.01],
        "per_class": {"cls": [0, 1], "recall": [0.9, 0.8]},
    }
    assert [h["step"] for h in run.get_metric_history("loss")] == [0, 1, 2]
    assert run.tags == {"framework": "none"}
    names = run.get_file_names()
    assert {"outputs/model.bin", "outputs/nested/info.json", "logs/train.log", "logs/std_log.txt"} <= set(
        names
    )
    log = run.read_log().decode()
    assert f"training on {run.id}" in log and "to stderr" in log
    if not is_object_store(workspace):
        assert (Path(details["output_dir"]) / "logs/std_log.txt").read_text() == log
    dest = run.download_file("outputs/model.bin", workspace.root.parent / "dl" / "model.bin")
    assert dest.read_bytes() == b"weights"
    with pytest.raises(FileNotFoundError):
        run.download_file("../../etc/passwd", workspace.root.parent / "x")
    assert run.download_file("logs/train.log", workspace.root.parent / "dl").read_text() == "custom log"
    assert_store_holds(run)


@pytest.mark.no_object_store_variant(STORE_UNTOUCHED)
def test_arguments_reach_argv_exactly(workspace, target, make_tree):
    src = make_tree(
        {
            "train.py": "import sys, json\nopen('outputs/argv.json','w').write(json.dumps(sys.argv[1:]))\n",
            "outputs/.keep": "",
        }
    )
    args = ["plain", "with space", 'it\'s "quoted"', "$HOME", "a;b", "line1\nline2", "", 3, 2.5, "--flag=x y"]
    run = submit(workspace, target, src, arguments=args)
    run.wait_for_completion()
    out = run.download_file("outputs/argv.json", workspace.root.parent / "argv.json")
    assert json.loads(out.read_text()) == [str(a) for a in args]
    assert_store_holds(run)


def test_failed_script_reports_exit_code_and_log_tail(workspace, target, make_tree):
    src = make_tree({"train.py": "print('about to fail')\nraise SystemExit(3)\n"})
    run = submit(workspace, target, src)
    with pytest.raises(RunFailed) as err:
        run.wait_for_completion()
    assert err.value.exit_code == 3
    assert err.value.status == "Failed"
    assert "about to fail" in err.value.log_tail
    assert "exit code 3" in str(err.value)
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and details["error"] == "script exited with code 3"
    assert_store_holds(run)


@pytest.mark.no_object_store_variant(STORE_UNTOUCHED)
def test_traceback_lands_in_the_log_and_the_exception_in_the_error(workspace, target, make_tree):
    src = make_tree({"train.py": "def f():\n    raise ValueError('bad data')\nf()\n"})
    run = submit(workspace, target, src)
    details = run.wait_for_completion(raise_on_error=False)
    assert details["exit_code"] == 1
    assert "ValueError: bad data" in run.get_log_tail()
    # The error names the exception even when the log's last lines do not show it.
    assert details["error"] == "script exited with code 1: ValueError: bad data"


def test_show_output_streams_the_log(workspace, target, make_tree, capsys):
    src = make_tree(
        {
            "train.py": "import time\nfor i in range(5):\n    print('line', i, flush=True)\n"
            "    time.sleep(0.1)\nprint('no newline at end', end='')\n"
        }
    )
    run = submit(workspace, target, src)
    run.wait_for_completion(show_output=True)
    out = capsys.readouterr().out
    assert out.splitlines() == [f"line {i}" for i in range(5)] + ["no newline at end"]
    assert_store_holds(run)


def test_cancel_ends_the_whole_process_group(workspace, target, harness, make_tree):
    src = make_tree(
        {
            "train.py": """
        import subprocess, sys, time, os
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open("outputs/pids", "w").write(f"{os.getpid()} {child.pid}")
        time.sleep(600)
    """,
            "outputs/.keep": "",
        }
    )
    run = submit(workspace, target, src)
    text = wait_until(lambda: harness.read_working_file(run, "outputs/pids"))
    pids = [int(p) for p in text.split()]
    assert all(harness.pids_alive(run, pids))
    assert run.cancel(grace_period=2) == "Canceled"
    wait_until(lambda: not any(harness.pids_alive(run, pids)), timeout=10)
    details = run.get_details()
    assert details["status"] == "Canceled"
    assert "Canceled" in details["state_times"]
    assert_store_holds(run)


def test_cancel_escalates_to_sigkill_after_grace(workspace, target, harness, make_tree):
    src = make_tree(
        {
            "train.py": """
        import signal, time, os
        signal.signal(signal.SIGTERM, lambda *a: print("ignoring SIGTERM", flush=True))
        open("outputs/pid", "w").write(str(os.getpid()))
        while True:
            time.sleep(0.1)
    """,
            "outputs/.keep": "",
        }
    )
    run = submit(workspace, target, src)
    pid = int(wait_until(lambda: harness.read_working_file(run, "outputs/pid")))
    started = time.monotonic()
    assert run.cancel(grace_period=1) == "Canceled"
    elapsed = time.monotonic() - started
    assert 1 <= elapsed < 8, elapsed  # the grace period asked for, not the default of 10 s
    assert harness.pids_alive(run, [pid]) == [False]
    assert "ignoring SIGTERM" in run.read_log().decode()
    assert_store_holds(run)


def test_timeout_raises_and_the_run_goes_on(workspace, target, harness, make_tree):
    src = make_tree({"train.py": WAIT_FOR_RELEASE + "print('done')\n"})
    run = submit(workspace, target, src)
    with pytest.raises(RunTimeout):
        run.wait_for_completion(timeout=0.3)
    # The timeout ended the waiting, not the run: it is still on its way (Preparing on a busy
    # machine, where an image or environment takes longer), then completes.
    assert run.get_status() in ("Preparing", "Starting", "Running")
    release(harness, run)
    assert run.wait_for_completion()["status"] == "Completed"
    assert "done" in run.get_log_tail()
    assert_store_holds(run)


@pytest.mark.object_store_on_every_target
def test_run_outlives_the_process_that_started_it(workspace, target, harness, make_tree, tmp_path):
    src = make_tree({"train.py": WAIT_FOR_RELEASE + "open('outputs/done','w').write('1')\n"})
    code = textwrap.dedent(f"""
        from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
        {reopen(workspace).strip().replace(chr(10), chr(10) + " " * 8)}
        config = ScriptRunConfig({str(src)!r}, "train.py", compute_target={target!r})
        run = Experiment(ws, "suite").submit(config)
        print(run.get_status(), run.id)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    status_at_exit, run_id = proc.stdout.strip().splitlines()[-1].split()
    # submit returned while the script was still to run or running
    assert status_at_exit in ("Preparing", "Starting", "Running")
    # A new controller reattaches by id; with an object-store workspace and a target of its own,
    # from another host (a retry on another worker: none of the first one's local files).
    root = workspace.root
    if is_object_store(workspace) and harness.followed_from_any_host:
        root = tmp_path / "retry-host"
    run = Workspace(root, database_url=workspace.database_url, artifact_store=workspace.artifacts).get_run(
        run_id
    )
    assert run.get_status() in ("Preparing", "Starting", "Running")
    release(harness, run)
    assert run.wait_for_completion()["status"] == "Completed"
    assert "outputs/done" in run.get_file_names()
    assert_store_holds(run)


def test_lost_runner_is_failed_with_a_reason(workspace, target, harness, make_tree):
    src = make_tree(
        {
            "train.py": "import time, os\nopen('outputs/pid','w').write(str(os.getpid()))\ntime.sleep(600)\n",
            "outputs/.keep": "",
        }
    )
    run = submit(workspace, target, src)
    pid = int(wait_until(lambda: harness.read_working_file(run, "outputs/pid")))
    status = run.target.read_status(run.id)
    harness.kill_runner(run, status)
    wait_until(lambda: not run.target.runner_alive(run.id, status))
    assert run.get_status() == "Failed"
    assert "runner" in run.get_details()["error"] and "stopped" in run.get_details()["error"]
    wait_until(lambda: harness.pids_alive(run, [pid]) == [False], timeout=5)  # the orphan ends too
    assert_store_holds(run)


@pytest.mark.no_object_store_variant(TARGET_ONLY)
def test_a_follower_wakes_when_the_run_changes(workspace, target, make_tree):
    """wait_for_change (between two polls of wait_for_completion and the operator) returns when the
    run changes on the target, not after the whole poll interval."""
    src = make_tree({"train.py": "import time\nprint('up', flush=True)\ntime.sleep(2)\n"})
    run = submit(workspace, target, src)
    wait_until(lambda: "up" in run.get_log_tail(), timeout=120)
    woke = threading.Event()
    target_object = run.target
    waiter = threading.Thread(
        target=lambda: (target_object.wait_for_change(run.id, 600), woke.set()), daemon=True
    )
    waiter.start()
    assert woke.wait(120), "wait_for_change slept on after the run changed"
    assert run.wait_for_completion()["status"] == "Completed"


@pytest.mark.no_object_store_variant(TARGET_ONLY)
def test_heartbeat_advances_while_running(workspace, target, make_tree):
    src = make_tree({"train.py": "import time\ntime.sleep(2.5)\n"})
    run = submit(workspace, target, src)
    first = wait_until(lambda: (run.target.read_status(run.id) or {}).get("heartbeat"))
    later = wait_until(
        lambda: (
            (run.target.read_status(run.id) or {}).get("heartbeat", 0) > first
            and run.target.read_status(run.id)["heartbeat"]
        )
    )
    assert later > first
    run.wait_for_completion()


def test_editing_source_after_submit_does_not_change_the_run(workspace, target, make_tree):
    src = make_tree(
        {"train.py": "import time\ntime.sleep(0.5)\nprint(open('data.txt').read())\n", "data.txt": "original"}
    )
    run = submit(workspace, target, src)
    (src / "data.txt").write_text("edited")
    run.wait_for_completion()
    assert "original" in run.get_log_tail() and "edited" not in run.get_log_tail()
    assert_store_holds(run)


@pytest.mark.no_object_store_variant(STORE_UNTOUCHED)
def test_environment_variables_and_interpreter_path(workspace, target, make_tree):
    other = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    src = make_tree(
        {"train.py": "import os, sys\nprint('exe', sys.executable)\nprint('var', os.environ['MY_VAR'])\n"}
    )
    env = Environment(environment_variables={"MY_VAR": "hello world"})
    env.python.interpreter_path = other
    run = submit(workspace, target, src, environment=env)
    run.wait_for_completion()
    tail = run.get_log_tail()
    assert f"exe {other}" in tail and "var hello world" in tail
    assert run.get_details()["environment"]["interpreter"] == other


@pytest.mark.no_object_store_variant(STORE_UNTOUCHED)
def test_azureml_scripts_run_unchanged(workspace, target, make_tree):
    src = make_tree(
        {
            "train.py": """
        from azureml.core import Run
        from azureml.core.run import Run as Run2
        run = Run.get_context()
        assert Run is Run2
        run.log("accuracy", 0.9)
        run.log_list("losses", [0.5, 0.25])
        try:
            from azureml.core import Workspace
        except ImportError as exc:
            print("clear error:", "compatibility layer provides only Run" in str(exc))
    """
        }
    )
    run = submit(workspace, target, src)
    run.wait_for_completion()
    assert run.get_metrics() == {"accuracy": 0.9, "losses": [0.5, 0.25]}
    assert "clear error: True" in run.get_log_tail()


UPLOADS = """
import io, os
from azureml.core import Run
run = Run.get_context()
run.upload_file(name="a/b.txt", path_or_stream=io.BytesIO(b"kept as a/b.txt"))
with open("notes.txt", "w") as f:
    f.write("notes")
run.upload_file("outputs/notes.txt", "notes.txt")
os.makedirs("report/sub")
with open("report/sub/table.csv", "w") as f:
    f.write("x,y")
run.upload_folder("reports", "report")
run.upload_files(["one.txt", "deep/two.txt"], ["notes.txt", "notes.txt"])
uploads = os.path.join(os.environ["MLTRAIN_RUN_DIR"], "uploads")
os.symlink("/tmp", os.path.join(uploads, "out"))
for bad in ("../up.txt", "/etc/x.txt", "out/escape.txt"):
    try:
        run.upload_file(bad, io.BytesIO(b"x"))
        print("accepted", bad)
    except ValueError:
        print("refused", bad)
print("names", [n for n in run.get_file_names() if not n.startswith("logs/")])
run.download_file("a/b.txt", output_file_path="back.txt")
print("inside", open("back.txt").read())
"""


def test_uploaded_files_keep_their_names(workspace, target, make_tree, tmp_path):
    run = submit(workspace, target, make_tree({"train.py": UPLOADS}))
    run.wait_for_completion()
    out = run.read_log().decode()
    assert "refused ../up.txt" in out and "refused /etc/x.txt" in out and "refused out/escape.txt" in out
    inside = ["a/b.txt", "deep/two.txt", "one.txt", "outputs/notes.txt", "reports/sub/table.csv"]
    assert f"names {inside}" in out and "inside kept as a/b.txt" in out
    names = run.get_file_names()
    assert set(inside) <= set(names) and not any(n.startswith("uploads/") for n in names)
    assert run.get_links() == {"out": "/tmp"}  # recorded as a link, never followed
    assert run.download_file("a/b.txt", tmp_path / "b.txt").read_bytes() == b"kept as a/b.txt"
    assert run.download_file("reports/sub/table.csv", tmp_path).read_text() == "x,y"
    with pytest.raises(FileNotFoundError):
        run.download_file("uploads/a/b.txt", tmp_path / "no.txt")
    assert_store_holds(run)


@pytest.mark.no_object_store_variant(STORE_UNTOUCHED)
def test_real_azureml_core_is_left_alone(workspace, target, make_tree):
    src = make_tree(
        {
            "train.py": "import azureml.core\nprint('real', getattr(azureml.core, 'REAL', False))\n",
            # An installed azureml-core, here shipped in the snapshot (a relative PYTHONPATH is the cwd's).
            "site/azureml/__init__.py": "",
            "site/azureml/core/__init__.py": "REAL = True\nfrom azureml.core.run import Run\n",
            "site/azureml/core/run.py": "class Run:\n    pass\n",
        }
    )
    env = Environment(environment_variables={"PYTHONPATH": "site"})
    run = submit(workspace, target, src, environment=env)
    run.wait_for_completion()
    assert "real True" in run.get_log_tail()


@pytest.mark.no_object_store_variant(STORE_UNTOUCHED)
def test_numpy_values_and_bad_values(workspace, target, make_tree):
    src = make_tree(
        {
            "train.py": """
        import numpy as np
        from mltrain import Run
        run = Run.get_context()
        run.log("f32", np.float32(0.5))
        run.log("i64", np.int64(7))
        run.log_list("arr", np.array([1, 2, 3]))
        try:
            run.log("bad", object())
        except TypeError as exc:
            print("refused:", exc)
    """
        }
    )
    run = submit(workspace, target, src)
    run.wait_for_completion()
    assert run.get_metrics() == {"f32": 0.5, "i64": 7, "arr": [1, 2, 3]}
    assert "refused: mltrain: the value of metric 'bad' must be a number" in run.get_log_tail()


@pytest.mark.no_object_store_variant(STORE_UNTOUCHED)
def test_script_does_not_see_airflow_secrets(workspace, target, harness, make_tree, monkeypatch):
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite:////nonexistent/secret/airflow.db")
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", "postgres://user:secret@wh/db")
    monkeypatch.setenv("MLTRAIN_DATABASE_URL", f"sqlite:///{workspace.root / 'runs.db'}")
    monkeypatch.setenv("TEAM_SETTING", "visible")
    src = make_tree(
        {
            "train.py": "import os\n"
            "print(sorted(k for k in os.environ if '__' in k or 'CONN' in k or 'DATABASE' in k))\n"
            "print('team', os.environ.get('TEAM_SETTING'))\n"
        }
    )
    run = submit(workspace, target, src)
    run.wait_for_completion()
    tail = run.get_log_tail()
    assert "secret" not in tail and "AIRFLOW" not in tail and "MLTRAIN_DATABASE_URL" not in tail
    if harness.inherits_controller_environment:
        assert "[]" in tail and "team visible" in tail
    else:
        assert "team None" in tail


@pytest.mark.no_object_store_variant(STORE_UNTOUCHED)
def test_mixed_metric_kinds_under_one_name_do_not_break_reads(workspace, target, make_tree):
    src = make_tree(
        {
            "train.py": "from mltrain import Run\nr = Run.get_context()\nr.log('m', 1)\n"
            "r.log_row('m', a=2)\nr.log('m', 3)\n"
        }
    )
    run = submit(workspace, target, src)
    run.wait_for_completion()
    assert run.get_metrics() == {"m": [1, {"a": 2}, 3]}


def test_outputs_folder_exists_and_working_copy_is_removed(workspace, target, harness, make_tree):
    src = make_tree(
        {
            "train.py": "open('outputs/model.txt', 'w').write('m')\nopen('logs/extra.txt', 'w').write('l')\n",
            "outputs/stale-from-a-local-run.bin": "old",
        }
    )
    run = submit(workspace, target, src)
    run.wait_for_completion()
    names = run.get_file_names()
    assert "outputs/model.txt" in names and "logs/extra.txt" in names
    assert "outputs/stale-from-a-local-run.bin" not in names
    assert harness.working_copy_removed(run)
    assert_store_holds(run)


class _RefusesRunUploads(FsspecArtifactStore):
    """The workspace's object store as one host sees it while the store refuses that host's
    uploads of run files (full, failing); snapshots still go through."""

    refusing = False

    def _refuses(self, name: str) -> bool:
        return self.refusing and name.startswith("runs/")

    def put_file(self, name, path):
        if self._refuses(name):
            raise OSError("the store refuses the upload")
        super().put_file(name, path)

    def put_bytes(self, name, data):
        if self._refuses(name):
            raise OSError("the store refuses the upload")
        super().put_bytes(name, data)


class _RefusesRunFiles(_RefusesRunUploads):
    """Refuses a run's files and manifest at finalization; its live log chunks still go through."""

    def _refuses(self, name: str) -> bool:
        return super()._refuses(name) and "/log/" not in name


@pytest.mark.object_store_only
@pytest.mark.object_store_on("local", "docker_test", "ssh_vm")
def test_another_host_reads_the_log_of_a_run_whose_files_wait_elsewhere(
    workspace, target, harness, make_tree, tmp_path
):
    """While a run's files wait in one host's cache, another host (the api-server) shows the log
    the follower pushed to the store, also when the target let the run go (a removed container)."""
    store = workspace.artifacts
    flaky = _RefusesRunFiles(store.url, store.storage_options)
    flaky.refusing = True
    host_a = Workspace(workspace.root, database_url=workspace.database_url, artifact_store=flaky)
    script = "for i in range(20):\n    print('line', i)\nopen('outputs/model.txt', 'w').write('m')\n"
    run = submit(host_a, target, make_tree({"train.py": script}))
    details = run.wait_for_completion(upload_timeout=0)
    assert details["status"] == "Completed" and details["output_dir"] is None  # files wait on host A
    join_removals()  # the Docker target removes the container meanwhile
    expected = "".join(f"line {i}\n" for i in range(20))
    seen_from_b = Workspace(tmp_path / "host-b", database_url=workspace.database_url, artifact_store=store)
    reader = seen_from_b.get_run(run.id)
    assert reader.get_status() == "Completed"
    assert reader.read_log().decode() == expected
    assert reader.target_log_size() == len(expected)
    assert reader.get_log_tail(max_lines=1) == "line 19"


@pytest.mark.object_store_only
@pytest.mark.object_store_on("local", "docker_test", "ssh_vm")
def test_files_waiting_in_one_hosts_cache_are_never_finished_empty_by_another(
    workspace, target, harness, make_tree, tmp_path
):
    store = workspace.artifacts
    flaky = _RefusesRunUploads(store.url, store.storage_options)
    host_a = Workspace(workspace.root, database_url=workspace.database_url, artifact_store=flaky)
    src = make_tree({"train.py": "print('hello')\nopen('outputs/model.txt', 'w').write('m')\n"})
    run = submit(host_a, target, src)
    flaky.refusing = True
    details = run.wait_for_completion(upload_timeout=0)  # return with the upload pending
    assert details["status"] == "Completed" and details["output_dir"] is None  # not collected yet
    assert any("not in the artifact store" in w for w in details["warnings"])
    join_removals()  # the Docker target removes the container meanwhile
    # Another host (the api-server, a retry on another worker) reads the run meanwhile.
    host_b = Workspace(tmp_path / "host-b", database_url=workspace.database_url, artifact_store=store)
    assert host_b.get_run(run.id).get_status() == "Completed"
    # The store takes uploads again: the host that holds the files sends them.
    flaky.refusing = False
    run.refresh()
    reader = assert_store_holds(run)
    assert reader is not None
    assert reader.download_file("outputs/model.txt", tmp_path / "dl").read_text() == "m"
    assert "hello" in reader.read_log().decode()
    assert reader.get_details()["warnings"] == []
