"""``azureml.core.runconfig``: ``RunConfiguration`` and ``DockerConfiguration``.

A ``RunConfiguration`` holds what a :class:`ScriptRunConfig` does not name itself: the target,
the environment, the framework, the run's time limit, the container settings. Only the settings
mltrain honours exist; setting another raises ``AttributeError`` naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_mltrain.compat.azureml.core._strict import Strict
from airflow_provider_mltrain.core.errors import InvalidRunConfig

# Azure's framework names -> mltrain's.
FRAMEWORKS = {"python": "python", "pyspark": "pyspark"}


class DockerConfiguration(Strict):
    """Container settings of a run: ``use_docker`` needs a Docker target; ``shm_size`` becomes its
    ``shm_size`` option. Docker CLI ``arguments`` are refused: use the target's options."""

    _known = frozenset({"use_docker", "shared_volumes", "shm_size", "arguments"})

    def __init__(
        self,
        use_docker: bool | None = None,
        arguments: Sequence[str] | None = None,
        shared_volumes: bool | None = None,
        shm_size: str | None = None,
    ):
        if use_docker is not None and not isinstance(use_docker, bool):
            raise InvalidRunConfig(
                f"DockerConfiguration use_docker must be True or False, got {use_docker!r}."
            )
        if arguments:
            raise InvalidRunConfig(
                f"DockerConfiguration arguments={list(arguments)!r} are not passed to Docker: set the "
                "Docker connection's options (cpus, mem_limit, gpus, volumes, network_mode, user) or "
                "ScriptRunConfig target_options instead."
            )
        self.use_docker = use_docker
        self.arguments: list[str] = []
        self.shared_volumes = shared_volumes
        self.shm_size = shm_size

    def __repr__(self) -> str:
        return f"DockerConfiguration(use_docker={self.use_docker!r}, shm_size={self.shm_size!r})"


class RunConfiguration(Strict):
    """``src.run_config``: ``target``, ``environment``, ``framework`` (``"Python"`` or
    ``"PySpark"``), ``max_run_duration_seconds``, ``docker``, ``script``, ``arguments``,
    ``environment_variables`` (added to the environment's for this run)."""

    _known = frozenset(
        {
            "script",
            "arguments",
            "target",
            "environment",
            "max_run_duration_seconds",
            "docker",
            "environment_variables",
            "node_count",
        }
    )
    _azure_hints = {
        "communicator": "distributed launches (MPI, ParameterServer) are not available",
        "mpi": "distributed launches (MPI) are not available",
        "pytorch": "distributed launches are not available",
        "tensorflow": "distributed launches are not available",
        "data": "pass data as ScriptRunConfig inputs= or as arguments",
        "data_references": "pass data as ScriptRunConfig inputs= or as arguments",
        "output_data": "pass ScriptRunConfig outputs=",
        "amlcompute": "compute targets are Airflow connections: set compute_target to a connection id",
        "history": "the run history is always kept",
        "source_directory_data_store": "snapshots live in the workspace's artifact store",
        "spark": "Spark settings are the Spark connection's and target_options",
        "hdi": "Spark settings are the Spark connection's and target_options",
        "command": "pass script and arguments",
        "priority": "it has no counterpart",
        "credential_passthrough": "it has no counterpart",
    }

    def __init__(
        self,
        script: str | None = None,
        arguments: Sequence[Any] | None = None,
        framework: str | None = None,
        communicator: str | None = None,
        conda_dependencies: Any = None,
        _history_enabled: Any = None,
        _path: Any = None,
        _name: Any = None,
        command: Any = None,
    ):
        from airflow_provider_mltrain.compat.azureml.core.environment import Environment

        if communicator not in (None, "None"):
            raise InvalidRunConfig(
                f"RunConfiguration communicator={communicator!r}: distributed launches are not available."
            )
        if command:
            raise InvalidRunConfig("RunConfiguration command= is not available: pass script and arguments.")
        self.script = script
        self.arguments = list(arguments or [])
        self.target: Any = "local"
        self.environment: Any = Environment()
        self._framework: str | None = None
        if framework is not None:
            self.framework = framework
        self.max_run_duration_seconds: float | None = None
        self.docker: DockerConfiguration | None = None
        self.environment_variables: dict[str, str] = {}
        self.node_count = 1
        if conda_dependencies is not None:
            python: Any = self.environment.python
            python.conda_dependencies = conda_dependencies

    @property
    def framework(self) -> str:
        """Azure's spelling; unset means the target's default (Python, or PySpark on Spark)."""
        return {"pyspark": "PySpark"}.get(self._framework or "", "Python")

    @framework.setter
    def framework(self, value: str) -> None:
        ours = FRAMEWORKS.get(str(value).lower())
        if ours is None:
            raise InvalidRunConfig(
                f"framework {value!r} is not available: use 'Python' (any target) or 'PySpark' (a Spark "
                "connection). TensorFlow and PyTorch scripts run with 'Python'."
            )
        self._framework = ours

    def mltrain_framework(self) -> str | None:
        """mltrain's framework name, or None for the target's default."""
        return self._framework

    def __repr__(self) -> str:
        return (
            f"RunConfiguration(target={self.target!r}, framework={self.framework!r}, "
            f"environment={getattr(self.environment, 'name', self.environment)!r})"
        )


__all__ = ["DockerConfiguration", "RunConfiguration"]
