"""Acting as another user for one file open: per-thread credentials of a root daemon.

A daemon that serves other users opens a ``file://`` reference *as the user who reads it*
(SPEC §7), so the kernel applies that user's rights exactly as it would to his own process:
mode bits, POSIX ACLs, LSMs, and on NFS the user's own credentials (with ``root_squash`` a
root daemon could not even read the user's files otherwise).  Re-implementing those checks on
``stat`` results would miss ACLs (a ``user:bob:---`` entry denies what the mode bits allow) and
get NFS wrong, so it is not done.

How: :func:`acting_as` switches only the calling thread's filesystem identity —
``setfsuid``/``setfsgid`` (per-thread in Linux, and glibc does not broadcast them) and the
supplementary groups through the raw ``setgroups`` system call (glibc's wrapper would change
every thread of the process).  Changing the fsuid from 0 drops the filesystem capabilities
(``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``…) of that thread; switching back restores them.
Everything is switched back before the ``with`` block ends; a switch that can not be undone
ends the process rather than leave a worker thread with another user's identity.

Whose groups: the user database's (``getgrouplist`` of the uid's name), like the §9 ACL in
fs/access.py, cached :data:`IDS_TTL` seconds per uid — not the calling process's
``/proc/PID/status``: that file can belong to another process by the time it is read (pids are
reused), and the database is what the operator controls (a user removed from a group loses it
here within seconds, not at his next login).  A uid the database does not know gets only the
gid the kernel reported for the call, and no supplementary groups.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
import pwd
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import PermissionDenied

log = logging.getLogger(__name__)
IDS_TTL = 10.0
# setgroups(2) by machine: the raw call changes the calling thread only
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159, "riscv64": 159, "ppc64le": 81, "s390x": 206}
_libc = ctypes.CDLL(None, use_errno=True)
_ids: dict[int, tuple[float, int, tuple[int, ...]]] = {}
_ids_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Reader:
    """Who reads: the caller's uid, and the gid the kernel reported for the call (used only
    when the user database does not know the uid)."""

    uid: int
    gid: int | None = None


def user_ids(reader: Reader) -> tuple[int, tuple[int, ...]]:
    """(primary gid, supplementary gids) of a reader from the user database (cached)."""
    now = time.monotonic()
    with _ids_lock:
        hit = _ids.get(reader.uid)
    if hit is not None and now - hit[0] < IDS_TTL:
        return hit[1], hit[2]
    try:
        pw = pwd.getpwuid(reader.uid)
        gid, groups = pw.pw_gid, tuple(os.getgrouplist(pw.pw_name, pw.pw_gid))
    except (KeyError, OSError):
        gid = reader.gid if reader.gid is not None and reader.gid >= 0 else 65534
        groups = (gid,)
    with _ids_lock:
        _ids[reader.uid] = (now, gid, groups)
    return gid, groups


def _setgroups(gids: tuple[int, ...]) -> None:
    nr = _SYS_SETGROUPS.get(platform.machine())
    if nr is None:
        raise PermissionDenied(f"can not switch groups per thread on {platform.machine()}")
    arr = (ctypes.c_uint * max(1, len(gids)))(*gids)
    if _libc.syscall(ctypes.c_long(nr), ctypes.c_size_t(len(gids)), arr) != 0:
        err = ctypes.get_errno()
        raise PermissionDenied(f"can not take on another user's groups: {os.strerror(err)}")


def _fs_ids() -> tuple[int, int]:
    """The calling thread's (fsuid, fsgid): setfs*id with an invalid id changes nothing and
    returns the current one."""
    return _libc.setfsuid(ctypes.c_uint(0xFFFFFFFF)), _libc.setfsgid(ctypes.c_uint(0xFFFFFFFF))


def can_switch() -> bool:
    """Whether this process may act as other users (root: CAP_SETUID and CAP_SETGID)."""
    return os.geteuid() == 0 and platform.machine() in _SYS_SETGROUPS


@contextlib.contextmanager
def acting_as(reader: Reader) -> Iterator[None]:
    """Run the block with ``reader``'s filesystem identity in this thread only (see above).

    :class:`PermissionDenied` when this process can not take on that identity.
    """
    if not can_switch():
        raise PermissionDenied(f"this daemon can not read files as uid {reader.uid}")
    gid, groups = user_ids(reader)
    euid, egid, mine = os.geteuid(), os.getegid(), tuple(os.getgroups())
    try:
        _setgroups(groups)
        _libc.setfsgid(ctypes.c_uint(gid))
        _libc.setfsuid(ctypes.c_uint(reader.uid))
        if _fs_ids() != (reader.uid, gid):
            raise PermissionDenied(f"could not take on the identity of uid {reader.uid}")
        yield
    finally:
        _libc.setfsuid(ctypes.c_uint(euid))
        _libc.setfsgid(ctypes.c_uint(egid))
        try:
            _setgroups(mine)
        except PermissionDenied:
            pass
        if _fs_ids() != (euid, egid) or set(os.getgroups()) != set(mine):  # this thread's
            log.critical("could not restore the daemon's identity in a worker thread: exiting")
            os._exit(70)

