"""s3:// (and gs:// through an S3-compatible endpoint) references against a moto server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from artifactfs import refs, s3util
from artifactfs.errors import NotFound, ReferenceChanged, UsageError
from artifactfs.model import Entry, RefInfo, ref_entry
from artifactfs.refs import gs as gs_refs
from artifactfs.refs import s3 as s3_refs

pytestmark = pytest.mark.s3


def put(bucket: str, key: str, data: bytes) -> dict[str, Any]:
    return dict(s3util.s3_client().put_object(Bucket=bucket, Key=key, Body=data))


def versioned(bucket: str) -> str:
    s3util.s3_client().put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def one(uri: str, **kw: Any) -> tuple[str, Entry]:
    out = refs.expand(uri, **kw)
    assert len(out) == 1
    return out[0]


def test_versioned_bucket_keeps_serving_the_logged_version(s3_bucket: str, tmp_path: Path) -> None:
    versioned(s3_bucket)
    put(s3_bucket, "data/a.bin", b"logged bytes")
    path, e = one(f"s3://{s3_bucket}/data/a.bin")
    assert path == "a.bin" and e.size == 12 and e.ref is not None
    assert e.ref.version_id and e.ref.etag
    put(s3_bucket, "data/a.bin", b"LATER  BYTES")  # same size, new version
    assert refs.read_range(e, 0, 100) == b"logged bytes"
    assert refs.read_range(e, 7, 5) == b"bytes"
    refs.verify_whole(e)
    refs.download_to(e, str(tmp_path / "a.bin"))
    assert (tmp_path / "a.bin").read_bytes() == b"logged bytes"
    s3util.s3_client().delete_object(Bucket=s3_bucket, Key="data/a.bin",
                                     VersionId=e.ref.version_id)
    with pytest.raises(ReferenceChanged, match="gone"):
        refs.read_range(e, 0, 4)


def test_unversioned_overwrite_is_reference_changed(s3_bucket: str, tmp_path: Path) -> None:
    put(s3_bucket, "a.bin", b"logged bytes")
    _, e = one(f"s3://{s3_bucket}/a.bin")
    assert e.ref is not None and e.ref.version_id is None and e.ref.etag
    assert refs.read_range(e, 0, 6) == b"logged"
    put(s3_bucket, "a.bin", b"LATER  BYTES")
    with pytest.raises(ReferenceChanged, match=f"reference changed since it was logged: s3://{s3_bucket}/a.bin"):
        refs.read_range(e, 0, 6)
    with pytest.raises(ReferenceChanged):
        refs.verify_whole(e)
    with pytest.raises(ReferenceChanged):
        refs.download_to(e, str(tmp_path / "a.bin"))
    assert os.listdir(tmp_path) == []
    s3util.s3_client().delete_object(Bucket=s3_bucket, Key="a.bin")
    with pytest.raises(ReferenceChanged):
        refs.read_range(e, 0, 6)


def test_prefix_expansion_and_names(s3_bucket: str) -> None:
    objs = {"raw/x.csv": b"x", "raw/sub/y.csv": b"yy", "raw/sub/": b"", "rawer/z": b"z",
            "top.txt": b"t"}
    for k, v in objs.items():
        put(s3_bucket, k, v)
    got = refs.expand(f"s3://{s3_bucket}/raw")
    assert [p for p, _ in got] == ["sub/y.csv", "x.csv"]  # folder marker and rawer/ left out
    assert [p for p, _ in refs.expand(f"s3://{s3_bucket}/raw/", name="data")] == [
        "data/sub/y.csv", "data/x.csv"]
    assert [p for p, _ in refs.expand(f"s3://{s3_bucket}")] == [
        "raw/sub/y.csv", "raw/x.csv", "rawer/z", "top.txt"]
    for path, e in got:
        assert e.ref is not None and e.ref.etag and e.ref.version_id is None
        assert refs.read_range(e, 0, 10) == objs[f"raw/{path}"]
    # a name given to a single object is its path
    assert one(f"s3://{s3_bucket}/raw/x.csv", name="a/b.csv")[0] == "a/b.csv"


def test_versioned_prefix_records_version_ids(s3_bucket: str) -> None:
    versioned(s3_bucket)
    vids = {k: put(s3_bucket, f"p/{k}", k.encode())["VersionId"] for k in ("a", "b", "c")}
    got = refs.expand(f"s3://{s3_bucket}/p")
    assert {p: e.ref.version_id for p, e in got if e.ref is not None} == vids
    for k in vids:
        put(s3_bucket, f"p/{k}", b"new")
    assert [refs.read_range(e, 0, 5) for _, e in got] == [b"a", b"b", b"c"]


def test_max_objects(s3_bucket: str) -> None:
    for i in range(5):
        put(s3_bucket, f"m/{i}", b"x")
    assert len(refs.expand(f"s3://{s3_bucket}/m", max_objects=5)) == 5
    with pytest.raises(UsageError, match=r"more than 4 objects \(max_objects=4\); raise max_objects"):
        refs.expand(f"s3://{s3_bucket}/m", max_objects=4)


def test_missing_sources(s3_bucket: str) -> None:
    with pytest.raises(NotFound, match=f"s3://{s3_bucket}/nope"):
        refs.expand(f"s3://{s3_bucket}/nope")
    with pytest.raises(NotFound, match="no such bucket"):
        refs.expand("s3://afs-test-no-such-bucket-x/k")
    with pytest.raises(UsageError):
        refs.expand("s3:///no-bucket")


def test_checksum_false_reads_current_object(s3_bucket: str) -> None:
    put(s3_bucket, "f", b"first")
    _, e = one(f"s3://{s3_bucket}/f", checksum=False)
    assert e.ref == RefInfo(uri=f"s3://{s3_bucket}/f", checksum=False) and e.size == 5
    put(s3_bucket, "f", b"later")
    assert refs.read_range(e, 0, 5) == b"later"
    put(s3_bucket, "f", b"longer now")
    with pytest.raises(ReferenceChanged, match="size"):
        refs.read_range(e, 0, 5)


def test_download_in_parallel_pieces(s3_bucket: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_refs, "CHUNK_SIZE", 64 * 1024)
    data = os.urandom(300 * 1024 + 5)
    put(s3_bucket, "big", data)
    _, e = one(f"s3://{s3_bucket}/big")
    dest = tmp_path / "big"
    refs.download_to(e, str(dest))
    assert dest.read_bytes() == data
    put(s3_bucket, "empty", b"")
    _, empty = one(f"s3://{s3_bucket}/empty")
    refs.download_to(empty, str(tmp_path / "empty"))
    assert (tmp_path / "empty").read_bytes() == b""


@pytest.fixture
def gcs_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARTIFACTFS_GCS_ENDPOINT", s3_server)
    monkeypatch.setenv("GCS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("GCS_SECRET_ACCESS_KEY", "testing")


def test_gs_through_an_s3_compatible_endpoint(gcs_env: None, s3_bucket: str) -> None:
    versioned(s3_bucket)
    put(s3_bucket, "d/a.txt", b"logged")
    put(s3_bucket, "d/b.txt", b"other")
    got = refs.expand(f"gs://{s3_bucket}/d", name="g")
    assert [p for p, _ in got] == ["g/a.txt", "g/b.txt"]
    e = got[0][1]
    assert e.ref is not None and e.ref.uri == f"gs://{s3_bucket}/d/a.txt" and e.ref.version_id
    put(s3_bucket, "d/a.txt", b"LATER!")
    assert refs.read_range(e, 0, 6) == b"logged"


def test_gs_generation_is_sent_as_query_parameter(gcs_env: None, s3_bucket: str) -> None:
    etag = put(s3_bucket, "o", b"current")["ETag"]
    urls: list[str] = []
    client = gs_refs._client()

    def capture(request: Any, **_: Any) -> None:
        urls.append(request.url)

    client.meta.events.register("before-send.s3.GetObject", capture)
    try:
        # moto ignores "generation"; If-Match with the current ETag makes it serve the object
        e = ref_entry(RefInfo(uri=f"gs://{s3_bucket}/o", etag=etag, version_id="1712345"), 7)
        assert refs.read_range(e, 0, 7) == b"current"
        stale = ref_entry(RefInfo(uri=f"gs://{s3_bucket}/o", etag='"0000"', version_id="17"), 7)
        with pytest.raises(ReferenceChanged, match="412"):
            refs.read_range(stale, 0, 7)
    finally:
        client.meta.events.unregister("before-send.s3.GetObject", capture)
    assert "generation=1712345" in urls[0] and "versionId" not in urls[0]


def test_versioning_enabled_after_first_object(s3_bucket: str) -> None:
    put(s3_bucket, "q/0-old", b"old")  # version "null"
    versioned(s3_bucket)
    vid = put(s3_bucket, "q/1-new", b"new")["VersionId"]
    got = dict(refs.expand(f"s3://{s3_bucket}/q/"))
    assert got["0-old"].ref is not None and got["0-old"].ref.version_id is None
    assert got["1-new"].ref is not None and got["1-new"].ref.version_id == vid
    put(s3_bucket, "q/1-new", b"NEW")
    assert refs.read_range(got["1-new"], 0, 3) == b"new"


def test_odd_keys(s3_bucket: str) -> None:
    put(s3_bucket, "odd/a b?c#d", b"odd")
    put(s3_bucket, "dbl//slash", b"dbl")
    got = refs.expand(f"s3://{s3_bucket}/odd")
    assert [p for p, _ in got] == ["a b?c#d"]
    assert refs.read_range(got[0][1], 0, 3) == b"odd"
    path, e = one(f"s3://{s3_bucket}/dbl//slash")
    assert path == "slash" and refs.read_range(e, 0, 3) == b"dbl"
    with pytest.raises(UsageError, match="invalid path"):
        refs.expand(f"s3://{s3_bucket}/dbl")
