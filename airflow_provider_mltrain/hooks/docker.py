"""DockerComputeHook: a Docker compute target from an Airflow connection of type ``mltrain_docker``.

The connection's host is the daemon URL (``unix:///var/run/docker.sock``, ``tcp://host:2376``);
TLS files and container defaults are extras. The official docker provider's ``docker`` connection
type holds *registry* credentials, with the daemon URL given to the hook separately, so a compute
target gets its own type (see DESIGN.md, "Where state lives").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow_provider_mltrain.core.errors import InvalidRunConfig
from airflow_provider_mltrain.hooks.compute import TEST_FAILURES, ComputeHook, require_module
from airflow_provider_mltrain.targets.docker import DockerOptions, DockerTarget

DEFAULT_URL = "unix:///var/run/docker.sock"
TLS_EXTRAS = ("tls_ca_cert", "tls_client_cert", "tls_client_key", "tls_verify", "tls_hostname")


class DockerComputeHook(ComputeHook):
    """Builds the Docker target of one connection; ``test_connection`` asks the daemon for its version."""

    conn_type = "mltrain_docker"
    hook_name = "ML Training: Docker compute"
    default_conn_name = "mltrain_docker_default"

    def _settings(self) -> tuple[str, Any, DockerOptions]:
        # The target imports the Docker SDK only when it connects: say now which extra is missing.
        require_module("docker", "docker", "The Docker compute target")
        conn = self.get_connection(self.conn_id)
        extra = dict(conn.extra_dejson)
        url = (conn.host or DEFAULT_URL).strip()
        if "://" not in url:
            url = f"tcp://{url}:{conn.port or 2376}"
        elif conn.port and url.startswith("tcp://") and url.count(":") == 1:
            url = f"{url}:{conn.port}"
        tls = _tls_config(extra, self.conn_id)
        options = {k: v for k, v in extra.items() if k not in TLS_EXTRAS}
        values = DockerOptions.parse(options, f"Connection {self.conn_id!r}")
        return url, tls, DockerOptions().merged(values)

    def get_target(self, workspace_root: Path) -> DockerTarget:
        url, tls, options = self._settings()
        return DockerTarget(
            self.conn_id, Path(workspace_root) / "targets" / f"docker-{self.conn_id}", url, tls, options
        )

    def test_connection(self) -> tuple[bool, str]:
        try:
            target = self.get_target(Path("/nonexistent-unused"))
            version = target.ping()
        except TEST_FAILURES as exc:
            return False, str(exc)
        target.close()
        return True, f"Docker {version.get('Version')} (API {version.get('ApiVersion')}) at {target.base_url}"


def _tls_config(extra: dict[str, Any], conn_id: str) -> Any:
    if not any(extra.get(k) for k in TLS_EXTRAS[:3]):
        return None
    from docker.tls import TLSConfig

    cert = None
    if extra.get("tls_client_cert") or extra.get("tls_client_key"):
        if not (extra.get("tls_client_cert") and extra.get("tls_client_key")):
            raise InvalidRunConfig(
                f"Connection {conn_id!r}: give both tls_client_cert and tls_client_key (file paths), "
                "or neither."
            )
        cert = (extra["tls_client_cert"], extra["tls_client_key"])
    verify = extra.get("tls_verify", True)
    if isinstance(verify, str):
        verify = verify.strip().lower() not in ("false", "0", "no")
    return TLSConfig(
        client_cert=cert,
        ca_cert=extra.get("tls_ca_cert") or None,
        verify=verify,
        assert_hostname=extra.get("tls_hostname") or None,
    )
