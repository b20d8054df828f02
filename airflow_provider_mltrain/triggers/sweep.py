"""SweepTrigger: drives a sweep from the triggerer, so a deferred SweepOperator holds no worker slot."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_mltrain.core.environment import Environment
from airflow_provider_mltrain.core.run_config import ScriptRunConfig
from airflow_provider_mltrain.core.sweep import HyperDriveConfig, SweepRun
from airflow_provider_mltrain.core.workspace import Workspace
from airflow_provider_mltrain.triggers.run import settle

# One step at a time per sweep in this process: a trigger canceled mid-step (its thread cannot be
# stopped) and the trigger that replaces it never step the same sweep at once.
_STEP_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


# Between steps a trigger waits for a child to end (SweepRun.wait_for_a_child), which blocks a thread
# for up to poll_interval: those waits get threads of their own, never the loop's default pool that
# every trigger's short calls share. More deferred sweeps than threads only queue their waits (each
# is bounded by its poll interval), so a sweep then steps within two poll intervals at worst.
_WAITS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="mltrain-sweep-wait")


def _step_lock(sweep_id: str) -> threading.Lock:
    with _LOCKS_LOCK:
        return _STEP_LOCKS.setdefault(sweep_id, threading.Lock())


def run_config_kwargs(config: ScriptRunConfig) -> dict[str, Any]:
    """A sweep's ScriptRunConfig as plain data for a trigger's kwargs (which Airflow stores
    encrypted: an Environment's variables may hold secrets)."""
    environment: Any = config.environment
    if isinstance(environment, Environment):
        environment = {"spec": environment.to_dict(), "base_dir": environment.base_dir}
    return {
        "source_directory": str(config.source_directory),
        "script": config.script,
        "arguments": list(config.arguments or []),
        "compute_target": config.compute_target,
        "environment": environment,
        "tags": dict(config.tags or {}),
        "framework": config.framework,
        "target_options": dict(config.target_options or {}),
    }


def run_config_from_kwargs(data: dict[str, Any]) -> ScriptRunConfig:
    environment = data.get("environment")
    if isinstance(environment, dict):
        environment = Environment.from_dict(environment["spec"], base_dir=environment.get("base_dir"))
    return ScriptRunConfig(**{**data, "environment": environment})


class SweepTrigger(BaseTrigger):
    """Runs one :meth:`SweepRun.step` every ``poll_interval`` seconds, and as soon as a running child
    ends, until the sweep ends, then fires one event ``{"sweep_id", "status"}``.

    Each step (read the children, apply the policy, cancel laggards, start children into free
    slots) runs in a thread, never on the triggerer's event loop. Everything the sweep knows is in
    the run store, so a triggerer that restarts resumes the sweep from its kwargs with no child
    started twice; a user killing the deferred task (mark failed, clear) cancels the sweep.

    The triggerer starts the children: it must read ``source_directory`` and reach the compute
    target, as the worker does (for the local target: the same host).
    """

    def __init__(
        self,
        sweep_id: str,
        workspace: str,
        definition: dict[str, Any],
        run_config: dict[str, Any],
        poll_interval: float = 10.0,
        cancel_grace_period: float = 10.0,
        database_url: str | None = None,
        driver_try: int | None = None,
        not_before: float | None = None,
    ):
        super().__init__()
        self.sweep_id = sweep_id
        self.workspace = workspace
        self.definition = definition
        self.run_config = run_config
        self.poll_interval = poll_interval
        self.cancel_grace_period = cancel_grace_period
        self.database_url = database_url
        self.driver_try = driver_try  # the deferring task's try number (core/sweep.py DRIVER_TRY)
        self.not_before = not_before  # no event before then (triggers/run.py RESUME_NOT_BEFORE)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "sweep_id": self.sweep_id,
                "workspace": self.workspace,
                "definition": self.definition,
                "run_config": self.run_config,
                "poll_interval": self.poll_interval,
                "cancel_grace_period": self.cancel_grace_period,
                "database_url": self.database_url,
                "driver_try": self.driver_try,
                "not_before": self.not_before,
            },
        )

    def _sweep(self) -> SweepRun:
        workspace = Workspace(self.workspace, database_url=self.database_url)
        config = HyperDriveConfig.from_definition(self.definition, run_config_from_kwargs(self.run_config))
        return SweepRun(
            workspace,
            self.sweep_id,
            config,
            log=lambda line: self.log.info("%s", line),
            driver_try=self.driver_try,
        )

    def _step(self, sweep: SweepRun) -> str:
        with _step_lock(self.sweep_id):
            return sweep.step().value

    async def run(self) -> AsyncIterator[TriggerEvent]:
        sweep = await asyncio.to_thread(self._sweep)
        while True:
            status = await asyncio.to_thread(self._step, sweep)
            if status in ("Completed", "Failed", "Canceled"):
                with _LOCKS_LOCK:
                    _STEP_LOCKS.pop(self.sweep_id, None)
                await settle(self, self.not_before, f"Sweep {self.sweep_id}")
                yield TriggerEvent({"sweep_id": self.sweep_id, "status": status})
                return
            # Until the oldest running child ends (its slot is then filled at once) or a poll interval.
            await asyncio.get_running_loop().run_in_executor(
                _WAITS, sweep.wait_for_a_child, self.poll_interval
            )

    async def on_kill(self) -> None:
        """The user killed the deferred task: stop the sweep too (not on triggerer restarts)."""
        sweep = await asyncio.to_thread(self._sweep)
        self.log.info("Task killed while deferred: canceling sweep %s.", self.sweep_id)
        await asyncio.to_thread(sweep.cancel, self.cancel_grace_period)
