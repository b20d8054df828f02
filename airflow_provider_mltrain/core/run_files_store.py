"""A run's log and files in the artifact store, so that any host reads them from the workspace alone.

Used only when the workspace's artifact store is not local (with the default store, the workspace
root, a run's files stay where ``Run`` collects them). Objects of run ``<id>``:

``runs/<id>/log/<offset:016d>-<end:016d>``
    the live log: bytes ``offset`` to ``end`` of ``logs/std_log.txt``, appended by whoever follows
    the run. The log is append-only, so two followers writing the same range write the same bytes,
    and chunks of different ranges are different objects: a stale follower never replaces a longer
    chunk by a shorter one. Readers take each byte from any chunk that holds it.
``runs/<id>/files/<name>``
    the collected ``outputs/`` and ``logs/`` (names that are no valid object name, such as
    non-UTF-8 ones or those longer than the store's keys may be, go under
    ``runs/<id>/files/_/<sha256 of the name>``).
``runs/<id>/manifest.json``
    written last: every file's object, size and sha256, and the links as links (never followed).
    Its presence means the upload is complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from airflow_provider_mltrain.core.artifacts import ArtifactStore, check_name
from airflow_provider_mltrain.core.runfiles import RunFiles, list_folder
from airflow_provider_mltrain.runner import tree

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# One chunk object holds at most this much of the log: a burst of output is several objects.
MAX_LOG_CHUNK = 8 << 20
READ_BLOCK = 1 << 20
# A download streams in ranged reads of this size: few requests, bounded memory per download.
STREAM_BLOCK = 8 << 20
_OFFSET_DIGITS = 16
# Files of one run uploaded at once at finalization (a multipart upload has its own parts in flight).
UPLOAD_WORKERS = 4


def run_prefix(run_id: str) -> str:
    return check_name(f"runs/{run_id}")


def log_prefix(run_id: str) -> str:
    return f"{run_prefix(run_id)}/log"


def file_key(run_id: str, name: str, max_bytes: int | None = None) -> str:
    """The object of run file ``name``: the name itself where it is a valid object name of at most
    ``max_bytes`` (the store's limit: a deep tree's path can exceed S3's 1,024 bytes)."""
    try:
        key = check_name(f"{run_prefix(run_id)}/files/{name}")
        if max_bytes is None or len(key.encode("utf-8")) <= max_bytes:
            return key
    except (UnicodeEncodeError, ValueError):
        pass
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{run_prefix(run_id)}/files/_/{digest}"


# -- the live log ---------------------------------------------------------------------------------


def chunk_name(run_id: str, offset: int, end: int) -> str:
    return f"{log_prefix(run_id)}/{offset:0{_OFFSET_DIGITS}d}-{end:0{_OFFSET_DIGITS}d}"


def log_chunks(store: ArtifactStore, run_id: str) -> dict[int, int]:
    """The log chunks in the store: offset -> size (the longest chunk at each offset), from one
    listing."""
    prefix = log_prefix(run_id)
    chunks: dict[int, int] = {}
    for name, size in store.list(prefix).items():
        start, _, end = name[len(prefix) + 1 :].partition("-")
        if start.isdigit() and end.isdigit() and size == int(end) - int(start) > 0:
            chunks[int(start)] = max(size, chunks.get(int(start), 0))
    return chunks


def log_end(chunks: dict[int, int]) -> int:
    """How many bytes of the log, from its start, the chunks hold without a gap."""
    end = 0
    for offset in sorted(chunks):
        if offset > end:
            break
        end = max(end, offset + chunks[offset])
    return end


def read_log(store: ArtifactStore, run_id: str, offset: int = 0, length: int | None = None) -> bytes:
    """Bytes ``offset`` to ``offset + length`` of the log as the chunks hold it; stops at a gap."""
    chunks = log_chunks(store, run_id)
    end = log_end(chunks)
    if length is not None:
        end = min(end, offset + max(0, length))
    out = bytearray()
    pos = offset
    starts = sorted(chunks)
    while pos < end:
        # The chunk that holds ``pos`` and reaches furthest (followers may have overlapped).
        best = max((s for s in starts if s <= pos < s + chunks[s]), key=lambda s: s + chunks[s], default=None)
        if best is None:
            break
        data = store.get_bytes(chunk_name(run_id, best, best + chunks[best]), pos - best, end - pos)
        if not data:
            break
        out += data
        pos += len(data)
    return bytes(out)


def push_log(
    store: ArtifactStore, run_id: str, read: Callable[[int, int], bytes], start: int | None = None
) -> int:
    """Append the log bytes ``read(offset, length)`` gives from ``start`` (default: the end already
    in the store) as chunk objects; returns the new end. Errors of the store propagate."""
    end = log_end(log_chunks(store, run_id)) if start is None else start
    while True:
        data = read(end, MAX_LOG_CHUNK)
        if not data:
            return end
        store.put_bytes(chunk_name(run_id, end, end + len(data)), data)
        end += len(data)
        if len(data) < MAX_LOG_CHUNK:
            return end


# -- collected files ------------------------------------------------------------------------------


def upload_files(store: ArtifactStore, run_id: str, folder: Path) -> dict[str, Any]:
    """Upload a collected run folder (``outputs/``, ``logs/``, ``links.json``) and then its manifest.

    Resumable: objects already in the store with the right size are not sent again, so an upload
    cut short (a killed worker, a store that went down) goes on where it stopped. Returns the
    manifest.
    """
    entries = list_folder(folder)
    present = store.list(f"{run_prefix(run_id)}/files")

    def upload(name: str) -> tuple[dict[str, Any], bool] | None:
        fd = tree.open_file(str(folder), name)
        if fd is None:
            return None  # not a regular file any more: our own cache, so nothing to serve
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "rb") as f:
            while block := f.read(READ_BLOCK):
                digest.update(block)
                size += len(block)
        key = file_key(run_id, name, store.max_name_bytes)
        send = present.get(key) != size
        if send:
            store.put_file(key, folder / name)
        return {"key": key, "size": size, "sha256": digest.hexdigest()}, send

    # Files go up at once in a bounded pool; the first failure cancels what has not started and
    # propagates before the manifest is written, so the upload stays incomplete (and resumable).
    files: dict[str, dict[str, Any]] = {}
    sent = 0
    pool = ThreadPoolExecutor(max_workers=UPLOAD_WORKERS)
    try:
        for name, done in zip(entries.files, pool.map(upload, entries.files)):
            if done is not None:
                files[name] = done[0]
                sent += done[1]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    manifest = {"version": 1, "run_id": run_id, "files": files, "links": entries.links}
    store.put_bytes(f"{run_prefix(run_id)}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
    log.info(
        "Run %s: %d files in the artifact store %s (%d sent, %d already there)",
        run_id,
        len(files),
        store.url,
        sent,
        len(files) - sent,
    )
    _remember(store, run_id, manifest)
    return manifest


# A manifest never changes once written: kept per process, for pages that read it several times.
_manifests: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
_manifests_lock = threading.Lock()
_MAX_MANIFESTS = 64


def _remember(store: ArtifactStore, run_id: str, manifest: dict[str, Any]) -> None:
    with _manifests_lock:
        _manifests[(store.url, run_id)] = manifest
        while len(_manifests) > _MAX_MANIFESTS:
            _manifests.popitem(last=False)


def read_manifest(store: ArtifactStore, run_id: str) -> dict[str, Any] | None:
    """The run's manifest, or None before its upload completed."""
    with _manifests_lock:
        known = _manifests.get((store.url, run_id))
    if known is not None:
        return known
    try:
        manifest = json.loads(store.get_bytes(f"{run_prefix(run_id)}/{MANIFEST}"))
    except FileNotFoundError:
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None
    _remember(store, run_id, manifest)
    return manifest


def manifest_entries(manifest: dict[str, Any] | None) -> RunFiles:
    if not manifest:
        return RunFiles()
    links = manifest.get("links")
    if not isinstance(links, dict):
        links = {}
    return RunFiles(sorted(manifest["files"]), {str(k): str(v) for k, v in sorted(links.items())})


def file_entry(manifest: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    entry = (manifest or {}).get("files", {}).get(name)
    return entry if isinstance(entry, dict) and isinstance(entry.get("key"), str) else None


def read_file(
    store: ArtifactStore, entry: dict[str, Any], offset: int = 0, length: int | None = None
) -> bytes:
    """Bytes of an uploaded file (a manifest entry) from ``offset``, at most ``length``."""
    size = int(entry["size"])
    if offset >= size:
        return b""
    if length is not None:
        length = max(0, min(length, size - offset))
    return store.get_bytes(entry["key"], offset, length)


class StoredFile(io.RawIOBase):
    """A read-only stream over one uploaded file: ranged reads of ``STREAM_BLOCK`` at most per call,
    so a download never holds the whole file in memory."""

    def __init__(self, store: ArtifactStore, entry: dict[str, Any]):
        self.store = store
        self.key = str(entry["key"])
        self.size = int(entry["size"])
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.size - self.pos, STREAM_BLOCK)
        if want <= 0:
            return 0
        data = self.store.get_bytes(self.key, self.pos, want)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)
