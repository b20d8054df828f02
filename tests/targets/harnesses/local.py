"""The local target: run folders under the workspace, processes on this machine."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from tests.targets.harnesses import Harness, register


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@register
class LocalHarness(Harness):
    name = "local"
    venv_environments = True

    def run_dir(self, run) -> Path:
        return run.workspace.root / "targets" / "local" / "runs" / run.id

    def read_working_file(self, run, rel):
        path = self.run_dir(run) / "snapshot" / rel
        try:
            return path.read_text() or None
        except FileNotFoundError:
            return None

    def write_working_file(self, run, rel, text):
        (self.run_dir(run) / "snapshot" / rel).write_text(text)

    def pids_alive(self, run, pids):
        return [pid_alive(p) for p in pids]

    def kill_runner(self, run, status: dict[str, Any]) -> None:
        os.kill(status["supervisor_pid"], signal.SIGKILL)

    def working_copy_removed(self, run):
        return not (self.run_dir(run) / "snapshot").exists()
