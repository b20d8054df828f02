"""The Airflow plugin that mounts the run history UI; registered through the ``airflow.plugins`` entry point.

Airflow 3 loads ``airflow.plugins`` entry points in every process, while a provider's own
``plugins`` key is only read when ``[core] lazy_discover_providers`` is off, so the entry point is
what makes the UI appear by default. Because every process (scheduler, task runners) imports this
module, it stays light: the FastAPI app and its templates load on the api-server's first request.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/mltrain"
NAV_LABEL = "Training"


class LazyApp:
    """An ASGI app that builds :func:`airflow_provider_mltrain.plugins.app.create_app` when first called."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from airflow_provider_mltrain.plugins.app import create_app

                    self._app = create_app()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.get()(scope, receive, send)


def base_path() -> str:
    """The path Airflow is served under (``[api] base_url``), which the UI's links must start with."""
    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def ui_views(base: str) -> list[dict[str, Any]]:
    root = f"{base}{URL_PREFIX}"
    return [
        {
            # The navigation bar shows about nine characters of a label: "ML Training" would be
            # cut to "ML Traini…", so the entry says "Training" beside its chart icon.
            "name": NAV_LABEL,
            "href": f"{root}/",
            "icon": f"{root}/static/icon.svg",
            "destination": "nav",
            "url_route": "mltrain",
            "nav_top_level": True,
        },
        {
            # The UI fills in the placeholders; {MAP_INDEX} stays literal for a task that is not mapped.
            "name": "ML Training run",
            "href": f"{root}/ti/{{DAG_ID}}/{{RUN_ID}}/{{TASK_ID}}?map_index={{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": "mltrain_task_instance",
        },
    ]


class MLTrainUIPlugin(AirflowPlugin):
    # The feature's one name, as in the navigation bar, the page titles and the docs.
    name = "ML Training"
    fastapi_apps = [{"name": "ML Training", "app": LazyApp(), "url_prefix": URL_PREFIX}]
    external_views = ui_views(base_path())
