"""``azureml.core.conda_dependencies.CondaDependencies`` over pip requirement lines.

mltrain builds environments with uv/pip from the package index, never with conda. So the pip
packages become ``python.requirements``, ``python`` becomes ``python.python_version``, and every
other conda package is refused by name with the ``pip_packages`` line to use instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.compat.azureml.core._strict import Strict
from airflow_provider_mltrain.core.environment import InvalidEnvironment

if TYPE_CHECKING:
    from airflow_provider_mltrain.compat.azureml.core.environment import PythonSection

# Conda entries that install nothing a pip-built virtualenv lacks.
_NEUTRAL = frozenset({"pip", "setuptools", "wheel"})
# Conda names whose PyPI name differs (None: no PyPI package; a base image must bring it).
_PYPI_NAME: dict[str, str | None] = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "py-xgboost": "xgboost",
    "tensorflow-gpu": "tensorflow",
    "pyyaml": "PyYAML",
    "cudatoolkit": None,
    "cudnn": None,
    "mkl": None,
    "openmpi": None,
    "libgcc": None,
    "nccl": None,
}


def _conda_name(spec: str) -> tuple[str, str]:
    """(name, version part) of a conda spec such as ``conda-forge::numpy=1.21.2``."""
    text = spec.split("::")[-1].strip()
    match = re.match(r"^([A-Za-z0-9_.-]+)\s*(.*)$", text)
    return (match.group(1).lower(), match.group(2).strip()) if match else (text.lower(), "")


def conda_packages_refused(specs: Iterable[str]) -> InvalidEnvironment:
    """The error for conda-only packages: each named, with the pip line that replaces it."""
    lines, fixes, no_pip = [], [], []
    for spec in specs:
        name, version = _conda_name(spec)
        pypi = _PYPI_NAME.get(name, name)
        if pypi is None:
            no_pip.append(spec)
            continue
        pin = ""
        if version:
            bare = version.lstrip("=").strip()
            pin = f"=={bare}" if re.fullmatch(r"[0-9][0-9A-Za-z.*+!-]*", bare) else version
        lines.append(spec)
        fixes.append(f"{pypi}{pin}")
    parts = []
    if lines:
        parts.append(
            f"conda packages cannot be installed by mltrain (it builds environments with pip/uv from "
            f"PyPI): {', '.join(repr(s) for s in lines)}. Pass them as pip packages instead: "
            f"CondaDependencies.create(pip_packages={fixes!r}) or cd.add_pip_package(...)"
        )
    if no_pip:
        parts.append(
            f"{', '.join(repr(s) for s in no_pip)} {'has' if len(no_pip) == 1 else 'have'} no PyPI "
            "package: use a Docker base image that has it (env.docker.base_image, Docker target)"
        )
    return InvalidEnvironment("; ".join(parts) + ".")


class CondaDependencies(Strict):
    """The pip packages, pip options and Python version of an environment, as Azure ML spells them.

    Assigned to ``env.python.conda_dependencies``, it *is* that environment's requirement list:
    ``add_pip_package`` after the assignment changes the environment too, as in Azure ML.
    """

    _known = frozenset()
    _azure_hints = {
        "channels": "conda channels are not used: packages come from PyPI (pip_packages)",
    }

    def __init__(
        self,
        conda_dependencies_file_path: str | os.PathLike[str] | None = None,
        _underlying_structure: Any = None,
    ):
        # Packages and pip options ("--index-url ..."): the very list an environment holds as
        # python.requirements once this is assigned to it.
        self._pip: list[str] = []
        self._python_version: str | None = None
        self._channels: list[str] = []
        self._owner: PythonSection | None = None
        if _underlying_structure is not None:
            raise InvalidEnvironment("CondaDependencies(_underlying_structure=...) is not supported.")
        if conda_dependencies_file_path is not None:
            self._read_file(Path(conda_dependencies_file_path).expanduser())

    # -- Azure's constructors and methods ---------------------------------------------------------

    @classmethod
    def create(
        cls,
        pip_packages: Iterable[str] | None = None,
        conda_packages: Iterable[str] | None = None,
        python_version: str | None = None,
        pin_sdk_version: bool = True,
        pip_indexurl: str | None = None,
    ) -> CondaDependencies:
        """Unlike Azure's, it adds no ``azureml-defaults``: nothing in mltrain needs it."""
        deps = cls()
        if python_version is not None:
            deps.set_python_version(python_version)
        conda = list(conda_packages or ())
        refused = [p for p in conda if _conda_name(p)[0] not in _NEUTRAL | {"python"}]
        if refused:
            raise conda_packages_refused(refused)
        for package in conda:
            deps.add_conda_package(package)
        for package in pip_packages or ():
            deps.add_pip_package(package)
        if pip_indexurl:
            deps.set_pip_option(f"--index-url {pip_indexurl}")
        return deps

    def add_pip_package(self, pip_package: str) -> None:
        if not isinstance(pip_package, str) or not pip_package.strip():
            raise InvalidEnvironment(f"add_pip_package needs a requirement string, got {pip_package!r}.")
        name = _pip_name(pip_package)
        self._pip[:] = [p for p in self._pip if _pip_name(p) != name] + [pip_package.strip()]

    def remove_pip_package(self, pip_package: str) -> None:
        name = _pip_name(pip_package)
        self._pip[:] = [p for p in self._pip if _pip_name(p) != name]

    def add_conda_package(self, conda_package: str) -> None:
        name, version = _conda_name(conda_package)
        if name == "python":
            match = re.match(r"^[=<>!~\s]*(3\.\d+)", version)
            self.set_python_version(match.group(1) if match else None)
        elif name not in _NEUTRAL:
            raise conda_packages_refused([conda_package])

    def remove_conda_package(self, conda_package: str) -> None:
        if _conda_name(conda_package)[0] == "python":
            self.set_python_version(None)

    def add_channel(self, channel: str) -> None:
        """Recorded only: with conda packages refused, a channel changes nothing in the build."""
        self._channels.append(channel)

    def set_python_version(self, version: str | None) -> None:
        self._python_version = None if version is None else str(version)
        if self._owner is not None:
            self._owner.python_version = self._python_version

    def get_python_version(self) -> str | None:
        return self._python_version

    def set_pip_option(self, pip_option: str) -> None:
        flag = pip_option.split()[0] if pip_option.split() else ""
        kept = [p for p in self._pip if not (p.startswith("-") and p.split()[0] == flag)]
        self._pip[:] = [*kept, pip_option.strip()]

    @property
    def pip_packages(self) -> Iterator[str]:
        return iter([p for p in self._pip if not p.startswith("-")])

    @property
    def conda_packages(self) -> Iterator[str]:
        return iter([f"python={self._python_version}"] if self._python_version else [])

    @property
    def pip_options(self) -> Iterator[str]:
        return iter([p for p in self._pip if p.startswith("-")])

    def serialize_to_string(self) -> str:
        """The conda ``environment.yml`` text, as Azure ML writes it."""
        import yaml

        deps: list[Any] = [f"python={self._python_version}"] if self._python_version else []
        deps += ["pip", {"pip": list(self._pip)}]
        data: dict[str, Any] = {"name": "project_environment", "dependencies": deps}
        if self._channels:
            data["channels"] = list(self._channels)
        return yaml.safe_dump(data, sort_keys=False)

    def save(self, path: str | os.PathLike[str] | None = None) -> str:
        target = Path(path or "environment.yml")
        target.write_text(self.serialize_to_string(), encoding="utf-8")
        return str(target)

    save_to_file = save

    def __repr__(self) -> str:
        return f"CondaDependencies(pip_packages={self._pip!r}, python_version={self._python_version!r})"

    # -- mltrain ----------------------------------------------------------------------------------

    def _read_file(self, path: Path) -> None:
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidEnvironment(f"Cannot read conda file {path}: {exc}.") from None
        refused = []
        for dep in data.get("dependencies") or []:
            if isinstance(dep, dict) and set(dep) == {"pip"}:
                for line in dep["pip"] or []:
                    text = str(line).strip()
                    (self.set_pip_option if text.startswith("-") else self.add_pip_package)(text)
            elif isinstance(dep, str):
                name, _ = _conda_name(dep)
                if name == "python" or name in _NEUTRAL:
                    self.add_conda_package(dep)
                else:
                    refused.append(dep)
        if refused:
            raise conda_packages_refused(refused)
        self._channels = [str(c) for c in data.get("channels") or []]


def _pip_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


__all__ = ["CondaDependencies"]
