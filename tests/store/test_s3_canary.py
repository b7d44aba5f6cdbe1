"""S3-specific tests: canaries on the moto server itself, faults, and the S3 plumbing.

The canaries talk to moto with a bare boto3 client, not through S3Store: if moto ever stops
refusing a second create-only PUT or a stale ``If-Match`` (moto before 5.1.5 silently
overwrote), the conformance suite's S3 runs would prove nothing, and these fail first.
The rest covers what the conformance suite cannot: an unreachable endpoint and a missing
bucket fail in bounded time with clear errors, multipart uploads keep their condition,
listings paginate, uploads carry a SHA-256 checksum, and the retry policy of s3util.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from artifactfs import s3util
from artifactfs.errors import NotFound, PreconditionFailed, StoreUnavailable, UsageError
from artifactfs.store import LocalStore, open_store
from artifactfs.store.s3 import S3Store

s3 = pytest.mark.s3


def _client_error(code: str, status: int, op: str = "PutObject") -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": code},
                     "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, op)


def _status(e: ClientError) -> int:
    return int(e.response["ResponseMetadata"]["HTTPStatusCode"])


# --- canaries: moto must enforce conditional writes ------------------------------------------
@s3
def test_moto_refuses_second_create_only_put(s3_bucket: str) -> None:
    c = s3util.s3_client()
    c.put_object(Bucket=s3_bucket, Key="k", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:
        c.put_object(Bucket=s3_bucket, Key="k", Body=b"second", IfNoneMatch="*")
    assert _status(info.value) == 412
    assert c.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"first"


@s3
def test_moto_refuses_stale_if_match(s3_bucket: str) -> None:
    c = s3util.s3_client()
    stale = c.put_object(Bucket=s3_bucket, Key="k", Body=b"one")["ETag"]
    fresh = c.put_object(Bucket=s3_bucket, Key="k", Body=b"two", IfMatch=stale)["ETag"]
    with pytest.raises(ClientError) as info:
        c.put_object(Bucket=s3_bucket, Key="k", Body=b"three", IfMatch=stale)
    assert _status(info.value) == 412
    assert c.get_object(Bucket=s3_bucket, Key="k")["ETag"] == fresh


# --- faults ----------------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed: connections are refused


def test_unreachable_endpoint_fails_within_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    budget = 2.0
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("ARTIFACTFS_S3_RETRY_SECONDS", str(budget))
    store = S3Store("s3://some-bucket/prefix")
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match="S3 unreachable"):
        store.get("objects/x")
    elapsed = time.monotonic() - start
    assert budget * 0.9 <= elapsed <= budget + 3, elapsed  # it retried, then gave up


@s3
def test_missing_bucket_is_clear(s3_server: str) -> None:
    store = open_store("s3://afs-no-such-bucket/p")
    for op in (lambda: store.get("k"), lambda: store.head("k"),
               lambda: store.put_if_absent("k", b"x"), lambda: list(store.list("")),
               lambda: store.cas("k", b"x", "0123"), lambda: store.delete("k")):
        with pytest.raises(StoreUnavailable, match="S3 bucket not found: afs-no-such-bucket"):
            op()


# --- S3 specifics ----------------------------------------------------------------------------
@s3
def test_keys_live_under_the_prefix(s3_bucket: str) -> None:
    store = S3Store(f"s3://{s3_bucket}/team/store/")
    assert store.uri == f"s3://{s3_bucket}/team/store"
    store.put("objects/k", b"v")
    other = S3Store(f"s3://{s3_bucket}/team/store2")
    other.put("objects/k", b"not mine")
    raw = s3util.s3_client().list_objects_v2(Bucket=s3_bucket)
    assert sorted(o["Key"] for o in raw["Contents"]) == ["team/store/objects/k",
                                                       "team/store2/objects/k"]
    assert [i.key for i in store.list("")] == ["objects/k"]
    assert store.list_dirs("") == ["objects"]
    whole = S3Store(f"s3://{s3_bucket}")
    assert whole.get("team/store/objects/k") == b"v"
    assert whole.list_dirs("team/") == ["store", "store2"]


@s3
def test_upload_carries_sha256(s3_store_uri: str) -> None:
    store = S3Store(s3_store_uri)
    data = os.urandom(1000)
    store.put_if_absent("objects/c", data)
    head = s3util.s3_client().head_object(Bucket=store.bucket, Key="prefix/objects/c",
                                          ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()


@s3
def test_multipart_put_if_absent(s3_store_uri: str) -> None:
    store = S3Store(s3_store_uri)
    store.MULTIPART_THRESHOLD = 6 * 1024 * 1024
    store.PART_SIZE = 5 * 1024 * 1024  # S3's smallest part
    data = os.urandom(12 * 1024 * 1024)
    assert store.put_if_absent("objects/mp", data)
    assert not store.put_if_absent("objects/mp", os.urandom(12 * 1024 * 1024))
    assert store.get("objects/mp") == data
    store.put("objects/mp2", data)
    assert store.get_range("objects/mp2", 5 * 1024 * 1024 - 3, 6) == data[5242877:5242883]
    uploads = s3util.s3_client().list_multipart_uploads(Bucket=store.bucket)
    assert not uploads.get("Uploads"), "the refused upload must be aborted"


@s3
def test_listings_paginate(s3_store_uri: str) -> None:
    store = S3Store(s3_store_uri)
    store.LIST_PAGE_SIZE = 3
    keys = [f"d/{i:02d}/f" for i in range(10)] + [f"d/k{i}" for i in range(4)]
    for k in keys:
        store.put(k, b"")
    assert [i.key for i in store.list("d/")] == sorted(keys)
    assert store.list_dirs("d/") == [f"{i:02d}" for i in range(10)]


@s3
def test_folder_markers_are_not_keys(s3_store_uri: str) -> None:
    store = S3Store(s3_store_uri)
    store.put("a/real", b"x")
    s3util.s3_client().put_object(Bucket=store.bucket, Key="prefix/a/", Body=b"")
    assert [i.key for i in store.list("")] == ["a/real"]
    assert store.list_dirs("") == ["a"]


class ConflictingClient:
    """A stand-in S3 client whose conditional PUTs answer the given errors, then succeed."""

    def __init__(self, errors: list[ClientError]) -> None:
        self.errors, self.calls = list(errors), 0

    def put_object(self, **kw: Any) -> dict[str, Any]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"ETag": '"new"'}


def test_conditional_request_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real S3 answers 409 while another conditional write to the key is in flight."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = S3Store("s3://bucket/p")
    conflict = _client_error("ConditionalRequestConflict", 409)
    fake = ConflictingClient([conflict, conflict])
    store._client = fake  # type: ignore[assignment]
    assert store.put_if_absent("k", b"x")  # retried until the other write was decided
    assert fake.calls == 3
    fake = ConflictingClient([conflict, _client_error("PreconditionFailed", 412)])
    store._client = fake  # type: ignore[assignment]
    assert not store.put_if_absent("k", b"x")
    fake = ConflictingClient([conflict])
    store._client = fake  # type: ignore[assignment]
    with pytest.raises(PreconditionFailed):
        store.cas("k", b"x", "etag")  # the caller re-reads and tries again
    assert fake.calls == 1


# --- retry policy ----------------------------------------------------------------------------
class Flaky:
    def __init__(self, errors: list[BaseException], result: Any = "ok") -> None:
        self.errors, self.result, self.calls = list(errors), result, 0

    def __call__(self, *args: Any, **kw: Any) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return (self.result, args, kw)


@pytest.mark.parametrize("error", [
    _client_error("SlowDown", 503), _client_error("InternalError", 500),
    _client_error("ServiceUnavailable", 503), _client_error("RequestTimeout", 400),
    _client_error("TooManyRequests", 429), _client_error("BadDigest", 400),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
])
def test_transient_errors_are_retried(error: BaseException) -> None:
    fn = Flaky([error, error])
    assert s3util.call_with_retry(fn, 1, what="test", deadline_s=10, x=2) == ("ok", (1,), {"x": 2})
    assert fn.calls == 3


@pytest.mark.parametrize("code,status", [("NoSuchKey", 404), ("PreconditionFailed", 412),
                                         ("AccessDenied", 403), ("InvalidRange", 416),
                                         ("ConditionalRequestConflict", 409),
                                         ("NotImplemented", 501)])
def test_client_errors_are_not_retried(code: str, status: int) -> None:
    fn = Flaky([_client_error(code, status)])
    with pytest.raises(ClientError):
        s3util.call_with_retry(fn, what="test", deadline_s=10)
    assert fn.calls == 1


def test_retry_gives_up_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARTIFACTFS_S3_RETRY_SECONDS", "0.5")
    fn = Flaky([_client_error("SlowDown", 503)] * 1000)
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"S3 unreachable: GET thing: SlowDown 503"):
        s3util.call_with_retry(fn, what="GET thing")
    assert 0.45 <= time.monotonic() - start < 1.5
    assert fn.calls >= 3


# --- URIs and clients ------------------------------------------------------------------------
def test_parse_s3_uri() -> None:
    assert s3util.parse_s3_uri("s3://bucket") == ("bucket", "")
    assert s3util.parse_s3_uri("s3://bucket/") == ("bucket", "")
    assert s3util.parse_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    for bad in ("bucket/x", "s3://", "s3:///x", "s3://b/a//c", "s3://b/../x", "gs://b/x"):
        with pytest.raises(UsageError):
            s3util.parse_s3_uri(bad)


def test_endpoint_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in s3util.ENDPOINT_ENV:
        monkeypatch.delenv(name, raising=False)
    assert s3util.endpoint_url() is None
    monkeypatch.setenv("AWS_S3_ENDPOINT_URL", "http://wandb:1")
    assert s3util.endpoint_url() == "http://wandb:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic:2")
    assert s3util.endpoint_url() == "http://generic:2"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3only:3")
    assert s3util.endpoint_url() == "http://s3only:3"
    a = s3util.s3_client()
    assert a is s3util.s3_client()
    assert a.meta.endpoint_url == "http://s3only:3"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3only:4")
    assert s3util.s3_client().meta.endpoint_url == "http://s3only:4"


def test_open_store(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s = open_store("s3://bucket/pre/fix")
    assert isinstance(s, S3Store) and (s.bucket, s.prefix) == ("bucket", "pre/fix")
    f = open_store(f"file://{tmp_path}/a")
    assert isinstance(f, LocalStore) and f.root == f"{tmp_path}/a"
    p = open_store("~/b")
    assert isinstance(p, LocalStore) and p.root == f"{tmp_path}/b"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    d = open_store(None)
    assert isinstance(d, LocalStore) and d.root == f"{tmp_path}/xdg/artifactfs/store"
    for bad in ("file://host/x", "file://rel", "gs://bucket/x", "s3://"):
        with pytest.raises(UsageError):
            open_store(bad)
    with pytest.raises(NotFound):
        f.get("nothing")


def test_local_store_does_not_import_boto3(tmp_path: Any) -> None:
    code = ("import sys; from artifactfs.store import open_store; "
            f"open_store({str(tmp_path / 's')!r}).put('k', b'v'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
