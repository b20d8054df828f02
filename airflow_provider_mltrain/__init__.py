"""airflow-provider-mltrain: submit training scripts to local, Docker, SSH and Spark compute.

The core API works without Airflow::

    from airflow_provider_mltrain import Workspace, Experiment, ScriptRunConfig

    run = Experiment(Workspace(), "digits").submit(ScriptRunConfig("train/", "train.py"))
    run.wait_for_completion(show_output=True)
"""

from __future__ import annotations

import importlib
from pathlib import Path as _Path
from typing import TYPE_CHECKING, Any

# Cheap: the registries below live in modules that import nothing heavy.
from airflow_provider_mltrain import targets as _targets  # registers the built-in targets
from airflow_provider_mltrain.core.artifacts import set_storage_options_resolver
from airflow_provider_mltrain.core.compute import register_resolver

if TYPE_CHECKING:
    from airflow_provider_mltrain.core.artifacts import (
        ArtifactStoreBackendMissing,
        ArtifactStoreBucketMissing,
        ArtifactStoreCredentialsRefused,
        ArtifactStoreError,
        ArtifactStoreUnreachable,
    )
    from airflow_provider_mltrain.core.compute import ComputeTarget, RunSpec
    from airflow_provider_mltrain.core.environment import (
        DockerSection,
        Environment,
        EnvironmentBuildFailed,
        EnvironmentNotFound,
        InvalidEnvironment,
        PythonSection,
    )
    from airflow_provider_mltrain.core.errors import (
        InvalidRunConfig,
        MLTrainError,
        RunFailed,
        RunNotFound,
        RunOnOtherHost,
        RunTimeout,
        SnapshotError,
        SnapshotTooLarge,
        TargetError,
        UnknownComputeTarget,
    )
    from airflow_provider_mltrain.core.experiment import Experiment
    from airflow_provider_mltrain.core.inputs import (
        Input,
        InputChanged,
        InputCredentialsMissing,
        InputError,
        InputNotFound,
        UnknownInputScheme,
    )
    from airflow_provider_mltrain.core.model import (
        InvalidModelName,
        Model,
        ModelError,
        ModelNotFound,
        ModelPathNotFound,
        RunNotFinished,
    )
    from airflow_provider_mltrain.core.outputs import Output, OutputError
    from airflow_provider_mltrain.core.run import Run
    from airflow_provider_mltrain.core.run_config import ScriptRunConfig
    from airflow_provider_mltrain.core.settings import SnapshotLimits
    from airflow_provider_mltrain.core.states import RunStatus
    from airflow_provider_mltrain.core.workspace import Workspace
    from airflow_provider_mltrain.operators.sweep import SweepOperator

# The public names, imported on first use (PEP 562): `import airflow_provider_mltrain`, the
# `mltrain` command and Airflow's provider discovery do not pay for SQLAlchemy, YAML, ... until a
# name that needs them is used.
_LAZY = {
    "airflow_provider_mltrain.core.artifacts": (
        "ArtifactStoreBackendMissing",
        "ArtifactStoreBucketMissing",
        "ArtifactStoreCredentialsRefused",
        "ArtifactStoreError",
        "ArtifactStoreUnreachable",
    ),
    "airflow_provider_mltrain.core.compute": ("ComputeTarget", "RunSpec"),
    "airflow_provider_mltrain.core.environment": (
        "DockerSection",
        "Environment",
        "EnvironmentBuildFailed",
        "EnvironmentNotFound",
        "InvalidEnvironment",
        "PythonSection",
    ),
    "airflow_provider_mltrain.core.errors": (
        "InvalidRunConfig",
        "MLTrainError",
        "RunFailed",
        "RunNotFound",
        "RunOnOtherHost",
        "RunTimeout",
        "SnapshotError",
        "SnapshotTooLarge",
        "TargetError",
        "UnknownComputeTarget",
    ),
    "airflow_provider_mltrain.core.experiment": ("Experiment",),
    "airflow_provider_mltrain.core.inputs": (
        "Input",
        "InputChanged",
        "InputCredentialsMissing",
        "InputError",
        "InputNotFound",
        "UnknownInputScheme",
    ),
    "airflow_provider_mltrain.core.outputs": ("Output", "OutputError"),
    "airflow_provider_mltrain.core.model": (
        "InvalidModelName",
        "Model",
        "ModelError",
        "ModelNotFound",
        "ModelPathNotFound",
        "RunNotFinished",
    ),
    "airflow_provider_mltrain.core.run": ("Run",),
    "airflow_provider_mltrain.core.run_config": ("ScriptRunConfig",),
    "airflow_provider_mltrain.core.settings": ("SnapshotLimits",),
    "airflow_provider_mltrain.core.states": ("RunStatus",),
    "airflow_provider_mltrain.core.workspace": ("Workspace",),
    # Imports Airflow: only when the name is used.
    "airflow_provider_mltrain.operators.sweep": ("SweepOperator",),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__version__ = "0.1.0"

__all__ = [
    "ArtifactStoreBackendMissing",
    "ArtifactStoreBucketMissing",
    "ArtifactStoreCredentialsRefused",
    "ArtifactStoreError",
    "ArtifactStoreUnreachable",
    "ComputeTarget",
    "DockerSection",
    "Environment",
    "EnvironmentBuildFailed",
    "EnvironmentNotFound",
    "Experiment",
    "Input",
    "InputChanged",
    "InputCredentialsMissing",
    "InputError",
    "InputNotFound",
    "InvalidEnvironment",
    "InvalidModelName",
    "InvalidRunConfig",
    "MLTrainError",
    "Model",
    "ModelError",
    "ModelNotFound",
    "ModelPathNotFound",
    "Output",
    "OutputError",
    "PythonSection",
    "Run",
    "RunFailed",
    "RunNotFinished",
    "RunNotFound",
    "RunOnOtherHost",
    "RunSpec",
    "RunStatus",
    "RunTimeout",
    "ScriptRunConfig",
    "SnapshotError",
    "SnapshotLimits",
    "SnapshotTooLarge",
    "SweepOperator",
    "TargetError",
    "UnknownComputeTarget",
    "UnknownInputScheme",
    "Workspace",
    "__version__",
]


def _from_airflow_connection(name: str, workspace_root: _Path) -> ComputeTarget | None:
    """Every other target name is an Airflow connection id (imports Airflow only when used)."""
    from airflow_provider_mltrain.hooks.compute import target_from_connection

    return target_from_connection(name, workspace_root)


def _storage_options_from_airflow(conn_id: str, url: str) -> dict:
    """``[mltrain] artifact_store_conn_id`` is an Airflow connection (imports Airflow only when used)."""
    from airflow_provider_mltrain.hooks.artifact_store import storage_options_from_connection

    return storage_options_from_connection(conn_id, url)


register_resolver(_from_airflow_connection)
set_storage_options_resolver(_storage_options_from_airflow)

del _targets
