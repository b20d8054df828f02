"""ScriptRunOperator: snapshot a folder, run its script on a compute target, follow it to the end."""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_mltrain.core.environment import Environment, EnvironmentBuildFailed, resolve_environment
from airflow_provider_mltrain.core.errors import InvalidRunConfig, MLTrainError, RunNotFound, RunTimeout
from airflow_provider_mltrain.core.experiment import Experiment
from airflow_provider_mltrain.core.inputs import PLACEHOLDER_RE, Input
from airflow_provider_mltrain.core.model import Model, check_labels, check_model_name, register_from_run
from airflow_provider_mltrain.core.outputs import Output
from airflow_provider_mltrain.core.redact import secret_values
from airflow_provider_mltrain.core.run import Run
from airflow_provider_mltrain.core.run_config import ScriptRunConfig, check_type, type_error
from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.core.workspace import Workspace
from airflow_provider_mltrain.lineage import openlineage as lineage
from airflow_provider_mltrain.links.run import XCOM_RUN_ID, MLTrainRunLink, remember_run_id
from airflow_provider_mltrain.triggers.run import RunTrigger
from airflow_provider_mltrain.version_compat import (
    HAS_TASK_STATE_STORE,
    AirflowException,
    AirflowTaskTimeout,
    BaseOperator,
    ResumableJobMixin,
    conf,
    mask_secret,
)

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

XCOM_RUN_DETAILS = "run_details"
XCOM_MODEL = "model"
REGISTER_MODEL_KEYS = ("name", "path", "tags", "properties", "description")
ACTIONS_IF_RUN_EXISTS = ("reattach", "resubmit", "fail")
ACTIVE_STATES = frozenset(s.value for s in RunStatus if not s.is_terminal)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_PROTECTED = re.compile(r"@@mltrain-placeholder-(\d+)@@")


def _is_asset(value: Any) -> bool:
    try:
        from airflow.sdk import Asset
    except ImportError:  # pragma: no cover - Airflow 3 has it
        return False
    return isinstance(value, Asset)


def _plain_inputs(inputs: Any) -> Any:
    """Inputs for the core, which knows no Airflow: an ``Asset`` (alone or in an ``Input``) is its URI."""
    if not isinstance(inputs, dict):
        return inputs
    out: dict[str, Any] = {}
    for name, value in inputs.items():
        if _is_asset(value):
            value = value.uri
        elif isinstance(value, Input) and _is_asset(value.source):
            value = Input(
                value.source.uri, value.mode, value.storage_options, value.conn_id, value.path_on_compute
            )
        out[name] = value
    return out


def output_asset_uri(value: Any) -> str:
    """The Asset an output publishes to: its URL up to the first template (``s3://b/models/{{ ds }}/``
    is the Asset ``s3://b/models/``), as downstream DAGs schedule on a fixed URI."""
    url = value.destination if isinstance(value, Output) else value
    if not isinstance(url, str):
        raise InvalidRunConfig(f"ScriptRunOperator outputs: {url!r} is not a URL (s3://bucket/prefix/).")
    if "{{" in url:
        url = url[: url.index("{{")]
        url = url[: url.rfind("/") + 1] if "/" in url.split("://", 1)[-1] else url
    return url


PUBLISH_KEYS = ("metric", "model", "alias", "higher_is_better")


def _check_publish_if_better(spec: Any) -> None:
    if not isinstance(spec, dict) or not {"metric", "model"} <= set(spec) or set(spec) - set(PUBLISH_KEYS):
        raise InvalidRunConfig(
            "publish_if_better must be a dict like {'metric': 'auc', 'model': 'churn', 'alias': "
            f"'production', 'higher_is_better': True}} (keys: {', '.join(PUBLISH_KEYS)}); got {spec!r}."
        )


def final_metrics(run: Run) -> dict[str, float]:
    """The run's numeric metrics, the last value of a series: what an Asset event's extra carries."""
    out: dict[str, float] = {}
    for name, value in run.get_metrics().items():
        if isinstance(value, list):
            value = value[-1] if value else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = value
    return out


def beats_promoted(workspace: Workspace, metrics: dict[str, float], spec: dict[str, Any]) -> tuple[bool, str]:
    """Whether the run's ``spec["metric"]`` beats the one of the run that made the model version at
    ``spec["alias"]`` (default ``production``); True when no version holds the alias yet."""
    metric, name, alias = spec["metric"], spec["model"], spec.get("alias", "production")
    higher = spec.get("higher_is_better", True)
    mine = metrics.get(metric)
    if mine is None:
        return False, f"the run logged no number {metric!r}: no Asset event published."
    try:
        promoted = Model(workspace, name, alias=alias)
    except MLTrainError:
        return True, f"model {name!r} has no version at {alias!r} yet: publishing ({metric}={mine})."
    source = promoted.run
    theirs = final_metrics(source).get(metric) if source is not None else None
    if theirs is None:
        return True, f"{name}@{alias} (v{promoted.version}) has no {metric!r} to compare: publishing."
    better = mine > theirs if higher else mine < theirs
    verdict = "publishing" if better else "no Asset event published"
    return better, f"{metric}={mine} vs {theirs} of {name}@{alias} (v{promoted.version}): {verdict}."


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


class ScriptRunOperator(ResumableJobMixin, BaseOperator):
    """Run ``script`` from ``source_directory`` on ``compute_target`` and record it in ``experiment_name``.

    ``environment`` is an ``Environment``, the path of a YAML spec (relative paths are looked up in
    ``source_directory`` first), or the name of a registered or curated environment; managed
    environments are built once per content hash, with the build output in the task log.

    The task's return value (XCom) is the run id; the run's details go to the ``run_details`` XCom
    key. While waiting, the run's stdout and stderr stream into the task log. A failed run fails the
    task with its exit code and the tail of its log; ``timeout`` cancels the run and fails the task.
    The "ML Training run" extra link opens the run's page. With the OpenLineage provider installed,
    the task's lineage events name its inputs, outputs and registered model as datasets and carry
    an ``mltrain_run`` run facet (run id, experiment, target, environment, git state, metrics).

    ``register_model={"name": "churn", "path": "outputs/model.pkl"}`` (optional ``tags``,
    ``properties``, ``description``) registers that file or folder of the run as the next version
    of the model when the run completes, once per run (a retry returns the same version); the
    ``model`` XCom holds its name, version and id.

    A retry of the same task instance reattaches to its run while it is active, returns a completed
    run without running it again, and starts a fresh run (linked to the old one) after a failure:
    Airflow 3.3's ``ResumableJobMixin`` contract (``durable=True``), with the run id kept in
    ``task_state_store`` where there is one and always findable in the run store, because it is
    fixed before submission. ``action_if_run_exists`` overrides what happens to an existing run;
    ``durable=False`` makes every try submit a fresh run (as ``"resubmit"`` does).

    With ``deferrable=True`` (default: ``[operators] default_deferrable``) the wait happens in the
    triggerer (``RunTrigger``) and frees the worker slot; the log still reaches the task log.
    ``wait_for_completion=False`` returns right after submission; follow with ``RunSensor``.
    """

    template_fields: Sequence[str] = (
        "experiment_name",
        "source_directory",
        "script",
        "arguments",
        "compute_target",
        "environment",
        "tags",
        "target_options",
        "register_model",
        "inputs",
        "outputs",
    )
    template_fields_renderers = {
        "arguments": "json",
        "tags": "json",
        "target_options": "json",
        "register_model": "json",
        "inputs": "json",
        "outputs": "json",
    }
    ui_color = "#e8f1fb"
    operator_extra_links = (MLTrainRunLink(),)
    # Renaming this breaks in-flight retries: earlier tries stored the run id under it.
    external_id_key = "mltrain_run_id"

    def __init__(
        self,
        *,
        experiment_name: str,
        source_directory: str,
        script: str,
        arguments: Sequence[Any] = (),
        compute_target: str = "local",
        environment: Environment | str | None = None,
        tags: dict[str, Any] | None = None,
        framework: str | None = None,
        target_options: dict[str, Any] | None = None,
        wait_for_completion: bool = True,
        poll_interval: float = 10.0,
        timeout: float | timedelta | None = None,
        cancel_grace_period: float = 10.0,
        workspace: str | None = None,
        rebuild_environment: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        action_if_run_exists: str = "reattach",
        durable: bool = True,
        register_model: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        outputs: dict[str, Any] | None = None,
        publish_if_better: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        assets = [v for v in (inputs or {}).values() if _is_asset(v)]
        if assets and "inlets" not in kwargs:
            kwargs["inlets"] = assets  # lineage: the Assets this task reads
        self._output_assets = {name: output_asset_uri(value) for name, value in (outputs or {}).items()}
        if publish_if_better is not None:
            _check_publish_if_better(publish_if_better)
        if self._output_assets and "outlets" not in kwargs:
            from airflow.sdk import Asset, AssetAlias

            # With a condition, the events go through an alias: no event at all when it fails.
            kwargs["outlets"] = (
                [AssetAlias(f"mltrain:{kwargs.get('task_id')}")]
                if publish_if_better
                else [Asset(uri) for uri in self._output_assets.values()]
            )
        super().__init__(durable=durable, **kwargs)
        if action_if_run_exists not in ACTIONS_IF_RUN_EXISTS:
            choices = ", ".join(ACTIONS_IF_RUN_EXISTS)
            raise ValueError(f"action_if_run_exists={action_if_run_exists!r}: use one of {choices}.")
        self.action_if_run_exists = action_if_run_exists
        self.experiment_name = experiment_name
        self.source_directory = source_directory
        self.script = script
        self.arguments = list(arguments) if isinstance(arguments, tuple) else arguments
        self.compute_target = compute_target
        self.environment = environment
        self.tags = tags or {}
        self.framework = framework
        self.target_options = target_options or {}
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.cancel_grace_period = cancel_grace_period
        self.workspace = workspace
        self.rebuild_environment = rebuild_environment
        self.deferrable = deferrable
        self.register_model = register_model
        self.inputs = inputs or {}
        self.outputs = outputs or {}
        self.publish_if_better = publish_if_better
        self._run: Run | None = None
        self._lineage: lineage.RunLineage | None = None

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Render as usual, leaving ``${{inputs.NAME}}`` / ``${{outputs.NAME}}`` in ``arguments``
        for mltrain: Jinja would read their ``{{ }}`` as its own (and fail on ``inputs``)."""
        kept: list[str] = []

        def keep(match: re.Match[str]) -> str:
            kept.append(match.group(0))
            return f"@@mltrain-placeholder-{len(kept) - 1}@@"

        if isinstance(self.arguments, list):
            self.arguments = [
                PLACEHOLDER_RE.sub(keep, a) if isinstance(a, str) else a for a in self.arguments
            ]
        super().render_template_fields(context, jinja_env)
        if kept and isinstance(self.arguments, list):
            self.arguments = [
                _PROTECTED.sub(lambda m: kept[int(m.group(1))], a) if isinstance(a, str) else a
                for a in self.arguments
            ]

    def _workspace(self) -> Workspace:
        return Workspace(self.workspace) if self.workspace else Workspace()

    def _pick_run_id(self, workspace: Workspace, ti: Any) -> tuple[str, str | None]:
        """The id to submit under (or attach to), and the earlier run it follows (if any).

        The ids of one task instance are ``<base>``, ``<base>.a2``, ``<base>.a3``...; the latest
        that exists decides, by ``action_if_run_exists``.
        """
        run_id, record = task_attempts(workspace, ti)
        if record is None:
            return run_id, None
        latest = record["id"]
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

    def execute(self, context: Context) -> str:
        if self._resumable(context):
            result = self.execute_resumable(context)
            if result is None and self._run is not None:
                # The mixin returns poll_until_complete's None when it reconnected to a running run.
                result = self.get_job_result(self._run.id, context)
            return str(result)
        run_id = self.submit_job(context)
        self._remember(context, run_id)
        if not self.wait_for_completion:
            return run_id
        if self.deferrable:
            self.defer(
                trigger=RunTrigger(
                    run_id=run_id,
                    workspace=str(self._workspace().root),
                    poll_interval=self.poll_interval,
                    deadline=time.time() + self.timeout if self.timeout else None,
                    cancel_grace_period=self.cancel_grace_period,
                ),
                method_name="execute_complete",
            )
        self.poll_until_complete(run_id, context)
        return self.get_job_result(run_id, context)

    def _resumable(self, context: Context) -> bool:
        """Whether ``ResumableJobMixin`` decides this try: a synchronous wait with a task_state_store.

        The other cases (deferrable, submit-only, ``action_if_run_exists`` other than "reattach",
        Airflow < 3.3) decide from the run store alone, with the same outcomes.
        """
        return (
            HAS_TASK_STATE_STORE
            and self.durable
            and self.wait_for_completion
            and not self.deferrable
            and self.action_if_run_exists == "reattach"
            and context.get("task_state_store") is not None
        )

    def _remember(self, context: Context, run_id: str) -> None:
        """Keeps the task_state_store's run id current on the paths the mixin does not drive."""
        store = context.get("task_state_store") if self.durable else None
        if store is not None:
            store.set(self.external_id_key, run_id)

    # -- ResumableJobMixin -----------------------------------------------------------------------

    def submit_job(self, context: Context) -> str:
        """Submits this try's run, or returns the run an earlier try submitted (see ``_pick_run_id``).

        Idempotent: a try that died after the target accepted the run but before anything was
        persisted finds the run by its id and attaches; the mixin's admitted gap does not open.
        """
        ti = context["ti"]
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
        if previous:
            properties["mltrain.previous_run_id"] = previous  # the run this one follows
        try:
            if not attaching:
                self._mask_secrets(config, workspace)
            run = Experiment(workspace, self.experiment_name).submit(
                config,
                run_id=run_id,
                properties=properties,
                log=lambda line: self.log.info("%s", line),
                rebuild_environment=self.rebuild_environment,
            )
        except EnvironmentBuildFailed as exc:
            raise AirflowException(
                f"mltrain: run {run_id} failed while preparing its environment: {exc}"
            ) from exc
        except MLTrainError as exc:
            raise AirflowException(f"mltrain: run not submitted: {exc}") from exc
        self._attach(run, ti)
        if not attaching:
            self.log.info(
                "Run %s submitted to %s (experiment %s).", run.id, self.compute_target, self.experiment_name
            )
        return run.id

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
            inputs=_plain_inputs(self.inputs),
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

    def _register(self, run: Run, ti: Any) -> None:
        spec = self.register_model
        if not spec:
            return
        mine = {"airflow.dag_id": str(ti.dag_id), "airflow.task_id": str(ti.task_id)}
        earlier = Model.list(run.workspace, name=spec["name"], properties=mine, run_id=run.id)
        model = earlier[0] if earlier else None
        if model is None:
            model = register_from_run(
                run,
                spec["name"],
                spec["path"],
                tags=spec.get("tags"),
                properties=spec.get("properties"),
                description=spec.get("description"),
                provider_properties={**mine, "airflow.run_id": str(ti.run_id)},
            )
            self.log.info("Run %s: registered model %s", run.id, model.id)
        else:
            self.log.info("Run %s: model %s was registered by an earlier try", run.id, model.id)
        if self._lineage is not None:
            self._lineage.model = {
                "name": model.name,
                "version": model.version,
                "size": model.size,
                "files": len(model.files),
            }
        if self.do_xcom_push:
            ti.xcom_push(key=XCOM_MODEL, value={"name": model.name, "version": model.version, "id": model.id})

    def _mask_secrets(self, config: ScriptRunConfig, workspace: Workspace) -> None:
        """Registers the environment's secret values with Airflow's secrets masker, so that the
        task log (where the run's log streams) shows ``***`` if the script prints one; the
        environment is resolved once here and handed to the submission as it is."""
        env = resolve_environment(config.environment, workspace, config.resolved_source_directory())
        config.environment = env
        for name, value in env.environment_variables.items():
            for secret in secret_values(name, value):
                mask_secret(secret)  # with a name, Airflow would mask only names it finds sensitive

    def get_job_status(self, external_id: Any, context: Context) -> str:
        try:
            return Run(self._workspace(), str(external_id)).refresh().value
        except RunNotFound:
            return "NotFound"  # e.g. another workspace: neither active nor succeeded, so resubmit

    def is_job_active(self, status: str) -> bool:
        return status in ACTIVE_STATES

    def is_job_succeeded(self, status: str) -> bool:
        return status == RunStatus.COMPLETED.value

    def poll_until_complete(self, external_id: Any, context: Context) -> None:
        """Follows the run to its end with its log in the task log; a failed run fails the task."""
        ti = context["ti"]
        run = self._attach(Run(self._workspace(), str(external_id)), ti)
        try:
            details = run.wait_for_completion(
                timeout=self.timeout,
                raise_on_error=False,
                poll_interval=self.poll_interval,
                log_callback=lambda line: self.log.info("%s", line),
            )
        except RunTimeout:
            self._timed_out(run, ti)
        except AirflowTaskTimeout:
            self.log.warning("Task execution_timeout reached: canceling run %s.", run.id)
            run.cancel(self.cancel_grace_period)
            raise
        if details["status"] != RunStatus.COMPLETED.value:
            self._finish(run, details, ti)

    def get_job_result(self, external_id: Any, context: Context) -> str:
        """The run id, with ``run_details`` in XCom: the same for a fresh run and a completed one."""
        ti = context["ti"]
        run = self._attach(Run(self._workspace(), str(external_id)), ti)
        run.refresh()
        details = run.get_details()
        result = self._finish(run, details, ti)
        self._publish_outputs(run, details, context)
        return result

    def _attach(self, run: Run, ti: Any) -> Run:
        """Makes ``run`` the one ``on_kill`` cancels and pushes its id, once per run and try."""
        if self._run is not None and self._run.id == run.id:
            return self._run
        self._run = run
        self._lineage = lineage.RunLineage(run.id)
        remember_run_id(self, run.id)
        if self.do_xcom_push:
            ti.xcom_push(key=XCOM_RUN_ID, value=run.id)
        return run

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        """Resumes after RunTrigger: the same XComs and failures as the synchronous path."""
        ti = context["ti"]
        run = self._attach(Run(self._workspace(), event["run_id"]), ti)
        if event.get("status") == "timeout":
            self._timed_out(run, ti)
        run.refresh()
        run.retry_upload()  # the files of a run that ended while the artifact store failed
        details = run.get_details()
        result = self._finish(run, details, ti)
        self._publish_outputs(run, details, context)
        return result

    def _timed_out(self, run: Run, ti: Any) -> NoReturn:
        self.log.warning("Run %s did not end within %s s: canceling it.", run.id, self.timeout)
        run.cancel(self.cancel_grace_period)
        details = run.get_details()
        self._keep_for_lineage(run, details)
        if self.do_xcom_push:
            ti.xcom_push(key=XCOM_RUN_DETAILS, value=details)
        raise AirflowException(f"mltrain: run {run.id} timed out after {self.timeout} s and was canceled.")

    def _keep_for_lineage(self, run: Run, details: dict[str, Any]) -> lineage.RunLineage:
        """The run's details and final metrics, read here so that the lineage events (built in a
        process the OpenLineage listener may fork) need no run store."""
        metrics: dict[str, float] | None = None
        try:
            metrics = final_metrics(run)
        except MLTrainError as exc:  # never hide the run's own outcome behind a metrics read
            self.log.warning("Run %s: its metrics could not be read: %s", run.id, exc)
        self._lineage = lineage.RunLineage(
            run.id, details, metrics, artifacts_url=run.workspace.artifacts.url
        )
        return self._lineage

    def _finish(self, run: Run, details: dict[str, Any], ti: Any) -> str:
        self._keep_for_lineage(run, details)
        for warning in details.get("warnings") or []:
            self.log.warning("Run %s: %s", run.id, warning)
        if self.do_xcom_push:
            ti.xcom_push(key=XCOM_RUN_DETAILS, value=details)
        if details["status"] != RunStatus.COMPLETED.value:
            raise AirflowException(failure_message(run, details))
        self.log.info("Run %s completed; outputs in %s", run.id, details["output_dir"])
        missing = [
            o for o in details.get("outputDatasets") or [] if o.get("required") and not o.get("uploaded")
        ]
        if missing:
            raise AirflowException(
                f"mltrain: run {run.id} completed without its required output(s) "
                + ", ".join(
                    f"{o['name']!r} (outputs/{o['name']}/ was empty; nothing went to {o['uri']})"
                    for o in missing
                )
                + ". Write them to ${{outputs.NAME}} / MLTRAIN_OUTPUT_NAME, or declare "
                "Output(..., required=False)."
            )
        self._register(run, ti)
        return run.id

    def _publish_outputs(self, run: Run, details: dict[str, Any], context: Context) -> None:
        """One Asset event per uploaded output, its ``extra`` the run id, experiment, the output's
        URL and the run's final metrics; with ``publish_if_better``, only when the run beats the
        promoted model."""
        uploaded = [o for o in details.get("outputDatasets") or [] if o.get("uploaded")]
        if not uploaded or not self._output_assets:
            return
        kept = self._lineage.metrics if self._lineage is not None else None
        metrics = kept if kept is not None else final_metrics(run)
        if self.publish_if_better is not None:
            better, why = beats_promoted(self._workspace(), metrics, self.publish_if_better)
            self.log.info("mltrain: %s", why)
            if not better:
                return
        from airflow.sdk import Asset, AssetAlias

        events = context["outlet_events"]
        for output in uploaded:
            uri = self._output_assets.get(output["name"])
            if uri is None:
                continue
            extra = {
                "mltrain_run_id": run.id,
                "experiment": details["experiment"],
                "output": output["name"],
                "uri": output["uri"],
                "metrics": metrics,
            }
            if self.publish_if_better is not None:
                events[AssetAlias(f"mltrain:{self.task_id}")].add(Asset(uri), extra=extra)
            else:
                events[Asset(uri)].extra.update(extra)

    # -- OpenLineage (called by its provider's listener only; see lineage/openlineage.py) ---------

    def get_openlineage_facets_on_start(self) -> OperatorLineage:
        return lineage.on_start(self.experiment_name, self.compute_target, self.inputs, self._output_assets)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        return lineage.on_end(
            self.experiment_name, self.compute_target, self.inputs, self._output_assets, self._lineage
        )

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage:
        return self.get_openlineage_facets_on_complete(task_instance)

    def on_kill(self) -> None:
        if self._run is not None:
            self.log.info("Task killed: canceling run %s.", self._run.id)
            self._run.cancel(self.cancel_grace_period)
