"""RunTrigger waits for a run in the triggerer, so a deferred task holds no worker slot;
SubmitRunTrigger also submits it there (``start_from_trigger``), so the task takes no slot to start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TaskFailedEvent, TaskSuccessEvent, TriggerEvent

from airflow_provider_mltrain.core.errors import MLTrainError, RunOnOtherHost
from airflow_provider_mltrain.core.run import LOG_PUSH_INTERVAL, LogFollower, Run
from airflow_provider_mltrain.core.workspace import Workspace

# Airflow 3.3.x fails a deferred task whose trigger fires before the scheduler has drained the
# deferring process's own exit event (apache/airflow#67287, #72716): that late "success" finds the
# task queued or running again and is taken for a task changed from outside. Airflow's task
# supervisor reports that exit up to [workers] min_heartbeat_interval (5 s) after it, so a trigger
# that resumes a task on a worker fires no sooner than this many seconds after the deferral. Only
# a run that ends within them waits, and for no longer than they last.
RESUME_NOT_BEFORE = 10.0


def resume_not_before() -> float:
    """The ``not_before`` of a trigger deferred now (epoch seconds)."""
    return time.time() + RESUME_NOT_BEFORE


async def settle(trigger: BaseTrigger, not_before: float | None, what: str) -> None:
    """Wait, if need be, until ``not_before`` before firing the event that resumes the task."""
    left = (not_before or 0.0) - time.time()
    if left > 0:
        trigger.log.info(
            "%s has ended; resuming the task in %.1f s, once Airflow has taken in its deferral "
            "(Airflow 3.3's stale-event race, apache/airflow#72716).",
            what,
            left,
        )
        await asyncio.sleep(left)


class RunTrigger(BaseTrigger):
    """Polls a run through its target's channel until it ends, then fires one event.

    Every read of the store or the target runs in a thread (``asyncio.to_thread``), never on the
    triggerer's event loop. The run's log goes to the task log by offset as it grows; the offset
    travels in the event, so ``execute_complete`` never repeats a line. A triggerer restart only
    resumes the wait; a user killing the task (mark failed, clear) cancels the run.

    The event's payload: ``{"run_id", "status", "log_offset"}``, with ``status`` a run state or
    ``"timeout"`` when ``deadline`` (epoch seconds) passed first, and fired no sooner than
    ``not_before`` (epoch seconds, :data:`RESUME_NOT_BEFORE`). With ``end_from_trigger`` the task
    ends here instead of resuming on a worker, with no XCom: a completed run succeeds it; a failed,
    canceled or timed-out (then canceled) run fails it, with retries as the task sets them.
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
        end_from_trigger: bool = False,
        not_before: float | None = None,
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
        self.end_from_trigger = end_from_trigger
        self.not_before = not_before

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
                "end_from_trigger": self.end_from_trigger,
                "not_before": self.not_before,
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
            if status in ("Completed", "Failed", "Canceled") or (
                self.deadline is not None and time.time() >= self.deadline
            ):
                if status not in ("Completed", "Failed", "Canceled"):
                    status = "timeout"
                if self.end_from_trigger:
                    yield await asyncio.to_thread(self._end, run, status)
                else:
                    await settle(self, self.not_before, f"Run {self.run_id}")
                    yield TriggerEvent(
                        {"run_id": self.run_id, "status": status, "log_offset": follower.offset}
                    )
                return
            await self._sleep(run, delay)
            delay = min(delay * 1.5, self.poll_interval)

    def _end(self, run: Run, status: str) -> TriggerEvent:
        """What ``execute_complete`` would do for a task with nothing left for a worker: the
        outcome in the task log, the XComs, the task's end."""
        from airflow_provider_mltrain.operators.submission import failure_message

        if status == "timeout":
            self.log.warning("Run %s did not end by its deadline: canceling it.", run.id)
            run.cancel(self.cancel_grace_period)
        run.refresh()
        run.retry_upload()  # the files of a run that ended while the artifact store failed
        details = run.get_details()
        for warning in details.get("warnings") or []:
            self.log.warning("Run %s: %s", run.id, warning)
        # No XComs: Airflow 3.3 stores the ones an end event carries JSON-encoded twice, so a
        # downstream task would read the run id as '"<id>"' (tests/test_airflow_faults.py).
        if status == "Completed":
            self.log.info("Run %s completed; outputs in %s", run.id, details["output_dir"])
            return TaskSuccessEvent()
        if status == "timeout":
            self.log.error("mltrain: run %s timed out and was canceled.", run.id)
        else:
            self.log.error("%s", failure_message(run, details))
        return TaskFailedEvent()

    async def on_kill(self) -> None:
        """The user killed the deferred task: stop the run too (not on triggerer restarts)."""
        if not self.cancel_on_kill:
            return
        run = await asyncio.to_thread(self._run)
        self.log.info("Task killed while deferred: canceling run %s.", self.run_id)
        await asyncio.to_thread(run.cancel, self.cancel_grace_period)


class SubmitRunTrigger(RunTrigger):
    """Submits a task instance's run in the triggerer, then waits for it as ``RunTrigger`` does:
    the trigger of ``ScriptRunOperator(start_from_trigger=True)``, which Airflow (3.3+) starts
    straight from the scheduler, with no worker slot taken to submit.

    Its keyword arguments are the operator's submission fields under the same names (the
    triggerer renders the templated ones with the task's context first), plus the wait's. The run
    is the one the operator would submit (``operators/submission.py``): its id is fixed by the task
    instance, so a triggerer that restarts after submitting finds this try's run and follows it,
    and a retry follows or replaces the last try's run by ``action_if_run_exists``. A submission
    that fails (bad input, an environment that does not build) fires ``{"status": "not_submitted",
    "error"}``: the task fails on a worker with that message, or here with ``end_from_trigger``.
    """

    def __init__(
        self,
        *,
        task_id: str,
        timeout: float | None = None,
        poll_interval: float = 10.0,
        cancel_grace_period: float = 10.0,
        end_from_trigger: bool = False,
        **fields: Any,
    ):
        from airflow_provider_mltrain.operators.submission import SUBMIT_FIELDS

        unknown = sorted(set(fields) - set(SUBMIT_FIELDS))
        if unknown:
            raise TypeError(f"SubmitRunTrigger: unknown arguments {unknown}")
        super().__init__(
            run_id="",
            workspace=fields.get("workspace") or "",
            poll_interval=poll_interval,
            cancel_grace_period=cancel_grace_period,
            end_from_trigger=end_from_trigger,
        )
        self.submit_task_id = task_id
        self.timeout = timeout
        self.fields = fields
        for name, value in fields.items():  # under the operator's names, for the triggerer's rendering
            setattr(self, name, value)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                **{name: getattr(self, name) for name in self.fields},
                "task_id": self.submit_task_id,
                "timeout": self.timeout,
                "poll_interval": self.poll_interval,
                "cancel_grace_period": self.cancel_grace_period,
                "end_from_trigger": self.end_from_trigger,
            },
        )

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        from airflow_provider_mltrain.operators.submission import keep_placeholders, restore_placeholders

        arguments = getattr(self, "arguments", None)
        self.arguments, kept = keep_placeholders(arguments)
        super().render_template_fields(context, jinja_env)
        self.arguments = restore_placeholders(self.arguments, kept)

    def _submit(self) -> tuple[Run, float]:
        from airflow_provider_mltrain.operators.submission import TriggerSubmission

        ti = self.task_instance
        submission = TriggerSubmission(
            self.submit_task_id, self.log, {name: getattr(self, name) for name in self.fields}
        )
        run, attaching = submission._submit_run(ti, lambda line: self.log.info("%s", line))
        if attaching:
            self.log.info("Run %s of this task instance exists: following it.", run.id)
        else:
            self.log.info("Run %s submitted from the triggerer.", run.id)
        record = run.workspace.store.get_run(run.id)
        return run, record["created_at"] if record else time.time()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_mltrain.version_compat import AirflowException

        try:
            run, created_at = await asyncio.to_thread(self._submit)
        except (AirflowException, MLTrainError, ValueError, TypeError) as exc:
            self.log.error("%s", exc)
            if self.end_from_trigger:
                yield TaskFailedEvent()
            else:
                yield TriggerEvent({"run_id": None, "status": "not_submitted", "error": str(exc)})
            return
        self.run_id = run.id
        self.workspace = str(run.workspace.root)
        self.database_url = run.workspace.database_url
        if self.timeout:
            self.deadline = created_at + self.timeout
        async for event in super().run():
            yield event
