"""The plugin Airflow loads: found through its entry point, valid, with the views the UI shows."""

from __future__ import annotations

from importlib.metadata import entry_points

from fastapi.testclient import TestClient

from airflow_provider_mltrain.plugins.ui_plugin import LazyApp, MLTrainUIPlugin, ui_views


def test_airflow_finds_the_plugin_through_its_entry_point():
    from airflow._shared.plugins_manager import is_valid_plugin

    (entry,) = [e for e in entry_points(group="airflow.plugins") if e.name == "mltrain"]
    plugin = entry.load()
    assert plugin is MLTrainUIPlugin and is_valid_plugin(plugin)
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/mltrain"


def test_views_follow_the_base_url_path():
    nav, tab = ui_views("/airflow")
    assert (nav["name"], nav["destination"], nav["href"]) == ("Training", "nav", "/airflow/mltrain/")
    assert tab["name"] == "ML Training run"
    assert tab["destination"] == "task_instance"
    assert tab["href"] == "/airflow/mltrain/ti/{DAG_ID}/{RUN_ID}/{TASK_ID}?map_index={MAP_INDEX}"
    assert {v["url_route"] for v in ui_views("")} == {"mltrain", "mltrain_task_instance"}


def test_the_app_is_built_on_first_request_only():
    lazy = LazyApp()
    assert lazy._app is None
    response = TestClient(lazy).get("/static/icon.svg")
    assert response.status_code == 200 and response.text.startswith("<svg")
    assert lazy._app is not None
