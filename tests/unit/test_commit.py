"""The commit engine and the control-request handler, without FUSE: content, reuse, crashes."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from drafthelp import write
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from artifactfs import drafts_cli, fetch, model
from artifactfs import errors as errors_mod
from artifactfs.catalog import VersionRecord
from artifactfs.drafts import commit as commit_mod
from artifactfs.drafts.area import DraftArea, store_copier
from artifactfs.drafts.commit import commit_draft
from artifactfs.drafts.draft import Draft
from artifactfs.drafts_cli import commit, draft
from artifactfs.errors import Busy, NotFound, PermissionDenied, TypeConflict, UsageError
from artifactfs.mount import registry
from artifactfs.mount.access import Access
from artifactfs.mount.requests import handle_request
from artifactfs.names import Ref
from artifactfs.repo import Repo
from artifactfs.store import LocalStore

UID = os.getuid()
BASE = {"a.txt": b"alpha", "dir/b.txt": b"bravo", "dir/sub/c.txt": b"charlie",
        "keep/k1": b"k1", "keep/k2": b"k2", "empty.txt": b""}


class Env:
    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.repo = Repo(LocalStore(os.path.join(tmp, "store")))
        self.area = DraftArea(os.path.join(tmp, "drafts"), self.repo.catalog.load_node,
                              store_copier(self.repo.store))
        self.n = 0

    def reopen(self) -> None:
        self.area.close()
        self.area = DraftArea(os.path.join(self.tmp, "drafts"), self.repo.catalog.load_node,
                              store_copier(self.repo.store))

    def local_tree(self, files: dict[str, bytes]) -> str:
        self.n += 1
        root = os.path.join(self.tmp, f"tree{self.n}")
        os.makedirs(root)
        for p, data in files.items():
            os.makedirs(os.path.dirname(os.path.join(root, p)), exist_ok=True)
            Path(root, p).write_bytes(data)
        return root

    def put(self, files: dict[str, bytes], name: str = "cats") -> VersionRecord:
        return self.repo.put_path(self.local_tree(files), "vision", name, "dataset")[0]

    def draft(self, base: VersionRecord | None, name: str = "cats", uid: int = UID) -> Draft:
        self.n += 1
        return self.area.create("vision", name, f"d{self.n}", uid, base)

    def download(self, rec: VersionRecord) -> str:
        self.n += 1
        root = os.path.join(self.tmp, f"get{self.n}")
        self.repo.download(rec, root)
        return root


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(str(tmp_path))
    yield e
    e.area.close()


def tree_of(root: str) -> dict[str, object]:
    """path -> bytes/exec bit, ("link", target) or "dir" for everything below ``root``."""
    out: dict[str, object] = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirs + files:
            p = os.path.normpath(os.path.join(rel, name))
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                out[p] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                out[p] = "dir"
            else:
                out[p] = (Path(full).read_bytes(), bool(os.stat(full).st_mode & 0o100))
    return out


def draft_tree(repo: Repo, d: Draft, path: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for name, info in d.listdir(path):
        p = f"{path}/{name}" if path else name
        if info.kind == "dir":
            out[p] = "dir"
            out.update(draft_tree(repo, d, p))
        elif info.kind == "symlink":
            out[p] = ("link", info.target)
        else:
            if info.local is not None:
                data = Path(info.local).read_bytes()
            else:
                assert info.entry is not None
                data = fetch.read_range(repo.store, info.entry, 0, info.entry.size)
            out[p] = (data, info.executable)
    return out


def same_ops(d: Draft, ref: str) -> None:
    """One scripted session, applied to a draft and to a plain directory."""
    r = lambda p: os.path.join(ref, p)  # noqa: E731
    write(d, "a.txt", b"ALPHA!", truncate=True)
    Path(r("a.txt")).write_bytes(b"ALPHA!")
    write(d, "dir/b.txt", b"XX", offset=1)
    with open(r("dir/b.txt"), "r+b") as f:
        f.seek(1)
        f.write(b"XX")
    d.mkdir("new")
    os.mkdir(r("new"))
    write(d, "new/n.bin", b"\0" * 1000, create=True)
    Path(r("new/n.bin")).write_bytes(b"\0" * 1000)
    d.rename("dir", "renamed")
    os.rename(r("dir"), r("renamed"))
    d.unlink("keep/k2")
    os.unlink(r("keep/k2"))
    d.symlink("new/link", "../renamed/sub")
    os.symlink("../renamed/sub", r("new/link"))
    d.chmod("keep/k1", True)
    os.chmod(r("keep/k1"), 0o755)
    d.mkdir("empty-dir")
    os.mkdir(r("empty-dir"))
    write(d, "tmp.swp", b"saved", create=True)
    d.rename("tmp.swp", "empty.txt")
    Path(r("empty.txt")).write_bytes(b"saved")
    d.truncate("renamed/sub/c.txt", 4)
    os.truncate(r("renamed/sub/c.txt"), 4)


def test_commit_content_matches_a_plain_directory(env: Env) -> None:
    base = env.put(BASE)
    d = env.draft(base)
    ref = env.local_tree(BASE)
    same_ops(d, ref)
    assert draft_tree(env.repo, d) == tree_of(ref)
    rec, created = commit_draft(env.area, d, env.repo)
    assert created and rec.label == "vision/cats:v1" and rec.base == 0
    assert tree_of(env.download(rec)) == tree_of(ref)
    assert env.area.list() == []
    assert not os.path.exists(d.dir)


def test_unchanged_files_are_neither_read_nor_rehashed(env: Env) -> None:
    files = {f"many/f{i}": f"content {i}".encode() for i in range(50)}
    base = env.put({**BASE, **files})
    d = env.draft(base)
    local = d.open_for_write("many/f0")  # copied up but never written: still pristine
    d.release(local)
    base_entries = dict(env.repo.entries(base))
    for e in base_entries.values():  # every file blob of the base vanishes from the store
        if e.kind == "file":
            os.unlink(os.path.join(env.repo.store.root, model.object_key(e.digest)))  # type: ignore[attr-defined]
    assert d.plan().sources == []
    write(d, "new.txt", b"new", create=True)
    d.rename("many", "moved")
    d.rename("dir", "moved/dir")
    d.unlink("keep/k1")
    d.chmod("a.txt", True)
    rec, created = commit_draft(env.area, d, env.repo)
    assert created
    new = dict(env.repo.entries(rec))
    for i in range(50):
        assert new[f"moved/f{i}"].digest == base_entries[f"many/f{i}"].digest
    assert new["moved/dir/sub/c.txt"] == base_entries["dir/sub/c.txt"]
    assert new["a.txt"].digest == base_entries["a.txt"].digest and new["a.txt"].executable
    assert "keep/k1" not in new and new["keep/k2"] == base_entries["keep/k2"]
    assert rec.file_count == base.file_count + 1 - 1


def test_content_equal_to_the_base_creates_no_version(env: Env) -> None:
    base = env.put(BASE)
    d = env.draft(base)
    assert commit_draft(env.area, d, env.repo, aliases=["best"]) == (base, False)
    assert env.area.list() == []
    assert env.repo.catalog.aliases("vision", "cats") == {"best": 0}
    d = env.draft(base)
    write(d, "a.txt", b"alpha", truncate=True)  # same bytes again
    d.rename("dir", "x")
    d.rename("x", "dir")
    d.unlink("keep/k1")
    write(d, "keep/k1", b"k1", create=True)
    rec, created = commit_draft(env.area, d, env.repo)
    assert (rec.version, created) == (0, False)
    v1 = env.put({**BASE, "more": b"m"})
    d = env.draft(base)  # a draft of v0 while v1 is the latest: equal to its base
    rec, created = commit_draft(env.area, d, env.repo)
    assert (rec.version, created) == (0, False)
    assert [r.version for r in env.repo.catalog.versions("vision", "cats")] == [0, v1.version]


def test_type_options_description_metadata_and_lineage(env: Env) -> None:
    d = env.draft(None, name="dogs")
    write(d, "x", b"x", create=True)
    with pytest.raises(UsageError, match="--type"):
        commit_draft(env.area, d, env.repo)
    with pytest.raises(UsageError, match="--run"):
        commit_draft(env.area, d, env.repo, type_="dataset", inputs=["vision/cats"])
    base = env.put(BASE)
    rec, created = commit_draft(env.area, d, env.repo, type_="model", aliases=["prod"],
                                description="first", metadata={"k": 1}, run="train1",
                                inputs=["vision/cats:v0"])
    assert created and (rec.type, rec.description, rec.metadata) == ("model", "first", {"k": 1})
    assert rec.run == "vision/train1"
    cat = env.repo.catalog
    assert cat.aliases("vision", "dogs") == {"prod": 0}
    assert [f"{r.project}/{r.id}" for r in cat.used_by(base)] == ["vision/train1"]
    run = cat.get_run("vision", "train1")
    assert [str(r) for r in cat.run_artifacts(run, "outputs")] == ["vision/dogs:v0"]
    d = env.draft(rec, name="dogs")
    write(d, "y", b"y", create=True)
    with pytest.raises(TypeConflict):
        commit_draft(env.area, d, env.repo, type_="dataset")
    rec2, _ = commit_draft(env.area, d, env.repo)
    assert (rec2.version, rec2.type, rec2.description, rec2.metadata) == (1, "model", "first",
                                                                          {"k": 1})


def test_open_writers_fail_the_commit_or_are_waited_for(env: Env) -> None:
    base = env.put(BASE)
    d = env.draft(base)
    local = d.open_for_write("a.txt", truncate=True)
    with pytest.raises(Busy, match=r"a\.txt"):
        commit_draft(env.area, d, env.repo)
    with pytest.raises(Busy, match=r"other\.txt"):
        d.release(local)
        commit_draft(env.area, d, env.repo, open_paths=["other.txt"])
    local = d.open_for_write("a.txt")
    os.truncate(local, 1)
    t = threading.Timer(0.2, d.release, [local])
    t.start()
    rec, created = commit_draft(env.area, d, env.repo, wait=10)
    entry = env.repo.entry(rec, "a.txt")
    assert created and entry is not None and entry.digest == model.sha256_hex(b"\0")


def crash_at(monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    def boom(name: str) -> None:
        if name == step:
            raise RuntimeError(f"crash at {name}")
    monkeypatch.setattr(commit_mod, "_checkpoint", boom)


@pytest.mark.parametrize("step", ["ingested", "trees-built", "intent-saved"])
def test_crash_before_the_version_record_leaves_no_version(
        env: Env, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    base = env.put(BASE)
    d = env.draft(base)
    write(d, "n.txt", b"n", create=True)
    crash_at(monkeypatch, step)
    with pytest.raises(RuntimeError):
        commit_draft(env.area, d, env.repo)
    assert [r.version for r in env.repo.catalog.versions("vision", "cats")] == [0]
    assert not d.frozen
    env.reopen()  # as after a daemon restart
    d = env.area.get("vision", "cats", d.meta.id)
    monkeypatch.undo()
    rec, created = commit_draft(env.area, d, env.repo)
    assert (rec.version, created) == (1, True)
    assert env.repo.entry(rec, "n.txt") is not None


def test_crash_after_the_version_record_finishes_on_rerun(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    base = env.put(BASE)
    d = env.draft(base)
    write(d, "n.txt", b"n", create=True)
    crash_at(monkeypatch, "version-created")
    with pytest.raises(RuntimeError):
        commit_draft(env.area, d, env.repo, aliases=["best"])
    assert [r.version for r in env.repo.catalog.versions("vision", "cats")] == [0, 1]
    assert env.area.get("vision", "cats", d.meta.id) is d  # the draft is intact
    env.put({"other": b"someone else committed meanwhile"})  # v2
    monkeypatch.undo()
    rec, created = commit_draft(env.area, d, env.repo, aliases=["best"])
    assert (rec.version, created) == (1, True)  # the interrupted commit's version, not a v3
    assert [r.version for r in env.repo.catalog.versions("vision", "cats")] == [0, 1, 2]
    assert env.repo.catalog.aliases("vision", "cats") == {"best": 1}
    assert env.area.list() == []


def test_a_draft_being_committed_refuses_a_second_commit(env: Env) -> None:
    base = env.put(BASE)
    d = env.draft(base)
    d.freeze()
    try:
        with pytest.raises(Busy, match="already being committed"):
            commit_draft(env.area, d, env.repo)
        reply = handle_request({"op": "draft.discard", "project": "vision", "name": "cats",
                                "id": d.meta.id}, UID, env.area, env.repo)
        assert reply["ok"] is False and reply["errno"] == errno.EBUSY
    finally:
        d.thaw()


def test_one_file_changed_in_a_50000_file_artifact_commits_in_under_a_second(env: Env) -> None:
    changes = {f"f{i:05d}.txt": model.file_entry(10, model.sha256_hex(str(i).encode()))
               for i in range(50_000)}  # one flat directory: the worst case for one change
    base, _ = env.repo.commit_entries("vision", "big", "dataset", changes)
    d = env.draft(base, name="big")
    write(d, "f00007.txt", b"changed", truncate=True)
    t = time.perf_counter()
    rec, created = commit_draft(env.area, d, env.repo)
    elapsed = time.perf_counter() - t
    assert created and rec.file_count == 50_000
    assert elapsed < 1.0, f"one-file commit took {elapsed:.2f}s"


# --- the control-request handler -----------------------------------------------------------

def req(env: Env, uid: int = UID, **doc: object) -> dict[str, object]:
    return handle_request(doc, uid, env.area, env.repo)


def test_handler_creates_lists_commits_and_discards(env: Env) -> None:
    env.put(BASE)
    env.put({**BASE, "v1": b"1"})
    r = req(env, op="draft.create", project="vision", name="cats", ref="v0", id="mine")
    assert r == {"ok": True, "path": "drafts/vision/cats/mine", "project": "vision",
                 "name": "cats", "id": "mine", "owner": UID, "created_at": r["created_at"],
                 "base": "vision/cats:v0"}
    r1 = req(env, op="draft.create", project="vision", name="cats")
    assert r1["ok"] and r1["base"] == "vision/cats:v1" and str(r1["id"]).startswith("d")
    r2 = req(env, op="draft.create", project="vision", name="new-one")
    assert r2["ok"] and r2["base"] is None
    assert req(env, op="draft.create", project="vision", name="cats", id="mine")["errno"] == \
        errno.EEXIST
    assert req(env, op="draft.create", project="vision", name="cats", ref="v9")["errno"] == \
        errno.ENOENT
    assert req(env, op="draft.create", project="drafts", name="x")["errno"] == errno.EINVAL
    assert len(req(env, op="draft.list")["drafts"]) == 3  # type: ignore[arg-type]
    d = env.area.get("vision", "cats", "mine")
    write(d, "z", b"z", create=True)
    r = req(env, op="commit", project="vision", name="cats", id="mine", aliases=["best"])
    assert r == {"ok": True, "label": "vision/cats:v2", "version": 2, "created": True,
                 "digest": r["digest"], "distributed": False}
    r = req(env, op="draft.discard", project="vision", name="cats", id=r2["id"])
    assert r == {"ok": False, "error": r["error"], "kind": "NotFound", "errno": errno.ENOENT}
    assert req(env, op="draft.discard", project="vision", name="new-one", id=r2["id"])["ok"]
    assert req(env, op="nope")["errno"] == errno.EINVAL
    assert req(env, op="commit", project="vision", name="cats", id=r1["id"], aliases="best")[
        "errno"] == errno.EINVAL


def test_another_uid_is_denied_a_draft(env: Env) -> None:
    base = env.put(BASE)
    d = env.draft(base)
    other = UID + 1000
    for op in ("commit", "draft.discard"):
        r = req(env, other, op=op, project="vision", name="cats", id=d.meta.id)
        assert r["ok"] is False and r["errno"] == errno.EACCES and r["kind"] == "PermissionDenied"
    assert req(env, other, op="draft.list")["drafts"] == []
    assert len(req(env, 0, op="draft.list")["drafts"]) == 1  # type: ignore[arg-type]
    assert env.area.list() == [d]
    with pytest.raises(PermissionDenied):
        d.check_access(other)


def test_access_policy_from_the_user_database() -> None:
    from artifactfs.config import ProjectAccess
    acl = Access({"locked": ProjectAccess(writers=("no-such-group-xyz",)),
                  "hidden": ProjectAccess(readers=("no-such-group-xyz",))})
    assert acl.may_write(UID, "open") and acl.may_write(0, "locked")
    assert not acl.may_write(UID, "locked") or UID == 0
    assert acl.may_read(UID, "locked")  # no readers list: open to all
    assert not acl.may_read(UID, "hidden") or UID == 0
    assert acl.restricted("hidden") and not acl.restricted("locked")
    calls: list[int] = []
    now = [0.0]
    cached = Access({}, groups=lambda uid: calls.append(uid) or frozenset(), clock=lambda: now[0])
    cached.groups(5)
    cached.groups(5)
    now[0] = 11.0
    cached.groups(5)
    assert calls == [5, 5]  # asked once per 10 s per uid


# --- random operations on a draft and on a plain directory, compared ------------------------

NAMES = st.sampled_from(["a", "b", "c"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)


class DraftVsDirectory(RuleBasedStateMachine):
    """Every step runs on a draft and on a local directory: same errno, same tree; every commit
    gives a version whose download equals the directory."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp()
        self.env = Env(self.tmp)
        self.ref = self.env.local_tree({"a/b": b"base ab", "b": b"base b", "c/c/c": b"ccc"})
        self.base: VersionRecord = self.env.repo.put_path(self.ref, "p", "x", "dataset")[0]
        self.d = self.env.area.create("p", "x", "d0", UID, self.base)

    def teardown(self) -> None:
        self.env.area.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def r(self, p: str) -> str:
        return os.path.join(self.ref, p)

    def through_link(self, p: str, final: bool = False) -> bool:
        parts = p.split("/")
        upto = parts if final else parts[:-1]
        return any(os.path.islink(self.r("/".join(upto[:i + 1]))) for i in range(len(upto)))

    def same(self, mine: Callable[[], object], theirs: Callable[[], object]) -> None:
        errs = []
        for fn in (mine, theirs):
            try:
                fn()
                errs.append(0)
            except OSError as e:
                errs.append(e.errno or -1)
        assert errs[0] == errs[1], f"draft errno {errs[0]} != directory errno {errs[1]}"

    @initialize()
    def start(self) -> None:
        pass

    @rule(p=PATHS, data=st.binary(max_size=20), off=st.integers(0, 30), trunc=st.booleans())
    def write(self, p: str, data: bytes, off: int, trunc: bool) -> None:
        if self.through_link(p, final=True):
            return

        def theirs() -> None:
            fd = os.open(self.r(p), os.O_WRONLY | (os.O_TRUNC if trunc else 0))
            os.pwrite(fd, data, off)
            os.close(fd)
        self.same(lambda: write(self.d, p, data, off, trunc), theirs)

    @rule(p=PATHS, data=st.binary(max_size=20))
    def create(self, p: str, data: bytes) -> None:
        if self.through_link(p):
            return

        def theirs() -> None:
            fd = os.open(self.r(p), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.close(fd)
        self.same(lambda: write(self.d, p, data, create=True), theirs)

    @rule(p=PATHS)
    def mkdir(self, p: str) -> None:
        if not self.through_link(p):
            self.same(lambda: self.d.mkdir(p), lambda: os.mkdir(self.r(p)))

    @rule(p=PATHS)
    def rmdir(self, p: str) -> None:
        if not self.through_link(p):
            self.same(lambda: self.d.rmdir(p), lambda: os.rmdir(self.r(p)))

    @rule(p=PATHS)
    def unlink(self, p: str) -> None:
        if not self.through_link(p):
            self.same(lambda: self.d.unlink(p), lambda: os.unlink(self.r(p)))

    @rule(a=PATHS, b=PATHS)
    def rename(self, a: str, b: str) -> None:
        if not self.through_link(a) and not self.through_link(b):
            self.same(lambda: self.d.rename(a, b), lambda: os.rename(self.r(a), self.r(b)))

    @rule(p=PATHS, dest=NAMES)
    def symlink(self, p: str, dest: str) -> None:
        if not self.through_link(p):
            t = f"../nowhere-{dest}"
            self.same(lambda: self.d.symlink(p, t), lambda: os.symlink(t, self.r(p)))

    @rule(p=PATHS, x=st.booleans())
    def chmod(self, p: str, x: bool) -> None:
        if self.through_link(p, final=True) or os.path.isdir(self.r(p)):
            return
        self.same(lambda: self.d.chmod(p, x), lambda: os.chmod(self.r(p), 0o755 if x else 0o644))

    @rule(p=PATHS, size=st.integers(0, 12))
    def truncate(self, p: str, size: int) -> None:
        if not self.through_link(p, final=True):
            self.same(lambda: self.d.truncate(p, size), lambda: os.truncate(self.r(p), size))

    @rule()
    def reopen(self) -> None:
        self.env.reopen()
        self.d = self.env.area.get("p", "x", self.d.meta.id)

    @rule()
    def commit(self) -> None:
        rec, created = commit_draft(self.env.area, self.d, self.env.repo)
        assert tree_of(self.env.download(rec)) == tree_of(self.ref)
        assert created == (rec.digest != self.base.digest)
        self.base = rec
        self.d = self.env.area.create("p", "x", f"d{rec.version}-{time.time_ns()}", UID, rec)

    @invariant()
    def same_tree(self) -> None:
        assert draft_tree(self.env.repo, self.d) == tree_of(self.ref)


DraftVsDirectory.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_draft_behaves_like_a_directory = DraftVsDirectory.TestCase


def test_resolve_of_unknown_ref_is_clear(env: Env) -> None:
    with pytest.raises(NotFound):
        env.repo.resolve(Ref("vision", "nope"))


# --- the CLI against a stand-in daemon (handle_request behind a real unix socket) ------------

class FakeDaemon:
    """What the mount's control server does for draft requests, minus FUSE."""

    def __init__(self, env: Env, mountpoint: str, sock_dir: str) -> None:
        self.env, self.mountpoint = env, mountpoint
        self.path = os.path.join(sock_dir, registry.mount_id(mountpoint) + ".sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
                uid = struct.unpack("3i", creds)[1]
                line = conn.makefile("rb").readline()
                reply = handle_request(json.loads(line), uid, self.env.area, self.env.repo)
                conn.sendall(json.dumps({"ok": True, **reply}).encode() + b"\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def daemon(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    run = tempfile.mkdtemp(prefix="afs")
    mnt = os.path.join(env.tmp, "mnt")
    d = FakeDaemon(env, mnt, run)
    with open(os.path.join(run, registry.mount_id(mnt) + ".json"), "w") as f:
        json.dump({"mountpoint": mnt, "pid": os.getpid(), "store": "", "cache_dir": "",
                   "control": d.path}, f)
    monkeypatch.setattr(drafts_cli, "_runtime_dirs", lambda: [(run, os.geteuid())])
    yield d
    d.close()
    shutil.rmtree(run, ignore_errors=True)


def test_cli_draft_commit_list_discard(env: Env, daemon: FakeDaemon) -> None:
    cli = CliRunner()
    env.put(BASE)
    r = cli.invoke(draft, ["vision/cats:v0", "--id", "work"])
    assert r.exit_code == 0, r.output
    path = r.output.strip()
    assert path == os.path.join(daemon.mountpoint, "drafts/vision/cats/work")
    d = env.area.get("vision", "cats", "work")
    write(d, "new.txt", b"new", create=True)
    r = cli.invoke(draft, ["list"])
    assert r.exit_code == 0 and r.output.startswith(path + "  base=vision/cats:v0")
    r = cli.invoke(commit, [path, "--alias", "best", "--metadata", '{"k": 2}'])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-1] == "vision/cats:v1"
    assert env.repo.resolve("vision/cats:best").metadata == {"k": 2}
    r = cli.invoke(commit, [path])
    assert isinstance(r.exception, NotFound)  # the draft is gone
    r = cli.invoke(draft, ["vision/new-art", "--mount", daemon.mountpoint])
    assert r.exit_code == 0, r.output
    empty = r.output.strip()
    r = cli.invoke(commit, [empty])
    assert isinstance(r.exception, UsageError) and "--type" in str(r.exception)
    r = cli.invoke(commit, [empty, "--type", "model"])
    assert r.output.splitlines()[-1] == "vision/new-art:v0"
    r = cli.invoke(draft, ["vision/cats"])
    r = cli.invoke(draft, ["discard", r.output.strip()])
    assert r.exit_code == 0 and env.area.list() == []
    r = cli.invoke(commit, [os.path.join(env.tmp, "not-a-draft")])
    assert isinstance(r.exception, UsageError) and "not a draft directory" in str(r.exception)
    r = cli.invoke(commit, [path, "--input", "vision/cats"])
    assert isinstance(r.exception, UsageError) and "--run" in str(r.exception)
    r = cli.invoke(draft, ["vision/cats", "--mount", "/elsewhere"])
    assert isinstance(r.exception, errors_mod.ArtifactfsError) and "/elsewhere" in str(r.exception)



def test_the_first_commit_to_a_fresh_store_reads_back_the_nodes_it_built(env: Env) -> None:
    """Tree nodes are stored only once a version will refer to them; a new directory starts
    from the empty node, which must then be in the store before it is read back (a loader
    with no cache of its own, as the daemon's manifest cache is for nodes it never saw)."""
    def load(oid: str) -> dict[str, model.Entry]:
        return model.decode_node(env.repo.store.get(model.object_key(oid)), oid)

    d = env.draft(None, name="fresh")
    d.mkdir("new")
    write(d, "new/f.txt", b"f", create=True)
    rec, created = commit_draft(env.area, d, env.repo, type_="dataset", load=load)
    assert created and env.repo.entry(rec, "new/f.txt") is not None
    d = env.draft(rec, name="fresh")  # the same content again: nothing new is stored
    write(d, "new/f.txt", b"f", truncate=True)
    before = sorted(os.listdir(os.path.join(env.tmp, "store", "objects", "sha256")))
    count = sum(len(os.listdir(os.path.join(env.tmp, "store", "objects", "sha256", p)))
                for p in before)
    rec2, created = commit_draft(env.area, d, env.repo, load=load)
    assert not created and rec2.version == rec.version
    after = sum(len(os.listdir(os.path.join(env.tmp, "store", "objects", "sha256", p)))
                for p in os.listdir(os.path.join(env.tmp, "store", "objects", "sha256")))
    assert after == count
