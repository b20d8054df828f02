"""Git state of a source folder, recorded on each run as ``mltrain.git.*`` properties."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "mltrain.git."
_CREDENTIALS = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@]+@", re.IGNORECASE)


def _git(folder: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_properties(folder: str | os.PathLike[str]) -> dict[str, str]:
    """Repository URI, branch, commit and dirty flag; empty outside a repository or without git."""
    if shutil.which("git") is None:
        return {}
    folder = Path(folder)
    top = _git(folder, "rev-parse", "--show-toplevel")
    if not top:
        return {}
    props: dict[str, str] = {}
    commit = _git(folder, "rev-parse", "--verify", "-q", "HEAD")
    if commit:
        props[PREFIX + "commit"] = commit
    branch = _git(folder, "symbolic-ref", "-q", "--short", "HEAD")
    if branch:
        props[PREFIX + "branch"] = branch
    remote = _git(folder, "config", "--get", "remote.origin.url")
    # Credentials in a remote URL never reach the run store.
    props[PREFIX + "repository_uri"] = _CREDENTIALS.sub(r"\g<scheme>", remote) if remote else top
    status = _git(folder, "status", "--porcelain", "--", ".")
    if status is not None:
        props[PREFIX + "dirty"] = "true" if status else "false"
    return props
