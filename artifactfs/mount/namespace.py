"""The virtual tree of a mount, and every filesystem operation on it, with no FUSE in it.

    /                       projects (from the store) + drafts/
    PROJECT/                artifacts of the project
    NAME/                   vN/ for each live version; aliases as symlinks (latest -> v7)
    NAME/vN/...             the version's immutable tree (entry tables from the manifest cache)
    drafts/P/N/ID/...       writable drafts: every call under drafts/ goes to ``self.drafts``
                            (a :class:`~.draftport.Drafts`: artifactfs/drafts/ plugged in)

``ops.py`` is a thin FUSE adapter over this class (and, for the calls that only make
sense in drafts, over ``Namespace.drafts``); handler tests drive both directly.

What is subtle:

* Kernel caching follows mutability: a version's content (and a version directory's
  attributes) is immutable, so it gets day-long entry/attr timeouts, negative lookups cached
  as long, and ``keep_cache``; names that can change (projects, artifacts, versions, aliases)
  get ``refresh``-long timeouts, and a refresh that sees a version vanish or an alias move
  invalidates that kernel entry asynchronously.
* Lookup counts: every reply that hands the kernel an entry counts once (see inodes.py);
  readdirplus entries count only when ``readdir_reply`` accepted them.  Files and symlinks
  inside versions are small leaves (inodes.py): ``ls -l`` of a million entries keeps ~210 MB,
  and ``_churn`` gives memory back as listings and forgets go by.
* readdir cookies: virtual directories reply from a snapshot taken at opendir; version
  directories are immutable, so the cookie is the entry's index and a handle remembers where
  the last batch stopped to resume with one B-tree seek.
* Each open file checks, the first time it reads a piece, that the piece's file is still the
  one verified (one ``fstat``, see blobcache.py); reads themselves never check.
* A file handle holds the entry it opened, so a file opened through ``latest`` keeps reading
  its version whatever ``latest`` becomes, and a deleted version's open files keep working.
* The trio thread only does cheap work: LMDB reads and ``pread`` of verified pieces; store
  access, node decoding, LMDB writes and hashing go to worker threads.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NoReturn

import trio

from ..catalog import Catalog, VersionRecord, node_bytes, nodes_bytes
from ..errors import IntegrityError, NotFound, PermissionDenied, ReadOnly
from ..model import CHUNK_SIZE, Entry
from ..names import VERSION_RE
from ..refs import authority
from ..refs.authority import Reader
from ..refs.file import Source
from ..verify import describe
from . import aliasview
from .access import Access
from .blobcache import VERIFIED_MAX, BlobCache, Piece, piece_at, piece_count, piece_keys
from .cache import RAW_DIR, RAW_FILE, RAW_REF, RAW_SYMLINK, ManifestCache, Raw, trim_heap
from .consumers import Consumers
from .draftport import DRAFT_TTL, LEVELS, Drafts, DraftsFactory, Stat
from .inodes import DRAFTS_INO, Inode, InodeTable, Kind, Leaf, VersionInfo, ident
from .listings import ArtifactState, Listings
from .readahead import SMALL_FILE, ReadAhead
from .warmahead import WarmAhead

log = logging.getLogger(__name__)
IMMUTABLE = 86400.0  # seconds the kernel may cache immutable entries and attributes
BATCH = 256  # entries read from LMDB per readdir step
READ_AHEAD_DIRS = 512  # subdirectory tables queued for read-ahead at most
XATTR = "user.artifactfs."
PREFETCH_PIECES = 8  # 64 MiB ahead of a sequential reader
RELEASE_EVERY = 65536  # entries listed, loaded or forgotten between giving memory back

Reply = Callable[[bytes, Any, int], bool]  # (name, attributes, cookie) -> accepted
_FILE = stat.S_IFREG | 0o444
_FILE_X = stat.S_IFREG | 0o555
_LINK = stat.S_IFLNK | 0o777
_DIR = stat.S_IFDIR | 0o555
_KIND = (Kind.FILE, Kind.SYMLINK, Kind.FILE, Kind.DIR)  # by raw entry kind


def _root_ok(rec: VersionRecord) -> str:
    """The manifest key saying a record matches its root (see Namespace._check_root)."""
    return f"root-ok:{rec.root}:{rec.digest}:{rec.size}:{rec.file_count}"


class DirHandle:
    __slots__ = ("node", "resume", "snapshot", "subdirs")

    def __init__(self, node: Inode, snapshot: list[bytes] | None) -> None:
        self.node = node
        self.snapshot = snapshot
        self.resume: tuple[int, bytes] | None = None  # (cookie, name) after the last batch
        self.subdirs: list[str] | None = [] if snapshot is None else None  # for read-ahead


class FileHandle:
    __slots__ = ("checked", "entry", "keys", "last_piece", "next_off", "pi", "piece", "src",
                 "window")

    def __init__(self, entry: Entry, keys: list[str], src: Source | None = None) -> None:
        self.entry = entry
        self.keys = keys
        self.src = src  # a file:// reference, opened with its reader's authority
        self.checked = 0  # bit i: piece i's file identity was checked since this open
        self.next_off = 0
        self.last_piece = -1
        self.pi = -1
        self.piece: Piece | None = None
        self.window = 0  # read-ahead pieces, doubled per sequential piece


def read_ahead(blobs: BlobCache) -> dict[str, int]:
    """How far small files are read ahead (see readahead.py): a remote store wants many
    requests in flight.  A local store's first reads are bound by CPU, not by waiting, so two
    workers verify its files ahead, many per thread hop (warmahead.py), and the reader's
    open takes them from the kernel's caches on the trio thread (BlobCache.start).  Two,
    not one: several readers spread over many directories outrun one worker, and each open
    it has not reached costs a hop of its own; not four: with one reader, more workers only
    take the GIL from the trio thread (docs/mount.md has the numbers)."""
    if blobs.in_place:
        return {"workers": 2, "budget_bytes": 1 << 30, "budget_pieces": VERIFIED_MAX // 2}
    return {"workers": 16, "budget_bytes": min(1 << 30, blobs.max_bytes // 4),
            "budget_pieces": VERIFIED_MAX // 2}  # pieces past the fd table stay verified


class Namespace:
    def __init__(self, catalog: Catalog, manifest: ManifestCache, blobs: BlobCache, *,
                 refresh: float = 10.0, clock: Callable[[], float] = time.time,
                 invalidate: Callable[[int, bytes], None] | None = None,
                 uid: int | None = None, gid: int | None = None, threads: int = 8,
                 drafts: DraftsFactory, access: Access | None = None) -> None:
        self.catalog = catalog
        self.store = catalog.store
        self.manifest = manifest
        self.blobs = blobs
        self.refresh = refresh
        self.inodes = InodeTable(manifest.entry)
        self.limiter = trio.CapacityLimiter(threads)
        self.lists = Listings(catalog, manifest, refresh, clock, self.limiter)
        self.invalidate = invalidate or (lambda parent, name: None)
        self.uid = os.geteuid() if uid is None else uid
        self.gid = os.getegid() if gid is None else gid
        self.started_ns = time.time_ns()
        self._fh = itertools.count(1)
        self.dirs: dict[int, DirHandle] = {}
        self.files: dict[int, FileHandle] = {}
        self._tables: dict[str, trio.Event] = {}
        self._roots_ok: set[VersionInfo] = set()  # versions whose record matches its tree
        self._ahead_loads: set[str] = set()  # tables being loaded by a read-ahead
        self._ahead = trio.CapacityLimiter(4)
        self._ahead_pending = 0
        self._churned = 0
        # ops.py installs its builders of kernel attributes; these defaults serve tests
        self.make_attrs: Callable[[Stat], Any] = lambda s: s
        self.make_content_attrs: Callable[[int, int, int, int], Any] = \
            lambda ino, mode, size, mtime: Stat(ino, mode, size, mtime, IMMUTABLE, IMMUTABLE)
        self._negative: Any = None
        self._scratch = memoryview(bytearray(1 << 20))  # file:// reference reads
        self.drafts: Drafts = drafts(self)  # everything under drafts/ (draftport.py)
        self.ahead = (WarmAhead if blobs.in_place else ReadAhead)(
            blobs, manifest, **read_ahead(blobs))
        self.acl = access
        self.consumers: Consumers | None = None  # lineage from reads (the daemon sets it)

    # --- helpers ---------------------------------------------------------------------------
    def _check_read(self, project: str, uid: int) -> None:
        """SPEC §9: EACCES on a project directory for users outside its ``readers``."""
        if self.acl is not None and not self.acl.may_read(uid, project):
            raise PermissionDenied(f"you may not read project {project}")

    def node(self, ino: int) -> Inode:
        n = self.inodes.get(ino)
        if n is None:
            raise NotFound(f"stale inode {ino}")
        return n

    def stat(self, n: Inode) -> Stat:
        k = n.kind
        if k in (Kind.FILE, Kind.SYMLINK, Kind.DIR):
            raw = n.raw
            assert raw is not None and n.ver is not None
            rk = raw[0]
            if rk == RAW_FILE:
                mode = _FILE_X if raw[4] else _FILE
                return Stat(n.ino, mode, raw[1], raw[5] or n.ver.created_ns, IMMUTABLE, IMMUTABLE)
            if rk == RAW_REF:
                return Stat(n.ino, _FILE, raw[1], raw[3] or n.ver.created_ns, IMMUTABLE, IMMUTABLE)
            if rk == RAW_SYMLINK:
                return Stat(n.ino, _LINK, len(raw[1].encode("utf-8", "surrogateescape")),
                             raw[2] or n.ver.created_ns, IMMUTABLE, IMMUTABLE)
            return Stat(n.ino, _DIR, 0, raw[5] or n.ver.created_ns, IMMUTABLE, IMMUTABLE)
        if k == Kind.VERSION:
            assert n.ver is not None
            return Stat(n.ino, stat.S_IFDIR | 0o555, 0, n.ver.created_ns, self.refresh, IMMUTABLE)
        if k == Kind.ALIAS:
            return Stat(n.ino, stat.S_IFLNK | 0o777, len(n.target), self.started_ns,
                        self.refresh, IMMUTABLE)
        if k in LEVELS:  # drafts/P/N of a restricted project: looked up (checked) every walk
            guarded = k == Kind.DRAFT_NAME and self.acl is not None and \
                self.acl.restricted(n.project)
            return Stat(n.ino, self.drafts.level_stat_mode(), 0, self.started_ns,
                        0.0 if guarded else DRAFT_TTL, DRAFT_TTL)
        if k == Kind.ARTIFACT and self.acl is not None and self.acl.restricted(n.project):
            # every walk below a restricted project's artifacts asks lookup (reader check)
            return Stat(n.ino, stat.S_IFDIR | 0o555, 0, self.started_ns, 0.0, self.refresh)
        return Stat(n.ino, stat.S_IFDIR | 0o555, 0, self.started_ns, self.refresh, self.refresh)

    def attrs(self, n: Inode) -> Any:
        """The kernel attributes of an inode (``make_attrs`` of its Stat), cached where they
        can not change, so listing a big directory twice builds them once."""
        a = n.attrs
        if a is None:
            a = self._content_attrs(n) if n.raw is not None else self.make_attrs(self.stat(n))
            if Kind.VERSION <= n.kind <= Kind.ALIAS:
                n.attrs = a
        return a

    def _content_attrs(self, n: Inode) -> Any:
        """``attrs`` of a directory inside a version, cached on its inode."""
        assert n.raw is not None and n.ver is not None
        a = n.attrs = self._raw_attrs(n.ino, n.raw, n.ver.created_ns)
        return a

    def _raw_attrs(self, ino: int, raw: Raw, created: int) -> Any:
        """The attributes of an entry inside a version, straight from its packed entry (this
        runs once per entry of every directory listed, so no Stat in between)."""
        rk = raw[0]
        if rk == RAW_FILE:
            return self.make_content_attrs(ino, _FILE_X if raw[4] else _FILE, raw[1],
                                           raw[5] or created)
        if rk == RAW_REF:
            return self.make_content_attrs(ino, _FILE, raw[1], raw[3] or created)
        if rk == RAW_SYMLINK:
            return self.make_content_attrs(ino, _LINK,
                                           len(raw[1].encode("utf-8", "surrogateescape")),
                                           raw[2] or created)
        return self.make_content_attrs(ino, _DIR, 0, raw[5] or created)

    def _hand_out(self, n: Inode) -> Any:
        n.lookups += 1
        return self.attrs(n)

    # --- lookup ----------------------------------------------------------------------------
    async def lookup(self, parent: int, name: bytes, uid: int = 0) -> Any:
        """The child's attributes, counted as one kernel lookup; ``st_ino == 0``: a cached
        absence."""
        p = self.node(parent)
        k = p.kind
        if k >= Kind.DRAFT_PROJECT or k == Kind.DRAFTS:
            return await self.drafts.lookup(p, name, uid)
        if k in (Kind.VERSION, Kind.DIR):
            if k == Kind.VERSION:
                await self._check_root(p)
            raw = await self._entry(p.oid, name)
            if raw is None:
                if self._negative is None:
                    self._negative = self.make_attrs(Stat(0, entry_timeout=IMMUTABLE))
                return self._negative
            if raw[0] == RAW_DIR:
                return self._hand_out(self._content(p, name, raw))
            leaf, _ = self.inodes.leaf(p, name, _KIND[raw[0]])
            leaf.lookups += 1
            return self._raw_attrs(leaf.ino, raw, p.ver.created_ns)  # type: ignore[union-attr]
        if k == Kind.PROJECT:
            self._check_read(p.project, uid)
        child = await self._virtual_child(p, name)
        if child is None:
            raise NotFound(f"no such entry {name!r}")
        return self._hand_out(child)

    async def _virtual_child(self, p: Inode, name: bytes) -> Inode | None:
        try:
            s = name.decode()
        except UnicodeDecodeError:
            return None
        if p.kind == Kind.ROOT:
            if s == "drafts":
                return self.inodes.get(DRAFTS_INO)
            listing = await self.lists.names("projects")
            return self._project(s) if s in listing.members else None
        if p.kind == Kind.PROJECT:
            listing = await self.lists.names(f"collections:{p.project}")
            return self._artifact_node(p.project, s) if s in listing.members else None
        if p.kind == Kind.ARTIFACT:
            st = await self._state(p.project, p.name)
            if "@" in s:
                return self._alias_node(st, s, await aliasview.dated(self.catalog, st, s,
                                                                     self.limiter))
            return self._version_child(st, s)
        return None  # files have no children

    def _project(self, project: str) -> Inode:
        n, new = self.inodes.intern(ident("p", project), Kind.PROJECT)
        if new:
            n.project = project
        return n

    def _artifact_node(self, project: str, name: str) -> Inode:
        n, new = self.inodes.intern(ident("a", project, name), Kind.ARTIFACT)
        if new:
            n.project, n.name = project, name
        return n

    def _version_child(self, st: ArtifactState, s: str) -> Inode | None:
        why = st.why_damaged(s)
        if why is not None:  # a damaged record: EIO for it alone (logged when it was read)
            raise IntegrityError(why)
        if VERSION_RE.fullmatch(s):
            v = int(s[1:])
            if v not in st.live:
                return None
            n, new = self.inodes.intern(ident("v", st.project, st.name, s), Kind.VERSION)
            if new:
                n.project, n.name, n.ver = st.project, st.name, st.info(v)
            return n
        return self._alias_node(st, s, aliasview.target(self.catalog, st, s))

    def _alias_node(self, st: ArtifactState, s: str, target: int | None) -> Inode | None:
        if target is None:
            return None
        n, new = self.inodes.intern(ident("l", st.project, st.name, s, str(target)), Kind.ALIAS)
        if new:
            n.project, n.name, n.target = st.project, st.name, f"v{target}"
        return n

    def _content(self, p: Inode, name: bytes, raw: Raw) -> Inode:
        """The inode of a directory inside a version (files and symlinks are leaves)."""
        n, new = self.inodes.child(p.ident, name, Kind.DIR)
        if new:
            n.raw, n.ver, n.dir = raw, p.ver, p.oid
        return n

    async def _state(self, project: str, name: str) -> ArtifactState:
        st, old = await self.lists.artifact(project, name)
        if old is not None:
            self._invalidate_changes(old, st)
        return st

    def _invalidate_changes(self, old: ArtifactState, new: ArtifactState) -> None:
        art = self.inodes.find(ident("a", new.project, new.name))
        if art is None:
            return
        gone = set(old.live) - set(new.live)
        for v in gone:
            self.invalidate(art.ino, f"v{v}".encode())
        now = aliasview.aliases(self.catalog, new)
        for a, v in aliasview.aliases(self.catalog, old).items():
            if now.get(a) != v or v in gone:  # moved, or (pinned) to a version now gone
                self.invalidate(art.ino, a.encode())

    async def refresh_artifact(self, project: str, name: str) -> None:
        """Re-read an artifact now (a local commit, delete or alias change)."""
        self.lists.expire("projects")
        self.lists.expire(f"collections:{project}")
        await self._state_forced(project, name)

    async def _state_forced(self, project: str, name: str) -> None:
        st, old = await self.lists.artifact(project, name, force=True)
        if old is not None:
            self._invalidate_changes(old, st)
        else:  # no state to compare with: the kernel may still know the aliases' old targets
            art = self.inodes.find(ident("a", project, name))
            for a in st.aliases() if art is not None else ():
                self.invalidate(art.ino, a.encode())  # type: ignore[union-attr]

    # --- version trees ---------------------------------------------------------------------
    async def _check_root(self, n: Inode) -> None:
        """Before a version's tree is read: its record's digest and totals must be those of its
        root node (Catalog.check_root); once per version, remembered in the manifest cache."""
        assert n.ver is not None
        if n.ver in self._roots_ok:
            return
        st = self.lists.cached_artifact(n.project, n.name) or \
            await self._state(n.project, n.name)
        rec = st.records.get(n.ver.version)
        if rec is None or rec.root != n.ver.root:
            raise NotFound(f"version {n.project}/{n.name}:v{n.ver.version} is gone")
        if not self.manifest.get_doc(_root_ok(rec)):
            if self.manifest.dir_info(rec.root) is None:
                await self._load_table(rec.root, check=rec)  # checked with the bytes it fetches
            if not self.manifest.get_doc(_root_ok(rec)):
                try:
                    await self.lists._thread(self._verify_root, rec, None)
                except IntegrityError as e:
                    log.error("refusing %s: %s", rec.label, e)
                    raise
        self._roots_ok.add(n.ver)

    def _verify_root(self, rec: VersionRecord, data: bytes | None) -> None:
        """Worker thread: Catalog.check_root, and remember the answer in the manifest."""
        self.catalog.check_root(rec, data)
        self.manifest.put_docs([(_root_ok(rec), True)])

    async def _entry(self, oid: str, name: bytes) -> Raw | None:
        """The packed entry ``name`` of a tree node: one LMDB get when found (a table is
        complete or absent, so a hit needs no check that it was loaded)."""
        raw = self.manifest.entry(oid, name)
        if raw is not None or self.manifest.dir_info(oid) is not None:
            return raw
        await self._load_table(oid)
        return self.manifest.entry(oid, name)

    async def _load_table(self, oid: str, ahead: bool = False,
                          check: VersionRecord | None = None) -> None:
        """Fetch a tree node into the manifest cache, once however many ask at a time.  A
        caller that finds a read-ahead of the node failed loads it itself.  ``check``: the
        version whose root this is (checked against it before it is kept)."""
        while (ev := self._tables.get(oid)) is not None:
            was_ahead = oid in self._ahead_loads
            await ev.wait()
            if self.manifest.dir_info(oid) is not None or ahead:
                return
            if not was_ahead:
                raise IntegrityError(f"tree node {oid} could not be loaded")
        ev = self._tables[oid] = trio.Event()
        try:
            if ahead:
                self._ahead_loads.add(oid)
                with trio.move_on_after(self.lists.timeout):
                    await trio.to_thread.run_sync(self._fetch_table, oid, abandon_on_cancel=True)
            else:
                await self.lists._thread(self._fetch_table, oid, check)
        finally:
            del self._tables[oid]
            self._ahead_loads.discard(oid)
            ev.set()
        info = self.manifest.dir_info(oid)
        if info is not None and info[0] >= BATCH:
            self._churn(info[0])

    def _dirs_ahead(self, oids: list[str]) -> None:
        """Load the tables of subdirectories just listed, in the background: a walk (``find``,
        ``ls -R``, ``rsync``) finds them ready, and their round trips to a remote store overlap
        (a local store is only CPU work under the GIL: no read-ahead).  Four at a time; one
        still waiting for its turn is not registered, so a listing that needs it meanwhile
        loads it itself instead of queueing behind the read-ahead."""
        if self.blobs.in_place:  # a local store: nothing to wait for, so nothing to overlap
            return
        todo = [o for o in oids if o not in self._tables and self.manifest.dir_info(o) is None]
        if todo and self._ahead_pending < READ_AHEAD_DIRS:
            self._ahead_pending += len(todo)
            trio.lowlevel.spawn_system_task(self._ahead_task, todo)

    async def _ahead_task(self, oids: list[str]) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for oid in oids:
                    nursery.start_soon(self._ahead_one, oid)
        finally:
            self._ahead_pending -= len(oids)

    async def _ahead_one(self, oid: str) -> None:
        try:
            async with self._ahead:
                if oid not in self._tables and self.manifest.dir_info(oid) is None:
                    await self._load_table(oid, ahead=True)
        except Exception as e:  # a read-ahead never fails anything; a listing will retry
            log.debug("read-ahead of tree node %s failed: %s", oid, e)

    def _fetch_table(self, oid: str, check: VersionRecord | None = None) -> None:
        """Worker thread: fetch, verify and decode a tree node into the manifest cache."""
        if self.manifest.dir_info(oid) is not None:
            return
        try:
            data = node_bytes(self.store, oid)
            if check is not None:
                self._verify_root(check, data)
            self.manifest.put_node(oid, data, partial(nodes_bytes, self.store))
        except IntegrityError as e:
            log.error("refusing tree node %s: %s", oid, e)
            raise

    # --- attributes, links, xattrs ---------------------------------------------------------
    async def getattr(self, ino: int, uid: int = 0) -> Any:
        n = self.node(ino)
        if n.kind >= Kind.DRAFT_PROJECT:
            return await self.drafts.getattr(n, uid)
        return self.attrs(n)

    async def readlink(self, ino: int, uid: int = 0) -> bytes:
        n = self.node(ino)
        if n.kind == Kind.DLINK:
            return await self.drafts.readlink(n, uid)
        if n.kind == Kind.ALIAS:
            return n.target.encode()
        if n.kind == Kind.SYMLINK:
            return n.entry.target.encode("utf-8", "surrogateescape")
        raise NotFound("not a symbolic link")

    async def _version_xattrs(self, n: Inode) -> dict[str, str]:
        assert n.ver is not None
        st = await self._state(n.project, n.name)
        rec = st.records.get(n.ver.version)
        if rec is None:
            raise NotFound(f"version {n.project}/{n.name}:v{n.ver.version} is gone")
        aliases = [a for a, v in aliasview.aliases(self.catalog, st).items()
                   if v == rec.version]
        aliases.sort(key=lambda a: (a != "latest", a))
        return {"version": rec.label, "type": rec.type, "aliases": ",".join(aliases),
                "description": rec.description,
                "metadata": json.dumps(rec.metadata, sort_keys=True, ensure_ascii=False),
                "digest": rec.digest}

    async def xattrs(self, ino: int, uid: int = 0) -> dict[str, str]:
        n = self.node(ino)
        if n.kind >= Kind.DRAFT_PROJECT:
            return await self.drafts.xattrs(n, uid)
        if n.kind == Kind.VERSION:
            return await self._version_xattrs(n)
        if n.kind == Kind.FILE:  # digest, digest_kind, sha256 if known (see verify.describe)
            e = n.entry
            out = describe(e)
            if e.kind == "ref" and e.ref is not None:
                out["ref"] = e.ref.uri
            return out
        return {}

    async def getxattr(self, ino: int, name: bytes, uid: int = 0) -> bytes | None:
        s = name.decode("utf-8", "surrogateescape")
        if not s.startswith(XATTR):
            return None
        v = (await self.xattrs(ino, uid)).get(s[len(XATTR):])
        return None if v is None else v.encode("utf-8", "surrogateescape")

    async def listxattr(self, ino: int, uid: int = 0) -> list[bytes]:
        return [(XATTR + k).encode() for k in await self.xattrs(ino, uid)]

    # --- directories -----------------------------------------------------------------------
    async def opendir(self, ino: int, uid: int = 0) -> int:
        n = self.node(ino)
        if n.kind >= Kind.DRAFT_PROJECT or n.kind == Kind.DRAFTS:
            return await self.drafts.opendir(n, uid)
        snap: list[bytes] | None = None
        if n.kind == Kind.ROOT:
            snap = [p.encode() for p in (await self.lists.names("projects")).names]
            snap.append(b"drafts")
        elif n.kind == Kind.PROJECT:
            self._check_read(n.project, uid)
            snap = [a.encode() for a in (await self.lists.names(f"collections:{n.project}")).names]
        elif n.kind == Kind.ARTIFACT:
            st = await self._state(n.project, n.name)
            snap = [f"v{v}".encode() for v in st.live]
            snap += [a.encode() for a in aliasview.aliases(self.catalog, st)]
        elif n.kind in (Kind.VERSION, Kind.DIR):
            if n.kind == Kind.VERSION:
                await self._check_root(n)
            if self.manifest.dir_info(n.oid) is None:
                await self._load_table(n.oid)
        else:
            raise NotADirectoryError("not a directory")
        fh = next(self._fh)
        self.dirs[fh] = DirHandle(n, snap)
        return fh

    async def readdir(self, fh: int, start: int, reply: Reply) -> None:
        h = self.dirs.get(fh)
        if h is None:
            await self.drafts.readdir(fh, start, reply)
        elif h.snapshot is not None:
            await self._readdir_virtual(h, start, reply)
        else:
            self._readdir_tree(h, start, reply)

    async def _readdir_virtual(self, h: DirHandle, start: int, reply: Reply) -> None:
        p = h.node
        assert h.snapshot is not None
        for i in range(start, len(h.snapshot)):
            name = h.snapshot[i]
            try:
                child = await self._virtual_child(p, name)
            except IntegrityError:  # damaged since opendir: lookup says EIO, ls skips it
                child = None
            if child is None:  # vanished since opendir
                continue
            if not self._offer(reply, name, child, i + 1):
                return

    def _offer(self, reply: Reply, name: bytes, child: Inode, cookie: int) -> bool:
        if reply(name, self.attrs(child), cookie):
            child.lookups += 1
            return True
        self.inodes.drop_if_unused(child)
        return False

    def _readdir_tree(self, h: DirHandle, start: int, reply: Reply) -> None:
        """The hot loop of ``ls -l`` on big versions: streams the table from LMDB in
        batches, and keeps per entry only what the kernel's count needs (a leaf for a file
        or symlink, whose attributes are built per reply; a directory's are cached on it)."""
        p = h.node
        oid = p.oid
        if start == 0:
            after, cookie = None, 0
        elif h.resume is not None and h.resume[0] == start:
            cookie, after = h.resume
        else:  # a seek elsewhere: count from the beginning
            after, cookie = None, 0
            while cookie < start:
                batch = self.manifest.entries(oid, after, min(BATCH * 8, start - cookie))
                if not batch:
                    return
                after, cookie = batch[-1][0], cookie + len(batch)
        table, pident, ver, content_attrs = self.inodes, p.ident, p.ver, self._content_attrs
        leaf, raw_attrs = table.leaf, self._raw_attrs
        created = ver.created_ns  # type: ignore[union-attr]
        subdirs = h.subdirs
        child: Inode | Leaf
        try:
            while True:
                batch = self.manifest.entries(oid, after, BATCH)
                if not batch:
                    return
                for name, raw in batch:
                    cookie += 1
                    if raw[0] == RAW_DIR:
                        child, new = table.child(pident, name, Kind.DIR)
                        if new:
                            child.raw, child.ver = raw, ver
                        attrs = child.attrs or content_attrs(child)
                    else:
                        child, _ = leaf(p, name, _KIND[raw[0]])
                        attrs = raw_attrs(child.ino, raw, created)
                    if not reply(name, attrs, cookie):
                        self.inodes.drop_if_unused(child)
                        return
                    child.lookups += 1
                    h.resume = (cookie, name)
                    if raw[0] == RAW_DIR and subdirs is not None:
                        subdirs.append(raw[3])
                after = batch[-1][0]
                self._churn(len(batch))
        finally:
            if subdirs:
                self._dirs_ahead(subdirs)
                h.subdirs = []

    def releasedir(self, fh: int) -> None:
        if self.dirs.pop(fh, None) is None:
            self.drafts.releasedir(fh)

    # --- files -----------------------------------------------------------------------------
    async def open(self, ino: int, flags: int, uid: int = 0, pid: int = 0) -> tuple[int, bool]:
        """(handle, keep_cache): version content is immutable, draft content is not."""
        n = self.node(ino)
        if n.kind >= Kind.DRAFT_PROJECT:
            return await self.drafts.open(n, flags, uid), False
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise ReadOnly("read-only: versions can not be changed")
        if n.kind != Kind.FILE:
            if n.kind in (Kind.SYMLINK, Kind.ALIAS):
                raise NotFound("not a regular file")
            raise IsADirectoryError("is a directory")
        h = await self.file_handle(n.entry, uid)
        e = h.entry
        if h.keys and 0 < e.size <= SMALL_FILE and not n.opened:
            # a first open: the kernel has none of its pages, so a read follows at once
            self.inodes.mark_opened(ino)
            key = h.keys[0]
            ready = self.blobs.ready(key)
            known = self.blobs.known(key)  # ready, or verified ahead (or before) on this mount
            if not ready:  # verify it now if cached, else while the kernel sends that read
                self.blobs.start(piece_at(e, 0))
            # a local store's open that had to hash counts as "not ready" (warmahead.py)
            self.ahead.opened(n.dir, key, known if self.blobs.in_place else
                              ready or self.blobs.ready(key))
        fh = next(self._fh)
        self.files[fh] = h
        if self.consumers is not None:
            self.consumers.opened(pid, uid, n.ver)
        return fh, True

    async def file_handle(self, e: Entry, uid: int) -> FileHandle:
        """A reader of a version file's bytes.  A reference is put to the gate for the caller
        on every open (refs/authority.py): a ``file://`` one is read through the descriptor
        opened with his authority, never through the blob cache."""
        src = None
        if e.kind == "ref":
            reader = authority.current() or Reader(uid)
            src = await trio.to_thread.run_sync(self.blobs.gate.open, e, reader,
                                                limiter=self.limiter)
        keys = [] if src is not None else piece_keys(e)
        self.blobs.pin(keys)
        return FileHandle(e, keys, src)

    def close_file(self, h: FileHandle) -> None:
        if h.keys:
            self.blobs.unpin(h.keys)
        if h.src is not None:
            h.src.close()

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        h = self.files.get(fh)
        if h is None:
            return await self.drafts.read(fh, off, size)
        if h.src is not None:  # from the page cache right here, else in a worker thread
            if len(self._scratch) < size:
                self._scratch = memoryview(bytearray(size))
            got = h.src.read_nowait(off, size, self._scratch)  # valid until the next read
            if got is not None:
                return got
            return await trio.to_thread.run_sync(h.src.read, off, size, limiter=self.limiter)
        e = h.entry
        end = min(off + size, e.size)
        if off >= end:
            return b""
        last = (end - 1) // CHUNK_SIZE
        if last != h.last_piece:
            self._read_ahead(h, off == h.next_off, last)
        h.next_off = end
        i = off // CHUNK_SIZE
        if last == i:
            return await self._read_piece(h, i, off, end - off)
        parts: list[bytes | memoryview] = []
        pos = off
        while pos < end:
            j = pos // CHUNK_SIZE
            n = min(end, (j + 1) * CHUNK_SIZE) - pos
            parts.append(bytes(await self._read_piece(h, j, pos, n)))  # views get reused
            pos += n
        return b"".join(parts)

    def _read_ahead(self, h: FileHandle, sequential: bool, last: int) -> None:
        """Like the kernel's readahead: a window of pieces that doubles while reads stay
        sequential, so ``head`` costs one piece and ``cat`` runs PREFETCH_PIECES ahead."""
        h.last_piece = last
        h.window = min(PREFETCH_PIECES, max(1, h.window * 2)) if sequential else 0
        top = min(piece_count(h.entry), last + 1 + h.window)
        if top > last + 1:
            self.blobs.prefetch(piece_at(h.entry, j) for j in range(last + 1, top))

    async def _read_piece(self, h: FileHandle, i: int, off: int, n: int) -> bytes | memoryview:
        if h.pi != i:
            h.pi, h.piece = i, piece_at(h.entry, i)
            if not h.checked >> i & 1:  # verified bytes stay verified: see BlobCache.check
                h.checked |= 1 << i
                self.blobs.check(h.piece.key)
        p = h.piece
        assert p is not None
        for _ in range(4):
            data = await self.blobs.read(p, off - p.offset, n)
            if data is not None:
                return data
            await self.blobs.get(p)
        raise IntegrityError(f"object {p.key} could not be kept ready")

    async def release(self, fh: int) -> None:
        h = self.files.pop(fh, None)
        if h is None:
            await self.drafts.release(fh)
            return
        self.close_file(h)
        if self.drafts.base_handles:
            self.drafts.released_base(fh)

    # --- the rest --------------------------------------------------------------------------
    def forget(self, pairs: list[tuple[int, int]]) -> None:
        for ino, n in pairs:
            self.inodes.forget(ino, n)
        self._churn(len(pairs))

    def _churn(self, n: int) -> None:
        """Count entries listed, loaded or forgotten; after every RELEASE_EVERY of them, give
        memory back: the LMDB pages they touched (still in the page cache) and the C heap's
        free pages.  This is what brings the daemon's RSS back down after ``ls -l`` of a
        million entries was forgotten (and keeps it bounded while listing)."""
        self._churned += n
        if self._churned >= RELEASE_EVERY:
            self._churned = 0
            self.manifest.release_pages()
            trim_heap()

    def check_write(self, ino: int, what: str) -> NoReturn:
        """Modifying operations outside drafts end here: EROFS."""
        n = self.node(ino)
        where = "drafts are not available on this mount" if n.kind == Kind.DRAFTS else \
            "versions are read-only"
        raise ReadOnly(f"{what}: {where}")

    def access(self, ino: int, mode: int, uid: int = 0) -> None:
        n = self.node(ino)
        if n.kind >= Kind.DRAFT_PROJECT or n.kind == Kind.DRAFTS:
            self.drafts.access(n, mode, uid)
            return
        if n.kind == Kind.PROJECT:
            self._check_read(n.project, uid)
        if mode & os.W_OK:
            self.check_write(ino, "access")

    def stats(self) -> dict[str, object]:
        return {"inodes": len(self.inodes),
                "open_files": len(self.files) + len(self.drafts.handles), **self.ahead.stats(),
                "store_ok": self.lists.store_ok, "last_error": self.lists.last_error}
