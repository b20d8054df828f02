"""The remote half of the SSH target: blob cache, run folders and supervisor checks on the remote host.

Standard library only, any Python >= 3.9: it is copied to the remote with the rest of the runner and
run there as ``python remote.py COMMAND ARGS...``; structured input comes on stdin as JSON and the
answer is one JSON object on stdout. Nothing here goes through a shell.

The blob cache is ``<root>/blobs/<aa>/<rest of sha256>``. A blob gets its final name only after its
bytes were hashed on this host, and blobs are read-only. ``<root>/manifests/<snapshot id>.json``
keeps the manifest of each snapshot a run was started from (named, like blobs, only once it hashed
to that id here), so the next start needs only its changes.

Working copies: every file of a run's ``snapshot/`` is a private copy of its blob (never a link into
the cache, whose blobs a script running as their owner, or as root, could otherwise rewrite).
Creating thousands of files is slow on many disks, so a start reuses the working copy of an ended
run instead of building a new one: ``<root>/worktrees/<run_id>.json`` records, for the working copy
of run ``run_id``, each file's blob, mode, inode, ctime and size as the start left them. Any write,
chmod, rename, link or delete by the script changes the inode or its ctime (which no process can set
back), so the next start keeps exactly the files whose stat still matches and whose blob and mode
the new snapshot wants, and replaces, adds or removes everything else: the result is the snapshot.
A working copy is claimed under ``worktrees.lock`` by renaming it into the new run's folder, only
once its run has ended (terminal ``status.json`` and no supervisor), so no two runs ever share one.
A collected run's working copy waits in ``<root>/worktrees/<run_id>.tree``; the newest
``KEEP_WORKTREES`` wait there, older ones are deleted.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    from . import tree  # imported as part of the package (the local and Spark targets)
except ImportError:  # run as a script on the remote host: tree.py is beside it
    sys.path.insert(0, HERE)
    import tree  # type: ignore[no-redef]
TMP_MAX_AGE = 3600.0
# A cached blob's time is its last use (prune goes by it): refreshed when older than this, so a
# start of thousands of unchanged files does not write thousands of inodes.
TOUCH_EVERY = 3600.0
# Ended runs' working copies kept for reuse (each as big as the snapshot).
KEEP_WORKTREES = 2
ENDED = ("Completed", "Failed", "Canceled")
CHUNK = 1 << 20
_DIGEST = re.compile(r"[0-9a-f]{64}\Z")


def _blob(root, digest):
    return os.path.join(root, "blobs", digest[:2], digest[2:])


def _token(n=4):
    """``n`` random bytes in hex, for temporary names (uuid costs every call an import)."""
    return os.urandom(n).hex()


def _check_digest(digest):
    if not _DIGEST.match(digest):
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
    """The digests the cache lacks; the present ones are touched (unless touched within
    ``TOUCH_EVERY``), so a prune keeps them a while."""
    for digest in digests:
        _check_digest(digest)
    return {"missing": _absent(root, digests)}


def _absent(root, digests):
    """``missing`` for digests checked already (a start's, by ``_full_manifest``)."""
    out = []
    now = time.time()
    stale = now - TOUCH_EVERY
    blobs = os.path.join(root, "blobs", "")
    for digest in digests:
        path = blobs + digest[:2] + "/" + digest[2:]  # _blob, without a join per blob
        try:
            if os.stat(path).st_mtime < stale:
                os.utime(path, (now, now))
        except FileNotFoundError:
            out.append(digest)
        except PermissionError:
            pass  # present but not ours to touch (a shared cache): it still counts as present
    return out


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
                tmp = os.path.join(os.path.dirname(final), ".tmp-%s-%s" % (digest[:16], _token()))
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


def _tree_bytes(path):
    total = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _prune_inputs(root, cutoff, keep):
    """Delete the cached inputs (``inputs/<key>/``) not in ``keep`` that no submission used since
    ``cutoff`` (a use refreshes the time of the copy's ``.complete``), and stale half-made ones.
    Each goes out of the way in one rename before it is deleted, so a submission either finds it
    whole or not at all (and sends it again). Returns (copies removed, bytes freed)."""
    folder = os.path.join(root, "inputs")
    removed = freed = 0
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        try:
            if name.startswith(".tmp-"):
                stale = os.lstat(path).st_mtime < time.time() - TMP_MAX_AGE
            elif name in keep:
                continue
            else:
                try:
                    stale = os.lstat(os.path.join(path, ".complete")).st_mtime < cutoff
                except FileNotFoundError:
                    stale = True  # no marker: never finished (uploads are renamed in whole)
            if not stale:
                continue
            doomed = path
            if not name.startswith(".tmp-"):
                doomed = os.path.join(folder, ".tmp-pruned-%s-%s" % (name, _token()))
                os.rename(path, doomed)
        except FileNotFoundError:
            continue  # another prune got there first
        freed += _tree_bytes(doomed)
        tree.rmtree(doomed)
        removed += 1
    return removed, freed


def prune(root, days, keep_inputs=()):
    """Delete blobs no working copy links to and no submission touched in ``days``, manifests
    no start used in ``days``, and kept working copies of runs ended before; stale uploads too;
    cached inputs no submission used in ``days`` whose keys are not in ``keep_inputs`` (the ones
    runs in the controller's run store still name). ``manifests``: the ids of the manifests
    removed; ``inputs_removed`` and ``inputs_bytes``: the cached inputs deleted."""
    cutoff = time.time() - days * 86400
    inputs_removed, inputs_bytes = _prune_inputs(root, cutoff, set(keep_inputs or ()))
    if os.path.isdir(_worktrees(root)):
        with open(os.path.join(root, "worktrees.lock"), "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            doomed = _trim_worktrees(root, KEEP_WORKTREES, cutoff)
        for path in doomed:
            tree.rmtree(path)
    removed = 0
    freed = 0
    kept = 0
    blobs = os.path.join(root, "blobs")
    lock_path = os.path.join(root, "blobs.lock")
    inputs = {"inputs_removed": inputs_removed, "inputs_bytes": inputs_bytes}
    if not os.path.isdir(root):
        return {"removed": 0, "bytes": 0, "kept": 0, "manifests": [], **inputs}
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        manifests = _prune_manifests(root, cutoff)
        if not os.path.isdir(blobs):
            return {"removed": 0, "bytes": 0, "kept": 0, "manifests": manifests, **inputs}
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
    return {"removed": removed, "bytes": freed, "kept": kept, "manifests": manifests, **inputs}


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
        tmp = "%s.tmp-%s" % (path, _token())
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps(manifest, separators=(",", ":")))
            os.replace(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise
    return manifest


def _materialize(root, manifest, dest, index=None):
    """Make ``dest`` the snapshot's working copy from the cache; its index (see the module's
    docstring). ``dest`` is new, or (``index`` given) an ended run's working copy as ``index``
    recorded it: kept where its stat proves it untouched, everything else replaced or removed.

    The manifest's paths and digests were checked by ``_full_manifest``. The caller holds
    ``blobs.lock`` shared, so a prune does not delete blobs under our feet.
    """
    links = dict((p, t) for p, t in manifest.get("symlinks", []))
    files = dict((path, (digest, int(mode))) for path, digest, _size, mode in manifest["files"])
    dirs = set([""])
    for rel in list(files) + list(links) + list(manifest.get("dirs", [])):
        parts = rel.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    dirs.update(manifest.get("dirs", []))
    for rel in sorted(dirs):
        if rel in links or rel in files:
            raise ValueError("snapshot path %r lies under a symlink or a file" % (rel,))
    for rel in links:
        if rel in files:
            raise ValueError("snapshot path %r is both a file and a symlink" % (rel,))
    umask = os.umask(0)
    os.umask(umask)
    dir_mode = 0o777 & ~umask
    kept = {}  # path -> index entry of the files kept as they are
    have_dirs = set()
    have_links = set()
    if index is None:
        os.mkdir(dest)
        have_dirs.add("")
    else:
        recorded = index.get("files", {})
        pending = [""]
        while pending:
            rel = pending.pop()
            folder = os.path.join(dest, rel) if rel else dest
            if stat.S_IMODE(os.lstat(folder).st_mode) != dir_mode:
                os.chmod(folder, dir_mode)  # a folder the script made unreadable or read-only
            have_dirs.add(rel)
            with os.scandir(folder) as it:
                entries = list(it)
            for entry in entries:
                child = rel + "/" + entry.name if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    if child in dirs:
                        pending.append(child)
                        continue
                    errors = tree.rmtree(entry.path)
                    if errors:
                        raise OSError("cannot remove %s from the working copy: %s" % (child, errors[0]))
                    continue
                if stat.S_ISLNK(st.st_mode) and child in links and os.readlink(entry.path) == links[child]:
                    have_links.add(child)
                    continue
                want, was = files.get(child), recorded.get(child)
                if (
                    want is not None
                    and was is not None
                    and was[0] == want[0]
                    and was[2] == st.st_ino
                    and was[3] == st.st_ctime_ns
                    and was[4] == st.st_size
                    and was[1] == stat.S_IMODE(st.st_mode)
                    and stat.S_ISREG(st.st_mode)
                    and st.st_nlink == 1
                ):
                    if want[1] != was[1]:
                        os.chmod(entry.path, want[1])
                        st = os.lstat(entry.path)
                        was = [was[0], stat.S_IMODE(st.st_mode), st.st_ino, st.st_ctime_ns, st.st_size]
                    kept[child] = was  # its index entry: as recorded, or after the chmod
                    continue
                os.unlink(entry.path)
    for rel in sorted(dirs - have_dirs):
        os.mkdir(os.path.join(dest, rel))
    out = {}
    copied = 0
    for path, (digest, mode) in files.items():
        entry = kept.get(path)
        if entry is not None:
            out[path] = entry
            continue
        copied += 1
        target = os.path.join(dest, path)
        blob = _blob(root, digest)
        try:
            shutil.copyfile(blob, target)
        except FileNotFoundError:
            if not os.path.exists(blob):
                raise LookupError("blob %s (%s) is not in the cache" % (digest[:12], path)) from None
            raise
        os.chmod(target, mode)
        st = os.lstat(target)
        out[path] = [digest, stat.S_IMODE(st.st_mode), st.st_ino, st.st_ctime_ns, st.st_size]
    for path, link_target in links.items():
        if path not in have_links:
            os.symlink(link_target, os.path.join(dest, path))
    return {"files": out}, {"kept": len(kept), "copied": copied}


def _worktrees(root):
    return os.path.join(root, "worktrees")


def _ended(run_dir):
    status = _read_status(run_dir)
    return bool(status) and status.get("state") in ENDED and not alive(run_dir)["alive"]


def _claim_worktree(root, dest):
    """Move the working copy of the newest ended run (or a kept one) to ``dest``; its index, or
    None when there is none. The caller holds ``worktrees.lock`` exclusively."""
    folder = _worktrees(root)
    try:
        names = [n for n in os.listdir(folder) if n.endswith(".json") and not n.startswith(".")]
    except FileNotFoundError:
        return None
    found = []
    for name in names:
        try:
            found.append((os.stat(os.path.join(folder, name)).st_mtime, name[: -len(".json")]))
        except FileNotFoundError:
            pass
    for _mtime, run_id in sorted(found, reverse=True):
        index_path = os.path.join(folder, run_id + ".json")
        kept = os.path.join(folder, run_id + ".tree")
        if os.path.isdir(kept):
            source = kept
        else:
            run_dir = os.path.join(root, "runs", run_id)
            if not _ended(run_dir):
                continue
            source = os.path.join(run_dir, "snapshot")
        try:
            with open(index_path, encoding="utf-8") as f:
                index = json.load(f)
            os.rename(source, dest)
        except (OSError, ValueError):
            _unlink(index_path)  # its working copy is gone (or the index is damaged): forget it
            continue
        _unlink(index_path)
        return index if isinstance(index, dict) else {}
    return None


def _write_index(root, run_id, index):
    folder = _worktrees(root)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, run_id + ".json")
    tmp = "%s.tmp-%s" % (os.path.join(folder, "." + run_id), _token())
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(index, separators=(",", ":")))  # dumps: json.dump has no C encoder
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _supervisor():
    """The supervisor module beside this one, imported only by the commands that use it."""
    try:
        from . import supervisor  # imported as part of the package
    except ImportError:  # run as a script: beside it, on sys.path (see the import of tree)
        import supervisor  # type: ignore[no-redef]
    return supervisor


def _launch(run_dir):
    """Start the run's supervisor, detached; return once it has claimed the run. Forked from this
    process rather than run as ``supervisor.py --detach`` (the same code): one interpreter start
    fewer. Nothing is open here then (no lock is held), and the child closes what it inherits; it
    keeps this process's memory, a few MB for a snapshot of thousands of files."""
    try:
        problem = _supervisor().detach(run_dir)
    except Exception as exc:  # run.json unreadable, fork failed
        problem = "%s: %s" % (type(exc).__name__, exc)
    if problem:
        raise RuntimeError("the run supervisor failed to start: %s" % problem.strip())


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
        absent = _absent(root, sorted(set(entry[1] for entry in manifest["files"])))
        if absent:
            return {"missing": absent}
        tmp = os.path.join(runs, ".tmp-%s-%s" % (run_id, _token()))
        try:
            os.mkdir(tmp)
            dest = os.path.join(tmp, "snapshot")
            with open(os.path.join(root, "worktrees.lock"), "a+") as wt_lock:
                fcntl.flock(wt_lock.fileno(), fcntl.LOCK_EX)
                index = _claim_worktree(root, dest)
            worktree = {"reused": index is not None}
            if index is not None:
                try:
                    index, counts = _materialize(root, manifest, dest, index)
                except OSError:  # a working copy we cannot put right: a new one instead
                    worktree["reused"] = False
                    tree.rmtree(dest)
                    index = None
            if index is None:
                index, counts = _materialize(root, manifest, dest)
            worktree.update(counts)
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
                    tree.rmtree(tmp)
                    return {"started": False}  # another controller started this run id first
                raise
        except BaseException:
            tree.rmtree(tmp)
            raise
        index["snapshot"] = request["snapshot"]
        _write_index(root, run_id, index)  # before the launch: its run cannot have ended yet
    del manifest, index  # the supervisor, forked from this process, need not carry them
    _launch(final)
    return {"started": True, "worktree": worktree}


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
        try:
            _supervisor().kill_recorded_cgroup(status, status.get("run_id", ""))
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
    """Remove the run's working copy of the snapshot, or (``whole``) the whole run folder. The
    working copy of an ended run is kept for the next start to reuse instead (the newest
    ``KEEP_WORKTREES`` of them), outside the run folder."""
    if run_id in ("", ".", "..") or "/" in run_id:
        raise ValueError("not a run id: %r" % (run_id,))
    run_dir = os.path.join(root, "runs", run_id)
    folder = _worktrees(root)
    index_path = os.path.join(folder, run_id + ".json")
    doomed = [run_dir if whole else os.path.join(run_dir, "snapshot")]
    if os.path.exists(index_path):
        deadline = time.monotonic() + 5.0
        status = _read_status(run_dir) or {}
        while status.get("state") in ENDED and alive(run_dir)["alive"] and time.monotonic() < deadline:
            time.sleep(0.05)  # the supervisor is writing its last lines
        with open(os.path.join(root, "worktrees.lock"), "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            if os.path.exists(index_path):
                try:
                    if not _ended(run_dir):
                        raise OSError("the run has not ended")
                    os.rename(os.path.join(run_dir, "snapshot"), os.path.join(folder, run_id + ".tree"))
                    os.utime(index_path)  # its age is now the run's end, for the choice of the next start
                except OSError:
                    _unlink(index_path)
                doomed += _trim_worktrees(root, KEEP_WORKTREES)
    errors = []
    for path in doomed:
        errors += tree.rmtree(path)
    return {"removed": not errors, "errors": errors}


def _trim_worktrees(root, keep, cutoff=None):
    """Forget the kept working copies beyond the newest ``keep`` (or last used before ``cutoff``),
    and the indexes of working copies gone; the folders to delete (moved aside). The caller holds
    ``worktrees.lock`` exclusively."""
    folder = _worktrees(root)
    stale = time.time() - TMP_MAX_AGE
    kept = []
    doomed = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if name.endswith(".json") and not name.startswith("."):
            run_id = name[: -len(".json")]
            if os.path.isdir(os.path.join(folder, run_id + ".tree")):
                kept.append((os.stat(path).st_mtime, run_id))
            elif not os.path.isdir(os.path.join(root, "runs", run_id, "snapshot")):
                _unlink(path)
        elif name.startswith(".") and cutoff is not None and os.lstat(path).st_mtime < stale:
            doomed.append(path)  # left by a start or cleanup that died
    kept.sort(reverse=True)
    for i, (mtime, run_id) in enumerate(kept):
        if i >= keep or (cutoff is not None and mtime < cutoff):
            aside = os.path.join(folder, ".old-%s" % _token(16))
            os.rename(os.path.join(folder, run_id + ".tree"), aside)
            _unlink(os.path.join(folder, run_id + ".json"))
            doomed.append(aside)
    return doomed


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
    import tarfile  # here: only Spark gateways pack environments, and it costs every call a start

    with open(os.path.join(envs, name + ".lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not os.path.exists(archive):
            tmp = os.path.join(envs, ".%s.tar.gz.%s" % (name, _token(16)))
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
            result = prune(args[0], float(args[1]), (request() or {}).get("keep_inputs") or ())
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
