"""An artifact mixing stored files with file://, s3:// and http:// references, read through
the mount: bytes, xattrs, and a changed source giving EIO, never other bytes (SPEC §7)."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

pytestmark = [pytest.mark.mounted, pytest.mark.s3]

FILES: dict[str, bytes] = {}


class Handler(BaseHTTPRequestHandler):
    """Static files with ETag, Range and If-Match (412 when the ETag moved)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.serve(head=True)

    def do_GET(self) -> None:
        self.serve(head=False)

    def serve(self, head: bool) -> None:
        data = FILES.get(self.path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if self.headers.get("If-Match") not in (None, etag):
            self.send_response(412)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, body, extra = 200, data, {}
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start, end = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
            status, body = 206, data[start:end + 1]
            extra["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self.send_response(status)
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)


@pytest.fixture
def http_base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    FILES.clear()


def cli(store: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "artifactfs", "--store", str(store), *args],
                       capture_output=True, text=True, timeout=120)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def test_mixed_artifact_through_the_mount(tmp_path: Path, s3_bucket: str, http_base: str,
                                         mount: Callable[..., Path]) -> None:
    store = tmp_path / "store"
    nfs = tmp_path / "nfs"
    nfs.mkdir()
    (nfs / "local.txt").write_bytes(b"from nfs")
    (nfs / "later.txt").write_bytes(b"will change")
    s3 = boto3.client("s3")
    s3.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    big = os.urandom(9 * 1024 * 1024)  # two pieces
    s3.put_object(Bucket=s3_bucket, Key="raw/big.bin", Body=big)
    FILES["/web.txt"] = b"from http"
    FILES["/moves.txt"] = b"first"

    import artifactfs
    run = artifactfs.init(project="p", store=str(store))
    art = artifactfs.Artifact("mixed", type="dataset")
    with art.new_file("stored.txt") as f:
        f.write("stored")
    art.add_reference(f"file://{nfs}", name="nfs")
    art.add_reference(f"s3://{s3_bucket}/raw/", name="s3")
    art.add_reference(f"{http_base}/web.txt")
    art.add_reference(f"{http_base}/moves.txt")
    run.log_artifact(art)

    s3.put_object(Bucket=s3_bucket, Key="raw/big.bin", Body=b"overwritten")  # versioned: ok
    (nfs / "later.txt").write_bytes(b"has changed")  # same size, other bytes
    FILES["/moves.txt"] = b"second"

    mnt = mount(store, tmp_path / "mnt")
    v = mnt / "p" / "mixed" / "v0"
    assert (v / "stored.txt").read_text() == "stored"
    assert (v / "nfs" / "local.txt").read_bytes() == b"from nfs"
    assert hashlib.sha256((v / "s3" / "big.bin").read_bytes()).digest() == \
        hashlib.sha256(big).digest()
    assert (v / "web.txt").read_bytes() == b"from http"
    assert os.stat(v / "s3" / "big.bin").st_size == len(big)
    assert os.getxattr(v / "web.txt", "user.artifactfs.ref") == f"{http_base}/web.txt".encode()
    assert os.getxattr(v / "s3" / "big.bin", "user.artifactfs.ref") == \
        f"s3://{s3_bucket}/raw/big.bin".encode()
    for changed in (v / "nfs" / "later.txt", v / "moves.txt"):
        with pytest.raises(OSError) as exc:
            changed.read_bytes()
        assert exc.value.errno == errno.EIO
    err = cli(store, "get", "p/mixed", "--root", str(tmp_path / "got"), ok=False).stderr
    assert err.startswith("error: reference changed since it was logged: ")
