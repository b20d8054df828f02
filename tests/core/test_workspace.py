from __future__ import annotations

import os

from airflow_provider_mltrain import Workspace


def test_new_workspace_folders_and_run_store_are_owner_only(tmp_path, make_tree):
    old = os.umask(0o022)
    try:
        ws = Workspace(tmp_path / "a" / "ws")
        ws.store.list_experiments()
        ws.snapshots.take(make_tree({"train.py": ""}))
    finally:
        os.umask(old)
    assert ws.root.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o700
    db = ws.root / "runs.db"
    assert db.stat().st_mode & 0o777 == 0o600
    for extra in ("runs.db-wal", "runs.db-shm"):
        if (ws.root / extra).exists():
            assert (ws.root / extra).stat().st_mode & 0o077 == 0, extra
    for folder in (ws.snapshots.root, ws.snapshots.blobs, ws.snapshots.manifests):
        assert folder.stat().st_mode & 0o777 == 0o700, folder


def test_existing_workspace_folder_keeps_its_mode(tmp_path):
    root = tmp_path / "shared"
    root.mkdir(mode=0o750)
    os.chmod(root, 0o750)
    Workspace(root)
    assert root.stat().st_mode & 0o777 == 0o750
