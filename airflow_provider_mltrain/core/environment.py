"""What a script runs in. This slice covers the user-managed case: the current Python or a given one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_provider_mltrain.core.errors import InvalidRunConfig


@dataclass
class PythonSection:
    """``interpreter_path`` None means the Python that submits the run."""

    user_managed_dependencies: bool = True
    interpreter_path: str | None = None


@dataclass
class Environment:
    name: str = "default"
    version: str | None = None
    python: PythonSection = field(default_factory=PythonSection)
    environment_variables: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        if not self.python.user_managed_dependencies:
            raise InvalidRunConfig(
                f"Environment {self.name!r} asks for managed dependencies, which this version cannot "
                "build yet. Set python.user_managed_dependencies=True and point "
                "python.interpreter_path at a Python that has the packages the script needs."
            )
        for key, value in self.environment_variables.items():
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                raise InvalidRunConfig(f"Environment variable name {key!r} is not valid.")
            if not isinstance(value, str) or "\0" in value:
                raise InvalidRunConfig(f"Environment variable {key} must be a string without NUL bytes.")


def resolve_environment(value: Environment | None) -> Environment:
    if value is None:
        return Environment()
    if isinstance(value, Environment):
        value.validate()
        return value
    raise InvalidRunConfig(
        f"environment must be an Environment or None, got {type(value).__name__}. "
        "Named and YAML environments arrive with managed environments; for a given Python use "
        "Environment(python=PythonSection(interpreter_path='/path/to/python'))."
    )
