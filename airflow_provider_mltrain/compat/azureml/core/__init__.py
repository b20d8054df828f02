"""``azureml.core`` over mltrain: ``Workspace``, ``Experiment``, ``ScriptRunConfig``,
``Environment``, ``RunConfiguration``, ``Run``, ``ComputeTarget``, ``Model``."""

from airflow_provider_mltrain.compat.azureml.core.compute import ComputeTarget, ComputeTargetException
from airflow_provider_mltrain.compat.azureml.core.conda_dependencies import CondaDependencies
from airflow_provider_mltrain.compat.azureml.core.environment import Environment
from airflow_provider_mltrain.compat.azureml.core.experiment import Experiment
from airflow_provider_mltrain.compat.azureml.core.run import Run
from airflow_provider_mltrain.compat.azureml.core.runconfig import DockerConfiguration, RunConfiguration
from airflow_provider_mltrain.compat.azureml.core.script_run_config import ScriptRunConfig
from airflow_provider_mltrain.compat.azureml.core.workspace import Workspace
from airflow_provider_mltrain.core.model import Model

VERSION = "1.60.0"  # the azureml-core whose driver API this layer follows (its last v1 line)

__all__ = [
    "VERSION",
    "ComputeTarget",
    "ComputeTargetException",
    "CondaDependencies",
    "DockerConfiguration",
    "Environment",
    "Experiment",
    "Model",
    "Run",
    "RunConfiguration",
    "ScriptRunConfig",
    "Workspace",
]
