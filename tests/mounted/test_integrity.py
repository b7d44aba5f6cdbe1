"""Integrity under faults, through real mounts (issue 11): bytes verified once stay verified
when their file is rewritten underneath a running mount, on the directory store (objects read
in place) and on S3 (the cache file)."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mounthelp import Mount

from artifactfs.fs import registry


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
