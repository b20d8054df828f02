"""MLTrainRunLink: the "ML Training run" button of a task, pointing at its run's page in the UI plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

from airflow_provider_mltrain.version_compat import conf

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

# The operator and the sensor push the run id under this key; kept here so links/ imports nothing
# from operators/ (the operator imports this module).
XCOM_RUN_ID = "run_id"
# Where the mltrain plugin mounts its pages (airflow_provider_mltrain/plugins).
PAGE_PREFIX = "/mltrain"
# The run id, on the operator of the task process that submitted or followed it.
RUN_ID_ATTR = "_mltrain_run_id"


def remember_run_id(operator: BaseOperator, run_id: str) -> None:
    """Lets the link find the run without reading XCom (the operator and sensor call it).

    Airflow computes operator links in the task's own process as the task ends; asking XCom there
    for a run id that was never pushed (the task failed before submitting) makes the supervisor log
    "XCom not found" at error level under the task's real error.
    """
    setattr(operator, RUN_ID_ATTR, run_id)


def run_page_url(run_id: str) -> str:
    """``<[api] base_url>/mltrain/runs/<run_id>``; relative to the UI when base_url is unset."""
    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}{PAGE_PREFIX}/runs/{quote(run_id, safe='')}"


class MLTrainRunLink(BaseOperatorLink):
    """Links a task to the run it submitted or waited for; empty (no button) before it has one."""

    name = "ML Training run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        run_id = getattr(operator, RUN_ID_ATTR, None)
        if run_id is None:
            if hasattr(ti_key, "xcom_push"):
                # The live task instance of the task process: its operator never had a run.
                return ""
            run_id = XCom.get_value(ti_key=ti_key, key=XCOM_RUN_ID)
        return run_page_url(str(run_id)) if run_id else ""
