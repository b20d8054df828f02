"""A multi-worker Airflow 3 deployment on one machine: CeleryExecutor, Redis, PostgreSQL, two workers.

Scheduler, dag-processor, triggerer and api-server run as the test's own user with one AIRFLOW_HOME;
each Celery worker runs as a Unix user of its own (``mltrain-w1``, ``mltrain-w2``) with a private
(0700) HOME holding its AIRFLOW_HOME, mltrain workspace, temporary folder, cache and SSH key, so no
local path is shared between workers or with the api-server. What they share is what a real
deployment shares: Airflow's metadata database and mltrain's run store (two PostgreSQL databases of
their own on the server of tests/services/postgres.sh), the Redis broker (a key prefix of its
own), the DAGs folder, the compute targets (Docker daemon, SSH VM), the project's venv, and the
workspace's artifact store: a SeaweedFS S3 server of the cluster's own (a test may stop and restart
it), reached by every component through the Airflow connection ``deploy_s3``, so that each host's
workspace folder is only a cache.

Each process is started in a session of its own and stopped by its own pid; everything listens on
127.0.0.1 only. Needs root (it creates the worker users).
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.s3server import OwnWeed

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
CONTROL = ("api-server", "scheduler", "dag-processor", "triggerer")
WORKERS = ("w1", "w2")
WORKER_CONCURRENCY = 2
SSH_CONN_ID = "deploy_ssh"
DOCKER_CONN_ID = "deploy_docker"
S3_CONN_ID = "deploy_s3"
BUCKET = "mltrain-deploy"
# A worker that stops heartbeating is declared dead this long after its last heartbeat: short, so
# that a killed worker's task is retried within a minute, and long enough for a busy 2-core machine.
HEARTBEAT_TIMEOUT = 30


def worker_user(name: str) -> str:
    return f"mltrain-{name}"


def worker_queue(name: str) -> str:
    return f"host-{name}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, cluster: CeleryCluster | None = None
) -> Any:
    """Polls ``predicate`` until it returns something true; on timeout fails with the logs' tails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    logs = cluster.logs() if cluster else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")


def _world_executable(path: Path) -> bool:
    """Whether any user may run ``path``: every folder above it searchable, the file executable."""
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def worker_python(root: Path) -> tuple[str, dict[str, str]]:
    """An interpreter of the project's venv that the worker users may run, and the variables it needs.

    The venv's own interpreter may live where they cannot reach it (pyenv under a private /root):
    then a copy of that same Python (standard library and all, without its site-packages) is made
    once per machine under the services' state folder, and a venv made here from the copy uses the
    project's site-packages, so the workers run the very code the tests import.
    """
    if _world_executable(Path(sys.executable).resolve()):
        return sys.executable, {}
    base = Path(sys.base_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    state = Path(os.environ.get("MLTRAIN_TEST_STATE", "/var/tmp/mltrain-test-services"))
    copy = (
        state
        / "worker-python"
        / f"{sys.version.split()[0]}-{hashlib.sha256(str(base).encode()).hexdigest()[:8]}"
    )
    if not copy.exists():
        partial = copy.with_name(copy.name + f".{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        ignore = shutil.ignore_patterns("site-packages", "test", "__pycache__")
        shutil.copytree(base / "bin", partial / "bin", symlinks=True)
        shutil.copytree(base / "lib", partial / "lib", symlinks=True, ignore=ignore)
        for folder in (copy.parent.parent, copy.parent):
            folder.chmod(0o755)
        partial.rename(copy)
    interpreter = copy / "bin" / f"python{version}"
    venv = root / "worker-venv"
    lib = venv / "lib" / f"python{version}"
    lib.mkdir(parents=True)
    (venv / "bin").mkdir()
    (venv / "bin" / "python").symlink_to(interpreter)
    (lib / "site-packages").symlink_to(sysconfig.get_paths()["purelib"])
    (venv / "pyvenv.cfg").write_text(
        f"home = {interpreter.parent}\ninclude-system-site-packages = false\nversion = {version}\n"
    )
    # The copy's libpython, ahead of the original's absolute RUNPATH that the workers cannot read.
    return str(venv / "bin" / "python"), {"LD_LIBRARY_PATH": str(copy / "lib")}


def _with_database(url: str, name: str, user: str | None = None) -> str:
    parsed = sa.engine.make_url(url).set(database=name)
    if user:
        parsed = parsed.set(username=user)
    return parsed.render_as_string(hide_password=False)


class Worker:
    """One Celery worker: its Unix user, private folders and process."""

    def __init__(self, name: str, session: str):
        self.name = name
        self.user = worker_user(name)
        self.queue = worker_queue(name)
        self.session = session
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pw(self) -> pwd.struct_passwd:
        return pwd.getpwnam(self.user)

    @property
    def home(self) -> Path:
        return Path(self.pw.pw_dir)

    @property
    def base(self) -> Path:
        """This session's folders inside the worker's home."""
        return self.home / f"deploy-{self.session}"

    @property
    def airflow_home(self) -> Path:
        return self.base / "airflow"

    @property
    def workspace(self) -> Path:
        return self.base / "mltrain"

    def ensure_user(self, extra_groups: list[int]) -> None:
        """Creates the user with a private home (once per machine) and this session's folders."""
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            subprocess.run(
                ["useradd", "--create-home", "--user-group", "--shell", "/usr/sbin/nologin", self.user],
                check=True,
                capture_output=True,
            )
        uid, gid = self.pw.pw_uid, self.pw.pw_gid
        os.chmod(self.home, 0o700)
        for folder in (self.base, self.airflow_home, self.workspace, self.base / "tmp", self.home / ".cache"):
            folder.mkdir(parents=True, exist_ok=True)
            os.chown(folder, uid, gid)
            os.chmod(folder, 0o700)
        self.extra_groups = extra_groups

    def install_ssh_client(self, key_file: str, known_hosts: str) -> tuple[str, str]:
        """Copies the SSH VM's client key and known_hosts into the worker's ~/.ssh (0600)."""
        ssh = self.home / ".ssh"
        ssh.mkdir(exist_ok=True)
        os.chown(ssh, self.pw.pw_uid, self.pw.pw_gid)
        os.chmod(ssh, 0o700)
        copies = []
        for source, name in ((key_file, "id_mltrain_vm"), (known_hosts, "known_hosts")):
            dest = ssh / name
            shutil.copyfile(source, dest)
            os.chown(dest, self.pw.pw_uid, self.pw.pw_gid)
            os.chmod(dest, 0o600)
            copies.append(str(dest))
        return copies[0], copies[1]

    def env(self, common: dict[str, str]) -> dict[str, str]:
        env = dict(common)
        env.update(
            HOME=str(self.home),
            USER=self.user,
            LOGNAME=self.user,
            TMPDIR=str(self.base / "tmp"),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            AIRFLOW_HOME=str(self.airflow_home),
            MLTRAIN_WORKSPACE=str(self.workspace),
        )
        return env

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class CeleryCluster:
    """Start with :meth:`up`, stop with :meth:`down`; logs of every process are kept in ``root/logs``."""

    def __init__(
        self,
        root: Path,
        dags: Path,
        *,
        postgres_url: str,
        redis_url: str,
        ssh_env: dict[str, str],
        docker_host: str,
        docker_image: str,
    ):
        self.root = root
        self.dags = dags
        self.session = secrets.token_hex(4)
        self.home = root / "controller"  # AIRFLOW_HOME of scheduler, dag-processor, triggerer, api-server
        self.log_dir = root / "logs"
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.postgres_url = postgres_url
        self.airflow_db = f"mltrain_airflow_{self.session}"
        self.runs_db = f"mltrain_runs_{self.session}"
        self.airflow_db_url = _with_database(postgres_url, self.airflow_db)
        self.run_store_url = _with_database(postgres_url, self.runs_db)
        self.redis_url = redis_url
        # Every key of this session's queues starts with it: another session's workers never see them.
        self.redis_prefix = f"mltrain-deploy-{self.session}:"
        self.ssh_env = ssh_env
        self.remote_root = f"~/mltrain-deploy/{self.session}"
        self.docker_host = docker_host
        self.docker_image = docker_image
        self.workers = {name: Worker(name, self.session) for name in WORKERS}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # The environment each process was started with (setproctitle overwrites /proc/PID/environ).
        self.environments: dict[str, dict[str, str]] = {}
        self.timings: dict[str, float] = {}  # seconds per phase of up() and down()
        self.startup_seconds: float | None = None
        self.python, self.python_env = worker_python(root)
        # The workspace's artifact store, shared by every component like a real deployment's bucket.
        self.weed = OwnWeed(root / "weed")
        self.artifact_store_url = f"s3://{BUCKET}/{self.session}"
        self.weed.folder.chmod(0o700)

    # -- configuration -----------------------------------------------------------------------

    def common_env(self) -> dict[str, str]:
        """What every process gets: Airflow's config as AIRFLOW__* variables, nothing from the test's
        own environment but PATH and the locale."""
        keep = ("PATH", "LANG", "LC_ALL", "TZ")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        sql = self.airflow_db_url
        env.update(
            AIRFLOW__CORE__DAGS_FOLDER=str(self.dags),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.base_url}/execution/",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sql,
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=sql,
            AIRFLOW__CELERY__BROKER_URL=self.redis_url,
            AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX=self.redis_prefix,
            AIRFLOW__CELERY__RESULT_BACKEND="db+" + sql,
            AIRFLOW__CELERY__WORKER_CONCURRENCY=str(WORKER_CONCURRENCY),
            # One message reserved per free slot: a busy worker leaves queued tasks to the other.
            AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER="1",
            AIRFLOW__OPERATORS__DEFAULT_QUEUE="default",
            AIRFLOW__API__BASE_URL=self.base_url,
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            # Shared by every component: task tokens (jwt_secret) and log-server requests (secret_key).
            AIRFLOW__API_AUTH__JWT_SECRET="mltrain-test-only-" + "0" * 64,
            AIRFLOW__API__SECRET_KEY="mltrain-test-only-" + "1" * 64,
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="2",
            AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.5",
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT),
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL="5",
            AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="1",
            # A task's calls to the api-server wait longer than the default 5 s: on a busy 2-core
            # machine six Airflow processes and the training runs share it.
            AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT="30",
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_HOST="127.0.0.1",
            MLTRAIN_DATABASE_URL=self.run_store_url,
            MLTRAIN_ARTIFACT_STORE=self.artifact_store_url,
            MLTRAIN_ARTIFACT_STORE_CONN_ID=S3_CONN_ID,
        )
        env[f"AIRFLOW_CONN_{S3_CONN_ID.upper()}"] = self.s3_connection()
        return env

    def s3_connection(self) -> str:
        """The artifact store's connection as an ``AIRFLOW_CONN_*`` value: an ``aws`` connection
        whose extra names the S3-compatible endpoint (what docs/airflow.md shows)."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": self.weed.KEY,
                "password": self.weed.SECRET,
                "extra": {"endpoint_url": self.weed.endpoint, "region_name": "us-east-1"},
            }
        )

    def artifact_store(self) -> Any:
        """The cluster's artifact store, opened by the test itself (no Airflow connection needed)."""
        from airflow_provider_mltrain.core.artifacts import FsspecArtifactStore

        return FsspecArtifactStore(self.artifact_store_url, self.weed.options())

    def reader_workspace(self, folder: Path) -> Any:
        """A workspace on the test's host with no local files of the run: an empty folder (cache),
        the cluster's run store and its artifact store, as ``mltrain`` on a laptop would have."""
        from airflow_provider_mltrain import Workspace

        return Workspace(folder, database_url=self.run_store_url, artifact_store=self.artifact_store())

    def start_object_store(self) -> None:
        self.weed.start()

    def stop_object_store(self) -> None:
        self.weed.stop()

    def controller_env(self) -> dict[str, str]:
        env = self.common_env()
        env.update(
            HOME=str(self.home),
            AIRFLOW_HOME=str(self.home),
            MLTRAIN_WORKSPACE=str(self.home / "mltrain"),
            TMPDIR=str(self.home / "tmp"),
            XDG_CACHE_HOME=str(self.home / "cache"),
        )
        return env

    def worker_env(self, worker: Worker) -> dict[str, str]:
        env = worker.env(self.common_env())
        env["PATH"] = f"{Path(self.python).parent}:{env['PATH']}"
        env.update(self.python_env)
        key_file, known_hosts = worker.install_ssh_client(
            self.ssh_env["KEY_FILE"], self.ssh_env["KNOWN_HOSTS"]
        )
        env[f"AIRFLOW_CONN_{SSH_CONN_ID.upper()}"] = json.dumps(
            {
                "conn_type": "ssh",
                "host": self.ssh_env["HOST"],
                "port": int(self.ssh_env["PORT"]),
                "login": self.ssh_env["USER"],
                "extra": {"key_file": key_file, "known_hosts": known_hosts, "remote_root": self.remote_root},
            }
        )
        env[f"AIRFLOW_CONN_{DOCKER_CONN_ID.upper()}"] = json.dumps(
            {
                "conn_type": "mltrain_docker",
                "host": self.docker_host,
                "extra": {"image": self.docker_image, "network_mode": "none", "build_network_mode": "host"},
            }
        )
        return env

    # -- databases ---------------------------------------------------------------------------

    def _admin(self, *statements: str) -> None:
        # postgres.sh's server trusts loopback logins; its superuser creates the databases.
        admin_url = _with_database(self.postgres_url, "postgres", user="postgres")
        engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                for statement in statements:
                    conn.execute(sa.text(statement))
        finally:
            engine.dispose()

    def create_databases(self) -> None:
        owner = sa.engine.make_url(self.postgres_url).username
        self._admin(*(f'CREATE DATABASE "{db}" OWNER "{owner}"' for db in (self.airflow_db, self.runs_db)))

    def drop_databases(self) -> None:
        self._admin(
            *(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)' for db in (self.airflow_db, self.runs_db))
        )

    def query(self, sql: str, **params: Any) -> list[Any]:
        """Rows of a query on Airflow's metadata database."""
        if not hasattr(self, "_engine"):
            self._engine = sa.create_engine(self.airflow_db_url, poolclass=sa.pool.NullPool)
        with self._engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))

    # -- processes ---------------------------------------------------------------------------

    def _open_log(self, name: str) -> Any:
        return open(self.log_dir / f"{name}.log", "ab")

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AIRFLOW, *args],
            env=self.controller_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def start(self, component: str) -> None:
        log = self._open_log(component)
        self.environments[component] = self.controller_env()
        self.procs[component] = subprocess.Popen(
            [AIRFLOW, component],
            env=self.environments[component],
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def start_worker(self, name: str) -> None:
        worker = self.workers[name]
        log = self._open_log(f"worker-{name}")
        self.environments[name] = self.worker_env(worker)
        worker.proc = subprocess.Popen(
            [
                self.python,
                "-m",
                "airflow",
                "celery",
                "worker",
                "--queues",
                f"default,{worker.queue}",
                "--celery-hostname",
                f"{name}@%h",
                "--concurrency",
                str(WORKER_CONCURRENCY),
                # Both workers share the machine's name and so the log server's port: the task logs
                # are read from each worker's AIRFLOW_HOME instead.
                "--skip-serve-logs",
            ],
            env=self.environments[name],
            cwd=worker.home,
            user=worker.pw.pw_uid,
            group=worker.pw.pw_gid,
            extra_groups=worker.extra_groups,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def _stop(self, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
        """SIGTERMs each process's group (they fork) by its own pid, all at once, then waits for
        them; one still running after ``timeout`` is SIGKILLed with its session."""
        started = time.monotonic()
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)  # the group id is the pid: a session of its own
                except ProcessLookupError:
                    pass
        for proc in procs:
            try:
                proc.wait(max(1.0, timeout - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                _kill_session(proc.pid)
                proc.wait(10)
            _kill_session(proc.pid)  # a child that left the group but not the session (none expected)
        self.timings["stop"] = time.monotonic() - started

    def kill_worker(self, name: str) -> None:
        """SIGKILLs the worker and everything it started, as if its machine had died."""
        worker = self.workers[name]
        assert worker.proc is not None
        _kill_session(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(30)
        # A task process that made a session of its own is still the worker user's.
        for pid in _pids(lambda st: st["uid"] == worker.pw.pw_uid):
            _signal(pid, signal.SIGKILL)

    def up(self) -> None:
        started = time.monotonic()

        def phase(name: str) -> None:
            self.timings[name] = round(time.monotonic() - started - sum(self.timings.values()), 1)

        for folder in (self.home, self.home / "tmp", self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
        docker_gid = os.stat(self.docker_host.removeprefix("unix://")).st_gid
        for worker in self.workers.values():
            worker.ensure_user([docker_gid])
        self.create_databases()
        self.start_object_store()
        import s3fs

        s3fs.S3FileSystem(**self.weed.options()).mkdir(BUCKET)
        phase("users, databases and object store")
        self.airflow("db", "migrate")
        phase("airflow db migrate")
        for component in CONTROL:
            self.start(component)
        for name in self.workers:
            self.start_worker(name)
        wait_for(lambda: self.all_alive() and self.workers_registered(), 180, "the workers to answer", self)
        phase("workers answer")
        wait_for(lambda: self.all_alive() and self.api_answers(), 180, "the api-server to answer", self)
        wait_for(
            lambda: self.all_alive() and self.scheduler_running(), 180, "the scheduler to heartbeat", self
        )
        phase("api-server and scheduler answer")
        self.startup_seconds = time.monotonic() - started

    def down(self) -> None:
        workers = [w.proc for w in self.workers.values() if w.proc is not None]
        self._stop([*workers, *self.procs.values()])
        self.procs.clear()
        self.stop_object_store()
        if hasattr(self, "_engine"):
            self._engine.dispose()
        self.cleanup_ssh_root()

    def cleanup(self) -> None:
        """Drops the session's databases, worker folders and broker keys (the logs folder is kept)."""
        self.drop_databases()
        for worker in self.workers.values():
            shutil.rmtree(worker.base, ignore_errors=True)
        shutil.rmtree(self.weed.folder / "data", ignore_errors=True)
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            keys = list(client.scan_iter(match=f"{self.redis_prefix}*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    def cleanup_ssh_root(self) -> None:
        env = self.ssh_env
        subprocess.run(
            [
                "ssh",
                "-i",
                env["KEY_FILE"],
                "-o",
                f"UserKnownHostsFile={env['KNOWN_HOSTS']}",
                "-o",
                "BatchMode=yes",
                "-p",
                env["PORT"],
                f"{env['USER']}@{env['HOST']}",
                "rm",
                "-rf",
                "--",
                self.remote_root,
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )

    # -- health --------------------------------------------------------------------------------

    def all_alive(self) -> bool:
        """True while every process runs; one that exited fails the wait at once, with the logs."""
        dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
        dead += [f"worker {w.name}" for w in self.workers.values() if w.proc is not None and not w.alive()]
        if dead:
            raise AssertionError(f"{', '.join(dead)} exited\n{self.logs()}")
        return True

    def api_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=5):
                return True
        except (OSError, urllib.error.URLError):
            return False

    def celery_ping(self) -> set[str]:
        """Node names of the workers that answer a Celery ping."""
        from celery import Celery

        app = Celery(broker=self.redis_url)
        app.conf.broker_transport_options = {"global_keyprefix": self.redis_prefix}
        try:
            replies = app.control.ping(timeout=2.0) or []
        finally:
            app.close()
        return {name for reply in replies for name in reply}

    def workers_registered(self) -> bool:
        names = {n.split("@", 1)[0] for n in self.celery_ping()}
        return names >= set(self.workers)

    def scheduler_running(self) -> bool:
        rows = self.query("SELECT job_type FROM job WHERE state = 'running'")
        return {"SchedulerJob", "TriggererJob"} <= {r[0] for r in rows}

    def logs(self, tail: int = 4000) -> str:
        out = [f"(all logs: {self.log_dir}; the object store's: {self.weed.folder / 'weed.log'})"]
        for path in [*sorted(self.log_dir.glob("*.log")), self.weed.folder / "weed.log"]:
            if not path.exists():
                continue
            out.append(f"--- {path.name} ---\n" + path.read_text(errors="replace")[-tail:])
        return "\n".join(out)

    # -- API -----------------------------------------------------------------------------------

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.base_url}{path}", timeout=30) as response:
            return json.loads(response.read() or b"null")

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.base_url}/api/v2/{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Starts a DAG run through the REST API once the dag-processor has parsed the DAG."""
        wait_for(
            lambda: self.query("SELECT 1 FROM dag WHERE dag_id = :d AND NOT is_stale", d=dag_id),
            180,
            f"{dag_id} parsed",
            self,
        )
        run = self.api("POST", f"dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def dag_run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r", d=dag_id, r=run_id)
        return rows[0][0] if rows else None

    def wait_dag_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        wait_for(
            lambda: self.dag_run_state(dag_id, run_id) in ("success", "failed"),
            timeout,
            f"DAG run {dag_id}/{run_id} to end",
            self,
        )
        return str(self.dag_run_state(dag_id, run_id))

    def task_instances(self, dag_id: str, run_id: str) -> list[Any]:
        return self.query(
            "SELECT task_id, map_index, state, try_number, queue, pid, hostname FROM task_instance"
            " WHERE dag_id = :d AND run_id = :r ORDER BY task_id, map_index",
            d=dag_id,
            r=run_id,
        )

    def task_log(self, worker: str, dag_id: str, run_id: str, task_id: str, attempt: int) -> str | None:
        """A try's task log from the worker's own AIRFLOW_HOME (None when it did not run there)."""
        folder = self.workers[worker].airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        path = folder / f"task_id={task_id}" / f"attempt={attempt}.log"
        return path.read_text(errors="replace") if path.exists() else None


def _stat(pid: int) -> dict[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        uid = os.stat(f"/proc/{pid}").st_uid
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return {"pgid": int(fields[2]), "sid": int(fields[3]), "uid": uid}


def _pids(match: Callable[[dict[str, int]], bool]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and match(st):
                found.append(int(entry))
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kill_session(sid: int, sig: int = signal.SIGKILL) -> None:
    """Signals every process of the session ``sid`` (a process started with start_new_session)."""
    for pid in _pids(lambda st: st["sid"] == sid):
        _signal(pid, sig)


def uid_of_pid(pid: int) -> int | None:
    st = _stat(pid)
    return None if st is None else st["uid"]


def user_of_uid(uid: int) -> str:
    return pwd.getpwuid(uid).pw_name


def group_id(name: str) -> int:
    return grp.getgrnam(name).gr_gid
