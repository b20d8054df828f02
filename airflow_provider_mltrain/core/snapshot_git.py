"""Re-snapshots of an unchanged git work tree without walking it: git's index tells what changed.

A re-snapshot must notice any change to what the snapshot holds. Walking the tree and ``lstat``-ing
every file does that, and is what a Python process cannot do as fast as ``git status``, which
``lstat``s its index entries from several threads in C. When the source folder lies in a git work
tree, the last full snapshot also writes a small record (``<statcache>/<key>.git.json``), and the
next one asks, in this order, whether anything changed since:

1. every folder the last walk went into still has the modification time it had then: no entry was
   added, removed or renamed anywhere in the snapshotted tree (new files, new empty folders, a
   script's new output, a file git ignores but the snapshot keeps all change a folder's mtime);
2. git's index file is the one it was then (no ``add``, ``commit``, ``checkout`` since);
3. every ignore file the walk obeyed, every kept file git does not track (untracked, or ignored by
   git but kept by the snapshot's own rules) and every kept file that differed from the index then
   has the size, mtime, ctime and inode it had;
4. ``git diff-files`` (git's stat of its index entries from several threads, as ``git status``
   does; racily clean entries are compared by content) lists no file that ``git ls-files -m -d``
   did not list then, except files whose bytes and mode the caller finds, by reading them, to be
   the last snapshot's (:data:`RECHECK_MAX_FILES` at most). It runs while the caller reads the last
   snapshot back (from the stat cache the same walk wrote, quicker to read than the manifest),
   which the answer "unchanged" returns. git compares whole seconds of
   mtime and ctime, so the record is only written when the index is older than the walk by the
   racy window: any later change then has a ctime second git has not seen.

``git diff-files`` lists every file ``ls-files -m -d`` lists, and also files only their stat says
changed (touched, or given an mtime back: "stat-dirty", until a ``git status`` refreshes the index).
Those are the files the caller re-reads. ``ls-files -m -d`` itself stats from one thread: on a
2-core machine, 10,000 files, it took as long as ``git status`` (21.6 and 21.2 ms) and
``diff-files`` 0.7x as long (14.6 ms).

Then every tracked file matches the same index entry as before, so holds the same bytes, and the
snapshot is the last one. Anything else, or any doubt (no git, another git layout, a record written
within :data:`RACY_WINDOW_NS` of the mtimes it holds, git failing), falls back to the full walk,
which is always right; the fast path only ever answers "unchanged".
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

RECORD_VERSION = 1
# Stats modified this close to the walk are not trusted (git's "racy clean"); the stat cache's too.
RACY_WINDOW_NS = 2_000_000_000
GIT_TIMEOUT = 30.0
# Files git's stat calls changed but the record does not list, re-read and compared with the last
# snapshot instead of walking the tree (git would compare their content too); more, the walk.
RECHECK_MAX_FILES = 1000
# Git variables that would point git at another repository or index than the folder's own.
_GIT_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_CEILING_DIRECTORIES")


def work_tree_index(root: Path) -> Path | None:
    """The index file of the git work tree holding ``root``: a plain ``.git`` folder at the top of
    the tree (a worktree's or submodule's ``.git`` file, or none, gives None)."""
    for folder in (root, *root.parents):
        dot_git = folder / ".git"
        try:
            st = os.lstat(dot_git)
        except OSError:
            continue
        return dot_git / "index" if stat.S_ISDIR(st.st_mode) else None
    return None


def _sig(path: str | Path) -> list[int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _git(*args: str) -> list[str]:
    # ctime compared whatever the repository's settings say (trustctime, checkStat)
    return ["git", "-c", "core.trustctime=true", "-c", "core.checkStat=default", *args]


# Paths relative to the folder git runs in, and only its subtree (--relative); no submodule's own
# work tree looked into (its files are the snapshot's "others", stat-checked by the record).
_DIFF_FILES = ("diff-files", "--name-only", "-z", "--relative", "--no-color", "--ignore-submodules=dirty")


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_VARS}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # never write the index (that would change what we compare)
    return env


def _start_git(
    root: Path, args: tuple[str, ...], stdout: Any = subprocess.PIPE
) -> subprocess.Popen[bytes] | None:
    """``git ARGS`` in ``root`` started, writing to ``stdout`` (a pipe: read it with
    :func:`_listed`), or None when git cannot be started."""
    try:
        return subprocess.Popen(
            _git(*args),
            cwd=root,
            env=_git_env(),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None


def _start_ls_files(root: Path, *flags: str, stdout: Any = subprocess.PIPE) -> subprocess.Popen[bytes] | None:
    """``git ls-files -z FLAGS`` in ``root`` started (see :func:`_start_git`)."""
    return _start_git(root, ("ls-files", "-z", *flags), stdout)


def _start_diff_files(root: Path) -> subprocess.Popen[bytes] | None:
    """``git diff-files`` of ``root``'s subtree started: the tracked files whose stat or content
    differs from the index, or that are gone (see :func:`_start_git`)."""
    return _start_git(root, _DIFF_FILES)


def _listed(proc: subprocess.Popen[bytes] | None) -> list[str] | None:
    """The paths a started ``git ls-files -z`` or ``diff-files -z`` lists (relative to its
    folder), or None if it failed."""
    if proc is None:
        return None
    with proc:
        try:
            out, _ = proc.communicate(timeout=GIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return None
    if proc.returncode != 0:
        return None
    return out.decode("utf-8", "surrogateescape").split("\0")[:-1]


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.returncode is None:
        with proc:
            proc.kill()
            proc.communicate()


def _ls_files(root: Path, *flags: str) -> list[str] | None:
    """``git ls-files -z FLAGS`` in ``root`` (paths relative to it, its subtree only), or None."""
    return _listed(_start_ls_files(root, *flags))


_RECORD_FLAGS = ("-t", "-c", "-m", "-d")


class Listing:
    """The listing :func:`record` needs, started early in a process of its own (see
    :func:`start_listing`): git stats the tracked files on the other core while the walk runs.
    :meth:`close` ends it, whether or not it was used."""

    def __init__(self, root: Path, index: Path, index_sig: list[int]) -> None:
        self.root = root
        self.index = index
        self.index_sig = index_sig  # taken before git started
        # A file, not a pipe: git never waits for a reader, whatever the listing's size.
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        # None when git cannot be started: result() then says so, as a late listing would.
        self._proc = _start_ls_files(root, *_RECORD_FLAGS, stdout=self._out)

    def result(self) -> list[str] | None:
        """The listing, or None when git failed or took longer than :data:`GIT_TIMEOUT`."""
        proc = self._proc
        if proc is None:
            return None
        try:
            code = proc.wait(timeout=GIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.close()
            return None
        if code != 0:
            return None
        self._out.seek(0)
        return self._out.read().decode("utf-8", "surrogateescape").split("\0")[:-1]

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._out.close()


def start_listing(root: Path, now_ns: int) -> Listing | None:
    """Start the ``git ls-files`` that :func:`record` will need after a walk of ``root`` starting
    at ``now_ns``, or None when no record could be written (no plain git work tree, an index
    modified within the racy window, git missing)."""
    index = work_tree_index(root)
    if index is None:
        return None
    index_sig = _sig(index)
    if index_sig is None or index_sig[1] >= now_ns - RACY_WINDOW_NS:
        return None
    try:
        return Listing(root, index, index_sig)
    except (OSError, subprocess.SubprocessError):
        return None


def record(
    root: Path,
    *,
    snapshot_id: str,
    blobs_id: str | None,
    started_ns: int,
    walked: dict[str, int],
    ignore_files: dict[str, list],
    kept: dict[str, tuple[int, int, int, int]],
    secrets_skipped: list[str],
    count: int,
    total: int,
    listing: Listing | None = None,
) -> dict[str, Any] | None:
    """After a full walk of ``root``: the record the next re-snapshot checks, or None when none
    can be trusted. ``walked``: folder -> mtime_ns of every folder walked; ``kept``: each kept
    file's (size, mtime_ns, ctime_ns, inode); ``listing``: git's listing, started before the walk
    (the caller closes it), else git is run now."""
    index = work_tree_index(root)
    if index is None:
        return None
    trusted_before = started_ns - RACY_WINDOW_NS
    if any(mtime >= trusted_before for mtime in walked.values()):
        return None  # a folder changed moments ago may change again within the same mtime tick
    if listing is not None and (listing.root != root or listing.index != index):
        listing = None
    # Taken before git ran: the check after it shows the index was the same throughout.
    index_sig = listing.index_sig if listing is not None else _sig(index)
    if index_sig is None or index_sig[1] >= trusted_before:
        # git compares whole seconds of mtime and ctime with the stat it keeps for each entry: a
        # file rewritten within the second git took its stat (same size, mtime put back) passes.
        # With the index (and so every stat in it) older than the walk by the racy window, any
        # change after the walk has a later ctime second than git recorded.
        return None
    listed = listing.result() if listing is not None else _ls_files(root, *_RECORD_FLAGS)
    if listed is None:
        return None
    tracked: set[str] = set()
    modified: set[str] = set()
    for line in listed:
        tag, _, name = line.partition(" ")
        (tracked if tag == "H" else modified).add(name)
    others = {}
    # Set operations over the names, in C: most of a work tree is tracked and unmodified.
    for name in sorted((kept.keys() - tracked) | (kept.keys() & modified)):
        sig = kept[name]
        if sig[1] >= trusted_before:
            return None
        others[name] = list(sig)
    if _sig(index) != index_sig:
        return None  # git changed its index meanwhile
    return {
        "version": RECORD_VERSION,
        "root": str(root),
        "snapshot_id": snapshot_id,
        "blobs_id": blobs_id,
        "index": index_sig,
        "walked": walked,
        "ignore_files": ignore_files,
        "others": others,
        "modified": sorted(modified),
        "secrets_skipped": secrets_skipped,
        "count": count,
        "total": total,
    }


def unchanged(
    path: Path,
    root: Path,
    blobs_id: str | None,
    meanwhile: Callable[[dict[str, Any]], T],
    same_files: Callable[[T, list[str]], bool] | None = None,
) -> tuple[dict[str, Any], T] | None:
    """The record of ``root``'s last full snapshot when nothing it holds changed since, and what
    ``meanwhile(record)`` returned (called while git checks its index: the caller's reading of the
    last snapshot overlaps git's work); None when anything changed. ``same_files(found, paths)``
    says whether the tracked files ``paths``, which git's stat calls changed since the record, still
    hold what the last snapshot holds (no such function: any such file means a change)."""
    proc = None
    try:
        record = json.loads(path.read_bytes())
        if not (
            isinstance(record, dict)
            and record.get("version") == RECORD_VERSION
            and record.get("root") == str(root)
            and record.get("blobs_id") == blobs_id
        ):
            return None
        index = work_tree_index(root)
        if index is None or _sig(index) != record["index"]:
            return None
        proc = _start_diff_files(root)
        root_s = str(root)
        for rel, mtime in record["walked"].items():
            try:
                if os.lstat(os.path.join(root_s, rel) if rel else root_s).st_mtime_ns != mtime:
                    return None
            except OSError:
                return None
        for folder, (name, size, mtime, ino) in record["ignore_files"].items():
            sig = _sig(os.path.join(root_s, folder, name))
            if sig is None or [sig[0], sig[1], sig[3]] != [size, mtime, ino]:
                return None
        for rel, sig in record["others"].items():
            if _sig(os.path.join(root_s, rel)) != sig:
                return None
        found = meanwhile(record)
        listed, proc = _listed(proc), None
        if listed is None:
            return None
        changed = set(listed).difference(record["modified"])
        if changed and (
            same_files is None or len(changed) > RECHECK_MAX_FILES or not same_files(found, sorted(changed))
        ):
            return None
        if _sig(index) != record["index"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        _stop(proc)
    return record, found
