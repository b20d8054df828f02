"""The Spark target: ``spark-submit`` started detached on a gateway, driver in client mode.

The gateway is this machine, or an edge node reached over SSH (an :class:`SSHTarget` given as
``gateway``). Each run lives in ``<workspace>/targets/spark-<conn>/runs/<run_id>/`` (this machine)
or in the SSH target's ``runs/<run_id>/`` (the edge node), and is run by the same supervisor as the
local and SSH targets, which starts ``spark-submit`` instead of the interpreter when the run's
framework is ``pyspark`` (the command line travels in ``run.json`` as ``launcher``). The snapshot is
the driver's working folder and, zipped, its ``--py-files``. Executors get the run's managed
environment packed as a venv archive (``--archives env.tar.gz#environment``, packed where it was
built: here or on the gateway), or the cluster's own Python for a user-managed one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import posixpath
import re
import shutil
import socket
import stat
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core.compute import ComputeTarget, RunSpec
from airflow_provider_mltrain.core.errors import InvalidRunConfig, TargetError, TargetUnreachable
from airflow_provider_mltrain.core.runfiles import RunFiles
from airflow_provider_mltrain.runner import remote, tree
from airflow_provider_mltrain.targets.local import LocalTarget

if TYPE_CHECKING:
    from airflow_provider_mltrain.core.compute import LogLine, PreparedEnvironment
    from airflow_provider_mltrain.core.environment import Environment
    from airflow_provider_mltrain.core.inputs import ResolvedInput
    from airflow_provider_mltrain.core.snapshot import Snapshot, SnapshotStore
    from airflow_provider_mltrain.targets.ssh import SSHTarget

log = logging.getLogger(__name__)

# The binaries the official Apache Spark provider accepts in a connection's ``spark-binary`` extra:
# a connection must not be able to name an arbitrary program to run.
ALLOWED_SPARK_BINARIES = ("spark-submit", "spark2-submit", "spark3-submit")
SPARK_LOG = "logs/spark_driver.log"
APP_ID_PROPERTY = "spark.application_id"
# "Connected to Spark cluster with app ID app-...", YARN's application_..., Kubernetes' spark-...
_APP_ID = re.compile(
    rb"(?:app ID|Submitted application|application ID|Application ID is)\W+"
    rb"(app-\d+-\d+|application_\d+_\d+|spark-[0-9a-f]{32}|local-\d+)"
)
_MEMORY = re.compile(r"\d+[kmgtp]?b?", re.IGNORECASE)
_CONNECT_TIMEOUT = 5.0
_APP_ID_FILE = "spark_application_id"
SPARK_HOME_NEEDS_GATEWAY = (
    "spark-home is only used with an SSH gateway (gateway-conn-id): on this machine spark-submit comes "
    "from SPARK_HOME, PATH or pyspark, so a connection cannot choose the program that runs here. Remove "
    "spark-home, or set SPARK_HOME in the Airflow worker's environment."
)

# Run on an SSH gateway by the run's Python, with the binary name, spark-home, the master's endpoints
# (JSON) and whether the master is yarn as argv: it finds spark-submit as find_spark_submit does here,
# checks Java and connects to the master from there. A constant: user values travel only as argv.
_GATEWAY_PROBE = """
import importlib.util, json, os, shutil, socket, sys
binary, spark_home, endpoints, yarn = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4] == "1"
candidates = []
home = spark_home or os.environ.get("SPARK_HOME")
if home:
    candidates.append(os.path.join(home, "bin", binary))
if not spark_home:
    found = shutil.which(binary)
    if found:
        candidates.append(found)
    spec = importlib.util.find_spec("pyspark") if binary == "spark-submit" else None
    if spec is not None and spec.origin:
        candidates.append(os.path.join(os.path.dirname(spec.origin), "bin", binary))
submit = next((p for p in candidates if os.path.isfile(p) and os.access(p, os.X_OK)), None)
java_home = os.environ.get("JAVA_HOME")
java = bool(shutil.which("java"))
if java_home and os.access(os.path.join(java_home, "bin", "java"), os.X_OK):
    java = True
errors = []
reached = not endpoints
for host, port in endpoints:
    try:
        socket.create_connection((host, port), timeout=5).close()
        reached = True
        break
    except OSError as exc:
        errors.append("%s:%s: %s" % (host, port, exc.strerror or exc))
hadoop = bool(os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")) or not yarn
print(json.dumps({"spark_submit": submit, "java": java, "reached": reached, "errors": errors,
                  "hadoop_conf": hadoop, "python": sys.executable}))
"""


@dataclass(frozen=True)
class SparkSettings:
    """Where and how runs are submitted: the parts of a ``spark`` connection."""

    master: str
    deploy_mode: str = "client"
    queue: str | None = None
    spark_binary: str = "spark-submit"
    conf: dict[str, str] = field(default_factory=dict)
    ui_url: str | None = None  # a standalone master's web UI, whose /json/ reports applications
    # The Spark installation on an SSH gateway (its bin/ holds spark_binary). Only with a gateway: on
    # this machine a connection must not choose the program that runs (SPARK_HOME does).
    spark_home: str | None = None

    def __post_init__(self) -> None:
        if self.spark_home is not None and not (
            isinstance(self.spark_home, str)
            and self.spark_home.startswith("/")
            and "\0" not in self.spark_home
        ):
            raise InvalidRunConfig(
                f"spark-home {self.spark_home!r} is not an absolute path: give the folder of the Spark "
                "installation on the gateway (the one holding bin/spark-submit), e.g. /opt/spark."
            )
        if self.ui_url is not None and not re.match(r"^https?://[^/]+", self.ui_url):
            raise InvalidRunConfig(
                f"master-ui {self.ui_url!r} is not an http(s) URL: give the standalone master's web UI, "
                "for example http://spark-master:8080."
            )
        check_master(self.master)
        check_binary(self.spark_binary)
        check_deploy_mode(self.deploy_mode, "deploy-mode")


def check_master(master: str) -> None:
    if not isinstance(master, str) or not re.fullmatch(
        r"(local(\[[0-9*, ]+\])?|yarn|spark://.+|k8s://.+)", master
    ):
        raise InvalidRunConfig(
            f"Spark master {master!r} is not a master URL: use spark://HOST:PORT (standalone), "
            "yarn, k8s://https://HOST:PORT or local[*]."
        )


def check_binary(binary: str) -> None:
    if binary not in ALLOWED_SPARK_BINARIES:
        raise InvalidRunConfig(
            f"spark-binary {binary!r} is not allowed: use one of {', '.join(ALLOWED_SPARK_BINARIES)} "
            "(set SPARK_HOME or PATH on the gateway to choose which installation it comes from)."
        )


DEPLOY_MODES = ("client", "cluster")
_CLUSTER_MODE = (
    "runs use deploy mode 'client': the driver (your script) runs on the gateway, where its log, "
    "metrics and ./outputs are collected. In cluster mode the driver would run on a cluster node, out "
    "of reach, and a standalone master refuses Python drivers in cluster mode altogether."
)


def check_deploy_mode(mode: Any, where: str) -> None:
    """``mode`` must be a deploy mode spark-submit knows; a connection may say cluster (see check_options)."""
    if mode not in DEPLOY_MODES:
        raise InvalidRunConfig(f"{where} {mode!r} is not a deploy mode: use client (or cluster).")


def find_spark_submit(binary: str) -> str:
    """The ``binary`` of SPARK_HOME, else of PATH, else the one installed with pyspark."""
    check_binary(binary)
    candidates = []
    if os.environ.get("SPARK_HOME"):
        candidates.append(os.path.join(os.environ["SPARK_HOME"], "bin", binary))
    found = shutil.which(binary)
    if found:
        candidates.append(found)
    spec = importlib.util.find_spec("pyspark")
    if spec is not None and spec.origin and binary == "spark-submit":
        candidates.append(os.path.join(os.path.dirname(spec.origin), "bin", binary))
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise InvalidRunConfig(
        f"{binary} was not found on this machine (SPARK_HOME, PATH, pyspark): install Spark and set "
        "SPARK_HOME, or pip install 'airflow-provider-mltrain[spark]'."
    )


def check_java() -> None:
    """spark-submit is a JVM program: without Java it fails with a shell error, so say it first."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(os.path.join(java_home, "bin", "java"), os.X_OK):
        return
    if not shutil.which("java"):
        raise InvalidRunConfig(
            "spark-submit needs Java (17 or newer for Spark 4) on this machine: install a JRE "
            "(apt-get install default-jre-headless) or set JAVA_HOME."
        )


def _host_port(netloc: str, default_port: int) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(f"//{netloc}")
    return parsed.hostname or "", parsed.port or default_port


def master_endpoints(master: str) -> list[tuple[str, int]]:
    """The host:port pairs a TCP connect must reach for ``master`` to be up; none to check for local/yarn."""
    if master.startswith("spark://"):
        return [_host_port(part, 7077) for part in master[len("spark://") :].split(",")]
    if master.startswith("k8s://"):
        api = master[len("k8s://") :]
        if "://" not in api:
            api = f"https://{api}"
        parsed = urllib.parse.urlsplit(api)
        return [(parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80))]
    return []


def check_reachable(master: str) -> None:
    """Raise TargetUnreachable naming the URL when no endpoint of the master answers a TCP connect."""
    if master == "yarn" and not (os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")):
        raise TargetUnreachable(
            "Spark master 'yarn' needs HADOOP_CONF_DIR or YARN_CONF_DIR set on the gateway (the folder "
            "holding yarn-site.xml) to find the ResourceManager."
        )
    endpoints = master_endpoints(master)
    errors = []
    for host, port in endpoints:
        try:
            socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT).close()
            return
        except OSError as exc:
            errors.append(f"{host}:{port}: {exc.strerror or exc}")
    if endpoints:
        raise TargetUnreachable(
            f"Spark master {master} is not reachable ({'; '.join(errors)}). Start the master or fix the "
            "connection's host and port; nothing was submitted."
        )


# -- options -------------------------------------------------------------------------------------


def _positive_int(key: str, value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, str))
        or not str(value).isdigit()
        or int(value) < 1
    ):
        raise InvalidRunConfig(f"target_options[{key!r}] must be a positive whole number, got {value!r}.")
    return int(value)


def _memory(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _MEMORY.fullmatch(value.strip()):
        raise InvalidRunConfig(
            f"target_options[{key!r}] must be a Spark memory size such as '2g' or '512m', got {value!r}."
        )
    return value.strip()


def _names(key: str, value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) and i.strip() for i in items):
        raise InvalidRunConfig(
            f"target_options[{key!r}] must be a list of strings (or a comma-separated string), got {value!r}."
        )
    return [i.strip() for i in items]


def normalize_conf(conf: Any, where: str) -> dict[str, str]:
    """Spark properties as strings; keys must be ``spark.*`` (spark-submit ignores the others silently)."""
    if not isinstance(conf, dict):
        raise InvalidRunConfig(f"{where} must be a dict of Spark properties, got {conf!r}.")
    out = {}
    for key, value in conf.items():
        if not isinstance(key, str) or not key.startswith("spark."):
            raise InvalidRunConfig(
                f"{where}: {key!r} is not a Spark property; Spark properties start with 'spark.'."
            )
        if not isinstance(value, (str, int, float, bool)):
            raise InvalidRunConfig(f"{where}[{key!r}] must be a string, number or boolean, got {value!r}.")
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


# option -> (spark-submit flag, normalizer)
_OPTIONS: dict[str, tuple[str, Any]] = {
    "num_executors": ("--num-executors", _positive_int),
    "executor_cores": ("--executor-cores", _positive_int),
    "total_executor_cores": ("--total-executor-cores", _positive_int),
    "executor_memory": ("--executor-memory", _memory),
    "driver_memory": ("--driver-memory", _memory),
    "driver_cores": ("--driver-cores", _positive_int),
    "packages": ("--packages", _names),
    "exclude_packages": ("--exclude-packages", _names),
    "repositories": ("--repositories", _names),
    "jars": ("--jars", _names),
    "files": ("--files", _names),
    "queue": ("--queue", None),
    "app_name": ("--name", None),
}
SPARK_OPTIONS = ("conf", "deploy_mode", *_OPTIONS)


@dataclass(frozen=True)
class _SparkRunSpec(RunSpec):
    """A run spec whose ``run.json`` also carries the ``spark-submit`` command line to start."""

    launcher: tuple[str, ...] = ()

    def to_runner_json(self) -> dict[str, Any]:
        return {**super().to_runner_json(), "launcher": list(self.launcher)}


class SparkTarget(LocalTarget):
    """Runs on a Spark cluster through ``spark-submit`` on a gateway: this machine, or ``gateway``.

    With ``gateway`` (an SSH target: the edge node), runs are started, read, canceled and collected
    through it: the snapshot goes up through its blob cache and its remote supervisor starts the
    ``spark-submit`` command line built here. Without, this machine is the gateway (the local
    target's run folders and supervisor).
    """

    kind = "spark"
    frameworks = ("pyspark", "python")

    def check_input(self, inp: ResolvedInput) -> None:
        """Refused (not the local target's in-place cache): the executors, on other hosts, would
        need the data, not the driver."""
        ComputeTarget.check_input(self, inp)

    def __init__(
        self,
        name: str,
        root: str | os.PathLike[str],
        settings: SparkSettings,
        gateway: SSHTarget | None = None,
    ):
        super().__init__(root, name=name)
        if settings.spark_home and gateway is None:
            raise InvalidRunConfig(f"Spark target {name!r}: {SPARK_HOME_NEEDS_GATEWAY}")
        self.settings = settings
        self.gateway = gateway
        self._scanned: dict[str, int] = {}  # run id -> bytes of its Spark log searched for the app id
        self._app_ids: dict[str, str] = {}  # run id -> application id (gateway runs; read once)
        self._probes: dict[str, dict[str, Any]] = {}  # gateway interpreter -> what _GATEWAY_PROBE found

    # -- checks before submission --------------------------------------------------------------

    def check_options(self, framework: str | None, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        framework, _ = ComputeTarget.check_options(self, framework, {})
        if framework != "pyspark":
            if options:
                raise InvalidRunConfig(
                    f"target_options ({', '.join(sorted(options))}) are spark-submit settings: they need "
                    f"framework 'pyspark' on the Spark target {self.name!r}, not {framework!r}."
                )
            return framework, {}
        unknown = sorted(set(options) - set(SPARK_OPTIONS))
        if unknown:
            raise InvalidRunConfig(
                f"Unknown target_options for the Spark target {self.name!r}: {', '.join(unknown)}. "
                f"Known: {', '.join(SPARK_OPTIONS)}; other Spark properties go in conf={{'spark....': ...}}."
            )
        out: dict[str, Any] = {}
        for key, value in options.items():
            if key == "conf":
                out[key] = normalize_conf(value, "target_options['conf']")
            elif key == "deploy_mode":
                check_deploy_mode(value, "target_options['deploy_mode']")
            elif _OPTIONS[key][1] is None:
                if not isinstance(value, str) or not value.strip():
                    raise InvalidRunConfig(
                        f"target_options[{key!r}] must be a non-empty string, got {value!r}."
                    )
                out[key] = value.strip()
            else:
                out[key] = _OPTIONS[key][1](key, value)
        if options.get("deploy_mode") == "cluster":
            raise InvalidRunConfig(
                f"target_options['deploy_mode'] 'cluster' is not supported: {_CLUSTER_MODE} "
                "Leave deploy_mode out, or set it to 'client'."
            )
        if self.settings.deploy_mode == "cluster" and options.get("deploy_mode") != "client":
            raise InvalidRunConfig(
                f"The spark connection {self.name!r} sets deploy-mode 'cluster', which runs cannot use: "
                f"{_CLUSTER_MODE} Pass target_options={{'deploy_mode': 'client'}} to submit through this "
                "connection anyway (the connection stays as it is for SparkSubmitOperator), or remove "
                "deploy-mode from it."
            )
        return framework, out

    def check_environment(self, env: Environment) -> None:
        if self.gateway is None:
            super().check_environment(env)
            find_spark_submit(self.settings.spark_binary)
            check_java()
            check_reachable(self.settings.master)
            return
        self.gateway.check_environment(env)
        self.check_gateway(env.python.interpreter_path)

    def check_gateway(self, interpreter: str | None) -> dict[str, Any]:
        """Find spark-submit and Java on the gateway and reach the master from there; raise what is wrong.

        spark-submit is looked for as on this machine (spark-home or SPARK_HOME, PATH, then the pyspark
        of the gateway's Python: the ssh connection's interpreter_path), then in the pyspark of the
        run's ``interpreter`` when that is another Python.
        """
        assert self.gateway is not None
        s = self.settings
        host = self.gateway.settings.host
        pythons = [self.gateway.python()["executable"]]
        if interpreter and interpreter not in pythons:
            pythons.append(interpreter)
        for python in pythons:
            found = self._probe_gateway(python)
            if found["spark_submit"]:
                break
        else:
            where = (
                f"{s.spark_home}/bin (the spark-home extra)"
                if s.spark_home
                else f"SPARK_HOME, PATH or the pyspark of {' or '.join(pythons)}"
            )
            raise InvalidRunConfig(
                f"{s.spark_binary} was not found on the gateway {host} ({where}): install Spark there and "
                "set the spark connection's spark-home extra to its folder, or install pyspark (the "
                "cluster's version) in the gateway's Python."
            )
        if not found["java"]:
            raise InvalidRunConfig(
                f"spark-submit needs Java (17 or newer for Spark 4) on the gateway {host}: install a JRE "
                "there (on the PATH of SSH sessions, or with JAVA_HOME set for them)."
            )
        if not found["hadoop_conf"]:
            raise TargetUnreachable(
                f"Spark master 'yarn' needs HADOOP_CONF_DIR or YARN_CONF_DIR set for SSH sessions on the "
                f"gateway {host} (the folder holding yarn-site.xml) to find the ResourceManager."
            )
        if not found["reached"]:
            raise TargetUnreachable(
                f"Spark master {s.master} is not reachable from the gateway {host} "
                f"({'; '.join(found['errors'])}). Start the master or fix the connection's host and port; "
                "nothing was submitted."
            )
        return found

    def _probe_gateway(self, python: str) -> dict[str, Any]:
        """What ``_GATEWAY_PROBE`` finds on the gateway run by ``python`` (asked once per target)."""
        assert self.gateway is not None
        if python in self._probes:
            return self._probes[python]
        s = self.settings
        argv = [
            python,
            "-I",
            "-c",
            _GATEWAY_PROBE,
            s.spark_binary,
            s.spark_home or "",
            json.dumps(master_endpoints(s.master)),
            "1" if s.master == "yarn" else "0",
        ]
        code, out, err = self.gateway.run_command(argv, timeout=60)
        try:
            found = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            found = None
        if code != 0 or not isinstance(found, dict):
            detail = err.decode("utf-8", "replace").strip().splitlines()
            raise TargetError(
                f"Checking Spark on the gateway {self.gateway.settings.host} with {python} failed: "
                f"{detail[-1] if detail else f'exit code {code}'}."
            )
        self._probes[python] = found
        return found

    def prepare_environment(
        self, env: Environment, log: LogLine, rebuild: bool = False
    ) -> PreparedEnvironment:
        if self.gateway is not None:
            return self.gateway.prepare_environment(env, log, rebuild)
        return super().prepare_environment(env, log, rebuild)

    # -- start ---------------------------------------------------------------------------------

    def start(self, spec: RunSpec, snapshot: Snapshot, store: SnapshotStore) -> bool:
        if spec.framework == "pyspark" and not self.has_run(spec.run_id):
            fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(RunSpec)}
            home = self.settings.spark_home
            if home and "SPARK_HOME" not in spec.environment_variables:
                # spark-submit prefers SPARK_HOME from its environment to its own location.
                fields["environment_variables"] = {**spec.environment_variables, "SPARK_HOME": home}
            spec = _SparkRunSpec(**fields, launcher=tuple(self.launcher(spec)))
        if self.gateway is not None:
            self.gateway.upload_progress = self.upload_progress  # the snapshot travels through it
            return self.gateway.start(spec, snapshot, store)
        return super().start(spec, snapshot, store)

    def launcher(self, spec: RunSpec) -> list[str]:
        """``spark-submit`` and its options for one run; the supervisor appends py-files and the script."""
        opts = spec.target_options
        conf = {**self.settings.conf, **opts.get("conf", {})}
        interpreter = spec.interpreter
        archive = self._packed_environment(interpreter) if interpreter else None
        if interpreter:
            conf["spark.pyspark.driver.python"] = interpreter
        if archive:
            conf["spark.pyspark.python"] = "./environment/bin/python"
        if self.gateway is not None:
            binary = self.check_gateway(interpreter)["spark_submit"]
        else:
            binary = find_spark_submit(self.settings.spark_binary)
        argv = [
            binary,
            "--master",
            self.settings.master,
            "--deploy-mode",
            "client",
        ]
        if "app_name" not in opts:
            argv += ["--name", f"mltrain {spec.experiment} {spec.run_id}"]
        queue = opts.get("queue") or self.settings.queue
        if queue and "queue" not in opts:
            argv += ["--queue", queue]
        for key, value in opts.items():
            if key in _OPTIONS:
                flag = _OPTIONS[key][0]
                argv += [flag, ",".join(value) if isinstance(value, list) else str(value)]
        if archive:
            argv += ["--archives", f"{archive}#environment"]
        for key, value in sorted(conf.items()):
            argv += ["--conf", f"{key}={value}"]
        return argv

    def _packed_environment(self, interpreter: str) -> str | None:
        """The managed venv ``interpreter`` belongs to, as a tar.gz for executors (packed once, on the
        gateway when there is one); None for a user-managed interpreter (executors use the cluster's)."""
        if self.gateway is not None:
            return self.gateway.pack_environment(interpreter)
        try:
            return remote.pack_env(str(self.root / "envs"), interpreter)["archive"]
        except OSError as exc:
            raise TargetError(
                f"Packing the environment of {interpreter} for the executors failed: {exc}"
            ) from exc

    # -- observe -------------------------------------------------------------------------------

    def has_run(self, run_id: str) -> bool:
        if self.gateway is not None:
            return self.gateway.has_run(run_id)
        return super().has_run(run_id)

    def runner_alive(self, run_id: str, status: dict[str, Any] | None) -> bool:
        if self.gateway is not None:
            return self.gateway.runner_alive(run_id, status)
        return super().runner_alive(run_id, status)

    def wait_for_change(self, run_id: str, seconds: float) -> None:
        if self.gateway is not None:
            return self.gateway.wait_for_change(run_id, seconds)
        return super().wait_for_change(run_id, seconds)

    def read_file(self, run_id: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if self.gateway is not None:
            return self.gateway.read_file(run_id, name, offset, length)
        return super().read_file(run_id, name, offset, length)

    def file_size(self, run_id: str, name: str) -> int:
        if self.gateway is not None:
            return self.gateway.file_size(run_id, name)
        return super().file_size(run_id, name)

    def list_entries(self, run_id: str) -> RunFiles:
        if self.gateway is not None:
            return self.gateway.list_entries(run_id)
        return super().list_entries(run_id)

    def read_status(self, run_id: str) -> dict[str, Any] | None:
        status = self.gateway.read_status(run_id) if self.gateway is not None else super().read_status(run_id)
        if status is not None:
            app_id = self.application_id(run_id)
            if app_id:
                status["spark_application_id"] = app_id
        return status

    def application_id(self, run_id: str) -> str | None:
        """The Spark application id the driver logged, recorded once as the run property
        ``spark.application_id`` (through the run's metrics file, which the controller ingests).

        Spark logs no id in ``local`` mode: there it stays None."""
        if self.gateway is not None:
            return self._gateway_application_id(run_id)
        run_dir = self.run_dir(run_id)
        # The script can write in its run folder too: nothing here is read or written through a link.
        try:
            marker = tree.read_file(str(run_dir), _APP_ID_FILE, tops=(_APP_ID_FILE,))
            if marker:
                return marker.decode("utf-8", "replace").strip() or None
            offset = self._scanned.get(run_id, 0)
            # from a little before: a line split by the previous read
            data = tree.read_file(str(run_dir), SPARK_LOG, max(0, offset - 256), 4 * 1024 * 1024)
        except FileNotFoundError:
            return None
        match = _APP_ID.search(data)
        if not match:
            self._scanned[run_id] = max(0, offset - 256) + len(data)
            return None
        app_id = match.group(1).decode()
        record = {"name": "properties", "kind": "properties", "value": {APP_ID_PROPERTY: app_id}}
        try:
            tree.append(str(run_dir), "logs/metrics.jsonl", (json.dumps(record) + "\n").encode())
        except OSError as exc:  # the script put a link or a folder there
            log.warning("Run %s: could not record the Spark application id: %s", run_id, exc)
        tmp = run_dir / f".spark_application_id.{os.getpid()}"
        try:
            tmp.unlink(missing_ok=True)  # a link the script put there is removed, not written through
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(app_id)
            os.replace(tmp, run_dir / _APP_ID_FILE)
        except OSError as exc:
            log.warning("Run %s: could not record the Spark application id: %s", run_id, exc)
        return app_id

    def _gateway_application_id(self, run_id: str) -> str | None:
        """:meth:`application_id` for a run on the SSH gateway: the same files, over SFTP."""
        if run_id in self._app_ids:
            return self._app_ids[run_id]
        from airflow_provider_mltrain.targets.ssh import regular_file

        gateway = self.gateway
        assert gateway is not None
        marker = posixpath.join(gateway.run_dir(run_id), _APP_ID_FILE)

        def read_marker(sftp: Any) -> str | None:
            if regular_file(sftp, gateway.run_dir(run_id), _APP_ID_FILE) is None:
                return None  # absent, or a link the script made: SFTP would follow it
            try:
                with sftp.open(marker, "rb") as f:
                    return bytes(f.read()).decode().strip() or None
            except FileNotFoundError:
                return None

        app_id = gateway.with_sftp(read_marker)
        if app_id is None:
            offset = max(0, self._scanned.get(run_id, 0) - 256)  # a line split by the previous read
            data = gateway.read_file(run_id, SPARK_LOG, offset, 4 * 1024 * 1024)
            match = _APP_ID.search(data)
            if not match:
                self._scanned[run_id] = offset + len(data)
                return None
            app_id = match.group(1).decode()
            record = {"name": "properties", "kind": "properties", "value": {APP_ID_PROPERTY: app_id}}
            metrics = posixpath.join(gateway.run_dir(run_id), "logs", "metrics.jsonl")
            tmp = f"{marker}.{os.getpid()}"

            def record_once(sftp: Any) -> None:
                # SFTP opens follow links: write only where no link is (the script owns the folder).
                line = (json.dumps(record) + "\n").encode()
                logs_dir = posixpath.dirname(metrics)
                try:
                    if not stat.S_ISDIR(sftp.lstat(logs_dir).st_mode or 0):
                        raise NotADirectoryError(logs_dir)  # a link the script made: written nowhere
                    # O_CREAT|O_EXCL creates no file through a link; O_APPEND, like the driver's lines.
                    with sftp.open(metrics, "axb") as f:
                        f.write(line)
                except OSError:  # it exists (or logs/ does not): append only to a regular file
                    if regular_file(sftp, gateway.run_dir(run_id), "logs/metrics.jsonl") is not None:
                        with sftp.open(metrics, "ab") as f:
                            f.write(line)
                with contextlib.suppress(FileNotFoundError):
                    sftp.remove(tmp)
                with sftp.open(tmp, "wxb") as f:  # paramiko: "x" alone opens without write access
                    f.write(app_id.encode())
                sftp.posix_rename(tmp, marker)

            gateway.with_sftp(record_once)
        self._app_ids[run_id] = app_id
        return app_id

    def master_state(self) -> dict[str, Any] | None:
        """The standalone master's ``/json/`` report, or None without a UI URL or when it does not answer."""
        if not self.settings.ui_url:
            return None
        url = self.settings.ui_url.rstrip("/") + "/json/"
        try:
            # http(s) only: SparkSettings refuses other schemes for master-ui.
            with urllib.request.urlopen(url, timeout=_CONNECT_TIMEOUT) as resp:  # noqa: S310
                data = json.load(resp)
        except (OSError, ValueError) as exc:
            log.debug("Spark master UI %s did not answer: %s", url, exc)
            return None
        return data if isinstance(data, dict) else None

    def application(self, run_id: str) -> dict[str, Any] | None:
        """The master's record of the run's application (``state``: RUNNING, FINISHED, KILLED, ...)."""
        app_id = self.application_id(run_id)
        state = self.master_state() if app_id else None
        if not state:
            return None
        for key in ("activeapps", "completedapps"):
            for app in state.get(key) or []:
                if app.get("id") == app_id:
                    return dict(app)
        return None

    # -- stop ----------------------------------------------------------------------------------

    def request_cancel(self, run_id: str, grace_period: float) -> None:
        if self.gateway is not None:
            return self.gateway.request_cancel(run_id, grace_period)
        return super().request_cancel(run_id, grace_period)

    def kill(self, run_id: str, status: dict[str, Any] | None) -> None:
        if self.gateway is not None:
            self.gateway.kill(run_id, status)
        else:
            super().kill(run_id, status)
        app = self.application(run_id)
        if app and app.get("state") in ("WAITING", "RUNNING", "SUBMITTED") and self.settings.ui_url:
            # The driver is gone: ask the master to end an application it has not noticed ended.
            url = self.settings.ui_url.rstrip("/") + "/app/kill/"
            data = urllib.parse.urlencode({"id": app["id"], "terminate": "true"}).encode()
            request = urllib.request.Request(url, data=data)  # noqa: S310 - http(s), see SparkSettings
            try:
                urllib.request.urlopen(request, timeout=_CONNECT_TIMEOUT).close()  # noqa: S310
            except OSError as exc:
                log.warning("Run %s: asking the Spark master to kill %s failed: %s", run_id, app["id"], exc)

    def collect(self, run_id: str, dest: Path) -> None:
        if self.gateway is None:
            super().collect(run_id, dest)
            (self.run_dir(run_id) / "snapshot.zip").unlink(missing_ok=True)
            return
        gateway = self.gateway
        gateway.collect(run_id, dest)
        zipped = posixpath.join(gateway.run_dir(run_id), "snapshot.zip")

        def remove(sftp: Any) -> None:
            try:
                sftp.remove(zipped)
            except FileNotFoundError:
                pass  # no pyspark launch, or the whole run folder was cleaned up

        gateway.with_sftp(remove)

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.close()

    def __repr__(self) -> str:
        where = f", gateway={self.gateway!r}" if self.gateway is not None else ""
        return f"SparkTarget(name={self.name!r}, master={self.settings.master!r}{where})"
