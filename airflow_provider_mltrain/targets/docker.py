"""The Docker target: each run in its own container, from an image built per environment hash.

Everything goes through the Docker API, so a remote daemon works the same as the local one: the
snapshot's blobs are sent with ``put_archive`` into a volume that keeps them for the next run
(``mltrain-cache-<target>``), with the runner; ``run.json`` travels in the container's environment
and the entry script makes the run folder (``/tmp/mltrain/runs/<run_id>``), so a warm resubmission
sends no archive at all before the start. Status, log, metrics and outputs come back with
``get_archive``, which also works once the container has stopped; a small finished run folder comes
from the container's log instead (see ``runner/docker_entry.py``). The container is named after the
run id, so a second start of the same run finds it instead of starting another, and a new controller
reattaches by id.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import secrets
import tarfile
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core.compute import ComputeTarget, LogLine, PreparedEnvironment, RunSpec
from airflow_provider_mltrain.core.environment import EnvironmentBuildFailed
from airflow_provider_mltrain.core.errors import InvalidRunConfig, TargetError, TargetUnreachable
from airflow_provider_mltrain.core.redact import secret_values
from airflow_provider_mltrain.core.runfiles import COLLECTED, RunFiles, extract_tar
from airflow_provider_mltrain.core.snapshot import delta_manifest
from airflow_provider_mltrain.core.states import TERMINAL_STATES
from airflow_provider_mltrain.runner import RUNNER_DIR

if TYPE_CHECKING:
    import docker

    from airflow_provider_mltrain.core.environment import Environment
    from airflow_provider_mltrain.core.inputs import ResolvedInput
    from airflow_provider_mltrain.core.snapshot import Snapshot, SnapshotStore

log = logging.getLogger(__name__)

# Run folders: in /tmp, which every image lets any user write to, so that the entry script can make
# the folder itself (no archive call before the start); containers made before kept them here:
LEGACY_RUNS = "/mltrain/runs"
RUNS = "/tmp/mltrain/runs"
LABEL_RUN_DIR = "mltrain.run_dir"
# Read by runner/docker_entry.py: run.json's text, and the token of the finished run folder's frame.
SPEC_VAR = "MLTRAIN_RUN_SPEC"
TOKEN_VAR = "MLTRAIN_FOLDER_TOKEN"  # noqa: S105 - a variable name
SPEC_MAX = 64 << 10  # a bigger run.json goes in the archive (a variable may hold 128 KiB)
FRAME_LOG_DRIVERS = ("json-file", "local")  # log drivers the daemon can read the frame back from
INSPECT_REUSE = 0.1  # seconds; never across a wait_for_change
FRESH = 1.0  # seconds after its start a container's status is not read (_running_status)
MARK_DELAY = 2.0  # seconds after a start with no archive before it, its markers are written
FRAME_MAX_LINES = 400  # lines of the frame at its largest (docker_entry.FRAME_LIMIT, 3 KiB a line)
CACHE = "/mltrain/cache"
ENV_PYTHON = "/opt/mltrain/env/bin/python"
IMAGE_REPO = "mltrain-env"
LABEL_RUN = "mltrain.run_id"
CLEANUP_POLICIES = ("never", "on_success", "always")
RUNNER_FILES = ("supervisor.py", "bootstrap.py", "docker_entry.py", "tree.py")
_MAIN_SCRIPTS = ("docker_entry.py", "bootstrap.py")
_runner_cache: list[tuple[str, bytes]] = []
_runner_digest: list[str] = []
# Above this size a running container's log is read from the offset by a command in the container,
# not copied whole.
EXEC_READ_THRESHOLD = 1 << 20
CREATED_GRACE = 120.0  # a container left "created" this long by a dead controller is started again
MAX_REMEMBERED = 256  # stopped containers whose inspection a target keeps
# After status.json says the run ended, its container only removes the working copy and exits:
# reads wait this long for that, so that the whole run folder then comes in one archive.
EXIT_WAIT = 30.0
# _CUT_SHORT: the daemon archives a running container's file from its stat, then copies what it
# opens at that path. A file replaced or shortened in between (status.json at each heartbeat, a
# checkpoint the script saves by rename) ends the archive early, which tarfile reports as
# "unexpected end of data". Such a read is made this many times in all before it is given up.
CUT_SHORT_TRIES = 5
_ENDED = frozenset(state.value for state in TERMINAL_STATES)

_PRUNE = """
import json, os, shutil, sys, time
cache, days, keep_inputs = sys.argv[1], float(sys.argv[2]), set(json.loads(sys.argv[3]))
cutoff = time.time() - days * 86400
inputs_removed = inputs_bytes = 0
folder = os.path.join(cache, "inputs")
for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    path = os.path.join(folder, name)
    used = os.path.join(cache, "used", "input-" + name)  # refreshed by every start that uses it
    times = [os.stat(p).st_mtime for p in (os.path.join(path, ".complete"), used) if os.path.exists(p)]
    # No marker: a copy whose archive is being unpacked now, or never was whole; gone after an hour.
    last = max(times) if times else os.stat(path).st_mtime
    if name in keep_inputs or last >= (cutoff if times else min(cutoff, time.time() - 3600)):
        continue
    inputs_bytes += sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(path) for f in fs)
    shutil.rmtree(path)
    if os.path.exists(used):
        os.unlink(used)
    inputs_removed += 1
keep = set()
folder = os.path.join(cache, "manifests")
names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
def sid(name):
    return name.split(".")[0]
def last_use(name):
    used = os.path.join(cache, "used", sid(name))
    return max(os.stat(p).st_mtime for p in (os.path.join(folder, name), used) if os.path.exists(p))
kept = {n for n in names if last_use(n) >= cutoff}
for name in list(kept):  # a delta manifest needs its base's full manifest
    if name.endswith(".delta.json"):
        with open(os.path.join(folder, name)) as f:
            kept.add(json.load(f)["base"] + ".json")
for name in names:
    path = os.path.join(folder, name)
    if name not in kept:
        os.unlink(path)  # first: the volume no longer claims to hold this snapshot
        used = os.path.join(cache, "used", sid(name))
        if os.path.exists(used):
            os.unlink(used)
        continue
    with open(path) as f:
        keep.update(entry[1] for entry in json.load(f)["files"])
removed = freed = kept = 0
blobs = os.path.join(cache, "blobs")
for sub in os.listdir(blobs) if os.path.isdir(blobs) else []:
    for name in os.listdir(os.path.join(blobs, sub)):
        path = os.path.join(blobs, sub, name)
        st = os.stat(path)
        if sub + name in keep or st.st_mtime >= cutoff:
            kept += 1
        else:
            os.unlink(path)
            removed += 1
            freed += st.st_size
print(json.dumps({"removed": removed, "bytes": freed, "kept": kept,
                  "inputs_removed": inputs_removed, "inputs_bytes": inputs_bytes}))
"""
# Reads a (long) log from an offset in the container; a link at the end of the path is not followed.
_READ_FROM = (
    "import os, stat, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)\n"
    "f = os.fdopen(fd, 'rb')\n"
    "if stat.S_ISREG(os.fstat(fd).st_mode):\n"
    "    f.seek(int(sys.argv[2]))\n"
    "    sys.stdout.buffer.write(f.read(int(sys.argv[3])))\n"
)
_PROBE = (
    "import json, sys\n"
    "from importlib import metadata\n"
    "pkgs = sorted('%s==%s' % (d.metadata['Name'], d.version) for d in metadata.distributions()"
    " if d.metadata['Name'])\n"
    "print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], 'packages': pkgs}))\n"
)


@dataclass(frozen=True)
class DockerOptions:
    """Container settings: connection extras give the defaults, a run's ``target_options`` override."""

    image: str | None = None  # used when the environment names no base image or Dockerfile
    cpus: float | None = None
    mem_limit: str | int | None = None
    shm_size: str | int | None = None
    gpus: int | list[str] | None = None  # a count (-1: all) or device ids
    network_mode: str | None = None  # None: the daemon's default
    build_network_mode: str | None = None  # network for RUN steps of image builds
    environment: dict[str, str] = field(default_factory=dict)
    user: str = "1000:1000"  # non-root unless asked
    cleanup: str = "on_success"
    volumes: tuple[str, ...] = ()  # "host_path:container_path[:ro]"

    @classmethod
    def parse(cls, raw: dict[str, Any], where: str) -> dict[str, Any]:
        """Validated, normalized option values from ``raw``; unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidRunConfig(
                f"{where}: unknown Docker option(s) {', '.join(unknown)}. Known: {', '.join(sorted(known))}."
            )
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if value is None or value == "":
                continue
            out[key] = _check_option(key, value, where)
        return out

    def merged(self, values: dict[str, Any]) -> DockerOptions:
        return replace(self, **values) if values else self

    def host_config(self) -> dict[str, Any]:
        """Keyword arguments of ``containers.create`` for resources, devices, network and user."""
        kwargs: dict[str, Any] = {"user": self.user}
        if self.cpus is not None:
            kwargs["nano_cpus"] = int(self.cpus * 1e9)
        if self.mem_limit is not None:
            kwargs["mem_limit"] = self.mem_limit
        if self.shm_size is not None:
            kwargs["shm_size"] = self.shm_size
        if self.network_mode is not None:
            kwargs["network_mode"] = self.network_mode
        if self.gpus is not None:
            from docker.types import DeviceRequest

            if isinstance(self.gpus, int):
                request = DeviceRequest(count=self.gpus, capabilities=[["gpu"]])
            else:
                request = DeviceRequest(device_ids=list(self.gpus), capabilities=[["gpu"]])
            kwargs["device_requests"] = [request]
        return kwargs


def _check_option(key: str, value: Any, where: str) -> Any:
    def bad(expected: str) -> InvalidRunConfig:
        return InvalidRunConfig(f"{where}: Docker option {key}={value!r} is not valid: {expected}.")

    if key == "cpus":
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad("give a number of CPUs such as 2 or 0.5") from None
        if number <= 0:
            raise bad("give a number of CPUs above 0")
        return number
    if key in ("mem_limit", "shm_size"):
        if isinstance(value, bool) or not (
            (isinstance(value, int) and value > 0)
            or (isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?[bkmgBKMG]?", value.strip()))
        ):
            raise bad("give bytes (an integer) or a size such as '512m' or '4g'")
        return value.strip().lower() if isinstance(value, str) else value
    if key == "gpus":
        if isinstance(value, str) and value.strip().lower() == "all":
            return -1
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= -1 and value != 0:
            return value
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, int)) for v in value):
            return [str(v) for v in value]
        raise bad("give a GPU count, 'all', or a list of device ids such as ['0', '1']")
    if key == "cleanup":
        if value not in CLEANUP_POLICIES:
            raise bad(f"use one of {', '.join(CLEANUP_POLICIES)}")
        return value
    if key == "environment":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad("give a mapping of variable names to values")
        return {k: str(v) for k, v in value.items()}
    if key == "volumes":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(
            isinstance(v, str) and re.fullmatch(r"[^:]+:/[^:]*(:(ro|rw))?", v) for v in items
        ):
            raise bad("give 'host_path_or_volume:/container/path[:ro]' items")
        return tuple(items)
    if key == "user":
        text = str(value).strip()
        if not re.fullmatch(r"(root|\d+)(:\d+)?", text):
            raise bad(
                "give 'root' or a numeric uid[:gid] such as '1000:1000' (names need the image's passwd)"
            )
        return text
    if not isinstance(value, str) or not value.strip():
        raise bad("give a non-empty string")
    return value.strip()


def container_name(run_id: str) -> str:
    return f"mltrain-{run_id}"


def volume_name(target_name: str) -> str:
    return "mltrain-cache-" + re.sub(r"[^A-Za-z0-9_.-]", "-", target_name)


class _SpooledTarFile(tarfile.TarFile):
    """A tar read from a spool file of its own: closing the tar closes the spool (TarFile leaves a
    file it was given open, which leaks it, a ResourceWarning)."""

    def close(self) -> None:
        fileobj = self.fileobj
        try:
            super().close()
        finally:
            if fileobj is not None:
                fileobj.close()


class DockerTarget(ComputeTarget):
    kind = "docker"

    def __init__(
        self,
        name: str,
        root: str | os.PathLike[str],
        base_url: str = "unix:///var/run/docker.sock",
        tls: Any = None,
        options: DockerOptions | None = None,
        timeout: float = 120.0,
    ):
        super().__init__(name)
        self.root = Path(root)  # this controller's notes about the target (image facts, sent snapshots)
        self.base_url = base_url
        self.tls = tls
        self.options = options or DockerOptions()
        self.timeout = timeout
        self.volume = volume_name(name)
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self.last_upload: dict[str, int] = {}
        self._finished: dict[str, dict[str, Any]] = {}
        # A stopped container's state no longer changes: it is inspected once, not at every read.
        self._stopped: dict[str, Any] = {}
        # The last status.json read from a running container, with the daemon's stat of it.
        self._status_seen: dict[str, tuple[tuple[Any, Any], dict[str, Any] | None]] = {}
        self._running: set[str] = set()  # runs whose container was running when last inspected
        # A running container's inspection, reused for INSPECT_REUSE seconds: one refresh of a
        # follower reads status, metrics and log, each of which looks the container up.
        self._inspected: dict[str, tuple[float, Any]] = {}
        self._started_at: dict[str, float] = {}  # runs this target started: when (time.monotonic())
        # Markers of runs started with no archive before them, not written yet (_mark_started).
        self._pending_marks: dict[str, tuple[Any, bytes]] = {}

    # -- connection ----------------------------------------------------------------------------

    def client(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                import docker
                from docker.errors import DockerException

                try:
                    client = docker.DockerClient(base_url=self.base_url, tls=self.tls, timeout=self.timeout)
                    _share_connections(client.api)
                    if self.base_url.startswith("unix:"):
                        # No proxy for a local socket: requests would otherwise read the proxy
                        # variables from the environment at every request (a few ms of CPU a run).
                        client.api.trust_env = False
                    client.ping()
                except DockerException as exc:
                    raise TargetUnreachable(
                        f"Docker target {self.name!r}: the daemon at {self.base_url} does not answer "
                        f"({_short(exc)}). Check that dockerd runs and the URL is right: "
                        f"docker -H {self.base_url} info"
                    ) from None
                self._client = client
            return self._client

    def close(self) -> None:
        self._write_all_marks()
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            for entry in self._finished.values():
                entry["tar"].close()
            self._finished.clear()
            self._stopped.clear()
            self._status_seen.clear()
            self._running.clear()
            self._started_at.clear()
            self._inspected.clear()

    def ping(self) -> dict[str, Any]:
        """The daemon's version information (reaches the daemon for real)."""
        return dict(self.client().version())

    # -- options and environments --------------------------------------------------------------

    def check_options(self, framework: str | None, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        framework, _ = super().check_options(framework, {})
        return framework, DockerOptions.parse(options, f"target_options of Docker target {self.name!r}")

    def _base_image(self, env: Environment) -> str | None:
        return env.docker.base_image or self.options.image

    def check_environment(self, env: Environment) -> None:
        if not (env.docker.base_image or env.docker.dockerfile or self.options.image):
            raise InvalidRunConfig(
                f"Docker target {self.name!r} needs an image: set docker.base_image (or docker.dockerfile) "
                f"in environment {env.name!r}, or the connection's 'image' extra."
            )
        for line in env.requirement_lines() if env.managed else []:
            if line.startswith("-e "):
                raise InvalidRunConfig(
                    f"Environment {env.name!r}: editable requirement {line!r} names a folder on this "
                    "machine, which a Docker build cannot see. Build a wheel or install from an index."
                )
        self.client()  # an unreachable daemon is reported now, before the run is recorded

    def image_tag(self, env: Environment) -> str:
        """``mltrain-env:<environment hash>``; when the base image is the connection's default (not
        part of the environment), the hash covers that image's name too."""
        env_hash = env.content_hash()
        if env.docker.base_image or env.docker.dockerfile or not self.options.image:
            return f"{IMAGE_REPO}:{env_hash}"
        combined = hashlib.sha256(f"{env_hash}\0{self.options.image}".encode()).hexdigest()
        return f"{IMAGE_REPO}:{combined}"

    def prepare_environment(
        self, env: Environment, log: LogLine, rebuild: bool = False
    ) -> PreparedEnvironment:
        client = self.client()
        built, seconds = False, 0.0
        image_id: str | None = None  # looked up once here, not again for the image's facts
        if env.managed or env.docker.dockerfile:
            image = self.image_tag(env)
            image_id = None if rebuild else self._image_id(image)
            if image_id is None:
                with self._build_lock(env.content_hash()):
                    if rebuild or not self._has_image(image):
                        started = time.monotonic()
                        self._build(env, image, log)
                        built, seconds = True, time.monotonic() - started
            else:
                log(f"Image {image} exists on {self.base_url}: reusing it.")
        else:
            image = self._base_image(env) or ""
            image_id = self._ensure_image(image, log)
        interpreter = ENV_PYTHON if env.managed else (env.python.interpreter_path or "python3")
        facts = self._image_facts(client, image, interpreter, image_id)
        wanted = env.python.python_version if env.managed else None
        if wanted and not (facts["version"] + ".").startswith(wanted.rstrip(".") + "."):
            raise EnvironmentBuildFailed(
                f"Environment {env.name!r} asks for Python {wanted}, but image {image} has Python "
                f"{facts['version']}. A Docker build uses the image's Python: pick a base image with "
                f"Python {wanted} (for example python:{wanted}-slim)."
            )
        return PreparedEnvironment(
            interpreter=interpreter,
            packages=tuple(facts["packages"]),
            python_version=facts["version"],
            built=built,
            seconds=seconds,
            image=image,
        )

    def _image_id(self, image: str) -> str | None:
        from docker.errors import ImageNotFound

        try:
            return str(self.client().images.get(image).id)
        except ImageNotFound:
            return None

    def _has_image(self, image: str) -> bool:
        return self._image_id(image) is not None

    def _ensure_image(self, image: str, log: LogLine) -> str | None:
        """The id of ``image`` (None when it was pulled just now), pulled when the daemon lacks it."""
        from docker.errors import DockerException

        image_id = self._image_id(image)
        if image_id is not None:
            return image_id
        log(f"Image {image} is not on {self.base_url}: pulling it.")
        try:
            self.client().images.pull(image)
        except DockerException as exc:
            raise EnvironmentBuildFailed(
                f"Image {image!r} is not on the Docker daemon at {self.base_url} and could not be pulled "
                f"({_short(exc)}). Pull it there (docker pull {image}) or build it "
                f"(docker build -t {image} .), then submit again."
            ) from None
        return None

    @contextlib.contextmanager
    def _build_lock(self, env_hash: str) -> Iterator[None]:
        """One build per environment hash at a time from this machine; the second one reuses the image."""
        folder = self.root / "builds"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{env_hash}.lock", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            yield

    def _build(self, env: Environment, tag: str, log: LogLine) -> None:
        from docker.errors import DockerException

        context, dockerfile = self._build_context(env, log)
        log(f"Building image {tag} on {self.base_url}")
        output: list[str] = []
        try:
            stream = self.client().api.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                rm=True,
                forcerm=True,
                decode=True,
                network_mode=self.options.build_network_mode,
                labels={"mltrain.environment": env.name, "mltrain.environment_hash": env.content_hash()},
            )
            for chunk in stream:
                text = chunk.get("stream") or chunk.get("status") or ""
                for line in text.splitlines():
                    if line.strip():
                        output.append(line)
                        log(line)
                if "error" in chunk:
                    detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                    tail = "\n".join(output[-25:])
                    raise EnvironmentBuildFailed(
                        f"Building image {tag} for environment {env.name!r} failed: {detail.strip()}\n"
                        f"Last build output:\n{tail}"
                    )
        except DockerException as exc:
            raise EnvironmentBuildFailed(
                f"Building image {tag} for environment {env.name!r} failed: {_short(exc)}"
            ) from None
        if not self._has_image(tag):
            raise EnvironmentBuildFailed(f"Building image {tag} ended without an image:\n{dockerfile}")

    def _build_context(self, env: Environment, log: LogLine) -> tuple[io.BytesIO, str]:
        files: dict[str, bytes] = {}
        if env.docker.dockerfile:
            text = env._read(env.docker.dockerfile, "dockerfile").rstrip("\n") + "\n"
        else:
            base = self._base_image(env)
            self._ensure_image(base or "", log)
            text = f"FROM {base}\n"
        if env.managed:
            lines = []
            for line in env.requirement_lines():
                match = re.match(r"^-c (\S+) #sha256=\w+$", line)
                if match:  # a constraints file of this machine travels in the build context
                    name = f"mltrain-constraints-{len(files)}.txt"
                    files[name] = Path(match.group(1)).read_bytes()
                    line = f"-c /opt/mltrain/{name}"
                lines.append(line)
            files["mltrain-requirements.txt"] = ("\n".join(lines) + "\n").encode()
            text += (
                "USER root\n"
                "COPY mltrain-*.txt /opt/mltrain/\n"
                "RUN python3 -m venv /opt/mltrain/env"
                " && /opt/mltrain/env/bin/python -m pip install --no-cache-dir --disable-pip-version-check"
                " --no-input -r /opt/mltrain/mltrain-requirements.txt\n"
            )
        files["Dockerfile"] = text.encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in files.items():
                _add_bytes(tar, name, data, 0o644)
        buf.seek(0)
        return buf, text

    def _image_facts(
        self, client: docker.DockerClient, image: str, interpreter: str, image_id: str | None = None
    ) -> dict[str, Any]:
        """Python version and installed packages of ``image`` (whose id the caller may know),
        probed once per image id."""
        from docker.errors import APIError, DockerException

        image_id = (image_id or client.images.get(image).id).split(":")[-1]
        cache = self.root / "images" / f"{image_id}-{re.sub(r'[^A-Za-z0-9]', '_', interpreter)}.json"
        try:
            return dict(json.loads(cache.read_text()))
        except (OSError, ValueError):
            pass
        probe = None
        try:
            probe = client.containers.create(
                image, [interpreter, "-I", "-c", _PROBE], network_mode="none", user=self.options.user
            )
            probe.start()
            result = probe.wait(timeout=self.timeout)
            output = probe.logs(stdout=True, stderr=True)
            if result.get("StatusCode") != 0:
                raise EnvironmentBuildFailed(
                    f"{interpreter} in image {image} exited with code {result.get('StatusCode')}: "
                    f"{output[-500:].decode('utf-8', 'replace')}"
                )
        except APIError as exc:
            if "executable file not found" in str(exc) or "no such file" in str(exc).lower():
                raise EnvironmentBuildFailed(
                    f"Image {image} has no {interpreter}: the Docker target runs scripts with Python >= 3.9 "
                    "from the image. Install python3 in the image (e.g. apt-get install python3) or set "
                    "the environment's interpreter_path."
                ) from None
            raise EnvironmentBuildFailed(
                f"Could not start a container from image {image}: {_short(exc)}"
            ) from None
        except DockerException as exc:
            raise EnvironmentBuildFailed(
                f"Probing the Python of image {image} failed: {_short(exc)}"
            ) from None
        finally:
            if probe is not None:
                with contextlib.suppress(DockerException):
                    probe.remove(force=True)
        try:
            facts = json.loads(output.decode("utf-8", "replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise EnvironmentBuildFailed(
                f"{interpreter} in image {image} did not run as a Python >= 3.9: {output[-500:]!r}"
            ) from None
        if tuple(int(p) for p in facts["version"].split(".")[:2]) < (3, 9):
            raise EnvironmentBuildFailed(
                f"Image {image} has Python {facts['version']}; the runner needs Python >= 3.9."
            )
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(facts))
        os.replace(tmp, cache)
        return dict(facts)

    # -- inputs --------------------------------------------------------------------------------

    def check_input(self, inp: ResolvedInput) -> None:
        """A download travels into the cache volume once per content key; a mount is a read-only
        bind mount of the local path (a path on the Docker daemon's host: this machine for a local
        daemon)."""

    def input_path(self, inp: ResolvedInput) -> str:
        if inp.mode == "mount":
            return inp.path_on_compute or f"/mltrain/inputs/{inp.name}"
        folder = f"{CACHE}/inputs/{inp.key}/data"
        return f"{folder}/{inp.single}" if inp.single else folder

    # -- start ---------------------------------------------------------------------------------

    def start(self, spec: RunSpec, snapshot: Snapshot, store: SnapshotStore) -> bool:
        from docker.errors import APIError

        client = self.client()
        owner = spec.labels.get("mltrain.workspace", "")
        # The container is not looked up first: its creation says when it exists (a name taken).
        # A container seen stopped here already, or a spec with no image, is looked up instead.
        if (spec.run_id in self._stopped or not spec.image) and self._container(spec.run_id) is not None:
            return self._start_existing(spec, snapshot, store, owner)
        if not spec.image:
            raise TargetError(f"Run {spec.run_id}: no image was prepared for the Docker target.")
        opts = self.options.merged(spec.target_options)
        run_dir = f"{RUNS}/{spec.run_id}"
        volumes: dict[str, dict[str, str]] = {self.volume: {"bind": CACHE, "mode": "rw"}}
        for item in opts.volumes:
            source, dest, *mode = item.split(":")
            volumes[source] = {"bind": dest, "mode": mode[0] if mode else "rw"}
        for inp in spec.inputs:
            if inp.mode == "mount":
                volumes[inp.path] = {"bind": inp.target_path, "mode": "ro"}
        labels = {
            LABEL_RUN: spec.run_id,
            LABEL_RUN_DIR: run_dir,
            "mltrain.experiment": spec.experiment,
            "mltrain.target": self.name,
            "mltrain.cleanup": opts.cleanup,
            **{k: v for k, v in spec.labels.items() if v},
        }
        environment = {"HOME": "/tmp", **opts.environment, TOKEN_VAR: secrets.token_hex(16)}
        spec_text = _spec_for_environment(spec)
        if spec_text is not None:
            environment[SPEC_VAR] = spec_text
        host = opts.host_config()
        user = host.pop("user")
        try:
            created = client.api.create_container(
                spec.image,
                [
                    spec.interpreter or "python3",
                    *("-I", "-S", f"{CACHE}/runner/{_runner_hash()}/docker_entry.py"),
                    *(run_dir, CACHE, snapshot.id),
                ],
                name=container_name(spec.run_id),
                labels=labels,
                volumes=[bind["bind"] for bind in volumes.values()],
                environment=environment,
                user=user,
                detach=True,
                host_config=client.api.create_host_config(
                    binds=volumes,
                    init=True,  # reaps what the script leaves behind and passes signals to the supervisor
                    **host,
                ),
            )
            # Not inspected again: the start below needs only its id (``containers.create`` would
            # inspect it, one more request before the start).
            container = client.containers.prepare_model({"Id": created["Id"]})
        except APIError as exc:
            if exc.status_code == 409:  # the run's container exists: reattach, never a second one
                return self._start_existing(spec, snapshot, store, owner)
            raise TargetError(
                f"Docker target {self.name!r}: creating the container failed: {_short(exc)}"
            ) from None
        try:
            # A run whose container was already cleaned up left its mark in the volume.
            mark = f"{CACHE}/started/{spec.run_id}"
            if self._stat(container, mark) is not None:
                found = (self._read_whole(container, mark) or b"").decode()
                container.remove(force=True)
                self._check_owner(spec.run_id, found, owner)
                return False
            sent = self._put_files(container, spec, snapshot, store, owner, run_json=spec_text is None)
            container.start()
        except BaseException:
            with contextlib.suppress(Exception):
                container.remove(force=True)
            raise
        if not sent:
            self._mark_started(container, spec, snapshot, owner)
        with self._lock:
            while len(self._started_at) >= MAX_REMEMBERED:
                self._started_at.pop(next(iter(self._started_at)))
            self._started_at[spec.run_id] = time.monotonic()
        self._remember_sent(snapshot.id)
        return True

    def _start_existing(self, spec: RunSpec, snapshot: Snapshot, store: SnapshotStore, owner: str) -> bool:
        """A start of a run whose container exists (its name is taken; it is not looked up before
        the creation, which says so): it is this run's, started unless a stopped controller left it
        half-prepared (``_finish_interrupted_start``). Always False: nothing new started."""
        existing = self._container(spec.run_id)
        if existing is not None:
            self._check_owner(spec.run_id, (existing.labels or {}).get("mltrain.workspace", ""), owner)
            self._finish_interrupted_start(existing, spec, snapshot, store, owner)
        return False

    def _check_owner(self, run_id: str, found: str, owner: str) -> None:
        """Run ids are unique within a workspace; two workspaces on one daemon may collide."""
        if found and owner and found != owner:
            raise TargetError(
                f"Run id {run_id!r} was already used on the Docker daemon at {self.base_url} by the "
                f"workspace {found}, not this one ({owner}). Submit under another run id."
            )

    def _finish_interrupted_start(
        self, container: Any, spec: RunSpec, snapshot: Snapshot, store: SnapshotStore, owner: str
    ) -> None:
        """A controller that died after creating the container but before starting it: the container
        is started when all it needs is in place (``run.json`` in its run folder, or in its
        environment with nothing left to send to the volume), else removed once old enough."""
        if container.status != "created":
            return
        run_id = spec.run_id
        created = _parse_time(container.attrs.get("Created"))
        in_env = any(
            e.startswith(SPEC_VAR + "=") for e in (container.attrs.get("Config") or {}).get("Env") or ()
        )
        if in_env:
            mark = f"{CACHE}/started/{run_id}"
            ready = self._stat(container, mark) is None and not self._archive_needed(
                container, spec, snapshot, store
            )
        else:
            ready = self._stat(container, f"{_run_dir(container, run_id)}/run.json") is not None
        if ready:
            container.start()
            if in_env:
                self._mark_started(container, spec, snapshot, owner)
        elif created and time.time() - created > CREATED_GRACE:
            log.warning("Run %s: removing container left half-prepared by a stopped controller", run_id)
            container.remove(force=True)

    def _archive_needed(
        self, container: Any, spec: RunSpec, snapshot: Snapshot, store: SnapshotStore
    ) -> bool:
        """Whether the volume lacks anything of the run: blobs, the runner, a cached input."""
        if self._missing_blobs(container, snapshot, store)[0] is not None:
            return True
        if self._stat(container, f"{CACHE}/runner/{_runner_hash()}/.complete") is None:
            return True
        return bool(self._missing_inputs(container, spec))

    def _marks(self, tar: tarfile.TarFile, spec: RunSpec, snapshot: Snapshot, owner: str) -> None:
        """Markers in the volume: this run started (``start`` refuses the run id from then on, even
        once its container is gone), and the last use of its snapshot and inputs (for pruning)."""
        cache = CACHE.lstrip("/")
        _add_bytes(tar, f"{cache}/started/{spec.run_id}", owner.encode(), 0o444)
        _add_bytes(tar, f"{cache}/used/{snapshot.id}", b"", 0o444)  # its time: last use, for pruning
        for inp in spec.inputs:
            if inp.mode == "download":
                # Its time is this use, which a prune goes by (the copy itself stays read-only).
                _add_bytes(tar, f"{cache}/used/input-{inp.key}", b"", 0o444)

    def _mark_started(self, container: Any, spec: RunSpec, snapshot: Snapshot, owner: str) -> None:
        """The markers of a run that started with no archive before it are written after the start:
        ``MARK_DELAY`` seconds later, or before its container is removed (``_remove``), or when
        this process exits, whichever comes first. An archive call costs the daemon tens of
        milliseconds and locks the container meanwhile; a short run ends before the delay, and its
        markers then travel after it, off the following path."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            self._marks(tar, spec, snapshot, owner)
        with self._lock:
            self._pending_marks[spec.run_id] = (container, buf.getvalue())
        timer = threading.Timer(MARK_DELAY, self._write_marks, args=(spec.run_id,))
        timer.daemon = True  # the exit hook writes what is pending; a submitter need not linger
        timer.start()
        _pending_targets.add(self)

    def _write_marks(self, run_id: str) -> bool:
        """Writes ``run_id``'s pending markers, once (any thread may call it); whether it did."""
        from docker.errors import DockerException
        from requests.exceptions import RequestException

        with self._lock:
            pending = self._pending_marks.pop(run_id, None)
        if pending is None:
            return False
        container, data = pending
        try:
            container.put_archive("/", data)
        except (DockerException, RequestException) as exc:  # _remove writes the started mark anyway
            log.debug("Run %s: writing its markers failed: %s", run_id, _short(exc))
            return False
        return True

    def _write_all_marks(self) -> None:
        with self._lock:
            pending = list(self._pending_marks)
        for run_id in pending:
            self._write_marks(run_id)

    def _put_files(
        self,
        container: Any,
        spec: RunSpec,
        snapshot: Snapshot,
        store: SnapshotStore,
        owner: str,
        run_json: bool = True,
    ) -> bool:
        """One archive, extracted at ``/`` before the container starts, when anything must travel:
        into the cache volume the blobs it lacks and then the snapshot's manifest, the markers
        (``_marks``), the runner when this version is new to it, the cached inputs it lacks; into
        the container, the run folder with ``run.json`` when ``run_json`` (else the entry script
        makes them from its environment). Returns whether it sent one: a warm resubmission sends
        nothing."""
        cache = CACHE.lstrip("/")
        missing, base = self._missing_blobs(container, snapshot, store)
        runner = f"{cache}/runner/{_runner_hash()}"
        new_runner = self._stat(container, f"/{runner}/.complete") is None
        inputs = self._missing_inputs(container, spec)
        needed = {f.hash: f for f in snapshot.files}
        self.last_input_upload = {"inputs": 0, "bytes": 0}
        if missing is None and not new_runner and not inputs and not run_json:
            self.last_upload = {
                "delta_manifest": 0,
                "blobs": 0,
                "bytes": 0,
                "files": len(needed),
                "cache_bytes": 0,
                "wire_bytes": 0,
            }
            return False
        delta = None
        sent_bytes = 0
        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as spool:
            with tarfile.open(fileobj=spool, mode="w") as tar:
                if missing is not None:
                    for digest in missing:
                        info = tarfile.TarInfo(f"{cache}/blobs/{digest[:2]}/{digest[2:]}")
                        info.size = needed[digest].size
                        info.mode = 0o444  # the run's user can read the cache, not change it
                        info.mtime = int(time.time())
                        with store.open_blob(digest) as f:
                            tar.addfile(info, f)
                        sent_bytes += info.size
                    # After the blobs: the manifest in the volume says it holds all of them. Against
                    # a full manifest the volume has, only the difference travels.
                    delta = delta_manifest(snapshot, base) if base is not None else None
                    if delta is not None:
                        body, name = json.dumps(delta).encode(), f"{snapshot.id}.delta.json"
                    else:
                        body, name = json.dumps(snapshot.to_dict()).encode(), f"{snapshot.id}.json"
                    _add_bytes(tar, f"{cache}/manifests/{name}", body, 0o444)
                self._marks(tar, spec, snapshot, owner)
                self._add_inputs(tar, inputs)
                cache_bytes = tar.offset
                if new_runner:
                    _add_dir(tar, runner, 0o755)
                    for rel, data in _runner_files():
                        _add_bytes(tar, f"{runner}/{rel}", data, 0o644)
                    _add_bytes(tar, f"{runner}/.complete", b"", 0o644)
                if run_json:
                    # The run's user is not root: its folder is writable for it.
                    run_dir = f"{RUNS}/{spec.run_id}".lstrip("/")
                    _add_dir(tar, run_dir, 0o777)
                    _add_bytes(tar, f"{run_dir}/run.json", json.dumps(spec.to_runner_json()).encode(), 0o644)
                end = tar.offset + 2 * tarfile.BLOCKSIZE  # the archive without tarfile's record padding
            spool.truncate(end)
            spool.seek(0)
            container.put_archive(
                "/", _Reporting(spool, end, self.upload_progress) if self.upload_progress else spool
            )
        self.last_upload = {
            "delta_manifest": int(delta is not None),
            "blobs": len(missing or ()),
            "bytes": sent_bytes,
            "files": len(needed),
            "cache_bytes": cache_bytes,  # the cache's part of the archive: blobs, headers, markers
            "wire_bytes": end,  # the whole archive, runner and run.json included
        }
        log.debug("Run %s: sent %s", spec.run_id, self.last_upload)
        return True

    def _missing_inputs(self, container: Any, spec: RunSpec) -> list[ResolvedInput]:
        """The inputs to download that the volume has no complete copy of (one stat each)."""
        return [
            inp
            for inp in spec.inputs
            if inp.mode == "download" and self._stat(container, f"{CACHE}/inputs/{inp.key}/.complete") is None
        ]

    def _add_inputs(self, tar: tarfile.TarFile, inputs: list[ResolvedInput]) -> None:
        """The cached inputs the volume lacks, each closed by its ``.complete`` marker."""
        sent = {"inputs": 0, "bytes": 0}
        for inp in inputs:
            folder = f"{CACHE}/inputs/{inp.key}"
            for f in inp.files:
                info = tarfile.TarInfo(f"{folder}/data/{f.rel}".lstrip("/"))
                with open(inp.data_dir / f.rel, "rb") as data:
                    info.size = os.fstat(data.fileno()).st_size
                    info.mode = 0o444
                    info.mtime = int(time.time())
                    tar.addfile(info, data)
                sent["bytes"] += info.size
            _add_bytes(tar, f"{folder}/.complete".lstrip("/"), b"", 0o444)
            sent["inputs"] += 1
        self.last_input_upload = sent

    def _missing_blobs(
        self, container: Any, snapshot: Snapshot, store: SnapshotStore
    ) -> tuple[list[str] | None, Snapshot | None]:
        """Blobs of ``snapshot`` the volume lacks (None: it holds the whole snapshot already), and
        the snapshot with a full manifest there that a delta manifest can be written against.

        The volume is asked about the snapshots this workspace sent last (one request each): the
        blobs of every one it confirms are there; the rest are sent.
        """
        for suffix in (".json", ".delta.json"):
            if self._stat(container, f"{CACHE}/manifests/{snapshot.id}{suffix}") is not None:
                return None, None
        needed = {f.hash for f in snapshot.files}
        present: set[str] = set()
        base = None
        for sent in self._sent_snapshots():
            if sent == snapshot.id or (not needed - present and base is not None):
                continue
            try:
                manifest = store.get(sent)
            except Exception:  # noqa: S112 - a snapshot this workspace no longer has: just resend
                continue
            if self._stat(container, f"{CACHE}/manifests/{sent}.json") is not None:
                present.update(f.hash for f in manifest.files)
                base = base or manifest
            elif self._stat(container, f"{CACHE}/manifests/{sent}.delta.json") is not None:
                present.update(f.hash for f in manifest.files)
        return sorted(needed - present), base

    def prune_cache(self, days: float, keep_inputs: Iterable[str] = ()) -> dict[str, int]:
        """Delete the volume's manifests older than ``days`` and the blobs no newer manifest lists,
        and the cached inputs no start used in ``days`` whose keys are not in ``keep_inputs`` (the
        ones runs still name: running containers read them in place).

        Blobs sent in the last ``days`` stay too, so a run being started now keeps its files. Runs
        copy their snapshot out of the cache when they start, so running ones are not affected. It
        runs in a short-lived container (the connection's image, no network) with the volume mounted.
        """
        from docker.errors import DockerException

        image = self.options.image
        if not image:
            raise TargetError(
                f"Docker target {self.name!r}: pruning runs a container and needs the connection's 'image' "
                "extra (any image with python3)."
            )
        client = self.client()
        try:
            output = client.containers.run(
                image,
                [
                    "python3",
                    "-I",
                    "-S",
                    "-c",
                    _PRUNE,
                    CACHE,
                    repr(float(days)),
                    json.dumps(sorted(keep_inputs)),
                ],
                volumes={self.volume: {"bind": CACHE, "mode": "rw"}},
                network_mode="none",
                user="root",  # the cache belongs to root, read-only for runs
                remove=True,
            )
        except DockerException as exc:
            raise TargetError(
                f"Docker target {self.name!r}: pruning the blob cache failed: {_short(exc)}"
            ) from None
        answer = json.loads(output.decode().strip().splitlines()[-1])
        keys = ("removed", "bytes", "kept", "inputs_removed", "inputs_bytes")
        return {k: int(answer.get(k, 0)) for k in keys}

    def _sent_file(self) -> Path:
        return self.root / "sent-snapshots.json"

    def _sent_snapshots(self) -> list[str]:
        """Snapshots this workspace sent to the target's volume, newest first (a hint: each is checked)."""
        try:
            data = json.loads(self._sent_file().read_text())
        except (OSError, ValueError):
            return []
        return [s for s in data if isinstance(s, str)][:16]

    def _remember_sent(self, snapshot_id: str) -> None:
        path = self._sent_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = [snapshot_id] + [s for s in self._sent_snapshots() if s != snapshot_id]
        tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(ids[:16]))
        os.replace(tmp, path)

    # -- observe -------------------------------------------------------------------------------

    def _container(self, run_id: str) -> Any:
        from docker.errors import NotFound

        stopped = self._stopped.get(run_id)
        if stopped is not None:
            return stopped
        recent = self._inspected.get(run_id)
        if recent is not None and time.monotonic() - recent[0] < INSPECT_REUSE:
            return recent[1]
        try:
            container = self.client().containers.get(container_name(run_id))
        except NotFound:
            self._running.discard(run_id)
            self._inspected.pop(run_id, None)
            return None
        with self._lock:
            self._inspected.pop(run_id, None)
            if container.status == "running":
                self._running.add(run_id)
                while len(self._inspected) >= MAX_REMEMBERED:
                    self._inspected.pop(next(iter(self._inspected)))
                self._inspected[run_id] = (time.monotonic(), container)
            else:
                self._running.discard(run_id)
        if container.status in ("exited", "dead"):
            with self._lock:
                while len(self._stopped) >= MAX_REMEMBERED:  # a UI process reads many runs, collects none
                    self._stopped.pop(next(iter(self._stopped)))
                self._stopped[run_id] = container
            self._status_seen.pop(run_id, None)
        return container

    def _stat(self, container: Any, path: str) -> dict[str, Any] | None:
        api = self.client().api
        response = api.head(api._url("/containers/{0}/archive", container.id), params={"path": path})
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise TargetError(
                f"Docker target {self.name!r}: reading {path} failed (HTTP {response.status_code})."
            )
        header = response.headers.get("X-Docker-Container-Path-Stat")
        import base64

        return dict(json.loads(base64.b64decode(header))) if header else {}

    def _get_archive(self, container: Any, path: str) -> tarfile.TarFile | None:
        return self._get_archive_and_stat(container, path)[0]

    def _get_archive_and_stat(
        self, container: Any, path: str
    ) -> tuple[tarfile.TarFile | None, dict[str, Any]]:
        """The archive of ``path`` and the daemon's stat of it (taken before the archive was made)."""
        from docker.errors import APIError, NotFound

        try:
            stream, stat = container.get_archive(path)
        except NotFound:
            return None, {}
        except APIError as exc:
            if _being_removed(exc):
                return None, {}
            raise
        spool = tempfile.SpooledTemporaryFile(max_size=16 << 20)  # noqa: SIM115 - owned by the TarFile
        for chunk in stream:
            spool.write(chunk)
        spool.seek(0)
        tar = _SpooledTarFile.open(fileobj=spool, mode="r:")
        # A tar kept in _finished by a target nobody closes still frees its spool when collected.
        weakref.finalize(tar, spool.close)
        return tar, dict(stat or {})

    def _read_whole(
        self, container: Any, path: str, offset: int = 0, length: int | None = None
    ) -> bytes | None:
        """``length`` bytes from ``offset`` of one file of the container, by an archive of it; None
        when it is not there, and b"" when it is not a file or kept changing while it was read."""
        for _ in range(CUT_SHORT_TRIES):
            tar = self._get_archive(container, path)
            if tar is None:
                return None
            with tar:
                try:
                    member = tar.next()  # the path itself: a link there is a link member, not its target
                    if member is None or not member.isfile():
                        return b""
                    return _read_member(tar, member, offset, length)
                except tarfile.ReadError:
                    continue  # cut short (_CUT_SHORT): ask again
        return b""  # a reader polls again; nothing new for now is what it can use

    def has_run(self, run_id: str) -> bool:
        return self._container(run_id) is not None

    def _finished_archive(self, run_id: str, container: Any) -> dict[str, Any] | None:
        """The run folder of a stopped container, fetched once: it can no longer change.

        Members are named relative to the run folder (``status.json``, ``logs/std_log.txt``). None
        while the container runs, or when the working copy is still there (a killed container), since
        then the folder holds the whole snapshot and single files are read instead. A container
        whose entry script ended normally (exit code 0) left a small folder on its log
        (``_folder_from_log``); else, or when that cannot be read, it comes in one archive.
        """
        if container.status in ("running", "restarting", "paused", "created"):
            return None
        cached = self._finished.get(run_id)
        if cached is not None:
            return cached
        run_dir = _run_dir(container, run_id)
        # docker_entry.py exits 0 only once the working copy is gone; otherwise ask.
        exit_code = (container.attrs.get("State") or {}).get("ExitCode")
        if exit_code != 0 and self._stat(container, f"{run_dir}/snapshot") is not None:
            return None
        members: dict[str, tarfile.TarInfo] = {}
        tar = self._folder_from_log(container) if exit_code == 0 else None
        if tar is not None:
            members = {m.name: m for m in tar.getmembers()}
        else:
            tar = self._get_archive(container, run_dir)
            if tar is None:
                return None
            for member in tar.getmembers():
                _, _, rel = member.name.partition("/")
                if rel:
                    member.name = rel
                    members[rel] = member
        entry = {"tar": tar, "members": members}
        self._finished[run_id] = entry
        return entry

    def _folder_from_log(self, container: Any) -> tarfile.TarFile | None:
        """The finished run folder as the entry script wrote it to the container's log, or None
        (then it is read with an archive call): a log driver the daemon cannot read back, a folder
        too big for the log, or a frame that is not exactly the entry script's.

        The frame must carry the container's token, be the log's last line, and match its size
        and SHA-256; the entry script killed every other process of the container before writing
        it, so nothing the script left running wrote after it. The script itself can read the
        token (``/proc/1/environ``) as it can write its own run folder: the frame holds nothing the
        run folder could not, and its members are checked as an archive's are by every reader.
        """
        from docker.errors import DockerException
        from requests.exceptions import RequestException

        attrs = container.attrs
        driver = ((attrs.get("HostConfig") or {}).get("LogConfig") or {}).get("Type")
        env = (attrs.get("Config") or {}).get("Env") or ()
        token = next((e.split("=", 1)[1] for e in env if e.startswith(TOKEN_VAR + "=")), "")
        if not token or driver not in FRAME_LOG_DRIVERS:
            return None
        try:
            raw = self.client().api.logs(container.id, stdout=True, stderr=False, tail=FRAME_MAX_LINES)
        except (DockerException, RequestException) as exc:
            log.debug("Container %s: its log could not be read (%s)", container.name, _short(exc))
            return None
        data = _parse_frame(bytes(raw), token)
        if data is None:
            return None
        return _SpooledTarFile.open(fileobj=io.BytesIO(data), mode="r:")

    def _archived_bytes(
        self, entry: dict[str, Any], name: str, offset: int = 0, length: int | None = None
    ) -> bytes | None:
        member = entry["members"].get(name)
        if member is None or not (member.isfile() or member.islnk()):
            return None
        return _read_member(entry["tar"], member, offset, length)

    def read_status(self, run_id: str) -> dict[str, Any] | None:
        container = self._container(run_id)
        if container is None:
            return None
        entry = self._finished_archive(run_id, container)
        if entry is not None:
            return _parse_status(self._archived_bytes(entry, "status.json"))
        status = self._running_status(run_id, container)
        if status is None or status.get("state") not in _ENDED or container.status != "running":
            return status
        # Ended: the container is about to exit. Then status, log, metrics and outputs all come
        # from one archive of the stopped container instead of one read each now.
        if self._wait_exit(container.id, EXIT_WAIT):
            self._inspected.pop(run_id, None)
            container = self._container(run_id)
            entry = self._finished_archive(run_id, container) if container is not None else None
            if entry is not None:
                return _parse_status(self._archived_bytes(entry, "status.json"))
        return status

    def _wait_exit(self, container_id: str, seconds: float) -> bool:
        """Whether the container stopped within ``seconds`` (the daemon's wait endpoint)."""
        from docker.errors import DockerException
        from requests.exceptions import RequestException

        try:
            self.client().api.wait(container_id, timeout=max(seconds, 0.01))
        except (DockerException, RequestException):
            return False  # ReadTimeout: still running; else the next read says what is wrong
        return True

    def _running_status(self, run_id: str, container: Any) -> dict[str, Any] | None:
        """status.json of a running container: its archive only when the daemon's stat of it
        (size, modification time) differs from the copy read last; the supervisor replaces it at
        each state change and heartbeat, seconds apart, while a follower may poll many times a
        second.

        In its first ``FRESH`` seconds, a container this target started is not asked at all: its
        run is starting (the supervisor writes Starting, then Running, one archive call each), and
        a run that ends that soon is read whole once it stopped. Only a follower in the process
        that started the run skips: the submitter is alive, so a missing status cannot be taken for
        a run whose submitter died before the start.
        """
        started = self._started_at.get(run_id)
        seen = self._status_seen.get(run_id)
        if started is not None and time.monotonic() - started < FRESH:
            return seen[1] if seen is not None else None
        path = f"{_run_dir(container, run_id)}/status.json"
        if seen is not None:
            stat = self._stat(container, path)
            if stat is None:
                return None
            if (stat.get("size"), stat.get("mtime")) == seen[0]:
                return seen[1]
        for _ in range(CUT_SHORT_TRIES):
            tar, stat = self._get_archive_and_stat(container, path)
            if tar is None:
                return None
            with tar:
                try:
                    member = tar.next()  # the path itself: a link there is a link member, not its target
                    if member is None or not member.isfile():
                        return None
                    data = _read_member(tar, member, 0, None)
                except tarfile.ReadError:
                    continue  # cut short (_CUT_SHORT): replaced by a shorter copy while archived
            # A longer copy is cut to the stat's size instead, which is no JSON: read again.
            status = _parse_status(data)
            if status is not None:
                if stat:
                    self._status_seen[run_id] = ((stat.get("size"), stat.get("mtime")), status)
                return status
        return seen[1] if seen is not None else None  # what was read last still holds

    def runner_alive(self, run_id: str, status: dict[str, Any] | None) -> bool:
        container = self._container(run_id)
        return container is not None and container.status in ("running", "restarting", "paused")

    def runner_gone_reason(self, run_id: str) -> str | None:
        container = self._container(run_id)
        if container is None:
            return f"its container {container_name(run_id)} no longer exists (removed from outside?)"
        state = container.attrs.get("State") or {}
        if state.get("OOMKilled"):
            return f"container {container.name} was killed for using too much memory (OOM); raise mem_limit"
        code = state.get("ExitCode")
        if code == 137:
            return f"container {container.name} was killed (exit code 137: SIGKILL, e.g. `docker kill`)"
        if code is not None:
            detail = f": {state['Error']}" if state.get("Error") else ""
            return f"container {container.name} stopped with exit code {code}{detail}"
        return None

    def wait_for_change(self, run_id: str, seconds: float) -> None:
        """Returns when the run's container stops (the daemon's wait endpoint) or after ``seconds``.

        The end of a run is what a follower waits for; earlier changes are seen at its next poll.
        """
        started = time.monotonic()
        self._inspected.pop(run_id, None)  # the next refresh inspects anew
        # The follower's refresh has just inspected the container: no inspection again here. The
        # wait returns at once when the container stopped since.
        if run_id in self._running and self._wait_exit(container_name(run_id), seconds):
            self._running.discard(run_id)
            return
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))

    def _path(self, container: Any, run_id: str, name: str) -> str:
        _check_name(name)
        return f"{_run_dir(container, run_id)}/{name}"

    def read_file(self, run_id: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        _check_name(name)
        container = self._container(run_id)
        if container is None:
            return b""
        path = self._path(container, run_id, name)
        entry = self._finished_archive(run_id, container)
        if entry is not None:
            return self._archived_bytes(entry, name, offset, length) or b""
        stat = self._stat(container, path)
        if stat is None:
            return b""
        size = int(stat.get("size") or 0)
        if size <= offset:
            return b""
        count = size - offset if length is None else min(max(0, length), size - offset)
        if container.status == "running" and size > EXEC_READ_THRESHOLD:
            code = _READ_FROM
            interpreter = (container.attrs.get("Config") or {}).get("Cmd", ["python3"])[0]
            result = container.exec_run(
                [interpreter, "-I", "-S", "-c", code, path, str(offset), str(count)], stderr=False
            )
            if result.exit_code == 0:
                return bytes(result.output)
        return self._read_whole(container, path, offset, count) or b""

    def file_size(self, run_id: str, name: str) -> int:
        container = self._container(run_id)
        if container is None:
            return 0
        entry = self._finished_archive(run_id, container)
        if entry is not None:
            member = entry["members"].get(name)
            if member is not None and member.islnk():
                return len(self._archived_bytes(entry, name) or b"")
            return int(member.size) if member is not None and member.isfile() else 0
        stat = self._stat(container, self._path(container, run_id, name))
        if not stat or stat.get("linkTarget") or int(stat.get("mode") or 0) & _GO_NOT_REGULAR:
            return 0
        return int(stat.get("size") or 0)

    def list_entries(self, run_id: str) -> RunFiles:
        container = self._container(run_id)
        if container is None:
            return RunFiles()
        entry = self._finished_archive(run_id, container)
        if entry is not None:
            members = [m for n, m in entry["members"].items() if n.split("/")[0] in COLLECTED]
            return _entries(members)
        members = []
        for folder in COLLECTED:
            members += self._running_members(container, f"{_run_dir(container, run_id)}/{folder}")
        return _entries(members)

    def _running_members(self, container: Any, path: str) -> list[tarfile.TarInfo]:
        """The members of an archive of a running container's folder. When the script changed a file
        while the daemon archived it (_CUT_SHORT), it is asked again; after CUT_SHORT_TRIES cut
        archives, the members before the last cut are taken, and the next poll lists the rest."""
        members: list[tarfile.TarInfo] = []
        for _ in range(CUT_SHORT_TRIES):
            tar = self._get_archive(container, path)
            if tar is None:
                return []
            with tar:
                members = []
                try:
                    for member in tar:
                        members.append(member)
                except tarfile.ReadError:
                    continue
                return members
        return members

    # -- stop and collect ----------------------------------------------------------------------

    def request_cancel(self, run_id: str, grace_period: float) -> None:
        from docker.errors import APIError

        container = self._container(run_id)
        if container is None:
            return
        # The run folder may not be there yet (a container not started, whose entry script makes
        # it): the archive makes it, writable for the run's user, as the start's archive does.
        run_dir = _run_dir(container, run_id).lstrip("/")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            _add_dir(tar, run_dir, 0o777)
            body = json.dumps({"grace_period": grace_period}).encode()
            _add_bytes(tar, f"{run_dir}/cancel_requested", body, 0o644)
        with contextlib.suppress(APIError):
            container.put_archive("/", buf.getvalue())
        container.reload()
        if container.status == "running":
            with contextlib.suppress(APIError):
                container.kill(signal="SIGTERM")  # docker-init hands it on to the supervisor
        elif container.status == "created":
            container.start()  # the supervisor sees the marker and records Canceled

    def kill(self, run_id: str, status: dict[str, Any] | None) -> None:
        from docker.errors import APIError

        container = self._container(run_id)
        if container is not None and container.status == "running":
            with contextlib.suppress(APIError):
                container.kill()

    def collect(self, run_id: str, dest: Path) -> None:
        container = self._container(run_id)
        if container is None:
            return
        entry = self._finished_archive(run_id, container)
        if entry is not None:
            wanted = [m for n, m in entry["members"].items() if n.split("/")[0] in COLLECTED]
            extract_tar(entry["tar"], dest, wanted)  # links recorded, never made; no escapes
            try:
                status = json.loads(self._archived_bytes(entry, "status.json") or b"{}")
            except ValueError:
                status = {}
            entry["tar"].close()
            self._finished.pop(run_id, None)
            self._stopped.pop(run_id, None)
        else:
            for folder in COLLECTED:
                tar = self._get_archive(container, f"{_run_dir(container, run_id)}/{folder}")
                if tar is None:
                    continue
                with tar:
                    extract_tar(tar, dest)
            status = self.read_status(run_id) or {}
        policy = self._cleanup_policy(container)
        if policy == "always" or (policy == "on_success" and status.get("state") == "Completed"):
            # Off the waiting path: removing a container takes the daemon a few hundred ms. Not a
            # daemon thread, so a process that exits first still finishes the removal.
            threading.Thread(target=self._remove, args=(container,), name=f"rm-{container.name}").start()

    def _remove(self, container: Any) -> None:
        from docker.errors import APIError

        with contextlib.suppress(APIError):
            self._ensure_marked(container)
            container.reload()
            if container.status not in ("running", "restarting"):
                container.remove()

    def _ensure_marked(self, container: Any) -> None:
        """The started mark of ``container``'s run in the volume, before the container may go: a
        run that started with no archive before it has it written after the start
        (``_mark_started``), which may not have happened yet, or not in this process."""
        run_id = (container.labels or {}).get(LABEL_RUN) or ""
        with self._lock:
            pending = run_id in self._pending_marks
        if pending and self._write_marks(run_id):
            return
        if not run_id or self._stat(container, f"{CACHE}/started/{run_id}") is not None:
            return
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            owner = (container.labels or {}).get("mltrain.workspace", "")
            _add_bytes(tar, f"{CACHE}/started/{run_id}".lstrip("/"), owner.encode(), 0o444)
        container.put_archive("/", buf.getvalue())

    def _cleanup_policy(self, container: Any) -> str:
        """The run's cleanup option, recorded in a label when its container was created."""
        return str((container.labels or {}).get("mltrain.cleanup") or self.options.cleanup)


_pending_targets: weakref.WeakSet[DockerTarget] = weakref.WeakSet()
# A forked child shares the parent's connections to the daemon: the parent writes its markers.
os.register_at_fork(after_in_child=_pending_targets.clear)


@atexit.register
def _write_pending_marks() -> None:
    """Markers still pending when the process exits are written first (a submitter that does not
    wait for its run, the mltrain command, exits right after the start)."""
    for target in list(_pending_targets):
        with contextlib.suppress(Exception):
            target._write_all_marks()


def _being_removed(exc: Exception) -> bool:
    """Whether the daemon refused a request because the container is being removed meanwhile: its
    files are gone as surely as with a 404."""
    text = str(getattr(exc, "explanation", "") or exc)
    return "is unexpectedly nil" in text or "removal of container" in text


def _share_connections(api: Any) -> None:
    """One connection pool per daemon instead of one per request URL.

    docker-py's adapters for unix sockets, SSH and named pipes look their pool up by the whole
    request URL (with requests >= 2.32.2), so nearly every request opened a new connection to the
    daemon (17 for a no-op run) and kept up to 25 idle ones; keyed by scheme and host, they are
    reused. TCP and TLS daemons go through requests' own adapter, which already keys by host.
    """
    from urllib.parse import urlsplit

    for adapter in {id(a): a for a in api.adapters.values()}.values():
        if not (hasattr(adapter, "pools") and hasattr(adapter, "get_connection")):
            continue

        def by_origin(
            request: Any, verify: Any, proxies: Any = None, cert: Any = None, _a: Any = adapter
        ) -> Any:
            parts = urlsplit(request.url)
            return _a.get_connection(f"{parts.scheme}://{parts.netloc}", proxies)

        adapter.get_connection_with_tls_context = by_origin


def _run_dir(container: Any, run_id: str) -> str:
    """The run folder in ``container``: where its label says (containers made by this version),
    else where earlier versions put it."""
    labels = (container.attrs.get("Config") or {}).get("Labels") or container.attrs.get("Labels") or {}
    new = f"{RUNS}/{run_id}"
    return new if labels.get(LABEL_RUN_DIR) == new else f"{LEGACY_RUNS}/{run_id}"


def _parse_frame(raw: bytes, token: str) -> bytes | None:
    """The tar in the frame that ends ``raw`` (the container's log; see ``runner/docker_entry.py``),
    or None when the log does not end with a whole, intact frame of ``token``."""
    lines = raw.split(b"\n")
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) < 2 or lines[-1] != f"MLTRAIN-FOLDER-END {token}".encode():
        return None
    head = f"MLTRAIN-FOLDER {token} ".encode()
    start = next((i for i in range(len(lines) - 2, -1, -1) if lines[i].startswith(head)), None)
    if start is None:
        return None
    fields = lines[start].split(b" ")
    if len(fields) != 4 or not (fields[2].isdigit() and fields[3].isdigit()):
        return None
    import base64
    import binascii

    try:
        data = base64.b64decode(b"".join(lines[start + 1 : -1]), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(data) != int(fields[2]) or binascii.crc32(data) != int(fields[3]):
        return None
    return data


def _check_name(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or ".." in parts or parts[0] not in (*COLLECTED, "status.json"):
        raise ValueError(f"{name!r} is not a run file name (outputs/... or logs/...).")


def _spec_for_environment(spec: RunSpec) -> str | None:
    """``run.json``'s text for the container's environment, where the entry script writes it to
    the run folder; None when it must travel in the archive instead: too big for a variable, or
    holding a secret-looking variable (the daemon shows a container's environment to whoever
    inspects it, and ``run.json`` holds the run's variables)."""
    variables = spec.environment_variables or {}
    if any(secret_values(str(k), str(v)) for k, v in variables.items()):
        return None
    text = json.dumps(spec.to_runner_json())
    return text if len(text) <= SPEC_MAX else None


# Go's os.FileMode bits in the daemon's path stat: folder, link, named pipe, socket, device.
_GO_NOT_REGULAR = (1 << 31) | (1 << 27) | (1 << 25) | (1 << 24) | (1 << 26)


def _entries(members: list[tarfile.TarInfo]) -> RunFiles:
    """Files and links among the members of a run folder's archive (names relative to the run)."""
    files = sorted(m.name for m in members if m.isfile() or m.islnk())
    links = {m.name: m.linkname for m in sorted(members, key=lambda m: m.name) if m.issym()}
    return RunFiles(files, links)


def _runner_sources() -> list[tuple[str, bytes]]:
    """The stdlib runner that goes into containers: supervisor, entry, in-script ``mltrain``, compat."""
    if not _runner_cache:
        for name in RUNNER_FILES:
            with open(os.path.join(RUNNER_DIR, name), "rb") as f:
                _runner_cache.append((name, f.read()))
        for folder in ("pylib", "compat"):
            for dirpath, _dirs, names in sorted(os.walk(os.path.join(RUNNER_DIR, folder))):
                for fname in sorted(names):
                    if fname.endswith(".py"):
                        path = os.path.join(dirpath, fname)
                        with open(path, "rb") as f:
                            rel = os.path.relpath(path, RUNNER_DIR).replace(os.sep, "/")
                            _runner_cache.append((rel, f.read()))
    return _runner_cache


def _runner_files() -> Iterator[tuple[str, bytes]]:
    """The runner's sources, each module with its bytecode compiled by this Python (an unchecked
    hash-based ``.pyc``, PEP 552): the volume is read-only for the run's user, so a container's
    Python could cache nothing there and compiled the supervisor at every run (about 7 ms). A
    container whose Python has another bytecode version ignores the files and compiles, as before.
    The scripts Python runs as ``__main__`` are never read from a cache."""
    import importlib.util
    import marshal

    flags = (1).to_bytes(4, "little")  # hash-based, source not checked: the folder is per version
    for rel, data in _runner_sources():
        yield rel, data
        if rel in _MAIN_SCRIPTS:
            continue
        # Not optimized (-O), as the container's Python runs; co_filename is fixed up on import.
        code = compile(data, rel, "exec", dont_inherit=True, optimize=0)
        header = importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(data)
        yield importlib.util.cache_from_source(rel, optimization=""), header + marshal.dumps(code)


def _runner_hash() -> str:
    """Content hash of the runner, and of this Python's bytecode version (``_runner_files``): each
    version is sent to a target's volume once."""
    if not _runner_digest:
        import importlib.util

        digest = hashlib.sha256(importlib.util.MAGIC_NUMBER)
        for rel, data in _runner_sources():
            digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        _runner_digest.append(digest.hexdigest()[:16])
    return _runner_digest[0]


class _Reporting:
    """A file being uploaded that reports how much of it was read (sent) so far."""

    def __init__(self, f: Any, total: int, report: Any):
        self.f, self.total, self.report, self.done = f, total, report, 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.done += len(data)
        self.report(self.done, self.total)
        return bytes(data)

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(1 << 20):
            yield chunk


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info)


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(text[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return None


def _parse_status(data: bytes | None) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        status = json.loads(data)
    except ValueError:
        return None  # written atomically, so only a torn copy of a file being replaced
    return status if isinstance(status, dict) else None


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc)
    return text if len(text) < 400 else text[:400] + "..."


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, offset: int, length: int | None) -> bytes:
    """``length`` bytes (all when None) from ``offset`` of one archive member, without reading the rest."""
    f = tar.extractfile(member)
    if f is None:
        return b""
    f.seek(offset)
    return f.read(-1 if length is None else max(0, length))
