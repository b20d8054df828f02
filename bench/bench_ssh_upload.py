"""Snapshot upload to the SSH target against ``rsync -a`` over ssh, on the same tree and the same sshd.

    .venv/bin/python bench/bench_ssh_upload.py [--files 5000 --mb 100 --reps 5]

Needs the test sshd (``eval "$(bash tests/services/start-all.sh)"``, or the ``MLTRAIN_TEST_SSH_*``
lines of ``tests/services/sshd.sh``) and ``rsync`` on this machine (``apt-get install rsync``; the
"remote" is this machine too). Cases, each from a new SSH connection (connection setup is paid, as
a worker pays it), interleaved with its baseline:

a. first upload: ``Experiment.submit`` of a no-op script from a generated tree (seeded random
   files in nested folders) to an empty remote root, i.e. snapshot + runner upload + blob upload +
   start; against ``rsync -a`` of the tree into an empty folder.
b. one file changed: resubmission after rewriting one file; against ``rsync -a`` onto the copy.
c. no change: resubmission of the unchanged tree; against one ``ssh true`` round trip plus the
   local re-snapshot (``SnapshotStore.take``) measured on its own.

Bytes are what crossed the TCP connection: for mltrain counted on the socket paramiko uses (SSH
framing, encryption and MAC included); for rsync its ``--stats`` totals (rsync's own protocol, a
little less than what ssh then sends). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.targets import ssh as ssh_target
from airflow_provider_mltrain.targets.ssh import SSHSettings, SSHTarget


class CountingSocket:
    """A socket that counts the bytes it sends and receives; everything else goes to the socket."""

    totals = {"sent": 0, "received": 0}

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def send(self, data: Any, *args: Any) -> int:
        n = self._sock.send(data, *args)
        CountingSocket.totals["sent"] += n
        return n

    def sendall(self, data: Any, *args: Any) -> None:
        self._sock.sendall(data, *args)
        CountingSocket.totals["sent"] += len(data)

    def recv(self, n: int, *args: Any) -> bytes:
        data = self._sock.recv(n, *args)
        CountingSocket.totals["received"] += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


_create_connection = socket.create_connection


def counting_create_connection(*args: Any, **kwargs: Any) -> Any:
    return CountingSocket(_create_connection(*args, **kwargs))


def make_tree(root: Path, files: int, mb: int, seed: int = 1) -> list[Path]:
    rng = random.Random(seed)
    size = mb * 1024 * 1024 // files
    paths = []
    for i in range(files):
        path = root / f"d{i % 50:02}" / f"s{i % 7}" / f"f{i:05}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        paths.append(path)
    (root / "noop.py").write_text("pass\n")
    return paths


def rsync(env: dict[str, str], src: Path, dest: str) -> tuple[float, int]:
    ssh = (
        f"ssh -i {env['KEY_FILE']} -p {env['PORT']} -o UserKnownHostsFile={env['KNOWN_HOSTS']} "
        "-o StrictHostKeyChecking=yes -o BatchMode=yes"
    )
    started = time.perf_counter()
    out = subprocess.run(
        ["rsync", "-a", "--stats", "-e", ssh, f"{src}/", f"{env['USER']}@{env['HOST']}:{dest}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    seconds = time.perf_counter() - started
    sent = int(re.search(r"Total bytes sent: ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    received = int(re.search(r"Total bytes received: ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    return seconds, sent + received


def ssh_true(env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            "ssh", "-i", env["KEY_FILE"], "-p", env["PORT"], "-o", f"UserKnownHostsFile={env['KNOWN_HOSTS']}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"{env['USER']}@{env['HOST']}", "true",
        ],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - started


def submit(ws: Workspace, settings: SSHSettings, src: Path) -> tuple[float, int, dict[str, int]]:
    """One submission from a new connection: seconds, bytes on the wire, what start() uploaded."""
    ssh_target._pool.clear()
    CountingSocket.totals.update(sent=0, received=0)
    # Its notes (snapshots sent, the interpreter probe) in the workspace, as the Airflow hook keeps them.
    target = SSHTarget("bench", settings, ws.root / "targets" / "ssh-bench")
    started = time.perf_counter()
    Experiment(ws, "bench").submit(ScriptRunConfig(src, "noop.py", compute_target=target))
    seconds = time.perf_counter() - started
    target.close()
    return (
        seconds,
        CountingSocket.totals["sent"] + CountingSocket.totals["received"],
        dict(target.last_upload),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    # The tree is bigger than the default snapshot limits (2,000 files): raise them for it.
    os.environ.setdefault("MLTRAIN_SNAPSHOT_MAX_FILES", str(args.files * 2))
    os.environ.setdefault("MLTRAIN_SNAPSHOT_MAX_SIZE_MB", str(args.mb * 2))
    env = {
        k: os.environ[f"MLTRAIN_TEST_SSH_{k}"] for k in ("HOST", "PORT", "USER", "KEY_FILE", "KNOWN_HOSTS")
    }
    if not shutil.which("rsync"):
        raise SystemExit("rsync is needed for the baseline: apt-get install rsync")
    socket.create_connection = counting_create_connection  # type: ignore[assignment]
    tmp = Path(tempfile.mkdtemp(prefix="mltrain-bench-ssh-"))
    base = f"~/mltrain-bench/{secrets.token_hex(4)}"
    settings = SSHSettings(
        host=env["HOST"],
        port=int(env["PORT"]),
        username=env["USER"],
        key_file=env["KEY_FILE"],
        known_hosts=env["KNOWN_HOSTS"],
        remote_root=base,
    )
    rows: dict[str, list[tuple[float, int]]] = {k: [] for k in ("a", "a0", "b", "b0", "c", "c0")}
    try:
        src = tmp / "src"
        paths = make_tree(src, args.files, args.mb)
        for rep in range(args.reps):
            ws = Workspace(tmp / f"ws{rep}")
            s = replace(settings, remote_root=f"{base}/r{rep}")
            seconds, wire, sent = submit(ws, s, src)
            rows["a"].append((seconds, wire))
            rows["a0"].append(rsync(env, src, f"mltrain-bench/{base.rsplit('/', 1)[1]}/rsync{rep}"))
            paths[rep].write_bytes(os.urandom(paths[rep].stat().st_size))
            seconds, wire, sent = submit(ws, s, src)
            assert sent["blobs"] == 1, sent
            rows["b"].append((seconds, wire))
            rows["b0"].append(rsync(env, src, f"mltrain-bench/{base.rsplit('/', 1)[1]}/rsync{rep}"))
            seconds, wire, sent = submit(ws, s, src)
            assert sent["blobs"] == 0, sent
            rows["c"].append((seconds, wire))
            started = time.perf_counter()
            ws.snapshots.take(src)
            rows["c0"].append((ssh_true(env) + time.perf_counter() - started, 0))
        print(f"tree: {args.files} files, {args.mb} MiB; {args.reps} reps; medians (min-max of the reps)")
        print(
            f"{'case':<28}{'mltrain s':>11}{'baseline s':>12}{'ratio':>8}"
            f"{'mltrain MB':>12}{'baseline MB':>13}{'mltrain range':>17}{'baseline range':>17}"
        )
        for case, label in (("a", "a. first upload"), ("b", "b. one file changed"), ("c", "c. no change")):
            t = statistics.median(x[0] for x in rows[case])
            t0 = statistics.median(x[0] for x in rows[case + "0"])
            w = statistics.median(x[1] for x in rows[case]) / 1e6
            w0 = statistics.median(x[1] for x in rows[case + "0"]) / 1e6
            spread = [
                f"{min(x[0] for x in rows[k]):.3f}-{max(x[0] for x in rows[k]):.3f}"
                for k in (case, case + "0")
            ]
            print(
                f"{label:<28}{t:>11.3f}{t0:>12.3f}{t / t0:>8.2f}{w:>12.2f}{w0:>13.2f}"
                f"{spread[0]:>17}{spread[1]:>17}"
            )
        print(
            "baseline: a, b rsync -a over ssh (its --stats bytes); c one `ssh true` + the local re-snapshot"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        cleanup = SSHTarget("bench", settings)
        cleanup._run(["rm", "-rf", "--", cleanup.root])
        cleanup.close()


if __name__ == "__main__":
    main()
