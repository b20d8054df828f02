"""Container entry point: lay out the run's snapshot from the blob cache, then run the supervisor.

Standard library only, any Python >= 3.9: it runs inside the user's image.

Usage: ``python3 docker_entry.py RUN_DIR CACHE_DIR SNAPSHOT_ID``. ``CACHE_DIR/manifests/<id>.json``
is the snapshot's manifest (the same format as the workspace's snapshot store), or
``<id>.delta.json`` its changes to a base snapshot's full manifest; each file's content is
``CACHE_DIR/blobs/<hash[:2]>/<hash[2:]>``, sent there by the controller through the Docker API.
Files are copied, not linked: the script may write to its working copy, never to the cache.
The supervisor runs in this process (one interpreter start fewer before the script, and signals
from docker-init reach its handlers directly); when it is done the working copy is removed, so that
the run folder holds only what the controller collects. Exit code 0 says exactly that: the run
folder holds no working copy (the controller then reads it whole, in one archive).
"""

from __future__ import annotations

import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # -I leaves the script's folder out; supervisor and tree are beside it

import tree  # noqa: E402


def _inside(root, rel):
    """``rel`` joined to ``root``, refusing absolute paths and ``..`` (a manifest never has them)."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or ".." in parts or "" in parts:
        raise ValueError("unsafe path in snapshot manifest: %r" % rel)
    return os.path.join(root, *parts)


def _check_not_under_link(rel, links):
    parts = rel.split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in links:
            raise ValueError("snapshot path %r lies under the symlink %r" % (rel, "/".join(parts[:i])))


def materialize(manifest, blobs, dest):
    links = set(p for p, _ in manifest.get("symlinks", []))
    os.makedirs(dest, exist_ok=True)
    for rel in manifest.get("dirs", []):
        _check_not_under_link(rel, links)
        os.makedirs(_inside(dest, rel), exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for rel, digest, _size, mode in manifest.get("files", []):
        _check_not_under_link(rel, links)
        target = _inside(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(os.path.join(blobs, digest[:2], digest[2:]), "rb") as src:
            fd = os.open(target, flags, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        os.chmod(target, mode & 0o777)
    for rel, link_target in manifest.get("symlinks", []):
        _check_not_under_link(rel, links - {rel})
        path = _inside(dest, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(link_target, path)


def load_manifest(folder, snapshot_id):
    """The full manifest: ``<id>.json``, or ``<id>.delta.json`` applied to its base's full one."""
    path = os.path.join(folder, snapshot_id + ".json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    with open(os.path.join(folder, snapshot_id + ".delta.json"), encoding="utf-8") as f:
        delta = json.load(f)
    with open(os.path.join(folder, delta["base"] + ".json"), encoding="utf-8") as f:
        base = json.load(f)
    files = dict((entry[0], entry) for entry in base["files"])
    for path in delta["removed"]:
        files.pop(path, None)
    for entry in delta["files"]:
        files[entry[0]] = entry
    return {"files": [files[p] for p in sorted(files)], "symlinks": delta["symlinks"], "dirs": delta["dirs"]}


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: docker_entry.py RUN_DIR CACHE_DIR SNAPSHOT_ID\n")
        return 2
    run_dir, cache, snapshot_id = argv
    snapshot = os.path.join(run_dir, "snapshot")
    if not os.path.exists(os.path.join(run_dir, "status.json")) and not os.path.isdir(snapshot):
        tmp = snapshot + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            manifest = load_manifest(os.path.join(cache, "manifests"), snapshot_id)
            materialize(manifest, os.path.join(cache, "blobs"), tmp)
        except (OSError, ValueError) as exc:
            # The supervisor never ran: leave a status the controller can read, then stop.
            import supervisor

            sup = supervisor.Supervisor(run_dir)
            if sup.claim():
                sup.set_state(
                    "Failed",
                    exit_code=None,
                    error="could not lay out the snapshot: %s" % exc,
                    ended_at=supervisor._now(),
                )
            return 1
        os.rename(tmp, snapshot)
    # The container is the run's bound: what the script leaves behind ends when the container stops.
    os.environ["MLTRAIN_CGROUP_BASE"] = "off"
    import supervisor

    try:
        code = supervisor.main([run_dir])
    finally:
        # The supervisor moved ./outputs and ./logs out of the working copy; what is left is the
        # snapshot, which the controller already has. Without it, the run folder is one small
        # archive. The script may have left links and a deep tree there: no link followed, no
        # recursion.
        left = False
        for line in tree.rmtree(snapshot):
            left = True
            sys.stderr.write("mltrain: removing the working copy: %s\n" % line)
    return 3 if left and not code else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
