"""A user's runtime files (SPEC §9): the directory holding mount records, control sockets and
daemon logs, and the only ways to open what is in it.

Where: ``/run/artifactfs/mounts`` for root (mode 0755: every user reads root's records and
connects to its sockets), else ``$XDG_RUNTIME_DIR/artifactfs/mounts``, or without
``XDG_RUNTIME_DIR`` ``/tmp/artifactfs-UID/artifactfs/mounts`` (mode 0700).

What is subtle: ``/tmp`` is shared, so ``/tmp/artifactfs-UID`` may have been made by someone
else, to plant a record that points a victim's ``commit`` at his own socket.  So every directory
from the first one artifactfs names down to ``mounts`` is made with ``mkdir`` (never
``makedirs``, which is happy with whatever exists) and then checked with ``lstat``: a real
directory, not a symlink, owned by the user (root for root's), writable by nobody else.  The
directory above it (``/tmp``, ``/run``, ``$XDG_RUNTIME_DIR``) must belong to root or the user
and, when others may write it, be sticky, so nobody can rename ours away.  Once the chain holds,
nobody else can add, swap or remove a name in it, so a file opened afterwards is the one that
was checked.  Files are still opened with ``O_NOFOLLOW`` (``O_EXCL`` when created) and checked
with ``fstat``: the owner, a regular file, not writable by others.  Anything else is refused
with an error that names the path and says what is wrong.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat

from ..errors import PermissionDenied

ROOT_PARENT, ROOT_NAMES = "/run", ("artifactfs", "mounts")


def layout(uid: int | None = None) -> tuple[str, tuple[str, ...]]:
    """(trusted parent, directories below it) of ``uid``'s runtime directory."""
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return ROOT_PARENT, ROOT_NAMES
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return os.path.normpath(xdg), ("artifactfs", "mounts")
    return "/tmp", (f"artifactfs-{uid}", "artifactfs", "mounts")


def mounts_dir(uid: int | None = None) -> str:
    parent, names = layout(uid)
    return os.path.join(parent, *names)


def _who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _refuse(path: str, why: str, owner: int) -> PermissionDenied:
    fix = "an administrator must remove it" if owner != 0 else "check how it was made"
    if owner != 0 and not os.environ.get("XDG_RUNTIME_DIR"):
        fix += ", or set XDG_RUNTIME_DIR to a directory of yours"
    return PermissionDenied(f"refusing the runtime directory {path}: {why} ({fix})")


def _check_parent(path: str, owner: int) -> None:
    try:
        st = os.stat(path)
    except OSError as e:
        raise PermissionDenied(f"runtime directory base {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionDenied(f"runtime directory base {path} is not a directory")
    if st.st_uid not in (0, owner):
        raise _refuse(path, f"it belongs to {_who(st.st_uid)}", owner)
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise _refuse(path, "others may write it and it is not sticky", owner)


def check_entry(path: str, st: os.stat_result, owner: int, kind: int) -> None:
    """Refuse ``path`` unless it is a ``kind`` (``stat.S_IFDIR``…) of ``owner`` that nobody
    else may write."""
    if stat.S_IFMT(st.st_mode) != kind:
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not what artifactfs made there"
        raise _refuse(path, f"it is {what}", owner)
    if st.st_uid != owner:
        raise _refuse(path, f"it belongs to {_who(st.st_uid)}, not {_who(owner)}", owner)
    if kind != stat.S_IFSOCK and st.st_mode & 0o022:
        raise _refuse(path, f"others may write it (mode {stat.S_IMODE(st.st_mode):04o})", owner)


def secure_dir(uid: int | None = None, create: bool = False) -> str | None:
    """The checked ``mounts`` directory of ``uid`` (default: this process's), made when
    ``create`` (0700, 0755 for root); None when it does not exist and ``create`` is False.
    Raises :class:`PermissionDenied` naming the path when anything in the chain is unsafe."""
    uid = os.geteuid() if uid is None else uid
    parent, names = layout(uid)
    if create:
        os.makedirs(parent, mode=0o755 if uid == 0 else 0o700, exist_ok=True)
    elif not os.path.isdir(parent):
        return None
    _check_parent(parent, uid)
    path = parent
    for name in names:
        path = os.path.join(path, name)
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o755 if uid == 0 else 0o700)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        check_entry(path, st, uid, stat.S_IFDIR)
    return path


def open_file(path: str, owner: int, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """Open a runtime file without following a symlink (``O_CREAT`` implies ``O_EXCL``) and
    check it: a regular file of ``owner``, writable by nobody else."""
    if flags & os.O_CREAT:
        flags |= os.O_EXCL
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    try:
        check_entry(path, os.fstat(fd), owner, stat.S_IFREG)
        if not flags & os.O_CREAT:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_socket(path: str, owner: int) -> None:
    """Refuse a control socket that is not ``owner``'s (checked before connecting; the peer's
    credentials are checked again once connected, see ``control.request``)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise PermissionDenied(f"no control socket at {path}") from None
    check_entry(path, st, owner, stat.S_IFSOCK)


def create_log(path: str) -> int:
    """A fresh daemon log (0600, ``O_EXCL``, appending); a leftover one (a daemon that died)
    becomes ``LOG.1``, replacing the one before."""
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, path + ".1")
    return open_file(path, os.geteuid(), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def remove(*paths: str) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(p)
