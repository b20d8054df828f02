"""Compute targets named by Airflow connection ids."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig, UnknownComputeTarget
from airflow_provider_mltrain.get_provider_info import get_provider_info
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


def test_each_declared_type_has_one_hook_with_one_display_name():
    for entry in get_provider_info()["connection-types"]:
        module, _, name = entry["hook-class-name"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        assert cls.conn_type == entry["connection-type"], entry["connection-type"]
        assert cls.hook_name == entry["hook-name"], entry["connection-type"]
        assert compute.hook_class(entry["connection-type"]) is cls


# Runs Python with paramiko and the Docker SDK missing, as in a deployment without those extras.
WITHOUT_EXTRAS = """
import importlib.abc, sys

class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("paramiko", "docker"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, _Missing())
"""


def run_without_extras(code: str, tmp_path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    environ.update(AIRFLOW_HOME=str(tmp_path / "airflow"), MLTRAIN_WORKSPACE=str(tmp_path / "ws"), **env)
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS + textwrap.dedent(code)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_without_the_extras_airflow_still_lists_the_hooks(tmp_path):
    proc = run_without_extras(
        """
        sys.argv = ["airflow", "providers", "hooks", "-o", "json"]
        from airflow.__main__ import main
        main()
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    hooks = {h["connection_type"]: h for h in json.loads(proc.stdout[proc.stdout.index("[") :])}
    assert hooks["mltrain_ssh"]["class"] == "airflow_provider_mltrain.hooks.ssh.SSHComputeHook"
    assert hooks["mltrain_docker"]["class"] == "airflow_provider_mltrain.hooks.docker.DockerComputeHook"
    assert hooks["mltrain_spark"]["hook_name"] == "ML Training: Spark compute"


def test_without_the_extras_using_a_target_names_the_extra(tmp_path, make_tree):
    src = make_tree({"train.py": "print(1)"})
    proc = run_without_extras(
        f"""
        from pathlib import Path
        from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
        from airflow_provider_mltrain.core.errors import MissingDependency
        from airflow_provider_mltrain.hooks.docker import DockerComputeHook
        from airflow_provider_mltrain.hooks.ssh import SSHComputeHook
        from airflow_provider_mltrain.version_compat import AirflowOptionalProviderFeatureException

        try:
            SSHComputeHook("vm").get_target(Path("ws"))
        except AirflowOptionalProviderFeatureException as exc:
            print("HOOK", exc)
        print("TEST %s %s" % DockerComputeHook("box").test_connection())
        ws = Workspace()
        try:
            Experiment(ws, "x").submit(ScriptRunConfig({str(src)!r}, "train.py", compute_target="vm"))
        except MissingDependency as exc:
            print("CORE", exc.extra, exc.name, exc)
        print("RUNS", len(ws.store.list_runs()))
        """,
        tmp_path,
        AIRFLOW_CONN_VM=json.dumps({"conn_type": "ssh", "host": "gpu-box"}),
        AIRFLOW_CONN_BOX=json.dumps({"conn_type": "mltrain_docker"}),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "HOOK The SSH compute target needs paramiko" in out and "airflow-provider-mltrain[ssh]" in out
    assert "TEST False The Docker compute target needs docker" in out
    assert "airflow-provider-mltrain[docker]" in out
    assert "CORE ssh paramiko The SSH compute target needs paramiko" in out
    assert "RUNS 0" in out  # refused before anything was recorded
