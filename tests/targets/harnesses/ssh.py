"""The SSH target against the real sshd of tests/services/sshd.sh (a local user as the remote VM)."""

from __future__ import annotations

import json
import os
import posixpath
import secrets
from typing import Any

from tests.targets.harnesses import Harness, register, service_missing

CONN_ID = "ssh_vm"


def ssh_env() -> dict[str, str] | None:
    """The variables tests/services/sshd.sh prints, or None when the service is not set up."""
    keys = ("HOST", "PORT", "USER", "KEY_FILE", "KNOWN_HOSTS", "HOST_KEY_FILE")
    values = {k: os.environ.get(f"MLTRAIN_TEST_SSH_{k}") for k in keys}
    if not all(values.values()):
        return None
    return {k: v for k, v in values.items() if v}


def require_ssh() -> dict[str, str]:
    env = ssh_env()
    if env is None:
        service_missing(
            "no sshd: run tests/services/sshd.sh (make test does) and export its MLTRAIN_TEST_SSH_*"
        )
        raise AssertionError("unreachable")
    return env


def connection_json(env: dict[str, str], **extra: Any) -> str:
    """An Airflow connection of type ssh, as AIRFLOW_CONN_<ID> takes it."""
    return json.dumps(
        {
            "conn_type": "ssh",
            "host": env["HOST"],
            "port": int(env["PORT"]),
            "login": env["USER"],
            "extra": {"key_file": env["KEY_FILE"], "known_hosts": env["KNOWN_HOSTS"], **extra},
        }
    )


@register
class SSHHarness(Harness):
    name = CONN_ID
    inherits_controller_environment = False
    followed_from_any_host = True

    def setup(self, monkeypatch, workspace) -> None:
        env = require_ssh()
        # A remote root per test: runs, blobs and runner of one test never meet another's.
        self.remote_root = f"~/mltrain-tests/{secrets.token_hex(6)}"
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(env, remote_root=self.remote_root)
        )
        self.workspace = workspace
        self._target = None

    def target(self):
        if self._target is None:
            from airflow_provider_mltrain.hooks.ssh import SSHComputeHook

            self._target = SSHComputeHook(CONN_ID).get_target(self.workspace.root)
        return self._target

    def teardown(self) -> None:
        if getattr(self, "remote_root", None):
            target = self.target()
            root = target.root
            if posixpath.basename(posixpath.dirname(root)) == "mltrain-tests":
                target._run(["rm", "-rf", "--", root])
            target.close()

    def read_working_file(self, run, rel):
        target = self.target()
        path = posixpath.join(target.run_dir(run.id), "snapshot", rel)

        def read(sftp):
            try:
                with sftp.open(path, "rb") as f:
                    return f.read().decode()
            except FileNotFoundError:
                return ""

        return target._sftp(read) or None

    def write_working_file(self, run, rel, text):
        target = self.target()
        path = posixpath.join(target.run_dir(run.id), "snapshot", rel)

        def write(sftp):
            with sftp.open(path, "wb") as f:
                f.write(text.encode())

        target._sftp(write)

    def pids_alive(self, run, pids):
        return self.target()._helper("pids-alive", *[str(p) for p in pids])["alive"]

    def kill_runner(self, run, status: dict[str, Any]) -> None:
        code, _out, err = self.target()._run(["kill", "-KILL", str(int(status["supervisor_pid"]))])
        assert code == 0, err

    def working_copy_removed(self, run):
        target = self.target()
        try:
            target._sftp(lambda sftp: sftp.stat(posixpath.join(target.run_dir(run.id), "snapshot")))
        except FileNotFoundError:
            return True
        return False
