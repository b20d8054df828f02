"""What each Docker API call of a run costs the daemon, against ``docker run --rm`` of the same no-op.

    .venv/bin/python bench/bench_docker_calls.py [--reps 6]

Needs MLTRAIN_TEST_DOCKER_HOST and MLTRAIN_TEST_DOCKER_IMAGE (``bash tests/services/docker.sh``).
Each call is timed on its own, on fresh containers of the test image: ``create``, ``put_archive``
of a small archive (created and running container), a ``HEAD`` stat on the archive endpoint,
``start``, ``wait``, ``get_archive`` of a small file (running and stopped container), ``logs`` of
a stopped container (how the Docker target reads a small finished run folder), ``inspect``
and ``remove``. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from typing import Any

import docker


def _small_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("tmp/x.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=6)
    args = parser.parse_args()
    url, image = os.environ.get("MLTRAIN_TEST_DOCKER_HOST"), os.environ.get("MLTRAIN_TEST_DOCKER_IMAGE")
    if not url or not image:
        sys.exit("Start the daemon first: eval \"$(bash tests/services/docker.sh | sed 's/^/export /')\"")
    api = docker.APIClient(base_url=url)
    times: dict[str, list[float]] = {}

    def timed(name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = call(*args, **kwargs)
        times.setdefault(name, []).append((time.perf_counter() - start) * 1000)
        return result

    def read(cid: str) -> bytes:
        stream, _ = api.get_archive(cid, "/tmp/x.txt")
        return b"".join(stream)

    config = api.create_host_config(network_mode="none", init=True)
    run = ["docker", "-H", url, "run", "--rm", "--network", "none", image, "python3", "-c", "pass"]
    for _ in range(args.reps):
        cid = timed("create", api.create_container, image, ["python3", "-c", "pass"], host_config=config)[
            "Id"
        ]
        timed("put_archive (created)", api.put_archive, cid, "/", _small_archive())
        stat_url = api._url("/containers/{0}/archive", cid)
        timed("HEAD archive stat", api.head, stat_url, params={"path": "/tmp/x.txt"})
        timed("start", api.start, cid)
        timed("wait", api.wait, cid)
        timed("get_archive (stopped)", read, cid)
        timed("logs (stopped)", api.logs, cid, stdout=True, stderr=False, tail=400)
        timed("inspect", api.inspect_container, cid)
        timed("remove", api.remove_container, cid)
        cid = api.create_container(image, ["sleep", "30"], host_config=config)["Id"]
        api.start(cid)
        timed("put_archive (running)", api.put_archive, cid, "/", _small_archive())
        timed("get_archive (running)", read, cid)
        api.remove_container(cid, force=True)
        timed("docker run --rm (whole)", subprocess.run, run, check=True, capture_output=True)
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print("| call | median | min-max |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.1f} ms | {min(values):.1f}-{max(values):.1f} ms |")


if __name__ == "__main__":
    main()
