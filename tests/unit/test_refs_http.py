"""http(s):// references against a small local HTTP server with ETag, Range and If-Match
(tests/httpserver.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from httpserver import Behaviour, etag_of, serve

from artifactfs import refs
from artifactfs.errors import NotFound, ReferenceChanged, StoreUnavailable, UsageError
from artifactfs.model import Entry


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    b = Behaviour()
    with serve(b) as url:
        yield url, b


def one(uri: str, **kw: object) -> tuple[str, Entry]:
    out = refs.expand(uri, **kw)  # type: ignore[arg-type]
    assert len(out) == 1
    return out[0]


def test_expand_records_size_and_etag(server: tuple[str, Behaviour]) -> None:
    url, b = server
    b.files["/files/my%20data.csv"] = b"a,b\n1,2\n"
    path, e = one(f"{url}/files/my%20data.csv")
    assert path == "my data.csv" and e.size == 8 and e.ref is not None
    assert e.ref.etag == etag_of(b"a,b\n1,2\n")
    assert e.mtime_ns == 1704164645 * 10**9
    assert one(f"{url}/files/my%20data.csv", name="d/x.csv")[0] == "d/x.csv"
    with pytest.raises(UsageError, match="name="):
        refs.expand(f"{url}/files/")


def test_read_ranges_send_range_and_if_match(server: tuple[str, Behaviour]) -> None:
    url, b = server
    data = os.urandom(50_000)
    b.files["/d"] = data
    _, e = one(f"{url}/d")
    assert refs.read_range(e, 0, 10) == data[:10]
    assert refs.read_range(e, 1000, 20_000) == data[1000:21_000]
    assert refs.read_range(e, 49_990, 100) == data[49_990:]
    assert refs.read_range(e, 50_000, 1) == b""
    method, _, headers = b.requests[-1]
    assert method == "GET" and headers["Range"] == "bytes=49990-49999"
    assert headers["If-Match"] == etag_of(data)


def test_changed_content_is_reference_changed(server: tuple[str, Behaviour], tmp_path: Path) -> None:
    url, b = server
    b.files["/f"] = b"original"
    _, e = one(f"{url}/f")
    b.files["/f"] = b"tampered"  # same size, new ETag
    with pytest.raises(ReferenceChanged, match="412"):
        refs.read_range(e, 0, 4)
    with pytest.raises(ReferenceChanged):
        refs.verify_whole(e)
    with pytest.raises(ReferenceChanged):
        refs.download_to(e, str(tmp_path / "f"))
    assert os.listdir(tmp_path) == []
    del b.files["/f"]
    with pytest.raises(ReferenceChanged, match="404"):
        refs.read_range(e, 0, 4)


def test_server_without_range_support_gives_right_slices(server: tuple[str, Behaviour]) -> None:
    url, b = server
    b.ranges = False
    data = bytes(range(256)) * 100
    b.files["/n"] = data
    _, e = one(f"{url}/n")
    assert refs.read_range(e, 0, 5) == data[:5]
    assert refs.read_range(e, 12_345, 999) == data[12_345:13_344]
    assert refs.read_range(e, len(data) - 3, 10) == data[-3:]


def test_server_ignoring_if_match_is_still_caught(server: tuple[str, Behaviour]) -> None:
    url, b = server
    b.files["/f"] = b"original"
    _, e = one(f"{url}/f")
    b.files["/f"] = b"tampered"
    b.etags = False  # no ETag and no If-Match check any more
    with pytest.raises(ReferenceChanged, match="ETag"):
        refs.read_range(e, 0, 4)


def test_head_refused_falls_back_to_ranged_get(server: tuple[str, Behaviour]) -> None:
    url, b = server
    b.head = False
    b.files["/h"] = b"0123456789"
    _, e = one(f"{url}/h")
    assert e.size == 10 and e.ref is not None and e.ref.etag == etag_of(b"0123456789")
    assert [(m, h.get("Range")) for m, _, h in b.requests] == [("HEAD", None), ("GET", "bytes=0-0")]
    b.files["/empty"] = b""
    _, empty = one(f"{url}/empty")
    assert empty.size == 0


def test_missing_url_and_checksum_false(server: tuple[str, Behaviour], tmp_path: Path) -> None:
    url, b = server
    with pytest.raises(NotFound, match="404"):
        refs.expand(f"{url}/missing")
    b.files["/c"] = b"first"
    _, e = one(f"{url}/c", checksum=False)
    assert e.ref is not None and e.ref.etag is None and not e.ref.checksum
    b.files["/c"] = b"later"
    assert refs.read_range(e, 0, 5) == b"later"
    assert "If-Match" not in b.requests[-1][2]
    refs.download_to(e, str(tmp_path / "c"))
    assert (tmp_path / "c").read_bytes() == b"later"


def test_download_to(server: tuple[str, Behaviour], tmp_path: Path) -> None:
    url, b = server
    data = os.urandom(2 * 1024 * 1024 + 3)
    b.files["/big"] = data
    _, e = one(f"{url}/big")
    refs.download_to(e, str(tmp_path / "big"))
    assert (tmp_path / "big").read_bytes() == data


def test_transient_errors_are_retried_then_unavailable(
        server: tuple[str, Behaviour], monkeypatch: pytest.MonkeyPatch) -> None:
    url, b = server
    b.files["/r"] = b"retry me"
    _, e = one(f"{url}/r")
    b.fail_next = 2
    assert refs.read_range(e, 0, 5) == b"retry"
    monkeypatch.setenv("ARTIFACTFS_S3_RETRY_SECONDS", "0.5")
    b.fail_next = 1000
    with pytest.raises(StoreUnavailable, match="503"):
        refs.read_range(e, 0, 5)
