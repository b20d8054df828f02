"""The artifact store: where a workspace keeps snapshot content, manifests, run logs and outputs.

A workspace is a run store (SQLAlchemy) plus an artifact store. The artifact store is a local folder
by default (the workspace root: nothing but Python needed) or any fsspec URL (``s3://bucket/prefix``,
``gs://...``, ``abfs://...``) in a deployment of several hosts; local disk is then a cache only.

Objects are named by the caller with ``/``-separated relative names and are written whole: a reader
sees an object complete or not at all, never half of it. Names are idempotent by design (content
hashes, a run id plus a chunk index), so writing the same name twice writes the same bytes, and a
stale writer and a retry of the same run cannot corrupt each other.

The core never imports Airflow: credentials come as fsspec ``storage_options``. The Airflow layer
turns an Airflow connection id into those options (``[mltrain] artifact_store_conn_id``), as
``ObjectStoragePath`` does; outside Airflow, the backend's own configuration applies (for S3 the
usual ``AWS_*`` variables and files).
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from airflow_provider_mltrain.core.errors import MLTrainError
from airflow_provider_mltrain.core.private import make_private_dirs

log = logging.getLogger(__name__)


class ArtifactStoreError(MLTrainError):
    """The artifact store cannot be reached or used (credentials, bucket, endpoint, a full store)."""


def check_name(name: str) -> str:
    """A relative ``/``-separated object name with no empty, ``.`` or ``..`` part."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in name:
        raise ValueError(f"invalid artifact name {name!r}")
    return name


class ArtifactStore(ABC):
    """One interface over a local folder and object stores. Every method may raise
    :class:`ArtifactStoreError` for a store that cannot be used; reads of a missing object raise
    ``FileNotFoundError``."""

    url: str

    @abstractmethod
    def put_bytes(self, name: str, data: bytes) -> None:
        """Write one whole object (replacing one of the same name)."""

    @abstractmethod
    def put_file(self, name: str, path: str | os.PathLike[str]) -> None:
        """Upload a local file as one object; large files go in parts (multipart on S3)."""

    @abstractmethod
    def get_bytes(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of an object from ``offset``, at most ``length`` of them (a ranged read)."""

    @abstractmethod
    def open(self, name: str) -> IO[bytes]:
        """A binary stream over one object, for streaming downloads; the caller closes it."""

    @abstractmethod
    def size(self, name: str) -> int | None:
        """The object's size in bytes, or None when there is no such object."""

    @abstractmethod
    def list(self, prefix: str) -> dict[str, int]:
        """Every object under the folder ``prefix`` (at any depth): name -> size. One listing
        request per thousand objects on object stores, not one per object."""

    @abstractmethod
    def delete(self, names: Iterable[str]) -> None:
        """Remove objects (missing ones are ignored)."""

    def exists_many(self, names: Iterable[str], prefix: str) -> set[str]:
        """Which of ``names`` (all under the folder ``prefix``) exist: one listing of the prefix,
        not one request per name."""
        wanted = set(names)
        if not wanted:
            return set()
        return wanted & set(self.list(prefix))

    def get_file(self, name: str, dest: str | os.PathLike[str]) -> None:
        """Download one object to ``dest`` (written to a temporary file, then renamed)."""
        dest = Path(dest)
        make_private_dirs(dest.parent)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as out, self.open(name) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def check(self) -> None:
        """Prove the store is usable (reachable, credentials accepted, bucket there, writable),
        raising :class:`ArtifactStoreError` naming the problem and the fix. Called before a run is
        submitted."""
        probe = f"_probe/{uuid.uuid4().hex}"
        self.put_bytes(probe, b"ok")
        try:
            if self.get_bytes(probe) != b"ok":
                raise ArtifactStoreError(f"The artifact store {self.url} gave back other bytes.")
        finally:
            self.delete([probe])

    @property
    def is_local(self) -> bool:
        return False


class LocalArtifactStore(ArtifactStore):
    """Objects are files under ``root`` (owner-only), written to a temporary file and renamed."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().absolute()
        self.url = str(self.root)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({self.url!r})"

    @property
    def is_local(self) -> bool:
        return True

    def path(self, name: str) -> Path:
        return self.root.joinpath(*check_name(name).split("/"))

    def put_bytes(self, name: str, data: bytes) -> None:
        dest = self.path(name)
        make_private_dirs(dest.parent)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def put_file(self, name: str, path: str | os.PathLike[str]) -> None:
        dest = self.path(name)
        make_private_dirs(dest.parent)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def get_bytes(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        with open(self.path(name), "rb") as f:
            f.seek(offset)
            return f.read() if length is None else f.read(length)

    def open(self, name: str) -> IO[bytes]:
        return open(self.path(name), "rb")

    def size(self, name: str) -> int | None:
        try:
            return self.path(name).stat().st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> dict[str, int]:
        base = self.path(prefix)
        found: dict[str, int] = {}
        for folder, _dirs, files in os.walk(base):
            rel = Path(folder).relative_to(self.root).as_posix()
            for f in files:
                if f.startswith("."):
                    continue  # a write in progress
                with contextlib.suppress(FileNotFoundError):
                    found[posixpath.join(rel, f)] = os.stat(os.path.join(folder, f)).st_size
        return found

    def delete(self, names: Iterable[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                self.path(name).unlink()


class FsspecArtifactStore(ArtifactStore):
    """Objects under an fsspec URL (``s3://bucket/prefix``); ``storage_options`` carry credentials
    and endpoints (for s3fs: ``key``, ``secret``, ``client_kwargs={"endpoint_url": ...}``)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        import fsspec

        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        protocol = url.split("://", 1)[0]
        try:
            self.fs = fsspec.filesystem(protocol, **self.storage_options)
        except ImportError as exc:
            raise ArtifactStoreError(
                f"The artifact store {url} needs the fsspec backend for {protocol}:// ({exc}). "
                f"Install it (for s3://: pip install 'airflow-provider-mltrain[s3]')."
            ) from exc
        self._base = self.fs._strip_protocol(self.url).rstrip("/")

    def __repr__(self) -> str:
        return f"FsspecArtifactStore({self.url!r})"  # storage options hold secrets: never shown

    def _full(self, name: str) -> str:
        return f"{self._base}/{check_name(name)}"

    def put_bytes(self, name: str, data: bytes) -> None:
        self.fs.pipe_file(self._full(name), data)

    def put_file(self, name: str, path: str | os.PathLike[str]) -> None:
        self.fs.put_file(str(path), self._full(name))

    def get_bytes(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        end = None if length is None else offset + length
        if end is not None and end <= offset:
            return b""
        return bytes(self.fs.cat_file(self._full(name), start=offset or None, end=end))

    def open(self, name: str) -> IO[bytes]:
        return self.fs.open(self._full(name), "rb")

    def size(self, name: str) -> int | None:
        try:
            return int(self.fs.size(self._full(name)))
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> dict[str, int]:
        base = self._full(prefix)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        start = len(self._base) + 1
        return {
            path[start:]: int(info.get("size") or 0)
            for path, info in found.items()
            if info.get("type") != "directory" and len(path) > start
        }

    def delete(self, names: Iterable[str]) -> None:
        paths = [self._full(n) for n in names]
        if paths:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(paths)


def open_store(url: str, storage_options: dict[str, Any] | None = None) -> ArtifactStore:
    """The store of a URL: a plain path (or ``file://``) is a local folder, anything else fsspec."""
    if "://" not in url:
        return LocalArtifactStore(url)
    if url.startswith("file://"):
        return LocalArtifactStore(url[len("file://") :])
    return FsspecArtifactStore(url, storage_options)


def iter_chunks(stream: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk
