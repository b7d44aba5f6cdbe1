"""The FUSE request loop's wait for the next request, without a trip through trio's I/O
manager when a request is already queued.

pyfuse3's loop (``_session_loop``) waits for every request in ``_wait_fuse_readable``: a
``trio.Lock`` and ``trio.lowlevel.wait_readable`` on the ``/dev/fuse`` descriptor, which parks
the task, changes the epoll registration, runs a scheduler round and wakes the task again,
even when the kernel already has requests queued.  With several readers at once that is most
of the time, and it costs about a third of the trio thread's CPU on a first read of small
files (docs/mount.md).  :func:`install` puts a wait in its place that first asks the
descriptor (one ``poll`` with no timeout) and goes on at once when a request is there.

What is subtle: the descriptor is blocking, so two tasks must never both read a request that
only one of them was woken for; a task that read when nothing was queued would stop the
whole loop until the next request.  The fast answer is therefore given only while no other
task is inside pyfuse3's own wait (which owns the descriptor then), and nothing lies between
the ``poll`` and pyfuse3's read of the request (no ``await``).  Every 16th fast answer first
lets the scheduler run (a checkpoint), so worker results and timers are not starved by a
steady stream of requests.  The loop looks the function up in pyfuse3's module namespace at
every request (a Cython ``def`` at module level), which is what makes the replacement take;
a pyfuse3 without that function, or whose version was not checked against this, is left
as it is.
"""

from __future__ import annotations

import logging
import os
import select
from collections.abc import Awaitable, Callable

import pyfuse3
import trio

log = logging.getLogger(__name__)
CHECKED = ("3.3", "3.4", "3.5")  # pyfuse3 versions whose _session_loop this was read against
YIELD_EVERY = 16  # fast answers between two scheduler checkpoints


class FastWait:
    """``_wait_fuse_readable`` of pyfuse3, with the fast answer described above."""

    def __init__(self, fd: int, slow: Callable[[], Awaitable[bool]]) -> None:
        self.slow = slow
        self.inside = 0  # tasks inside pyfuse3's own wait (the descriptor is theirs)
        self.fast = 0  # fast answers given
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    async def __call__(self) -> bool:
        if not self.inside:
            self.fast += 1
            if not self.fast % YIELD_EVERY:
                await trio.lowlevel.checkpoint()
            # nothing may await between this poll and pyfuse3's read of the request
            if not self.inside and self._poll.poll(0):
                return True
            self.fast -= 1
        self.inside += 1
        try:
            return await self.slow()
        finally:
            self.inside -= 1


def fuse_fd() -> int | None:
    """This process's ``/dev/fuse`` descriptor, if it has exactly one."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                found.append(int(name))
        except OSError:
            continue
    return found[0] if len(found) == 1 else None


def install() -> FastWait | None:
    """Replace pyfuse3's wait (after ``pyfuse3.init``); None if it was left as it is."""
    slow = getattr(pyfuse3, "_wait_fuse_readable", None)
    version = getattr(pyfuse3, "__version__", "")
    if slow is None or not version.startswith(CHECKED):
        log.info("pyfuse3 %s: its request loop is used as it is", version or "?")
        return None
    if isinstance(slow, FastWait):
        return slow
    fd = fuse_fd()
    if fd is None:
        log.info("no single /dev/fuse descriptor: pyfuse3's request loop is used as it is")
        return None
    wait = FastWait(fd, slow)
    pyfuse3._wait_fuse_readable = wait  # type: ignore[attr-defined]
    return wait
