"""SSHComputeHook: an Airflow ``ssh`` (or ``mltrain_ssh``) connection as a compute target (a remote VM).

``ssh`` connections are the official SSH provider's: its hook stays the one Airflow gives for that
type, and this hook reads the same connection, so one connection serves an ``SSHOperator`` and a
``ScriptRunOperator``. Read from the official extras: ``key_file``, ``private_key``,
``private_key_passphrase``, ``host_key``, ``no_host_key_check``, ``look_for_keys`` and
``conn_timeout``; the others (``allow_host_key_change``, ``cmd_timeout``, ``compress``,
``disabled_algorithms``, ``ciphers``, ...) are accepted and not used. One difference on purpose:
host keys are verified unless ``no_host_key_check`` is set to true. Our own extras:
``remote_root`` (default ``~/.mltrain``), ``interpreter_path`` (default ``python3``), ``cleanup``
(``never``, ``on_success``, ``always``), ``known_hosts`` (default ``~/.ssh/known_hosts``) and
``reconnect_timeout``. The ``mltrain_ssh`` type is the same connection with a form for them all.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core.errors import InvalidRunConfig
from airflow_provider_mltrain.hooks.compute import TEST_FAILURES, ComputeHook, require_module

if TYPE_CHECKING:
    from types import ModuleType

    from airflow_provider_mltrain.targets.ssh import SSHSettings, SSHTarget

_TRUE = ("true", "1", "yes", "on")


def _ssh() -> ModuleType:
    """targets.ssh, imported when used: it needs paramiko (the ssh extra)."""
    return require_module("airflow_provider_mltrain.targets.ssh", "ssh", "The SSH compute target")


def _flag(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in _TRUE


def _number(extra: dict[str, Any], key: str, default: float) -> float:
    value = extra.get(key)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidRunConfig(
            f"The connection's {key} extra must be a number of seconds, got {value!r}."
        ) from None


class SSHComputeHook(ComputeHook):
    """Runs training scripts on a remote machine over SSH (see docs/targets/ssh.md)."""

    conn_type = "mltrain_ssh"
    hook_name = "ML Training: SSH compute"
    default_conn_name = "ssh_default"

    def settings(self) -> SSHSettings:
        conn = self.get_connection(self.conn_id)
        extra = conn.extra_dejson or {}
        try:
            port = int(conn.port) if conn.port else 22
        except (TypeError, ValueError):
            raise InvalidRunConfig(
                f"Connection {self.conn_id!r}: port {conn.port!r} is not a number."
            ) from None
        return _ssh().SSHSettings(
            host=conn.host or "",
            port=port,
            username=conn.login or None,
            password=conn.password or None,
            key_file=extra.get("key_file") or None,
            private_key=extra.get("private_key") or None,
            private_key_passphrase=extra.get("private_key_passphrase") or None,
            host_key=extra.get("host_key") or None,
            known_hosts=extra.get("known_hosts") or None,
            no_host_key_check=_flag(extra.get("no_host_key_check"), False),
            look_for_keys=_flag(extra.get("look_for_keys"), True),
            remote_root=extra.get("remote_root") or "~/.mltrain",
            interpreter_path=extra.get("interpreter_path") or "python3",
            cleanup=extra.get("cleanup") or "never",
            conn_timeout=_number(extra, "conn_timeout", 10.0),
            reconnect_timeout=_number(extra, "reconnect_timeout", 60.0),
        )

    def get_target(self, workspace_root: Path) -> SSHTarget:
        try:
            return _ssh().SSHTarget(
                self.conn_id, self.settings(), Path(workspace_root) / "targets" / f"ssh-{self.conn_id}"
            )
        except InvalidRunConfig as exc:
            raise InvalidRunConfig(f"Connection {self.conn_id!r}: {exc}") from None

    def test_connection(self) -> tuple[bool, str]:
        """Connects for real (host key, login) and checks the remote Python and the remote root.

        Changes nothing on the host: the root is looked at, not created (the first run creates it).
        Writes nothing here either: the interpreter probe is not remembered (no notes folder).
        """
        try:
            target = self.get_target(Path("."))
            target.notes = None  # else the probe's note would land in the process's working folder
            try:
                return True, _describe(target)
            finally:
                target.close()
        except TEST_FAILURES as exc:
            return False, str(exc)


def _describe(target: SSHTarget) -> str:
    """One line on what a run would find: login, the runner's Python, the remote root; read-only."""
    info = target.python()
    root = target.root
    folder = target.with_sftp(lambda sftp: _nearest_existing(sftp, root))
    code, _out, _err = target.run_command(["test", "-d", folder, "-a", "-w", folder], timeout=60)
    s = target.settings
    where = f"{s.login}@{s.host}:{s.port}"
    if code != 0:
        raise InvalidRunConfig(
            f"Connected to {where}, but {folder} is not a folder {s.login} can write to, so runs "
            f"cannot be kept in {root}: set the connection's remote_root extra to a writable folder."
        )
    state = "exists" if folder == root else "is created by the first run"
    version = ".".join(str(v) for v in info["version"])
    return f"Connected to {where}; Python {version} at {info['executable']}; remote root {root} ({state})" + (
        "; uv found" if info.get("uv") else ""
    )


def _nearest_existing(sftp: Any, path: str) -> str:
    """``path`` or its nearest existing parent."""
    while path not in ("", "/"):
        try:
            sftp.stat(path)
            return path
        except FileNotFoundError:
            path = posixpath.dirname(path)
    return "/"
