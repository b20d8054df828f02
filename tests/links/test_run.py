from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_provider_mltrain.get_provider_info import get_provider_info
from airflow_provider_mltrain.links import run as links
from airflow_provider_mltrain.links.run import MLTrainRunLink, run_page_url
from airflow_provider_mltrain.operators.script_run import ScriptRunOperator
from airflow_provider_mltrain.sensors.run import RunSensor


def test_run_page_url_under_the_api_base_url(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/")
    assert (
        run_page_url("d.train.r1.0123abcd") == "https://airflow.example.com/mltrain/runs/d.train.r1.0123abcd"
    )
    assert run_page_url("a/b c") == "https://airflow.example.com/mltrain/runs/a%2Fb%20c"


def test_run_page_url_is_relative_to_the_ui_without_a_base_url(monkeypatch):
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    assert run_page_url("r1") == "/mltrain/runs/r1"


@pytest.mark.parametrize("pushed, expected", [("r1", "/mltrain/runs/r1"), (None, "")])
def test_get_link_reads_the_run_id_xcom_of_the_task_instance(monkeypatch, pushed, expected):
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    asked = {}

    def get_value(*, ti_key, key):
        asked.update(ti_key=ti_key, key=key)
        return pushed

    monkeypatch.setattr(links.XCom, "get_value", get_value)
    ti_key = SimpleNamespace(dag_id="d", task_id="train", run_id="r", map_index=-1, try_number=1)
    assert MLTrainRunLink().get_link(None, ti_key=ti_key) == expected  # type: ignore[arg-type]
    assert asked == {"ti_key": ti_key, "key": "run_id"}


def test_link_is_on_the_operator_and_the_sensor_and_declared_by_the_provider():
    for cls in (ScriptRunOperator, RunSensor):
        assert [type(link) for link in cls.operator_extra_links] == [MLTrainRunLink]
    assert "airflow_provider_mltrain.links.run.MLTrainRunLink" in get_provider_info()["extra-links"]


def test_a_task_without_a_run_gets_no_link_and_no_xcom_read(monkeypatch):
    """In the task process (ti_key is the live task instance) the link needs no XCom read: asking for
    a run id never pushed makes Airflow's supervisor log "XCom not found" at error level."""

    def get_value(**_):
        raise AssertionError("XCom read for a task that never had a run")

    monkeypatch.setattr(links.XCom, "get_value", get_value)
    live_ti = SimpleNamespace(task_id="train", xcom_push=lambda **_: None)
    operator = ScriptRunOperator(
        task_id="train", experiment_name="x", source_directory="/nowhere", script="train.py"
    )
    assert MLTrainRunLink().get_link(operator, ti_key=live_ti) == ""  # type: ignore[arg-type]
    links.remember_run_id(operator, "r1")
    assert MLTrainRunLink().get_link(operator, ti_key=live_ti) == run_page_url("r1")  # type: ignore[arg-type]
