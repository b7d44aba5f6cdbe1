"""The digest hints of ``put``: what a local file hashed to, keyed by what ``stat`` said of it
(path, device, inode, size, mtime, ctime), so putting a directory that mostly did not change
reads only the files that did.  One SQLite file per user, in the cache directory.

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
* It is only a cache: any SQLite or OS error turns it off for the process (logged once), and
  ``put`` carries on hashing everything.  Rows unused for :data:`KEEP_DAYS` are dropped.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable

from .ingest import Source

log = logging.getLogger(__name__)
RACY_NS = 2_000_000_000
MIN_SIZE = 1 << 20  # smaller files are read again: hashing them costs about what a lookup does
KEEP_DAYS = 90
_SCHEMA = """CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER,
    ctime_ns INTEGER, digest TEXT, used INTEGER)"""


class StatCache:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=5)
            self.db.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            self._off(e)

    def _off(self, e: BaseException) -> None:
        log.warning("not using the digest cache %s: %s", self.path, e)
        if self.db is not None:
            self.db.close()
        self.db = None

    def get(self, src: Source) -> str | None:
        """The digest recorded for this file with exactly this stat, if any."""
        if self.db is None or src.kind != "file" or src.size < MIN_SIZE:
            return None
        try:
            row = self.db.execute(
                "SELECT dev, ino, size, mtime_ns, ctime_ns, digest FROM files WHERE path = ?",
                (os.path.abspath(src.local),)).fetchone()
        except sqlite3.Error as e:
            self._off(e)
            return None
        if row is None or tuple(row[:5]) != (src.dev, src.ino, src.size, src.mtime_ns,
                                             src.ctime_ns):
            return None
        return str(row[5])

    def record(self, found: Iterable[tuple[Source, str]], scan_started_ns: int) -> None:
        """Remember the digests of files hashed by a put that started at ``scan_started_ns``
        (files changed shortly before it are left out, see the module docstring)."""
        if self.db is None:
            return
        now = int(time.time())
        rows = [(os.path.abspath(s.local), s.dev, s.ino, s.size, s.mtime_ns, s.ctime_ns, d, now)
                for s, d in found
                if s.kind == "file" and s.size >= MIN_SIZE and s.ino
                and s.ctime_ns < scan_started_ns - RACY_NS]
        try:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)",
                                    rows)
                self.db.execute("DELETE FROM files WHERE used < ?", (now - KEEP_DAYS * 86400,))
        except sqlite3.Error as e:
            self._off(e)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
