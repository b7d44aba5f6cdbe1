"""Opening a ``file://`` source so that nobody who can rename, link or swap files along its
path can redirect the open.

:func:`open_regular` walks the path one component at a time from a directory descriptor,
opening each with ``O_PATH | O_NOFOLLOW`` (the kernel checks search permission on every
directory with the calling thread's credentials: see identity.py), and resolves symbolic
links itself:

* ``trust_link(st)`` decides whether a link may be followed at all.  For a reference logged
  with ``checksum=False`` (whose bytes nothing verifies) only links owned by root or by the
  reader are followed: the logger could otherwise swap his file, or any directory of his on the
  way, for a link to a file the *reader* may read (his ssh key) and have the reader's own
  ``get`` or mount read it for him.  With a checksum the bytes are verified, so any link
  is followed, as the kernel would.
* ``root``: the walk never leaves this directory.  ``..`` above it and absolute link targets
  outside it are refused with :class:`Refused` (a daemon reads ``file_roots`` with its own
  authority, which holds only inside them).  ``/`` for the plain walk.
* ``..`` goes back to the directory the walk came from (a stack of descriptors), which is
  also where the kernel would go, since links are spliced into the walk component by
  component.
* The last component is opened ``O_PATH`` first; only a regular file is then opened for
  reading (``O_NONBLOCK``: a fifo swapped in can not block a worker thread; a device node is
  never opened), and it must be the same inode, else the open raced with a swap: ``ESTALE``.

Errors are ``OSError`` as the kernel reports them (EACCES, ENOENT, ENOTDIR, ELOOP, EISDIR),
plus :class:`Refused`.  Nothing here switches credentials: the caller does (identity.py).
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Callable

MAX_LINKS = 40  # as the kernel's limit for one path walk
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Refused(Exception):
    """The walk would leave its root, or follow a link the rules do not trust."""


def below(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` when it is written below it (no normalization: ``..``
    is resolved by the walk itself), else ``None``."""
    if not path.startswith("/"):
        return None
    if root == "/":
        return path[1:]
    if path == root:
        return ""
    return path[len(root) + 1:] if path.startswith(root + "/") else None


def open_regular(path: str, trust_link: Callable[[os.stat_result], bool],
                 root: str = "/") -> int:
    """A read-only descriptor of the regular file at absolute ``path`` (see the module
    docstring for the rules); the caller closes it."""
    rel = below(path, root)
    if rel is None:
        raise Refused(f"{path} is not below {root}")
    stack = [os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]
    todo = deque(rel.split("/"))
    links = 0
    try:
        while todo:
            name = todo.popleft()
            if name in ("", "."):
                continue
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                elif root != "/":
                    raise Refused(f"{path} leads out of {root}")
                continue
            fd = os.open(name, _PATH, dir_fd=stack[-1])
            try:
                st = os.fstat(fd)
            except BaseException:
                os.close(fd)
                raise
            if stat.S_ISDIR(st.st_mode):
                stack.append(fd)
                continue
            if stat.S_ISLNK(st.st_mode):
                links += 1
                target = _link_target(fd, st, trust_link, path, links)
                if target.startswith("/"):
                    trel = below(target, root)
                    if trel is None:
                        raise Refused(f"{path} leads out of {root}")
                    while len(stack) > 1:
                        os.close(stack.pop())
                    target = trel
                todo.extendleft(reversed(target.split("/")))
                continue
            return _open_last(fd, st, name, stack[-1], path, any(todo))
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    finally:
        for d in stack:
            os.close(d)


def _link_target(fd: int, st: os.stat_result, trust_link: Callable[[os.stat_result], bool],
                 path: str, links: int) -> str:
    try:
        if not trust_link(st):
            raise Refused(f"a symbolic link owned by uid {st.st_uid} is on the path")
        if links > MAX_LINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        return os.readlink("", dir_fd=fd)
    finally:
        os.close(fd)


def _open_last(fd: int, st: os.stat_result, name: str, parent: int, path: str,
               more: bool) -> int:
    """The read-only descriptor of the walk's last component (``fd``: its O_PATH one)."""
    try:
        if more:
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        rfd = os.open(name, _READ, dir_fd=parent)
    finally:
        os.close(fd)
    now = os.fstat(rfd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(rfd)
        raise OSError(errno.ESTALE, "replaced while it was opened", path)
    return rfd
