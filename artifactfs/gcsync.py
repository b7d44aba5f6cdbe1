"""How gc and writers on any node agree through the store, so gc never takes an object that a
version being written needs (docs/DESIGN.md, "gc and writers").

Keys::

    gc/writers/ID.json   a writer's lease: created before its first object, refreshed every
                         HEARTBEAT seconds, removed after its record (version or draft part)
    gc/runs/ID.json      a gc run's marker: from its start (T0, the marker's store mtime) to its
                         end; says which leases it waits for and, while sweeping, the store time
                         at which it started listing the current object prefix (``page_since``)

The gc side (gc.py): marker → list leases L1 → mark → list leases L2 → wait until every lease
of L1 and L2 is gone or stale → mark again what was published since the mark read the catalog
(always, even when L1 and L2 are empty) → sweep the 16 object prefixes one at a time,
deleting unmarked objects older than ``T0 - grace``.

The writer side (:class:`WriteSession`): lease → note the gc markers present.  With none, or
only in phase ``mark``, every such gc (and any that starts later) lists the leases again
after its mark: it waits for this writer if the lease is still there, and marks again after
that listing, so a record written before it is marked either way: nothing more to do.  (The
second mark must not depend on L2: a writer can begin after L1 and be done, record written
and lease removed, before L2, so that no listing shows it while the first mark may have read
its artifact before its record.  When gc marked again only after waiting for someone, such a
writer's version lost the objects it reused: a put/delete/gc loop found it.)  With a gc past
its mark (this writer may not be in its lists), every object that put-if-absent
finds already there is *touched* (its mtime brought past that gc's cutoff), and just before
the record the writer waits until that gc has moved past every prefix it listed before the
touches, then checks that each reused object is still there; a missing one fails the write
("run it again"), never publishes it.  Objects a writer creates are newer than any such gc's
T0, and objects it reuses by reference (its base version's) are marked by that gc's mark
when the base was live at the lease's start (a draft based on a version deleted earlier is
protected by the grace period only).

What is subtle:

* Times are store times (mtimes the store gives its keys), never local clocks, except for
  staleness, which allows for ``SKEW``.  S3 mtimes have one-second resolution: comparisons
  are strict where that matters.
* A lease or marker not refreshed for ``STALE`` seconds is dead.  A writer or gc that was
  paused that long (SIGSTOP, a frozen VM) can not know what the other side did meanwhile, so it
  refuses to go on (writers fail; gc stops deleting) instead of trusting a lease others gave up.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import model
from .errors import ArtifactfsError, NotFound, PreconditionFailed
from .store.base import ListItem, Store

log = logging.getLogger(__name__)

LEASES = "gc/writers/"
MARKERS = "gc/runs/"
HEARTBEAT = 60.0  # seconds between refreshes of a lease or a marker
STALE = 600.0  # a lease or marker not refreshed for this long is dead
SKEW = 120.0  # what the clocks of nodes may differ by; pauses above STALE - SKEW are fatal
POLL = 0.05  # seconds before the first look again at a gc or lease (then doubled)


class GcRace(ArtifactfsError):
    """A write (or a gc) could not prove the other side left its objects alone."""


def _new_id() -> str:
    return f"{int(time.time())}-{os.urandom(6).hex()}"


def _stamp(what: str) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "what": what}


def _doc(store: Store, key: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(store.get(key))
    except (NotFound, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _ids(store: Store, prefix: str) -> Iterator[tuple[str, ListItem]]:
    for item in store.list(prefix):
        name = item.key[len(prefix):]
        if name.endswith(".json") and "/" not in name:
            yield name[:-5], item


class Heartbeat:
    """Refreshes one key (lease or marker) every HEARTBEAT seconds in a thread, by CAS, so a
    key someone removed as stale is noticed; remembers the longest gap between refreshes."""

    def __init__(self, store: Store, key: str, doc: dict[str, Any]) -> None:
        self.store, self.key, self.doc = store, key, doc
        self.etag = store.cas(key, self._data(), None)
        self.started = self.last_mtime = self.mtime()  # store time of the creation
        self._last = time.monotonic()
        self._last_write = self._last
        self.worst_gap = 0.0
        self.lost = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {key}", daemon=True)
        self._thread.start()

    def _data(self) -> bytes:
        return json.dumps(self.doc, sort_keys=True).encode()

    def mtime(self) -> float:
        item = self.store.head(self.key)
        if item is None:
            raise GcRace(f"{self.key} was removed")
        return item.mtime

    def refresh(self, **changes: Any) -> float:
        """Write the key again now (with ``changes``); returns the store time it took."""
        with self._lock:
            if self.lost:
                raise GcRace(self.lost)
            self.doc.update(changes)
            try:
                self.etag = self.store.cas(self.key, self._data(), self.etag)
            except PreconditionFailed:
                self.lost = f"{self.key} was removed or changed by someone else"
                raise GcRace(self.lost) from None
            now = time.monotonic()
            self.worst_gap = max(self.worst_gap, now - self._last)
            self._last = now
            self.last_mtime = self.mtime()
            self._last_write = time.monotonic()
            return self.last_mtime

    def store_now(self) -> float:
        """An estimate of the store's time now: its time at our last write plus what elapsed
        here since."""
        return self.last_mtime + (time.monotonic() - self._last_write)

    def check(self) -> None:
        """Raise unless the key has been refreshed often enough for others to trust it."""
        gap = max(self.worst_gap, time.monotonic() - self._last)
        if self.lost:
            raise GcRace(self.lost)
        if gap > STALE - SKEW:
            raise GcRace(f"paused for {gap:.0f} s (more than {STALE - SKEW:.0f} s): a concurrent "
                         "gc may have given up waiting for it")

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                self.refresh()
            except GcRace:
                return
            except ArtifactfsError as e:  # the store is unreachable: try again next beat
                log.warning("could not refresh %s: %s", self.key, e)

    def stop(self, remove: bool = True) -> None:
        self._stop.set()
        self._thread.join()
        if remove:
            try:
                self.store.delete(self.key)
            except ArtifactfsError as e:
                log.warning("could not remove %s (it goes stale by itself): %s", self.key, e)


@dataclass
class SeenGc:
    """A gc run that was in progress when a writer started."""

    id: str
    cutoff: float  # it deletes only objects older than this (store time; or a bit later)
    need_check: bool = False


@dataclass
class WriteSession:
    """One writer's lease, for the time from its first object to its record (see above).

    Use as a context manager; write objects through :attr:`store` (or :meth:`save_node`) and
    call :meth:`before_record` right before the record that makes them reachable."""

    inner: Store
    what: str
    seen: list[SeenGc] = field(default_factory=list)
    reused: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.id = _new_id()
        self.key = f"{LEASES}{self.id}.json"
        self.store: Store = GuardedStore(self.inner, self)
        self._beat: Heartbeat | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> WriteSession:
        self._beat = Heartbeat(self.inner, self.key, _stamp(self.what))
        try:
            self._note_gcs(self._beat.started)
        except BaseException:
            self._beat.stop()
            raise
        return self

    def _note_gcs(self, now: float) -> None:
        for gid, item in _ids(self.inner, MARKERS):
            if now - item.mtime > STALE:
                continue
            doc = _doc(self.inner, item.key)
            if doc is None or doc.get("phase") == "mark":
                continue  # it lists the leases, then marks, again: it sees this one's record
            grace = doc.get("grace")
            if isinstance(grace, int | float):
                # it started before the marker's last write (and, but for a slow lease
                # write, before ``now``): it takes nothing younger than that - grace
                self.seen.append(SeenGc(gid, max(now, item.mtime) - float(grace)))

    def __exit__(self, *exc: object) -> None:
        if self._beat is not None:
            self._beat.stop()

    def save_node(self, node: model.Node) -> None:
        for oid, data in model.node_objects(node):
            self.store.put_if_absent(model.object_key(oid), data)

    def reuse(self, key: str, data: bytes) -> None:
        """put-if-absent found ``key``: note it, and touch it if a gc might take it."""
        with self._lock:
            self.reused.add(key)
        if not self.seen:
            return
        cutoff = max(g.cutoff for g in self.seen)
        item = self.inner.head(key)
        if item is None:  # swept a moment ago: write it again
            self.inner.put_if_absent(key, data)
        elif item.mtime < cutoff + 1.0:
            self.inner.touch(key, data)

    def before_record(self) -> None:
        """Raise unless every object this writer relies on is still in the store and will stay
        there once its record exists (call it right before writing the record)."""
        assert self._beat is not None, "use WriteSession as a context manager"
        self._beat.check()
        if not self.seen:
            return
        since = self._beat.refresh()  # store time after every touch so far
        mono = time.monotonic()
        for g in self.seen:
            g.need_check = g.need_check or self._wait_for(g, since, mono)
        if any(g.need_check for g in self.seen):
            missing = sorted(k for k in self.reused if self.inner.head(k) is None)
            if missing:
                raise GcRace(
                    f"a gc running on the store removed {len(missing)} object(s) this write "
                    f"reuses (first: {missing[0]}): nothing was published, run it again")
        self.seen = [g for g in self.seen if not g.need_check]
        self._beat.check()

    def _wait_for(self, g: SeenGc, since: float, mono: float) -> bool:
        """Wait while gc ``g`` may still delete what it listed before ``since``; whether it
        may have deleted something this writer touched (then the writer checks)."""
        key = f"{MARKERS}{g.id}.json"
        pause = POLL
        while True:
            item = self.inner.head(key)
            if item is None:
                return True  # finished (maybe sweeping while we touched)
            if since + (time.monotonic() - mono) - item.mtime > STALE + SKEW:
                return True  # dead (a gc refuses to delete after such a pause)
            doc = _doc(self.inner, key)
            if doc is None:
                return True
            if doc.get("phase") != "sweep" or self.id in (doc.get("waiting_for") or ()):
                return False  # not sweeping yet: it lists every object after our touches
            page = doc.get("page_since")
            if isinstance(page, int | float) and page > since:
                return True  # every prefix listed before our touches is done
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


class GuardedStore(Store):
    """A store whose put-if-absent of objects reports existing ones to a write session."""

    def __init__(self, inner: Store, session: WriteSession) -> None:
        self.inner, self.session = inner, session
        self.uri = inner.uri

    def __getattr__(self, name: str) -> Any:  # io_threads and other store tuning
        return getattr(self.inner, name)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if self.inner.put_if_absent(key, data):
            return True
        if key.startswith("objects/"):
            self.session.reuse(key, data)
        return False

    def put_object(self, key: str, data: bytes, likely_present: bool = False) -> bool:
        """The inner store's look-before-write (a HEAD on S3): an object found there is
        reused exactly like one put-if-absent found."""
        if likely_present and self.inner.reuse(key):
            self.session.reuse(key, data)
            return False
        return self.put_if_absent(key, data)

    def reuse(self, key: str) -> bool:
        return self.inner.reuse(key)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        return self.inner.get_with_etag(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self.inner.get_range(key, start, length)

    def head(self, key: str) -> ListItem | None:
        return self.inner.head(key)

    def cas(self, key: str, data: bytes, etag: str | None) -> str:
        return self.inner.cas(key, data, etag)

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str) -> Iterator[ListItem]:
        return self.inner.list(prefix)

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        return self.inner.list_dirs(prefix)

    def sync(self) -> None:
        self.inner.sync()

    def local_path(self, key: str) -> str | None:
        return self.inner.local_path(key)

    def touch(self, key: str, data: bytes) -> None:
        self.inner.touch(key, data)


# --- the gc side -----------------------------------------------------------------------------

@dataclass
class Lease:
    id: str
    mtime: float
    doc: dict[str, Any]

    def describe(self) -> str:
        d = self.doc
        return f"{d.get('what', '?')} (host {d.get('host', '?')}, pid {d.get('pid', '?')})"


class GcRun:
    """A gc run's marker and its dealings with the writers' leases."""

    def __init__(self, store: Store, grace: float) -> None:
        self.store = store
        self.id = _new_id()
        self.key = f"{MARKERS}{self.id}.json"
        self.beat = Heartbeat(store, self.key, {**_stamp("gc"), "phase": "mark",
                                                "grace": grace})
        self.t0 = self.beat.started
        self.waiting_for: set[str] = set()
        self.stale: list[str] = []

    def close(self) -> None:
        self.beat.stop()

    def last_leases(self) -> list[Lease]:
        """The leases once the mark is done: from now on, a new writer can not count on this
        run waiting for it (it reads phase ``wait``), so it takes the care gcsync.py says."""
        self.beat.refresh(phase="wait")
        return self.leases()

    def leases(self) -> list[Lease]:
        """Live leases; stale ones are removed (their writers will refuse to publish)."""
        now = self.beat.store_now()
        out = []
        for lid, item in _ids(self.store, LEASES):
            if now - item.mtime > STALE:
                self.stale.append(lid)
                self.store.delete(item.key)
                continue
            out.append(Lease(lid, item.mtime, _doc(self.store, item.key) or {}))
        return out

    def wait_for_writers(self, leases: Iterable[Lease], timeout: float,
                         progress: Callable[[list[Lease]], None] | None = None) -> None:
        """Record the leases this run waits for, then wait until each is gone or stale."""
        pending = {le.id: le for le in leases}
        self.waiting_for = set(pending)
        self.beat.refresh(waiting_for=sorted(pending))
        deadline = time.monotonic() + timeout
        pause = POLL
        while pending:
            self.beat.check()
            now = self.beat.store_now()
            live = {lid: item for lid, item in _ids(self.store, LEASES)}
            for lid in list(pending):
                item = live.get(lid)
                if item is None or now - item.mtime > STALE:
                    del pending[lid]
            if not pending:
                return
            if progress is not None:
                progress(list(pending.values()))
            if time.monotonic() > deadline:
                shown = "; ".join(le.describe() for le in list(pending.values())[:5])
                raise GcRace(f"{len(pending)} writer(s) still in flight after {timeout:g} s: "
                             f"{shown}; nothing was deleted, run gc again later")
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def page(self) -> float:
        """Mark the start of a new listing of the sweep: every listing from now on starts
        after the returned store time (that of the marker's previous write), which writers
        read as ``page_since``."""
        self.beat.check()
        since = self.beat.last_mtime
        self.beat.refresh(phase="sweep", page_since=since)
        return since

    def check(self) -> None:
        self.beat.check()
