"""Compute targets named by Airflow connection ids: the connection's type picks the compute hook.

``ScriptRunConfig(compute_target="gpu_box")`` looks up the Airflow connection ``gpu_box`` (from
the metadata database, an ``AIRFLOW_CONN_GPU_BOX`` variable or a secrets backend) and asks the
compute hook of its type to build the target. Hooks are imported only when their type is used,
so a deployment without the Docker SDK can still run SSH targets.

The ``ssh`` and ``spark`` types belong to the official SSH and Apache Spark providers: Airflow keeps
one hook per connection type, so this provider does not declare them (``Connection.get_hook()``
and the UI's Test button stay theirs). It reads those connections itself, through the mapping
below, and declares types of its own (``mltrain_ssh``, ``mltrain_spark``) for a form with its extras.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from airflow.sdk import BaseHook

from airflow_provider_mltrain.core.compute import ComputeTarget
from airflow_provider_mltrain.core.compute import require_module as core_require_module
from airflow_provider_mltrain.core.errors import MissingDependency, MLTrainError, UnknownComputeTarget
from airflow_provider_mltrain.version_compat import AirflowOptionalProviderFeatureException

_SSH = ("airflow_provider_mltrain.hooks.ssh:SSHComputeHook", "ssh")
_SPARK = ("airflow_provider_mltrain.hooks.spark:SparkComputeHook", "spark")

# connection type -> ("module:HookClass", the pip extra its client library comes with). Our own
# types and the official providers' ``ssh`` and ``spark``, read as those providers define them.
COMPUTE_HOOKS: dict[str, tuple[str, str]] = {
    "mltrain_docker": ("airflow_provider_mltrain.hooks.docker:DockerComputeHook", "docker"),
    "mltrain_ssh": _SSH,
    "ssh": _SSH,
    "mltrain_spark": _SPARK,
    "spark": _SPARK,
}


def require_module(module: str, extra: str, what: str) -> ModuleType:
    """The core's ``require_module`` for hooks: a missing library raises Airflow's optional-feature
    exception (naming the pip extra), the exception Airflow expects from a provider's optional parts.
    """
    try:
        return core_require_module(module, extra, what)
    except MissingDependency as exc:
        raise AirflowOptionalProviderFeatureException(str(exc)) from exc


# What a connection test reports as a failed test (returned, not raised): the target's own errors
# and a missing client library.
TEST_FAILURES: tuple[type[Exception], ...] = (MLTrainError, AirflowOptionalProviderFeatureException)


class ComputeHook(BaseHook):
    """Base of the hooks that turn one Airflow connection into one compute target."""

    conn_name_attr = "conn_id"

    def __init__(self, conn_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def get_target(self, workspace_root: Path) -> ComputeTarget:
        raise NotImplementedError

    def test_connection(self) -> tuple[bool, str]:
        """Reach the target for real (the Airflow UI's Test button calls this); nothing is changed there."""
        raise NotImplementedError


def hook_class(conn_type: str) -> type[ComputeHook] | None:
    """The compute hook of a connection type; None when the type is not a compute target's.

    Raises ``MissingDependency`` (naming the pip extra) when the hook module cannot be imported.
    """
    entry = COMPUTE_HOOKS.get(conn_type)
    if entry is None:
        return None
    path, extra = entry
    module, _, name = path.partition(":")
    try:
        cls: type[ComputeHook] = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise MissingDependency(
            f"Connections of type {conn_type!r} need a library that is not installed ({exc.name or exc}): "
            f"pip install 'airflow-provider-mltrain[{extra}]'.",
            extra=extra,
            module=exc.name,
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
    try:
        return cls(conn_id=name).get_target(workspace_root)
    except AirflowOptionalProviderFeatureException as exc:
        if isinstance(exc.__cause__, MissingDependency):
            raise exc.__cause__ from None  # callers of the core catch the core's error
        raise
