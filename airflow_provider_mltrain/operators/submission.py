"""The submit half of ScriptRunOperator, shared by the operator (on a worker) and by
``SubmitRunTrigger`` (in the triggerer, ``start_from_trigger=True``): one place decides which run a
task instance's try submits or attaches to, so both paths keep the same exactly-once rules."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from typing import Any

from airflow_provider_mltrain.core.environment import Environment, EnvironmentBuildFailed, resolve_environment
from airflow_provider_mltrain.core.errors import InvalidRunConfig, MLTrainError
from airflow_provider_mltrain.core.experiment import Experiment
from airflow_provider_mltrain.core.inputs import PLACEHOLDER_RE, Input
from airflow_provider_mltrain.core.model import check_labels, check_model_name
from airflow_provider_mltrain.core.outputs import Output
from airflow_provider_mltrain.core.redact import secret_values
from airflow_provider_mltrain.core.run import Run
from airflow_provider_mltrain.core.run_config import ScriptRunConfig, check_type, type_error
from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.core.workspace import Workspace
from airflow_provider_mltrain.version_compat import AirflowException, mask_secret

XCOM_RUN_DETAILS = "run_details"
REGISTER_MODEL_KEYS = ("name", "path", "tags", "properties", "description")
ACTIONS_IF_RUN_EXISTS = ("reattach", "resubmit", "fail")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_PROTECTED = re.compile(r"@@mltrain-placeholder-(\d+)@@")
_TAG = "__mltrain__"
# The operator's fields a submission is made of: ``SubmitRunTrigger`` takes them as keyword
# arguments under the same names, so the triggerer renders the templated ones as a worker would.
SUBMIT_FIELDS = (
    "experiment_name",
    "source_directory",
    "script",
    "arguments",
    "compute_target",
    "environment",
    "tags",
    "framework",
    "target_options",
    "register_model",
    "inputs",
    "outputs",
    "workspace",
    "rebuild_environment",
    "action_if_run_exists",
    "durable",
)


def keep_placeholders(arguments: Any) -> tuple[Any, list[str]]:
    """``arguments`` with each ``${{inputs.NAME}}`` / ``${{outputs.NAME}}`` swapped for a marker
    Jinja leaves alone (it would read their ``{{ }}`` as its own), and the swapped-out texts."""
    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:
        kept.append(match.group(0))
        return f"@@mltrain-placeholder-{len(kept) - 1}@@"

    if isinstance(arguments, list):
        arguments = [PLACEHOLDER_RE.sub(keep, a) if isinstance(a, str) else a for a in arguments]
    return arguments, kept


def restore_placeholders(arguments: Any, kept: list[str]) -> Any:
    if kept and isinstance(arguments, list):
        arguments = [
            _PROTECTED.sub(lambda m: kept[int(m.group(1))], a) if isinstance(a, str) else a for a in arguments
        ]
    return arguments


def trigger_value(field: str, value: Any) -> Any:
    """``value`` of the operator's ``field`` as a trigger keyword argument (plain JSON: the
    triggerer stores it encrypted and renders its strings); ``from_trigger_value`` reverses it.

    An ``Input``, ``Output`` or ``Environment`` becomes a tagged dict. What has no plain form (an
    ``ObjectStoragePath`` input, an object of another kind) is refused here, when the DAG is parsed.
    """
    if isinstance(value, Environment):
        return {_TAG: "Environment", "data": value.to_dict(), "base_dir": value.base_dir}
    if isinstance(value, Output):
        return {_TAG: "Output", **dataclasses.asdict(value)}
    if isinstance(value, Input):
        source = value.source.uri if is_asset(value.source) else value.source
        if not isinstance(source, str):
            raise InvalidRunConfig(
                f"ScriptRunOperator {field}: with start_from_trigger=True an input's source must be "
                f"a URL, a path or an Asset, not {type(source).__name__}; give the URL and its "
                "connection instead (Input('s3://bucket/key', conn_id='aws_default'))."
            )
        return {_TAG: "Input", **dataclasses.asdict(dataclasses.replace(value, source=source))}
    if is_asset(value):
        return value.uri
    if isinstance(value, dict):
        return {k: trigger_value(field, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [trigger_value(field, v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise InvalidRunConfig(
        f"ScriptRunOperator {field}: with start_from_trigger=True every field travels to the "
        f"triggerer as plain data, and {value!r} ({type(value).__name__}) has no plain form; pass "
        "strings, numbers, lists and dicts, or set start_from_trigger=False."
    )


def from_trigger_value(value: Any) -> Any:
    if isinstance(value, dict):
        kind = value.get(_TAG)
        plain = {k: from_trigger_value(v) for k, v in value.items() if k != _TAG}
        if kind == "Environment":
            return Environment.from_dict(plain["data"], base_dir=plain["base_dir"])
        if kind == "Output":
            return Output(**plain)
        if kind == "Input":
            return Input(**plain)
        return plain
    if isinstance(value, list):
        return [from_trigger_value(v) for v in value]
    return value


def is_asset(value: Any) -> bool:
    try:
        from airflow.sdk import Asset
    except ImportError:  # pragma: no cover - Airflow 3 has it
        return False
    return isinstance(value, Asset)


def plain_inputs(inputs: Any) -> Any:
    """Inputs for the core, which knows no Airflow: an ``Asset`` (alone or in an ``Input``) is its URI."""
    if not isinstance(inputs, dict):
        return inputs
    out: dict[str, Any] = {}
    for name, value in inputs.items():
        if is_asset(value):
            value = value.uri
        elif isinstance(value, Input) and is_asset(value.source):
            value = Input(
                value.source.uri, value.mode, value.storage_options, value.conn_id, value.path_on_compute
            )
        out[name] = value
    return out


def run_id_for_task(
    dag_id: str, task_id: str, airflow_run_id: str, map_index: int = -1, attempt: int = 1
) -> str:
    """The run id of a task instance, fixed before submission so a retry finds the same run.

    Readable parts (truncated, made file- and label-safe) plus a hash of the exact identity, so two
    task instances never share an id. ``attempt`` > 1 names the fresh run that follows a failed one.
    """
    identity = f"{dag_id}\0{task_id}\0{airflow_run_id}\0{map_index}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    parts = [_UNSAFE.sub("_", p).strip("._-")[:60] or "x" for p in (dag_id, task_id, airflow_run_id)]
    if map_index >= 0:
        parts.append(f"m{map_index}")
    run_id = ".".join([*parts, digest])
    return run_id if attempt <= 1 else f"{run_id}.a{attempt}"


def task_attempts(workspace: Workspace, ti: Any) -> tuple[str, dict[str, Any] | None]:
    """The ids of a task instance's runs are ``<base>``, ``<base>.a2``, ``<base>.a3``...: returns
    the first id not in the run store, and the record of the latest one that is (None if none)."""
    map_index = getattr(ti, "map_index", -1)
    map_index = -1 if map_index is None else int(map_index)
    attempt, latest = 1, None
    while True:
        run_id = run_id_for_task(ti.dag_id, ti.task_id, ti.run_id, map_index, attempt)
        record = workspace.store.get_run(run_id)
        if record is None:
            return run_id, latest
        latest, attempt = record, attempt + 1


def failure_message(run: Run, details: dict[str, Any]) -> str:
    code = details["exit_code"]
    return (
        f"mltrain: run {run.id} {details['status'].lower()}"
        + (f" with exit code {code}" if code not in (None, 0) else "")
        + (f": {details['error']}" if details["error"] else "")
        + f"\n--- last lines of the run's log ---\n{run.get_log_tail()}"
    )


class SubmitsRuns:
    """Submits a task instance's run from the fields in ``SUBMIT_FIELDS`` (attributes of ``self``),
    with ``self.task_id`` and ``self.log``."""

    task_id: str
    log: Any
    experiment_name: Any
    source_directory: Any
    script: Any
    arguments: Any
    compute_target: Any
    environment: Any
    tags: Any
    framework: Any
    target_options: Any
    register_model: Any
    inputs: Any
    outputs: Any
    workspace: Any
    rebuild_environment: bool
    action_if_run_exists: str
    durable: bool

    def _workspace(self) -> Workspace:
        return Workspace(self.workspace) if self.workspace else Workspace()

    def _pick_run_id(self, workspace: Workspace, ti: Any) -> tuple[str, str | None]:
        """The id to submit under (or attach to), and the earlier run it follows (if any).

        The ids of one task instance are ``<base>``, ``<base>.a2``, ``<base>.a3``...; the latest
        that exists decides, by ``action_if_run_exists``, unless this very try submitted it (a
        triggerer that restarted after submitting, with ``start_from_trigger``): one run per try.
        """
        run_id, record = task_attempts(workspace, ti)
        if record is None:
            return run_id, None
        latest = record["id"]
        try_number = getattr(ti, "try_number", None)
        if try_number is not None and record["properties"].get("airflow.try_number") == str(try_number):
            self.log.info("Run %s was submitted by this try (%s): following it.", latest, try_number)
            return latest, None
        status = Run(workspace, latest).refresh()
        action = self.action_if_run_exists
        if action == "reattach" and not self.durable:
            action = "resubmit"
        if action == "fail":
            raise AirflowException(
                f"mltrain: run {latest} ({status.value}) exists for this task instance and "
                "action_if_run_exists='fail'. Set it to 'reattach' or 'resubmit', or trigger a new DAG run."
            )
        elsewhere = None if status.is_terminal else Run(workspace, latest).elsewhere()
        if action == "resubmit" or status in (RunStatus.FAILED, RunStatus.CANCELED):
            if not status.is_terminal:
                self.log.warning(
                    "Run %s is still %s%s; submitting a new run beside it.",
                    latest,
                    status.value,
                    f" ({elsewhere})" if elsewhere else "",
                )
            return run_id, latest
        if elsewhere:
            raise AirflowException(
                f"mltrain: run {latest} of this task instance is {status.value}: {elsewhere}. This "
                "try cannot reattach to it from here. Route local-target tasks to a queue served by "
                "one host (queue=...), or set action_if_run_exists='resubmit' to start a new run."
            )
        self.log.info(
            "Run %s exists (%s): attaching to it instead of submitting again.", latest, status.value
        )
        return latest, None

    def _checked_config(self) -> ScriptRunConfig:
        """The run's config from the rendered fields; a field of the wrong type (a template that
        rendered to a number, a list, None...) raises :class:`InvalidRunConfig` naming it, before
        anything is read or written."""
        owner = f"ScriptRunOperator {self.task_id!r}:"
        native = (
            " A template renders to a string unless the DAG sets render_template_as_native_obj=True;"
            " or pass the value itself."
        )
        check_type(f"{owner} experiment_name", self.experiment_name, str, "an experiment name (str)")
        if isinstance(self.arguments, str):
            raise type_error(f"{owner} arguments", self.arguments, "a list of strings or numbers", native)
        config = ScriptRunConfig(
            source_directory=self.source_directory,
            script=self.script,
            arguments=self.arguments,
            compute_target=self.compute_target,
            environment=self.environment,
            tags=self.tags,
            framework=self.framework,
            target_options=self.target_options,
            inputs=plain_inputs(self.inputs),
            outputs=self.outputs,
        )
        config.check_types(owner, hint=native)
        self._check_register_model(owner)
        return config

    def _check_register_model(self, owner: str) -> None:
        """``register_model`` as rendered: refused before anything is submitted."""
        spec = self.register_model
        if spec is None:
            return
        if not isinstance(spec, dict) or not spec.get("name") or not spec.get("path"):
            raise type_error(f"{owner} register_model", spec, 'a dict {"name": ..., "path": "outputs/..."}')
        unknown = sorted(set(spec) - set(REGISTER_MODEL_KEYS))
        if unknown:
            raise InvalidRunConfig(
                f"{owner} register_model has unknown keys {unknown}; "
                f"it takes {', '.join(REGISTER_MODEL_KEYS)}."
            )
        check_model_name(spec["name"])
        check_labels("tags", spec.get("tags"))
        check_labels("properties", spec.get("properties"))

    def _mask_secrets(self, config: ScriptRunConfig, workspace: Workspace) -> None:
        """Registers the environment's secret values with Airflow's secrets masker, so that the
        task log (where the run's log streams) shows ``***`` if the script prints one; the
        environment is resolved once here and handed to the submission as it is."""
        env = resolve_environment(config.environment, workspace, config.resolved_source_directory())
        config.environment = env
        for name, value in env.environment_variables.items():
            for secret in secret_values(name, value):
                mask_secret(secret)  # with a name, Airflow would mask only names it finds sensitive

    def _submit_run(self, ti: Any, log: Callable[[str], None]) -> tuple[Run, bool]:
        """Submits this try's run, or finds the run an earlier try (or this one, before a restart)
        submitted (see ``_pick_run_id``); returns it and whether it was already there.

        Idempotent: a try that died after the target accepted the run but before anything was
        persisted finds the run by its id and attaches.
        """
        config = self._checked_config()
        workspace = self._workspace()
        run_id, previous = self._pick_run_id(workspace, ti)
        attaching = workspace.store.get_run(run_id) is not None
        properties = {
            "airflow.dag_id": ti.dag_id,
            "airflow.task_id": ti.task_id,
            "airflow.run_id": ti.run_id,
            "airflow.map_index": str(getattr(ti, "map_index", -1)),
        }
        if getattr(ti, "try_number", None) is not None:
            properties["airflow.try_number"] = str(ti.try_number)
        if previous:
            properties["mltrain.previous_run_id"] = previous  # the run this one follows
        try:
            if not attaching:
                self._mask_secrets(config, workspace)
            run = Experiment(workspace, self.experiment_name).submit(
                config,
                run_id=run_id,
                properties=properties,
                log=log,
                rebuild_environment=self.rebuild_environment,
            )
        except EnvironmentBuildFailed as exc:
            raise AirflowException(
                f"mltrain: run {run_id} failed while preparing its environment: {exc}"
            ) from exc
        except MLTrainError as exc:
            raise AirflowException(f"mltrain: run not submitted: {exc}") from exc
        return run, attaching


class TriggerSubmission(SubmitsRuns):
    """The submission of ``SubmitRunTrigger``: the operator's fields as the triggerer rendered them."""

    def __init__(self, task_id: str, log: Any, fields: dict[str, Any]) -> None:
        self.task_id = task_id
        self.log = log
        for name in SUBMIT_FIELDS:
            setattr(self, name, from_trigger_value(fields[name]))
