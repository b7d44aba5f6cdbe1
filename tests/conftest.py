"""Shared fixtures: stores to run a suite against, and a real S3 (moto) server over HTTP.

* ``s3_server`` (session) serves moto's S3 on 127.0.0.1 over plain HTTP and points the AWS
  environment at it (``AWS_ENDPOINT_URL``, test credentials, ``ARTIFACTFS_S3_RETRY_SECONDS=3``)
  for the rest of the session.  Nothing patches boto3: requests go over real sockets.
* ``s3_requests`` records what the server is asked during one test (method, path, body
  size, status, and the most requests in flight at once), for request-count tests.
* ``s3_bucket`` / ``s3_store_uri`` give each test a fresh bucket; ``local_store_uri`` a fresh
  directory; ``store_uri`` is parametrized over both (ids ``local`` and ``s3``, the latter
  marked ``s3``), and ``store`` opens it.

What is subtle: moto checks a conditional write (``If-None-Match``/``If-Match``) and then
writes, with no lock between the two, and its server handles requests on many threads, so two
racing conditional PUTs can both succeed (seen here: lost updates in a CAS counter).  Real S3
is atomic.  The server below is moto's own WSGI app and request handler, threaded, with one
lock around each request, which gives the atomicity S3 has; tests/store/test_s3_canary.py
checks that moto still refuses a second create-only PUT and a stale ``If-Match``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "ARTIFACTFS_S3_RETRY_SECONDS": "3",
}
# Variables that would send requests elsewhere or mix in real credentials.
S3_CLEARED_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_S3_ENDPOINT_URL", "AWS_PROFILE", "AWS_REGION",
                  "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE",
                  "AWS_SHARED_CREDENTIALS_FILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")


class RequestLog:
    """What the moto server was asked while recording: ``(method, path, body bytes,
    status)`` per request, and the most requests that were in flight at once (they arrive
    concurrently even though the server answers one at a time)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, int, int]] = []
        self.presigned = 0  # requests whose signature is in the query string
        self.sdk = 0  # requests botocore's client sent (they carry amz-sdk-invocation-id)
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    def arrived(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def done(self, environ: dict[str, Any], status: str) -> None:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        code = int(status.split()[0]) if status else 0
        with self._lock:
            self._in_flight -= 1
            self.requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
                                  length, code))
            self.presigned += "X-Amz-Signature=" in environ.get("QUERY_STRING", "")
            self.sdk += "HTTP_AMZ_SDK_INVOCATION_ID" in environ

    def of(self, method: str, path_part: str = "") -> list[tuple[str, str, int, int]]:
        with self._lock:
            return [r for r in self.requests if r[0] == method and path_part in r[1]]


class MotoS3Server:
    """moto's S3 on 127.0.0.1:<free port>, in a thread, one request at a time (see above)."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()
        self.recorder: RequestLog | None = None

        def serialized(environ: dict[str, Any], start_response: Callable[..., Any]
                       ) -> Iterable[bytes]:
            rec = self.recorder
            if rec is None:
                with lock:
                    return list(app(environ, start_response))
            rec.arrived()
            status: list[str] = []

            def record_status(code: str, headers: Any, exc_info: Any = None) -> Any:
                status.append(code)
                return start_response(code, headers, exc_info)

            try:
                with lock:
                    return list(app(environ, record_status))
            finally:
                rec.done(environ, status[0] if status else "")

        self._server = make_server("127.0.0.1", 0, serialized, threaded=True,
                                   request_handler=MotoRequestHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-s3",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
        self._server.server_close()


_servers: list[MotoS3Server] = []


@pytest.fixture
def s3_requests(s3_server: str) -> Iterator[RequestLog]:
    """Record the requests the moto server gets during the test (request-count tests)."""
    server = _servers[-1]
    server.recorder = log = RequestLog()
    try:
        yield log
    finally:
        server.recorder = None


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server; the AWS environment points at it."""
    from artifactfs import s3util

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = MotoS3Server()
    _servers.append(server)
    server.start()
    mp = pytest.MonkeyPatch()
    for name in S3_CLEARED_ENV:
        mp.delenv(name, raising=False)
    for name, value in S3_TEST_ENV.items():
        mp.setenv(name, value)
    mp.setenv("AWS_ENDPOINT_URL", server.url)
    try:
        yield server.url
    finally:
        mp.undo()
        s3util.reset_clients()
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str) -> Iterator[str]:
    """A fresh, uniquely named bucket (emptied and removed afterwards)."""
    from artifactfs import s3util

    client = s3util.s3_client()
    name = f"afs-test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    yield name
    try:  # best effort: frees moto's memory
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys: Any = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys})
        client.delete_bucket(Bucket=name)
    except Exception:
        pass


@pytest.fixture
def s3_store_uri(s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/prefix"


@pytest.fixture
def local_store_uri(tmp_path: Any) -> str:
    path = tmp_path / "store"
    path.mkdir()
    return str(path)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store_uri(request: pytest.FixtureRequest) -> str:
    """A fresh store URI of each kind: a directory, then ``s3://<fresh bucket>/prefix``."""
    uri: str = request.getfixturevalue(f"{request.param}_store_uri")
    return uri


@pytest.fixture
def store(store_uri: str) -> Iterator[Any]:
    """The store at ``store_uri``, opened with ``open_store``."""
    from artifactfs.store import open_store

    s = open_store(store_uri)
    try:
        yield s
    finally:
        s.close()



@pytest.fixture(scope="session")
def user_python() -> Iterator[Any]:
    """How to run artifactfs as another user from this checkout (tests/users.py)."""
    import os

    from users import user_python as make

    if os.geteuid() != 0:
        pytest.skip("needs root to act as other users")
    with make() as up:
        yield up


@pytest.fixture
def users(user_python: Any) -> Iterator[Any]:
    """Real users and groups for one test, removed afterwards (tests/users.py)."""
    from users import Users

    u = Users(user_python)
    try:
        yield u
    finally:
        u.cleanup()
