"""pyfuse3 glue: each handler decodes its arguments, makes one call into the Namespace (or,
for calls that only drafts accept, into ``Namespace.drafts``) and translates the result.

What is subtle: pyfuse3 turns only ``FUSEError`` into an errno; any other exception escaping a
handler would take the whole mount down.  So every handler goes through :func:`_errno`, the
one place that maps exceptions (via ``errors.errno_for``): known errors become their errno, an
unknown exception becomes EIO with its traceback logged.  ``forget`` never raises.  Version
files are opened with ``keep_cache`` (immutable content), draft files without it.  A draft
file opened write-only gets ``direct_io``: the kernel hands the writer's buffer to us without
first copying it into the page cache (``cp`` into a draft runs ~1.7x faster), and such a
handle can not be mmapped anyway; readable handles keep the page cache (shared mmap needs it).  The caller's uid goes with every call
that may touch a draft (SPEC §9: the mount does not use ``default_permissions``); ``open`` and
``setattr``, which may read a reference (a copy-up), also set the caller for
refs/authority.py (SPEC §7).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from ..errors import ArtifactfsError, IntegrityError, StoreUnavailable, errno_for
from ..refs.authority import Reader, reading_for
from .draftport import Stat
from .namespace import IMMUTABLE, Namespace

log = logging.getLogger(__name__)
BLKSIZE = 128 * 1024
P = ParamSpec("P")
R = TypeVar("R")
Ctx = pyfuse3.RequestContext


def _write_only(flags: int) -> bool:
    return flags & os.O_ACCMODE == os.O_WRONLY
Attrs = pyfuse3.EntryAttributes


def _errno(exc: BaseException) -> pyfuse3.FUSEError:
    if isinstance(exc, pyfuse3.FUSEError):
        return exc
    code = errno_for(exc)
    if isinstance(exc, IntegrityError | StoreUnavailable):
        log.error("EIO: %s", exc)
    elif not isinstance(exc, ArtifactfsError | OSError):
        log.exception("internal error, answering EIO")
        code = errno.EIO
    return pyfuse3.FUSEError(code)


def _guard(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except Exception as e:
            raise _errno(e) from None

    return wrapper


def attributes(s: Stat, uid: int, gid: int) -> pyfuse3.EntryAttributes:
    a = pyfuse3.EntryAttributes()
    a.st_ino = s.ino
    a.entry_timeout = s.entry_timeout
    a.attr_timeout = s.attr_timeout
    a.st_mode = s.mode
    a.st_nlink = s.nlink
    a.st_uid = uid if s.uid < 0 else s.uid
    a.st_gid = gid if s.gid < 0 else s.gid
    a.st_size = s.size
    a.st_blksize = s.blksize or BLKSIZE
    a.st_blocks = (s.size + 511) // 512
    a.st_atime_ns = a.st_mtime_ns = s.mtime_ns
    a.st_ctime_ns = s.ctime_ns or s.mtime_ns
    return a


def content_attributes(uid: int, gid: int) -> Callable[[int, int, int, int], Attrs]:
    """A builder of :func:`attributes` for immutable entries inside a version (the readdir
    hot path: one call per entry listed, so a closure with everything bound)."""
    new = pyfuse3.EntryAttributes

    def make(ino: int, mode: int, size: int, mtime_ns: int) -> Attrs:
        a = new()
        a.st_ino = ino
        a.entry_timeout = a.attr_timeout = IMMUTABLE
        a.st_mode = mode
        a.st_nlink = 1
        a.st_uid = uid
        a.st_gid = gid
        a.st_size = size
        a.st_blksize = BLKSIZE
        a.st_blocks = (size + 511) >> 9
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = mtime_ns
        return a

    return make


class Operations(pyfuse3.Operations):  # type: ignore[misc]
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, ns: Namespace) -> None:
        super().__init__()
        self.ns = ns
        ns.make_attrs = functools.partial(attributes, uid=ns.uid, gid=ns.gid)
        ns.make_content_attrs = content_attributes(ns.uid, ns.gid)

    # --- reading the tree ------------------------------------------------------------------
    @_guard
    async def lookup(self, parent_inode: int, name: bytes, ctx: Ctx) -> Attrs:
        attrs: Attrs = await self.ns.lookup(parent_inode, name, ctx.uid)
        return attrs

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        try:
            self.ns.forget(list(inode_list))
        except Exception:
            log.exception("forget failed (ignored)")

    @_guard
    async def getattr(self, inode: int, ctx: Ctx) -> Attrs:
        attrs: Attrs = await self.ns.getattr(inode, ctx.uid)
        return attrs

    @_guard
    async def readlink(self, inode: int, ctx: Ctx) -> bytes:
        return await self.ns.readlink(inode, ctx.uid)

    @_guard
    async def opendir(self, inode: int, ctx: Ctx) -> int:
        return await self.ns.opendir(inode, ctx.uid)

    @_guard
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        def reply(name: bytes, attrs: Attrs, cookie: int) -> bool:
            return pyfuse3.readdir_reply(token, name, attrs, cookie)

        await self.ns.readdir(fh, start_id, reply)

    @_guard
    async def releasedir(self, fh: int) -> None:
        self.ns.releasedir(fh)

    @_guard
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self.ns.drafts.fsyncdir(fh)

    @_guard
    async def open(self, inode: int, flags: int, ctx: Ctx) -> pyfuse3.FileInfo:
        with reading_for(Reader(ctx.uid, ctx.gid)):  # references are read for the caller
            fh, keep = await self.ns.open(inode, flags, ctx.uid, ctx.pid)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep, direct_io=not keep and _write_only(flags))

    async def read(self, fh: int, off: int, size: int) -> bytes:
        try:
            return await self.ns.read(fh, off, size)  # type: ignore[return-value]
        except Exception as e:
            raise _errno(e) from None

    @_guard
    async def release(self, fh: int) -> None:
        await self.ns.release(fh)

    async def flush(self, fh: int) -> None:
        """ENOSYS, so the kernel sends no FLUSH again on this mount: one request less per
        file opened (a tenth of a small file's first read).  Nothing is lost: version files
        have nothing to flush, and drafts report a failed write-behind as a local file
        system reports its writeback (next write or fsync; see drafts/files.py)."""
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def getxattr(self, inode: int, name: bytes, ctx: Ctx) -> bytes:
        if not name.startswith(b"user."):
            # security.capability (asked before every write through the page cache),
            # security.selinux, system.posix_acl_*: a namespace we do not support, answered
            # before anything else.  ENOTSUP (not ENODATA) lets `ls -l` remember that for the
            # whole mount instead of asking twice per file.
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        return await self._user_xattr(inode, name, ctx)

    @_guard
    async def _user_xattr(self, inode: int, name: bytes, ctx: Ctx) -> bytes:
        v = await self.ns.getxattr(inode, name, ctx.uid)
        if v is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return v

    @_guard
    async def listxattr(self, inode: int, ctx: Ctx) -> Sequence[bytes]:
        return await self.ns.listxattr(inode, ctx.uid)

    @_guard
    async def access(self, inode: int, mode: int, ctx: Ctx) -> bool:
        self.ns.access(inode, mode, ctx.uid)
        return True

    @_guard
    async def statfs(self, ctx: Ctx) -> pyfuse3.StatvfsData:
        """The drafts area's file system (where new bytes go; tools check its free space
        before writing), or an empty one for a mount without drafts."""
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = BLKSIZE
        s.f_namemax = 255
        area = self.ns.drafts.area
        if area is not None:
            v = os.statvfs(area.root)
            s.f_bsize, s.f_frsize = v.f_bsize, v.f_frsize
            s.f_blocks, s.f_bfree, s.f_bavail = v.f_blocks, v.f_bfree, v.f_bavail
            s.f_files, s.f_ffree, s.f_favail = v.f_files, v.f_ffree, v.f_favail
        return s

    # --- every change: drafts only (EROFS for versions) ----------------------------------
    @_guard
    async def setattr(self, inode: int, attr: Attrs, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: Ctx) -> Attrs:
        with reading_for(Reader(ctx.uid, ctx.gid)):  # a copy-up reads a reference for him
            attrs: Attrs = await self.ns.drafts.setattr(inode, attr, fields, fh, ctx.uid)
        return attrs

    @_guard
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Ctx) -> Attrs:
        attrs: Attrs = await self.ns.drafts.mknod(parent_inode, name, mode, ctx.uid)
        return attrs

    @_guard
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Ctx) -> Attrs:
        attrs: Attrs = await self.ns.drafts.mkdir(parent_inode, name, mode, ctx.uid)
        return attrs

    @_guard
    async def unlink(self, parent_inode: int, name: bytes, ctx: Ctx) -> None:
        await self.ns.drafts.unlink(parent_inode, name, ctx.uid)

    @_guard
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Ctx) -> None:
        await self.ns.drafts.rmdir(parent_inode, name, ctx.uid)

    @_guard
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: Ctx) -> Attrs:
        attrs: Attrs = await self.ns.drafts.symlink(parent_inode, name, target, ctx.uid)
        return attrs

    @_guard
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Ctx) -> None:
        await self.ns.drafts.rename(parent_inode_old, name_old, parent_inode_new, name_new,
                                    flags, ctx.uid)

    @_guard
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: Ctx) -> Attrs:
        attrs: Attrs = await self.ns.drafts.link(inode, new_parent_inode, new_name, ctx.uid)
        return attrs

    @_guard
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Ctx) -> tuple[pyfuse3.FileInfo, Attrs]:
        fh, attrs = await self.ns.drafts.create(parent_inode, name, mode, flags, ctx.uid)
        return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=_write_only(flags)), attrs

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        drafts = self.ns.drafts
        try:  # a small write is done without a coroutine below this one
            n = drafts.write_now(fh, off, buf)
            return n if n is not None else await drafts.write(fh, off, buf)
        except Exception as e:
            raise _errno(e) from None

    @_guard
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.ns.drafts.fsync(fh, datasync)

    @_guard
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Ctx) -> None:
        await self.ns.drafts.write_xattr(inode, "setxattr")

    @_guard
    async def removexattr(self, inode: int, name: bytes, ctx: Ctx) -> None:
        await self.ns.drafts.write_xattr(inode, "removexattr")
