"""Every target, with the workspace's artifact store on a real S3 server: a finished run's log and
files are read from the store by a workspace with no local files (another host)."""

from __future__ import annotations

import os

import pytest

from airflow_provider_mltrain import Workspace
from airflow_provider_mltrain.core import run_files_store
from airflow_provider_mltrain.core.run import list_run_files
from tests.targets.suite import submit, wait_until

SCRIPT = """
import os
os.makedirs("outputs/nested", exist_ok=True)
open("outputs/model.bin", "wb").write(b"weights" * 1000)
open("outputs/nested/info.json", "w").write("{}")
os.symlink("/etc/hostname", "outputs/host")
for i in range(50):
    print("line", i)
"""


@pytest.mark.object_store_only
def test_a_finished_run_is_read_from_the_store_by_another_host(workspace, target, make_tree, tmp_path):
    s3_store = workspace.artifacts
    run = submit(workspace, target, make_tree({"train.py": SCRIPT}))
    assert run.wait_for_completion()["status"] == "Completed"
    assert workspace.store.get_run(run.id)["collected"]
    assert f"runs/{run.id}/manifest.json" in s3_store.list(f"runs/{run.id}")

    other = Workspace(tmp_path / "other-host", database_url=workspace.database_url, artifact_store=s3_store)
    reader = other.get_run(run.id)
    names = reader.get_file_names()
    assert names == list_run_files(workspace.run_files_dir(run.id))  # what the follower collected
    assert {"logs/std_log.txt", "outputs/model.bin", "outputs/nested/info.json"} <= set(names)
    assert reader.get_links() == {"outputs/host": "/etc/hostname"}
    assert reader.download_file("outputs/model.bin", tmp_path / "dl").read_bytes() == b"weights" * 1000
    log = reader.read_log().decode()
    assert log.splitlines() == [f"line {i}" for i in range(50)]
    assert reader.get_log_tail(max_lines=2) == "line 48\nline 49"
    assert not (tmp_path / "other-host" / "runs").exists()


LIVE = """
import time
for i in range(3):
    print("line", i, flush=True)
time.sleep(30)
print("done", flush=True)
"""


@pytest.mark.object_store_only
def test_a_running_run_is_read_from_the_store_by_a_host_that_cannot_reach_its_target(
    workspace, harness, target, make_tree, tmp_path, monkeypatch
):
    """An api-server (or a laptop) without the target's connection or keys: its live log comes from
    the chunks the follower pushed, instead of an error or an empty page."""
    s3_store = workspace.artifacts
    run = submit(workspace, target, make_tree({"train.py": LIVE}))
    try:

        def pushed() -> bool:
            run.refresh()  # what a follower does: it pushes the new log bytes
            return b"line 2" in run_files_store.read_log(s3_store, run.id)

        wait_until(pushed, timeout=180, interval=0.5)
        with monkeypatch.context() as env:
            for var in [v for v in os.environ if v.startswith("AIRFLOW_CONN_")]:
                env.delenv(var)  # this host has none of the targets' connections
            other = Workspace(
                tmp_path / "other-host", database_url=workspace.database_url, artifact_store=s3_store
            )
            reader = other.get_run(run.id)
            assert reader.read_log().decode().splitlines() == ["line 0", "line 1", "line 2"]
            assert reader.target_log_size() == len(b"line 0\nline 1\nline 2\n")
    finally:
        run.cancel()
