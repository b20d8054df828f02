"""Rerun: the same snapshot, script, arguments and environment again, on the same or another target.

A rerun needs no source folder: the snapshot store holds the content the first run was given. The
environment is the recorded one: a registered or curated environment is found again by name and
version, any other is rebuilt from the spec recorded with the run. Either way its content hash must
equal the recorded hash, so a rerun never runs in a different build without saying so.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core.compute import ComputeTarget, get_target, remember_target
from airflow_provider_mltrain.core.environment import Environment, EnvironmentNotFound, InvalidEnvironment
from airflow_provider_mltrain.core.errors import RunNotFound, SnapshotError
from airflow_provider_mltrain.core.experiment import Experiment, check_name
from airflow_provider_mltrain.core.redact import is_masked
from airflow_provider_mltrain.core.run import Run

if TYPE_CHECKING:
    from airflow_provider_mltrain.core.snapshot import Snapshot
    from airflow_provider_mltrain.core.workspace import Workspace

logger = logging.getLogger(__name__)

RERUN_OF = "mltrain.rerun_of"
# Spec keys of a recorded environment; the rest (hash, interpreter, packages, ...) describes the build.
_SPEC_KEYS = ("name", "version", "python", "docker", "environment_variables")


def recorded_environment(
    workspace: Workspace,
    run_id: str,
    recorded: dict[str, Any],
    environment_variables: dict[str, str] | None = None,
    base_dir: str | None = None,
) -> Environment:
    """The environment a run used, with the same content hash as recorded.

    ``environment_variables`` are laid over the recorded ones: the run history masks the values of
    secret-looking variables, so those must be given again unless the environment is registered.
    Relative requirement files and Dockerfiles of a rebuilt spec are read from ``base_dir``.
    """
    want = recorded.get("hash")
    env: Environment | None = None
    if recorded.get("version") is not None:
        try:
            env = Environment.get(workspace, recorded["name"], recorded["version"])
        except EnvironmentNotFound:
            env = None
        if env is not None and env.content_hash() != want:
            env = None  # a YAML file's name and version, not the registered environment of that name
    if env is None:
        spec = {k: recorded[k] for k in _SPEC_KEYS if k in recorded}
        env = Environment.from_dict(spec, f"the recorded environment of run {run_id}", base_dir)
        masked = sorted(
            k
            for k, v in env.environment_variables.items()
            if is_masked(k, v) and k not in (environment_variables or {})
        )
        if masked:
            raise InvalidEnvironment(
                f"Run {run_id}'s environment {env.name!r} set {', '.join(masked)}, whose values the run "
                "history does not keep. Give them again (environment_variables=...), or register the "
                "environment (Environment.register) and submit with it by name, so reruns find it."
            )
        got = env.content_hash()
        if got != want:
            raise InvalidEnvironment(
                f"Run {run_id}'s environment {env.name!r} cannot be rebuilt as it was: its recorded "
                f"spec now hashes to {got[:12]}, not {str(want)[:12]} (a requirements file or "
                "Dockerfile it named has changed or is not readable from here). Register the "
                "environment to make its runs repeatable."
            )
    if environment_variables:
        env.environment_variables = {**env.environment_variables, **environment_variables}
        env.validate()
    return env


def _check_blobs(workspace: Workspace, snapshot: Snapshot, run_id: str) -> None:
    workspace.check_artifacts()
    workspace.snapshots.ensure_local(snapshot)
    missing = [f.path for f in snapshot.files if not workspace.snapshots.has_blob(f.hash)]
    if missing:
        raise SnapshotError(
            f"Run {run_id}'s snapshot {snapshot.id[:12]} lacks the content of {len(missing)} file(s) "
            f"({', '.join(missing[:5])}) in {workspace.snapshots.blobs}: the snapshot store was "
            "cleaned since. Submit the source folder again instead."
        )


def rerun(
    workspace: Workspace,
    run_id: str,
    compute_target: str | ComputeTarget | None = None,
    *,
    experiment: str | None = None,
    new_run_id: str | None = None,
    tags: dict[str, Any] | None = None,
    target_options: dict[str, Any] | None = None,
    environment_variables: dict[str, str] | None = None,
    log: Callable[[str], None] | None = None,
    rebuild_environment: bool = False,
) -> Run:
    """Submit run ``run_id``'s snapshot again, with its script, arguments, environment and framework.

    ``compute_target`` defaults to the run's own target. Target options are not part of the run
    history: pass them again for a target that takes them. The new run carries ``mltrain.rerun_of``
    and the first run's git properties. Everything is checked before the new run is recorded; with
    ``new_run_id`` already in the store, that run is returned (a retried rerun reattaches).
    """
    store = workspace.store
    record = store.get_run(run_id)
    if record is None:
        raise RunNotFound(f"Run {run_id!r} is not in the run store at {store.url}.")
    name = check_name("Experiment name", experiment or record["experiment"])
    if new_run_id is not None:
        check_name("run_id", new_run_id)
        if store.get_run(new_run_id) is not None:
            logger.info("Run %s exists already; returning it instead of submitting again.", new_run_id)
            return Run(workspace, new_run_id)
    snapshot = workspace.snapshots.get(record["snapshot_id"])
    _check_blobs(workspace, snapshot, run_id)
    if record["script"] not in {f.path for f in snapshot.files}:
        raise SnapshotError(f"Run {run_id}'s snapshot does not hold its script {record['script']!r}.")
    source = record["source_directory"]
    environment = recorded_environment(
        workspace,
        run_id,
        record["environment"],
        environment_variables,
        base_dir=source if source and os.path.isdir(source) else None,
    )
    target = get_target(compute_target or record["target"], workspace.root)
    if new_run_id is None:
        new_run_id = f"{name}_{int(time.time())}_{secrets.token_hex(4)}"
    if compute_target is target:
        remember_target(new_run_id, target)
    framework, options = target.check_options(
        record["properties"].get("mltrain.framework"), dict(target_options or {})
    )
    target.check_environment(environment)
    properties = {k: v for k, v in record["properties"].items() if k.startswith("mltrain.git.")}
    properties[RERUN_OF] = run_id
    say = log or (lambda line: logger.info("%s", line))
    return Experiment(workspace, name)._submit_snapshot(
        snapshot,
        run_id=new_run_id,
        target=target,
        framework=framework,
        target_options=options,
        environment=environment,
        env_hash=environment.content_hash(),
        script=record["script"],
        arguments=list(record["arguments"]),
        source_directory=source,
        tags={str(k): "" if v is None else str(v) for k, v in (tags or {}).items()},
        properties=properties,
        say=say,
        rebuild_environment=rebuild_environment,
    )


__all__ = ["RERUN_OF", "recorded_environment", "rerun"]
