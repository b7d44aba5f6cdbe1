"""Handler tests: the mount's operations called directly, with no FUSE mount."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import stat

import pyfuse3
import pytest
from opshelp import BIG, CTX, Kernel, object_path, put, read_bytes, write_bytes

from artifactfs import refs
from artifactfs.mount.inodes import DRAFTS_INO, ROOT_INO


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


async def test_layout_attributes_and_links(make_fs, repo, source):
    put(repo, source, aliases=["best"], description="cats", metadata={"n": 1})
    fs = make_fs()
    k = Kernel(fs.ops)
    root = [n for n, _, _ in await k.readdir(ROOT_INO)]
    assert root == [b"vision", b"drafts"]
    art = await k.walk("vision/cats")
    names = {n: a for n, a, _ in await k.readdir(art.st_ino)}
    assert set(names) == {b"v0", b"latest", b"best"}
    assert stat.S_ISLNK(names[b"latest"].st_mode)
    assert await fs.ops.readlink(names[b"latest"].st_ino, CTX) == b"v0"
    v0 = names[b"v0"]
    assert stat.S_IMODE(v0.st_mode) == 0o555 and stat.S_ISDIR(v0.st_mode)
    rec = repo.resolve("vision/cats:v0")
    from artifactfs.catalog import parse_iso
    assert v0.st_mtime_ns == int(parse_iso(rec.created_at).timestamp() * 1e9)
    readme = await k.walk("vision/cats/v0/README")
    st = os.stat(os.path.join(source, "README"))
    assert readme.st_size == 6 and stat.S_IMODE(readme.st_mode) == 0o444
    assert readme.st_mtime_ns == st.st_mtime_ns
    assert stat.S_IMODE((await k.walk("vision/cats/v0/run.sh")).st_mode) == 0o555
    big = await k.walk("vision/cats/v0/big.bin")
    assert big.st_size == BIG and fs.store.object_gets() <= 3  # size known before any fetch
    link = await k.walk("vision/cats/v0/link")
    assert await fs.ops.readlink(link.st_ino, CTX) == b"README"
    assert [n for n, _, _ in await k.readdir((await k.walk("vision/cats/v0/empty")).st_ino)] == []
    got = await k.read_file(readme.st_ino)
    assert got == b"hello\n"
    # a missing name inside an immutable version is a cached negative entry
    neg = await fs.ops.lookup(v0.st_ino, b"nope", CTX)
    assert neg.st_ino == 0 and neg.entry_timeout > 3600
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await fs.ops.lookup(art.st_ino, b"v9", CTX)
    assert ei.value.errno == errno.ENOENT
    assert await k.readdir(DRAFTS_INO) == []


async def test_lookup_counts_balance_after_forget(make_fs, repo, source):
    put(repo, source)
    fs = make_fs()
    k = Kernel(fs.ops)
    for _ in range(2):
        await k.readdir(ROOT_INO)
        v0 = await k.walk("vision/cats/v0")
        await k.readdir(v0.st_ino, batch=7)
        many = await k.walk("vision/cats/v0/many")
        await k.readdir(many.st_ino, batch=13)
        await k.walk("vision/cats/latest")
        await k.walk("vision/cats/v0/data/deep/x.txt")
    assert fs.ns.inodes.total_lookups() == sum(n for i, n in k.counts.items() if i > DRAFTS_INO)
    await k.forget_all()
    assert fs.ns.inodes.total_lookups() == 0
    assert len(fs.ns.inodes) == 2  # root and drafts stay
    await fs.ops.forget([(123456789, 5), (ROOT_INO, 1)])  # unknown inodes: never raises
    assert len(fs.ns.inodes) == 2


async def test_inode_numbers_are_stable_after_forget(make_fs, repo, source):
    put(repo, source)
    fs = make_fs()
    k = Kernel(fs.ops)
    first = {p: (await k.walk(p)).st_ino for p in
             ("vision", "vision/cats", "vision/cats/v0", "vision/cats/v0/data/train.csv")}
    await k.forget_all()
    again = {p: (await k.walk(p)).st_ino for p in first}
    assert first == again
    assert len(set(first.values())) == len(first)
    via_latest = await k.walk("vision/cats/v0/README")
    put(repo, os.path.join(source, "data"))  # v1: latest moves
    fs.clock.advance(11)
    moved = await k.walk("vision/cats/latest")
    assert await fs.ops.readlink(moved.st_ino, CTX) == b"v1"
    assert via_latest.st_ino == (await k.walk("vision/cats/v0/README")).st_ino


async def test_readdir_cookies_are_stable(make_fs, repo, source):
    put(repo, source)
    fs = make_fs()
    k = Kernel(fs.ops)
    many = await k.walk("vision/cats/v0/many")
    full = await k.readdir(many.st_ino, batch=1000)
    assert [n for n, _, _ in full] == [f"f{i:04d}".encode() for i in range(300)]
    assert [c for _, _, c in full] == list(range(1, 301))
    small = await k.readdir(many.st_ino, batch=17)  # resumes from each batch's last cookie
    assert [(n, c) for n, _, c in small] == [(n, c) for n, _, c in full]
    tail = await k.readdir(many.st_ino, batch=1000, start=123)  # a seek to any cookie
    assert [n for n, _, _ in tail] == [n for n, _, _ in full[123:]]
    # virtual directories: a snapshot at opendir, so a version appearing mid-listing is not
    # reported twice or skipped
    for i in range(3):
        put(repo, os.path.join(source, "data"), name=f"vision/a{i}")
    fs.clock.advance(11)
    proj = await k.walk("vision")
    fh = await fs.ops.opendir(proj.st_ino, CTX)
    from opshelp import Token
    tok = Token(2)
    await fs.ops.readdir(fh, 0, tok)  # type: ignore[arg-type]
    put(repo, os.path.join(source, "data"), name="vision/a00")
    fs.clock.advance(11)
    rest = Token(100)
    await fs.ops.readdir(fh, tok.out[-1][2], rest)  # type: ignore[arg-type]
    await fs.ops.releasedir(fh)
    names = [n for n, _, _ in tok.out + rest.out]
    assert names == [b"a0", b"a1", b"a2", b"cats"]


async def test_every_write_is_erofs(make_fs, repo, source):
    put(repo, source)
    fs = make_fs()
    k = Kernel(fs.ops)
    v0 = (await k.walk("vision/cats/v0")).st_ino
    f = (await k.walk("vision/cats/v0/README")).st_ino
    art = (await k.walk("vision/cats")).st_ino
    ops = fs.ops
    calls = [
        ops.setattr(f, pyfuse3.EntryAttributes(), pyfuse3.SetattrFields(), None, CTX),
        ops.mknod(v0, b"n", stat.S_IFREG | 0o644, 0, CTX),
        ops.mkdir(v0, b"d", 0o755, CTX),
        ops.mkdir(art, b"v9", 0o755, CTX),
        ops.mkdir(ROOT_INO, b"newproject", 0o755, CTX),
        ops.mkdir(DRAFTS_INO, b"vision", 0o755, CTX),
        ops.unlink(v0, b"README", CTX),
        ops.rmdir(v0, b"empty", CTX),
        ops.rmdir(art, b"v0", CTX),
        ops.unlink(art, b"latest", CTX),
        ops.symlink(v0, b"s", b"README", CTX),
        ops.symlink(art, b"prod", b"v0", CTX),
        ops.rename(v0, b"README", v0, b"R2", 0, CTX),
        ops.link(f, v0, b"hard", CTX),
        ops.create(v0, b"new", 0o644, os.O_WRONLY | os.O_CREAT, CTX),
        ops.open(f, os.O_WRONLY, CTX),
        ops.open(f, os.O_RDWR, CTX),
        ops.open(f, os.O_RDONLY | os.O_TRUNC, CTX),
        ops.setxattr(f, b"user.x", b"1", CTX),
        ops.removexattr(v0, b"user.artifactfs.digest", CTX),
        ops.access(f, os.W_OK, CTX),
        ops.write(1, 0, b"x"),
    ]
    for c in calls:
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await c
        assert ei.value.errno == errno.EROFS
    assert await ops.access(f, os.R_OK, CTX)


async def test_xattrs(make_fs, repo, source, tmp_path):
    put(repo, source, aliases=["best"], description="the cats", metadata={"n": 1, "s": "é"})
    ref_file = tmp_path / "ref.bin"
    ref_file.write_bytes(b"referenced bytes\n" * 1000)
    entries = refs.expand(f"file://{ref_file}", "raw/ref.bin")
    base = repo.resolve("vision/cats:v0")
    repo.commit_entries("vision", "cats", "dataset", dict(entries), base=base)
    fs = make_fs()
    k = Kernel(fs.ops)
    v0 = (await k.walk("vision/cats/v0")).st_ino
    names = set(await fs.ops.listxattr(v0, CTX))
    assert names == {f"user.artifactfs.{n}".encode() for n in
                     ("version", "type", "aliases", "description", "metadata", "digest")}

    async def x(ino: int, n: str) -> bytes:
        return await fs.ops.getxattr(ino, f"user.artifactfs.{n}".encode(), CTX)

    assert await x(v0, "version") == b"vision/cats:v0"
    assert await x(v0, "type") == b"dataset"
    assert await x(v0, "aliases") == b"best"
    assert await x(v0, "description") == b"the cats"
    assert await x(v0, "digest") == base.digest.encode()
    import json
    assert json.loads(await x(v0, "metadata")) == {"n": 1, "s": "é"}
    v1 = (await k.walk("vision/cats/v1")).st_ino
    assert await x(v1, "aliases") == b"latest"
    readme = (await k.walk("vision/cats/v0/README")).st_ino
    assert await x(readme, "digest") == sha(b"hello\n").encode()
    assert await fs.ops.listxattr(readme, CTX) == [
        b"user.artifactfs.digest", b"user.artifactfs.digest_kind", b"user.artifactfs.sha256"]
    assert await x(readme, "digest_kind") == b"sha256"  # up to 8 MiB: what sha256sum prints
    ref = await k.walk("vision/cats/v1/raw/ref.bin")
    assert await x(ref.st_ino, "ref") == f"file://{ref_file}".encode()
    assert await x(ref.st_ino, "digest") == sha(ref_file.read_bytes()).encode()
    assert ref.st_size == 17000
    assert await k.read_file(ref.st_ino, 4096) == ref_file.read_bytes()
    for bad in (b"user.artifactfs.nope", b"user.other"):
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.ops.getxattr(readme, bad, CTX)
        assert ei.value.errno == pyfuse3.ENOATTR
    for other_namespace in (b"security.selinux", b"system.posix_acl_access", b"trusted.x"):
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.ops.getxattr(readme, other_namespace, CTX)
        assert ei.value.errno == errno.EOPNOTSUPP
    # a changed reference source is EIO, never other bytes
    ref_file.write_bytes(b"changed")
    fs2 = make_fs(cache="cache2")
    k2 = Kernel(fs2.ops)
    ino = (await k2.walk("vision/cats/v1/raw/ref.bin")).st_ino
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await k2.read_file(ino)
    assert ei.value.errno == errno.EIO


async def test_deleted_version_disappears_and_open_files_keep_reading(make_fs, repo, source):
    put(repo, source)
    put(repo, os.path.join(source, "data"))
    fs = make_fs(refresh=10)
    k = Kernel(fs.ops)
    art = (await k.walk("vision/cats")).st_ino
    f = await k.walk("vision/cats/latest")
    assert await fs.ops.readlink(f.st_ino, CTX) == b"v1"
    train = (await k.walk("vision/cats/v1/train.csv")).st_ino
    fi = await fs.ops.open(train, os.O_RDONLY, CTX)
    repo.catalog.delete_version("vision", "cats", 1)
    fs.clock.advance(5)
    assert (await k.walk("vision/cats/v1")).st_ino  # within the refresh interval: still known
    fs.clock.advance(6)
    with pytest.raises(pyfuse3.FUSEError):
        await k.walk("vision/cats/v1")
    assert (art, b"v1") in fs.invalidated and (art, b"latest") in fs.invalidated
    assert [n for n, _, _ in await k.readdir(art)] == [b"v0", b"latest"]
    assert await fs.ops.readlink((await k.walk("vision/cats/latest")).st_ino, CTX) == b"v0"
    assert await fs.ops.read(fi.fh, 0, 100) == b"a,b\n1,2\n"  # the open file keeps its version
    await fs.ops.release(fi.fh)


async def test_refresh_is_driven_by_access_with_a_fake_clock(make_fs, repo, source):
    put(repo, source)
    fs = make_fs(refresh=10)
    k = Kernel(fs.ops)
    art = (await k.walk("vision/cats")).st_ino
    await k.readdir(art)
    lists = fs.store.lists
    put(repo, os.path.join(source, "data"), aliases=["best"])
    fs.clock.advance(60)  # time passing alone costs nothing: no poll
    assert fs.store.lists == lists
    fs.clock.t -= 55
    with pytest.raises(pyfuse3.FUSEError):  # not re-read before the interval is over
        await k.walk("vision/cats/v1")
    assert fs.store.lists == lists
    fs.clock.advance(6)
    assert (await k.walk("vision/cats/v1")).st_ino
    assert fs.store.lists > lists
    assert (art, b"latest") in fs.invalidated
    assert await fs.ops.readlink((await k.walk("vision/cats/best")).st_ino, CTX) == b"v1"
    # a forced refresh (what a local commit or delete does) shows changes at once
    repo.catalog.remove_alias("vision", "cats", "best")
    await fs.ns.refresh_artifact("vision", "cats")
    with pytest.raises(pyfuse3.FUSEError):
        await k.walk("vision/cats/best")


async def test_a_walk_done_once_never_hits_the_store_again(make_fs, repo, source):
    put(repo, source)
    fs = make_fs()
    k = Kernel(fs.ops)
    await k.walk("vision/cats/v0/data/deep/x.txt")
    await k.readdir((await k.walk("vision/cats/v0/many")).st_ino)
    before = fs.store.object_gets()
    assert before > 0
    await k.forget_all()
    await k.walk("vision/cats/v0/data/deep/x.txt")
    await k.readdir((await k.walk("vision/cats/v0/many")).st_ino)
    assert fs.store.object_gets() == before
    fs.close()  # a new mount over the same cache directory starts warm
    fs2 = make_fs()
    k2 = Kernel(fs2.ops)
    await k2.walk("vision/cats/v0/data/deep/x.txt")
    await k2.readdir((await k2.walk("vision/cats/v0/many")).st_ino)
    assert fs2.store.object_gets() == 0
    assert sum(fs2.store.gets.values()) == 0  # even the version list came from the cache


@pytest.mark.parametrize("remote", [False, True], ids=["in-place", "remote"])
async def test_corrupt_object_is_eio_and_not_cached(make_fs, repo, source, remote, caplog):
    put(repo, source)
    fs = make_fs(remote=remote)
    k = Kernel(fs.ops)
    readme = (await k.walk("vision/cats/v0/README")).st_ino
    path = object_path(repo, sha(b"hello\n"))
    os.chmod(path, 0o644)
    write_bytes(path, b"HELLO\n")
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await k.read_file(readme)
    assert ei.value.errno == errno.EIO
    assert sha(b"hello\n") in caplog.text  # the log names the object
    assert not os.access(fs.blobs._path(sha(b"hello\n")), os.F_OK)
    train = (await k.walk("vision/cats/v0/data/train.csv")).st_ino
    assert await k.read_file(train) == b"a,b\n1,2\n"  # good files still read
    write_bytes(path, b"hello\n")  # repaired: the next read works (failures are not remembered)
    assert await k.read_file(readme) == b"hello\n"


@pytest.mark.parametrize("remote", [False, True], ids=["in-place", "remote"])
async def test_big_file_random_offsets(make_fs, repo, source, remote):
    put(repo, source)
    fs = make_fs(remote=remote)
    k = Kernel(fs.ops)
    ino = (await k.walk("vision/cats/v0/big.bin")).st_ino
    want = read_bytes(os.path.join(source, "big.bin"))
    fi = await fs.ops.open(ino, os.O_RDONLY, CTX)
    rnd = random.Random(7)
    for _ in range(60):
        off = rnd.randrange(0, BIG + 10)
        n = rnd.choice([1, 4096, 131072, 1 << 20, 9 << 20])
        assert await fs.ops.read(fi.fh, off, n) == want[off:off + n]
    # bytes gone from the page cache are read in a worker thread (RWF_NOWAIT said EAGAIN)
    entry = fs.ns.files[fi.fh].entry
    for c in entry.chunks:
        path = object_path(repo, c) if not remote else fs.blobs._path(c)
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    for off in (0, 8 << 20, BIG - 5000):
        assert bytes(await fs.ops.read(fi.fh, off, 1 << 20)) == want[off:off + (1 << 20)]
    # a 4 KiB read costs one chunk, not the file
    fs2 = make_fs(remote=True, cache="c2")
    k2 = Kernel(fs2.ops)
    ino2 = (await k2.walk("vision/cats/v0/big.bin")).st_ino
    fi2 = await fs2.ops.open(ino2, os.O_RDONLY, CTX)
    assert await fs2.ops.read(fi2.fh, 9_000_000, 4096) == want[9_000_000:9_004_096]
    assert fs2.blobs.fetched_bytes <= 8 << 20
    await fs.ops.release(fi.fh)
    await fs2.ops.release(fi2.fh)
