"""Sweeps: a parent run whose children are ordinary runs of one script with sampled hyperparameters.

Azure ML v1 HyperDrive's API (``HyperDriveConfig``, ``Experiment.submit(hd_config)``,
``wait_for_completion``, ``get_best_run_by_primary_metric``). All of a sweep's state is in the run
store: the parent run records the sweep's definition and seed; each child records its index,
hyperparameters and, when a policy stopped it, why. Child ids are ``<sweep id>_<index>``, so a
driver that died is resumed by submitting the same config with the same ``run_id``: children
that exist are followed, never started twice, and sampling goes on from the first missing index.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core.compute import get_target, remember_target
from airflow_provider_mltrain.core.environment import resolve_environment
from airflow_provider_mltrain.core.errors import RunFailed, RunTimeout
from airflow_provider_mltrain.core.gitinfo import git_properties
from airflow_provider_mltrain.core.metrics import finite_number, stored_value
from airflow_provider_mltrain.core.run import DEFAULT_GRACE_PERIOD, Run, _dead_submitter
from airflow_provider_mltrain.core.run_config import ScriptRunConfig, check_tags
from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.core.store import RunExists
from airflow_provider_mltrain.core.sweep_policy import EarlyTerminationPolicy, NoTerminationPolicy
from airflow_provider_mltrain.core.sweep_space import (
    BayesianParameterSampling,
    HyperParameterSampling,
    InvalidSweep,
    arguments_for,
)

if TYPE_CHECKING:
    from airflow_provider_mltrain.core.experiment import Experiment
    from airflow_provider_mltrain.core.workspace import Workspace

logger = logging.getLogger(__name__)

# Provider-owned properties (a script cannot set mltrain.* names).
KIND = "mltrain.kind"  # "sweep" on a sweep's parent run; "child" on a script-created child run
PARENT = "mltrain.parent"  # on every child: its parent run's id
SWEEP = "mltrain.sweep"  # on the parent: the sweep's definition (JSON)
SWEEP_SEED = "mltrain.sweep.seed"
INDEX = "mltrain.sweep.index"  # on a sweep child: its index, 0-based
HYPERPARAMETERS = "mltrain.hyperparameters"  # on a sweep child: JSON {"--lr": 0.01}
EARLY_TERMINATED = "mltrain.sweep.early_terminated"  # on a child a policy stopped: the reason
# On a sweep child: the Airflow try whose driver recorded it. A driver of a later try knows that
# try is over (Airflow starts a retry only after the try before it ended), so it starts a child that
# try recorded but never started, whichever host the dead driver ran on.
DRIVER_TRY = "mltrain.sweep.driver_try"
PARENT_ENV = "MLTRAIN_PARENT_RUN_ID"
NO_METRIC_WARNING = "sweep:no-primary-metric"


class PrimaryMetricGoal(str, enum.Enum):
    """Whether a higher or a lower primary metric is better."""

    MAXIMIZE = "MAXIMIZE"
    MINIMIZE = "MINIMIZE"


class HyperDriveConfig:
    """A sweep: run ``run_config``'s script up to ``max_total_runs`` times, ``max_concurrent_runs``
    at a time, each with hyperparameters from ``hyperparameter_sampling`` passed as arguments
    (``--lr 0.01``), stopping laggards by ``policy`` on the metric ``primary_metric_name``.

    Everything is checked here, before anything is submitted: a grid larger than the budget, a
    policy without a metric to judge, a Bayesian sampling with a policy (Azure ML refuses it too).
    """

    def __init__(
        self,
        hyperparameter_sampling: HyperParameterSampling,
        primary_metric_name: str,
        primary_metric_goal: PrimaryMetricGoal | str,
        max_total_runs: int,
        max_concurrent_runs: int | None = None,
        max_duration_minutes: float = 10080,
        policy: EarlyTerminationPolicy | None = None,
        run_config: ScriptRunConfig | None = None,
    ):
        if not isinstance(hyperparameter_sampling, HyperParameterSampling):
            raise InvalidSweep(
                "HyperDriveConfig hyperparameter_sampling must be a GridParameterSampling, "
                f"RandomParameterSampling or BayesianParameterSampling, got {hyperparameter_sampling!r}."
            )
        if not isinstance(run_config, ScriptRunConfig):
            raise InvalidSweep(
                "HyperDriveConfig run_config must be a ScriptRunConfig (the script every child "
                f"runs), got {run_config!r}."
            )
        run_config.check_types("HyperDriveConfig run_config")
        if not isinstance(primary_metric_name, str) or not primary_metric_name.strip():
            raise InvalidSweep(
                "HyperDriveConfig primary_metric_name must name the metric the script logs with "
                f"run.log(name, value), e.g. 'accuracy'; got {primary_metric_name!r}."
            )
        try:
            goal = PrimaryMetricGoal(
                primary_metric_goal.upper() if isinstance(primary_metric_goal, str) else primary_metric_goal
            )
        except ValueError:
            raise InvalidSweep(
                "HyperDriveConfig primary_metric_goal must be PrimaryMetricGoal.MAXIMIZE or "
                f"MINIMIZE, got {primary_metric_goal!r}."
            ) from None
        for name, value in (("max_total_runs", max_total_runs), ("max_concurrent_runs", max_concurrent_runs)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidSweep(f"HyperDriveConfig {name} must be an int of at least 1, got {value!r}.")
        if (
            isinstance(max_duration_minutes, bool)
            or not isinstance(max_duration_minutes, (int, float))
            or not math.isfinite(max_duration_minutes)
            or max_duration_minutes <= 0
        ):
            raise InvalidSweep(
                "HyperDriveConfig max_duration_minutes must be a number above 0, got "
                f"{max_duration_minutes!r}."
            )
        if policy is not None and not isinstance(policy, EarlyTerminationPolicy):
            raise InvalidSweep(
                "HyperDriveConfig policy must be a BanditPolicy, MedianStoppingPolicy, "
                f"TruncationSelectionPolicy, NoTerminationPolicy or None, got {policy!r}."
            )
        policy = policy or NoTerminationPolicy()
        if isinstance(hyperparameter_sampling, BayesianParameterSampling) and not isinstance(
            policy, NoTerminationPolicy
        ):
            raise InvalidSweep(
                "BayesianParameterSampling takes no early termination policy (its model learns from "
                "complete runs): drop policy=, or use RandomParameterSampling."
            )
        size = hyperparameter_sampling.size
        if size is not None and size > max_total_runs:
            raise InvalidSweep(
                f"The grid has {size} combinations but max_total_runs is {max_total_runs}: the sweep "
                f"would leave {size - max_total_runs} of them out. Raise max_total_runs to {size}, "
                "or use RandomParameterSampling to try a subset."
            )
        self.hyperparameter_sampling = hyperparameter_sampling
        self.primary_metric_name = primary_metric_name
        self.primary_metric_goal = goal
        self.max_total_runs = max_total_runs
        self.max_concurrent_runs = max_concurrent_runs or max_total_runs
        self.max_duration_minutes = float(max_duration_minutes)
        self.policy = policy
        self.run_config = run_config

    @property
    def maximize(self) -> bool:
        return self.primary_metric_goal == PrimaryMetricGoal.MAXIMIZE

    def describe(self, seed: int) -> dict[str, Any]:
        """The definition recorded on the parent run (and compared when a sweep is resumed)."""
        return {
            **self.hyperparameter_sampling.describe(),
            "seed": seed,
            **self.policy.describe(),
            "primary_metric_name": self.primary_metric_name,
            "primary_metric_goal": self.primary_metric_goal.value,
            "max_total_runs": self.max_total_runs,
            "max_concurrent_runs": self.max_concurrent_runs,
            "max_duration_minutes": self.max_duration_minutes,
        }

    @classmethod
    def from_definition(cls, definition: dict[str, Any], run_config: ScriptRunConfig) -> HyperDriveConfig:
        """The config that :meth:`describe` recorded, with its seed: what a process that holds only
        plain data (a trigger's kwargs, the parent run's record) drives the sweep with."""
        from airflow_provider_mltrain.core import sweep_policy, sweep_space

        try:
            space = {
                name: sweep_space.ParameterExpression(str(expr[0]), tuple(expr[1:]))
                for name, expr in definition["parameter_space"].items()
            }
            seed = definition.get("seed")
            kind = definition["sampling"]
            sampling: HyperParameterSampling
            if kind == "grid":
                sampling = sweep_space.GridParameterSampling(space)
            elif kind == "random":
                sampling = sweep_space.RandomParameterSampling(space, seed=seed)
            elif kind == "bayesian":
                sampling = BayesianParameterSampling(
                    space,
                    seed=seed,
                    sampler=definition["sampler"],
                    n_startup_trials=definition["n_startup_trials"],
                )
            else:
                raise KeyError(kind)
            if seed is not None:
                sampling.seed = seed  # a grid ignores it; kept so describe() gives the same seed
            timing = {
                k: definition[k] for k in ("evaluation_interval", "delay_evaluation") if k in definition
            }
            policy: EarlyTerminationPolicy
            if definition["policy"] == "none":
                policy = NoTerminationPolicy()
            elif definition["policy"] == "bandit":
                policy = sweep_policy.BanditPolicy(
                    slack_factor=definition["slack_factor"], slack_amount=definition["slack_amount"], **timing
                )
            elif definition["policy"] == "median":
                policy = sweep_policy.MedianStoppingPolicy(**timing)
            elif definition["policy"] == "truncation":
                policy = sweep_policy.TruncationSelectionPolicy(
                    truncation_percentage=definition["truncation_percentage"],
                    exclude_finished_jobs=definition["exclude_finished_jobs"],
                    **timing,
                )
            else:
                raise KeyError(definition["policy"])
            return cls(
                hyperparameter_sampling=sampling,
                primary_metric_name=definition["primary_metric_name"],
                primary_metric_goal=definition["primary_metric_goal"],
                max_total_runs=definition["max_total_runs"],
                max_concurrent_runs=definition["max_concurrent_runs"],
                max_duration_minutes=definition["max_duration_minutes"],
                policy=policy,
                run_config=run_config,
            )
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise InvalidSweep(
                f"Not a sweep definition this version of mltrain reads (at {exc}): {definition!r}."
            ) from None


def submit_sweep(
    experiment: Experiment,
    config: HyperDriveConfig,
    tags: dict[str, Any] | None = None,
    run_id: str | None = None,
    log: Callable[[str], None] | None = None,
    properties: dict[str, Any] | None = None,
    driver_try: int | None = None,
) -> SweepRun:
    """Record the sweep's parent run and start its first children (``Experiment.submit``).

    With ``run_id`` naming a sweep already in the store, that sweep is returned to be resumed
    (its definition must match ``config``'s). ``properties`` are recorded on the parent; the
    ``airflow.*`` ones (the task that owns the sweep) are given to every child too, so each
    child belongs to that DAG in the UI's access checks. ``driver_try`` is the Airflow try
    number of the task driving the sweep (see :data:`DRIVER_TRY`).
    """
    from airflow_provider_mltrain.core.experiment import MAX_RUN_DURATION, check_name

    workspace = experiment.workspace
    store = workspace.store
    if tags is not None:
        check_tags("submit() tags", tags)
    if run_id is not None:
        check_name("run_id", run_id)
        existing = store.get_run(run_id)
        if existing is not None:
            return _resume(experiment, config, existing, log, driver_try)
    rc = config.run_config
    assert rc is not None
    source = rc.resolved_source_directory()
    script = rc.resolved_script(source)
    arguments = rc.resolved_arguments()
    flags = set(arguments_for({n: 0 for n in config.hyperparameter_sampling.parameter_space})[::2])
    clash = sorted(flags & set(arguments))
    if clash:
        raise InvalidSweep(
            f"The run_config's arguments already pass {', '.join(clash)}, which the sweep samples: "
            "remove them from ScriptRunConfig.arguments."
        )
    environment = resolve_environment(rc.environment, workspace, source)
    if run_id is None:
        run_id = f"{experiment.name}_sweep_{int(time.time())}_{secrets.token_hex(4)}"
    target = get_target(rc.compute_target, workspace.root)
    framework, _ = target.check_options(rc.framework, rc.resolved_target_options())
    target.check_environment(environment)
    workspace.check_artifacts()
    snapshot = workspace.snapshots.take(source, workspace.snapshot_limits, required=script)
    seed = config.hyperparameter_sampling.with_seed()
    all_tags = {str(k): "" if v is None else str(v) for k, v in {**(rc.tags or {}), **(tags or {})}.items()}
    record: dict[str, Any] = {
        "id": run_id,
        "experiment": experiment.name,
        "status": RunStatus.QUEUED.value,
        "target": target.name,
        "source_directory": str(source),
        "script": script,
        "arguments": arguments,
        "snapshot_id": snapshot.id,
        "environment": {
            **environment.recordable(),
            "hash": environment.content_hash(),
            "managed": environment.managed,
        },
        "tags": all_tags,
        "properties": {
            **{str(k): str(v) for k, v in (properties or {}).items()},
            **git_properties(source),
            KIND: "sweep",
            SWEEP: json.dumps(config.describe(seed)),
            SWEEP_SEED: str(seed),
            "mltrain.submitted_by": f"{socket.gethostname()}:{os.getpid()}",
            "mltrain.framework": framework,
            "mltrain.workspace": str(workspace.root),
            # Each child's limit, recorded here so every driver of the sweep gives it to children.
            **(
                {MAX_RUN_DURATION: f"{float(rc.max_run_duration_seconds):g}"}
                if rc.max_run_duration_seconds is not None
                else {}
            ),
        },
    }
    try:
        store.create_run(record)
    except RunExists:
        return _resume(experiment, config, store.get_run(run_id) or record, log, driver_try)
    if rc.compute_target is target:
        remember_target(run_id, target)
    now = time.time()
    store.record_states(run_id, [(RunStatus.PREPARING, now, None), (RunStatus.RUNNING, now, None)])
    sweep = SweepRun(workspace, run_id, config, log, driver_try=driver_try)
    sweep.step()
    return sweep


def _resume(
    experiment: Experiment,
    config: HyperDriveConfig,
    record: dict[str, Any],
    log: Callable[[str], None] | None,
    driver_try: int | None = None,
) -> SweepRun:
    if record["properties"].get(KIND) != "sweep":
        raise InvalidSweep(f"Run {record['id']!r} exists and is not a sweep: pick another run_id.")
    seed = int(record["properties"].get(SWEEP_SEED, "0"))
    recorded = json.loads(record["properties"].get(SWEEP, "{}"))
    if config.hyperparameter_sampling.seed is None:
        recorded_seedless = {**recorded, "seed": seed}
        wanted = config.describe(seed)
    else:
        recorded_seedless, wanted = recorded, config.describe(config.hyperparameter_sampling.seed)
    if json.loads(json.dumps(wanted)) != recorded_seedless:
        changed = sorted(k for k in set(wanted) | set(recorded) if wanted.get(k) != recorded_seedless.get(k))
        raise InvalidSweep(
            f"Sweep {record['id']} was submitted with another definition (differs in {', '.join(changed)}): "
            "resume it with the same HyperDriveConfig, or submit a new sweep under another run_id."
        )
    logger.info("Sweep %s exists already; resuming it.", record["id"])
    return SweepRun(experiment.workspace, record["id"], config, log, driver_try=driver_try)


class SweepRun(Run):
    """A sweep's parent run. ``wait_for_completion`` drives the sweep (starts children as slots
    free, applies the policy, cancels laggards); without the HyperDriveConfig (a handle made from
    an id) it can only follow a sweep that another process drives."""

    def __init__(
        self,
        workspace: Workspace,
        run_id: str,
        config: HyperDriveConfig | None = None,
        log: Callable[[str], None] | None = None,
        driver_try: int | None = None,
    ):
        super().__init__(workspace, run_id)
        self.config = config
        self.driver_try = driver_try
        self._say = log or (lambda line: logger.info("%s", line))
        self._children: dict[str, Run] = {}
        self._ended: set[str] = set()

    def __repr__(self) -> str:
        return f"SweepRun(id={self.id!r})"

    @property
    def definition(self) -> dict[str, Any]:
        """The sweep's recorded definition: sampling, space, seed, policy, metric, budgets."""
        return json.loads(self.properties.get(SWEEP, "{}"))

    @property
    def primary_metric_name(self) -> str:
        return str(self.definition.get("primary_metric_name", ""))

    @property
    def maximize(self) -> bool:
        return self.definition.get("primary_metric_goal") != PrimaryMetricGoal.MINIMIZE.value

    def refresh(self) -> RunStatus:
        return RunStatus(self._record()["status"])

    # -- children ------------------------------------------------------------------------------

    def get_hyperparameters(self) -> dict[str, dict[str, Any]]:
        """``{child run id: {"--lr": 0.01, ...}}``."""
        return {c.id: json.loads(c.properties.get(HYPERPARAMETERS, "{}")) for c in self.get_children()}

    def _child_records(self) -> list[dict[str, Any]]:
        records = [
            r
            for r in self.workspace.store.list_runs(experiment=self._record()["experiment"])
            if r["properties"].get(PARENT) == self.id and r["properties"].get(INDEX, "").isdigit()
        ]
        return sorted(records, key=lambda r: int(r["properties"][INDEX]))

    def _child(self, run_id: str) -> Run:
        if run_id not in self._children:
            self._children[run_id] = Run(self.workspace, run_id)
        return self._children[run_id]

    def _series(self, run_id: str) -> list[float]:
        name = self.primary_metric_name
        out = []
        for row in self.workspace.store.get_metric_rows(run_id, name):
            if row["kind"] != "scalar":
                continue
            number = finite_number(stored_value(row["value"]))
            if number is not None:
                out.append(number)
        return out

    def _best(self, series: list[float]) -> float | None:
        if not series:
            return None
        return max(series) if self.maximize else min(series)

    def get_children_sorted_by_primary_metric(
        self, top: int = 0, reverse: bool = False, discard_no_metric: bool = False
    ) -> list[dict[str, Any]]:
        """Children best first by their best primary metric (``reverse``: worst first), as dicts
        with ``run_id``, ``hyperparameters``, ``best_primary_metric``, ``status`` and
        ``early_terminated`` (the policy's reason, or None). Children that never logged the
        metric come last, unless ``discard_no_metric``."""
        rows = []
        for record in self._child_records():
            best = self._best(self._series(record["id"]))
            if best is None and discard_no_metric:
                continue
            rows.append(
                {
                    "run_id": record["id"],
                    "hyperparameters": json.loads(record["properties"].get(HYPERPARAMETERS, "{}")),
                    "best_primary_metric": best,
                    "status": record["status"],
                    "early_terminated": record["properties"].get(EARLY_TERMINATED),
                }
            )
        sign = -1 if self.maximize else 1
        with_metric = sorted(
            (r for r in rows if r["best_primary_metric"] is not None),
            key=lambda r: (sign * r["best_primary_metric"], r["run_id"]),
        )
        if reverse:
            with_metric.reverse()
        ordered = with_metric + [r for r in rows if r["best_primary_metric"] is None]
        return ordered[:top] if top else ordered

    def get_best_run_by_primary_metric(
        self, include_failed: bool = True, include_canceled: bool = True
    ) -> Run | None:
        """The child with the best primary metric (None when no child logged it)."""
        for row in self.get_children_sorted_by_primary_metric(discard_no_metric=True):
            if not include_failed and row["status"] == RunStatus.FAILED.value:
                continue
            if not include_canceled and row["status"] == RunStatus.CANCELED.value:
                continue
            return Run(self.workspace, row["run_id"])
        return None

    # -- driving -------------------------------------------------------------------------------

    def step(self) -> RunStatus:
        """One pass of the driver: follow the children, apply the policy, start children into
        free slots, end the sweep when nothing is left to do. Safe to call from several
        processes: a child is started at most once, by its id."""
        record = self._record()
        status = RunStatus(record["status"])
        if status.is_terminal:
            return status
        config = self.config
        if config is None:
            raise InvalidSweep(
                f"Sweep {self.id} is driven by whoever holds its HyperDriveConfig: resume it with "
                f"experiment.submit(hd_config, run_id={self.id!r}).wait_for_completion()."
            )
        children = self._child_records()
        for child in children:
            if RunStatus(child["status"]).rank <= RunStatus.PREPARING.rank and (
                self._of_an_earlier_try(child) or _dead_submitter(child, self.workspace.root)
            ):
                # A driver died between recording this child and starting it: start it now (the
                # target's start is a no-op for a run it has), as this try's child from here on.
                if self.driver_try is not None:
                    properties = {**child["properties"], DRIVER_TRY: str(self.driver_try)}
                    self.workspace.store.update(child["id"], properties=properties)
                params = json.loads(child["properties"].get(HYPERPARAMETERS, "{}"))
                self._submit_child(config, int(child["properties"][INDEX]), params, adopt=True)
            if not RunStatus(child["status"]).is_terminal:
                self._child(child["id"]).refresh()
        children = self._child_records()
        active = [c["id"] for c in children if not RunStatus(c["status"]).is_terminal]
        overtime = time.time() - record["created_at"] > config.max_duration_minutes * 60
        if overtime:
            for child_id in active:
                self._stop(
                    child_id, f"the sweep reached max_duration_minutes={config.max_duration_minutes:g}"
                )
        else:
            series = {c["id"]: self._series(c["id"]) for c in children}
            # A child marked earlier (by a driver that died before its cancel went out) is stopped again.
            marked = {
                c["id"]: c["properties"][EARLY_TERMINATED]
                for c in children
                if EARLY_TERMINATED in c["properties"]
            }
            decisions = {**config.policy.decide(series, active, config.maximize), **marked}
            for child_id, reason in decisions.items():
                if child_id in active:
                    self._stop(child_id, reason)
            self._start_children(config, children, len(active))
        children = self._child_records()
        self._warn_missing_metric(children)
        if any(not RunStatus(c["status"]).is_terminal for c in children):
            return status
        exhausted = overtime or len(children) >= config.max_total_runs or self._exhausted
        if not exhausted:
            return status
        return self._end(children, overtime)

    _exhausted = False

    def _of_an_earlier_try(self, child: dict[str, Any]) -> bool:
        """Whether ``child`` was recorded by the driver of an earlier Airflow try (over by now)."""
        recorded = child["properties"].get(DRIVER_TRY, "")
        return self.driver_try is not None and recorded.isdigit() and int(recorded) < self.driver_try

    def _start_children(self, config: HyperDriveConfig, children: list[dict[str, Any]], active: int) -> None:
        indexes = {int(c["properties"][INDEX]) for c in children}
        index = 0
        history = self._history(children)
        seed = int(self.properties.get(SWEEP_SEED, "0"))
        while active < config.max_concurrent_runs and len(indexes) < config.max_total_runs:
            while index in indexes:
                index += 1
            params = config.hyperparameter_sampling.sample(index, seed, history, config.maximize)
            if params is None:
                self._exhausted = True
                return
            self._submit_child(config, index, params)
            indexes.add(index)
            active += 1

    def _history(self, children: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float | None]]:
        out = []
        for c in children:
            if RunStatus(c["status"]).is_terminal:
                params = json.loads(c["properties"].get(HYPERPARAMETERS, "{}"))
                out.append((params, self._best(self._series(c["id"]))))
        return out

    def _submit_child(
        self, config: HyperDriveConfig, index: int, params: dict[str, Any], adopt: bool = False
    ) -> None:
        from airflow_provider_mltrain.core.experiment import MAX_RUN_DURATION, Experiment

        record = self._record()
        rc = config.run_config
        assert rc is not None
        child_id = f"{self.id}_{index}"
        source = rc.resolved_source_directory()
        environment = resolve_environment(rc.environment, self.workspace, source)
        target = get_target(rc.compute_target, self.workspace.root)
        if rc.compute_target is target:
            remember_target(child_id, target)
        framework, target_options = target.check_options(rc.framework, rc.resolved_target_options())
        snapshot = self.workspace.snapshots.get(record["snapshot_id"])
        arguments = [*record["arguments"], *arguments_for(params)]
        self._say(
            f"Sweep {self.id}: starting child {index} ({child_id}) with {' '.join(arguments_for(params))}"
        )
        try:
            Experiment(self.workspace, record["experiment"])._submit_snapshot(
                snapshot,
                run_id=child_id,
                target=target,
                framework=framework,
                target_options=target_options,
                environment=environment,
                env_hash=environment.content_hash(),
                script=record["script"],
                arguments=arguments,
                source_directory=record["source_directory"],
                tags=dict(record["tags"]),
                properties={
                    **{
                        k: v
                        for k, v in record["properties"].items()
                        if k.startswith(("mltrain.git.", "airflow.")) or k == MAX_RUN_DURATION
                    },
                    PARENT: self.id,
                    INDEX: str(index),
                    HYPERPARAMETERS: json.dumps(params),
                    **({DRIVER_TRY: str(self.driver_try)} if self.driver_try is not None else {}),
                },
                say=self._say,
                rebuild_environment=False,
                environment_variables={PARENT_ENV: self.id},
                adopt=adopt,
            )
        except Exception as exc:
            if self.workspace.store.get_run(child_id) is None:
                raise  # nothing recorded (the folder is gone, say): the driver stops, resumable
            # The child is recorded Failed with the reason, and counts; the sweep goes on.
            logger.warning("Sweep %s: child %s could not start: %s", self.id, child_id, exc)

    def _stop(self, child_id: str, reason: str) -> None:
        child = self._child(child_id)
        if EARLY_TERMINATED not in child.properties:
            child.add_properties({EARLY_TERMINATED: reason})
            self._say(f"Sweep {self.id}: stopping {child_id}: {reason}")
        child.target.request_cancel(child_id, DEFAULT_GRACE_PERIOD)

    def _warn_missing_metric(self, children: list[dict[str, Any]]) -> None:
        ended = [c for c in children if RunStatus(c["status"]) == RunStatus.COMPLETED and c["collected"]]
        missing = [c["id"] for c in ended if not self._series(c["id"])]
        if not missing or any(w["key"] == NO_METRIC_WARNING for w in self._record()["warnings"]):
            return
        text = (
            f"child {missing[0]} completed without logging the primary metric "
            f"{self.primary_metric_name!r}: the policy cannot judge such children and they cannot be "
            f"ranked. Check the name (the script's run.log(name, value)) in the HyperDriveConfig."
        )
        logger.warning("Sweep %s: %s", self.id, text)
        self.workspace.store.add_warnings(self.id, [{"key": NO_METRIC_WARNING, "text": text, "count": 1}])

    def _end(self, children: list[dict[str, Any]], overtime: bool) -> RunStatus:
        statuses = [RunStatus(c["status"]) for c in children]
        error = None
        if statuses and all(s == RunStatus.FAILED for s in statuses):
            state = RunStatus.FAILED
            error = f"every child failed; see the log of {children[0]['id']}"
        else:
            state = RunStatus.COMPLETED
        if overtime:
            error = "stopped at max_duration_minutes"
        self.workspace.store.record_states(
            self.id, [(RunStatus.FINALIZING, time.time(), None), (state, time.time(), error)]
        )
        self.workspace.store.update(self.id, collected=True, error=error)
        best = self.get_best_run_by_primary_metric()
        self._say(
            f"Sweep {self.id} {state.value.lower()}: {len(children)} children"
            + (f"; best {best.id}" if best else "; no child logged the primary metric")
        )
        return state

    def wait_for_completion(  # type: ignore[override]
        self,
        show_output: bool = False,
        timeout: float | None = None,
        raise_on_error: bool = True,
        poll_interval: float = 2.0,
        **_ignored: Any,
    ) -> dict[str, Any]:
        """Drive the sweep to its end (or follow it, for a handle without its config); returns
        ``get_details()``. Raises :class:`RunTimeout` when ``timeout`` seconds pass first (the
        children go on; resume by submitting again with the same run_id) and :class:`RunFailed`
        when the sweep ends Failed (every child failed) and ``raise_on_error``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.step() if self.config is not None else self.refresh()
            if status.is_terminal:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise RunTimeout(
                    f"Sweep {self.id} is still {status.value} after {timeout} s; its children go on running."
                )
            self.wait_for_a_child(
                poll_interval
                if deadline is None
                else min(poll_interval, max(0.0, deadline - time.monotonic()))
            )
        details = self.get_details()
        if raise_on_error and status == RunStatus.FAILED:
            raise RunFailed(
                f"Sweep {self.id} failed: {details['error']}",
                run_id=self.id,
                status=status.value,
                exit_code=None,
                log_tail="",
            )
        return details

    def wait_for_a_child(self, seconds: float) -> None:
        """Up to ``seconds`` (the poll interval), returning as soon as the oldest running child has
        ended, so the next child starts in its slot at once instead of at the next poll.

        The oldest child is the likeliest to end first (children of one wave start in order). The
        target's ``wait_for_change`` returns on any change of the child's status (a heartbeat, the
        script's exit before its files are collected), so its status is read before each wait: only
        an ended run (Completed, Failed, Canceled) ends the wait early. Anything a target cannot do
        here is a plain sleep, as before."""
        deadline = time.monotonic() + seconds
        running = [
            c
            for c in self._child_records()
            if RunStatus(c["status"]).rank < RunStatus.FINALIZING.rank and c["id"] not in self._ended
        ]
        if not running:  # nothing to wait on (or only children whose files are being collected)
            time.sleep(seconds)
            return
        oldest = min(running, key=lambda c: (c["created_at"], c["id"]))["id"]
        try:
            target = self._child(oldest).target
            # Read first: the script may have ended while the last step ran, and a change that
            # happened before the wait began does not end the wait.
            while not _run_ended(target.read_status(oldest)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                target.wait_for_change(oldest, left)
            self._ended.add(oldest)  # woken once per child: never a loop of steps with no sleep
            return
        except Exception as exc:
            logger.debug("Sweep %s: waiting on child %s failed (%s); sleeping", self.id, oldest, exc)
            time.sleep(max(0.0, deadline - time.monotonic()))

    def cancel(self, grace_period: float = DEFAULT_GRACE_PERIOD) -> str:
        """Stop the sweep: no new child starts, and every running child is canceled."""
        if RunStatus(self._record()["status"]).is_terminal:
            return str(self._record()["status"])
        self.workspace.store.record_states(
            self.id, [(RunStatus.CANCELED, time.time(), "canceled by request")]
        )
        self.workspace.store.update(self.id, collected=True)
        for child in self._child_records():
            if not RunStatus(child["status"]).is_terminal:
                self._child(child["id"]).cancel(grace_period)
        return RunStatus.CANCELED.value


def _run_ended(status: dict[str, Any] | None) -> bool:
    """Whether a target's status says the run is over (Completed, Failed, Canceled: its slot is
    free once the next step has read it). Finalizing is not over: the slot is still taken. No
    status is not over either: a child just started has none yet (and one whose folder is gone is
    the next step's to judge, at the poll interval as before)."""
    if status is None:
        return False
    try:
        return RunStatus(status.get("state")).is_terminal
    except ValueError:
        return False  # not started yet (state None)


def sweep_or_run(workspace: Workspace, run_id: str) -> Run:
    """A handle on ``run_id``: a :class:`SweepRun` for a sweep's parent, else a :class:`Run`."""
    record = workspace.store.get_run(run_id)
    if record is not None and record["properties"].get(KIND) == "sweep":
        return SweepRun(workspace, run_id)
    return Run(workspace, run_id)


def children_of(workspace: Workspace, record: dict[str, Any]) -> list[Run]:
    """The runs whose parent is ``record``'s run: a sweep's children by index, others oldest first."""
    children = [
        r
        for r in workspace.store.list_runs(experiment=record["experiment"])
        if r["properties"].get(PARENT) == record["id"]
    ]

    def order(r: dict[str, Any]) -> tuple[int, float, str]:
        index = r["properties"].get(INDEX, "")
        return (int(index) if index.isdigit() else 0, r["created_at"], r["id"])

    return [Run(workspace, r["id"]) for r in sorted(children, key=order)]
