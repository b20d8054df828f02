"""SweepOperator: a hyperparameter sweep (Azure ML's HyperDrive) as one Airflow task."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core.compute import ComputeTarget
from airflow_provider_mltrain.core.environment import Environment, resolve_environment
from airflow_provider_mltrain.core.errors import MLTrainError
from airflow_provider_mltrain.core.experiment import Experiment
from airflow_provider_mltrain.core.run import DEFAULT_GRACE_PERIOD
from airflow_provider_mltrain.core.run_config import ScriptRunConfig, check_type, type_error
from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.core.sweep import HyperDriveConfig, PrimaryMetricGoal, SweepRun, submit_sweep
from airflow_provider_mltrain.core.sweep_policy import EarlyTerminationPolicy
from airflow_provider_mltrain.core.sweep_space import HyperParameterSampling, InvalidSweep
from airflow_provider_mltrain.core.workspace import Workspace
from airflow_provider_mltrain.links.run import XCOM_RUN_ID, MLTrainRunLink, remember_run_id
from airflow_provider_mltrain.operators.script_run import task_attempts
from airflow_provider_mltrain.triggers.run import resume_not_before
from airflow_provider_mltrain.triggers.sweep import SweepTrigger, run_config_kwargs
from airflow_provider_mltrain.version_compat import AirflowException, AirflowTaskTimeout, BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

XCOM_SWEEP_SUMMARY = "sweep_summary"
_NATIVE = (
    " A template renders to a string unless the DAG sets render_template_as_native_obj=True;"
    " or pass the value itself."
)


class SweepOperator(BaseOperator):
    """Run a sweep of ``script`` over ``hyperparameter_sampling`` and return its best child run.

    The arguments are ScriptRunOperator's (``source_directory``, ``script``, ``arguments``,
    ``compute_target``, ``environment``...) plus HyperDriveConfig's (``hyperparameter_sampling``,
    ``policy``, ``primary_metric_name``/``_goal``, ``max_total_runs``, ``max_concurrent_runs``,
    ``max_duration_minutes``) and ``seed``; or ``hyperdrive_config=`` a ready HyperDriveConfig
    (its ``run_config`` names the script). A bad sweep is refused when the DAG is parsed.

    The return value (XCom) is the id of the child with the best primary metric; the
    ``sweep_summary`` key holds the sweep's id, status, best child and every child with its
    status, hyperparameters, best primary metric and, when the policy stopped it, why. A sweep
    whose every child failed, that was canceled, or whose children never logged the primary
    metric fails the task (after pushing the summary).

    The sweep's id derives from the task instance, and its state lives in the run store: a
    retried or killed worker resumes the same sweep, and a restarted triggerer goes on with it,
    with no child started twice. After a Failed or Canceled sweep, a retry starts a new sweep
    (``<id>.a2``) that records the one it follows.

    Deferrable by default (a sweep lasts hours; holding a worker slot meanwhile is waste): the
    triggerer drives it (``SweepTrigger``), one step every ``poll_interval`` seconds, and must read
    ``source_directory`` and reach the compute target. ``deferrable=False`` drives it in the worker.

    ``child_pool="gpu"`` runs the task in that Airflow pool holding ``max_concurrent_runs``
    slots (or ``pool_slots`` if given, which then caps ``max_concurrent_runs``): the pool counts
    the children as running tasks, so the sweep and other tasks of the pool never oversubscribe
    it. A deferrable sweep keeps its slots only in a pool that counts deferred tasks
    (``include_deferred``).
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
    )
    template_fields_renderers = {"arguments": "json", "tags": "json", "target_options": "json"}
    ui_color = "#e3eefb"
    operator_extra_links = (MLTrainRunLink(),)

    def __init__(
        self,
        *,
        experiment_name: str,
        source_directory: str | None = None,
        script: str | None = None,
        arguments: Sequence[Any] = (),
        compute_target: str = "local",
        environment: Environment | str | None = None,
        tags: dict[str, Any] | None = None,
        framework: str | None = None,
        target_options: dict[str, Any] | None = None,
        hyperparameter_sampling: HyperParameterSampling | None = None,
        policy: EarlyTerminationPolicy | None = None,
        primary_metric_name: str | None = None,
        primary_metric_goal: PrimaryMetricGoal | str = PrimaryMetricGoal.MAXIMIZE,
        max_total_runs: int | None = None,
        max_concurrent_runs: int | None = None,
        max_duration_minutes: float = 10080,
        seed: int | None = None,
        hyperdrive_config: HyperDriveConfig | None = None,
        child_pool: str | None = None,
        poll_interval: float = 10.0,
        cancel_grace_period: float = DEFAULT_GRACE_PERIOD,
        workspace: str | None = None,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        owner = f"SweepOperator {kwargs.get('task_id')!r}:"
        if hyperdrive_config is not None:
            if not isinstance(hyperdrive_config, HyperDriveConfig):
                raise InvalidSweep(
                    f"{owner} hyperdrive_config must be a HyperDriveConfig, got {hyperdrive_config!r}."
                )
            given = [
                name
                for name, value in (
                    ("source_directory", source_directory),
                    ("script", script),
                    ("hyperparameter_sampling", hyperparameter_sampling),
                    ("policy", policy),
                    ("primary_metric_name", primary_metric_name),
                    ("max_total_runs", max_total_runs),
                    ("max_concurrent_runs", max_concurrent_runs),
                )
                if value is not None
            ]
            if given:
                raise InvalidSweep(
                    f"{owner} pass either hyperdrive_config or the sweep's own arguments, not both "
                    f"(also given: {', '.join(given)})."
                )
            rc = hyperdrive_config.run_config
            assert rc is not None
            if isinstance(rc.compute_target, ComputeTarget):
                raise InvalidSweep(
                    f"{owner} the HyperDriveConfig's run_config names its compute target by an "
                    "object: give its name (an Airflow connection id, or 'local')."
                )
            if rc.inputs or rc.outputs:
                raise InvalidSweep(f"{owner} a sweep's run_config takes no inputs or outputs.")
            source_directory, script, arguments = str(rc.source_directory), rc.script, rc.arguments
            compute_target, tags = rc.compute_target, rc.tags
            environment = (
                rc.environment
                if isinstance(rc.environment, (Environment, type(None)))
                else str(rc.environment)
            )
            framework, target_options = rc.framework, rc.target_options
            hyperparameter_sampling, policy = (
                hyperdrive_config.hyperparameter_sampling,
                hyperdrive_config.policy,
            )
            primary_metric_name = hyperdrive_config.primary_metric_name
            primary_metric_goal = hyperdrive_config.primary_metric_goal
            max_total_runs = hyperdrive_config.max_total_runs
            max_concurrent_runs = hyperdrive_config.max_concurrent_runs
            max_duration_minutes = hyperdrive_config.max_duration_minutes
        if source_directory is None or script is None:
            raise InvalidSweep(f"{owner} needs source_directory and script (or hyperdrive_config=).")
        if max_total_runs is None:
            raise InvalidSweep(f"{owner} needs max_total_runs, the most children the sweep may run.")
        if seed is not None and isinstance(hyperparameter_sampling, HyperParameterSampling):
            if hyperparameter_sampling.seed not in (None, seed):
                raise InvalidSweep(
                    f"{owner} seed={seed} but the sampling has seed={hyperparameter_sampling.seed}: give one."
                )
            hyperparameter_sampling = copy.copy(hyperparameter_sampling)
            hyperparameter_sampling.seed = seed
        if child_pool is not None:
            if kwargs.get("pool") not in (None, child_pool):
                raise ValueError(
                    f"{owner} pool={kwargs['pool']!r} and child_pool={child_pool!r}: the sweep's task "
                    "runs in its children's pool; give child_pool only."
                )
            kwargs["pool"] = child_pool
            wanted = max_concurrent_runs or max_total_runs
            if kwargs.get("pool_slots") is None:
                kwargs["pool_slots"] = wanted
            max_concurrent_runs = min(wanted, kwargs["pool_slots"])
        super().__init__(**kwargs)
        self.experiment_name = experiment_name
        self.source_directory = source_directory
        self.script = script
        self.arguments = list(arguments) if isinstance(arguments, tuple) else arguments
        self.compute_target = compute_target
        self.environment = environment
        self.tags = tags or {}
        self.framework = framework
        self.target_options = target_options or {}
        self.hyperparameter_sampling = hyperparameter_sampling
        self.policy = policy
        self.primary_metric_name = primary_metric_name
        self.primary_metric_goal = primary_metric_goal
        self.max_total_runs = max_total_runs
        self.max_concurrent_runs = max_concurrent_runs
        self.max_duration_minutes = max_duration_minutes
        self.child_pool = child_pool
        self.poll_interval = poll_interval
        self.cancel_grace_period = cancel_grace_period
        self.workspace = workspace
        self.deferrable = deferrable
        self._sweep: SweepRun | None = None
        # The sweep's own settings are checked now, so a bad sweep is a DAG import error.
        self._hyperdrive_config(ScriptRunConfig(".", "train.py"))

    def _hyperdrive_config(self, run_config: ScriptRunConfig) -> HyperDriveConfig:
        return HyperDriveConfig(
            run_config=run_config,
            hyperparameter_sampling=self.hyperparameter_sampling,  # type: ignore[arg-type]
            policy=self.policy,
            primary_metric_name=self.primary_metric_name,  # type: ignore[arg-type]
            primary_metric_goal=self.primary_metric_goal,
            max_total_runs=self.max_total_runs,  # type: ignore[arg-type]
            max_concurrent_runs=self.max_concurrent_runs,
            max_duration_minutes=self.max_duration_minutes,
        )

    def _checked_config(self, workspace: Workspace) -> HyperDriveConfig:
        """The sweep from the rendered fields; a field of the wrong type raises naming it."""
        owner = f"SweepOperator {self.task_id!r}:"
        check_type(f"{owner} experiment_name", self.experiment_name, str, "an experiment name (str)")
        if isinstance(self.arguments, str):
            raise type_error(f"{owner} arguments", self.arguments, "a list of strings or numbers", _NATIVE)
        run_config = ScriptRunConfig(
            source_directory=self.source_directory,  # type: ignore[arg-type]
            script=self.script,  # type: ignore[arg-type]
            arguments=self.arguments,
            compute_target=self.compute_target,
            environment=self.environment,
            tags=self.tags,
            framework=self.framework,
            target_options=self.target_options,
        )
        run_config.check_types(owner, hint=_NATIVE)
        # Resolved here, where the source folder is: the trigger gets the environment itself.
        run_config.environment = resolve_environment(
            run_config.environment, workspace, run_config.resolved_source_directory()
        )
        return self._hyperdrive_config(run_config)

    def _workspace(self) -> Workspace:
        return Workspace(self.workspace) if self.workspace else Workspace()

    def _sweep_id(self, workspace: Workspace, ti: Any) -> tuple[str, str | None]:
        """The id to submit under or resume, and the ended sweep it follows (if any).

        ``<base>``, ``<base>.a2``...: the latest that exists is resumed while it runs and returned
        once Completed; after a Failed or Canceled one, the next id starts a new sweep.
        """
        sweep_id, record = task_attempts(workspace, ti)
        if record is None:
            return sweep_id, None
        latest, latest_status = record["id"], RunStatus(record["status"])
        if latest_status in (RunStatus.FAILED, RunStatus.CANCELED):
            self.log.info(
                "Sweep %s ended %s: starting a new sweep %s.", latest, latest_status.value, sweep_id
            )
            return sweep_id, latest
        self.log.info(
            "Sweep %s exists (%s): resuming it instead of starting another.", latest, latest_status.value
        )
        return latest, None

    def _submit(self, context: Context) -> SweepRun:
        ti = context["ti"]
        workspace = self._workspace()
        try:
            config = self._checked_config(workspace)
            sweep_id, previous = self._sweep_id(workspace, ti)
            # Recorded with the parent, before its first children start: they inherit airflow.*.
            properties = {
                "airflow.dag_id": str(ti.dag_id),
                "airflow.task_id": str(ti.task_id),
                "airflow.run_id": str(ti.run_id),
                "airflow.map_index": str(getattr(ti, "map_index", -1)),
            }
            if previous:
                properties["mltrain.previous_run_id"] = previous
            # This try's number goes on the children it records: a retry on any host knows that a
            # child an earlier try recorded but never started is its to start (core/sweep.py).
            sweep = submit_sweep(
                Experiment(workspace, self.experiment_name),
                config,
                run_id=sweep_id,
                properties=properties,
                log=lambda line: self.log.info("%s", line),
                driver_try=_try_number(ti),
            )
        except MLTrainError as exc:
            raise AirflowException(f"mltrain: sweep not submitted: {exc}") from exc
        assert isinstance(sweep, SweepRun)
        if any(sweep.properties.get(k) != v for k, v in properties.items()):
            sweep.add_properties(properties)
        self._sweep = sweep
        remember_run_id(self, sweep.id)
        if self.do_xcom_push:
            ti.xcom_push(key=XCOM_RUN_ID, value=sweep.id)
        return sweep

    def execute(self, context: Context) -> str:
        sweep = self._submit(context)
        if self.deferrable and not sweep.refresh().is_terminal:
            assert sweep.config is not None and sweep.config.run_config is not None
            self.defer(
                trigger=SweepTrigger(
                    sweep_id=sweep.id,
                    workspace=str(sweep.workspace.root),
                    definition=sweep.definition,
                    run_config=run_config_kwargs(sweep.config.run_config),
                    poll_interval=self.poll_interval,
                    cancel_grace_period=self.cancel_grace_period,
                    driver_try=sweep.driver_try,
                    not_before=resume_not_before(),
                ),
                method_name="execute_complete",
            )
        try:
            sweep.wait_for_completion(raise_on_error=False, poll_interval=self.poll_interval)
        except AirflowTaskTimeout:
            self.log.warning("Task execution_timeout reached: canceling sweep %s.", sweep.id)
            sweep.cancel(self.cancel_grace_period)
            raise
        return self._finish(sweep, context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        """Resumes after SweepTrigger: the same XComs and failures as the synchronous path."""
        sweep = SweepRun(self._workspace(), event["sweep_id"])
        self._sweep = sweep
        remember_run_id(self, sweep.id)
        return self._finish(sweep, context)

    def _finish(self, sweep: SweepRun, context: Context) -> str:
        summary = sweep_summary(sweep)
        for warning in sweep.warnings:
            self.log.warning("Sweep %s: %s", sweep.id, warning)
        for child in summary["children"]:
            self.log.info(
                "  %s %s %s=%s %s%s",
                child["run_id"],
                child["status"],
                summary["primary_metric_name"],
                child["best_primary_metric"],
                child["hyperparameters"],
                f" (stopped: {child['early_terminated']})" if child["early_terminated"] else "",
            )
        if self.do_xcom_push:
            context["ti"].xcom_push(key=XCOM_SWEEP_SUMMARY, value=summary)
        if summary["status"] != RunStatus.COMPLETED.value:
            raise AirflowException(
                f"mltrain: sweep {sweep.id} {summary['status'].lower()}"
                + (f": {summary['error']}" if summary["error"] else "")
            )
        if summary["best_run_id"] is None:
            raise AirflowException(
                f"mltrain: sweep {sweep.id} completed but no child logged the primary metric "
                f"{summary['primary_metric_name']!r}: check the name the script logs with "
                "run.log(name, value)."
            )
        self.log.info(
            "Sweep %s completed: best child %s (%s=%s).",
            sweep.id,
            summary["best_run_id"],
            summary["primary_metric_name"],
            summary["best_primary_metric"],
        )
        return str(summary["best_run_id"])

    def on_kill(self) -> None:
        if self._sweep is not None:
            self.log.info("Task killed: canceling sweep %s.", self._sweep.id)
            self._sweep.cancel(self.cancel_grace_period)


def sweep_summary(sweep: SweepRun) -> dict[str, Any]:
    """What the ``sweep_summary`` XCom holds: JSON-ready, children best first."""
    details = sweep.get_details()
    children = sweep.get_children_sorted_by_primary_metric()
    best = next((c for c in children if c["best_primary_metric"] is not None), None)
    return {
        "sweep_id": sweep.id,
        "status": details["status"],
        "error": details["error"],
        "primary_metric_name": sweep.primary_metric_name,
        "primary_metric_goal": "MAXIMIZE" if sweep.maximize else "MINIMIZE",
        "best_run_id": best["run_id"] if best else None,
        "best_primary_metric": best["best_primary_metric"] if best else None,
        "children": children,
    }


def _try_number(ti: Any) -> int | None:
    """The task instance's try number (1 for the first try), None where a caller gives none."""
    number = getattr(ti, "try_number", None)
    return number if isinstance(number, int) and not isinstance(number, bool) and number > 0 else None
