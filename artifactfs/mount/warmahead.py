"""Warm-ahead of a directory's small files on a local store: the read-through rule of
readahead.py, with a cheaper way of making a file ready ahead of its reader.

On a local store a first read is bound by CPU, not by waiting: one worker-thread hop per file
costs more than the hash it runs.  So the reader's own open verifies a small file on the trio
thread when the kernel caches it (``BlobCache.start``), and what is left to do ahead is to get
it cached and its digest checked, many files per hop: a worker takes up to ``BATCH`` files
of a directory being read through, opens, hashes and closes each (its bytes land in the page
cache) and hands their identities to :meth:`BlobCache.remember`.  The reader's open then finds
the path in the dentry cache and an unchanged identity: an ``fstat``, no hash, no hop.

What is subtle: nothing here makes a piece ready.  A file verified ahead and rewritten before
its reader opens it has a new identity, and is hashed again at open; a file that does not
verify is left to its reader, whose open reports it.
"""

from __future__ import annotations

import logging

import trio

from .readahead import AFTER, ReadAhead

log = logging.getLogger(__name__)
BATCH = 32  # files verified per worker-thread hop


class WarmAhead(ReadAhead):
    """Per mount on a local store; see the module docstring."""

    # a file costs a read the disk would serve anyway and ~30 µs of a worker: a directory
    # being read through is covered at once (a reader that stops costs ≤ 128 small files)
    first, per_open = 128, 8
    after_warm = AFTER  # three opens in every directory, as it was measured with

    async def _worker(self) -> None:
        try:
            while True:
                batch = [await self._next()]
                while len(batch) < BATCH and (p := self._take()) is not None:
                    batch.append(p)
                todo = [p for p in batch if not self.blobs.known(p.key)]
                try:
                    got = await trio.to_thread.run_sync(self.blobs.verify_local, todo)
                except Exception as e:  # never fails a reader: its own open reports errors
                    log.debug("warm-ahead failed: %s", e)
                    got = []
                self.blobs.remember(got)
                self.fetched += len(got)
                done = {k for k, _ in got}
                for p in batch:
                    if p.key not in done:
                        self._drop(p.key)
        finally:
            self._running -= 1
