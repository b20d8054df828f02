"""Run inputs: fetching a big object into the input cache, and the cache hit of the next run.

    .venv/bin/python bench/bench_inputs.py [--mb 1024] [--reps 3]

Needs MLTRAIN_TEST_S3_ENDPOINT/_KEY/_SECRET (tests/services/seaweedfs.sh). One object of --mb MiB
of random bytes is put on the S3 server, then:

a. first fetch: ``inputs.prepare`` on the local target with an empty cache (listing, download,
   the copy made read-only; above ``inputs.HASH_AFTER_START`` the sha256 is left to a thread that
   starts with the run, timed apart as a2), the way ``submit`` does it;
b. cache hit: ``inputs.prepare`` again (one HEAD of the object, a stat of the cached file);
c. baseline: ``rclone copy`` of the same object into an empty folder (rclone's own S3 client, its
   default 4 transfers / multi-thread streams), started fresh each time like the CLI would be.

Each timed step starts after ``sync``: the VM writes back at a few hundred MB/s, so a step that
follows another's 1 GiB write otherwise pays for that write too (throttled dirty pages).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_provider_mltrain.core import inputs
from airflow_provider_mltrain.targets.local import LocalTarget


def _each(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    import s3fs

    endpoint = os.environ["MLTRAIN_TEST_S3_ENDPOINT"]
    options = {
        "key": os.environ["MLTRAIN_TEST_S3_KEY"],
        "secret": os.environ["MLTRAIN_TEST_S3_SECRET"],
        "client_kwargs": {"endpoint_url": endpoint},
    }
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    prefix = f"mltrain-test/bench-inputs-{uuid.uuid4().hex}"
    key = f"{prefix}/data.bin"
    tmp = Path(tempfile.mkdtemp(prefix="bench-inputs-"))
    try:
        src = tmp / "data.bin"
        with open(src, "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1 << 20))
        fs.put_file(str(src), key)
        src.unlink()
        item = {"data": inputs.Input(f"s3://{key}", storage_options=options)}
        target = LocalTarget(tmp / "target")
        first, hashed, hit, rclone = [], [], [], []
        # rclone's S3 client cannot take a custom CA bundle; the test server speaks plain HTTP.
        env = {
            **{k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"},
            "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": options["key"],
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": options["secret"],
            "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint,
        }
        for rep in range(args.reps):
            ws = tmp / f"ws{rep}"
            os.sync()  # each side starts with no dirty pages of the other's 1 GiB still to write back
            t0 = time.perf_counter()
            (got,) = inputs.prepare(item, ws, target)
            first.append(time.perf_counter() - t0)
            assert got.fetched_bytes == args.mb << 20
            t0 = time.perf_counter()
            if getattr(got, "hash_pending", False):  # what submit's thread does once the run started
                inputs._hash_cached(got)
            hashed.append(time.perf_counter() - t0)
            os.sync()  # a later run finds the copy written back, not 1 GiB of dirty pages
            t0 = time.perf_counter()
            (again,) = inputs.prepare(item, ws, target)
            hit.append(time.perf_counter() - t0)
            assert again.cache_hit and again.fetched_bytes == 0
            for dirpath, _d, names in os.walk(ws):
                for n in names:
                    os.chmod(os.path.join(dirpath, n), 0o644)
            shutil.rmtree(ws, ignore_errors=True)
            dest = tmp / f"rclone{rep}"
            os.sync()
            t0 = time.perf_counter()
            subprocess.run(["rclone", "copy", "-q", f"bench:{key}", str(dest)], env=env, check=True)
            rclone.append(time.perf_counter() - t0)
            shutil.rmtree(dest, ignore_errors=True)
        med = statistics.median
        print(f"object: {args.mb} MiB on SeaweedFS at {endpoint}; {args.reps} reps, medians")
        print(f"a. first fetch (inputs.prepare, empty cache): {med(first):.2f} s  (each: {_each(first)})")
        print(f"a2. its hash, in a thread after the start:    {med(hashed):.2f} s")
        print(f"b. cache hit (inputs.prepare again):          {med(hit) * 1000:.1f} ms")
        print(f"c. rclone copy of the same object:            {med(rclone):.2f} s  (each: {_each(rclone)})")
        print(f"ratio a / c: {med(first) / med(rclone):.2f}")
    finally:
        fs.rm(prefix, recursive=True)
        for dirpath, _d, names in os.walk(tmp):
            for n in names:
                os.chmod(os.path.join(dirpath, n), 0o644)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
