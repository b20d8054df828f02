"""Snapshot speed on a generated 10,000-file, 200 MB tree, against baselines measured in the same run.

    .venv/bin/python bench/bench_snapshot.py [--files N] [--mb MB] [--cold-reps 5] [--warm-reps 20]

a. First snapshot into a new (empty) workspace vs ``tar -cf - . | cat >/dev/null`` (both read every
   byte; ``tar -cf /dev/null`` would not, GNU tar skips reading when the archive is /dev/null).
b. Re-snapshot of the unchanged tree (stat cache warm, git record written) vs ``git status
   --porcelain``; b2 the same re-snapshot made to walk the tree, as outside a git work tree.
c. Re-snapshot after one file was rewritten (git's index says so: the tree is walked) vs b2.

For a., the processor time of both is reported too (user and system, of this process's threads and
of the children waited for): how much work each does, which the cores and the disk do not change.

The page cache is warm for every case: the tree was just written, and one untimed tar pass runs
before timing. Every file's mtime is set one day back before the git commit, so neither the stat
cache's 2 s "racy" window nor git's racy-clean check forces a re-hash of unchanged files.
Results are medians; ratios are against the baseline of the same run. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from airflow_provider_mltrain import SnapshotLimits, Workspace
from airflow_provider_mltrain.core import snapshot_git
from airflow_provider_mltrain.core.snapshot import Snapshot

T = TypeVar("T")

MiB = 1024 * 1024
DAY_NS = 86_400 * 1_000_000_000
GITIGNORE = "*.pyc\n__pycache__/\n.venv/\nbuild/\ndist/\n*.egg-info/\n.ipynb_checkpoints/\n"
EXTENSIONS = ("py", "json", "txt", "csv", "yaml", "md")
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


# -- the tree --------------------------------------------------------------------------------------


def plan_tree(rng: random.Random, n_files: int, total_bytes: int) -> list[tuple[str, int]]:
    """(relative path, size) for ``n_files`` files summing to exactly ``total_bytes``.

    99% small files (log-normal, median ~3 KB, at most 64 KB) and 1% large ones (0.3 to ~5 MB, so
    some are read whole and some streamed) that take up the rest, in three levels of folders.
    """
    folders = [""]
    for a in range(8):
        top = f"pkg_{a}"
        folders.append(top)
        for b in range(6):
            mid = f"{top}/mod_{b}"
            folders.append(mid)
            folders += [f"{mid}/part_{c}" for c in range(5)]
    n_large = max(1, n_files // 100)
    n_small = n_files - n_large - 1  # one more file: the root .gitignore
    small = [min(64 * 1024, max(64, int(rng.lognormvariate(8.0, 1.0)))) for _ in range(n_small)]
    rest = total_bytes - sum(small) - len(GITIGNORE)
    if rest < n_large * 1024:
        raise SystemExit("--mb is too small for that many files")
    weights = [rng.uniform(0.2, 3.0) for _ in range(n_large)]
    large = [int(rest * w / sum(weights)) for w in weights]
    large[-1] += rest - sum(large)
    sizes = small + large
    rng.shuffle(sizes)
    plan = [(".gitignore", len(GITIGNORE))]
    for i, size in enumerate(sizes):
        folder = rng.choice(folders)
        name = f"file_{i:05d}.{rng.choice(EXTENSIONS) if size <= 64 * 1024 else 'bin'}"
        plan.append((f"{folder}/{name}" if folder else name, size))
    return plan


def make_tree(root: Path, n_files: int, total_bytes: int, seed: int) -> None:
    rng = random.Random(seed)
    plan = plan_tree(rng, n_files, total_bytes)
    old_ns = time.time_ns() - DAY_NS
    for rel, size in plan:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(GITIGNORE.encode() if rel == ".gitignore" else rng.randbytes(size))
        os.utime(path, ns=(old_ns, old_ns))
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "bench tree"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, env=env)
    git_status(root)  # refreshes the index once, as any first `git status` would


def rewrite(path: Path, rep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(f"# edit {rep}\n".encode() + data[len(f"# edit {rep}\n") :])


# -- what is timed ---------------------------------------------------------------------------------


def tar_to_cat(root: Path) -> None:
    """The read-everything baseline: ``tar -cf - . | cat >/dev/null`` (``.git`` left out, as snapshots do)."""
    tar = subprocess.Popen(
        ["tar", "-C", str(root), "--exclude=./.git", "-cf", "-", "."], stdout=subprocess.PIPE
    )
    cat = subprocess.run(["cat"], stdin=tar.stdout, stdout=subprocess.DEVNULL, check=True)
    assert tar.stdout is not None
    tar.stdout.close()
    if tar.wait() != 0 or cat.returncode != 0:
        raise RuntimeError("tar | cat failed")


def tar_to_tar(root: Path, dest: Path) -> None:
    """Context for a.: copying the tree into a new folder, ``tar -cf - . | tar -xf -``."""
    dest.mkdir()
    tar = subprocess.Popen(
        ["tar", "-C", str(root), "--exclude=./.git", "-cf", "-", "."], stdout=subprocess.PIPE
    )
    untar = subprocess.run(["tar", "-C", str(dest), "-xf", "-"], stdin=tar.stdout, check=True)
    assert tar.stdout is not None
    tar.stdout.close()
    if tar.wait() != 0 or untar.returncode != 0:
        raise RuntimeError("tar | tar -x failed")


def git_status(root: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True, check=True
    ).stdout


def timed(fn: Callable[..., T], *args: object) -> tuple[float, T]:
    """Milliseconds one call of ``fn(*args)`` takes, and what it returned."""
    start = time.perf_counter()
    result = fn(*args)
    return (time.perf_counter() - start) * 1000, result


def cpu_timed(fn: Callable[..., T], *args: object) -> tuple[float, float, T]:
    """Like :func:`timed`, with the processor time (user and system, ms) the call took in this
    process's threads and in the children it waited for (tar and cat; git's listing)."""

    def used() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return (own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime) * 1000

    before = used()
    ms, result = timed(fn, *args)
    return ms, used() - before, result


def first_snapshot(ws_root: Path, tree: Path, limits: SnapshotLimits) -> Snapshot:
    """What a first submission pays: a new workspace, an empty store, every file hashed and stored."""
    return Workspace(ws_root, snapshot_limits=limits).snapshots.take(tree, limits)


# -- report ----------------------------------------------------------------------------------------


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def report(times: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    med = {name: statistics.median(values) for name, values in times.items()}
    rows = [["measurement", "reps", "median ms", "min ms", "max ms"]]
    rows += [
        [name, str(len(v)), f"{med[name]:.1f}", f"{min(v):.1f}", f"{max(v):.1f}"] for name, v in times.items()
    ]
    print_table(rows)
    print()
    cold, tar, copy, warm, git, changed, walked = med.values()

    def verdict(ok: bool) -> str:
        return "yes" if ok else "NO"

    print_table(
        [
            ["comparison", "value", "goal", "met"],
            ["a. first snapshot / tar | cat", f"{cold / tar:.2f}x", "<= 1.5x", verdict(cold <= 1.5 * tar)],
            ["a. first snapshot / tar | tar -x", f"{cold / copy:.2f}x", "(context)", "-"],
            ["b. unchanged re-snapshot", f"{warm:.1f} ms", "<= 100 ms", verdict(warm <= 100)],
            ["b. unchanged re-snapshot / git status", f"{warm / git:.2f}x", "<= 1.0x", verdict(warm <= git)],
            ["b2. unchanged, walked / git status", f"{walked / git:.2f}x", "(outside git)", "-"],
            [
                "c. one file changed / unchanged, walked",
                f"{changed / walked:.2f}x",
                "<= 2x",
                verdict(changed <= 2 * walked),
            ],
        ]
    )
    # Processor time says how much work each does, whatever the cores and the disk: a wall-time
    # ratio can only fall below the work's ratio by using the cores more fully than tar | cat.
    cold_cpu, tar_cpu = (statistics.median(v) for v in cpu.values())
    print()
    print_table(
        [
            ["processor time (context)", "median ms", "cores busy"],
            ["a. first snapshot", f"{cold_cpu:.1f}", f"{cold_cpu / cold:.2f}"],
            ["a. tar -cf - . | cat >/dev/null", f"{tar_cpu:.1f}", f"{tar_cpu / tar:.2f}"],
            ["a. first snapshot / tar | cat", f"{cold_cpu / tar_cpu:.2f}x", "-"],
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mb", type=int, default=200, help="total size in MiB")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--cold-reps", type=int, default=5)
    parser.add_argument("--warm-reps", type=int, default=20)
    parser.add_argument("--tmp", help="folder for the tree and the workspaces (default: the system temp)")
    parser.add_argument("--profile", action="store_true", help="also cProfile one unchanged re-snapshot")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mltrain-bench-snapshot-", dir=args.tmp))
    times: dict[str, list[float]] = {
        "a. first snapshot, new workspace": [],
        "a. tar -cf - . | cat >/dev/null": [],
        "a. tar -cf - . | tar -xf - (a copy)": [],
        "b. re-snapshot, unchanged": [],
        "b. git status --porcelain": [],
        "c. re-snapshot, 1 file rewritten": [],
        "b2. re-snapshot, unchanged, walked (git's index not asked)": [],
    }
    cold, tar, copy, warm, git, changed, walked = times.values()
    cpu: dict[str, list[float]] = {"a. first snapshot": [], "a. tar | cat": []}
    try:
        tree = tmp / "tree"
        tree.mkdir()
        started = time.perf_counter()
        make_tree(tree, args.files, args.mb * MiB, args.seed)
        print(
            f"tree: {args.files:,} files, {args.mb} MiB, seed {args.seed}, in {tmp} "
            f"(generated and committed to git in {time.perf_counter() - started:.1f} s)"
        )
        print(
            "caches: page cache warm for every case (tree just written, one untimed tar pass);\n"
            "        stat cache warm for b and c (mtimes set one day back, outside the 2 s racy window)"
        )
        limits = SnapshotLimits(max_bytes=(args.mb + 1) * MiB, max_files=args.files + 1)
        tar_to_cat(tree)

        # a. first snapshot into an empty store vs tar | cat (and a plain copy, for context), interleaved.
        for rep in range(args.cold_reps):
            ms, used, _ = cpu_timed(tar_to_cat, tree)
            tar.append(ms)
            cpu["a. tar | cat"].append(used)
            dest = tmp / f"copy-{rep}"
            copy.append(timed(tar_to_tar, tree, dest)[0])
            os.sync()  # the copy's 200 MB, else written back to disk during the snapshot's timing
            ws_root = tmp / f"ws-cold-{rep}"
            ms, used, _ = cpu_timed(first_snapshot, ws_root, tree, limits)
            cold.append(ms)
            cpu["a. first snapshot"].append(used)
            for folder in (dest, ws_root):
                shutil.rmtree(folder)
            os.sync()  # what was just written must not be flushed during the next timing

        # b. unchanged re-snapshot (stat cache warm) vs git status, interleaved.
        ws = Workspace(tmp / "ws-warm", snapshot_limits=limits)
        first = ws.snapshots.take(tree, limits)
        if len(first.files) != args.files:
            raise RuntimeError(f"snapshot holds {len(first.files)} files, expected {args.files}")
        os.sync()
        ws.snapshots.take(tree, limits)  # the walk that leaves the git record (folders > 2 s old)
        if not list(ws.snapshots.statcache.glob("*.git.json")):
            raise RuntimeError("no git record was written: the tree or its index changed within 2 s")
        asked = snapshot_git.work_tree_index
        for _ in range(args.warm_reps):
            git.append(timed(git_status, tree)[0])
            warm.append(timed(ws.snapshots.take, tree, limits)[0])
            snapshot_git.work_tree_index = lambda root: None  # as outside a git work tree
            try:
                walked.append(timed(ws.snapshots.take, tree, limits)[0])
            finally:
                snapshot_git.work_tree_index = asked
            ws.snapshots.take(tree, limits)  # the record again, which the walk without git removed
        if git_status(tree) or ws.snapshots.take(tree, limits).id != first.id:
            raise RuntimeError("the tree changed during the unchanged re-snapshots")

        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(ws.snapshots.take, tree, limits)
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(25)

        # c. one small file rewritten (same size, new content) before each re-snapshot.
        edited = next(tree / f.path for f in first.files if f.path.endswith(".py") and f.size > 64)
        ids: set[str] = set()
        for rep in range(args.warm_reps):
            rewrite(edited, rep)
            ms, snap = timed(ws.snapshots.take, tree, limits)
            changed.append(ms)
            ids.add(snap.id)
        if len(ids) != args.warm_reps:
            raise RuntimeError("a rewritten file did not give a new snapshot")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(times, cpu)


if __name__ == "__main__":
    main()
