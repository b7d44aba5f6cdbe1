"""Handler tests for drafts: the mount's draft operations called directly, with no FUSE mount."""

from __future__ import annotations

import errno
import os
import stat
from types import SimpleNamespace
from typing import Any

import pyfuse3
import pytest
import trio
from opshelp import CTX, FS, Kernel, Token, put

from artifactfs.drafts import commit as commit_mod
from artifactfs.drafts import files as files_mod
from artifactfs.drafts.files import WRITE_BEHIND
from artifactfs.drafts.ops import INSIDE_TTL
from artifactfs.errors import IntegrityError
from artifactfs.mount.draftport import DRAFT_TTL
from artifactfs.mount.inodes import DRAFTS_INO, Kind


def ctx(uid: int) -> Any:
    return SimpleNamespace(uid=uid, gid=uid, pid=1, umask=0o022)


def fields(**kw: bool) -> Any:
    names = ("update_atime", "update_mtime", "update_ctime", "update_mode", "update_uid",
             "update_gid", "update_size")
    return SimpleNamespace(**{n: kw.get(n, False) for n in names})


async def mkdraft(fs: FS, k: Kernel, draft_id: bytes = b"d1", uid: int = 0) -> Any:
    """mkdir -p drafts/vision/cats/ID, counting the entries handed to the kernel."""
    ino = DRAFTS_INO
    for name in (b"vision", b"cats", draft_id):
        try:
            a = await fs.ops.mkdir(ino, name, 0o755, ctx(uid))
        except pyfuse3.FUSEError as e:
            assert e.errno == errno.EEXIST
            a = await fs.ops.lookup(ino, name, ctx(uid))
        k.counts[a.st_ino] += 1
        ino = a.st_ino
    return a


async def errno_of(coro: Any) -> int:
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await coro
    return int(ei.value.errno)


async def test_draft_work_and_lookup_counts_balance(make_fs, repo, source):
    put(repo, source)
    fs = make_fs(drafts=True)
    k = Kernel(fs.ops)
    root = await mkdraft(fs, k)
    assert stat.S_IMODE(root.st_mode) == 0o700 and root.st_uid == 0
    listed = {n.decode(): a for n, a, _ in await k.readdir(root.st_ino)}
    assert set(listed) == set(os.listdir(source))
    assert listed["link"].entry_timeout == 0  # every walk into a draft asks lookup (uid check)
    fi, new = await fs.ops.create(root.st_ino, b"new.txt", 0o644, os.O_WRONLY, CTX)
    k.counts[new.st_ino] += 1
    assert not fi.keep_cache and fi.direct_io  # write-only: the writer's buffer, no page cache
    rw, _ = await fs.ops.create(root.st_ino, b"rw.txt", 0o644, os.O_RDWR, CTX)
    k.counts[_.st_ino] += 1
    assert not rw.keep_cache and not rw.direct_io  # readable: the page cache (mmap needs it)
    await fs.ops.release(rw.fh)
    await fs.ops.unlink(root.st_ino, b"rw.txt", CTX)
    assert await fs.ops.write(fi.fh, 0, b"hello draft") == 11
    await fs.ops.release(fi.fh)
    sub = await fs.ops.mkdir(root.st_ino, b"sub", 0o755, CTX)
    k.counts[sub.st_ino] += 1
    k.counts[(await fs.ops.symlink(root.st_ino, b"sl", b"new.txt", CTX)).st_ino] += 1
    k.counts[(await fs.ops.mknod(root.st_ino, b"nod", stat.S_IFREG | 0o644, 0, CTX)).st_ino] += 1
    assert await errno_of(fs.ops.mknod(root.st_ino, b"fifo", stat.S_IFIFO | 0o644, 0, CTX)) \
        == errno.EPERM
    await fs.ops.rename(root.st_ino, b"new.txt", sub.st_ino, b"moved.txt", 0, CTX)
    moved = await k.lookup(sub.st_ino, "moved.txt")
    assert moved.st_ino == new.st_ino  # one node, one inode, across renames
    assert await k.read_file(moved.st_ino) == b"hello draft"
    # a base file: copied up when opened for writing; a reader opened before follows
    readme = await k.lookup(root.st_ino, "README")
    rfi = await fs.ops.open(readme.st_ino, os.O_RDONLY, CTX)
    assert bytes(await fs.ops.read(rfi.fh, 0, 100)) == b"hello\n"
    wfi = await fs.ops.open(readme.st_ino, os.O_RDWR, CTX)
    await fs.ops.write(wfi.fh, 0, b"HELLO")
    assert bytes(await fs.ops.read(rfi.fh, 0, 100)) == b"HELLO\n"
    big = os.urandom(3 * WRITE_BEHIND)  # write-behind: the size is right at once anyway
    await fs.ops.write(wfi.fh, 6, big)
    assert (await fs.ops.getattr(readme.st_ino, CTX)).st_size == 6 + len(big)
    assert bytes(await fs.ops.read(wfi.fh, 6, len(big))) == big
    await fs.ops.fsync(wfi.fh, False)
    await fs.ops.release(wfi.fh)
    await fs.ops.release(rfi.fh)
    a = await fs.ops.setattr(readme.st_ino, SimpleNamespace(st_size=3), fields(update_size=True),
                             None, CTX)
    assert a.st_size == 3 and await k.read_file(readme.st_ino) == b"HEL"
    a = await fs.ops.setattr(readme.st_ino, SimpleNamespace(st_mode=0o755),
                             fields(update_mode=True), None, CTX)
    assert stat.S_IMODE(a.st_mode) == 0o755
    assert await errno_of(fs.ops.rmdir(root.st_ino, b"sub", CTX)) == errno.ENOTEMPTY
    await fs.ops.unlink(root.st_ino, b"run.sh", CTX)
    gone = await fs.ops.lookup(root.st_ino, b"run.sh", CTX)  # a cached absence
    assert gone.st_ino == 0 and gone.entry_timeout == 0  # right below the root: never cached
    hard = await fs.ops.link(readme.st_ino, root.st_ino, b"hard", CTX)  # a copy-on-write copy
    k.counts[hard.st_ino] += 1
    assert hard.st_ino != readme.st_ino and hard.st_nlink == 1
    assert await k.read_file(hard.st_ino) == b"HEL"
    assert await errno_of(fs.ops.link(readme.st_ino, root.st_ino, b"hard", CTX)) == errno.EEXIST
    assert await errno_of(fs.ops.setxattr(readme.st_ino, b"user.x", b"1", CTX)) == errno.ENOTSUP
    unchanged = await k.lookup((await k.lookup(root.st_ino, "data")).st_ino, "train.csv")
    assert await fs.ops.getxattr(unchanged.st_ino, b"user.artifactfs.digest", CTX) == \
        repo.entry(repo.resolve("vision/cats:v0"), "data/train.csv").digest.encode()
    names = {n.decode() for n, _, _ in await k.readdir(root.st_ino)}
    assert names == set(os.listdir(source)) - {"run.sh"} | {"sub", "sl", "nod", "hard"}
    await k.forget_all()
    assert fs.ns.inodes.total_lookups() == 0
    assert len(fs.ns.inodes) == 2  # root and drafts stay


async def _new_draft_file(make_fs: Any, repo: Any, source: Any, name: bytes
                          ) -> tuple[FS, Kernel, Any, Any]:
    """A mount with a draft d1 and a new file in it open for writing: (fs, kernel, fi, attr)."""
    put(repo, source)
    fs = make_fs(drafts=True)
    k = Kernel(fs.ops)
    root = await mkdraft(fs, k)
    fi, attr = await fs.ops.create(root.st_ino, name, 0o644, os.O_WRONLY, CTX)
    k.counts[attr.st_ino] += 1
    return fs, k, fi, attr


async def test_big_writes_go_behind_only_with_room_on_the_drafts_disk(make_fs, repo, source):
    """Write-behind replies before the bytes are in the staging file, so it is used only
    while the drafts disk keeps RESERVE free beyond the queued bytes: otherwise ENOSPC would
    be seen by no call, FLUSH being off.  With no measure yet, or too little room, a big
    write is applied before its reply (and measures the disk)."""
    fs, k, fi, attr = await _new_draft_file(make_fs, repo, source, b"behind.bin")
    files = fs.ns.drafts
    dn = files.handles[fi.fh].node.d
    big = os.urandom(2 * WRITE_BEHIND)
    await fs.ops.write(fi.fh, 0, big)  # no measure yet: applied at once
    assert dn.pending == 0 and files.free > 0 and files.queued == 0
    files.free = files_mod.RESERVE + len(big) - 1  # room for less than one more
    await fs.ops.write(fi.fh, len(big), big)
    assert dn.pending == 0
    files.free = files_mod.RESERVE * 4  # room: goes behind
    await fs.ops.write(fi.fh, 2 * len(big), big)
    assert dn.pending == 1 and files.queued == len(big)
    await fs.ops.release(fi.fh)
    assert dn.pending == 0 and files.queued == 0
    assert await k.read_file(attr.st_ino) == big * 3


async def test_a_write_behind_failure_no_call_saw_fails_the_commit(make_fs, repo, source,
                                                                  tmp_path, caplog):
    """close reports nothing (no FLUSH): a write-behind that fails after the writer's last
    call marks the file's writes as lost, and the commit refuses the draft, naming the file,
    until the file is written from its start again."""
    fs, _k, fi, attr = await _new_draft_file(make_fs, repo, source, b"lost.bin")
    files = fs.ns.drafts
    h = files.handles[fi.fh]
    (tmp_path / "ro").write_bytes(b"")
    ro = os.open(tmp_path / "ro", os.O_RDONLY)
    os.dup2(ro, h.fd)  # the staging file's descriptor refuses writes: EBADF behind the reply
    os.close(ro)
    files.free, files.free_at = files_mod.RESERVE * 4, trio.current_time()
    assert await fs.ops.write(fi.fh, 0, os.urandom(WRITE_BEHIND)) == WRITE_BEHIND
    await files.settle_all()  # as when the daemon stops: logged, the handle still reports
    assert "write to lost.bin in draft vision/cats/d1 failed as the daemon stopped" in caplog.text
    await fs.ops.release(fi.fh)
    area = fs.area
    assert area is not None
    d = area.get("vision", "cats", "d1")
    with pytest.raises(IntegrityError, match=r"lost writes.*lost\.bin: .*Bad file descriptor"):
        commit_mod.commit_draft(area, d, repo, type_="dataset")
    fi = await fs.ops.open(attr.st_ino, os.O_WRONLY | os.O_TRUNC, CTX)  # written again
    await fs.ops.write(fi.fh, 0, b"again\n")
    await fs.ops.release(fi.fh)
    rec, created = commit_mod.commit_draft(area, d, repo, type_="dataset")
    e = repo.entry(rec, "lost.bin")
    assert created and e is not None and e.size == 6


async def test_kernel_timeouts_inside_a_draft(make_fs, repo, source):
    """Only the daemon changes a draft: names inside it are cached long, the draft itself and
    a base directory whose nlink is unknown a second, names right below the root (on a mount
    other users reach) not at all."""
    put(repo, source)
    fs = make_fs(drafts=True)
    k = Kernel(fs.ops)
    root = await mkdraft(fs, k)
    assert root.entry_timeout == root.attr_timeout == DRAFT_TTL
    data = await k.lookup(root.st_ino, "data")  # a base directory: nlink not read yet
    assert data.entry_timeout == 0 and data.st_nlink == 1 and data.attr_timeout == DRAFT_TTL
    deep = await k.lookup(data.st_ino, "deep")
    assert deep.entry_timeout == INSIDE_TTL > DRAFT_TTL and deep.attr_timeout == DRAFT_TTL
    csv = await k.lookup(data.st_ino, "train.csv")
    assert csv.entry_timeout == csv.attr_timeout == INSIDE_TTL
    fi, new = await fs.ops.create(data.st_ino, b"new.bin", 0o644, os.O_WRONLY, CTX)
    k.counts[new.st_ino] += 1
    assert new.entry_timeout == new.attr_timeout == INSIDE_TTL
    await fs.ops.release(fi.fh)
    absent = await fs.ops.lookup(data.st_ino, b"nothing", CTX)
    assert absent.st_ino == 0 and absent.entry_timeout == INSIDE_TTL
    assert (await fs.ops.getattr(data.st_ino, CTX)).attr_timeout == INSIDE_TTL  # nlink known
    fs.ns.drafts.guard_walks = False  # only the mounting user reaches the mount
    assert (await fs.ops.lookup(root.st_ino, b"README", CTX)).entry_timeout == INSIDE_TTL
    await k.forget_all()


async def test_small_writes_inline_after_queued_big_ones_and_rights_asked_again(
        make_fs, repo, source, monkeypatch):
    """A small write is one pwrite on the trio thread (no coroutine below the handler); it
    waits for the file's queued write-behind first, asks the opener's rights again, and the
    kernel's security.capability question before it is answered ENOTSUP at once."""
    put(repo, source)
    writers = {1000}
    fs = make_fs(drafts=True, may_write=lambda uid, project: uid in writers)
    k = Kernel(fs.ops)
    root = await mkdraft(fs, k, b"w", uid=1000)
    fi, a = await fs.ops.create(root.st_ino, b"db", 0o644, os.O_RDWR, ctx(1000))
    k.counts[a.st_ino] += 1
    drafts = fs.ns.drafts

    async def no_coroutine(*args: Any) -> int:
        raise AssertionError("a small write with nothing queued went through write()")

    monkeypatch.setattr(drafts, "write", no_coroutine)
    assert await fs.ops.write(fi.fh, 0, b"a" * 4096) == 4096
    assert await errno_of(fs.ops.getxattr(a.st_ino, b"security.capability", ctx(1000))) \
        == errno.EOPNOTSUPP
    monkeypatch.undo()
    big = os.urandom(2 * WRITE_BEHIND)
    drafts.free, drafts.free_at = files_mod.RESERVE * 4, trio.current_time()  # room for it
    assert await fs.ops.write(fi.fh, 4096, big) == len(big)  # queued, replied to at once
    assert drafts.write_now(fi.fh, 4096, b"B") is None  # queued bytes first: the slow path
    assert await fs.ops.write(fi.fh, 4096, b"B" * 10) == 10
    assert await fs.ops.read(fi.fh, 0, 4096 + len(big)) == b"a" * 4096 + b"B" * 10 + big[10:]
    await fs.ops.fsync(fi.fh, True)
    writers.clear()  # he left the project's writers: his open handle writes no more
    assert await errno_of(fs.ops.write(fi.fh, 0, b"x")) == errno.EACCES
    assert await errno_of(fs.ops.write(fi.fh, 0, big)) == errno.EACCES
    await fs.ops.release(fi.fh)
    await k.forget_all()


async def test_a_directory_opened_to_be_fsynced_is_never_listed(make_fs, repo, source,
                                                                 monkeypatch):
    """sqlite opens the draft directory and fsyncs it every transaction: opendir lists
    nothing (the first readdir does, once), and an fsyncdir with nothing to sync stays on the
    trio thread."""
    from artifactfs.drafts.draft import Draft
    put(repo, source)
    fs = make_fs(drafts=True)
    k = Kernel(fs.ops)
    root = await mkdraft(fs, k)
    calls: list[str] = []
    listdir, sync = Draft.listdir, Draft.sync
    monkeypatch.setattr(Draft, "listdir", lambda d, p="": (calls.append("list"), listdir(d, p))[1])
    monkeypatch.setattr(Draft, "sync", lambda d: (calls.append("sync"), sync(d))[1])
    fh = await fs.ops.opendir(root.st_ino, CTX)
    await fs.ops.fsyncdir(fh, False)
    await fs.ops.fsyncdir(fh, False)  # nothing changed since: no worker thread, no sync
    assert calls == ["sync"]
    fi, a = await fs.ops.create(root.st_ino, b"late.txt", 0o644, os.O_WRONLY, CTX)
    k.counts[a.st_ino] += 1
    await fs.ops.release(fi.fh)
    await fs.ops.fsyncdir(fh, False)
    assert calls == ["sync", "sync"]
    got, start = [], 0
    while True:  # two entries a batch: listed once, cookies index into that one listing
        tok = Token(2)
        await fs.ops.readdir(fh, start, tok)
        for name, attr, _ in tok.out:
            k.counts[attr.st_ino] += 1
            got.append(name.decode())
        if len(tok.out) < 2:
            break
        start = tok.out[-1][2]
    await fs.ops.releasedir(fh)
    assert calls == ["sync", "sync", "list"]
    assert sorted(got) == sorted([*os.listdir(source), "late.txt"])
    await k.forget_all()


async def test_owner_only_writers_policy_and_erofs_outside(make_fs, repo, source):
    put(repo, source)
    fs = make_fs(drafts=True, may_write=lambda uid, project: uid != 3000)
    k = Kernel(fs.ops)
    root = await mkdraft(fs, k, b"alice", uid=1000)
    ops = fs.ops
    assert (root.st_uid, stat.S_IMODE(root.st_mode)) == (1000, 0o700)
    assert (await ops.getattr(root.st_ino, ctx(2000))).st_uid == 1000  # stat of it: fine
    for call in (ops.lookup(root.st_ino, b"README", ctx(2000)),
                 ops.opendir(root.st_ino, ctx(2000)),
                 ops.create(root.st_ino, b"x", 0o644, os.O_WRONLY, ctx(2000)),
                 ops.mkdir(root.st_ino, b"x", 0o755, ctx(2000)),
                 ops.access(root.st_ino, os.R_OK, ctx(2000))):
        assert await errno_of(call) == errno.EACCES
    readme = await ops.lookup(root.st_ino, b"README", ctx(0))  # root may
    k.counts[readme.st_ino] += 1
    assert await errno_of(ops.getattr(readme.st_ino, ctx(2000))) == errno.EACCES
    parent = (await k.walk("drafts/vision/cats")).st_ino
    assert await errno_of(ops.rmdir(parent, b"alice", ctx(2000))) == errno.EACCES
    assert await errno_of(ops.mkdir(parent, b"carol", 0o755, ctx(3000))) == errno.EACCES
    assert await errno_of(ops.mkdir(parent, b"bad name", 0o755, CTX)) == errno.EINVAL
    assert await errno_of(ops.mkdir(DRAFTS_INO, b"drafts", 0o755, CTX)) == errno.EINVAL
    assert await errno_of(ops.create(DRAFTS_INO, b"f", 0o644, os.O_WRONLY, CTX)) == errno.EPERM
    assert await errno_of(ops.rename(parent, b"alice", parent, b"bob", 0, CTX)) == errno.EPERM
    other = await mkdraft(fs, k, b"other")
    assert await errno_of(ops.rename(root.st_ino, b"README", other.st_ino, b"R", 0, CTX)) \
        == errno.EXDEV
    v0 = await k.walk("vision/cats/v0")
    for call in (ops.mkdir(v0.st_ino, b"d", 0o755, CTX),
                 ops.rename(v0.st_ino, b"README", root.st_ino, b"R", 0, CTX),
                 ops.unlink(v0.st_ino, b"README", CTX),
                 ops.setattr(v0.st_ino, SimpleNamespace(st_mode=0o777), fields(update_mode=True),
                             None, CTX)):
        assert await errno_of(call) == errno.EROFS
    await k.forget_all()
    assert fs.ns.inodes.total_lookups() == 0


async def test_base_nodes_load_on_a_miss_and_commit_and_rm_r(make_fs, repo, source, tmp_path):
    put(repo, source)
    fs = make_fs(drafts=True, remote=True)  # a fresh manifest cache: no base node cached
    k = Kernel(fs.ops)
    root = await mkdraft(fs, k)
    deep = await k.walk("drafts/vision/cats/d1/data/deep/x.txt")  # NeedNode → load → retry
    assert await k.read_file(deep.st_ino) == b"deep\n"
    fi, attr = await fs.ops.create(root.st_ino, b"added.txt", 0o644, os.O_WRONLY, CTX)
    k.counts[attr.st_ino] += 1
    await fs.ops.write(fi.fh, 0, b"added\n")
    assert await errno_of(fs.ops.flush(fi.fh)) == errno.ENOSYS  # the kernel stops sending it
    await fs.ops.release(fi.fh)
    area = fs.area
    assert area is not None
    d = area.get("vision", "cats", "d1")
    rec, created = commit_mod.commit_draft(area, d, repo, type_="dataset")
    assert created and rec.version == 1
    assert repo.entry(rec, "added.txt") is not None
    fs.ns.drafts.draft_gone("vision", "cats", "d1")
    parent = (await k.walk("drafts/vision/cats")).st_ino
    assert (parent, b"d1") in fs.invalidated
    assert await errno_of(fs.ops.lookup(parent, b"d1", CTX)) == errno.ENOENT
    # rm -r: empty the draft, then rmdir it
    gone = await mkdraft(fs, k, b"gone")
    for name, _, _ in await k.readdir(gone.st_ino):
        n = fs.ns.node((await k.lookup(gone.st_ino, name)).st_ino)
        if n.kind == Kind.DDIR:
            await rm_tree(fs, k, n.ino)
            await fs.ops.rmdir(gone.st_ino, name, CTX)
        else:
            await fs.ops.unlink(gone.st_ino, name, CTX)
    await fs.ops.rmdir(parent, b"gone", CTX)
    assert [x.label for x in area.list()] == []
    await k.forget_all()
    assert fs.ns.inodes.total_lookups() == 0


async def rm_tree(fs: FS, k: Kernel, ino: int) -> None:
    for name, attr, _ in await k.readdir(ino):
        if stat.S_ISDIR(attr.st_mode):
            await rm_tree(fs, k, attr.st_ino)
            await fs.ops.rmdir(ino, name, CTX)
        else:
            await fs.ops.unlink(ino, name, CTX)


async def test_readers_of_a_project_and_everyone_else(make_fs, repo, source):
    """SPEC §9: users outside a project's readers get EACCES on its directory (lookup, listing,
    access); its artifact directories are looked up on every walk so no cached entry lets
    them in; writers may read; other projects are open."""
    from artifactfs.config import ProjectAccess
    from artifactfs.mount.access import Access
    put(repo, source)
    put(repo, source, "open/things")
    groups = {1000: frozenset({"ml"}), 2000: frozenset({"other"}), 3000: frozenset({"admins"})}
    acl = Access({"vision": ProjectAccess(readers=("ml",), writers=("admins",))},
                 groups=lambda uid: groups.get(uid, frozenset()))
    fs = make_fs(drafts=True, access=acl, may_write=acl.may_write)
    ops = fs.ops
    project = await ops.lookup(pyfuse3.ROOT_INODE, b"vision", ctx(2000))  # seeing it is fine
    for uid in (0, 1000, 3000):
        cats = await ops.lookup(project.st_ino, b"cats", ctx(uid))
        assert cats.entry_timeout == 0  # restricted: every walk asks again
        await ops.releasedir(await ops.opendir(project.st_ino, ctx(uid)))
        assert await ops.access(project.st_ino, os.R_OK | os.X_OK, ctx(uid))
    for call in (ops.lookup(project.st_ino, b"cats", ctx(2000)),
                 ops.opendir(project.st_ino, ctx(2000)),
                 ops.access(project.st_ino, os.X_OK, ctx(2000))):
        assert await errno_of(call) == errno.EACCES
    other = await ops.lookup(pyfuse3.ROOT_INODE, b"open", ctx(2000))
    things = await ops.lookup(other.st_ino, b"things", ctx(2000))
    assert things.entry_timeout > 0  # an open project keeps the usual timeouts
    assert acl.may_write(3000, "vision") and not acl.may_write(1000, "vision")
    assert acl.may_write(2000, "open")
