"""One harness per compute target: how the shared target suite reaches that target's service.

A target joins the suite by adding ``tests/targets/harnesses/<kind>.py`` with a ``Harness``
subclass decorated by ``@register``; the suite is parametrized over every registered harness.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_mltrain import Run, Workspace

HARNESSES: dict[str, type[Harness]] = {}


def register(cls: type[Harness]) -> type[Harness]:
    HARNESSES[cls.name] = cls
    return cls


def service_missing(message: str) -> None:
    """A service the tests need is not there: fail in CI (it must start there), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (in CI every service must start: see tests/services/)")
    pytest.skip(message)


class Harness:
    """What the suite needs from a target beyond the public API. Subclasses override what differs."""

    name = ""  # the compute_target name the suite submits to (a connection id for remote targets)
    venv_environments = False  # builds managed environments as venvs (tests/targets/test_environments.py)
    # The script's environment is this process's minus Airflow's secrets (local); a remote host's
    # script starts from that host's own environment instead, and nothing of ours travels.
    inherits_controller_environment = True
    # The run lives on a host of its own (a container, a VM): a controller on another host, with
    # the same workspace (run store and object store) and none of the local files, can follow it.
    # False where the run lives on the submitting host (the local target, a Spark driver here).
    followed_from_any_host = False

    def setup(self, monkeypatch: pytest.MonkeyPatch, workspace: Workspace) -> None:
        """Check the service, create the connection (e.g. with monkeypatch.setenv AIRFLOW_CONN_...)."""

    def teardown(self) -> None:
        """Undo what setup did that outlives the test (containers, remote folders, ...)."""

    def read_working_file(self, run: Run, rel: str) -> str | None:
        """A file the running script wrote in its working folder (``outputs/pid``), or None yet."""
        raise NotImplementedError

    def write_working_file(self, run: Run, rel: str, text: str) -> None:
        """Write a file into the running script's working folder: a signal the script waits for
        (so a test decides when it ends, instead of a sleep guessed long enough for a busy machine)."""
        raise NotImplementedError

    def pids_alive(self, run: Run, pids: list[int]) -> list[bool]:
        """Whether each of the script's processes (pids as the script saw them) still exists."""
        raise NotImplementedError

    def kill_runner(self, run: Run, status: dict[str, Any]) -> None:
        """Kill the run's supervisor from outside (SIGKILL); skip when the target cannot."""
        pytest.skip(f"killing the runner from outside is not supported by the {self.name} harness")

    def working_copy_removed(self, run: Run) -> bool:
        """Whether the target removed the run's working copy of the snapshot after collecting."""
        return True


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
