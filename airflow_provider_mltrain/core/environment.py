"""Environments: what a script runs in, identified by a hash of everything that changes the build.

An environment is either *user-managed* (a Python that already has the packages: the submitting
Python, or ``python.interpreter_path``) or *managed* (a virtualenv built from ``requirements`` /
``requirements_file`` / ``python_version``, once per content hash, then reused). It also carries a
Docker base image or Dockerfile for the Docker target, and environment variables for the script.

The hash covers the normalized requirements (and the *contents* of requirement files), the Python
version, the interpreter of a user-managed environment, the base image and the Dockerfile's
contents. It leaves out the name, the version, the description and the environment variables,
which change nothing in the build.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core.errors import InvalidRunConfig, MLTrainError
from airflow_provider_mltrain.core.redact import SENSITIVE_NAME, mask_variable, mask_variables, redact_url

if TYPE_CHECKING:
    from airflow_provider_mltrain.core.workspace import Workspace

log = logging.getLogger(__name__)

HASH_VERSION = 1
CURATED_PREFIX = "mltrain-"
_SENSITIVE = SENSITIVE_NAME  # kept for importers; see core/redact.py
_ENV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")  # fullmatch: no trailing newline


class InvalidEnvironment(InvalidRunConfig):
    """An environment spec (object or YAML) that cannot be used as given."""


class EnvironmentNotFound(InvalidEnvironment, LookupError):
    """No registered or curated environment has that name (or version)."""


class EnvironmentBuildFailed(MLTrainError):
    """Building the environment failed; the message carries the installer's own output."""


@dataclass
class PythonSection:
    """``user_managed_dependencies`` None means: managed when requirements or a Python version are
    given, user-managed (the interpreter as it is) otherwise."""

    user_managed_dependencies: bool | None = None
    interpreter_path: str | None = None
    requirements: list[str] = field(default_factory=list)
    requirements_file: str | None = None
    python_version: str | None = None


@dataclass
class DockerSection:
    base_image: str | None = None
    dockerfile: str | None = None


@dataclass
class Environment:
    name: str = "default"
    version: str | None = None
    python: PythonSection = field(default_factory=PythonSection)
    docker: DockerSection = field(default_factory=DockerSection)
    environment_variables: dict[str, str] = field(default_factory=dict)
    # What the environment is for, in a sentence (``mltrain env list`` shows it); not in the hash.
    description: str | None = None
    # Folder that relative paths (requirements_file, dockerfile) are read from.
    base_dir: str | None = field(default=None, compare=False, repr=False)

    # -- what it is ------------------------------------------------------------------------------

    @property
    def managed(self) -> bool:
        explicit = self.python.user_managed_dependencies
        if explicit is not None:
            return not explicit
        return bool(self.python.requirements or self.python.requirements_file or self.python.python_version)

    def _path(self, relative: str) -> Path:
        path = Path(relative).expanduser()
        if not path.is_absolute():
            path = Path(self.base_dir or os.getcwd()) / path
        return path

    def _read(self, relative: str, what: str) -> str:
        path = self._path(relative)
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidEnvironment(
                f"Environment {self.name!r}: cannot read {what} {path}: {exc.strerror or exc}."
            ) from None

    def requirement_lines(self) -> list[str]:
        """Normalized requirements: pip options first (in order), then packages, sorted."""
        # packaging and PyYAML are imported where used: a submission without them starts faster.
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.utils import canonicalize_name

        options: list[str] = []
        packages: list[str] = []
        sources: list[tuple[str, list[str], Path | None]] = [
            ("python.requirements", self.python.requirements, None)
        ]
        if self.python.requirements_file:
            path = self._path(self.python.requirements_file)
            sources.append(
                (str(path), self._read(self.python.requirements_file, "requirements_file").splitlines(), path)
            )
        seen_files: set[Path] = set()
        while sources:
            origin, lines, source_path = sources.pop(0)
            for number, raw in enumerate(lines, 1):
                line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
                if not line:
                    continue
                include = re.match(r"^(?:-r|--requirement)(?:\s+|=)?(\S.*)$", line)
                if include:
                    nested = include.group(1).strip()
                    folder = source_path.parent if source_path else Path(self.base_dir or os.getcwd())
                    nested_path = (folder / nested).resolve()
                    if nested_path in seen_files:
                        continue
                    seen_files.add(nested_path)
                    try:
                        text = nested_path.read_text(encoding="utf-8")
                    except OSError as exc:
                        raise InvalidEnvironment(
                            f"{origin}:{number}: cannot read {nested_path}: {exc.strerror or exc}."
                        ) from None
                    sources.append((str(nested_path), text.splitlines(), nested_path))
                    continue
                if line.startswith("-"):
                    options.append(self._option_line(line, source_path))
                    continue
                try:
                    req = Requirement(line)
                except InvalidRequirement as exc:
                    raise InvalidEnvironment(
                        f"{origin}:{number}: {line!r} is not a valid requirement ({exc}). Use pip's "
                        "requirement syntax, for example 'scikit-learn==1.5.2'."
                    ) from None
                req.name = canonicalize_name(req.name)
                packages.append(str(req))
        return options + sorted(set(packages))

    def _option_line(self, line: str, source_path: Path | None) -> str:
        """A pip option with its file argument made absolute; a constraints file's contents are hashed."""
        folder = source_path.parent if source_path else Path(self.base_dir or os.getcwd())
        match = re.match(r"^(-c|--constraint|-e|--editable)(?:\s+|=)(\S.*)$", line)
        if not match:
            return " ".join(line.split())
        flag, value = match.group(1), match.group(2).strip()
        if "://" in value or value.startswith("git+"):
            return f"{flag} {value}"
        path = (folder / value).resolve()
        if flag in ("-c", "--constraint"):
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            except OSError as exc:
                raise InvalidEnvironment(
                    f"Cannot read constraints file {path}: {exc.strerror or exc}."
                ) from None
            return f"-c {path} #sha256={digest}"
        return f"-e {path}"

    def unpinned(self) -> list[str]:
        """Requirements without an exact ``==`` pin: frozen at first build, then reused."""
        from packaging.requirements import Requirement

        out = []
        for line in self.requirement_lines():
            if line.startswith("-"):
                continue
            req = Requirement(line)
            if req.url or not any(
                s.operator in ("==", "===") and "*" not in s.version for s in req.specifier
            ):
                out.append(req.name)
        return out

    def content_hash(self) -> str:
        docker: dict[str, Any] = {"base_image": self.docker.base_image}
        if self.docker.dockerfile:
            docker["dockerfile"] = self._read(self.docker.dockerfile, "dockerfile")
        body: dict[str, Any] = {"v": HASH_VERSION, "managed": self.managed, "docker": docker}
        if self.managed:
            body["python_version"] = self.python.python_version
            body["base_interpreter"] = self.python.interpreter_path  # the venv is built from it
            body["requirements"] = self.requirement_lines()
        else:
            body["interpreter_path"] = self.python.interpreter_path
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    # -- checks ----------------------------------------------------------------------------------

    def validate(self) -> None:
        if not isinstance(self.name, str) or not _ENV_NAME.fullmatch(self.name):
            raise InvalidEnvironment(
                f"Environment name {self.name!r} is not valid: use letters, digits, '_', '-' or '.'."
            )
        for key, value in self.environment_variables.items():
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                raise InvalidEnvironment(f"Environment {self.name!r}: variable name {key!r} is not valid.")
            if not isinstance(value, str) or "\0" in value:
                shown = mask_variable(key, value) if isinstance(value, str) else type(value).__name__
                raise InvalidEnvironment(
                    f"Environment {self.name!r}: variable {key} must be a string without NUL bytes, "
                    f"got {shown!r}."
                )
        if not isinstance(self.python.requirements, list):
            raise InvalidEnvironment(
                f"Environment {self.name!r}: python.requirements must be a list of strings."
            )
        if self.managed and self.python.interpreter_path and self.python.python_version:
            raise InvalidEnvironment(
                f"Environment {self.name!r}: give python_version or interpreter_path, not both."
            )
        version = self.python.python_version
        match = re.fullmatch(r"3\.(\d{1,2})(\.\d{1,2})?", str(version)) if version else None
        if version and (not match or int(match.group(1)) < 9):
            raise InvalidEnvironment(
                f"Environment {self.name!r}: python_version {version!r} is not a Python 3 version "
                "of 3.9 or newer, such as '3.11'."
            )
        if self.managed:
            self.requirement_lines()  # raises on a bad line or an unreadable file

    # -- (de)serialization -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("base_dir")
        return data

    def recordable(self) -> dict[str, Any]:
        """``to_dict()`` for the run history, the UI and the CLI: the values of secret-looking
        variables and the credentials in URLs (variables, requirement lines) are masked."""
        data = self.to_dict()
        data["environment_variables"] = mask_variables(self.environment_variables)
        data["python"]["requirements"] = [redact_url(r) for r in data["python"]["requirements"]]
        return data

    def __repr__(self) -> str:
        # Airflow shows a templated field's repr on the task's "Rendered Template" page.
        shown = self.recordable()
        python = replace(self.python, requirements=shown["python"]["requirements"])
        return (
            f"Environment(name={self.name!r}, version={self.version!r}, python={python!r}, "
            f"docker={self.docker!r}, environment_variables={shown['environment_variables']!r})"
        )

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], source: str = "environment", base_dir: str | None = None
    ) -> Environment:
        if not isinstance(data, dict):
            raise InvalidEnvironment(f"{source}: expected a mapping at the top, got {type(data).__name__}.")
        _check_keys(data, {f.name for f in fields(cls)} - {"base_dir"}, source)
        python = data.get("python") or {}
        docker = data.get("docker") or {}
        if not isinstance(python, dict) or not isinstance(docker, dict):
            raise InvalidEnvironment(f"{source}: 'python' and 'docker' must be mappings.")
        _check_keys(python, {f.name for f in fields(PythonSection)}, source, "python.")
        _check_keys(docker, {f.name for f in fields(DockerSection)}, source, "docker.")
        if isinstance(python.get("python_version"), float):
            raise InvalidEnvironment(
                f"{source}: python.python_version {python['python_version']!r} was read as a number "
                "(YAML turns 3.10 into 3.1); write it in quotes, for example '3.10'."
            )
        requirements = python.get("requirements") or []
        if isinstance(requirements, str) or not all(isinstance(r, str) for r in requirements):
            raise InvalidEnvironment(f"{source}: python.requirements must be a list of strings (pip lines).")
        variables = data.get("environment_variables") or {}
        if not isinstance(variables, dict):
            raise InvalidEnvironment(
                f"{source}: environment_variables must be a mapping of names to strings."
            )
        env = cls(
            name=str(data.get("name") or "default"),
            version=None if data.get("version") is None else str(data["version"]),
            python=PythonSection(
                user_managed_dependencies=python.get("user_managed_dependencies"),
                interpreter_path=python.get("interpreter_path"),
                requirements=list(requirements),
                requirements_file=python.get("requirements_file"),
                python_version=None
                if python.get("python_version") is None
                else str(python["python_version"]),
            ),
            docker=DockerSection(base_image=docker.get("base_image"), dockerfile=docker.get("dockerfile")),
            environment_variables={str(k): "" if v is None else str(v) for k, v in variables.items()},
            description=None if data.get("description") is None else str(data["description"]),
            base_dir=base_dir,
        )
        env.validate()
        return env

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], name: str | None = None) -> Environment:
        """Load our YAML form, or a conda ``environment.yml`` (its ``python`` and ``pip:`` entries)."""
        path = Path(path).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidEnvironment(f"Cannot read environment file {path}: {exc.strerror or exc}.") from None
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problem = getattr(exc, "problem", None) or str(exc)
            raise InvalidEnvironment(f"{where}: invalid YAML: {problem}.") from None
        base_dir = str(path.parent.resolve())
        if isinstance(data, dict) and "dependencies" in data:
            env = _from_conda(data, str(path), base_dir)
        else:
            env = cls.from_dict(data or {}, str(path), base_dir)
        if name:
            env.name = name
        elif env.name == "default":
            env.name = path.stem if path.stem != "environment" else path.parent.name
        env.validate()
        return env

    @classmethod
    def from_conda_specification(cls, name: str, path: str | os.PathLike[str]) -> Environment:
        return cls.from_yaml(path, name=name)

    @classmethod
    def from_pip_requirements(cls, name: str, path: str | os.PathLike[str]) -> Environment:
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise InvalidEnvironment(f"Requirements file {path} does not exist.")
        env = cls(name=name, python=PythonSection(requirements_file=path.name), base_dir=str(path.parent))
        env.validate()
        return env

    def to_yaml(self, path: str | os.PathLike[str]) -> None:
        import yaml

        data = self.to_dict()
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    def frozen(self) -> Environment:
        """A self-contained copy: requirement files and the Dockerfile read into the spec."""
        env = copy.deepcopy(self)
        if env.managed:
            env.python.requirements = self.requirement_lines()
            env.python.requirements_file = None
            env.python.user_managed_dependencies = False
        if self.docker.dockerfile:
            env.docker.dockerfile = str(self._path(self.docker.dockerfile))
        env.base_dir = None
        return env

    # -- registry ----------------------------------------------------------------------------------

    def register(self, workspace: Workspace) -> Environment:
        """Record this spec under its name: a changed spec gets a new version, the same spec its old one."""
        self.validate()
        if self.name.startswith(CURATED_PREFIX):
            raise InvalidEnvironment(
                f"Environment names starting with {CURATED_PREFIX!r} are reserved for curated environments; "
                "choose another name."
            )
        frozen = self.frozen()
        version = workspace.store.register_environment(self.name, self.content_hash(), frozen.to_dict())
        frozen.version = version
        self.version = version
        return frozen

    @classmethod
    def get(cls, workspace: Workspace, name: str, version: str | None = None) -> Environment:
        row = workspace.store.get_environment(name, version)
        if row is not None:
            env = cls.from_dict(row["spec"], f"environment {name}")
            env.version = row["version"]
            return env
        curated = curated_environments()
        if name in curated and version in (None, curated[name].version):
            return copy.deepcopy(curated[name])
        known = sorted(set(workspace.store.environment_names()) | set(curated))
        if version is not None and (name in known):
            raise EnvironmentNotFound(f"Environment {name!r} has no version {version!r}.")
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise EnvironmentNotFound(
            f"Unknown environment {name!r}.{hint} Known: {', '.join(known) or 'none'}. Register one with "
            "Environment(...).register(workspace), or pass a YAML file's path."
        )

    @classmethod
    def list(cls, workspace: Workspace) -> dict[str, Environment]:
        """The latest version of every registered environment, and the curated ones."""
        out = {name: copy.deepcopy(env) for name, env in curated_environments().items()}
        for name in workspace.store.environment_names():
            out[name] = cls.get(workspace, name)
        return dict(sorted(out.items()))


def _check_keys(data: dict[str, Any], allowed: set[str], source: str, prefix: str = "") -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidEnvironment(
            f"{source}: unknown key{'s' if len(unknown) > 1 else ''} "
            + ", ".join(repr(prefix + k) for k in unknown)
            + f". Allowed: {', '.join(prefix + k for k in sorted(allowed))}."
        )


_CONDA_OK = {"pip", "python", "setuptools", "wheel"}


def _from_conda(data: dict[str, Any], source: str, base_dir: str) -> Environment:
    python_version = None
    requirements: list[str] = []
    conda_only: list[str] = []
    for dep in data.get("dependencies") or []:
        if isinstance(dep, dict) and set(dep) == {"pip"}:
            requirements += [str(r) for r in dep["pip"] or []]
            continue
        if not isinstance(dep, str):
            raise InvalidEnvironment(f"{source}: unexpected dependency entry {dep!r}.")
        spec = dep.split("::")[-1].strip()
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*(.*)$", spec)
        pkg = match.group(1).lower() if match else spec
        if pkg == "python":
            version = re.match(r"^[=<>!~\s]*(3\.\d+)", match.group(2) if match else "")
            python_version = version.group(1) if version else None
        elif pkg not in _CONDA_OK:
            conda_only.append(dep)
    if conda_only:
        raise InvalidEnvironment(
            f"{source}: conda packages cannot be installed here: {', '.join(conda_only)}. Environments are "
            "built with pip/uv from the package index: move them under 'pip:' with their PyPI names (for "
            "example numpy==1.26.4), or use a Docker base image that has them."
        )
    env = Environment(
        name=str(data.get("name") or "default"),
        python=PythonSection(requirements=requirements, python_version=python_version),
        base_dir=base_dir,
    )
    env.validate()
    return env


_curated_cache: dict[str, Environment] | None = None


def curated_environments() -> dict[str, Environment]:
    """The environments shipped in the package (``airflow_provider_mltrain/environments/*.yaml``)."""
    global _curated_cache
    if _curated_cache is None:
        found = {}
        folder = resources.files("airflow_provider_mltrain") / "environments"
        for item in sorted(folder.iterdir(), key=lambda p: p.name):
            if item.name.endswith((".yaml", ".yml")):
                env = Environment.from_yaml(Path(str(item)))
                found[env.name] = env
        _curated_cache = found
    return _curated_cache


def resolve_environment(
    value: Environment | str | os.PathLike[str] | None,
    workspace: Workspace | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Environment:
    """An Environment from an Environment, a YAML path, or a registered or curated name.

    A relative YAML path is looked up in ``base_dir`` (the source folder) first, then the working
    folder. ``None`` is the submitting Python, user-managed.
    """
    if value is None:
        env = Environment()
    elif isinstance(value, Environment):
        env = value
    elif isinstance(value, (str, os.PathLike)):
        text = str(value)
        candidates = [Path(text).expanduser()]
        if base_dir and not Path(text).is_absolute():
            candidates.insert(0, Path(base_dir) / text)
        looks_like_file = text.endswith((".yml", ".yaml")) or os.sep in text
        for candidate in candidates:
            if candidate.is_file() and (looks_like_file or candidate.suffix in (".yml", ".yaml")):
                return Environment.from_yaml(candidate)
        if looks_like_file:
            raise InvalidEnvironment(
                f"Environment file {text!r} not found (looked in {', '.join(str(c) for c in candidates)})."
            )
        if workspace is None:
            curated = curated_environments()
            if text in curated:
                return copy.deepcopy(curated[text])
            raise EnvironmentNotFound(f"Unknown environment {text!r}.")
        env = Environment.get(workspace, text)
    else:
        raise InvalidEnvironment(
            f"environment must be an Environment, a YAML file's path or an environment name, got "
            f"{type(value).__name__}."
        )
    env.validate()
    return env


def check_interpreter(path: str) -> str:
    """The ``major.minor`` of a Python interpreter, or a clear error when it is not one."""
    try:
        out = subprocess.run(
            [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            timeout=60,
        )
    except OSError as exc:
        raise InvalidEnvironment(f"interpreter_path {path!r} cannot be run: {exc.strerror or exc}.") from None
    except subprocess.TimeoutExpired:
        raise InvalidEnvironment(f"interpreter_path {path!r} did not answer within 60 s.") from None
    version = out.stdout.decode(errors="replace").strip()
    if out.returncode != 0 or not re.fullmatch(r"\d+\.\d+", version):
        raise InvalidEnvironment(
            f"interpreter_path {path!r} is not a Python interpreter (it did not run "
            "'import sys; print(sys.version_info)'). Point it at python3."
        )
    major, minor = (int(x) for x in version.split("."))
    if (major, minor) < (3, 9):
        raise InvalidEnvironment(
            f"interpreter_path {path!r} is Python {version}; the runner needs 3.9 or newer."
        )
    return version


def find_uv() -> str | None:
    """The ``uv`` binary: the one installed with this package, else one on PATH."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def warn_unpinned(env: Environment, say: Any = None) -> None:
    loose = env.unpinned()
    if loose:
        message = (
            f"Environment {env.name!r}: {', '.join(loose)} {'is' if len(loose) == 1 else 'are'} not pinned "
            "with '=='; the versions resolved at the first build are frozen and reused for this spec. "
            "Pin them, or rebuild on purpose with rebuild_environment=True "
            "(CLI: mltrain env build --rebuild)."
        )
        (say or log.warning)(message)


# Distributions that bring the real Azure ML v1 SDK (``azureml.core``) into a run's environment.
AZUREML_SDK = frozenset({"azureml-core", "azureml-sdk", "azureml-defaults", "azureml-train-core"})


def warn_real_azureml(env: Environment, packages: Sequence[str], say: Any = None) -> bool:
    """Say so when the run's environment installs the real ``azureml-core``: its offline run would
    print and drop every value, so the runner routes ``Run.get_context()`` to the mltrain run
    (``runner/bootstrap.py``). True when it said so."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    names = set()
    for line in [*env.requirement_lines(), *packages]:
        if not line.startswith("-"):
            try:
                names.add(canonicalize_name(Requirement(line).name))
            except InvalidRequirement:
                continue
    found = sorted(names & AZUREML_SDK)
    if found:
        (say or log.warning)(
            f"Environment {env.name!r} installs the real Azure ML SDK ({', '.join(found)}): its "
            "Run.get_context() is routed to the mltrain run so the values the script logs land in the "
            "run history; the rest of the SDK (Workspace, Dataset, Model...) still talks to Azure. "
            "Drop the package unless the script needs more than Run."
        )
    return bool(found)


__all__ = [
    "DockerSection",
    "Environment",
    "EnvironmentBuildFailed",
    "EnvironmentNotFound",
    "InvalidEnvironment",
    "PythonSection",
    "check_interpreter",
    "curated_environments",
    "resolve_environment",
]
