"""Git state of a source folder, recorded on each run as ``mltrain.git.*`` properties."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from airflow_provider_mltrain.core.redact import redact_url

log = logging.getLogger(__name__)

PREFIX = "mltrain.git."
_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}


def _start(folder: Path, *args: str) -> subprocess.Popen[str] | None:
    try:
        return subprocess.Popen(
            ["git", "-C", str(folder), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **_ENV},
        )
    except OSError:
        return None


def _finish(proc: subprocess.Popen[str] | None) -> str | None:
    if proc is None:
        return None
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    return out.strip() if proc.returncode == 0 else None


def git_properties(folder: str | os.PathLike[str]) -> dict[str, str]:
    """Repository URI, branch, commit and dirty flag; empty outside a repository or without git.

    The three git commands run at once: this is on every submission's path.
    """
    if shutil.which("git") is None:
        return {}
    folder = Path(folder)
    head = _start(folder, "rev-parse", "--show-toplevel", "HEAD", "--symbolic-full-name", "HEAD")
    remote = _start(folder, "config", "--get", "remote.origin.url")
    status = _start(folder, "status", "--porcelain", "--", ".")
    head_out, remote_url, status_out = _finish(head), _finish(remote), _finish(status)
    if head_out is None:
        if status_out is None:
            return {}  # not a repository (git status works in one without commits)
        top = _finish(_start(folder, "rev-parse", "--show-toplevel"))  # a repository without commits?
        if not top:
            return {}
        lines = [top]
    else:
        lines = head_out.splitlines()
    props: dict[str, str] = {}
    if len(lines) == 3:
        commit, ref = lines[1], lines[2]
        if ref.startswith("refs/heads/"):
            props[PREFIX + "branch"] = ref[len("refs/heads/") :]
        props[PREFIX + "commit"] = commit
    # Credentials in a remote URL (userinfo, token parameters) never reach the run store.
    props[PREFIX + "repository_uri"] = redact_url(remote_url, "") if remote_url else lines[0]
    if status_out is not None:
        props[PREFIX + "dirty"] = "true" if status_out else "false"
    return props
