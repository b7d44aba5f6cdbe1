"""Drafts in the mount: every filesystem operation under ``drafts/``, with no FUSE in it.

``drafts/``, ``drafts/PROJECT/`` and ``drafts/PROJECT/NAME/`` hold only drafts (``mkdir``
makes them; ``mkdir`` in ``drafts/P/N/`` creates a draft on ``latest``; ``rmdir`` of an empty
draft, the end of ``rm -r``, discards it).  Inside a draft every call goes to
:class:`~artifactfs.drafts.draft.Draft` (docs/drafts.md has the table); this module adds what
the kernel needs: inodes, attributes, permissions, and keeping the trio thread free.  Open
files (reads, write-behind, fsync, release) are in ``drafts/files.py``.

What is subtle:

* Inodes.  A draft inode is keyed on the draft object's nonce plus the node's ``Info.ident``,
  which survives renames and copy-up.  It keeps its parent inode and name (``DNode``), updated
  on rename, so the path of a moved directory's children follows by itself.  Unlinked and
  replaced inodes are marked ``gone``; their open handles keep working (``fstat`` answers
  ``getattr``).  A readdir entry that is new to the table is checked against the draft first,
  so a name that moved since opendir can not give an inode a wrong path.
* Permissions.  The mount does not use ``default_permissions`` (versions must answer EROFS,
  not EACCES), so the kernel asks us: the names right below a draft's root get a zero entry
  timeout, which makes every path walk into a draft ask ``lookup`` with the caller's uid, and
  every call on a draft inode checks the uid (the owner or root) and the owner's rights on the
  project against the current config and groups (``drafts/rights.py``: a user who left the
  writers loses his drafts; they stay for root).  Reads and writes of an open draft file ask
  again.
  ``drafts/P/`` of a restricted project answers a non-reader like ``MOUNT/P/`` (EACCES on
  lookups, listings, mkdir; its artifact levels get a zero entry timeout like ``MOUNT/P/N``),
  and ``drafts/P/N/`` lists only the caller's draft ids (root's: all).
* The trio thread.  Draft calls run inline: they are dictionary walks plus one ``write`` to
  the journal.  A base node missing from the manifest cache raises ``NeedNode``; it is loaded
  in a worker thread and the call is made again (every draft call is safe to repeat up to its
  first change).  Copy-up, truncation, fsync, listing a directory, creating and discarding
  drafts and journal compaction run in worker threads.
* Kernel caches: names and attributes inside a draft are kept by the kernel for a minute
  (:data:`INSIDE_TTL`; a second for the levels and the draft itself, and for a directory
  whose ``nlink`` is not known yet), never ``keep_cache`` (their bytes change).  Only this
  daemon changes a draft, and every change inside one is a request the kernel sees and
  updates its caches for (a create, rename, unlink or setattr, a write's size and mtime);
  what changes over the control channel (commit, upsert, discard) invalidates the draft's
  entry (:meth:`DraftOps.draft_gone`).  A repeated ``rsync`` then stats from the kernel's
  caches instead of one ``lookup`` a file.  That invalidation is asynchronous, so a client
  can reach the old draft's inode through the kernel's entry just after the reply: calls on an
  inode of a retired draft answer ESTALE, on which the kernel walks the path again with a
  fresh ``lookup`` (and finds a draft made again under the same name).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import pwd
import stat
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from ..catalog import Catalog, parse_iso
from ..errors import IntegrityError, NotFound, ReadOnly
from ..mount.cache import name_bytes
from ..mount.draftport import DRAFT_TTL, LEVELS, Host, MayWrite, Stat
from ..mount.inodes import Inode, Kind, ident
from ..names import check_name, check_project
from .area import DraftArea
from .draft import Draft, Info
from .files import DDirHandle, DHandle, DNode, NeedNode, oserror
from .rights import DraftRights

log = logging.getLogger(__name__)
INSIDE_TTL = 60.0  # kernel timeout of names inside a draft: only this daemon changes them
FILE_BLKSIZE = 1 << 20  # st_blksize of draft files: cp and friends then write 1 MiB at once
INSIDE = (Kind.DDIR, Kind.DFILE, Kind.DLINK)
_KIND = {"dir": Kind.DDIR, "file": Kind.DFILE, "symlink": Kind.DLINK}
_FILE, _DIR, _LINK = stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK | 0o777
_LEVEL_MODE = stat.S_IFDIR | 0o1777  # anyone may make drafts here; a draft itself is 0700
T = TypeVar("T")


def _identity(d: Draft, node_ident: bytes) -> bytes:
    return hashlib.blake2b(d.nonce + node_ident, digest_size=16).digest()


def _name(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


class DraftOps(DraftRights):
    """The ``drafts/`` side of a :class:`~artifactfs.mount.namespace.Namespace` (its :class:`~artifactfs.mount.draftport.Drafts`)."""

    def __init__(self, ns: Host, area: DraftArea | None, catalog: Catalog,
                 may_write: MayWrite | None = None) -> None:
        super().__init__(ns, may_write)
        self.area, self.catalog = area, catalog
        self.dirs: dict[int, DDirHandle] = {}
        self._compacting: set[Draft] = set()
        self._sparing: set[Draft] = set()  # drafts making spare staging files
        self._gids: dict[int, int] = {}
        self._created: dict[Draft, int] = {}
        # Other users reach the mount (allow_other): every walk into a draft must ask lookup
        # with the walker's uid, so the names right below a draft's root are never cached.
        self.guard_walks = True

    # --- plumbing ------------------------------------------------------------------------------
    async def _call(self, d: Draft, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the trio thread, loading base nodes it misses in worker threads."""
        d.defer_compact = True
        for _ in range(256):
            try:
                out = fn(*args)
            except NeedNode as e:
                await self.ns._load_table(e.oid)
                continue
            if d.compact_due and d not in self._compacting:
                self._compacting.add(d)
                trio.lowlevel.spawn_system_task(self._compact, d)
            if d.spares_due and d not in self._sparing:
                self._sparing.add(d)
                trio.lowlevel.spawn_system_task(self._make_spares, d)
            return out
        raise IntegrityError("draft call needed too many tree nodes")

    async def _compact(self, d: Draft) -> None:
        try:
            await self._thread(d.compact)
        except Exception as e:  # the draft was discarded meanwhile, or the disk is full
            log.warning("could not compact draft %s: %s", d.label, e)
        finally:
            self._compacting.discard(d)

    async def _make_spares(self, d: Draft) -> None:
        try:
            await self._thread(d.make_spares)
        except Exception as e:  # a full disk: create() makes its files itself
            log.warning("could not make staging files for draft %s: %s", d.label, e)
        finally:
            self._sparing.discard(d)

    def _area(self) -> DraftArea:
        if self.area is None:
            raise ReadOnly("drafts are not available on this mount")
        return self.area

    def _inside(self, ino: int, what: str) -> Inode:
        """The inode of a write operation: a draft's, else EROFS (versions) or EPERM."""
        n = self.ns.node(ino)
        if n.kind in INSIDE:
            return n
        if n.kind in LEVELS and self.area is not None:
            raise oserror(errno.EPERM, f"{what}: drafts/ holds only drafts (mkdir one)")
        self.ns.check_write(ino, what)

    def _where(self, n: Inode, uid: int) -> tuple[Draft, str]:
        """The draft and path of an inode inside a draft, for the caller ``uid``."""
        dn: DNode = n.d
        d = dn.draft
        d.check_access(uid)
        self._rights(d.meta.project, uid)
        if d.retired:  # the kernel kept an entry of a draft committed or discarded meanwhile:
            raise oserror(errno.ESTALE)  # it walks the path again, asking lookup (new draft)
        if dn.gone:
            raise oserror(errno.ENOENT)
        parts = []
        while dn.parent is not None:
            parts.append(dn.name)
            dn = dn.parent.d
        return d, "/".join(reversed(parts))

    def _dir(self, ino: int, uid: int, what: str) -> tuple[Draft, str, Inode]:
        p = self._inside(ino, what)
        if p.kind != Kind.DDIR:
            raise oserror(errno.ENOTDIR)
        d, path = self._where(p, uid)
        return d, path, p

    def _intern(self, d: Draft, info: Info, parent: Inode | None, name: str) -> Inode:
        """The inode of a node just found at ``parent/name`` (its place is updated)."""
        n, _ = self.ns.inodes.intern(_identity(d, info.ident), _KIND[info.kind])
        if n.d is None:
            n.d = DNode(d, parent, name)
        else:
            n.d.parent, n.d.name, n.d.gone = parent, name, False
        if info.local is not None:
            n.d.local = info.local
        return n

    def _find(self, d: Draft, node_ident: bytes | None) -> Inode | None:
        """The live inode of a draft node (by :attr:`Info.ident`, or :meth:`Draft.ident`)."""
        return None if node_ident is None else self.ns.inodes.find(_identity(d, node_ident))

    def _gid(self, uid: int) -> int:
        gid = self._gids.get(uid)
        if gid is None:
            try:
                gid = pwd.getpwuid(uid).pw_gid
            except KeyError:
                gid = self.ns.gid
            self._gids[uid] = gid
        return gid

    def _created_ns(self, d: Draft) -> int:
        t = self._created.get(d)
        if t is None:
            t = self._created[d] = int(parse_iso(d.meta.created_at).timestamp() * 1e9)
        return t

    def _attrs(self, n: Inode, d: Draft, info: Info) -> Any:
        dn: DNode = n.d
        perm = info.mode
        kind = info.kind
        if kind == "file":
            mode = _FILE | (perm if perm is not None else 0o755 if info.executable else 0o644)
        elif kind == "dir":
            mode = _DIR | (perm if perm is not None else 0o700 if dn.parent is None else 0o755)
        else:
            mode = _LINK
        parent = dn.parent
        if parent is None:  # the draft itself: commit and discard come over the control channel
            entry = attr = DRAFT_TTL
        else:
            entry = 0.0 if self.guard_walks and parent.d.parent is None else INSIDE_TTL
            attr = DRAFT_TTL if kind == "dir" and info.nlink == 1 else INSIDE_TTL  # nlink unknown
        owner = d.meta.owner
        mtime = info.mtime_ns or self._created_ns(d)
        return self.ns.make_attrs(Stat(n.ino, mode, info.size, mtime, entry, attr, info.nlink,
                                       uid=owner, gid=self._gid(owner),
                                       blksize=FILE_BLKSIZE if kind == "file" else 0,
                                       ctime_ns=max(info.ctime_ns, mtime)))

    def level_stat_mode(self) -> int:
        return _LEVEL_MODE if self.area is not None else stat.S_IFDIR | 0o555

    def _level(self, kind: Kind, project: str, name: str = "") -> Inode:
        idt = ident("dp", project) if kind == Kind.DRAFT_PROJECT else ident("dn", project, name)
        n, new = self.ns.inodes.intern(idt, kind)
        if new:
            n.project, n.name = project, name
        return n

    # --- looking things up ---------------------------------------------------------------
    async def lookup(self, p: Inode, name: bytes, uid: int) -> Any:
        """The attributes of ``p/name`` (one kernel lookup), for a ``drafts/`` inode ``p``.

        A name a draft does not have is answered as a cached absence (``st_ino`` 0, the
        entry timeout of the name's place): only this mount changes a draft, and the kernel
        replaces the absence itself when it creates or renames something there."""
        try:
            child, d, info = await self._lookup(p, _name(name), uid)
        except FileNotFoundError:
            if p.kind != Kind.DDIR:
                raise
            return self.ns.make_attrs(Stat(0, entry_timeout=0.0 if self.guard_walks and
                                           p.d.parent is None else INSIDE_TTL))
        child.lookups += 1
        return self._attrs(child, d, info) if d is not None and info is not None \
            else self.ns.attrs(child)

    async def _known(self, listing: str, name: str) -> bool:
        """Is ``name`` a project (``projects``) or an artifact (``collections:P``) of the
        store?  Then ``drafts/P/`` and ``drafts/P/N/`` exist without a ``mkdir``, so that
        ``mkdir drafts/P/N/D`` alone makes a draft of an existing artifact (SPEC §4)."""
        try:
            return name in (await self.ns.lists.names(listing)).members
        except Exception:
            return False

    @staticmethod
    def _children(area: DraftArea, project: str, name: str | None = None) -> list[str]:
        """Drafts (or artifact names with drafts) below a level; none for a level that exists
        only because the store has that project or artifact."""
        try:
            return area.children(project, name)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
            return []

    async def _lookup(self, p: Inode, s: str, uid: int
                      ) -> tuple[Inode, Draft | None, Info | None]:
        area = self.area
        if p.kind in LEVELS:
            if area is None:
                raise oserror(errno.ENOENT)
            if p.kind == Kind.DRAFTS:
                if s not in area.children() and not await self._known("projects", s):
                    raise oserror(errno.ENOENT)
                return self._level(Kind.DRAFT_PROJECT, s), None, None
            self._readable(p.project, uid)
            if p.kind == Kind.DRAFT_PROJECT:
                if s not in self._children(area, p.project) and \
                        not await self._known(f"collections:{p.project}", s):
                    raise oserror(errno.ENOENT)
                return self._level(Kind.DRAFT_NAME, p.project, s), None, None
            try:
                d = area.get(p.project, p.name, s)
            except NotFound:
                raise oserror(errno.ENOENT) from None
            info = await self._call(d, d.stat, "")
            return self._intern(d, info, None, ""), d, info
        if p.kind != Kind.DDIR:
            raise oserror(errno.ENOTDIR)
        d, path = self._where(p, uid)
        found = await self._call(d, d.lookup, _join(path, s))
        if found is None:
            raise oserror(errno.ENOENT)
        n = self._intern(d, found, p, s)
        if n.d.pending:  # its size is not final yet
            await self._settle(n)
            found = await self._call(d, d.stat, _join(path, s))
        return n, d, found

    async def getattr(self, n: Inode, uid: int) -> Any:
        if n.kind in LEVELS:
            return self.ns.attrs(n)
        await self._settle(n)
        dn: DNode = n.d
        d = dn.draft
        if dn.gone or (d.retired and dn.handles):  # fstat of an open file: its own attributes
            return self._gone_attrs(n, d)
        if dn.parent is not None:
            d.check_access(uid)
            self._rights(d.meta.project, uid)
        d, path = self._where(n, 0)
        return self._attrs(n, d, await self._call(d, d.stat, path))

    def _gone_attrs(self, n: Inode, d: Draft) -> Any:
        """``fstat`` of an unlinked file that is still open."""
        for fh in n.d.handles:
            h = self.handles.get(fh)
            if h is not None:
                st = os.fstat(h.fd)
                info = Info("file", b"", st.st_size, st.st_mtime_ns, bool(st.st_mode & 0o100))
                return self._attrs(n, d, info)
            base = self.ns.files.get(fh)
            if base is not None:
                e = base.entry
                return self._attrs(n, d, Info("file", b"", e.size, e.mtime_ns, e.executable))
        raise oserror(errno.ENOENT)

    async def readlink(self, n: Inode, uid: int) -> bytes:
        d, path = self._where(n, uid)
        target = await self._call(d, d.readlink, path)
        return target.encode("utf-8", "surrogateescape")

    def access(self, n: Inode, mode: int, uid: int) -> None:
        if n.kind in INSIDE:
            self._where(n, uid)
        elif n.kind in (Kind.DRAFT_PROJECT, Kind.DRAFT_NAME):
            self._readable(n.project, uid)
        elif self.area is None and mode & os.W_OK:
            self.ns.check_write(n.ino, "access")

    async def xattrs(self, n: Inode, uid: int) -> dict[str, str]:
        if n.kind != Kind.DFILE:
            return {}
        d, path = self._where(n, uid)
        e = (await self._call(d, d.stat, path)).entry
        if e is None:
            return {}
        if e.kind == "ref" and e.ref is not None:
            return {"digest": e.ref.sha256 or e.ref.etag or e.digest, "ref": e.ref.uri}
        return {"digest": e.digest}

    # --- directories -----------------------------------------------------------------------
    async def opendir(self, n: Inode, uid: int) -> int:
        snap: list[tuple[bytes, Info | None]] | None
        if n.kind in LEVELS:
            snap = [(name_bytes(s), None) for s in self._level_names(n, uid)]
        elif n.kind == Kind.DDIR:
            self._where(n, uid)  # the caller's rights now; the first readdir lists it
            snap = None  # (sqlite opens the directory only to fsync it, every transaction)
        else:
            raise oserror(errno.ENOTDIR)
        fh = next(self._fh)
        self.dirs[fh] = DDirHandle(n, snap)
        return fh

    def _level_names(self, n: Inode, uid: int) -> list[str]:
        """What ``ls`` of ``drafts/``, ``drafts/P/`` or ``drafts/P/N/`` shows ``uid``."""
        area = self.area
        if area is None:
            return []
        if n.kind == Kind.DRAFTS:
            return area.children()
        self._readable(n.project, uid)
        if n.kind == Kind.DRAFT_PROJECT:
            return self._children(area, n.project)
        ids = self._children(area, n.project, n.name)
        return ids if uid == 0 else [i for i in ids if self._owner(n, i) == uid]

    def _owner(self, n: Inode, draft_id: str) -> int | None:
        try:
            return self._area().get(n.project, n.name, draft_id).meta.owner
        except NotFound:
            return None

    async def readdir(self, fh: int, start: int, reply: Callable[[bytes, Any, int], bool]
                      ) -> None:
        h = self.dirs[fh]
        p = h.node
        d, path = (None, "") if p.kind != Kind.DDIR else self._where(p, 0)
        if h.snapshot is None:
            assert d is not None
            listing = await self._thread(d.listdir, path)
            h.snapshot = [(name_bytes(s), info) for s, info in listing]
        snapshot = h.snapshot
        for i in range(start, len(snapshot)):
            name, info = snapshot[i]
            try:
                if d is None:
                    child, cd, cinfo = await self._lookup(p, _name(name), 0)
                else:
                    assert info is not None
                    child, cd, cinfo = self._listed(d, path, p, _name(name), info), d, info
                    if child.d.handles and info.kind == "file":  # being written: fresh size
                        await self._settle(child)
                        cinfo = d.stat(_join(path, _name(name)))
            except (OSError, NotFound, NeedNode):
                continue  # gone since opendir
            attrs = self._attrs(child, cd, cinfo) if cd is not None and cinfo is not None \
                else self.ns.attrs(child)
            if not reply(name, attrs, i + 1):
                self.ns.inodes.drop_if_unused(child)
                return
            child.lookups += 1

    def _listed(self, d: Draft, path: str, p: Inode, s: str, info: Info) -> Inode:
        """The inode of a listed entry; one new to the table must still be where listed."""
        n = self._find(d, info.ident)
        if n is not None:
            return n
        cur = d.lookup(_join(path, s))
        if cur is None or cur.ident != info.ident:
            raise oserror(errno.ENOENT)
        return self._intern(d, cur, p, s)

    def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    async def fsyncdir(self, fh: int) -> None:
        h = self.dirs.get(fh)
        if h is not None and h.node.kind == Kind.DDIR and h.node.d.draft.sync_due():
            await self._thread(h.node.d.draft.sync)

    # --- files -----------------------------------------------------------------------------
    async def open(self, n: Inode, flags: int, uid: int) -> int:
        if n.kind != Kind.DFILE:
            raise oserror(errno.EISDIR if n.kind in (Kind.DDIR, *LEVELS) else errno.ELOOP)
        d, path = self._where(n, uid)
        await self._settle(n)
        fh = next(self._fh)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            trunc = bool(flags & os.O_TRUNC)
            if await self._call(d, d.needs_copy_up, path, trunc):
                local = await self._thread(d.open_for_write, path, trunc, limiter=self.copies)
            else:
                local = await self._call(d, d.open_for_write, path, trunc)
            try:
                fd = os.open(local, os.O_RDWR | os.O_CLOEXEC)
            except BaseException:
                d.release(local)
                raise
            self.handles[fh] = DHandle(fd, local, n, d)
            self.openers[fh] = uid
            n.d.handles.add(fh)
            self._staged(n, d, local)
            return fh
        info = await self._call(d, d.stat, path)
        if info.local is not None:
            self.handles[fh] = DHandle(os.open(info.local, os.O_RDONLY | os.O_CLOEXEC), None,
                                       n, d)
            self.openers[fh] = uid
        else:
            assert info.entry is not None
            self.ns.files[fh] = await self.ns.file_handle(info.entry, uid)
            self.base_handles[fh] = n
        n.d.handles.add(fh)
        return fh

    # --- changes ---------------------------------------------------------------------------
    async def create(self, ino: int, name: bytes, mode: int, flags: int, uid: int
                     ) -> tuple[int, Any]:
        d, ppath, p = self._dir(ino, uid, "create")
        s = _name(name)
        path = _join(ppath, s)
        local = await self._call(d, d.create, path, bool(mode & 0o111), mode)
        try:
            fd = os.open(local, os.O_RDWR | os.O_CLOEXEC)
        except BaseException:
            d.release(local)
            raise
        info = d.stat(path)
        n = self._intern(d, info, p, s)
        fh = next(self._fh)
        self.handles[fh] = DHandle(fd, local, n, d)
        self.openers[fh] = uid
        n.d.handles.add(fh)
        n.lookups += 1
        return fh, self._attrs(n, d, info)

    async def mkdir(self, ino: int, name: bytes, mode: int, uid: int) -> Any:
        p = self.ns.node(ino)
        s = _name(name)
        if p.kind in LEVELS and self.area is not None:
            child, d, info = await self._make_level(p, s, uid)
        else:
            d, ppath, p = self._dir(ino, uid, "mkdir")
            await self._call(d, d.mkdir, _join(ppath, s), mode)
            info = d.stat(_join(ppath, s))
            child = self._intern(d, info, p, s)
        child.lookups += 1
        return self._attrs(child, d, info) if d is not None and info is not None \
            else self.ns.attrs(child)

    async def _make_level(self, p: Inode, s: str, uid: int
                          ) -> tuple[Inode, Draft | None, Info | None]:
        area = self._area()
        project = check_project(s) if p.kind == Kind.DRAFTS else p.project
        self._readable(project, uid)
        self._rights(project, uid, "create drafts in")
        if p.kind == Kind.DRAFTS:
            area.make_dir(s)
            return self._level(Kind.DRAFT_PROJECT, s), None, None
        if p.kind == Kind.DRAFT_PROJECT:
            area.make_dir(p.project, s)
            return self._level(Kind.DRAFT_NAME, p.project, s), None, None
        check_name(s, "draft id")
        name = p.name

        def make() -> tuple[Draft, Info]:
            d = area.create(project, name, s, uid, self.catalog.latest(project, name))
            return d, d.stat("")

        d, info = await self._thread(make)
        return self._intern(d, info, None, ""), d, info

    async def mknod(self, ino: int, name: bytes, mode: int, uid: int) -> Any:
        d, ppath, p = self._dir(ino, uid, "mknod")
        if not stat.S_ISREG(mode):
            raise oserror(errno.EPERM, "drafts hold only files, directories and symlinks")
        s = _name(name)
        path = _join(ppath, s)
        d.release(await self._call(d, d.create, path, bool(mode & 0o111), mode))
        info = d.stat(path)
        n = self._intern(d, info, p, s)
        n.lookups += 1
        return self._attrs(n, d, info)

    async def symlink(self, ino: int, name: bytes, target: bytes, uid: int) -> Any:
        d, ppath, p = self._dir(ino, uid, "symlink")
        s = _name(name)
        path = _join(ppath, s)
        await self._call(d, d.symlink, path, target.decode("utf-8", "surrogateescape"))
        info = d.stat(path)
        n = self._intern(d, info, p, s)
        n.lookups += 1
        return self._attrs(n, d, info)

    async def unlink(self, ino: int, name: bytes, uid: int) -> None:
        p = self.ns.node(ino)
        if p.kind in LEVELS and self.area is not None:
            await self._lookup(p, _name(name), uid)  # ENOENT, or
            raise oserror(errno.EISDIR)
        d, ppath, _ = self._dir(ino, uid, "unlink")
        path = _join(ppath, _name(name))
        old = await self._call(d, d.ident, path)
        await self._call(d, d.unlink, path)
        self._gone(d, old)

    def _gone(self, d: Draft, node_ident: bytes | None) -> None:
        n = self._find(d, node_ident)
        if n is not None:
            n.d.gone = True

    async def rmdir(self, ino: int, name: bytes, uid: int) -> None:
        p = self.ns.node(ino)
        s = _name(name)
        if p.kind in LEVELS and self.area is not None:
            await self._remove_level(p, s, uid)
            return
        d, ppath, _ = self._dir(ino, uid, "rmdir")
        path = _join(ppath, s)
        old = await self._call(d, d.ident, path)
        await self._call(d, d.rmdir, path)
        self._gone(d, old)

    async def _remove_level(self, p: Inode, s: str, uid: int) -> None:
        area = self._area()
        project = check_project(s) if p.kind == Kind.DRAFTS else p.project
        self._readable(project, uid)
        self._rights(project, uid)
        if p.kind == Kind.DRAFTS:
            area.remove_dir(s)
            return
        if p.kind == Kind.DRAFT_PROJECT:
            check_name(s, "artifact name")
            area.remove_dir(p.project, s)
            return
        try:
            d = area.get(p.project, p.name, s)
        except NotFound:
            raise oserror(errno.ENOENT) from None
        d.check_access(uid)
        if d.frozen:
            raise oserror(errno.EBUSY, f"draft {d.label} is being committed")
        if not await self._call(d, d.is_empty, ""):
            raise oserror(errno.ENOTEMPTY)
        root = self.ns.inodes.find(_identity(d, d.stat("").ident))
        await self._thread(area.discard, d)
        if root is not None:
            root.d.gone = True

    async def rename(self, ino1: int, name1: bytes, ino2: int, name2: bytes, flags: int,
                     uid: int) -> None:
        p1, p2 = self.ns.node(ino1), self.ns.node(ino2)
        for p in (p1, p2):
            if p.kind not in INSIDE and (p.kind not in LEVELS or self.area is None):
                self.ns.check_write(p.ino, "rename")
        if p1.kind in LEVELS or p2.kind in LEVELS:
            raise oserror(errno.EPERM, "drafts can not be renamed")
        d, path1, _ = self._dir(ino1, uid, "rename")
        d2, path2, _ = self._dir(ino2, uid, "rename")
        if d is not d2:
            raise oserror(errno.EXDEV)
        s1, s2 = _name(name1), _name(name2)
        src, dst = _join(path1, s1), _join(path2, s2)
        if flags & ~3:  # RENAME_WHITEOUT (an overlayfs feature) and anything unknown
            raise oserror(errno.EINVAL, "rename: only RENAME_NOREPLACE and RENAME_EXCHANGE")
        exchange = bool(flags & 2)  # RENAME_EXCHANGE
        s_ident = await self._call(d, d.ident, src)
        t_ident = await self._call(d, d.ident, dst)
        await self._call(d, d.rename, src, dst, bool(flags & 1), exchange)
        s_node, t_node = self._find(d, s_ident), self._find(d, t_ident)
        if t_node is not None and t_node is not s_node:
            if exchange:
                t_node.d.parent, t_node.d.name = p1, s1
            else:
                t_node.d.gone = True
        if s_node is not None:
            s_node.d.parent, s_node.d.name = p2, s2

    async def link(self, ino: int, new_parent: int, name: bytes, uid: int) -> Any:
        """link(2) inside one draft makes a copy-on-write copy (:meth:`Draft.link`); from a
        version or another draft it is EXDEV, so tools fall back to copying."""
        d2, ppath, p = self._dir(new_parent, uid, "link")
        n = self.ns.node(ino)
        if n.kind not in INSIDE:
            raise oserror(errno.EXDEV)
        d, src = self._where(n, uid)
        if d is not d2:
            raise oserror(errno.EXDEV)
        await self._settle(n)
        s = _name(name)
        dst = _join(ppath, s)
        if await self._call(d, d.link_copies, src):
            await self._thread(d.link, src, dst, limiter=self.copies)
        else:
            await self._call(d, d.link, src, dst)
        info = d.stat(dst)
        child = self._intern(d, info, p, s)
        child.lookups += 1
        return self._attrs(child, d, info)

    async def setattr(self, ino: int, attr: Any, fields: Any, fh: int | None, uid: int) -> Any:
        n = self.ns.node(ino)
        if n.kind in LEVELS and self.area is not None:
            return self.ns.attrs(n)  # chmod/touch of drafts/ and its levels: nothing kept
        n = self._inside(ino, "setattr")
        await self._settle(n)
        h = self.handles.get(fh) if fh is not None else None
        dn: DNode = n.d
        dn.draft.check_access(uid)
        if dn.gone:  # an unlinked open file: only its bytes can change
            if fields.update_size and h is not None and h.local is not None:
                await self._thread(os.ftruncate, h.fd, attr.st_size)
            return self._gone_attrs(n, dn.draft)
        d, path = self._where(n, uid)
        if fields.update_size:
            if h is not None and h.local is not None and h.node is n:
                await self._thread(os.ftruncate, h.fd, attr.st_size)
            else:
                if await self._call(d, d.needs_copy_up, path, attr.st_size == 0):
                    await self._thread(d.truncate, path, attr.st_size, limiter=self.copies)
                else:
                    await self._call(d, d.truncate, path, attr.st_size)
                local = d.stat(path).local
                if local is not None:
                    self._staged(n, d, local)
        if fields.update_mode:
            await self._call(d, d.chmod, path, bool(attr.st_mode & 0o100), attr.st_mode)
        if fields.update_uid or fields.update_gid:
            await self._call(d, d.chown, path)
        if fields.update_mtime and not await self._call(d, d.utimes, path, attr.st_mtime_ns,
                                                        False):  # a hard link's: copied first
            await self._thread(d.utimes, path, attr.st_mtime_ns, limiter=self.copies)
            local = d.stat(path).local
            if local is not None:
                self._staged(n, d, local)
        return self._attrs(n, d, await self._call(d, d.stat, path))

    async def write_xattr(self, ino: int, what: str) -> None:
        self._inside(ino, what)
        raise oserror(errno.ENOTSUP, "drafts keep no extended attributes")

    # --- the control channel's side ------------------------------------------------------------
    def draft_gone(self, project: str, name: str, draft_id: str) -> None:
        """A draft was committed, upserted or discarded over the control channel: the kernel
        forgets its directory (open files keep working)."""
        parent = self.ns.inodes.find(ident("dn", project, name))
        if parent is not None:
            self.ns.invalidate(parent.ino, name_bytes(draft_id))

    def warm(self) -> None:
        """Worker thread, at start: load every draft (journal replay) off the trio thread."""
        for d in self._area().list():
            try:
                d.stat("")
            except Exception as e:
                log.error("draft %s could not be loaded: %s", d.label, e)
