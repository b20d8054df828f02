"""Sweeps on the local target: throughput, the policy's reaction time, and the per-child overhead.

    .venv/bin/python bench/bench_sweep.py [--children 20] [--seconds 5] [--concurrent 4]

a. a random sweep of ``--children`` children that each run ``--seconds`` s, ``--concurrent`` at a
   time, driven with ``wait_for_completion(poll_interval=--poll)``: wall time against the ideal
   (``ceil(children / concurrent)`` waves of ``seconds``);
b. a bandit policy's reaction: from the moment a laggard's first value is written (its ``time``)
   to its run's Canceled state, with ``poll_interval`` 1 s;
c. the per-child cost of a Bayesian sweep of a script that only logs ``-(x - 0.7) ** 2``, one
   child at a time, beside Optuna's own ``study.optimize`` running the same objective in-process.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.core.sweep import EARLY_TERMINATED, HYPERPARAMETERS
from airflow_provider_mltrain.train.hyperdrive import (
    BanditPolicy,
    BayesianParameterSampling,
    GridParameterSampling,
    HyperDriveConfig,
    PrimaryMetricGoal,
    RandomParameterSampling,
    choice,
    uniform,
)

SLEEPER = """
import argparse, time
from mltrain import Run
p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
p.add_argument("--seconds", type=float)
a = p.parse_args()
run = Run.get_context()
start = time.time()
while time.time() - start < a.seconds:
    run.log("score", a.x)
    time.sleep(1)
"""

LAGGARD = """
import argparse, time
from mltrain import Run
p = argparse.ArgumentParser()
p.add_argument("--quality")
a = p.parse_args()
run = Run.get_context()
if a.quality == "bad":
    time.sleep(2)  # the leader has logged by then
for i in range(60):
    run.log("score", 1.0 if a.quality == "good" else 0.1)
    time.sleep(0.5)
"""

QUADRATIC = """
import argparse
from mltrain import Run
p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
Run.get_context().log("score", -(p.parse_args().x - 0.7) ** 2)
"""


def config(src: Path, sampling, total: int, concurrent: int, policy=None, arguments=()) -> HyperDriveConfig:
    return HyperDriveConfig(
        run_config=ScriptRunConfig(src, "train.py", arguments=list(arguments)),
        hyperparameter_sampling=sampling,
        primary_metric_name="score",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=total,
        max_concurrent_runs=concurrent,
        policy=policy,
    )


def folder(root: Path, name: str, script: str) -> Path:
    path = root / name
    path.mkdir()
    (path / "train.py").write_text(script)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--children", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--bayes", type=int, default=10)
    parser.add_argument("--poll", type=float, default=1.0, help="the driver's poll_interval in a")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ws = Workspace(root / "ws")
        exp = Experiment(ws, "bench")

        src = folder(root, "sleeper", SLEEPER)
        started = time.monotonic()
        sweep = exp.submit(
            config(
                src,
                RandomParameterSampling({"--x": uniform(0, 1)}, seed=1),
                args.children,
                args.concurrent,
                arguments=["--seconds", args.seconds],
            )
        )
        sweep.wait_for_completion(poll_interval=args.poll)
        wall = time.monotonic() - started
        ideal = math.ceil(args.children / args.concurrent) * args.seconds
        print(
            f"a. {args.children} children of {args.seconds:g} s, {args.concurrent} at once, "
            f"poll {args.poll:g} s: {wall:.1f} s, "
            f"ideal {ideal:.1f} s, ratio {wall / ideal:.3f}"
        )

        src = folder(root, "laggard", LAGGARD)
        sweep = exp.submit(
            config(
                src,
                GridParameterSampling({"--quality": choice("good", "bad")}),
                2,
                2,
                policy=BanditPolicy(slack_factor=0.1),
            )
        )
        sweep.wait_for_completion(poll_interval=1.0, raise_on_error=False)
        bad = next(
            c for c in sweep.get_children() if json.loads(c.properties[HYPERPARAMETERS])["--quality"] == "bad"
        )
        first = ws.store.get_metric_rows(bad.id, "score")[0]["logged_at"]
        canceled = next(e["at"] for e in ws.store.get_events(bad.id) if e["status"] == "Canceled")
        print(
            f"b. bandit reaction, poll_interval 1 s: {canceled - first:.2f} s from the laggard's first value "
            f"to Canceled ({bad.properties[EARLY_TERMINATED][:60]}...)"
        )

        src = folder(root, "quadratic", QUADRATIC)
        started = time.monotonic()
        sweep = exp.submit(
            config(src, BayesianParameterSampling({"--x": uniform(0, 1)}, seed=0), args.bayes, 1)
        )
        sweep.wait_for_completion(poll_interval=0.05)
        per_child = (time.monotonic() - started) / args.bayes

        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
        )
        started = time.monotonic()
        study.optimize(lambda t: -((t.suggest_float("x", 0, 1) - 0.7) ** 2), n_trials=args.bayes)
        per_trial = (time.monotonic() - started) / args.bayes
        print(
            f"c. Bayesian sweep, one child at a time: {per_child:.3f} s per child; Optuna study.optimize "
            f"in-process: {per_trial * 1000:.2f} ms per trial; ratio {per_child / per_trial:.0f}"
        )


if __name__ == "__main__":
    main()
