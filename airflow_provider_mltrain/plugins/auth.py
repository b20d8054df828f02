"""Who may see run history: Airflow's own auth manager decides, through Airflow's own dependencies.

The user comes from ``airflow.api_fastapi.core_api.security.get_user`` (a JWT in the
``Authorization`` header or the ``_token`` cookie the Airflow UI sets at login), exactly as for
Airflow's REST API. Reading run history needs the permission to read DAGs; a run submitted from
a DAG (``airflow.dag_id`` property) is shown only to users who may read that DAG.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import Depends, HTTPException, status

log = logging.getLogger(__name__)

DAG_PROPERTY = "airflow.dag_id"


class Access:
    """The current user's read access, asked of the auth manager once per DAG id per request."""

    def __init__(self, can_read_dag: Callable[[str | None], bool], user_name: str = ""):
        self._can_read_dag = can_read_dag
        self._cache: dict[str | None, bool] = {}
        self.user_name = user_name

    def can_read_dag(self, dag_id: str | None) -> bool:
        if dag_id not in self._cache:
            self._cache[dag_id] = bool(self._can_read_dag(dag_id))
        return self._cache[dag_id]

    def can_read_run(self, record: dict[str, Any]) -> bool:
        dag_id = (record.get("properties") or {}).get(DAG_PROPERTY)
        return self.can_read_dag(dag_id or None)

    def check_run(self, record: dict[str, Any]) -> None:
        if not self.can_read_run(record):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden: you may not read this run's DAG")


def _auth_manager_can_read(user: Any) -> Callable[[str | None], bool]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    manager = get_auth_manager()

    def can_read(dag_id: str | None) -> bool:
        team_name = None
        if dag_id:
            try:
                from airflow.models.dag import DagModel

                team_name = DagModel.get_team_name(dag_id)
            except Exception:  # a DAG the metadata DB does not know: no team to check
                log.debug("No team for DAG %s", dag_id, exc_info=True)
        return manager.is_authorized_dag(
            method="GET", details=DagDetails(id=dag_id, team_name=team_name), user=user
        )

    return can_read


def require_reader(user: GetUserDep) -> Access:
    """FastAPI dependency: a logged-in user allowed to read DAGs (401 without login, 403 without right)."""
    access = Access(_auth_manager_can_read(user), user_name=str(user.get_name()))
    if not access.can_read_dag(None):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden: reading run history needs DAG read access")
    return access


ReaderDep = Annotated[Access, Depends(require_reader)]
