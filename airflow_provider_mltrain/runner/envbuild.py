"""Build the Python environment (a venv) for one content hash: once, atomically, with its lock file.

Standard library only, any Python >= 3.9: it runs in the controller for the local target and on
the remote machine for remote targets.

* ``<root>/<hash>/`` exists only when complete: the build happens in ``<root>/.tmp-<hash>-*`` and
  is renamed into place at the end, so a failed or killed build leaves nothing that looks usable.
* ``<root>/<hash>.lock`` (``flock``) makes concurrent requests for one hash build once; the others
  wait, then find the finished environment.
* ``uv`` makes the venv (relocatable) and installs: offline from its cache first, from the package
  index when something is missing (or on a rebuild); without uv, ``python -m venv`` and pip.
* ``mltrain-lock.txt`` in the environment holds the resolved versions (``pip freeze`` form).

Command line: ``python envbuild.py SPEC.json``; build output streams on stdout and the last line
is the JSON result.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

MARKER = "mltrain-env.json"
LOCK_FILE = "mltrain-lock.txt"


class BuildFailed(Exception):
    def __init__(self, message, output_tail=""):
        Exception.__init__(self, message)
        self.output_tail = output_tail


def _python_in(env_dir):
    return os.path.join(env_dir, "bin", "python")


def _stream(argv, log, env=None, cwd=None):
    """Run a command, sending each output line to log; returns (code, last lines)."""
    log("$ " + " ".join(argv))
    tail = []
    # The with block closes the pipe and reaps the process, whichever way it is left.
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
    ) as proc:
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log(line)
                tail.append(line)
                if len(tail) > 40:
                    del tail[0]
            return proc.wait(), "\n".join(tail)
        except BaseException:
            proc.kill()  # interrupted (timeout, kill): leave no installer running
            raise


def _run(argv, log, what, env=None):
    code, tail = _stream(argv, log, env=env)
    if code != 0:
        raise BuildFailed("%s failed (exit code %d):\n%s" % (what, code, tail), tail)


def _tool_env():
    env = dict(os.environ)
    env.update(
        {
            "NO_COLOR": "1",
            "UV_NO_PROGRESS": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PYTHONNOUSERSITE": "1",
        }
    )
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env


def _fix_shebangs(env_dir, old_dir):
    """pip's console scripts name the folder they were built in; point them at the final one."""
    bindir = os.path.join(env_dir, "bin")
    old = ("#!" + os.path.join(old_dir, "bin")).encode()
    new = ("#!" + os.path.join(env_dir, "bin")).encode()
    for name in os.listdir(bindir):
        path = os.path.join(bindir, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            head = f.read(len(old))
            if head != old:
                continue
            rest = f.read()
        with open(path, "wb") as f:
            f.write(new + rest)


def _create(tmp, spec, log, env):
    uv = spec.get("uv")
    base = spec.get("base_python") or sys.executable
    version = spec.get("python_version")
    if uv:
        argv = [
            uv,
            "venv",
            "--relocatable",
            "--no-python-downloads",
            "--quiet",
            "--python",
            version or base,
            tmp,
        ]
        _run(argv, log, "creating the virtualenv", env)
    else:
        if version:
            found = shutil.which("python" + version)
            if not found:
                raise BuildFailed(
                    "Python %s is not installed on this machine (no python%s on PATH). Install it, "
                    "or drop python_version to use %s." % (version, version, base)
                )
            base = found
        _run([base, "-m", "venv", tmp], log, "creating the virtualenv", env)


def _install(tmp, spec, log, env):
    requirements = spec.get("requirements") or []
    req_file = os.path.join(tmp, "mltrain-requirements.txt")
    # Requirement lines may carry index credentials: owner-only.
    with os.fdopen(
        os.open(req_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8"
    ) as f:
        f.write("".join(line + "\n" for line in requirements))
    uv = spec.get("uv")
    python = _python_in(tmp)
    if requirements:
        if uv:
            argv = [uv, "pip", "install", "--python", python, "-r", req_file]
            if not spec.get("rebuild") and spec.get("pinned"):
                # Offline first when every version is pinned: a warm cache builds without the
                # package index (or through its outage). Unpinned specs resolve against the index.
                code, _tail = _stream([*argv, "--offline"], log, env=env)
                if code == 0:
                    argv = []
                else:
                    log("mltrain: not everything is in uv's cache; installing from the package index")
        else:
            argv = [python, "-m", "pip", "install", "--no-input", "-r", req_file]
        if argv:
            _run(argv, log, "installing the requirements", env)
    if uv:
        argv = [uv, "pip", "freeze", "--python", python]
    else:
        argv = [python, "-m", "pip", "freeze", "--all", "--exclude-editable"]
    out = subprocess.run(argv, capture_output=True, env=env)
    if out.returncode != 0:
        raise BuildFailed("listing the installed packages failed:\n" + out.stderr.decode("utf-8", "replace"))
    packages = sorted(line for line in out.stdout.decode("utf-8", "replace").splitlines() if line.strip())
    if not uv:
        packages = [p for p in packages if not p.lower().startswith(("pip==", "setuptools==", "wheel=="))]
    with open(os.path.join(tmp, LOCK_FILE), "w", encoding="utf-8") as f:
        f.write("".join(p + "\n" for p in packages))
    return packages


def _python_version(python):
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True,
        timeout=60,
    )
    return out.stdout.decode().strip() if out.returncode == 0 else ""


def build(spec, log=None):
    """Make sure the environment for spec["hash"] exists under spec["root"]; returns its description.

    The result has ``path``, ``python``, ``packages``, ``python_version``, ``built`` (False for a
    cache hit) and ``seconds``.
    """
    log = log or (lambda line: None)
    digest = spec["hash"]
    root = spec["root"]
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, digest)
    started = time.time()
    with open(os.path.join(root, digest + ".lock"), "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log("mltrain: another process is building environment %s; waiting for it" % digest[:12])
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        marker = os.path.join(final, MARKER)
        if os.path.exists(marker) and not os.path.exists(os.path.realpath(_python_in(final))):
            log(
                "mltrain: the Python that environment %s was built from is gone; building it again"
                % digest[:12]
            )
            spec = dict(spec, rebuild=True)
        if os.path.exists(marker) and not spec.get("rebuild"):
            with open(marker, encoding="utf-8") as f:
                info = json.load(f)
            info.update(
                {"path": final, "python": _python_in(final), "built": False, "seconds": time.time() - started}
            )
            return info
        for stale in glob.glob(os.path.join(root, ".tmp-%s-*" % digest)):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed build; we hold the lock
        tmp = os.path.join(root, ".tmp-%s-%s" % (digest, uuid.uuid4().hex[:8]))
        env = _tool_env()
        log(
            "mltrain: building environment %s with %s"
            % (digest[:12], "uv" if spec.get("uv") else "venv + pip")
        )
        try:
            _create(tmp, spec, log, env)
            packages = _install(tmp, spec, log, env)
            info = {
                "hash": digest,
                "requirements": spec.get("requirements") or [],
                "packages": packages,
                "python_version": _python_version(_python_in(tmp)),
                "builder": "uv" if spec.get("uv") else "pip",
                "built_at": time.time(),
            }
            marker_fd = os.open(os.path.join(tmp, MARKER), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(marker_fd, "w", encoding="utf-8") as f:
                json.dump(info, f, indent=1, sort_keys=True)
            old = None
            if os.path.exists(final):
                old = os.path.join(root, ".old-%s-%s" % (digest, uuid.uuid4().hex[:8]))
                os.rename(final, old)
            os.rename(tmp, final)
            if not spec.get("uv"):
                _fix_shebangs(final, tmp)
            if old:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = time.time() - started
        log("mltrain: environment %s ready in %.1f s (%d packages)" % (digest[:12], seconds, len(packages)))
        info.update({"path": final, "python": _python_in(final), "built": True, "seconds": seconds})
        return info


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: envbuild.py SPEC.json\n")
        return 2
    with open(args[0], encoding="utf-8") as f:
        spec = json.load(f)

    def log(line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        result = build(spec, log)
    except BuildFailed as exc:
        log(json.dumps({"error": str(exc)}))
        return 1
    log(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
