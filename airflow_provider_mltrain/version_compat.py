"""Airflow imports that moved between 3.1 and 3.3, in one place."""

from __future__ import annotations

from airflow.sdk import BaseOperator

try:
    from airflow.sdk.exceptions import AirflowException, AirflowTaskTimeout
except ImportError:  # pragma: no cover - Airflow 3.1 before the task SDK carried them
    from airflow.exceptions import AirflowException, AirflowTaskTimeout  # type: ignore[no-redef]

__all__ = ["AirflowException", "AirflowTaskTimeout", "BaseOperator"]
