"""RunTrigger: waits for a run in the triggerer, so a deferred task holds no worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_mltrain.core.errors import RunOnOtherHost
from airflow_provider_mltrain.core.run import LOG_PUSH_INTERVAL, LogFollower, Run
from airflow_provider_mltrain.core.workspace import Workspace


class RunTrigger(BaseTrigger):
    """Polls a run through its target's channel until it ends, then fires one event.

    Every read of the store or the target runs in a thread (``asyncio.to_thread``), never on the
    triggerer's event loop. The run's log goes to the task log by offset as it grows; the offset
    travels in the event, so ``execute_complete`` never repeats a line. A triggerer restart only
    resumes the wait; a user killing the task (mark failed, clear) cancels the run.

    The event's payload: ``{"run_id", "status", "log_offset"}``, with ``status`` a run state or
    ``"timeout"`` when ``deadline`` (epoch seconds) passed first.
    """

    def __init__(
        self,
        run_id: str,
        workspace: str,
        poll_interval: float = 10.0,
        log_offset: int = 0,
        deadline: float | None = None,
        cancel_grace_period: float = 10.0,
        database_url: str | None = None,
        cancel_on_kill: bool = True,
    ):
        super().__init__()
        self.run_id = run_id
        self.workspace = workspace
        self.poll_interval = poll_interval
        self.log_offset = log_offset
        self.deadline = deadline
        self.cancel_grace_period = cancel_grace_period
        self.database_url = database_url
        self.cancel_on_kill = cancel_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_id": self.run_id,
                "workspace": self.workspace,
                "poll_interval": self.poll_interval,
                "log_offset": self.log_offset,
                "deadline": self.deadline,
                "cancel_grace_period": self.cancel_grace_period,
                "database_url": self.database_url,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    def _run(self) -> Run:
        return Run(Workspace(self.workspace, database_url=self.database_url), self.run_id)

    def _poll(self, run: Run, follower: LogFollower) -> tuple[str, list[str]]:
        status = run.refresh()
        if not status.is_terminal and (elsewhere := run.elsewhere()):
            raise RunOnOtherHost(
                f"Run {run.id} is {status.value}: {elsewhere}. A local-target task and its triggerer "
                "must share a host: run it with deferrable=False on a worker of that host."
            )
        return status.value, follower.read(final=status.is_terminal)

    async def _sleep(self, run: Run, seconds: float) -> None:
        """Sleep between polls; with an artifact store that is not local, push the live log to it
        every ``LOG_PUSH_INTERVAL`` meanwhile, so other hosts read it within seconds."""
        if run.workspace.artifacts.is_local:
            await asyncio.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(LOG_PUSH_INTERVAL, left))
            await asyncio.to_thread(run.push_log)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        run = await asyncio.to_thread(self._run)
        follower = LogFollower(run, self.log_offset)
        delay = min(1.0, self.poll_interval)
        while True:
            status, lines = await asyncio.to_thread(self._poll, run, follower)
            for line in lines:
                self.log.info("%s", line)
            if follower.behind:
                continue  # more of the log is there already: read on before waiting or ending
            if status in ("Completed", "Failed", "Canceled"):
                yield TriggerEvent({"run_id": self.run_id, "status": status, "log_offset": follower.offset})
                return
            if self.deadline is not None and time.time() >= self.deadline:
                yield TriggerEvent(
                    {"run_id": self.run_id, "status": "timeout", "log_offset": follower.offset}
                )
                return
            await self._sleep(run, delay)
            delay = min(delay * 1.5, self.poll_interval)

    async def on_kill(self) -> None:
        """The user killed the deferred task: stop the run too (not on triggerer restarts)."""
        if not self.cancel_on_kill:
            return
        run = await asyncio.to_thread(self._run)
        self.log.info("Task killed while deferred: canceling run %s.", self.run_id)
        await asyncio.to_thread(run.cancel, self.cancel_grace_period)
