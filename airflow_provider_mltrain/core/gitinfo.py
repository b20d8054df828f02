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


def _in_work_tree(folder: Path) -> bool:
    """Whether git could find a repository for ``folder``: a ``.git`` (folder, file or link) in it or
    above it, as git's own discovery looks from the folder's real path, or ``GIT_DIR`` set. False
    means git would say "not a git repository": no git process needs to start to hear it."""
    if os.environ.get("GIT_DIR"):
        return True
    current = os.path.realpath(folder)
    while True:
        if os.path.lexists(os.path.join(current, ".git")):
            return True
        parent = os.path.dirname(current)
        if parent == current:
            return False
        current = parent


def git_properties(folder: str | os.PathLike[str]) -> dict[str, str]:
    """Repository URI, branch, commit and dirty flag; empty outside a repository or without git.

    This is on every submission's path: outside a repository no git process starts at all. In
    one, two run at once: ``git status --porcelain=v2 --branch`` says commit, branch and dirty
    state, ``git config`` the remote; a third only where those cannot say all (no remote: the
    work tree's top folder; a detached or unusual HEAD: its full name).
    """
    folder = Path(folder)
    if not _in_work_tree(folder) or shutil.which("git") is None:
        return {}
    # No ahead/behind count against an upstream: nothing here shows it, and it walks history.
    status = _start(
        folder, "-c", "status.aheadBehind=false", "status", "--porcelain=v2", "--branch", "--", "."
    )
    remote = _start(folder, "config", "--get", "remote.origin.url")
    status_out, remote_url = _finish(status), _finish(remote)
    if status_out is None:  # a git without porcelain v2 (before 2.11), or no repository after all
        return _properties_by_rev_parse(folder, remote_url)
    commit = head = None
    dirty = False
    for line in status_out.splitlines():
        if line.startswith("# branch.oid "):
            commit = line[len("# branch.oid ") :]
        elif line.startswith("# branch.head "):
            head = line[len("# branch.head ") :]
        elif line and not line.startswith("#"):
            dirty = True
    born = commit is not None and commit != "(initial)"  # "(initial)": no commit yet
    # git prints "(detached)", "(unknown)" or "(null)" for a HEAD that names no branch, and a
    # branch may itself be named "(detached)": only `git rev-parse` tells them apart.
    ask_ref = born and (head is None or head.startswith("("))
    asked = []
    if not remote_url:
        asked.append("--show-toplevel")
    if ask_ref:
        asked += ["--symbolic-full-name", "HEAD"]
    lines = (_finish(_start(folder, "rev-parse", *asked)) or "").splitlines() if asked else []
    if len(lines) != (not remote_url) + ask_ref:  # a line per question: top folder, HEAD's name
        return {}
    props: dict[str, str] = {}
    if born:
        ref = lines[-1] if ask_ref else f"refs/heads/{head}"
        if ref.startswith("refs/heads/"):
            props[PREFIX + "branch"] = ref[len("refs/heads/") :]
        props[PREFIX + "commit"] = str(commit)
    # Credentials in a remote URL (userinfo, token parameters) never reach the run store.
    props[PREFIX + "repository_uri"] = redact_url(remote_url, "") if remote_url else lines[0]
    props[PREFIX + "dirty"] = "true" if dirty else "false"
    return props


def _properties_by_rev_parse(folder: Path, remote_url: str | None) -> dict[str, str]:
    """:func:`git_properties` with ``git rev-parse`` and porcelain v1 status, which every git has."""
    head = _start(folder, "rev-parse", "--show-toplevel", "HEAD", "--symbolic-full-name", "HEAD")
    status = _start(folder, "status", "--porcelain", "--", ".")
    head_out, status_out = _finish(head), _finish(status)
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
    props[PREFIX + "repository_uri"] = redact_url(remote_url, "") if remote_url else lines[0]
    if status_out is not None:
        props[PREFIX + "dirty"] = "true" if status_out else "false"
    return props
