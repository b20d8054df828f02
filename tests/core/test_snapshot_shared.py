"""Snapshots in a shared artifact store (the real S3 server): packed, deduplicated across hosts,
fetched back by a host whose cache is empty."""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.core.artifacts import ArtifactStoreError, LocalArtifactStore
from airflow_provider_mltrain.core.rerun import rerun
from airflow_provider_mltrain.core.snapshot import SnapshotStore


@contextlib.contextmanager
def requests(store) -> Iterator[list[str]]:
    """Every HTTP request the store's S3 client sends, as "METHOD key"."""
    sent: list[str] = []

    def record(request, **_kwargs) -> None:
        sent.append(f"{request.method} {request.url.split('?')[0]}")

    events = store.fs.s3.meta.events
    events.register("before-send.s3", record)
    try:
        yield sent
    finally:
        events.unregister("before-send.s3", record)


@pytest.fixture
def tree(make_tree) -> Path:
    files: dict[str, str | bytes] = {f"pkg/m{i}.py": f"X = {i}\n" * 20 for i in range(300)}
    files["train.py"] = "print('hi')\n"
    files["data/big.bin"] = os.urandom(3 << 20)
    files["data/copy.bin"] = files["data/big.bin"]  # same content: stored once
    return make_tree(files)


def test_first_snapshot_packs_small_files_and_stores_large_ones_alone(s3_store, tree, tmp_path):
    snap = SnapshotStore(tmp_path / "a", artifacts=s3_store).take(tree)
    objects = s3_store.list("snapshots")
    packs = [n for n in objects if n.endswith(".pack")]
    blobs = [n for n in objects if n.startswith("snapshots/blobs/")]
    assert len(packs) == 1
    assert len(blobs) == 1
    assert f"snapshots/manifests/{snap.id[:2]}/{snap.id}.json" in objects
    assert len([n for n in objects if n.startswith("snapshots/statindex/")]) == 1
    assert len(objects) == 6  # pack, its index, one large blob, locations, manifest, stat index


def test_empty_cache_resubmit_of_an_unchanged_tree_sends_one_request(s3_store, tree, tmp_path):
    first = SnapshotStore(tmp_path / "a", artifacts=s3_store).take(tree)
    before = s3_store.list("snapshots")
    other_host = SnapshotStore(tmp_path / "b", artifacts=s3_store)
    with requests(s3_store) as sent:
        again = other_host.take(tree)
    assert again.id == first.id
    # The one request is the GET of the folder's stat index (written after the manifest it names).
    assert len(sent) == 1 and sent[0].startswith("GET ") and "/snapshots/statindex/" in sent[0]
    assert s3_store.list("snapshots") == before
    assert not other_host.blobs.exists()  # nothing written to the empty cache either


def test_changed_tree_from_an_empty_cache_uploads_only_the_new_blob(s3_store, tree, tmp_path):
    SnapshotStore(tmp_path / "a", artifacts=s3_store).take(tree)
    (tree / "pkg/m7.py").write_text("X = 'changed'\n")
    other_host = SnapshotStore(tmp_path / "b", artifacts=s3_store)
    with requests(s3_store) as sent:
        other_host.take(tree)
    puts = [r for r in sent if r.startswith("PUT ")]
    assert [p.rsplit(".", 1)[-1] for p in puts] == ["pack", "idx", "json", "json", "json"]
    assert "/snapshots/statindex/" in puts[-1]  # written last, after the manifest it names
    listings = [r for r in sent if r.startswith("GET ") and r.endswith("/mltrain-test")]
    assert len(listings) <= 4  # one listing per prefix, never a request per blob
    new_pack = max(
        (n for n in s3_store.list("snapshots/packs") if n.endswith(".pack")),
        key=lambda n: -1 if s3_store.size(n) > 1000 else 1,
    )
    assert s3_store.size(new_pack) == len("X = 'changed'\n")


def test_empty_cache_materializes_from_the_store_by_ranged_reads(s3_store, tree, tmp_path):
    snap = SnapshotStore(tmp_path / "a", artifacts=s3_store).take(tree)
    other_host = SnapshotStore(tmp_path / "b", artifacts=s3_store)
    fetched = other_host.get(snap.id)
    with requests(s3_store) as sent:
        other_host.materialize(fetched, tmp_path / "out")
    assert len(sent) <= 6  # locations, one read of the pack, the large blob
    cmp = filecmp.dircmp(tree, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.listdir(tree))
    assert not cmp.diff_files
    assert (tmp_path / "out/pkg/m5.py").read_text() == (tree / "pkg/m5.py").read_text()
    assert (tmp_path / "out/data/big.bin").read_bytes() == (tree / "data/big.bin").read_bytes()


def test_a_corrupt_pack_is_refused(s3_store, tree, tmp_path):
    snap = SnapshotStore(tmp_path / "a", artifacts=s3_store).take(tree)
    pack = next(n for n in s3_store.list("snapshots/packs") if n.endswith(".pack"))
    data = bytearray(s3_store.get_bytes(pack))
    data[0] ^= 0xFF
    s3_store.put_bytes(pack, bytes(data))
    from airflow_provider_mltrain.core.errors import SnapshotError

    with pytest.raises(SnapshotError, match="corrupt"):
        SnapshotStore(tmp_path / "b", artifacts=s3_store).materialize(snap, tmp_path / "out")


def test_run_from_a_host_with_an_empty_cache_fetches_the_snapshot(s3_store, make_tree, tmp_path):
    src = make_tree({"train.py": "import helper\nprint('ran', helper.X)\n", "helper.py": "X = 42\n"})
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    first_host = Workspace(tmp_path / "host1", database_url=db, artifact_store=s3_store)
    run = Experiment(first_host, "exp").submit(ScriptRunConfig(str(src), "train.py"))
    run.wait_for_completion(timeout=120)
    second_host = Workspace(tmp_path / "host2", database_url=db, artifact_store=s3_store)
    with requests(s3_store) as sent:
        again = Experiment(second_host, "exp").submit(ScriptRunConfig(str(src), "train.py"))
    assert not [r for r in sent if r.startswith("PUT ") and "/snapshots/" in r]
    again.wait_for_completion(timeout=120)
    assert "ran 42" in again.read_log().decode()
    # A rerun on the second host needs nothing but the run store and the artifact store.
    third_host = Workspace(tmp_path / "host3", database_url=db, artifact_store=s3_store)
    retried = rerun(third_host, run.id)
    retried.wait_for_completion(timeout=120)
    assert "ran 42" in retried.read_log().decode()
    assert (third_host.root / "snapshots" / "blobs").is_dir()


def test_one_file_is_read_from_the_store_by_one_ranged_read(s3_store, tree, tmp_path):
    snap = SnapshotStore(tmp_path / "a", artifacts=s3_store).take(tree)
    entry = next(f for f in snap.files if f.path == "pkg/m9.py")
    other_host = SnapshotStore(tmp_path / "b", artifacts=s3_store)
    with requests(s3_store) as sent:
        data = other_host.read_blob(snap.id, entry.hash)
    assert data == (tree / "pkg/m9.py").read_bytes()
    assert len(sent) <= 3  # the locations object, then one ranged GET of the pack
    assert other_host.read_blob(snap.id, entry.hash) == data  # now from the cache


def test_a_shared_folder_works_as_the_store_too(tree, tmp_path):
    shared = LocalArtifactStore(tmp_path / "nfs")
    snap = SnapshotStore(tmp_path / "a", artifacts=shared).take(tree)
    assert len([n for n in shared.list("snapshots") if n.endswith(".pack")]) == 1
    other_host = SnapshotStore(tmp_path / "b", artifacts=shared)
    other_host.materialize(other_host.get(snap.id), tmp_path / "out")
    assert (tmp_path / "out/pkg/m3.py").read_bytes() == (tree / "pkg/m3.py").read_bytes()
    assert (tmp_path / "out/data/copy.bin").read_bytes() == (tree / "data/big.bin").read_bytes()


# -- the stat index: what a host with an empty cache trusts ---------------------------------------

DAY_NS = 86_400 * 1_000_000_000


def age(tree: Path) -> None:
    """Every file's mtime one day back, out of the racy window (as in any checkout not just made)."""
    old = time.time_ns() - DAY_NS
    for path in tree.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(old, old))


def cold_id(tree: Path, tmp_path: Path) -> str:
    """The id a full hash of every byte gives (a local store, nothing cached)."""
    return SnapshotStore(tmp_path / f"cold-{time.monotonic_ns()}").take(tree).id


def take_reading(store: SnapshotStore, tree: Path) -> tuple[str, int]:
    """The snapshot's id and how many bytes it had to read and hash."""
    totals = [0]
    snap = store.take(tree, progress=lambda done, total: totals.append(total))
    return snap.id, max(totals)


def same_size_edit(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[::-1] if data[::-1] != data else data[1:] + b"#")


def test_an_empty_cache_hashes_only_the_files_the_stat_index_does_not_vouch_for(s3_store, tree, tmp_path):
    age(tree)
    SnapshotStore(tmp_path / "a", artifacts=s3_store).take(tree)
    changed = tree / "pkg/m7.py"
    stat = changed.stat()
    same_size_edit(changed)  # same size, another mtime: re-hashed
    os.utime(changed, ns=(stat.st_mtime_ns - 10**9, stat.st_mtime_ns - 10**9))
    added = tree / "pkg/new.py"  # a file the index does not list: hashed, whatever its mtime
    added.write_text("NEW = 1\n")
    os.utime(added, ns=(stat.st_mtime_ns, stat.st_mtime_ns))
    snap_id, read = take_reading(SnapshotStore(tmp_path / "b", artifacts=s3_store), tree)
    assert snap_id == cold_id(tree, tmp_path)
    assert read == changed.stat().st_size + added.stat().st_size  # not the 6 MiB of the tree


def test_a_change_that_keeps_size_and_mtime_is_the_documented_limit_of_the_stat_index(
    s3_store, tree, tmp_path
):
    age(tree)
    host_a = SnapshotStore(tmp_path / "a", artifacts=s3_store)
    first = host_a.take(tree)
    changed = tree / "pkg/m7.py"
    stat = changed.stat()
    same_size_edit(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime put back (touch -r, cp -p)
    # A host with an empty cache trusts size + mtime, as rsync's quick check does: it misses it.
    assert SnapshotStore(tmp_path / "b", artifacts=s3_store).take(tree).id == first.id
    # The host's own stat cache also compares ctime and inode: it sees the change.
    assert host_a.take(tree).id == cold_id(tree, tmp_path) != first.id


@pytest.mark.parametrize("damage", ["missing", "corrupt", "foreign", "bad hash", "other version"])
def test_a_missing_corrupt_or_foreign_stat_index_falls_back_to_hashing_every_file(
    s3_store, tree, tmp_path, damage
):
    age(tree)
    SnapshotStore(tmp_path / "a", artifacts=s3_store).take(tree)
    (name,) = s3_store.list("snapshots/statindex")
    index = json.loads(s3_store.get_bytes(name))
    changed = tree / "pkg/m7.py"
    stat = changed.stat()
    same_size_edit(changed)  # what only a full hash sees (size and mtime kept)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    if damage == "missing":
        s3_store.delete([name])
    elif damage == "corrupt":
        s3_store.put_bytes(name, b'{"version": 1, "root": ')
    elif damage == "foreign":  # another folder's index under this folder's name
        s3_store.put_bytes(name, json.dumps({**index, "root": str(tmp_path / "elsewhere")}).encode())
    elif damage == "bad hash":
        index["files"][0][3] = "not a hash"
        s3_store.put_bytes(name, json.dumps(index).encode())
    else:
        s3_store.put_bytes(name, json.dumps({**index, "version": 99}).encode())
    snap_id, read = take_reading(SnapshotStore(tmp_path / "b", artifacts=s3_store), tree)
    assert snap_id == cold_id(tree, tmp_path)
    assert read == sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())


# -- parallel uploads ------------------------------------------------------------------------------


class GatedStore(LocalArtifactStore):
    """A shared folder whose first ``parties`` file uploads wait until all of them are under way at
    once (a broken barrier, after a generous deadline, when they run one after the other); puts
    of names starting with ``fail`` are refused."""

    def __init__(self, root: Path, parties: int, fail: str | None = None):
        super().__init__(root)
        self.barrier = threading.Barrier(parties, timeout=60)
        self.waiting = parties
        self.fail = fail
        self.lock = threading.Lock()

    def put_file(self, name, path):
        with self.lock:
            wait = self.waiting > 0
            self.waiting -= 1
        if wait:
            self.barrier.wait()
        if self.fail is not None and name.startswith(self.fail):
            raise ArtifactStoreError(f"injected: cannot write {name}")
        super().put_file(name, path)


@pytest.fixture
def two_large(make_tree) -> Path:
    files: dict[str, str | bytes] = {f"pkg/m{i}.py": f"X = {i}\n" * 20 for i in range(50)}
    files["train.py"] = "print('hi')\n"
    files["data/a.bin"] = os.urandom(2 << 20)
    files["data/b.bin"] = os.urandom(2 << 20)
    return make_tree(files)


def test_a_first_snapshot_uploads_its_pack_and_large_files_at_once(two_large, tmp_path):
    shared = GatedStore(tmp_path / "nfs", parties=3)  # the pack and the two large files
    snap = SnapshotStore(tmp_path / "a", artifacts=shared).take(two_large)
    assert shared.size(f"snapshots/manifests/{snap.id[:2]}/{snap.id}.json") is not None
    other_host = SnapshotStore(tmp_path / "b", artifacts=shared)
    other_host.materialize(other_host.get(snap.id), tmp_path / "out")
    assert (tmp_path / "out/data/b.bin").read_bytes() == (two_large / "data/b.bin").read_bytes()


def test_a_failed_upload_fails_the_snapshot_without_a_manifest_and_a_retry_completes(two_large, tmp_path):
    failing = GatedStore(tmp_path / "nfs", parties=3, fail="snapshots/blobs/")
    with pytest.raises(ArtifactStoreError, match="injected"):
        SnapshotStore(tmp_path / "a", artifacts=failing).take(two_large)
    left = failing.list("snapshots")
    assert not [n for n in left if "/manifests/" in n or "/locations/" in n or "/statindex/" in n]
    healthy = LocalArtifactStore(tmp_path / "nfs")
    snap = SnapshotStore(tmp_path / "a", artifacts=healthy).take(two_large)
    assert snap.id == cold_id(two_large, tmp_path)
    assert healthy.size(f"snapshots/manifests/{snap.id[:2]}/{snap.id}.json") is not None


def test_the_first_snapshot_sends_one_put_per_object_and_few_listings(s3_store, tree, tmp_path):
    with requests(s3_store) as sent:
        SnapshotStore(tmp_path / "a", artifacts=s3_store).take(tree)
    puts = sorted(r.split("/snapshots/", 1)[1].split("/", 1)[0] for r in sent if r.startswith("PUT "))
    # pack + its index, the large blob (stored once for its two copies), locations, manifest, index
    assert puts == ["blobs", "locations", "manifests", "packs", "packs", "statindex"]
    # The rest asks what the store holds (the index, the manifest, a listing of blobs and of packs:
    # s3fs sends a HEAD and a listing for each): a few requests, none per file of the 302.
    assert len(sent) - len(puts) <= 10


def test_an_ignore_file_changed_since_the_stat_index_is_obeyed_by_a_host_with_an_empty_cache(
    s3_store, tree, tmp_path
):
    (tree / "pkg/.gitignore").write_text("m1*.py\n")
    age(tree)
    first = SnapshotStore(tmp_path / "a", artifacts=s3_store).take(tree)
    assert "pkg/m10.py" not in first.paths() and "pkg/m2.py" in first.paths()
    (tree / "pkg/.gitignore").write_text("m2*.py\n")  # the index's record of it no longer holds
    snap = SnapshotStore(tmp_path / "b", artifacts=s3_store).take(tree)
    assert "pkg/m10.py" in snap.paths() and "pkg/m2.py" not in snap.paths()
    assert snap.id == cold_id(tree, tmp_path)
