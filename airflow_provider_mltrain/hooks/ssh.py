"""SSHComputeHook: an Airflow connection of type ``ssh`` as a compute target (a remote VM).

The connection's fields and extras follow the official ssh provider's names (``key_file``,
``private_key``, ``private_key_passphrase``, ``host_key``, ``no_host_key_check``,
``conn_timeout``, ``look_for_keys``), so one connection serves both providers. One difference on
purpose: host keys are verified unless ``no_host_key_check`` is set to true. Our own extras:
``remote_root`` (default ``~/.mltrain``), ``interpreter_path`` (default ``python3``), ``cleanup``
(``never``, ``on_success``, ``always``) and ``known_hosts`` (default ``~/.ssh/known_hosts``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow_provider_mltrain.core.errors import InvalidRunConfig, MLTrainError
from airflow_provider_mltrain.hooks.compute import ComputeHook
from airflow_provider_mltrain.targets.ssh import SSHSettings, SSHTarget

_TRUE = ("true", "1", "yes", "on")


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

    conn_type = "ssh"
    hook_name = "SSH"
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
        return SSHSettings(
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
            return SSHTarget(
                self.conn_id, self.settings(), Path(workspace_root) / "targets" / f"ssh-{self.conn_id}"
            )
        except InvalidRunConfig as exc:
            raise InvalidRunConfig(f"Connection {self.conn_id!r}: {exc}") from None

    def test_connection(self) -> tuple[bool, str]:
        """Connects for real: host key, login, the remote Python and the remote root."""
        try:
            target = self.get_target(Path("."))
            try:
                return True, target.test()
            finally:
                target.close()
        except MLTrainError as exc:
            return False, str(exc)
