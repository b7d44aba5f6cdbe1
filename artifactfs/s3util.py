"""The one place that creates boto3 S3 clients, and the bounded retry every S3 call goes through.

Used by the S3 store and by S3 references.  What is subtle:

* Endpoint: ``AWS_ENDPOINT_URL_S3``, then ``AWS_ENDPOINT_URL``, then ``AWS_S3_ENDPOINT_URL``
  (W&B's name, which botocore itself ignores), else boto3's default.  A custom endpoint
  (MinIO, Ceph RGW, moto) gets path-style addressing.  Credentials come from boto3's default
  chain and are never logged, printed or put in a message.
* Clients are cached per (endpoint, region, profile, access key) so a process whose
  environment changes (tests) gets a new client; each is built from its own boto3 Session
  under a lock (Sessions are not thread-safe, clients are).
* botocore's own retries are off: :func:`call_with_retry` retries throttling (SlowDown, 429,
  503), 5xx (not 501), bodies damaged in transit (BadDigest: our checksum did not match) and
  connection errors/timeouts with exponential backoff and jitter until a total
  deadline (``ARTIFACTFS_S3_RETRY_SECONDS``, default 30 s) and then raises
  :class:`StoreUnavailable`, so an unreachable store fails in bounded time instead of hanging.
  Any other error (4xx, including 404 and 412) is raised at once, unchanged, for the caller to
  interpret.
* A retry after a lost response re-sends the request: conditional writes retried that way may
  answer 412 although the first attempt succeeded.  Callers of conditional writes must treat
  412 as "re-read and decide", never as proof that nothing was written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import StoreUnavailable, UsageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client  # type: ignore[import-not-found]

log = logging.getLogger(__name__)

T = TypeVar("T")

ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_S3_ENDPOINT_URL")
RETRY_ENV = "ARTIFACTFS_S3_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 30.0
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
MAX_POOL_CONNECTIONS = 64
IO_THREADS = 32  # requests one writer keeps in flight (S3 wants 16-64, whatever the cores)
BACKOFF_BASE = 0.1
BACKOFF_CAP = 3.0

# Error codes that mean "try again later" whatever their HTTP status.
RETRY_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestLimitExceeded", "TooManyRequests", "TooManyRequestsException",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
    # A body damaged on the way (our SHA-256 or Content-MD5 did not match): send it again.
    "BadDigest", "XAmzContentSHA256Mismatch", "IncompleteBody",
})
# 5xx answers that will not change on a retry.
NO_RETRY_STATUS = frozenset({501, 505})
RETRY_STATUS = frozenset({429})

_clients: dict[tuple[str | None, ...], S3Client] = {}
_clients_lock = threading.Lock()


def endpoint_url() -> str | None:
    """The S3 endpoint from the environment, or ``None`` for boto3's default."""
    for name in ENDPOINT_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def retry_seconds() -> float:
    """The total retry budget: ``ARTIFACTFS_S3_RETRY_SECONDS`` or 30 s."""
    raw = os.environ.get(RETRY_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"invalid {RETRY_ENV}={raw!r}: must be a number of seconds") from None
    if value < 0:
        raise UsageError(f"invalid {RETRY_ENV}={raw!r}: must not be negative")
    return value


def _cache_key(endpoint: str | None) -> tuple[str | None, ...]:
    key_id = os.environ.get("AWS_ACCESS_KEY_ID")
    return (
        endpoint,
        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        os.environ.get("AWS_PROFILE"),
        # Only a digest of the key id, so the cache never holds credential material as such.
        hashlib.sha256(key_id.encode()).hexdigest()[:16] if key_id else None,
    )


def s3_client() -> S3Client:
    """A shared, thread-safe boto3 S3 client for the current environment."""
    endpoint = endpoint_url()
    key = _cache_key(endpoint)
    client = _clients.get(key)
    if client is not None:
        return client
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _make_client(endpoint)
            _clients[key] = client
        return client


def _make_client(endpoint: str | None) -> S3Client:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=MAX_POOL_CONNECTIONS,
        retries={"total_max_attempts": 1, "mode": "standard"},  # ours: call_with_retry
        signature_version="s3v4",  # presigned URLs too (the store's GETs): never SigV2
        tcp_keepalive=True,
        # We send SHA-256 checksums ourselves on uploads; readers verify content digests.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_extra="artifactfs",
        s3={"addressing_style": "path"} if endpoint else None,
    )
    session = boto3.session.Session()
    log.debug("creating S3 client (endpoint %s)", endpoint or "default")
    try:
        client: S3Client = session.client("s3", endpoint_url=endpoint, config=config)
    except ValueError as e:  # e.g. an endpoint with no scheme
        raise UsageError(f"invalid S3 endpoint URL {endpoint!r}: {e}") from None
    return client


def reset_clients() -> None:
    """Forget every cached client (tests; after credentials change)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for c in clients:
        try:
            c.close()
        except Exception:
            pass


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` → ``(bucket, prefix)``, the prefix without leading/trailing '/'."""
    if not uri.startswith("s3://"):
        raise UsageError(f"not an S3 URI (s3://bucket[/prefix]): {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    if not bucket or any(c in bucket for c in "?#\\ ") or "\0" in uri:
        raise UsageError(f"invalid S3 URI {uri!r}: no valid bucket name")
    if prefix and any(p in ("", ".", "..") for p in prefix.split("/")):
        raise UsageError(f"invalid S3 URI {uri!r}: empty, '.' or '..' prefix component")
    return bucket, prefix


def error_code(exc: BaseException) -> tuple[str, int]:
    """``(code, http_status)`` of a botocore ``ClientError`` (``("", 0)`` for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", 0
    err = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    code = str(err.get("Code") or "")
    try:
        status = int(meta.get("HTTPStatusCode") or 0)
    except (TypeError, ValueError):
        status = 0
    if not status and code.isdigit():
        status = int(code)
    return code, status


def is_retryable(exc: BaseException) -> bool:
    """Throttling, 5xx, and transport failures (connect, reset, timeouts, truncated bodies)."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        HTTPClientError,
        IncompleteReadError,
        SSLError,
    )

    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        if code == "NotImplemented" or status in NO_RETRY_STATUS:
            return False
        return code in RETRY_CODES or status in RETRY_STATUS or status >= 500
    if isinstance(exc, SSLError):
        return "CERTIFICATE_VERIFY_FAILED" not in str(exc)  # a bad certificate will not heal
    return isinstance(exc, ConnectionError | HTTPClientError | IncompleteReadError)


def call_with_retry(fn: Callable[..., T], *args: Any, what: str, deadline_s: float | None = None,
                    **kw: Any) -> T:
    """``fn(*args, **kw)``, retried on transient S3 failures until ``deadline_s`` seconds passed.

    ``what`` names the operation in messages ("GET s3://bucket/key").  ``deadline_s`` defaults
    to :func:`retry_seconds`.  Raises :class:`StoreUnavailable` when the budget is spent, and
    any non-transient error (a botocore ``ClientError`` for 4xx) at once.
    """
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    budget = retry_seconds() if deadline_s is None else deadline_s
    start = time.monotonic()
    deadline = start + budget
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(*args, **kw)
        except (NoCredentialsError, PartialCredentialsError):
            raise StoreUnavailable(
                f"S3 credentials not found for {what} (set AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role)") from None
        except Exception as e:
            if not is_retryable(e):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                elapsed = time.monotonic() - start
                service = "GCS" if "gs://" in what else "S3"  # gs:// goes through GCS's S3 API
                log.warning("%s unreachable: %s: %s (gave up after %d attempts, %.1f s)",
                            service, what, _describe(e), attempt, elapsed)
                raise StoreUnavailable(
                    f"{service} unreachable: {what}: {_describe(e)} "
                    f"(gave up after {attempt} attempts, {elapsed:.1f} s)") from e
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt - 1, 16))
            delay = min(remaining, delay / 2 + random.uniform(0, delay / 2))
            log.debug("S3 %s failed (%s), retry %d in %.2f s", what, _describe(e), attempt,
                      delay)
            time.sleep(delay)


def _describe(exc: BaseException) -> str:
    code, status = error_code(exc)
    if code or status:
        return f"{code or 'HTTP'} {status}".strip()
    return f"{type(exc).__name__}: {exc}"
