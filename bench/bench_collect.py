"""Collecting a run's outputs without following links or recursing, against what it replaced.

    .venv/bin/python bench/bench_collect.py [--files 2000 --mb 64 --reps 5]

The same generated tree (``--files`` small files in 40 folders plus one file of ``--mb`` MiB, and a
chain of 1,000 nested folders) is collected each way, interleaved, into a fresh destination:

- **local**: ``runner/tree.copy_tree`` (hard links, every open ``O_NOFOLLOW`` from the parent's
  descriptor), as ``LocalTarget.collect`` does, against the former ``shutil.copytree`` with hard
  links (``symlinks=True``; recursive, so the nested chain is left out of its tree: it would raise
  RecursionError) and the read-everything baseline ``tar -cf - outputs | cat``.
- **ssh** (needs the test sshd's ``MLTRAIN_TEST_SSH_*``): ``SSHTarget.collect``'s transfer, one tar
  stream from ``remote.py pack``, against the former per-file SFTP walk and ``sftp.get``, both
  on a new connection (its setup is paid). The nested chain is left out of the SSH tree too.

Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from airflow_provider_mltrain.core.runfiles import extract_tar
from airflow_provider_mltrain.runner import tree

MAKE_TREE = """
import os, random, sys
root, files, mb, deep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(1)
for i in range(files):
    folder = os.path.join(root, "outputs", "f%d" % (i % 40))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "%d.bin" % i), "wb") as f:
        f.write(rng.randbytes(4096))
with open(os.path.join(root, "outputs", "model.bin"), "wb") as f:
    f.write(os.urandom(mb << 20))
os.makedirs(os.path.join(root, "logs"), exist_ok=True)
open(os.path.join(root, "logs", "std_log.txt"), "w").write("log\\n")
if deep:
    fd = os.open(os.path.join(root, "outputs"), os.O_RDONLY)
    for _ in range(deep):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
"""


def _old_link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst)


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_local(files: int, mb: int, reps: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-collect-"))
    run = base / "run"
    run.mkdir()
    subprocess.run(["python3", "-c", MAKE_TREE, str(run), str(files), str(mb), "1000"], check=True)
    flat = base / "flat"  # the same tree without the nested chain, for copytree
    flat.mkdir()
    subprocess.run(["python3", "-c", MAKE_TREE, str(flat), str(files), str(mb), "0"], check=True)
    subprocess.run(["sh", "-c", f"tar -cf - -C {run} outputs logs | cat >/dev/null"], check=True)  # warm
    new, new_flat, old, tar = [], [], [], []
    for rep in range(reps):
        dest = base / f"new{rep}"
        new.append(timed(lambda dest=dest: tree.copy_tree(str(run), str(dest), link=True)))
        dest = base / f"newflat{rep}"
        new_flat.append(timed(lambda dest=dest: tree.copy_tree(str(flat), str(dest), link=True)))
        dest = base / f"old{rep}"

        def copytree(dest: Path = dest) -> None:
            for name in ("outputs", "logs"):
                shutil.copytree(flat / name, dest / name, copy_function=_old_link_or_copy, symlinks=True)

        old.append(timed(copytree))
        tar.append(
            timed(lambda: subprocess.run(["sh", "-c", f"tar -cf - -C {run} outputs logs | cat >/dev/null"]))
        )
        for name in (f"new{rep}", f"newflat{rep}", f"old{rep}"):
            tree.rmtree(str(base / name))
    print(f"local, {files} files + {mb} MiB (+1,000 nested folders for tree.copy_tree), median of {reps}:")
    print(f"  tree.copy_tree (hard links)      {statistics.median(new):.3f} s")
    print(f"  tree.copy_tree, flat tree        {statistics.median(new_flat):.3f} s")
    print(f"  shutil.copytree (former, flat)   {statistics.median(old):.3f} s")
    print(f"  tar -cf - | cat (reads all)      {statistics.median(tar):.3f} s")
    tree.rmtree(str(base))


def bench_ssh(files: int, mb: int, reps: int) -> None:
    from airflow_provider_mltrain.targets.ssh import COLLECTED, SSHSettings, SSHTarget, _walk

    keys = ("HOST", "PORT", "USER", "KEY_FILE", "KNOWN_HOSTS")
    env = {k: os.environ[f"MLTRAIN_TEST_SSH_{k}"] for k in keys}
    settings = SSHSettings(
        host=env["HOST"],
        port=int(env["PORT"]),
        username=env["USER"],
        key_file=env["KEY_FILE"],
        known_hosts=env["KNOWN_HOSTS"],
        remote_root=f"~/bench-collect-{os.getpid()}",
    )
    target = SSHTarget("bench", settings)
    run_dir = target.run_dir("bench")
    python = target.python()["executable"]
    code, _, err = target.run_command([python, "-c", MAKE_TREE, run_dir, str(files), str(mb), "0"], 600)
    assert code == 0, err
    base = Path(tempfile.mkdtemp(prefix="bench-collect-ssh-"))
    new, old = [], []
    argv = [python, "-I", "-S", posixpath.join(target._runner_dir(), "remote.py"), "pack", run_dir]
    for rep in range(reps):
        target.close()  # each way pays its connection setup
        dest = base / f"new{rep}"
        dest.mkdir()

        def pack(dest: Path = dest) -> None:
            def unpack(out) -> None:  # type: ignore[no-untyped-def]
                with tarfile.open(fileobj=out, mode="r|") as tar:
                    extract_tar(tar, dest)

            target._conn.call(lambda: target._conn.stream(argv, unpack))

        new.append(timed(pack))
        target.close()
        dest = base / f"old{rep}"

        def per_file(dest: Path = dest) -> None:
            def download(sftp) -> None:  # type: ignore[no-untyped-def]
                found, _links = _walk(sftp, run_dir, COLLECTED)
                for rel, _size in found:
                    local = dest.joinpath(*rel.split("/"))
                    local.parent.mkdir(parents=True, exist_ok=True)
                    sftp.get(posixpath.join(run_dir, rel), str(local))

            target._sftp(download)

        old.append(timed(per_file))
        for name in (f"new{rep}", f"old{rep}"):
            tree.rmtree(str(base / name))
    print(f"ssh, {files} files + {mb} MiB, new connection each, median of {reps}:")
    print(f"  remote.py pack tar stream         {statistics.median(new):.3f} s  ({sorted(new)})")
    print(f"  per-file sftp.get (former)        {statistics.median(old):.3f} s  ({sorted(old)})")
    target.run_command(["rm", "-rf", "--", target.root])
    target.close()
    tree.rmtree(str(base))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    bench_local(args.files, args.mb, args.reps)
    if os.environ.get("MLTRAIN_TEST_SSH_HOST"):
        bench_ssh(args.files, args.mb, args.reps)


if __name__ == "__main__":
    main()
