"""The FUSE loop's wait (mount/fuseloop.py), on a pipe standing in for /dev/fuse and tasks
standing in for pyfuse3's session loops."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pyfuse3
import pytest
import trio

from artifactfs.mount import fuseloop
from artifactfs.mount.fuseloop import YIELD_EVERY, FastWait


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)  # a read with nothing queued raises instead of hanging
    yield r, w
    os.close(r)
    os.close(w)


async def session_loop(wait: FastWait, fd: int, got: list[bytes], busy: float = 0) -> None:
    """pyfuse3's loop: wait, read one request, handle it (sometimes awaiting)."""
    while await wait():
        got.append(os.read(fd, 1))  # BlockingIOError if woken with nothing queued
        if busy:
            await trio.sleep(random.random() * busy)


def test_a_queued_request_is_read_without_parking(pipe: tuple[int, int]) -> None:
    r, w = pipe
    wait = FastWait(r)
    os.write(w, b"x" * 100)
    got: list[bytes] = []

    async def main() -> None:
        for _ in range(100):
            assert await wait() is True
            got.append(os.read(r, 1))

    trio.run(main)
    assert len(got) == 100 and wait.parks == 0


def test_nothing_queued_parks_until_a_request_comes(pipe: tuple[int, int]) -> None:
    r, w = pipe
    wait = FastWait(r)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.sleep(0.05)
            assert wait.parks == 1
            os.write(w, b"x")

    trio.run(main)


def test_many_loops_never_read_a_request_that_is_not_there(pipe: tuple[int, int]) -> None:
    """Loops that park, are woken and race each other for requests: each request is read
    exactly once, and no loop ever reads an empty descriptor (which, on /dev/fuse, would
    block the whole daemon)."""
    r, w = pipe
    wait = FastWait(r)
    got: list[bytes] = []
    random.seed(3)

    total = 0

    async def main() -> None:
        nonlocal total
        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(session_loop, wait, r, got, 0.002 * (i % 3))
            for _ in range(300):
                n = random.randint(1, 4)
                os.write(w, b"x" * n)
                total += n
                await trio.sleep(random.random() * 0.001)
            with trio.fail_after(5):
                while len(got) < total:  # noqa: ASYNC110 (polling a list the loops fill)
                    await trio.sleep(0.01)
            wait.terminate()
            trio.lowlevel.notify_closing(r)

    trio.run(main)
    assert len(got) == total > 300
    assert wait.parks > 0


def test_terminate_ends_every_loop(pipe: tuple[int, int]) -> None:
    """Loops parked on the descriptor and loops waiting for their turn all end."""
    r, _ = pipe
    wait = FastWait(r)
    got: list[bytes] = []

    async def main() -> None:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(session_loop, wait, r, got)
                await trio.sleep(0.02)
                wait.terminate()
                trio.lowlevel.notify_closing(r)  # what pyfuse3.terminate does

    trio.run(main)
    assert got == []


def test_a_stream_of_requests_lets_other_tasks_run(pipe: tuple[int, int]) -> None:
    r, w = pipe
    wait = FastWait(r)
    os.write(w, b"x" * 2 * YIELD_EVERY)
    ran: list[int] = []

    async def other() -> None:
        ran.append(1)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            # trio may run this task before `other` in the batch after a checkpoint, but
            # `other` has run by the second one
            for _ in range(2 * YIELD_EVERY):
                await wait()
                os.read(r, 1)
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


def test_the_escape_hatch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARTIFACTFS_FUSE_LOOP", "plain")
    monkeypatch.setattr(fuseloop, "fuse_fd", lambda: 0)
    orig = pyfuse3._wait_fuse_readable  # type: ignore[attr-defined]
    assert fuseloop.install() is None
    assert pyfuse3._wait_fuse_readable is orig  # type: ignore[attr-defined]
