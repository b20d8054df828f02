"""Where the workspace lives and which limits apply, without importing Airflow.

Lookup order for every setting: the ``MLTRAIN_*`` environment variable, then the ``[mltrain]``
section of Airflow's configuration (the ``AIRFLOW__MLTRAIN__*`` environment variable, then
``airflow.cfg``), then the default. Airflow's config file is read as plain INI so that the core
stays importable, and fast, without Airflow.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DEFAULT_MAX_SNAPSHOT_MB = 300
DEFAULT_MAX_SNAPSHOT_FILES = 2000


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow").expanduser()


@lru_cache(maxsize=8)
def _read_airflow_cfg(path: str, mtime: float) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error:
        return {}
    if not parser.has_section("mltrain"):
        return {}
    return dict(parser.items("mltrain"))


def get_setting(key: str, default: str | None = None) -> str | None:
    """One ``[mltrain]`` setting, e.g. ``get_setting("workspace")``."""
    value = os.environ.get(f"MLTRAIN_{key.upper()}")
    if value:
        return value
    value = os.environ.get(f"AIRFLOW__MLTRAIN__{key.upper()}")
    if value:
        return value
    cfg = Path(os.environ.get("AIRFLOW_CONFIG") or airflow_home() / "airflow.cfg").expanduser()
    try:
        mtime = cfg.stat().st_mtime
    except OSError:
        return default
    return _read_airflow_cfg(str(cfg), mtime).get(key.lower()) or default


def workspace_root() -> Path:
    configured = get_setting("workspace")
    root = Path(configured).expanduser() if configured else airflow_home() / "mltrain"
    return root.absolute()


def database_url(root: Path) -> str:
    return get_setting("database_url") or f"sqlite:///{root / 'runs.db'}"


def artifact_store() -> str | None:
    """``MLTRAIN_ARTIFACT_STORE`` / ``[mltrain] artifact_store``: a folder or an fsspec URL
    (``s3://bucket/prefix``); None means the workspace root (a local store)."""
    return get_setting("artifact_store")


def artifact_store_conn_id() -> str | None:
    """``MLTRAIN_ARTIFACT_STORE_CONN_ID`` / ``[mltrain] artifact_store_conn_id``: the Airflow
    connection whose credentials open the artifact store."""
    return get_setting("artifact_store_conn_id")


def upload_timeout() -> float:
    """``MLTRAIN_UPLOAD_TIMEOUT`` / ``[mltrain] upload_timeout``: how long (seconds, default 300)
    ``wait_for_completion`` and the operator go on retrying the upload of an ended run's files to
    an artifact store that fails, before returning with the files left in this host's cache.
    0 returns at once."""
    raw = get_setting("upload_timeout")
    if raw is None:
        return 300.0
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if not value >= 0:
        from airflow_provider_mltrain.core.errors import InvalidRunConfig

        raise InvalidRunConfig(
            f"Setting upload_timeout={raw!r} is not a number of seconds (0 or more). Fix "
            "MLTRAIN_UPLOAD_TIMEOUT or [mltrain] upload_timeout in airflow.cfg."
        )
    return value


def heartbeat_interval() -> float:
    """Seconds between the runner's status.json heartbeats (default 5)."""
    return _positive_number("heartbeat_interval", 5.0)


@dataclass(frozen=True)
class SnapshotLimits:
    """Refuse snapshots above these; the defaults are the reference's (300 MB, 2,000 files)."""

    max_bytes: int = DEFAULT_MAX_SNAPSHOT_MB * 1024 * 1024
    max_files: int = DEFAULT_MAX_SNAPSHOT_FILES

    @classmethod
    def from_settings(cls) -> SnapshotLimits:
        mb = _positive_number("snapshot_max_size_mb", DEFAULT_MAX_SNAPSHOT_MB)
        files = _positive_number("snapshot_max_files", DEFAULT_MAX_SNAPSHOT_FILES)
        return cls(max_bytes=int(mb * 1024 * 1024), max_files=int(files))


def _positive_number(key: str, default: float) -> float:
    raw = get_setting(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if value <= 0:
        from airflow_provider_mltrain.core.errors import InvalidRunConfig

        raise InvalidRunConfig(
            f"Setting {key}={raw!r} is not a positive number. Fix MLTRAIN_{key.upper()} "
            f"or [mltrain] {key} in airflow.cfg."
        )
    return value
