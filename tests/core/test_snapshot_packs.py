"""The local store's packs: small blobs of a snapshot appended to one file, large ones alone."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_mltrain.core import snapshot as snapshot_mod
from airflow_provider_mltrain.core.errors import SnapshotError
from airflow_provider_mltrain.core.snapshot import Snapshot, SnapshotStore, _manifest_id, scan


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "store")


def small_tree(n: int = 200) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {f"pkg/m{i}.py": f"X = {i}\n" * (i % 37 + 1) for i in range(n)}
    files["empty.txt"] = ""
    files["copy/m3.py"] = files["pkg/m3.py"]  # same content: stored once
    files["data/bytes.bin"] = os.urandom(5000)
    files["train.py"] = "print('hi')\n"
    return files


def packs_of(store: SnapshotStore) -> dict[str, list[str]]:
    names = sorted(os.listdir(store.packs)) if store.packs.exists() else []
    return {
        "pack": [n for n in names if n.endswith(".pack") and not n.startswith(".")],
        "idx": [n for n in names if n.endswith(".idx") and not n.startswith(".")],
        "tmp": [n for n in names if n.startswith(".")],
    }


def loose_blobs(store: SnapshotStore) -> list[Path]:
    if not store.blobs.exists():
        return []
    return [p for d in store.blobs.iterdir() if d.is_dir() and len(d.name) == 2 for p in d.iterdir()]


def test_small_files_go_to_one_pack_read_back_exactly(store, make_tree, tmp_path):
    files = small_tree()
    src = make_tree(files)
    snap = store.take(src)
    found = packs_of(store)
    assert len(found["pack"]) == 1 and len(found["idx"]) == 1 and found["tmp"] == []
    assert loose_blobs(store) == []  # no file per blob
    index = json.loads((store.packs / found["idx"][0]).read_bytes())
    pack = (store.packs / found["pack"][0]).read_bytes()
    assert set(index) == {f.hash for f in snap.files}  # each content once
    assert sum(length for _offset, length in index.values()) == len(pack)
    for digest, (offset, length) in index.items():
        assert hashlib.sha256(pack[offset : offset + length]).hexdigest() == digest
    fresh = SnapshotStore(store.root)  # another process: reads the indexes from disk
    for f in snap.files:
        expected = (src / f.path).read_bytes()
        assert hashlib.sha256(expected).hexdigest() == f.hash
        assert fresh.has_blob(f.hash)
        assert fresh.blob_size(f.hash) == len(expected) == f.size
        assert fresh.read_blob(snap.id, f.hash) == expected
        with fresh.open_blob(f.hash) as blob:
            chunks = []
            while chunk := blob.read(1000):
                chunks.append(chunk)
            assert blob.read() == b""  # never past the blob's end
        assert b"".join(chunks) == expected
    fresh.materialize(fresh.get(snap.id), tmp_path / "run")
    for path, content in files.items():
        data = content if isinstance(content, bytes) else content.encode()
        assert (tmp_path / "run" / path).read_bytes() == data, path


def test_a_few_new_blobs_are_files_of_their_own_many_a_new_pack(store, make_tree, tmp_path):
    src = make_tree(small_tree())
    store.take(src)
    (src / "pkg/m7.py").write_text("X = 'changed'\n")
    (src / "new.py").write_text("Y = 2\n")
    snap = store.take(src)
    assert len(packs_of(store)["pack"]) == 1
    changed = {f.hash for f in snap.files if f.path in ("pkg/m7.py", "new.py")}
    assert {p.parent.name + p.name for p in loose_blobs(store)} == changed
    assert store.take(src).id == snap.id
    assert len(packs_of(store)["pack"]) == 1  # an unchanged tree writes nothing
    for i in range(40):
        (src / f"pkg/m{i}.py").write_text(f"X = 'edited {i}'\n")
    edited = store.take(src)
    found = packs_of(store)
    assert len(found["pack"]) == 2
    indexes = [json.loads((store.packs / n).read_bytes()) for n in found["idx"]]
    newest = next(i for i in indexes if len(i) < 100)
    assert set(newest) == {f.hash for f in edited.files if f.path in {f"pkg/m{i}.py" for i in range(40)}}
    assert len(loose_blobs(store)) == 2  # nothing stored twice
    store.materialize(edited, tmp_path / "run")
    assert (tmp_path / "run/pkg/m7.py").read_text() == "X = 'edited 7'\n"
    assert (tmp_path / "run/new.py").read_text() == "Y = 2\n"


def test_large_blobs_stay_files_of_their_own(store, make_tree, monkeypatch):
    monkeypatch.setattr(snapshot_mod, "SMALL_FILE", 1024)
    big = os.urandom(5000)
    small = {f"m{i}.py": f"x = {i}\n" for i in range(40)}
    snap = store.take(make_tree({"weights.bin": big, **small}))
    digest = hashlib.sha256(big).hexdigest()
    loose = store.blobs / digest[:2] / digest[2:]
    assert loose.read_bytes() == big
    assert loose_blobs(store) == [loose]
    index = json.loads((store.packs / packs_of(store)["idx"][0]).read_bytes())
    assert digest not in index
    assert set(index) == {f.hash for f in snap.files if f.path in small}
    with store.open_blob(digest) as blob:
        assert blob.read() == big
    assert store.blob_size(digest) == 5000


@pytest.mark.parametrize("n", [50, 400], ids=["stat-each", "listed-once"])
def test_a_workspace_of_loose_blobs_stays_readable(tmp_path, make_tree, n):
    """The layout before packs: every blob a file of its own. Read as it is, never rewritten."""
    files = small_tree(n)
    src = make_tree(files)
    old = SnapshotStore(tmp_path / "store")
    result = scan(src)
    entries = []
    for f in result.files:
        data = (src / f.path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        old._write_blob(digest, data)
        entries.append(snapshot_mod.FileEntry(f.path, digest, len(data), f.mode))
    files_t = tuple(entries)
    snap = Snapshot(_manifest_id(files_t, [], []), files_t)
    old._write_manifest(snap)
    before = sorted(loose_blobs(old))

    store = SnapshotStore(tmp_path / "store")
    again = store.get(snap.id)
    for f in again.files:
        assert store.has_blob(f.hash)
        assert store.read_blob(snap.id, f.hash) == (src / f.path).read_bytes()
        assert store.blob_size(f.hash) == f.size
    store.materialize(again, tmp_path / "run")
    assert (tmp_path / "run/pkg/m9.py").read_text() == files["pkg/m9.py"]
    # A snapshot of the same tree finds every blob already stored: no pack, nothing rewritten.
    assert store.take(src).id == snap.id
    assert packs_of(store)["pack"] == []
    (src / "added.py").write_text("Z = 3\n")
    newer = store.take(src)
    added = next(f.hash for f in newer.files if f.path == "added.py")
    assert sorted(loose_blobs(store)) == sorted([*before, store.blobs / added[:2] / added[2:]])
    assert packs_of(store)["pack"] == []
    for i in range(40):
        (src / f"more/a{i}.py").parent.mkdir(exist_ok=True)
        (src / f"more/a{i}.py").write_text(f"A = {i}\n")
    newest = store.take(src)
    index = json.loads((store.packs / packs_of(store)["idx"][0]).read_bytes())
    assert set(index) == {f.hash for f in newest.files if f.path.startswith("more/")}
    assert len(loose_blobs(store)) == len(before) + 1
    store.materialize(newest, tmp_path / "run2")
    assert (tmp_path / "run2/more/a7.py").read_text() == "A = 7\n"
    assert (tmp_path / "run2/pkg/m9.py").read_text() == files["pkg/m9.py"]


CONCURRENT = """
import sys, time
from airflow_provider_mltrain.core.snapshot import SnapshotStore
store_root, src, go = sys.argv[1:]
while time.time() < float(go):
    time.sleep(0.001)
for _ in range(3):
    snap = SnapshotStore(store_root).take(src)
print(snap.id)
"""


def test_concurrent_snapshots_into_one_store_all_succeed(tmp_path, make_tree):
    shared = {f"shared/s{i}.py": f"S = {i}\n" * 30 for i in range(300)}
    trees = []
    for p in range(4):
        own = {f"own/p{p}_{i}.txt": f"{p}:{i}\n" * 20 for i in range(150)}
        trees.append(make_tree({**shared, **own, "train.py": f"print({p})\n"}))
    root = tmp_path / "store"
    go = str(time.time() + 2)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(root), str(t), go],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for t in trees
    ]
    ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        ids.append(out.strip())
    store = SnapshotStore(root)
    assert packs_of(store)["tmp"] == []
    for snap_id, tree in zip(ids, trees):
        snap = store.get(snap_id)
        for f in snap.files:
            data = store.read_blob(snap_id, f.hash)
            assert hashlib.sha256(data).hexdigest() == f.hash
            assert data == (tree / f.path).read_bytes()
        out = tmp_path / f"run-{snap_id[:8]}"
        store.materialize(snap, out)
        assert (out / "shared/s7.py").read_text() == shared["shared/s7.py"]


def test_a_failure_mid_snapshot_leaves_no_pack(store, make_tree, monkeypatch):
    src = make_tree(small_tree())
    original = snapshot_mod._PackWriter.add
    calls = []

    def failing(self, digest, data):
        calls.append(digest)
        if len(calls) == 50:
            raise OSError("simulated crash")
        return original(self, digest, data)

    monkeypatch.setattr(snapshot_mod._PackWriter, "add", failing)
    with pytest.raises(SnapshotError, match=r"Cannot store .*simulated crash"):
        store.take(src)
    assert packs_of(store) == {"pack": [], "idx": [], "tmp": []}
    assert not store.manifests.exists() or not any(store.manifests.rglob("*.json"))
    assert not any(store.has_blob(d) for d in calls)
    monkeypatch.setattr(snapshot_mod._PackWriter, "add", original)
    snap = store.take(src)
    for f in snap.files:
        assert store.read_blob(snap.id, f.hash) == (src / f.path).read_bytes()


def test_a_pack_without_its_index_is_not_seen(store, make_tree, monkeypatch, tmp_path):
    """A crash between the pack's rename and its index: the pack is invisible, stored again."""
    src = make_tree(small_tree(60))
    original = snapshot_mod._atomic_write

    def no_index(path, data):
        if str(path).endswith(".idx"):
            raise OSError("simulated crash")
        original(path, data)

    monkeypatch.setattr(snapshot_mod, "_atomic_write", no_index)
    with pytest.raises(OSError, match="simulated crash"):
        store.take(src)
    monkeypatch.setattr(snapshot_mod, "_atomic_write", original)
    found = packs_of(store)
    assert len(found["pack"]) == 1 and found["idx"] == [] and found["tmp"] == []
    fresh = SnapshotStore(store.root)
    snap = fresh.take(src)
    for f in snap.files:
        assert fresh.read_blob(snap.id, f.hash) == (src / f.path).read_bytes()
    fresh.materialize(snap, tmp_path / "run")


def test_a_corrupt_packed_blob_is_refused(store, make_tree):
    snap = store.take(make_tree(small_tree(60)))
    pack = store.packs / packs_of(store)["pack"][0]
    data = bytearray(pack.read_bytes())
    data[0] ^= 0xFF
    pack.write_bytes(bytes(data))
    fresh = SnapshotStore(store.root)
    with pytest.raises(SnapshotError, match="corrupt"):
        for f in snap.files:
            fresh.read_blob(snap.id, f.hash)


def test_packs_are_owner_only(store, make_tree):
    store.take(make_tree(small_tree(60)))
    assert packs_of(store)["pack"]
    assert store.packs.stat().st_mode & 0o777 == 0o700
    for path in store.packs.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path


def test_what_a_killed_snapshot_left_is_removed_once_a_day_old(store, make_tree):
    store.take(make_tree(small_tree()))
    (pack,) = packs_of(store)["pack"]
    old = time.time() - snapshot_mod.STALE_PACK_SECONDS - 60
    leftovers = {
        "old_tmp": store.packs / ".tmp-pack-killed",
        "old_orphan": store.packs / ("0" * 64 + ".pack"),  # renamed, but its index never written
        "new_tmp": store.packs / ".tmp-pack-writing",  # a snapshot writing right now
    }
    for name, path in leftovers.items():
        path.write_bytes(b"partial")
        if name.startswith("old"):
            os.utime(path, (old, old))
    os.utime(store.packs / pack, (old, old))  # an old pack with its index is kept
    store.take(make_tree({"other.py": "x = 1\n" * 10, **small_tree(40)}))
    assert not leftovers["old_tmp"].exists() and not leftovers["old_orphan"].exists()
    assert leftovers["new_tmp"].exists() and (store.packs / pack).exists()


def large_tree(monkeypatch) -> dict[str, str | bytes]:
    """40 small files and 4 large ones (over a SMALL_FILE lowered to 1 KiB), one large twice."""
    monkeypatch.setattr(snapshot_mod, "SMALL_FILE", 1024)
    files: dict[str, str | bytes] = {f"m{i}.py": f"x = {i}\n" for i in range(40)}
    for i in range(3):
        files[f"data/w{i}.bin"] = os.urandom(5000 + 997 * i)
    files["copy/w0.bin"] = files["data/w0.bin"]
    return files


def test_large_files_are_copied_exactly_and_the_same_content_once(store, make_tree, monkeypatch, tmp_path):
    files = large_tree(monkeypatch)
    src = make_tree(files)
    snap = store.take(src)
    for f in snap.files:
        content = files[f.path]
        expected = content if isinstance(content, bytes) else content.encode()
        assert f.hash == hashlib.sha256(expected).hexdigest() and f.size == len(expected)
        assert store.read_blob(snap.id, f.hash) == expected
    big = [f for f in snap.files if f.size > 1024]
    assert len(big) == 4 and len(loose_blobs(store)) == 3  # the same content stored once
    assert not list(store.blobs.glob(".tmp-*"))
    store.materialize(snap, tmp_path / "run")
    assert (tmp_path / "run/copy/w0.bin").read_bytes() == files["data/w0.bin"]


def test_a_failed_copy_of_a_large_file_fails_the_snapshot_and_leaves_nothing(store, make_tree, monkeypatch):
    src = make_tree(large_tree(monkeypatch))
    original = snapshot_mod._copy_hashing

    def no_space(src_fd, dst_fd, stop=None):
        if dst_fd is not None:
            os.write(dst_fd, b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(src_fd, dst_fd, stop)

    monkeypatch.setattr(snapshot_mod, "_copy_hashing", no_space)
    with pytest.raises(SnapshotError, match="No space left"):
        store.take(src)
    assert packs_of(store) == {"pack": [], "idx": [], "tmp": []}
    assert not list(store.blobs.glob(".tmp-*")) and loose_blobs(store) == []


def test_a_large_file_failing_after_the_pack_is_sealed_leaves_no_pack(store, make_tree, monkeypatch):
    """The pack is closed and named while large files are still copied; only the end makes it seen."""
    src = make_tree(large_tree(monkeypatch))
    sealed = threading.Event()
    original_seal = snapshot_mod._PackWriter.seal
    original_copy = SnapshotStore._copy_to_temp

    def seal(self):
        original_seal(self)
        sealed.set()

    def copy_to_temp(self, root, f, stop=None):
        if f.path.endswith("w2.bin"):
            assert sealed.wait(30)
            raise SnapshotError(f"Cannot read {root}/{f.path}: simulated read error.")
        return original_copy(self, root, f, stop)

    monkeypatch.setattr(snapshot_mod._PackWriter, "seal", seal)
    monkeypatch.setattr(SnapshotStore, "_copy_to_temp", copy_to_temp)
    with pytest.raises(SnapshotError, match="simulated read error"):
        store.take(src)
    assert sealed.is_set()
    assert packs_of(store) == {"pack": [], "idx": [], "tmp": []}
    assert not store.manifests.exists() or not any(store.manifests.rglob("*.json"))


def test_progress_counts_every_byte_once(store, make_tree, monkeypatch):
    files = large_tree(monkeypatch)
    src = make_tree(files)
    calls: list[tuple[int, int]] = []
    main = threading.get_ident()

    def progress(done: int, total: int) -> None:
        assert threading.get_ident() == main  # a caller's callback is never run by a helper thread
        calls.append((done, total))

    snap = store.take(src, progress=progress)
    total = sum(len(c) if isinstance(c, bytes) else len(c.encode()) for c in files.values())
    assert snap.total_size == total
    assert len(calls) == len(files)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[-1] == (total, total)


@pytest.mark.parametrize("size", [0, 10, 3000], ids=["empty", "shrunk", "grown"])
def test_a_file_whose_size_changed_since_the_walk_is_read_whole(tmp_path, size):
    path = tmp_path / "f.bin"
    data = os.urandom(size)
    path.write_bytes(data)
    assert snapshot_mod._read_file(str(path), 100) == data  # the walk saw 100 bytes
    assert snapshot_mod._read_file(str(path), size) == data


def test_a_pack_index_is_encoded_as_the_shared_store_encodes_it():
    index = {hashlib.sha256(bytes([i])).hexdigest(): [i * 1000, i + 1] for i in range(50)}
    assert snapshot_mod._canonical_index(index) == snapshot_mod._canonical(index)
    assert snapshot_mod._canonical_index({}) == snapshot_mod._canonical({})


# -- large files copied by helper threads ---------------------------------------------------------------


def test_large_files_the_stat_cache_vouches_for_are_not_copied_again(store, make_tree, monkeypatch):
    files = large_tree(monkeypatch)
    src = make_tree(files)
    old = time.time_ns() - 86_400 * 10**9  # out of the racy window
    for path in files:
        os.utime(src / path, ns=(old, old))
    first = store.take(src)
    (src / "data/w1.bin").write_bytes(os.urandom(6000))
    copied: list[str] = []
    original = SnapshotStore._copy_to_temp

    def copy_to_temp(self, root, f, stop=None):
        copied.append(f.path)
        return original(self, root, f, stop)

    monkeypatch.setattr(SnapshotStore, "_copy_to_temp", copy_to_temp)
    second = store.take(src)
    assert copied == ["data/w1.bin"]
    before = {f.path: f.hash for f in first.files}
    after = {f.path: f.hash for f in second.files}
    assert {p for p in after if after[p] != before[p]} == {"data/w1.bin"} and after.keys() == before.keys()
    assert store.read_blob(second.id, after["data/w1.bin"]) == (src / "data/w1.bin").read_bytes()


def test_a_large_file_that_cannot_be_read_fails_the_snapshot_with_its_name(store, make_tree, monkeypatch):
    src = make_tree(large_tree(monkeypatch))
    os_open = os.open

    def refuse(path, flags, *args, **kwargs):  # as chmod 0 would, for root too
        if str(path).endswith("data/w1.bin"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(snapshot_mod.os, "open", refuse)
    with pytest.raises(SnapshotError, match=r"Cannot read .*data/w1\.bin: permission denied"):
        store.take(src)
    assert not list(store.blobs.glob(".tmp-*")) if store.blobs.exists() else True
    assert not store.manifests.exists() or not any(store.manifests.rglob("*.json"))


def test_stopping_the_copies_stops_a_copy_within_a_buffer_and_removes_it(store, tmp_path, monkeypatch):
    """An abort does not wait for a large file to be copied to its end."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(8 << 20))
    (src / "other.bin").write_bytes(os.urandom(2 << 20))  # two files: one for the helper to start on
    started, go_on = threading.Event(), threading.Event()
    original = snapshot_mod._copy_hashing
    buffers: list[int] = []

    def slow_copy(src_fd, dst_fd, stop=None):
        def readv(fd, bufs):
            if buffers:
                started.set()
                go_on.wait(30)
            buffers.append(1)
            return os_readv(fd, bufs)

        monkeypatch.setattr(snapshot_mod.os, "readv", readv)
        return original(src_fd, dst_fd, stop)

    os_readv = os.readv
    monkeypatch.setattr(snapshot_mod, "_copy_hashing", slow_copy)
    copies = snapshot_mod._LargeCopies(store, src, scan(src).files, helpers=1)
    assert started.wait(30)
    aborting = threading.Thread(target=copies.abort)
    aborting.start()
    time.sleep(0.05)
    go_on.set()
    aborting.join(30)
    assert not aborting.is_alive()
    assert len(buffers) <= 3  # 8 buffers of 1 MiB: stopped after the one under way
    assert not list(store.blobs.glob(".tmp-*")) and loose_blobs(store) == []
