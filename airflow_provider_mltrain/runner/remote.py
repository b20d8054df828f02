"""The remote half of the SSH target: blob cache, run folders and supervisor checks on the remote host.

Standard library only, any Python >= 3.9: it is copied to the remote with the rest of the runner and
run there as ``python remote.py COMMAND ARGS...``; structured input comes on stdin as JSON and the
answer is one JSON object on stdout. Nothing here goes through a shell.

The blob cache is ``<root>/blobs/<aa>/<rest of sha256>``. A blob gets its final name only after its
bytes were hashed on this host, and blobs are read-only, because working copies hard-link them.
``<root>/manifests/<snapshot id>.json`` keeps the manifest of each snapshot a run was started from
(named, like blobs, only once it hashed to that id here), so the next start needs only its changes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    from . import tree  # imported as part of the package (the local and Spark targets)
except ImportError:  # run as a script on the remote host: tree.py is beside it
    sys.path.insert(0, HERE)
    import tree  # type: ignore[no-redef]
SUPERVISOR = os.path.join(HERE, "supervisor.py")
# Files this large or larger are hard-linked from the cache (read-only); smaller ones are copied, so
# a script may still rewrite its small source and config files in place.
LINK_MIN_SIZE = 64 * 1024
TMP_MAX_AGE = 3600.0
CHUNK = 1 << 20


def _blob(root, digest):
    return os.path.join(root, "blobs", digest[:2], digest[2:])


def _check_digest(digest):
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("not a sha256 digest: %r" % (digest,))


def _check_rel(path):
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError("unsafe path in the snapshot manifest: %r" % (path,))


def _unlink(path):
    """Delete ``path`` if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _hash_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


# -- blob cache ------------------------------------------------------------------------------------


def missing(root, digests):
    """The digests the cache lacks; the present ones are touched, so a prune keeps them a while."""
    out = []
    now = time.time()
    for digest in digests:
        _check_digest(digest)
        path = _blob(root, digest)
        try:
            os.utime(path, (now, now))
        except FileNotFoundError:
            out.append(digest)
        except PermissionError:
            pass  # present but not ours to touch (a shared cache): it still counts as present
    return {"missing": out}


def commit(root, items):
    """Move uploaded temporary files to their blob names after checking their hash; bad ones are deleted."""
    bad = []
    for tmp_name, digest in items:
        _check_digest(digest)
        final = _blob(root, digest)
        tmp = os.path.join(os.path.dirname(final), os.path.basename(tmp_name))
        if not os.path.basename(tmp).startswith(".tmp-"):
            raise ValueError("not an upload name: %r" % (tmp_name,))
        try:
            actual = _hash_file(tmp)
        except FileNotFoundError:
            bad.append([digest, "the uploaded file is missing"])
            continue
        if actual != digest:
            os.unlink(tmp)
            bad.append([digest, "uploaded bytes hash to %s" % actual])
            continue
        os.chmod(tmp, 0o444)
        os.replace(tmp, final)
    return {"bad": bad}


def unbundle(root, bundle_name, index):
    """Split an uploaded bundle (blobs back to back, sizes in ``index``) into checked blobs.

    Each blob is written to a temporary name, hashed, and renamed; whatever happens, the bundle
    and any half-written blob are deleted (a full disk leaves only whole blobs behind).
    """
    if not bundle_name.startswith(".tmp-bundle-") or "/" in bundle_name:
        raise ValueError("not a bundle name: %r" % (bundle_name,))
    bundle = os.path.join(root, "blobs", bundle_name)
    bad = []
    try:
        with open(bundle, "rb") as src:
            for digest, size in index:
                _check_digest(digest)
                final = _blob(root, digest)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                tmp = os.path.join(os.path.dirname(final), ".tmp-%s-%s" % (digest[:16], uuid.uuid4().hex[:8]))
                h = hashlib.sha256()
                remaining = int(size)
                try:
                    with open(tmp, "wb") as out:
                        while remaining:
                            chunk = src.read(min(CHUNK, remaining))
                            if not chunk:
                                raise ValueError("the bundle is shorter than its index")
                            h.update(chunk)
                            out.write(chunk)
                            remaining -= len(chunk)
                    if h.hexdigest() != digest:
                        os.unlink(tmp)
                        bad.append([digest, "uploaded bytes hash to %s" % h.hexdigest()])
                        continue
                    os.chmod(tmp, 0o444)
                    os.replace(tmp, final)
                except BaseException:
                    _unlink(tmp)
                    raise
    finally:
        _unlink(bundle)
    return {"bad": bad}


def _prune_manifests(root, cutoff):
    """Delete the kept manifests no start used since ``cutoff`` (and stale temporary ones); their ids.

    A later start against one of them as its base is answered ``base_missing``; a kept manifest
    whose blobs were pruned is answered ``missing``: neither makes a wrong working copy.
    """
    folder = os.path.join(root, "manifests")
    removed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if ".tmp-" in name:
            if st.st_mtime < time.time() - TMP_MAX_AGE:
                os.unlink(path)
        elif name.endswith(".json") and st.st_mtime < cutoff:
            os.unlink(path)
            removed.append(name[: -len(".json")])
    return removed


def prune(root, days):
    """Delete blobs no working copy links to and no submission touched in ``days``, and manifests
    no start used in ``days``; stale uploads too. ``manifests``: the ids of the manifests removed."""
    cutoff = time.time() - days * 86400
    removed = 0
    freed = 0
    kept = 0
    blobs = os.path.join(root, "blobs")
    lock_path = os.path.join(root, "blobs.lock")
    if not os.path.isdir(root):
        return {"removed": 0, "bytes": 0, "kept": 0, "manifests": []}
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        manifests = _prune_manifests(root, cutoff)
        if not os.path.isdir(blobs):
            return {"removed": 0, "bytes": 0, "kept": 0, "manifests": manifests}
        for sub in sorted(os.listdir(blobs)):
            folder = os.path.join(blobs, sub)
            if not os.path.isdir(folder):
                path = folder  # a bundle left by a controller that died while uploading
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                if sub.startswith(".tmp-") and st.st_mtime < time.time() - TMP_MAX_AGE:
                    os.unlink(path)
                    removed += 1
                    freed += st.st_size
                continue
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                stale_tmp = name.startswith(".tmp-") and st.st_mtime < time.time() - TMP_MAX_AGE
                if stale_tmp or (not name.startswith(".") and st.st_nlink <= 1 and st.st_mtime < cutoff):
                    os.unlink(path)
                    removed += 1
                    freed += st.st_size
                else:
                    kept += 1
    return {"removed": removed, "bytes": freed, "kept": kept, "manifests": manifests}


# -- runs ------------------------------------------------------------------------------------------


def _manifest_path(root, snapshot_id):
    _check_digest(snapshot_id)
    return os.path.join(root, "manifests", snapshot_id + ".json")


def _manifest_id(manifest):
    """The snapshot id of a manifest: what ``core/snapshot.py`` computes on the controller."""
    body = {k: manifest[k] for k in ("version", "files", "symlinks", "dirs")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _full_manifest(root, snapshot_id, request):
    """The snapshot's whole manifest from the request: given whole, or as ``delta`` (the format of
    ``core.snapshot.delta_manifest``) against a base manifest kept here. None when that base is not
    here (pruned, another remote root), or does not rebuild into ``snapshot_id``.

    The result hashes to ``snapshot_id``; it is kept under that name (or its time refreshed: the
    time is its last use, for pruning).
    """
    path = _manifest_path(root, snapshot_id)
    delta = request.get("delta")
    if delta is None:
        manifest = request["manifest"]
        if _manifest_id(manifest) != snapshot_id:
            raise ValueError("the manifest sent does not hash to the snapshot id %s" % snapshot_id[:12])
    else:
        try:
            with open(_manifest_path(root, delta["base"]), encoding="utf-8") as f:
                base = json.load(f)
        except (OSError, ValueError):
            return None
        files = dict((entry[0], entry) for entry in base["files"])
        for rel in delta["removed"]:
            files.pop(rel, None)
        for entry in delta["files"]:
            files[entry[0]] = entry
        manifest = {
            "version": delta["version"],
            "files": [files[rel] for rel in sorted(files)],
            "symlinks": delta["symlinks"],
            "dirs": delta["dirs"],
        }
        if _manifest_id(manifest) != snapshot_id:
            return None
    for entry in manifest["files"]:
        _check_rel(entry[0])
        _check_digest(entry[1])
    for rel in [link[0] for link in manifest["symlinks"]] + list(manifest["dirs"]):
        _check_rel(rel)
    try:
        os.utime(path)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = "%s.tmp-%s" % (path, uuid.uuid4().hex[:8])
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(manifest, f, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise
    return manifest


def _materialize(root, manifest, dest):
    """Build the working copy from the cache: big read-only files hard-linked, the others copied.

    The caller holds ``blobs.lock`` shared, so a prune does not delete blobs under our feet.
    """
    os.makedirs(dest)
    links = set(p for p, _ in manifest.get("symlinks", []))
    made = set([dest])  # a mkdir per file costs as much as the copy of a small one

    def folder_for(target):
        folder = os.path.dirname(target)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)

    def under_link(path):
        parts = path.split("/")
        return any("/".join(parts[:i]) in links for i in range(1, len(parts)))

    for d in manifest.get("dirs", []):
        _check_rel(d)
        if under_link(d) or d in links:
            raise ValueError("snapshot path %r lies under a symlink" % (d,))
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    for path, digest, size, mode in manifest["files"]:
        _check_rel(path)
        _check_digest(digest)
        if under_link(path):
            raise ValueError("snapshot path %r lies under a symlink" % (path,))
        target = os.path.join(dest, path)
        folder_for(target)
        blob = _blob(root, digest)
        if not os.path.exists(blob):
            raise LookupError("blob %s (%s) is not in the cache" % (digest[:12], path))
        # A link shares the blob's read-only, world-readable mode: only for plain 0o644 files.
        if int(size) >= LINK_MIN_SIZE and int(mode) == 0o644:
            try:
                os.link(blob, target)
                continue
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM, errno.ENOTSUP):
                    raise
        shutil.copyfile(blob, target)
        os.chmod(target, int(mode))
    for path, link_target in manifest.get("symlinks", []):
        _check_rel(path)
        if under_link(path):
            raise ValueError("snapshot path %r lies under a symlink" % (path,))
        folder_for(os.path.join(dest, path))
        os.symlink(link_target, os.path.join(dest, path))


def _launch(run_dir):
    proc = subprocess.run(
        [sys.executable, "-I", "-S", SUPERVISOR, run_dir, "--detach"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        close_fds=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            "the run supervisor failed to start: %s" % proc.stderr.decode("utf-8", "replace").strip()
        )


def _name_uploads(root, request):
    """Blobs uploaded for this start (``bundles`` as for ``unbundle``, ``commits`` as for ``commit``),
    checked and named; the damaged ones. An upload no longer there (this start run again after a
    lost connection) is skipped: the blob check then says whether it is needed."""
    bad = []
    for name, index in request.get("bundles", []):
        if os.path.exists(os.path.join(root, "blobs", name)):
            bad += unbundle(root, name, index)["bad"]
    commits = request.get("commits", [])
    if commits:
        bad += commit(root, [[tmp, digest] for tmp, digest in commits])["bad"]
    return [entry for entry in bad if entry[1] != "the uploaded file is missing"]


def start(root, run_id, request):
    """Create ``runs/<run_id>`` (working copy, run.json) atomically and launch its supervisor.

    The request names the ``snapshot`` and carries its ``manifest``, or a ``delta`` against a base
    kept here, and may name blobs uploaded for it (named first). The answer is ``bad`` (uploads
    that arrived damaged, deleted), ``started`` (False when the run folder existed already; a folder left
    by a launcher that died before the supervisor claimed it is launched now), or, with nothing
    created: ``base_missing`` (send the whole manifest), or ``missing``, the blobs the cache lacks
    (send them, then start again: the manifest is kept here by then, so a delta against itself does).
    """
    bad = _name_uploads(root, request)
    if bad:
        return {"bad": bad}
    runs = os.path.join(root, "runs")
    final = os.path.join(runs, run_id)
    if os.path.exists(final):
        if os.path.exists(os.path.join(final, "run.json")) and not os.path.exists(
            os.path.join(final, "status.json")
        ):
            _launch(final)
        return {"started": False}
    os.makedirs(runs, exist_ok=True)
    with open(os.path.join(root, "blobs.lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_SH)  # a prune deletes no blob or manifest meanwhile
        manifest = _full_manifest(root, request["snapshot"], request)
        if manifest is None:
            return {"base_missing": True}
        absent = missing(root, sorted(set(entry[1] for entry in manifest["files"])))["missing"]
        if absent:
            return {"missing": absent}
        tmp = os.path.join(runs, ".tmp-%s-%s" % (run_id, uuid.uuid4().hex[:8]))
        try:
            os.mkdir(tmp)
            _materialize(root, manifest, os.path.join(tmp, "snapshot"))
            os.mkdir(os.path.join(tmp, "logs"))
            os.mkdir(os.path.join(tmp, "outputs"))
            # run.json carries the environment variables, secrets included: owner-only.
            fd = os.open(os.path.join(tmp, "run.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(request["run"], f, indent=1)
            with open(os.path.join(tmp, "cleanup"), "w", encoding="utf-8") as f:
                f.write(request.get("cleanup") or "never")
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    shutil.rmtree(tmp, ignore_errors=True)
                    return {"started": False}  # another controller started this run id first
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    _launch(final)
    return {"started": True}


def _read_status(run_dir):
    try:
        with open(os.path.join(run_dir, "status.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def alive(run_dir):
    """Whether a supervisor holds the run folder's lock."""
    try:
        fd = os.open(os.path.join(run_dir, "supervisor.lock"), os.O_RDWR)
    except FileNotFoundError:
        return {"alive": False}
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return {"alive": True}
    finally:
        os.close(fd)
    return {"alive": False}


def cancel(run_dir, grace_period):
    """Leave the cancel marker and SIGTERM the supervisor, which stops the script's process group."""
    if not os.path.isdir(run_dir):
        return {"signaled": False}
    with open(os.path.join(run_dir, "cancel_requested"), "w", encoding="utf-8") as f:
        json.dump({"grace_period": float(grace_period)}, f)
    status = _read_status(run_dir)
    if status and alive(run_dir)["alive"]:
        try:
            os.kill(int(status["supervisor_pid"]), signal.SIGTERM)
            return {"signaled": True}
        except (ProcessLookupError, PermissionError, KeyError, ValueError, TypeError):
            pass
    return {"signaled": False}


def _belongs_to_run(pid, run_id):
    """Guard against pid reuse: the process must carry this run's id in its environment."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            environ = f.read()
    except OSError:
        return False
    return ("MLTRAIN_RUN_ID=%s" % run_id).encode() in environ.split(b"\0")


def kill(run_dir):
    """SIGKILL whatever is left of the run: the script's process group and cgroup, then its supervisor."""
    status = _read_status(run_dir)
    if not status:
        return {"killed": []}
    killed = []
    if status.get("cgroup"):
        sys.path.insert(0, HERE)
        import supervisor

        try:
            supervisor.kill_recorded_cgroup(status, status.get("run_id", ""))
        except OSError:
            pass  # the process group and the supervisor are still ended below
    pgid = status.get("pgid")
    if pgid and _belongs_to_run(int(pgid), status.get("run_id", "")):
        try:
            os.killpg(int(pgid), signal.SIGKILL)
            killed.append(int(pgid))
        except (ProcessLookupError, PermissionError):
            pass
    sup = status.get("supervisor_pid")
    if sup and alive(run_dir)["alive"]:
        try:
            os.kill(int(sup), signal.SIGKILL)
            killed.append(int(sup))
        except (ProcessLookupError, PermissionError):
            pass
    return {"killed": killed}


def cleanup(root, run_id, whole):
    """Remove the run's working copy of the snapshot, or (``whole``) the whole run folder."""
    if run_id in ("", ".", "..") or "/" in run_id:
        raise ValueError("not a run id: %r" % (run_id,))
    run_dir = os.path.join(root, "runs", run_id)
    # The script may have left links and a deep tree: none is followed, nothing recursed into.
    errors = tree.rmtree(run_dir if whole else os.path.join(run_dir, "snapshot"))
    return {"removed": not errors, "errors": errors}


def pack_env(envs, interpreter):
    """The managed venv ``interpreter`` belongs to, packed once as ``<envs>/<name>.tar.gz`` for Spark
    executors (``--archives``); ``None`` when ``interpreter`` is not one of ``envs`` (user-managed).

    Packed under the environment's build lock into a temporary name, then renamed: a reader never
    sees a partial archive, and concurrent runs pack once.
    """
    envs = os.path.realpath(envs)
    bindir = os.path.dirname(interpreter)
    venv = os.path.dirname(bindir)
    if os.path.basename(bindir) != "bin" or os.path.realpath(os.path.dirname(venv)) != envs:
        return {"archive": None}
    name = os.path.basename(venv)
    archive = os.path.join(envs, name + ".tar.gz")
    if os.path.exists(archive):
        return {"archive": archive}
    with open(os.path.join(envs, name + ".lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not os.path.exists(archive):
            tmp = os.path.join(envs, ".%s.tar.gz.%s" % (name, uuid.uuid4().hex))
            try:
                with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
                    tar.add(os.path.join(envs, name), arcname=".")
                os.replace(tmp, archive)
            except BaseException:
                _unlink(tmp)
                raise
    return {"archive": archive}


def wait_change(run_dir, seconds):
    """Return when the supervisor replaces ``status.json`` (every change and heartbeat), looked at
    every 0.1 s, or after ``seconds``."""
    path = os.path.join(run_dir, "status.json")

    def stamp():
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return [st.st_ino, st.st_mtime_ns, st.st_size]

    first = stamp()
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return {"changed": False}
        time.sleep(min(0.1, left))
        if stamp() != first:
            return {"changed": True}


def pids_alive(pids):
    """Whether each process exists (zombies count as gone)."""
    out = []
    for pid in pids:
        try:
            with open("/proc/%d/stat" % int(pid), encoding="utf-8") as f:
                out.append(f.read().rsplit(")", 1)[1].split()[0] != "Z")
        except (OSError, IndexError):
            out.append(False)
    return {"alive": out}


def free_space(path):
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    st = os.statvfs(path or "/")
    return {"free": st.f_bavail * st.f_frsize}


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write("usage: remote.py COMMAND ARGS...\n")
        return 2
    command, args = args[0], args[1:]
    if command == "pack":
        # The run's outputs and logs as a tar stream on stdout (links as links, never followed); the
        # folders that could not be read as JSON lines on stderr.
        for line in tree.pack(args[0], sys.stdout.buffer):
            sys.stderr.write(json.dumps({"skipped": line}) + "\n")
        sys.stdout.buffer.flush()
        return 0

    def request():
        return json.loads(sys.stdin.read() or "null")

    try:
        if command == "missing":
            result = missing(args[0], request())
        elif command == "commit":
            result = commit(args[0], request())
        elif command == "unbundle":
            result = unbundle(args[0], args[1], request())
        elif command == "prune":
            result = prune(args[0], float(args[1]))
        elif command == "start":
            result = start(args[0], args[1], request())
        elif command == "alive":
            result = alive(args[0])
        elif command == "cancel":
            result = cancel(args[0], float(args[1]))
        elif command == "kill":
            result = kill(args[0])
        elif command == "cleanup":
            result = cleanup(args[0], args[1], args[2] == "all")
        elif command == "pids-alive":
            result = pids_alive([int(a) for a in args])
        elif command == "wait-change":
            result = wait_change(args[0], float(args[1]))
        elif command == "pack-env":
            result = pack_env(args[0], args[1])
        elif command == "free-space":
            result = free_space(args[0])
        else:
            sys.stderr.write("remote.py: unknown command %r\n" % command)
            return 2
    except Exception as exc:  # the controller shows this to the user
        sys.stdout.write(json.dumps({"error": "%s: %s" % (type(exc).__name__, exc)}) + "\n")
        return 1
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
