"""Managed environments: first build vs venv + pip, and what a cache hit adds to a submission.

    .venv/bin/python bench/bench_environment.py [--builds 3] [--submits 20]

1. First build of the quickstart's environment (scikit-learn + NumPy), each repetition in a new
   workspace, against ``python -m venv`` + ``pip install`` of the same requirements, measured in
   the same run. Both installers' caches are warm (one untimed round of each first), so this
   compares installers, not the network.
2. Submission with that environment already built (a cache hit) against submission with no
   environment (the submitting Python), for a script that exits at once: submit +
   wait_for_completion, median of N each, interleaved.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from airflow_provider_mltrain import Environment, Experiment, PythonSection, ScriptRunConfig, Workspace
from airflow_provider_mltrain.core.environment import find_uv
from airflow_provider_mltrain.targets.local import LocalTarget

REQUIREMENTS = ["scikit-learn==1.9.1", "numpy==2.4.6"]


def build_with_mltrain(root: Path) -> float:
    ws = Workspace(root / "ws")
    env = Environment(name="bench", python=PythonSection(requirements=REQUIREMENTS))
    target = LocalTarget(ws.root / "targets" / "local")
    started = time.perf_counter()
    prepared = target.prepare_environment(env, lambda line: None)
    elapsed = time.perf_counter() - started
    assert prepared.built
    return elapsed


def build_with_pip(root: Path) -> float:
    root.mkdir(parents=True, exist_ok=True)
    venv = root / "venv"
    req = root / "requirements.txt"
    req.write_text("\n".join(REQUIREMENTS) + "\n")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin/python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(req),
        ],
        check=True,
    )
    return time.perf_counter() - started


def submit_once(ws: Workspace, src: Path, environment: Environment | None) -> float:
    started = time.perf_counter()
    run = Experiment(ws, "bench").submit(ScriptRunConfig(src, "noop.py", environment=environment))
    run.wait_for_completion(poll_interval=0.05)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--builds", type=int, default=3)
    parser.add_argument("--submits", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mltrain-bench-env-"))
    try:
        # Warm both caches, untimed.
        build_with_mltrain(tmp / "warm-mltrain")
        build_with_pip(tmp / "warm-pip")
        ours, theirs = [], []
        for i in range(args.builds):
            ours.append(build_with_mltrain(tmp / f"m{i}"))
            theirs.append(build_with_pip(tmp / f"p{i}"))
        mo, mp = statistics.median(ours), statistics.median(theirs)
        print(f"uv: {find_uv()}")
        print(f"first build, median of {args.builds} (caches warm)")
        print(f"  mltrain (uv, relocatable venv):     {mo:8.3f} s")
        print(f"  python -m venv + pip install:       {mp:8.3f} s")
        print(f"  ratio mltrain / venv+pip:           {mo / mp:8.2f}x")

        ws = Workspace(tmp / "submit-ws")
        src = tmp / "src"
        src.mkdir()
        (src / "noop.py").write_text("")
        env = Environment(name="bench", python=PythonSection(requirements=REQUIREMENTS))
        submit_once(ws, src, env)  # builds once
        submit_once(ws, src, None)
        managed, plain = [], []
        for _ in range(args.submits):
            managed.append(submit_once(ws, src, env))
            plain.append(submit_once(ws, src, None))
        mm, pm = statistics.median(managed), statistics.median(plain)
        print(f"submit + wait of a no-op script, median of {args.submits}")
        print(f"  environment built before (cache hit): {mm * 1000:8.1f} ms")
        print(f"  no environment (submitting Python):   {pm * 1000:8.1f} ms")
        print(f"  cost of the cache hit:                {(mm - pm) * 1000:8.1f} ms (goal <= 50 ms)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
