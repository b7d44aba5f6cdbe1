"""The read-ahead's window of GETs in flight (artifactfs/mount/readahead.py), against model
stores: one whose latency does not grow with concurrency (S3, with a long tail) and one that
queues (a server bound by its CPU, like moto on the benchmark's two cores)."""

from __future__ import annotations

import random

from artifactfs.mount.readahead import LEAST, PROBE_EVERY, Window


def drive(w: Window, latency: object, n: int) -> list[int]:
    """Feed ``n`` GETs whose time is ``latency(in_flight, rng)``; the limits seen."""
    rng = random.Random(7)
    seen = []
    for _ in range(n):
        w.sample(latency(w.limit, rng))  # type: ignore[operator]
        seen.append(w.limit)
    return seen


def s3(in_flight: int, rng: random.Random) -> float:
    """~20 ms whatever the concurrency, a long tail (lognormal, p99 ~4x the median)."""
    return 0.02 * rng.lognormvariate(0, 0.6)


def queueing(in_flight: int, rng: random.Random) -> float:
    """2 ms of service per request queued, one more in flight (the reader's own GET)."""
    return 0.002 * (in_flight + 1) * rng.uniform(0.8, 1.2)


def test_a_store_that_does_not_queue_gets_every_worker() -> None:
    w = Window(16)
    seen = drive(w, s3, 3000)
    assert seen[0] == LEAST
    assert seen.index(16) < 400  # grown within a few hundred GETs
    tail = seen[1000:]
    assert sum(x == 16 for x in tail) > 0.9 * len(tail)  # probes drop it only briefly


def test_a_store_that_queues_keeps_few_in_flight() -> None:
    w = Window(16)
    seen = drive(w, queueing, 3000)
    assert max(seen[200:]) <= 6 and min(seen[200:]) >= LEAST  # 17 before


def test_the_window_follows_a_store_that_slows_down_and_recovers() -> None:
    w = Window(16)
    drive(w, s3, 1000)
    assert w.limit == 16
    drive(w, queueing, 2 * PROBE_EVERY)  # the store starts queueing: fewer in flight
    assert w.limit <= 6
    drive(w, s3, 3 * PROBE_EVERY)  # and back
    assert w.limit == 16


def test_one_worker_is_one() -> None:
    w = Window(1)
    drive(w, queueing, 100)
    assert w.limit == 1
