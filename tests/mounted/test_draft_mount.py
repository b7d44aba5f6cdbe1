"""Drafts through a real mount: plain tools, persistence, commit, ownership, crashes and
distributed drafts (SPEC §4, §9, §10).

The tool tests apply the same operations to a draft and to a plain local directory holding
the same base, then compare the two file by file; after ``artifactfs commit`` the new version
must hold exactly what the plain directory holds.
"""

from __future__ import annotations

import errno
import glob
import json
import mmap
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mounthelp import mounted, pid_alive, sha256_file, wait_for

DIGEST = "user.artifactfs.digest"


def make_base(root: Path) -> Path:
    """A small base version: files, an executable, a symlink, an empty dir, a 5 MB file."""
    (root / "data" / "deep").mkdir(parents=True)
    (root / "data" / "train.csv").write_text("a,b\n1,2\n")
    (root / "data" / "deep" / "x.txt").write_text("deep\n" * 10)
    (root / "keep").mkdir()
    (root / "keep" / "a.txt").write_text("kept\n")
    (root / "keep" / "b.bin").write_bytes(os.urandom(100_000))
    (root / "many").mkdir()
    for i in range(60):
        (root / "many" / f"f{i:02d}").write_bytes(os.urandom(i * 50))
    (root / "empty").mkdir()
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "README").write_text("hello\n")
    os.symlink("README", root / "link")
    (root / "big.bin").write_bytes(os.urandom(5_000_000))
    return root


def snapshot(root: str, mtimes: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a tree holds: per path its kind, size, sha256 / target, executable bit."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            key = os.path.normpath(os.path.join(rel, name))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[key] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[key] = ("dir",)
            else:
                out[key] = ("file", st.st_size, sha256_file(p), bool(st.st_mode & 0o100),
                            st.st_mtime_ns if key.startswith(mtimes) else 0)
    return out


def put(cli: Callable[..., Any], src: str | Path, name: str = "vision/cats") -> str:
    out: str = cli("put", str(src), "--name", name, "--type", "dataset").stdout
    return out.split()[-1]


def sh(cmd: list[str], cwd: str | Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=60)


def tool_work(root: Path, ext: Path, tarball: Path) -> None:
    """Plain tools and system calls, applied to a draft and to a plain directory alike."""
    sh(["cp", "-r", "data", "data_copy"], root)
    sh(["cp", "-r", str(ext), "ext"], root)
    sh(["mv", "README", "data/README.moved"], root)  # a base file moved, never copied
    sh(["mv", "-T", "ext", "empty"], root)  # a directory over an existing empty one
    (root / "new.txt").write_text("replacing run.sh\n")
    sh(["mv", "new.txt", "run.sh"], root)  # a file over an existing base file
    sh(["mv", "data_copy", "keep/"], root)  # a directory into another
    # an mmap write into a base file (copy-up), then the file moved out of a doomed dir
    with open(root / "many" / "f40", "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        mm[10:20] = b"0123456789"
        mm.flush()
    sh(["mv", "many/f40", "mm.bin"], root)
    sh(["rm", "-r", "many"], root)
    sh(["tar", "-xf", str(tarball)], root)
    # an editor: write a temp file, fsync, rename over the target
    tmp = root / "data" / ".train.csv.swp"
    with open(tmp, "w") as f:
        f.write("a,b\n1,2\n3,4\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, root / "data" / "train.csv")
    # pwrite in the middle of a big base file, and past its end (a hole)
    fd = os.open(root / "big.bin", os.O_RDWR)
    try:
        os.pwrite(fd, b"X" * 100, 2_500_000)
        os.pwrite(fd, b"tail", 5_001_000)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.truncate(root / "data" / "deep" / "x.txt", 7)
    (root / "grown").write_bytes(b"g")
    os.truncate(root / "grown", 70_000)
    # a new file written through a shared mapping
    with open(root / "mapped.bin", "w+b") as f:
        f.truncate(1 << 20)
        with mmap.mmap(f.fileno(), 1 << 20) as mm:
            mm[:5] = b"START"
            mm[-3:] = b"END"
    os.symlink("data/train.csv", root / "sl")
    os.chmod(root / "empty" / "tool.sh", 0o755)
    os.chmod(root / "keep" / "data_copy" / "train.csv", 0o644)
    os.mkdir(root / "d1")
    os.mkdir(root / "d1" / "d2")
    os.rmdir(root / "d1" / "d2")
    # unlink of an open file: the handle keeps working
    fd = os.open(root / "scratch", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"before ")
        os.unlink(root / "scratch")
        os.write(fd, b"after")
        assert os.pread(fd, 100, 0) == b"before after"
        assert os.fstat(fd).st_size == 12
    finally:
        os.close(fd)


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path, Path]:
    base = make_base(tmp_path / "base")
    ext = tmp_path / "ext"
    (ext / "sub").mkdir(parents=True)
    (ext / "tool.sh").write_text("#!/bin/sh\n")
    (ext / "sub" / "e.txt").write_text("external\n")
    tsrc = tmp_path / "tsrc"
    (tsrc / "t" / "u").mkdir(parents=True)
    (tsrc / "t" / "u" / "file.txt").write_text("from tar\n")
    (tsrc / "t" / "bin.sh").write_text("#!/bin/sh\n")
    os.chmod(tsrc / "t" / "bin.sh", 0o755)
    os.symlink("u/file.txt", tsrc / "t" / "ln")
    os.utime(tsrc / "t" / "u" / "file.txt", (1_000_000_000, 1_000_000_000))
    tarball = tmp_path / "t.tar"
    with tarfile.open(tarball, "w") as tf:
        tf.add(tsrc / "t", arcname="t")
    return base, ext, tarball


def test_plain_tools_then_commit(cli, mounter, trees, tmp_path):
    base, ext, tarball = trees
    assert put(cli, base) == "vision/cats:v0"
    m = mounter()
    draft = Path(m.path("drafts", "vision", "cats", "work"))
    os.makedirs(draft)  # mkdir -p: drafts/vision/cats hold only drafts
    st = os.stat(draft)
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    assert snapshot(str(draft)) == snapshot(str(base))  # the base, nothing copied
    plain = tmp_path / "plain"
    shutil.copytree(base, plain, symlinks=True)
    tool_work(plain, ext, tarball)
    tool_work(draft, ext, tarball)
    want = snapshot(str(plain), mtimes=("t/",))
    assert snapshot(str(draft), mtimes=("t/",)) == want
    # a commit shows the new version at once, and the draft is gone
    assert cli("commit", str(draft)).stdout.splitlines()[-1] == "vision/cats:v1"
    assert not os.path.exists(draft)
    assert sorted(os.listdir(m.path("vision", "cats"))) == ["latest", "v0", "v1"]
    assert os.readlink(m.path("vision", "cats", "latest")) == "v1"
    assert snapshot(m.path("vision", "cats", "latest"), mtimes=("t/",)) == want
    # unchanged (and moved) base files keep their digests: they were never re-hashed
    v0, v1 = m.path("vision", "cats", "v0"), m.path("vision", "cats", "v1")
    for old, new in (("keep/a.txt", "keep/a.txt"), ("keep/b.bin", "keep/b.bin"),
                     ("README", "data/README.moved")):
        assert os.getxattr(os.path.join(v1, new), DIGEST) == \
            os.getxattr(os.path.join(v0, old), DIGEST)


def test_rsync_into_a_draft(cli, mounter, trees, tmp_path):
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (tools/setup installs it)")
    base, ext, _ = trees
    put(cli, base)
    m = mounter()
    draft = Path(m.path("drafts", "vision", "cats", "rs"))
    os.makedirs(draft)
    plain = tmp_path / "plain"
    shutil.copytree(base, plain, symlinks=True)
    for root in (plain, draft):
        sh(["rsync", "-a", f"{ext}/", "synced/"], root)
        sh(["rsync", "-a", "--delete", f"{base}/data/", "keep/"], root)  # removes a.txt, b.bin
    (ext / "sub" / "e.txt").write_text("changed, and longer than before\n")
    for root in (plain, draft):
        sh(["rsync", "-a", f"{ext}/", "synced/"], root)  # temp file + rename over the target
    want = snapshot(str(plain), mtimes=("synced/", "keep/"))
    assert snapshot(str(draft), mtimes=("synced/", "keep/")) == want
    cli("commit", str(draft))
    assert snapshot(m.path("vision", "cats", "v1"), mtimes=("synced/", "keep/")) == want


def test_drafts_survive_unmount_and_kill(cli, mounter, trees):
    base, _, _ = trees
    put(cli, base)
    m = mounter()
    draft = m.path("drafts", "vision", "cats", "keepme")
    os.makedirs(draft)
    with open(os.path.join(draft, "one.txt"), "w") as f:
        f.write("one\n")
        f.flush()
        os.fsync(f.fileno())
    os.unlink(os.path.join(draft, "README"))
    assert m.run("unmount", m.mp).returncode == 0
    assert not mounted(m.mp)
    m.start()
    assert Path(os.path.join(draft, "one.txt")).read_text() == "one\n"
    assert not os.path.exists(os.path.join(draft, "README"))
    fd = os.open(os.path.join(draft, "big.bin"), os.O_RDWR)  # copy-up, then fsync'ed bytes
    os.pwrite(fd, b"SURVIVE", 1000)
    os.fsync(fd)
    os.close(fd)
    with open(os.path.join(draft, "two.txt"), "wb") as f:
        f.write(b"two")
        f.flush()
        os.fsync(f.fileno())
    os.kill(m.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(m.pid), 10, "daemon death")
    m.start()  # recovers the stale mount itself
    assert Path(draft, "two.txt").read_bytes() == b"two"
    with open(os.path.join(draft, "big.bin"), "rb") as f:
        f.seek(1000)
        assert f.read(7) == b"SURVIVE"
    assert cli("commit", draft).stdout.splitlines()[-1] == "vision/cats:v1"
    v1 = m.path("vision", "cats", "v1")
    assert sorted(os.listdir(v1)) == sorted(set(os.listdir(base)) - {"README"} |
                                            {"one.txt", "two.txt"})


def test_draft_cli_on_a_ref_list_discard_and_errors(cli, mounter, trees, tmp_path):
    base, _, _ = trees
    put(cli, base)
    other = tmp_path / "other"
    other.mkdir()
    (other / "only.txt").write_text("v1\n")
    put(cli, other)
    m = mounter()
    path = cli("draft", "vision/cats:v0", "--id", "x", "--mount", m.mp).stdout.strip()
    assert path == m.path("drafts", "vision", "cats", "x")
    assert sorted(os.listdir(path)) == sorted(os.listdir(base))  # based on v0, not latest
    def mine() -> list[dict[str, Any]]:  # without --mount: every mount of the node
        rows: list[dict[str, Any]] = json.loads(
            cli("draft", "list", "--mount", m.mp, "--json").stdout)
        assert all(r["path"].startswith(m.mp + os.sep) for r in rows)
        return rows

    assert [(r["path"], r["base"]) for r in mine()] == [(path, "vision/cats:v0")]
    r = cli("commit", path)  # content equal to the base: no version, the base is printed
    assert r.stdout.splitlines()[-1] == "vision/cats:v0" and "unchanged" in r.stderr
    assert not os.path.exists(path)
    assert sorted(os.listdir(m.path("vision", "cats"))) == ["latest", "v0", "v1"]
    os.mkdir(m.path("drafts", "vision", "cats", "y"))  # on latest
    assert os.listdir(m.path("drafts", "vision", "cats", "y")) == ["only.txt"]
    cli("draft", "discard", m.path("drafts", "vision", "cats", "y"))
    assert not os.path.exists(m.path("drafts", "vision", "cats", "y"))
    z = m.path("drafts", "vision", "cats", "z")
    os.mkdir(z)
    with open(os.path.join(z, "f"), "w") as f:
        f.write("x")
    sh(["rm", "-r", z], m.mp)  # rm -r discards
    assert mine() == []
    os.makedirs(m.path("drafts", "vision", "newart", "n"))  # a new artifact: empty draft
    assert os.listdir(m.path("drafts", "vision", "newart", "n")) == []
    with open(m.path("drafts", "vision", "newart", "n", "a"), "w") as f:
        f.write("a")
    r = cli("commit", m.path("drafts", "vision", "newart", "n"), check=False)
    assert r.returncode == 1 and r.stderr.startswith("error:") and "--type" in r.stderr
    r = cli("commit", m.path("drafts", "vision", "newart", "n"), "--type", "model")
    assert r.stdout.splitlines()[-1] == "vision/newart:v0"
    assert os.listdir(m.path("vision", "newart", "latest")) == ["a"]
    for bad in (m.path("vision", "cats", "v0"), m.path("drafts", "vision", "cats", "nope")):
        r = cli("commit", bad, check=False)
        assert r.returncode == 1 and r.stderr.startswith("error:"), r.stderr
    with pytest.raises(OSError) as ei:  # outside drafts: still read-only
        os.mkdir(m.path("vision", "cats", "v0", "d"))
    assert ei.value.errno == errno.EROFS
    with pytest.raises(OSError) as ei:
        os.open(m.path("drafts", "file"), os.O_WRONLY | os.O_CREAT)
    assert ei.value.errno == errno.EPERM
    with pytest.raises(OSError) as ei:
        os.mkdir(m.path("drafts", "vision", "cats", "bad name"))
    assert ei.value.errno == errno.EINVAL


def test_write_only_handles_stay_coherent_with_readers(cli, mounter, trees):
    """Write-only handles use direct I/O: readers that cached the old bytes, readers opened
    later and a shared mmap all see what the write-only handle wrote."""
    base, _, _ = trees
    put(cli, base)
    m = mounter()
    draft = m.path("drafts", "vision", "cats", "coherent")
    os.makedirs(draft)
    path = os.path.join(draft, "f.bin")
    old, new = b"a" * 300_000, b"b" * 200_000
    Path(path).write_bytes(old)
    rfd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(rfd, len(old), 0) == old  # now in the page cache
        with open(path, "r+b") as rw, mmap.mmap(rw.fileno(), len(old)) as mm:
            assert mm[:10] == b"a" * 10
            wfd = os.open(path, os.O_WRONLY)
            assert os.pwrite(wfd, new, 50_000) == len(new)
            os.close(wfd)
            assert mm[50_000:250_000] == new  # the shared mapping sees the direct write
            mm[0:3] = b"xyz"
            mm.flush()
        want = b"xyz" + old[3:50_000] + new + old[250_000:]
        assert os.pread(rfd, len(old), 0) == want  # and so does the cached reader
        with open(path, "ab") as f:  # O_APPEND, write-only
            f.write(b"tail")
        assert Path(path).read_bytes() == want + b"tail"
    finally:
        os.close(rfd)
    assert cli("commit", draft).stdout.split()[-1] == "vision/cats:v1"
    assert Path(m.path("vision", "cats", "v1", "f.bin")).read_bytes() == want + b"tail"


def test_commit_reports_progress_to_a_terminal(cli, mounter, trees, env):
    """SPEC §5: long transfers show a progress bar on a terminal.  The daemon sends progress
    lines only to a client that asks; the CLI asks when stderr is a terminal."""
    from artifactfs.mount import control, registry
    base, _, _ = trees
    put(cli, base)
    m = mounter()
    draft = Path(m.path("drafts", "vision", "cats", "p"))
    draft.mkdir()
    (draft / "big.bin").write_bytes(os.urandom(40 << 20))
    (draft / "small.txt").write_text("small\n")
    rec = registry.read(m.mp)
    assert rec is not None
    seen: list[dict[str, Any]] = []
    reply = control.request(rec.control, {"op": "commit", "project": "vision", "name": "cats",
                                          "id": "p"}, None, on_progress=seen.append)
    assert reply["ok"] and reply["label"] == "vision/cats:v1"
    total = (40 << 20) + len("small\n")
    assert seen and all(d["total"] == total for d in seen)
    assert seen[0]["progress"] == 0 and max(d["progress"] for d in seen) == total
    # without asking: the reply only (what a script sees)
    draft.mkdir()
    (draft / "more.bin").write_bytes(os.urandom(1 << 20))
    r = cli("commit", str(draft))
    assert r.stdout.split()[-1] == "vision/cats:v2" and r.stderr == ""
    # on a terminal: a bar on stderr, the label still the last line
    draft.mkdir()
    (draft / "again.bin").write_bytes(os.urandom(8 << 20))
    cmd = f"{sys.executable} -m artifactfs commit {draft}"
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    assert "commit" in r.stdout and "100%" in r.stdout, r.stdout
    assert r.stdout.strip().splitlines()[-1].strip() == "vision/cats:v3"


def test_a_commit_waits_for_open_writers(cli, mounter, trees):
    base, _, _ = trees
    put(cli, base)
    m = mounter()
    draft = m.path("drafts", "vision", "cats", "w")
    os.makedirs(draft)
    f = open(os.path.join(draft, "open.txt"), "w")  # noqa: SIM115 - closed below, on purpose
    f.write("partial")
    r = cli("commit", draft, "--wait", "0", check=False)
    assert r.returncode == 1 and "open.txt" in r.stderr and "open for writing" in r.stderr
    proc = subprocess.Popen([sys.executable, "-m", "artifactfs", "commit", draft],
                            env=m.env, stdout=subprocess.PIPE, text=True)
    for _ in range(100):  # a second commit while the first one waits: a clear error
        r = cli("commit", draft, "--wait", "0", check=False)
        assert r.returncode == 1 and r.stderr.startswith("error:")
        if "already being committed" in r.stderr:
            break
        assert "open for writing" in r.stderr  # the first one has not started yet
    else:
        raise AssertionError("the first commit never started waiting")
    f.write(" and the rest")
    f.close()  # the waiting commit goes on once the file is released
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.splitlines()[-1] == "vision/cats:v1"
    assert Path(m.path("vision", "cats", "v1", "open.txt")).read_text() == "partial and the rest"


def test_a_draft_belongs_to_its_creator(cli, mounter, trees, users):
    base, _, _ = trees
    put(cli, base)
    alice, bob = users.make(), users.make()
    top = tempfile.mkdtemp(prefix="afs-uid-", dir="/tmp")
    os.chmod(top, 0o755)
    try:
        m = mounter(os.path.join(top, "mnt"), "--allow-other")
        draft = m.path("drafts", "vision", "cats", "alice")
        user_env = {"XDG_CONFIG_HOME": top}

        r = users.python(alice, f"import os; os.makedirs({draft!r}); "
                                f"open(os.path.join({draft!r}, 'mine.txt'), 'w').write('hers')",
                         env=user_env)
        assert r.returncode == 0, r.stderr
        st = os.stat(draft)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (alice.pw_uid, 0o700)
        probe = (f"import os, sys\n"
                 f"for op in (lambda: os.listdir({draft!r}),\n"
                 f"           lambda: open(os.path.join({draft!r}, 'mine.txt')).read(),\n"
                 f"           lambda: os.stat(os.path.join({draft!r}, 'README')),\n"
                 f"           lambda: open(os.path.join({draft!r}, 'new'), 'w')):\n"
                 f"    try:\n"
                 f"        op()\n"
                 f"    except PermissionError:\n"
                 f"        continue\n"
                 f"    sys.exit('not denied')\n")
        r = users.python(bob, probe, env=user_env)
        assert r.returncode == 0, r.stdout + r.stderr
        r = users.cli(bob, "commit", draft, env=user_env)
        assert r.returncode == 1 and r.stderr.startswith("error:"), r.stderr
        assert "another user" in r.stderr
        assert Path(os.path.join(draft, "mine.txt")).read_text() == "hers"  # root may
        r = users.cli(alice, "commit", draft, env=user_env)
        assert r.returncode == 0 and r.stdout.splitlines()[-1] == "vision/cats:v1", r.stderr
    finally:
        for mp in [os.path.join(top, "mnt")]:
            if mounted(mp):
                subprocess.run(["fusermount3", "-u", "-z", mp], check=False)
        shutil.rmtree(top, ignore_errors=True)


def test_only_readers_enter_a_restricted_project(cli, mounter, trees, env, users):
    """SPEC §9 with real users from the user database: the reader is in the readers' group,
    the outsider is not; a walk the reader cached does not let the outsider in, and another
    project stays open to both."""
    readers_group = users.group()
    reader, outsider = users.make(groups=[readers_group]), users.make()
    base, _, _ = trees
    put(cli, base)
    put(cli, base, "open/things")
    config = Path(env["XDG_CONFIG_HOME"]) / "artifactfs" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[projects.vision]\nreaders = ["{readers_group}"]\n')
    top = tempfile.mkdtemp(prefix="afs-readers-", dir="/tmp")
    os.chmod(top, 0o755)
    try:
        m = mounter(os.path.join(top, "mnt"), "--allow-other")
        readme = m.path("vision", "cats", "latest", "README")
        probe = (f"import os, sys\n"
                 f"out = []\n"
                 f"for op in (lambda: os.listdir({m.path('vision')!r}),\n"
                 f"           lambda: open({readme!r}).read(),\n"
                 f"           lambda: os.listdir({m.path('open', 'things', 'v0')!r})):\n"
                 f"    try:\n"
                 f"        op()\n"
                 f"        out.append('ok')\n"
                 f"    except PermissionError:\n"
                 f"        out.append('denied')\n"
                 f"print(' '.join(out))\n")

        def as_user(pw: Any) -> str:
            r = users.python(pw, probe)
            assert r.returncode == 0, r.stderr
            return r.stdout.strip()

        assert as_user(reader) == "ok ok ok"
        assert as_user(outsider) == "denied denied ok"  # right after the reader's walk
        assert Path(readme).read_text() == (base / "README").read_text()  # root may
    finally:
        mp = os.path.join(top, "mnt")
        if mounted(mp):
            subprocess.run(["fusermount3", "-u", "-z", mp], check=False)
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs")
def test_a_full_disk_fails_the_writer_and_loses_nothing(cli, mounter, trees, tmp_path):
    """The drafts area fills up during a cp: cp fails with ENOSPC, the daemon stays up, the
    draft keeps its other files, and once space is freed the commit works."""
    base, _, _ = trees
    put(cli, base)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(small)], check=True)
    m = mounter(start=False)
    try:
        m.cache = str(small / "cache")
        m.start()
        draft = Path(m.path("drafts", "vision", "cats", "full"))
        draft.mkdir()
        (draft / "keep.txt").write_text("kept\n")
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(40 << 20))
        r = subprocess.run(["cp", str(big), str(draft / "big.bin")], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode != 0 and "No space left" in r.stderr, r.stderr
        assert pid_alive(m.pid)
        (draft / "big.bin").unlink()
        (draft / "after.txt").write_text("after\n")
        assert cli("commit", str(draft)).stdout.split()[-1] == "vision/cats:v1"
        v1 = Path(m.path("vision", "cats", "v1"))
        assert (v1 / "keep.txt").read_text() == "kept\n"
        assert (v1 / "after.txt").read_text() == "after\n"
        assert not (v1 / "big.bin").exists()
        assert (v1 / "README").read_text() == (base / "README").read_text()
    finally:
        m.cleanup()
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_a_crashed_commit_leaves_no_version_and_can_be_rerun(cli, mounter, trees, env):
    base, _, _ = trees
    put(cli, base)
    m = mounter(start=False)
    m.env = {**env, "ARTIFACTFS_TEST_CRASH": "ingested"}  # once, after the files are stored
    m.start()
    draft = m.path("drafts", "vision", "cats", "c")
    os.makedirs(draft)
    with open(os.path.join(draft, "new.txt"), "w") as f:
        f.write("new\n")
    r = cli("commit", draft, check=False)
    assert r.returncode == 1 and "injected failure" in r.stderr
    assert os.listdir(m.path("vision", "cats")) == ["latest", "v0"] or \
        sorted(os.listdir(m.path("vision", "cats"))) == ["latest", "v0"]
    assert Path(os.path.join(draft, "new.txt")).read_text() == "new\n"  # the draft is intact
    assert cli("commit", draft).stdout.splitlines()[-1] == "vision/cats:v1"
    # the daemon dies right after the version record: the re-run finishes that version
    assert m.run("unmount", m.mp).returncode == 0
    m.env = {**env, "ARTIFACTFS_TEST_CRASH": "version-created:exit"}
    m.start()
    draft = m.path("drafts", "vision", "cats", "d")
    os.makedirs(draft)
    with open(os.path.join(draft, "more.txt"), "w") as f:
        f.write("more\n")
    r = cli("commit", draft, check=False)
    assert r.returncode == 1 and r.stderr.startswith("error:")
    wait_for(lambda: not pid_alive(m.pid), 10, "daemon death")
    m.env = env
    m.start()
    assert Path(os.path.join(draft, "more.txt")).read_text() == "more\n"
    assert cli("commit", draft).stdout.splitlines()[-1] == "vision/cats:v2"
    assert sorted(os.listdir(m.path("vision", "cats"))) == ["latest", "v0", "v1", "v2"]
    assert not os.path.exists(draft)


def test_staging_files_left_by_a_crash_after_the_commit_are_deleted_at_start(
        cli, mounter, trees, env):
    """The commit replies once the draft is renamed into .trash; a daemon killed before the
    background rmtree finished leaves it there, and the next start deletes it."""
    base, _, _ = trees
    put(cli, base)
    m = mounter(start=False)
    m.env = {**env, "ARTIFACTFS_TEST_CRASH": "draft-dropped:exit"}
    m.start()
    draft = m.path("drafts", "vision", "cats", "c")
    os.makedirs(draft)
    for i in range(50):
        Path(draft, f"new-{i}.txt").write_bytes(os.urandom(64 << 10))
    r = cli("commit", draft, check=False)
    assert r.returncode == 1
    wait_for(lambda: not pid_alive(m.pid), 10, "daemon death")
    trash = glob.glob(os.path.join(m.cache, "drafts", "*", "*", ".trash"))
    assert len(trash) == 1
    m.env = env
    m.start()
    assert sorted(os.listdir(m.path("vision", "cats"))) == ["latest", "v0", "v1"]
    assert not os.path.exists(draft)
    assert Path(m.path("vision", "cats", "v1", "new-7.txt")).stat().st_size == 64 << 10
    wait_for(lambda: os.listdir(trash[0]) == [], 10, "leftover staging files deleted")


@pytest.mark.parametrize("kind", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_distributed_draft_over_two_daemons(kind, cli, mounter, trees, env, tmp_path,
                                            request):
    if kind == "s3":
        env["ARTIFACTFS_STORE"] = request.getfixturevalue("s3_store_uri")
        env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    base, _, _ = trees
    (base / "big.bin").unlink()
    put(cli, base)
    a = mounter("a")
    b = mounter("b", "--cache-dir", str(tmp_path / "cache-b"))
    da, db = a.path("drafts", "vision", "cats", "g1"), b.path("drafts", "vision", "cats", "g1")
    os.makedirs(da)
    os.makedirs(db)
    Path(da, "from-a.txt").write_text("a\n")
    Path(da, "same.txt").write_text("same\n")
    Path(da, "clash.txt").write_text("a's\n")
    Path(db, "from-b.txt").write_text("b\n")
    Path(db, "same.txt").write_text("same\n")
    Path(db, "clash.txt").write_text("b's\n")
    os.unlink(os.path.join(db, "README"))  # the finisher may remove
    out = cli("upsert", da).stdout
    assert "3 entries" in out and not os.path.exists(da)
    r = cli("commit", db, check=False)
    assert r.returncode == 1 and "clash.txt" in r.stderr and "same.txt" not in r.stderr
    os.unlink(os.path.join(db, "clash.txt"))
    assert cli("commit", db).stdout.splitlines()[-1] == "vision/cats:v1"
    v1 = b.path("vision", "cats", "v1")
    want = sorted(set(os.listdir(base)) - {"README"} |
                  {"from-a.txt", "from-b.txt", "same.txt", "clash.txt"})
    assert sorted(os.listdir(v1)) == want
    assert Path(v1, "clash.txt").read_text() == "a's\n"
    os.makedirs(da)  # the id is finished: a late upsert fails clearly
    Path(da, "late.txt").write_text("late\n")
    r = cli("upsert", da, check=False)
    assert r.returncode == 1 and "already finished" in r.stderr
    os.makedirs(a.path("drafts", "vision", "cats", "g2"))
    os.unlink(a.path("drafts", "vision", "cats", "g2", "run.sh"))
    r = cli("upsert", a.path("drafts", "vision", "cats", "g2"), check=False)
    assert r.returncode == 1 and "removes: run.sh" in r.stderr
    # a plain (not distributed) commit of a draft based on v1, on the same store
    Path(a.path("drafts", "vision", "cats", "g2", "plain.txt")).write_text("plain\n")
    assert cli("commit", a.path("drafts", "vision", "cats", "g2")).stdout.splitlines()[-1] == \
        "vision/cats:v2"
    assert Path(a.path("vision", "cats", "latest", "plain.txt")).read_text() == "plain\n"
