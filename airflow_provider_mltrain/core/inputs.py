"""Run inputs: data a run names (object-store URLs, ``ObjectStoragePath``-like paths, local paths),
fetched by the controller into a content cache in the workspace and handed to the target.

Where the download happens: on the controller, for every target. The controller already holds
the credentials (an Airflow connection, fsspec options) and fsspec; the runner on a target is
stdlib-only and a fresh VM or image has neither. The cache (``<workspace>/cache/inputs/<key>/``) is
keyed by what the store says about the content (ETag or version id and size of each object, or a
local file's size and mtime), so an unchanged input is not fetched twice; a remote target then
keeps its own copy by the same key (the Docker cache volume, the SSH root), so it travels once.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from airflow_provider_mltrain.core.errors import InvalidRunConfig, MissingDependency, MLTrainError

logger = logging.getLogger(__name__)

MODES = ("download", "mount")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
PLACEHOLDER_RE = re.compile(r"\$\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\.([^\s}]*)\s*\}\}")
CHUNK = 8 << 20
RANGE = 16 << 20  # objects bigger than this are fetched in ranges, PARALLEL at a time
PARALLEL = 4
# A first fetch of more than this many bytes is not hashed on its way in: the script starts as soon
# as the copy is written, and the content hash lands in the run's record when a thread has read the
# copy once more (about a second per GiB), at the latest when the run ends. Smaller inputs are hashed
# as they are fetched, so their hash is in the record from the start.
HASH_AFTER_START = 256 << 20
# What the run records of its inputs: a JSON list in this provider-owned property.
INPUTS_PROPERTY = "mltrain.inputs"
# The arguments as given, ${{inputs.NAME}} placeholders unsubstituted (only when there are any): a
# rerun on another target places the inputs elsewhere and substitutes them again.
ARGUMENTS_TEMPLATE = "mltrain.arguments_template"


class InputError(InvalidRunConfig):
    """An input of the run cannot be used as given (nothing was submitted)."""


class InputNotFound(InputError, FileNotFoundError):
    """The input's object, prefix or local path does not exist."""


class InputCredentialsMissing(InputError, PermissionError):
    """The object store refused the request, or no credentials were found for it."""


class InputChanged(InputError):
    """A rerun's input no longer holds the data the first run read."""


class UnknownInputScheme(InputError):
    """The input's URL scheme names no filesystem fsspec knows."""


@dataclass
class Input:
    """One named input of a run.

    ``source``: an object-store URL (``s3://bucket/prefix/``), a local path, or an
    ``ObjectStoragePath`` (anything with an fsspec ``fs`` and a ``path``: its credentials are used).
    ``mode``: ``download`` (a local copy, the default) or ``mount`` (used in place: a local path on
    the local target, a read-only bind mount in Docker). ``storage_options`` (fsspec options) or
    ``conn_id`` (an Airflow connection, resolved as the artifact store's is) give credentials.
    ``path_on_compute``: where a mount appears in a container (default ``/mltrain/inputs/<name>``).
    A string ``source`` is rendered by Airflow when the Input is in a templated field.
    """

    template_fields: ClassVar[tuple[str, ...]] = ("source",)

    source: Any
    mode: str = "download"
    storage_options: dict[str, Any] | None = None
    conn_id: str | None = None
    path_on_compute: str | None = None

    # Azure ML v1's spelling: Dataset.as_named_input("train").as_mount()
    def as_mount(self, path_on_compute: str | None = None) -> Input:
        return Input(self.source, "mount", self.storage_options, self.conn_id, path_on_compute)

    def as_download(self) -> Input:
        return Input(self.source, "download", self.storage_options, self.conn_id, None)


@dataclass(frozen=True)
class InputFile:
    rel: str  # path inside the input ("" for an input that is one file)
    size: int
    etag: str


@dataclass
class ResolvedInput:
    """An input checked against its store: what it is, and where its cached copy is."""

    name: str
    uri: str
    mode: str
    local: bool  # a path on this machine (no fetch for a mount)
    path: str  # in ``fs`` (or on this machine)
    fs: Any
    files: list[InputFile]
    single: str | None  # the file name when the input is one file
    version: str | None
    path_on_compute: str | None = None
    key: str = ""
    cache_dir: Path | None = None  # <cache>/<key>: data/ and meta.json
    sha256: str | None = None
    hash_pending: bool = False  # sha256 is computed after the submission (see HASH_AFTER_START)
    fetched_bytes: int = 0
    cache_hit: bool = False
    target_path: str = ""  # where the script finds it on the target
    conn_id: str | None = None  # the Airflow connection its credentials came from (recorded; no secret)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def data_dir(self) -> Path:
        """The cached copy's folder (download), or the local source (mount)."""
        if self.mode == "mount":
            return Path(self.path)
        assert self.cache_dir is not None
        return self.cache_dir / "data"

    def local_path(self) -> Path:
        """The path a script on this machine would be given: the file of a one-file input."""
        return self.data_dir / self.single if self.single and self.mode == "download" else self.data_dir

    def env_name(self) -> str:
        return input_env_name(self.name)

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uri": self.uri,
            "mode": self.mode,
            "version": self.version,
            "size": self.size,
            "files": len(self.files),
            "sha256": self.sha256,
            "cache_hit": self.cache_hit,
            "fetched_bytes": self.fetched_bytes,
            "path": self.target_path,
            "conn_id": self.conn_id,
            "path_on_compute": self.path_on_compute,
            "cache_key": self.key or None,
        }


def input_env_name(name: str) -> str:
    return f"MLTRAIN_INPUT_{name.upper()}"


def normalize_inputs(raw: Any, field_name: str = "ScriptRunConfig inputs") -> dict[str, Input]:
    """``{"train": "s3://..."}`` or ``{"train": Input(...)}`` -> checked Input objects (no I/O)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InputError(
            f"{field_name} must be a dict of input names to URLs, paths or Input objects, got "
            f"{type(raw).__name__}."
        )
    out: dict[str, Input] = {}
    env_names: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise InputError(
                f"{field_name}: the name {name!r} is not valid: use letters, digits and '_', starting with a "
                "letter or '_' (it becomes ${{inputs.NAME}} and the variable MLTRAIN_INPUT_NAME)."
            )
        other = env_names.get(name.upper())
        if other is not None:
            raise InputError(
                f"{field_name}: {other!r} and {name!r} would share the variable {input_env_name(name)}: "
                "rename one."
            )
        env_names[name.upper()] = name
        item = value if isinstance(value, Input) else Input(value)
        if item.mode not in MODES:
            raise InputError(f"{field_name}[{name!r}]: mode {item.mode!r} is not one of {', '.join(MODES)}.")
        if item.source is None or (isinstance(item.source, str) and not item.source.strip()):
            raise InputError(f"{field_name}[{name!r}] is empty: give a URL (s3://...) or a path.")
        if not isinstance(item.source, (str, os.PathLike)) and not _is_fspath_like(item.source):
            raise InputError(
                f"{field_name}[{name!r}] must be a URL, a path or an ObjectStoragePath, got "
                f"{type(item.source).__name__}. Pass an Airflow Asset through ScriptRunOperator, which "
                "takes its URI."
            )
        if item.path_on_compute is not None and item.mode != "mount":
            raise InputError(f"{field_name}[{name!r}]: path_on_compute is for mode='mount' only.")
        out[name] = item
    mounts: dict[str, str] = {}
    for name, item in out.items():
        if item.mode != "mount":
            continue
        where = posix_norm(item.path_on_compute or f"/mltrain/inputs/{name}")
        if not where.startswith("/"):
            raise InputError(f"{field_name}[{name!r}]: path_on_compute {where!r} must be an absolute path.")
        if where in mounts:
            raise InputError(
                f"{field_name}: {mounts[where]!r} and {name!r} are both mounted at {where}: give one another "
                "path_on_compute."
            )
        mounts[where] = name
    return out


def posix_norm(path: str) -> str:
    import posixpath

    return posixpath.normpath(path)


def _is_fspath_like(obj: Any) -> bool:
    return hasattr(obj, "fs") and hasattr(obj, "path") and hasattr(obj, "protocol")


def substitute(arguments: list[str], values: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Replace ``${{inputs.NAME}}`` / ``${{outputs.NAME}}`` in each argument; unknown names refused."""
    out = []
    for i, arg in enumerate(arguments):
        out.append(PLACEHOLDER_RE.sub(functools.partial(_value, i=i, arg=arg, values=values), arg))
    return out


def _value(m: re.Match[str], *, i: int, arg: str, values: Mapping[str, Mapping[str, str]]) -> str:
    kind, name = m.group(1), m.group(2)
    group = values.get(kind)
    if group is None:
        raise InputError(
            f"arguments[{i}] {arg!r}: ${{{{{kind}.{name}}}}} is not a placeholder mltrain knows: "
            "use ${{inputs.NAME}} or ${{outputs.NAME}}."
        )
    if name not in group:
        known = ", ".join(sorted(group)) or "none"
        raise InputError(
            f"arguments[{i}] {arg!r} names {kind[:-1]} {name!r}, which the run does not declare "
            f"({kind}: {known}). Add it to ScriptRunConfig({kind}=...) or fix the name."
        )
    return group[name]


def placeholders(arguments: list[str]) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for arg in arguments for m in PLACEHOLDER_RE.finditer(arg)]


# -- resolving: what the input is (cheap: listings, no content) ----------------------------------


def resolve(name: str, item: Input) -> ResolvedInput:
    """Check the input against its store (exists, readable, credentials) and list its files."""
    source = item.source
    if _is_fspath_like(source):
        fs = source.fs
        protocol = source.protocol if isinstance(source.protocol, str) else source.protocol[0]
        path = str(source.path)
        uri = f"{protocol}://{path}" if protocol not in ("", "file", "local") else path
        return _list(name, item, fs, path, uri, local=protocol in ("", "file", "local"))
    text = os.fspath(source)
    if "://" not in text:
        path = os.path.abspath(os.path.expanduser(text))
        return _list(name, item, None, path, path, local=True)
    scheme = text.split("://", 1)[0].lower()
    if scheme in ("file", "local"):
        path = text.split("://", 1)[1]
        return _list(name, item, None, path, path, local=True)
    fs = _filesystem(name, item, text, scheme)
    path = fs._strip_protocol(text)
    return _list(name, item, fs, path, _redact(text), local=False)


def _redact(url: str) -> str:
    """The URL without a user:password part."""
    scheme, rest = url.split("://", 1)
    host, sep, tail = rest.partition("/")
    if "@" in host:
        host = host.rsplit("@", 1)[1]
    return f"{scheme}://{host}{sep}{tail}"


def _filesystem(name: str, item: Input, url: str, scheme: str) -> Any:
    import fsspec

    try:
        cls = fsspec.get_filesystem_class(scheme)
    except ValueError:
        raise UnknownInputScheme(
            f"Input {name!r}: the URL scheme {scheme!r} of {_redact(url)} is not one fsspec knows. Use "
            "s3://, gs://, abfs://, an ObjectStoragePath or a local path."
        ) from None
    except ImportError as exc:
        raise MissingDependency(
            f"Input {name!r}: reading {scheme}:// needs {exc.name or exc}, which is not installed here "
            f"(for s3://: pip install 'airflow-provider-mltrain[s3]').",
            extra="s3" if scheme in ("s3", "s3a") else scheme,
            module=exc.name,
        ) from exc
    options = dict(item.storage_options or {})
    if item.conn_id:
        from airflow_provider_mltrain.core.artifacts import storage_options_for

        options = {**storage_options_for(url, item.conn_id), **options}
    # fsspec caches instances by their options (credentials included): the next submission from
    # this process reuses the client and its connections, so a cache hit costs one request.
    return cls(**options)


def _store_error(name: str, uri: str, exc: BaseException) -> MLTrainError | None:
    kind = type(exc).__name__
    text = str(exc)
    if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text or "NoSuchKey" in text:
        return InputNotFound(
            f"Input {name!r}: {uri} does not exist (no such object, prefix or bucket). Check the URL."
        )
    if (
        isinstance(exc, PermissionError)
        or kind in ("NoCredentialsError", "PartialCredentialsError", "ClientError")
        or "AccessDenied" in text
        or "InvalidAccessKeyId" in text
        or "SignatureDoesNotMatch" in text
    ):
        return InputCredentialsMissing(
            f"Input {name!r}: the store refused to read {uri} ({kind}: {text[:200]}). Give credentials: "
            "Input(..., conn_id='my_aws_conn') or storage_options={'key': ..., 'secret': ...}, or an "
            "ObjectStoragePath with a conn_id."
        )
    return None


def _list(name: str, item: Input, fs: Any, path: str, uri: str, local: bool) -> ResolvedInput:
    if local:
        return _list_local(name, item, path)
    if item.mode == "mount":
        raise InputError(
            f"Input {name!r}: {uri} is in an object store; mode='mount' takes a path on the target's "
            "machine (no filesystem driver mounts buckets here). Use mode='download' (cached)."
        )
    try:
        with contextlib.suppress(Exception):
            fs.invalidate_cache(path)  # a listing cached by an earlier submission may be stale
        info = fs.info(path)
        if info.get("type") == "directory":
            found = fs.find(path, detail=True)
            prefix = path.rstrip("/") + "/"
            files = [
                InputFile(p[len(prefix) :], int(d.get("size") or 0), _etag(d))
                for p, d in sorted(found.items())
                if d.get("type") != "directory" and p.startswith(prefix)
            ]
            single = None
            if not files:
                raise InputNotFound(f"Input {name!r}: {uri} is an empty folder; nothing to give the script.")
        else:
            files = [InputFile("", int(info.get("size") or 0), _etag(info))]
            single = path.rstrip("/").rsplit("/", 1)[-1]
    except MLTrainError:
        raise
    except Exception as exc:
        err = _store_error(name, uri, exc)
        if err is None:
            raise InputError(f"Input {name!r}: could not read {uri}: {type(exc).__name__}: {exc}") from exc
        raise err from None
    if single:
        files = [InputFile(single, files[0].size, files[0].etag)]
    version = files[0].etag if len(files) == 1 else _digest([f"{f.rel}\0{f.etag}" for f in files])[:32]
    return ResolvedInput(name, uri, item.mode, False, path, fs, files, single, version)


def _etag(info: Mapping[str, Any]) -> str:
    for key in ("VersionId", "ETag", "etag", "md5Hash", "generation"):
        value = info.get(key)
        if value:
            return str(value).strip('"')
    return f"{info.get('size')}:{info.get('LastModified') or info.get('mtime') or info.get('updated')}"


def _list_local(name: str, item: Input, path: str) -> ResolvedInput:
    p = Path(path)
    if not p.exists():
        raise InputNotFound(f"Input {name!r}: the local path {path} does not exist.")
    files: list[InputFile] = []
    if p.is_file():
        st = p.stat()
        files.append(InputFile(p.name, st.st_size, f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"))
        single: str | None = p.name
    else:
        single = None
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames.sort()
            for fname in sorted(filenames):
                full = Path(dirpath) / fname
                if full.is_symlink() or not full.is_file():
                    continue
                st = full.stat()
                rel = full.relative_to(p).as_posix()
                files.append(InputFile(rel, st.st_size, f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"))
    version = _digest([f"{f.rel}\0{f.etag}" for f in files])[:32]
    return ResolvedInput(name, str(p), item.mode, True, str(p), None, files, single, version)


def _digest(lines: list[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


# -- fetching into the content cache --------------------------------------------------------------


def cache_root(workspace_root: Path) -> Path:
    return workspace_root / "cache" / "inputs"


def fetch(inp: ResolvedInput, root: Path) -> None:
    """Make ``inp``'s cached copy (download mode): nothing is read when the cache holds this content.

    The key is the store's identity of the content (ETag / version id and size per object; for a
    local path its own path, sizes and mtimes), so an edited object gets a new copy. Concurrent
    submissions of one input wait on a lock and the second finds the first one's copy.
    """
    if inp.mode == "mount":
        return
    ident = ["local:" + inp.path if inp.local else "store"]
    inp.key = _digest(ident + [f"{f.rel}\0{f.size}\0{f.etag}" for f in inp.files])[:40]
    inp.cache_dir = root / inp.key
    meta_path = inp.cache_dir / "meta.json"
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / f"{inp.key}.lock"):
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if _unchanged(inp.cache_dir / "data", meta.get("stat") or {}):
                inp.sha256, inp.cache_hit = meta["sha256"], True
                inp.hash_pending = inp.sha256 is None  # its hashing was cut short: hashed again
                with contextlib.suppress(OSError):
                    os.utime(meta_path)  # last use, for a prune
                return
            # A script on the local target (as root, past the read-only bits) changed the copy.
            logger.warning(
                "Input %s: the cached copy was changed since it was fetched; fetching again", inp.name
            )
            _rmtree(inp.cache_dir)
        tmp = root / f".tmp-{inp.key}-{secrets.token_hex(4)}"
        try:
            data = tmp / "data"
            data.mkdir(parents=True)
            lines, fetched = [], 0
            inp.hash_pending = inp.size > HASH_AFTER_START
            for f in inp.files:
                dest = data / f.rel
                _check_rel(inp, f.rel)
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = inp.path if inp.single else f"{inp.path.rstrip('/')}/{f.rel}"
                digest, n = _copy(inp, src, dest, f.size, hashed=not inp.hash_pending)
                lines.append(f"{f.rel}\0{digest}")
                fetched += n
            inp.sha256 = None if inp.hash_pending else _digest(lines)
            inp.fetched_bytes = fetched
            meta = {
                "uri": inp.uri,
                "sha256": inp.sha256,
                **({"order": [f.rel for f in inp.files]} if inp.hash_pending else {}),
                "size": fetched,
                "fetched_at": time.time(),
                "stat": _stat_files(data),
            }
            (tmp / "meta.json").write_text(json.dumps(meta))
            os.rename(tmp, inp.cache_dir)
        except BaseException:
            _rmtree(tmp)
            raise
    logger.info("Input %s: fetched %s (%d bytes) into the cache", inp.name, inp.uri, inp.fetched_bytes)


def _stat_files(data: Path) -> dict[str, list[int]]:
    out = {}
    for dirpath, _dirs, filenames in os.walk(data):
        for fname in filenames:
            full = os.path.join(dirpath, fname)
            st = os.lstat(full)
            out[os.path.relpath(full, data)] = [st.st_size, st.st_mtime_ns]
    return out


def _unchanged(data: Path, recorded: dict[str, Any]) -> bool:
    """Whether the cached files are the ones fetched (sizes and mtimes: a stat each, no read)."""
    try:
        return bool(recorded) and _stat_files(data) == {k: list(v) for k, v in recorded.items()}
    except OSError:
        return False


def _check_rel(inp: ResolvedInput, rel: str) -> None:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InputError(
            f"Input {inp.name!r}: {inp.uri} holds an object named {rel!r}, which is no file path."
        )


def _copy(inp: ResolvedInput, src: str, dest: Path, size: int, hashed: bool = True) -> tuple[str, int]:
    """Copy one file into the cache; its sha256 as it went by ("" when not ``hashed``)."""
    h = hashlib.sha256() if hashed else _NoHash()
    n = 0
    try:
        if not inp.local and size > RANGE:
            digest, n = _copy_ranges(inp, src, dest, size, h)
            os.chmod(dest, 0o444)
            return digest, n
        reader = open(src, "rb") if inp.local else inp.fs.open(src, "rb", block_size=CHUNK)  # noqa: SIM115
        with reader as r, open(dest, "wb") as w:
            while True:
                chunk = r.read(CHUNK)
                if not chunk:
                    break
                h.update(chunk)
                w.write(chunk)
                n += len(chunk)
    except MLTrainError:
        raise
    except Exception as exc:
        err = _store_error(inp.name, inp.uri, exc)
        if err is None:
            raise InputError(
                f"Input {inp.name!r}: fetching {src} failed: {type(exc).__name__}: {exc}"
            ) from exc
        raise err from None
    os.chmod(dest, 0o444)  # the script reads the cache; it must not change it for the next run
    return h.hexdigest(), n


class _NoHash:
    def update(self, data: bytes) -> None:
        pass

    def hexdigest(self) -> str:
        return ""


def _copy_ranges(inp: ResolvedInput, src: str, dest: Path, size: int, h: Any) -> tuple[str, int]:
    """A big object in ranges fetched ``PARALLEL`` at a time (one stream cannot fill the link),
    each written at its offset by the thread that fetched it, into a file allocated whole first;
    hashed (by ``h``) in order as the ranges arrive.

    Allocating the file first and writing from several threads is what makes the write keep up:
    measured on a 2-core VM, 1 GiB written by one thread with no allocation took 1.3-3.3 s, with
    it and 2-4 threads 0.4-0.6 s (the kernel's page-cache and extent work, in parallel). On S3 the
    ranges come over plain HTTP connections of their own (:class:`_RangeReader`).
    """
    n = 0
    starts = iter(range(0, size, RANGE))
    fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    ranges = None
    hashing = not isinstance(h, _NoHash)
    try:
        with contextlib.suppress(OSError):  # not every filesystem can; then the writes allocate
            os.posix_fallocate(fd, 0, size)

        ranges = _RangeReader.for_object(inp.fs, src)

        def fetch_and_write(start: int) -> tuple[bytes, int]:
            """One range written at its offset; its bytes when they are hashed, and its length."""
            end = min(start + RANGE, size)
            if ranges is not None:
                ranges.write(fd, start, end)
                return (os.pread(fd, end - start, start) if hashing else b""), end - start
            data = inp.fs.cat_file(src, start=start, end=end)
            view, at = memoryview(data), start
            while view:
                written = os.pwrite(fd, view, at)
                view, at = view[written:], at + written
            return data, len(data)

        with ThreadPoolExecutor(PARALLEL) as pool:
            pending: collections.deque[Future[tuple[bytes, int]]] = collections.deque()

            def more() -> None:
                start = next(starts, None)
                if start is not None:
                    pending.append(pool.submit(fetch_and_write, start))

            for _ in range(PARALLEL * 2):
                more()
            while pending:
                chunk, length = pending.popleft().result()
                more()
                h.update(chunk)
                n += length
    finally:
        os.close(fd)
        if ranges is not None:
            ranges.close()
    if n != size:
        raise InputError(
            f"Input {inp.name!r}: {src} changed while it was fetched ({n} bytes read, {size} listed). "
            "Submit again."
        )
    return h.hexdigest(), n


class _RangeReader:
    """Ranges of one S3 object fetched with a presigned URL over ``http.client`` connections, one
    per thread, each read straight into its buffer.

    s3fs answers every request of every thread on its one event-loop thread, in Python: measured
    on a 2-core VM, 1 GiB in 16 MiB ranges 4 at a time took 1.9 s through it, against 0.75 s this
    way and 1.5 s for ``rclone copy`` (which the first fetch is measured against). The URL comes
    from s3fs itself (its credentials, region, endpoint and version id); the request is a plain
    GET with a Range header, checked to answer exactly that range. Anything this does not cover
    (another store, a proxy, request-payer or SSE-C options, a CA folder, no trust store at all)
    keeps the s3fs path.
    """

    EXPIRES = 3600  # seconds: a presigned URL is made per fetch, and a fetch retries within this
    TIMEOUT = 60.0  # per socket operation, botocore's default read timeout
    ATTEMPTS = 3
    BUFFER = 1 << 20

    def __init__(self, url: str, context: Any) -> None:
        import urllib.parse

        parts = urllib.parse.urlsplit(url)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname or "", parts.port
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.context = context
        self.local = threading.local()
        self.opened: list[Any] = []  # every thread's connection, closed by close()
        self.lock = threading.Lock()

    @classmethod
    def for_object(cls, fs: Any, src: str) -> _RangeReader | None:
        import urllib.parse
        import urllib.request

        if not {"s3", "s3a"} & set(fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
            return None
        if getattr(fs, "req_kw", None) or getattr(fs, "s3_additional_kwargs", None):
            return None  # request-payer, SSE-C and the like: headers a presigned GET does not carry
        url = fs.url(src, expires=cls.EXPIRES)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(parts.hostname):
            return None  # botocore would go through the proxy; http.client would not
        context = None
        if parts.scheme == "https":
            context = cls._ssl_context(fs)
            if context is None:
                return None
        return cls(url, context)

    @staticmethod
    def _ssl_context(fs: Any) -> Any:
        """What the server is verified with: ``verify`` in the client's options (False, or a CA
        bundle's path) or ``AWS_CA_BUNDLE``, as botocore reads them, else the system's trust store.
        None (the s3fs path, whose botocore brings its own bundle) for a bundle that is a folder or
        a system with no trust store."""
        import ssl

        verify = (getattr(fs, "client_kwargs", None) or {}).get("verify", None)
        if verify is False:
            return ssl._create_unverified_context()  # noqa: S323 (the user's own choice, as for s3fs)
        cafile = verify if isinstance(verify, str) else os.environ.get("AWS_CA_BUNDLE")
        if cafile is not None:
            return ssl.create_default_context(cafile=cafile) if os.path.isfile(cafile) else None
        paths = ssl.get_default_verify_paths()
        if not any(p and os.path.exists(p) for p in (paths.cafile, paths.capath)):
            return None
        return ssl.create_default_context()

    def _connection(self, fresh: bool = False) -> Any:
        import http.client

        conn = getattr(self.local, "conn", None)
        if conn is not None and not fresh:
            return conn
        if conn is not None:
            conn.close()
        if self.https:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.TIMEOUT, context=self.context
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.TIMEOUT)
        self.local.conn = conn
        with self.lock:
            self.opened.append(conn)
        return conn

    def close(self) -> None:
        with self.lock:
            opened, self.opened = self.opened, []
        for conn in opened:
            conn.close()

    def write(self, fd: int, start: int, end: int) -> None:
        """Bytes ``start`` to ``end`` (exclusive) of the object written at the same offsets of
        ``fd``; a dropped connection is opened again and the range read again."""
        import http.client

        for attempt in range(self.ATTEMPTS):
            try:
                return self._write(self._connection(fresh=attempt > 0), fd, start, end)
            except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
                if attempt == self.ATTEMPTS - 1:
                    raise OSError(
                        f"reading bytes {start}-{end - 1} failed: {type(exc).__name__}: {exc}"
                    ) from exc

    def _write(self, conn: Any, fd: int, start: int, end: int) -> None:
        import http.client

        conn.request("GET", self.target, headers={"Range": f"bytes={start}-{end - 1}"})
        resp = conn.getresponse()
        if resp.status != 206:
            body = resp.read(4096).decode("utf-8", "replace")
            conn.close()
            if resp.status == 404 or "NoSuchKey" in body:
                raise FileNotFoundError(f"NoSuchKey: {body[:200]}")
            if resp.status == 403:
                raise PermissionError(f"AccessDenied (HTTP 403): {body[:200]}")
            raise OSError(f"HTTP {resp.status} for a ranged read: {body[:200]}")
        # One buffer per thread, used again for every range: a new 16 MiB buffer per range costs
        # its page faults every time (measured: a 1 GiB fetch 2.0 s instead of 1.5 s at one load).
        buf = getattr(self.local, "buf", None)
        if buf is None:
            buf = self.local.buf = memoryview(bytearray(self.BUFFER))
        at = start
        while at < end:
            got = resp.readinto(buf[: min(self.BUFFER, end - at)])
            if not got:
                break
            view = buf[:got]
            while view:
                written = os.pwrite(fd, view, at)
                view, at = view[written:], at + written
        if at != end or resp.read(1):
            conn.close()
            raise http.client.IncompleteRead(b"", end - at)


def hash_local(inp: ResolvedInput) -> None:
    """The content hash of a mounted local input (read once; recorded with the run)."""
    base = Path(inp.path)
    inp.sha256 = _hash_files([(f.rel, base if inp.single else base / f.rel) for f in inp.files])


def _hash_files(files: Iterable[tuple[str, Path]]) -> str:
    """An input's content hash: each (name in the input, file to read) in the input's order."""
    lines = []
    for rel, full in files:
        h = hashlib.sha256()
        with open(full, "rb") as r:
            while chunk := r.read(CHUNK):
                h.update(chunk)
        lines.append(f"{rel}\0{h.hexdigest()}")
    return _digest(lines)


# -- hashes computed after the submission (HASH_AFTER_START) -----------------------------------------

_hashing: dict[str, threading.Thread] = {}  # run id -> the thread hashing its inputs in this process
_hashing_lock = threading.Lock()


def hash_after_start(store: Any, run_id: str, resolved: list[ResolvedInput]) -> None:
    """Hash the inputs fetched unhashed, in a thread, and record their hashes on the run.

    Not a daemon thread: a process that submits and exits (``mltrain submit``) finishes it first.
    Should the process die first, the run's end fills the hashes in (``complete_hashes``).
    """
    pending = [inp for inp in resolved if inp.hash_pending]
    if not pending:
        return

    def work() -> None:
        try:
            _record_hashes(store, run_id, {inp.name: _hash_cached(inp) for inp in pending})
        except Exception as exc:  # never a run's outcome: the run's end tries again
            logger.warning("Run %s: hashing its inputs failed (%s: %s)", run_id, type(exc).__name__, exc)
        finally:
            with _hashing_lock:
                _hashing.pop(run_id, None)

    thread = threading.Thread(target=work, name=f"mltrain-hash-{run_id}")
    with _hashing_lock:
        _hashing[run_id] = thread
    thread.start()


def _hash_cached(inp: ResolvedInput) -> str:
    """Hash the cached copy and keep the hash in its meta.json, so the next run finds it there."""
    assert inp.cache_dir is not None
    digest = _hash_files((f.rel, inp.cache_dir / "data" / f.rel) for f in inp.files)
    meta_path = inp.cache_dir / "meta.json"
    with _lock(inp.cache_dir.parent / f"{inp.key}.lock"), contextlib.suppress(OSError, ValueError):
        meta = json.loads(meta_path.read_text())
        if meta.get("sha256") is None and _unchanged(inp.cache_dir / "data", meta.get("stat") or {}):
            meta["sha256"] = digest
            tmp = meta_path.with_name(f".meta-{secrets.token_hex(4)}.json")
            tmp.write_text(json.dumps(meta))
            os.replace(tmp, meta_path)
    inp.sha256, inp.hash_pending = digest, False
    return digest


def _record_hashes(store: Any, run_id: str, hashes: Mapping[str, str]) -> None:
    def change(properties: dict[str, Any]) -> dict[str, Any]:
        entries = _input_entries(properties)
        for entry in entries:
            if entry.get("name") in hashes and not entry.get("sha256"):
                entry["sha256"] = hashes[entry["name"]]
        return {**properties, INPUTS_PROPERTY: json.dumps(entries)}

    store.change_properties(run_id, change)
    logger.info("Run %s: content hash of input(s) %s recorded", run_id, ", ".join(sorted(hashes)))


def complete_hashes(store: Any, run_id: str, properties: Mapping[str, Any], workspace_root: Path) -> None:
    """At a run's end: the hashes still missing from its record, from this process's hashing
    thread (waited for), else the cache's meta.json, else the cached copy read now."""
    with _hashing_lock:
        thread = _hashing.get(run_id)
    if thread is not None:
        thread.join()
        return
    missing = [e for e in _input_entries(properties) if e.get("mode") == "download" and not e.get("sha256")]
    hashes = {}
    for entry in missing:
        key = entry.get("cache_key")
        folder = cache_root(workspace_root) / str(key)
        if not key or not (folder / "meta.json").is_file():
            continue  # fetched on another host: its submitter records the hash
        try:
            meta = json.loads((folder / "meta.json").read_text())
            digest = meta.get("sha256")
            if digest is None and _unchanged(folder / "data", meta.get("stat") or {}):
                digest = _hash_files((rel, folder / "data" / rel) for rel in meta["order"])
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("Run %s: input %s could not be hashed: %s", run_id, entry.get("name"), exc)
            continue
        if digest:
            hashes[str(entry["name"])] = digest
    if hashes:
        _record_hashes(store, run_id, hashes)


@contextlib.contextmanager
def _lock(path: Path) -> Any:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _rmtree(path: Path) -> None:
    if not path.exists():
        return
    for dirpath, _dirs, filenames in os.walk(path):
        for fname in filenames:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(dirpath, fname), 0o644)
    shutil.rmtree(path, ignore_errors=True)


_KEY_IN_PATH = re.compile(r"/cache/inputs/([0-9a-f]{40})(?:/|$)")


def prune_cache(
    workspace_root: Path, records: Iterable[Mapping[str, Any]], days: float, dry_run: bool = False
) -> list[Path]:
    """Delete the cached copies of inputs no run used in the last ``days``.

    ``records`` are the run store's runs: a copy named by a run created in that window, or by a run
    not ended yet, is kept whatever its age. A copy's last use is when a submission last found or
    fetched it. Each is deleted under its key's lock, so a submission fetching or reading it at
    that moment is never cut; half-made copies (``.tmp-*``) of crashed fetches go too.
    """
    root = cache_root(workspace_root)
    if not root.is_dir():
        return []
    cutoff = time.time() - days * 86400
    keep = keys_in_use(records, days)
    removed = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.is_symlink() or folder.name in keep:
            continue
        tmp = folder.name.startswith(".tmp-")
        try:
            used = (folder if tmp else folder / "meta.json").stat().st_mtime
        except OSError:
            used = 0.0  # no meta.json: a copy that never finished
        if used >= cutoff:
            continue
        removed.append(folder)
        if dry_run:
            continue
        key = folder.name.split("-")[1] if tmp else folder.name
        with _lock(root / f"{key}.lock"):
            _rmtree(folder)
    return removed


def keys_in_use(records: Iterable[Mapping[str, Any]], days: float) -> set[str]:
    """The content keys of the inputs named by a run created in the last ``days`` or not ended yet:
    their cached copies (here or on a target) stay whatever their age."""
    from airflow_provider_mltrain.core.states import RunStatus

    cutoff = time.time() - days * 86400
    keep: set[str] = set()
    for record in records:
        if record["created_at"] < cutoff and RunStatus(record["status"]).is_terminal:
            continue
        for entry in _input_entries(record.get("properties") or {}):
            key = entry.get("cache_key")
            if not key and isinstance(entry.get("path"), str):
                m = _KEY_IN_PATH.search(entry["path"])
                key = m.group(1) if m else None
            if key:
                keep.add(str(key))
    return keep


def _input_entries(properties: Mapping[str, Any]) -> list[dict[str, Any]]:
    try:
        value = json.loads(properties.get(INPUTS_PROPERTY) or "[]")
    except ValueError:
        return []
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def prepare(raw: Mapping[str, Any] | None, workspace_root: Path, target: Any) -> list[ResolvedInput]:
    """Resolve every input, let the target place it (refusing what it cannot do), then fetch.

    Everything here happens before the run is recorded: a bad input is refused with nothing
    submitted.
    """
    items = normalize_inputs(raw)
    if not items:
        return []
    resolved = [resolve(name, item) for name, item in items.items()]
    for inp in resolved:
        inp.path_on_compute = items[inp.name].path_on_compute
        inp.conn_id = items[inp.name].conn_id
        target.check_input(inp)
    root = cache_root(workspace_root)
    for inp in resolved:
        if inp.mode == "download":
            fetch(inp, root)
        else:
            hash_local(inp)
        inp.target_path = target.input_path(inp)
    return resolved


def environment(resolved: list[ResolvedInput]) -> dict[str, str]:
    """The variables the script finds its inputs by."""
    env = {inp.env_name(): inp.target_path for inp in resolved}
    if resolved:
        env["MLTRAIN_INPUTS"] = json.dumps({inp.name: inp.target_path for inp in resolved})
    return env
