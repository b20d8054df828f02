"""Re-snapshots of a git work tree: git's index stands in for the walk only when nothing changed.

Every change below is made to a tree whose last snapshot left a git record; the next snapshot must
be exactly what a full walk of the changed tree gives (a fresh store with no record), never the
old one.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_mltrain.core import snapshot as snapshot_mod
from airflow_provider_mltrain.core import snapshot_git
from airflow_provider_mltrain.core.snapshot import SnapshotStore

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, env={**os.environ, **GIT_ENV}, check=True, capture_output=True)


def age(root: Path, seconds: float = 3600) -> None:
    """Every file's and folder's mtime an hour back (out of the racy window), .git left alone."""
    past = time.time() - seconds
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files + dirs:
            os.utime(os.path.join(dirpath, name), (past, past), follow_symlinks=False)
    os.utime(root, (past, past))


@pytest.fixture
def repo(make_tree) -> Path:
    root = make_tree(
        {
            "train.py": "print('train')\n",
            "lib/model.py": "W = 1\n",
            "lib/data.py": "D = 2\n",
            ".gitignore": "*.log\nscratch/\n",
            "notes.txt": "untracked\n",  # kept, not tracked
            "cache/kept.bin": "excluded by .git/info/exclude only\n",
            "ignored.log": "left out\n",
            "outputs/old.txt": "a local run's output\n",
        }
    )
    git(root, "init", "-q")
    (root / ".git" / "info").mkdir(exist_ok=True)
    (root / ".git" / "info" / "exclude").write_text("cache/\n")
    age(root)
    git(root, "add", "train.py", "lib", ".gitignore")
    git(root, "commit", "-q", "-m", "first")
    (root / "lib" / "data.py").write_text("D = 33\n")  # dirty when the record is written
    age(root)
    settle()
    return root


def settle() -> None:
    """Let the index (just written) leave the racy window: git keeps whole seconds of each file's
    ctime, so only an index older than that trusts git's word (nothing else can stand in for it)."""
    time.sleep(snapshot_git.RACY_WINDOW_NS / 1e9 + 0.1)


def _fresh(tmp_path: Path, root: Path) -> str:
    """What a full walk gives for ``root`` now: a store with no stat cache and no record."""
    fresh = tmp_path / f"fresh-{time.monotonic_ns()}"
    return SnapshotStore(fresh).take(root).id


def _recorded(store: SnapshotStore, root: Path) -> str:
    first = store.take(root)
    assert list(store.statcache.glob("*.git.json")), "no git record was written"
    return first.id


def test_an_unchanged_work_tree_is_not_walked(store_path, repo, monkeypatch):
    import json

    store = SnapshotStore(store_path)
    first = _recorded(store, repo)
    (record,) = [json.loads(p.read_text()) for p in store.statcache.glob("*.git.json")]
    assert record["modified"] == ["lib/data.py"]  # dirty then: its stat is in the record
    assert set(record["others"]) == {"lib/data.py", "notes.txt", "cache/kept.bin"}

    def no_walk(*args, **kwargs):
        raise AssertionError("walked the tree although git and the record show no change")

    monkeypatch.setattr(snapshot_mod, "scan", no_walk)
    again = store.take(repo, required="train.py")
    assert again.id == first and {f.path for f in again.files} >= {"train.py", "notes.txt", "cache/kept.bin"}
    assert "ignored.log" not in {f.path for f in again.files}


def test_tracked_files_only_their_stat_changed_are_read_again_not_walked(store_path, repo, monkeypatch):
    """A tracked file touched since git last refreshed its index: git's stat calls list it
    ("stat-dirty"), and its bytes, read again, show the snapshot is the last one."""
    git(repo, "update-index", "-q", "--refresh")  # only lib/data.py differs from git's index
    settle()
    store = SnapshotStore(store_path)
    first = _recorded(store, repo)
    os.utime(repo / "train.py")  # now: same bytes, a new mtime
    read_again: list[list[str]] = []
    real = snapshot_mod._same_files

    def spy(root, snap, paths):
        read_again.append(paths)
        return real(root, snap, paths)

    monkeypatch.setattr(snapshot_mod, "_same_files", spy)

    def no_walk(*args, **kwargs):
        raise AssertionError("walked the tree although only stats changed")

    monkeypatch.setattr(snapshot_mod, "scan", no_walk)
    assert store.take(repo).id == first
    # lib/data.py, modified when the record was written, is the record's to check, not git's
    assert read_again == [["train.py"]]


def test_more_stat_dirty_files_than_the_recheck_takes_are_walked(store_path, tmp_path, repo, monkeypatch):
    store = SnapshotStore(store_path)
    first = _recorded(store, repo)
    for name in ("train.py", "lib/model.py", ".gitignore"):
        os.utime(repo / name)  # same bytes, a new mtime: three files git's stat calls list
    monkeypatch.setattr(snapshot_git, "RECHECK_MAX_FILES", 2)
    scans = []
    real_scan = snapshot_mod.scan
    monkeypatch.setattr(snapshot_mod, "scan", lambda *a, **k: scans.append(a) or real_scan(*a, **k))
    assert store.take(repo).id == first == _fresh(tmp_path, repo)
    assert len(scans) == 2  # this store's walk, and the fresh store's


def test_same_files_refuses_what_is_not_the_snapshots_regular_file(store_path, repo):
    store = SnapshotStore(store_path)
    snap = store.take(repo)
    assert snapshot_mod._same_files(repo, snap, ["train.py", "lib/model.py"])
    assert not snapshot_mod._same_files(repo, snap, ["ignored.log"])  # not in the snapshot
    assert not snapshot_mod._same_files(repo, snap, ["missing.py"])
    (repo / "lib" / "model.py").chmod(0o755)
    assert not snapshot_mod._same_files(repo, snap, ["lib/model.py"])  # its mode
    (repo / "lib" / "model.py").chmod(0o644)
    (repo / "lib" / "model.py").write_text("W = 2\n")  # same size, other bytes
    assert not snapshot_mod._same_files(repo, snap, ["lib/model.py"])
    (repo / "lib" / "model.py").write_text("W = 1\n")
    assert snapshot_mod._same_files(repo, snap, ["lib/model.py"])
    (repo / "copy.py").write_text("W = 1\n")
    (repo / "lib" / "model.py").unlink()
    os.symlink("../copy.py", repo / "lib" / "model.py")  # a link to the same bytes
    assert not snapshot_mod._same_files(repo, snap, ["lib/model.py"])


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


def _write_same_size(path: Path, text: str) -> None:
    """New content of the same size with the old mtime put back: only ctime (and git) can tell."""
    st = path.stat()
    assert len(text.encode()) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


CHANGES: dict[str, Callable[[Path], None]] = {
    "a tracked file, same size and mtime": lambda r: _write_same_size(r / "lib/model.py", "W = 9\n"),
    "a file dirty then, edited again": lambda r: _write_same_size(r / "lib/data.py", "D = 44\n"),
    "a dirty file put back as committed": lambda r: git(r, "checkout", "--", "lib/data.py"),
    "an untracked kept file, same size": lambda r: _write_same_size(r / "notes.txt", "UNTRACKED\n"),
    "a file only .git/info/exclude ignores": lambda r: _write_same_size(
        r / "cache/kept.bin", "x" * 34 + "\n"
    ),
    "a new untracked file": lambda r: (r / "lib/new.py").write_text("N = 1\n"),
    "a new file in a folder git ignores": lambda r: (r / "cache/more.bin").write_text("more\n"),
    "a new empty folder": lambda r: (r / "lib/empty").mkdir(),
    "a tracked file removed": lambda r: (r / "lib/model.py").unlink(),
    "the executable bit": lambda r: (r / "train.py").chmod(0o755),
    "an ignore file edited": lambda r: _write_same_size(r / ".gitignore", "*.lug\nscratch/\n"),
    "a commit of an edit": lambda r: (
        (r / "train.py").write_text("print('two')\n"),
        git(r, "commit", "-q", "-am", "two"),
    ),
    "a new symlink": lambda r: os.symlink("train.py", r / "link.py"),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_every_change_is_seen(store_path, tmp_path, repo, change):
    store = SnapshotStore(store_path)
    before = _recorded(store, repo)
    assert store.take(repo).id == before  # the fast path's own answer
    CHANGES[change](repo)
    expected = _fresh(tmp_path, repo)
    assert expected != before, "the change does not change the snapshot: a useless case"
    assert store.take(repo).id == expected


def test_no_record_outside_a_work_tree_or_for_a_tree_changed_moments_ago(store_path, make_tree):
    store = SnapshotStore(store_path)
    plain = make_tree({"train.py": "print(1)\n"})
    age(plain)
    store.take(plain)
    assert not list(store.statcache.glob("*.git.json"))
    fresh = make_tree({"train.py": "print(1)\n"})
    git(fresh, "init", "-q")
    git(fresh, "add", "train.py")
    git(fresh, "commit", "-q", "-m", "first")
    store.take(fresh)  # its folders and index changed within the racy window: the walk stays
    assert not list(store.statcache.glob("*.git.json"))
    age(fresh)
    settle()
    store.take(fresh)
    assert list(store.statcache.glob("*.git.json"))


def test_git_started_for_a_check_that_fails_first_is_stopped(store_path, tmp_path, repo, monkeypatch):
    """git's check starts before the stats that can fail first: such a failure stops and reaps it."""
    store = SnapshotStore(store_path)
    before = _recorded(store, repo)
    started = []
    real = snapshot_git._start_diff_files

    def tracked(*args, **kwargs):
        proc = real(*args, **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(snapshot_git, "_start_diff_files", tracked)
    read_back = []
    real_get = SnapshotStore.get
    monkeypatch.setattr(
        SnapshotStore, "get", lambda self, *a, **k: read_back.append(a) or real_get(self, *a, **k)
    )
    CHANGES["an untracked kept file, same size"](repo)
    assert store.take(repo).id == _fresh(tmp_path, repo) != before
    assert started, "git was not asked before the stats"
    assert all(proc.returncode is not None for proc in started if proc is not None)
    assert not read_back, "the last manifest was read although a stat already showed a change"


@pytest.mark.parametrize("failure", ["manifest gone", "no git"])
def test_a_fast_path_that_cannot_answer_walks(store_path, tmp_path, repo, monkeypatch, failure):
    """The last manifest missing from the store, or git not runnable: the walk answers, rightly."""
    store = SnapshotStore(store_path)
    before = _recorded(store, repo)
    if failure == "manifest gone":
        (store.manifests / before[:2] / f"{before}.json").unlink()
    else:
        monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    walks = []
    real_scan = snapshot_mod.scan
    monkeypatch.setattr(snapshot_mod, "scan", lambda *a, **k: walks.append(1) or real_scan(*a, **k))
    again = store.take(repo)
    assert walks == [1] and again.id == before
    assert store.get(before).id == before  # the walk wrote the manifest back


def _stat_cache(store: SnapshotStore) -> Path:
    (found,) = store.statcache.glob("*.stat")
    return found


def test_the_last_snapshot_is_read_back_from_the_stat_cache_as_the_manifest_holds_it(
    store_path, repo, monkeypatch
):
    """The fast path reads the snapshot from the stat cache the record's walk wrote (marshal
    columns, not the JSON manifest): every file, mode, link and empty folder as the manifest has
    them."""
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "latest").symlink_to("lib/model.py")
    (repo / "empty").mkdir()
    age(repo)
    store = SnapshotStore(store_path)
    first = _recorded(store, repo)
    first = store.get(first)
    assert first.symlinks and first.dirs and any(f.mode == 0o755 for f in first.files)
    cache = snapshot_mod._read_stat_cache(_stat_cache(store))
    assert cache is not None and cache.snapshot_id == first.id
    from_cache = cache.snapshot()
    assert from_cache == first and from_cache.files == first.files
    assert (from_cache.symlinks, from_cache.dirs) == (first.symlinks, first.dirs)
    assert [type(f) for f in from_cache.files] == [snapshot_mod.FileEntry] * len(first.files)

    def no_call(*args, **kwargs):
        raise AssertionError("the manifest was read or the tree walked although the stat cache holds it")

    monkeypatch.setattr(snapshot_mod, "scan", no_call)
    monkeypatch.setattr(SnapshotStore, "get", no_call)
    again = store.take(repo)
    assert again == first and again.files == first.files


@pytest.mark.parametrize(
    "damage", ["missing", "not marshal", "truncated", "another snapshot's", "another version", "a stat short"]
)
def test_a_stat_cache_that_is_not_the_records_snapshot_is_not_used(store_path, repo, monkeypatch, damage):
    """Whatever is wrong with the stat cache, the manifest is read instead and gives the same
    snapshot, without a walk."""
    import marshal

    store = SnapshotStore(store_path)
    first = store.get(_recorded(store, repo))
    path = _stat_cache(store)
    data = marshal.loads(path.read_bytes())
    if damage == "missing":
        path.unlink()
    elif damage == "not marshal":
        path.write_bytes(b"\xff not a marshal stream")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "another snapshot's":
        path.write_bytes(marshal.dumps((*data[:2], "0" * 64, *data[3:])))
    elif damage == "another version":
        path.write_bytes(marshal.dumps((snapshot_mod.STAT_CACHE_VERSION + 1, *data[1:])))
    else:
        path.write_bytes(marshal.dumps((*data[:-1], data[-1][:-8])))
    cache = snapshot_mod._read_stat_cache(path)
    assert cache is None or cache.snapshot_id != first.id
    read_back = []
    real_get = SnapshotStore.get
    monkeypatch.setattr(
        SnapshotStore, "get", lambda self, *a, **k: read_back.append(a) or real_get(self, *a, **k)
    )
    monkeypatch.setattr(snapshot_mod, "scan", lambda *a, **k: pytest.fail("walked"))
    assert store.take(repo) == first
    assert read_back == [(first.id,)]


def _records(store: SnapshotStore) -> list[dict]:
    import json

    return [json.loads(p.read_text()) for p in store.statcache.glob("*.git.json")]


def _spy_listings(monkeypatch) -> list[snapshot_git.Listing | None]:
    """Every listing a snapshot starts before its walk, in order."""
    started: list[snapshot_git.Listing | None] = []
    original = snapshot_git.start_listing

    def start(root, now_ns):
        listing = original(root, now_ns)
        started.append(listing)
        return listing

    monkeypatch.setattr(snapshot_git, "start_listing", start)
    return started


def test_the_listing_started_before_the_walk_gives_the_record_a_listing_after_it_gives(
    tmp_path, repo, monkeypatch
):
    started = _spy_listings(monkeypatch)
    early = SnapshotStore(tmp_path / "early")
    early.take(repo)
    assert started and started[0] is not None and started[0]._proc is None  # used, then closed
    monkeypatch.setattr(snapshot_git, "start_listing", lambda root, now_ns: None)
    late = SnapshotStore(tmp_path / "late")
    late.take(repo)
    (with_early,) = _records(early)
    (with_late,) = _records(late)
    assert with_early.pop("blobs_id") != with_late.pop("blobs_id")  # each store's own
    assert with_early == with_late and with_early["modified"] == ["lib/data.py"]


def test_an_index_changed_while_git_listed_gives_no_record(store_path, repo, monkeypatch):
    original = snapshot_git.start_listing

    def start(root, now_ns):
        listing = original(root, now_ns)
        index = repo / ".git" / "index"
        os.utime(index, ns=(time.time_ns(), time.time_ns() - 10 * snapshot_git.RACY_WINDOW_NS))
        return listing

    monkeypatch.setattr(snapshot_git, "start_listing", start)
    store = SnapshotStore(store_path)
    store.take(repo)
    assert _records(store) == []


def test_the_listing_is_ended_when_the_snapshot_fails(store_path, repo, monkeypatch):
    started = _spy_listings(monkeypatch)
    procs = []
    popen = subprocess.Popen

    def keep(*args, **kwargs):
        proc = popen(*args, **kwargs)
        procs.append(proc)
        return proc

    monkeypatch.setattr(snapshot_git.subprocess, "Popen", keep)
    with pytest.raises(snapshot_mod.SnapshotError, match=r"missing\.py"):
        SnapshotStore(store_path).take(repo, required="missing.py")
    assert len(started) == 1 and started[0] is not None and started[0]._proc is None
    assert len(procs) == 1 and procs[0].returncode is not None  # waited for: no zombie left


def test_no_listing_is_started_outside_a_work_tree_or_for_an_index_written_moments_ago(make_tree, repo):
    plain = make_tree({"train.py": "print(1)\n"})
    assert snapshot_git.start_listing(plain, time.time_ns()) is None
    index = repo / ".git" / "index"
    assert snapshot_git.start_listing(repo, index.stat().st_mtime_ns + 1) is None
    listing = snapshot_git.start_listing(repo, time.time_ns())
    assert listing is not None
    try:
        assert listing.result() is not None
    finally:
        listing.close()
