"""``azureml.train.hyperdrive`` over mltrain: the names of
:mod:`airflow_provider_mltrain.train.hyperdrive`, with a ``HyperDriveConfig`` that takes this
layer's ``ScriptRunConfig`` as ``run_config``."""

from typing import Any

from airflow_provider_mltrain.compat.azureml.core.script_run_config import ScriptRunConfig
from airflow_provider_mltrain.train.hyperdrive import *  # noqa: F403
from airflow_provider_mltrain.train.hyperdrive import HyperDriveConfig as _HyperDriveConfig
from airflow_provider_mltrain.train.hyperdrive import __all__ as _names


class HyperDriveConfig(_HyperDriveConfig):  # type: ignore[no-redef]
    """mltrain's sweep config; an Azure-style ``run_config`` is turned into mltrain's, and the
    compat ``Experiment.submit`` maps its compute name and container settings."""

    def __init__(self, *args: Any, run_config: Any = None, **kwargs: Any):
        azure = run_config if isinstance(run_config, ScriptRunConfig) else None
        kwargs["run_config"] = azure.to_mltrain() if azure else run_config
        super().__init__(*args, **kwargs)
        self._azureml_run_config = azure


__all__ = list(_names)
