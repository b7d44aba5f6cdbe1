"""Copy-on-write drafts without FUSE: merged views, copy-up, POSIX errors, persistence."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from drafthelp import write

from artifactfs import fetch, model
from artifactfs.catalog import VersionRecord
from artifactfs.drafts import draft as drafts_mod
from artifactfs.drafts.area import DraftArea, store_copier
from artifactfs.drafts.draft import Draft
from artifactfs.errors import Busy, IntegrityError, NotFound, PermissionDenied
from artifactfs.repo import Repo
from artifactfs.store import LocalStore

BASE = {"a.txt": b"alpha", "dir/b.txt": b"bravo", "dir/sub/c.txt": b"charlie",
        "empty.txt": b"", "big.bin": os.urandom(100_000)}


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo = Repo(LocalStore(str(tmp / "store")))
        self.copies: list[str] = []
        self.area = self.open_area()

    def copier(self) -> Callable[[model.Entry, str], None]:
        inner = store_copier(self.repo.store)

        def copy(entry: model.Entry, dest: str) -> None:
            self.copies.append(entry.digest)
            inner(entry, dest)
        return copy

    def open_area(self) -> DraftArea:
        return DraftArea(str(self.tmp / "drafts"), self.repo.catalog.load_node, self.copier())

    def reopen(self) -> None:
        self.area.close()
        self.area = self.open_area()

    def put(self, files: dict[str, bytes], name: str = "cats") -> VersionRecord:
        src = self.tmp / f"src-{len(os.listdir(self.tmp))}"
        for p, data in files.items():
            (src / p).parent.mkdir(parents=True, exist_ok=True)
            (src / p).write_bytes(data)
        src.mkdir(exist_ok=True)
        return self.repo.put_path(str(src), "vision", name, "dataset")[0]

    def read(self, d: Draft, path: str) -> bytes:
        info = d.stat(path)
        if info.local is not None:
            return Path(info.local).read_bytes()
        assert info.entry is not None
        return fetch.read_range(self.repo.store, info.entry, 0, info.entry.size)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.area.close()


@pytest.fixture
def draft(env: Env) -> Draft:
    base = env.put(BASE)
    return env.area.create("vision", "cats", "d1", os.getuid(), base)


def names(d: Draft, path: str = "") -> list[str]:
    return [n for n, _ in d.listdir(path)]


def errno_of(fn: Callable[[], object]) -> int:
    with pytest.raises(OSError) as ei:
        fn()
    assert ei.value.errno is not None
    return ei.value.errno


def test_merged_listing_serves_base_entries_without_copying(env: Env, draft: Draft) -> None:
    assert names(draft) == ["a.txt", "big.bin", "dir", "empty.txt"]
    write(draft, "new.txt", b"new", create=True)
    draft.unlink("a.txt")
    draft.mkdir("newdir")
    assert names(draft) == ["big.bin", "dir", "empty.txt", "new.txt", "newdir"]
    assert names(draft, "dir") == ["b.txt", "sub"]
    info = draft.stat("dir/sub/c.txt")
    assert info.kind == "file" and info.local is None and info.entry is not None
    assert info.entry.digest == model.sha256_hex(b"charlie")
    assert env.read(draft, "dir/sub/c.txt") == b"charlie"
    assert draft.stat("new.txt").local is not None
    assert draft.lookup("a.txt") is None
    assert env.copies == []


def test_copy_up_only_on_write_and_o_trunc_skips_it(env: Env, draft: Draft) -> None:
    assert draft.needs_copy_up("big.bin")
    assert not draft.needs_copy_up("big.bin", truncate=True)
    assert not draft.needs_copy_up("empty.txt")
    write(draft, "big.bin", b"XY", offset=10)
    assert env.copies == [model.sha256_hex(BASE["big.bin"])]
    want = bytearray(BASE["big.bin"])
    want[10:12] = b"XY"
    assert env.read(draft, "big.bin") == bytes(want)
    assert not draft.needs_copy_up("big.bin")
    write(draft, "a.txt", b"A", truncate=True)
    write(draft, "empty.txt", b"E")
    assert len(env.copies) == 1
    assert env.read(draft, "a.txt") == b"A" and env.read(draft, "empty.txt") == b"E"
    assert env.read(draft, "dir/b.txt") == b"bravo"


def test_concurrent_copy_ups_of_one_file_agree(env: Env, draft: Draft) -> None:
    import threading
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(draft.open_for_write("big.bin")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and len(got) == 4
    assert sorted(os.listdir(os.path.join(draft.dir, "files"))) == [os.path.basename(got[0])]
    assert draft.open_writers() == ["big.bin"]
    for local in got:
        draft.release(local)
    assert draft.open_writers() == []
    assert env.read(draft, "big.bin") == BASE["big.bin"]


def test_copy_up_keeps_identity_mode_and_mtime(env: Env, draft: Draft) -> None:
    before = draft.stat("dir/b.txt")
    draft.chmod("dir/b.txt", True)
    local = draft.open_for_write("dir/b.txt")
    after = draft.stat("dir/b.txt")
    draft.release(local)
    assert after.ident == before.ident and after.executable
    assert after.mtime_ns == before.mtime_ns and after.local == local


def test_rename_files_over_existing_targets(env: Env, draft: Draft) -> None:
    write(draft, "tmp123", b"new content", create=True)
    draft.rename("tmp123", "a.txt")  # editor-style save: temp + rename over
    assert env.read(draft, "a.txt") == b"new content"
    assert draft.lookup("tmp123") is None
    draft.rename("dir/b.txt", "empty.txt")  # a base file moves over another base file
    assert env.read(draft, "empty.txt") == b"bravo"
    assert draft.stat("empty.txt").entry is not None  # still served from the base
    assert names(draft, "dir") == ["sub"]
    assert errno_of(lambda: draft.rename("a.txt", "dir")) == errno.EISDIR
    assert errno_of(lambda: draft.rename("dir", "a.txt")) == errno.ENOTDIR
    assert errno_of(lambda: draft.rename("a.txt", "big.bin", noreplace=True)) == errno.EEXIST
    assert errno_of(lambda: draft.rename("nope", "x")) == errno.ENOENT
    draft.rename("a.txt", "a.txt")  # same path: nothing happens
    assert env.read(draft, "a.txt") == b"new content"
    assert env.copies == []


def test_rename_directories_including_base_ones(env: Env, draft: Draft) -> None:
    ident = draft.stat("dir/sub/c.txt").ident
    draft.rename("dir", "moved")
    assert names(draft) == ["a.txt", "big.bin", "empty.txt", "moved"]
    c = draft.stat("moved/sub/c.txt")
    assert c.entry is not None and c.local is None and c.ident == ident
    draft.mkdir("target")
    draft.rename("moved/sub", "target")  # over an empty directory
    assert names(draft, "target") == ["c.txt"]
    assert errno_of(lambda: draft.rename("moved", "target")) == errno.ENOTEMPTY
    assert errno_of(lambda: draft.rename("target", "target/x")) == errno.EINVAL
    assert errno_of(lambda: draft.rename("target/c.txt", "target")) == errno.ENOTEMPTY
    draft.mkdir("target/deeper")
    assert errno_of(lambda: draft.rename("target/deeper", "target")) == errno.ENOTEMPTY
    draft.rename("a.txt", "big.bin", exchange=True)
    assert env.read(draft, "big.bin") == b"alpha"
    assert env.copies == []


def test_unlink_rmdir_whiteouts_then_recreate(env: Env, draft: Draft) -> None:
    draft.unlink("a.txt")
    assert errno_of(lambda: draft.stat("a.txt")) == errno.ENOENT
    write(draft, "a.txt", b"again", create=True)
    assert env.read(draft, "a.txt") == b"again"
    assert errno_of(lambda: draft.rmdir("dir")) == errno.ENOTEMPTY
    assert errno_of(lambda: draft.unlink("dir")) == errno.EISDIR
    assert errno_of(lambda: draft.rmdir("a.txt")) == errno.ENOTDIR
    draft.unlink("dir/sub/c.txt")
    draft.rmdir("dir/sub")
    draft.unlink("dir/b.txt")
    draft.rmdir("dir")
    draft.mkdir("dir")
    assert names(draft, "dir") == []  # a re-created directory hides the base's old content
    assert draft.is_empty("dir")


def test_posix_errors(draft: Draft) -> None:
    assert errno_of(lambda: draft.mkdir("dir")) == errno.EEXIST
    assert errno_of(lambda: draft.create("a.txt")) == errno.EEXIST
    assert errno_of(lambda: draft.mkdir("a.txt/x")) == errno.ENOTDIR
    assert errno_of(lambda: draft.mkdir("nope/x")) == errno.ENOENT
    assert errno_of(lambda: draft.open_for_write("dir")) == errno.EISDIR
    assert errno_of(lambda: draft.open_for_write("nope")) == errno.ENOENT
    assert errno_of(lambda: draft.listdir("a.txt")) == errno.ENOTDIR
    assert errno_of(lambda: draft.readlink("a.txt")) == errno.EINVAL
    assert errno_of(lambda: draft.mkdir("x" * 256)) == errno.ENAMETOOLONG
    assert errno_of(lambda: draft.mkdir("a/../b")) == errno.EINVAL
    assert errno_of(lambda: draft.rmdir("")) == errno.EBUSY


def test_symlinks_chmod_truncate_utimes(env: Env, draft: Draft) -> None:
    draft.symlink("link", "dir/b.txt")
    assert errno_of(lambda: draft.symlink("link2", "")) == errno.ENOENT
    assert draft.readlink("link") == "dir/b.txt"
    assert draft.stat("link").kind == "symlink"
    draft.chmod("a.txt", True)
    assert draft.stat("a.txt").executable and draft.stat("a.txt").entry is not None
    draft.truncate("big.bin", 5)
    assert env.read(draft, "big.bin") == BASE["big.bin"][:5]
    draft.truncate("dir/b.txt", 0)
    assert env.read(draft, "dir/b.txt") == b""
    draft.utimes("a.txt", 1_000_000_000)
    assert draft.stat("a.txt").mtime_ns == 1_000_000_000
    draft.utimes("big.bin", 2_000_000_000)
    assert draft.stat("big.bin").mtime_ns == 2_000_000_000


def test_unlink_of_an_open_file_keeps_its_handle_working(draft: Draft) -> None:
    local = draft.create("open.txt")
    fd = os.open(local, os.O_RDWR)
    draft.unlink("open.txt")
    os.pwrite(fd, b"still", 0)
    assert os.pread(fd, 5, 0) == b"still"
    os.close(fd)
    draft.release(local)
    assert draft.lookup("open.txt") is None


def test_writers_are_tracked_and_freeze_refuses_changes(draft: Draft) -> None:
    local = draft.open_for_write("a.txt")
    draft.rename("a.txt", "b.txt")
    assert draft.open_writers() == ["b.txt"]
    draft.freeze()
    try:
        with pytest.raises(Busy):
            draft.mkdir("x")
        with pytest.raises(Busy):
            draft.freeze()
        assert names(draft)  # reads still work
    finally:
        draft.thaw()
    draft.release(local)
    assert draft.open_writers() == []
    draft.mkdir("x")


def snapshot(env: Env, d: Draft, path: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for name, info in d.listdir(path):
        p = f"{path}/{name}" if path else name
        if info.kind == "dir":
            out[p + "/"] = snapshot(env, d, p)
        elif info.kind == "symlink":
            out[p] = ("link", info.target)
        else:
            out[p] = (env.read(d, p), info.executable, info.ident)
    return out


def busy_draft(env: Env, d: Draft) -> None:
    d.mkdir("new")
    write(d, "new/deep.txt", b"deep", create=True)
    write(d, "big.bin", b"ZZ", offset=3)
    d.rename("dir", "renamed")
    d.unlink("a.txt")
    d.symlink("new/link", "../renamed")
    d.chmod("empty.txt", True)
    d.utimes("renamed/b.txt", 42)
    d.mkdir("gone")
    d.rmdir("gone")


def test_drafts_survive_reopening_the_area(env: Env, draft: Draft) -> None:
    busy_draft(env, draft)
    before = snapshot(env, draft)
    env.reopen()
    d2 = env.area.get("vision", "cats", "d1")
    assert snapshot(env, d2) == before
    assert d2.meta.owner == os.getuid() and d2.base is not None and d2.base.version == 0
    assert [d.label for d in env.area.list()] == ["vision/cats/d1"]


def test_snapshot_compaction_and_a_torn_journal_tail(env: Env, draft: Draft,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drafts_mod, "MIN_COMPACT", 3)
    busy_draft(env, draft)
    before = snapshot(env, draft)
    assert os.path.exists(os.path.join(draft.dir, "tree.json"))
    draft.mkdir("after-snapshot")
    draft.sync()
    with open(os.path.join(draft.dir, "journal"), "ab") as f:
        f.write(b'{"o":"set","p":"torn')  # a crash in the middle of a record
    env.reopen()
    d2 = env.area.get("vision", "cats", "d1")
    assert snapshot(env, d2) == {**before, "after-snapshot/": {}}
    d2.mkdir("works")  # the journal was cut back to its last whole record
    env.reopen()
    assert "works" in names(env.area.get("vision", "cats", "d1"))


def test_sync_does_nothing_when_nothing_was_journaled_since(
        draft: Draft, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite fsyncs its database file at every commit: the draft's journal is synced again
    only when a tree change came since the last sync, its staging directory only when a
    staging file was made since."""
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(drafts_mod.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    monkeypatch.setattr(drafts_mod, "fsync_dir", lambda path: synced.append(-1))
    draft.sync()
    assert len(synced) == 2  # the journal, then the staging directory
    draft.sync()
    assert len(synced) == 2
    write(draft, "new.txt", b"x", create=True)  # a record, a new staging file: both again
    draft.sync()
    assert len(synced) == 4
    draft.sync()
    assert len(synced) == 4
    draft.make_spares()
    write(draft, "s1.txt", b"x", create=True)  # a spare made since the directory's last sync
    draft.sync()
    assert len(synced) == 6
    write(draft, "s2.txt", b"x", create=True)  # a spare the last sync covered: journal only
    draft.unlink("s1.txt")
    draft.sync()
    assert len(synced) == 7 and synced[-1] >= 0
    draft.retire(os.path.join(os.path.dirname(draft.dir), ".gone"))
    with pytest.raises(NotFound):  # a committed or discarded draft still says so
        draft.sync()


def test_a_damaged_journal_is_an_integrity_error(env: Env, draft: Draft) -> None:
    draft.mkdir("x")
    with open(os.path.join(draft.dir, "journal"), "ab") as f:
        f.write(b'{"o":"mv","a":"nope","b":"x/y","q":99}\n')
    env.reopen()
    with pytest.raises(IntegrityError, match="damaged"):
        env.area.get("vision", "cats", "d1").listdir()


def test_odd_names_survive_the_journal(env: Env, draft: Draft) -> None:
    odd = "sp ace\nnew\udcffline-é"
    write(draft, odd, b"odd", create=True)
    env.reopen()
    d2 = env.area.get("vision", "cats", "d1")
    assert odd in names(d2) and env.read(d2, odd) == b"odd"


def test_orphan_staging_files_are_removed_on_load(env: Env, draft: Draft) -> None:
    write(draft, "kept.txt", b"k", create=True)
    orphan = os.path.join(draft.dir, "files", "deadbeef")
    open(orphan, "wb").close()
    env.reopen()
    d2 = env.area.get("vision", "cats", "d1")
    assert env.read(d2, "kept.txt") == b"k"
    assert not os.path.exists(orphan)


def test_spare_staging_files_are_used_and_left_to_the_next_load(env: Env,
                                                                 draft: Draft) -> None:
    files = os.path.join(draft.dir, "files")
    assert not draft.spares_due
    write(draft, "first.txt", b"1", create=True)  # no spare yet: made in place, asks for some
    assert draft.spares_due
    draft.make_spares()
    assert not draft.spares_due and len(os.listdir(files)) == 1 + drafts_mod.SPARES
    before = set(os.listdir(files))
    t0 = time.time_ns()
    write(draft, "second.txt", b"22", create=True)
    info = draft.stat("second.txt")
    assert info.local is not None and os.path.basename(info.local) in before  # a spare
    assert info.mtime_ns >= t0 - 10_000_000 and len(os.listdir(files)) == len(before)
    env.reopen()  # a crash or an unmount: spares are orphans, deleted by the load
    d2 = env.area.get("vision", "cats", "d1")
    assert env.read(d2, "second.txt") == b"22" and env.read(d2, "first.txt") == b"1"
    assert len(os.listdir(files)) == 2


def test_spares_made_across_a_reload_are_not_used(env: Env, draft: Draft,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = draft._create_staging

    def reload_meanwhile() -> tuple[str, str]:
        draft.close()  # the next call replays: spares made before it would be orphans
        draft.stat("")
        return real()

    monkeypatch.setattr(draft, "_create_staging", reload_meanwhile)
    draft.make_spares()
    monkeypatch.undo()
    assert draft._spares == []
    assert os.listdir(os.path.join(draft.dir, "files")) == []


def test_ownership_and_discard(env: Env, draft: Draft) -> None:
    draft.check_access(os.getuid())
    draft.check_access(0)
    with pytest.raises(PermissionDenied):
        draft.check_access(os.getuid() + 1)
    assert stat.S_IMODE(os.stat(draft.dir).st_mode) == 0o700
    other = env.area.create("vision", "cats", "d2", 4242, None)
    assert [d.label for d in env.area.list(owner=4242)] == ["vision/cats/d2"]
    assert env.area.children() == ["vision"] and env.area.children("vision") == ["cats"]
    assert env.area.children("vision", "cats") == ["d1", "d2"]
    env.area.discard(other)
    with pytest.raises(NotFound):
        env.area.get("vision", "cats", "d2")
    with pytest.raises(NotFound):
        other.listdir("")
    assert not os.path.exists(other.dir)
    env.area.make_dir("nlp")
    env.area.make_dir("nlp", "bert")
    assert env.area.children("nlp") == ["bert"]
    env.area.remove_dir("nlp", "bert")
    env.area.remove_dir("nlp")


def test_one_process_per_area(env: Env) -> None:
    with pytest.raises(Busy):
        env.open_area()


def test_empty_draft_and_new_artifact(env: Env) -> None:
    d = env.area.create("vision", "dogs", "d1", os.getuid(), None)
    assert d.listdir() == []
    d.mkdir("x")
    write(d, "x/y", b"y", create=True)
    plan = d.plan()
    assert set(plan.changes) == {"x"} and [s.path for s in plan.sources] == ["x/y"]


def test_hard_links_are_copy_on_write_copies(env: Env, draft: Draft) -> None:
    """link(2) in a draft: the new path shares content (base or staged, no bytes copied) until
    one side is written; from then on the two are independent files."""
    files = os.path.join(draft.dir, "files")
    draft.link("big.bin", "big2.bin")  # base content: a second entry, no copy
    assert env.copies == [] and os.listdir(files) == []
    assert draft.stat("big2.bin").entry == draft.stat("big.bin").entry
    assert draft.stat("big2.bin").ident != draft.stat("big.bin").ident
    write(draft, "new.txt", b"fresh bytes", create=True)
    draft.link("new.txt", "dir/new-link.txt")  # staged: one staging file, two paths
    assert len(os.listdir(files)) == 1
    assert env.read(draft, "dir/new-link.txt") == b"fresh bytes"
    write(draft, "new.txt", b"FRESH")  # the writer gets its own copy first
    assert len(os.listdir(files)) == 2
    assert env.read(draft, "new.txt") == b"FRESH bytes"
    assert env.read(draft, "dir/new-link.txt") == b"fresh bytes"
    draft.link("dir/new-link.txt", "third.txt")
    draft.unlink("dir/new-link.txt")  # the shared file stays for the other path
    assert env.read(draft, "third.txt") == b"fresh bytes"
    draft.truncate("third.txt", 0)
    assert env.read(draft, "third.txt") == b"" and len(os.listdir(files)) == 2
    draft.link("new.txt", "fourth.txt")
    before = os.stat(draft.stat("new.txt").local or "").st_mtime_ns
    draft.utimes("fourth.txt", 1_000_000_000)  # a time of its own: the bytes are copied
    assert os.stat(draft.stat("new.txt").local or "").st_mtime_ns == before
    assert draft.stat("fourth.txt").mtime_ns == 1_000_000_000
    draft.symlink("sl", "a.txt")
    draft.link("sl", "sl2")  # linkat without AT_SYMLINK_FOLLOW: the symlink itself
    assert draft.readlink("sl2") == "a.txt"
    for src, dst, code in [("dir", "d2", errno.EPERM), ("nope", "x", errno.ENOENT),
                           ("a.txt", "new.txt", errno.EEXIST), ("a.txt", "no/x", errno.ENOENT)]:
        with pytest.raises(OSError) as e:
            draft.link(src, dst)
        assert e.value.errno == code, (src, dst)
    env.reopen()  # the journal keeps the sharing: unlinking one side keeps the other's bytes
    d = env.area.get("vision", "cats", "d1")
    assert env.read(d, "new.txt") == b"FRESH bytes" and env.read(d, "fourth.txt") == \
        b"FRESH bytes"
    d.unlink("new.txt")
    assert env.read(d, "fourth.txt") == b"FRESH bytes"


def test_a_link_to_a_file_open_for_writing_copies_it(env: Env, draft: Draft) -> None:
    local = draft.create("w.txt")
    with open(local, "wb") as f:
        f.write(b"one")
    assert draft.link_copies("w.txt")
    draft.link("w.txt", "w2.txt")
    with open(local, "ab") as f:  # the open handle keeps writing only its own file
        f.write(b"two")
    draft.release(local)
    assert env.read(draft, "w.txt") == b"onetwo" and env.read(draft, "w2.txt") == b"one"


def test_linked_staged_files_are_ingested_once(env: Env, draft: Draft) -> None:
    write(draft, "n.txt", b"linked", create=True)
    draft.link("n.txt", "dir/m.txt")
    draft.chmod("dir/m.txt", True)
    plan = draft.plan()
    assert [s.path for s in plan.sources] == ["n.txt"]
    entry = model.Entry("file", size=6, digest="d" * 64)
    got = plan.stored({"n.txt": entry})
    assert got["dir/m.txt"] == model.Entry("file", size=6, digest="d" * 64, executable=True)


def test_discard_returns_before_the_staging_files_are_deleted(
        env: Env, draft: Draft, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit replies once the draft is out of the area; its bytes go in the background."""
    from artifactfs.drafts import area as draftarea

    write(draft, "big.txt", b"x" * 4096, create=True)
    started, go = threading.Event(), threading.Event()
    real_rmtree = draftarea.shutil.rmtree

    def slow_rmtree(path: str, ignore_errors: bool = False) -> None:
        started.set()
        go.wait(10)
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(draftarea.shutil, "rmtree", slow_rmtree)
    env.area.discard(draft)
    assert not os.path.exists(draft.dir)
    assert started.wait(10)
    trash = os.path.join(env.area.root, ".trash")
    assert len(os.listdir(trash)) == 1  # still being deleted, out of the area's names
    assert not env.area.wait_deleted(0.05)
    go.set()
    assert env.area.wait_deleted(10)
    assert os.listdir(trash) == []


def test_leftovers_of_a_crash_are_deleted_at_start(env: Env, draft: Draft) -> None:
    """A discard or creation cut short by a crash leaves a directory in .trash (or a .tmp-*):
    the next start deletes it, in the background."""
    write(draft, "a-new.txt", b"n", create=True)
    root = env.area.root
    env.area.close()
    leftover = os.path.join(root, ".trash", "0123456789abcdef")
    os.rename(draft.dir, leftover)  # what a crash between the rename and the rmtree leaves
    half_made = os.path.join(root, ".tmp-fedcba9876543210")
    os.makedirs(os.path.join(half_made, "files"))
    env.area = env.open_area()
    assert env.area.wait_deleted(10)
    assert not os.path.exists(leftover) and not os.path.exists(half_made)
    assert env.area.list() == []


def test_a_draft_written_before_modes_and_ctimes_loads(env: Env, draft: Draft) -> None:
    """Drafts on disk from before nodes kept modes and ctimes (records without "pm"/"c")
    load unchanged; new records keep the mode a writer sets."""
    old = {"o": "set", "p": "old.txt", "t": 5, "q": 1,
           "n": {"k": "f", "i": "00" * 16, "e": None, "s": "feedface", "x": True, "m": 0,
                 "p": None}}
    env.area.close()
    open(os.path.join(draft.dir, "files", "feedface"), "wb").close()
    with open(os.path.join(draft.dir, "journal"), "w") as f:
        f.write(json.dumps(old) + "\n")
    env.area = env.open_area()
    d = env.area.get("vision", "cats", "d1")
    info = d.stat("old.txt")
    assert info.executable and info.mode is None and info.local is not None
    d.chmod("old.txt", False, 0o640)
    d.mkdir("new", 0o750)
    env.reopen()
    d = env.area.get("vision", "cats", "d1")
    assert d.stat("old.txt").mode == 0o640 and not d.stat("old.txt").executable
    assert d.stat("new").mode == 0o750 and d.stat("new").ctime_ns > 0
    assert d.stat("").nlink == 2 + 2  # dir/ from the base and new/
