"""Every target, with the workspace's artifact store on a real S3 server: a finished run's log and
files are read from the store by a workspace with no local files (another host)."""

from __future__ import annotations

import pytest

from airflow_provider_mltrain import Workspace
from airflow_provider_mltrain.core.run import list_run_files
from tests.targets.suite import submit

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
