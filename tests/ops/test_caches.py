"""The mount's caches without a mount: blob cache (single flight, LRU, pins, ENOSPC, an
unreachable store) and the LMDB manifest cache (crash and corruption recovery)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time

import pyfuse3
import pytest
import trio
from opshelp import CTX, Kernel, object_path, put, read_bytes

from artifactfs.model import Entry, RefInfo, file_entry, object_key, ref_entry, symlink_entry
from artifactfs.mount import blobcache, readahead
from artifactfs.mount.cache import ManifestCache, entry_from_raw
from artifactfs.mount.listings import REFRESH_WAIT


def _count_hashes(monkeypatch) -> list[int]:
    """Every hash of a piece file, in a worker thread or (cached, small) at open."""
    hashed: list[int] = []
    for name in ("_hash_fd", "_hash_cached"):
        real = getattr(blobcache, name)
        monkeypatch.setattr(blobcache, name,
                            lambda fd, *a, real=real: hashed.append(fd) or real(fd, *a))
    return hashed


async def _open_all(fs, k, paths):
    out = []
    for p in paths:
        ino = (await k.walk(p)).st_ino
        out.append((await fs.ops.open(ino, os.O_RDONLY, CTX)).fh)
    return out


async def test_many_readers_of_one_chunk_cause_one_fetch(make_fs, repo, source):
    put(repo, source)
    fs = make_fs(remote=True)
    k = Kernel(fs.ops)
    ino = (await k.walk("vision/cats/v0/big.bin")).st_ino
    want = read_bytes(os.path.join(source, "big.bin"))[:1 << 20]
    fhs = [(await fs.ops.open(ino, os.O_RDONLY, CTX)).fh for _ in range(16)]
    got: list[bytes] = []

    async def reader(fh: int) -> None:
        got.append(bytes(await fs.ops.read(fh, 12345, 4096)))

    async with trio.open_nursery() as n:
        for fh in fhs:
            n.start_soon(reader, fh)
    assert got == [want[12345:12345 + 4096]] * 16
    chunk_gets = {k_: v for k_, v in fs.store.gets.items() if k_.startswith("objects/")}
    assert max(chunk_gets.values()) == 1
    assert fs.blobs.misses == 1
    for fh in fhs:
        await fs.ops.release(fh)


async def test_lru_eviction_never_takes_pieces_of_open_files(make_fs, repo, source):
    put(repo, source)
    fs = make_fs(remote=True, cache_size=20)  # bytes: room for about one small file
    fs.ns.ahead.workers = 0  # no read-ahead landing pieces after the cleanup below
    k = Kernel(fs.ops)
    files = [f"vision/cats/v0/many/f{i:04d}" for i in range(10)]
    held = await _open_all(fs, k, files[:3])
    for fh, i in zip(held, range(3), strict=True):
        assert await fs.ops.read(fh, 0, 100) == f"{i}\n".encode()
    for p in files[3:]:  # read and close: these are evictable
        ino = (await k.walk(p)).st_ino
        await k.read_file(ino)
    s = fs.blobs.stats()
    assert s["cache_bytes"] <= 20 + 6 * 3  # the bound, plus what open files pin
    for fh in held:  # pinned pieces are still there
        assert fs.blobs.ready(fs.ns.files[fh].keys[0])
        await fs.ops.release(fh)
    await trio.to_thread.run_sync(fs.blobs.cleanup, 0)
    assert fs.blobs.stats()["cache_bytes"] == 0


async def test_full_disk_evicts_and_retries(make_fs, repo, source, monkeypatch):
    put(repo, source)
    fs = make_fs(remote=True)
    k = Kernel(fs.ops)
    await k.read_file((await k.walk("vision/cats/v0/README")).st_ino)
    real = fs.blobs._write_atomic
    failures = [2]

    def flaky(path: str, data: bytes) -> None:
        if failures[0]:
            failures[0] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(fs.blobs, "_write_atomic", flaky)
    ino = (await k.walk("vision/cats/v0/data/train.csv")).st_ino
    assert await k.read_file(ino) == b"a,b\n1,2\n"
    assert failures == [0]
    failures[0] = 100  # a disk that stays full: still served (from memory), not an error
    ino = (await k.walk("vision/cats/v0/data/deep/x.txt")).st_ino
    assert await k.read_file(ino) == b"deep\n"


async def _until(cond) -> None:
    """Wait (at most 10 s) until ``cond()``."""
    for _ in range(500):
        if cond():
            return
        await trio.sleep(0.02)
    raise AssertionError("timed out")


async def test_unreachable_store(make_fs, repo, source):
    put(repo, source)
    fs = make_fs(remote=True, timeout=0.5)
    k = Kernel(fs.ops)
    readme = (await k.walk("vision/cats/v0/README")).st_ino
    assert await k.read_file(readme) == b"hello\n"
    art = (await k.walk("vision/cats")).st_ino
    train = (await k.walk("vision/cats/v0/data/train.csv")).st_ino
    fs.store.down = True
    fs.clock.advance(60)
    assert await k.read_file(readme) == b"hello\n"  # cached content keeps being served
    names = [n for n, _, _ in await k.readdir(art)]  # listings keep their last known state
    assert names == [b"v0", b"latest"]
    assert [n for n, _, _ in await k.readdir(pyfuse3.ROOT_INODE)] == [b"vision", b"drafts"]
    with pytest.raises(pyfuse3.FUSEError) as ei:  # an uncached read: EIO, at once
        await k.read_file(train)
    assert ei.value.errno == errno.EIO
    fs.store.down = False
    fs.store.hang.set()  # a store that hangs: EIO within the bounded time
    t0 = time.monotonic()
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await k.read_file(train)
    assert ei.value.errno == errno.EIO and time.monotonic() - t0 < 3
    fs.ns.lists.timeout = 0.5  # listings of a hanging store: the last known state, in time
    fs.clock.advance(60)
    t0 = time.monotonic()
    assert [n for n, _, _ in await k.readdir(art)] == [b"v0", b"latest"]
    assert time.monotonic() - t0 < 3
    with pytest.raises(pyfuse3.FUSEError) as ei:  # a tree never fetched: EIO, in time
        await k.walk("vision/cats/v0/many/f0001")
    assert ei.value.errno == errno.EIO and time.monotonic() - t0 < 4
    fs.ns.lists.probe_every = 0.05
    fs.store.hang.clear()
    assert fs.ns.stats()["store_ok"] is False
    await _until(lambda: fs.ns.stats()["store_ok"])  # the background probe finds it back
    fs.clock.advance(60)
    await k.readdir(art)
    assert fs.ns.stats()["store_ok"] is True


async def test_an_outage_costs_a_walk_at_most_the_refresh_wait(make_fs, repo, source,
                                                               tmp_path):
    """Once the store is known down, walks serve the last known listings at once; the walk
    that finds it down waits at most ``REFRESH_WAIT``, not the store's retry budget."""
    put(repo, source)
    fs = make_fs(remote=True)
    k = Kernel(fs.ops)
    path = "vision/cats/v0/README"
    assert await k.read_file((await k.walk(path)).st_ino) == b"hello\n"
    fs.ns.lists.probe_every = 0.05
    fs.store.down = True
    fs.store.hang.set()  # every store call takes 5 s, then fails (like retries to a dead S3)
    times = []
    for _ in range(4):
        fs.clock.advance(60)  # past --refresh: every listing on the path has expired
        t0 = time.monotonic()
        assert await k.read_file((await k.walk(path)).st_ino) == b"hello\n"
        times.append(time.monotonic() - t0)
    assert times[0] < REFRESH_WAIT + 0.5 and max(times[1:]) < 0.5, times
    assert fs.ns.stats()["store_ok"] is False
    fs.store.hang.clear()
    fs.store.down = False
    await _until(lambda: fs.ns.stats()["store_ok"])
    (tmp_path / "new").mkdir()  # a version made elsewhere meanwhile: seen once back
    (tmp_path / "new" / "x").write_text("x")
    put(repo, str(tmp_path / "new"))
    art = (await k.walk("vision/cats")).st_ino
    with trio.fail_after(10):  # once loads stuck in the outage are done
        while b"v1" not in [n for n, _, _ in await k.readdir(art)]:
            fs.clock.advance(60)
            await trio.sleep(0.05)


def test_manifest_cache_round_trip_and_recovery(tmp_path):
    d = str(tmp_path / "m")
    oid = "ab" * 32
    entries = {
        "a.txt": file_entry(3, "cd" * 32, mtime_ns=5),
        "big": file_entry(9 << 20, "ef" * 32, chunks=("01" * 32, "02" * 32), executable=True),
        "l": symlink_entry("a.txt"),
        "r": ref_entry(RefInfo(uri="s3://b/k", etag="e", version_id="v"), 10),
        "sub": Entry("dir", size=3, digest="11" * 32, oid="22" * 32, count=1),
        "é": file_entry(0, "33" * 32),
    }
    m = ManifestCache(d)
    assert m.dir_info(oid) is None
    assert m.put_dir(oid, entries) == (6, 1)
    assert m.dir_info(oid) == (6, 1)
    for name, e in entries.items():
        assert entry_from_raw(m.entry(oid, name.encode())) == e
    names = [n for n, _ in m.entries(oid, None, 100)]
    assert names == sorted(n.encode() for n in entries)
    assert [n for n, _ in m.entries(oid, b"big", 2)] == [b"l", b"r"]
    m.put_docs([("k", {"x": 1})])
    assert m.get_doc("k") == {"x": 1}
    m.close()
    # a clean close reopens with everything
    m = ManifestCache(d)
    assert m.dir_info(oid) == (6, 1)
    m.env.close()  # a crash: no clean close.  Same boot: LMDB is intact, kept.
    m = ManifestCache(d)
    assert m.dir_info(oid) == (6, 1)
    m.env.close()
    state = os.path.join(d, "state.json")
    with open(state) as f:  # unclean, from another boot (power loss): rebuilt
        doc = json.load(f)
    doc["boot"] = "another-boot"
    with open(state, "w") as f:
        json.dump(doc, f)
    m = ManifestCache(d)
    assert m.dir_info(oid) is None
    m.put_dir(oid, entries)
    m.close()
    with open(os.path.join(d, "lmdb", "data.mdb"), "r+b") as f:  # a damaged file: rebuilt
        f.write(os.urandom(16384))
    m = ManifestCache(d)
    assert m.dir_info(oid) is None
    m.close()


async def test_listing_a_directory_reads_its_subdirectories_ahead_on_a_remote_store(
        make_fs, repo, source):
    """After ``readdir`` of a version root, the tables of its subdirectories load in the
    background (remote store only), once each; a walk then finds them cached."""
    put(repo, source)
    for remote in (True, False):
        fs = make_fs(remote=remote, cache=f"cache-{remote}")
        k = Kernel(fs.ops)
        root = await k.walk("vision/cats/v0")
        listed = {n.decode(): a for n, a, _ in await k.readdir(root.st_ino)}
        subdirs = [fs.ns.node(listed[d].st_ino).oid for d in ("data", "empty", "many")]
        with trio.move_on_after(5):
            # polling: the read-ahead has no event a test could wait for
            while remote and not all(fs.manifest.dir_info(o) for o in subdirs):  # noqa: ASYNC110
                await trio.sleep(0.01)
        cached = [fs.manifest.dir_info(o) is not None for o in subdirs]
        assert cached == [remote] * 3
        node_gets = {key: n for key, n in fs.store.gets.items() if key.startswith("objects/")}
        assert all(n == 1 for n in node_gets.values())
        await k.readdir((await k.walk("vision/cats/v0/many")).st_ino)  # ready, or loaded now
        assert all(n == 1 for key, n in fs.store.gets.items() if key.startswith("objects/"))


@pytest.mark.parametrize("remote", [False, True], ids=["in-place", "remote"])
async def test_a_rewritten_piece_file_is_verified_again_once_per_open(make_fs, repo, source,
                                                                      remote, monkeypatch):
    """One fstat per open and piece, a hash only when the file's identity changed; the fd of a
    changed file is closed only once no open file uses it."""

    hashed = _count_hashes(monkeypatch)
    put(repo, source)
    fs = make_fs(remote=remote)
    k = Kernel(fs.ops)
    ino = (await k.walk("vision/cats/v0/README")).st_ino
    assert await k.read_file(ino) == b"hello\n"
    for _ in range(3):  # unchanged: no hashing again
        assert await k.read_file(ino) == b"hello\n"
    assert len(hashed) == (0 if remote else 1)  # remote: the fetched bytes were hashed
    key = hashlib.sha256(b"hello\n").hexdigest()
    held = (await fs.ops.open(ino, os.O_RDONLY, CTX)).fh
    assert bytes(await fs.ops.read(held, 0, 100)) == b"hello\n"
    path = fs.blobs._path(key) if remote else object_path(repo, key)
    os.chmod(path, 0o600)
    fd = os.open(path, os.O_WRONLY)  # same inode, as an editor or dd conv=notrunc would
    os.pwrite(fd, b"J", 0)
    os.close(fd)
    if remote:  # a cache file: dropped and fetched again from the store
        assert await k.read_file(ino) == b"hello\n"
    else:
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await k.read_file(ino)
        assert ei.value.errno == errno.EIO
    assert fs.blobs._retired  # the old fd stays open for the handle still holding it
    await fs.ops.release(held)
    assert not fs.blobs._retired


@pytest.mark.parametrize("remote", [False, True], ids=["in-place", "remote"])
async def test_a_full_descriptor_table_closes_the_least_recently_used_and_remembers_it(
        make_fs, repo, source, remote, monkeypatch):
    """Past max_fds the least recently closed piece leaves the table (pieces of open files
    never); making it ready again checks its file's identity instead of hashing it again."""
    hashed = _count_hashes(monkeypatch)
    put(repo, source)
    fs = make_fs(remote=remote)
    fs.blobs.max_fds = 3
    fs.ns.ahead.workers = 0  # no read-ahead (or warm-ahead) hashing meanwhile
    k = Kernel(fs.ops)
    inos = [(await k.walk(f"vision/cats/v0/many/f{i:04d}")).st_ino for i in range(5)]
    held = (await fs.ops.open(inos[0], os.O_RDONLY, CTX)).fh
    assert bytes(await fs.ops.read(held, 0, 100)) == b"0\n"
    for i, ino in enumerate(inos[1:], 1):
        assert await k.read_file(ino) == f"{i}\n".encode()
    assert len(fs.blobs._fds) == 3
    assert hashlib.sha256(b"0\n").hexdigest() in fs.blobs._fds  # pinned: never closed
    evicted = hashlib.sha256(b"1\n").hexdigest()
    assert evicted not in fs.blobs._fds and evicted in fs.blobs._verified
    before = len(hashed)
    assert await k.read_file(inos[1]) == b"1\n"
    assert len(hashed) == before  # an fstat, not a hash
    await fs.ops.release(held)


async def test_a_directory_being_read_through_is_read_ahead_on_a_remote_store(
        make_fs, repo, source):
    """After a few opens of small files of a directory, the next files of it are fetched
    and verified before anyone opens them, each once; a local store makes none ready ahead."""
    put(repo, source)
    for remote in (False, True):
        fs = make_fs(remote=remote, cache=f"cache-{remote}")
        k = Kernel(fs.ops)
        for i in range(3):
            assert await k.read_file((await k.walk(f"vision/cats/v0/many/f{i:04d}")).st_ino)
        later = hashlib.sha256(b"20\n").hexdigest()
        with trio.move_on_after(5):
            while remote and not (fs.blobs.ready(later)  # noqa: ASYNC110
                                  and fs.ns.ahead.fetched >= 20):
                await trio.sleep(0.01)
        assert fs.blobs.ready(later) == remote
        if remote:
            assert fs.ns.ahead.fetched >= 20
            assert all(n == 1 for key, n in fs.store.gets.items())
            ino = (await k.walk("vision/cats/v0/many/f0020")).st_ino
            wanted = [key for key in fs.store.gets if key.endswith(later[2:])]
            assert wanted and all(fs.store.gets[key] == 1 for key in wanted)
            assert await k.read_file(ino) == b"20\n"
            # served from what was read ahead: no second GET of it (other files of the
            # directory may still be being read ahead meanwhile)
            assert all(fs.store.gets[key] == 1 for key in wanted)


async def test_a_directory_being_read_through_is_verified_ahead_on_a_local_store(
        make_fs, repo, source, monkeypatch):
    """Warm-ahead: after a few opens, the next small files of the directory are hashed by a
    worker, many per hop, without becoming ready; the reader's open of one is then an fstat
    (no hash), unless the file changed since, when it is hashed again."""
    hashed = _count_hashes(monkeypatch)
    put(repo, source)
    fs = make_fs()
    k = Kernel(fs.ops)
    for i in range(3):
        assert await k.read_file((await k.walk(f"vision/cats/v0/many/f{i:04d}")).st_ino)
    later = hashlib.sha256(b"20\n").hexdigest()
    with trio.move_on_after(5):
        while not fs.blobs.known(later):  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert fs.blobs.known(later) and not fs.blobs.ready(later)
    assert fs.ns.ahead.fetched >= 20
    before = len(hashed)
    ino = (await k.walk("vision/cats/v0/many/f0020")).st_ino
    assert await k.read_file(ino) == b"20\n"
    assert len(hashed) == before and fs.blobs.ready(later)
    changed = hashlib.sha256(b"21\n").hexdigest()
    os.utime(object_path(repo, changed))  # a new identity: verified again at open
    ino = (await k.walk("vision/cats/v0/many/f0021")).st_ino
    assert await k.read_file(ino) == b"21\n"
    assert len(hashed) == before + 1


async def test_a_cached_small_file_is_verified_at_open_without_a_worker(make_fs, repo, source,
                                                                      monkeypatch):
    """A local store's small file that the kernel has cached (just written by put) is hashed
    on the trio thread at open: ready before any read, no job in a worker lane."""
    hashed = _count_hashes(monkeypatch)
    put(repo, source)
    fs = make_fs()
    k = Kernel(fs.ops)
    ino = (await k.walk("vision/cats/v0/README")).st_ino
    fh = (await fs.ops.open(ino, os.O_RDONLY, CTX)).fh
    assert fs.blobs.ready(fs.ns.files[fh].keys[0]) and fs.blobs.lane.running == 0
    assert len(hashed) == 1
    assert bytes(await fs.ops.read(fh, 0, 100)) == b"hello\n"
    await fs.ops.release(fh)


async def test_a_corrupt_cached_small_file_is_eio_not_served(make_fs, repo, source):
    """Same size, other bytes, in the page cache: the open's inline check refuses it and the
    worker path answers EIO, as for any corrupt object."""
    put(repo, source)
    path = object_path(repo, hashlib.sha256(b"hello\n").hexdigest())
    os.chmod(path, 0o600)
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, b"J", 0)
    os.close(fd)
    fs = make_fs()
    k = Kernel(fs.ops)
    ino = (await k.walk("vision/cats/v0/README")).st_ino
    fh = (await fs.ops.open(ino, os.O_RDONLY, CTX)).fh
    assert not fs.blobs.ready(fs.ns.files[fh].keys[0])
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await fs.ops.read(fh, 0, 100)
    assert ei.value.errno == errno.EIO
    await fs.ops.release(fh)


async def _fetched_within(fs, digests: set[str], want: int) -> set[str]:
    """Which of ``digests`` the store was asked for, once read-ahead settled at ``want``."""
    def got() -> set[str]:
        return {d for d in digests if fs.store.gets[object_key(d)]}
    with trio.move_on_after(5):
        while len(got()) < want:  # noqa: ASYNC110 - the read-ahead has no event to wait for
            await trio.sleep(0.01)
    await trio.sleep(0.05)  # and nothing more comes
    return got()


async def test_read_ahead_of_a_directory_is_bounded_by_the_opens_in_it(make_fs, repo, source):
    """Three opens make ``many`` read through: FIRST + PER_OPEN x 3 files of it in name
    order are fetched, each once, and no more until the reader opens more."""
    put(repo, source)
    fs = make_fs(remote=True)
    k = Kernel(fs.ops)
    for i in range(3):
        await k.read_file((await k.walk(f"vision/cats/v0/many/f{i:04d}")).st_ino)
    allowed = readahead.FIRST + readahead.ReadAhead.per_open * 3
    by_name = [hashlib.sha256(f"{i}\n".encode()).hexdigest()
               for i in sorted(range(300), key=lambda i: f"f{i:04d}")]
    got = await _fetched_within(fs, set(by_name), allowed)
    assert got == set(by_name[:allowed])
    assert all(fs.store.gets[object_key(d)] == 1 for d in got)


async def test_a_new_directory_is_read_ahead_at_its_first_open_while_another_is_read(
        make_fs, repo, tmp_path):
    """Once one directory is being read through, the first open of a not-ready file in
    another starts its read-ahead (a DataLoader over many directories); on a fresh mount a
    single open in a directory fetches that file alone."""
    src = tmp_path / "src"
    for d in ("d0", "d1"):
        (src / d).mkdir(parents=True)
        for i in range(100):
            (src / d / f"f{i:03d}").write_text(f"{d} {i}\n")
    put(repo, str(src))
    d1 = [hashlib.sha256(f"d1 {i}\n".encode()).hexdigest() for i in range(100)]
    cold = make_fs(remote=True, cache="cold")
    k = Kernel(cold.ops)
    await k.read_file((await k.walk("vision/cats/v0/d1/f050")).st_ino)
    assert await _fetched_within(cold, set(d1), 2) == {d1[50]}

    fs = make_fs(remote=True)
    k = Kernel(fs.ops)
    for i in range(3):
        await k.read_file((await k.walk(f"vision/cats/v0/d0/f{i:03d}")).st_ino)
    await k.read_file((await k.walk("vision/cats/v0/d1/f050")).st_ino)
    allowed = readahead.FIRST + readahead.ReadAhead.per_open
    got = await _fetched_within(fs, set(d1), allowed + 1)
    assert got == set(d1[:allowed]) | {d1[50]}
    assert all(fs.store.gets[object_key(d)] == 1 for d in got)


async def test_the_readers_own_gets_count_in_the_read_aheads_window(make_fs, repo, source):
    """On a store that queues, a reader's GET waits behind the read-ahead's: readers' GETs
    in flight take their part of the window first, and the read-ahead goes on in what they
    leave (and again once they landed)."""
    put(repo, source)
    fs = make_fs(remote=True)
    k = Kernel(fs.ops)
    inos = [(await k.walk(f"vision/cats/v0/many/f{i:04d}")).st_ino for i in range(3)]
    gate, lock = threading.Event(), threading.Lock()
    flying, peak = [0], [0]
    real = fs.store.get

    def get(key: str) -> bytes:
        with lock:
            flying[0] += 1
            peak[0] = max(peak[0], flying[0])
        gate.wait(10)
        with lock:
            flying[0] -= 1
        return real(key)

    fs.store.get = get
    fs.ns.ahead.window.limit = 4  # (no GET ends meanwhile: nothing moves it)
    fhs = [(await fs.ops.open(ino, os.O_RDONLY, CTX)).fh for ino in inos]  # 3 GETs, read through
    with trio.move_on_after(5):
        while peak[0] < 4:  # noqa: ASYNC110 - the read-ahead has no event to wait for
            await trio.sleep(0.01)
    await trio.sleep(0.1)  # and no more come
    assert peak[0] == 4 and fs.ns.ahead._inflight == 1
    gate.set()
    for i, fh in enumerate(fhs):
        assert bytes(await fs.ops.read(fh, 0, 100)) == f"{i}\n".encode()
        await fs.ops.release(fh)
    with trio.move_on_after(5):
        while fs.ns.ahead.fetched < 20:  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert fs.ns.ahead.fetched >= 20
    assert all(n == 1 for key, n in fs.store.gets.items() if key.startswith("objects/"))
