"""Integrity under faults, through real mounts (issue 11): bytes verified once stay verified
when their file is rewritten underneath a running mount, on the directory store (objects read
in place) and on S3 (the cache file)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mounthelp import Mount, pid_alive, wait_for

from artifactfs.mount import registry


@pytest.fixture
def store_mount(store_uri: str, tmp_path: Any) -> Iterator[Callable[[], Mount]]:
    """A mount of ``store_uri`` (a directory, then S3), always cleaned up."""
    env = dict(os.environ)  # after store_uri: the S3 fixture has set its environment
    env.pop("NOTIFY_SOCKET", None)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["ARTIFACTFS_STORE"] = store_uri
    made: list[Mount] = []

    def make() -> Mount:
        m = Mount(str(tmp_path / "mnt"), store_uri, str(tmp_path / "cache"), env)
        made.append(m)
        m.start()
        return m

    yield make
    for m in made:
        m.cleanup()


def drop_caches() -> None:
    """The kernel forgets the mount's pages, so the next read reaches the daemon."""
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def flip_first_byte(path: str) -> None:
    os.chmod(path, 0o600)
    with open(path, "r+b") as f:  # in place: same inode, as a tool rewriting it would
        b = f.read(1)
        f.seek(0)
        f.write(bytes([b[0] ^ 0xFF]))


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.skipif(os.geteuid() != 0, reason="drops the page cache (root)")
def test_bytes_changed_after_verification_are_verified_again(store_uri: str, tmp_path: Any,
                                                              store_mount: Any) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(100_000)
    (src / "a.bin").write_bytes(data)
    (src / "b.txt").write_text("untouched\n")
    subprocess.run([sys.executable, "-m", "artifactfs", "--store", store_uri, "put", str(src),
                    "--name", "p/art", "--type", "dataset"], check=True, capture_output=True)
    m = store_mount()
    a = m.path("p", "art", "v0", "a.bin")
    assert read(a) == data  # verified (and, on S3, now in the cache)
    digest = hashlib.sha256(data).hexdigest()
    if store_uri.startswith("s3://"):
        obj = os.path.join(m.cache, "blobs", "objects", digest[:2], digest[2:])
    else:
        obj = os.path.join(store_uri, "objects", "sha256", digest[:2], digest[2:])
    assert os.path.exists(obj)
    flip_first_byte(obj)
    drop_caches()
    log = registry.paths(m.mp)["log"]
    if store_uri.startswith("s3://"):  # the bad cache file is dropped and fetched again
        assert read(a) == data
        with open(log) as f:
            text = f.read()
        assert f"dropping corrupt cache file {obj}" in text
    else:  # the store's own object is bad: EIO, never the flipped byte
        with pytest.raises(OSError) as ei:
            read(a)
        assert ei.value.errno == errno.EIO
        with open(log) as f:
            assert f"object {digest} is corrupt" in f.read()
        flip_first_byte(obj)  # repaired: served again, verified
        drop_caches()
        assert read(a) == data
    assert read(m.path("p", "art", "v0", "b.txt")) == b"untouched\n"


def _layers(mp: str) -> int:
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if line.split()[4] == mp)


def test_kill_9_then_mount_recovers_without_stacking(cli, mounter, source):
    """Recovery finds the dead mount from the mount table and the registry, not from stat
    (which the kernel answers from cached attributes); 3 kill + mount cycles, one layer each."""
    cli("put", source, "--name", "vision/cats", "--type", "dataset")
    m = mounter("mnt", "--refresh", "30")
    for cycle in range(3):
        os.stat(m.mp)  # cached attributes: stat keeps answering after the daemon dies
        os.stat(m.path("vision", "cats"))
        os.kill(m.pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(m.pid), 10, "daemon death")
        os.stat(m.mp)
        if cycle == 0:  # status names the dead mount and the command that clears it
            st = json.loads(cli("status", "--json").stdout)
            dead = [s for s in st if s["mountpoint"] == m.mp]
            # pid 0: the record was pruned meanwhile by another artifactfs on this node
            # (every root process shares the runtime directory); the mount table still tells
            assert len(dead) == 1 and dead[0]["dead"] and dead[0]["pid"] in (m.pid, 0)
            assert f"artifactfs unmount {m.mp}" in dead[0]["fix"]
            text = cli("status").stdout
            assert "DEAD" in text and f"artifactfs unmount {m.mp}" in text
        m.start()  # the same command recovers by itself
        assert _layers(m.mp) == 1, f"cycle {cycle}: mounts stacked"
        with open(m.path("vision", "cats", "latest", "README")) as f:
            assert f.read() == "hello\n"
    r = cli("mount", m.mp, check=False)  # a live mount is never stacked on either
    assert r.returncode == 1 and "already mounted" in r.stderr
    assert _layers(m.mp) == 1


def test_unmount_of_a_dead_mount_clears_it(cli, mounter, source):
    cli("put", source, "--name", "vision/cats", "--type", "dataset")
    m = mounter()
    os.stat(m.mp)
    os.kill(m.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(m.pid), 10, "daemon death")
    cli("unmount", m.mp)
    assert _layers(m.mp) == 0
    assert registry.read(m.mp) is None  # the dead daemon's record is gone too
    assert not [s for s in json.loads(cli("status", "--json").stdout)
                if s["mountpoint"] == m.mp]
    m.start()
    assert _layers(m.mp) == 1


def test_sigterm_during_a_commit_still_replies(cli, mounter, source, env):
    """The daemon stops only once the commit in flight has sent its reply: the CLI prints
    the version and exits 0, and the version is there."""
    cli("put", source, "--name", "vision/cats", "--type", "dataset")
    m = mounter(start=False)
    m.env = {**env, "ARTIFACTFS_TEST_CRASH": "ingested:sleep=3"}  # the commit waits there
    m.start()
    draft = m.path("drafts", "vision", "cats", "c")
    os.makedirs(draft)
    with open(os.path.join(draft, "new.txt"), "w") as f:
        f.write("new\n")
    commit = subprocess.Popen([sys.executable, "-m", "artifactfs", "commit", draft], env=env,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5)  # the commit is in the daemon, sleeping after its files were stored
    os.kill(m.pid, signal.SIGTERM)
    out, err = commit.communicate(timeout=60)
    assert commit.returncode == 0, err
    assert out.splitlines()[-1] == "vision/cats:v1"
    wait_for(lambda: not pid_alive(m.pid), 30, "daemon exit")
    assert _layers(m.mp) == 0
    r = cli("versions", "vision/cats", "--json")
    assert [v["version"] for v in json.loads(r.stdout)] == [0, 1]
