"""Content-addressed snapshots of a source directory.

A snapshot is a manifest (path -> blob hash, size, mode; symlinks; empty folders) plus the blobs it
names. Its id is the hash of the manifest, so the same tree always gives the same id and a target
that already holds a blob never receives it again. Blobs are copied into the store when the snapshot
is taken: what a run sees is fixed at submission, whatever happens to the source folder afterwards.

Ignore rules: in every folder, ``.mltrainignore`` (gitignore syntax) if present, else ``.gitignore``;
deeper files override shallower ones, as in git. ``.git/``, ``__pycache__/`` and virtualenvs are
always left out. Well-known secret files (:data:`SECRET_PATTERNS`) are left out too unless a
``.mltrainignore`` re-includes them with ``!pattern``; the snapshot lists what they kept out
(:attr:`Snapshot.secrets_skipped`). Limits are checked after a stat-only walk, before any file is read.

A file that others cannot read (no world-read bit) is recorded owner-only (0o600, or 0o700 when
executable) and every target writes it so; the others are 0o644 or 0o755, as git keeps them.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import dataclasses
import functools
import gc
import hashlib
import io
import json
import logging
import marshal
import operator
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import pathspec

from airflow_provider_mltrain.core import snapshot_git
from airflow_provider_mltrain.core.artifacts import ArtifactStore, ArtifactStoreError, check_name
from airflow_provider_mltrain.core.errors import SnapshotError, SnapshotTooLarge
from airflow_provider_mltrain.core.private import make_private_dirs
from airflow_provider_mltrain.core.settings import SnapshotLimits

log = logging.getLogger(__name__)

IGNORE_FILES = (".mltrainignore", ".gitignore")
# Files that hold credentials often enough to be left out unless a .mltrainignore says "!pattern".
# Patterns match a file or folder name at any depth; a trailing "/" matches folders only.
SECRET_PATTERNS = (
    ".env",
    ".env.*",
    "id_rsa*",
    "id_ed25519*",
    "*.pem",
    "*.key",
    ".netrc",
    ".pypirc",
    "credentials",
    ".git-credentials",
    ".aws/",
    ".ssh/",
)
# Every pattern is a name, "prefix*" or "*suffix": string tests, cheaper than a regex per file.
_SECRET_NAMES = frozenset(p for p in SECRET_PATTERNS if "*" not in p and not p.endswith("/"))
_SECRET_PREFIXES = tuple(p[:-1] for p in SECRET_PATTERNS if p.endswith("*"))
_SECRET_SUFFIXES = tuple(p[1:] for p in SECRET_PATTERNS if p.startswith("*"))
_SECRET_DIRS = frozenset(p[:-1] for p in SECRET_PATTERNS if p.endswith("/"))
ALWAYS_EXCLUDED_DIRS = frozenset({".git", "__pycache__", ".hg", ".svn", ".mltrain"})
# A run's ./outputs and ./logs are what it produces; copies left in the source folder by local
# runs are not part of what it is given.
RUN_OUTPUT_DIRS = frozenset({"outputs", "logs"})
MANIFEST_VERSION = 1
STAT_INDEX_VERSION = 1
# The stat cache (``<statcache>/<key>.stat``): marshal, a column per field. Version 1 was JSON
# (``<key>.json``, no longer read: the first snapshot after the change reads every file again).
STAT_CACHE_VERSION = 2
# Read at most this much of a stat index (about 1.3 MB per 10,000 files); a longer one is not used.
MAX_STAT_INDEX = 64 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Cached hashes of files modified this close to the cache write are not trusted (git's "racy clean").
RACY_WINDOW_NS = snapshot_git.RACY_WINDOW_NS
SMALL_FILE = 1 << 20
# Files hashed per task when hashing runs on every core.
HASH_BATCH = 64
CHUNK = 1 << 20
# The buffer a large file is copied through. Each pass takes the GIL a few times: while the main
# thread stores small files, 1 MiB did better than 256 KiB (fewer hand-overs of the GIL).
HASH_BUFFER = 1 << 20
# Fewer new small blobs than this (a re-snapshot of a few edited files) are written as files of
# their own, as before packs: one file each instead of a pack and its index.
PACK_MIN_BLOBS = 32
# What a killed snapshot left in the pack folder (a temporary pack, a pack whose index was never
# written) is removed once it is this old: no writer keeps either unchanged for that long.
STALE_PACK_SECONDS = 24 * 3600
# A snapshot storing more small files than this lists the blobs kept as files once, instead of
# a stat per file, to store none twice.
LIST_LOOSE_OVER = 256
# Blobs of one pack this close together are fetched by one ranged read.
COALESCE_GAP = 1 << 20
# Uploads of one snapshot under way at once (each multipart upload has its own parts in flight).
UPLOAD_WORKERS = 4
MAX_RANGE = 64 << 20
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class FileEntry(NamedTuple):  # a named tuple: a 10,000-file manifest loads 3x faster than dataclasses
    path: str
    hash: str
    size: int
    mode: int  # 0o644 or 0o755 as git keeps it; 0o600 or 0o700 for a file others could not read


_new_file_entry = functools.partial(tuple.__new__, FileEntry)  # from a manifest row, unchecked


@dataclass(frozen=True)
class Snapshot:
    """An immutable manifest. ``files``, ``symlinks`` and ``dirs`` are sorted by path.

    ``secrets_skipped`` (not part of the manifest or its id) names what the built-in secret set
    left out when the snapshot was taken: empty for a snapshot read back from the store.
    """

    id: str
    files: tuple[FileEntry, ...]
    symlinks: tuple[tuple[str, str], ...] = ()
    dirs: tuple[str, ...] = ()
    secrets_skipped: tuple[str, ...] = field(default=(), compare=False)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def paths(self) -> list[str]:
        return sorted([f.path for f in self.files] + [p for p, _ in self.symlinks])

    def to_dict(self) -> dict:
        return {
            "version": MANIFEST_VERSION,
            "files": [[f.path, f.hash, f.size, f.mode] for f in self.files],
            "symlinks": [list(s) for s in self.symlinks],
            "dirs": list(self.dirs),
        }

    @classmethod
    def from_dict(cls, data: dict, snapshot_id: str | None = None, verify: bool = True) -> Snapshot:
        """The manifest ``data``, checked (paths relative, content hashing to ``snapshot_id``)
        unless ``verify`` is False: for a manifest this store wrote into its own private cache."""
        if not verify and snapshot_id is not None:
            return cls(
                id=snapshot_id,
                files=tuple(map(_new_file_entry, data["files"])),
                symlinks=tuple(map(tuple, data.get("symlinks", ()))),
                dirs=tuple(data.get("dirs", ())),
            )
        files = tuple(FileEntry(p, h, int(s), int(m)) for p, h, s, m in data["files"])
        symlinks = tuple((p, t) for p, t in data.get("symlinks", ()))
        dirs = tuple(data.get("dirs", ()))
        for path in [f.path for f in files] + [p for p, _ in symlinks] + list(dirs):
            _check_relative(path)
        computed = _manifest_id(files, symlinks, dirs)
        if snapshot_id is not None and snapshot_id != computed:
            raise SnapshotError(
                f"Snapshot manifest {snapshot_id} is corrupt (its content hashes to {computed})."
            )
        return cls(id=computed, files=files, symlinks=symlinks, dirs=dirs)


def delta_manifest(snapshot: Snapshot, base: Snapshot) -> dict | None:
    """``snapshot``'s manifest as changes to ``base``'s, for a target that holds ``base``'s full
    manifest: ``files`` added or changed, ``removed`` paths, and ``symlinks`` and ``dirs`` whole.
    None when most files changed and the full manifest is as small."""
    before = {f.path: f for f in base.files}  # entries compare as tuples: no list per file
    changed = [list(f) for f in snapshot.files if before.get(f.path) != f]
    removed = sorted(before.keys() - {f.path for f in snapshot.files})
    if 2 * (len(changed) + len(removed)) > len(snapshot.files):
        return None
    return {
        "version": MANIFEST_VERSION,
        "base": base.id,
        "files": changed,
        "removed": removed,
        **_rest(snapshot.symlinks, snapshot.dirs),
    }


def _manifest_id(files: Iterable[FileEntry], symlinks: Iterable[tuple[str, str]], dirs: Iterable[str]) -> str:
    return hashlib.sha256(_manifest_bytes(files, symlinks, dirs)).hexdigest()


def _manifest_bytes(
    files: Iterable[FileEntry], symlinks: Iterable[tuple[str, str]], dirs: Iterable[str]
) -> bytes:
    """The manifest as the store keeps it (``_canonical(snapshot.to_dict())``); its hash is the id."""
    files = files if isinstance(files, (list, tuple)) else list(files)
    rest = _rest(symlinks, dirs)
    try:  # anything but str (a manifest being checked may hold anything) takes json.dumps
        names = "".join([f.path + f.hash for f in files])
        numbers = {type(f.size) for f in files} | {type(f.mode) for f in files}
    except TypeError:
        names, numbers = '"', set()
    if _plain(names) and numbers <= {int}:
        # The same bytes as json.dumps, for names and hashes that JSON writes as they are.
        rows = ",".join([f'["{f.path}","{f.hash}",{f.size},{f.mode}]' for f in files])
        return (
            f'{{"dirs":{_canonical_json(rest["dirs"])},"files":[{rows}],'
            f'"symlinks":{_canonical_json(rest["symlinks"])},"version":{MANIFEST_VERSION}}}'
        ).encode()
    body = {"version": MANIFEST_VERSION, "files": [[f.path, f.hash, f.size, f.mode] for f in files]}
    return _canonical({**body, **rest})


# Printable ASCII but '"' and '\\': what JSON (ensure_ascii) writes between quotes unchanged.
_PLAIN = re.compile(r"[ !#-\[\]-~]*")


def _plain(text: str) -> bool:
    return _PLAIN.fullmatch(text) is not None


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _rest(symlinks: Iterable[tuple[str, str]], dirs: Iterable[str]) -> dict:
    return {"symlinks": [list(s) for s in symlinks], "dirs": list(dirs)}


def _canonical(data: dict) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _canonical_index(index: dict[str, list[int]]) -> bytes:
    """``_canonical(index)`` for a pack index (blob hash -> [offset, length]), made faster: hex
    digests and integers need no escaping."""
    digests = sorted(index)  # the keys alone: sorting the items compares (str, list) pairs, 2x slower
    places = map(index.__getitem__, digests)
    return ("{" + ",".join([f'"{d}":[{o},{n}]' for d, (o, n) in zip(digests, places)]) + "}").encode()


def _layout(symlinks: Iterable[tuple[str, str]], dirs: Iterable[str]) -> tuple:
    return tuple(map(tuple, symlinks)), tuple(dirs)


# The stat columns' array types: sizes and inodes unsigned, times signed (before 1970).
_STAT_TYPES = "QqqQ"


def _stat_cache_bytes(snap: Snapshot, files: list[_Scanned], rest: dict[str, Any]) -> bytes:
    """The stat cache of a walk that gave ``snap``: ``rest`` (``written_at_ns``, ``blobs_id``,
    ``ignore_files``), the snapshot's manifest as columns (path, hash, size, mode, and its links and
    empty folders) and each file's stat (size, mtime_ns, ctime_ns, inode) as machine integers.

    marshal and arrays: for 10,000 files 6-8 ms to write and 4 ms to read (the entries), where the
    JSON it replaced took 14-17 and 7 (medians of 41, one machine). Private to the store (0o600
    in 0o700 folders), read by no one else: marshal is for trusted data only."""
    # arrays from tuples: 2 ms for 10,000 files, from a map() of itemgetters 10 ms
    sig_columns = tuple(zip(*map(_SIG, files))) or ((), (), (), ())
    stats = [array.array(code, column).tobytes() for code, column in zip(_STAT_TYPES, sig_columns)]
    columns = tuple(zip(*snap.files)) or ((), (), (), ())
    header = (STAT_CACHE_VERSION, sys.byteorder, snap.id, rest)
    return marshal.dumps((*header, *columns, _layout(snap.symlinks, snap.dirs), *stats))


class _StatCache(NamedTuple):
    """A stat cache read back (see :func:`_stat_cache_bytes`)."""

    snapshot_id: str
    rest: dict[str, Any]
    paths: tuple[str, ...]
    hashes: tuple[str, ...]
    sizes: tuple[int, ...]
    modes: tuple[int, ...]
    layout: tuple
    stats: tuple[array.array, ...]

    def entries(self) -> dict[str, tuple[int, int, int, int, str]]:
        """path -> (size, mtime_ns, ctime_ns, inode, hash) of every file the cache knows."""
        return dict(zip(self.paths, zip(*self.stats, self.hashes)))

    def snapshot(self) -> Snapshot:
        files = tuple(map(_new_file_entry, zip(self.paths, self.hashes, self.sizes, self.modes)))
        return Snapshot(id=self.snapshot_id, files=files, symlinks=self.layout[0], dirs=self.layout[1])


def _read_stat_cache(path: Path) -> _StatCache | None:
    """The stat cache at ``path``, or None when there is none or it is not one this version wrote
    on this machine (another version, byte order, or not a stat cache at all)."""
    try:
        data = marshal.loads(path.read_bytes())  # noqa: S302 - the store's private cache, written by it
        version, byteorder, snapshot_id, rest, paths, hashes, sizes, modes, layout, *raw = data
        if (version, byteorder) != (STAT_CACHE_VERSION, sys.byteorder) or len(raw) != len(_STAT_TYPES):
            return None
        stats = []
        for code, column in zip(_STAT_TYPES, raw):
            stats.append(array.array(code))
            stats[-1].frombytes(column)
        n = len(paths)
        if not (
            isinstance(snapshot_id, str)
            and isinstance(rest, dict)
            and all(isinstance(c, tuple) and len(c) == n for c in (hashes, sizes, modes))
            and all(len(c) == n for c in stats)
            and isinstance(layout, tuple)
            and len(layout) == 2
        ):
            return None
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return _StatCache(snapshot_id, rest, paths, hashes, sizes, modes, layout, tuple(stats))


def _check_relative(path: str) -> None:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise SnapshotError(f"Snapshot path {path!r} is not a plain relative path; refusing to use it.")


class _Scanned(NamedTuple):  # made 10,000 times a walk: a tuple is made in C, a dataclass is not
    path: str
    size: int
    mode: int
    sig: tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


_new_scanned = functools.partial(tuple.__new__, _Scanned)
_PATH, _SIZE, _SIG = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(3)


@dataclass
class ScanResult:
    root: Path
    files: list[_Scanned] = field(default_factory=list)
    symlinks: list[tuple[str, str]] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    root_ignore_file: str | None = None
    ignore_files: dict[str, list] = field(default_factory=dict)
    # Paths (folders with a trailing "/") the built-in secret set left out, that no ignore file did.
    secrets_skipped: list[str] = field(default_factory=list)
    walked: dict[str, int] = field(default_factory=dict)  # every folder walked ("" the root): mtime_ns

    @property
    def total_size(self) -> int:
        return sum(map(_SIZE, self.files))  # a generator costs 7 ms per 10,000 files on a slow core


@dataclass
class KnownTree:
    """What the last snapshot of a folder kept, and the ignore files it obeyed (from the stat cache).

    While every ignore file from the root down to a folder is the same as then, a path that was
    kept then is kept now without asking pathspec again.
    """

    kept: Iterable[str]
    ignore_files: dict[str, list]


def _one_regex(spec: pathspec.GitIgnoreSpec) -> re.Pattern[str] | None:
    """One regex equivalent to ``spec`` for an ignore file without ``!`` lines, else None.

    Without a negation, a path is ignored when any pattern matches it (the last match only
    decides between ignore and re-include), so the alternation of the patterns' own regexes gives
    pathspec's verdict in one search instead of one per pattern.
    """
    parts = []
    flags = set()
    for pattern in spec.patterns:
        include = getattr(pattern, "include", None)
        regex = getattr(pattern, "regex", None)
        if include is None:
            continue  # a comment or blank line
        if include is not True or not isinstance(regex, re.Pattern) or "(?P=" in regex.pattern:
            return None
        source = regex.pattern
        for name in regex.groupindex:
            source = source.replace(f"(?P<{name}>", "(?:")
        parts.append(f"(?:{source})")
        flags.add(regex.flags)
    if len(flags) > 1:
        return None
    try:
        return re.compile("|".join(parts) or "(?!)", flags.pop() if flags else 0)
    except re.error:
        return None


_AT_ANY_DEPTH = "^(?:.+/)?"  # how pathspec's regex of a pattern without "/" (but a last one) starts
_FOLDER_GROUP = "(?P<ps_d>/)"
_DEFAULT_FLAGS = re.compile("").flags


def _name_sources(spec: pathspec.GitIgnoreSpec) -> list[str] | None:
    """Regexes on an entry's name alone (a folder's with a trailing "/") equivalent to ``spec``'s
    for every entry a walk reaches, or None.

    That holds for an ignore file without ``!`` lines whose every pattern is a name at any depth
    (``*.pyc``, ``build/``: no "/" but a trailing one): pathspec's regex then matches a path when
    the pattern matches one of its names, and the walk has gone into every folder above the entry
    only because no pattern matched that folder's name.
    """
    sources = []
    for pattern in spec.patterns:
        include = getattr(pattern, "include", None)
        regex = getattr(pattern, "regex", None)
        if include is None:
            continue  # a comment or blank line
        if include is not True or not isinstance(regex, re.Pattern) or regex.flags != _DEFAULT_FLAGS:
            return None
        source = regex.pattern
        if not source.startswith(_AT_ANY_DEPTH) or "(?P=" in source or set(regex.groupindex) - {"ps_d"}:
            return None
        name = source[len(_AT_ANY_DEPTH) :]
        if "/" in name.replace("[^/]", "").replace(_FOLDER_GROUP, ""):
            return None
        sources.append("(?:" + name.replace(_FOLDER_GROUP, "/") + ")")
    return sources


class _IgnoreRules:
    """The ignore files met on the way down, deepest last."""

    def __init__(self, trusted: bool = False) -> None:
        # (folder, spec, whether it is a .mltrainignore: only those re-include a secret file,
        # the spec as one regex when it has no "!" line)
        self._specs: list[tuple[str, pathspec.GitIgnoreSpec, bool, re.Pattern[str] | None]] = []
        self.trusted = trusted  # every ignore file above is unchanged since the known tree
        # Every spec's patterns as regexes on a name (see _name_sources), or None; and all of them
        # as one regex.
        self._name_sources: list[str] | None = []
        self._names: re.Pattern[str] | None = None

    def child(
        self,
        rel_dir: str,
        folder: Path,
        names: set[str] | None = None,
        seen: dict[str, list] | None = None,
        known: KnownTree | None = None,
    ) -> _IgnoreRules:
        """The rules below ``folder``; ``names`` (the folder's listing) spares looking for absent files.

        Ignore files read are recorded in ``seen`` (by folder: name, size, mtime, inode).
        """
        before = known.ignore_files.get(rel_dir) if known is not None else None
        for name in IGNORE_FILES:
            if names is not None and name not in names:
                continue
            path = folder / name
            try:
                st = path.stat()
                lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise SnapshotError(f"Cannot read ignore file {path}: {exc.strerror}.") from exc
            try:
                spec = pathspec.GitIgnoreSpec.from_lines(lines)
            except Exception as exc:
                raise SnapshotError(f"Ignore file {path} has a line pathspec cannot parse: {exc}") from exc
            sig = [name, st.st_size, st.st_mtime_ns, st.st_ino]
            if seen is not None:
                seen[rel_dir] = sig
            new = _IgnoreRules(trusted=self.trusted and before == sig)
            new._specs = [*self._specs, (rel_dir, spec, name == ".mltrainignore", _one_regex(spec))]
            sources = _name_sources(spec)
            if self._name_sources is not None and sources is not None:
                new._name_sources = self._name_sources + sources
                new._names = re.compile("^(?:" + ("|".join(new._name_sources) or "(?!)") + ")")
            else:
                new._name_sources = None
            return new
        if self.trusted and before is not None:  # an ignore file is gone from here
            new = _IgnoreRules(trusted=False)
            new._specs = self._specs
            new._name_sources = self._name_sources
            new._names = self._names
            return new
        return self

    @property
    def active(self) -> bool:
        return bool(self._specs)

    def ignored(self, rel: str, is_dir: bool) -> bool:
        return bool(self.verdicts(rel, is_dir)[0])

    def ignored_in_walk(self, rel: str, name: str, is_dir: bool) -> bool:
        """:meth:`ignored` for an entry of a folder the walk went into with these rules: one match
        of its name when every ignore file allows it (see :func:`_name_sources`)."""
        if self._names is not None:
            return self._names.match(name + "/" if is_dir else name) is not None
        return bool(self.verdicts(rel, is_dir)[0])

    def verdicts(self, rel: str, is_dir: bool) -> tuple[bool | None, bool | None]:
        """The last verdict of any ignore file and of the ``.mltrainignore`` files alone
        (True: ignore, False: re-included with ``!``, None: no pattern matched)."""
        verdict: bool | None = None
        own: bool | None = None
        for base, spec, is_own, regex in self._specs:
            sub = rel[len(base) + 1 :] if base else rel
            if is_dir:
                sub += "/"
            if regex is not None:
                result = True if regex.search(sub) else None
            else:
                result = spec.check_file(sub).include
            if result is not None:
                verdict = result
                if is_own:
                    own = result
        return verdict, own

    def secret_left_out(self, rel: str, is_dir: bool, skipped: list[str]) -> bool:
        """Whether a path whose name matches :data:`SECRET_PATTERNS` stays out of the snapshot.

        Only a ``.mltrainignore`` re-includes one (a ``.gitignore``'s ``!`` is about git, not
        about what may travel); those no ignore file left out are added to ``skipped``.
        """
        verdict, own = self.verdicts(rel, is_dir) if self._specs else (None, None)
        if own is False and verdict is False:
            return False
        if verdict is not True:
            skipped.append(rel + "/" if is_dir else rel)
        return True


def _secret_name(name: str, is_dir: bool) -> bool:
    return (
        name in _SECRET_NAMES
        or name.startswith(_SECRET_PREFIXES)
        or name.endswith(_SECRET_SUFFIXES)
        or (is_dir and name in _SECRET_DIRS)
    )


def _is_virtualenv(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, "pyvenv.cfg")) or os.path.exists(
        os.path.join(folder, "conda-meta")
    )


def scan(source_dir: str | os.PathLike[str], known: KnownTree | None = None) -> ScanResult:
    """Walk the tree with ``lstat`` only: what a snapshot would hold, nothing read or hashed."""
    root = Path(source_dir)
    if not root.exists():
        raise SnapshotError(f"source_directory {root} does not exist. Pass the folder that holds the script.")
    if not root.is_dir():
        raise SnapshotError(
            f"source_directory {root} is not a folder. Pass the folder that holds the script."
        )
    root = root.resolve()
    result = ScanResult(root=root)
    for name in IGNORE_FILES:
        if (root / name).is_file():
            result.root_ignore_file = name
            break
    kept_before = set(known.kept) if known is not None else set()
    stack: list[tuple[str, str, _IgnoreRules]] = [("", str(root), _IgnoreRules(trusted=known is not None))]
    result.walked[""] = root.stat().st_mtime_ns
    files = result.files
    while stack:
        rel_dir, abs_dir, parent_rules = stack.pop()
        try:
            entries = list(os.scandir(abs_dir))
        except OSError as exc:
            raise SnapshotError(
                f"Cannot list folder {abs_dir}: {exc.strerror}. Make it readable, or leave it out "
                f"with an entry in {root / '.mltrainignore'}."
            ) from exc
        rules = parent_rules.child(
            rel_dir, Path(abs_dir), {e.name for e in entries}, result.ignore_files, known
        )
        kept_any = False
        # Regular files first: nearly every entry is one, and it is then the only test made. A file
        # is matched against the rules unless these are trusted and it was kept before.
        check_all = rules.active and not rules.trusted
        check_new = rules.active and rules.trusted
        for entry in entries:
            name = entry.name
            rel = f"{rel_dir}/{name}" if rel_dir else name
            try:
                if entry.is_file(follow_symlinks=False):
                    if (
                        name in _SECRET_NAMES
                        or name.startswith(_SECRET_PREFIXES)
                        or name.endswith(_SECRET_SUFFIXES)
                    ):
                        if rules.secret_left_out(rel, False, result.secrets_skipped):
                            continue
                    elif (check_all or (check_new and rel not in kept_before)) and rules.ignored_in_walk(
                        rel, name, False
                    ):
                        continue
                    st = entry.stat(follow_symlinks=False)
                    size = st.st_size
                    sig = (size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                    files.append(_new_scanned((rel, size, _manifest_mode(st.st_mode), sig)))
                    kept_any = True
                elif entry.is_dir(follow_symlinks=False):
                    if name in ALWAYS_EXCLUDED_DIRS or _is_virtualenv(entry.path):
                        continue
                    if not rel_dir and name in RUN_OUTPUT_DIRS:
                        continue
                    if _secret_name(name, True):
                        if rules.secret_left_out(rel, True, result.secrets_skipped):
                            continue
                    elif rules.active and rules.ignored_in_walk(rel, name, True):
                        continue
                    result.walked[rel] = entry.stat(follow_symlinks=False).st_mtime_ns
                    stack.append((rel, entry.path, rules))
                    kept_any = True
                elif entry.is_symlink():
                    if _secret_name(name, False):
                        if rules.secret_left_out(rel, False, result.secrets_skipped):
                            continue
                    elif rules.active and rules.ignored_in_walk(rel, name, False):
                        continue
                    target = os.readlink(entry.path)
                    if _escapes(rel, target):
                        log.warning(
                            "Symlink %s points outside the source folder (%s); it is kept as a link "
                            "and never followed.",
                            rel,
                            target,
                        )
                    result.symlinks.append((rel, target))
                    kept_any = True
                else:
                    log.warning("Leaving out %s: not a regular file, folder or symlink.", rel)
            except OSError as exc:
                raise SnapshotError(f"Cannot read {entry.path}: {exc.strerror}.") from exc
        if rel_dir and not kept_any:
            result.dirs.append(rel_dir)
    result.files.sort(key=lambda f: f.path)
    result.symlinks.sort()
    result.dirs.sort()
    result.secrets_skipped.sort()
    return result


def _same_files(root: Path, snap: Snapshot, paths: list[str]) -> bool:
    """Whether each of ``paths`` (relative to ``root``) is still a regular file holding the bytes
    and mode ``snap`` holds for it: read and hashed, as git compares a file whose stat changed.
    A path ``snap`` lacks, a link, a folder or any error: False (the caller walks the tree)."""
    files = snap.files  # sorted by path
    for rel in paths:
        at = bisect.bisect_left(files, rel, key=lambda f: f.path)
        if at == len(files) or files[at].path != rel:
            return False
        entry = files[at]
        try:
            fd = os.open(os.path.join(root, rel), os.O_RDONLY | _O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                return False
            if _manifest_mode(st.st_mode) != entry.mode:
                return False
            digest, size = _copy_hashing(fd, None)
        except OSError:
            return False
        finally:
            os.close(fd)
        if size != entry.size or digest != entry.hash:
            return False
    return True


def _manifest_mode(st_mode: int) -> int:
    """0o644/0o755 for a file anyone may read; 0o600/0o700 (owner-only) for one others may not."""
    executable = st_mode & 0o111
    if st_mode & 0o004:
        return 0o755 if executable else 0o644
    return 0o700 if executable else 0o600


def _escapes(rel: str, target: str) -> bool:
    if os.path.isabs(target):
        return True
    joined = os.path.normpath(os.path.join(os.path.dirname(rel), target))
    return joined == ".." or joined.startswith("../")


def check_limits(result: ScanResult, limits: SnapshotLimits) -> None:
    count = len(result.files) + len(result.symlinks)
    total = result.total_size
    if count <= limits.max_files and total <= limits.max_bytes:
        return
    lines = [
        f"Snapshot of {result.root} is too large: {_mb(total)} in {count:,} files "
        f"(limits: {_mb(limits.max_bytes)}, {limits.max_files:,} files)."
    ]
    biggest = sorted(result.files, key=lambda f: f.size, reverse=True)[:5]
    lines.append("Largest files:")
    lines += [f"  {_mb(f.size):>10}  {f.path}" for f in biggest]
    folders: dict[str, list[int]] = {}
    for f in result.files:
        parts = f.path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            agg = folders.setdefault("/".join(parts[:depth]) + "/", [0, 0])
            agg[0] += f.size
            agg[1] += 1
    if folders:
        by = 1 if count > limits.max_files and total <= limits.max_bytes else 0
        lines.append("Largest folders:")
        for name, (size, n) in sorted(folders.items(), key=lambda kv: kv[1][by], reverse=True)[:5]:
            lines.append(f"  {_mb(size):>10}  {name} ({n:,} files)")
    ignore = result.root / (
        result.root_ignore_file if result.root_ignore_file == ".mltrainignore" else ".mltrainignore"
    )
    note = " (it takes precedence over .gitignore)" if result.root_ignore_file == ".gitignore" else ""
    lines.append(
        f"Leave out what the script does not need by listing it in {ignore}{note}, in gitignore "
        "syntax; or raise the limits with MLTRAIN_SNAPSHOT_MAX_SIZE_MB / MLTRAIN_SNAPSHOT_MAX_FILES "
        "([mltrain] snapshot_max_size_mb / snapshot_max_files)."
    )
    raise SnapshotTooLarge("\n".join(lines))


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


class SnapshotStore:
    """Blobs and manifests under ``<workspace>/snapshots``, with a stat cache per source folder.

    Folders it creates are owner-only (0o700) and so are its files (0o600): a blob may hold a
    file its owner kept private.

    With ``artifacts`` (a workspace whose artifact store is not its root folder), the folder is a
    cache and every snapshot is published to the store, shared by all hosts, as::

        snapshots/manifests/<id[:2]>/<id>.json     the manifest, written last (present = complete)
        snapshots/locations/<id[:2]>/<id>.json     blob hash -> [object, offset, length]
        snapshots/packs/<pack>.pack, <pack>.idx    the snapshot's new small blobs, end to end
        snapshots/blobs/<hash[:2]>/<hash[2:]>      one object per large blob (multipart upload)

    A snapshot whose manifest the store holds costs one request to publish; otherwise existence
    is asked with one listing per prefix, never a request per blob. Blobs missing from the cache
    are fetched by ranged reads of their packs when a run needs them (:meth:`ensure_local`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        workers: int | None = None,
        artifacts: ArtifactStore | None = None,
    ):
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"
        self.statcache = self.root / "statcache"
        self.packidx = self.root / "packidx"
        self._blobs_str = str(self.blobs)
        # Small blobs are appended to pack files, one per snapshot (git's idea, and the shared
        # store's format): creating a file per blob is most of a first snapshot's time.
        self.packs = self.blobs / "packs"
        self._packs_str = str(self.packs)
        self._packs_lock = threading.Lock()
        self._pack_indexes: dict[str, dict[str, list[int]]] = {}
        self._packed: dict[str, _Place] = {}
        self._packs_mtime: int | None = None
        self.workers = workers or min(8, (os.cpu_count() or 1) * 2)
        self.artifacts = artifacts

    def has_blob(self, digest: str) -> bool:
        """Whether the cache holds the blob, as a file of its own or in a pack."""
        return self._where(digest) is not None

    def blob_size(self, digest: str) -> int:
        """The size of a blob the cache holds; FileNotFoundError when it does not."""
        place = self._where(digest)
        if place is None:
            raise FileNotFoundError(f"Blob {digest} is not in {self.blobs}.")
        return place.length

    def open_blob(self, digest: str) -> BinaryIO:
        """A binary file of exactly the blob's bytes (to be closed by the caller), whether it is
        a file of its own or lies in a pack; FileNotFoundError when the cache lacks it."""
        place = self._where(digest)
        if place is None:
            raise FileNotFoundError(f"Blob {digest} is not in {self.blobs}.")
        return _open_place(place)

    def _where(self, digest: str, refresh: bool = True) -> _Place | None:
        """Where the cache keeps a blob: in a pack (the indexes read at the last refresh, made
        again when the pack folder changed), else its own file. ``refresh=False`` trusts the
        indexes read by the caller's own refresh."""
        if refresh:
            self._refresh_packs()
        place = self._packed.get(digest)
        if place is not None:
            return place
        loose = os.path.join(self._blobs_str, digest[:2], digest[2:])
        try:
            st = os.stat(loose)
        except (FileNotFoundError, NotADirectoryError):
            pass
        else:
            if stat.S_ISREG(st.st_mode):
                return _Place(loose, 0, st.st_size, False)
        if refresh and self._refresh_packs(force=True):
            return self._packed.get(digest)
        return None

    def _refresh_packs(self, force: bool = False) -> bool:
        """Read the indexes of packs written since the last look, by this process or another,
        and forget packs that are gone. Cheap (one stat) while the pack folder is unchanged;
        ``force`` also lists it then (a change within the folder's mtime tick). True when the
        folder was listed."""
        try:
            mtime = os.stat(self._packs_str).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            with self._packs_lock:
                self._pack_indexes.clear()
                self._packed.clear()
                self._packs_mtime = None
            return False
        if not force and mtime == self._packs_mtime:
            return False
        try:
            names = os.listdir(self._packs_str)
        except (FileNotFoundError, NotADirectoryError):
            names = []
        self._remove_stale(names)
        with self._packs_lock:
            self._packs_mtime = mtime
            present = {n[: -len(".idx")] for n in names if n.endswith(".idx") and not n.startswith(".")}
            gone = self._pack_indexes.keys() - present
            new = {}
            for pack_id in present - self._pack_indexes.keys():
                index = self._read_local_index(pack_id)
                if index is not None:
                    new[pack_id] = index
            if gone:  # a new map, swapped in whole: a reader never sees it half made
                for pack_id in gone:
                    del self._pack_indexes[pack_id]
                self._pack_indexes.update(new)
                packed: dict[str, _Place] = {}
                _index_places(packed, self._packs_str, self._pack_indexes)
                self._packed = packed
            else:
                self._pack_indexes.update(new)
                _index_places(self._packed, self._packs_str, new)
        return True

    def _remove_stale(self, names: list[str]) -> None:
        """Remove what a snapshot killed mid-write left (see ``STALE_PACK_SECONDS``); no reader
        ever looks at either, as only an index makes a pack's blobs visible."""
        indexed = {n[: -len(".idx")] for n in names if n.endswith(".idx")}
        cutoff = time.time() - STALE_PACK_SECONDS
        for name in names:
            if name.startswith(".tmp-pack-") or (
                name.endswith(".pack") and name[: -len(".pack")] not in indexed
            ):
                path = os.path.join(self._packs_str, name)
                with contextlib.suppress(OSError):
                    if os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)

    def _read_local_index(self, pack_id: str) -> dict[str, list[int]] | None:
        path = os.path.join(self._packs_str, f"{pack_id}.idx")
        try:
            with open(path, "rb") as f:
                index = json.loads(f.read())
            if not isinstance(index, dict) or not all(
                isinstance(d, str)
                and _HEX64.fullmatch(d)
                and isinstance(v, list)
                and len(v) == 2
                and all(type(n) is int and n >= 0 for n in v)
                for d, v in index.items()
            ):
                raise ValueError("not a map of blob hash to [offset, length]")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("Ignoring the pack index %s (%s): its blobs count as missing.", path, exc)
            return None
        return index

    def _add_pack(
        self, pack_id: str, index: dict[str, list[int]], places: dict[str, _Place] | None = None
    ) -> None:
        """Make a pack written by this process visible to its readers (``places``: its blobs'
        places, made by the writer beforehand)."""
        with self._packs_lock:
            self._pack_indexes[pack_id] = index
            if places is None:
                _index_places(self._packed, self._packs_str, {pack_id: index})
            else:
                self._packed.update(places)

    def _loose_digests(self) -> set[str]:
        """The blobs kept as files of their own: one listing per folder, for a snapshot of many
        files instead of a stat per file. In a store written since packs exist these are the
        large ones only; a workspace from before packs holds every blob this way."""
        found: set[str] = set()
        try:
            folders = [n for n in os.listdir(self._blobs_str) if len(n) == 2]
        except (FileNotFoundError, NotADirectoryError):
            return found
        for folder in folders:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                found.update(
                    folder + n for n in os.listdir(os.path.join(self._blobs_str, folder)) if len(n) == 62
                )
        return found

    def _read_local(self, digest: str) -> bytes | None:
        """A blob's bytes from the cache (a packed one checked against its hash), or None."""
        place = self._where(digest)
        if place is None:
            return None
        try:
            with _open_place(place) as src:
                data = src.read()
        except FileNotFoundError:
            return None
        if place.packed and hashlib.sha256(data).hexdigest() != digest:
            raise SnapshotError(
                f"Blob {digest[:12]} in {place.file} is corrupt. Delete {self.statcache} and submit again."
            )
        return data

    def take(
        self,
        source_dir: str | os.PathLike[str],
        limits: SnapshotLimits | None = None,
        required: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Snapshot:
        """Snapshot ``source_dir``: limits first, then hash (trusting the stat cache), then store.

        ``required`` (the script) must be in the snapshot; checked before anything is read.
        ``progress(bytes_done, bytes_total)`` is called after each file that has to be read.
        """
        with _gc_paused():
            return self._take(source_dir, limits, required, progress)

    def _take(
        self,
        source_dir: str | os.PathLike[str],
        limits: SnapshotLimits | None,
        required: str | None,
        progress: Callable[[int, int], None] | None,
    ) -> Snapshot:
        root = Path(source_dir).resolve()
        cache_file, git_record = self._cache_files(root)
        if git_record.exists():
            fast = self._unchanged_by_git(git_record, cache_file, root, limits, required)
            if fast is not None:
                return fast
        # git's listing for the record after the walk runs in its own process meanwhile.
        listing = snapshot_git.start_listing(root, time.time_ns())
        try:
            return self._walk(root, source_dir, limits, required, progress, listing)
        finally:
            if listing is not None:
                listing.close()

    def _walk(
        self,
        root: Path,
        source_dir: str | os.PathLike[str],
        limits: SnapshotLimits | None,
        required: str | None,
        progress: Callable[[int, int], None] | None,
        listing: snapshot_git.Listing | None,
    ) -> Snapshot:
        """A snapshot of ``root`` by a walk of the tree, trusting the stat cache."""
        cache_file, git_record = self._cache_files(root)
        cache = _read_stat_cache(cache_file)
        rest: dict[str, Any] = cache.rest if cache is not None else {}
        entries = cache.entries() if cache is not None else {}
        known = None
        if cache is not None and isinstance(rest.get("ignore_files"), dict):
            known = KnownTree(kept=entries.keys(), ignore_files=rest["ignore_files"])
        previous = cache.snapshot_id if cache is not None else None
        blobs_id = _folder_id(self.blobs)
        if not previous or rest.get("blobs_id") != blobs_id or not self._manifest_file(previous).exists():
            entries = {}  # the store was cleaned since: trust nothing the cache says is stored
        # A host that knows nothing of the folder asks the shared store what the last host to
        # publish a snapshot of it saw. Before the walk, not beside it: a thread busy with the
        # response makes each of the walk's lstat calls wait for the GIL (a convoy, 10x slower).
        index = None
        fetched_index = self.artifacts is not None and not entries and root.is_dir()
        if fetched_index:
            index = self._read_stat_index(root)
            if index is not None:
                # While its ignore files are the ones it saw (size, mtime, inode), a path it kept
                # is kept now without matching the rules again.
                known = KnownTree(kept=index.files.keys(), ignore_files=index.ignore_files)
        result = scan(source_dir, known)
        if required is not None and required not in {f.path for f in result.files}:
            raise SnapshotError(
                f"script {required!r} is left out of the snapshot of {result.root} by an ignore file "
                "(.mltrainignore or .gitignore), or lies in its top-level outputs/ or logs/ folder, "
                "which are never snapshotted. Remove the ignore line that matches it, or move it."
            )
        check_limits(result, limits or SnapshotLimits.from_settings())
        started_ns = time.time_ns()
        trusted_before = rest.get("written_at_ns", 0) - RACY_WINDOW_NS
        todo: list[_Scanned] = []
        digests: dict[str, str] = {}
        for f in result.files:
            hit = entries.get(f.path)
            size, mtime, ctime, ino = f.sig
            if (
                hit is not None
                and hit[0] == size
                and hit[1] == mtime
                and hit[2] == ctime
                and hit[3] == ino
                and mtime < trusted_before
            ):
                digests[f.path] = hit[4]
            else:
                todo.append(f)
        if (
            not todo
            and cache is not None
            and previous
            and len(entries) == len(result.files)
            and cache.layout == _layout(result.symlinks, result.dirs)
        ):
            # Nothing changed since the last snapshot of this folder: same manifest, same id.
            files = tuple(FileEntry(f.path, digests[f.path], f.size, f.mode) for f in result.files)
            unchanged = Snapshot(
                previous,
                files,
                tuple(result.symlinks),
                tuple(result.dirs),
                secrets_skipped=tuple(result.secrets_skipped),
            )
            if self.artifacts is not None:
                self._publish(unchanged, result.root)
            self._record_for_git(git_record, result, unchanged, started_ns, listing)
            return unchanged
        if index is not None:
            todo = index.lookup(todo, digests)
        sizes = {f.path: f.size for f in result.files}
        if todo:
            # With a shared store, hash first: what it holds already is never written here.
            keep = self.artifacts is None
            stored = self._store_all(result.root, todo, progress, keep)
            for f, (digest, size) in zip(todo, stored):
                digests[f.path] = digest
                sizes[f.path] = size
        # Made as plain tuples: FileEntry's own __new__ costs as much again for 10,000 files.
        files = tuple(
            [_new_file_entry((f.path, digests[f.path], sizes[f.path], f.mode)) for f in result.files]
        )
        manifest = _manifest_bytes(files, result.symlinks, result.dirs)
        snap = Snapshot(
            hashlib.sha256(manifest).hexdigest(),
            files,
            tuple(result.symlinks),
            tuple(result.dirs),
            secrets_skipped=tuple(result.secrets_skipped),
        )
        # The index is written after the manifest it names: naming this one, it says the store
        # holds it, and the one request of this snapshot was the index's GET.
        if self.artifacts is not None and (index is None or index.snapshot_id != snap.id):
            published = self._publish(snap, result.root)
            if published or fetched_index:
                self._write_stat_index(result, snap, digests, started_ns)
        self._write_manifest(snap, manifest)
        rest = {
            "written_at_ns": started_ns,
            "blobs_id": _folder_id(self.blobs),
            "ignore_files": result.ignore_files,
        }
        make_private_dirs(cache_file.parent)
        try:
            _atomic_write(cache_file, _stat_cache_bytes(snap, result.files, rest))
        except OverflowError:  # a stat no machine integer holds: no cache, every file read next time
            cache_file.unlink(missing_ok=True)
        cache_file.with_suffix(".json").unlink(missing_ok=True)  # the JSON stat cache of version 1
        self._record_for_git(git_record, result, snap, started_ns, listing)
        return snap

    def _cache_files(self, root: Path) -> tuple[Path, Path]:
        """The stat cache and the git record of the source folder ``root``."""
        key = hashlib.sha256(str(root).encode()).hexdigest()[:24]
        return self.statcache / f"{key}.stat", self.statcache / f"{key}.git.json"

    def _manifest_file(self, snapshot_id: str) -> Path:
        return self.manifests / snapshot_id[:2] / f"{snapshot_id}.json"

    def _unchanged_by_git(
        self,
        record_path: Path,
        cache_file: Path,
        root: Path,
        limits: SnapshotLimits | None,
        required: str | None,
    ) -> Snapshot | None:
        """The last snapshot of ``root`` when git's index and a few stats show nothing changed
        (``snapshot_git``); None sends the caller to the full walk."""

        def last_snapshot(record: dict) -> Snapshot | None:
            try:
                snapshot_id = record["snapshot_id"]
                if self._manifest_file(snapshot_id).exists():  # still held
                    # The walk that wrote the record wrote the stat cache first: its columns hold
                    # the snapshot, read 2x faster than the JSON manifest.
                    cache = _read_stat_cache(cache_file)
                    if cache is not None and cache.snapshot_id == snapshot_id:
                        return cache.snapshot()
                return self.get(snapshot_id, verify=False)
            except (SnapshotError, ValueError, TypeError, KeyError):
                return None

        def same_files(snap: Snapshot | None, paths: list[str]) -> bool:
            return snap is not None and _same_files(root, snap, paths)

        found = snapshot_git.unchanged(record_path, root, _folder_id(self.blobs), last_snapshot, same_files)
        if found is None:
            return None
        record, snap = found
        if snap is None:
            return None
        limits = limits or SnapshotLimits.from_settings()
        if record["count"] > limits.max_files or record["total"] > limits.max_bytes:
            return None  # the walk says what is too large
        if required is not None:  # files are sorted by path
            at = bisect.bisect_left(snap.files, required, key=lambda f: f.path)
            if at == len(snap.files) or snap.files[at].path != required:
                return None  # the walk raises the error that says why
        snap = dataclasses.replace(snap, secrets_skipped=tuple(record["secrets_skipped"]))
        if self.artifacts is not None:
            self._publish(snap, root)
        return snap

    def _record_for_git(
        self,
        record_path: Path,
        result: ScanResult,
        snap: Snapshot,
        started_ns: int,
        listing: snapshot_git.Listing | None = None,
    ) -> None:
        try:
            record = snapshot_git.record(
                result.root,
                snapshot_id=snap.id,
                blobs_id=_folder_id(self.blobs),
                started_ns=started_ns,
                walked=result.walked,
                ignore_files=result.ignore_files,
                kept=dict(zip(map(_PATH, result.files), map(_SIG, result.files))),
                secrets_skipped=list(result.secrets_skipped),
                count=len(result.files) + len(result.symlinks),
                total=result.total_size,
                listing=listing,
            )
            if record is None:
                record_path.unlink(missing_ok=True)
            else:
                self._save_cache(record_path, record)
        except OSError as exc:  # only a speed-up of the next re-snapshot
            log.debug("No git record for %s: %s", result.root, exc)

    def get(self, snapshot_id: str, verify: bool = True) -> Snapshot:
        """The manifest of ``snapshot_id``, from the cache or else the shared store (always
        checked); ``verify=False`` trusts the cache's own copy (written by this store, private)."""
        path = self._manifest_file(snapshot_id)
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            data = None
        if data is None and self.artifacts is not None:
            try:
                raw = self.artifacts.get_bytes(_manifest_name(snapshot_id))
            except FileNotFoundError:
                raw = None
            if raw is not None:
                snap = Snapshot.from_dict(json.loads(raw), snapshot_id)
                self._write_manifest(snap)
                return snap
        if data is None:
            where = self.artifacts.url if self.artifacts is not None else self.root
            raise SnapshotError(f"Snapshot {snapshot_id} is not in the store at {where}.")
        return Snapshot.from_dict(data, snapshot_id, verify=verify)

    def ensure_local(self, snapshot: Snapshot) -> int:
        """Fetch the blobs of ``snapshot`` the cache lacks from the shared store (ranged reads of
        packs, verified by hash); returns how many were fetched. Nothing to do without one."""
        if self.artifacts is None:
            return 0
        missing: dict[str, int] = {}
        self._refresh_packs(force=True)
        for f in snapshot.files:
            if f.hash not in missing and self._where(f.hash, refresh=False) is None:
                missing[f.hash] = f.size
        if not missing:
            return 0
        try:
            locations = json.loads(self.artifacts.get_bytes(_locations_name(snapshot.id)))
        except FileNotFoundError:
            raise SnapshotError(
                f"Snapshot {snapshot.id[:12]} is not complete in the artifact store {self.artifacts.url} "
                "(its locations object is missing). Submit the source folder again."
            ) from None
        by_object: dict[str, list[tuple[int, int, str]]] = {}
        for digest in missing:
            where = locations.get(digest)
            if not (isinstance(where, list) and len(where) == 3 and str(where[0]).startswith("snapshots/")):
                raise SnapshotError(
                    f"Snapshot {snapshot.id[:12]}: the artifact store does not say where blob "
                    f"{digest[:12]} is. Submit the source folder again."
                )
            by_object.setdefault(check_name(str(where[0])), []).append((int(where[1]), int(where[2]), digest))
        jobs: list[tuple[str, int, int, list[tuple[int, int, str]]]] = []
        for name, parts in by_object.items():
            parts.sort()
            start, end, group = parts[0][0], parts[0][0] + parts[0][1], [parts[0]]
            for part in parts[1:]:
                # One ranged read across a small gap, of bounded size (it is held in memory).
                if part[0] - end <= COALESCE_GAP and part[0] + part[1] - start <= MAX_RANGE:
                    end = max(end, part[0] + part[1])
                    group.append(part)
                else:
                    jobs.append((name, start, end, group))
                    start, end, group = part[0], part[0] + part[1], [part]
            jobs.append((name, start, end, group))
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            list(pool.map(lambda job: self._fetch_range(*job), jobs))
        return len(missing)

    def read_blob(self, snapshot_id: str, digest: str) -> bytes:
        """One blob of snapshot ``snapshot_id``: from the cache, else by one ranged read of the
        shared store (verified, then kept in the cache). For showing a file, not for runs."""
        data = self._read_local(digest)
        if data is not None:
            return data
        if self.artifacts is None:
            raise SnapshotError(f"Blob {digest[:12]} of snapshot {snapshot_id[:12]} is not in {self.blobs}.")
        try:
            where = json.loads(self.artifacts.get_bytes(_locations_name(snapshot_id))).get(digest)
        except FileNotFoundError:
            where = None
        if not (isinstance(where, list) and len(where) == 3 and str(where[0]).startswith("snapshots/")):
            raise SnapshotError(
                f"Snapshot {snapshot_id[:12]}: the artifact store {self.artifacts.url} does not hold "
                f"blob {digest[:12]}."
            )
        data = self.artifacts.get_bytes(check_name(str(where[0])), int(where[1]), int(where[2]))
        if hashlib.sha256(data).hexdigest() != digest:
            raise SnapshotError(f"Blob {digest[:12]} in {where[0]} of the artifact store is corrupt.")
        self._write_blob(digest, data)
        return data

    def _fetch_range(self, name: str, start: int, end: int, parts: list[tuple[int, int, str]]) -> None:
        assert self.artifacts is not None
        if len(parts) == 1 and parts[0][1] > SMALL_FILE:
            digest = parts[0][2]
            with self.artifacts.open(name) as src:
                got, _size = self._stream_blob(src)
            if got != digest:
                raise SnapshotError(
                    f"Blob {digest[:12]} in {name} of the artifact store is corrupt. Submit the source again."
                )
            return
        data = self.artifacts.get_bytes(name, start, end - start)
        pack = _PackWriter(self)  # the fetched blobs: one local pack per range
        try:
            for offset, length, digest in parts:
                blob = data[offset - start : offset - start + length]
                if hashlib.sha256(blob).hexdigest() != digest:
                    raise SnapshotError(
                        f"Blob {digest[:12]} in {name} of the artifact store is corrupt. "
                        "Submit the source again."
                    )
                pack.add(digest, blob)
            pack.finish()
        except BaseException:
            pack.abort()
            raise

    def materialize(self, snapshot: Snapshot, dest: str | os.PathLike[str]) -> None:
        """Write the snapshot's files into ``dest`` (which must not exist yet or be empty)."""
        self.ensure_local(snapshot)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        link_paths = {p for p, _ in snapshot.symlinks}
        for d in snapshot.dirs:
            _check_under_links(d, link_paths)
            (dest / d).mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        self._refresh_packs(force=True)
        packs: dict[str, int] = {}  # each pack opened once: one open for thousands of files
        try:
            for f in snapshot.files:
                _check_under_links(f.path, link_paths)
                target = dest / f.path
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    place = self._where(f.hash, refresh=False)
                    if place is None:
                        raise FileNotFoundError(f.hash)
                    if place.packed:
                        if place.file not in packs:
                            packs[place.file] = os.open(place.file, os.O_RDONLY)
                        src = None
                    else:
                        src = open(place.file, "rb")  # noqa: SIM115 - closed below
                except FileNotFoundError:
                    raise SnapshotError(
                        f"Snapshot {snapshot.id[:12]} needs blob {f.hash[:12]} ({f.path}), which is no "
                        f"longer in {self.blobs}. Delete {self.statcache} and submit again to store the "
                        "source anew."
                    ) from None
                fd = os.open(target, flags, f.mode)
                with os.fdopen(fd, "wb") as out:
                    if src is None:
                        _copy_range(packs[place.file], place, out)
                    else:
                        with src:
                            shutil.copyfileobj(src, out, CHUNK)
                os.chmod(target, f.mode)
        finally:
            for pack_fd in packs.values():
                os.close(pack_fd)
        for path, link_target in snapshot.symlinks:
            _check_under_links(path, link_paths - {path})
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(link_target, dest / path)

    # -- internals -----------------------------------------------------------------------------

    def _store_all(
        self,
        root: Path,
        files: list[_Scanned],
        progress: Callable[[int, int], None] | None = None,
        keep: bool = True,
    ) -> list[tuple[str, int]]:
        """Store ``files``; returns (digest, size read) for each. Small files one after the other
        on this thread (threads only add GIL contention to their syscalls), into one new pack,
        visible once every file is stored; large ones to files of their own, by helper threads
        meanwhile (:class:`_LargeCopies`), where reading and hashing run outside the GIL.
        ``keep=False`` hashes without storing (:meth:`_hash_all`)."""
        if not keep:
            return self._hash_all(root, files, progress)
        self._refresh_packs(force=True)
        small = [f for f in files if f.size <= SMALL_FILE]
        pack = _PackWriter(self, self._loose_digests() if len(small) > LIST_LOOSE_OVER else None)
        # One helper per other core: more threads only wait for a core.
        helpers = min(self.workers, os.cpu_count() or 1) - 1
        copies = _LargeCopies(self, root, [f for f in files if f.size > SMALL_FILE], helpers)
        results: dict[str, tuple[str, int]] = {}
        total = sum(f.size for f in files) if progress is not None else 0
        done = 0

        def reported(f: _Scanned) -> None:  # by this thread only
            nonlocal done
            done += f.size
            if progress is not None:
                progress(done, total)

        def stored(f: _Scanned, result: tuple[str, int]) -> None:
            results[f.path] = result
            reported(f)

        try:
            stored_small = self._store_small(root, small, pack, reported if progress is not None else None)
            results.update(zip([f.path for f in small], stored_small))
            pack.seal()  # closed and named (not yet seen) while large files may still be copied
            copies.help(stored)  # then this thread takes what is left of the large ones
            by_helpers = copies.results()
            for f in files:
                if f.path not in results:
                    stored(f, by_helpers[f.path])
            pack.finish()
        except BaseException:
            copies.abort()
            pack.abort()
            raise
        return [results[f.path] for f in files]

    def _hash_all(
        self, root: Path, files: list[_Scanned], progress: Callable[[int, int], None] | None
    ) -> list[tuple[str, int]]:
        """(digest, size read) of each file, nothing stored: every file in a pool, in batches (a
        read and a SHA-256 of more than 2 KiB release the GIL, so hashing alone uses every core)."""
        total = sum(f.size for f in files) if progress is not None else 0
        done = 0
        cores = min(self.workers, os.cpu_count() or 1)
        step = min(HASH_BATCH, -(-len(files) // cores)) if files else 1
        batches = [files[i : i + step] for i in range(0, len(files), step)]
        results: list[tuple[str, int]] = []
        with ThreadPoolExecutor(max_workers=cores) as pool:
            for batch, hashed in zip(
                batches, pool.map(lambda b: [self._hash_one(root, f) for f in b], batches)
            ):
                for f, result in zip(batch, hashed):
                    results.append(result)
                    if progress is not None:
                        done += f.size
                        progress(done, total)
        return results

    def _hash_one(self, root: Path, f: _Scanned) -> tuple[str, int]:
        """Hash the file's bytes without storing them; returns (digest, size read)."""
        path = f"{root}/{f.path}"  # root is absolute, f.path a plain relative path
        try:
            if f.size <= SMALL_FILE:
                data = _read_file(path, f.size)
            else:
                src = os.open(path, os.O_RDONLY | _O_CLOEXEC)
                try:
                    return _copy_hashing(src, None)
                finally:
                    os.close(src)
        except OSError as exc:
            raise _read_error(root, f, exc) from exc
        return hashlib.sha256(data).hexdigest(), len(data)

    def _store_small(
        self,
        root: Path,
        files: list[_Scanned],
        pack: _PackWriter,
        after: Callable[[_Scanned], None] | None = None,
    ) -> list[tuple[str, int]]:
        """Read each small file whole, hash it and append exactly those bytes to ``pack``;
        returns (digest, size read) of each, and calls ``after(file)`` after each. One loop with
        its names bound locally: each call made per file is paid 10,000 times by 10,000 files."""
        prefix = f"{root}/"  # root is absolute, each path a plain relative path
        open_, read, close, sha256, add = os.open, os.read, os.close, hashlib.sha256, pack.add
        flags = os.O_RDONLY | _O_CLOEXEC
        results: list[tuple[str, int]] = []
        for f in files:
            try:
                fd = open_(prefix + f.path, flags)
                try:
                    data = read(fd, f.size + 1)
                    if len(data) != f.size:
                        data = _read_rest(fd, data)
                finally:
                    close(fd)
            except OSError as exc:
                raise _read_error(root, f, exc) from exc
            digest = sha256(data).hexdigest()
            try:
                add(digest, data)
            except OSError as exc:
                raise SnapshotError(
                    f"Cannot store {prefix}{f.path} in {self.blobs}: {exc.strerror or exc}."
                ) from exc
            results.append((digest, len(data)))
            if after is not None:
                after(f)
        return results

    def _copy_to_temp(
        self, root: Path, f: _Scanned, stop: threading.Event | None = None
    ) -> tuple[str, int, str]:
        """Copy a large file into a temporary file of the cache, hashing it on the way; returns
        (digest, size copied, the temporary file) for :meth:`_place_blob`."""
        try:
            src = os.open(f"{root}/{f.path}", os.O_RDONLY | _O_CLOEXEC)
            try:
                make_private_dirs(self.blobs)
                fd, tmp = tempfile.mkstemp(dir=self._blobs_str, prefix=".tmp-")
                try:
                    try:
                        digest, size = _copy_hashing(src, fd, stop)
                    finally:
                        os.close(fd)
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                    raise
            finally:
                os.close(src)
        except OSError as exc:
            raise _read_error(root, f, exc) from exc
        return digest, size, tmp

    def _place_blob(self, digest: str, tmp: str) -> None:
        """Name a copy made by :meth:`_copy_to_temp` as its blob, unless the cache holds it."""
        final = os.path.join(self._blobs_str, digest[:2], digest[2:])
        try:
            # The packs' folder is looked at again only when it changed (one stat), not listed for
            # each blob: a blob another process packed within the same tick is at worst kept twice.
            # A blob kept as a file of its own already is replaced by its same bytes (atomically:
            # a reader holding it open reads the old file), which costs less than a stat first.
            self._refresh_packs()
            if digest in self._packed:
                os.unlink(tmp)
                return
            try:
                os.replace(tmp, final)
            except FileNotFoundError:  # the blob's folder is new
                self._blob_dir(digest)
                os.replace(tmp, final)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise SnapshotError(f"Cannot store a file in {self.blobs}: {exc.strerror or exc}.") from exc
            raise

    def _blob_dir(self, digest: str) -> Path:
        folder = self.blobs / digest[:2]
        make_private_dirs(folder)
        return folder

    def _write_blob(self, digest: str, data: bytes) -> None:
        # Plain string paths and a pid/thread-unique temporary name: this runs once per new file.
        final = os.path.join(self._blobs_str, digest[:2], digest[2:])
        tmp = f"{final}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except FileNotFoundError:
            self._blob_dir(digest)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _stream_blob(self, src, loose: bool = False) -> tuple[str, int]:  # type: ignore[no-untyped-def]
        """Copy ``src`` into the cache as a file of its own, unless the cache holds its blob
        (``loose``: unless it holds it as a file of its own)."""
        make_private_dirs(self.blobs)
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".tmp-")
        hasher = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            digest = hasher.hexdigest()
            place = self._where(digest)
            if place is not None and not (loose and place.packed):
                os.unlink(tmp)
            else:
                os.replace(tmp, self._blob_dir(digest) / digest[2:])
            return digest, size
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    # -- the shared store ---------------------------------------------------------------------

    def _publish(self, snap: Snapshot, source_root: Path) -> bool:
        """Put what the store lacks of ``snap``: new small blobs in one pack, large ones one
        object each, then the locations and, last, the manifest. False when the store held the
        manifest already."""
        store = self.artifacts
        assert store is not None
        if store.size(_manifest_name(snap.id)) is not None:
            return False
        first: dict[str, FileEntry] = {}
        for f in snap.files:
            first.setdefault(f.hash, f)
        locations = self._locate(set(first))
        missing = [f for d, f in first.items() if d not in locations]
        small = [f for f in missing if f.size <= SMALL_FILE]
        large = [f for f in missing if f.size > SMALL_FILE]

        def put_large(f: FileEntry) -> None:
            store.put_file(_blob_name(f.hash), self._cached_blob(f, source_root))

        # Every upload at once in a bounded pool: the large files go while the pack is written,
        # then the pack with them (s3fs sends a multipart upload's parts concurrently too). The
        # first failure cancels what has not started and fails the snapshot before its locations
        # and manifest are written; what was sent is found again by the next attempt's listing.
        pool = ThreadPoolExecutor(max_workers=UPLOAD_WORKERS)
        try:
            uploads = [pool.submit(put_large, f) for f in large]
            if small:
                locations.update(self._put_pack(small, source_root, uploads))
            for upload in uploads:
                upload.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for f in large:
            locations[f.hash] = [_blob_name(f.hash), 0, f.size]
        needed = {d: locations[d] for d in first}
        store.put_bytes(_locations_name(snap.id), _canonical(needed))
        store.put_bytes(_manifest_name(snap.id), _canonical(snap.to_dict()))
        log.info(
            "Snapshot %s published to %s: %d new small file(s) in a pack, %d large one(s), %d there already.",
            snap.id[:12],
            store.url,
            len(small),
            len(large),
            len(first) - len(missing),
        )
        return True

    def _read_stat_index(self, root: Path) -> _StatIndex | None:
        """The store's stat index of the folder at ``root``, or None (none, unreadable, corrupt,
        or another folder's): then every file is hashed."""
        assert self.artifacts is not None
        try:
            # A ranged read is one GET; a whole-object read costs s3fs a HEAD first.
            raw = self.artifacts.get_bytes(_stat_index_name(root), 0, MAX_STAT_INDEX)
        except FileNotFoundError:
            return None
        except ArtifactStoreError as exc:
            log.warning(
                "Cannot read the stat index of %s from %s (%s); hashing every file.",
                root,
                self.artifacts.url,
                exc,
            )
            return None
        return _StatIndex.parse(raw, root)

    def _write_stat_index(
        self, result: ScanResult, snap: Snapshot, digests: dict[str, str], started_ns: int
    ) -> None:
        """Publish what this host saw of the folder (path -> size, mtime, hash) beside ``snap``."""
        assert self.artifacts is not None
        body = {
            "version": STAT_INDEX_VERSION,
            "root": str(result.root),
            "snapshot_id": snap.id,
            "written_at_ns": started_ns,
            "files": [[f.path, f.sig[0], f.sig[1], digests[f.path]] for f in result.files],
            "ignore_files": result.ignore_files,
        }
        try:
            self.artifacts.put_bytes(_stat_index_name(result.root), _canonical(body))
        except ArtifactStoreError as exc:
            # Only a speed-up for the next host with an empty cache: the snapshot itself is stored.
            log.warning("Cannot write the stat index of %s to %s: %s", result.root, self.artifacts.url, exc)

    def _locate(self, digests: set[str]) -> dict[str, list]:
        """Where the store keeps each of ``digests`` it holds: one listing of large blobs, one of
        packs (their indexes are fetched once per host and kept in the cache)."""
        store = self.artifacts
        assert store is not None
        found: dict[str, list] = {}
        for name, size in store.list("snapshots/blobs").items():
            parts = name.split("/")
            if len(parts) == 4:
                digest = parts[2] + parts[3]
                if digest in digests:
                    found[digest] = [name, 0, size]
        packs = store.list("snapshots/packs")
        for name in packs:
            if not name.endswith(".idx") or name[: -len(".idx")] + ".pack" not in packs:
                continue
            pack_id = name.rsplit("/", 1)[-1][: -len(".idx")]
            index = self._pack_index(pack_id)
            pack = f"snapshots/packs/{pack_id}.pack"
            for digest, (offset, length) in index.items():
                if digest in digests and digest not in found:
                    found[digest] = [pack, offset, length]
        return found

    def _pack_index(self, pack_id: str) -> dict[str, list[int]]:
        cached = self.packidx / f"{pack_id}.json"
        try:
            return json.loads(cached.read_bytes())
        except (OSError, ValueError):
            pass
        assert self.artifacts is not None
        raw = self.artifacts.get_bytes(f"snapshots/packs/{pack_id}.idx")
        index = json.loads(raw)
        make_private_dirs(self.packidx)
        _atomic_write(cached, raw)
        return index

    def _put_pack(
        self, files: list[FileEntry], source_root: Path, uploads: list[Future[None]]
    ) -> dict[str, list]:
        """One pack object of ``files``' blobs (each also kept in the cache) and its index, sent
        while the ``uploads`` under way go on; stops early when one of them failed."""
        store = self.artifacts
        assert store is not None
        make_private_dirs(self.packs)
        index: dict[str, list[int]] = {}
        hasher = hashlib.sha256()
        # In the cache's pack folder: after the upload the same file is the cache's copy.
        fd, tmp = tempfile.mkstemp(dir=self.packs, prefix=".tmp-pack-")
        try:
            with os.fdopen(fd, "wb") as out:
                offset = 0
                for f in sorted(files, key=lambda f: f.path):
                    if any(u.done() and u.exception() is not None for u in uploads):
                        break  # a large upload failed: the snapshot fails, stop reading
                    data = self._blob_bytes(f, source_root)
                    out.write(data)
                    hasher.update(data)
                    index[f.hash] = [offset, len(data)]
                    offset += len(data)
            for upload in uploads:
                if upload.done():
                    upload.result()  # raise the failure of a finished upload now
            pack_id = hasher.hexdigest()
            pack = f"snapshots/packs/{pack_id}.pack"
            raw = _canonical(index)
            # The index only after its pack: a listing that finds an index finds its pack.
            store.put_file(pack, tmp)
            store.put_bytes(f"snapshots/packs/{pack_id}.idx", raw)
            make_private_dirs(self.packidx)
            _atomic_write(self.packidx / f"{pack_id}.json", raw)
            os.replace(tmp, self.packs / f"{pack_id}.pack")
            _atomic_write(self.packs / f"{pack_id}.idx", raw)
            self._add_pack(pack_id, index)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return {digest: [pack, offset, length] for digest, (offset, length) in index.items()}

    def _blob_bytes(self, f: FileEntry, source_root: Path) -> bytes:
        """A small blob's bytes from the cache, else from the source file (the pack they go to
        becomes the cache's copy)."""
        cached = self._read_local(f.hash)
        if cached is not None:
            return cached
        path = source_root / f.path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SnapshotError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
        if hashlib.sha256(data).hexdigest() != f.hash:
            raise _changed(path)
        return data

    def _cached_blob(self, f: FileEntry, source_root: Path) -> Path:
        """A large blob's own file in the cache, copied there from the source file (or from a
        pack) if need be."""
        place = self._where(f.hash)
        if place is not None and not place.packed:
            return Path(place.file)
        path = source_root / f.path
        try:
            with self.open_blob(f.hash) if place is not None else open(path, "rb") as src:
                digest, _size = self._stream_blob(src, loose=True)
        except OSError as exc:
            raise SnapshotError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
        if digest != f.hash:
            raise _changed(path)
        return self.blobs / f.hash[:2] / f.hash[2:]

    def _write_manifest(self, snap: Snapshot, raw: bytes | None = None) -> None:
        """Keep ``snap``'s manifest (``raw``: its bytes, made already) unless the cache has it."""
        folder = self.manifests / snap.id[:2]
        path = folder / f"{snap.id}.json"
        if path.exists():
            return
        make_private_dirs(folder)
        _atomic_write(path, raw if raw is not None else _canonical(snap.to_dict()))

    def _save_cache(self, path: Path, data: dict) -> None:
        make_private_dirs(path.parent)
        _atomic_write(path, json.dumps(data, separators=(",", ":")).encode())


def _read_error(root: Path, f: _Scanned, exc: OSError) -> SnapshotError:
    path = f"{root}/{f.path}"
    if isinstance(exc, PermissionError):
        return SnapshotError(
            f"Cannot read {path}: permission denied. Make it readable, or leave it out by adding "
            f"{f.path!r} to {root / '.mltrainignore'}."
        )
    return SnapshotError(f"Cannot read {path}: {exc.strerror or exc}.")


def _read_file(path: str, size: int) -> bytes:
    """The bytes of the file at ``path``, which the walk found ``size`` bytes long: one open and
    one read when it still is (a buffered ``open`` costs a few syscalls more per file)."""
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        data = os.read(fd, size + 1)
        return data if len(data) == size else _read_rest(fd, data)
    finally:
        os.close(fd)


def _read_rest(fd: int, data: bytes) -> bytes:
    """``data`` and the rest of ``fd`` up to its end: a file whose size changed since the walk is
    read whole, whatever it is now."""
    chunks = [data]
    while chunk := os.read(fd, CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


_copy_buffers = threading.local()


def _copy_hashing(src: int, dst: int | None, stop: threading.Event | None = None) -> tuple[str, int]:
    """Copy ``src`` from its offset to its end into ``dst`` (None: only hash it), through one
    reused buffer; returns (SHA-256, size). The digest is of exactly the bytes written. Measured
    here against a copy in the kernel (``copy_file_range``) and a hash of the copy read back, or
    through a map: 8 % less processor time than either. Once ``stop`` is set, raises
    :class:`_Stopped` before the next buffer."""
    hasher = hashlib.sha256()
    buffer = getattr(_copy_buffers, "buffer", None)
    if buffer is None or len(buffer) != HASH_BUFFER:
        # One per thread, kept: a new one per file is a 1 MiB allocation and memset each time.
        buffer = _copy_buffers.buffer = bytearray(HASH_BUFFER)
    view = memoryview(buffer)
    size = 0
    while n := os.readv(src, [buffer]):
        if stop is not None and stop.is_set():
            raise _Stopped
        chunk = view[:n]
        hasher.update(chunk)  # releases the GIL
        while dst is not None and chunk:
            chunk = chunk[os.write(dst, chunk) :]
        size += n
    return hasher.hexdigest(), size


class _Stopped(Exception):
    """A copy given up because the snapshot stopped (:meth:`_LargeCopies.abort`)."""


class _LargeCopies:
    """Large files copied and hashed into the cache by helper threads, largest first (the last
    ones taken are the smallest, so the threads finish together), while the caller stores the
    small ones; the caller then takes what is left (:meth:`help`). :meth:`abort` stops every copy
    within a buffer.

    Tried here and dropped (2026-12-02, ``bench_snapshot.py``'s tree): starting the copies as the
    walk finds the files (the helper's hand-overs of the GIL slowed the walk more than the overlap
    gained: 7 % slower), and helpers taking small files from the end of the caller's list into a
    pack of their own (GIL contention: 17 % more processor time, slower in 5 of 6 runs).
    """

    def __init__(self, store: SnapshotStore, root: Path, files: list[_Scanned], helpers: int) -> None:
        self._store = store
        self._root = root
        self._queue = sorted(files, key=_SIZE)  # taken from the end: largest first
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._copied: dict[str, tuple[str, int]] = {}
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._work, name="mltrain-snapshot-copy", daemon=True)
            for _ in range(helpers if len(files) > 1 else 0)
        ]
        for thread in self._threads:
            thread.start()

    def help(self, copied: Callable[[_Scanned, tuple[str, int]], None]) -> None:
        """The calling thread takes files too until none is left; ``copied`` after each."""
        try:
            while (f := self._next()) is not None:
                copied(f, self._copy(f))
        except _Stopped:
            pass  # a helper failed and stopped the copies: results() raises its error

    def results(self) -> dict[str, tuple[str, int]]:
        """(digest, size) of each file the helpers copied, once they are done; their error is raised."""
        for thread in self._threads:
            thread.join()
        if self._error is not None:
            raise self._error
        return self._copied

    def abort(self) -> None:
        """Stop every copy within a buffer (its temporary file removed) and wait for the helpers."""
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _next(self) -> _Scanned | None:
        with self._lock:
            if self._stop.is_set() or not self._queue:
                return None
            return self._queue.pop()

    def _copy(self, f: _Scanned) -> tuple[str, int]:
        digest, size, tmp = self._store._copy_to_temp(self._root, f, self._stop)
        self._store._place_blob(digest, tmp)
        return digest, size

    def _work(self) -> None:
        try:
            while (f := self._next()) is not None:
                self._copied[f.path] = self._copy(f)
        except BaseException as exc:  # raised by results(); the others stop
            with self._lock:
                if self._error is None:
                    self._error = exc
            self._stop.set()


class _Place(NamedTuple):
    """Where the cache keeps a blob: its own file (offset 0), or a range of a pack."""

    file: str
    offset: int
    length: int
    packed: bool


class _PackSlice(io.RawIOBase):
    """The bytes of one packed blob, read with ``pread`` from the pack's own descriptor."""

    def __init__(self, place: _Place) -> None:
        super().__init__()
        self._fd = os.open(place.file, os.O_RDONLY)
        self._place = place
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._place.length - self._pos)
        if n <= 0:
            return 0
        data = os.pread(self._fd, n, self._place.offset + self._pos)
        if not data:
            raise SnapshotError(f"Pack {self._place.file} is truncated: a blob in it cannot be read.")
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class _PackWriter:
    """The new small blobs of one snapshot, appended to one temporary file. :meth:`finish`
    renames it to ``<id>.pack`` and then writes ``<id>.idx`` (blob hash -> [offset, length], the
    shared store's format) atomically: a reader that finds an index finds its whole pack, and a
    snapshot that fails on the way leaves no pack to be seen (:meth:`abort`). Fewer than
    :data:`PACK_MIN_BLOBS` blobs are kept in memory until then and written as files of their own."""

    def __init__(self, store: SnapshotStore, loose: set[str] | None = None) -> None:
        self.store = store
        # The blobs kept as files of their own (listed once), or None: a stat per blob.
        self.loose = loose
        self.index: dict[str, list[int]] = {}
        self.offset = 0
        self._held: list[tuple[str, bytes]] = []
        self._fd: int | None = None
        self._tmp: str | None = None
        # Blobs not written yet, written together by one writev: no copy into a buffer.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._sealed: tuple[bytes, str, dict[str, _Place]] | None = None

    def add(self, digest: str, data: bytes) -> None:
        if digest in self.index or digest in self.store._packed:
            return
        if self.loose is not None:
            if digest in self.loose:
                return
        elif os.path.isfile(os.path.join(self.store._blobs_str, digest[:2], digest[2:])):
            return
        if self._fd is None:
            if len(self._held) + 1 < PACK_MIN_BLOBS:
                self.index[digest] = [0, len(data)]
                self._held.append((digest, data))
                return
            make_private_dirs(self.store.packs)
            self._fd, self._tmp = tempfile.mkstemp(dir=self.store._packs_str, prefix=".tmp-pack-")
            held, self._held = self._held, []
            self.index.clear()
            for held_digest, held_data in held:
                self._append(held_digest, held_data)
        self._append(digest, data)

    def _append(self, digest: str, data: bytes) -> None:
        self._pending.append(data)
        self._pending_size += len(data)
        self.index[digest] = [self.offset, len(data)]
        self.offset += len(data)
        if self._pending_size >= CHUNK or len(self._pending) >= 512:
            self._flush()

    def _flush(self) -> None:
        assert self._fd is not None
        if not self._pending:
            return
        written = os.writev(self._fd, self._pending)
        if written < self._pending_size:  # a short write: the rest in a loop
            view = memoryview(b"".join(self._pending))[written:]
            while view:
                view = view[os.write(self._fd, view) :]
        self._pending = []
        self._pending_size = 0

    def seal(self) -> None:
        """Close the pack and name it: what :meth:`finish` does that no one else sees, so that it
        may run while other threads still store large blobs."""
        if self._fd is None or self._sealed is not None:
            return
        self._flush()
        fd, self._fd = self._fd, -1
        os.close(fd)
        raw = _canonical_index(self.index)
        # Named by its index, which names every blob in it and its place: the same content
        # packed twice (two processes at once) gets the same name, and either copy serves.
        pack_id = hashlib.sha256(raw).hexdigest()
        places: dict[str, _Place] = {}
        _index_places(places, self.store._packs_str, {pack_id: self.index})
        self._sealed = (raw, pack_id, places)

    def finish(self) -> None:
        if self._fd is None or self._tmp is None:
            for digest, data in self._held:
                self.store._write_blob(digest, data)
            self._held = []
            return
        self.seal()
        assert self._sealed is not None
        raw, pack_id, places = self._sealed
        try:
            os.replace(self._tmp, os.path.join(self.store._packs_str, f"{pack_id}.pack"))
        except BaseException:
            self.abort()
            raise
        self._tmp = None
        _atomic_write(self.store.packs / f"{pack_id}.idx", raw)
        self.store._add_pack(pack_id, self.index, places)

    def abort(self) -> None:
        self._held = []
        self._pending = []
        if self._fd is not None and self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None


def _open_place(place: _Place) -> BinaryIO:
    if not place.packed:
        return open(place.file, "rb")
    return io.BufferedReader(_PackSlice(place))


def _index_places(into: dict[str, _Place], folder: str, indexes: dict[str, dict[str, list[int]]]) -> None:
    for pack_id, index in indexes.items():
        pack = os.path.join(folder, f"{pack_id}.pack")
        for digest, (offset, length) in index.items():
            into.setdefault(digest, _Place(pack, offset, length, True))


def _copy_range(fd: int, place: _Place, out: BinaryIO) -> None:
    done = 0
    while done < place.length:
        data = os.pread(fd, min(CHUNK, place.length - done), place.offset + done)
        if not data:
            raise SnapshotError(f"Pack {place.file} is truncated: a blob in it cannot be read.")
        out.write(data)
        done += len(data)


def _stat_index_name(root: Path) -> str:
    return f"snapshots/statindex/{hashlib.sha256(str(root).encode()).hexdigest()[:32]}.json"


@dataclass(frozen=True)
class _StatIndex:
    """What the last host to publish a snapshot of a folder saw: path -> (size, mtime_ns, hash).

    rsync's quick check: a file whose size and mtime are those listed is taken to hold the listed
    content, except when its mtime lies within :data:`RACY_WINDOW_NS` before the index was
    written (it may have changed again within the same mtime tick). A file it does not list, or
    lists with another size or mtime, is hashed.
    """

    snapshot_id: str
    written_at_ns: int
    files: dict[str, tuple[int, int, str]]
    ignore_files: dict[str, list]  # folder -> [name, size, mtime_ns, inode] of its ignore file

    @classmethod
    def parse(cls, raw: bytes, root: Path) -> _StatIndex | None:
        try:
            data = json.loads(raw)
            if (
                not isinstance(data, dict)
                or data.get("version") != STAT_INDEX_VERSION
                or data.get("root") != str(root)
            ):
                raise ValueError("another folder's index, or another version")
            files = {}
            for path, size, mtime, digest in data["files"]:
                if not (
                    isinstance(path, str)
                    and type(size) is int
                    and type(mtime) is int
                    and isinstance(digest, str)
                    and _HEX64.fullmatch(digest)
                ):
                    raise ValueError(f"a bad entry for {path!r}")
                files[path] = (size, mtime, digest)
            snapshot_id = data["snapshot_id"]
            written = data["written_at_ns"]
            if not (isinstance(snapshot_id, str) and _HEX64.fullmatch(snapshot_id) and type(written) is int):
                raise ValueError("a bad snapshot id or time")
            ignore_files = data.get("ignore_files", {})
            if not (
                isinstance(ignore_files, dict)
                and all(isinstance(k, str) and isinstance(v, list) for k, v in ignore_files.items())
            ):
                raise ValueError("a bad list of ignore files")
        except (ValueError, TypeError, KeyError) as exc:
            log.warning(
                "Ignoring the stat index of %s in the artifact store (%s); hashing every file.", root, exc
            )
            return None
        return cls(snapshot_id, written, files, ignore_files)

    def lookup(self, files: list[_Scanned], digests: dict[str, str]) -> list[_Scanned]:
        """Fill ``digests`` for the files the index vouches for; returns the others."""
        trusted_before = self.written_at_ns - RACY_WINDOW_NS
        rest = []
        for f in files:
            hit = self.files.get(f.path)
            if hit is not None and hit[0] == f.sig[0] and hit[1] == f.sig[1] and f.sig[1] < trusted_before:
                digests[f.path] = hit[2]
            else:
                rest.append(f)
        return rest


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile. A snapshot makes a few hundred thousand small
    objects, none of them in a cycle, and every full collection they trigger walks them all, and
    every other object of the process: it doubled the time of an empty-cache resubmission."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _manifest_name(snapshot_id: str) -> str:
    return f"snapshots/manifests/{snapshot_id[:2]}/{snapshot_id}.json"


def _locations_name(snapshot_id: str) -> str:
    return f"snapshots/locations/{snapshot_id[:2]}/{snapshot_id}.json"


def _blob_name(digest: str) -> str:
    return f"snapshots/blobs/{digest[:2]}/{digest[2:]}"


def _changed(path: Path) -> SnapshotError:
    return SnapshotError(f"{path} changed while it was being snapshotted. Submit again once it stays put.")


def _folder_id(path: Path) -> str | None:
    """A random id kept in the blob folder: a folder deleted and made again gets a new one."""
    marker = path / ".store-id"
    try:
        return marker.read_text().strip()
    except FileNotFoundError:
        pass
    if not path.is_dir():
        return None
    new = uuid.uuid4().hex
    try:
        with open(marker, "x") as f:
            f.write(new)
    except FileExistsError:
        return marker.read_text().strip()
    return new


def _check_under_links(path: str, link_paths: set[str]) -> None:
    _check_relative(path)
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        if "/".join(parts[:depth]) in link_paths:
            raise SnapshotError(f"Snapshot path {path!r} lies under a symlink; refusing to write through it.")


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def diff(old: Snapshot, new: Snapshot) -> dict[str, list[str]]:
    """Paths added, removed and changed between two snapshots."""
    a = {f.path: (f.hash, f.mode) for f in old.files} | {p: ("link", t) for p, t in old.symlinks}
    b = {f.path: (f.hash, f.mode) for f in new.files} | {p: ("link", t) for p, t in new.symlinks}
    return {
        "added": sorted(b.keys() - a.keys()),
        "removed": sorted(a.keys() - b.keys()),
        "changed": sorted(p for p in a.keys() & b.keys() if a[p] != b[p]),
    }


__all__ = [
    "FileEntry",
    "ScanResult",
    "Snapshot",
    "SnapshotStore",
    "check_limits",
    "diff",
    "scan",
]
