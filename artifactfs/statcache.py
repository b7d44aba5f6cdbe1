"""Digest records of local files: what a local file hashed to, keyed by what ``stat`` said of
it (path, device, inode, size, mtime, ctime).  ``put`` uses them as hints, so putting a
directory that mostly did not change reads only the files that did; ``get`` (dlcache.py)
records every file it writes and uses them to keep files already in place and to find local
copies of content by digest.  One SQLite file per user, in the cache directory; it also
remembers which version each download root holds (for ``verify ROOT``).

What is subtle:

* A hint is never trusted alone.  ``Repo.put_path`` reuses an entry only when the latest live
  version of the same artifact holds that very digest at that very path: the bytes are then in
  the store (objects of live versions are never collected), and a wrong hint could at worst
  cost a re-read, never a version pointing at missing or other bytes.
* Any change to a file changes its ctime (which, unlike mtime, no tool can set back) or its
  inode.  A file changed within the same clock tick as it was recorded could keep its stat:
  files whose ctime is less than :data:`RACY_NS` before the scan started are not recorded
  (the way git treats "racily clean" index entries).
* Only files of :data:`MIN_SIZE` or more have hints: for small files a lookup costs about what
  reading and hashing them does (20 000 files of 100 bytes: no gain, 0.4 s of lookups).
* ``get`` writes files whose mtime it sets to the version's recorded one, in the past: an
  ordinary write after the record moves the mtime, so such files are recorded at once (a
  change that keeps the stat then needs a deliberate ``utime`` back within one tick).  Files
  it finds already in place are recorded under the racy rule above.  A record found by digest
  (a local copy elsewhere) is only a candidate: every piece read from it is verified.
* It is only a cache: any SQLite or OS error turns it off for the process (logged once), and
  ``put`` carries on hashing everything.  Rows unused for :data:`KEEP_DAYS` are dropped.
  Calls are serialized by a lock, so worker threads of a download may share one instance.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from typing import Any

from .ingest import Source

log = logging.getLogger(__name__)
RACY_NS = 2_000_000_000
MIN_SIZE = 1 << 20  # smaller files are read again: hashing them costs about what a lookup does
KEEP_DAYS = 90
_SCHEMA = """CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER,
    ctime_ns INTEGER, digest TEXT, used INTEGER);
CREATE INDEX IF NOT EXISTS files_digest ON files (digest);
CREATE TABLE IF NOT EXISTS roots (
    path TEXT PRIMARY KEY, label TEXT, root TEXT, prefix TEXT, used INTEGER)"""
Stat = tuple[int, int, int, int, int]  # dev, ino, size, mtime_ns, ctime_ns


def stat_key(st: os.stat_result) -> Stat:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def settled(st: os.stat_result, now_ns: int) -> bool:
    """Whether a change to the file would move its stat: its ctime is older than a tick
    (:data:`RACY_NS`), or its mtime was set into the past (an ordinary write moves it)."""
    return st.st_ctime_ns < now_ns - RACY_NS or st.st_mtime_ns < st.st_ctime_ns - RACY_NS


class StatCache:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=5, check_same_thread=False)
            # a cache: WAL with NORMAL sync keeps it consistent and makes writes cheap
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            self._off(e)

    def _off(self, e: BaseException) -> None:
        log.warning("not using the digest cache %s: %s", self.path, e)
        if self.db is not None:
            self.db.close()
        self.db = None

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            if self.db is None:
                return []
            try:
                return self.db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                self._off(e)
                return []

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            if self.db is None or not rows:
                return
            try:
                with self.db:
                    self.db.executemany(sql, rows)
            except sqlite3.Error as e:
                self._off(e)

    def get(self, src: Source) -> str | None:
        """put's hint: the digest recorded for this file with exactly this stat, if any."""
        if src.kind != "file" or src.size < MIN_SIZE:
            return None
        return self._digest(os.path.abspath(src.local),
                            (src.dev, src.ino, src.size, src.mtime_ns, src.ctime_ns))

    def _digest(self, path: str, key: Stat) -> str | None:
        rows = self._query("SELECT dev, ino, size, mtime_ns, ctime_ns, digest FROM files "
                           "WHERE path = ?", (path,))
        if not rows or tuple(rows[0][:5]) != key:
            return None
        return str(rows[0][5])

    def known(self, path: str, st: os.stat_result) -> str | None:
        """The digest recorded for the file at ``path`` (absolute) with exactly stat ``st``."""
        return self._digest(path, stat_key(st))

    def holders(self, digest: str, size: int, limit: int = 4) -> list[tuple[str, Stat]]:
        """Local files recorded as holding content ``digest``: candidates only (their stat
        must still match, and what is read from them is verified)."""
        rows = self._query("SELECT path, dev, ino, size, mtime_ns, ctime_ns FROM files "
                           "WHERE digest = ? AND size = ? ORDER BY used DESC LIMIT ?",
                           (digest, size, limit))
        return [(str(r[0]), (r[1], r[2], r[3], r[4], r[5])) for r in rows]

    def record_stats(self, found: Iterable[tuple[str, os.stat_result, str]]) -> None:
        """Remember (absolute path, stat, digest) of files whose content is known; files
        that are not :func:`settled` are left out."""
        now = time.time_ns()
        self._write("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)",
                    [(p, *stat_key(st), d, now // 10**9) for p, st, d in found
                     if st.st_ino and settled(st, now)])

    def forget(self, path: str) -> None:
        self._write("DELETE FROM files WHERE path = ?", [(path,)])

    def remember_root(self, path: str, label: str, root: str, prefix: str | None) -> None:
        """The version (``label``, root node ``root``) last downloaded into ``path``."""
        self._write("INSERT OR REPLACE INTO roots VALUES (?,?,?,?,?)",
                    [(path, label, root, prefix or "", int(time.time()))])

    def root_of(self, path: str) -> tuple[str, str, str] | None:
        """(label, root node, path prefix) last downloaded into ``path``, if any."""
        rows = self._query("SELECT label, root, prefix FROM roots WHERE path = ?", (path,))
        return (str(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None

    def record(self, found: Iterable[tuple[Source, str]], scan_started_ns: int) -> None:
        """Remember the digests of files hashed by a put that started at ``scan_started_ns``
        (files changed shortly before it are left out, see the module docstring)."""
        now = int(time.time())
        self._write("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)",
                    [(os.path.abspath(s.local), s.dev, s.ino, s.size, s.mtime_ns, s.ctime_ns, d,
                      now) for s, d in found
                     if s.kind == "file" and s.size >= MIN_SIZE and s.ino
                     and s.ctime_ns < scan_started_ns - RACY_NS])
        self.expire()

    def expire(self) -> None:
        """Drop rows unused for :data:`KEEP_DAYS`."""
        old = int(time.time()) - KEEP_DAYS * 86400
        self._write("DELETE FROM files WHERE used < ?", [(old,)])
        self._write("DELETE FROM roots WHERE used < ?", [(old,)])

    def close(self) -> None:
        with self._lock:
            if self.db is not None:
                self.db.close()
                self.db = None
