"""The local target: runs on this machine, in ``<workspace>/targets/local/runs/<run_id>/``."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import site
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core.compute import ComputeTarget, LogLine, PreparedEnvironment, RunSpec
from airflow_provider_mltrain.core.environment import EnvironmentBuildFailed, check_interpreter, find_uv
from airflow_provider_mltrain.core.errors import InvalidRunConfig, TargetError
from airflow_provider_mltrain.core.runfiles import RunFiles, list_folder, rmtree, write_links
from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.runner import RUNNER_DIR, envbuild, remote, supervisor, tree

if TYPE_CHECKING:
    from airflow_provider_mltrain.core.environment import Environment
    from airflow_provider_mltrain.core.inputs import ResolvedInput
    from airflow_provider_mltrain.core.snapshot import Snapshot, SnapshotStore
    from airflow_provider_mltrain.core.workspace import Workspace

log = logging.getLogger(__name__)

SUPERVISOR = os.path.join(RUNNER_DIR, "supervisor.py")
COLLECTED = tree.TOPS  # outputs, logs, uploads
_READABLE = (*COLLECTED, "status.json")
# The submitting Python's installed packages, kept for the next process until its site-packages change.
FREEZE_CACHE = "freeze-cache.json"


class LocalTarget(ComputeTarget):
    kind = "local"

    def __init__(self, root: str | os.PathLike[str], name: str = "local"):
        super().__init__(name)
        self.root = Path(root)
        self.runs = self.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    # -- environments --------------------------------------------------------------------------

    def _interpreter(self, env: Environment) -> str:
        path = env.python.interpreter_path
        if not path:
            return sys.executable
        resolved = shutil.which(path) if os.sep not in path else path
        if not resolved or not os.path.isfile(resolved) or not os.access(resolved, os.X_OK):
            raise InvalidRunConfig(
                f"Environment {env.name!r}: interpreter_path {path!r} is not an executable file on this "
                "machine. Give the full path of a Python (for example /usr/bin/python3)."
            )
        return resolved

    def check_environment(self, env: Environment) -> None:
        if env.python.interpreter_path:
            check_interpreter(self._interpreter(env))

    def prepare_environment(
        self, env: Environment, log: LogLine, rebuild: bool = False
    ) -> PreparedEnvironment:
        if not env.managed:
            interpreter = self._interpreter(env)
            packages = _freeze(interpreter, self.root / FREEZE_CACHE)
            return PreparedEnvironment(interpreter=interpreter, packages=tuple(packages))
        spec: dict[str, Any] = {
            "hash": env.content_hash(),
            "root": str(self.root / "envs"),
            "requirements": env.requirement_lines(),
            "python_version": env.python.python_version,
            "base_python": self._interpreter(env),
            "uv": find_uv(),
            "rebuild": rebuild,
            "pinned": not env.unpinned(),
        }
        try:
            info = envbuild.build(spec, log)
        except envbuild.BuildFailed as exc:
            raise EnvironmentBuildFailed(
                f"Environment {env.name!r} ({spec['hash'][:12]}) failed to build: {exc}"
            ) from None
        return PreparedEnvironment(
            interpreter=info["python"],
            packages=tuple(info["packages"]),
            python_version=info.get("python_version"),
            built=info["built"],
            seconds=info["seconds"],
        )

    # -- inputs --------------------------------------------------------------------------------

    def check_input(self, inp: ResolvedInput) -> None:
        """Both modes: a download is read from the workspace's input cache (files read-only), a
        mount of a local path is the path itself."""

    def input_path(self, inp: ResolvedInput) -> str:
        return str(inp.local_path())

    # -- start ---------------------------------------------------------------------------------

    def start(self, spec: RunSpec, snapshot: Snapshot, store: SnapshotStore) -> bool:
        final = self.run_dir(spec.run_id)
        if final.exists():
            self._finish_interrupted_start(final)
            return False
        self.runs.mkdir(parents=True, exist_ok=True)
        tmp = self.runs / f".tmp-{spec.run_id}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
            store.materialize(snapshot, tmp / "snapshot")
            (tmp / "logs").mkdir()
            (tmp / "outputs").mkdir()
            # run.json carries the environment variables, secrets included: owner-only.
            fd = os.open(tmp / "run.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(spec.to_runner_json(), f, indent=1)
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    return False  # another controller started this run id first
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._launch(final)
        return True

    def _finish_interrupted_start(self, run_dir: Path) -> None:
        """A controller that died between claiming the folder and launching left no status: launch now."""
        if (run_dir / "run.json").exists() and not (run_dir / "status.json").exists():
            self._launch(run_dir)

    def _launch(self, run_dir: Path) -> None:
        try:
            proc = subprocess.run(
                # -I -S: the supervisor needs only the standard library, and starts faster without site.
                [sys.executable, "-I", "-S", SUPERVISOR, str(run_dir), "--detach"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=120,
                close_fds=True,
                env=script_environment(),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TargetError(f"Could not start the run supervisor for {run_dir}: {exc}") from exc
        if proc.returncode != 0:
            detail = proc.stderr.decode("utf-8", "replace").strip()
            raise TargetError(f"The run supervisor for {run_dir} failed to start: {detail}")

    # -- observe -------------------------------------------------------------------------------

    def has_run(self, run_id: str) -> bool:
        return self.run_dir(run_id).is_dir()

    def read_status(self, run_id: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.read_file(run_id, "status.json") or b"null")
        except ValueError:
            return None  # not the supervisor's (it replaces the file atomically): a script's doing
        return data if isinstance(data, dict) else None

    def wait_for_change(self, run_id: str, seconds: float) -> None:
        """Sleep until ``status.json`` is replaced (the supervisor does on every change and heartbeat)
        or ``seconds`` passed: the SSH target's remote wait, run here."""
        remote.wait_change(str(self.run_dir(run_id)), seconds)

    def runner_alive(self, run_id: str, status: dict[str, Any] | None) -> bool:
        try:
            fd = os.open(self.run_dir(run_id) / "supervisor.lock", os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def read_file(self, run_id: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            limit = None if length is None else max(0, length)
            return tree.read_file(str(self.run_dir(run_id)), name, offset, limit, tops=_READABLE)
        except FileNotFoundError:
            return b""  # no run folder (yet)

    def file_size(self, run_id: str, name: str) -> int:
        try:
            return tree.file_size(str(self.run_dir(run_id)), name, tops=_READABLE)
        except FileNotFoundError:
            return 0

    def list_entries(self, run_id: str) -> RunFiles:
        return list_folder(self.run_dir(run_id))

    # -- stop ----------------------------------------------------------------------------------

    def request_cancel(self, run_id: str, grace_period: float) -> None:
        run_dir = self.run_dir(run_id)
        if not run_dir.exists():
            return
        (run_dir / "cancel_requested").write_text(json.dumps({"grace_period": grace_period}))
        status = self.read_status(run_id)
        if status and _on_this_host(status) and self.runner_alive(run_id, status):
            try:
                os.kill(int(status["supervisor_pid"]), signal.SIGTERM)
            except (ProcessLookupError, KeyError, ValueError):
                pass

    def kill(self, run_id: str, status: dict[str, Any] | None) -> None:
        if not status or not _on_this_host(status):
            return  # another host's processes: their supervisor acts on the cancel marker
        try:
            supervisor.kill_recorded_cgroup(status, run_id)
        except OSError as exc:
            log.warning("Run %s: could not end the processes of its cgroup: %s", run_id, exc)
        pgid = status.get("pgid")
        if pgid and _process_belongs_to_run(int(pgid), run_id):
            try:
                os.killpg(int(pgid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        sup = status.get("supervisor_pid")
        if sup and self.runner_alive(run_id, status):
            try:
                os.kill(int(sup), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def collect(self, run_id: str, dest: Path) -> None:
        src = self.run_dir(run_id)
        # Hard links where possible: a big output costs no copy.
        copied = tree.copy_tree(str(src), str(dest), COLLECTED, link=True)
        for line in copied["errors"]:
            log.warning("Run %s: not collected: %s", run_id, line)
        write_links(dest, copied["links"])
        # The working copy of the snapshot is done with; the snapshot store keeps its content.
        rmtree(src / "snapshot")


# Variables of the controller that a training script must not see: Airflow's configuration and
# secrets (database, connections, variables) and the run store's URL.
_PRIVATE_PREFIXES = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "_AIRFLOW", "MLTRAIN_DATABASE_URL")


def script_environment() -> dict[str, str]:
    """The controller's environment minus what belongs to Airflow or the run store."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_PREFIXES)}


def prune_local_builds(workspace: Workspace, days: float, dry_run: bool = False) -> list[Path]:
    """Delete environment builds on this machine that no run used in the last ``days`` and no active
    run uses: the local target's, and the Spark targets' (``targets/spark-*/envs``, with the archive
    packed for their executors).

    Each build is deleted under its build lock, so a build or a submission in progress is never cut.
    """
    targets = workspace.root / "targets"
    roots = [LocalTarget(targets / "local").root / "envs", *sorted(targets.glob("spark-*/envs"))]
    cutoff = time.time() - days * 86400
    keep = set()
    for record in workspace.store.list_runs():
        if record["created_at"] >= cutoff or not RunStatus(record["status"]).is_terminal:
            keep.add(record["environment"].get("hash"))
    removed = []
    for root in roots:
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir() or folder.name in keep:
                continue
            marker = folder / envbuild.MARKER
            if marker.exists() and marker.stat().st_mtime >= cutoff:
                continue
            removed.append(folder)
            if dry_run:
                continue
            with open(root / f"{folder.name}.lock", "a+") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                shutil.rmtree(folder, ignore_errors=True)
                (root / f"{folder.name}.tar.gz").unlink(missing_ok=True)  # a Spark executors' archive
    return removed


_freeze_cache: dict[tuple[str, tuple[float, ...]], list[str]] = {}


def _site_dirs_stamp() -> tuple[float, ...]:
    """mtimes of this interpreter's site-packages folders: installing or removing a package changes one."""
    stamps = []
    for folder in {*site.getsitepackages(), site.getusersitepackages()}:
        try:
            stamps.append(os.stat(folder).st_mtime)
        except OSError:
            stamps.append(0.0)
    return tuple(sorted(stamps))


def _freeze(interpreter: str, cache_file: Path | None = None) -> list[str]:
    """What a user-managed interpreter has installed, through uv (fast); empty when uv is missing.

    For the submitting Python itself the answer is kept until its site-packages change: in this
    process, and in ``cache_file`` for the next one (a new ``mltrain submit`` saves a ``uv pip freeze``).
    """
    key = (interpreter, _site_dirs_stamp()) if interpreter == sys.executable else None
    if key is None:
        return _uv_freeze(interpreter)
    if key in _freeze_cache:
        return _freeze_cache[key]
    packages = _read_freeze_cache(cache_file, key) if cache_file else None
    if packages is None:
        packages = _uv_freeze(interpreter)
        if cache_file and packages:
            _write_freeze_cache(cache_file, key, packages)
    _freeze_cache[key] = packages
    return packages


def _read_freeze_cache(path: Path, key: tuple[str, tuple[float, ...]]) -> list[str] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or [data.get("interpreter"), data.get("stamp")] != [key[0], list(key[1])]:
        return None
    packages = data.get("packages")
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        return None
    return packages


def _write_freeze_cache(path: Path, key: tuple[str, tuple[float, ...]], packages: list[str]) -> None:
    """Best effort, atomically (tmp + rename): a reader sees the old answer or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(
            json.dumps({"interpreter": key[0], "stamp": list(key[1]), "packages": packages}), encoding="utf-8"
        )
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("freeze cache %s not written: %s", path, exc)
        tmp.unlink(missing_ok=True)


def _uv_freeze(interpreter: str) -> list[str]:
    uv = find_uv()
    if not uv:
        return []
    try:
        out = subprocess.run([uv, "pip", "freeze", "--python", interpreter], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return sorted(line for line in out.stdout.decode("utf-8", "replace").splitlines() if line.strip())


def _on_this_host(status: dict[str, Any]) -> bool:
    return status.get("host") in (None, socket.gethostname())


def _process_belongs_to_run(pid: int, run_id: str) -> bool:
    """Guard against pid reuse: the process must carry this run's id in its environment."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"MLTRAIN_RUN_ID={run_id}".encode() in environ.split(b"\0")
