"""Worker-thread lanes of the read path: blocking jobs (open and hash a piece, fetch it from the
store) run in threads, at most ``limit`` at a time per lane, and each result comes back as a
callback on the trio thread.

Why not ``trio.to_thread.run_sync`` in a task per job: a small file's first read is one such
job, and a task plus ``to_thread`` (limiter checkpoints, context copy, thread naming, task
wake-up) cost more CPU than hashing the file.  Here a job is one hand-off to trio's thread
cache and one ``run_sync_soon`` back.

What is subtle: callbacks run only while the trio run that submitted the job is alive.  A job
that finishes after it ended (the daemon is stopping) hands its result to ``orphan`` instead,
in the worker thread, so that descriptors it opened are closed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import outcome
import trio

T = TypeVar("T")


class Lane(Generic[T]):
    """At most ``limit`` jobs in threads at a time; more wait in FIFO order (trio thread)."""

    def __init__(self, limit: int, orphan: Callable[[outcome.Outcome[T]], None] | None = None
                 ) -> None:
        self.limit = max(1, limit)
        self.running = 0
        self._pending: deque[tuple[Callable[[], T], Callable[[outcome.Outcome[T]], None]]] = \
            deque()
        self._orphan = orphan or (lambda result: None)

    def submit(self, job: Callable[[], T], done: Callable[[outcome.Outcome[T]], None]) -> None:
        """Run ``job()`` in a worker thread, then ``done(outcome)`` on the trio thread."""
        if self.running < self.limit:
            self._launch(job, done)
        else:
            self._pending.append((job, done))

    def _launch(self, job: Callable[[], T], done: Callable[[outcome.Outcome[T]], None]) -> None:
        self.running += 1
        token = trio.lowlevel.current_trio_token()

        def deliver(result: outcome.Outcome[T]) -> None:  # in the worker thread
            try:
                token.run_sync_soon(self._finish, done, result)
            except trio.RunFinishedError:
                self._orphan(result)

        trio.lowlevel.start_thread_soon(job, deliver)

    def _finish(self, done: Callable[[outcome.Outcome[T]], None],
                result: outcome.Outcome[T]) -> None:
        self.running -= 1
        if self._pending:
            self._launch(*self._pending.popleft())
        done(result)


def fire(job: Callable[[], Any]) -> None:
    """Run ``job()`` in a worker thread and forget it (its result and errors are dropped)."""
    trio.lowlevel.start_thread_soon(job, lambda result: None)
