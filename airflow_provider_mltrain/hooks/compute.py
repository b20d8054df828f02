"""Compute targets named by Airflow connection ids: the connection's type picks the compute hook.

``ScriptRunConfig(compute_target="gpu_box")`` looks up the Airflow connection ``gpu_box`` (from
the metadata database, an ``AIRFLOW_CONN_GPU_BOX`` variable or a secrets backend) and asks the
hook registered for its type to build the target. Hooks are imported only when their type is used,
so a deployment without the Docker SDK can still run SSH targets.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from airflow_provider_mltrain.core.compute import ComputeTarget
from airflow_provider_mltrain.core.errors import UnknownComputeTarget

# connection type -> ("module:HookClass", the pip extra its client library comes with)
COMPUTE_HOOKS: dict[str, tuple[str, str]] = {
    "mltrain_docker": ("airflow_provider_mltrain.hooks.docker:DockerComputeHook", "docker"),
    "ssh": ("airflow_provider_mltrain.hooks.ssh:SSHComputeHook", "ssh"),
    "spark": ("airflow_provider_mltrain.hooks.spark:SparkComputeHook", "spark"),
}


class ComputeHook(BaseHook):
    """Base of the hooks that turn one Airflow connection into one compute target."""

    conn_name_attr = "conn_id"

    def __init__(self, conn_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def get_target(self, workspace_root: Path) -> ComputeTarget:
        raise NotImplementedError

    def test_connection(self) -> tuple[bool, str]:
        """Reach the target for real (the Airflow UI's Test button calls this)."""
        raise NotImplementedError


def hook_class(conn_type: str) -> type[ComputeHook] | None:
    entry = COMPUTE_HOOKS.get(conn_type)
    if entry is None:
        return None
    path, extra = entry
    module, _, name = path.partition(":")
    try:
        cls: type[ComputeHook] = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise UnknownComputeTarget(
            f"Connections of type {conn_type!r} need a library that is not installed ({exc.name or exc}): "
            f"pip install 'airflow-provider-mltrain[{extra}]'."
        ) from exc
    return cls


def target_from_connection(name: str, workspace_root: Path) -> ComputeTarget | None:
    """The compute target of connection ``name``; None when no such connection exists."""
    try:
        conn = BaseHook.get_connection(name)
    except Exception as exc:  # AirflowNotFoundException moved between versions: match on the name
        if type(exc).__name__ == "AirflowNotFoundException":
            return None
        raise
    cls = hook_class(conn.conn_type or "")
    if cls is None:
        known = ", ".join(sorted(COMPUTE_HOOKS)) or "none yet"
        raise UnknownComputeTarget(
            f"Connection {name!r} has type {conn.conn_type!r}, which is not a compute target type "
            f"(known: {known}). Point compute_target at a connection of one of those types."
        )
    return cls(conn_id=name).get_target(workspace_root)
