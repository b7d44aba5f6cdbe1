"""A minimal writable pyfuse3 passthrough: the floor of this stack for metadata-heavy writers.

``python tools/passthrough.py DIRECTORY MOUNTPOINT`` serves DIRECTORY at MOUNTPOINT until
unmounted.  Every request is one system call on the directory (lookup = lstat, create =
open(O_CREAT), write = pwrite, setattr = utime/chmod/chown, rename = rename ...), with the
same kernel-facing choices as artifactfs drafts: one-second entry and attribute timeouts,
cached absences, ``direct_io`` for write-only handles, EOPNOTSUPP for extended attributes
(so the kernel asks ``security.capability`` as it asks us), no ``default_permissions``, no
writeback cache, no ``flush`` handler (ENOSYS: the kernel stops sending FLUSH, as to us).
``tools/bench_commit.py`` times ``tar -x`` and ``rsync -a`` into it next to a draft and the
local disk: what is left between it and the draft is the daemon's own work,
what is left between it and the local disk is pyfuse3, trio and the FUSE round trips.
"""

import errno
import os
import stat
import sys

import pyfuse3
import trio

TTL = 1.0
_STAT_FIELDS = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns",
                "st_mtime_ns", "st_ctime_ns")


class Ops(pyfuse3.Operations):
    def __init__(self, root):
        super().__init__()
        self.paths = {pyfuse3.ROOT_INODE: root}
        self.inos = {root: pyfuse3.ROOT_INODE}
        self.next = pyfuse3.ROOT_INODE + 1

    def _ino(self, path):
        ino = self.inos.get(path)
        if ino is None:
            ino = self.inos[path] = self.next
            self.paths[ino] = path
            self.next += 1
        return ino

    def _attr(self, path):
        st = os.lstat(path)
        a = pyfuse3.EntryAttributes()
        a.st_ino = self._ino(path)
        for k in _STAT_FIELDS:
            setattr(a, k, getattr(st, k))
        a.st_blksize = 1 << 20
        a.st_blocks = (st.st_size + 511) // 512
        a.entry_timeout = a.attr_timeout = TTL
        return a

    def _child(self, parent, name):
        return os.path.join(self.paths[parent], os.fsdecode(name))

    async def lookup(self, parent, name, ctx=None):
        try:
            return self._attr(self._child(parent, name))
        except FileNotFoundError:
            a = pyfuse3.EntryAttributes()
            a.st_ino, a.entry_timeout = 0, TTL  # a cached absence
            return a

    async def getattr(self, ino, ctx=None):
        return self._attr(self.paths[ino])

    async def setattr(self, ino, attr, fields, fh, ctx):
        p = self.paths[ino]
        if fields.update_size:
            os.truncate(p, attr.st_size)
        if fields.update_mode:
            os.chmod(p, stat.S_IMODE(attr.st_mode))
        if fields.update_uid or fields.update_gid:
            os.lchown(p, attr.st_uid if fields.update_uid else -1,
                      attr.st_gid if fields.update_gid else -1)
        if fields.update_mtime or fields.update_atime:
            st = os.lstat(p)
            os.utime(p, ns=(attr.st_atime_ns if fields.update_atime else st.st_atime_ns,
                            attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns),
                     follow_symlinks=False)
        return self._attr(p)

    async def mkdir(self, parent, name, mode, ctx):
        p = self._child(parent, name)
        os.mkdir(p, mode)
        return self._attr(p)

    async def create(self, parent, name, mode, flags, ctx):
        p = self._child(parent, name)
        fd = os.open(p, flags | os.O_CREAT | os.O_CLOEXEC, mode)
        write_only = flags & os.O_ACCMODE == os.O_WRONLY
        return pyfuse3.FileInfo(fh=fd, direct_io=write_only), self._attr(p)

    async def open(self, ino, flags, ctx):
        fd = os.open(self.paths[ino], (flags & ~os.O_CREAT) | os.O_CLOEXEC)
        return pyfuse3.FileInfo(fh=fd, direct_io=flags & os.O_ACCMODE == os.O_WRONLY)

    async def read(self, fh, off, size):
        return os.pread(fh, size, off)

    async def write(self, fh, off, buf):
        return os.pwrite(fh, buf, off)

    async def release(self, fh):
        os.close(fh)

    async def fsync(self, fh, datasync):
        os.fsync(fh)

    async def getxattr(self, ino, name, ctx):
        raise pyfuse3.FUSEError(errno.EOPNOTSUPP)

    async def rename(self, p1, n1, p2, n2, flags, ctx):
        a, b = self._child(p1, n1), self._child(p2, n2)
        os.rename(a, b)
        ino = self.inos.pop(a, None)
        if ino is not None:
            self.paths[ino], self.inos[b] = b, ino

    async def unlink(self, parent, name, ctx):
        os.unlink(self._child(parent, name))

    async def rmdir(self, parent, name, ctx):
        os.rmdir(self._child(parent, name))

    async def symlink(self, parent, name, target, ctx):
        p = self._child(parent, name)
        os.symlink(target, p)
        return self._attr(p)

    async def readlink(self, ino, ctx):
        return os.fsencode(os.readlink(self.paths[ino]))

    async def opendir(self, ino, ctx):
        return ino

    async def readdir(self, fh, off, token):
        p = self.paths[fh]
        names = sorted(os.listdir(p))
        for i, n in enumerate(names[off:], off):
            if not pyfuse3.readdir_reply(token, os.fsencode(n), self._attr(os.path.join(p, n)),
                                         i + 1):
                return

    async def releasedir(self, fh):
        pass

    async def access(self, ino, mode, ctx):
        return True


def main():
    pyfuse3.init(Ops(os.path.abspath(sys.argv[1])), sys.argv[2],
                 {"fsname=minimal-passthrough", "noatime"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
