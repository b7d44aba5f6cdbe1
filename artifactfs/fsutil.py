"""Small local-disk helpers shared by the directory store, the blob cache and the drafts area:
whole writes (a write may be short), temp files for write-then-rename, and directory fsync
(what makes a rename durable)."""

from __future__ import annotations

import os


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``os.pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` at the file position."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_file(path: str, data: bytes | memoryview, fsync: bool = True, mode: int = 0o644) -> None:
    """Create (or truncate) ``path`` with ``data``, fsync'ed unless told otherwise; a failed
    write leaves no file behind.  Callers rename it into place."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        write_all(fd, data)
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def fsync_dir(path: str) -> None:
    """fsync a directory, so the names created or renamed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
