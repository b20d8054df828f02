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
import errno
import logging
import os
import posixpath
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from airflow_provider_mltrain.core.errors import MLTrainError
from airflow_provider_mltrain.core.private import make_private_dirs

log = logging.getLogger(__name__)


class ArtifactStoreError(MLTrainError):
    """The artifact store cannot be reached or used (credentials, bucket, endpoint, a full store)."""


class ArtifactStoreBackendMissing(ArtifactStoreError):
    """The fsspec package for the store's URL scheme (s3fs, gcsfs, adlfs) is not installed."""


class ArtifactStoreCredentialsRefused(ArtifactStoreError):
    """The store refused the credentials (missing, wrong, or without access to the bucket)."""


class ArtifactStoreBucketMissing(ArtifactStoreError):
    """The bucket (or container) the store's URL names does not exist."""


class ArtifactStoreUnreachable(ArtifactStoreError):
    """Nothing answers at the store's endpoint (wrong host or port, a network down)."""


# (connection id, store URL) -> fsspec storage options. The Airflow layer installs one (see
# ``airflow_provider_mltrain/__init__.py``); the core never imports Airflow itself.
StorageOptionsResolver = Callable[[str, str], dict[str, Any]]
_resolver: StorageOptionsResolver | None = None


def set_storage_options_resolver(resolver: StorageOptionsResolver | None) -> None:
    """Install the function that turns ``[mltrain] artifact_store_conn_id`` into fsspec options."""
    global _resolver
    _resolver = resolver


def storage_options_for(url: str, conn_id: str | None) -> dict[str, Any]:
    """The fsspec options of ``url`` with credentials from connection ``conn_id`` (none: {})."""
    if not conn_id:
        return {}
    if _resolver is None:
        raise ArtifactStoreError(
            f"[mltrain] artifact_store_conn_id is {conn_id!r}, but no Airflow connection resolver is "
            "installed (import airflow_provider_mltrain, which installs it, or unset "
            "MLTRAIN_ARTIFACT_STORE_CONN_ID and configure the backend itself, e.g. AWS_* variables)."
        )
    return _resolver(conn_id, url)


def check_name(name: str) -> str:
    """A relative ``/``-separated object name with no empty, ``.`` or ``..`` part."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in name:
        raise ValueError(f"invalid artifact name {name!r}")
    return name


@contextlib.contextmanager
def atomic_output(dest: Path) -> Iterator[IO[bytes]]:
    """A binary file that becomes ``dest`` (owner-only folders made) only once the block ends
    without an error: written under a hidden temporary name, then renamed; removed on error."""
    make_private_dirs(dest.parent)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


MAX_OBJECT_KEY_BYTES = 1024


class ArtifactStore(ABC):
    """One interface over a local folder and object stores. Every method may raise
    :class:`ArtifactStoreError` for a store that cannot be used; reads of a missing object raise
    ``FileNotFoundError``."""

    url: str

    @property
    def max_name_bytes(self) -> int | None:
        """The longest object name (UTF-8 bytes) this store takes; None: no limit of its own."""
        return None

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
        with atomic_output(Path(dest)) as out, self.open(name) as src:
            shutil.copyfileobj(src, out, 1 << 20)

    # How long a successful check() spares the next one (submissions in a loop check once).
    check_valid_for = 300.0
    _checked_at = 0.0

    def check(self, force: bool = False) -> None:
        """Prove the store is usable (reachable, credentials accepted, bucket there, writable),
        raising :class:`ArtifactStoreError` naming the problem and the fix. Called before a run is
        submitted; a success is trusted for :attr:`check_valid_for` seconds unless ``force``."""
        if not force and time.monotonic() - self._checked_at < self.check_valid_for:
            return
        self._check()
        self._checked_at = time.monotonic()

    def _check(self) -> None:
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
        with atomic_output(self.path(name)) as out:
            out.write(data)

    def put_file(self, name: str, path: str | os.PathLike[str]) -> None:
        with atomic_output(self.path(name)) as out, open(path, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)

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
    and endpoints (for s3fs: ``key``, ``secret``, ``client_kwargs={"endpoint_url": ...}``).

    Failures to use the store (not a missing object) raise the :class:`ArtifactStoreError`
    subclasses, whose messages name the setting and the connection to fix, never a secret.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, conn_id: str | None = None):
        import fsspec

        self.url = url.rstrip("/")
        self.conn_id = conn_id
        self.storage_options = dict(storage_options or {})
        self.protocol = url.split("://", 1)[0]
        try:
            self.fs = fsspec.filesystem(self.protocol, **self.storage_options)
        except ImportError:
            package = _BACKENDS.get(self.protocol, f"the fsspec implementation of {self.protocol}://")
            raise ArtifactStoreBackendMissing(
                f"The artifact store {self.url} needs {package}, which is not installed here. Install "
                f"it (pip install {package.split()[0]}; for s3:// pip install "
                "'airflow-provider-mltrain[s3]'), or change [mltrain] artifact_store."
            ) from None
        except ValueError as exc:  # an unknown scheme
            raise ArtifactStoreBackendMissing(
                f"[mltrain] artifact_store {self.url}: {exc}. Use a folder or an fsspec URL such as "
                "s3://bucket/prefix."
            ) from None
        self._base = self.fs._strip_protocol(self.url).rstrip("/")
        self.bucket = self._base.split("/", 1)[0]

    def __repr__(self) -> str:
        return f"FsspecArtifactStore({self.url!r})"  # storage options hold secrets: never shown

    def _full(self, name: str) -> str:
        return f"{self._base}/{check_name(name)}"

    @property
    def max_name_bytes(self) -> int | None:
        # S3, GCS and Azure Blob take keys of at most 1,024 bytes; the URL's prefix is part of it.
        prefix = self._base.partition("/")[2]
        return MAX_OBJECT_KEY_BYTES - (len(prefix.encode()) + 1 if prefix else 0)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError:
            raise
        except ArtifactStoreError:
            raise
        except Exception as exc:
            translated = self.translate(exc)
            if translated is None:
                raise
            raise translated from None

    def _where(self) -> str:
        if self.conn_id:
            return f"the Airflow connection {self.conn_id!r} ([mltrain] artifact_store_conn_id)"
        return (
            "the backend's own configuration (for S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
            "~/.aws), or name an Airflow connection in [mltrain] artifact_store_conn_id"
        )

    def translate(self, exc: BaseException, bucket_probe: bool = False) -> ArtifactStoreError | None:
        """The :class:`ArtifactStoreError` an fsspec/botocore failure means, or None when it is
        none of the store-level failures (a missing object, a bug)."""
        chain: list[BaseException] = []
        seen: BaseException | None = exc
        while seen is not None and len(chain) < 8:
            chain.append(seen)
            seen = seen.__cause__ or seen.__context__
        names = {type(e).__name__ for e in chain}
        codes = set()
        for e in chain:
            response = getattr(e, "response", None)
            if isinstance(response, dict):
                codes.add(str(response.get("Error", {}).get("Code", "")))
        if "NoCredentialsError" in names or "PartialCredentialsError" in names:
            return ArtifactStoreCredentialsRefused(
                f"No credentials for the artifact store {self.url}. Give them in {self._where()}."
            )
        if codes & _CREDENTIAL_CODES or any(isinstance(e, PermissionError) for e in chain):
            return ArtifactStoreCredentialsRefused(
                f"The artifact store {self.url} refused the credentials (wrong key or secret, or no "
                f"access to bucket {self.bucket!r}). Fix them in {self._where()}."
            )
        if codes & {"NoSuchBucket"} or (bucket_probe and codes & {"404", "NotFound"}):
            return ArtifactStoreBucketMissing(
                f"The bucket {self.bucket!r} of the artifact store {self.url} does not exist. Create "
                "it, or correct the bucket in [mltrain] artifact_store (MLTRAIN_ARTIFACT_STORE)."
            )
        if names & _UNREACHABLE or any(isinstance(e, (ConnectionError, TimeoutError)) for e in chain):
            endpoint = self._endpoint()
            return ArtifactStoreUnreachable(
                f"Nothing answers at the artifact store's endpoint {endpoint} ({self.url}). Check "
                f"that the server runs and the endpoint_url in {self._where()}."
            )
        return None

    def _endpoint(self) -> str:
        client_kwargs = self.storage_options.get("client_kwargs") or {}
        return str(
            self.storage_options.get("endpoint_url") or client_kwargs.get("endpoint_url") or "(default)"
        )

    def _check(self) -> None:
        # The probe gives up fast on an endpoint that does not answer, but a server that answers
        # "internal error, please try again" (or slow down) is asked again for some 15 s: SeaweedFS
        # says so for seconds while it makes a new volume on a nearly full disk.
        for delay in (0.5, 1.0, 2.0, 4.0, 8.0, None):
            try:
                self._probe()
                return
            except ArtifactStoreError:
                raise
            except Exception as exc:
                if delay is not None and _transient(exc):
                    log.info(
                        "Artifact store %s: %s; checking again in %.1f s", self.url, _first_line(exc), delay
                    )
                    time.sleep(delay)
                    continue
                translated = self.translate(exc, bucket_probe=True)
                if translated is None:
                    raise ArtifactStoreError(
                        f"The artifact store {self.url} cannot be used: {type(exc).__name__}: "
                        f"{_first_line(exc)}. Check [mltrain] artifact_store and {self._where()}."
                    ) from None
                raise translated from None

    def _probe(self) -> None:
        """Head the bucket, then write, read back and remove a probe object."""
        fs = self._probe_fs()
        if self.protocol in ("s3", "s3a"):
            fs.call_s3("head_bucket", Bucket=self.bucket)
        elif not fs.exists(self.bucket):
            raise ArtifactStoreBucketMissing(
                f"The bucket {self.bucket!r} of the artifact store {self.url} does not exist. "
                "Create it, or correct [mltrain] artifact_store (MLTRAIN_ARTIFACT_STORE)."
            )
        probe = f"{self._base}/_probe/{uuid.uuid4().hex}"
        fs.pipe_file(probe, b"ok")
        try:
            if bytes(fs.cat_file(probe)) != b"ok":
                raise ArtifactStoreError(f"The artifact store {self.url} gave back other bytes.")
        finally:
            with contextlib.suppress(Exception):
                fs.rm_file(probe)

    def _probe_fs(self) -> Any:
        """A filesystem like ``self.fs`` that gives up in seconds: a check must not sit through
        minutes of connection retries."""
        if self.protocol not in ("s3", "s3a"):
            return self.fs
        import fsspec

        options = dict(self.storage_options)
        config = dict(options.get("config_kwargs") or {})
        config.update(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
        options["config_kwargs"] = config
        fs = fsspec.filesystem(self.protocol, skip_instance_cache=True, **options)
        fs.retries = 1
        return fs

    def put_bytes(self, name: str, data: bytes) -> None:
        with self._errors():
            self.fs.pipe_file(self._full(name), data)

    def put_file(self, name: str, path: str | os.PathLike[str]) -> None:
        with self._errors():
            self.fs.put_file(str(path), self._full(name))

    def get_bytes(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        end = None if length is None else offset + length
        if end is not None and end <= offset:
            return b""
        with self._errors():
            return bytes(self.fs.cat_file(self._full(name), start=offset or None, end=end))

    def open(self, name: str) -> IO[bytes]:
        with self._errors():
            return self.fs.open(self._full(name), "rb")

    def size(self, name: str) -> int | None:
        full = self._full(name)
        self.fs.invalidate_cache(full)  # a listing cached here may predate another host's write
        try:
            with self._errors():
                return int(self.fs.size(full))
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> dict[str, int]:
        base = self._full(prefix)
        self.fs.invalidate_cache(base)  # another host may have written since this one listed
        try:
            with self._errors():
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
            with contextlib.suppress(FileNotFoundError), self._errors():
                self.fs.rm(paths)


_BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs", "az": "adlfs"}
_CREDENTIAL_CODES = {
    "403",
    "AccessDenied",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
}
_UNREACHABLE = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ConnectionClosedError",
    "ClientConnectorError",
    "ServerTimeoutError",
}


# Answers of a server that works but asks to be asked again: S3's InternalError (500), SlowDown
# and ServiceUnavailable (503), as botocore codes or as the errno s3fs turns them into.
_TRANSIENT_CODES = {"InternalError", "500", "SlowDown", "ServiceUnavailable", "503", "RequestTimeout"}
_TRANSIENT_ERRNOS = {getattr(errno, "EREMOTEIO", errno.EIO), errno.EBUSY}


def _transient(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        response = getattr(seen, "response", None)
        if isinstance(response, dict) and str(response.get("Error", {}).get("Code", "")) in _TRANSIENT_CODES:
            return True
        if isinstance(seen, OSError) and seen.errno in _TRANSIENT_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


def open_store(
    url: str, storage_options: dict[str, Any] | None = None, conn_id: str | None = None
) -> ArtifactStore:
    """The store of a URL: a plain path (or ``file://``) is a local folder, anything else fsspec.

    With ``conn_id`` and no ``storage_options``, the options come from the installed resolver
    (:func:`set_storage_options_resolver`: the Airflow connection of that id)."""
    if "://" not in url:
        return LocalArtifactStore(url)
    if url.startswith("file://"):
        return LocalArtifactStore(url[len("file://") :])
    if storage_options is None:
        storage_options = storage_options_for(url, conn_id)
    return FsspecArtifactStore(url, storage_options, conn_id=conn_id)


def iter_chunks(stream: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk
