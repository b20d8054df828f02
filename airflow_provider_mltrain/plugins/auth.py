"""Who may see run history: Airflow's own auth manager decides, through Airflow's own dependencies.

The user comes from ``airflow.api_fastapi.core_api.security.get_user`` (a JWT in the
``Authorization`` header or the ``_token`` cookie the Airflow UI sets at login), exactly as for
Airflow's REST API. Reading run history needs the permission to read DAGs; a run submitted from
a DAG (``airflow.dag_id`` property) is shown only to users who may read that DAG.

Cancelling a run changes it, so it asks for more: the permission to edit the run's DAG, or, for a
run no DAG submitted, an administrator's rights. Airflow's auth manager interface has no "is an
admin" question, so an administrator here is a user who may edit every DAG and delete connections
(the ``Op`` and ``Admin`` roles of the simple and FAB auth managers).
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
    """The current user's access, asked of the auth manager once per DAG id per request.

    ``can_edit_dag(None)`` means "may edit every DAG and administer Airflow"; without a
    ``can_edit_dag`` the user may cancel nothing.
    """

    def __init__(
        self,
        can_read_dag: Callable[[str | None], bool],
        user_name: str = "",
        can_edit_dag: Callable[[str | None], bool] | None = None,
    ):
        self._can_read_dag = can_read_dag
        self._can_edit_dag = can_edit_dag or (lambda dag_id: False)
        self._cache: dict[str | None, bool] = {}
        self._edit_cache: dict[str | None, bool] = {}
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

    def can_cancel_run(self, record: dict[str, Any]) -> bool:
        """Who may edit the run's DAG; for a run no DAG submitted, administrators only."""
        dag_id = (record.get("properties") or {}).get(DAG_PROPERTY) or None
        if dag_id not in self._edit_cache:
            self._edit_cache[dag_id] = bool(self._can_edit_dag(dag_id))
        return self._edit_cache[dag_id]

    def check_cancel(self, record: dict[str, Any]) -> None:
        if not self.can_cancel_run(record):
            dag_id = (record.get("properties") or {}).get(DAG_PROPERTY)
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"Forbidden: cancelling this run needs the permission to edit DAG {dag_id!r}"
                if dag_id
                else "Forbidden: only administrators may cancel a run that no DAG submitted",
            )


def _team_of(dag_id: str | None) -> str | None:
    if not dag_id:
        return None
    try:
        from airflow.models.dag import DagModel

        return DagModel.get_team_name(dag_id)
    except Exception:  # a DAG the metadata DB does not know: no team to check
        log.debug("No team for DAG %s", dag_id, exc_info=True)
        return None


def _auth_manager_can_read(user: Any) -> Callable[[str | None], bool]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    manager = get_auth_manager()

    def can_read(dag_id: str | None) -> bool:
        details = DagDetails(id=dag_id, team_name=_team_of(dag_id))
        return manager.is_authorized_dag(method="GET", details=details, user=user)

    return can_read


def _auth_manager_can_edit(user: Any) -> Callable[[str | None], bool]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    manager = get_auth_manager()

    def can_edit(dag_id: str | None) -> bool:
        if dag_id:
            details = DagDetails(id=dag_id, team_name=_team_of(dag_id))
            return manager.is_authorized_dag(method="PUT", details=details, user=user)
        return manager.is_authorized_dag(method="PUT", user=user) and manager.is_authorized_connection(
            method="DELETE", user=user
        )

    return can_edit


def require_reader(user: GetUserDep) -> Access:
    """FastAPI dependency: a logged-in user allowed to read DAGs (401 without login, 403 without right)."""
    access = Access(
        _auth_manager_can_read(user),
        user_name=str(user.get_name()),
        can_edit_dag=_auth_manager_can_edit(user),
    )
    if not access.can_read_dag(None):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden: reading run history needs DAG read access")
    return access


ReaderDep = Annotated[Access, Depends(require_reader)]
