"""Errors a caller can catch, each saying what went wrong and what to do about it."""

from __future__ import annotations


class MLTrainError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidRunConfig(MLTrainError, ValueError):
    """A ScriptRunConfig (or an argument of it) cannot be submitted as given."""


class SnapshotError(MLTrainError):
    """The source directory cannot be snapshotted."""


class SnapshotTooLarge(SnapshotError):
    """The snapshot is over the size or file-count limit."""


class UnknownComputeTarget(MLTrainError, ValueError):
    """No compute target of that name is known."""


class MissingDependency(UnknownComputeTarget, ImportError):
    """A compute target's client library is not installed here; ``extra`` is the pip extra that brings it."""

    def __init__(self, message: str, *, extra: str, module: str | None = None):
        super().__init__(message)
        self.extra = extra
        self.name = module


class RunNotFound(MLTrainError, LookupError):
    """No run with that id is in the run store."""


class RunFailed(MLTrainError):
    """The run ended Failed or Canceled (raised by ``wait_for_completion(raise_on_error=True)``)."""

    def __init__(self, message: str, *, run_id: str, status: str, exit_code: int | None, log_tail: str):
        super().__init__(message)
        self.run_id = run_id
        self.status = status
        self.exit_code = exit_code
        self.log_tail = log_tail


class RunTimeout(MLTrainError, TimeoutError):
    """``wait_for_completion(timeout=...)`` ran out before the run ended."""


class TargetError(MLTrainError):
    """The compute target could not start, read or stop a run."""


class TargetUnreachable(TargetError):
    """The target's host cannot be reached, or refused the login; nothing was started there."""


class TargetAuthenticationFailed(TargetUnreachable):
    """The target's host refused the credentials (login, key or password)."""


class HostKeyRejected(TargetUnreachable):
    """The remote host's key is unknown or not the trusted one; the connection was closed unused."""


class RunOnOtherHost(TargetError):
    """A local-target run lives on another host (or another workspace folder): only a follower
    there can read its target; from here its status, log chunks and uploaded files are readable."""
