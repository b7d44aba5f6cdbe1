"""A reference-model test: random file operations applied to a draft (through a real mount)
and to a plain directory must give the same results (the same errno when they fail), the same
tree after every step, and after a commit a version that holds exactly the plain directory.

DRAFT_MODEL_EXAMPLES sets the number of examples (25; 400 passed once in ~80 s)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from mounthelp import sha256_file

from artifactfs import drafts_cli

NAMES = st.sampled_from(["a", "b", "c", "d/a", "d/b", "d/e/f", "e", "e/a"])
DATA = st.binary(min_size=0, max_size=3000)


def snapshot(root: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            key = os.path.relpath(p, root)
            s = os.lstat(p)
            if stat.S_ISLNK(s.st_mode):
                out[key] = ("link", os.readlink(p))
            elif stat.S_ISDIR(s.st_mode):
                out[key] = ("dir",)
            else:
                out[key] = ("file", s.st_size, sha256_file(p), bool(s.st_mode & 0o100))
    return out


def test_random_operations_match_a_plain_directory(cli, mounter, tmp_path):
    base = tmp_path / "base"
    (base / "d" / "e").mkdir(parents=True)
    (base / "a").write_bytes(b"alpha" * 100)
    (base / "d" / "a").write_bytes(b"delta")
    (base / "d" / "e" / "f").write_bytes(os.urandom(20_000))
    os.symlink("a", base / "c")
    cli("put", str(base), "--name", "model/m", "--type", "dataset")
    m = mounter()
    counter = iter(range(10_000))
    _, control = drafts_cli.find_mount(m.mp)

    def request(op: str, draft_id: str, **kw: Any) -> dict[str, Any]:
        return drafts_cli.call(control, {"op": op, "project": "model", "name": "m",
                                         "id": draft_id, **kw})

    class Drafts(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:  # every example starts from v0
            self.id = f"h{next(counter)}"
            self.draft = m.path(request("draft.create", self.id, ref="v0")["path"])
            self.plain = tempfile.mkdtemp(dir=tmp_path)
            shutil.rmtree(self.plain)
            shutil.copytree(m.path("model", "m", "v0"), self.plain, symlinks=True)
            for dirpath, dirnames, filenames in os.walk(self.plain):  # versions are read-only
                for n in dirnames + filenames:
                    p = os.path.join(dirpath, n)
                    if not os.path.islink(p):
                        os.chmod(p, (os.stat(p).st_mode | 0o600) & ~0o022)

        def both(self, fn: Any) -> None:
            """Run ``fn(root)`` on the plain directory, then on the draft: same outcome."""
            try:
                fn(self.plain)
                want: int | None = None
            except OSError as e:
                want = e.errno
            try:
                fn(self.draft)
                got: int | None = None
            except OSError as e:
                got = e.errno
            assert got == want, (errno.errorcode.get(got or 0), errno.errorcode.get(want or 0),
                                 snapshot(self.plain), snapshot(self.draft))

        @rule(path=NAMES, data=DATA, offset=st.integers(0, 5000), trunc=st.booleans())
        def write(self, path: str, data: bytes, offset: int, trunc: bool) -> None:
            def op(root: str) -> None:
                flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if trunc else 0)
                fd = os.open(os.path.join(root, path), flags, 0o644)
                try:
                    os.pwrite(fd, data, offset)
                finally:
                    os.close(fd)
            self.both(op)

        @rule(path=NAMES, size=st.integers(0, 30_000))
        def truncate(self, path: str, size: int) -> None:
            self.both(lambda root: os.truncate(os.path.join(root, path), size))

        @rule(path=NAMES)
        def unlink(self, path: str) -> None:
            self.both(lambda root: os.unlink(os.path.join(root, path)))

        @rule(path=NAMES)
        def mkdir(self, path: str) -> None:
            self.both(lambda root: os.mkdir(os.path.join(root, path)))

        @rule(path=NAMES)
        def rmdir(self, path: str) -> None:
            self.both(lambda root: os.rmdir(os.path.join(root, path)))

        @rule(src=NAMES, dst=NAMES)
        def rename(self, src: str, dst: str) -> None:
            self.both(lambda root: os.rename(os.path.join(root, src), os.path.join(root, dst)))

        @rule(path=NAMES, dest=st.sampled_from(["a", "d/e", "nowhere"]))
        def symlink(self, path: str, dest: str) -> None:
            self.both(lambda root: os.symlink(dest, os.path.join(root, path)))

        @rule(src=NAMES, dst=NAMES)
        def link(self, src: str, dst: str) -> None:
            """A draft's hard link is a copy-on-write copy: modelled in the plain directory
            by a real link (for its errno) replaced by a copy of what it links to."""
            def op(root: str) -> None:
                a, b = os.path.join(root, src), os.path.join(root, dst)
                os.link(a, b, follow_symlinks=False)
                if root == self.plain:  # an inode of its own, as in the draft
                    os.unlink(b)
                    if os.path.islink(a):
                        os.symlink(os.readlink(a), b)
                    else:
                        shutil.copy2(a, b)
            self.both(op)

        @rule(path=NAMES, x=st.booleans())
        def chmod(self, path: str, x: bool) -> None:
            def op(root: str) -> None:
                p = os.path.join(root, path)
                if os.path.isfile(p) and not os.path.islink(p):
                    os.chmod(p, 0o755 if x else 0o644)
            self.both(op)

        @rule()
        def commit(self) -> None:
            label = request("commit", self.id, wait=5)["label"]
            assert snapshot(m.path("model", "m", label.rpartition(":")[2])) == \
                snapshot(self.plain)
            request("draft.create", self.id, ref=label.rpartition(":")[2])  # carry on

        @invariant()
        def same_tree(self) -> None:
            if hasattr(self, "draft"):
                assert snapshot(self.draft) == snapshot(self.plain)

        def teardown(self) -> None:
            if hasattr(self, "draft") and os.path.isdir(self.draft):
                request("draft.discard", self.id)

    Drafts.TestCase.settings = settings(
        max_examples=int(os.environ.get("DRAFT_MODEL_EXAMPLES", "25")), stateful_step_count=25,
        deadline=None, suppress_health_check=list(HealthCheck))
    Drafts.TestCase().runTest()
    assert Path(m.path("drafts", "model", "m")).is_dir()
