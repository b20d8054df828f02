"""``azureml.core.ScriptRunConfig``: Azure's keywords over mltrain's ScriptRunConfig.

As in Azure ML, ``compute_target``, ``environment``, ``max_run_duration_seconds`` and
``docker_runtime_config`` land in ``src.run_config`` (a :class:`RunConfiguration`), and a change
made there after construction counts. :meth:`ScriptRunConfig.to_mltrain` gives the mltrain
config that is actually submitted.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

from airflow_provider_mltrain.compat.azureml.core._strict import Strict
from airflow_provider_mltrain.compat.azureml.core.runconfig import DockerConfiguration, RunConfiguration
from airflow_provider_mltrain.core.environment import Environment as CoreEnvironment
from airflow_provider_mltrain.core.errors import InvalidRunConfig
from airflow_provider_mltrain.core.run_config import ScriptRunConfig as CoreScriptRunConfig


class ScriptRunConfig(Strict):
    _known = frozenset({"source_directory", "script", "arguments", "run_config", "inputs", "outputs"})
    _azure_hints = {
        "distributed_job_config": "distributed launches are not available",
        "command": "pass script and arguments",
    }

    def __init__(
        self,
        source_directory: str | os.PathLike[str],
        script: str | None = None,
        arguments: Sequence[Any] | None = None,
        run_config: RunConfiguration | None = None,
        _telemetry_values: Any = None,
        compute_target: Any = None,
        environment: Any = None,
        distributed_job_config: Any = None,
        resume_from: Any = None,
        max_run_duration_seconds: float | None = None,
        command: Any = None,
        docker_runtime_config: DockerConfiguration | None = None,
        *,
        inputs: dict[str, Any] | None = None,
        outputs: dict[str, Any] | None = None,
    ):
        for name, value, fix in (
            ("distributed_job_config", distributed_job_config, "distributed launches are not available"),
            ("resume_from", resume_from, "copy the checkpoint into the source folder or pass it as an input"),
            ("command", command, "pass script= and arguments="),
        ):
            if value is not None:
                raise InvalidRunConfig(f"ScriptRunConfig {name}= is not available: {fix}.")
        if run_config is not None and not isinstance(run_config, RunConfiguration):
            raise InvalidRunConfig(
                f"ScriptRunConfig run_config must be a RunConfiguration, got {type(run_config).__name__}."
            )
        if docker_runtime_config is not None and not isinstance(docker_runtime_config, DockerConfiguration):
            raise InvalidRunConfig(
                "ScriptRunConfig docker_runtime_config must be a DockerConfiguration, got "
                f"{type(docker_runtime_config).__name__}."
            )
        self.source_directory = source_directory
        self.script = script
        self.arguments = list(arguments) if arguments is not None else []
        self.run_config = run_config if run_config is not None else RunConfiguration()
        self.inputs = dict(inputs or {})
        self.outputs = dict(outputs or {})
        if script is not None:
            self.run_config.script = script
        if arguments is not None:
            self.run_config.arguments = list(arguments)
        if compute_target is not None:
            self.run_config.target = compute_target
        if environment is not None:
            self.run_config.environment = environment
        if max_run_duration_seconds is not None:
            self.run_config.max_run_duration_seconds = max_run_duration_seconds
        if docker_runtime_config is not None:
            self.run_config.docker = docker_runtime_config

    def __repr__(self) -> str:
        return (
            f"ScriptRunConfig(source_directory={str(self.source_directory)!r}, script={self.script!r}, "
            f"run_config={self.run_config!r})"
        )

    def to_mltrain(self, target_names: dict[str, str] | None = None) -> CoreScriptRunConfig:
        """The mltrain :class:`~airflow_provider_mltrain.core.run_config.ScriptRunConfig` this
        describes; ``target_names`` maps Azure compute names to connection ids."""
        rc = self.run_config
        if rc.node_count not in (None, 1):
            raise InvalidRunConfig(
                f"run_config.node_count={rc.node_count!r}: a run uses one node; distributed launches "
                "are not available."
            )
        target = rc.target if rc.target is not None else "local"
        if isinstance(target, str):
            target = (target_names or {}).get(target, target)
        environment = rc.environment
        if environment is not None and not isinstance(environment, (CoreEnvironment, str, os.PathLike)):
            raise InvalidRunConfig(
                f"run_config.environment must be an Environment or a name, got {type(environment).__name__}."
            )
        if isinstance(environment, str):
            from airflow_provider_mltrain.compat.azureml.core.environment import curated_name

            environment = curated_name(environment) or environment  # Azure's curated names
        if rc.environment_variables:
            if not isinstance(environment, CoreEnvironment):
                raise InvalidRunConfig(
                    "run_config.environment_variables need an Environment object: set "
                    "env.environment_variables instead."
                )
            environment = copy.deepcopy(environment)
            environment.environment_variables = {
                **environment.environment_variables,
                **{str(k): str(v) for k, v in rc.environment_variables.items()},
            }
        options: dict[str, Any] = {}
        if rc.docker is not None and rc.docker.shm_size:
            options["shm_size"] = rc.docker.shm_size
        return CoreScriptRunConfig(
            source_directory=self.source_directory,
            script=self.script if self.script is not None else rc.script,  # type: ignore[arg-type]
            arguments=list(self.arguments or rc.arguments),
            compute_target=target,
            environment=environment,
            framework=rc.mltrain_framework(),
            target_options=options,
            inputs=dict(self.inputs),
            outputs=dict(self.outputs),
            max_run_duration_seconds=rc.max_run_duration_seconds,
        )

    def needs_docker(self) -> str | None:
        """Why the run must be in a container (``docker.enabled``, ``use_docker``, ``shm_size``), or None."""
        rc = self.run_config
        env = rc.environment
        if getattr(getattr(env, "docker", None), "enabled", False):
            return f"environment {env.name!r} has docker.enabled = True"
        if rc.docker is not None and rc.docker.use_docker:
            return "docker_runtime_config has use_docker=True"
        if rc.docker is not None and rc.docker.shm_size:
            return f"docker_runtime_config sets shm_size={rc.docker.shm_size!r}"
        return None

    def refuses_docker(self) -> bool:
        rc = self.run_config
        return rc.docker is not None and rc.docker.use_docker is False


__all__ = ["ScriptRunConfig"]
