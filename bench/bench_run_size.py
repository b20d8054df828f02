"""What a big run costs the api-server: the run page and its API calls over a run of 1,000,000
metric points, 100,000 output files and a live 2 GB log, against reading the same data raw.

    .venv/bin/python bench/bench_run_size.py [--points 1000000] [--files 100000] [--log-gb 2] [--reps 3]

One real run on the local target writes the points (straight to its metrics file, one line each)
and the files and ends: the points are ingested and the files collected before timing (neither is
timed here). A second run waits, so its log is live; the bench makes that log a sparse file of
``--log-gb`` GB. Each case is a request through FastAPI's TestClient in this process:
the time is the median of ``--reps``, the memory is the growth of this process's peak RSS
(``VmHWM`` after the request, reset before it through ``/proc/self/clear_refs``, minus ``VmRSS``
before it), i.e. what one request adds to the api-server. Baselines read the same data raw in the
same run: a ``SELECT`` of the run's rows (sqlite3, every row fetched), listing the output folder
(``os.walk``), ``tail -c`` of the log. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.core.run import STD_LOG
from airflow_provider_mltrain.plugins.app import create_app, get_workspace
from airflow_provider_mltrain.plugins.auth import Access, require_reader

SCRIPT = """
import json, os, sys, time
points, files, flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
now = time.time()
with open(os.environ["MLTRAIN_METRICS_FILE"], "a", buffering=1 << 20) as f:
    for i in range(points):
        f.write(json.dumps({"name": "loss", "kind": "scalar", "value": 1.0 / (1 + i % 1000),
                            "step": i, "time": now + i / 1000}) + "\\n")
for name in ("accuracy", "lr"):
    with open(os.environ["MLTRAIN_METRICS_FILE"], "a") as f:
        for i in range(100):
            f.write(json.dumps({"name": name, "value": i / 100, "step": i, "time": now}) + "\\n")
os.makedirs("outputs/many", exist_ok=True)
for i in range(files):
    open("outputs/many/part-%06d.bin" % i, "w").close()
open("outputs/done", "w").close()
print("written", flush=True)
while not os.path.exists(flag):
    time.sleep(0.2)
"""


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure(fn: Callable[[], Any], reps: int) -> tuple[float, float]:
    """Median milliseconds and the largest peak-RSS growth in MB over ``reps`` calls."""
    times, growth = [], []
    for _ in range(reps):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = _status("VmRSS")
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
        growth.append((_status("VmHWM") - before) / 1e6)
    return statistics.median(times), max(growth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--log-gb", type=float, default=2.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mltrain-bench-size-"))
    flag = tmp / "go"
    try:
        ws = Workspace(tmp / "ws")
        src = tmp / "src"
        src.mkdir()
        (src / "big.py").write_text(SCRIPT)
        started = time.perf_counter()
        ran = tmp / "ran"
        ran.touch()
        exp = Experiment(ws, "bench")
        big = exp.submit(ScriptRunConfig(src, "big.py", arguments=[args.points, args.files, str(ran)]))
        big.wait_for_completion()  # ingests the points and collects the files: not timed below
        built = time.perf_counter() - started
        live = exp.submit(ScriptRunConfig(src, "big.py", arguments=[0, 0, str(flag)]))
        live_dir = ws.root / "targets" / "local" / "runs" / live.id  # the local target's run folder
        log = live_dir / STD_LOG
        while live.get_status() != "Running" or not log.exists():
            time.sleep(0.2)
        size = int(args.log_gb * (1 << 30))
        with open(log, "r+b") as f:
            f.truncate(size)
        print(
            f"setup: a run of {args.points:,} points and {args.files:,} files in {built:.0f} s (written, "
            f"ingested, collected); a live run whose log is {size / (1 << 30):.1f} GB (sparse)",
            file=sys.stderr,
        )

        app = create_app()
        app.dependency_overrides[get_workspace] = lambda: ws
        app.dependency_overrides[require_reader] = lambda: Access(lambda dag_id: True)
        client = TestClient(app, root_path="/mltrain")

        def get(url: str, **params: Any) -> Callable[[], None]:
            def call() -> None:
                response = client.get(url, params=params)
                assert response.status_code == 200, response.text[:500]

            return call

        last_page = max(0, args.points - 10_000)
        cases = [
            ("run page (HTML)", get(f"/runs/{big.id}")),
            ("API run details", get(f"/api/runs/{big.id}")),
            ("API metrics (downsampled)", get(f"/api/runs/{big.id}/metrics")),
            (
                "API metric values, last page of 10,000",
                get(f"/api/runs/{big.id}/metric-values", name="loss", offset=last_page, limit=10_000),
            ),
            (
                "API files, last page of 1,000",
                get(f"/api/runs/{big.id}/files", offset=max(0, args.files - 1000), limit=1000),
            ),
            ("live run page (HTML, 2 GB log)", get(f"/runs/{live.id}")),
            ("API live log tail (64 KB of 2 GB)", get(f"/api/runs/{live.id}/log")),
            ("API live log from offset 0, limit=1", get(f"/api/runs/{live.id}/log", offset=0, limit=1)),
        ]
        get(f"/runs/{big.id}")()  # warm: imports, templates, SQLite page cache

        db = ws.database_url.removeprefix("sqlite:///")

        def select_rows() -> None:
            conn = sqlite3.connect(db)
            conn.execute("SELECT * FROM mltrain_metrics WHERE run_id = ?", (big.id,)).fetchall()
            conn.close()

        def list_folder() -> None:
            sum(len(files) for _, _, files in os.walk(ws.run_files_dir(big.id) / "outputs"))

        def tail_log() -> None:
            subprocess.run(["tail", "-c", "65536", str(log)], stdout=subprocess.DEVNULL, check=True)

        baselines = [
            ("SELECT of the run's rows (sqlite3)", select_rows),
            ("os.walk of outputs/", list_folder),
            ("tail -c 65536 of the live log", tail_log),
        ]
        print(f"{'case':<42} {'median ms':>10} {'peak RSS +MB':>13}")
        for name, fn in cases + baselines:
            ms, mb = measure(fn, args.reps)
            print(f"{name:<42} {ms:>10.1f} {mb:>13.1f}")
    finally:
        flag.touch()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
