"""The Docker target against plain ``docker run``, in the same run, on the same daemon and image.

    .venv/bin/python bench/bench_docker.py [--reps 15] [--files 2000]

Needs a daemon and the test base image (``bash tests/services/docker.sh`` starts both and prints
the variables this script reads: MLTRAIN_TEST_DOCKER_HOST, MLTRAIN_TEST_DOCKER_IMAGE).

1. Submission overhead with the image cached: ``Experiment.submit(...)`` + ``wait_for_completion()``
   of a script that exits at once, in a process that already submitted once (the Airflow worker
   case), against ``docker run --rm --network none IMAGE python3 noop.py`` of the same script (the
   docker CLI, a container, the same interpreter start-up). Runs interleaved; medians and their ratio.
   What the target does after a run, off the waiting path (removing the container, writing its
   markers into the volume), is over before the next run is timed: it would slow that run, ours or
   docker's. The requests counted are those of the submission and the wait.
2. Resubmission of a 2,000-file snapshot with one file changed: the bytes the target sent to the
   daemon's blob cache, against the changed file's size (and the whole tree's).

Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.hooks.docker import DockerComputeHook


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    url = os.environ.get("MLTRAIN_TEST_DOCKER_HOST")
    image = os.environ.get("MLTRAIN_TEST_DOCKER_IMAGE")
    if not url or not image:
        sys.exit("Start the daemon first: eval \"$(bash tests/services/docker.sh | sed 's/^/export /')\"")
    os.environ["AIRFLOW_CONN_BENCH_DOCKER"] = json.dumps(
        {"conn_type": "mltrain_docker", "host": url, "extra": {"image": image, "network_mode": "none"}}
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ws = Workspace(root / "ws")
        target = DockerComputeHook("bench_docker").get_target(ws.root)
        src = root / "src"
        src.mkdir()
        (src / "noop.py").write_text("pass\n")
        experiment = Experiment(ws, "bench")
        requests = _count_requests(target.client().api)

        counts: list[int] = []

        def submit_and_wait() -> float:
            requests.clear()
            start = time.perf_counter()
            experiment.submit(ScriptRunConfig(src, "noop.py", compute_target=target)).wait_for_completion(
                poll_interval=0.05
            )
            elapsed = time.perf_counter() - start
            counts.append(len(requests))
            # Untimed: the target's work after the run (writing its markers, removing its container)
            # ends before the next timing starts, so that it slows neither docker run nor our next run.
            join_background()
            return elapsed

        def docker_run() -> float:
            start = time.perf_counter()
            subprocess.run(
                [
                    "docker",
                    "-H",
                    url,
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "-v",
                    f"{src}:/src:ro",
                    "-w",
                    "/src",
                    image,
                    "python3",
                    "noop.py",
                ],
                check=True,
                capture_output=True,
            )
            return time.perf_counter() - start

        load = os.getloadavg()
        submit_and_wait()  # warm: image facts probed, volume created, package imported
        docker_run()
        ours, base = [], []
        counts.clear()
        for _ in range(args.reps):
            ours.append(submit_and_wait())
            base.append(docker_run())
        m_ours, m_base = statistics.median(ours), statistics.median(base)
        print(f"load average before: {load[0]:.2f}, after: {os.getloadavg()[0]:.2f}")
        print("| case | median (min-max) | baseline (docker run --rm) | ratio | API requests per run |")
        print("|---|---|---|---|---|")
        print(
            f"| submit + wait, image cached | {m_ours * 1000:.0f} ms ({min(ours) * 1000:.0f}-"
            f"{max(ours) * 1000:.0f}) | {m_base * 1000:.0f} ms ({min(base) * 1000:.0f}-"
            f"{max(base) * 1000:.0f}) | {m_ours / m_base:.2f}x | {statistics.median(counts):.0f} "
            f"({min(counts)}-{max(counts)}) |"
        )

        tree = root / "tree"
        (tree / "data").mkdir(parents=True)
        (tree / "train.py").write_text("print('ok')\n")
        nonce = os.urandom(8).hex()
        total = 0
        for i in range(args.files - 1):
            body = (f"{nonce} sample {i}\n" * 40).encode()
            (tree / "data" / f"f{i:05}.txt").write_bytes(body)
            total += len(body)
        first = experiment.submit(ScriptRunConfig(tree, "train.py", compute_target=target))
        first_sent = dict(target.last_upload)
        first.wait_for_completion(poll_interval=0.05)
        changed = tree / "data" / "f00007.txt"
        changed.write_bytes(b"changed content\n" * 10)
        start = time.perf_counter()
        second = experiment.submit(ScriptRunConfig(tree, "train.py", compute_target=target))
        submit_s = time.perf_counter() - start
        second_sent = dict(target.last_upload)
        second.wait_for_completion(poll_interval=0.05)
        print()
        size = changed.stat().st_size
        print(
            f"| {args.files}-file snapshot ({total / 1e6:.1f} MB) | blobs sent | content bytes | "
            "tar bytes sent | changed file | tar bytes / changed file |"
        )
        print("|---|---|---|---|---|---|")
        print(
            f"| first submission | {first_sent['blobs']} | {first_sent['bytes']} | "
            f"{first_sent['wire_bytes']} | - | - |"
        )
        print(
            f"| one file changed (submit {submit_s * 1000:.0f} ms) | {second_sent['blobs']} | "
            f"{second_sent['bytes']} | {second_sent['wire_bytes']} | {size} | "
            f"{second_sent['wire_bytes'] / size:.1f}x |"
        )
        join_background()
        client = target.client()
        listed = client.containers.list(
            all=True, sparse=True, filters={"label": "mltrain.target=bench_docker"}
        )
        for container in listed:
            with contextlib.suppress(Exception):
                container.remove(force=True)


def join_background() -> None:
    """Wait for the Docker target's work after a run: it removes finished containers in threads."""
    for thread in threading.enumerate():
        if thread.name.startswith("rm-mltrain-"):
            thread.join(timeout=60)


def _count_requests(api: Any) -> list[str]:
    """The requests ``api`` (a docker ``APIClient``, a requests session) sends from now on, as
    "METHOD path"; the caller clears the list between runs."""
    sent: list[str] = []
    send = api.send

    def counting(request: Any, **kwargs: Any) -> Any:
        sent.append(f"{request.method} {request.path_url.split('?')[0]}")
        return send(request, **kwargs)

    api.send = counting
    return sent


if __name__ == "__main__":
    main()
