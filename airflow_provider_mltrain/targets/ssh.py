"""The SSH target: runs on a remote machine (a GPU VM, say) in ``<remote root>/runs/<run_id>/``.

Everything travels over one paramiko transport per host and process: SFTP for files, and exec
channels that run the runner's stdlib code on the remote (``runner/remote.py``, the supervisor,
``runner/envbuild.py``). Commands are argv lists quoted element by element, and the run's own
arguments travel in ``run.json``, so no remote shell ever interprets a user value.

Host keys are verified by default, against the connection's ``host_key`` or a known_hosts file.
A submission uploads only the blobs the remote cache lacks; a resubmission sends only the
difference to the last snapshot this workspace started from there (the remote keeps manifests by
snapshot id), in one remote call. The runner builds the working copy there from the cache. The
supervisor runs detached (its own session), so a run survives dropped connections and dead
controllers; any controller reattaches by run id.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import getpass
import hashlib
import io
import json
import logging
import os
import posixpath
import secrets
import shlex
import socket
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import paramiko

from airflow_provider_mltrain.core.compute import ComputeTarget, LogLine, PreparedEnvironment, RunSpec
from airflow_provider_mltrain.core.environment import EnvironmentBuildFailed, InvalidEnvironment
from airflow_provider_mltrain.core.errors import (
    HostKeyRejected,
    InvalidRunConfig,
    SnapshotError,
    TargetAuthenticationFailed,
    TargetError,
    TargetUnreachable,
)
from airflow_provider_mltrain.core.runfiles import COLLECTED, RunFiles, extract_tar
from airflow_provider_mltrain.core.snapshot import delta_manifest
from airflow_provider_mltrain.runner import RUNNER_DIR

if TYPE_CHECKING:
    from airflow_provider_mltrain.core.environment import Environment
    from airflow_provider_mltrain.core.inputs import ResolvedInput
    from airflow_provider_mltrain.core.snapshot import Snapshot, SnapshotStore

log = logging.getLogger(__name__)

CLEANUP_POLICIES = ("never", "on_success", "always")
# Small blobs travel in bundles of about this size; blobs this big or bigger travel alone.
BUNDLE_BYTES = 32 << 20
SINGLE_BLOB_BYTES = 8 << 20
UPLOAD_CHUNK = 1 << 20
MIN_PYTHON = (3, 9)
# wait_for_change waits on the remote host for at least this long; shorter waits just sleep here.
_REMOTE_WAIT_MIN = 1.0
T = TypeVar("T")

# Asks the remote Python what it is; a constant: nothing user-given is in it.
_PROBE = (
    "import json, os, shutil, sys\n"
    "uv = shutil.which('uv') or next((p for p in (os.path.expanduser('~/.local/bin/uv'), "
    "os.path.expanduser('~/.cargo/bin/uv')) if os.access(p, os.X_OK)), None)\n"
    "print(json.dumps({'version': list(sys.version_info[:3]), 'executable': sys.executable, 'uv': uv}))\n"
)


@dataclass(frozen=True)
class SSHSettings:
    """How to reach the remote host and where the runs live there (from an ``ssh`` connection)."""

    host: str
    port: int = 22
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    key_file: str | None = None
    private_key: str | None = field(default=None, repr=False)
    private_key_passphrase: str | None = field(default=None, repr=False)
    host_key: str | None = None
    known_hosts: str | None = None  # default: ~/.ssh/known_hosts of the controller's user
    no_host_key_check: bool = False
    look_for_keys: bool = True
    remote_root: str = "~/.mltrain"
    interpreter_path: str = "python3"
    cleanup: str = "never"
    conn_timeout: float = 10.0
    keepalive_interval: float = 30.0
    reconnect_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not self.host:
            raise InvalidRunConfig("The SSH target needs a host: set the connection's Host field.")
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise InvalidRunConfig(f"SSH port {self.port!r} is not a TCP port (1-65535).")
        _check_cleanup(self.cleanup, "the connection's cleanup extra")
        if self.remote_root.startswith("~") and not (self.remote_root == "~" or self.remote_root[1] == "/"):
            raise InvalidRunConfig(
                f"remote_root {self.remote_root!r}: only '~' or '~/...' (the login's home) is understood; "
                "give an absolute path for another user's folder."
            )

    @property
    def where(self) -> str:
        """The host as known_hosts names it: ``host``, or ``[host]:port`` off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @property
    def login(self) -> str:
        return self.username or getpass.getuser()


def _check_cleanup(value: Any, what: str) -> str:
    if value not in CLEANUP_POLICIES:
        raise InvalidRunConfig(f"{what} is {value!r}: use one of {', '.join(CLEANUP_POLICIES)}.")
    return str(value)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's form (``SHA256:...``), as ``ssh-keygen -lf`` and ``ssh`` show it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _parse_host_key(text: str, settings: SSHSettings) -> tuple[str | None, bytes]:
    """``host_key`` as ``ssh-ed25519 AAAA...`` (a known_hosts or .pub line) or the bare base64 part."""
    parts = text.split()
    if parts and parts[0] in (settings.host, settings.where):
        parts = parts[1:]
    try:
        if len(parts) >= 2:
            return parts[0], base64.b64decode(parts[1])
        if len(parts) == 1:
            return None, base64.b64decode(parts[0])
    except ValueError:
        pass
    raise InvalidRunConfig(
        "The connection's host_key extra is not a public key: give it as 'ssh-ed25519 AAAA...' "
        "(the host's /etc/ssh/ssh_host_ed25519_key.pub, or a line of ssh-keyscan's output)."
    )


class _Connection:
    """One authenticated transport and its SFTP session, reconnected on loss.

    Thread-safe by a lock: operations on one connection run one at a time.
    """

    def __init__(self, settings: SSHSettings):
        self.settings = settings
        self.connects = 0  # how many times a transport was opened: one per wait, unless it was lost
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        self.home: str | None = None

    # -- connecting ----------------------------------------------------------------------------

    def transport(self) -> paramiko.Transport:
        with self._lock:
            if self._transport is None or not self._transport.is_active():
                self._drop()
                self._transport = self._connect()
                self.connects += 1
            return self._transport

    def sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            transport = self.transport()
            if self._sftp is None:
                self._sftp = paramiko.SFTPClient.from_transport(transport)
                if self.home is None:
                    self.home = self._sftp.normalize(".")
            return self._sftp

    def _connect(self) -> paramiko.Transport:
        s = self.settings
        where = f"{s.host}:{s.port}"
        try:
            sock = socket.create_connection((s.host, s.port), timeout=s.conn_timeout)
        except ConnectionRefusedError:
            raise TargetUnreachable(
                f"Cannot connect to {where}: connection refused. Check that sshd runs on {s.host} and "
                f"listens on port {s.port}, and the connection's host and port."
            ) from None
        except socket.gaierror as exc:
            raise TargetUnreachable(
                f"Cannot connect to {where}: the host name {s.host!r} does not resolve ({exc.strerror})."
            ) from None
        except TimeoutError:
            raise TargetUnreachable(
                f"Cannot connect to {where}: no answer within {s.conn_timeout:g} s (a firewall, or the "
                "host is down). Check the host and port, or raise the connection's conn_timeout extra."
            ) from None
        except OSError as exc:
            raise TargetUnreachable(f"Cannot connect to {where}: {exc.strerror or exc}.") from None
        # As OpenSSH does. paramiko leaves Nagle on, so a message sent in two small writes (an exec
        # request, then its stdin) waits for the server's delayed ACK (40 ms on Linux) in between.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        try:
            self._prefer_known_key_types(transport)
            transport.banner_timeout = s.conn_timeout
            try:
                transport.start_client(timeout=s.conn_timeout)
                key = transport.get_remote_server_key()  # raises when the handshake did not finish
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise TargetUnreachable(
                    f"{where} accepted the TCP connection but the SSH handshake failed or did not finish "
                    f"within {s.conn_timeout:g} s ({exc}). Is it an SSH server? Check the port, or raise "
                    "the connection's conn_timeout extra."
                ) from None
            self._verify_host_key(key)
            self._authenticate(transport)
            transport.set_keepalive(int(s.keepalive_interval))
        except BaseException:
            transport.close()
            raise
        log.info("Connected to %s@%s", s.login, where)
        return transport

    def _trusted_keys(self) -> tuple[dict[str, paramiko.PKey] | None, str]:
        """The keys trusted for this host by type (None: the host is not in known_hosts), and from where."""
        s = self.settings
        path = os.path.expanduser(s.known_hosts or "~/.ssh/known_hosts")
        keys = paramiko.HostKeys()
        with contextlib.suppress(FileNotFoundError):
            keys.load(path)
        entry = keys.lookup(s.where)
        if entry is None and s.port == 22:
            entry = keys.lookup(f"[{s.host}]:22")
        return (dict(entry) if entry is not None else None), path

    def _prefer_known_key_types(self, transport: paramiko.Transport) -> None:
        """Ask the server for the key type we trust, so a host with several keys is checked against ours."""
        s = self.settings
        if s.no_host_key_check:
            return
        if s.host_key:
            kind, _ = _parse_host_key(s.host_key, s)
            known = [kind] if kind else []
        else:
            trusted, _ = self._trusted_keys()
            known = list(trusted or ())
        options = transport.get_security_options()
        supported = list(options.key_types)
        preferred = [k for k in known if k in supported]
        if preferred:
            options.key_types = tuple(preferred + [k for k in supported if k not in preferred])

    def _verify_host_key(self, key: paramiko.PKey) -> None:
        s = self.settings
        shown = f"{key.get_name()} {fingerprint(key)}"
        if s.no_host_key_check:
            log.warning("Host key of %s NOT verified (no_host_key_check is set): %s", s.where, shown)
            return
        if s.host_key:
            _kind, blob = _parse_host_key(s.host_key, s)
            if blob == key.asbytes():
                return
            raise HostKeyRejected(
                f"The host key of {s.where} is {shown}, not the key in the connection's host_key extra. "
                "If the host was reinstalled, verify the new fingerprint with its administrator and update "
                "host_key; otherwise someone may be intercepting the connection. Nothing was sent."
            )
        trusted, path = self._trusted_keys()
        if trusted is None:
            raise HostKeyRejected(
                f"The host key of {s.where} is unknown: {shown}. Verify this fingerprint with the host's "
                f"administrator (ssh-keygen -lf /etc/ssh/ssh_host_{key.get_name().split('-')[-1]}_key.pub "
                f"on the host), then add it to {path} (ssh-keyscan -p {s.port} {s.host} >> {path}) or put "
                "the public key in the connection's host_key extra. Nothing was sent."
            )
        known = trusted.get(key.get_name())
        if known is None or known.asbytes() != key.asbytes():
            was = ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in trusted.values())
            raise HostKeyRejected(
                f"The host key of {s.where} has CHANGED: it presents {shown}, but {path} trusts {was}. "
                "Someone may be intercepting the connection, or the host was reinstalled: verify the new "
                f"fingerprint, then replace the line (ssh-keygen -R '{s.where}' -f {path}). Nothing was sent."
            )

    def _private_keys(self) -> list[tuple[str, paramiko.PKey]]:
        s = self.settings
        passphrase = s.private_key_passphrase
        if s.private_key:
            for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
                try:
                    return [("private_key", cls.from_private_key(io.StringIO(s.private_key), passphrase))]
                except paramiko.PasswordRequiredException:
                    raise TargetAuthenticationFailed(
                        "The connection's private_key is encrypted: set private_key_passphrase."
                    ) from None
                except (paramiko.SSHException, ValueError):
                    continue
            raise InvalidRunConfig(
                "The connection's private_key extra is not an OpenSSH or PEM private key (ed25519, "
                "ECDSA or RSA), or its passphrase is wrong."
            )
        if s.key_file:
            path = os.path.expanduser(s.key_file)
            if not os.path.isfile(path):
                raise InvalidRunConfig(f"key_file {path} does not exist on this machine.")
            return [(path, self._load_key_file(path, passphrase))]
        if not s.look_for_keys:
            return []
        found = []
        for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
            path = os.path.expanduser(f"~/.ssh/{name}")
            if os.path.isfile(path):
                with contextlib.suppress(TargetAuthenticationFailed, paramiko.SSHException):
                    found.append((path, self._load_key_file(path, passphrase)))
        return found

    @staticmethod
    def _load_key_file(path: str, passphrase: str | None) -> paramiko.PKey:
        try:
            return paramiko.PKey.from_path(path, passphrase)
        except paramiko.PasswordRequiredException:
            raise TargetAuthenticationFailed(
                f"key_file {path} is encrypted: set the connection's private_key_passphrase extra."
            ) from None
        except PermissionError:
            raise InvalidRunConfig(f"key_file {path} is not readable by this process.") from None
        except (paramiko.SSHException, ValueError, OSError) as exc:
            raise TargetAuthenticationFailed(
                f"key_file {path} cannot be read as a private key ({exc}); wrong passphrase?"
            ) from None

    def _authenticate(self, transport: paramiko.Transport) -> None:
        s = self.settings
        tried = []
        for source, key in self._private_keys():
            tried.append(f"key {source} ({fingerprint(key)})")
            with contextlib.suppress(paramiko.AuthenticationException):
                transport.auth_publickey(s.login, key)
            if transport.is_authenticated():
                return
        if s.password:
            tried.append("password")
            with contextlib.suppress(paramiko.AuthenticationException):
                transport.auth_password(s.login, s.password)
            if transport.is_authenticated():
                return
        if not tried:
            raise TargetAuthenticationFailed(
                f"No credentials for {s.login}@{s.host}:{s.port}: set the connection's password, or its "
                "key_file or private_key extra."
            )
        raise TargetAuthenticationFailed(
            f"{s.host}:{s.port} refused the login of {s.login!r} with {', '.join(tried)}. Check the "
            f"connection's login, and that the public key is in ~{s.login}/.ssh/authorized_keys on the host "
            "(or the password)."
        )

    # -- using -----------------------------------------------------------------------------------

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (which uses this connection); on a lost connection reconnect and run it again.

        Reconnecting keeps trying for ``reconnect_timeout`` seconds (an sshd restarting, a network
        blip); errors of the remote operation itself (a missing file, ...) pass through at once.
        """
        with self._lock:
            try:
                return fn()
            except Exception as exc:
                if not self._lost(exc):
                    raise
                first = exc
            deadline = time.monotonic() + self.settings.reconnect_timeout
            delay = 0.2
            while True:
                log.warning("Lost the SSH connection to %s (%s); reconnecting", self.settings.where, first)
                self._drop()
                try:
                    self.transport()
                    return fn()
                except (HostKeyRejected, TargetAuthenticationFailed):
                    raise
                except Exception as exc:
                    if not self._lost(exc):
                        raise
                    if time.monotonic() >= deadline:
                        raise TargetUnreachable(
                            f"Lost the connection to {self.settings.host}:{self.settings.port} and could not "
                            f"reconnect within {self.settings.reconnect_timeout:g} s: {exc}"
                        ) from None
                    first = exc
                time.sleep(delay)
                delay = min(delay * 2, 3.0)

    def _lost(self, exc: BaseException) -> bool:
        if self.connects == 0 or isinstance(exc, (HostKeyRejected, TargetAuthenticationFailed)):
            return False  # never connected: the first error is the answer
        if isinstance(exc, (TargetUnreachable, EOFError)):
            return True
        if isinstance(exc, (paramiko.SSHException, OSError)):
            return self._transport is None or not self._transport.is_active()
        return False

    def run(
        self,
        argv: list[str],
        stdin: bytes | None = None,
        on_line: Callable[[str], None] | None = None,
        timeout: float | None = 300.0,
    ) -> tuple[int, bytes, bytes]:
        """Run argv on the remote, every element quoted: the login shell sees only literal words."""
        command = " ".join(shlex.quote(a) for a in argv)
        channel = self.transport().open_session(timeout=self.settings.conn_timeout)
        try:
            channel.settimeout(timeout)
            channel.exec_command(command)
            if stdin is not None:
                channel.sendall(stdin)
            channel.shutdown_write()
            out = bytearray()
            if on_line is None:
                out += channel.makefile("rb").read()
            else:
                for raw in channel.makefile("rb"):
                    out += raw
                    on_line(raw.decode("utf-8", "replace").rstrip("\n"))
            err = channel.makefile_stderr("rb").read()
            return channel.recv_exit_status(), bytes(out), err
        finally:
            channel.close()

    def stream(
        self, argv: list[str], consume: Callable[[IO[bytes]], None], timeout: float | None = 300.0
    ) -> tuple[int, bytes]:
        """Run argv on the remote (quoted as by :meth:`run`); ``consume`` reads its stdout as it
        comes. The exit code and stderr; ``timeout`` bounds each wait for data, not the whole run."""
        command = " ".join(shlex.quote(a) for a in argv)
        channel = self.transport().open_session(timeout=self.settings.conn_timeout)
        try:
            channel.settimeout(timeout)
            channel.exec_command(command)
            channel.shutdown_write()
            out = channel.makefile("rb")
            consume(out)
            while out.read(UPLOAD_CHUNK):  # what consume left (the end of an archive)
                pass
            err = channel.makefile_stderr("rb").read()
            return channel.recv_exit_status(), bytes(err)
        finally:
            channel.close()

    def _drop(self) -> None:
        with self._lock:
            if self._sftp is not None:
                with contextlib.suppress(Exception):
                    self._sftp.close()
            if self._transport is not None:
                with contextlib.suppress(Exception):
                    self._transport.close()
            self._sftp = None
            self._transport = None

    def close(self) -> None:
        self._drop()


# One connection per (process, settings): a submission, its wait and the collection share it. The
# pid is in the key because a forked child cannot use its parent's transport.
_pool: dict[tuple[int, SSHSettings], _Connection] = {}
_pool_lock = threading.Lock()


def _connection(settings: SSHSettings) -> _Connection:
    key = (os.getpid(), settings)
    with _pool_lock:
        conn = _pool.get(key)
        if conn is None:
            conn = _pool[key] = _Connection(settings)
        return conn


def _runner_files() -> list[tuple[str, str]]:
    """(relative path, local path) of the runner's files that travel to the remote."""
    out = []
    for dirpath, dirnames, filenames in os.walk(RUNNER_DIR):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                full = os.path.join(dirpath, name)
                out.append((os.path.relpath(full, RUNNER_DIR).replace(os.sep, "/"), full))
    return out


_runner_version: str | None = None


def runner_version() -> str:
    """Content hash of the runner: the remote keeps one folder per version, uploaded once."""
    global _runner_version
    if _runner_version is None:
        h = hashlib.sha256()
        for rel, full in _runner_files():
            h.update(rel.encode() + b"\0")
            with open(full, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
        _runner_version = h.hexdigest()[:16]
    return _runner_version


class SSHTarget(ComputeTarget):
    kind = "ssh"

    def __init__(self, name: str, settings: SSHSettings, root: Path | None = None):
        super().__init__(name)
        self.settings = settings
        # This controller's notes about the target (the snapshots it sent); by default next to the
        # snapshot store, in <workspace>/targets/ssh-<name>.
        self.notes = root
        self._conn = _connection(settings)
        self._root: str | None = None
        self._python: dict[str, Any] | None = None
        self._runner: str | None = None
        # What the last start() sent: {"blobs": n, "bytes": n}; a resubmission of an unchanged tree sends 0.
        self.last_upload: dict[str, int] = {"blobs": 0, "bytes": 0}
        # How the last start() asked: remote "start" calls, their request bytes, whether a delta
        # manifest did (1) or the whole one (0); whether the working copy was an ended run's, put
        # right (1), or new (0), and how many of its files were copied from the cache.
        self.last_start: dict[str, int] = {
            "calls": 0,
            "request_bytes": 0,
            "delta_manifest": 0,
            "reused_worktree": 0,
            "files_copied": 0,
        }

    def __repr__(self) -> str:
        s = self.settings
        return f"SSHTarget(name={self.name!r}, {s.login}@{s.host}:{s.port}, root={s.remote_root!r})"

    @property
    def connects(self) -> int:
        """Transports opened so far for this target's host in this process."""
        return self._conn.connects

    # -- remote paths and helpers --------------------------------------------------------------

    @property
    def root(self) -> str:
        """The remote root as an absolute path (``~`` is the login's home)."""
        if self._root is None:
            self._conn.call(self._conn.sftp)
            home = self._conn.home or "."
            raw = self.settings.remote_root
            if raw == "~" or raw.startswith("~/"):
                path = home + raw[1:]
            elif raw.startswith("/"):
                path = raw
            else:
                path = posixpath.join(home, raw)
            self._root = posixpath.normpath(path)
        return self._root

    def run_dir(self, run_id: str) -> str:
        return posixpath.join(self.root, "runs", run_id)

    def _sftp(self, fn: Callable[[paramiko.SFTPClient], T]) -> T:
        return self._conn.call(lambda: fn(self._conn.sftp()))

    def _run(self, argv: list[str], **kwargs: Any) -> tuple[int, bytes, bytes]:
        return self._conn.call(lambda: self._conn.run(argv, **kwargs))

    # For targets that run through this one (a Spark gateway): the same channel, reconnecting alike.
    def run_command(self, argv: list[str], timeout: float | None = 300.0) -> tuple[int, bytes, bytes]:
        """Run argv on the remote (each element quoted: no shell sees a user value); code, stdout, stderr."""
        return self._run(argv, timeout=timeout)

    def with_sftp(self, fn: Callable[[paramiko.SFTPClient], T]) -> T:
        """``fn(sftp)`` on this target's SFTP session, run again after a reconnect if the link dropped."""
        return self._sftp(fn)

    def python(self) -> dict[str, Any]:
        """The remote runner Python (``interpreter_path`` extra, default ``python3``): version, path, uv."""
        if self._python is None:
            self._python = self._probe(
                self.settings.interpreter_path, "the connection's interpreter_path extra"
            )
        return self._python

    def _probe_file(self, interpreter: str) -> Path | None:
        """Where this controller keeps what ``interpreter`` was on this host (by host key, login and
        path): in the target's notes folder, so a new worker process need not ask again."""
        if self.notes is None:
            return None
        s = self.settings
        host_key = fingerprint(self._conn.call(self._conn.transport).get_remote_server_key())
        key = hashlib.sha256(f"{host_key}|{s.login}@{s.where}|{interpreter}".encode()).hexdigest()[:16]
        return self.notes / f"python-{key}.json"

    def _interpreter_stat(self, executable: str) -> list[Any] | None:
        """The executable's own and (through links) its file's size and mtime: a reinstalled
        Python or a rebuilt venv changes them. None when it is gone."""

        def look(sftp: paramiko.SFTPClient) -> list[Any]:
            own, real = sftp.lstat(executable), sftp.stat(executable)
            return [own.st_size, own.st_mtime, real.st_size, real.st_mtime]

        try:
            return self._sftp(look)
        except OSError:
            return None

    def _forget_probes(self) -> None:
        """Drop every remembered probe of this host: an interpreter failed to start."""
        self._python = None
        if self.notes is not None:
            for path in self.notes.glob("python-*.json"):
                with contextlib.suppress(OSError):
                    path.unlink()

    def _probe(self, interpreter: str, what: str) -> dict[str, Any]:
        """What ``interpreter`` is (checked: 3.9 or newer). Asked once per host and interpreter:
        later calls, from any process of this workspace, check only that its file is unchanged (one
        SFTP stat instead of a remote Python)."""
        path = self._probe_file(interpreter)
        if path is not None:
            try:
                cached = json.loads(path.read_text())
                info = cached["info"]
                if cached["stat"] == self._interpreter_stat(info["executable"]):
                    return dict(info)
            except (OSError, ValueError, KeyError, TypeError):
                pass
        info = self._ask_python(interpreter, what)
        if path is not None:
            with contextlib.suppress(OSError):  # only a cache: a read-only workspace asks each time
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
                tmp.write_text(json.dumps({"info": info, "stat": self._interpreter_stat(info["executable"])}))
                os.replace(tmp, path)
        return info

    def _ask_python(self, interpreter: str, what: str) -> dict[str, Any]:
        code, out, err = self._run([interpreter, "-I", "-c", _PROBE], timeout=60)
        s = self.settings
        try:
            info = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            info = None
        if code != 0 or not isinstance(info, dict):
            detail = err.decode("utf-8", "replace").strip().splitlines()
            raise InvalidEnvironment(
                f"No usable Python at {interpreter!r} on {s.host} ({what}): "
                f"{detail[-1] if detail else f'exit code {code}'}. Install python3 (3.9 or newer) on the "
                "host, or set the interpreter path to the full path of one."
            )
        if tuple(info["version"][:2]) < MIN_PYTHON:
            raise InvalidEnvironment(
                f"{interpreter!r} on {s.host} ({what}) is Python {'.'.join(map(str, info['version']))}; the "
                "runner needs 3.9 or newer. Point the interpreter path at a newer Python."
            )
        return info

    def _runner_dir(self) -> str:
        """The runner's folder on the remote, uploaded once per runner version."""
        if self._runner is None:
            final = posixpath.join(self.root, "runner", runner_version())
            self._runner = self._sftp(lambda sftp: self._upload_runner(sftp, final))
        return self._runner

    def _upload_runner(self, sftp: paramiko.SFTPClient, final: str) -> str:
        def fill(tmp: str) -> None:
            made = {tmp}
            for rel, full in _runner_files():
                folder = posixpath.dirname(posixpath.join(tmp, rel))
                if folder not in made:
                    _makedirs(sftp, folder)
                    made.add(folder)
                sftp.put(full, posixpath.join(tmp, rel))

        self._upload_folder(sftp, final, "remote.py", fill)
        return final

    def _upload_folder(
        self, sftp: paramiko.SFTPClient, final: str, marker: str, fill: Callable[[str], None]
    ) -> bool:
        """Make the folder ``final`` once: ``fill(tmp)`` writes a temporary folder beside it, which is
        renamed into place; False when ``final/marker`` was there already (or another controller's
        copy got there first: then ours is deleted). Nothing partial is ever left under ``final``."""
        try:
            sftp.stat(posixpath.join(final, marker))
            return False
        except FileNotFoundError:
            pass
        # Runs hold the scripts' outputs and run.json their secrets: the root is the login's alone.
        _makedirs(sftp, self.root, mode=0o700)
        parent = posixpath.dirname(final)
        _makedirs(sftp, parent)
        tmp = posixpath.join(parent, f".tmp-{posixpath.basename(final)}-{secrets.token_hex(4)}")
        try:
            sftp.mkdir(tmp)
            fill(tmp)
            try:
                sftp.rename(tmp, final)
            except OSError:
                sftp.stat(posixpath.join(final, marker))  # another controller's copy is there
                _rmtree(sftp, tmp)
                return False
        except BaseException:
            with contextlib.suppress(Exception):
                _rmtree(sftp, tmp)
            raise
        return True

    def _remote_argv(self, command: str, *args: str) -> list[str]:
        """``python -I -S RUNNER_DIR COMMAND ARGS``: remote.py's command, run by the runner's
        ``__main__.py`` from remote.py's cached bytecode rather than compiled anew every time."""
        return [self.python()["executable"], "-I", "-S", self._runner_dir(), command, *args]

    def _helper(
        self,
        command: str,
        *args: str,
        request: Any = None,
        timeout: float | None = 300.0,
        exclusive: bool = True,
    ) -> dict[str, Any]:
        """Run ``runner/remote.py COMMAND ARGS`` on the remote, ``request`` (JSON, or its bytes) on
        its stdin; its JSON answer.

        ``exclusive=False`` runs it on its own channel without holding the connection's lock (and
        without reconnecting): for a long wait, which must not hold up other users of the connection.
        """
        if isinstance(request, bytes):
            stdin = request
        else:
            stdin = json.dumps(request).encode() if request is not None else b""
        for attempt in range(2):
            argv = self._remote_argv(command, *args)
            if exclusive:
                code, out, err = self._run(argv, stdin=stdin, timeout=timeout)
            else:
                code, out, err = self._conn.run(argv, stdin=stdin, timeout=timeout)
            # 126/127: the shell could not run the interpreter (gone, or no longer executable): the
            # remembered probe is stale; ask again (once).
            if code not in (126, 127) or attempt:
                break
            log.info(
                "%s on %s did not start (exit code %d); asking the remote Python again",
                command,
                self.settings.host,
                code,
            )
            self._forget_probes()
        lines = out.decode("utf-8", "replace").strip().splitlines()
        try:
            answer = json.loads(lines[-1])
        except (ValueError, IndexError):
            answer = {"error": err.decode("utf-8", "replace").strip() or f"exit code {code}"}
        if code != 0 or "error" in answer:
            raise TargetError(
                f"{command} on {self.settings.host} ({self.root}) failed: {answer.get('error')}"
            )
        return dict(answer)

    # -- options and environments --------------------------------------------------------------

    def check_options(self, framework: str | None, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        framework, _ = super().check_options(framework, {})
        unknown = sorted(set(options) - {"cleanup"})
        if unknown:
            raise InvalidRunConfig(
                f"The ssh target {self.name!r} does not know the target_options {', '.join(unknown)}; "
                "it takes: cleanup (never, on_success or always)."
            )
        out = {}
        if "cleanup" in options:
            out["cleanup"] = _check_cleanup(options["cleanup"], "target_options['cleanup']")
        return framework, out

    def check_environment(self, env: Environment) -> None:
        """Connects (host key, login) and checks the remote Python(s): before anything is submitted."""
        self.python()
        if env.python.interpreter_path:
            self._probe(env.python.interpreter_path, f"environment {env.name!r}: interpreter_path")

    def prepare_environment(
        self, env: Environment, log: LogLine, rebuild: bool = False
    ) -> PreparedEnvironment:
        base = env.python.interpreter_path or self.python()["executable"]
        if not env.managed:
            return PreparedEnvironment(interpreter=base)
        spec: dict[str, Any] = {
            "hash": env.content_hash(),
            "root": posixpath.join(self.root, "envs"),
            "requirements": env.requirement_lines(),
            "python_version": env.python.python_version,
            "base_python": base,
            "uv": self.python().get("uv"),
            "rebuild": rebuild,
            "pinned": not env.unpinned(),
        }
        spec_path = posixpath.join(self.root, "envs", f".spec-{secrets.token_hex(8)}.json")

        def write_spec(sftp: paramiko.SFTPClient) -> None:
            _makedirs(sftp, posixpath.dirname(spec_path))
            with sftp.open(spec_path, "wb") as f:
                f.chmod(0o600)  # requirement lines may carry index credentials
                f.write(json.dumps(spec).encode())

        self._sftp(write_spec)
        lines: list[str] = []

        def on_line(line: str) -> None:
            lines.append(line)
            if not line.startswith("{"):
                log(line)

        python = self.python()["executable"]
        envbuild = posixpath.join(self._runner_dir(), "envbuild.py")
        try:
            # Not retried on a lost connection: the remote build goes on, or fails, by itself.
            code, _out, err = self._conn.run(
                [python, "-I", "-S", envbuild, spec_path], on_line=on_line, timeout=None
            )
        finally:
            with contextlib.suppress(Exception):
                self._sftp(lambda sftp: sftp.remove(spec_path))
        try:
            info = json.loads(lines[-1]) if lines else {}
        except ValueError:
            info = {}
        if code != 0 or "error" in info or "python" not in info:
            detail = info.get("error") or err.decode("utf-8", "replace").strip() or "\n".join(lines[-20:])
            raise EnvironmentBuildFailed(
                f"Environment {env.name!r} ({spec['hash'][:12]}) failed to build on {self.settings.host}: "
                f"{detail}"
            )
        return PreparedEnvironment(
            interpreter=info["python"],
            packages=tuple(info["packages"]),
            python_version=info.get("python_version"),
            built=info["built"],
            seconds=info["seconds"],
        )

    def pack_environment(self, interpreter: str) -> str | None:
        """The managed environment ``interpreter`` belongs to, packed once as a tar.gz on the remote (for
        Spark executors); None when it is not one of this target's environments."""
        answer = self._helper("pack-env", posixpath.join(self.root, "envs"), interpreter)
        return answer.get("archive")

    # -- start -----------------------------------------------------------------------------------

    # -- inputs --------------------------------------------------------------------------------

    def check_input(self, inp: ResolvedInput) -> None:
        """Downloads only: the controller's cached copy travels over SFTP into
        ``<root>/inputs/<key>/`` once per content key. The remote host needs neither credentials
        for the store nor fsspec."""
        if inp.mode == "mount":
            raise InvalidRunConfig(
                f"Input {inp.name!r}: the SSH target {self.name!r} cannot mount {inp.uri} (it is on "
                "this machine, not on the remote host). Use mode='download': it is sent once and cached."
            )

    def input_path(self, inp: ResolvedInput) -> str:
        folder = posixpath.join(self.root, "inputs", inp.key, "data")
        return posixpath.join(folder, inp.single) if inp.single else folder

    def _upload_inputs(self, spec: RunSpec) -> None:
        sent = {"inputs": 0, "bytes": 0}
        for inp in spec.inputs:
            final = posixpath.join(self.root, "inputs", inp.key)
            sent_bytes = self._sftp(functools.partial(self._upload_input, inp=inp, final=final))
            if sent_bytes is not None:
                sent["inputs"] += 1
                sent["bytes"] += sent_bytes
        self.last_input_upload = sent

    def _upload_input(self, sftp: paramiko.SFTPClient, *, inp: ResolvedInput, final: str) -> int | None:
        """Bytes sent, or None when the remote held this content already."""
        sent = 0

        def fill(tmp: str) -> None:
            nonlocal sent
            made = {tmp}
            for f in inp.files:
                dest = posixpath.join(tmp, "data", f.rel)
                folder = posixpath.dirname(dest)
                if folder not in made:
                    _makedirs(sftp, folder)
                    made.add(folder)
                sftp.put(str(inp.data_dir / f.rel), dest, confirm=True)
                sftp.chmod(dest, 0o444)
                sent += f.size
            with sftp.open(posixpath.join(tmp, ".complete"), "w") as marker:
                marker.write(b"")

        ours = self._upload_folder(sftp, final, ".complete", fill)
        if not ours and not sent:
            # Held there already: this use is its last use, which a prune goes by.
            with contextlib.suppress(OSError):
                sftp.utime(posixpath.join(final, ".complete"), None)
        return sent if ours or sent else None  # sent, even when another controller's copy won

    def start(self, spec: RunSpec, snapshot: Snapshot, store: SnapshotStore) -> bool:
        """One remote call when the remote holds a recent snapshot's manifest and every blob: the
        request carries only the changes to that manifest. Otherwise the remote answers what it
        lacks (that base manifest, blobs), which travels, and the start is asked again."""
        self.last_upload = {"blobs": 0, "bytes": 0}
        self.last_start = {
            "calls": 0,
            "request_bytes": 0,
            "delta_manifest": 0,
            "reused_worktree": 0,
            "files_copied": 0,
        }
        if spec.inputs:
            self._upload_inputs(spec)
        request: dict[str, Any] = {
            "snapshot": snapshot.id,
            "run": spec.to_runner_json(),
            "cleanup": spec.target_options.get("cleanup") or self.settings.cleanup,
        }
        base = self._base_snapshot(snapshot, store)
        uploaded = False
        if base is not None and base.id != snapshot.id:
            # What changed since the base is new to the remote, as a rule: it travels now and the
            # start names it, rather than the start answering "missing" first.
            fresh = sorted({f.hash for f in snapshot.files} - {f.hash for f in base.files})
            request.update(self._upload_blobs(fresh, store, name_later=True))
        while True:
            delta = delta_manifest(snapshot, base) if base is not None else None
            manifest = {"delta": delta} if delta is not None else {"manifest": snapshot.to_dict()}
            body = json.dumps({**request, **manifest}).encode()
            self.last_start["calls"] += 1
            self.last_start["request_bytes"] += len(body)
            self.last_start["delta_manifest"] = int(delta is not None)
            try:
                answer = self._helper("start", self.root, spec.run_id, request=body)
            except TargetError as exc:
                if (request.get("bundles") or request.get("commits")) and "No space left" in str(exc):
                    raise self._upload_error(exc) from None
                raise
            request.pop("bundles", None)  # named by now, whatever the answer
            request.pop("commits", None)
            self._check_bad(answer.get("bad", []))
            if "started" in answer:
                worktree = answer.get("worktree") or {}
                self.last_start["reused_worktree"] = int(bool(worktree.get("reused")))
                self.last_start["files_copied"] = int(worktree.get("copied") or 0)
                if answer["started"]:
                    self._remember_sent(store, snapshot.id)
                return bool(answer["started"])
            if answer.get("base_missing") and base is not None:
                log.debug(
                    "Run %s: %s lacks the manifest of %s; sending it whole",
                    spec.run_id,
                    self.root,
                    base.id[:12],
                )
                self._forget_sent(store, {base.id})
                base = None
            elif answer.get("missing") and not uploaded:
                self._upload_blobs(list(answer["missing"]), store)
                uploaded = True
                base = snapshot  # the remote kept this snapshot's manifest when it answered
            else:
                lacking = (
                    f"{len(answer['missing'])} blob(s) were missing again after the upload (a prune at the "
                    "same time?)"
                    if answer.get("missing")
                    else f"an unexpected answer {str(answer)[:200]}"
                )
                raise TargetError(
                    f"Run {spec.run_id} did not start on {self.settings.host} ({self.root}): {lacking}. "
                    "Submit again."
                )

    def _sent_file(self, store: SnapshotStore | None) -> Path | None:
        """Per remote root: a connection pointed at another root (or host) starts a list of its own."""
        notes = self.notes or (store.root.parent / "targets" / f"ssh-{self.name}" if store else None)
        if notes is None:
            return None
        s = self.settings
        key = hashlib.sha256(f"{s.login}@{s.where}:{s.remote_root}".encode()).hexdigest()[:16]
        return notes / f"sent-snapshots-{key}.json"

    def _sent_snapshots(self, store: SnapshotStore | None) -> list[str]:
        """Snapshots this workspace started runs from on the remote root, newest first. A hint: the
        remote says when it no longer holds one (pruned) and the whole manifest travels instead."""
        path = self._sent_file(store)
        try:
            data = json.loads(path.read_text()) if path else []
        except (OSError, ValueError):
            return []
        return [s for s in data if isinstance(s, str)][:16] if isinstance(data, list) else []

    def _write_sent(self, store: SnapshotStore | None, ids: list[str]) -> None:
        path = self._sent_file(store)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(ids[:16]))
        os.replace(tmp, path)

    def _remember_sent(self, store: SnapshotStore, snapshot_id: str) -> None:
        self._write_sent(store, [snapshot_id] + [s for s in self._sent_snapshots(store) if s != snapshot_id])

    def _forget_sent(self, store: SnapshotStore | None, gone: set[str]) -> None:
        ids = self._sent_snapshots(store)
        if gone & set(ids):
            self._write_sent(store, [s for s in ids if s not in gone])

    def _base_snapshot(self, snapshot: Snapshot, store: SnapshotStore) -> Snapshot | None:
        """The most recent snapshot sent to the remote root that this workspace still has (the
        snapshot itself when it was sent before: an unchanged tree's delta is empty). Read
        unverified: the remote checks that the delta rebuilds into the snapshot id, and answers
        ``base_missing`` when it does not."""
        for sent in self._sent_snapshots(store)[:4]:
            if sent == snapshot.id:
                return snapshot
            try:
                return store.get(sent, verify=False)
            except SnapshotError:
                continue
        return None

    def _upload_blobs(
        self, digests: list[str], store: SnapshotStore, name_later: bool = False
    ) -> dict[str, Any]:
        """Send blobs over SFTP; the remote hashes each before it gets its name.

        Small blobs travel in bundles (one SFTP file and one remote ``unbundle`` per ~32 MiB, so a
        tree of thousands of files costs a few round trips, not several per file); big ones alone.
        Whatever fails, no partial blob is left: not in the cache, not under a temporary name.
        With ``name_later``, the remote calls are left to the next ``start``, which makes them first:
        the uploads it should name are returned (``bundles``, ``commits``) for its request.
        """
        sizes = {d: store.blob_size(d) for d in digests}
        batches: list[list[str]] = []
        current: list[str] = []
        current_size = 0
        for digest in digests:
            if sizes[digest] >= SINGLE_BLOB_BYTES:
                batches.append([digest])
                continue
            current.append(digest)
            current_size += sizes[digest]
            if current_size >= BUNDLE_BYTES:
                batches.append(current)
                current, current_size = [], 0
        if current:
            batches.append(current)
        later: dict[str, Any] = {"bundles": [], "commits": []}
        for batch in batches:
            try:
                if len(batch) == 1 and sizes[batch[0]] >= SINGLE_BLOB_BYTES:
                    items = [[self._send_single(batch[0], store), batch[0]]]
                    if name_later:
                        later["commits"] += items
                    else:
                        self._check_bad(self._helper("commit", self.root, request=items)["bad"])
                else:
                    name = self._send_bundle(batch, sizes, store)
                    index = [[d, sizes[d]] for d in batch]
                    if name_later:
                        later["bundles"].append([name, index])
                    else:
                        self._check_bad(self._helper("unbundle", self.root, name, request=index)["bad"])
            except (OSError, TargetError) as exc:
                if isinstance(exc, TargetError) and "No space left" not in str(exc):
                    raise
                raise self._upload_error(exc) from None
            self.last_upload["blobs"] += len(batch)
            self.last_upload["bytes"] += sum(sizes[d] for d in batch)
            if self.upload_progress is not None:
                self.upload_progress(self.last_upload["bytes"], sum(sizes.values()))
        return later

    def _send_bundle(self, batch: list[str], sizes: dict[str, int], store: SnapshotStore) -> str:
        """Writes the blobs back to back into one temporary file in the cache folder; its name."""
        name = f".tmp-bundle-{secrets.token_hex(8)}"
        path = posixpath.join(self.root, "blobs", name)

        def write(sftp: paramiko.SFTPClient) -> None:
            _makedirs(sftp, posixpath.dirname(path))
            try:
                with sftp.open(path, "wb") as out:
                    out.set_pipelined(True)
                    for digest in batch:
                        with store.open_blob(digest) as src:
                            while chunk := src.read(UPLOAD_CHUNK):
                                out.write(chunk)
                if sftp.stat(path).st_size != sum(sizes[d] for d in batch):
                    raise OSError(f"the bundle arrived truncated at {path}")
            except BaseException:
                with contextlib.suppress(Exception):
                    sftp.remove(path)  # never leave a partial upload behind
                raise

        self._sftp(write)
        return name

    def _send_single(self, digest: str, store: SnapshotStore) -> str:
        """Uploads one blob to a temporary name next to its final one; that name."""
        folder = posixpath.join(self.root, "blobs", digest[:2])
        tmp = posixpath.join(folder, f".tmp-{digest[:16]}-{secrets.token_hex(4)}")

        def put(sftp: paramiko.SFTPClient) -> None:
            _makedirs(sftp, folder)
            try:
                with store.open_blob(digest) as src:
                    sftp.putfo(src, tmp, confirm=True)
            except BaseException:
                with contextlib.suppress(Exception):
                    sftp.remove(tmp)  # never leave a partial blob, even under its temporary name
                raise

        self._sftp(put)
        return posixpath.basename(tmp)

    def _check_bad(self, bad: list[list[str]]) -> None:
        if bad:
            raise TargetError(
                f"{len(bad)} blob(s) arrived damaged on {self.settings.host} and were discarded "
                f"({bad[0][0][:12]}: {bad[0][1]}). Submit again."
            )

    def _upload_error(self, exc: Exception) -> TargetError:
        free = None
        with contextlib.suppress(Exception):
            free = int(self._helper("free-space", self.root)["free"])
        s = self.settings
        space = (
            f" The remote disk is full ({free // 1024} KiB free under {self.root})."
            if free is not None and free < 1024 * 1024
            else ""
        )
        return TargetError(
            f"Uploading the snapshot to {s.host}:{self.root} failed: {exc}.{space} No partial blob was kept. "
            "Free space on the host (SSHTarget.prune_blobs() empties the blob cache of unused files), or "
            "point the connection's remote_root extra at a bigger disk, then submit again."
        )

    # -- observe ---------------------------------------------------------------------------------

    def has_run(self, run_id: str) -> bool:
        try:
            self._sftp(lambda sftp: sftp.stat(self.run_dir(run_id)))
        except FileNotFoundError:
            return False
        return True

    def read_status(self, run_id: str) -> dict[str, Any] | None:
        data = self.read_file(run_id, "status.json")
        if not data:
            return None
        try:
            status = json.loads(data)
        except ValueError:
            return None
        return status if isinstance(status, dict) else None

    def runner_alive(self, run_id: str, status: dict[str, Any] | None) -> bool:
        return bool(self._helper("alive", self.run_dir(run_id))["alive"])

    def _path(self, run_id: str, name: str) -> str:
        parts = name.split("/")
        if not name or name.startswith("/") or ".." in parts or parts[0] not in (*COLLECTED, "status.json"):
            raise ValueError(f"{name!r} is not a run file name (outputs/... or logs/...).")
        return posixpath.join(self.run_dir(run_id), *parts)

    def read_file(self, run_id: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(run_id, name)

        def read(sftp: paramiko.SFTPClient) -> bytes:
            if regular_file(sftp, self.run_dir(run_id), name) is None:
                return b""
            try:
                with sftp.open(path, "rb") as f:
                    st = f.stat()
                    # SFTP opens follow links: the file opened must still be a regular file of the
                    # run's owner (a link swapped in since the check would show its target's).
                    if not stat.S_ISREG(st.st_mode or 0) or st.st_uid != self._owner(sftp, run_id):
                        return b""
                    size = st.st_size or 0
                    if offset >= size:
                        return b""
                    count = size - offset if length is None else min(max(0, length), size - offset)
                    f.seek(offset)
                    f.prefetch(offset + count)  # paramiko takes the end position, not a count
                    return bytes(f.read(count))
            except FileNotFoundError:
                return b""

        return self._sftp(read)

    def _owner(self, sftp: paramiko.SFTPClient, run_id: str) -> int | None:
        return sftp.lstat(self.run_dir(run_id)).st_uid

    def file_size(self, run_id: str, name: str) -> int:
        self._path(run_id, name)
        found = self._sftp(lambda sftp: regular_file(sftp, self.run_dir(run_id), name))
        return int(found.st_size or 0) if found is not None else 0

    def list_entries(self, run_id: str) -> RunFiles:
        run_dir = self.run_dir(run_id)
        files, links = self._sftp(lambda sftp: _walk(sftp, run_dir, COLLECTED))
        return RunFiles(sorted(rel for rel, _ in files), dict(sorted(links.items())))

    # -- stop ------------------------------------------------------------------------------------

    def wait_for_change(self, run_id: str, seconds: float) -> None:
        """Waits on the remote host for the supervisor to replace ``status.json``, up to ``seconds``
        (short waits are plain sleeps: not worth a remote process)."""
        if seconds < _REMOTE_WAIT_MIN:
            time.sleep(seconds)
            return
        started = time.monotonic()
        try:
            self._helper(
                "wait-change", self.run_dir(run_id), f"{seconds:.3f}", timeout=seconds + 60, exclusive=False
            )
        except (TargetError, OSError, EOFError, paramiko.SSHException) as exc:
            log.debug("Run %s: waiting on %s for a change failed: %s", run_id, self.settings.host, exc)
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))  # the next poll says what is wrong

    def request_cancel(self, run_id: str, grace_period: float) -> None:
        self._helper("cancel", self.run_dir(run_id), repr(float(grace_period)))

    def kill(self, run_id: str, status: dict[str, Any] | None) -> None:
        self._helper("kill", self.run_dir(run_id))

    def collect(self, run_id: str, dest: Path) -> None:
        # One tar stream made on the remote by runner/tree.py: opened without following links, the
        # links as link members, whatever the depth and width of the tree.
        argv = self._remote_argv("pack", self.run_dir(run_id))

        def unpack(out: IO[bytes]) -> None:
            with tarfile.open(fileobj=out, mode="r|") as tar:
                extract_tar(tar, dest)

        code, err = self._conn.call(lambda: self._conn.stream(argv, unpack))
        for line in err.decode("utf-8", "replace").splitlines():
            log.warning("Run %s: collecting on %s: %s", run_id, self.settings.host, line)
        if code != 0:
            raise TargetError(f"Collecting run {run_id} from {self.settings.host} failed (exit code {code}).")
        policy = self.read_policy(run_id)
        state = (self.read_status(run_id) or {}).get("state")
        whole = policy == "always" or (policy == "on_success" and state == "Completed")
        self._helper("cleanup", self.root, run_id, "all" if whole else "snapshot")

    def read_policy(self, run_id: str) -> str:
        def read(sftp: paramiko.SFTPClient) -> str:
            try:
                with sftp.open(posixpath.join(self.run_dir(run_id), "cleanup"), "rb") as f:
                    return bytes(f.read()).decode().strip()
            except FileNotFoundError:
                return self.settings.cleanup

        policy = self._sftp(read)
        return policy if policy in CLEANUP_POLICIES else "never"

    # -- maintenance -----------------------------------------------------------------------------

    def prune_cache(self, days: float, keep_inputs: Iterable[str] = ()) -> dict[str, int]:
        return self.prune_blobs(days, keep_inputs)

    def prune_blobs(self, days: float = 7.0, keep_inputs: Iterable[str] = ()) -> dict[str, int]:
        """Delete cached blobs that no run's working copy uses and no submission touched in ``days``,
        the kept manifests no start used in ``days`` (dropped from this controller's notes too), and
        the cached inputs no submission used in ``days`` but those in ``keep_inputs`` (the content
        keys that runs still name: ``core.inputs.keys_in_use``).

        Returns ``{"removed": blobs, "bytes": freed, "kept": blobs, "inputs_removed": copies,
        "inputs_bytes": freed}``. Safe while runs start: a submission touches the blobs, manifest
        and inputs it uses, and starts run under a shared lock.
        """
        request = {"keep_inputs": sorted(keep_inputs)}
        answer = self._helper("prune", self.root, repr(float(days)), request=request)
        if answer.get("manifests"):
            with contextlib.suppress(OSError):  # only a hint: a start against a pruned one recovers
                self._forget_sent(None, set(answer["manifests"]))
        keys = ("removed", "bytes", "kept", "inputs_removed", "inputs_bytes")
        return {k: int(answer.get(k, 0)) for k in keys}

    def test(self) -> str:
        """Connect, check the remote Python and the remote root; a one-line description."""
        info = self.python()
        self._runner_dir()
        version = ".".join(str(v) for v in info["version"])
        s = self.settings
        return (
            f"Connected to {s.login}@{s.host}:{s.port}; Python {version} at {info['executable']}; "
            f"remote root {self.root}" + ("; uv found" if info.get("uv") else "")
        )

    def close(self) -> None:
        self._conn.close()


def _makedirs(sftp: paramiko.SFTPClient, path: str, mode: int = 0o755) -> None:
    """``mkdir -p`` over SFTP; ``mode`` applies to ``path`` itself, parents get 0o755."""
    missing = []
    current = path
    while current not in ("", "/"):
        try:
            sftp.stat(current)
            break
        except FileNotFoundError:
            missing.append(current)
            current = posixpath.dirname(current)
    for folder in reversed(missing):
        try:
            sftp.mkdir(folder, mode if folder == path else 0o755)
        except OSError:
            sftp.stat(folder)  # made by someone else meanwhile, else the error is real


def _walk(
    sftp: paramiko.SFTPClient, root: str, tops: tuple[str, ...]
) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """(relative path, size) of the regular files under ``root/<top>`` for each top, and the links
    there (relative path -> link text). SFTP lists with lstat: no link is followed; no recursion."""
    out: list[tuple[str, int]] = []
    links: dict[str, str] = {}
    pending = list(tops)
    while pending:
        rel = pending.pop()
        path = posixpath.join(root, rel)
        try:
            if rel in tops and stat.S_ISLNK(sftp.lstat(path).st_mode or 0):
                links[rel] = sftp.readlink(path) or ""
                continue
            entries = sftp.listdir_attr(path)
        except FileNotFoundError:
            continue
        except OSError as exc:  # a folder made unreadable, a path too long for the host: skipped
            log.warning("Listing %s skipped %s: %s", root, rel, exc)
            continue
        for entry in entries:
            child = f"{rel}/{entry.filename}"
            mode = entry.st_mode or 0
            if stat.S_ISDIR(mode):
                pending.append(child)
            elif stat.S_ISREG(mode):
                out.append((child, int(entry.st_size or 0)))
            elif stat.S_ISLNK(mode):
                with contextlib.suppress(OSError):
                    links[child] = sftp.readlink(posixpath.join(root, child)) or ""
    return out, links


def regular_file(sftp: paramiko.SFTPClient, run_dir: str, name: str) -> paramiko.SFTPAttributes | None:
    """The lstat of run file ``name`` when each folder on its way is a folder and it is a regular
    file (no link anywhere: SFTP would follow it); else None."""
    path = run_dir
    parts = name.split("/")
    found = None
    for i, part in enumerate(parts):
        path = posixpath.join(path, part)
        try:
            found = sftp.lstat(path)
        except FileNotFoundError:
            return None
        mode = found.st_mode or 0
        if not (stat.S_ISREG(mode) if i == len(parts) - 1 else stat.S_ISDIR(mode)):
            return None
    return found


def _rmtree(sftp: paramiko.SFTPClient, path: str) -> None:
    for entry in sftp.listdir_attr(path):
        child = posixpath.join(path, entry.filename)
        if stat.S_ISDIR(entry.st_mode or 0):
            _rmtree(sftp, child)
        else:
            sftp.remove(child)
    sftp.rmdir(path)
