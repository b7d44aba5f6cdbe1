"""An artifact mixing stored files with file://, s3:// and http:// references, read through
the mount: bytes, xattrs, and a changed source giving EIO, never other bytes (SPEC §7)."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from httpserver import Behaviour, serve

pytestmark = [pytest.mark.mounted, pytest.mark.s3]

@pytest.fixture
def http() -> Iterator[tuple[str, Behaviour]]:
    b = Behaviour()
    with serve(b) as url:
        yield url, b


def cli(store: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "artifactfs", "--store", str(store), *args],
                       capture_output=True, text=True, timeout=120)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def test_mixed_artifact_through_the_mount(tmp_path: Path, s3_bucket: str,
                                         http: tuple[str, Behaviour],
                                         mount: Callable[..., Path]) -> None:
    http_base, web = http
    store = tmp_path / "store"
    nfs = tmp_path / "nfs"
    nfs.mkdir()
    (nfs / "local.txt").write_bytes(b"from nfs")
    (nfs / "later.txt").write_bytes(b"will change")
    s3 = boto3.client("s3")
    s3.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    big = os.urandom(9 * 1024 * 1024)  # two pieces
    s3.put_object(Bucket=s3_bucket, Key="raw/big.bin", Body=big)
    web.files["/web.txt"] = b"from http"
    web.files["/moves.txt"] = b"first"

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
    web.files["/moves.txt"] = b"second"

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
