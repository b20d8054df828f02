"""The multi-worker CeleryExecutor deployment (cluster.py), started once per test session.

Needs root (the workers run as Unix users of their own) and the services of tests/services/:
PostgreSQL, Redis, Docker and the SSH VM. Without them the tests skip with the reason (fail in CI).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployment.cluster import CeleryCluster
from tests.targets.harnesses.ssh import ssh_env

DAGS = Path(__file__).parent / "dags"


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster() -> Iterator[CeleryCluster]:
    if os.geteuid() != 0:
        _missing("the deployment tests need root: they create the worker users mltrain-w1 and mltrain-w2")
    needed = {
        "MLTRAIN_TEST_POSTGRES_URL": "tests/services/postgres.sh",
        "MLTRAIN_TEST_REDIS_URL": "tests/services/redis.sh",
        "MLTRAIN_TEST_DOCKER_HOST": "tests/services/docker.sh",
        "MLTRAIN_TEST_DOCKER_IMAGE": "tests/services/docker.sh",
    }
    for var, script in needed.items():
        if not os.environ.get(var):
            _missing(f"{var} is not set: run {script} (make test does) and export what it prints")
    ssh = ssh_env()
    if ssh is None:
        _missing("no SSH VM: run tests/services/sshd.sh (make test does) and export its MLTRAIN_TEST_SSH_*")
        raise AssertionError("unreachable")
    # World-readable (0755): the workers' users read the DAGs and scripts from the repository and
    # nothing from here but the folder itself; the controller's folders inside are private.
    root = Path(tempfile.mkdtemp(prefix="mltrain-deployment-", dir="/var/tmp"))
    root.chmod(0o755)
    cluster = CeleryCluster(
        root,
        DAGS,
        postgres_url=os.environ["MLTRAIN_TEST_POSTGRES_URL"],
        redis_url=os.environ["MLTRAIN_TEST_REDIS_URL"],
        ssh_env=ssh,
        docker_host=os.environ["MLTRAIN_TEST_DOCKER_HOST"],
        docker_image=os.environ["MLTRAIN_TEST_DOCKER_IMAGE"],
    )
    try:
        cluster.up()
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.down()
        cluster.cleanup()
        print(f"deployment: up in {cluster.startup_seconds} s; seconds per phase {cluster.timings}")
