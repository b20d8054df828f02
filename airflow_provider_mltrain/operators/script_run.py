"""ScriptRunOperator: snapshot a folder, run its script on a compute target, follow it to the end."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_mltrain.core.environment import Environment
from airflow_provider_mltrain.core.errors import InvalidRunConfig, MLTrainError, RunNotFound, RunTimeout
from airflow_provider_mltrain.core.model import Model, register_from_run
from airflow_provider_mltrain.core.outputs import Output
from airflow_provider_mltrain.core.run import Run
from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.core.workspace import Workspace
from airflow_provider_mltrain.lineage import openlineage as lineage
from airflow_provider_mltrain.links.run import XCOM_RUN_ID, MLTrainRunLink, remember_run_id
from airflow_provider_mltrain.operators.submission import (
    ACTIONS_IF_RUN_EXISTS,
    REGISTER_MODEL_KEYS,
    SUBMIT_FIELDS,
    XCOM_RUN_DETAILS,
    SubmitsRuns,
    failure_message,
    is_asset,
    keep_placeholders,
    restore_placeholders,
    run_id_for_task,
    task_attempts,
    trigger_value,
)
from airflow_provider_mltrain.triggers.run import RunTrigger, resume_not_before
from airflow_provider_mltrain.version_compat import (
    AIRFLOW_V_3_3_PLUS,
    HAS_TASK_STATE_STORE,
    AirflowException,
    AirflowTaskTimeout,
    BaseOperator,
    ResumableJobMixin,
    conf,
)

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

XCOM_MODEL = "model"
ACTIVE_STATES = frozenset(s.value for s in RunStatus if not s.is_terminal)
ENDED_STATES = frozenset(s.value for s in RunStatus if s.is_terminal)
__all__ = [
    "ACTIONS_IF_RUN_EXISTS",
    "REGISTER_MODEL_KEYS",
    "XCOM_RUN_DETAILS",
    "ScriptRunOperator",
    "failure_message",
    "run_id_for_task",
    "task_attempts",
]


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


class ScriptRunOperator(SubmitsRuns, ResumableJobMixin, BaseOperator):
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
    triggerer (``RunTrigger``) and frees the worker slot; the log still reaches the task log. A run
    already over when the task would defer (a retry finding its earlier try's run) is finished on
    the worker instead, and one that ends soon after resumes the task no sooner than
    ``RESUME_NOT_BEFORE`` (10 s) after the deferral (Airflow 3.3's stale-event race,
    apache/airflow#72716: give deferrable tasks retries). On Airflow 3.3+,
    ``start_from_trigger=True`` has the triggerer submit the run too (``SubmitRunTrigger``: no
    worker slot until ``execute_complete``), and ``end_from_trigger=True`` ends the task there
    (no slot at all; no XComs, no outputs or model registration).
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
        start_from_trigger: bool = False,
        end_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        assets = [v for v in (inputs or {}).values() if is_asset(v)]
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
        self.end_from_trigger = end_from_trigger
        self._run: Run | None = None
        self._lineage: lineage.RunLineage | None = None
        if start_from_trigger or end_from_trigger:
            self._check_trigger_only(start_from_trigger)
        if start_from_trigger:
            from airflow.triggers.base import StartTriggerArgs

            self.start_from_trigger = True
            self.start_trigger_args = StartTriggerArgs(
                trigger_cls="airflow_provider_mltrain.triggers.run.SubmitRunTrigger",
                trigger_kwargs=self._trigger_kwargs(),
                next_method="execute_complete",
                next_kwargs=None,
                timeout=None,
            )

    def _check_trigger_only(self, start_from_trigger: bool) -> None:
        """``start_from_trigger`` / ``end_from_trigger`` as given: refused when the DAG is parsed."""
        owner = f"ScriptRunOperator {self.task_id!r}:"
        if not (self.deferrable and self.wait_for_completion):
            raise ValueError(
                f"{owner} start_from_trigger and end_from_trigger wait for the run in the triggerer: "
                "set deferrable=True and wait_for_completion=True, or drop them."
            )
        if start_from_trigger and not AIRFLOW_V_3_3_PLUS:
            raise ValueError(
                f"{owner} start_from_trigger=True needs Airflow 3.3 or newer (the triggerer renders "
                "the task's templates from 3.3 on). Drop it: deferrable=True alone still frees the "
                "worker slot while the run goes on."
            )
        after = [name for name in ("outputs", "register_model", "publish_if_better") if getattr(self, name)]
        if self.end_from_trigger and after:
            raise ValueError(
                f"{owner} end_from_trigger=True ends the task in the triggerer, but {', '.join(after)} "
                "run on a worker after the run (Asset events, the model registry). Drop "
                "end_from_trigger, or register and publish in a downstream task."
            )

    def _trigger_kwargs(self) -> dict[str, Any]:
        """The submission's fields as ``SubmitRunTrigger`` takes them, unrendered: the triggerer
        renders the templated ones (``template_fields``) under the same names."""
        fields = {name: trigger_value(name, getattr(self, name)) for name in SUBMIT_FIELDS}
        return {
            **fields,
            "task_id": self.task_id,
            "poll_interval": self.poll_interval,
            "timeout": self.timeout,
            "cancel_grace_period": self.cancel_grace_period,
            "end_from_trigger": self.end_from_trigger,
        }

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Render as usual, leaving ``${{inputs.NAME}}`` / ``${{outputs.NAME}}`` in ``arguments``
        for mltrain: Jinja would read their ``{{ }}`` as its own (and fail on ``inputs``)."""
        self.arguments, kept = keep_placeholders(self.arguments)
        super().render_template_fields(context, jinja_env)
        self.arguments = restore_placeholders(self.arguments, kept)

    def execute(self, context: Context) -> str:
        if self._resumable(context):
            result = self.execute_resumable(context)
            if result is None and self._run is not None:
                # The mixin returns poll_until_complete's None when it reconnected to a running run.
                result = self.get_job_result(self._run.id, context)
            return str(result)
        if getattr(self, "start_from_trigger", False):
            # Airflow starts a mapped task on a worker whatever it asks (apache/airflow#52141).
            self.log.info("start_from_trigger: this task started on a worker; submitting from here.")
        run_id = self.submit_job(context)
        self._remember(context, run_id)
        if not self.wait_for_completion:
            return run_id
        if self.deferrable:
            if self.get_job_status(run_id, context) not in ENDED_STATES:
                self.defer(
                    trigger=RunTrigger(
                        run_id=run_id,
                        workspace=str(self._workspace().root),
                        poll_interval=self.poll_interval,
                        deadline=time.time() + self.timeout if self.timeout else None,
                        cancel_grace_period=self.cancel_grace_period,
                        end_from_trigger=self.end_from_trigger,
                        # Ended in the triggerer, the task never resumes on a worker: no race.
                        not_before=None if self.end_from_trigger else resume_not_before(),
                    ),
                    method_name="execute_complete",
                )
            # Over already (an earlier try's run, or a script that ended at once): finishing here
            # spares a second worker slot, and a trigger that would fire at once could meet
            # Airflow's stale-executor-event race (apache/airflow#72716) and fail the try.
            self.log.info("Run %s has ended already: finishing on this worker, not deferring.", run_id)
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
        run, attaching = self._submit_run(ti, lambda line: self.log.info("%s", line))
        self._attach(run, ti)
        if not attaching:
            self.log.info(
                "Run %s submitted to %s (experiment %s).", run.id, self.compute_target, self.experiment_name
            )
        return run.id

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
        """Resumes after RunTrigger (or SubmitRunTrigger, which also submitted the run): the same
        XComs and failures as the synchronous path."""
        ti = context["ti"]
        if event.get("status") == "not_submitted":
            raise AirflowException(event["error"])
        run = self._attach(Run(self._workspace(), event["run_id"]), ti)
        self._remember(context, run.id)
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
