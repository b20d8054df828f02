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

Two environment variables save the controller a Docker archive call each, and are taken out of the
environment before anything of the run's starts:

- ``MLTRAIN_RUN_SPEC``: the text of ``run.json``. The run folder and ``run.json`` are then made
  here, so a warm resubmission sends no archive before the container starts.
- ``MLTRAIN_FOLDER_TOKEN``: when the run is done, every other process of the container is killed,
  and the finished run folder (status, outputs, logs; at most ``FRAME_LIMIT`` bytes of tar) goes to
  stdout as one frame, the container's last output: ``MLTRAIN-FOLDER <token> <bytes> <crc32>``,
  base64 lines, ``MLTRAIN-FOLDER-END <token>``; for a bigger folder only
  ``MLTRAIN-FOLDER-NONE <token>``. The controller reads it from the container's log instead of
  an archive of the stopped container (see ``targets/docker.py``).
"""

from __future__ import annotations

import binascii
import io
import json
import os
import shutil
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # -I leaves the script's folder out; supervisor and tree are beside it

import tree  # noqa: E402

SPEC_VAR = "MLTRAIN_RUN_SPEC"
TOKEN_VAR = "MLTRAIN_FOLDER_TOKEN"  # noqa: S105 - a variable name
FRAME_LIMIT = 1 << 20  # bytes of tar; a bigger run folder is read with an archive call
FRAME_LINE = 3072  # bytes per base64 line of 4096 characters (the json-file driver splits at 16 KiB)
FRAME_TOPS = (*tree.TOPS, "status.json")


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


def write_spec(run_dir, text):
    """The run folder and its ``run.json`` from ``text``, unless a start before this one made them."""
    os.makedirs(run_dir, exist_ok=True)
    try:
        fd = os.open(os.path.join(run_dir, "run.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def send_folder(run_dir, token, out):
    """The finished run folder as the container's last output (the frame the module's docstring
    describes). Every other process of the container is killed first, so nothing can write after
    it or change the folder meanwhile."""
    try:
        os.kill(-1, signal.SIGKILL)  # all this user may signal but ourselves and init
    except OSError:
        pass
    listed = tree.listing(run_dir, FRAME_TOPS)
    total = sum(listed["files"].values()) + 1024 * (len(listed["files"]) + len(listed["links"]) + 1)
    data = None
    if total <= FRAME_LIMIT and not listed["errors"]:
        buf = io.BytesIO()
        if not tree.pack(run_dir, buf, FRAME_TOPS) and buf.tell() <= FRAME_LIMIT:
            data = buf.getvalue()
    if data is None:
        out.write(("\nMLTRAIN-FOLDER-NONE %s\n" % token).encode())
    else:
        # binascii, not base64 and hashlib: those imports cost the run milliseconds. The checksum
        # catches a damaged log; the token, the last line and the exit code say whose frame it is.
        lines = [binascii.b2a_base64(data[i : i + FRAME_LINE]) for i in range(0, len(data), FRAME_LINE)]
        head = "\nMLTRAIN-FOLDER %s %d %d\n" % (token, len(data), binascii.crc32(data))
        out.write(head.encode() + b"".join(lines))
        out.write(("MLTRAIN-FOLDER-END %s\n" % token).encode())
    out.flush()


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: docker_entry.py RUN_DIR CACHE_DIR SNAPSHOT_ID\n")
        return 2
    run_dir, cache, snapshot_id = argv
    # Neither reaches the script's environment (the supervisor copies this process's).
    spec = os.environ.pop(SPEC_VAR, None)
    token = os.environ.pop(TOKEN_VAR, None)
    if spec is not None:
        write_spec(run_dir, spec)
    code = run(run_dir, cache, snapshot_id)
    if code == 0 and token:
        send_folder(run_dir, token, sys.stdout.buffer)
    return code


def run(run_dir, cache, snapshot_id):
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
    exit_code = main(sys.argv[1:])
    # Nothing is left to do but the interpreter's own teardown, which the container's end waits for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
