"""Owner-only files and folders: the workspace holds snapshots of private files and a run store."""

from __future__ import annotations

import os
from pathlib import Path


def make_private_dirs(path: str | os.PathLike[str]) -> None:
    """``mkdir -p`` whose every created folder is owner-only (0o700).

    Folders that exist already keep their mode: an administrator may have shared one on purpose.
    """
    path = Path(path)
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass


def create_private_file(path: str | os.PathLike[str]) -> None:
    """Create ``path`` empty and owner-only (0o600) unless it exists, so that a program that opens
    it next (SQLite) does not create it with the umask's mode; SQLite gives its journal and WAL
    files the mode of the database file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        return
    os.close(fd)
