"""Snapshots in a shared artifact store (the real S3 server): packed, deduplicated across hosts,
fetched back by a host whose cache is empty."""

from __future__ import annotations

import contextlib
import filecmp
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
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
    from airflow_provider_mltrain.core.artifacts import LocalArtifactStore

    shared = LocalArtifactStore(tmp_path / "nfs")
    snap = SnapshotStore(tmp_path / "a", artifacts=shared).take(tree)
    assert len([n for n in shared.list("snapshots") if n.endswith(".pack")]) == 1
    other_host = SnapshotStore(tmp_path / "b", artifacts=shared)
    other_host.materialize(other_host.get(snap.id), tmp_path / "out")
    assert (tmp_path / "out/pkg/m3.py").read_bytes() == (tree / "pkg/m3.py").read_bytes()
    assert (tmp_path / "out/data/copy.bin").read_bytes() == (tree / "data/big.bin").read_bytes()
