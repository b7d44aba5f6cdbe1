"""POSIX details of drafts that real tools look at (docs/drafts.md "Limits"): statvfs of the
drafts area, ctime, directory nlink, renameat2 flags, the permission bits a writer sets, and
``rsync -a`` run again itemizing nothing."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

from mounthelp import pid_alive, wait_for

RENAME_WHITEOUT = 4
_libc = ctypes.CDLL(None, use_errno=True)


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def renameat2(src: Path, dst: Path, flags: int) -> int:
    AT_FDCWD = -100
    rc = _libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags)
    return 0 if rc == 0 else ctypes.get_errno()


def source(root: Path) -> Path:
    for d in ("a", "b/c", "shared"):
        (root / d).mkdir(parents=True)
    for i, (path, mode) in enumerate([("a/one.txt", 0o644), ("a/group.txt", 0o664),
                                      ("b/secret", 0o600), ("b/c/run.sh", 0o755),
                                      ("top.txt", 0o644)]):
        (root / path).write_text(f"file {i}\n" * (i + 1))
        os.chmod(root / path, mode)
    os.symlink("one.txt", root / "a" / "link")
    os.chmod(root / "shared", 0o2775)
    os.chmod(root / "b", 0o750)
    for i, p in enumerate(sorted(root.rglob("*"), reverse=True)):  # times rsync must keep
        os.utime(p, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i),
                 follow_symlinks=False)
    return root


def test_rsync_again_itemizes_nothing(cli, mounter, tmp_path):
    """The draft keeps the modes and times rsync sets, so a second rsync finds nothing to
    do; a version keeps file and directory mtimes and the executable bit, so into a new draft
    of it the flags the README gives itemize nothing either."""
    src = source(tmp_path / "src")
    (tmp_path / "store").mkdir()
    m = mounter()
    draft = Path(m.path("drafts", "ds", "tree", "one"))
    draft.mkdir(parents=True)
    r = run("rsync", "-a", f"{src}/", f"{draft}/")
    assert r.returncode == 0, r.stderr
    r = run("rsync", "-ai", f"{src}/", f"{draft}/")
    assert r.returncode == 0 and r.stdout == "", r.stdout
    assert stat.S_IMODE((draft / "a" / "group.txt").stat().st_mode) == 0o664
    assert stat.S_IMODE((draft / "shared").stat().st_mode) == 0o2775
    assert stat.S_IMODE(draft.stat().st_mode) == stat.S_IMODE(src.stat().st_mode)
    assert cli("commit", str(draft), "--type", "dataset").stdout.split()[-1] == "ds/tree:v0"
    v0 = Path(m.path("ds", "tree", "v0"))
    assert (v0 / "b").stat().st_mtime_ns == (src / "b").stat().st_mtime_ns  # dir times kept
    assert (v0 / "b" / "c" / "run.sh").stat().st_mode & 0o111
    again = Path(m.path("drafts", "ds", "tree", "two"))
    again.mkdir()
    r = run("rsync", "-ai", "--no-perms", "--executability", "--omit-dir-times",
            f"{src}/", f"{again}/")
    assert r.returncode == 0 and r.stdout == "", r.stdout


def test_statvfs_ctime_nlink_and_rename_flags(mounter, tmp_path):
    (tmp_path / "store").mkdir()
    m = mounter()
    draft = Path(m.path("drafts", "ds", "posix", "d"))
    draft.mkdir(parents=True)
    area = os.statvfs(m.cache)  # the drafts area lives in the cache directory
    got = os.statvfs(draft)
    assert got.f_blocks == area.f_blocks and got.f_bavail > 0 and got.f_files == area.f_files

    f = draft / "f.txt"
    f.write_text("x\n")
    for change in (lambda: os.chmod(f, 0o600), lambda: os.chown(f, 0, 0),
                   lambda: os.rename(f, draft / "g.txt")):
        before = os.stat(draft / "g.txt" if not f.exists() else f).st_ctime_ns
        time.sleep(0.01)
        change()
        after = os.stat(draft / "g.txt" if not f.exists() else f).st_ctime_ns
        assert after > before
    g = draft / "g.txt"
    assert stat.S_IMODE(g.stat().st_mode) == 0o600
    os.chmod(draft, 0o777)  # shown as set; access stays the owner's (docs/drafts.md)
    assert stat.S_IMODE(draft.stat().st_mode) == 0o777

    (draft / "sub" / "x").mkdir(parents=True)
    (draft / "sub" / "y").mkdir()
    (draft / "sub" / "file").write_text("f\n")
    assert os.stat(draft / "sub").st_nlink == 4
    assert os.stat(draft / "sub" / "x").st_nlink == 2

    (draft / "h.txt").write_text("h\n")
    assert renameat2(g, draft / "h.txt", RENAME_WHITEOUT) == errno.EINVAL
    assert g.read_text() == "x\n" and (draft / "h.txt").read_text() == "h\n"


def test_sqlite_in_a_draft_survives_kill_and_commits(cli, mounter, tmp_path):
    """sqlite's small synchronous writes and fsyncs (rollback journal, then WAL) in a draft:
    every committed transaction is there after the daemon is killed, and in the version."""
    (tmp_path / "store").mkdir()
    m = mounter()
    draft = Path(m.path("drafts", "ds", "db", "d"))
    draft.mkdir(parents=True)
    con = sqlite3.connect(draft / "t.db", isolation_level=None)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO t(v) VALUES (?)", ((os.urandom(300),) for _ in range(2000)))
    con.execute("COMMIT")
    for _ in range(20):  # one-row transactions: journal created, synced, removed each time
        con.execute("INSERT INTO t(v) VALUES (?)", (b"one",))
    assert con.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    for _ in range(20):
        con.execute("INSERT INTO t(v) VALUES (?)", (b"wal",))
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    os.kill(m.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(m.pid), 10, "daemon death")
    m.start()
    con = sqlite3.connect(draft / "t.db")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.execute("SELECT count(*) FROM t").fetchone() == (2040,)
    con.close()
    assert sorted(os.listdir(draft)) == ["t.db"]
    assert cli("commit", str(draft), "--type", "dataset").stdout.split()[-1] == "ds/db:v0"
    v0 = m.path("ds", "db", "v0", "t.db")
    con = sqlite3.connect(f"file:{v0}?immutable=1", uri=True)
    assert con.execute("SELECT count(*) FROM t WHERE v = x'77616c'").fetchone() == (20,)
    con.close()
