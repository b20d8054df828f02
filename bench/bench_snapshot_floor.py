"""How far a first snapshot's two single-core phases are from what the kernel and SHA-256 cost.

    .venv/bin/python bench/bench_snapshot_floor.py [--files 10000] [--mb 200] [--reps 9] [--tmp DIR]

On the tree of ``bench_snapshot.py`` (the same generator and seed), each in processor time of the
thread that does it, medians of ``--reps``:

1. The walk: the product's ``scan()`` against a bare ``os.scandir`` + ``lstat`` loop in Python
   (what any Python walk pays) and against ``find -printf`` (a walk in C that also ``lstat``s
   every entry, in its own process: what a native walker could reach).
2. The small files' loop (files of at most 1 MiB): the product's ``_store_small`` into a new
   store, against the sum of what it cannot avoid, each measured alone on the same files: the
   ``open``/``read``/``close`` of each file, SHA-256 of the bytes, and writing them into one file
   with ``writev`` as a pack does. What is left between the two is the interpreter's share, the
   most a native loop could save.

Processor time, not wall time: the question is how much work there is and whose it is. Nothing
here asserts a time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_snapshot import MiB, make_tree  # the same tree, from the same generator

from airflow_provider_mltrain.core import snapshot as S

SEED = 20240601  # bench_snapshot.py's


def cpu_of(fn: Callable[[], object], reps: int, children: bool = False) -> float:
    """Median processor time (ms) of ``fn`` on this thread, or of the children it waited for."""
    times = []
    for _ in range(reps):
        if children:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            fn()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            times.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        else:
            start = time.thread_time()
            fn()
            times.append(time.thread_time() - start)
    return statistics.median(times) * 1000


def bare_walk(root: str) -> int:
    n, stack = 0, [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                entry.stat(follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != ".git":
                        stack.append(entry.path)
                else:
                    n += 1
    return n


def find_walk(root: str) -> None:
    subprocess.run(
        ["find", root, "-name", ".git", "-prune", "-o", "-printf", "%s %T@ %C@ %i %m\n"],
        stdout=subprocess.DEVNULL,
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--tmp", default=None, help="where the tree and stores go (default: the temp folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-floor-", dir=args.tmp))
    try:
        tree = work / "tree"
        tree.mkdir()
        make_tree(tree, args.files, args.mb * MiB, SEED)
        root = str(tree)
        scanned = S.scan(tree)
        small = [f for f in scanned.files if f.size <= S.SMALL_FILE]
        datas = [(tree / f.path).read_bytes() for f in small]
        print(
            f"tree: {len(scanned.files)} files, {len(small)} of them small "
            f"({sum(map(len, datas)) / MiB:.0f} MiB); {args.reps} reps; {os.cpu_count()} cores"
        )

        walk = {
            "scan() (the product)": cpu_of(lambda: S.scan(tree), args.reps),
            "os.scandir + lstat loop (Python)": cpu_of(lambda: bare_walk(root), args.reps),
            "find -printf (C, its own process)": cpu_of(lambda: find_walk(root), args.reps, children=True),
        }

        def read_all() -> None:
            flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
            for f in small:
                fd = os.open(f"{root}/{f.path}", flags)
                try:
                    os.read(fd, f.size + 1)
                finally:
                    os.close(fd)

        def hash_all() -> None:
            for data in datas:
                hashlib.sha256(data).hexdigest()

        def write_all() -> None:
            fd, tmp = tempfile.mkstemp(dir=work)
            try:
                batch: list[bytes] = []
                size = 0
                for data in datas:
                    batch.append(data)
                    size += len(data)
                    if size >= S.CHUNK or len(batch) >= 512:  # as _PackWriter does
                        os.writev(fd, batch)
                        batch, size = [], 0
                os.writev(fd, batch)
            finally:
                os.close(fd)
                os.unlink(tmp)

        stores = iter(range(1_000_000))

        def product_loop() -> None:
            store = S.SnapshotStore(work / f"store-{next(stores)}")
            pack = S._PackWriter(store, store._loose_digests())  # as _store_all makes it for this many
            try:
                store._store_small(tree, small, pack)
            finally:
                pack.abort()
            shutil.rmtree(store.root, ignore_errors=True)

        loop = {
            "_store_small (the product)": cpu_of(product_loop, args.reps),
            "open + read + close": cpu_of(read_all, args.reps),
            "SHA-256": cpu_of(hash_all, args.reps),
            "writev into one file": cpu_of(write_all, args.reps),
        }
        floor = loop["open + read + close"] + loop["SHA-256"] + loop["writev into one file"]

        print("\n| the walk | processor time | ÷ `find` |\n|---|---|---|")
        for name, ms in walk.items():
            print(f"| {name} | {ms:.1f} ms | {ms / walk['find -printf (C, its own process)']:.2f}x |")
        print("\n| the small files' loop | processor time | per file |\n|---|---|---|")
        for name, ms in loop.items():
            print(f"| {name} | {ms:.1f} ms | {ms * 1000 / len(small):.1f} µs |")
        print(f"| the three together (the floor) | {floor:.1f} ms | {floor * 1000 / len(small):.1f} µs |")
        product = loop["_store_small (the product)"]
        print(
            f"\nsmall files' loop ÷ its floor: {product / floor:.2f}x; "
            f"the interpreter's share at most {max(0.0, product - floor):.1f} ms"
        )
        product_walk, c_walk = walk["scan() (the product)"], walk["find -printf (C, its own process)"]
        print(
            f"walk: scan() ÷ find: {product_walk / c_walk:.2f}x; "
            f"a native walker could save at most {product_walk - c_walk:.1f} ms"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
