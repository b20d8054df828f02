"""The local target's own behaviour beyond the shared suite (test_target_suite.py)."""

from __future__ import annotations

import json
import os
import threading

from airflow_provider_mltrain.targets.local import LocalTarget


def test_wait_for_change_wakes_when_the_supervisor_rewrites_status(tmp_path):
    """A follower (wait_for_completion, the operator) sees a run end when it ends, not at its next
    poll: the local target watches status.json, which the supervisor replaces on every change."""
    target = LocalTarget(tmp_path / "local")
    run_dir = target.run_dir("r1")
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(json.dumps({"state": "Running"}))
    woke = threading.Event()
    waiter = threading.Thread(target=lambda: (target.wait_for_change("r1", 600), woke.set()), daemon=True)
    waiter.start()
    assert not woke.wait(0.5)  # nothing changed: still waiting
    tmp = run_dir / ".status.json.tmp"
    tmp.write_text(json.dumps({"state": "Completed"}))
    os.replace(tmp, run_dir / "status.json")  # as the supervisor writes it
    assert woke.wait(60), "wait_for_change slept on after status.json was replaced"


def test_wait_for_change_returns_after_its_time_without_a_run_folder(tmp_path):
    target = LocalTarget(tmp_path / "local")
    target.wait_for_change("missing", 0.2)  # no status.json yet (a run still starting): just waits


def test_the_submitting_pythons_packages_are_frozen_once_across_processes(tmp_path, monkeypatch):
    """A new process (``mltrain submit``, a task) reuses the package list another process froze,
    while the interpreter's site-packages are unchanged; a change there freezes again."""
    import sys

    from airflow_provider_mltrain.targets import local

    cache = tmp_path / "local" / local.FREEZE_CACHE
    calls = []

    def uv_freeze(interpreter):
        calls.append(interpreter)
        return [f"pkg=={len(calls)}"]

    monkeypatch.setattr(local, "_uv_freeze", uv_freeze)
    monkeypatch.setattr(local, "_freeze_cache", {})
    assert local._freeze(sys.executable, cache) == ["pkg==1"]
    monkeypatch.setattr(local, "_freeze_cache", {})  # as in a new process
    assert local._freeze(sys.executable, cache) == ["pkg==1"]
    assert calls == [sys.executable]

    stamp = local._site_dirs_stamp()
    monkeypatch.setattr(local, "_site_dirs_stamp", lambda: tuple(s + 1 for s in stamp))  # pip install
    monkeypatch.setattr(local, "_freeze_cache", {})
    assert local._freeze(sys.executable, cache) == ["pkg==2"]
    assert json.loads(cache.read_text())["packages"] == ["pkg==2"]

    cache.write_text("not json")  # a damaged cache is ignored, never trusted
    monkeypatch.setattr(local, "_freeze_cache", {})
    assert local._freeze(sys.executable, cache) == ["pkg==3"]
    assert local._freeze("/usr/bin/python3", cache) == ["pkg==4"]  # another interpreter: not cached here
    assert json.loads(cache.read_text())["packages"] == ["pkg==3"]
