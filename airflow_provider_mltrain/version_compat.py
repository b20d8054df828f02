"""Airflow imports that moved between 3.1 (the lowest version supported) and 3.3, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow import __version__ as _airflow_version
from airflow.sdk import BaseOperator

try:
    from airflow.sdk import conf
except ImportError:  # pragma: no cover - the task SDK of Airflow 3.1 has no conf
    from airflow.configuration import conf  # type: ignore[no-redef,assignment]

try:
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowOptionalProviderFeatureException,
        AirflowTaskTimeout,
    )
except ImportError:  # pragma: no cover - Airflow 3.1 before the task SDK carried them
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowOptionalProviderFeatureException,
        AirflowTaskTimeout,
    )

try:
    from airflow.sdk.log import mask_secret
except ImportError:  # pragma: no cover - Airflow 3.1 kept it with the execution-time masker
    from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]

# From 3.3 the triggerer renders a task's templates before a start_from_trigger task's trigger runs.
AIRFLOW_V_3_3_PLUS = tuple(int(p) for p in _airflow_version.split(".")[:2] if p.isdigit()) >= (3, 3)

if TYPE_CHECKING:
    from airflow.sdk import ResumableJobMixin

    HAS_TASK_STATE_STORE = True
else:
    try:
        from airflow.sdk import ResumableJobMixin

        HAS_TASK_STATE_STORE = True
    except ImportError:  # pragma: no cover - Airflow < 3.3: no task_state_store
        HAS_TASK_STATE_STORE = False

        class ResumableJobMixin:
            """Airflow < 3.3 stand-in: keeps ``durable``; the run store is what a retry resumes from."""

            external_id_key = "remote_job_id"

            def __init__(self, *, durable: bool = True, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self.durable = durable


__all__ = [
    "AIRFLOW_V_3_3_PLUS",
    "HAS_TASK_STATE_STORE",
    "AirflowException",
    "AirflowOptionalProviderFeatureException",
    "AirflowTaskTimeout",
    "BaseOperator",
    "ResumableJobMixin",
    "conf",
    "mask_secret",
]
