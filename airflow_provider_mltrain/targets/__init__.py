"""Compute targets: one module per kind of compute, all behind ``core.compute.ComputeTarget``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core.compute import ComputeTarget, register_resolver

if TYPE_CHECKING:
    from airflow_provider_mltrain.targets.local import LocalTarget


def _builtin(name: str, workspace_root: Path) -> ComputeTarget | None:
    if name == "local":
        from airflow_provider_mltrain.targets.local import LocalTarget

        return LocalTarget(workspace_root / "targets" / "local")
    return None


def __getattr__(name: str) -> Any:
    """``LocalTarget`` is imported on first use: registering the targets costs nothing."""
    if name == "LocalTarget":
        from airflow_provider_mltrain.targets.local import LocalTarget

        return LocalTarget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_resolver(_builtin, first=True)

__all__ = ["LocalTarget"]
