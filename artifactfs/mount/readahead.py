"""Read-ahead of a directory's small files: a reader going through a directory (a DataLoader
over a dataset of images or token shards) finds the files it opens next already verified.

A directory is *being read through* once ``AFTER`` of its small files were opened that were
not ready (``AFTER_WARM``, one, while another directory was read through in the last ``TTL``
seconds: a DataLoader goes through many directories at once).  From then on, every open there
raises how many of its small files (in name order) may be made ready ahead: ``FIRST`` plus
``PER_OPEN`` per open, so a directory whose reader stopped costs at most a few hundred files,
and one read in any order is soon covered whole.  ``PER_OPEN`` must outrun a reader whose
opens wait for GETs queued behind the read-ahead's own (docs/mount.md has the numbers).
Up to ``workers`` tasks make them ready through :meth:`BlobCache.get` (so fetched, verified
and cached exactly as a read would), as many at a time as :class:`Window` allows: on a remote
store the rate is then the store's latency times that concurrency, not one round trip per
open.

What is subtle:

* The budget: pieces made ready ahead and not yet opened (``outstanding``) are bounded in
  count and bytes; an open takes its piece out, and after ``TTL`` seconds an unopened piece
  stops counting (a reader that went away does not stop read-ahead for the mount for good).
  A ready piece stays ready only while it fits the blob cache's descriptor table (LRU), so the
  count budget is a fraction of that table.
* Everything here runs on the trio thread and is O(1) per open; directory tables are read from
  the manifest cache (LMDB, cheap) by the workers, a batch at a time, never at open.
* How many GETs are in flight adapts to the store (:class:`Window`, TCP Vegas's idea): more
  while a GET takes about as long as the fastest lately (the store has room: S3, whose
  latency hardly grows with concurrency), fewer once it takes several times that (the GETs
  queue at the store or in this daemon: a server bound by its CPU, a small link).  The
  readers' own GETs, for files not read ahead yet, wait in the same queue: past the point
  where more in flight stops adding throughput, each one only adds to every reader's wait.
  Measured on the moto server of tools/bench_small.py: the same GETs/s with 2 and with 32 in
  flight, a GET taking 4 and 67 ms.  So the window counts the readers' GETs in flight too
  (``blobs.lane.running``) and the read-ahead takes only what they leave: a reader's GET
  never waits behind more than a window of others.  Workers beyond it wait parked, each
  holding its next piece, and one is let go per GET that ends (the blob cache calls
  :meth:`ReadAhead._landed` after every fetch, the readers' included).
* A failed piece is not retried by the read-ahead (the blob cache remembers the failure for a
  few seconds; the reader's own open tries again and reports the error).
"""

from __future__ import annotations

import logging
import statistics
from collections import OrderedDict, deque
from dataclasses import dataclass

import trio

from .blobcache import BlobCache, Made, Piece, close_orphan
from .cache import RAW_FILE, ManifestCache
from .lanes import Lane

log = logging.getLogger(__name__)
SMALL_FILE = 1 << 20  # files up to this size are read ahead
AFTER = 3  # opens of not-ready small files that make a directory "being read through"
AFTER_WARM = 1  # ... while another directory was read through in the last TTL seconds
FIRST = 32  # files allowed ahead of the reader once it is
PER_OPEN = 16  # more allowed per further open in the directory
TTL = 60.0  # seconds an unopened read-ahead piece counts against the budget
DIRS = 1024  # directories remembered at most
BATCH = 256  # directory entries read from LMDB at a time
LEAST = 2  # GETs the window keeps in flight at least
GROW = 1.5  # the window grows while a GET takes less than this times the baseline ...
SHRINK = 3.0  # ... and shrinks while it takes more than this
PROBE_SAMPLES = 16  # GETs timed at the least window for the baseline ...
PROBE_EVERY = 512  # ... measured again after this many GETs
DECIDE_SAMPLES = 8  # GETs timed at least per decision (and at least a window's worth)


class Window:
    """How many GETs may be in flight (the readers' own included), from how long they take
    (module docstring).

    The baseline is the median time of a GET with the least window, measured at first and
    again every PROBE_EVERY GETs (a few round trips at the least window, as TCP BBR probes
    its round-trip time); then, once per ``limit`` GETs (about a round trip), the median of
    those GETs against it: below GROW times, one more; above SHRINK times, one fewer.  On a
    store whose latency does not grow with concurrency the window goes to ``most``; on one
    that queues, it stays where a GET takes two to three times the baseline.  Medians, not
    minimum and mean: a store's latency has a long tail, and one slow GET must not look like
    a queue."""

    def __init__(self, most: int, least: int = LEAST) -> None:
        self.most = max(1, most)
        self.least = min(least, self.most)
        self.limit = self.least
        self.base = 0.0  # median seconds of a GET at the least window
        self._next = self.least  # the limit after the probe
        self._skip = 0  # GETs still to end that started before the probe
        self._probing = True
        self._samples: list[float] = []
        self._since_probe = 0

    def sample(self, rtt: float) -> None:
        """A GET took ``rtt`` seconds (timed around the store's call in its worker thread:
        a piece found in the disk cache is no GET and no sample)."""
        if self._skip:
            self._skip -= 1
            return
        self._samples.append(rtt)
        self._since_probe += 1
        if self._probing:
            if len(self._samples) >= PROBE_SAMPLES:
                self.base = statistics.median(self._samples)
                self._samples.clear()
                self._probing = False
                self.limit = self._next
            return
        if len(self._samples) < max(self.limit, DECIDE_SAMPLES):
            return
        now = statistics.median(self._samples)
        self._samples.clear()
        if self._since_probe >= PROBE_EVERY:
            self._since_probe = 0
            if self.limit == self.least:  # these GETs were at the least window
                self.base = now
            else:
                self._next, self._skip, self.limit = self.limit, self.limit, self.least
                self._probing = True
                return
        ratio = now / max(self.base, 1e-6)
        if ratio < GROW and self.limit < self.most:
            self.limit += 1
        elif ratio > SHRINK and self.limit > self.least:
            self.limit -= 1


@dataclass(slots=True)
class _Dir:
    oid: str
    opens: int = 0
    allowed: int = 0  # files that may be queued ahead
    queued: int = 0
    after: bytes | None = None  # last name scanned
    done: bool = False  # scanned to the end


class ReadAhead:
    """Per mount; see the module docstring."""

    first, per_open = FIRST, PER_OPEN  # (warm-ahead allows more: it costs less per file)
    after_warm = AFTER_WARM

    def __init__(self, blobs: BlobCache, manifest: ManifestCache, *, workers: int,
                 budget_bytes: int, budget_pieces: int) -> None:
        self.blobs = blobs
        self.manifest = manifest
        self.workers = workers
        self.budget_bytes = budget_bytes
        self.budget_pieces = budget_pieces
        self.lane: Lane[Made] = Lane(workers, close_orphan)
        self._dirs: OrderedDict[str, _Dir] = OrderedDict()
        self._scan: deque[_Dir] = deque()  # directories with more files allowed than queued
        self._queue: deque[Piece] = deque()
        self._outstanding: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._bytes = 0
        self._wake = trio.Event()
        self._running = 0
        # GETs in flight, the readers' own (blobs.lane) included: on a store that queues they
        # wait behind the read-ahead's, so it takes only what they leave of the window
        self.window = Window(workers + blobs.lane.limit)
        self._inflight = 0  # the read-ahead's GETs in flight
        self._parked = trio.lowlevel.ParkingLot()  # workers holding a piece, outside the window
        blobs.on_landed = self._landed
        self._warm_until = float("-inf")  # a directory was read through lately until then
        self.fetched = 0

    def opened(self, oid: str, key: str, ready: bool) -> None:
        """A small file of directory ``oid`` was opened; ``ready``: its piece already was."""
        if key in self._outstanding:
            full = self._full()
            self._drop(key)
            if full:  # (waking every idle worker on every open cost the trio thread)
                self._wake.set()
        d = self._dirs.get(oid)
        if d is None:
            if ready or self.workers <= 0:
                return
            d = self._dirs[oid] = _Dir(oid)
            if len(self._dirs) > DIRS:
                self._dirs.popitem(last=False)
        if not ready or d.allowed:
            d.opens += 1
        if d.done:
            return
        now = trio.current_time()
        if d.opens < (self.after_warm if now < self._warm_until else AFTER):
            return
        self._warm_until = now + TTL
        more = not d.allowed or d.queued >= d.allowed
        d.allowed = self.first + self.per_open * d.opens
        if more:
            self._scan.append(d)
            self._wake.set()
        while self._running < self.workers:
            self._running += 1
            trio.lowlevel.spawn_system_task(self._worker, name="read-ahead")

    # --- workers ---------------------------------------------------------------------------
    def _room(self) -> bool:
        """Whether one more read-ahead GET fits the window beside the readers' own."""
        return self._inflight + self.blobs.lane.running < self.window.limit

    def _landed(self) -> None:
        """A fetch ended (a reader's or the read-ahead's): a parked worker may go."""
        if self._parked and self._room():
            self._parked.unpark(count=1)

    async def _worker(self) -> None:
        try:
            while True:
                piece = await self._next()
                while not self._room():
                    await self._parked.park()
                if self.blobs.ready(piece.key) or self.blobs.fetching(piece.key):
                    continue  # its reader's open came first, meanwhile
                self._inflight += 1
                try:
                    await self.blobs.get(piece, self.lane)
                    self.fetched += 1
                except Exception as e:  # never fails a reader: its own open reports errors
                    log.debug("read-ahead of %s failed: %s", piece.key, e)
                    self._drop(piece.key)
                finally:
                    self._inflight -= 1
                times, limit = self.blobs.fetch_seconds, self.window.limit
                while times:  # the readers' fetches too: they wait in the same queue
                    self.window.sample(times.popleft())
                if self._parked and self._room():  # this slot, or the window grew
                    self._parked.unpark(count=max(1, self.window.limit - limit + 1))
        finally:
            self._running -= 1

    async def _next(self) -> Piece:
        while True:
            self._expire()
            p = self._take()
            if p is not None:
                return p
            if self._wake.is_set():
                self._wake = trio.Event()
            with trio.move_on_after(TTL / 4):
                await self._wake.wait()

    def _take(self) -> Piece | None:
        """The next queued piece, counted as outstanding, if the budget allows one now."""
        if self._full():
            return None
        blobs, queue = self.blobs, self._queue
        while True:
            if not queue:
                self._fill()
                if not queue:
                    return None
            p = queue.popleft()
            # made ready or being fetched since it was queued (its reader's open came first)
            if not blobs.ready(p.key) and not blobs.fetching(p.key):
                break
        self._outstanding[p.key] = (p.length, trio.current_time())
        self._bytes += p.length
        return p

    def _full(self) -> bool:
        return self._bytes >= self.budget_bytes or len(self._outstanding) >= self.budget_pieces

    def _fill(self) -> None:
        """Queue the next batch of small files of the first directory that allows more."""
        blobs = self.blobs
        while self._scan and not self._queue:
            d = self._scan[0]
            want = min(BATCH, d.allowed - d.queued)
            if d.done or want <= 0:
                self._scan.popleft()
                continue
            batch = self.manifest.entries(d.oid, d.after, want)
            if len(batch) < want:
                d.done = True
            for name, raw in batch:
                d.after = name
                d.queued += 1
                if raw[0] != RAW_FILE or raw[3] or not 0 < raw[1] <= SMALL_FILE:
                    continue
                key = raw[2]
                if not blobs.ready(key) and key not in self._outstanding:
                    self._queue.append(Piece(key, key, raw[1], 0))

    def _expire(self) -> None:
        cutoff = trio.current_time() - TTL
        while self._outstanding:
            key, (_, t) = next(iter(self._outstanding.items()))
            if t > cutoff:
                return
            self._drop(key)

    def _drop(self, key: str) -> None:
        got = self._outstanding.pop(key, None)
        if got is not None:
            self._bytes -= got[0]

    def stats(self) -> dict[str, int]:
        return {"ahead_fetched": self.fetched, "ahead_outstanding": len(self._outstanding),
                "ahead_dirs": len(self._dirs), "ahead_window": self.window.limit}
