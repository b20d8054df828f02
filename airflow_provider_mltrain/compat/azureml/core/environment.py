"""``azureml.core.Environment`` over mltrain's ``Environment`` (core/environment.py).

The same object, with Azure's spellings on top: ``python.conda_dependencies``, ``docker.enabled``,
``from_pip_requirements(name, file_path)``, and Azure's curated names (``AzureML-Minimal``, ...)
mapped to mltrain's curated environments. Setting an Azure attribute mltrain has no counterpart
for raises ``AttributeError`` naming it.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.compat.azureml.core._strict import Strict
from airflow_provider_mltrain.compat.azureml.core.conda_dependencies import CondaDependencies
from airflow_provider_mltrain.core import environment as core_env
from airflow_provider_mltrain.core.environment import EnvironmentNotFound, InvalidEnvironment

if TYPE_CHECKING:
    from airflow_provider_mltrain.core.workspace import Workspace

log = logging.getLogger(__name__)

# Azure's constant names a base image of its own (Ubuntu with conda); here, an image with a
# Python the runner and managed environments work with.
DEFAULT_CPU_IMAGE = "python:3.11-slim-bookworm"

# Azure ML's curated environments (2021-2024) whose scripts run in one of mltrain's, by what
# the scripts need (the Python version may differ: see docs/environments.md).
AZUREML_CURATED = {
    "AzureML-Minimal": "mltrain-minimal",
    "AzureML-sklearn-0.24-ubuntu18.04-py37-cpu": "mltrain-sklearn-legacy",
    "AzureML-sklearn-0.24.1-ubuntu18.04-py37-cpu": "mltrain-sklearn-legacy",
    "AzureML-sklearn-1.0-ubuntu20.04-py38-cpu": "mltrain-sklearn-legacy",
    "AzureML-sklearn-1.1-ubuntu20.04-py38-cpu": "mltrain-sklearn-legacy",
    "AzureML-sklearn-1.5": "mltrain-sklearn",
    "sklearn-1.5": "mltrain-sklearn",
}


def curated_name(name: str) -> str | None:
    """mltrain's curated environment for an Azure curated name (also ``azureml:NAME@latest``);
    None when ``name`` is not an Azure curated name. Raises :class:`EnvironmentNotFound` for an
    Azure curated name that has no counterpart."""
    bare = re.sub(r"^azureml:", "", name)
    bare = re.sub(r"(@latest|:\d+)$", "", bare)
    for azure, ours in AZUREML_CURATED.items():
        if bare.lower() == azure.lower():
            return ours
    if bare.lower().startswith("azureml-"):
        mapped = ", ".join(f"{a} -> {o}" for a, o in AZUREML_CURATED.items())
        raise EnvironmentNotFound(
            f"Azure ML's curated environment {name!r} has no mltrain counterpart (mltrain maps {mapped}). "
            "List the packages the script needs in a requirements file and use "
            "Environment.from_pip_requirements(name='...', file_path='requirements.txt'), or a "
            "Docker image that has them (env.docker.enabled = True, env.docker.base_image = '...')."
        )
    return None


class PythonSection(Strict, core_env.PythonSection):
    """``env.python`` with Azure's ``conda_dependencies``."""

    _azure_hints = {
        "conda_dependencies_file": (
            "use Environment.from_conda_specification(name, file_path), or "
            "env.python.conda_dependencies = CondaDependencies(file_path)"
        ),
        "base_conda_environment": "conda environments are not used; list the packages as pip packages",
    }

    @property
    def conda_dependencies(self) -> CondaDependencies:
        """The requirements as a :class:`CondaDependencies` whose changes write through."""
        deps = CondaDependencies()
        deps._pip = self.requirements
        deps._python_version = self.python_version
        deps._owner = self
        return deps

    @conda_dependencies.setter
    def conda_dependencies(self, value: CondaDependencies) -> None:
        if not isinstance(value, CondaDependencies):
            raise InvalidEnvironment(
                f"env.python.conda_dependencies must be a CondaDependencies, got {type(value).__name__}."
            )
        self.requirements = value._pip  # shared: a later add_pip_package lands here too
        self.python_version = value._python_version
        value._owner = self
        if self.user_managed_dependencies is None:
            self.user_managed_dependencies = False


class DockerSection(Strict, core_env.DockerSection):
    """``env.docker``: ``enabled`` says the script must run in a container (the Docker target, from
    ``base_image``); a submission elsewhere is refused rather than run on the bare machine."""

    _azure_hints = {
        "base_dockerfile": "write the Dockerfile to a file and set env.docker.dockerfile to its path",
        "base_image_registry": "log the Docker daemon in (docker login) and name the registry in base_image",
        "arguments": "pass docker_runtime_config=DockerConfiguration(...) or the target's options",
        "shm_size": "pass docker_runtime_config=DockerConfiguration(shm_size='2g')",
        "gpu_support": "set the Docker connection's gpus option (or target_options={'gpus': 'all'})",
        "shared_volumes": "set the Docker connection's volumes option",
        "platform": "it has no counterpart; the Docker daemon's platform is used",
    }

    @property
    def enabled(self) -> bool:
        return bool(self.__dict__.get("_enabled", False))

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise InvalidEnvironment(f"env.docker.enabled must be True or False, got {value!r}.")
        self.__dict__["_enabled"] = value


_ENV_HINTS = {
    "spark": "Spark packages come from python requirements; submit to a Spark connection",
    "r": "R environments are not supported",
    "databricks": "Databricks is not a compute target of mltrain",
    "inferencing_stack_version": "deployment is not part of mltrain",
}


class Environment(Strict, core_env.Environment):
    """Azure ML v1's ``Environment``; also a valid mltrain environment anywhere one is taken."""

    _azure_hints = _ENV_HINTS

    def __init__(self, name: str = "default", *args: Any, **kwargs: Any):
        super().__init__(name, *args, **kwargs)
        self.python = _python(self.python)
        self.docker = _docker(self.docker)

    @classmethod
    def adopt(cls, env: core_env.Environment) -> Environment:
        """This class's copy of an mltrain environment (from the registry, a YAML file, ...).

        The registry keeps no ``docker.enabled``: an environment that names a base image or a
        Dockerfile comes back enabled, so a registered container environment is never run
        outside its container without a word."""
        if isinstance(env, cls):
            return env
        values = {f.name: copy.deepcopy(getattr(env, f.name)) for f in fields(env)}
        out = cls(**values)
        _docker(out.docker).enabled = bool(out.docker.base_image or out.docker.dockerfile)
        return out

    @classmethod
    def get(
        cls, workspace: Workspace, name: str, version: str | None = None, label: Any = None
    ) -> Environment:
        """A registered environment, or a curated one: Azure's curated names (``AzureML-Minimal``,
        ``AzureML-sklearn-1.0-ubuntu20.04-py38-cpu``, ...) give mltrain's counterpart, and an Azure
        curated name without one is refused by name."""
        if label is not None:
            raise InvalidEnvironment("Environment.get(label=...) is not supported: pass version=.")
        ours = curated_name(name) if isinstance(name, str) else None
        if ours is not None:
            if version is not None:
                log.warning(
                    "Environment %s: Azure's version %s is not kept; mltrain's %s is used",
                    name,
                    version,
                    ours,
                )
            return cls.adopt(core_env.Environment.get(workspace, ours))
        return cls.adopt(core_env.Environment.get(workspace, name, version))

    @classmethod
    def list(cls, workspace: Workspace) -> dict[str, Environment]:  # type: ignore[override]
        return {n: cls.adopt(e) for n, e in core_env.Environment.list(workspace).items()}

    @classmethod
    def from_conda_specification(cls, name: str, file_path: str | os.PathLike[str]) -> Environment:  # type: ignore[override]
        """A conda ``environment.yml``: its ``python`` and ``pip:`` entries; conda packages are
        refused by name."""
        return cls.adopt(core_env.Environment.from_conda_specification(name, file_path))

    @classmethod
    def from_pip_requirements(  # type: ignore[override]
        cls, name: str, file_path: str | os.PathLike[str], pip_version: str | None = None
    ) -> Environment:
        """A ``requirements.txt``. ``pip_version`` pins the installer Azure used; mltrain builds
        with uv (or the venv's pip) and says so when one is given."""
        if pip_version is not None:
            log.info(
                "Environment %s: pip_version=%s is not used; mltrain installs with uv", name, pip_version
            )
        return cls.adopt(core_env.Environment.from_pip_requirements(name, file_path))

    @classmethod
    def from_docker_image(
        cls,
        name: str,
        image: str,
        container_registry: Any = None,
        conda_specification: str | os.PathLike[str] | None = None,
        pip_requirements: str | os.PathLike[str] | None = None,
    ) -> Environment:
        """An environment run in ``image`` (``docker.enabled``), with the packages of a conda or
        pip file built on top. ``container_registry`` is refused: log the Docker daemon in."""
        if container_registry is not None:
            raise InvalidEnvironment(
                "Environment.from_docker_image(container_registry=...) is not available: log the Docker "
                "daemon in to the registry (docker login) and give the full image name."
            )
        env = cls._with_packages(name, conda_specification, pip_requirements)
        env.docker.base_image = image
        _docker(env.docker).enabled = True
        return env

    @classmethod
    def from_dockerfile(
        cls,
        name: str,
        dockerfile: str | os.PathLike[str],
        conda_specification: str | os.PathLike[str] | None = None,
        pip_requirements: str | os.PathLike[str] | None = None,
    ) -> Environment:
        """An environment run in the image a Dockerfile builds (``docker.enabled``). Azure also
        took the Dockerfile's text; here it must be a file."""
        path = os.fspath(dockerfile)
        if "\n" in path or not os.path.isfile(path):
            raise InvalidEnvironment(
                f"Environment.from_dockerfile({name!r}, ...) needs the path of a Dockerfile; "
                f"{path[:60]!r} is not a file. Write the Dockerfile's text to a file and pass its path."
            )
        env = cls._with_packages(name, conda_specification, pip_requirements)
        env.docker.dockerfile = os.path.abspath(path)
        _docker(env.docker).enabled = True
        return env

    @classmethod
    def _with_packages(
        cls, name: str, conda: str | os.PathLike[str] | None, pip: str | os.PathLike[str] | None
    ) -> Environment:
        if conda is not None and pip is not None:
            raise InvalidEnvironment("Give conda_specification or pip_requirements, not both.")
        if conda is not None:
            return cls.from_conda_specification(name, conda)
        if pip is not None:
            return cls.from_pip_requirements(name, pip)
        return cls(name)

    @classmethod
    def from_existing_conda_environment(cls, name: str, conda_environment_name: str) -> Environment:
        raise InvalidEnvironment(
            f"Environment.from_existing_conda_environment({name!r}, {conda_environment_name!r}) is not "
            "available: point env.python.interpreter_path at that environment's python (with "
            "env.python.user_managed_dependencies = True), or export its packages to a requirements file."
        )


def _python(section: core_env.PythonSection) -> PythonSection:
    if isinstance(section, PythonSection):
        return section
    return PythonSection(**{f.name: getattr(section, f.name) for f in fields(section)})


def _docker(section: core_env.DockerSection) -> DockerSection:
    if isinstance(section, DockerSection):
        return section
    out = DockerSection(**{f.name: getattr(section, f.name) for f in fields(section)})
    out.enabled = False
    return out


__all__ = [
    "AZUREML_CURATED",
    "DEFAULT_CPU_IMAGE",
    "DockerSection",
    "Environment",
    "PythonSection",
    "curated_name",
]
