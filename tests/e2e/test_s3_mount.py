"""Mounts of an S3 store: two nodes see each other's versions within --refresh, and an
unreachable S3 leaves cached content served, uncached reads failing fast with EIO, listings in
their last state and the daemon up until S3 returns (SPEC §10)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = [pytest.mark.mounted, pytest.mark.s3]


class Proxy:
    """A TCP proxy to the S3 server that can be cut (connections refused/reset) and restored."""

    def __init__(self, upstream: str) -> None:
        u = urlparse(upstream)
        self.up = (u.hostname or "127.0.0.1", u.port or 80)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.open = True
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if not self.open:
                c.close()
                continue
            try:
                u = socket.create_connection(self.up)
            except OSError:
                c.close()
                continue
            self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.conns.clear()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.sock.close()


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    p = subprocess.run([sys.executable, "-m", "artifactfs", *args], capture_output=True,
                       text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout


def wait_for(cond: object, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if cond():  # type: ignore[operator]
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def test_two_mounts_see_each_others_versions(s3_store_uri: str, tmp_path: Path,
                                            mount: Callable[..., Path]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("v0")
    cli("--store", s3_store_uri, "put", str(src), "--name", "p/shared", "--type", "dataset")
    m1 = mount(s3_store_uri, tmp_path / "m1", "--refresh", "1")
    m2 = mount(s3_store_uri, tmp_path / "m2", "--refresh", "1")
    assert (m1 / "p" / "shared" / "latest" / "a.txt").read_text() == "v0"
    assert (m2 / "p" / "shared" / "latest" / "a.txt").read_text() == "v0"
    (src / "a.txt").write_text("v1 from elsewhere")
    # a writer that is not on this node: straight to the store, no mount is told
    from artifactfs.repo import Repo
    Repo(s3_store_uri).put_path(str(src), "p", "shared", "dataset")
    for m in (m1, m2):
        assert wait_for(lambda m=m: os.readlink(m / "p" / "shared" / "latest") == "v1", 5)
        assert (m / "p" / "shared" / "v1" / "a.txt").read_text() == "v1 from elsewhere"


def test_unreachable_s3(s3_server: str, s3_store_uri: str, tmp_path: Path,
                        mount: Callable[..., Path]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "cached.txt").write_text("cached")
    (src / "cold.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    cli("--store", s3_store_uri, "put", str(src), "--name", "p/flaky", "--type", "dataset")
    proxy = Proxy(s3_server)
    env = dict(os.environ, AWS_ENDPOINT_URL=proxy.url, ARTIFACTFS_S3_RETRY_SECONDS="3")
    try:
        m = mount(s3_store_uri, tmp_path / "m", "--refresh", "1", env=env)
        v0 = m / "p" / "flaky" / "v0"
        assert (v0 / "cached.txt").read_text() == "cached"
        assert sorted(os.listdir(v0)) == ["cached.txt", "cold.bin"]
        proxy.cut()
        time.sleep(1.5)  # past --refresh: listings must keep their last state
        assert (v0 / "cached.txt").read_text() == "cached"
        assert sorted(os.listdir(m / "p" / "flaky")) == ["latest", "v0"]
        t = time.monotonic()
        with pytest.raises(OSError) as exc:
            (v0 / "cold.bin").read_bytes()
        assert exc.value.errno == errno.EIO
        assert time.monotonic() - t < 10  # one retry budget (3 s here), not one per lookup
        assert os.path.ismount(m)
        proxy.restore()
        assert wait_for(lambda: len((v0 / "cold.bin").read_bytes()) == 3 * 1024 * 1024, 30)
    finally:
        proxy.close()


def test_walks_during_an_outage_are_fast(s3_server: str, s3_store_uri: str, tmp_path: Path,
                                         mount: Callable[..., Path]) -> None:
    """With S3 cut and the default 30 s retry budget, each `cat` of a cached file returns
    within the refresh wait (2 s), not after the retries; S3 back, new versions show again."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "cached.txt").write_text("cached")
    cli("--store", s3_store_uri, "put", str(src), "--name", "p/flaky", "--type", "dataset")
    proxy = Proxy(s3_server)
    env = dict(os.environ, AWS_ENDPOINT_URL=proxy.url, ARTIFACTFS_S3_RETRY_SECONDS="30")
    try:
        m = mount(s3_store_uri, tmp_path / "m", "--refresh", "1", env=env)
        f = m / "p" / "flaky" / "latest" / "cached.txt"
        assert f.read_text() == "cached"
        proxy.cut()
        took = []
        for _ in range(4):
            time.sleep(1.1)  # past --refresh: the kernel asks, and the listings have expired
            t = time.monotonic()
            assert f.read_text() == "cached"
            took.append(time.monotonic() - t)
        assert max(took) < 2.5 and max(took[1:]) < 0.5, took
        (src / "cached.txt").write_text("v1")
        cli("--store", s3_store_uri, "put", str(src), "--name", "p/flaky", "--type", "dataset")
        proxy.restore()
        assert wait_for(lambda: f.read_text() == "v1", 30)
    finally:
        proxy.close()
