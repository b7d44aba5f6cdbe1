"""The S3 store's plain GET: one request, signed here (SigV4 in headers), sent through the
connection pool of the store's own boto3 client.

A mount's first read of many small files is one GET per file, and on a node the daemon's CPU
per GET is what the rate pays (the store's server, the daemon and the readers share the
cores).  botocore's ``get_object`` costs ~1.2-1.8 ms of CPU per call (parameter validation,
serialization, event hooks, signing, response parsing), a presigned URL sent through its
HTTP session ~0.9; this ~0.4 ms (mostly urllib3 and the socket).

What is subtle:

* Where to send a GET and how to sign it is botocore's answer, asked once per store: a
  presigned URL of a probe key gives the URL every key is under (endpoint, addressing style,
  bucket) and the credential scope (signing region and service).  Only plain SigV4
  (``AWS4-HMAC-SHA256``) is done here; anything else (SigV4a, S3 Express sessions, anonymous
  access, a proxy for the endpoint, a botocore without the pieces used below) leaves every GET
  to the client (:func:`plain_get` answers ``None``).
* The signature is the one botocore's ``S3SigV4Auth`` makes for the same GET (a unit test
  compares them byte for byte): signed headers ``host``, ``x-amz-content-sha256`` (the empty
  body's hash), ``x-amz-date`` and, with temporary credentials, ``x-amz-security-token``; the
  path is the key percent-encoded as botocore encodes it, not normalized (S3 does not).
  Credentials are frozen per request (refreshable ones refresh themselves); the signing key
  (an HMAC chain over day, region, service) is derived once a day per secret.
* The request goes through the pool botocore uses for the endpoint (its TLS verification,
  timeouts, keep-alive, pool size), looked up per request as botocore does (its pool manager
  may have dropped it), with no retries and no redirects: the caller takes a 200, a 404
  NoSuchKey, and asks anything else again through the client.  A redirect or a 400 (the
  bucket is in another region than botocore assumed, or moved) turns the plain GET off for
  the store: the client then learns the region, and later GETs go its way.
* Headers and URL carry credentials (a signature valid for 15 minutes; a session token):
  they are never logged nor put in a message.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from botocore.utils import percent_encode
from urllib3.util.retry import Retry

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
PROBE = "artifactfs-probe"  # a key name only ever signed, never sent
_DEFAULT_PORTS = {"http": 80, "https": 443}
NO_RETRY = Retry(False)


@dataclass(frozen=True, slots=True)
class Target:
    """Where every key of a bucket is GET from, and the scope it is signed for."""

    url: str  # scheme://host[:port]/path-prefix/ (a key follows, percent-encoded)
    path: str  # the path prefix
    host: str  # the Host header (lowercase, no default port)
    region: str
    service: str


def target_of(presigned_url: str, probe_key: str) -> Target | None:
    """The target read off a presigned GET URL of ``probe_key``, or ``None`` if it is not
    plain SigV4 of a key at the end of the URL's path."""
    base, _, query = presigned_url.partition("?")
    params = dict(parse_qsl(query))
    scope = params.get("X-Amz-Credential", "").split("/")
    if params.get("X-Amz-Algorithm") != ALGORITHM or len(scope) != 5 or \
            scope[4] != "aws4_request":
        return None
    encoded = percent_encode(probe_key, safe="/~")
    if not base.endswith("/" + encoded):
        return None
    url = base[:len(base) - len(encoded)]
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username:
        return None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{parts.port}"
    return Target(url, parts.path, host, scope[2], scope[3])


def signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    k = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def sign_get(target: Target, path: str, amz_date: str, access_key: str, key: bytes,
             token: str | None) -> dict[str, str]:
    """The headers of a GET of ``path`` (already percent-encoded) signed with ``key``
    (:func:`signing_key` of ``amz_date``'s day) at ``amz_date`` (``YYYYMMDDTHHMMSSZ``)."""
    names = "host;x-amz-content-sha256;x-amz-date"
    canonical = f"host:{target.host}\nx-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:{amz_date}\n"
    if token:
        names += ";x-amz-security-token"
        canonical += f"x-amz-security-token:{' '.join(token.split())}\n"
    request = f"GET\n{path}\n\n{canonical}\n{names}\n{EMPTY_SHA256}"
    scope = f"{amz_date[:8]}/{target.region}/{target.service}/aws4_request"
    to_sign = (f"{ALGORITHM}\n{amz_date}\n{scope}\n"
               f"{hashlib.sha256(request.encode()).hexdigest()}")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers = {"Host": target.host, "X-Amz-Content-SHA256": EMPTY_SHA256,
               "X-Amz-Date": amz_date, "User-Agent": "artifactfs",
               "Authorization": f"{ALGORITHM} Credential={access_key}/{scope}, "
                                f"SignedHeaders={names}, Signature={signature}"}
    if token:
        headers["X-Amz-Security-Token"] = token
    return headers


class PlainGet:
    """GETs of one bucket's keys, signed here and sent through the client's pool."""

    def __init__(self, client: Any, target: Target) -> None:
        self._http = client._endpoint.http_session
        self._credentials = client._request_signer._credentials
        self.target = target
        self.on = True  # False once an answer said the client must handle this bucket
        self._key: tuple[str, str, bytes] = ("", "", b"")  # (secret, day, signing key)
        self._encode: Any = None

    def __call__(self, full: str) -> tuple[int, bytes]:
        """(status, body) of a GET of ``full`` (a key of the bucket); raises on transport
        errors (the caller then asks the client)."""
        creds = self._credentials.get_frozen_credentials()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        secret, day, key = self._key
        if secret != creds.secret_key or day != amz_date[:8]:
            key = signing_key(creds.secret_key, amz_date[:8], self.target.region,
                              self.target.service)
            self._key = (creds.secret_key, amz_date[:8], key)
        path = self.target.path + percent_encode(full, safe="/~")
        headers = sign_get(self.target, path, amz_date, creds.access_key, key, creds.token)
        http, url = self._http, self.target.url
        pool = http._get_connection_manager(url, None).connection_from_url(url)
        http._setup_ssl_cert(pool, url, http._verify)
        resp = pool.urlopen("GET", path, headers=headers, retries=NO_RETRY, redirect=False,
                            assert_same_host=False, preload_content=True, decode_content=False)
        if 300 <= resp.status < 400 or resp.status == 400:
            self.on = False
        return resp.status, resp.data


def plain_get(client: Any, bucket: str, probe_key: str) -> PlainGet | None:
    """The plain GET of ``bucket`` through ``client``, or ``None`` where the client must do
    every GET itself (see the module docstring)."""
    try:
        http = client._endpoint.http_session
        if client._request_signer._credentials is None:
            return None
        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": probe_key}, ExpiresIn=60)
        target = target_of(url, probe_key)
        if target is None or not all(hasattr(http, name) for name in (
                "_get_connection_manager", "_setup_ssl_cert", "_verify")) or \
                http._proxy_config.proxy_url_for(target.url):
            return None
    except Exception:  # no credentials, another botocore: the client's way
        return None
    return PlainGet(client, target)
