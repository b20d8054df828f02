"""A run's log and files in an artifact store on a real S3 server (SeaweedFS), read from a second
workspace that has no local files and cannot reach the run's (local) target: another host."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.core import run_files_store
from airflow_provider_mltrain.core.artifacts import ArtifactStore, ArtifactStoreError
from airflow_provider_mltrain.core.errors import RunOnOtherHost
from airflow_provider_mltrain.core.run import LogFollower, Run
from airflow_provider_mltrain.core.states import RunStatus
from tests.conftest import s3_options
from tests.core.test_snapshot_shared import GatedStore
from tests.targets.suite import wait_until

BIG = 7 * 1024 * 1024 + 11  # more than one read block and one multipart part of s3fs (5 MiB)

GATED = """
import os, sys, time
from pathlib import Path
print("first line", flush=True)
gate = Path(sys.argv[1])
while not gate.exists():
    time.sleep(0.05)
print("second line", flush=True)
Path("outputs/sub").mkdir(parents=True, exist_ok=True)
Path("outputs/model.txt").write_text("weights")
Path("outputs/sub/big.bin").write_bytes(bytes(range(256)) * (BIG // 256) + b"x" * (BIG % 256))
os.symlink("/etc/passwd", "outputs/passwd")
print("done", flush=True)
""".replace("BIG", str(BIG))

FILES = """
from pathlib import Path
Path("outputs").mkdir(exist_ok=True)
for i in range(6):
    Path(f"outputs/f{i}.bin").write_bytes(bytes([i]) * (300_000 + i))
print("wrote six files")
"""


def big_bytes() -> bytes:
    return bytes(range(256)) * (BIG // 256) + b"x" * (BIG % 256)


@pytest.fixture
def shared_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared-runs.db'}"


def other_host(tmp_path: Path, shared_db: str, store: ArtifactStore) -> Workspace:
    """A workspace on the same run store and artifact store, with an empty root of its own."""
    return Workspace(tmp_path / "other-host", database_url=shared_db, artifact_store=store)


def follow(run: Run) -> threading.Thread:
    """Follow ``run`` to its end in a thread, as an operator does (long poll interval)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run.wait_for_completion(poll_interval=60.0)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def test_a_reader_on_another_host_sees_the_live_log_and_the_finished_files(
    tmp_path, make_tree, s3_store, shared_db
):
    ws = Workspace(tmp_path / "ws", database_url=shared_db, artifact_store=s3_store)
    gate = tmp_path / "gate"
    src = make_tree({"train.py": GATED})
    run = Experiment(ws, "exp").submit(ScriptRunConfig(src, "train.py", arguments=[str(gate)]))
    follower = follow(run)

    reader = other_host(tmp_path, shared_db, s3_store).get_run(run.id)
    assert reader.elsewhere() is not None
    # The live log from the store's chunks, while the run waits on the gate.
    wait_until(lambda: b"first line" in reader.read_log(), timeout=60)
    assert not RunStatus(reader._record()["status"]).is_terminal
    assert reader.target_log_size() == len(b"first line\n")
    lines = LogFollower(reader)
    assert lines.read() == ["first line"]
    # New lines arrive while the follower waits between refreshes (poll_interval=60 s): pushed
    # every second, not at the next refresh.
    gate.touch()
    wait_until(lambda: b"second line" in reader.read_log(), timeout=30)
    assert lines.read()[0] == "second line"
    assert "first line" in reader.get_log_tail()

    follower.join(120)
    assert not follower.is_alive() and follower.errors == []
    record = ws.store.get_run(run.id)
    assert record["status"] == "Completed" and record["collected"]

    # Everything is in the store: files, the manifest (last), links as links.
    objects = s3_store.list(f"runs/{run.id}")
    manifest = json.loads(s3_store.get_bytes(f"runs/{run.id}/manifest.json"))
    assert manifest["links"] == {"outputs/passwd": "/etc/passwd"}
    assert manifest["files"]["outputs/sub/big.bin"]["size"] == BIG
    assert manifest["files"]["outputs/sub/big.bin"]["sha256"] == hashlib.sha256(big_bytes()).hexdigest()
    assert objects[f"runs/{run.id}/files/outputs/sub/big.bin"] == BIG
    assert not any("passwd" in name for name in objects)

    # The reader has no local file of the run and reads it all from the store.
    assert not (tmp_path / "other-host" / "runs").exists()
    assert reader.get_file_names() == ["logs/std_log.txt", "outputs/model.txt", "outputs/sub/big.bin"]
    assert reader.get_links() == {"outputs/passwd": "/etc/passwd"}
    dest = reader.download_file("outputs/sub/big.bin", tmp_path / "dl")
    assert dest.read_bytes() == big_bytes()
    with pytest.raises(FileNotFoundError, match="symbolic link"):
        reader.download_file("outputs/passwd", tmp_path / "dl")
    log = reader.read_log()
    assert log == b"first line\nsecond line\ndone\n"
    assert reader.read_log(11, 6) == b"second"
    assert reader.target_log_size() == len(log)
    assert reader.get_details()["output_dir"] == f"{s3_store.url}/runs/{run.id}/files"
    assert not (tmp_path / "other-host" / "runs").exists()


def test_the_ui_queries_and_the_cli_read_a_run_from_the_store_alone(
    tmp_path, make_tree, s3_store, shared_db, monkeypatch, capsys
):
    from airflow_provider_mltrain import cli
    from airflow_provider_mltrain.plugins import queries

    ws = Workspace(tmp_path / "ws", database_url=shared_db, artifact_store=s3_store)
    src = make_tree(
        {
            "train.py": "from pathlib import Path\nPath('outputs').mkdir(exist_ok=True)\n"
            "Path('outputs/m.txt').write_text('model')\nprint('hello from the run')\n"
        }
    )
    run = Experiment(ws, "exp").submit(ScriptRunConfig(src, "train.py"))
    run.wait_for_completion()

    reader = other_host(tmp_path, shared_db, s3_store)
    page = queries.read_log(reader, run.id, None, 4096)
    assert page["text"] == "hello from the run\n" and page["eof"]
    assert queries.file_names(reader, run.id) == ["logs/std_log.txt", "outputs/m.txt"]
    stream, size = queries.open_run_file(reader, run.id, "outputs/m.txt")
    with stream:
        assert (stream.read(), size) == (b"model", 5)

    # mltrain on a host whose only configuration is the workspace's stores.
    opts = s3_options()
    monkeypatch.setenv("MLTRAIN_DATABASE_URL", shared_db)
    monkeypatch.setenv("MLTRAIN_ARTIFACT_STORE", s3_store.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", opts["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", opts["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", opts["client_kwargs"]["endpoint_url"])
    empty = tmp_path / "cli-host"
    assert cli.main(["--workspace", str(empty), "logs", run.id]) == 0
    assert "hello from the run" in capsys.readouterr().out
    out = tmp_path / "out"
    assert cli.main(["--workspace", str(empty), "download", run.id, "outputs/m.txt", "-o", str(out)]) == 0
    assert out.read_bytes() == b"model"
    assert not (empty / "runs").exists()


class FlakyStore(ArtifactStore):
    """The real store, with puts that fail while ``failing`` says so (a store that is down or
    full): a fault injected in front of the real server."""

    def __init__(self, real: ArtifactStore, fail_from_put: int | None = None):
        self.real = real
        self.url = real.url
        self.fail_from_put = fail_from_put
        self.puts: list[str] = []
        self.failed: list[str] = []  # puts refused (several at once when uploads run in parallel)
        self.on_put = None
        self._lock = threading.Lock()

    def _put(self, name: str) -> None:
        with self._lock:
            self.puts.append(name)
            if self.on_put is not None:
                self.on_put(len(self.puts))
            if self.fail_from_put is not None and len(self.puts) >= self.fail_from_put:
                self.failed.append(name)
                raise ArtifactStoreError(f"injected: the store is full (put {len(self.puts)})")

    def put_bytes(self, name, data):
        self._put(name)
        self.real.put_bytes(name, data)

    def put_file(self, name, path):
        self._put(name)
        self.real.put_file(name, path)

    def get_bytes(self, name, offset=0, length=None):
        return self.real.get_bytes(name, offset, length)

    def open(self, name):
        return self.real.open(name)

    def size(self, name):
        return self.real.size(name)

    def list(self, prefix):
        return self.real.list(prefix)

    def delete(self, names):
        self.real.delete(names)


def test_a_failing_store_keeps_the_files_in_the_cache_and_the_upload_resumes(
    tmp_path, make_tree, s3_store, shared_db
):
    flaky = FlakyStore(s3_store)
    ws = Workspace(tmp_path / "ws", database_url=shared_db, artifact_store=flaky)
    src = make_tree({"train.py": FILES})
    run = Experiment(ws, "exp").submit(ScriptRunConfig(src, "train.py"))

    # The store accepts the log and three files, then fails (full, down).
    def arm(n: int) -> None:
        if any("/files/" in p for p in flaky.puts) and flaky.fail_from_put is None:
            flaky.fail_from_put = n + 3

    flaky.on_put = arm
    details = run.wait_for_completion(upload_timeout=0)  # return with the upload pending
    assert details["status"] == "Completed"  # the run's state does not wait for the store
    record = ws.store.get_run(run.id)
    assert not record["collected"]
    assert any("not in the artifact store" in w and "retried" in w for w in run.warnings)
    assert (ws.run_files_dir(run.id) / "outputs" / "f5.bin").stat().st_size == 300_005
    assert s3_store.size(f"runs/{run.id}/manifest.json") is None
    sent = [p for p in flaky.puts if "/files/" in p and p not in flaky.failed]
    assert len(sent) == 3

    # Another host sees the state and the log (chunks), and no files yet.
    reader = other_host(tmp_path, shared_db, s3_store).get_run(run.id)
    assert reader.refresh() == RunStatus.COMPLETED
    assert b"wrote six files" in reader.read_log()
    assert reader.get_file_names() == []

    flaky.fail_from_put = None  # the store is back
    flaky.on_put = None
    flaky.puts.clear()
    flaky.failed.clear()
    assert run.refresh() == RunStatus.COMPLETED
    record = ws.store.get_run(run.id)
    assert record["collected"] and run.warnings == []
    # Only what was missing went again, and the manifest last.
    assert not set(flaky.puts) & set(sent)
    assert flaky.puts[-1] == f"runs/{run.id}/manifest.json"
    assert len(reader.get_file_names()) == 7
    assert reader.read_log(0, 4) == b"wrot"
    for i in range(6):
        assert reader.download_file(f"outputs/f{i}.bin", tmp_path / "dl").read_bytes() == bytes([i]) * (
            300_000 + i
        )


def _weed_answers() -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(os.environ["MLTRAIN_TEST_S3_ENDPOINT"], timeout=2)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def test_the_object_store_restarted_mid_upload(tmp_path, make_tree, own_weed, shared_db):
    """The real server stops during the upload of a run's files and comes back: nothing is lost.
    (A server of this test's own: the one other tests share is never stopped.)"""
    from airflow_provider_mltrain.core.artifacts import FsspecArtifactStore

    store = FsspecArtifactStore("s3://restarted/ws", own_weed.options())
    flaky = FlakyStore(store)
    ws = Workspace(tmp_path / "ws", database_url=shared_db, artifact_store=flaky)
    src = make_tree({"train.py": FILES})
    run = Experiment(ws, "exp").submit(ScriptRunConfig(src, "train.py"))
    stopped = []

    def stop_server(n: int) -> None:
        files = [p for p in flaky.puts if "/files/" in p]
        if len(files) == 3 and not stopped:
            own_weed.stop()
            stopped.append(True)

    flaky.on_put = stop_server
    try:
        # upload_timeout=0: return at once with the upload pending (the default goes on retrying).
        assert run.wait_for_completion(upload_timeout=0)["status"] == "Completed"
        assert stopped, "the server was not stopped mid-upload"
        assert not ws.store.get_run(run.id)["collected"]
        assert any("not in the artifact store" in w for w in run.warnings)
    finally:
        if not own_weed.answers():
            own_weed.start()
    flaky.on_put = None
    # The store answers again: the next refresh finishes the upload.
    wait_until(lambda: run.refresh() and ws.store.get_run(run.id)["collected"], timeout=120, interval=1)
    assert run.warnings == []
    reader = other_host(tmp_path, shared_db, store).get_run(run.id)
    assert len(reader.get_file_names()) == 7
    assert reader.download_file("outputs/f2.bin", tmp_path / "dl").read_bytes() == b"\x02" * 300_002


def test_wait_for_completion_retries_the_upload_until_the_store_is_back(
    tmp_path, make_tree, own_weed, shared_db
):
    """A worker that nothing refreshes after its task (a Celery worker, a pod) must not return
    with the run's files only in its cache: the store down at the end of the run and back a few
    seconds later, ``wait_for_completion`` returns with the files in the store and no warning."""
    from airflow_provider_mltrain.core.artifacts import FsspecArtifactStore

    store = FsspecArtifactStore("s3://retried/ws", own_weed.options())
    flaky = FlakyStore(store)
    ws = Workspace(tmp_path / "ws", database_url=shared_db, artifact_store=flaky)
    run = Experiment(ws, "exp").submit(ScriptRunConfig(make_tree({"train.py": FILES}), "train.py"))
    stopped: list[float] = []

    def restart_later() -> None:
        time.sleep(3)
        own_weed.start()

    def stop_server(n: int) -> None:
        if not stopped and any("/files/" in p for p in flaky.puts):
            own_weed.stop()
            stopped.append(time.monotonic())
            threading.Thread(target=restart_later, daemon=True).start()

    flaky.on_put = stop_server
    try:
        details = run.wait_for_completion(upload_timeout=300)
    finally:
        flaky.on_put = None
        if not own_weed.answers():
            own_weed.start()
    assert stopped, "the server was not stopped mid-upload"
    assert details["status"] == "Completed"
    assert ws.store.get_run(run.id)["collected"]
    assert run.warnings == []
    reader = other_host(tmp_path, shared_db, store).get_run(run.id)
    assert len(reader.get_file_names()) == 7
    assert reader.download_file("outputs/f2.bin", tmp_path / "dl").read_bytes() == b"\x02" * 300_002


def test_a_store_that_refuses_the_live_log_is_said_on_the_run_until_it_takes_it_again(
    tmp_path, make_tree, s3_store, shared_db
):
    """Other hosts read a live log from the store: while its follower cannot append to it, the run
    says so (not only the follower's task log), and stops saying so once the store takes it."""
    flaky = FlakyStore(s3_store)
    ws = Workspace(tmp_path / "ws", database_url=shared_db, artifact_store=flaky)
    gate = tmp_path / "gate"
    run = Experiment(ws, "exp").submit(
        ScriptRunConfig(make_tree({"train.py": GATED}), "train.py", arguments=[str(gate)])
    )
    flaky.fail_from_put = len(flaky.puts) + 1  # from now on, every put fails
    wait_until(lambda: run.refresh() and b"first line" in run.read_log(), timeout=60)
    run.refresh()
    [warning] = [w for w in run.warnings if "live log cannot be appended" in w]
    assert s3_store.url in warning and "injected: the store is full" in warning
    assert not RunStatus(ws.store.get_run(run.id)["status"]).is_terminal

    flaky.fail_from_put = None  # the store takes puts again
    run.refresh()
    assert run.warnings == []
    assert b"first line" in run_files_store.read_log(s3_store, run.id)
    gate.touch()
    assert run.wait_for_completion()["status"] == "Completed"
    assert run.warnings == []


def test_upload_timeout_setting_is_checked(monkeypatch):
    from airflow_provider_mltrain.core import settings
    from airflow_provider_mltrain.core.errors import InvalidRunConfig

    monkeypatch.setenv("MLTRAIN_UPLOAD_TIMEOUT", "0")
    assert settings.upload_timeout() == 0
    monkeypatch.setenv("MLTRAIN_UPLOAD_TIMEOUT", "soon")
    with pytest.raises(InvalidRunConfig, match="MLTRAIN_UPLOAD_TIMEOUT"):
        settings.upload_timeout()


def test_a_follower_that_starts_late_continues_the_log_where_the_store_ends(tmp_path, s3_store):
    calls = []
    log = b"".join(f"line {i}\n".encode() for i in range(1000))

    def read(offset: int, length: int) -> bytes:
        calls.append(offset)
        return log[offset : offset + length]

    end = run_files_store.push_log(s3_store, "r1", lambda o, n: log[o : min(o + n, 100)])
    assert end == 100
    # Another follower (a retry elsewhere) starts from the end already in the store.
    assert run_files_store.push_log(s3_store, "r1", read) == len(log)
    assert calls[0] == 100
    # A stale follower writing from the same offset again writes the same bytes, fewer of them:
    # another object, so the longer chunk stays and the log has no hole.
    run_files_store.push_log(s3_store, "r1", lambda o, n: log[o : min(o + n, 130)], start=100)
    assert run_files_store.push_log(s3_store, "r1", read) == len(log)
    assert run_files_store.read_log(s3_store, "r1") == log
    assert run_files_store.read_log(s3_store, "r1", 95, 20) == log[95:115]


def test_a_file_whose_name_is_longer_than_an_object_key_is_uploaded_and_read_back(tmp_path, s3_store):
    """S3 keys are at most 1,024 bytes, prefix included: a deep output goes under a hashed key."""
    folder = tmp_path / "collected"
    deep = "outputs/" + "d/" * 600 + "bottom.txt"
    (folder / deep).parent.mkdir(parents=True)
    (folder / deep).write_bytes(b"at the bottom")
    (folder / "outputs/short.txt").write_text("short")
    manifest = run_files_store.upload_files(s3_store, "r1", folder)
    assert manifest["files"]["outputs/short.txt"]["key"] == "runs/r1/files/outputs/short.txt"
    key = manifest["files"][deep]["key"]
    assert len(f"{s3_store.url}/{key}".split("/", 3)[3].encode()) <= 1024
    assert run_files_store.read_file(s3_store, manifest["files"][deep]) == b"at the bottom"


def test_a_local_run_of_another_host_is_neither_lost_nor_followed_from_here(
    tmp_path, make_tree, s3_store, shared_db, monkeypatch
):
    ws = Workspace(tmp_path / "ws", database_url=shared_db, artifact_store=s3_store)
    gate = tmp_path / "gate"
    src = make_tree({"train.py": GATED})
    run = Experiment(ws, "exp").submit(ScriptRunConfig(src, "train.py", arguments=[str(gate)]))
    wait_until(lambda: run.refresh() == RunStatus.RUNNING, timeout=60)
    here = socket.gethostname()
    with monkeypatch.context() as m:
        m.setattr(socket, "gethostname", lambda: "worker-b")
        seen_from_b = Run(ws, run.id)  # the same workspace folder, another host
        reason = seen_from_b.elsewhere()
        assert reason and f"on host {here}" in reason and "worker-b" in reason
        assert seen_from_b.refresh() == RunStatus.RUNNING  # not declared lost
        with pytest.raises(RunOnOtherHost, match=f"on host {here}"):
            seen_from_b.wait_for_completion(timeout=30)
    gate.touch()
    assert run.wait_for_completion()["status"] == "Completed"


def test_a_runs_files_go_up_at_once_and_one_failed_upload_leaves_no_manifest(tmp_path):
    folder = tmp_path / "collected"
    (folder / "outputs").mkdir(parents=True)
    for i in range(3):
        (folder / "outputs" / f"f{i}.bin").write_bytes(bytes([i]) * (100_000 + i))
    store = GatedStore(tmp_path / "store", parties=3)
    manifest = run_files_store.upload_files(store, "r1", folder)
    assert sorted(manifest["files"]) == ["outputs/f0.bin", "outputs/f1.bin", "outputs/f2.bin"]
    assert run_files_store.read_manifest(store, "r1") == manifest

    failing = GatedStore(tmp_path / "store", parties=3, fail="runs/r2/files/outputs/f1")
    with pytest.raises(ArtifactStoreError, match="injected"):
        run_files_store.upload_files(failing, "r2", folder)
    assert failing.size("runs/r2/manifest.json") is None
    # Resumable: the retry sends only what is missing, then the manifest.
    healthy = GatedStore(tmp_path / "store", parties=0)
    again = run_files_store.upload_files(healthy, "r2", folder)
    assert again["files"]["outputs/f1.bin"]["size"] == 100_001
    assert healthy.size("runs/r2/manifest.json") is not None
