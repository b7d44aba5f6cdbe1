"""The FUSE loop's fast wait (mount/fuseloop.py), on a pipe standing in for /dev/fuse."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyfuse3
import pytest
import trio

from artifactfs.mount import fuseloop
from artifactfs.mount.fuseloop import YIELD_EVERY, FastWait


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


class Slow:
    """pyfuse3's own wait: waits until the descriptor is readable, counting its callers."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        await trio.lowlevel.wait_readable(self.fd)
        return True


def test_a_queued_request_is_answered_without_the_slow_wait(pipe: tuple[int, int]) -> None:
    r, w = pipe
    slow = Slow(r)
    wait = FastWait(r, slow)
    os.write(w, b"x")

    async def main() -> None:
        for _ in range(3 * YIELD_EVERY):
            assert await wait() is True

    trio.run(main)
    assert slow.calls == 0
    assert wait.fast == 3 * YIELD_EVERY


def test_nothing_queued_takes_the_slow_wait(pipe: tuple[int, int]) -> None:
    r, w = pipe
    slow = Slow(r)
    wait = FastWait(r, slow)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.sleep(0.05)
            assert slow.calls == 1 and wait.inside == 1
            os.write(w, b"x")
        assert wait.inside == 0

    trio.run(main)
    assert wait.fast == 0


def test_no_fast_answer_while_another_task_owns_the_descriptor(pipe: tuple[int, int]) -> None:
    """A task parked in pyfuse3's wait was (or will be) woken for the queued request: a
    second task must not read it too, or the first would block the loop in a read."""
    r, w = pipe
    gate = trio.Event()
    calls: list[str] = []

    async def slow() -> bool:
        calls.append("slow")
        await gate.wait()
        return True

    wait = FastWait(r, slow)
    os.write(w, b"x")  # readable all along

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            wait.inside = 1  # another task is inside pyfuse3's wait
            nursery.start_soon(wait)
            await trio.sleep(0.01)
            assert calls == ["slow"] and wait.fast == 0
            wait.inside -= 1
            gate.set()

    trio.run(main)


def test_the_fast_path_lets_other_tasks_run(pipe: tuple[int, int]) -> None:
    """A steady stream of requests does not starve the scheduler's other tasks."""
    r, w = pipe
    wait = FastWait(r, Slow(r))
    os.write(w, b"x")
    ran: list[int] = []

    async def other() -> None:
        ran.append(1)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            for _ in range(YIELD_EVERY):
                await wait()
            assert ran == [1]

    trio.run(main)


def test_install_leaves_an_unchecked_pyfuse3_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    orig = pyfuse3._wait_fuse_readable  # type: ignore[attr-defined]
    monkeypatch.setattr(pyfuse3, "__version__", "9.0.0", raising=False)
    assert fuseloop.install() is None
    assert pyfuse3._wait_fuse_readable is orig  # type: ignore[attr-defined]


def test_install_needs_the_fuse_descriptor() -> None:
    orig = pyfuse3._wait_fuse_readable  # type: ignore[attr-defined]
    assert fuseloop.fuse_fd() is None  # this test process has not mounted anything
    assert fuseloop.install() is None
    assert pyfuse3._wait_fuse_readable is orig  # type: ignore[attr-defined]
