"""Azure ML v1's driver API (``azureml-core``) over mltrain: change only the import prefix.

    from airflow_provider_mltrain.compat.azureml.core import Workspace, Experiment, ScriptRunConfig

The modules mirror Azure's (``core``, ``core.runconfig``, ``core.conda_dependencies``,
``widgets``, ``train.hyperdrive``); each class is a thin adapter over mltrain's own, and what has
no counterpart is refused by name instead of accepted and ignored. See
docs/migrating-from-azureml.md.
"""
