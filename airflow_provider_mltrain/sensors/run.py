"""RunSensor: waits for a run that was submitted earlier (the second half of submit -> wait)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from airflow_provider_mltrain.core.errors import MLTrainError
from airflow_provider_mltrain.core.run import Run
from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.core.workspace import Workspace
from airflow_provider_mltrain.links.run import XCOM_RUN_ID, MLTrainRunLink, remember_run_id
from airflow_provider_mltrain.operators.script_run import XCOM_RUN_DETAILS, failure_message
from airflow_provider_mltrain.triggers.run import RunTrigger, resume_not_before
from airflow_provider_mltrain.version_compat import AirflowException, conf

if TYPE_CHECKING:
    from airflow.sdk import Context

try:
    from airflow.sdk.exceptions import AirflowSensorTimeout
except ImportError:  # pragma: no cover
    from airflow.exceptions import AirflowSensorTimeout  # type: ignore[no-redef]


class RunSensor(BaseSensorOperator):
    """Succeeds when run ``run_id`` (templated, e.g. ``{{ ti.xcom_pull('train') }}``) completes.

    A Failed or Canceled run fails the sensor with its exit code and the tail of its log. Works in
    ``poke`` and ``reschedule`` modes and, with ``deferrable=True``, in the triggerer. The run's id
    and details go to the ``run_id`` and ``run_details`` XCom keys, as ``ScriptRunOperator`` pushes
    them; the "ML Training run" extra link opens the run's page.
    """

    template_fields: Sequence[str] = ("run_id",)
    ui_color = "#e8f1fb"
    operator_extra_links = (MLTrainRunLink(),)

    def __init__(
        self,
        *,
        run_id: str,
        workspace: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.run_id = run_id
        self.workspace = workspace
        self.deferrable = deferrable

    def _run(self) -> Run:
        ws = Workspace(self.workspace) if self.workspace else Workspace()
        try:
            return ws.get_run(str(self.run_id))
        except MLTrainError as exc:
            raise AirflowException(f"mltrain: {exc} Check the run_id the sensor was given.") from exc

    def poke(self, context: Context) -> bool:
        run = self._run()
        status = run.refresh()
        if not status.is_terminal:
            elsewhere = run.elsewhere()
            self.log.info("Run %s is %s%s.", run.id, status.value, f" ({elsewhere})" if elsewhere else "")
            return False
        return self._finish(run, context)

    def execute(self, context: Context) -> Any:
        remember_run_id(self, str(self.run_id))
        context["ti"].xcom_push(key=XCOM_RUN_ID, value=str(self.run_id))  # for MLTrainRunLink
        if not self.deferrable:
            return super().execute(context)
        run = self._run()
        if run.refresh().is_terminal:
            return self._finish(run, context)
        self.defer(
            trigger=RunTrigger(
                run_id=run.id,
                workspace=str(run.workspace.root),
                poll_interval=self.poke_interval,
                deadline=time.time() + self.timeout if self.timeout else None,
                cancel_on_kill=False,  # the run belongs to the task that submitted it
                not_before=resume_not_before(),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> bool:
        remember_run_id(self, str(self.run_id))
        if event.get("status") == "timeout":
            raise AirflowSensorTimeout(f"mltrain: run {event['run_id']} did not end within {self.timeout} s.")
        run = self._run()
        run.refresh()
        return self._finish(run, context)

    def _finish(self, run: Run, context: Context) -> bool:
        details = run.get_details()
        context["ti"].xcom_push(key=XCOM_RUN_DETAILS, value=details)
        if details["status"] != RunStatus.COMPLETED.value:
            raise AirflowException(failure_message(run, details))
        self.log.info("Run %s completed; outputs in %s", run.id, details["output_dir"])
        return True
