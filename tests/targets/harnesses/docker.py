"""The Docker target against the real engine started by tests/services/docker.sh."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from tests.targets.harnesses import Harness, register, service_missing

CONN_ID = "docker_test"


def docker_connection(**extra: Any) -> str:
    """AIRFLOW_CONN_* JSON of the test daemon: no network, the debootstrap base image."""
    return json.dumps(
        {
            "conn_type": "mltrain_docker",
            "host": os.environ["MLTRAIN_TEST_DOCKER_HOST"],
            "extra": {
                "image": os.environ["MLTRAIN_TEST_DOCKER_IMAGE"],
                "network_mode": "none",
                "build_network_mode": "host",
                **extra,
            },
        }
    )


def remove_test_containers(target_name: str, scope: Path) -> None:
    """Remove a test's containers of a target (once the target's background removals are done): those
    whose workspace lies under ``scope``, the test's tmp_path. Other tests, in other xdist workers or
    another pytest session, run containers of the same target meanwhile; theirs stay."""
    import docker

    join_removals()
    scope = scope.resolve()
    client = docker.DockerClient(base_url=os.environ["MLTRAIN_TEST_DOCKER_HOST"])
    # sparse: no inspect per container, which fails for one being removed meanwhile
    for container in client.containers.list(
        all=True, sparse=True, filters={"label": f"mltrain.target={target_name}"}
    ):
        workspace = (container.attrs.get("Labels") or {}).get("mltrain.workspace")
        if not workspace or not Path(workspace).resolve().is_relative_to(scope):
            continue
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    client.close()


def join_removals(run_id: str | None = None) -> None:
    """Wait for the Docker target's background removals of containers (``run_id``'s only, when
    given): it removes a finished run's container off the waiting path."""
    import threading

    from airflow_provider_mltrain.targets.docker import container_name

    name = f"rm-{container_name(run_id)}" if run_id else "rm-mltrain-"
    for thread in threading.enumerate():
        if thread.name == name or (run_id is None and thread.name.startswith(name)):
            thread.join(timeout=60)


def require_docker() -> None:
    if not os.environ.get("MLTRAIN_TEST_DOCKER_HOST"):
        service_missing("no Docker engine: run `make test` (tests/services/docker.sh starts one)")


@register
class DockerHarness(Harness):
    name = CONN_ID
    inherits_controller_environment = False
    followed_from_any_host = True

    def setup(self, monkeypatch, workspace):
        require_docker()
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", docker_connection())
        self.run_ids: list[str] = []
        self.scope = workspace.root.parent  # the test's tmp_path

    def _target(self, run):
        return run.target

    def _container(self, run):
        self.run_ids.append(run.id)
        return self._target(run)._container(run.id)

    def read_working_file(self, run, rel):
        container = self._container(run)
        if container is None:
            return None
        from airflow_provider_mltrain.targets.docker import _run_dir

        data = self._target(run)._read_whole(container, f"{_run_dir(container, run.id)}/snapshot/{rel}")
        return data.decode() if data else None

    def write_working_file(self, run, rel, text):
        import io
        import tarfile

        data = text.encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        from airflow_provider_mltrain.targets.docker import _run_dir

        container = self._container(run)
        assert container.put_archive(f"{_run_dir(container, run.id)}/snapshot", buf.getvalue())

    def pids_alive(self, run, pids):
        container = self._container(run)
        if container is None:
            return [False] * len(pids)
        container.reload()
        if container.status != "running":
            return [False] * len(pids)
        code = (
            "import os, sys\n"
            "def alive(p):\n"
            "    try:\n"
            "        return open('/proc/%d/stat' % p).read().split(')')[-1].split()[0] != 'Z'\n"
            "    except OSError:\n"
            "        return False\n"
            "print(' '.join('1' if alive(int(p)) else '0' for p in sys.argv[1:]))\n"
        )
        result = container.exec_run(["python3", "-c", code, *map(str, pids)], user="root")
        return [flag == "1" for flag in result.output.decode().split()]

    def kill_runner(self, run, status):
        self._container(run).kill()  # SIGKILL to the container's init: the runner dies with it

    def working_copy_removed(self, run):
        # After a successful run the target removes its container off the waiting path (cleanup
        # on_success); reading it meanwhile races the daemon's removal ("RWLayer ... is nil").
        join_removals(run.id)
        self._target(run)._stopped.pop(run.id, None)  # look the container up again
        container = self._container(run)
        if container is None:
            return True
        return self.read_working_file(run, "train.py") is None

    def teardown(self):
        remove_test_containers(CONN_ID, self.scope)
