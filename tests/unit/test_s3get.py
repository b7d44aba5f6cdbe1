"""The S3 store's plain GET (artifactfs/store/s3get.py): its URL and its SigV4 headers are
exactly what botocore makes for the same GET, for awkward keys and temporary credentials."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.utils import percent_encode

from artifactfs.store.s3get import PlainGet, plain_get, sign_get, signing_key, target_of

KEYS = ["p/objects/sha256/ab/cdef", "p/a b+c~d_e.f-g", "p/ünï/cødé?#%", "p/x=1&y/!*'()"]
DATE = "20261201T061500Z"


def client(endpoint: str | None, token: str | None = None, path_style: bool = True) -> object:
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="eu-west-3", aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        aws_session_token=token,
        config=Config(signature_version="s3v4",
                      s3={"addressing_style": "path" if path_style else "virtual"}))


def botocore_headers(url: str, token: str | None) -> dict[str, str]:
    """What botocore's own S3 SigV4 signer sends for a GET of ``url`` at DATE."""
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    auth: Any = S3SigV4Auth(creds, "s3", "eu-west-3")
    req = AWSRequest("GET", url)
    req.context["timestamp"] = DATE
    auth._modify_request_before_signing(req)
    signature = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
    auth._inject_signature_to_request(req, signature)
    return dict(req.headers)


@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzEJr//////////wEaDM  with  spaces"])
@pytest.mark.parametrize("endpoint, path_style", [("http://127.0.0.1:9000", True),
                                                  ("https://S3.example.com:443/", True),
                                                  (None, False)])
def test_signed_like_botocore(endpoint: str | None, path_style: bool, token: str | None,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):  # the S3 tests' server
        monkeypatch.delenv(name, raising=False)
    c = client(endpoint, token, path_style)
    plain = plain_get(c, "bkt", "p/artifactfs-probe")
    assert plain is not None
    target = plain.target
    assert target.region == "eu-west-3" and target.service == "s3"
    for key in KEYS:
        presigned = c.generate_presigned_url(  # type: ignore[attr-defined]
            "get_object", Params={"Bucket": "bkt", "Key": key})
        path = target.path + percent_encode(key, safe="/~")
        url = presigned.partition("?")[0]
        assert url == target.url + percent_encode(key, safe="/~")
        secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
        ours = sign_get(target, path, DATE, "AKIDEXAMPLE",
                        signing_key(secret, DATE[:8], "eu-west-3", "s3"), token)
        theirs = botocore_headers(url, token)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256"):
            assert ours[name] == theirs[name], name
        assert ours.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token")
        assert ours["Host"] == ("127.0.0.1:9000" if endpoint and "9000" in endpoint else
                                "s3.example.com" if endpoint else
                                "bkt.s3.eu-west-3.amazonaws.com")


def test_not_plain_sigv4_is_left_to_the_client() -> None:
    scope = "X-Amz-Credential=a%2Fd%2Fr%2Fs3%2Faws4_request"
    assert target_of(f"https://h/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&{scope}", "k") is not None
    assert target_of(f"https://h/b/k?X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256&{scope}", "k") is None
    assert target_of(f"https://h/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&{scope}", "other") is None
    assert target_of(f"ftp://h/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&{scope}", "k") is None
    anonymous = boto3.session.Session().client(
        "s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
        config=Config(signature_version=__import__("botocore").UNSIGNED))
    assert plain_get(anonymous, "bkt", "probe") is None


@pytest.fixture
def redirecting() -> Iterator[str]:
    """An HTTP server answering every GET with a 301 (a bucket in another region)."""
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(301)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_turns_it_off(redirecting: str) -> None:
    plain = plain_get(client(redirecting), "bkt", "probe")
    assert isinstance(plain, PlainGet) and plain.on
    assert plain("objects/x")[0] == 301
    assert not plain.on
