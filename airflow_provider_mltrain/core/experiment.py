"""Experiment: a named group of runs, and the place runs are submitted from."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core import inputs as run_inputs
from airflow_provider_mltrain.core import outputs as run_outputs
from airflow_provider_mltrain.core import settings
from airflow_provider_mltrain.core.compute import RunSpec, get_target, remember_target
from airflow_provider_mltrain.core.environment import (
    EnvironmentBuildFailed,
    resolve_environment,
    warn_real_azureml,
    warn_unpinned,
)
from airflow_provider_mltrain.core.errors import InvalidRunConfig, MLTrainError, TargetError
from airflow_provider_mltrain.core.gitinfo import git_properties
from airflow_provider_mltrain.core.run import Run
from airflow_provider_mltrain.core.run_config import ScriptRunConfig, check_tags, check_type, type_error
from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.core.store import RunExists
from airflow_provider_mltrain.core.sweep import HyperDriveConfig, submit_sweep

if TYPE_CHECKING:
    from airflow_provider_mltrain.core.compute import ComputeTarget
    from airflow_provider_mltrain.core.environment import Environment
    from airflow_provider_mltrain.core.snapshot import Snapshot
    from airflow_provider_mltrain.core.workspace import Workspace

logger = logging.getLogger(__name__)

# The paths the built-in secret set left out of the run's snapshot (a JSON list), when any.
SECRETS_SKIPPED = "mltrain.snapshot.secrets_skipped"
# ScriptRunConfig.max_run_duration_seconds of the run, when given: the runner enforces it.
MAX_RUN_DURATION = "mltrain.max_run_duration_seconds"
# "host:pid" of the process that submitted a run: lets a reader tell a submission that died while
# preparing (same host, process gone) from one still building its environment.
SUBMITTER = "mltrain.submitted_by"
# Matched whole (fullmatch): with match, "$" lets a trailing newline through into paths and ids.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


def check_name(kind: str, value: Any) -> str:
    if not isinstance(value, str):
        raise type_error(kind, value, "a str of letters, digits, '_', '-' or '.'")
    if not NAME_RE.fullmatch(value):
        raise InvalidRunConfig(
            f"{kind} {value!r} is not valid: use 1-255 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit."
        )
    return value


class Experiment:
    def __init__(self, workspace: Workspace, name: str):
        self.workspace = workspace
        self.name = check_name("Experiment name", name)

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r})"

    def submit(
        self,
        config: ScriptRunConfig | HyperDriveConfig,
        tags: dict[str, Any] | None = None,
        run_id: str | None = None,
        properties: dict[str, Any] | None = None,
        log: Callable[[str], None] | None = None,
        rebuild_environment: bool = False,
        snapshot_progress: Callable[[int, int], None] | None = None,
    ) -> Run:
        """Snapshot the source folder, record the run, prepare its environment and start it.

        Every check (paths, arguments, environment, target, snapshot limits) happens before the
        run is written to the store. With ``run_id`` given and already in the store, nothing is
        submitted and the existing run is returned: a retried submission reattaches. Environment
        build output goes to ``log`` (default: this module's logger); a failed build leaves the
        run Failed in Preparing and raises :class:`EnvironmentBuildFailed`.
        ``snapshot_progress(bytes_done, bytes_total)`` follows the files the snapshot has to read.

        A :class:`~airflow_provider_mltrain.core.sweep.HyperDriveConfig` submits a sweep and
        returns its :class:`~airflow_provider_mltrain.core.sweep.SweepRun` (see docs/sweeps.md).
        """
        if isinstance(config, HyperDriveConfig):
            return submit_sweep(self, config, tags=tags, run_id=run_id, log=log, properties=properties)
        _check_submit_arguments(config, tags, run_id, properties, log, rebuild_environment, snapshot_progress)
        say = log or (lambda line: logger.info("%s", line))
        store = self.workspace.store
        if run_id is not None:
            check_name("run_id", run_id)
            if store.get_run(run_id) is not None:
                logger.info("Run %s exists already; returning it instead of submitting again.", run_id)
                return Run(self.workspace, run_id)
        source = config.resolved_source_directory()
        script = config.resolved_script(source)
        arguments = config.resolved_arguments()
        declared = config.resolved_inputs()
        outputs = config.resolved_outputs()
        output_paths = run_outputs.placeholder_values(outputs)
        # A placeholder naming no input or output is refused now, before any input is fetched.
        run_inputs.substitute(arguments, {"inputs": {name: "" for name in declared}, "outputs": output_paths})
        environment = resolve_environment(config.environment, self.workspace, source)
        all_tags = {
            str(k): "" if v is None else str(v) for k, v in {**(config.tags or {}), **(tags or {})}.items()
        }
        if run_id is None:
            run_id = f"{self.name}_{int(time.time())}_{secrets.token_hex(4)}"
        target = get_target(config.compute_target, self.workspace.root)
        if config.compute_target is target:
            remember_target(run_id, target)
        framework, target_options = target.check_options(config.framework, config.resolved_target_options())
        env_hash = environment.content_hash()
        # The target's checks run beside the snapshot: an SSH target's are round trips and the
        # server's session setup, which need not wait for the walk and the hashing. Its error
        # still comes first, as when it ran first.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mltrain-check") as pool:
            checked = pool.submit(target.check_environment, environment)
            try:
                self.workspace.check_artifacts()
                snapshot = self.workspace.snapshots.take(
                    source, self.workspace.snapshot_limits, required=script, progress=snapshot_progress
                )
            except Exception:
                checked.result()
                raise
            checked.result()
        resolved = run_inputs.prepare(declared, self.workspace.root, target)
        template = arguments
        arguments = run_inputs.substitute(
            arguments, {"inputs": {i.name: i.target_path for i in resolved}, "outputs": output_paths}
        )
        recorded = {str(k): str(v) for k, v in (properties or {}).items()}
        if declared and any(kind == "inputs" for kind, _ in run_inputs.placeholders(template)):
            recorded[run_inputs.ARGUMENTS_TEMPLATE] = json.dumps(template)
        if config.max_run_duration_seconds is not None:
            recorded[MAX_RUN_DURATION] = f"{float(config.max_run_duration_seconds):g}"
        if snapshot.secrets_skipped:
            recorded[SECRETS_SKIPPED] = json.dumps(list(snapshot.secrets_skipped))
            skipped = snapshot.secrets_skipped
            (log or logger.warning)(
                f"mltrain: left out of the snapshot as likely secrets: {', '.join(skipped)}. If the "
                f"script needs one, re-include it with a '!' line (for example '!{skipped[0]}') in "
                f"{source / '.mltrainignore'}."
            )
        return self._submit_snapshot(
            snapshot,
            run_id=run_id,
            target=target,
            framework=framework,
            target_options=target_options,
            environment=environment,
            env_hash=env_hash,
            script=script,
            arguments=arguments,
            source_directory=str(source),
            tags=all_tags,
            properties={**git_properties(source), **recorded},
            say=say,
            rebuild_environment=rebuild_environment,
            inputs=resolved,
            outputs=outputs,
        )

    def _publish_lock(self, env_hash: str, packages: tuple[str, ...] | list[str]) -> str | None:
        """With the artifact store on object storage, the managed environment's resolved versions
        (its ``mltrain-lock.txt``) as an object every host can read:
        ``environments/<hash>/mltrain-lock-<sha256 of the text>.txt``, named by content so builds
        on several workers (or targets that resolve differently) never overwrite one another.
        Returns the object's name; a store that fails costs a warning, never the run."""
        import hashlib

        artifacts = self.workspace.artifacts
        if artifacts.is_local or not packages:
            return None
        text = "".join(p + "\n" for p in packages).encode()
        name = f"environments/{env_hash}/mltrain-lock-{hashlib.sha256(text).hexdigest()[:16]}.txt"
        try:
            if not artifacts.exists_many([name], f"environments/{env_hash}"):
                artifacts.put_bytes(name, text)
        except Exception as exc:  # the run goes on; its details still list the packages
            logger.warning(
                "Environment %s: storing its lock file in %s failed (%s)", env_hash[:12], artifacts.url, exc
            )
            return None
        return name

    def _submit_snapshot(
        self,
        snapshot: Snapshot,
        *,
        run_id: str,
        target: ComputeTarget,
        framework: str,
        target_options: dict[str, Any],
        environment: Environment,
        env_hash: str,
        script: str,
        arguments: list[str],
        source_directory: str,
        tags: dict[str, str],
        properties: dict[str, str],
        say: Callable[[str], None],
        rebuild_environment: bool,
        environment_variables: dict[str, str] | None = None,
        adopt: bool = False,
        inputs: list[run_inputs.ResolvedInput] | None = None,
        outputs: dict[str, run_outputs.Output] | None = None,
    ) -> Run:
        """Record a run of a snapshot already in the store, prepare its environment and start it.

        Shared by :meth:`submit` and :func:`~airflow_provider_mltrain.core.rerun.rerun`; the caller
        has checked everything (names, target options, environment) before.
        ``environment_variables`` are added to the script's environment for this run only (a sweep
        child's parent id), without changing the environment's identity. ``adopt`` takes over a
        recorded run of that id still Queued or Preparing (its submitter died) and starts it.
        """
        store = self.workspace.store
        # A host whose snapshot cache lacks blobs (a fresh worker) fetches them from the store.
        self.workspace.snapshots.ensure_local(snapshot)
        spec = RunSpec(
            run_id=run_id,
            experiment=self.name,
            script=script,
            arguments=tuple(arguments),
            snapshot_id=snapshot.id,
            environment_variables={
                **environment.environment_variables,
                **(environment_variables or {}),
                **run_inputs.environment(inputs or []),
                **run_outputs.environment(outputs or {}),
            },
            inputs=tuple(inputs or ()),
            max_run_duration_seconds=_max_run_duration(properties),
            heartbeat_interval=settings.heartbeat_interval(),
            framework=framework,
            target_options=target_options,
            labels={
                **{str(k): str(v) for k, v in (properties or {}).items() if str(k).startswith("airflow.")},
                "mltrain.workspace": str(self.workspace.root),
            },
        )
        record: dict[str, Any] = {
            "id": run_id,
            "experiment": self.name,
            "status": RunStatus.QUEUED.value,
            "target": target.name,
            "source_directory": source_directory,
            "script": script,
            "arguments": arguments,
            "snapshot_id": snapshot.id,
            "environment": {**environment.recordable(), "hash": env_hash, "managed": environment.managed},
            "tags": tags,
            "properties": {
                **properties,
                SUBMITTER: f"{socket.gethostname()}:{os.getpid()}",
                "mltrain.framework": framework,
                "mltrain.workspace": str(self.workspace.root),
                **({run_inputs.INPUTS_PROPERTY: json.dumps([i.record() for i in inputs])} if inputs else {}),
                **({run_outputs.OUTPUTS_PROPERTY: run_outputs.recorded(run_id, outputs)} if outputs else {}),
            },
        }
        try:
            store.create_run(record)
        except RunExists:
            existing = store.get_run(run_id)
            if not adopt or existing is None or RunStatus(existing["status"]).rank > RunStatus.PREPARING.rank:
                return Run(self.workspace, run_id)
            # Adopted from a submitter that died before the start: the target's start is a no-op
            # for a run it already has, so starting again cannot duplicate it.
            store.update(
                run_id, properties={**existing["properties"], SUBMITTER: record["properties"][SUBMITTER]}
            )
        run = Run(self.workspace, run_id)
        store.record_states(run_id, [(RunStatus.PREPARING, time.time(), None)])
        try:
            if environment.managed:
                warn_unpinned(environment, say)
            prepared = target.prepare_environment(environment, say, rebuild=rebuild_environment)
        except BaseException as exc:
            message = str(exc) or type(exc).__name__
            if environment.managed:
                store.record_build(env_hash, target.name, "failed", error=message, run_id=run_id)
            if store.record_states(run_id, [(RunStatus.FAILED, time.time(), message)]) == RunStatus.FAILED:
                store.update(run_id, error=f"preparing the environment failed: {message}", collected=True)
            if isinstance(exc, MLTrainError) or not isinstance(exc, Exception):
                raise  # ours, or an interruption (timeout, kill) that must travel on unchanged
            raise EnvironmentBuildFailed(
                f"Run {run_id}: preparing environment {environment.name!r} failed: {message}"
            ) from exc
        warn_real_azureml(environment, prepared.packages, say)
        if prepared.built:
            store.record_build(env_hash, target.name, "built", seconds=prepared.seconds, run_id=run_id)
        lock = self._publish_lock(env_hash, prepared.packages) if environment.managed else None
        store.update(
            run_id,
            environment={
                **record["environment"],
                "interpreter": prepared.interpreter,
                "packages": list(prepared.packages),
                "python_version": prepared.python_version,
                "cache_hit": environment.managed and not prepared.built,
                **({"image": prepared.image} if prepared.image else {}),
                **({"lock": lock} if lock else {}),
            },
        )
        spec = dataclasses.replace(spec, interpreter=prepared.interpreter, image=prepared.image)
        if RunStatus(store.get_run(run_id)["status"]).is_terminal:  # type: ignore[index]
            logger.info("Run %s was canceled while its environment was prepared; not starting it.", run_id)
            return run
        try:
            target.start(spec, snapshot, self.workspace.snapshots)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            store.record_states(run_id, [(RunStatus.FAILED, time.time(), message)])
            store.update(run_id, error=f"could not start on {target.name}: {message}", collected=True)
            if isinstance(exc, TargetError):
                raise
            raise TargetError(f"Run {run_id} could not start on target {target.name!r}: {message}") from exc
        run_inputs.hash_after_start(store, run_id, inputs or [])  # big first fetches: hashed now
        # TEST HOOK (tests/test_airflow_faults.py): die by SIGKILL once the target accepted the run.
        if os.environ.get("MLTRAIN_TEST_FAULT") == "after_start":
            os.kill(os.getpid(), 9)
        if RunStatus(store.get_run(run_id)["status"]).is_terminal:  # type: ignore[index]
            target.request_cancel(run_id, spec.kill_grace_period)  # canceled while it was starting
        return run

    def list_runs(self, status: str | None = None, tags: dict[str, str] | None = None) -> list[Run]:
        """Runs of this experiment, newest first; ``tags`` keeps runs having all those tag values."""
        records = self.workspace.store.list_runs(experiment=self.name, status=status)
        if tags:
            records = [r for r in records if all(r["tags"].get(k) == str(v) for k, v in tags.items())]
        return [Run(self.workspace, r["id"]) for r in records]


def _max_run_duration(properties: dict[str, Any] | None) -> float | None:
    """The recorded limit (a rerun or a sweep child carries its properties on)."""
    value = (properties or {}).get(MAX_RUN_DURATION)
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _check_submit_arguments(
    config: Any,
    tags: Any,
    run_id: Any,
    properties: Any,
    log: Any,
    rebuild_environment: Any,
    snapshot_progress: Any,
) -> None:
    """Arguments of :meth:`Experiment.submit` of the wrong type, refused before anything is done."""
    check_type("submit() config", config, ScriptRunConfig, "a ScriptRunConfig")
    config.check_types()
    if tags is not None:
        check_tags("submit() tags", tags)
    if run_id is not None:
        check_name("submit() run_id", run_id)
    if properties is not None:
        check_tags("submit() properties", properties, kind="property")
    for name, value in (("log", log), ("snapshot_progress", snapshot_progress)):
        if value is not None and not callable(value):
            raise type_error(f"submit() {name}", value, "a function or None")
    check_type("submit() rebuild_environment", rebuild_environment, bool, "True or False")
