"""``s3://`` references (and the object-store machinery ``gs.py`` reuses).

Recorded (``checksum=True``): size, ETag, and the VersionId when the bucket versions.
Recorded (``checksum=False``): the URI and the size only.  Clients and the bounded retry come
from :mod:`artifactfs.s3util`; this is, with it, the only module that may import boto3.

What is subtle:

* ``s3://b/k`` is one object if HEAD finds ``k``; otherwise (or when the URI ends with ``/``)
  it is the prefix ``k/``, listed with ListObjectsV2.  Zero-byte "folder" keys ending in ``/``
  are skipped.  Listing stops at ``max_objects + 1`` keys so an oversized prefix fails fast.
* A listing does not carry version ids.  One HEAD of the first object tells whether the bucket
  versions; only then is every object HEADed (in parallel) so each entry records the version
  its ETag and size belong to.  Unversioned prefixes cost the listing alone.
* Reads are ranged GETs with ``VersionId`` when one was recorded (an overwrite later still
  returns the logged bytes) and always ``If-Match: <etag>`` when an ETag was recorded (a 412,
  or a 404 for a vanished object or version, is :class:`ReferenceChanged`).  The answer is
  checked too: its ETag and the total of its Content-Range must be the recorded ones.
* Whole downloads are the same verified ranged reads, CHUNK_SIZE each, a few in parallel,
  written with ``pwrite`` at their offsets: memory stays bounded and each piece is retried on
  its own.
* :class:`Flavor` abstracts what differs for GCS's S3-compatible XML API (client, URI scheme,
  and generations instead of version ids, passed as a ``generation`` query parameter that
  botocore does not know, through two event hooks).
"""

from __future__ import annotations

import os
import posixpath
import threading
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from botocore.exceptions import ClientError

from .. import s3util
from ..errors import NotFound, ReferenceChanged, StoreUnavailable, UsageError
from ..model import CHUNK_SIZE, Entry, RefInfo, ref_entry
from . import _common

HEAD_THREADS = 16
DOWNLOAD_THREADS = 4
_GENERATION_PARAM = "ArtifactfsGeneration"


@dataclass(frozen=True)
class Flavor:
    """How one object-store service is reached and how it names object versions."""

    scheme: str
    client: Callable[[], Any]
    gcs: bool = False

    def parse(self, uri: str) -> tuple[str, str]:
        """(bucket, key) exactly as written: object keys may hold any character, '//' too."""
        if not uri.startswith(f"{self.scheme}://"):
            raise UsageError(f"not a {self.scheme}:// URI: {uri!r}")
        bucket, _, key = uri[len(self.scheme) + 3:].partition("/")
        if not bucket or any(c in bucket for c in "?#\\ \0") or "\0" in key:
            raise UsageError(f"invalid {self.scheme} URI {uri!r}: use "
                             f"{self.scheme}://bucket/key-or-prefix")
        return bucket, key

    def uri(self, bucket: str, key: str) -> str:
        return f"{self.scheme}://{bucket}/{key}"


S3 = Flavor("s3", s3util.s3_client)


# --- public functions of the s3:// scheme --------------------------------------------------


def expand(uri: str, name: str | None, checksum: bool, max_objects: int) -> list[tuple[str, Entry]]:
    return expand_with(S3, uri, name, checksum, max_objects)


def read_range(info: RefInfo, size: int, offset: int, length: int) -> bytes:
    return read_range_with(S3, info, size, offset, length)


def download(info: RefInfo, size: int, out: BinaryIO) -> None:
    download_with(S3, info, size, out)


def verify_whole(info: RefInfo, size: int) -> None:
    verify_whole_with(S3, info, size)


# --- expand --------------------------------------------------------------------------------


def expand_with(fl: Flavor, uri: str, name: str | None, checksum: bool,
                max_objects: int) -> list[tuple[str, Entry]]:
    bucket, key = fl.parse(uri)
    if key and not key.endswith("/"):
        head = _head(fl, bucket, key)
        if head is not None:
            path = _common.single_path(uri, name, posixpath.basename(key))
            return [(path, _entry(fl, bucket, key, head, checksum))]
    prefix = key if not key or key.endswith("/") else f"{key}/"
    listed = _list(fl, uri, bucket, prefix, max_objects)
    if not listed:
        raise NotFound(f"reference source not found: {uri} (no such object or prefix)")
    if checksum and _versioned(fl, bucket, listed[0]["Key"]):
        heads = _head_all(fl, bucket, [o["Key"] for o in listed])
    else:
        heads = {o["Key"]: {"ContentLength": o["Size"], "ETag": o.get("ETag"),
                            "LastModified": o.get("LastModified")} for o in listed}
    out = []
    for k, h in sorted(heads.items()):
        if h is not None:  # None: deleted between listing and HEAD
            out.append((_common.member_path(name, k[len(prefix):]),
                        _entry(fl, bucket, k, h, checksum)))
    return out


def _entry(fl: Flavor, bucket: str, key: str, head: dict[str, Any], checksum: bool) -> Entry:
    uri = fl.uri(bucket, key)
    size = int(head["ContentLength"])
    mtime = head.get("LastModified")
    mtime_ns = int(mtime.timestamp()) * 1_000_000_000 if isinstance(mtime, datetime) else 0
    if not checksum:
        return ref_entry(RefInfo(uri=uri, checksum=False), size, mtime_ns)
    info = RefInfo(uri=uri, etag=head.get("ETag"), version_id=_version_of(fl, head))
    return ref_entry(info, size, mtime_ns)


def _version_of(fl: Flavor, head: dict[str, Any]) -> str | None:
    if fl.gcs:
        headers = head.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        gen = headers.get("x-goog-generation")
        if gen:
            return str(gen)
    vid = head.get("VersionId")
    return str(vid) if vid and vid != "null" else None


def _versioned(fl: Flavor, bucket: str, key: str) -> bool:
    """Whether objects under a prefix need a HEAD each to learn their version ids.

    S3: the bucket's versioning status when we may read it (objects written before
    versioning was enabled report the version "null", so one object is not a reliable
    sample); otherwise, and on GCS (every object has a generation), one HEAD decides.
    """
    if not fl.gcs:
        try:
            status = s3util.call_with_retry(fl.client().get_bucket_versioning, Bucket=bucket,
                                            what=f"GET versioning of {fl.scheme}://{bucket}")
            return status.get("Status") in ("Enabled", "Suspended")
        except ClientError:
            pass  # not allowed or not implemented: sample one object
    head = _head(fl, bucket, key)
    return head is not None and _version_of(fl, head) is not None


def _list(fl: Flavor, uri: str, bucket: str, prefix: str, max_objects: int) -> list[dict[str, Any]]:
    client = fl.client()
    out: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix,
                              "MaxKeys": min(1000, max_objects + 1 - len(out))}
        if token:
            kw["ContinuationToken"] = token
        try:
            page = s3util.call_with_retry(client.list_objects_v2, what=f"LIST {uri}", **kw)
        except ClientError as e:
            raise _error(e, uri, reading=False) from None
        for o in page.get("Contents", []):
            if o["Key"].endswith("/"):
                continue  # a "folder" marker, not content
            out.append(o)
            if len(out) > max_objects:
                raise _common.too_many(uri, max_objects)
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return out


def _head(fl: Flavor, bucket: str, key: str) -> dict[str, Any] | None:
    uri = fl.uri(bucket, key)
    try:
        head: dict[str, Any] = s3util.call_with_retry(
            fl.client().head_object, what=f"HEAD {uri}", Bucket=bucket, Key=key)
    except ClientError as e:
        code, status = s3util.error_code(e)
        if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
            return None
        raise _error(e, uri, reading=False) from None
    return head


def _head_all(fl: Flavor, bucket: str, keys: list[str]) -> dict[str, dict[str, Any] | None]:
    with ThreadPoolExecutor(HEAD_THREADS, thread_name_prefix="ref-head") as pool:
        return dict(zip(keys, pool.map(lambda k: _head(fl, bucket, k), keys), strict=True))


# --- reading -------------------------------------------------------------------------------


def _selector(fl: Flavor, info: RefInfo) -> dict[str, Any]:
    """Request parameters pinning the recorded object: version (or generation) and ETag."""
    kw: dict[str, Any] = {}
    if not info.checksum:
        return kw
    if info.version_id:
        if fl.gcs and info.version_id.isdigit():
            kw[_GENERATION_PARAM] = info.version_id
        else:
            kw["VersionId"] = info.version_id
    if info.etag:
        kw["IfMatch"] = info.etag
    return kw


def read_range_with(fl: Flavor, info: RefInfo, size: int, offset: int, length: int) -> bytes:
    n = _common.clip(size, offset, length)
    if n == 0:
        return b""
    bucket, key = fl.parse(info.uri)
    client = fl.client()
    kw = {"Bucket": bucket, "Key": key, "Range": f"bytes={offset}-{offset + n - 1}",
          **_selector(fl, info)}

    def attempt() -> tuple[dict[str, Any], bytes]:
        resp: dict[str, Any] = client.get_object(**kw)
        body = resp["Body"]
        try:
            return resp, body.read()
        finally:
            body.close()

    try:
        resp, data = s3util.call_with_retry(attempt, what=f"GET {info.uri}")
    except ClientError as e:
        raise _error(e, info.uri, reading=True) from None
    if info.checksum and info.etag is not None and resp.get("ETag") != info.etag:
        raise ReferenceChanged(info.uri, f"ETag is {resp.get('ETag')}, was {info.etag}")
    cr = _common.parse_content_range(resp.get("ContentRange"))
    if cr is not None and cr[2] is not None and cr[2] != size:
        raise ReferenceChanged(info.uri, f"size is {cr[2]}, was {size}")
    if cr is None and int(resp.get("ContentLength", -1)) != n:
        raise StoreUnavailable(f"GET {info.uri}: the service ignored the byte range")
    return _common.check_length(info.uri, data, n)


def download_with(fl: Flavor, info: RefInfo, size: int, out: BinaryIO) -> None:
    if size == 0:
        verify_whole_with(fl, info, size)
        return
    fd = out.fileno()
    os.ftruncate(fd, 0)

    def piece(off: int) -> None:
        os.pwrite(fd, read_range_with(fl, info, size, off, CHUNK_SIZE), off)

    pool = ThreadPoolExecutor(DOWNLOAD_THREADS, thread_name_prefix="ref-get")
    try:
        futures = [pool.submit(piece, off) for off in range(0, size, CHUNK_SIZE)]
        for f in futures:
            f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def verify_whole_with(fl: Flavor, info: RefInfo, size: int) -> None:
    """One HEAD pinned like a read; compares size (and ETag) with the record."""
    bucket, key = fl.parse(info.uri)
    try:
        head: dict[str, Any] = s3util.call_with_retry(
            fl.client().head_object, what=f"HEAD {info.uri}", Bucket=bucket, Key=key,
            **_selector(fl, info))
    except ClientError as e:
        raise _error(e, info.uri, reading=True) from None
    if int(head["ContentLength"]) != size:
        raise ReferenceChanged(info.uri, f"size is {head['ContentLength']}, was {size}")
    if info.checksum and info.etag is not None and head.get("ETag") != info.etag:
        raise ReferenceChanged(info.uri, f"ETag is {head.get('ETag')}, was {info.etag}")


def _error(e: ClientError, uri: str, reading: bool) -> Exception:
    """Translate a non-transient S3 error (after s3util's retries) for our callers."""
    code, status = s3util.error_code(e)
    if code == "NoSuchBucket":
        return (ReferenceChanged(uri, "the bucket no longer exists") if reading
                else NotFound(f"reference source not found: {uri} (no such bucket)"))
    if reading:
        if status == 412 or code == "PreconditionFailed":
            return ReferenceChanged(uri, "ETag changed (HTTP 412)")
        if status == 404 or code in ("NoSuchKey", "NoSuchVersion", "404"):
            return ReferenceChanged(uri, "the object or its recorded version is gone")
        if status == 416 or code == "InvalidRange":
            return ReferenceChanged(uri, "shorter than recorded")
    if status == 403 or code == "AccessDenied":
        return StoreUnavailable(f"access denied to {uri} (check credentials and permissions)")
    return StoreUnavailable(f"{uri}: {code or 'HTTP'} {status}".strip())


# --- clients for other S3-compatible services (gs.py) ---------------------------------------

_clients: dict[tuple[str, str | None], Any] = {}
_clients_lock = threading.Lock()


def compat_client(endpoint: str, access_key: str | None, secret_key: str | None,
                  generations: bool) -> Any:
    """A cached boto3 S3 client for another S3-compatible endpoint (e.g. GCS's XML API).

    ``generations`` installs the hooks that turn our private ``ArtifactfsGeneration``
    parameter of GetObject/HeadObject into GCS's ``generation`` query parameter.
    """
    key = (endpoint, access_key)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _make_compat_client(endpoint, access_key, secret_key)
            if generations:
                _install_generation_hooks(client)
            _clients[key] = client
        return client


def _make_compat_client(endpoint: str, access_key: str | None, secret_key: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=s3util.CONNECT_TIMEOUT, read_timeout=s3util.READ_TIMEOUT,
        max_pool_connections=s3util.MAX_POOL_CONNECTIONS,
        retries={"total_max_attempts": 1, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_extra="artifactfs", s3={"addressing_style": "path"},
        signature_version="s3v4",
    )
    session = boto3.session.Session(aws_access_key_id=access_key,
                                    aws_secret_access_key=secret_key)
    return session.client("s3", endpoint_url=endpoint, config=config,
                          region_name=os.environ.get("ARTIFACTFS_GCS_REGION", "auto"))


def _install_generation_hooks(client: Any) -> None:
    def take(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        gen = params.pop(_GENERATION_PARAM, None)
        if gen is not None:
            context["artifactfs_generation"] = str(gen)

    def add(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        gen = context.get("artifactfs_generation")
        if gen is not None:
            url = params["url"]
            params["url"] = (f"{url}{'&' if '?' in url else '?'}"
                             f"generation={urllib.parse.quote(gen, safe='')}")

    for op in ("GetObject", "HeadObject"):
        client.meta.events.register(f"before-parameter-build.s3.{op}", take)
        client.meta.events.register(f"before-call.s3.{op}", add)
