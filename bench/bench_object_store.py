"""Snapshots into an S3 artifact store (the SeaweedFS test server) vs ``rclone copy`` of the same tree.

    source /tmp/services.env   # or: eval "$(bash tests/services/start-all.sh)"
    .venv/bin/python bench/bench_object_store.py [--files N] [--mb MB] [--reps 3]

a. First snapshot of a generated 10,000-file / 200 MiB tree (bench_snapshot's tree: 99% small
   files, 1% large) into a new prefix of the store, from a new cache, vs ``rclone copy`` of the
   tree to another new prefix of the same server (Debian's rclone, its default settings).
b. Resubmit of the unchanged tree from a worker whose cache is empty (a new cache folder, a new
   S3 client): the folder's stat index is fetched from the store (one GET) while the tree is
   walked, and only files whose size or mtime differ from it are hashed. Requests are counted
   with botocore's ``before-send`` event. Baseline: reading and hashing every file in a plain
   loop (what any content-addressed resubmission must do without a stat cache), and
   ``tar -cf - . | cat`` (reading alone). Also timed with the S3 client already made and
   connected (a worker process that used the store before: what is left to the snapshot).
c. The same after every file's mtime changed (what a fresh checkout looks like): the index
   vouches for nothing, every file is hashed (on every core), then the manifest's HEAD.

The page cache is warm (the tree was just written and read once). Times include creating the S3
client. Medians; ratios against the baseline of the same run. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_snapshot import make_tree, tar_to_cat

from airflow_provider_mltrain import SnapshotLimits
from airflow_provider_mltrain.core.artifacts import FsspecArtifactStore
from airflow_provider_mltrain.core.snapshot import Snapshot, SnapshotStore

BUCKET = "mltrain-bench"


def options() -> dict:
    return {
        "key": os.environ["MLTRAIN_TEST_S3_KEY"],
        "secret": os.environ["MLTRAIN_TEST_S3_SECRET"],
        "client_kwargs": {"endpoint_url": os.environ["MLTRAIN_TEST_S3_ENDPOINT"]},
    }


def new_store(prefix: str) -> FsspecArtifactStore:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # a new worker: a new client, a new connection
    return FsspecArtifactStore(f"s3://{BUCKET}/{prefix}", options())


def count_requests(store: FsspecArtifactStore) -> list[str]:
    sent: list[str] = []
    store.fs.s3.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.method))
    return sent


def rclone_copy(tree: Path, prefix: str) -> None:
    env = {
        **os.environ,
        "RCLONE_CONFIG_S3_TYPE": "s3",
        "RCLONE_CONFIG_S3_PROVIDER": "Other",
        "RCLONE_CONFIG_S3_ENDPOINT": os.environ["MLTRAIN_TEST_S3_ENDPOINT"],
        "RCLONE_CONFIG_S3_ACCESS_KEY_ID": os.environ["MLTRAIN_TEST_S3_KEY"],
        "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": os.environ["MLTRAIN_TEST_S3_SECRET"],
        "RCLONE_CONFIG": os.devnull,
    }
    env.pop("AWS_CA_BUNDLE", None)  # rclone refuses a CA bundle with a plain-HTTP endpoint
    subprocess.run(["rclone", "copy", str(tree), f"s3:{BUCKET}/{prefix}"], env=env, check=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def each(times: list[float]) -> str:
    return ", ".join(ms(t) for t in times)


def take(cache: Path, store: FsspecArtifactStore, tree: Path, limits: SnapshotLimits) -> Snapshot:
    return SnapshotStore(cache / "snapshots", artifacts=store).take(tree, limits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mb", type=int, default=200, help="total size in MiB")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--resubmit-reps", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("rclone"):
        sys.exit("rclone is not installed: apt-get install -y rclone")
    limits = SnapshotLimits(max_bytes=10 << 30, max_files=10_000_000)
    work = Path(tempfile.mkdtemp(prefix="mltrain-bench-s3-"))
    run = uuid.uuid4().hex[:8]
    try:
        tree = work / "tree"
        make_tree(tree, args.files, args.mb << 20, args.seed)
        tar_to_cat(tree)  # warm the page cache
        first: list[float] = []
        rclone: list[float] = []
        objects = requests_first = 0
        if args.reps == 0:  # case b only: one untimed first snapshot
            snap = take(work / "cache-first-0", new_store(f"first-{run}-0"), tree, limits)
        for rep in range(args.reps):
            t0 = time.perf_counter()
            rclone_copy(tree, f"rclone-{run}-{rep}")
            rclone.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            store = new_store(f"first-{run}-{rep}")
            sent = count_requests(store)
            snap = SnapshotStore(work / f"cache-first-{rep}" / "snapshots", artifacts=store).take(
                tree, limits
            )
            first.append(time.perf_counter() - t0)
            objects, requests_first = len(store.list("snapshots")), len(sent)
        resubmit: list[float] = []
        floor: list[float] = []
        reading: list[float] = []
        requests_resubmit = 0
        for rep in range(args.resubmit_reps):
            t0 = time.perf_counter()
            for f in snap.files:
                with open(tree / f.path, "rb") as fh:
                    hashlib.sha256(fh.read()).hexdigest()
            floor.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            tar_to_cat(tree)
            reading.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            store = new_store(f"first-{run}-0")
            sent = count_requests(store)
            again = SnapshotStore(work / f"cache-empty-{rep}" / "snapshots", artifacts=store).take(
                tree, limits
            )
            resubmit.append(time.perf_counter() - t0)
            requests_resubmit = len(sent)
            assert again.id == snap.id
        warm_client: list[float] = []
        for rep in range(args.resubmit_reps):
            store = new_store(f"first-{run}-0")
            store.size("snapshots/none")  # the client is made and connected, untimed
            t0 = time.perf_counter()
            again = SnapshotStore(work / f"cache-warm-{rep}" / "snapshots", artifacts=store).take(
                tree, limits
            )
            warm_client.append(time.perf_counter() - t0)
            assert again.id == snap.id
        fresh: list[float] = []
        requests_fresh = 0
        for rep in range(args.resubmit_reps):
            now = time.time_ns() - 10 * 1_000_000_000 + rep
            for f in snap.files:
                os.utime(tree / f.path, ns=(now, now))
            t0 = time.perf_counter()
            store = new_store(f"first-{run}-0")
            sent = count_requests(store)
            again = SnapshotStore(work / f"cache-fresh-{rep}" / "snapshots", artifacts=store).take(
                tree, limits
            )
            fresh.append(time.perf_counter() - t0)
            requests_fresh = len(sent)
            assert again.id == snap.id
        b = statistics.median(resubmit)
        blobs = len({f.hash for f in snap.files})
        size = snap.total_size / (1 << 20)
        print(f"tree: {len(snap.files):,} files, {size:.0f} MiB, {blobs:,} distinct blobs")
        if first:
            a, base = statistics.median(first), statistics.median(rclone)
            print(f"a. first snapshot into S3        {ms(a):>10}  ({each(first)})")
            print(f"   rclone copy of the same tree  {ms(base):>10}  ({each(rclone)})")
            print(f"   ratio                         {a / base:>9.2f}x  (goal <= 1.0x)")
            print(f"   objects written: {objects:,}; requests sent: {requests_first:,}")
        print(f"b. resubmit, empty cache         {ms(b):>10}  ({each(resubmit)}; goal < 0.5 s)")
        fl, rd = statistics.median(floor), statistics.median(reading)
        print(f"   read + sha256 of every file   {ms(fl):>10}  (ratio {b / fl:.2f}x)")
        print(f"   tar -cf - . | cat             {ms(rd):>10}  (ratio {b / rd:.2f}x)")
        print(
            f"   requests: {requests_resubmit} for {blobs:,} blobs "
            f"(goal <= {max(1, blobs // 1000)}: one per 1,000 blobs)"
        )
        w = statistics.median(warm_client)
        print(f"   the same, S3 client made      {ms(w):>10}  ({each(warm_client)})")
        c = statistics.median(fresh)
        print(f"c. resubmit, new mtimes, empty   {ms(c):>10}  ({each(fresh)})")
        print(f"   read + sha256 of every file   {ms(fl):>10}  (ratio {c / fl:.2f}x)")
        print(f"   requests: {requests_fresh}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        # The store is the test server, on this machine's disk: leave nothing of this run there.
        cleanup = new_store("cleanup")
        for prefix in {"first", "rclone"}:
            for rep in range(max(args.reps, 1)):
                with contextlib.suppress(FileNotFoundError):
                    cleanup.fs.rm(f"{BUCKET}/{prefix}-{run}-{rep}", recursive=True)


if __name__ == "__main__":
    main()
