"""Compute targets: one module per kind of compute, all behind ``core.compute.ComputeTarget``."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_mltrain.core.compute import ComputeTarget, register_resolver
from airflow_provider_mltrain.targets.local import LocalTarget


def _builtin(name: str, workspace_root: Path) -> ComputeTarget | None:
    if name == "local":
        return LocalTarget(workspace_root / "targets" / "local")
    return None


register_resolver(_builtin, first=True)

__all__ = ["LocalTarget"]
