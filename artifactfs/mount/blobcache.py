"""The node's content cache: verified pieces of file content, ready to ``pread``.

A *piece* is one stored blob or chunk (key: its digest), or one 8 MiB range of a remote
(``s3://``, ``gs://``, ``http(s)://``) reference (key: ``<reference digest>.<index>``);
``file://`` references never enter the cache (refs/authority.py: each open file reads them
through a descriptor opened for its caller).  :meth:`BlobCache.get` makes a piece *ready*: an open
file descriptor whose bytes were verified in this mount.  Where the bytes live:

* local directory store: the store's own object file, read in place (never copied) and hashed
  once per mount before its first byte is served;
* remote store or reference: a cache file under ``<cache_dir>/objects`` or ``/refs``, written
  temp → rename (no fsync: a cache is not the source of truth) after the fetched bytes were
  verified, and hashed again once per mount before use (reference pieces are checked against the SHA-256 recorded, in the manifest cache,
  when they were fetched).  Bounded by ``max_bytes`` and a free-disk floor: least recently
  opened pieces leave first, pieces of open files never; ENOSPC evicts and retries, and if the
  disk stays full the verified bytes are served from memory uncached.

What is subtle:

* Cost: verification is the price of a first read.  A piece is hashed in a worker thread
  through one reused buffer (no fresh memory per piece), after the kernel was asked to start
  reading it (``POSIX_FADV_WILLNEED``) as soon as a sequential reader made it likely; reads then
  come from the page cache.  A small piece (≤ SMALL_PIECE) is read whole in one call instead,
  and its verified bytes are served from memory while a file uses it: one worker hop per
  small file, no second read, and none when the kernel caches a local store's small file
  (hashed at open on the trio thread, cachedio.py).  Jobs run in lanes (lanes.py), not in a
  task per job.
* The descriptor table is an LRU of at most ``max_fds`` (half the descriptor limit): pieces
  pinned by open files are not in ``_idle``, so picking a victim is O(1).  A piece that leaves
  a full table keeps the identity of its verified file (``_verified``, bounded): making it
  ready again costs an open and an ``fstat``, not a hash.  The trio thread copies with ``RWF_NOWAIT`` into one reused buffer,
  so it never waits on the disk (a miss goes to a worker thread).  Hashing through ``mmap``
  would save a copy (~10 % CPU measured) but a store file truncated under the mapping would
  kill the daemon with SIGBUS, so it is not done.
* Verified stays verified: a ready piece remembers the identity of its file when it was
  verified (``Ident``: device, inode, size, mtime, ctime).  The first time an open file uses
  a piece (:meth:`check`, one ``fstat``), a changed identity drops the descriptor and the
  piece is verified again from its file; a rewrite by any tool changes ctime, which no tool can
  set.  Not detected: bytes that change under an unchanged identity (silent media corruption,
  a raw write to the block device), and a change while a file is already open, until the next
  open (reads themselves never ``fstat``).  The identity is taken *before* hashing, so a write
  during hashing is seen at the next check.
* Single flight: one fetch per piece however many readers wait; a failure is not remembered
  (the next read tries again) and waiters give up after ``timeout`` seconds (EIO), while the
  worker thread finishes on its own.
* Threads: hashing, store I/O and file writes run in worker threads under a CapacityLimiter.
  The fd table is only changed on the trio thread; eviction (a worker) only unlinks files of
  unpinned pieces and queues their fds, which the trio thread closes.  Reads only happen through
  open files, whose pieces are pinned, so a descriptor is never closed under a reader.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import resource
import shutil
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

import outcome
import trio

from .. import fetch
from ..errors import IntegrityError, PermissionDenied, StoreUnavailable
from ..fsutil import pwrite_all, write_file
from ..model import CHUNK_SIZE, Entry, object_key
from ..refs import authority
from ..refs.authority import Gate
from ..store.base import Store
from .cachedio import open_cached, read_cached
from .lanes import Lane, fire

log = logging.getLogger(__name__)
MAX_FDS = 32768  # ready pieces kept open at most (fewer under a lower RLIMIT_NOFILE)
FREE_EVERY = 1.0  # seconds between statvfs calls of the cache disk
FREE_MARGIN = 64 << 20  # ... unless its free space is this close to the floor
VERIFIED_MAX = 1 << 16  # identities of verified files kept without an fd (~200 bytes each)
SMALL_PIECE = 256 << 10  # read whole when verified; bytes kept while a file uses them
FAILED_TTL = 5.0  # a piece the store just failed to give fails again at once for this long
BUFFER_BYTES = 64 << 20  # verified pieces the full disk could not take, served from memory


@dataclass(frozen=True, slots=True)
class Piece:
    key: str
    digest: str  # expected SHA-256 of the bytes; "" for reference pieces
    length: int
    offset: int  # position in the file
    entry: Entry | None = None  # reference pieces: where the bytes come from


def piece_count(e: Entry) -> int:
    return (e.size + CHUNK_SIZE - 1) // CHUNK_SIZE


def piece_at(e: Entry, i: int) -> Piece:
    """Piece ``i`` of a file or reference entry (index = offset // CHUNK_SIZE)."""
    off = i * CHUNK_SIZE
    length = min(CHUNK_SIZE, e.size - off)
    if e.kind == "ref":
        return Piece(f"{e.digest}.{i}", "", length, off, e)
    digest = e.chunks[i] if e.chunks else e.digest
    return Piece(digest, digest, length, off)


def piece_keys(e: Entry) -> list[str]:
    if e.kind == "ref":
        return [f"{e.digest}.{i}" for i in range(piece_count(e))]
    return list(e.chunks) if e.chunks else ([e.digest] if e.size else [])


@dataclass
class _Flight:
    event: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    error: BaseException | None = None


_tls = threading.local()


def _fd_budget() -> int:
    """How many ready pieces may stay open: MAX_FDS, or half the descriptor limit."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return MAX_FDS if soft == resource.RLIM_INFINITY else max(64, min(MAX_FDS, soft // 2))


def _hash_fd(fd: int, keep: int = 0) -> tuple[str, int, bytes | None]:
    """(SHA-256, length, bytes if ``keep``) of a file.

    ``keep`` (a small piece's expected length) reads the file in one call into a new object,
    returned for serving from memory (one byte more is asked for, to see a longer file).
    Otherwise the file goes in 1 MiB steps through a reused per-thread buffer,
    which avoids faulting in fresh memory for every piece and leaves the bytes in the page
    cache, where the reads that follow find them.
    """
    if keep:
        data = os.pread(fd, keep + 1, 0)
        return hashlib.sha256(data).hexdigest(), len(data), data
    buf = getattr(_tls, "buf", None)
    if buf is None:
        buf = _tls.buf = memoryview(bytearray(1 << 20))
    h = hashlib.sha256()
    pos = 0
    while True:
        n = os.preadv(fd, [buf], pos)
        if not n:
            return h.hexdigest(), pos, None
        h.update(buf[:n])
        pos += n


def _hash_cached(fd: int, length: int) -> tuple[str, int, bytearray] | None:
    """(SHA-256, length, bytes) of a small file's first ``length`` bytes if the page cache
    holds them all (no waiting on the disk: the trio thread calls this), else ``None``."""
    data = read_cached(fd, length)
    return None if data is None else (hashlib.sha256(data).hexdigest(), len(data), data)


Ident = tuple[int, int, int, int, int]


def ident_of(st: os.stat_result) -> Ident:
    """What changes when anything rewrites a file: (device, inode, size, mtime, ctime)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


Made = tuple[int | None, bytes | None, Ident | None]  # what _materialize makes (see there)


def close_orphan(result: outcome.Outcome[Made]) -> None:
    """A piece made ready after the daemon's trio loop ended: close its descriptor."""
    if isinstance(result, outcome.Value) and result.value[0] is not None:
        os.close(result.value[0])


def _copy_range(src: int, dst: int, length: int, dst_off: int) -> None:
    """``length`` bytes from the start of ``src`` to ``dst`` at ``dst_off``."""
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(src, dst, length - done, done, dst_off + done)
            if n <= 0:
                break
            done += n
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while done < length:  # no copy_file_range here, or a short one: copy by hand
        data = os.pread(src, min(8 << 20, length - done), done)
        if not data:
            raise IntegrityError(f"piece shrank while being copied ({done} of {length} bytes)")
        pwrite_all(dst, data, dst_off + done)
        done += len(data)


class BlobCache:
    """Verified, ready-to-read pieces; see the module docstring."""

    def __init__(self, store: Store, directory: str, max_bytes: int, *,
                 min_free: int | None = None, timeout: float = 30.0, threads: int = 0,
                 sidecar_get: Callable[[str], str | None] | None = None,
                 sidecar_put: Callable[[str, str], None] | None = None,
                 buffer_bytes: int = BUFFER_BYTES, gate: Gate | None = None,
                 max_fds: int = 0) -> None:
        self.store = store
        self.gate = gate or Gate()
        self.dir = directory
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.in_place = store.local_path(object_key("0" * 64)) is not None
        self._sidecar_get = sidecar_get or (lambda k: None)
        self._sidecar_put = sidecar_put or (lambda k, v: None)
        for sub in ("objects", "refs", "tmp"):
            os.makedirs(os.path.join(directory, sub), mode=0o700, exist_ok=True)
        shutil.rmtree(os.path.join(directory, "tmp"), ignore_errors=True)
        os.makedirs(os.path.join(directory, "tmp"), mode=0o700, exist_ok=True)
        self._keep_refs_of(self.gate.tag())
        if min_free is None:
            st = os.statvfs(directory)
            min_free = min(1 << 30, st.f_blocks * st.f_frsize // 20)
        self.min_free = min_free
        self._free = (0, -FREE_EVERY, 0)  # (free bytes, when measured, written since)
        self._subdirs: set[str] = set()  # cache subdirectories known to exist
        self._scanned = False  # every cache file on disk is in _files
        cpus = os.cpu_count() or 2
        self.lane: Lane[Made] = Lane(threads or (cpus if self.in_place else 8), close_orphan)
        self.prefetch_lane: Lane[Made] = Lane(threads or (cpus if self.in_place else 4), close_orphan)
        self.buffer_bytes = buffer_bytes
        self.max_fds = max_fds or _fd_budget()
        self._fds: dict[str, int] = {}  # ready pieces: key -> fd (trio thread only)
        self._idle: OrderedDict[str, None] = OrderedDict()  # keys of _fds unpinned, LRU first
        # pieces whose fd left a full table: the identity of their verified file, LRU first
        self._verified: OrderedDict[str, Ident] = OrderedDict()
        self._idents: dict[int, Ident] = {}  # fd -> identity of its file when verified
        self._retired: dict[str, list[int]] = {}  # changed files' fds, closed at the last unpin
        self._bufs: OrderedDict[str, memoryview] = OrderedDict()  # verified bytes, LRU
        self._buf_bytes = 0
        self._scratch = memoryview(bytearray(1 << 20))
        self._nowait = True
        self._orphans: set[str] = set()  # evicted while in use: fd closed at the last unpin
        self._flights: dict[str, _Flight] = {}
        # key -> (until, error): the kernel retries a failed read in several requests; each
        # must not wait out the store's whole retry budget again
        self._failed: dict[str, tuple[float, BaseException]] = {}
        self._lock = threading.Lock()  # guards everything below
        self._files: OrderedDict[str, int] = OrderedDict()  # cache files: key -> size, LRU
        self._bytes = 0
        self._pins: Counter[str] = Counter()
        self._evicted: list[str] = []
        self.hits = 0
        self.misses = 0
        self.fetched_bytes = 0
        self.errors = 0
        # how long each fetch of a small piece from the store or a source took (worker
        # threads append; the read-ahead's window takes them, readahead.py)
        self.fetch_seconds: deque[float] = deque(maxlen=1024)
        # called on the trio thread after each flight ended (the read-ahead's window counts
        # the readers' own fetches in flight, ``lane.running``: readahead.py)
        self.on_landed: Callable[[], None] = lambda: None

    # --- the read fast path (trio thread) ---------------------------------------------------
    def ready(self, key: str) -> bool:
        return key in self._fds or key in self._bufs

    def fetching(self, key: str) -> bool:
        """Whether a piece is being made ready (a flight is on)."""
        return key in self._flights

    async def read(self, piece: Piece, offset: int, size: int) -> bytes | memoryview | None:
        """Bytes of a ready piece (``offset`` within the piece), or ``None`` if not ready.

        The common case copies from the page cache into one reused buffer and returns a view
        of it: valid until the next read, which is enough because pyfuse3 replies before any
        other handler runs.  ``RWF_NOWAIT`` keeps the trio thread from ever waiting on the
        disk: what is not in the page cache is read in a worker thread.
        """
        view = self._bufs.get(piece.key)
        if view is not None:
            self.hits += 1
            return view[offset:offset + size]
        fd = self._fds.get(piece.key)
        if fd is None:
            return None
        self.hits += 1
        size = max(0, min(size, piece.length - offset))
        if len(self._scratch) < size:
            self._scratch = memoryview(bytearray(size))
        out = self._scratch[:size]
        if not self._nowait:  # a filesystem without RWF_NOWAIT: read as a plain server would
            return out[:os.preadv(fd, [out], offset)]
        try:
            n = os.preadv(fd, [out], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            n = 0
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self._nowait = False
            return out[:os.preadv(fd, [out], offset)]
        if n == size or offset + n >= piece.length:
            return out[:n]
        head = bytes(out[:n])
        rest = await trio.to_thread.run_sync(os.pread, fd, size - n, offset + n)
        return head + rest

    async def get(self, piece: Piece, lane: Lane[Made] | None = None) -> None:
        """Make ``piece`` ready (or raise: IntegrityError, StoreUnavailable, OSError); its
        worker thread runs in ``lane`` (default: the readers' own)."""
        if piece.key in self._fds or piece.key in self._bufs:
            return
        failed = self._failed.get(piece.key)
        if failed is not None:
            if trio.current_time() < failed[0]:
                raise failed[1]
            del self._failed[piece.key]
        fl = self._flights.get(piece.key) or self._start(piece, lane or self.lane)
        with trio.move_on_after(self.timeout) as cs:
            await fl.event.wait()
        if cs.cancelled_caught:
            raise StoreUnavailable(f"timed out after {self.timeout:g}s fetching object {piece.key}")
        if fl.error is not None:
            raise fl.error

    def start(self, piece: Piece) -> None:
        """Start making a piece ready for a reader that is about to read it (no waiting): an
        open of a small file starts its verification while the kernel sends the first read."""
        k = piece.key
        if k not in self._fds and k not in self._flights and k not in self._bufs and \
                k not in self._failed and not self._verify_cached(piece):
            self._start(piece, self.lane)

    def _verify_cached(self, piece: Piece) -> bool:
        """Make a small piece of a local store ready right here on the trio thread, if its
        file resolves and reads from the kernel's caches alone (cachedio.py): no worker hop,
        which costs more CPU than hashing a small file.  Anything else (not cached, a size or
        digest that does not match, an error) answers False, and the worker path decides."""
        if not self.in_place or piece.entry is not None or not 0 < piece.length <= SMALL_PIECE:
            return False
        path = self.store.local_path(object_key(piece.digest))
        fd = open_cached(path) if path is not None else None
        if fd is None:
            return False
        try:
            idn = ident_of(os.fstat(fd))
            if self._verified.get(piece.key) == idn:  # verified in this mount, unchanged
                got: tuple[str, int, bytearray | None] | None = (piece.digest, idn[2], None)
            else:
                got = _hash_cached(fd, piece.length) if idn[2] == piece.length else None
            if got is None or got[:2] != (piece.digest, piece.length):
                os.close(fd)
                return False
        except OSError:
            os.close(fd)
            return False
        data = got[2]
        self._verified.pop(piece.key, None)
        self._install(piece.key, fd, data, idn)
        return True

    def verify_local(self, pieces: Iterable[Piece]) -> list[tuple[str, Ident]]:
        """Worker thread: verify small pieces of a local store ahead of their readers
        (warmahead.py).  Their bytes land in the page cache and their identities come back
        for :meth:`remember`, so each reader's open is an ``fstat`` on the trio thread.  A
        piece that does not verify is left out: its reader's own open reports it."""
        out: list[tuple[str, Ident]] = []
        for p in pieces:
            path = self.store.local_path(object_key(p.digest))
            try:
                fd = os.open(path or "", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                idn = ident_of(os.fstat(fd))  # before hashing: a write during it shows later
                if idn[2] == p.length and _hash_fd(fd)[:2] == (p.digest, p.length):
                    out.append((p.key, idn))
            except OSError:
                pass
            finally:
                os.close(fd)
        return out

    def remember(self, verified: Iterable[tuple[str, Ident]]) -> None:
        """Identities of files verified in this mount (trio thread): a piece whose file still
        has one is made ready by an ``fstat``, without hashing."""
        for key, idn in verified:
            if key not in self._fds:
                self._verified[key] = idn
                self._verified.move_to_end(key)
        while len(self._verified) > VERIFIED_MAX:
            self._verified.popitem(last=False)

    def known(self, key: str) -> bool:
        """Whether a piece is ready or was verified in this mount (its file may have changed
        since: :meth:`start` checks)."""
        return key in self._fds or key in self._bufs or key in self._verified

    def prefetch(self, pieces: Iterable[Piece]) -> None:
        """Start making pieces ready ahead of a sequential reader (no waiting)."""
        for p in pieces:
            if p.key not in self._fds and p.key not in self._flights and \
                    p.key not in self._bufs and p.key not in self._failed:
                self._start(p, self.prefetch_lane)

    def check(self, key: str) -> bool:
        """Whether a ready piece's file is still the one verified (one ``fstat``).  If not,
        the piece stops being ready (the next :meth:`get` verifies it again) and its
        descriptor is closed once no open file uses it.  Called the first time an open file
        uses a piece, not per read."""
        fd = self._fds.get(key)
        if fd is None:
            return True
        try:
            now: Ident | None = ident_of(os.fstat(fd))
        except OSError:
            now = None
        if now is not None and now == self._idents.get(fd):
            return True
        log.warning("the file of %s changed since it was verified: verifying it again", key)
        if self._pins.get(key):  # a reader of an open file may be using the fd right now
            self._retired.setdefault(key, []).append(self._forget_fd(key))
        else:
            os.close(self._forget_fd(key))
        return False

    def _forget_fd(self, key: str, remember: bool = False) -> int:
        """Take a ready piece's fd out of the table (the caller closes it).  ``remember``: the
        table is only full, the file is still the one verified: keep its identity, so making
        the piece ready again costs an ``fstat``, not a hash."""
        fd = self._fds.pop(key)
        self._idle.pop(key, None)
        idn = self._idents.pop(fd, None)
        if remember and idn is not None:
            self._verified[key] = idn
            if len(self._verified) > VERIFIED_MAX:
                self._verified.popitem(last=False)
        else:
            self._verified.pop(key, None)
        return fd

    def _start(self, piece: Piece, lane: Lane[Made]) -> _Flight:
        fl = _Flight()
        self._flights[piece.key] = fl
        if self.in_place and piece.entry is None and piece.length > SMALL_PIECE:
            fire(partial(self._advise, piece))  # the disk read of the chunk starts now
        lane.submit(partial(self._materialize, piece, self._verified.pop(piece.key, None)),
                    partial(self._landed, piece, fl))
        return fl

    def _landed(self, piece: Piece, fl: _Flight, result: outcome.Outcome[Made]) -> None:
        """A flight's worker is done (trio thread; must not raise)."""
        try:
            self._install(piece.key, *result.unwrap())
        except BaseException as e:
            self.errors += 1
            fl.error = e
            if isinstance(e, StoreUnavailable):  # not corrupt data: a repaired store is re-read
                self._failed[piece.key] = (trio.current_time() + FAILED_TTL, e)
            if isinstance(e, IntegrityError):
                log.error("refusing to serve %s: %s", piece.key, e)
            else:
                log.warning("could not fetch %s: %s", piece.key, e)
        finally:
            self._flights.pop(piece.key, None)
            fl.event.set()
            self.on_landed()
            try:
                self._close_evicted()
            except OSError as e:
                log.warning("closing evicted pieces: %s", e)

    def _install(self, key: str, fd: int | None, data: bytes | bytearray | None,
                 idn: Ident | None) -> None:
        """A verified piece becomes ready.  Past ``max_fds`` the least recently used piece
        that no open file pins closes (O(1): pinned pieces are not in ``_idle``)."""
        pinned = self._pins.get(key)
        if fd is not None:
            if key in self._fds:
                os.close(self._forget_fd(key))
            self._fds[key] = fd
            if not pinned:
                self._idle[key] = None
            if idn is not None:
                self._idents[fd] = idn
            while len(self._fds) > self.max_fds and self._idle:
                os.close(self._forget_fd(next(iter(self._idle)), remember=True))
        if data is not None and pinned:  # only while a file uses it
            old_view = self._bufs.pop(key, None)
            if old_view is not None:
                self._buf_bytes -= len(old_view)
            self._bufs[key] = memoryview(data)
            self._buf_bytes += len(data)
            while self._buf_bytes > self.buffer_bytes and len(self._bufs) > 1:
                _, old_view = self._bufs.popitem(last=False)
                self._buf_bytes -= len(old_view)

    def _close_evicted(self) -> None:
        with self._lock:
            evicted, self._evicted = self._evicted, []
        for k in evicted:
            self._verified.pop(k, None)
            if self._pins.get(k):  # a reader may be using the fd: the unlinked file lives on
                self._orphans.add(k)
                continue
            if k in self._fds:
                os.close(self._forget_fd(k))
            view = self._bufs.pop(k, None)
            if view is not None:
                self._buf_bytes -= len(view)

    # --- pins (trio thread) ------------------------------------------------------------------
    def pin(self, keys: Iterable[str]) -> None:
        """An open file uses these pieces: their fds and cache files stay until unpinned."""
        files, pins, idle = self._files, self._pins, self._idle
        with self._lock:
            for k in keys:
                pins[k] += 1
                if k in files:
                    files.move_to_end(k)
                idle.pop(k, None)

    def unpin(self, keys: Iterable[str]) -> None:
        """The last close of a piece also frees its in-memory copy; its fd stays open, now
        the most recently used of the unpinned ones."""
        pins = self._pins
        with self._lock:
            for k in keys:
                pins[k] -= 1
                if pins[k] > 0:
                    continue
                del pins[k]
                if self._bufs:
                    view = self._bufs.pop(k, None)
                    if view is not None:
                        self._buf_bytes -= len(view)
                if self._retired:
                    for old in self._retired.pop(k, ()):
                        os.close(old)
                if k in self._orphans:
                    self._orphans.discard(k)
                    if k in self._fds:
                        os.close(self._forget_fd(k))
                elif k in self._fds:
                    self._idle[k] = None

    # --- worker threads -----------------------------------------------------------------------
    def _advise(self, piece: Piece) -> None:
        """Ask the kernel to start reading a local piece file (async), before verifying it."""
        path = self.store.local_path(object_key(piece.digest))
        if path is None:
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)

    def _materialize(self, piece: Piece, known: Ident | None = None) -> Made:
        """Worker thread: (fd, bytes, identity): a verified fd for a piece and the identity of
        its file when it was verified, and the verified bytes of a small piece (read whole
        anyway; served from memory while a file uses them); or only the piece's verified
        bytes when the disk cannot keep them.  ``known``: the identity the piece's file had
        when it was verified in this mount; if it still has it, it is not hashed again."""
        if piece.entry is None and self.in_place:
            path = self.store.local_path(object_key(piece.digest))
            assert path is not None
            got = self._open_verified(path, piece, False, known)
            assert got is not None
            return got
        path = self._path(piece.key)
        # a piece not in the index is not on disk once the index was read: no open to fail
        got = self._open_verified(path, piece, True, known) \
            if not self._scanned or piece.key in self._files else None
        if got is not None:
            self.hits += 1
            return got
        self.misses += 1
        started = time.monotonic()
        data = self._fetch(piece)
        if piece.length <= SMALL_PIECE:  # a round trip, not a transfer
            self.fetch_seconds.append(time.monotonic() - started)
        self.fetched_bytes += len(data)
        fd = self._store_file(path, piece, data)
        if fd is None:
            return None, data, None
        return fd, data if len(data) <= SMALL_PIECE else None, ident_of(os.fstat(fd))

    def copy_to(self, entry: Entry, dest: str) -> None:
        """Worker thread: write an entry's verified bytes into the file ``dest`` (the copy-up
        of a draft file).  Pieces come the way reads get them (in place from a local store,
        else the cache or the store/source, and then cached) and are verified first; the
        bytes move with ``copy_file_range`` (no trip through Python).  A reference is first
        put to the gate for the caller (refs/authority.py): a ``file://`` one is copied from
        the descriptor opened with his authority, never through the cache."""
        src = self.gate.open(entry, authority.current()) if entry.kind == "ref" else None
        out = os.open(dest, os.O_WRONLY | os.O_CLOEXEC)
        try:
            if src is not None:
                for off in range(0, entry.size, CHUNK_SIZE):
                    pwrite_all(out, src.read(off, CHUNK_SIZE), off)
                return
            for i in range(piece_count(entry)):
                p = piece_at(entry, i)
                fd, data, _ = self._materialize(p)
                if fd is None:
                    assert data is not None
                    pwrite_all(out, data, p.offset)
                    continue
                try:
                    _copy_range(fd, out, p.length, p.offset)
                finally:
                    os.close(fd)
        finally:
            os.close(out)
            if src is not None:
                src.close()

    def _expected(self, piece: Piece) -> str | None:
        return piece.digest or self._sidecar_get(f"refpiece:{piece.key}")

    def _open_verified(self, path: str, piece: Piece, missing_ok: bool,
                       known: Ident | None = None) -> tuple[int, bytes | None, Ident] | None:
        """(fd, bytes of a small piece, identity): an fd of ``path`` whose bytes were just
        verified (or were verified in this mount when the file had the identity ``known``,
        which it still has), with the file's identity taken before hashing (so a write during
        the hash shows as a change at the next check)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if missing_ok:
                return None
            raise IntegrityError(f"object {piece.digest} is missing from the store") from None
        try:
            idn = ident_of(os.fstat(fd))
            if known is not None and idn == known:
                return fd, None, idn
            expected = self._expected(piece)
            if expected:
                small = 0 < piece.length <= SMALL_PIECE
                digest, length, data = _hash_fd(fd, piece.length if small else 0)
                if (digest, length) == (expected, piece.length):
                    return fd, data, idn
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if not missing_ok:
            raise IntegrityError(f"object {piece.digest} is corrupt (digest mismatch): {path}")
        log.warning("dropping corrupt cache file %s", path)
        self._forget_file(piece.key, path)
        return None

    def _fetch(self, piece: Piece) -> bytes:
        if piece.entry is None:
            return fetch.read_piece(self.store, piece.digest, piece.length)
        from .. import refs  # imported late: reference schemes pull in their clients

        if refs.scheme_of(piece.entry.ref.uri if piece.entry.ref else "") == "file":
            # file:// bytes are read for one caller through his own descriptor (Source):
            # cached, they could be served to a user who may not read the file
            raise PermissionDenied("file:// references are never read into the cache")
        data = refs.read_range(piece.entry, piece.offset, piece.length, net=self.gate.net)
        if len(data) != piece.length:
            raise IntegrityError(f"reference {piece.entry.ref.uri if piece.entry.ref else ''} "
                                 f"returned {len(data)} bytes instead of {piece.length}")
        return data

    def _store_file(self, path: str, piece: Piece, data: bytes) -> int | None:
        for attempt in range(4):
            self._make_room(len(data) * (attempt + 1))
            try:
                self._write_atomic(path, data)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    log.warning("cache disk full writing %s: evicting and retrying", piece.key)
                    continue
                raise
            if piece.entry is not None:
                self._sidecar_put(f"refpiece:{piece.key}", hashlib.sha256(data).hexdigest())
            with self._lock:
                free, at, written = self._free
                self._free = (free, at, written + len(data))
                if piece.key not in self._files:
                    self._files[piece.key] = len(data)
                    self._bytes += len(data)
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        log.error("cache disk full: serving %s from memory, uncached", piece.key)
        return None

    def _keep_refs_of(self, tag: str) -> None:
        """Drop cached reference bytes fetched under other rules than ``tag`` (another mode or
        policy of the daemon, refs/authority.py), so every cached byte was fetched under the
        rules this mount checks at open.  The mark is an empty directory ``refs/.rules-TAG``:
        it adds no file and no byte to the cache's size."""
        refs_dir = os.path.join(self.dir, "refs")
        mark = os.path.join(refs_dir, f".rules-{tag}")
        if os.path.isdir(mark):
            return
        shutil.rmtree(refs_dir, ignore_errors=True)
        os.makedirs(mark, mode=0o700, exist_ok=True)

    def _write_atomic(self, path: str, data: bytes) -> None:
        """temp → rename, no fsync: a cache file is hashed again by the next mount before
        use, so one that a power loss left short or zeroed is dropped and fetched again."""
        tmp = os.path.join(self.dir, "tmp", f"{os.getpid()}-{threading.get_ident()}")
        write_file(tmp, data, fsync=False, mode=0o600)
        parent = os.path.dirname(path)
        if parent not in self._subdirs:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            self._subdirs.add(parent)
        os.rename(tmp, path)

    def _path(self, key: str) -> str:
        if "." in key:
            return os.path.join(self.dir, "refs", key[:2], key)
        return os.path.join(self.dir, "objects", key[:2], key[2:])

    def _free_disk(self) -> int:
        """Free bytes on the cache disk (under ``_lock``): ``statvfs`` at most every
        FREE_EVERY seconds, and every time near the floor; in between, the last measure less
        what this cache wrote since."""
        now = time.monotonic()
        free, at, written = self._free
        if now - at > FREE_EVERY or free - written < self.min_free + FREE_MARGIN:
            st = os.statvfs(self.dir)
            free, at, written = st.f_bavail * st.f_frsize, now, 0
            self._free = (free, at, written)
        return free - written

    def _make_room(self, need: int) -> None:
        """Evict unpinned least-recently-used cache files until ``need`` more bytes fit."""
        while True:
            with self._lock:
                over = self._bytes + need > self.max_bytes
                if not over and self._free_disk() - need >= self.min_free:
                    return
                victim = next((k for k in self._files if not self._pins[k]), None)
                if victim is None:
                    return
                size = self._files.pop(victim)
                self._bytes -= size
                self._evicted.append(victim)
            try:
                os.unlink(self._path(victim))
            except FileNotFoundError:
                pass

    def _forget_file(self, key: str, path: str) -> None:
        with self._lock:
            size = self._files.pop(key, None)
            if size is not None:
                self._bytes -= size
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def scan(self) -> None:
        """Index existing cache files (oldest first) and trim to the limit (worker thread)."""
        found: list[tuple[float, str, int]] = []
        for sub in ("objects", "refs"):
            top = os.path.join(self.dir, sub)
            for d in os.scandir(top):
                if not d.is_dir():
                    continue
                for f in os.scandir(d.path):
                    st = f.stat()
                    key = f.name if sub == "refs" else d.name + f.name
                    found.append((st.st_mtime, key, st.st_size))
        found.sort()
        with self._lock:
            known = self._files
            self._files = OrderedDict((k, s) for _, k, s in found if k not in known)
            self._files.update(known)
            self._bytes = sum(self._files.values())
        self._scanned = True
        self._make_room(0)

    def cleanup(self, target: int) -> int:
        """Evict unpinned content down to ``target`` bytes; returns bytes freed (worker thread)."""
        before = self._bytes
        saved = self.max_bytes
        self.max_bytes = target
        try:
            self._make_room(0)
        finally:
            self.max_bytes = saved
        return before - self._bytes

    # --- reporting -----------------------------------------------------------------------------
    def stats(self) -> dict[str, float | int | bool]:
        total = self.hits + self.misses
        return {"cache_bytes": self._bytes, "cache_files": len(self._files),
                "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses,
                "hit_rate": round(self.hits / total, 4) if total else 1.0,
                "fetched_bytes": self.fetched_bytes, "errors": self.errors,
                "in_place": self.in_place, "open_fds": len(self._fds),
                "buffered_bytes": self._buf_bytes,
                "pinned": len(self._pins), "time": time.time()}

    def close(self) -> None:
        self._idle.clear()
        for fd in self._fds.values():
            os.close(fd)
        for fds in self._retired.values():
            for fd in fds:
                os.close(fd)
        self._fds.clear()
        self._idents.clear()
        self._retired.clear()
        self._bufs.clear()
