"""The FUSE request loop's wait for the next request, without a trip through trio's I/O
manager when a request is already queued.

pyfuse3's loop (``_session_loop``, one per task) waits for every request in
``_wait_fuse_readable``: a ``trio.Lock``, then ``trio.lowlevel.wait_readable`` on the
``/dev/fuse`` descriptor, which parks the task, changes the epoll registration, runs a
scheduler round and wakes the task again, even when the kernel already has requests queued.
With several readers at once that is nearly always, and it cost about a third of the trio
thread's CPU on a first read of small files (docs/mount.md).  :func:`install` puts
:class:`FastWait` in its place: it first asks the descriptor (one ``poll`` with no timeout)
and goes on at once when a request is queued; only when none is does a task park on the
descriptor, one task at a time, as before.

What is subtle:

* The descriptor is blocking: a task that read when nothing was queued would stop the whole
  loop until the next request.  So a task goes on only right after a ``poll`` that saw a
  request, with nothing between that ``poll`` and pyfuse3's read of the request (no
  ``await``: trio runs one task at a time).  A task woken from its park polls again before
  going on, because another task may have taken the request it was woken for.
* Every 16th wait first lets the scheduler run (a checkpoint), so worker results and timers
  are not starved by a steady stream of requests.
* pyfuse3 counts the tasks waiting inside its own function, starts a task when none waits and
  ends tasks when several do.  None are counted here, so it starts tasks up to its
  ``max_tasks`` (99) and keeps them; idle ones sit on the lock, costing no CPU.  Each holds a
  request buffer whose pages are touched only by the requests it received.
* ``pyfuse3.terminate`` can not be seen from here: the daemon calls :func:`terminate`, which
  marks the loop ended before it calls pyfuse3's.
* pyfuse3's loop looks the function up in its module namespace at every request (a Cython
  ``def`` at module level), which is what makes the replacement take.  A pyfuse3 without that
  function, or of a version this was not checked against, is left as it is, and
  ``ARTIFACTFS_FUSE_LOOP=plain`` leaves it as it is too.
"""

from __future__ import annotations

import logging
import os
import select

import pyfuse3
import trio

log = logging.getLogger(__name__)
CHECKED = ("3.3.", "3.4.", "3.5.")  # pyfuse3 versions whose _session_loop this was read against
YIELD_EVERY = 16  # waits between two scheduler checkpoints


class FastWait:
    """``_wait_fuse_readable`` of pyfuse3: True when a request can be read, False when the
    loop ends."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False
        self.waits = 0
        self.parks = 0  # waits that had to park on the descriptor
        self._lock = trio.Lock()  # one task at a time parks on the descriptor
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    async def __call__(self) -> bool:
        while not self.closed:
            self.waits += 1
            if not self.waits % YIELD_EVERY:
                await trio.lowlevel.checkpoint()
            if self._poll.poll(0):  # nothing may await between this and pyfuse3's read
                return not self.closed
            self.parks += 1
            try:
                async with self._lock:
                    if not self.closed:
                        await trio.lowlevel.wait_readable(self.fd)
            except trio.ClosedResourceError:
                self.closed = True
        return False

    def terminate(self) -> None:
        self.closed = True


_installed: FastWait | None = None


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
    global _installed
    version = str(getattr(pyfuse3, "__version__", ""))
    if os.environ.get("ARTIFACTFS_FUSE_LOOP") == "plain" or \
            not hasattr(pyfuse3, "_wait_fuse_readable") or not version.startswith(CHECKED):
        log.info("pyfuse3 %s: its own request loop is used", version or "?")
        return None
    fd = fuse_fd()
    if fd is None:
        log.info("no single /dev/fuse descriptor: pyfuse3's own request loop is used")
        return None
    _installed = FastWait(fd)
    pyfuse3._wait_fuse_readable = _installed  # type: ignore[attr-defined]
    return _installed


def terminate() -> None:
    """End the FUSE loop (``pyfuse3.terminate``, with the wait above told first)."""
    if _installed is not None:
        _installed.terminate()
    pyfuse3.terminate()
