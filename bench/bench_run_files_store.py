"""A run's page and files read from an object store by a host with no local files, against the same
run read from a local workspace; and how soon a live log line is readable from another host.

Needs the S3 server of the tests: eval "$(bash tests/services/seaweedfs.sh)" (or source
/tmp/services.env). Prints a table; asserts nothing about time.

    .venv/bin/python bench/bench_run_files_store.py --reps 20
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.core import run_files_store
from airflow_provider_mltrain.core.artifacts import FsspecArtifactStore
from airflow_provider_mltrain.plugins.app import create_app, get_workspace
from airflow_provider_mltrain.plugins.auth import Access, require_reader

TRAIN = """
import os
from mltrain import Run
run = Run.get_context()
for step in range(200):
    run.log("loss", 1.0 / (step + 1), step=step)
os.makedirs("outputs", exist_ok=True)
for i in range(20):
    open(f"outputs/part-{i:02d}.bin", "wb").write(os.urandom(100_000))
open("outputs/model.bin", "wb").write(os.urandom(20 * 1024 * 1024))
for i in range(2000):
    print(f"epoch {i}: loss {1.0 / (i + 1):.6f}")
"""

LIVE = """
import time
for i in range(40):
    print(f"{time.time():.3f} line {i}", flush=True)
    time.sleep(0.25)
"""


def s3_store() -> FsspecArtifactStore:
    options = {
        "key": os.environ["MLTRAIN_TEST_S3_KEY"],
        "secret": os.environ["MLTRAIN_TEST_S3_SECRET"],
        "client_kwargs": {"endpoint_url": os.environ["MLTRAIN_TEST_S3_ENDPOINT"]},
    }
    return FsspecArtifactStore(f"s3://mltrain-test/bench-{uuid.uuid4().hex}", options)


def client_for(ws: Workspace) -> TestClient:
    app = create_app()
    app.dependency_overrides[get_workspace] = lambda: ws
    app.dependency_overrides[require_reader] = lambda: Access(lambda dag_id: True)
    return TestClient(app, root_path="/mltrain")


def get(client: TestClient, path: str) -> None:
    assert client.get("/mltrain" + path).status_code == 200


def timed(fn, reps: int) -> tuple[float, float]:
    """(first call, median of the next ``reps``) in seconds."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-runfiles-"))
    src = tmp / "src"
    src.mkdir()
    (src / "train.py").write_text(TRAIN)
    (src / "live.py").write_text(LIVE)

    local_ws = Workspace(tmp / "local")
    local_run = Experiment(local_ws, "bench").submit(ScriptRunConfig(src, "train.py"))
    local_run.wait_for_completion()

    store = s3_store()
    db = f"sqlite:///{tmp / 'shared.db'}"
    worker = Workspace(tmp / "worker", database_url=db, artifact_store=store)
    remote_run = Experiment(worker, "bench").submit(ScriptRunConfig(src, "train.py"))
    remote_run.wait_for_completion()
    # Submit + wait again in both workspaces (snapshot stores warm): what the store adds.
    totals = {}
    for name, ws in (("local", local_ws), ("s3", worker)):
        start = time.perf_counter()
        Experiment(ws, "bench").submit(ScriptRunConfig(src, "train.py")).wait_for_completion()
        totals[name] = time.perf_counter() - start
    local_total, remote_total = totals["local"], totals["s3"]
    big = store.list(f"runs/{remote_run.id}/files/outputs")[f"runs/{remote_run.id}/files/outputs/model.bin"]
    start = time.perf_counter()
    store.get_bytes(f"runs/{remote_run.id}/files/outputs/model.bin")
    raw_get = time.perf_counter() - start
    api_server = Workspace(tmp / "api-server", database_url=db, artifact_store=store)

    rows = []
    for what, path in (
        ("run page", "/runs/{id}"),
        ("log tail (JSON API)", "/api/runs/{id}/log"),
        ("download 20 MiB", "/api/runs/{id}/files/outputs/model.bin"),
    ):
        get_local = functools.partial(get, client_for(local_ws), path.format(id=local_run.id))
        get_remote = functools.partial(get, client_for(api_server), path.format(id=remote_run.id))
        run_files_store._manifests.clear()  # the first call reads the manifest from the store
        lf, lm = timed(get_local, args.reps)
        rf, rm = timed(get_remote, args.reps)
        rows.append((what, lf, rf, lm, rm))

    print(f"machine: {os.cpu_count()} cores; reps {args.reps}; S3: {os.environ['MLTRAIN_TEST_S3_ENDPOINT']}")
    print(f"{'':24} {'local first':>12} {'store first':>12} {'local med':>10} {'store med':>10} {'ratio':>6}")
    for what, lf, rf, lm, rm in rows:
        ms = f"{lf * 1000:10.1f}ms {rf * 1000:10.1f}ms {lm * 1000:8.1f}ms {rm * 1000:8.1f}ms"
        print(f"{what:24} {ms} {rm / lm:6.2f}")
    print(f"baseline: one GET of the whole {big / 2**20:.0f} MiB object with s3fs: {raw_get * 1000:.1f}ms")
    print(
        f"submit + wait of the run (21 outputs, 20 MiB): local store {local_total:.2f} s, "
        f"S3 store {remote_total:.2f} s (upload included), ratio {remote_total / local_total:.2f}"
    )

    # Live log: how long after the script printed a line another host reads it from the store.
    live = Experiment(worker, "bench").submit(ScriptRunConfig(src, "live.py"))
    follower = threading.Thread(target=lambda: live.wait_for_completion(poll_interval=10.0), daemon=True)
    follower.start()
    reader = api_server.get_run(live.id)
    seen: dict[int, float] = {}
    lags = []
    while follower.is_alive() or len(seen) < 40:
        now = time.time()
        for line in reader.read_log().decode().splitlines():
            stamp, _, rest = line.partition(" line ")
            if rest.isdigit() and int(rest) not in seen:
                seen[int(rest)] = now
                lags.append(now - float(stamp))
        if len(seen) >= 40:
            break
        time.sleep(0.05)
    follower.join(60)
    print(
        f"live log seen from another host (40 lines, follower poll_interval 10 s): "
        f"median lag {statistics.median(lags):.2f} s, max {max(lags):.2f} s"
    )


if __name__ == "__main__":
    main()
