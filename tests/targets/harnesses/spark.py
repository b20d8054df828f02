"""The Spark target on the standalone cluster of tests/services/spark.sh; the gateway is this machine.

``gateway_spark_client`` gives the SSH test VM (tests/services/sshd.sh) a Spark client of its own,
for the gateway-over-SSH tests (tests/targets/test_spark_gateway.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.targets.harnesses import register, service_missing
from tests.targets.harnesses.local import LocalHarness
from tests.targets.harnesses.ssh import SSHHarness, require_ssh
from tests.targets.harnesses.ssh import connection_json as ssh_connection_json

CONN_ID = "mltrain_test_spark"
GATEWAY_CONN_ID = "mltrain_test_spark_gw"  # the same cluster, spark-submit on the SSH test VM
GATEWAY_SSH_CONN_ID = "mltrain_test_spark_gw_ssh"


def spark_service() -> tuple[str, str]:
    """(master URL, master UI URL) of the test cluster, or skip/fail when it is not running."""
    master = os.environ.get("MLTRAIN_TEST_SPARK_MASTER")
    ui = os.environ.get("MLTRAIN_TEST_SPARK_UI")
    if not master or not ui:
        service_missing(
            "no Spark cluster: run `make test` (it starts one) or eval the output of tests/services/spark.sh"
        )
    return master, ui  # type: ignore[return-value]


def cancel_unfinished_runs(workspace) -> None:
    """Cancel the runs of ``workspace`` a test left going (best effort): a run's cancel also has the
    master end its application."""
    with contextlib.suppress(Exception):
        for record in workspace.store.list_runs():
            if record.get("status") not in ("Completed", "Failed", "Canceled"):
                with contextlib.suppress(Exception):
                    workspace.get_run(record["id"]).cancel(grace_period=0)


def end_leftover_applications(workspace, ui: str, timeout: float = 60.0) -> None:
    """After a test that runs Spark jobs on the cluster: cancel the runs it left going and have the
    master end any application still holding the cluster's two cores, so that one failed test (a
    deadline missed on a busy machine) does not starve the next ones' applications into failing
    too. Best effort. Only for the tests of the one work unit that uses the cluster's executors
    (``CLUSTER_FILES`` in conftest.py), which run one at a time: any application still active then
    is a leftover. The shared suites' scripts start no application and run beside them."""
    import time
    import urllib.parse
    import urllib.request

    cancel_unfinished_runs(workspace)

    def state() -> dict:
        with urllib.request.urlopen(f"{ui}/json/", timeout=10) as resp:
            return json.load(resp)

    deadline = time.monotonic() + timeout
    with contextlib.suppress(Exception):
        while time.monotonic() < deadline:
            current = state()
            if not current["activeapps"] and current["coresused"] == 0:
                return
            for app in current["activeapps"]:
                data = urllib.parse.urlencode({"id": app["id"], "terminate": "true"}).encode()
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"{ui}/app/kill/", data=data, timeout=10).close()
            time.sleep(1)


def connection_json(master: str, ui: str, **extra) -> str:
    """A ``spark`` connection for the test cluster; the driver binds to 127.0.0.1 like everything else."""
    scheme, _, hostport = master.partition("://")
    host, _, port = hostport.rpartition(":")
    extras = {
        "master-ui": ui,
        "spark-conf": {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"},
        **extra,
    }
    return json.dumps(
        {"conn_type": "spark", "host": f"{scheme}://{host}", "port": int(port), "extra": extras}
    )


def gateway_spark_client(user: str) -> str:
    """The Python of a venv in ``user``'s home holding pyspark (the cluster's version): an edge node's
    Spark client. Made once, as root, with uv from its cache (PyPI when the cache is cold); readable by
    ``user``, who cannot read this project's venv under /root. Returns the venv's python."""
    import pyspark

    home = Path(pwd.getpwnam(user).pw_dir)
    venv = home / f"spark-client-{pyspark.__version__}"
    ready = venv / ".mltrain-ready"
    if ready.exists():
        return str(venv / "bin" / "python")
    if os.geteuid() != 0:
        service_missing(f"no Spark client for {user}: run the tests as root once to install one in {venv}")
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not uv:
        service_missing("uv is needed to install the SSH gateway's Spark client (make install-dev)")
    state = Path(os.environ.get("MLTRAIN_TEST_STATE", "/var/tmp/mltrain-test-services"))
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "spark-client.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another test process may be installing it
        if not ready.exists():
            shutil.rmtree(venv, ignore_errors=True)
            # The VM's own Python with its Debian packages (numpy), as an edge node's client would be;
            # root-owned, world-readable.
            subprocess.run(
                ["/usr/bin/python3", "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                check=True,
            )
            subprocess.run(
                [
                    uv,
                    "pip",
                    "install",
                    "--quiet",
                    "--python",
                    str(venv / "bin" / "python"),
                    f"pyspark=={pyspark.__version__}",
                ],
                check=True,
                env={**os.environ, "UV_LINK_MODE": "copy"},  # nothing shared with root's cache
            )
            ready.touch()
    return str(venv / "bin" / "python")


@register
class SparkHarness(LocalHarness):
    name = CONN_ID
    venv_environments = False  # its builds live under targets/spark-<conn>/ (tests/targets/test_spark.py)

    def setup(self, monkeypatch: pytest.MonkeyPatch, workspace) -> None:
        master, ui = spark_service()
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(master, ui))

        self.workspace = workspace

    def teardown(self) -> None:
        cancel_unfinished_runs(self.workspace)
        super().teardown()

    def run_dir(self, run) -> Path:
        return run.workspace.root / "targets" / f"spark-{CONN_ID}" / "runs" / run.id


@register
class SparkGatewayHarness(SSHHarness):
    """The Spark target with ``gateway-conn-id``: runs live on the SSH VM, read through SSH."""

    name = GATEWAY_CONN_ID

    def setup(self, monkeypatch: pytest.MonkeyPatch, workspace) -> None:
        master, ui = spark_service()
        env = require_ssh()
        python = gateway_spark_client(env["USER"])
        self.remote_root = f"~/mltrain-tests/{secrets.token_hex(6)}"
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{GATEWAY_SSH_CONN_ID.upper()}",
            ssh_connection_json(env, remote_root=self.remote_root, interpreter_path=python),
        )
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{GATEWAY_CONN_ID.upper()}",
            connection_json(master, ui, **{"gateway-conn-id": GATEWAY_SSH_CONN_ID}),
        )
        self.workspace = workspace
        self._target = None

    def teardown(self) -> None:
        cancel_unfinished_runs(self.workspace)
        super().teardown()

    def target(self):
        if self._target is None:
            from airflow_provider_mltrain.hooks.ssh import SSHComputeHook

            self._target = SSHComputeHook(GATEWAY_SSH_CONN_ID).get_target(self.workspace.root)
        return self._target
