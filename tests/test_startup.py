"""Start-up: the package, ``mltrain --help``/``--version`` and Airflow's provider discovery import
none of the heavy libraries (SQLAlchemy, Docker, Paramiko, fsspec, PySpark, YAML, ...) until a
command or name that needs them is used; and every public name still imports.

Each case runs a fresh interpreter with ``-X importtime``, which names every module the process
imported: what a user's ``mltrain --help`` loads, not what this test process has already loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_provider_mltrain

# The installed command, as a user runs it.
MLTRAIN = str(Path(sys.executable).with_name("mltrain"))
# Libraries a command pays for only when it uses them.
HEAVY = ("sqlalchemy", "docker", "paramiko", "fsspec", "s3fs", "pyspark", "yaml", "pathspec", "airflow")


def imported_modules(
    *argv: str, env: dict[str, str] | None = None
) -> tuple[set[str], subprocess.CompletedProcess]:
    """The top-level packages a fresh process ``ARGV`` imported (``PYTHONPROFILEIMPORTTIME`` is
    ``-X importtime``), and its result."""
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=300,
        env={**(env or os.environ), "PYTHONPROFILEIMPORTTIME": "1"},
    )
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            module = line.rsplit("|", 1)[1].strip()
            names.add(module.split(".")[0])
    assert names, f"no -X importtime output: {proc.stderr[-2000:]}"
    return names, proc


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MLTRAIN_WORKSPACE": str(tmp_path / "ws"), "AIRFLOW_HOME": str(tmp_path / "af")}


@pytest.mark.parametrize(
    "code",
    [
        "import airflow_provider_mltrain",
        "from airflow_provider_mltrain.get_provider_info import get_provider_info; get_provider_info()",
        "import airflow_provider_mltrain.cli",
    ],
)
def test_importing_the_package_loads_no_heavy_library(code: str) -> None:
    names, proc = imported_modules(sys.executable, "-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not names & set(HEAVY), f"{code!r} imported {sorted(names & set(HEAVY))}"


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["runs", "--help"], ["submit", "--help"], ["pythonpath"]]
)
def test_cli_help_and_version_load_no_heavy_library(argv: list[str], cli_env: dict[str, str]) -> None:
    names, proc = imported_modules(MLTRAIN, *argv, env=cli_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mltrain" in proc.stdout
    assert not names & set(HEAVY), f"mltrain {' '.join(argv)} imported {sorted(names & set(HEAVY))}"


def test_runs_list_loads_the_run_store_only(cli_env: dict[str, str]) -> None:
    """Listing runs needs SQLAlchemy (the run store) and nothing for snapshots, targets or environments."""
    names, proc = imported_modules(MLTRAIN, "runs", "list", "--json", env=cli_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == []
    assert "sqlalchemy" in names
    assert not names & (set(HEAVY) - {"sqlalchemy"}), sorted(names & set(HEAVY))


def test_the_python_api_loads_only_what_a_submission_uses() -> None:
    """A script that submits and waits pays for the run store (SQLAlchemy) and snapshots
    (pathspec), not for YAML, packaging, the remote targets' clients or Airflow."""
    code = "from airflow_provider_mltrain import Experiment, Run, ScriptRunConfig, Workspace"
    names, proc = imported_modules(sys.executable, "-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    unused = (set(HEAVY) | {"packaging"}) - {"sqlalchemy", "pathspec"}
    assert not names & unused, sorted(names & unused)


def test_hooks_do_not_load_their_client_libraries_until_used() -> None:
    """Airflow imports the hooks to list connection types: the Docker, SSH and Spark clients wait
    until a target is built."""
    code = (
        "import airflow_provider_mltrain.hooks.docker, airflow_provider_mltrain.hooks.ssh, "
        "airflow_provider_mltrain.hooks.spark"
    )
    names, proc = imported_modules(sys.executable, "-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not names & {"docker", "paramiko", "pyspark"}, sorted(names & {"docker", "paramiko", "pyspark"})


def test_every_public_name_imports_and_is_the_defining_modules_object() -> None:
    code = """
import importlib, json, sys
import airflow_provider_mltrain as pkg
from airflow_provider_mltrain import *  # noqa: F403
missing = [n for n in pkg.__all__ if n not in globals()]
wrong = []
for name in pkg.__all__:
    value = getattr(pkg, name)
    module = getattr(value, "__module__", None)
    if name != "__version__" and getattr(importlib.import_module(module), name) is not value:
        wrong.append(name)
print(json.dumps({"missing": missing, "wrong": wrong, "dir": sorted(set(pkg.__all__) - set(dir(pkg)))}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == {"missing": [], "wrong": [], "dir": []}
    for name in airflow_provider_mltrain.__all__:
        assert getattr(airflow_provider_mltrain, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        airflow_provider_mltrain.NoSuchName


def test_local_target_resolves_in_a_fresh_process_without_importing_targets(tmp_path: Path) -> None:
    """The built-in targets are registered by importing the package, with nothing imported yet."""
    code = (
        "import sys; from pathlib import Path\n"
        "from airflow_provider_mltrain.core.compute import get_target\n"
        "from airflow_provider_mltrain.targets import LocalTarget\n"
        f"t = get_target('local', Path({str(tmp_path)!r}))\n"
        "assert isinstance(t, LocalTarget), t\n"
        "print(type(t).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "LocalTarget"
