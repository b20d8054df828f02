"""Managed environments built for real (uv, packages from the index) on every target."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from airflow_provider_mltrain import Environment, Experiment, PythonSection, ScriptRunConfig, Workspace
from airflow_provider_mltrain.core.environment import EnvironmentBuildFailed, find_uv
from airflow_provider_mltrain.runner import envbuild
from tests.targets.harnesses import HARNESSES
from tests.targets.suite import wait_until

SIX = "six==1.17.0"
SCRIPT = "import os, six\nprint('six', six.__version__)\nprint('FOO', os.environ.get('FOO'))\n"


# Targets that build managed environments as virtualenvs in their root (Docker builds images:
# tests/targets/test_docker.py).
VENV_TARGETS = [name for name, cls in HARNESSES.items() if cls.venv_environments]


@pytest.fixture(params=VENV_TARGETS)
def target(request, monkeypatch, workspace):
    harness = HARNESSES[request.param]()
    harness.setup(monkeypatch, workspace)
    yield request.param
    harness.teardown()


def envs_root(workspace: Workspace, target: str) -> Path:
    return workspace.root / "targets" / target / "envs"


def submit(workspace, target, src, environment, **kwargs):
    config = ScriptRunConfig(src, "train.py", compute_target=target, environment=environment)
    return Experiment(workspace, "envs").submit(config, **kwargs)


def test_yaml_environment_builds_once_then_is_reused(workspace, target, make_tree):
    src = make_tree(
        {
            "train.py": SCRIPT,
            "env.yaml": f"python:\n  requirements: [{SIX}]\nenvironment_variables:\n  FOO: from-yaml\n",
        }
    )
    lines: list[str] = []
    first = submit(workspace, target, src, "env.yaml", log=lines.append)
    first.wait_for_completion()
    assert "six 1.17.0" in first.get_log_tail() and "FOO from-yaml" in first.get_log_tail()
    assert first.get_details()["environment"]["environment_variables"] == {"FOO": "from-yaml"}
    assert any("Installed 1 package" in line or "six" in line for line in lines)  # the build's own output
    details = first.get_details()["environment"]
    assert details["packages"] == [SIX] and details["cache_hit"] is False
    assert len(details["hash"]) == 64
    second = submit(workspace, target, src, "env.yaml")
    second.wait_for_completion()
    assert second.get_details()["environment"]["cache_hit"] is True
    assert [b["status"] for b in workspace.store.list_builds(details["hash"])] == ["built"]
    lock = (envs_root(workspace, target) / details["hash"] / "mltrain-lock.txt").read_text()
    assert lock == f"{SIX}\n"


def test_the_lock_file_is_in_an_object_store_workspace(workspace, target, make_tree, s3_store):
    """Another host (an api-server, a laptop) reads the versions a build resolved from the store."""
    ws = Workspace(workspace.root, database_url=workspace.database_url, artifact_store=s3_store)
    environment = Environment(name="six", python=PythonSection(requirements=[SIX]))
    runs = [submit(ws, target, make_tree({"train.py": SCRIPT}), environment) for _ in range(2)]
    for run in runs:
        assert run.wait_for_completion()["status"] == "Completed"
    env_hash = runs[0].get_details()["environment"]["hash"]
    locks = s3_store.list(f"environments/{env_hash}")
    [name] = locks  # the same versions resolved twice: one object, named by its content
    assert {r.get_details()["environment"]["lock"] for r in runs} == {name}
    assert s3_store.get_bytes(name) == f"{SIX}\n".encode()


def test_rebuild_builds_again(workspace, target, make_tree):
    src = make_tree({"train.py": SCRIPT})
    environment = Environment(name="six", python=PythonSection(requirements=[SIX]))
    submit(workspace, target, src, environment).wait_for_completion()
    submit(workspace, target, src, environment, rebuild_environment=True).wait_for_completion()
    assert [b["status"] for b in workspace.store.list_builds(environment.content_hash())] == [
        "built",
        "built",
    ]


def test_unpinned_requirements_are_warned_about(workspace, target, make_tree):
    src = make_tree({"train.py": SCRIPT})
    lines: list[str] = []
    environment = Environment(python=PythonSection(requirements=["six>=1.16"]))
    submit(workspace, target, src, environment, log=lines.append).wait_for_completion()
    assert any("six is not pinned" in line and "frozen" in line for line in lines)


def test_two_concurrent_submissions_build_once(workspace, target, make_tree):
    src = make_tree(
        {"train.py": SCRIPT, "env.yaml": f"python:\n  requirements: [{SIX}, 'packaging==24.2']\n"}
    )
    code = textwrap.dedent(f"""
        from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
        ws = Workspace({str(workspace.root)!r})
        cfg = ScriptRunConfig({str(src)!r}, "train.py", compute_target={target!r}, environment="env.yaml")
        Experiment(ws, "envs").submit(cfg).wait_for_completion()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    runs = Experiment(workspace, "envs").list_runs()
    assert len(runs) == 2 and {r.get_status() for r in runs} == {"Completed"}
    env_hash = runs[0].get_details()["environment"]["hash"]
    assert [b["status"] for b in workspace.store.list_builds(env_hash)] == ["built"]
    assert sorted(r.get_details()["environment"]["cache_hit"] for r in runs) == [False, True]


def test_unresolvable_requirement_fails_in_preparing_and_caches_nothing(workspace, target, make_tree):
    src = make_tree({"train.py": SCRIPT})
    environment = Environment(python=PythonSection(requirements=["mltrain-no-such-package-xyz==1.0"]))
    lines: list[str] = []
    with pytest.raises(EnvironmentBuildFailed, match="mltrain-no-such-package-xyz") as err:
        submit(workspace, target, src, environment, log=lines.append)
    assert "installing the requirements failed" in str(err.value)
    assert any("mltrain-no-such-package-xyz" in line for line in lines)  # uv's own message reached the log
    run = Experiment(workspace, "envs").list_runs()[0]
    details = run.get_details()
    assert details["status"] == "Failed"
    assert set(details["state_times"]) == {"Queued", "Preparing", "Failed"}
    root = envs_root(workspace, target)
    assert not (root / environment.content_hash()).exists()
    assert not list(root.glob(".tmp-*"))
    assert [b["status"] for b in workspace.store.list_builds(environment.content_hash())] == ["failed"]


def test_killed_build_leaves_nothing_usable(workspace, target, make_tree, tmp_path):
    if target != "local":
        pytest.skip("kills the builder process on this machine")
    environment = Environment(python=PythonSection(requirements=[SIX]))
    root = envs_root(workspace, target)
    slow_uv = tmp_path / "slow-uv"
    slow_uv.write_text(
        f'#!/bin/sh\nif [ "$1" = pip ] && [ "$2" = install ]; then sleep 600; fi\nexec {find_uv()} "$@"\n'
    )
    slow_uv.chmod(0o755)
    spec = {
        "hash": environment.content_hash(),
        "root": str(root),
        "requirements": [SIX],
        "uv": str(slow_uv),
        "base_python": sys.executable,
    }
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    builder = subprocess.Popen(
        [sys.executable, envbuild.__file__, str(spec_file)], stdout=subprocess.DEVNULL, start_new_session=True
    )
    wait_until(lambda: list(root.glob(".tmp-*/bin/python")), timeout=60)
    os.killpg(builder.pid, signal.SIGKILL)
    builder.wait()
    assert not (root / environment.content_hash()).exists()
    src = make_tree({"train.py": SCRIPT})
    run = submit(workspace, target, src, environment)
    run.wait_for_completion()
    assert "six 1.17.0" in run.get_log_tail()
    assert not list(root.glob(".tmp-*"))


def test_curated_minimal_environment_runs_stdlib_scripts(workspace, target, make_tree):
    src = make_tree(
        {
            "train.py": "import sys\nprint('prefix', sys.prefix)\ntry:\n    import sklearn\n"
            "except ImportError:\n    print('isolated')\n"
        }
    )
    run = submit(workspace, target, src, "mltrain-minimal")
    run.wait_for_completion()
    assert "isolated" in run.get_log_tail()
    assert str(envs_root(workspace, target)) in run.get_log_tail()


def test_unavailable_python_version_is_a_clear_build_error(workspace, target, make_tree):
    src = make_tree({"train.py": SCRIPT})
    environment = Environment(python=PythonSection(python_version="3.19", requirements=[SIX]))
    started = time.monotonic()
    with pytest.raises(EnvironmentBuildFailed, match=r"3\.19"):
        submit(workspace, target, src, environment)
    assert time.monotonic() - started < 60  # no download attempted


def slow_uv(tmp_path: Path, seconds: int) -> Path:
    """A uv that sleeps before installing, so a test can act while a build is under way."""
    wrapper = tmp_path / f"slow-uv-{seconds}"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = pip ] && [ "$2" = install ]; then sleep {seconds}; fi\n'
        f'exec {find_uv()} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def test_cancel_while_preparing_never_starts_the_script(workspace, target, make_tree, tmp_path, monkeypatch):
    import threading

    from airflow_provider_mltrain.targets import local

    monkeypatch.setattr(local, "find_uv", lambda: str(slow_uv(tmp_path, 2)))
    marker = tmp_path / "script-ran"
    src = make_tree({"train.py": f"open({str(marker)!r}, 'w').close()\n"})
    environment = Environment(python=PythonSection(requirements=[SIX]))
    submitted = []
    thread = threading.Thread(target=lambda: submitted.append(submit(workspace, target, src, environment)))
    thread.start()
    run_id = wait_until(lambda: [r.id for r in Experiment(workspace, "envs").list_runs()])[0]
    run = workspace.get_run(run_id)
    wait_until(lambda: run.get_status() == "Preparing")
    assert run.cancel(grace_period=1) == "Canceled"
    thread.join(60)
    assert submitted and submitted[0].id == run_id
    assert run.get_status() == "Canceled"
    assert not marker.exists()
    assert not (workspace.root / "targets" / target / "runs" / run_id).exists()


def test_submitter_killed_while_preparing_fails_the_run(workspace, target, make_tree, tmp_path):
    if target != "local":
        pytest.skip("kills a process on this machine")
    src = make_tree({"train.py": SCRIPT})
    code = textwrap.dedent(f"""
        from airflow_provider_mltrain import Environment, Experiment, PythonSection, ScriptRunConfig
        from airflow_provider_mltrain import Workspace
        from airflow_provider_mltrain.targets import local
        local.find_uv = lambda: {str(slow_uv(tmp_path, 600))!r}
        env = Environment(python=PythonSection(requirements=[{SIX!r}]))
        cfg = ScriptRunConfig({str(src)!r}, "train.py", environment=env)
        Experiment(Workspace({str(workspace.root)!r}), "envs").submit(cfg)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    run_id = wait_until(lambda: [r.id for r in Experiment(workspace, "envs").list_runs()], timeout=60)[0]
    run = workspace.get_run(run_id)
    wait_until(lambda: run.get_status() == "Preparing")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert run.get_status() == "Failed"
    assert "submitting process" in run.get_details()["error"]


def test_warm_cache_builds_without_the_package_index(workspace, target, make_tree, monkeypatch):
    src = make_tree({"train.py": SCRIPT})
    submit(
        workspace, target, src, Environment(python=PythonSection(requirements=[SIX]))
    ).wait_for_completion()
    # A different spec (so a new build) whose packages are all in uv's cache, with no index reachable.
    # No way out: every request would go through a proxy on a closed loopback port.
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    environment = Environment(python=PythonSection(requirements=[SIX]), name="offline")
    environment.docker.base_image = "changes-the-hash-only"
    run = submit(workspace, target, src, environment)
    run.wait_for_completion()
    assert run.get_details()["environment"]["cache_hit"] is False
    assert "six 1.17.0" in run.get_log_tail()
