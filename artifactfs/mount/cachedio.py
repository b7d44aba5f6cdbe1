"""Opening and reading a local file only when the kernel can answer from its caches, so the
trio thread may do it without ever waiting on a disk (or on a network file system).

* :func:`open_cached` is ``openat2(RESOLVE_CACHED)`` (Linux ≥ 5.12): the path is resolved
  from the dentry cache alone, or the call fails with EAGAIN instead of reading a directory
  or an inode from the disk.  Without ``openat2`` (an older kernel, a seccomp filter) it
  answers ``None`` every time, and callers take their worker-thread path.
* :func:`read_cached` reads with ``RWF_NOWAIT``: whatever is not in the page cache is not
  read.  A short answer is a miss, never taken for the end of the file: the caller knows the
  size it expects (checked against ``fstat`` of the descriptor).

What is subtle: RESOLVE_CACHED also refuses paths whose resolution would need any lookup the
kernel can not do without sleeping (an automount point, a remote file system's revalidation),
which is exactly what the trio thread must not do; the caller then goes the slow way.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

_SYS_OPENAT2 = 437  # the same number on every architecture (unified syscall table)
_RESOLVE_CACHED = 0x20
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_usable = hasattr(os, "RWF_NOWAIT")


def open_cached(path: str) -> int | None:
    """A read-only descriptor of ``path`` if it resolves from the kernel's caches alone;
    ``None`` if that would need I/O, or the kernel can not tell (then always ``None``)."""
    global _usable
    if not _usable:
        return None
    how = struct.pack("QQQ", os.O_RDONLY | os.O_CLOEXEC, 0, _RESOLVE_CACHED)
    fd = _syscall(_SYS_OPENAT2, _AT_FDCWD, os.fsencode(path), how, len(how))
    if fd >= 0:
        return int(fd)
    if ctypes.get_errno() in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):
        _usable = False  # no openat2 (or RESOLVE_CACHED) here: stop asking
    return None


def read_cached(fd: int, size: int) -> bytearray | None:
    """The first ``size`` bytes of ``fd`` if all are in the page cache, else ``None``."""
    buf = bytearray(size)
    try:
        n = os.preadv(fd, [buf], 0, os.RWF_NOWAIT)
    except OSError:  # EAGAIN (not cached), EOPNOTSUPP (no RWF_NOWAIT here), anything else
        return None
    return buf if n == size else None
