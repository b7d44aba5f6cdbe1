"""Draft files in the mount: base tree nodes from the manifest cache, what the mount keeps per
draft inode, and open draft files (read, write-behind, fsync, release).  ``drafts/ops.py``
builds on it; docs/drafts.md describes the design.

What is subtle:

* Base nodes come from LMDB (:class:`ManifestNode`: one B-tree lookup per name, so a draft on
  a 50 000-entry directory never decodes the whole node).  A node that is not there raises
  :class:`NeedNode` on the trio thread, where nothing may wait on the store; worker threads
  fetch it themselves.
* Write-behind: a write of :data:`WRITE_BEHIND` bytes or more is replied to at once and
  applied by a worker thread, in order, per file (one queue per inode, whatever the handle),
  so the writer's next request overlaps the copy into the staging file.  Everything that
  observes the file (attributes, reads, truncation, open, fsync, release) first waits for the
  queue (:meth:`DraftFiles._settle`).  ``close`` reports nothing: the mount answers FLUSH with
  ENOSYS (one request less per file opened anywhere in the mount), so, as on a local file
  system, a failed write-behind is reported by the next write or fsync.  ENOSPC is reported
  by the write itself: writes go behind only while the drafts disk has :data:`RESERVE` bytes
  free beyond those queued (measured after every batch, at most a second ago), else they are
  applied before the reply.  A failure no call reported (an I/O error after the last write)
  marks the file's writes as lost in its draft, and the commit refuses the draft until the
  file is written again or removed.  A killed daemon loses replied-to writes that were not
  fsync'ed, exactly like a local file system's page cache.
* A handle reading a file's unchanged base bytes (through the blob cache) is switched to the
  staging file as soon as the file is copied up or truncated, so the kernel's page cache never
  mixes base and new bytes.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
from collections.abc import Callable, ItemsView, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import trio

from ..catalog import node_bytes, nodes_bytes
from ..errors import ReadOnly
from ..fsutil import pwrite_all
from ..model import Entry, Indexer, Loader, Part
from ..mount.cache import ManifestCache, entry_from_raw, name_bytes
from ..mount.draftport import Host
from ..mount.inodes import Inode
from ..store.base import Store
from .draft import Draft, Info

log = logging.getLogger(__name__)
WRITE_BEHIND = 64 << 10  # writes this big are applied by a worker thread after the reply
WRITE_QUEUE = 16  # writes waiting per file before the writer has to wait (16 MiB at 1 MiB)
RESERVE = 256 << 20  # free bytes the drafts disk must keep beyond queued writes for write-behind
MEASURED_FOR = 1.0  # seconds a measure of free space counts
T = TypeVar("T")


def oserror(code: int, what: str = "") -> OSError:
    return OSError(code, os.strerror(code), what) if what else OSError(code, os.strerror(code))


class NeedNode(Exception):
    """A base tree node is not in the manifest cache and this is the trio thread."""

    def __init__(self, oid: str) -> None:
        super().__init__(oid)
        self.oid = oid


class _Items(ItemsView[str, Entry]):
    def __init__(self, node: ManifestNode) -> None:
        super().__init__(node)
        self._node = node

    def __iter__(self) -> Iterator[tuple[str, Entry]]:
        return self._node.scan()


class ManifestNode(Mapping[str, Entry]):
    """A tree node read lazily from the manifest cache: ``get`` is one B-tree lookup, so a
    draft on a 50 000-entry directory never decodes the whole node to find one name."""

    def __init__(self, manifest: ManifestCache, oid: str, count: int) -> None:
        self.manifest, self.oid, self.count = manifest, oid, count

    def __getitem__(self, name: str) -> Entry:
        raw = self.manifest.entry(self.oid, name_bytes(name))
        if raw is None:
            raise KeyError(name)
        return entry_from_raw(raw)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and \
            self.manifest.entry(self.oid, name_bytes(name)) is not None

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.scan())

    def items(self) -> _Items:
        return _Items(self)

    def scan(self) -> Iterator[tuple[str, Entry]]:
        after: bytes | None = None
        while True:
            batch = self.manifest.entries(self.oid, after, 1024)
            for name, raw in batch:
                yield name.decode("utf-8", "surrogateescape"), entry_from_raw(raw)
            if len(batch) < 1024:
                return
            after = batch[-1][0]


def manifest_loader(manifest: ManifestCache, store: Store) -> Loader:
    """The ``load`` of the mount's DraftArea: nodes from LMDB; a miss is fetched (verified)
    in a worker thread, and raises :class:`NeedNode` on the trio thread."""
    def load(oid: str) -> Mapping[str, Entry]:
        info = manifest.dir_info(oid)
        if info is None:
            if trio.lowlevel.in_trio_task():
                raise NeedNode(oid)
            info = manifest.put_node(oid, node_bytes(store, oid), partial(nodes_bytes, store))
        return ManifestNode(manifest, oid, info[0])
    return load


def manifest_dicts(manifest: ManifestCache, fallback: Loader) -> Loader:
    """Whole nodes for the commit engine (``ingest.build_tree``), from the manifest cache when
    it has them: entries that were verified when cached, read back without decoding and
    re-validating the node's JSON again (twice as fast on a 50 000-entry directory)."""
    def load(oid: str) -> Mapping[str, Entry]:
        info = manifest.dir_info(oid)
        if info is None:
            return fallback(oid)
        return dict(ManifestNode(manifest, oid, info[0]).scan())
    return load


def manifest_index(manifest: ManifestCache, fallback: Indexer) -> Indexer:
    """The commit engine's view of split directories: their parts, from the manifest cache when
    it has the node (no store read), else from ``fallback``."""
    def index(oid: str) -> Sequence[Part] | None:
        cached, parts = manifest.index(oid)
        return parts if cached else fallback(oid)
    return index


@dataclass(slots=True, eq=False)
class DNode:
    draft: Draft
    parent: Inode | None  # None: the draft's root
    name: str
    local: str | None = None  # the staging file, once the file has one
    gone: bool = False  # unlinked, replaced by a rename, or removed
    handles: set[int] = field(default_factory=set)
    pending: int = 0  # writes replied to but not yet applied (write-behind)
    idle: trio.Event | None = None  # set when ``pending`` drops to zero
    error: OSError | None = None  # a write-behind failure, reported by the next call
    queue: trio.MemorySendChannel[tuple[int, int, bytes]] | None = None


class DHandle:
    """An open staging file: ``local`` is set for a write handle (``release`` it)."""

    __slots__ = ("draft", "fd", "local", "node")

    def __init__(self, fd: int, local: str | None, node: Inode, draft: Draft) -> None:
        self.fd, self.local, self.node, self.draft = fd, local, node, draft


class DDirHandle:
    """An open directory; ``snapshot`` (None until the first readdir) is what it lists."""

    __slots__ = ("node", "snapshot")

    def __init__(self, node: Inode, snapshot: list[tuple[bytes, Info | None]] | None) -> None:
        self.node, self.snapshot = node, snapshot


def _pwrite_batch(batch: list[tuple[int, int, bytes]]) -> int:
    """Apply writes in order; the bytes then free on their disk (for :data:`RESERVE`)."""
    for fd, off, buf in batch:
        pwrite_all(fd, buf, off)
    st = os.fstatvfs(batch[-1][0])
    return st.f_bavail * st.f_frsize


def _sync_file(fd: int, datasync: bool, draft: Draft) -> None:
    """fsync of a draft file: its bytes, then the draft's tree (a no-op when nothing changed
    in the tree since its last sync, as in sqlite's fsyncs of its database file)."""
    (os.fdatasync if datasync else os.fsync)(fd)
    draft.sync()


def _raise_pending_error(dn: DNode) -> None:
    if dn.error is not None:
        e, dn.error = dn.error, None
        raise e


class DraftFiles:
    """Open files of drafts (the base of :class:`~artifactfs.drafts.ops.DraftOps`)."""

    def __init__(self, ns: Host | None) -> None:
        self.ns: Host = ns  # type: ignore[assignment]
        self.handles: dict[int, DHandle] = {}
        self.base_handles: dict[int, Inode] = {}  # handles in ns.files reading base bytes
        self.io = trio.CapacityLimiter(8)  # fsync, truncate, listings, create/discard
        self.copies = trio.CapacityLimiter(4)  # copy-ups: may take long
        self.writes = trio.CapacityLimiter(4)  # write-behind
        self.writing: set[DNode] = set()  # nodes with writes not yet applied
        self.queued = 0  # bytes replied to and not yet applied, all files
        self.free = 0  # bytes free on the drafts disk when last measured ...
        self.free_at = -MEASURED_FOR  # ... at this trio time
        self._fh: Iterator[int] = ns._fh if ns is not None else itertools.count(1)

    async def _thread(self, fn: Callable[..., T], *args: Any,
                      limiter: trio.CapacityLimiter | None = None) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter or self.io)

    def _staged(self, n: Inode, d: Draft, local: str) -> None:
        """``n`` now lives in ``local``: readers of its base bytes (or of the bytes it shared
        with a hard link) switch to it."""
        n.d.local = local
        for fh in list(n.d.handles):
            reader = self.handles.get(fh)
            if reader is not None and reader.local is None:
                if os.path.samestat(os.fstat(reader.fd), os.stat(local)):
                    continue
                fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)
                os.dup2(fd, reader.fd)  # atomic: a read in flight sees one file or the other
                os.close(fd)
                continue
            h = self.ns.files.pop(fh, None)
            if h is None:
                continue
            del self.base_handles[fh]
            self.ns.close_file(h)
            self.handles[fh] = DHandle(os.open(local, os.O_RDONLY | os.O_CLOEXEC), None, n, d)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self.handles[fh]
        await self._settle(h.node)
        buf = bytearray(size)
        try:
            got = os.preadv(h.fd, [buf], off, os.RWF_NOWAIT)
        except OSError:  # not in the page cache (or no RWF_NOWAIT here): a worker thread
            got = 0
        if got == size:
            return bytes(buf)
        rest = await self._thread(os.pread, h.fd, size - got, off + got)
        return bytes(buf[:got]) + rest

    def write_now(self, fh: int, off: int, buf: bytes) -> int | None:
        """The per-write path of small writes, no coroutine: one ``pwrite`` on the trio thread
        (a worker-thread hand-off costs more than the 4 KiB it would hide).  None when the
        write needs :meth:`write` (big, writes of the file still queued, an error to report,
        not a draft write handle)."""
        h = self.handles.get(fh)
        if h is None or h.local is None or len(buf) >= WRITE_BEHIND:
            return None
        dn: DNode = h.node.d
        if dn.pending or dn.error is not None:
            return None
        return os.pwrite(h.fd, buf, off)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        """Small writes are applied at once; big ones are replied to at once and applied by
        a worker thread (in order, per file), so the writer's next request overlaps the copy
        into the staging file.  Whatever observes the file first waits for them
        (:meth:`_settle`); a failure is reported by the next write or fsync.  A big write is
        applied before the reply when the drafts disk may be nearly full (:data:`RESERVE`),
        so that ENOSPC reaches the writer."""
        h = self.handles.get(fh)
        if h is None:
            raise ReadOnly("write: versions are read-only")  # no other handle is writable
        if h.local is None:
            raise oserror(errno.EBADF)
        dn: DNode = h.node.d
        if dn.error is not None:
            _raise_pending_error(dn)
        if len(buf) < WRITE_BEHIND:  # the per-write path of small writes: no await, no hop
            if dn.pending:
                await self._settle(h.node)
            return os.pwrite(h.fd, buf, off)
        if not self._room(len(buf)):
            await self._settle(h.node)
            await self._apply([(h.fd, off, buf)])
            return len(buf)
        if dn.queue is None:
            send, recv = trio.open_memory_channel[tuple[int, int, bytes]](WRITE_QUEUE)
            dn.queue = send
            trio.lowlevel.spawn_system_task(self._write_behind, dn, recv)
        if not dn.pending:
            dn.idle = trio.Event()
            self.writing.add(dn)
        dn.pending += 1
        self.queued += len(buf)
        try:
            dn.queue.send_nowait((h.fd, off, buf))  # no schedule point when there is room
        except trio.WouldBlock:
            await dn.queue.send((h.fd, off, buf))
        return len(buf)

    async def _write_behind(self, dn: DNode,
                            recv: trio.MemoryReceiveChannel[tuple[int, int, bytes]]) -> None:
        async with recv:
            async for item in recv:
                batch = [item]
                while len(batch) < WRITE_QUEUE:
                    try:
                        batch.append(recv.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                try:
                    if dn.error is None:
                        await self._apply(batch)
                except OSError as e:
                    dn.error = e
                except Exception as e:  # never let a system task die
                    log.exception("write-behind failed")
                    dn.error = oserror(errno.EIO, str(e))
                finally:
                    dn.pending -= len(batch)
                    self.queued -= sum(len(b) for _, _, b in batch)
                    if not dn.pending and dn.idle is not None:
                        dn.idle.set()
                        self.writing.discard(dn)

    async def _apply(self, batch: list[tuple[int, int, bytes]]) -> None:
        """Write ``batch`` in a worker thread and measure the free space it leaves."""
        self.free = await self._thread(_pwrite_batch, batch, limiter=self.writes)
        self.free_at = trio.current_time()

    def _room(self, size: int) -> bool:
        """Whether a write of ``size`` bytes may go behind: the drafts disk, measured less
        than :data:`MEASURED_FOR` s ago, keeps :data:`RESERVE` bytes beyond what is queued."""
        return trio.current_time() - self.free_at < MEASURED_FOR and \
            self.free - self.queued - size >= RESERVE

    async def _settle(self, n: Inode) -> None:
        """Wait until every write replied to for ``n`` is in its staging file."""
        dn: DNode | None = n.d
        while dn is not None and dn.pending and dn.idle is not None:
            await dn.idle.wait()

    async def settle_all(self) -> None:
        """Apply every write replied to (the daemon calls it before it stops)."""
        for dn in list(self.writing):
            while dn.pending and dn.idle is not None:
                await dn.idle.wait()
            if dn.error is not None:  # no writer is left to be told, nor a mount to remember it
                log.error("a write to %s in draft %s failed as the daemon stopped: %s; the "
                          "file may miss bytes: check it before committing", dn.name,
                          dn.draft.label, dn.error)

    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is None:
            return
        dn: DNode = h.node.d
        dn.handles.discard(fh)
        lost = None
        if h.local is not None:
            await self._settle(h.node)
            last_writer = not any(
                (o := self.handles.get(x)) is not None and o.local for x in dn.handles)
            if dn.error is not None and last_writer:
                lost, dn.error = dn.error, None  # no call is left to report it
                log.error("writes to a file of draft %s were lost after it was closed: %s",
                          h.draft.label, lost)
            if dn.queue is not None and last_writer:
                dn.queue.close()
                dn.queue = None
        os.close(h.fd)
        if h.local is not None:
            h.draft.release(h.local, None if lost is None else str(lost))

    def released_base(self, fh: int) -> None:
        """The namespace closed a handle that read a draft file's base bytes."""
        n = self.base_handles.pop(fh, None)
        if n is not None:
            n.d.handles.discard(fh)

    async def fsync(self, fh: int, datasync: bool) -> None:
        h = self.handles.get(fh)
        if h is None:
            return
        await self._settle(h.node)
        _raise_pending_error(h.node.d)
        await self._thread(_sync_file, h.fd, datasync, h.draft)  # one hop, not two
