"""MLTrainRunLink: the "MLTrain run" button of a task, pointing at its run's page in the mltrain UI."""

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


def run_page_url(run_id: str) -> str:
    """``<[api] base_url>/mltrain/runs/<run_id>``; relative to the UI when base_url is unset."""
    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}{PAGE_PREFIX}/runs/{quote(run_id, safe='')}"


class MLTrainRunLink(BaseOperatorLink):
    """Links a task to the run it submitted or waited for; empty (no button) before it has one."""

    name = "MLTrain run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        run_id = XCom.get_value(ti_key=ti_key, key=XCOM_RUN_ID)
        return run_page_url(str(run_id)) if run_id else ""
