"""Run states: the names, their order, and which ones are final."""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    QUEUED = "Queued"
    PREPARING = "Preparing"
    STARTING = "Starting"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def rank(self) -> int:
        """Position in the lifecycle; terminal states share the last rank."""
        return min(ORDER.index(self), ORDER.index(RunStatus.COMPLETED))


ORDER = list(RunStatus)
TERMINAL_STATES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED})
