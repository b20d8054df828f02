"""Reading a run folder that untrusted code wrote: no link is followed, no folder is recursed into.

Standard library only, any Python >= 3.9: the local target uses it on this machine, ``remote.py``
on an SSH host and ``docker_entry.py`` in a container.

Every folder is opened relative to its parent's descriptor with ``O_NOFOLLOW``, and every file with
``O_NOFOLLOW | O_NONBLOCK`` (a FIFO never blocks a reader), then checked with ``fstat`` to be a
regular file. A script that swaps a file or a folder for a link while it is read makes that one
read fail, never go elsewhere. A link is reported as a link: its name and the text it points to.
Walks keep an explicit stack and at most ``MAX_OPEN`` folder descriptors, so neither a deep nor a
wide tree exhausts the interpreter's stack or the process's descriptors.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
# uploads/: files the script kept under names of its own (run.upload_file("a/b.txt")); see
# core/runfiles.py for how their names are shown.
TOPS = ("outputs", "logs", "uploads")
MAX_OPEN = 64
CHUNK = 1 << 20
# What opening a name that is not a plain file or folder (any more) fails with: gone, a link
# (ELOOP; EMLINK on BSDs), a file where a folder was, a socket.
_NOT_THERE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EMLINK, errno.ENXIO)


def split_name(name, tops=TOPS):
    """The parts of a run file name (``outputs/a/b.txt``); ValueError for anything that could leave
    the run folder or is not under one of ``tops``."""
    parts = name.split("/") if isinstance(name, str) else []
    if (
        not parts
        or name.startswith("/")
        or "\0" in name
        or any(p in ("", ".", "..") for p in parts)
        or parts[0] not in tops
    ):
        raise ValueError("%r is not a run file name (outputs/..., logs/... or uploads/...)" % (name,))
    return parts


class Folders:
    """Descriptors of the folders from ``root`` down to the current one, each opened from its parent
    without following a link. ``create`` makes missing folders (a destination we own)."""

    def __init__(self, root, create=False):
        if create:
            os.makedirs(root, exist_ok=True)
        self.create = create
        self.names = []
        self.fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for fd in self.fds:
            if fd is not None:
                os.close(fd)
        self.fds = []

    def _open(self, name, parent):
        if self.create:
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
            except FileExistsError:
                pass
        return os.open(name, DIR_FLAGS, dir_fd=parent)

    def _keep_few(self, top):
        """Only the last ``MAX_OPEN`` folders below the root keep their descriptor."""
        old = top - MAX_OPEN
        if old >= 1 and self.fds[old] is not None:
            os.close(self.fds[old])
            self.fds[old] = None

    def goto(self, parts):
        """The descriptor of the folder ``parts`` (names below the root); OSError when one of them is
        missing, not a folder, or a link."""
        parts = tuple(parts)
        names = tuple(self.names)
        if parts[: len(names)] == names:  # a walk mostly goes one folder down, or back up
            k = len(names)
        elif names[: len(parts)] == parts:
            k = len(parts)
        else:
            k = 0
            while k < len(names) and k < len(parts) and names[k] == parts[k]:
                k += 1
        for fd in self.fds[k + 1 :]:
            if fd is not None:
                os.close(fd)
        del self.fds[k + 1 :]
        del self.names[k:]
        j = k
        while self.fds[j] is None:  # closed by _keep_few: open it again from the nearest open one
            j -= 1
        for i in range(j, k):
            self.fds[i + 1] = self._open(self.names[i], self.fds[i])
            self._keep_few(i + 1)
        for name in parts[k:]:
            fd = self._open(name, self.fds[-1])
            self.names.append(name)
            self.fds.append(fd)
            self._keep_few(len(self.fds) - 1)
        return self.fds[-1]


def scan(root, tops=TOPS, errors=None):
    """Yield ``(parts, folder_fd, [(name, lstat), ...])`` for ``root`` itself (only the entries named
    in ``tops``) and every folder below them, depth first, sorted by name. A folder that cannot be
    read is skipped, with a line in ``errors``."""
    with Folders(root) as folders:
        stack = [()]
        while stack:
            parts = stack.pop()
            entries = []
            try:
                fd = folders.goto(parts)
                with os.scandir(fd) as it:
                    for entry in it:
                        if not parts and entry.name not in tops:
                            continue
                        try:
                            entries.append((entry.name, entry.stat(follow_symlinks=False)))
                        except FileNotFoundError:
                            continue
            except OSError as exc:
                if errors is not None and exc.errno != errno.ENOENT:
                    errors.append("%s: %s" % ("/".join(parts) or ".", exc.strerror or exc))
                continue
            entries.sort(key=lambda e: e[0])
            yield parts, fd, entries
            stack.extend((*parts, name) for name, st in reversed(entries) if stat.S_ISDIR(st.st_mode))


def listing(root, tops=TOPS):
    """``{"files": {name: size}, "links": {name: link text}, "errors": [...]}`` of the regular files
    and links under ``root/<top>``; FIFOs, sockets and devices are neither."""
    files = {}
    links = {}
    errors = []
    if not os.path.isdir(root):
        return {"files": files, "links": links, "errors": errors}
    for parts, fd, entries in scan(root, tops, errors):
        for name, st in entries:
            rel = "/".join((*parts, name))
            if stat.S_ISREG(st.st_mode):
                files[rel] = st.st_size
            elif stat.S_ISLNK(st.st_mode):
                try:
                    links[rel] = os.readlink(name, dir_fd=fd)
                except OSError:
                    pass
    return {"files": files, "links": links, "errors": errors}


def names(root, tops=TOPS):
    """``(files, links, errors)``: the names of the regular files under ``root/<top>`` (unsorted),
    its links (name -> link text) and unreadable folders, like :func:`listing` without sizes, from
    the folder listings alone (no system call per file): a folder of 100,000 files in a fraction
    of :func:`listing`'s time."""
    files = []
    links = {}
    errors = []
    if not os.path.isdir(root):
        return files, links, errors
    with Folders(root) as folders:
        stack = [()]
        while stack:
            parts = stack.pop()
            prefix = "/".join(parts) + "/" if parts else ""
            try:
                fd = folders.goto(parts)
                with os.scandir(fd) as it:
                    for entry in it:
                        name = entry.name
                        if not parts and name not in tops:
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            stack.append((*parts, name))
                        elif entry.is_file(follow_symlinks=False):
                            files.append(prefix + name)
                        elif entry.is_symlink():
                            try:
                                links[prefix + name] = os.readlink(name, dir_fd=fd)
                            except OSError:
                                pass
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    errors.append("%s: %s" % ("/".join(parts) or ".", exc.strerror or exc))
    return files, links, errors


def open_file(root, name, tops=TOPS):
    """A read descriptor of the regular file ``name`` under ``root``, reached without following any
    link; None when there is no such regular file (missing, a link, a folder, a FIFO)."""
    parts = split_name(name, tops)
    try:
        with Folders(root) as folders:
            fd = os.open(parts[-1], FILE_FLAGS, dir_fd=folders.goto(parts[:-1]))
    except OSError as exc:
        if exc.errno in _NOT_THERE:
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def read_file(root, name, offset=0, limit=None, tops=TOPS):
    """Bytes of the regular file ``name`` from ``offset`` (at most ``limit``); b"" when it is not one."""
    fd = open_file(root, name, tops)
    if fd is None:
        return b""
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        return f.read() if limit is None else f.read(limit)


def file_size(root, name, tops=TOPS):
    """Size of the regular file ``name``; 0 when it is not one."""
    fd = open_file(root, name, tops)
    if fd is None:
        return 0
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def append(root, name, data, tops=TOPS):
    """Append ``data`` to the file ``name`` (created if missing), never through a link."""
    parts = split_name(name, tops)
    with Folders(root) as folders:
        fd = os.open(
            parts[-1],
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=folders.goto(parts[:-1]),
        )
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", name)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_from(src, size, name, folder_fd, mode, mtime_ns=None):
    """Copy ``size`` bytes (None: all) of the open file ``src`` to ``name`` in ``folder_fd``."""
    out = os.open(name, WRITE_FLAGS, mode & 0o777 | 0o600, dir_fd=folder_fd)
    try:
        remaining = -1 if size is None else size
        while remaining != 0:
            chunk = src.read(CHUNK if remaining < 0 else min(CHUNK, remaining))
            if not chunk:
                break
            os.write(out, chunk)
            if remaining > 0:
                remaining -= len(chunk)
        if mtime_ns is not None:
            os.utime(out, ns=(mtime_ns, mtime_ns))
    finally:
        os.close(out)


def _link_from(fd, name, folder_fd):
    """Hard-link the open file ``fd`` (exactly that inode, whatever its name points to now) as
    ``name``; False when the file system or the kernel refuses."""
    source = "/proc/self/fd/%d" % fd
    try:
        try:
            os.link(source, name, dst_dir_fd=folder_fd, follow_symlinks=True)
        except FileExistsError:  # collected before, by a controller that stopped half-way
            os.unlink(name, dir_fd=folder_fd)
            os.link(source, name, dst_dir_fd=folder_fd, follow_symlinks=True)
    except OSError:
        return False
    return True


def copy_tree(src_root, dest_root, tops=TOPS, link=False):
    """Copy the regular files under ``src_root/<top>`` to ``dest_root`` (hard-linked with ``link``
    where possible), folders included; links are not copied but returned.

    Returns ``{"files": n, "links": {name: link text}, "errors": [...]}``.
    """
    links = {}
    errors = []
    count = 0
    if not os.path.isdir(src_root):
        return {"files": 0, "links": links, "errors": errors}
    with Folders(dest_root, create=True) as out:
        for parts, fd, entries in scan(src_root, tops, errors):
            dest_fd = out.goto(parts)
            for name, st in entries:
                rel = "/".join((*parts, name))
                if stat.S_ISLNK(st.st_mode):
                    try:
                        links[rel] = os.readlink(name, dir_fd=fd)
                    except OSError:
                        pass
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                try:
                    src = os.open(name, FILE_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in _NOT_THERE:
                        errors.append("%s: %s" % (rel, exc.strerror or exc))
                    continue
                try:
                    fst = os.fstat(src)
                    if not stat.S_ISREG(fst.st_mode):
                        continue
                    if not (link and _link_from(src, name, dest_fd)):
                        with os.fdopen(os.dup(src), "rb") as f:
                            write_from(f, fst.st_size, name, dest_fd, fst.st_mode, fst.st_mtime_ns)
                    count += 1
                except OSError as exc:
                    errors.append("%s: %s" % (rel, exc.strerror or exc))
                finally:
                    os.close(src)
    return {"files": count, "links": links, "errors": errors}


class _Exactly:
    """A file read as exactly the size announced in its tar header: a file that shrank meanwhile is
    padded with zeros, one that grew is cut, so the archive stays well formed."""

    def __init__(self, f):
        self.f = f

    def read(self, size):
        data = self.f.read(size)
        return data + b"\0" * (size - len(data)) if len(data) < size else data


def pack(src_root, out, tops=TOPS):
    """Write the regular files, folders and links under ``src_root/<top>`` to ``out`` as a tar stream
    (links as link members, never their targets); the errors met, as lines."""
    errors = []
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        if not os.path.isdir(src_root):
            return errors
        for parts, fd, entries in scan(src_root, tops, errors):
            for name, st in entries:
                rel = "/".join((*parts, name))
                info = tarfile.TarInfo(rel)
                info.mtime = int(st.st_mtime)
                info.mode = st.st_mode & 0o777
                if stat.S_ISDIR(st.st_mode):
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif stat.S_ISLNK(st.st_mode):
                    try:
                        info.linkname = os.readlink(name, dir_fd=fd)
                    except OSError:
                        continue
                    info.type = tarfile.SYMTYPE
                    tar.addfile(info)
                elif stat.S_ISREG(st.st_mode):
                    try:
                        src = os.open(name, FILE_FLAGS, dir_fd=fd)
                    except OSError as exc:
                        if exc.errno not in _NOT_THERE:
                            errors.append("%s: %s" % (rel, exc.strerror or exc))
                        continue
                    with os.fdopen(src, "rb") as f:
                        fst = os.fstat(src)
                        if not stat.S_ISREG(fst.st_mode):
                            continue
                        info.size = fst.st_size
                        tar.addfile(info, _Exactly(f))
    return errors


def rmtree(path):
    """Delete ``path`` and everything under it without following a link and without recursion (a
    missing path is fine); the errors met, as lines."""
    errors = []
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return errors
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return errors
    parent, base = os.path.split(os.path.abspath(path))
    with Folders(parent) as folders:
        stack = [((base,), False)]
        while stack:
            parts, emptied = stack.pop()
            try:
                if emptied:
                    os.rmdir(parts[-1], dir_fd=folders.goto(parts[:-1]))
                    continue
                fd = folders.goto(parts)
                stack.append((parts, True))
                with os.scandir(fd) as it:
                    for entry in it:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(((*parts, entry.name), False))
                        else:
                            try:
                                os.unlink(entry.name, dir_fd=fd)
                            except FileNotFoundError:
                                pass
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    errors.append("%s: %s" % ("/".join(parts), exc.strerror or exc))
    return errors
