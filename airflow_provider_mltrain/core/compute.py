"""The one interface every compute target implements, and the registry that finds targets by name.

A target holds each run in ``<target root>/runs/<run_id>/`` (the run directory protocol in
DESIGN.md) and is reached only through these methods, so a controller that restarted, or another
process entirely, can follow a run by id.
"""

from __future__ import annotations

import abc
import importlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core.errors import (
    InvalidRunConfig,
    MissingDependency,
    TargetError,
    UnknownComputeTarget,
)
from airflow_provider_mltrain.core.runfiles import RunFiles

if TYPE_CHECKING:
    from airflow_provider_mltrain.core.environment import Environment
    from airflow_provider_mltrain.core.inputs import ResolvedInput
    from airflow_provider_mltrain.core.snapshot import Snapshot, SnapshotStore

LogLine = Callable[[str], None]


@dataclass(frozen=True)
class PreparedEnvironment:
    """The interpreter a run uses on its target, and what is installed there."""

    interpreter: str
    packages: tuple[str, ...] = ()
    python_version: str | None = None
    built: bool = False
    seconds: float = 0.0
    image: str | None = None  # container targets: the image the run starts from


@dataclass(frozen=True)
class RunSpec:
    """Everything the runner needs; written as ``run.json`` in the run folder."""

    run_id: str
    experiment: str
    script: str
    arguments: tuple[str, ...]
    snapshot_id: str
    interpreter: str | None = None
    image: str | None = None
    environment_variables: dict[str, str] = field(default_factory=dict)
    heartbeat_interval: float = 5.0
    kill_grace_period: float = 10.0
    framework: str = "python"
    target_options: dict[str, Any] = field(default_factory=dict)
    # Who submitted it (Airflow dag/task/run ids): targets that can label their jobs do, so a
    # controller that died can find them.
    labels: dict[str, str] = field(default_factory=dict)
    # The run's inputs (core/inputs.py), fetched into the workspace's cache: the target ships the
    # cached copies it lacks (or mounts) in ``start``; their paths are in the environment already.
    inputs: tuple[ResolvedInput, ...] = ()
    # The supervisor cancels the script once it has run this long (ScriptRunConfig's setting).
    max_run_duration_seconds: float | None = None

    def to_runner_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment": self.experiment,
            "script": self.script,
            "arguments": list(self.arguments),
            "snapshot_id": self.snapshot_id,
            "interpreter": self.interpreter,
            "environment_variables": dict(self.environment_variables),
            "heartbeat_interval": self.heartbeat_interval,
            "kill_grace_period": self.kill_grace_period,
            "framework": self.framework,
            **(
                {"max_run_duration_seconds": self.max_run_duration_seconds}
                if self.max_run_duration_seconds
                else {}
            ),
        }


class ComputeTarget(abc.ABC):
    """Start, observe and stop runs on one kind of compute."""

    kind: str = ""
    frameworks: tuple[str, ...] = ("python",)  # the first is the default
    # Set by a caller that shows progress (the mltrain command): called with (bytes sent, bytes to
    # send) while ``start`` sends the snapshot to a remote target.
    upload_progress: Callable[[int, int], None] | None = None

    def __init__(self, name: str):
        self.name = name

    def check_options(self, framework: str | None, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Validate a run's framework and target options before anything is submitted.

        Returns the framework to use and the normalized options. Targets that take options override
        this (calling it for the framework check); unknown keys are refused with the known ones named.
        """
        framework = framework or self.frameworks[0]
        if framework not in self.frameworks:
            raise InvalidRunConfig(
                f"framework {framework!r} is not supported by the {self.kind or self.name} target "
                f"{self.name!r}: use one of {', '.join(self.frameworks)}."
            )
        if options:
            raise InvalidRunConfig(
                f"The {self.kind or self.name} target {self.name!r} takes no target_options "
                f"(got {', '.join(sorted(options))}). Remove them."
            )
        return framework, {}

    def check_input(self, inp: ResolvedInput) -> None:
        """Refuse, before anything is submitted, an input this target cannot give the script
        (a mode it lacks). Targets that take inputs override this and :meth:`input_path`."""
        raise InvalidRunConfig(
            f"The {self.kind or self.name} target {self.name!r} does not take inputs (input "
            f"{inp.name!r}). Read the data from the store in the script, or run on the local, "
            "Docker or SSH target."
        )

    def input_path(self, inp: ResolvedInput) -> str:
        """Where the script finds ``inp`` on this target (the file of a one-file input)."""
        raise NotImplementedError

    @abc.abstractmethod
    def check_environment(self, env: Environment) -> None:
        """Cheap checks before anything is submitted (the interpreter exists and is a Python, ...)."""

    @abc.abstractmethod
    def prepare_environment(
        self, env: Environment, log: LogLine, rebuild: bool = False
    ) -> PreparedEnvironment:
        """Build the environment on this target, or find the cached build; output goes to ``log``."""

    @abc.abstractmethod
    def start(self, spec: RunSpec, snapshot: Snapshot, store: SnapshotStore) -> bool:
        """Start the run; False (and nothing done) when a run with this id already exists here."""

    @abc.abstractmethod
    def has_run(self, run_id: str) -> bool:
        """Whether this target (as seen from here) holds a run folder for ``run_id``."""

    @abc.abstractmethod
    def read_status(self, run_id: str) -> dict[str, Any] | None:
        """The runner's ``status.json``, or None before the runner wrote it."""

    @abc.abstractmethod
    def runner_alive(self, run_id: str, status: dict[str, Any] | None) -> bool:
        """Whether the run's supervisor process still exists."""

    @abc.abstractmethod
    def read_file(self, run_id: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of a run file (``logs/std_log.txt``, ...) from ``offset``; b"" if it does not exist
        or is not a regular file. No link is followed, in the name's folders or at its end.

        With ``length``, at most that many bytes, and no more than that is read on the target or
        sent here: a reader of a live log's tail pays for the tail, not for the whole log."""

    @abc.abstractmethod
    def file_size(self, run_id: str, name: str) -> int:
        """Size of a regular run file, 0 if there is none (a link is not one)."""

    @abc.abstractmethod
    def list_entries(self, run_id: str) -> RunFiles:
        """The run's regular files (``outputs/...``, ``logs/...``) and its links (name -> link
        text) so far, found without following a link and without recursion."""

    def list_files(self, run_id: str) -> list[str]:
        """Names of the run's regular files so far."""
        return self.list_entries(run_id).files

    def wait_for_change(self, run_id: str, seconds: float) -> None:
        """Block for up to ``seconds``; a target that can tell cheaply that the run's status may have
        changed returns as soon as it did, so a followed run ends without waiting out a poll interval."""
        time.sleep(seconds)

    @abc.abstractmethod
    def request_cancel(self, run_id: str, grace_period: float) -> None:
        """Ask the runner to stop the script: SIGTERM to its process group, SIGKILL after the grace."""

    @abc.abstractmethod
    def kill(self, run_id: str, status: dict[str, Any] | None) -> None:
        """Force-stop whatever is left of the run (its runner is gone or did not answer)."""

    @abc.abstractmethod
    def collect(self, run_id: str, dest: Path) -> None:
        """Copy the run's ``outputs/`` and ``logs/`` into ``dest``: regular files and folders; links
        are recorded in ``dest/links.json`` (``core/runfiles.py``), never made or followed."""

    def prune_cache(self, days: float, keep_inputs: Iterable[str] = ()) -> dict[str, int]:
        """Delete cached snapshot files and run inputs on the target that no submission used in
        ``days``; a cached input whose content key is in ``keep_inputs`` (named by a run that is
        recent or not ended: ``core.inputs.keys_in_use``) stays.

        Returns ``{"removed": files, "bytes": freed, "kept": files, "inputs_removed": copies,
        "inputs_bytes": freed}``. Targets without a cache of their own (local: the workspace's
        snapshot store and input cache are shared; ``mltrain inputs prune``) refuse.
        """
        raise TargetError(f"The {self.kind or self.name} target {self.name!r} keeps no blob cache to prune.")

    def runner_gone_reason(self, run_id: str) -> str | None:
        """Why the run's runner is gone, when the target knows (a container's exit code, OOM kill)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most targets hold no connection
        """Release connections; the target can be used again afterwards."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def require_module(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` (a target's, or its client library); ``MissingDependency`` naming the pip extra
    when a library it needs is not installed.

    ``what`` names the target ("The SSH compute target"). Hooks import their target this way, when
    used, so a deployment without the extra still loads (and lists) them.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name or str(exc)
        raise MissingDependency(
            f"{what} needs {missing}, which is not installed here: "
            f"pip install 'airflow-provider-mltrain[{extra}]'.",
            extra=extra,
            module=exc.name,
        ) from exc


# A resolver turns a target name into a target (or None when the name is not its to resolve).
# The targets package registers ``local``; the Airflow layer registers one for connection ids.
Resolver = Callable[[str, Path], "ComputeTarget | None"]
_resolvers: list[Resolver] = []


def register_resolver(resolver: Resolver, first: bool = False) -> None:
    if resolver not in _resolvers:
        _resolvers.insert(0, resolver) if first else _resolvers.append(resolver)


def get_target(name: str | ComputeTarget, workspace_root: Path) -> ComputeTarget:
    """The target called ``name`` (``"local"`` or an Airflow connection id), or the target given."""
    if isinstance(name, ComputeTarget):
        return name
    if not isinstance(name, str) or not name:
        raise UnknownComputeTarget(f"compute_target must be a target name such as 'local', got {name!r}.")
    for resolver in _resolvers:
        target = resolver(name, workspace_root)
        if target is not None:
            return target
    raise UnknownComputeTarget(
        f"Unknown compute target {name!r}: it is not 'local' (this machine) and no Airflow connection "
        f"has that id. Create the connection (Admin > Connections, or AIRFLOW_CONN_{name.upper()}) "
        "or check the spelling."
    )


# Target objects passed to ``submit`` (rather than names), by run id: this process can follow
# those runs; other processes resolve the run's target by name.
_run_targets: dict[str, ComputeTarget] = {}


def remember_target(run_id: str, target: ComputeTarget) -> None:
    _run_targets[run_id] = target


def target_for_run(run_id: str, name: str, workspace_root: Path) -> ComputeTarget:
    return _run_targets.get(run_id) or get_target(name, workspace_root)
