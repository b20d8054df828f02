"""Helpers of the shared target suite (its fixtures are in ``conftest.py``).

Every ``tests/targets/test_*.py`` that asks for the ``harness`` or ``target`` fixture runs once per
registered compute target: the shared suite, the hostile-script suite and any other.
"""

from __future__ import annotations

import time
from pathlib import Path

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace


def submit(workspace: Workspace, target: str, src: Path, script: str = "train.py", **kwargs):
    config = ScriptRunConfig(src, script, compute_target=target, **kwargs)
    return Experiment(workspace, "suite").submit(config)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):
    """Poll until predicate() is truthy; deadlines are generous because the machine may be busy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
