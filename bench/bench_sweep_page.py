"""What a big sweep costs the api-server: its page, its API and the runs list that folds its children.

    .venv/bin/python bench/bench_sweep_page.py [--children 500] [--values 300] [--reps 3]

A real grid sweep of two children on the local target gives the records; the bench then copies
its first child ``--children`` times in the run store (each a child of one more sweep, with its own
hyperparameters and ``--values`` values of the primary metric stored as a run's follower stores
them), so the timed requests read what a sweep of that many real children leaves. Each request goes
through FastAPI's TestClient in this process; the time is the median of ``--reps``. Baselines in
the same run: the core's ``SweepRun.get_children_sorted_by_primary_metric()`` (what ``mltrain
sweeps show`` ranks with: every value of every child read) and one child's run page. Nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.core.sweep import SweepRun
from airflow_provider_mltrain.plugins.app import create_app, get_workspace
from airflow_provider_mltrain.plugins.auth import Access, require_reader
from airflow_provider_mltrain.train.hyperdrive import (
    GridParameterSampling,
    HyperDriveConfig,
    PrimaryMetricGoal,
    choice,
)

SCRIPT = """
import argparse
from mltrain import Run
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float)
run = Run.get_context()
for i in range(5):
    run.log("accuracy", 0.5 + p.parse_args().lr * i, step=i)
"""


def median_ms(reps: int, call: Callable[[], object]) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def build(ws: Workspace, source: Path, children: int, values: int) -> str:
    config = HyperDriveConfig(
        run_config=ScriptRunConfig(source, "train.py"),
        hyperparameter_sampling=GridParameterSampling({"--lr": choice(0.01, 0.02)}),
        primary_metric_name="accuracy",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=2,
    )
    real = Experiment(ws, "bench-sweep").submit(config, run_id="bench-sweep-real")
    real.wait_for_completion(poll_interval=0.2)
    store = ws.store
    parent, child = (
        {k: v for k, v in store.get_run(rid).items() if k != "warnings"} for rid in (real.id, f"{real.id}_0")
    )
    big = "bench-sweep-big"
    store.create_run({**parent, "id": big})
    for i in range(children):
        rid = f"{big}_{i}"
        props = {
            **child["properties"],
            "mltrain.parent": big,
            "mltrain.sweep.index": str(i),
            "mltrain.hyperparameters": json.dumps({"--lr": 10 ** (-4 + 3 * i / children)}),
        }
        store.create_run({**child, "id": rid, "properties": props, "metrics_offset": 0})
        rows = [
            {
                "run_id": rid,
                "seq": s,
                "name": "accuracy",
                "kind": "scalar",
                "step": s,
                "value": str(0.5 + (i % 97) / 200 + s / 1e5),
                "logged_at": 1.0 + s,
            }
            for s in range(values)
        ]
        store.ingest_metrics(rid, 0, values, rows)
    return big


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--children", type=int, default=500)
    parser.add_argument("--values", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        source = Path(tmp) / "src"
        source.mkdir()
        (source / "train.py").write_text(SCRIPT)
        started = time.perf_counter()
        big = build(ws, source, args.children, args.values)
        took = time.perf_counter() - started
        print(f"setup: {args.children} children x {args.values} values in {took:.1f} s")
        app = create_app()
        app.dependency_overrides[get_workspace] = lambda: ws
        app.dependency_overrides[require_reader] = lambda: Access(lambda dag_id: True)
        client = TestClient(app, root_path="/mltrain")

        def get(url: str, **params: object) -> Callable[[], object]:
            def call() -> object:
                response = client.get(url, params=params)
                assert response.status_code == 200, response.text[:500]
                return response

            return call

        page = get(f"/sweeps/{big}")().text  # type: ignore[attr-defined]
        print(f"sweep page: {len(page) / 1024:.0f} KB of HTML")
        cases = [
            ("sweep page (HTML)", get(f"/sweeps/{big}")),
            ("API sweep details (first 100 children)", get(f"/api/sweeps/{big}")),
            ("API sweep details (last page)", get(f"/api/sweeps/{big}", offset=args.children - 100)),
            ("runs list (HTML, children folded)", get("/experiments/bench-sweep")),
            ("runs list (HTML, children listed)", get("/experiments/bench-sweep", children="1")),
            ("baseline: one child's run page", get(f"/runs/{big}_0")),
            (
                "baseline: SweepRun.get_children_sorted_by_primary_metric()",
                lambda: SweepRun(ws, big).get_children_sorted_by_primary_metric(),
            ),
        ]
        load = os.getloadavg()[0]
        print(f"1-minute load average before timing: {load:.1f}")
        for name, call in cases:
            print(f"{name:62} {median_ms(args.reps, call):8.0f} ms")


if __name__ == "__main__":
    main()
