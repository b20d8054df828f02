from __future__ import annotations

import logging

from airflow_provider_mltrain import Environment, PythonSection
from airflow_provider_mltrain.hooks.environment import EnvironmentHook


def test_resolves_the_three_forms(tmp_path):
    hook = EnvironmentHook(workspace=str(tmp_path / "ws"))
    (tmp_path / "env.yaml").write_text("python:\n  requirements: [six==1.17.0]\n")
    from_yaml = hook.resolve("env.yaml", base_dir=str(tmp_path))
    assert from_yaml.requirement_lines() == ["six==1.17.0"]
    assert hook.resolve("mltrain-minimal").name == "mltrain-minimal"
    env = Environment(name="obj", python=PythonSection(requirements=["six==1.17.0"]))
    assert hook.resolve(env) is env
    assert hook.resolve(env).content_hash() == from_yaml.content_hash()


def test_build_logs_output_and_counts_once(tmp_path, caplog):
    hook = EnvironmentHook(workspace=str(tmp_path / "ws"))
    hook._log = logging.getLogger("test.environment_hook")  # Airflow's task log, as the test sees it
    env = Environment(name="six", python=PythonSection(requirements=["six==1.17.0"]))
    with caplog.at_level(logging.INFO):
        first = hook.build(env)
        second = hook.build(env)
    assert first.built and not second.built
    assert first.interpreter == second.interpreter
    assert "mltrain: building environment" in caplog.text
    assert "found in the cache" in caplog.text
    assert [b["status"] for b in hook.workspace.store.list_builds()] == ["built"]
