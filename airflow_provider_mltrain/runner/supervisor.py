"""The run supervisor: starts the script in a run folder and keeps ``status.json`` true.

Standard library only, any Python >= 3.9: this file is copied to targets that have nothing else.

Usage: ``python supervisor.py RUN_DIR [--detach]``. ``RUN_DIR`` holds ``run.json`` (what to run)
and ``snapshot/`` (the script's working folder). With ``--detach`` the supervisor forks into its own
session and the launching process returns as soon as the run is claimed, so the run outlives
whoever started it. One supervisor per run folder: an exclusive ``flock`` on ``supervisor.lock``
claims the run, and a folder whose ``status.json`` exists is never run twice.

Cancel: create ``cancel_requested`` in the run folder and send SIGTERM to the supervisor. The
script's process group gets SIGTERM, then SIGKILL after the grace period.

Where the machine has a cgroup v2 hierarchy the supervisor may write to, the script runs in a cgroup
of its own (``mltrain-<run id>-<supervisor pid>``, beneath the supervisor's own cgroup or beneath
``MLTRAIN_CGROUP_BASE``), so what it leaves behind in another session (``setsid``, a double fork)
ends with the run too; the cgroup is removed after. Where none can be made, the run goes on with
only its process group ended, and says so in ``status.json``'s ``warnings``.
``MLTRAIN_CGROUP_BASE`` is read from the run's environment variables, else the supervisor's own:
an absolute path of a cgroup2 directory, or ``off`` (the Docker target: the container is the bound).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import signal
import stat
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYLIB = os.path.join(HERE, "pylib")
BOOTSTRAP = os.path.join(HERE, "bootstrap.py")

STATUS = "status.json"
SPEC = "run.json"
LOCK = "supervisor.lock"
CANCEL = "cancel_requested"
STD_LOG = os.path.join("logs", "std_log.txt")
METRICS = os.path.join("logs", "metrics.jsonl")
SPARK_LOG = os.path.join("logs", "spark_driver.log")
CGROUP_BASE_VAR = "MLTRAIN_CGROUP_BASE"
CGROUP_PREFIX = "mltrain-"
MLFLOW_PLUGIN = "mlflow_plugin"
MLFLOW_SCHEME = "mltrain"
MLFLOW_ENTRY_POINTS = (
    "[mlflow.tracking_store]\nmltrain = mltrain.mlflow_store:tracking_store\n\n"
    "[mlflow.model_registry_store]\nmltrain = mltrain.mlflow_store:registry_store\n"
)


def _now():
    return time.time()


def write_text_atomic(path, text):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def mlflow_run_id(run_id):
    """The run's id as MLflow accepts one (a letter or digit, then up to 255 of ``[A-Za-z0-9_-]``)."""
    safe = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "_" for c in run_id)
    if not safe[:1].isalnum():
        safe = "r" + safe
    return safe[:256]


def write_json_atomic(path, data):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
    os.replace(tmp, path)


class Supervisor:
    def __init__(self, run_dir):
        self.run_dir = os.path.abspath(run_dir)
        with open(os.path.join(self.run_dir, SPEC), encoding="utf-8") as f:
            self.spec = json.load(f)
        self.status = {
            "run_id": self.spec["run_id"],
            "state": None,
            "history": [],
            # gethostname(2) is uname's node name; the socket module costs every run's start-up.
            "host": os.uname().nodename,
            "heartbeat_interval": float(self.spec.get("heartbeat_interval", 5)),
        }
        self.child = None
        self.cancel_requested = False
        self.timed_out = None  # the max_run_duration_seconds the script ran past, once it did
        self.lock_fd = None
        self.cgroup = None

    # -- status --------------------------------------------------------------------------------

    def set_state(self, state, **fields):
        now = _now()
        self.status.update(fields)
        self.status["state"] = state
        self.status["history"].append([state, now])
        self.status["heartbeat"] = now
        write_json_atomic(os.path.join(self.run_dir, STATUS), self.status)

    def heartbeat(self):
        self.status["heartbeat"] = _now()
        write_json_atomic(os.path.join(self.run_dir, STATUS), self.status)

    def warn(self, message):
        """Record a warning for the run's record (written with the next status change)."""
        self.status.setdefault("warnings", []).append(message)
        sys.stderr.write("mltrain supervisor: %s\n" % message)

    # -- claim ---------------------------------------------------------------------------------

    def claim(self):
        """Take the run folder's lock; False if another supervisor holds it or the run already ran."""
        fd = os.open(os.path.join(self.run_dir, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        if os.path.exists(os.path.join(self.run_dir, STATUS)):
            os.close(fd)
            return False
        self.lock_fd = fd
        os.set_inheritable(fd, False)
        os.makedirs(os.path.join(self.run_dir, "logs"), exist_ok=True)
        os.makedirs(os.path.join(self.run_dir, "outputs"), exist_ok=True)
        self.set_state("Starting", started_at=_now(), supervisor_pid=os.getpid())
        return True

    # -- run -----------------------------------------------------------------------------------

    def _environ(self):
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in (self.spec.get("environment_variables") or {}).items()})
        pythonpath = [PYLIB] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(pythonpath),
                "PYTHONUNBUFFERED": "1",
                "MLTRAIN_RUN_ID": self.spec["run_id"],
                "MLTRAIN_EXPERIMENT": self.spec.get("experiment", ""),
                "MLTRAIN_RUN_DIR": self.run_dir,
                "MLTRAIN_METRICS_FILE": os.path.join(self.run_dir, METRICS),
            }
        )
        self._mlflow_environ(env)
        return env

    def _mlflow_environ(self, env):
        """Point MLflow at this run (see ``pylib/mltrain/mlflow_store.py``).

        The store is found through MLflow's entry points, so its distribution's metadata goes in a
        folder of the run on ``PYTHONPATH``; only ``.py`` files travel with the runner. A tracking
        URI the run's environment names stays the user's: values are written there as well.
        """
        plugin = os.path.join(self.run_dir, MLFLOW_PLUGIN)
        meta = os.path.join(plugin, "mltrain_mlflow_store-1.0.dist-info")
        try:
            os.makedirs(meta, exist_ok=True)
            for name, text in (
                ("METADATA", "Metadata-Version: 2.1\nName: mltrain-mlflow-store\nVersion: 1.0\n"),
                ("entry_points.txt", MLFLOW_ENTRY_POINTS),
            ):
                write_text_atomic(os.path.join(meta, name), text)
        except OSError as exc:
            self.warn("MLflow cannot log to this run (its store could not be set up: %s)" % exc)
            return
        env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], plugin])
        own = env.get("MLFLOW_TRACKING_URI", "").strip()
        if own and own != MLFLOW_SCHEME + ":":
            env["MLTRAIN_MLFLOW_MIRROR_URI"] = own
        env["MLFLOW_TRACKING_URI"] = MLFLOW_SCHEME + ":"
        env["MLFLOW_RUN_ID"] = env["MLTRAIN_MLFLOW_RUN_ID"] = mlflow_run_id(self.spec["run_id"])

    def start_script(self):
        snapshot = os.path.join(self.run_dir, "snapshot")
        for name in ("outputs", "logs"):
            if not os.path.lexists(os.path.join(snapshot, name)):
                os.mkdir(os.path.join(snapshot, name))
        self._make_output_dirs(snapshot)
        interpreter = self.spec.get("interpreter") or sys.executable
        script_argv = [self.spec["script"]] + [str(a) for a in self.spec.get("arguments", [])]
        launcher = self.spec.get("launcher") if self.spec.get("framework") == "pyspark" else None
        if launcher:
            argv = [*map(str, launcher), *self._py_files(snapshot), BOOTSTRAP, *script_argv]
        else:
            argv = [interpreter, BOOTSTRAP, *script_argv]
        # spark-submit merges the Python driver's output into its stdout; its stderr carries the
        # JVM's own log (and the application id), kept apart from the script's log.
        err_path = os.path.join(self.run_dir, SPARK_LOG) if launcher else os.devnull
        self._make_cgroup()
        cgroup = self.cgroup
        with open(os.path.join(self.run_dir, STD_LOG), "ab") as log, open(err_path, "ab") as err:
            self.child = subprocess.Popen(
                argv,
                cwd=snapshot,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=err if launcher else subprocess.STDOUT,
                env=self._environ(),
                start_new_session=True,
                close_fds=True,
                # Before exec, so that nothing the script starts is ever outside the cgroup.
                preexec_fn=cgroup.enter if cgroup else None,
            )
        fields = {"cgroup": cgroup.path} if cgroup else {}
        self.set_state("Running", pid=self.child.pid, pgid=self.child.pid, **fields)

    def _make_cgroup(self):
        """The script's own cgroup, or a warning in the run's status saying why there is none."""
        env = self.spec.get("environment_variables") or {}
        base = str(env.get(CGROUP_BASE_VAR) or os.environ.get(CGROUP_BASE_VAR) or "").strip()
        if base.lower() == "off":
            return
        try:
            self.cgroup = Cgroup.create(cgroup_name(self.spec["run_id"]), base or None)
        except CgroupUnavailable as exc:
            self.warn(
                "no cgroup for this run (%s): processes the script starts in a session of their own "
                "(setsid, double fork) may outlive the run. See 'Processes outlive a run' in the "
                "troubleshooting guide." % exc
            )

    def _py_files(self, snapshot):
        """The snapshot as a zip for spark-submit's ``--py-files``: executors import its modules."""
        import zipfile  # here: only Spark runs need it, and it costs every run's start-up

        path = os.path.join(self.run_dir, "snapshot.zip")
        with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as zf:
            for folder, dirs, files in os.walk(snapshot):
                rel = os.path.relpath(folder, snapshot)
                if rel == ".":
                    dirs[:] = [d for d in dirs if d not in ("outputs", "logs")]
                for name in files:
                    full = os.path.join(folder, name)
                    zf.write(full, os.path.normpath(os.path.join(rel, name)))
        os.replace(path + ".tmp", path)
        return ["--py-files", path]

    def _on_signal(self, signum, _frame):
        self.cancel_requested = True

    def wait(self):
        pidfd = _pidfd(self.child.pid)
        try:
            return self._wait(pidfd)
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _wait(self, pidfd):
        interval = self.status["heartbeat_interval"]
        grace = float(self.spec.get("kill_grace_period", 10))
        next_beat = _now() + interval
        kill_at = None
        limit = self.spec.get("max_run_duration_seconds")
        stop_at = _now() + float(limit) if limit else None
        while True:
            if pidfd is not None:
                # Readable the moment the script exits; Popen.wait(timeout) polls every 50 ms,
                # which would end every short run that much later.
                select.select([pidfd], [], [], min(interval, 0.5))
                code = self.child.poll()
                if code is not None:
                    return code
            else:
                try:
                    return self.child.wait(timeout=min(interval, 0.5))
                except subprocess.TimeoutExpired:
                    pass
            now = _now()
            if not self.cancel_requested and os.path.exists(os.path.join(self.run_dir, CANCEL)):
                self.cancel_requested = True
            if stop_at is not None and now >= stop_at and not self.cancel_requested:
                self.timed_out = limit
                self.cancel_requested = True
            if self.cancel_requested and kill_at is None:
                self._terminate()
                kill_at = now + self._requested_grace(grace)
            elif kill_at is not None and now >= kill_at:
                self._kill_all()
                kill_at = float("inf")
            if now >= next_beat:
                self.heartbeat()
                next_beat = now + interval

    def _requested_grace(self, default):
        """The grace period the canceller asked for in ``cancel_requested``, else the spec's."""
        try:
            with open(os.path.join(self.run_dir, CANCEL), encoding="utf-8") as f:
                return max(0.0, float(json.load(f).get("grace_period", default)))
        except (OSError, ValueError, AttributeError, TypeError):
            return default

    def _terminate(self):
        """SIGTERM to the script. Under spark-submit that is the Python driver, not the JVM that
        started it: the JVM stays to relay the driver's output and ends the application when the
        driver exits; SIGKILL to the whole group follows after the grace period."""
        if not self.spec.get("launcher"):
            return self._signal_group(signal.SIGTERM)
        pids = [pid for pid in _group_members(self.child.pid) if pid != self.child.pid]
        if not pids:
            return self._signal_group(signal.SIGTERM)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

    def _signal_group(self, sig):
        try:
            os.killpg(self.child.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill_all(self):
        """SIGKILL to the script's process group and to everything in its cgroup."""
        self._signal_group(signal.SIGKILL)
        if self.cgroup is not None:
            try:
                self.cgroup.kill()
            except OSError as exc:
                self.warn("could not end the processes in %s: %s" % (self.cgroup.path, exc))

    def _remove_cgroup(self):
        if self.cgroup is None:
            return
        try:
            self.cgroup.remove()
        except OSError as exc:
            self.warn("could not remove the run's cgroup %s: %s" % (self.cgroup.path, exc))

    def finalize(self, returncode):
        self.set_state("Finalizing")
        # Whatever the script left behind, in its process group or elsewhere in its cgroup, ends
        # with the run.
        self._kill_all()
        self._remove_cgroup()
        error = None
        try:
            self._collect_script_folders()
        except OSError as exc:
            error = "collecting ./outputs and ./logs failed: %s" % exc
        if os.path.exists(os.path.join(self.run_dir, CANCEL)):
            self.cancel_requested = True
        if self.timed_out is not None:
            state = "Canceled"
            error = "canceled: the script ran longer than max_run_duration_seconds=%g" % float(self.timed_out)
        elif self.cancel_requested:
            state, error = "Canceled", "canceled by request"
        elif returncode == 0 and error is None:
            state = "Completed"
        elif returncode != 0:
            state = "Failed"
            if returncode < 0:
                try:
                    name = signal.Signals(-returncode).name
                except ValueError:
                    name = "signal %d" % -returncode
                error = "script killed by %s" % name
            else:
                error = "script exited with code %d" % returncode
                summary = self._exception_summary()
                if summary:
                    error += ": " + summary
        else:
            state = "Failed"
        self.set_state(state, exit_code=returncode, error=error, ended_at=_now())

    def _exception_summary(self):
        """What the bootstrap recorded of the exception the script ended with, if it raised."""
        # The script can write here too: a link (to a key file, say) must not become the run's error.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(os.path.join(self.run_dir, "exception.txt"), flags)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return f.read(2000).decode("utf-8", "replace").strip() or None

    def _make_output_dirs(self, snapshot):
        """The folders of the run's declared outputs (``outputs/<name>``), ready for the script."""
        env = self.spec.get("environment_variables") or {}
        try:
            names = json.loads(env.get("MLTRAIN_OUTPUTS") or "{}")
        except ValueError:
            return
        for name in names if isinstance(names, dict) else ():
            folder = os.path.join(snapshot, "outputs", str(name))
            if "/" not in str(name) and not os.path.lexists(folder):
                os.mkdir(folder)

    def _collect_script_folders(self):
        """Move the script's ./outputs and ./logs next to the run's own logs."""
        snap = os.path.join(self.run_dir, "snapshot")
        for name in ("outputs", "logs"):
            src = os.path.join(snap, name)
            if os.path.islink(src) or not os.path.isdir(src):
                continue
            dest = os.path.join(self.run_dir, name)
            os.makedirs(dest, exist_ok=True)
            for entry in os.listdir(src):
                target = os.path.join(dest, entry)
                n = 1
                while os.path.lexists(target):
                    target = os.path.join(dest, "%s.%d" % (entry, n))
                    n += 1
                import shutil  # here: a script that wrote nothing there never pays for it

                shutil.move(os.path.join(src, entry), target)

    def run(self):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        if os.path.exists(os.path.join(self.run_dir, CANCEL)):
            self.set_state(
                "Canceled", exit_code=None, error="canceled before the script started", ended_at=_now()
            )
            return 0
        try:
            self.start_script()
        except OSError as exc:
            with open(os.path.join(self.run_dir, STD_LOG), "a", encoding="utf-8") as f:
                f.write("mltrain: could not start the script: %s\n" % exc)
            self.set_state(
                "Failed", exit_code=None, error="could not start the script: %s" % exc, ended_at=_now()
            )
            return 1
        returncode = self.wait()
        self.finalize(returncode)
        return 0


class CgroupUnavailable(Exception):
    """No cgroup can be made for the run here; the message says why."""


def _cgroup_stem(run_id):
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)[:200]
    return "%s%s-" % (CGROUP_PREFIX, safe)


def cgroup_name(run_id):
    """The name of the run's cgroup; the supervisor's pid tells two attempts at a run apart."""
    return "%s%d" % (_cgroup_stem(run_id), os.getpid())


def _unescape_mount(path):
    """A path of /proc/*/mountinfo with its octal escapes (\\040 for a space) decoded."""
    out = []
    i = 0
    while i < len(path):
        if path[i] == "\\" and path[i + 1 : i + 4].isdigit():
            out.append(chr(int(path[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def cgroup2_mounts(mountinfo="/proc/self/mountinfo"):
    """The mount points of cgroup v2 file systems seen by this process, the widest first."""
    found = []
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split()
                try:
                    sep = fields.index("-")
                except ValueError:
                    continue
                if len(fields) > sep + 1 and fields[sep + 1] == "cgroup2":
                    found.append((fields[3], _unescape_mount(fields[4])))
    except OSError:
        return []
    return [point for root, point in sorted(found, key=lambda m: len(m[0]))]


def own_cgroup2_path():
    """This process's cgroup v2 directory (its ``0::`` line in /proc/self/cgroup), or None."""
    mounts = cgroup2_mounts()
    if not mounts:
        return None
    try:
        with open("/proc/self/cgroup", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                if line.startswith("0::"):
                    rel = line[3:].rstrip("\n")
                    if rel.endswith(" (deleted)"):
                        return None
                    return os.path.normpath(os.path.join(mounts[0], rel.lstrip("/")))
    except OSError:
        pass
    return None


def in_cgroup2(path):
    """Whether ``path`` (resolved) lies in a cgroup v2 file system of this host."""
    real = os.path.realpath(path)
    return any(real == point or real.startswith(point.rstrip("/") + "/") for point in cgroup2_mounts())


class Cgroup:
    """A cgroup v2 directory of the run's own: the script enters it, and all of it ends together."""

    def __init__(self, path):
        self.path = path

    @classmethod
    def create(cls, name, base=None):
        """Make ``name`` beneath ``base`` (default: the supervisor's own cgroup) and check that a
        process of ours can enter it; CgroupUnavailable says why not."""
        if base is None:
            if not cgroup2_mounts():
                raise CgroupUnavailable("this machine has no cgroup v2 hierarchy mounted")
            base = own_cgroup2_path()
            if base is None or not os.path.isdir(base):
                raise CgroupUnavailable("the supervisor's own cgroup v2 directory is not to be found")
        elif not os.path.isabs(base) or not os.path.isdir(base) or not in_cgroup2(base):
            raise CgroupUnavailable("%s=%s is not a cgroup v2 directory" % (CGROUP_BASE_VAR, base))
        path = os.path.join(base, name)
        try:
            os.mkdir(path)
        except OSError as exc:
            raise CgroupUnavailable(
                "cannot create a cgroup in %s: %s; an administrator can delegate a cgroup subtree to "
                "this user" % (base, exc.strerror or exc)
            ) from None
        cgroup = cls(path)
        problem = cgroup._probe()
        if problem:
            try:
                os.rmdir(path)
            except OSError:
                pass
            if problem == os.strerror(errno.EBUSY):
                hint = "its parent has controllers enabled for its children and holds processes itself"
            else:
                hint = "the kernel allows it only within a cgroup subtree this user was delegated and runs in"
            raise CgroupUnavailable("cannot move a process into %s: %s; %s" % (path, problem, hint))
        return cgroup

    def _probe(self):
        """Move a throw-away child in (the kernel's delegation rules decide); None when it worked."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                self.enter()
                os.write(write_fd, b"ok")
            except OSError as exc:
                os.write(write_fd, (exc.strerror or str(exc)).encode("utf-8", "replace"))
            finally:
                os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as r:
            answer = r.read().decode("utf-8", "replace")
        os.waitpid(pid, 0)
        return None if answer == "ok" else answer or "the probe process died"

    def enter(self):
        """Move the calling process into the cgroup."""
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write("0")

    def pids(self):
        try:
            with open(os.path.join(self.path, "cgroup.procs"), encoding="ascii") as f:
                return [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return []

    def kill(self, timeout=10.0):
        """SIGKILL every process in the cgroup and wait (up to ``timeout``) until it is empty.

        ``cgroup.kill`` (Linux 5.14) does it in one step, forks racing it included. Without it the
        cgroup is frozen first, so nothing forks while each of its processes gets SIGKILL.
        """
        kill_file = os.path.join(self.path, "cgroup.kill")
        if os.path.exists(kill_file):
            with open(kill_file, "w") as f:
                f.write("1")
        else:
            self._freeze_and_kill()
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.02)

    def _freeze_and_kill(self):
        freeze = os.path.join(self.path, "cgroup.freeze")
        frozen = False
        try:
            with open(freeze, "w") as f:
                f.write("1")
            frozen = True
        except OSError:
            pass  # before Linux 5.2: no freezer; repeat the kill below until nothing is left
        try:
            for _ in range(100):
                pids = self.pids()
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                if frozen:
                    break  # a frozen process cannot fork; SIGKILL ends it even frozen
                time.sleep(0.01)
        finally:
            if frozen:
                with open(freeze, "w") as f:
                    f.write("0")

    def remove(self, timeout=10.0):
        """Remove the (emptied) cgroup; processes that just got SIGKILL may still take a moment."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(0.02)


def kill_recorded_cgroup(status, run_id):
    """End what is left in the cgroup a run's ``status.json`` names (its supervisor was lost) and
    remove it. The path must look like this run's cgroup in a cgroup v2 file system: status.json
    lies in a folder the script can write, so a path elsewhere is refused. Returns whether it acted."""
    path = status.get("cgroup") if isinstance(status, dict) else None
    if not isinstance(path, str) or not os.path.isabs(path):
        return False
    name = os.path.basename(path)
    expected = _cgroup_stem(run_id)
    if not name.startswith(expected) or not name[len(expected) :].isdigit():
        return False
    if not os.path.isdir(path) or not in_cgroup2(path):
        return False
    cgroup = Cgroup(path)
    cgroup.kill()
    try:
        cgroup.remove(timeout=2.0)
    except OSError:
        pass
    return True


def _pidfd(pid):
    """A pidfd of ``pid`` (Linux >= 5.3, Python >= 3.9), or None where there is none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _group_members(pgid):
    """Pids of the processes in process group ``pgid`` (from /proc; empty where there is none)."""
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state, ppid, pgrp. Zombies have exited already.
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def detach(run_dir):
    """Start the supervisor of ``run_dir`` in a session of its own, forked from the calling process,
    and return once the run is claimed (by it, or by a supervisor already there): None, or what went
    wrong. For ``--detach``, and for a launcher that is itself a short single-threaded Python
    (``remote.py start``), which saves an interpreter start."""
    return _detach(Supervisor(run_dir))


def _detach(sup):
    """Fork into a new session; the parent returns once the child has claimed the run."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()  # or the child would write the launcher's buffered output again
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as r:
            message = r.read().decode("utf-8", "replace")
        # No waitpid: the child outlives us and is reparented, which is the point of detaching.
        if message in ("ok", "busy"):  # busy: another supervisor has this run, nothing to do
            return None
        return message or "mltrain supervisor died before claiming the run\n"
    code = 1
    try:  # never back into the caller's code, which is the launcher's
        os.close(read_fd)
        os.setsid()
        try:
            log_fd = os.open(
                os.path.join(sup.run_dir, "supervisor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
            null_fd = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null_fd, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            _close_inherited(keep=write_fd)
            claimed = sup.claim()
        except Exception as exc:  # reported to the launcher, which shows it to the user
            os.write(write_fd, ("mltrain supervisor failed to start: %r\n" % (exc,)).encode())
        else:
            os.write(write_fd, b"ok" if claimed else b"busy")
            os.close(write_fd)
            code = sup.run() if claimed else 0
    finally:
        os._exit(code)


def _close_inherited(keep):
    """Close every descriptor but stdio and ``keep``: a fork inherits them all, close-on-exec or not,
    and a lock file the launcher held open would stay locked while the run lasts."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own descriptor, closed already


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    detached = "--detach" in args
    args = [a for a in args if a != "--detach"]
    if len(args) != 1:
        sys.stderr.write("usage: supervisor.py RUN_DIR [--detach]\n")
        return 2
    if detached:
        problem = detach(args[0])
        if problem:
            sys.stderr.write(problem)
            return 1
        return 0
    sup = Supervisor(args[0])
    if not sup.claim():
        return 0
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
