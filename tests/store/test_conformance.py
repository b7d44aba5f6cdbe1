"""The store conformance suite: every Store implementation must pass all of it.

Runs once per kind of store through the ``store_uri`` fixture (a directory, and a fresh bucket
on the moto S3 server).  It pins down the semantics the catalog relies on: NotFound for
absent keys, put-if-absent that only one of many racing writers wins, compare-and-swap that
loses no update under contention, ranges that stop at the end, lexicographic listings with
keys relative to the store, and large values.  Etags are opaque: only compared, never parsed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from artifactfs import model
from artifactfs.errors import NotFound, PreconditionFailed, UsageError
from artifactfs.store import Store, open_store

T = TypeVar("T")
THREADS = 8


def run_together(n: int, fn: Callable[[int], T]) -> list[T]:
    """``fn(0..n-1)`` on ``n`` threads released at the same moment."""
    barrier = threading.Barrier(n)

    def go(i: int) -> T:
        barrier.wait(timeout=30)
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(go, range(n)))


def test_missing_key(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get("objects/none")
    with pytest.raises(NotFound):
        store.get_with_etag("objects/none")
    with pytest.raises(NotFound):
        store.get_range("objects/none", 0, 10)
    with pytest.raises(NotFound):
        store.get_range("objects/none", 0, 0)
    assert store.head("objects/none") is None
    assert not store.exists("objects/none")
    assert list(store.list("objects/")) == []
    assert store.list_dirs("objects/") == []


def test_put_if_absent_only_once(store: Store) -> None:
    assert store.put_if_absent("objects/ab/cd", b"first")
    assert not store.put_if_absent("objects/ab/cd", b"second")
    assert store.get("objects/ab/cd") == b"first"
    data, etag = store.get_with_etag("objects/ab/cd")
    assert data == b"first"
    item = store.head("objects/ab/cd")
    assert item is not None and item.etag == etag and item.size == 5
    assert store.exists("objects/ab/cd")
    assert store.put_if_absent("objects/empty", b"")
    assert store.get("objects/empty") == b""


def test_put_object_looks_first_only_when_asked(store: Store) -> None:
    """put_object is put-if-absent of a content-addressed object; reuse says whether it is
    there to be referred to."""
    data = b"content-addressed bytes"
    key = model.object_key(model.sha256_hex(data))
    assert not store.reuse(key)
    assert store.put_object(key, data, likely_present=True)  # looked, absent: written
    assert not store.put_object(key, data, likely_present=True)
    assert not store.put_object(key, data)
    assert store.reuse(key) and store.get(key) == data
    other = b"other bytes"
    key2 = model.object_key(model.sha256_hex(other))
    assert store.put_object(key2, other) and store.get(key2) == other


def test_a_write_session_notes_objects_found_by_a_look(store: Store) -> None:
    """gc's protocol (gcsync.py) must hear of every object a writer reuses, also of those
    put_object found with a look instead of a put-if-absent."""
    from artifactfs.gcsync import WriteSession

    data = b"reused bytes"
    key = model.object_key(model.sha256_hex(data))
    assert store.put_if_absent(key, data)
    with WriteSession(store, "test") as w:
        assert not w.store.put_object(key, data, likely_present=True)
        assert key in w.reused
        fresh = b"new bytes"
        assert w.store.put_object(model.object_key(model.sha256_hex(fresh)), fresh,
                                  likely_present=True)
        assert len(w.reused) == 1


def test_put_if_absent_race_has_one_winner(store_uri: str) -> None:
    stores = [open_store(store_uri) for _ in range(THREADS)]
    for round_ in range(3):
        key = f"artifacts/p/n/versions/{round_:010d}.json"

        def create(i: int, key: str = key) -> bool:
            return stores[i].put_if_absent(key, f"writer {i}".encode())

        results = run_together(THREADS, create)
        assert results.count(True) == 1, results
        winner = results.index(True)
        assert stores[0].get(key) == f"writer {winner}".encode()


def test_cas_create_update_and_stale(store: Store) -> None:
    key = "artifacts/p/n/aliases/best.json"
    e1 = store.cas(key, b'{"version": 1}', None)
    with pytest.raises(PreconditionFailed):
        store.cas(key, b'{"version": 9}', None)  # exists
    assert store.get_with_etag(key) == (b'{"version": 1}', e1)
    e2 = store.cas(key, b'{"version": 2}', e1)
    assert e2 != e1
    with pytest.raises(PreconditionFailed):
        store.cas(key, b'{"version": 3}', e1)  # stale
    data, etag = store.get_with_etag(key)
    assert (data, etag) == (b'{"version": 2}', e2)
    item = store.head(key)
    assert item is not None and item.etag == e2
    assert store.cas(key, b'{"version": 4}', item.etag) != e2
    assert store.get(key) == b'{"version": 4}'
    with pytest.raises(PreconditionFailed):
        store.cas("artifacts/p/n/aliases/gone.json", b"{}", e2)  # no such record
    store.delete(key)
    with pytest.raises(PreconditionFailed):
        store.cas(key, b"{}", etag)  # removed since read
    assert not store.exists(key)


def test_cas_increments_lose_nothing(store_uri: str) -> None:
    per_thread = 10
    key = "runs/p/counter.json"
    open_store(store_uri).cas(key, b"0", None)
    stores = [open_store(store_uri) for _ in range(THREADS)]

    def worker(i: int) -> int:
        s, lost = stores[i], 0
        for _ in range(per_thread):
            while True:
                data, etag = s.get_with_etag(key)
                try:
                    s.cas(key, str(int(data) + 1).encode(), etag)
                    break
                except PreconditionFailed:
                    lost += 1
        return lost

    run_together(THREADS, worker)
    assert int(stores[0].get(key)) == THREADS * per_thread


def test_get_range(store: Store) -> None:
    data = bytes(range(256)) * 4
    store.put("objects/r", data)
    assert store.get_range("objects/r", 0, 10) == data[:10]
    assert store.get_range("objects/r", 100, 50) == data[100:150]
    assert store.get_range("objects/r", 1000, 100) == data[1000:]  # past the end: what exists
    assert store.get_range("objects/r", 1023, 1) == data[1023:]
    assert store.get_range("objects/r", 1024, 10) == b""  # start at the end
    assert store.get_range("objects/r", 5000, 10) == b""
    assert store.get_range("objects/r", 7, 0) == b""
    store.put("objects/e", b"")
    assert store.get_range("objects/e", 0, 10) == b""


def test_head(store: Store) -> None:
    before = time.time()
    store.put("objects/h", b"x" * 1234)
    item = store.head("objects/h")
    assert item is not None
    assert item.key == "objects/h" and item.size == 1234
    assert item.etag == store.get_with_etag("objects/h")[1]
    assert before - 5 <= item.mtime <= time.time() + 5


def test_put_overwrites(store: Store) -> None:
    store.put("drafts/p/n/d1/parts/w1.json", b"one")
    e1 = store.get_with_etag("drafts/p/n/d1/parts/w1.json")[1]
    store.put("drafts/p/n/d1/parts/w1.json", b"two!")
    data, e2 = store.get_with_etag("drafts/p/n/d1/parts/w1.json")
    assert data == b"two!" and e2 != e1


KEYS = ["a/b/1", "a/b/2", "a/b-x", "a/c", "a/ca/x", "ab", "b/z", "a/b/10"]


def test_list(store: Store) -> None:
    for k in KEYS:
        assert store.put_if_absent(k, k.encode())
    everything = list(store.list(""))
    assert [i.key for i in everything] == sorted(KEYS)  # lexicographic: "a/b-x" < "a/b/1"
    for item in everything:
        head = store.head(item.key)
        assert head is not None
        assert (item.size, item.etag) == (len(item.key), head.etag)
        assert abs(item.mtime - head.mtime) < 2

    def keys(prefix: str) -> list[str]:
        return [i.key for i in store.list(prefix)]

    assert keys("a/") == ["a/b-x", "a/b/1", "a/b/10", "a/b/2", "a/c", "a/ca/x"]
    assert keys("a/b/") == ["a/b/1", "a/b/10", "a/b/2"]
    assert keys("a/b/1") == ["a/b/1", "a/b/10"]  # not at a '/' boundary
    assert keys("a/c") == ["a/c", "a/ca/x"]
    assert keys("a") == ["a/b-x", "a/b/1", "a/b/10", "a/b/2", "a/c", "a/ca/x", "ab"]
    assert keys("a/ca/x") == ["a/ca/x"]
    assert keys("zzz") == [] and keys("a/zzz/") == [] and keys("ab/") == []


def test_list_dirs(store: Store) -> None:
    for k in KEYS:
        store.put(k, b"")
    assert store.list_dirs("") == ["a", "b"]
    assert store.list_dirs("a/") == ["b", "ca"]
    assert store.list_dirs("a/b/") == []
    assert store.list_dirs("nope/") == []


def test_delete(store: Store) -> None:
    store.put_if_absent("objects/d", b"gone soon")
    store.delete("objects/d")
    assert store.head("objects/d") is None
    with pytest.raises(NotFound):
        store.get("objects/d")
    store.delete("objects/d")  # absent is fine
    store.delete("objects/never")
    assert store.put_if_absent("objects/d", b"back")
    assert store.get("objects/d") == b"back"


def test_large_value(store: Store) -> None:
    data = os.urandom(20 * 1024 * 1024)
    assert store.put_if_absent("objects/big", data)
    assert store.get("objects/big") == data
    assert store.get_range("objects/big", len(data) - 100, 1000) == data[-100:]
    item = store.head("objects/big")
    assert item is not None and item.size == len(data)
    store.sync()


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a", ".hidden", "a/b/", "a\0b"])
def test_invalid_keys(store: Store, key: str) -> None:
    with pytest.raises(UsageError):
        store.put_if_absent(key, b"x")
    with pytest.raises(UsageError):
        store.get(key)
