"""Helpers of the shared target suite (its fixtures are in ``conftest.py``).

Every ``tests/targets/test_*.py`` that asks for the ``harness`` or ``target`` fixture runs once per
registered compute target, with a local workspace and again with an object-store one (see
``conftest.py``): the shared suite, the hostile-script suite and any other.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from airflow_provider_mltrain import Experiment, Run, ScriptRunConfig, Workspace
from airflow_provider_mltrain.core import run_files_store
from airflow_provider_mltrain.core.run import STD_LOG, list_run_files, read_collected
from airflow_provider_mltrain.core.runfiles import shown_name, stored_name


def submit(workspace: Workspace, target: str, src: Path, script: str = "train.py", **kwargs):
    config = ScriptRunConfig(src, script, compute_target=target, **kwargs)
    return Experiment(workspace, "suite").submit(config)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):
    """Poll until predicate() is truthy; deadlines are generous because the machine may be busy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def is_object_store(workspace: Workspace) -> bool:
    return not workspace.artifacts.is_local


def reopen(workspace: Workspace, name: str = "ws") -> str:
    """Python source that opens ``workspace`` again, as ``name``, in another process."""
    if not is_object_store(workspace):
        return f"{name} = Workspace({str(workspace.root)!r})\n"
    store = workspace.artifacts
    options = store.storage_options  # type: ignore[attr-defined]
    return (
        "from airflow_provider_mltrain.core.artifacts import FsspecArtifactStore\n"
        f"{name} = Workspace({str(workspace.root)!r}, database_url={workspace.database_url!r}, "
        f"artifact_store=FsspecArtifactStore({store.url!r}, {options!r}))\n"
    )


def assert_store_holds(run: Run) -> Run | None:
    """With an object-store workspace, a run that ended is in the store whole: its files and
    manifest are there, and a workspace on another host (same run store and artifact store, no local
    files) reads the same names, links, log and file contents as the follower collected. Returns
    that other host's handle on the run; None (and no check) with a local workspace."""
    workspace = run.workspace
    if not is_object_store(workspace):
        return None
    store = workspace.artifacts
    assert workspace.store.get_run(run.id)["collected"], "the run's files are not in the store yet"
    prefix = run_files_store.run_prefix(run.id)
    assert f"{prefix}/{run_files_store.MANIFEST}" in store.list(prefix)
    cache = workspace.run_files_dir(run.id)  # what the follower collected on its host
    other_root = workspace.root.parent / f"other-host-{uuid.uuid4().hex[:8]}"
    other = Workspace(other_root, database_url=workspace.database_url, artifact_store=store)
    reader = other.get_run(run.id)
    names = reader.get_file_names()
    assert names == sorted(shown_name(n) for n in list_run_files(cache)) == run.get_file_names()
    assert STD_LOG in names
    assert reader.get_links() == run.get_links()
    for name in names:
        stream, size = reader.open_file(name)
        with stream:
            data = stream.read()
        assert data == read_collected(cache, stored_name(name)) and size == len(data), name
    assert reader.read_log() == run.read_log() == read_collected(cache, STD_LOG)
    assert reader.get_log_tail() == run.get_log_tail()
    assert reader.get_metrics() == run.get_metrics()
    assert reader.get_details()["output_dir"] == run.get_details()["output_dir"]
    assert not (other_root / "runs").exists(), "the other host read the run from local files"
    return reader
