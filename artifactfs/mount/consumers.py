"""Lineage captured from reads: a process that reads a version through the mount while it
belongs to a run is recorded as that run's consumer of the version (the ``used_by`` marker
``commit --input`` and the API's ``use_artifact`` write), once per (run, version).

A process belongs to the run ``P/RUN`` when its environment at exec time holds
``ARTIFACTFS_RUN=P/RUN`` (children inherit it, so DataLoader workers count too), or when it
or an ancestor was attached over the control socket (``run.attach``: what the Python API's
``init`` does, since a variable set inside a running process is not visible from outside).

Cost, and why reads are not slowed: on the open path this is one dictionary lookup per open
(pid → run, remembered for :data:`PID_TTL` seconds) and one set lookup (run, version).  A pid
seen for the first time costs one read of ``/proc/PID/environ`` (and, when attachments exist,
of ``/proc/PID/stat`` up its ancestors), on the trio thread: a few microseconds of procfs,
once per process.  Each new (run, version) pair costs one store write pair, made by a worker
thread after the open replied.

What is subtle (trust): the daemon writes the markers with its own credentials, so the
caller must be allowed what ``commit --run P/RUN --input REF`` would allow him: to write
project ``P`` (a run lives there) — he could read the version, or the open would have failed.
A run named by a process that may not write its project is ignored with one log line per
(uid, run).  Attachments are keyed by the attaching process's pid and start time, so a reused
pid does not inherit them, and only processes of the same uid follow an attachment.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import trio

from ..catalog import Catalog, RunRecord
from ..errors import ArtifactfsError, NotFound
from ..names import check_name, check_project
from .inodes import VersionInfo

log = logging.getLogger(__name__)
ENV = b"ARTIFACTFS_RUN="
PID_TTL = 30.0
MAX_PIDS = 4096
MAX_PAIRS = 65536
MAX_DEPTH = 64
MayWrite = Callable[[int, str], bool]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError:
        return b""


def env_run(pid: int) -> str | None:
    """``P/RUN`` from the process's exec-time environment, if valid."""
    for item in _read(f"/proc/{pid}/environ").split(b"\0"):
        if item.startswith(ENV):
            return valid_run(item[len(ENV):].decode("utf-8", "replace"))
    return None


def valid_run(value: str) -> str | None:
    project, sep, rid = value.partition("/")
    try:
        check_project(project)
        check_name(rid, "run id")
    except ArtifactfsError:
        return None
    return value if sep else None


def stat_of(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, start time, uid) of a process, from procfs."""
    raw = _read(f"/proc/{pid}/stat")
    fields = raw.rpartition(b")")[2].split()
    try:
        ppid, start = int(fields[1]), int(fields[19])
        uid = int(_read(f"/proc/{pid}/status").split(b"\nUid:")[1].split()[0])
    except (IndexError, ValueError):
        return None
    return ppid, start, uid


class Consumers:
    """Which run each reading process belongs to, and which (run, version) pairs are marked."""

    def __init__(self, catalog: Catalog, may_write: MayWrite,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.catalog, self.may_write, self.clock = catalog, may_write, clock
        self._pids: OrderedDict[int, tuple[float, str | None]] = OrderedDict()
        self._attached: dict[tuple[int, int], tuple[str, int]] = {}  # (pid, start) -> run, uid
        self._marked: OrderedDict[tuple[str, str, str, int], None] = OrderedDict()
        self._refused: set[tuple[int, str]] = set()
        self.writes = 0

    def attach(self, pid: int, uid: int, run: str) -> None:
        """``run.attach`` over the control socket: ``pid`` (the caller) and its children."""
        if valid_run(run) is None:
            raise ArtifactfsError(f"invalid run {run!r}: expected PROJECT/RUN_ID")
        st = stat_of(pid)
        if st is None:
            raise NotFound(f"process {pid} is gone")
        self._attached[(pid, st[1])] = (run, uid)
        self._pids.pop(pid, None)

    def run_of(self, pid: int) -> str | None:
        hit = self._pids.get(pid)
        now = self.clock()
        if hit is not None and now - hit[0] < PID_TTL:
            return hit[1]
        run = env_run(pid) or (self._ancestor_run(pid) if self._attached else None)
        self._pids[pid] = (now, run)
        self._pids.move_to_end(pid)
        while len(self._pids) > MAX_PIDS:
            self._pids.popitem(last=False)
        return run

    def _ancestor_run(self, pid: int) -> str | None:
        uid = None
        for _ in range(MAX_DEPTH):
            st = stat_of(pid)
            if st is None:
                return None
            ppid, start, puid = st
            uid = puid if uid is None else uid
            hit = self._attached.get((pid, start))
            if hit is not None and hit[1] == uid:
                return hit[0]
            if ppid <= 1:
                return None
            pid = ppid
        return None

    def opened(self, pid: int, uid: int, ver: VersionInfo | None) -> None:
        """A file of ``ver`` was opened by ``pid`` (trio thread; never raises, never waits)."""
        if ver is None or pid <= 0:
            return
        try:
            run = self.run_of(pid)
        except Exception:  # procfs surprises must never fail a read
            return
        if run is None:
            return
        key = (run, ver.project, ver.name, ver.version)
        if key in self._marked:
            return
        if not self.may_write(uid, run.partition("/")[0]):
            if (uid, run) not in self._refused:
                self._refused.add((uid, run))
                log.warning("uid %d reads as run %r but may not write its project: not "
                            "recorded", uid, run)
            return
        self._marked[key] = None
        while len(self._marked) > MAX_PAIRS:
            self._marked.popitem(last=False)
        trio.lowlevel.spawn_system_task(self._mark, key)

    async def _mark(self, key: tuple[str, str, str, int]) -> None:
        try:
            await trio.to_thread.run_sync(self._write, key)
        except Exception as e:
            self._marked.pop(key, None)  # try again on a later open
            log.warning("could not record run %s as a consumer of %s/%s:v%d: %s", *key, e)

    def _write(self, key: tuple[str, str, str, int]) -> None:
        run, project, name, version = key
        p, _, rid = run.partition("/")
        try:
            rec: RunRecord = self.catalog.get_run(p, rid)
        except NotFound:
            rec = self.catalog.create_run(p, run_id=rid)
        self.catalog.mark_use(rec, project, name, version)
        self.writes += 1
