"""``http://`` and ``https://`` references: one URI is one file (there are no listings).

Recorded (``checksum=True``): size (Content-Length, or the total of a Content-Range) and the
ETag when the server gives one.  Recorded (``checksum=False``): the URI and the size only.
Only the standard library (``urllib``) is used.

What is subtle:

* Logging probes with ``HEAD``; when it is refused (405/501, or the 403 a presigned GET URL
  gives) or gives no length, it asks ``GET`` with ``Range: bytes=0-0`` and reads the size from
  ``Content-Range`` without reading the body.
* Reads send ``Range`` and ``If-Match: <etag>`` (a 412 is :class:`ReferenceChanged`) and then
  check the response themselves too: the ETag must be the recorded one and the total size
  (Content-Range total, or Content-Length of a full answer) the recorded size, so a server
  that ignores ``If-Match`` still cannot hand out other bytes.  Weak ETags (``W/"…"``) never
  satisfy ``If-Match``, so they are only compared, never sent.
* A server that ignores ``Range`` answers 200 with the whole body: the reader skips to the
  offset and stops after the wanted bytes, so slices stay right (at the cost of transferring
  everything before them).  Downloads use one plain GET and stream it.
* Without an ETag the recorded identity is the size alone: a same-size rewrite of such a URL
  is not detected.  That is the server's limit, not ours, and it is documented for users.
* Transient failures (connection errors, timeouts, 408/429/5xx) are retried with backoff for
  at most ``ARTIFACTFS_S3_RETRY_SECONDS`` (default 30) seconds, then :class:`StoreUnavailable`; 404/410/412/416 on a
  read mean the source is not what was logged and are never retried.
* ``net``: a daemon serving other users reads through a :class:`NetPolicy` (no loopback,
  link-local or private address unless the operator names it; see netpolicy.py).  A refusal
  is :class:`PermissionDenied`, never retried.
* ``Accept-Encoding: identity`` keeps servers from compressing, so sizes and offsets are
  those of the stored representation.
"""

from __future__ import annotations

import email.utils
import http.client
import posixpath
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from ..errors import ArtifactfsError, NotFound, ReferenceChanged, StoreUnavailable, UsageError
from ..model import Entry, RefInfo, ref_entry
from . import _common
from .netpolicy import NetPolicy

T = TypeVar("T")

TIMEOUT_S = 20.0  # per attempt: connect and each socket read
_RETRY_CODES = frozenset({408, 429, 500, 502, 503, 504})
_GONE = frozenset({404, 410})
_Response = http.client.HTTPResponse


def expand(uri: str, name: str | None, checksum: bool, max_objects: int) -> list[tuple[str, Entry]]:
    parts = urllib.parse.urlsplit(uri)
    if not parts.netloc:
        raise UsageError(f"invalid URL {uri!r}: no host")
    base = urllib.parse.unquote(posixpath.basename(parts.path))
    path = _common.single_path(uri, name, base)
    size, etag, mtime_ns = _probe(uri)
    info = RefInfo(uri=uri, etag=etag) if checksum else RefInfo(uri=uri, checksum=False)
    return [(path, ref_entry(info, size, mtime_ns))]


def read_range(info: RefInfo, size: int, offset: int, length: int,
               net: NetPolicy | None = None) -> bytes:
    n = _common.clip(size, offset, length)
    if n == 0:
        return b""
    headers = _headers(info)
    headers["Range"] = f"bytes={offset}-{offset + n - 1}"

    def attempt() -> bytes:
        with _open_checked(info, headers, net) as resp:
            _check_identity(info, size, resp)
            if resp.status == 206:
                cr = _common.parse_content_range(resp.headers.get("Content-Range"))
                if cr is None or cr[0] > offset or cr[1] < offset + n - 1:
                    raise StoreUnavailable(
                        f"{info.uri}: server answered Range with "
                        f"{resp.headers.get('Content-Range')!r}")
                return _read_exact(resp, offset - cr[0], n)
            return _read_exact(resp, offset, n)  # 200: Range ignored, whole body

    data = _retry(attempt, f"read {info.uri}")
    return _common.check_length(info.uri, data, n)


def download(info: RefInfo, size: int, out: BinaryIO, net: NetPolicy | None = None) -> None:
    headers = _headers(info)

    def attempt() -> None:
        out.seek(0)
        out.truncate()
        with _open_checked(info, headers, net) as resp:
            _check_identity(info, size, resp)
            if resp.status != 200:
                raise StoreUnavailable(f"{info.uri}: unexpected HTTP {resp.status} to a GET")
            done = 0
            while done < size:
                buf = resp.read(min(_common.PIECE, size - done))
                if not buf:
                    break
                try:
                    out.write(buf)
                except OSError as e:  # local disk trouble: not for the network retry loop
                    raise _LocalError(e) from e
                done += len(buf)
            if done != size or resp.read(1):
                raise ReferenceChanged(info.uri, f"body is not {size} bytes long")

    try:
        _retry(attempt, f"download {info.uri}")
    except _LocalError as e:
        raise e.error from None


class _LocalError(Exception):
    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def verify_whole(info: RefInfo, size: int) -> None:
    """Ask the server now whether the URL still has the recorded size and ETag."""
    try:
        cur_size, etag, _ = _probe(info.uri)
    except NotFound:
        raise ReferenceChanged(info.uri, "the URL no longer exists") from None
    if cur_size != size:
        raise ReferenceChanged(info.uri, f"size is {cur_size}, was {size}")
    if info.checksum and info.etag is not None and etag != info.etag:
        raise ReferenceChanged(info.uri, "ETag changed")


# --- requests ------------------------------------------------------------------------------


def _headers(info: RefInfo) -> dict[str, str]:
    h = {"Accept-Encoding": "identity", "User-Agent": "artifactfs"}
    if info.checksum and info.etag and not info.etag.startswith("W/"):
        h["If-Match"] = info.etag
    return h


def _open(uri: str, headers: dict[str, str], method: str = "GET",
          net: NetPolicy | None = None) -> _Response:
    req = urllib.request.Request(uri, headers=headers, method=method)
    if net is not None:
        resp = net.opener().open(req, timeout=TIMEOUT_S)
    else:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)
    assert isinstance(resp, _Response)
    return resp


def _open_checked(info: RefInfo, headers: dict[str, str], net: NetPolicy | None) -> _Response:
    """GET for a read: statuses that mean "not what was logged" become ReferenceChanged."""
    try:
        return _open(info.uri, headers, net=net)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 412:
            raise ReferenceChanged(info.uri, "ETag changed (HTTP 412)") from None
        if e.code in _GONE:
            raise ReferenceChanged(info.uri, f"the URL is gone (HTTP {e.code})") from None
        if e.code == 416:
            raise ReferenceChanged(info.uri, "shorter than recorded (HTTP 416)") from None
        raise


def _check_identity(info: RefInfo, size: int, resp: _Response) -> None:
    if info.checksum and info.etag is not None:
        etag = resp.headers.get("ETag")
        if etag != info.etag:
            raise ReferenceChanged(info.uri, f"ETag is {etag}, was {info.etag}")
    total: int | None = None
    if resp.status == 206:
        cr = _common.parse_content_range(resp.headers.get("Content-Range"))
        total = cr[2] if cr is not None else None
    elif resp.status == 200:
        total = _int_header(resp, "Content-Length")
    else:
        raise StoreUnavailable(f"{info.uri}: unexpected HTTP {resp.status}")
    if total is not None and total != size:
        raise ReferenceChanged(info.uri, f"size is {total}, was {size}")


def _read_exact(resp: _Response, skip: int, n: int) -> bytes:
    while skip > 0:
        buf = resp.read(min(skip, _common.PIECE))
        if not buf:
            return b""
        skip -= len(buf)
    parts: list[bytes] = []
    got = 0
    while got < n:
        buf = resp.read(n - got)
        if not buf:
            break
        parts.append(buf)
        got += len(buf)
    return b"".join(parts)


def _int_header(resp: _Response, name: str) -> int | None:
    v = resp.headers.get(name)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _mtime_ns(resp: _Response) -> int:
    v = resp.headers.get("Last-Modified")
    if not v:
        return 0
    try:
        return int(email.utils.parsedate_to_datetime(v).timestamp()) * 1_000_000_000
    except (TypeError, ValueError, OverflowError):
        return 0


def _probe(uri: str) -> tuple[int, str | None, int]:
    """(size, ETag, mtime_ns) of a URL: HEAD, else GET of its first byte."""
    headers = {"Accept-Encoding": "identity", "User-Agent": "artifactfs"}

    def head() -> tuple[int, str | None, int] | None:
        try:
            with _open(uri, headers, "HEAD") as resp:
                size = _int_header(resp, "Content-Length")
                if resp.status != 200 or size is None:
                    return None
                return size, resp.headers.get("ETag"), _mtime_ns(resp)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code in _GONE:
                raise NotFound(f"reference source not found: {uri} (HTTP {e.code})") from None
            if e.code in _RETRY_CODES:
                raise
            return None  # HEAD refused: ask GET

    def first_byte() -> tuple[int, str | None, int]:
        try:
            resp = _open(uri, {**headers, "Range": "bytes=0-0"})
        except urllib.error.HTTPError as e:
            e.close()
            if e.code in _GONE:
                raise NotFound(f"reference source not found: {uri} (HTTP {e.code})") from None
            if e.code == 416:  # an empty file has no byte 0
                unsatisfied = (e.headers.get("Content-Range") or "").strip()
                if unsatisfied == "bytes */0":
                    return 0, e.headers.get("ETag"), 0
            if e.code in _RETRY_CODES:
                raise
            raise UsageError(f"cannot reference {uri}: HTTP {e.code} {e.reason}") from None
        with resp:
            etag, mtime = resp.headers.get("ETag"), _mtime_ns(resp)
            if resp.status == 206:
                cr = _common.parse_content_range(resp.headers.get("Content-Range"))
                if cr is not None and cr[2] is not None:
                    return cr[2], etag, mtime
            elif resp.status == 200:
                size = _int_header(resp, "Content-Length")
                if size is not None:
                    return size, etag, mtime
        raise UsageError(f"cannot reference {uri}: the server does not tell its size")

    got = _retry(head, f"HEAD {uri}")
    return got if got is not None else _retry(first_byte, f"GET {uri}")


def _retry(fn: Callable[[], T], what: str) -> T:
    """Call ``fn`` until it succeeds, retrying transient failures within the deadline."""
    start = time.monotonic()
    delay = 0.1
    while True:
        try:
            return fn()
        except ArtifactfsError:
            raise
        except urllib.error.HTTPError as e:
            if e.code not in _RETRY_CODES:
                raise StoreUnavailable(f"{what}: HTTP {e.code} {e.reason}") from None
            err: BaseException = e
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLError):
                raise StoreUnavailable(f"{what}: {e.reason}") from None
            err = e
        except (OSError, http.client.HTTPException) as e:
            err = e
        if time.monotonic() - start + delay > _common.deadline_s():
            raise StoreUnavailable(f"{what}: {err} (gave up after retrying)") from None
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
