"""``azureml.core.ComputeTarget``: an Azure compute name resolved to mltrain's target.

``ComputeTarget(workspace=ws, name="cpu-cluster")`` returns the mltrain target the name maps to
(``config.json``'s ``mltrain.compute_targets``, else the name itself: ``"local"`` or an Airflow
connection id). An unknown name raises ``ComputeTargetException`` (mltrain's
``UnknownComputeTarget``). Provisioning (``ComputeTarget.create``, ``AmlCompute``) does not
exist: a target is an Airflow connection.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_mltrain.core.compute import ComputeTarget as CoreComputeTarget
from airflow_provider_mltrain.core.compute import get_target
from airflow_provider_mltrain.core.errors import UnknownComputeTarget

ComputeTargetException = UnknownComputeTarget


class ComputeTarget:
    def __new__(cls, workspace: Any, name: str) -> CoreComputeTarget:  # type: ignore[misc]
        mapped = workspace.target_name(name) if hasattr(workspace, "target_name") else name
        return get_target(mapped, workspace.root)

    @staticmethod
    def create(workspace: Any, name: str, provisioning_configuration: Any) -> CoreComputeTarget:
        raise UnknownComputeTarget(
            f"ComputeTarget.create({name!r}) is not available: mltrain provisions no compute. Create an "
            "Airflow connection (mltrain_docker, ssh or spark) and map the name to it in config.json's "
            "mltrain.compute_targets."
        )


__all__ = ["ComputeTarget", "ComputeTargetException"]
