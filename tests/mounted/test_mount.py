"""Real FUSE mounts: layout, bytes, EROFS, xattrs, mmap, concurrency, lifecycle, faults."""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import threading

import pytest
from mounthelp import BIG, mounted, pid_alive, sha256_file, wait_for

from artifactfs.catalog import parse_iso


def put(cli, src: str, name: str = "vision/cats", *extra: str) -> str:
    return cli("put", src, "--name", name, "--type", "dataset", *extra).stdout.split()[-1]


def test_layout_and_every_byte(cli, mounter, source, tmp_path):
    assert put(cli, source, "vision/cats", "--alias", "best") == "vision/cats:v0"
    other = tmp_path / "other"
    other.mkdir()
    (other / "only.txt").write_text("v1\n")
    assert put(cli, str(other)) == "vision/cats:v1"
    m = mounter()
    assert sorted(os.listdir(m.mp)) == ["drafts", "vision"]
    assert os.listdir(m.path("drafts")) == []
    assert sorted(os.listdir(m.path("vision", "cats"))) == ["best", "latest", "v0", "v1"]
    assert os.readlink(m.path("vision", "cats", "latest")) == "v1"
    assert os.readlink(m.path("vision", "cats", "best")) == "v0"
    assert os.listdir(m.path("vision", "cats", "latest")) == ["only.txt"]
    v0 = m.path("vision", "cats", "v0")
    files = 0
    for dirpath, dirnames, filenames in os.walk(source):
        rel = os.path.relpath(dirpath, source)
        mdir = os.path.normpath(os.path.join(v0, rel))
        assert sorted(os.listdir(mdir)) == sorted(dirnames + filenames)
        for fn in filenames:
            src, dst = os.path.join(dirpath, fn), os.path.join(mdir, fn)
            s_src, s_dst = os.lstat(src), os.lstat(dst)
            if stat.S_ISLNK(s_src.st_mode):
                assert os.readlink(dst) == os.readlink(src)
                continue
            assert s_dst.st_size == s_src.st_size
            assert s_dst.st_mtime_ns == s_src.st_mtime_ns
            assert stat.S_IMODE(s_dst.st_mode) == (0o555 if s_src.st_mode & 0o100 else 0o444)
            assert sha256_file(dst) == sha256_file(src), dst
            files += 1
    assert files > 200
    out = subprocess.run(["sha256sum", "big.bin", "README"], cwd=v0, capture_output=True,
                         text=True, check=True).stdout
    assert sha256_file(os.path.join(source, "big.bin")) in out
    st = os.stat(v0)
    assert stat.S_IMODE(st.st_mode) == 0o555
    created = json.loads(cli("info", "vision/cats:v0", "--json").stdout)["created_at"]
    assert st.st_mtime_ns == int(parse_iso(created).timestamp() * 1e9)
    ino = os.stat(m.path("vision", "cats", "v0", "README")).st_ino
    subprocess.run(["sh", "-c", "echo 2 > /proc/sys/vm/drop_caches"], check=False)
    assert os.stat(m.path("vision", "cats", "v0", "README")).st_ino == ino
    with open(m.path("vision", "cats", "best", "README")) as f:  # through an alias
        assert f.read() == "hello\n"


def test_every_write_is_erofs(cli, mounter, source):
    put(cli, source)
    m = mounter()
    v0 = m.path("vision", "cats", "v0")
    f = os.path.join(v0, "README")
    ops = {
        "open-w": lambda: os.open(f, os.O_WRONLY),
        "open-a": lambda: os.open(f, os.O_WRONLY | os.O_APPEND),
        "open-rw": lambda: os.open(f, os.O_RDWR),
        "create": lambda: os.open(os.path.join(v0, "new"), os.O_WRONLY | os.O_CREAT, 0o644),
        "create-excl": lambda: os.open(os.path.join(v0, "n2"), os.O_RDWR | os.O_CREAT | os.O_EXCL),
        "truncate": lambda: os.truncate(f, 0),
        "unlink": lambda: os.unlink(f),
        "rename": lambda: os.rename(f, os.path.join(v0, "R2")),
        "mkdir": lambda: os.mkdir(os.path.join(v0, "d")),
        "rmdir": lambda: os.rmdir(os.path.join(v0, "empty")),
        "symlink": lambda: os.symlink("README", os.path.join(v0, "s")),
        "link": lambda: os.link(f, os.path.join(v0, "hard")),
        "chmod": lambda: os.chmod(f, 0o644),
        "chown": lambda: os.chown(f, 1, 1),
        "utime": lambda: os.utime(f, (1, 1)),
        "mknod": lambda: os.mkfifo(os.path.join(v0, "fifo")),
        "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
        "removexattr": lambda: os.removexattr(f, "user.artifactfs.digest"),
        "mkdir-version": lambda: os.mkdir(m.path("vision", "cats", "v7")),
        "rm-version": lambda: os.rmdir(m.path("vision", "cats", "v0")),
        "rm-alias": lambda: os.unlink(m.path("vision", "cats", "latest")),
        "mkdir-project": lambda: os.mkdir(m.path("newproject")),
        "mv-into-draft": lambda: os.rename(f, m.path("drafts", "x")),
    }
    for name, op in ops.items():
        with pytest.raises(OSError) as ei:
            op()
        assert ei.value.errno == errno.EROFS, name
    assert not os.access(f, os.W_OK)
    assert os.access(f, os.R_OK)
    with open(f) as fh:
        assert fh.read() == "hello\n"  # nothing changed


def test_xattrs(cli, mounter, source):
    put(cli, source, "vision/cats", "--alias", "best", "--description", "the cats",
        "--metadata", '{"n": 1}')
    m = mounter()
    v0 = m.path("vision", "cats", "v0")
    info = json.loads(cli("info", "vision/cats:v0", "--json").stdout)
    assert os.getxattr(v0, "user.artifactfs.version") == b"vision/cats:v0"
    assert os.getxattr(v0, "user.artifactfs.type") == b"dataset"
    assert os.getxattr(v0, "user.artifactfs.aliases") == b"latest,best"
    assert os.getxattr(v0, "user.artifactfs.description") == b"the cats"
    assert json.loads(os.getxattr(v0, "user.artifactfs.metadata")) == {"n": 1}
    assert os.getxattr(v0, "user.artifactfs.digest") == info["digest"].encode()
    f = os.path.join(v0, "README")
    assert os.listxattr(f) == ["user.artifactfs.digest", "user.artifactfs.digest_kind",
                               "user.artifactfs.sha256"]
    assert os.getxattr(f, "user.artifactfs.digest") == \
        hashlib.sha256(b"hello\n").hexdigest().encode()
    with pytest.raises(OSError) as ei:
        os.getxattr(f, "user.nothing")
    assert ei.value.errno == errno.ENODATA


def test_mmap_random_offsets_and_concurrent_readers(cli, mounter, source):
    put(cli, source)
    m = mounter()
    big = m.path("vision", "cats", "v0", "big.bin")
    with open(os.path.join(source, "big.bin"), "rb") as f:
        want = f.read()
    rnd = random.Random(3)
    fd = os.open(big, os.O_RDONLY)
    try:
        for _ in range(100):  # random offsets, across chunk boundaries too
            off = rnd.randrange(0, BIG)
            n = rnd.choice([1, 100, 4096, 65536, 1 << 20, 3 << 20])
            assert os.pread(fd, n, off) == want[off:off + n]
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:  # a shared mapping
            assert len(mm) == BIG
            for off in (0, 8 << 20, (8 << 20) - 5, BIG - 10):
                assert mm[off:off + 100] == want[off:off + 100]
            assert hashlib.sha256(mm).digest() == hashlib.sha256(want).digest()
    finally:
        os.close(fd)
    expect = {fn: sha256_file(os.path.join(source, "many", fn)) for fn in os.listdir(
        os.path.join(source, "many"))}
    want_big = hashlib.sha256(want).hexdigest()
    errors: list[str] = []

    def reader(i: int) -> None:
        try:
            if sha256_file(big) != want_big:
                errors.append(f"reader {i}: big.bin differs")
            for fn in sorted(expect)[i::4]:
                if sha256_file(m.path("vision", "cats", "v0", "many", fn)) != expect[fn]:
                    errors.append(f"reader {i}: {fn} differs")
        except Exception as e:
            errors.append(f"reader {i}: {e!r}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_cli_unmount_and_status(cli, mounter, source):
    put(cli, source)
    m = mounter()
    os.listdir(m.path("vision", "cats", "v0"))
    with open(m.path("vision", "cats", "v0", "README"), "rb") as f:
        f.read()
    st = json.loads(cli("status", "--json").stdout)
    mine = [s for s in st if s["mountpoint"] == m.mp]
    assert mine and mine[0]["pid"] == m.pid and mine[0]["store_reachable"] is True
    assert mine[0]["cache"]["in_place"] is True and mine[0]["cache"]["hits"] >= 1
    text = cli("status").stdout
    assert m.mp in text and "hit rate" in text
    cli("unmount", m.mp)
    assert not mounted(m.mp)
    wait_for(lambda: not pid_alive(m.pid), 10, "daemon exit")
    r = cli("unmount", m.mp, check=False)
    assert r.returncode == 1 and r.stderr.startswith("error: ")


def test_sigterm_unmounts_cleanly(cli, mounter, source):
    put(cli, source)
    m = mounter()
    os.kill(m.pid, signal.SIGTERM)
    wait_for(lambda: not pid_alive(m.pid), 10, "daemon exit")
    assert not mounted(m.mp)
    from artifactfs.mount import registry
    assert registry.read(m.mp) is None


def test_stale_mount_is_recovered_after_kill_9(cli, mounter, source):
    put(cli, source)
    m = mounter()
    os.kill(m.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(m.pid), 10, "daemon death")
    with pytest.raises(OSError) as ei:
        os.listdir(m.mp)
    # the kernel says ENOTCONN, or ECONNABORTED when the request was in flight as it died
    assert ei.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    m.start()  # the same command, on the same mountpoint, recovers by itself
    with open(m.path("vision", "cats", "latest", "README")) as f:
        assert f.read() == "hello\n"


def test_corrupt_object_is_eio_and_good_files_still_read(cli, mounter, source, env):
    put(cli, source)
    digest = hashlib.sha256(b"hello\n").hexdigest()
    obj = os.path.join(env["ARTIFACTFS_STORE"], "objects", "sha256", digest[:2], digest[2:])
    os.chmod(obj, 0o644)
    with open(obj, "wb") as f:
        f.write(b"HELLO\n")
    m = mounter()
    with pytest.raises(OSError) as ei, open(m.path("vision", "cats", "v0", "README"), "rb") as f:
        f.read()
    assert ei.value.errno == errno.EIO
    with open(m.path("vision", "cats", "v0", "data", "train.csv")) as f:
        assert f.read() == "a,b\n1,2\n"
    with open(_registry_log(m.mp)) as f:
        assert digest in f.read()  # the log line names the object


def _registry_log(mp: str) -> str:
    from artifactfs.mount import registry
    return registry.paths(mp)["log"]


def test_new_versions_and_deletes_appear_within_refresh(cli, mounter, source, tmp_path):
    put(cli, source)
    m = mounter("mnt", "--refresh", "1")
    art = m.path("vision", "cats")
    assert sorted(os.listdir(art)) == ["latest", "v0"]
    with open(os.path.join(art, "latest", "README"), "rb") as held:
        other = tmp_path / "other"
        other.mkdir()
        (other / "x").write_text("x")
        put(cli, str(other))
        wait_for(lambda: os.readlink(os.path.join(art, "latest")) == "v1", 5, "latest -> v1")
        assert os.listdir(os.path.join(art, "latest")) == ["x"]
        cli("delete", "vision/cats:v0")
        wait_for(lambda: not os.path.exists(os.path.join(art, "v0")), 5, "v0 to disappear")
        assert sorted(os.listdir(art)) == ["latest", "v1"]
        assert held.read() == b"hello\n"  # opened through latest: keeps reading its version


def test_fstab_helper_and_systemd_notify(mounter, source, cli, env, tmp_path):
    put(cli, source)
    m = mounter("fstab", start=False)
    helper = os.path.join(os.path.dirname(sys.executable), "mount.artifactfs")
    r = subprocess.run([helper, env["ARTIFACTFS_STORE"], m.mp, "-o",
                        f"_netdev,allow_other,defaults,x-systemd.requires=network.target,"
                        f"cache_dir={tmp_path / 'c2'},refresh=5"],
                       env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    m.pid = m.daemon_pid()
    with open(m.path("vision", "cats", "v0", "README")) as f:
        assert f.read() == "hello\n"
    cli("unmount", m.mp)
    # Type=notify: --foreground sends READY=1 once the mount is live, SIGTERM stops cleanly
    sock_path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(sock_path)
    srv.settimeout(20)
    fg = mounter("fg", start=False)
    proc = subprocess.Popen([sys.executable, "-m", "artifactfs", "mount", fg.mp, "--foreground",
                             "--cache-dir", str(tmp_path / "c3")],
                            env={**env, "NOTIFY_SOCKET": sock_path}, stderr=subprocess.PIPE)
    fg.pid = proc.pid
    try:
        msg = srv.recv(4096).decode()
        assert "READY=1" in msg
        assert mounted(fg.mp)
        assert os.listdir(fg.path("vision", "cats")) == ["v0", "latest"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert not mounted(fg.mp)
    finally:
        srv.close()
        if proc.poll() is None:
            proc.kill()
        assert proc.stderr is not None
        proc.stderr.close()
