"""Credentials for the artifact store from an Airflow connection (``[mltrain] artifact_store_conn_id``).

The core talks fsspec and never imports Airflow; this module turns a connection into fsspec
``storage_options``, as ``ObjectStoragePath`` does with the providers' filesystems. It is installed
as the core's resolver when ``airflow_provider_mltrain`` is imported (operators, sensors, the UI
plugin and the ``mltrain`` CLI all import it), and imports Airflow only when a connection is asked for.

For ``s3://`` URLs an ``aws`` connection (or ``generic``, or any type) maps as the Amazon provider's
does, without requiring it: login / password or extra ``aws_access_key_id`` /
``aws_secret_access_key`` (and ``aws_session_token``), extra ``endpoint_url`` (or
``service_config.s3.endpoint_url``, or the connection's host), ``region_name``, ``verify`` and
``config_kwargs``. For other schemes (``gs://``, ``abfs://``) the extra's ``storage_options`` (or
the whole extra) are the backend's fsspec options.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_mltrain.core.artifacts import ArtifactStoreError


def storage_options_from_connection(conn_id: str, url: str) -> dict[str, Any]:
    """The fsspec options of ``url`` with the credentials of Airflow connection ``conn_id``."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException moved between versions: match on the name
        if type(exc).__name__ == "AirflowNotFoundException":
            raise ArtifactStoreError(
                f"[mltrain] artifact_store_conn_id names the Airflow connection {conn_id!r}, which does "
                f"not exist. Create it (for S3: airflow connections add {conn_id} --conn-type aws "
                "--conn-login KEY --conn-password SECRET --conn-extra '{\"endpoint_url\": ...}') or fix "
                "the setting (MLTRAIN_ARTIFACT_STORE_CONN_ID)."
            ) from None
        raise
    extra = conn.extra_dejson or {}
    scheme = url.split("://", 1)[0]
    if scheme in ("s3", "s3a"):
        return s3_options(conn.login, conn.password, conn.host, extra)
    options = extra.get("storage_options", extra)
    return dict(options) if isinstance(options, dict) else {}


def s3_options(
    login: str | None, password: str | None, host: str | None, extra: dict[str, Any]
) -> dict[str, Any]:
    """s3fs options from an ``aws``-style connection's fields."""
    options: dict[str, Any] = {}
    key = login or extra.get("aws_access_key_id")
    secret = password or extra.get("aws_secret_access_key")
    if key:
        options["key"] = key
    if secret:
        options["secret"] = secret
    if extra.get("aws_session_token"):
        options["token"] = extra["aws_session_token"]
    client_kwargs: dict[str, Any] = {}
    service = (extra.get("service_config") or {}).get("s3") or {}
    endpoint = extra.get("endpoint_url") or service.get("endpoint_url") or host
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if extra.get("region_name"):
        client_kwargs["region_name"] = extra["region_name"]
    if "verify" in extra:
        client_kwargs["verify"] = extra["verify"]
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    if isinstance(extra.get("config_kwargs"), dict):
        options["config_kwargs"] = dict(extra["config_kwargs"])
    return options
