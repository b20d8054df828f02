"""A run's files as the script left them: regular files to read, links to list and never follow.

The training script owns its run folder while it runs and may leave symbolic links under
``outputs/`` and ``logs/`` (to ``/etc/passwd``, to the Airflow config, to a folder of secrets).
Every reader therefore sees a link as a link, its name and the text it points to, never the content
it points to: targets list links apart from files and read files without following any link, and a
collected run keeps its links in ``links.json`` beside ``outputs/`` and ``logs/``, never as links on
the controller's disk. See ``runner/tree.py`` for how a folder is read without following links.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from airflow_provider_mltrain.runner import tree

log = logging.getLogger(__name__)

COLLECTED = tree.TOPS
LINKS_FILE = "links.json"
# Files the script kept under a name of its own (``run.upload_file("a/b.txt")``, as Azure ML
# does) are stored in ``uploads/a/b.txt`` and named ``a/b.txt``; names under ``outputs/`` and
# ``logs/`` are files of those folders. The in-script API (runner/pylib/mltrain) maps the same way.
UPLOADS = "uploads"
_NAMED_AS_STORED = ("outputs", "logs")


def shown_name(stored: str) -> str:
    """The run file name users see for a path stored in the run folder."""
    head, sep, rest = stored.partition("/")
    return rest if head == UPLOADS and sep else stored


def stored_name(name: str) -> str:
    """The path in the run folder of the run file ``name`` (the inverse of :func:`shown_name`)."""
    return name if name.split("/", 1)[0] in _NAMED_AS_STORED else f"{UPLOADS}/{name}"


def shown(entries: RunFiles) -> RunFiles:
    """``entries`` (stored paths) under the names users see, sorted."""
    return RunFiles(
        sorted(shown_name(f) for f in entries.files),
        dict(sorted((shown_name(k), v) for k, v in entries.links.items())),
    )


@dataclass
class RunFiles:
    """The regular files of a run (names like ``outputs/model.pkl``) and its links (name -> link text)."""

    files: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)


def list_folder(run_dir: Path) -> RunFiles:
    """The files and links under ``run_dir/outputs`` and ``run_dir/logs`` of a folder on this machine
    (a local run folder, or a collected one with its ``links.json``)."""
    files, found_links, errors = tree.names(str(run_dir))
    for line in errors:
        log.warning("Listing %s: skipped %s", run_dir, line)
    links = {**read_links(run_dir), **found_links}
    files.sort()
    return RunFiles(files, dict(sorted(links.items())))


def read_links(folder: Path) -> dict[str, str]:
    """The links recorded in a collected run folder's ``links.json`` (empty without one)."""
    data = tree.read_file(str(folder), LINKS_FILE, tops=(LINKS_FILE,))
    try:
        links = json.loads(data) if data else {}
    except ValueError:
        return {}
    if not isinstance(links, dict):
        return {}
    return {str(k): str(v) for k, v in links.items()}


def write_links(folder: Path, links: dict[str, str]) -> None:
    """Record ``links`` in ``folder/links.json`` (merged with what is there); nothing when empty."""
    if not links:
        return
    merged = {**read_links(folder), **links}
    (folder / LINKS_FILE).write_text(json.dumps(dict(sorted(merged.items())), indent=1))


def extract_tar(tar: tarfile.TarFile, dest: Path, members: Iterable[tarfile.TarInfo] | None = None) -> int:
    """Write the regular files and folders of ``tar`` under ``outputs/`` and ``logs/`` to ``dest``;
    links are recorded in ``dest/links.json``, never made. Names that would leave ``dest`` and other
    member types (devices, FIFOs) are skipped. Works on a stream (``mode="r|"``). Returns the number
    of files written."""
    links: dict[str, str] = {}
    count = 0
    with tree.Folders(str(dest), create=True) as out:
        for member in tar if members is None else members:
            name = member.name[2:] if member.name.startswith("./") else member.name
            try:
                parts = tree.split_name(name.rstrip("/"))
            except ValueError:
                continue
            if member.isdir():
                out.goto(parts)
            elif member.issym():
                links["/".join(parts)] = member.linkname
            elif member.isfile() or member.islnk():
                try:
                    src = tar.extractfile(member)
                except (tarfile.TarError, KeyError):
                    src = None  # a hard link to a member a stream has passed
                if src is None:
                    continue
                with src:
                    tree.write_from(src, None, parts[-1], out.goto(parts[:-1]), member.mode)
                count += 1
    write_links(dest, links)
    return count


def rmtree(path: Path) -> None:
    """Delete a folder a script may have filled with links and deep trees (see ``runner/tree.py``)."""
    for line in tree.rmtree(str(path)):
        log.warning("Removing %s: %s", path, line)


def make_dirs(folder: Path) -> None:
    """``mkdir -p`` without recursion (``os.makedirs`` recurses once per missing folder)."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            if not path.is_dir():
                raise


def copy_to(fd: int, dest: Path) -> None:
    """Copy the open file ``fd`` (closed here) to ``dest``."""
    with os.fdopen(fd, "rb") as src, open(dest, "wb") as out:
        while chunk := src.read(tree.CHUNK):
            out.write(chunk)
