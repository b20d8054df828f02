"""Rerun: the same snapshot, script, arguments and environment again, on the same or another target.

A rerun needs no source folder: the snapshot store holds the content the first run was given. The
environment is the recorded one: a registered or curated environment is found again by name and
version, any other is rebuilt from the spec recorded with the run. Either way its content hash must
equal the recorded hash, so a rerun never runs in a different build without saying so.

Inputs are read again from where the first run read them, placed on the rerun's target (its own
cache paths substituted into the arguments), and must hold the same data: an input whose content
changed is refused unless the caller allows it or names other data. Outputs keep their names (the
script's ``outputs/NAME/`` and ``MLTRAIN_OUTPUT_NAME``), but are uploaded only where the caller
says: a rerun never overwrites what the first run published.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core import inputs as run_inputs
from airflow_provider_mltrain.core import outputs as run_outputs
from airflow_provider_mltrain.core.compute import ComputeTarget, get_target, remember_target
from airflow_provider_mltrain.core.environment import Environment, EnvironmentNotFound, InvalidEnvironment
from airflow_provider_mltrain.core.errors import RunNotFound, SnapshotError
from airflow_provider_mltrain.core.experiment import MAX_RUN_DURATION, Experiment, check_name
from airflow_provider_mltrain.core.redact import is_masked
from airflow_provider_mltrain.core.run import Run, input_records

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
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    allow_changed_inputs: bool = False,
) -> Run:
    """Submit run ``run_id``'s snapshot again, with its script, arguments, environment and framework.

    ``compute_target`` defaults to the run's own target. Target options are not part of the run
    history: pass them again for a target that takes them. The new run carries ``mltrain.rerun_of``
    and the first run's git properties. Everything is checked before the new run is recorded; with
    ``new_run_id`` already in the store, that run is returned (a retried rerun reattaches).

    The run's inputs are fetched again (from the target's cache when unchanged) and must hold the
    data the run read, by content hash: :class:`~airflow_provider_mltrain.core.inputs.InputChanged`
    otherwise, unless ``allow_changed_inputs``. ``inputs={"train": url}`` gives other data for a
    named input. Outputs are uploaded only to the URLs in ``outputs={"model": url}``; the others
    stay in the run's ``outputs/`` (a warning says so).
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
    properties = {
        k: v
        for k, v in record["properties"].items()
        if k.startswith("mltrain.git.") or k == MAX_RUN_DURATION  # the limit is part of the run
    }
    properties[RERUN_OF] = run_id
    say = log or (lambda line: logger.info("%s", line))
    recorded_outputs = [e["name"] for e in run_outputs.records(record["properties"]) if "name" in e]
    declared_inputs = _inputs_again(run_id, record["properties"], inputs)
    new_outputs = _outputs_again(run_id, recorded_outputs, outputs)
    resolved = run_inputs.prepare(declared_inputs, workspace.root, target)
    if not allow_changed_inputs:
        _check_unchanged(run_id, record["properties"], resolved, set(inputs or ()))
    arguments = _arguments_again(record, resolved, recorded_outputs)
    template = record["properties"].get(run_inputs.ARGUMENTS_TEMPLATE)
    if template:
        properties[run_inputs.ARGUMENTS_TEMPLATE] = template
    for entry in run_outputs.records(record["properties"]):
        if entry.get("name") in recorded_outputs and entry["name"] not in new_outputs:
            say(
                f"mltrain: output {entry['name']!r} of run {run_id} went to {entry.get('uri')}; this rerun "
                f"keeps outputs/{entry['name']}/ with its files and uploads it nowhere (give "
                f"outputs={{{entry['name']!r}: URL}}, or --output {entry['name']}=URL, to upload it)."
            )
    return Experiment(workspace, name)._submit_snapshot(
        snapshot,
        run_id=new_run_id,
        target=target,
        framework=framework,
        target_options=options,
        environment=environment,
        env_hash=environment.content_hash(),
        script=record["script"],
        arguments=arguments,
        source_directory=source,
        tags={str(k): "" if v is None else str(v) for k, v in (tags or {}).items()},
        properties=properties,
        say=say,
        rebuild_environment=rebuild_environment,
        # Names whose upload was not asked for still name their folder for the script.
        environment_variables=run_outputs.environment(n for n in recorded_outputs if n not in new_outputs),
        inputs=resolved,
        outputs=new_outputs,
    )


def _inputs_again(run_id: str, properties: dict[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run's inputs as it declared them (source, mode, connection, mount path), with ``given``
    replacing some by name. Checked without I/O."""
    recorded = {e["name"]: e for e in input_records(properties) if isinstance(e.get("name"), str)}
    unknown = sorted(set(given or ()) - set(recorded))
    if unknown:
        raise run_inputs.InputError(
            f"Run {run_id} has no input named {', '.join(map(repr, unknown))} (its inputs: "
            f"{', '.join(sorted(recorded)) or 'none'}). A rerun repeats the run's inputs; submit "
            "the script anew to give it others."
        )
    out: dict[str, Any] = {}
    for name, entry in recorded.items():
        if given and name in given:
            out[name] = given[name]
        else:
            out[name] = run_inputs.Input(
                entry["uri"],
                entry.get("mode") or "download",
                conn_id=entry.get("conn_id"),
                path_on_compute=entry.get("path_on_compute"),
            )
    return run_inputs.normalize_inputs(out, f"run {run_id}'s inputs")


def _outputs_again(
    run_id: str, recorded: list[str], given: Mapping[str, Any] | None
) -> dict[str, run_outputs.Output]:
    unknown = sorted(set(given or ()) - set(recorded))
    if unknown:
        raise run_outputs.OutputError(
            f"Run {run_id} has no output named {', '.join(map(repr, unknown))} (its outputs: "
            f"{', '.join(recorded) or 'none'}). A rerun's script writes the outputs the run declared."
        )
    return run_outputs.normalize_outputs(dict(given or {}))


def _check_unchanged(
    run_id: str, properties: dict[str, Any], resolved: list[run_inputs.ResolvedInput], replaced: set[str]
) -> None:
    """Each input not replaced holds what the run read: the same content hash (or, without one
    recorded, the same store version)."""
    recorded = {e.get("name"): e for e in input_records(properties)}
    for inp in resolved:
        if inp.name in replaced:
            continue
        entry = recorded.get(inp.name) or {}
        then, now = entry.get("sha256"), inp.sha256
        if not (then and now):
            then, now = entry.get("version"), inp.version
        if then and then != now:
            raise run_inputs.InputChanged(
                f"Run {run_id}'s input {inp.name!r} ({inp.uri}) no longer holds the data the run read: "
                f"{str(then)[:16]} then, {str(now)[:16]} now. A rerun repeats the run on the same "
                f"data. To run on the data as it is now, pass allow_changed_inputs=True "
                f"(--allow-changed-inputs); to give other data, inputs={{{inp.name!r}: ...}} "
                f"(--input {inp.name}=...)."
            )


def _arguments_again(
    record: dict[str, Any], resolved: list[run_inputs.ResolvedInput], outputs: list[str]
) -> list[str]:
    """The arguments with the inputs' paths on the rerun's target."""
    template = record["properties"].get(run_inputs.ARGUMENTS_TEMPLATE)
    if template:
        return run_inputs.substitute(
            json.loads(template),
            {
                "inputs": {i.name: i.target_path for i in resolved},
                "outputs": run_outputs.placeholder_values(outputs),
            },
        )
    # Recorded before the template was kept: the paths the first run was given, replaced whole.
    before = {e.get("name"): e.get("path") for e in input_records(record["properties"])}
    paths = {before[i.name]: i.target_path for i in resolved if before.get(i.name)}
    return [paths.get(a, a) for a in record["arguments"]]


__all__ = ["RERUN_OF", "recorded_environment", "rerun"]
