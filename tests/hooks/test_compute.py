"""Compute targets named by Airflow connection ids."""

from __future__ import annotations

import json

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig, UnknownComputeTarget
from airflow_provider_mltrain.hooks import compute


def test_an_unknown_name_says_how_to_create_the_connection(workspace, make_tree):
    src = make_tree({"train.py": "print(1)"})
    with pytest.raises(UnknownComputeTarget) as err:
        Experiment(workspace, "x").submit(ScriptRunConfig(src, "train.py", compute_target="gpu_box"))
    assert "AIRFLOW_CONN_GPU_BOX" in str(err.value) and "no Airflow connection" in str(err.value)
    assert workspace.store.list_runs() == []


def test_a_connection_of_another_type_is_refused_by_type(workspace, make_tree, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "postgres", "host": "db"}))
    src = make_tree({"train.py": "print(1)"})
    with pytest.raises(UnknownComputeTarget) as err:
        Experiment(workspace, "x").submit(ScriptRunConfig(src, "train.py", compute_target="warehouse"))
    assert "'warehouse' has type 'postgres'" in str(err.value) and "mltrain_docker" in str(err.value)
    assert workspace.store.list_runs() == []


def test_a_missing_client_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(compute.COMPUTE_HOOKS, "fake", ("no_such_module_xyz:Hook", "fake"))
    with pytest.raises(UnknownComputeTarget) as err:
        compute.hook_class("fake")
    assert "pip install 'airflow-provider-mltrain[fake]'" in str(err.value)
