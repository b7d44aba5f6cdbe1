"""The download cache of ``get`` and ``Artifact.download()``: bytes that are already on this
node are not transferred again.

For each file of a version being downloaded into a root, in this order:

1. **In place.** The destination already holds it: its stat matches a digest record of
   statcache.py equal to the entry's digest (written by an earlier ``get`` or ``put``), or —
   no record — it has the entry's size and hashes to its digest (a local read, then
   recorded).  Nothing is written; mode and mtime are set as a download would.
2. **Local copies.** Otherwise every piece (blob or 8 MiB chunk) comes from the first of: the
   old destination file, other local files the records name for the same digest (from other
   roots: a second version sharing most files), the node's content cache
   (``<cache_dir>/blobs/objects``, read only), then the store or the reference's source.

What is subtle:

* Comparison is by digest, never by name: a file moved to another path in the next version is
  copied locally, and a changed file with the old name is fetched.
* Nothing local is trusted blindly except case 1's record (stat identity, see statcache.py):
  every piece read from another file or the content cache is hashed and compared with the
  digest the tree recorded, and a file that fails is dropped as a source.  Writes keep
  fetch.py's guarantees (temp file, verify, rename), so a file that could not be completed
  never appears under its real name.
* Local candidates are opened with ``O_NOFOLLOW`` and must still have the recorded stat, so a
  path that became a symlink or another file is not read.
* References are kept in place only through a record (their digest names the source's
  identity, not the bytes); otherwise they are fetched from their source as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from . import model
from .statcache import StatCache, stat_key

log = logging.getLogger(__name__)
MAX_CANDIDATES = 4
RECORD_BATCH = 512  # digest records written per transaction
HINTS_FILE = "put-hints.db"  # the digest records put started (the name stays for old caches)


@dataclass
class Counts:
    """What a download did: bytes from the store or sources, bytes found on this node."""

    fetched: int = 0  # bytes read from the store or a reference's source
    copied: int = 0  # bytes copied from local files or the content cache (verified)
    kept: int = 0  # bytes already in place
    files_kept: int = 0
    files_written: int = 0


def file_mode(entry: model.Entry) -> int:
    return 0o755 if entry.executable else 0o644


class Reuse:
    """Shared by the worker threads of one download (see the module docstring)."""

    def __init__(self, hints: StatCache | None, blob_dir: str | None = None,
                 enabled: bool = True) -> None:
        self.hints = hints
        self.blob_dir = blob_dir
        self.enabled = enabled  # False: only count (``skip_cache``)
        self.counts = Counts()
        self._lock = threading.Lock()
        self._records: list[tuple[str, os.stat_result, str]] = []

    @classmethod
    def open(cls, cache_dir: str, skip_cache: bool = False) -> Reuse:
        """The user's digest records and the node's content cache under ``cache_dir``; with
        ``skip_cache``, nothing is reused or recorded (every byte from the store)."""
        if skip_cache:
            return cls(None, None, enabled=False)
        try:
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        except OSError as e:  # no usable cache directory (a user without a home): no records
            log.debug("downloading without digest records: %s", e)
            return cls(None, os.path.join(cache_dir, "blobs"))
        return cls(StatCache(os.path.join(cache_dir, HINTS_FILE)),
                   os.path.join(cache_dir, "blobs"))

    def close(self) -> None:
        if self.hints is not None:
            self.flush()
            self.hints.close()

    def flush(self) -> None:
        """Write the digest records collected so far (one transaction)."""
        with self._lock:
            rows, self._records = self._records, []
        if self.hints is not None and rows:
            self.hints.record_stats(rows)

    def __enter__(self) -> Reuse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _count(self, field: str, n: int) -> None:
        with self._lock:
            setattr(self.counts, field, getattr(self.counts, field) + n)

    def fetched(self, n: int) -> None:
        self._count("fetched", n)

    # --- case 1: already in place -----------------------------------------------------------
    def in_place(self, entry: model.Entry, dest: str) -> bool:
        """Whether ``dest`` already holds ``entry`` (then made to look freshly downloaded)."""
        if not self.enabled:
            return False
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
            return False
        known = self.hints.known(dest, st) if self.hints is not None else None
        if known != entry.digest and (entry.kind != "file"
                                      or not self._hashes_to(dest, st, entry)):
            return False
        mode_ok = stat.S_IMODE(st.st_mode) == file_mode(entry)
        mtime_ok = not entry.mtime_ns or st.st_mtime_ns == entry.mtime_ns
        if not (mode_ok and mtime_ok):
            finish_file(dest, entry)
            st = os.lstat(dest)
        if known != entry.digest or not (mode_ok and mtime_ok):
            self.record(dest, st, entry)
        self._count("kept", entry.size)
        self._count("files_kept", 1)
        return True

    def _hashes_to(self, path: str, st: os.stat_result, entry: model.Entry) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            for digest, off, ln in entry.chunk_spans():
                if _read_verified(fd, digest, off, ln) is None:
                    return False
            return stat_key(os.fstat(fd)) == stat_key(st)
        finally:
            os.close(fd)

    def record(self, dest: str, st: os.stat_result, entry: model.Entry) -> None:
        """Remember that ``dest`` with stat ``st`` holds ``entry`` (written in batches)."""
        if self.hints is None:
            return
        with self._lock:
            self._records.append((dest, st, entry.digest))
            full = len(self._records) >= RECORD_BATCH
        if full:
            self.flush()

    def written(self, dest: str, entry: model.Entry) -> None:
        """``dest`` now holds ``entry`` (renamed into place by fetch.py)."""
        self._count("files_written", 1)
        if self.hints is not None:
            self.record(dest, os.lstat(dest), entry)

    # --- case 2: pieces from local copies ---------------------------------------------------
    def sources(self, entry: model.Entry, dest: str) -> LocalSources:
        """Local files that may hold ``entry``'s pieces (verified as they are read)."""
        fds: list[int] = []
        if self.enabled and entry.kind == "file" and entry.size:
            fd = _open_regular(dest, entry.size)
            if fd is not None:
                fds.append(fd)
            if self.hints is not None:
                for path, key in self.hints.holders(entry.digest, entry.size, MAX_CANDIDATES):
                    if path == dest:
                        continue
                    fd = _open_regular(path, entry.size, key)
                    if fd is not None:
                        fds.append(fd)
        return LocalSources(self, fds)

    def cached_piece(self, digest: str, length: int) -> bytes | None:
        """A piece from the node's content cache, verified; ``None`` if not there."""
        if not self.blob_dir:
            return None
        path = os.path.join(self.blob_dir, "objects", digest[:2], digest[2:])
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return _read_verified(fd, digest, 0, length)
        finally:
            os.close(fd)


class LocalSources:
    """Open candidate files for one entry's pieces; a file that fails a check is dropped."""

    def __init__(self, reuse: Reuse, fds: Sequence[int]) -> None:
        self.reuse = reuse
        self.fds = list(fds)
        self._lock = threading.Lock()

    def piece(self, digest: str, offset: int, length: int) -> bytes | None:
        for fd in list(self.fds):
            data = _read_verified(fd, digest, offset, length)
            if data is not None:
                self.reuse._count("copied", length)
                return data
            with self._lock:
                if fd in self.fds:  # its content differs here: no use for later pieces
                    self.fds.remove(fd)
                    os.close(fd)
        data = self.reuse.cached_piece(digest, length)
        if data is not None:
            self.reuse._count("copied", length)
        return data

    def close(self) -> None:
        with self._lock:
            for fd in self.fds:
                os.close(fd)
            self.fds = []


def _open_regular(path: str, size: int, key: tuple[int, ...] | None = None) -> int | None:
    """An fd of the regular file ``path`` if it has ``size`` (and stat ``key``, if given)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size != size or (
            key is not None and stat_key(st) != key):
        os.close(fd)
        return None
    return fd


def _read_verified(fd: int, digest: str, offset: int, length: int) -> bytes | None:
    """``length`` bytes at ``offset`` of ``fd`` if they hash to ``digest``, else ``None``."""
    try:
        data = os.pread(fd, length, offset)
        while len(data) < length:
            more = os.pread(fd, length - len(data), offset + len(data))
            if not more:
                return None
            data += more
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == digest else None


def finish_file(path: str, entry: model.Entry) -> None:
    """Mode and mtime of a downloaded file, as the version recorded them."""
    os.chmod(path, file_mode(entry))
    if entry.mtime_ns:
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
