"""The S3 store: the same keys as the directory store, under ``s3://bucket[/prefix]/``.

Any S3-compatible service that implements conditional writes works (AWS, MinIO, Ceph RGW).
What is subtle:

* Put-if-absent is ``PutObject`` with ``If-None-Match: *``; compare-and-swap is ``PutObject``
  with ``If-Match: <etag>`` (``If-None-Match: *`` for a create).  412 PreconditionFailed means
  the condition did not hold.  409 ConditionalRequestConflict (real S3, a concurrent
  conditional write in flight) is not an answer: put-if-absent retries it a few times before
  it reports "exists"; a CAS reports it as :class:`PreconditionFailed` so the caller re-reads.
  ``If-Match`` on a missing key answers 404, which a CAS also reports as PreconditionFailed.
* Etags are S3's ETags without quotes (quotes are added back for ``If-Match``).  A simple
  object's ETag is the MD5 of its bytes, so a record that comes back to earlier content comes
  back to the earlier etag (ABA).  That is harmless for read-modify-write: the CAS then
  writes a value computed from exactly the content that is there.
* Every request goes through :func:`~artifactfs.s3util.call_with_retry`; a retried
  conditional write whose first attempt landed but whose answer was lost reports 412 (see
  s3util), which callers treat as "re-read".
* Uploads carry a SHA-256 checksum (``x-amz-checksum-sha256``), so S3 rejects a body damaged
  on the way; for content-addressed keys it is the key's own digest (not hashed twice).
* :meth:`Store.put_object` with ``likely_present`` sends a HEAD first (:meth:`Store.reuse`):
  an object that exists then costs one request and no bytes; one that does not costs the
  HEAD and then the conditional PUT, which still settles a race.  Writers run
  :data:`~artifactfs.s3util.IO_THREADS` requests at once (:attr:`S3Store.io_threads`).  Values above ``MULTIPART_THRESHOLD`` go up as a multipart upload
  whose completion carries the same condition; a failed one is aborted.
* A missing bucket raises :class:`StoreUnavailable` ("S3 bucket not found: NAME") rather than
  :class:`NotFound`, which callers read as "no such key".  HEAD answers carry no error code, so
  the first 404 from a HEAD checks the bucket once.
* Keys ending in '/' (console "folder" markers) are not keys of this store and are skipped.
* :meth:`get` (every object and chunk a mount or a download reads) is one GET signed here
  and sent through the client's own connection pool (s3get.py: ~0.4 ms of CPU instead of
  botocore's ~1.2-1.8; on the mount's S3 first read of small files the daemon's CPU competes
  with the store's).  Only a 200 is taken from it, and a 404 NoSuchKey; anything else (another
  status, a transport error, a short body) is asked again through the client, so redirects,
  retries and errors are exactly as before.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import ClientError

from ..errors import (
    ArtifactfsError,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    StoreUnavailable,
    UsageError,
)
from ..model import is_digest
from ..s3util import IO_THREADS, call_with_retry, error_code, parse_s3_uri, s3_client
from .base import Leftover, ListItem, Store
from .s3get import PROBE, PlainGet, plain_get

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client  # type: ignore[import-not-found]
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef  # type: ignore[import-not-found]

log = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1024 * 1024
MAX_KEY_BYTES = 1024
OBJECTS = "objects/sha256/"  # content-addressed keys: OBJECTS + digest[:2] + "/" + digest[2:]
CONFLICT_RETRIES = 4  # 409 ConditionalRequestConflict on put-if-absent


def _sha256_b64(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _unquote(etag: str) -> str:
    return etag.strip('"')


def _quote(etag: str) -> str:
    return etag if etag.startswith('"') or etag.startswith('W/') else f'"{etag}"'


def _is_precondition(e: ClientError) -> bool:
    code, status = error_code(e)
    return code == "PreconditionFailed" or status == 412


def _is_conflict(e: ClientError) -> bool:
    code, status = error_code(e)
    return code == "ConditionalRequestConflict" or status == 409


class S3Store(Store):
    """A store under ``s3://bucket[/prefix]``."""

    MULTIPART_THRESHOLD = 64 * MiB
    PART_SIZE = 16 * MiB
    LIST_PAGE_SIZE = 1000
    io_threads = IO_THREADS  # S3 wants many requests in flight, whatever the cores (ingest)

    def __init__(self, uri: str) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self._base = f"{self.prefix}/" if self.prefix else ""
        self._client: S3Client = s3_client()
        self._bucket_ok = False
        self._plain: PlainGet | bool | None = False  # False: not looked at yet (s3get.py)

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r})"

    # --- helpers ---------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or "\0" in key or any(
                p in ("", ".", "..") for p in key.split("/")) or key.startswith("."):
            raise UsageError(f"invalid store key {key!r}")
        full = self._base + key
        if len(full.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise UsageError(f"store key too long for S3 ({MAX_KEY_BYTES} bytes): {key!r}")
        return full

    def _show(self, full: str) -> str:
        return f"s3://{self.bucket}/{full}"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return call_with_retry(fn, what=what)

    def _error(self, e: ClientError, what: str, key: str) -> ArtifactfsError:
        """The artifactfs error for a non-transient S3 error."""
        code, status = error_code(e)
        if code == "NoSuchBucket":
            return StoreUnavailable(f"S3 bucket not found: {self.bucket}")
        if code in ("NoSuchKey", "NotFound") or status == 404:
            return NotFound(f"no such key in store: {key}")
        if status == 403:
            return PermissionDenied(f"S3 access denied ({code or 403}): {what}")
        if code == "NotImplemented" or status == 501:
            return StoreUnavailable(f"the S3 endpoint does not implement {what} "
                                    "(conditional writes need a recent S3-compatible server)")
        message = (e.response.get("Error") or {}).get("Message") or ""
        return StoreUnavailable(f"S3 error on {what}: {code or status} {message}".rstrip())

    def _check_bucket(self) -> None:
        """Raise StoreUnavailable if the bucket does not exist (checked once per store)."""
        if self._bucket_ok:
            return
        what = f"HEAD bucket s3://{self.bucket}"
        try:
            self._call(what, lambda: self._client.head_bucket(Bucket=self.bucket))
        except ClientError as e:
            code, status = error_code(e)
            if status == 404 or code in ("NoSuchBucket", "NotFound"):
                raise StoreUnavailable(f"S3 bucket not found: {self.bucket}") from None
            if status == 403:
                return  # may not HeadBucket: cannot tell, so trust the key's 404
            raise self._error(e, what, "") from None
        self._bucket_ok = True

    # --- reads -----------------------------------------------------------------------------
    def _get(self, key: str, range_: str | None = None) -> tuple[bytes, dict[str, Any]]:
        """The body and response of a GET; raises ClientError for non-transient errors."""
        full = self._key(key)

        def fetch() -> tuple[bytes, dict[str, Any]]:
            if range_ is None:
                resp = self._client.get_object(Bucket=self.bucket, Key=full)
            else:
                resp = self._client.get_object(Bucket=self.bucket, Key=full, Range=range_)
            body = resp["Body"]
            try:
                data = body.read()
            finally:
                body.close()
            return data, dict(resp)

        result = self._call(f"GET {self._show(full)}", fetch)
        self._bucket_ok = True
        return result

    def _plain_get(self) -> PlainGet | None:
        if self._plain is False:
            self._plain = plain_get(self._client, self.bucket, self._base + PROBE)
        return self._plain if isinstance(self._plain, PlainGet) and self._plain.on else None

    def _get_plain(self, plain: PlainGet, full: str) -> bytes | None:
        """The body of a plain GET (s3get.py) that succeeded at once; ``None`` for any other
        outcome (an error status, a transport failure, a body cut short), which the caller
        then asks the usual way, so every error path is the client's own.  404 NoSuchKey
        raises NotFound (no second request for a key that is not there)."""
        try:
            status, body = plain(full)
        except Exception as e:  # the client's way retries it and reports it
            log.debug("plain GET of %s failed (%s): asking through the client",
                      self._show(full), type(e).__name__)
            return None
        if status == 200:
            return body
        if status == 404 and b"<Code>NoSuchKey</Code>" in body:
            raise NotFound(f"no such key in store: {full[len(self._base):]}")
        return None

    def get(self, key: str) -> bytes:
        plain = self._plain_get()
        if plain is not None:
            data = self._get_plain(plain, self._key(key))
            if data is not None:
                self._bucket_ok = True
                return data
        try:
            return self._get(key)[0]
        except ClientError as e:
            raise self._error(e, f"GET {self._show(self._key(key))}", key) from None

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        try:
            data, resp = self._get(key)
        except ClientError as e:
            raise self._error(e, f"GET {self._show(self._key(key))}", key) from None
        return data, _unquote(resp["ETag"])

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise UsageError(f"invalid range {start}+{length} of {key!r}")
        if length == 0:
            if self.head(key) is None:
                raise NotFound(f"no such key in store: {key}")
            return b""
        try:
            data, resp = self._get(key, f"bytes={start}-{start + length - 1}")
        except ClientError as e:
            code, status = error_code(e)
            if code == "InvalidRange" or status == 416:
                return b""  # the key exists; start is at or past its end
            raise self._error(e, f"GET {self._show(self._key(key))}", key) from None
        if not resp.get("ContentRange"):
            data = data[start:start + length]  # the server ignored Range and sent everything
        return data[:length]

    def head(self, key: str) -> ListItem | None:
        full = self._key(key)
        what = f"HEAD {self._show(full)}"
        try:
            resp = self._call(what, lambda: self._client.head_object(Bucket=self.bucket, Key=full))
        except ClientError as e:
            code, status = error_code(e)
            if status == 404 or code in ("NoSuchKey", "NotFound"):
                self._check_bucket()
                return None
            raise self._error(e, what, key) from None
        self._bucket_ok = True
        return ListItem(key=key, size=int(resp["ContentLength"]), etag=_unquote(resp["ETag"]),
                        mtime=resp["LastModified"].timestamp())

    def list(self, prefix: str) -> Iterator[ListItem]:
        full_prefix = self._base + prefix
        what = f"LIST {self._show(full_prefix)}"
        base_len = len(self._base)
        token: str | None = None
        while True:
            def page(token: str | None = token) -> dict[str, Any]:
                if token is None:
                    resp = self._client.list_objects_v2(
                        Bucket=self.bucket, Prefix=full_prefix, MaxKeys=self.LIST_PAGE_SIZE)
                else:
                    resp = self._client.list_objects_v2(
                        Bucket=self.bucket, Prefix=full_prefix, MaxKeys=self.LIST_PAGE_SIZE,
                        ContinuationToken=token)
                return dict(resp)

            try:
                resp = self._call(what, page)
            except ClientError as e:
                raise self._error(e, what, prefix) from None
            for obj in resp.get("Contents") or ():
                key = obj["Key"][base_len:]
                if not key or key.endswith("/"):
                    continue
                yield ListItem(key=key, size=int(obj["Size"]), etag=_unquote(obj["ETag"]),
                               mtime=obj["LastModified"].timestamp())
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        full_prefix = self._base + prefix
        what = f"LIST {self._show(full_prefix)}"
        names: set[str] = set()
        token: str | None = None
        while True:
            def page(token: str | None = token) -> dict[str, Any]:
                if token is None:
                    resp = self._client.list_objects_v2(
                        Bucket=self.bucket, Prefix=full_prefix, Delimiter="/",
                        MaxKeys=self.LIST_PAGE_SIZE)
                else:
                    resp = self._client.list_objects_v2(
                        Bucket=self.bucket, Prefix=full_prefix, Delimiter="/",
                        MaxKeys=self.LIST_PAGE_SIZE, ContinuationToken=token)
                return dict(resp)

            try:
                resp = self._call(what, page)
            except ClientError as e:
                raise self._error(e, what, prefix) from None
            for cp in resp.get("CommonPrefixes") or ():
                name = cp["Prefix"][len(full_prefix):].rstrip("/")
                if name and not name.startswith(".") and "/" not in name:
                    names.add(name)
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return sorted(names)

    # --- writes ----------------------------------------------------------------------------
    def _put_object(self, full: str, data: bytes, what: str, **cond: str) -> str:
        """One PutObject with a SHA-256 checksum and optional condition; the new etag."""
        checksum = self._checksum(full, data)

        def put() -> str:
            resp = self._client.put_object(
                Bucket=self.bucket, Key=full, Body=data, ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum, **cond)  # type: ignore[arg-type]
            return _unquote(resp["ETag"])

        return self._call(what, put)

    def _checksum(self, full: str, data: bytes) -> str:
        """The upload's ``x-amz-checksum-sha256``.  A content-addressed key *is* the SHA-256
        of its bytes (the caller just hashed them), so it is not hashed again: were the bytes
        not what the key says, S3 would refuse them (BadDigest) and nothing would be stored."""
        rest = full[len(self._base):]
        if rest.startswith(OBJECTS):
            digest = rest[len(OBJECTS):].replace("/", "", 1)
            if len(digest) == 64 and is_digest(digest):
                return base64.b64encode(bytes.fromhex(digest)).decode("ascii")
        return _sha256_b64(data)

    def _upload(self, key: str, data: bytes, what: str, **cond: str) -> str:
        """PutObject, or a multipart upload above MULTIPART_THRESHOLD; raises ClientError."""
        full = self._key(key)
        if len(data) > self.MULTIPART_THRESHOLD:
            return self._multipart(full, data, what, **cond)
        return self._put_object(full, data, what, **cond)

    def _multipart(self, full: str, data: bytes, what: str, **cond: str) -> str:
        c = self._client
        up = self._call(f"{what} (create multipart)", lambda: c.create_multipart_upload(
            Bucket=self.bucket, Key=full, ChecksumAlgorithm="SHA256"))
        upload_id = up["UploadId"]
        done = False
        try:
            view = memoryview(data)
            parts: builtins.list[CompletedPartTypeDef] = []
            for number, off in enumerate(range(0, len(data), self.PART_SIZE), start=1):
                chunk = bytes(view[off:off + self.PART_SIZE])
                checksum = _sha256_b64(chunk)

                def upload(number: int = number, chunk: bytes = chunk,
                           checksum: str = checksum) -> str:
                    resp = c.upload_part(
                        Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number,
                        Body=chunk, ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum)
                    return str(resp["ETag"])

                etag = self._call(f"{what} (part {number})", upload)
                parts.append({"PartNumber": number, "ETag": etag, "ChecksumSHA256": checksum})

            def complete() -> str:
                resp = c.complete_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=upload_id,
                    MultipartUpload={"Parts": parts}, **cond)  # type: ignore[arg-type]
                return _unquote(resp["ETag"])

            try:
                etag = self._call(f"{what} (complete multipart)", complete)
            except ClientError as e:
                code, _ = error_code(e)
                if code != "NoSuchUpload":
                    raise
                # A retried completion whose first attempt landed: the upload is gone.
                item = self.head(full[len(self._base):])
                if item is None:
                    raise
                etag = item.etag
            done = True
            return etag
        finally:
            if not done:
                try:
                    call_with_retry(c.abort_multipart_upload, Bucket=self.bucket, Key=full,
                                    UploadId=upload_id, what=f"{what} (abort multipart)",
                                    deadline_s=5.0)
                except Exception as e:  # the bucket's lifecycle rule reaps what is left
                    log.warning("could not abort multipart upload of %s: %s",
                                self._show(full), e)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        what = f"PUT (if absent) {self._show(self._key(key))}"
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                self._upload(key, data, what, IfNoneMatch="*")
                return True
            except ClientError as e:
                if _is_precondition(e):
                    return False
                if _is_conflict(e):
                    # A concurrent conditional write is in flight: its outcome decides.
                    if attempt < CONFLICT_RETRIES:
                        time.sleep(0.05 * 2 ** attempt)
                        continue
                    return False
                raise self._error(e, what, key) from None
        return False  # pragma: no cover - the loop always returns

    def cas(self, key: str, data: bytes, etag: str | None) -> str:
        full = self._key(key)
        what = f"PUT (CAS) {self._show(full)}"
        cond = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": _quote(etag)}
        try:
            return self._put_object(full, data, what, **cond)
        except ClientError as e:
            code, status = error_code(e)
            if _is_precondition(e) or _is_conflict(e):
                if etag is None:
                    raise PreconditionFailed(f"record already exists: {key}") from None
                raise PreconditionFailed(f"record changed: {key}") from None
            if etag is not None and code != "NoSuchBucket" and (
                    code == "NoSuchKey" or status == 404):
                raise PreconditionFailed(f"record was removed: {key}") from None
            raise self._error(e, what, key) from None

    def put(self, key: str, data: bytes) -> None:
        what = f"PUT {self._show(self._key(key))}"
        try:
            self._upload(key, data, what)
        except ClientError as e:
            raise self._error(e, what, key) from None

    def delete(self, key: str) -> None:
        full = self._key(key)
        what = f"DELETE {self._show(full)}"
        try:
            self._call(what, lambda: self._client.delete_object(Bucket=self.bucket, Key=full))
        except ClientError as e:
            code, status = error_code(e)
            if code == "NoSuchKey" or (status == 404 and code != "NoSuchBucket"):
                return
            raise self._error(e, what, key) from None

    def touch(self, key: str, data: bytes) -> None:
        """A copy of the object onto itself: a new LastModified, no bytes sent."""
        full = self._key(key)
        what = f"COPY (touch) {self._show(full)}"
        try:
            self._call(what, lambda: self._client.copy_object(
                Bucket=self.bucket, Key=full, CopySource={"Bucket": self.bucket, "Key": full},
                MetadataDirective="REPLACE", Metadata={"touched": "1"}))
        except ClientError as e:
            code, status = error_code(e)
            if code in ("NoSuchKey", "NotFound") or (status == 404 and code != "NoSuchBucket"):
                self.put_if_absent(key, data)  # swept a moment ago
                return
            raise self._error(e, what, key) from None

    def leftovers(self, before: float) -> builtins.list[Leftover]:
        """Multipart uploads started before ``before`` and never completed nor aborted."""
        c = self._client
        what = f"LIST multipart uploads {self._show(self._base)}"
        out: builtins.list[Leftover] = []
        marker: dict[str, str] = {}
        while True:
            def page(marker: dict[str, str] = marker) -> dict[str, Any]:
                return dict(c.list_multipart_uploads(Bucket=self.bucket, Prefix=self._base,
                                                     **marker))  # type: ignore[arg-type]
            try:
                resp = self._call(what, page)
            except ClientError as e:
                raise self._error(e, what, "") from None
            for up in resp.get("Uploads") or ():
                started = up["Initiated"].timestamp()
                if started < before:
                    key = up["Key"][len(self._base):]
                    out.append(Leftover(f"unfinished upload of {key}", 0, started,
                                        f"{up['UploadId']} {up['Key']}"))
            if not resp.get("IsTruncated"):
                return out
            marker = {"KeyMarker": resp.get("NextKeyMarker") or "",
                      "UploadIdMarker": resp.get("NextUploadIdMarker") or ""}

    def remove_leftover(self, item: Leftover) -> None:
        upload_id, _, full = item.token.partition(" ")
        if not full.startswith(self._base):
            raise UsageError(f"not an upload of this store: {full!r}")
        what = f"ABORT multipart upload of {self._show(full)}"
        try:
            self._call(what, lambda: self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id))
        except ClientError as e:
            code, _ = error_code(e)
            if code != "NoSuchUpload":
                raise self._error(e, what, full) from None

    def sync(self) -> None:
        """Nothing to do: an S3 write is durable once it is answered."""

    def local_path(self, key: str) -> str | None:
        return None
